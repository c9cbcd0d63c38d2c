"""Read routing's Python names: the borrow targets (the C core's, libpq's
target_session_attrs spelling) and the argument check of ``target=``.
Which endpoint serves a target is the core's choice (csrc/core/nc_replica.c,
nc_route.c); nothing here routes."""

from typing import Any

from .. import _native
from . import errors

__all__ = ["TARGETS", "check_target"]

#: "primary", "standby", "prefer-standby", "any"
TARGETS = _native.TARGETS


def check_target(target: Any) -> None:
    """Raise ConfigurationError 4018 unless target is one of TARGETS."""
    if not isinstance(target, str) or target not in TARGETS:
        raise errors.ConfigurationError(
            f"target must be one of {', '.join(repr(t) for t in TARGETS)}, not {target!r}", 4018)
