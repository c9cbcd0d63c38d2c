"""Pool options: their types, limits, defaults and NOODLE_DB_* variables.

Precedence: a value passed explicitly (keyword or config dict) beats the
environment, which beats the default.  Every problem raises
ConfigurationError naming the option or the variable; nothing is guessed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from .errors import ConfigurationError


@dataclass(frozen=True)
class Option:
    name: str
    kind: str                      # "int", "float", "bool", "choice"
    default: Any
    env: Optional[str] = None
    minimum: Optional[float] = None
    exclusive_min: bool = False    # value must be > minimum (else >=)
    nullable: bool = False         # None allowed (and means "none")
    choices: tuple = ()
    doc: str = ""


POOL_OPTIONS = {o.name: o for o in [
    Option("max_connections", "int", 20, "NOODLE_DB_MAX_CONNECTIONS", 1,
           doc="most connections open at once"),
    Option("min_connections", "int", 0, None, 0, doc="connections kept open and warm in the background"),
    Option("timeout", "float", 30.0, "NOODLE_DB_TIMEOUT", 0, True, doc="seconds get_connection() waits"),
    Option("retry_attempts", "int", 3, "NOODLE_DB_RETRY_ATTEMPTS", 1,
           doc="attempts to open one connection, with exponential backoff"),
    Option("retry_backoff", "float", 0.05, None, 0, doc="first backoff between connect attempts, seconds"),
    Option("validate_connections", "bool", True, doc="check connections on borrow and in the background"),
    Option("validation_interval", "float", 30.0, None, 0, True, doc="seconds between background checks"),
    Option("validation_timeout", "float", 5.0, None, 0, True, doc="deadline of one health check, seconds"),
    Option("connect_timeout", "float", 10.0, None, 0, True, doc="deadline of one connect attempt, seconds"),
    Option("idle_timeout", "float", 600.0, None, 0, doc="close idle connections above min after this (0: never)"),
    Option("max_lifetime", "float", 3600.0, None, 0, doc="retire connections after this, with jitter (0: never)"),
    Option("lifetime_jitter", "float", 0.1, None, 0, doc="fraction of max_lifetime taken off at random"),
    Option("ping_after_idle", "float", 1.0, None, 0,
           doc="a borrow pings the server when the connection sat idle longer than this"),
    Option("query_timeout", "float", None, None, 0, True, nullable=True,
           doc="default statement deadline, seconds (None: none)"),
    Option("busy_timeout", "float", None, None, 0, True, nullable=True,
           doc="SQLite: how long a statement without a deadline waits on a locked database "
               "(default: timeout)"),
    Option("row_format", "choice", "dict", choices=("dict", "tuple"), doc="rows as dicts or tuples"),
]}


def _check_value(opt: Option, value: Any, source: str) -> Any:
    """Validate one value; ``source`` names it in the error ("option 'x'" or "NOODLE_DB_X")."""
    if value is None:
        if opt.nullable:
            return None
        raise ConfigurationError(f"{source} must not be None")
    if opt.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigurationError(f"{source} must be True or False, not {type(value).__name__}")
        return value
    if opt.kind == "choice":
        if value not in opt.choices:
            raise ConfigurationError(f"{source} must be one of {', '.join(map(repr, opt.choices))}, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            opt.kind == "int" and not isinstance(value, int)):
        want = "an integer" if opt.kind == "int" else "a number"
        raise ConfigurationError(f"{source} must be {want}, not {type(value).__name__}")
    if opt.kind == "float":
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigurationError(f"{source} must be a finite number")
    if opt.minimum is not None:
        if opt.exclusive_min and value <= opt.minimum:
            raise ConfigurationError(f"{source} must be greater than {opt.minimum:g}, not {value!r}")
        if not opt.exclusive_min and value < opt.minimum:
            raise ConfigurationError(f"{source} must be at least {opt.minimum:g}, not {value!r}")
    return value


def _from_env(opt: Option, raw: str) -> Any:
    text = raw.strip()
    try:
        if opt.kind == "int":
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError
            value: Any = int(text)
        elif opt.kind == "float":
            value = float(text)
        elif opt.kind == "bool":
            low = text.lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            value = low in ("1", "true", "yes", "on")
        else:
            value = text
    except ValueError:
        want = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(opt.kind, "a value")
        raise ConfigurationError(f"environment variable {opt.env}={raw!r} is not {want}",
                                 error_code=2019) from None
    try:
        return _check_value(opt, value, f"environment variable {opt.env}={raw!r}")
    except ConfigurationError as exc:
        raise ConfigurationError(exc.message, error_code=2019) from None


def resolve_pool_options(config: Optional[Mapping[str, Any]] = None,
                         options: Optional[Mapping[str, Any]] = None,
                         environ: Optional[Mapping[str, str]] = None) -> dict:
    """Merge ``config`` and keyword ``options`` (keywords win) over the
    environment and the defaults; validate everything.  Returns a plain dict
    of every pool option."""
    if config is not None and not isinstance(config, Mapping):
        raise ConfigurationError(f"config must be a dict of options, not {type(config).__name__}")
    explicit = dict(config or {})
    explicit.update(options or {})
    for key in explicit:
        if key not in POOL_OPTIONS:
            raise ConfigurationError(f"unknown pool option {key!r} (known: {', '.join(sorted(POOL_OPTIONS))})")
    env = os.environ if environ is None else environ
    out = {}
    for name, opt in POOL_OPTIONS.items():
        if name in explicit:
            out[name] = _check_value(opt, explicit[name], f"option {name!r}")
        elif opt.env and env.get(opt.env, "").strip() != "":
            out[name] = _from_env(opt, env[opt.env])
        else:
            out[name] = opt.default
    if out["min_connections"] > out["max_connections"]:
        raise ConfigurationError(
            f"option 'min_connections' ({out['min_connections']}) must not exceed "
            f"'max_connections' ({out['max_connections']})")
    if out["lifetime_jitter"] >= 1:
        raise ConfigurationError("option 'lifetime_jitter' must be below 1")
    return out


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)([^@]*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for messages and reprs)."""
    dsn = _URL_PASSWORD.sub(r"\1***\3", dsn)
    dsn = re.sub(r"([?&]password=)[^&]*", r"\1***", dsn, flags=re.IGNORECASE)
    return _KV_PASSWORD.sub(r"\1***", dsn)


def _passwords(dsn: str) -> list:
    found = []
    m = re.search(r"://[^:/@\[]*:(.*)@", dsn)
    if m and m.group(1):
        found.append(m.group(1))
    for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)", dsn, re.IGNORECASE):
        found.append(m.group(1).strip("'"))
    return [p for p in found if p]


def scrub_password(message: str, dsn: str) -> str:
    """``message`` with any password found in ``dsn`` (and the raw DSN
    itself) replaced by ``***``."""
    out = message.replace(dsn, redact_dsn(dsn)) if dsn else message
    for pw in sorted(_passwords(dsn), key=len, reverse=True):
        out = out.replace(pw, "***")
    return out


def backend_kind(backend_factory: Any) -> str:
    """'postgresql', 'sqlite' or 'python' for what DatabaseConnectionPool was given."""
    if isinstance(backend_factory, str):
        s = backend_factory.strip()
        low = s.lower()
        if low.startswith("sqlite:"):
            if not low.startswith("sqlite:///") or len(s) <= len("sqlite:///"):
                raise ConfigurationError(
                    f"invalid SQLite URL {redact_dsn(s)!r}: use sqlite:///relative.db, "
                    "sqlite:////abs/path.db or sqlite:///:memory:")
            return "sqlite"
        if low.startswith(("postgresql://", "postgres://")) or "=" in s:
            return "postgresql"
        raise ConfigurationError(
            f"unrecognised DSN {redact_dsn(s)!r}: expected postgresql://..., a libpq key=value string "
            "or sqlite:///path")
    if callable(backend_factory):
        return "python"
    raise ConfigurationError(
        f"backend_factory must be a DSN string or a callable returning a backend, not "
        f"{type(backend_factory).__name__}")


Factory = Callable[[], Any]
