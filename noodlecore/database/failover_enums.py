"""The failover enums: FailoverMode, FailoverPolicy, FailoverState.

Their members are the C core's names (csrc/core/nc_failover.c), read from
``_native`` at import; ``noodlecore.database.failover_manager`` exports them.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from .. import _native

__all__ = ["FailoverMode", "FailoverPolicy", "FailoverState"]


def _names_enum(name: str, names: tuple[str, ...], doc: str) -> Any:
    # The members are the C core's names (csrc/core/nc_failover.c), the one
    # copy: MANUAL = "manual", and so on.
    cls = enum.Enum(name, [(n.upper(), n) for n in names], module=__name__)  # type: ignore[misc]
    cls.__doc__ = doc
    return cls


if TYPE_CHECKING:
    # What a type checker sees: it cannot run _native, so it is shown the
    # members here; tests/test_typing.py checks that they are the core's names
    # in the core's order (at run time this block does not exist).
    class FailoverMode(enum.Enum):
        MANUAL = "manual"
        AUTOMATIC = "automatic"
        SEMI_AUTOMATIC = "semi_automatic"

    class FailoverPolicy(enum.Enum):
        FAILURE_COUNT = "failure_count"
        RESPONSE_TIME = "response_time"
        HEALTH_CHECK = "health_check"
        COMBINED = "combined"

    class FailoverState(enum.Enum):
        PRIMARY = "primary"
        FAILING_OVER = "failing_over"
        SECONDARY = "secondary"
        FAILING_BACK = "failing_back"
        RECOVERING = "recovering"
        UNAVAILABLE = "unavailable"
else:
    FailoverMode = _names_enum(
        "FailoverMode", _native.FAILOVER_MODES,
        "MANUAL (switch only on trigger_failover()), AUTOMATIC, SEMI_AUTOMATIC (fail back only on "
        "trigger_recovery()).")
    FailoverPolicy = _names_enum(
        "FailoverPolicy", _native.FAILOVER_POLICIES,
        "What makes the current endpoint failing: FAILURE_COUNT, RESPONSE_TIME, HEALTH_CHECK, or COMBINED "
        "(any).")
    FailoverState = _names_enum(
        "FailoverState", _native.FAILOVER_STATES,
        "PRIMARY, FAILING_OVER, SECONDARY, FAILING_BACK, RECOVERING, UNAVAILABLE (no usable endpoint).")
