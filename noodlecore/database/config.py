"""Options: their types, limits, defaults and NOODLE_DB_* variables.

``POOL_OPTIONS`` describes the pool's options, ``DATABASE_OPTIONS`` the
fields of :class:`DatabaseConfig` (DatabaseManager's connection settings,
sharing the pool's max_connections, timeout and retry_attempts); one checker
(``_check_value``) and one environment reader (``env_value``) serve both.
Also here: DSN helpers (kind of backend, password redaction).

Precedence: a value passed explicitly (keyword, config dict or field) beats
the environment, which beats the default.  Every problem raises
ConfigurationError naming the option or the variable; nothing is guessed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from .. import _native
from .errors import ConfigurationError


@dataclass(frozen=True)
class Option:
    name: str
    kind: str                      # "int", "float", "bool", "choice", "str", "sslmode"
    default: Any
    env: Optional[str] = None
    minimum: Optional[float] = None
    exclusive_min: bool = False    # value must be > minimum (else >=)
    nullable: bool = False         # None allowed (and means "none")
    choices: tuple = ()
    doc: str = ""
    maximum: Optional[float] = None
    secret: bool = False           # taken from the environment as it is; never shown in a message


def _pool(name: str, kind: str, env: Optional[str] = None, minimum: Optional[float] = None,
          exclusive_min: bool = False, **more: Any) -> Option:
    # Every default is the C core's (nc_pool_config_defaults and the
    # binding's option table), exported as _native.POOL_DEFAULTS.
    return Option(name, kind, _native.POOL_DEFAULTS[name], env, minimum, exclusive_min, **more)


POOL_OPTIONS = {o.name: o for o in [
    _pool("max_connections", "int", "NOODLE_DB_MAX_CONNECTIONS", 1, doc="most connections open at once"),
    _pool("min_connections", "int", None, 0, doc="connections kept open and warm in the background"),
    _pool("timeout", "float", "NOODLE_DB_TIMEOUT", 0, True, doc="seconds get_connection() waits"),
    _pool("retry_attempts", "int", "NOODLE_DB_RETRY_ATTEMPTS", 1,
          doc="attempts to open one connection, with exponential backoff"),
    _pool("retry_backoff", "float", None, 0, doc="first backoff between connect attempts, seconds"),
    _pool("validate_connections", "bool", doc="check connections on borrow and in the background"),
    _pool("validation_interval", "float", None, 0, True, doc="seconds between background checks"),
    _pool("validation_timeout", "float", None, 0, True, doc="deadline of one health check, seconds"),
    _pool("connect_timeout", "float", None, 0, True, doc="deadline of one connect attempt, seconds"),
    _pool("idle_timeout", "float", None, 0, doc="close idle connections above min after this (0: never)"),
    _pool("max_lifetime", "float", None, 0, doc="retire connections after this, with jitter (0: never)"),
    _pool("lifetime_jitter", "float", None, 0, doc="fraction of max_lifetime taken off at random"),
    _pool("ping_after_idle", "float", None, 0,
          doc="a borrow pings the server when the connection sat idle longer than this"),
    _pool("leak_timeout", "float", None, 0,
          doc="warn (ConnectionLeakWarning, with the borrower's stack) about a connection borrowed "
              "longer than this, seconds (0: off)"),
    _pool("query_timeout", "float", None, 0, True, nullable=True,
          doc="default statement deadline, seconds (None: none)"),
    _pool("busy_timeout", "float", None, 0, True, nullable=True,
          doc="SQLite: how long a statement without a deadline waits on a locked database "
              "(None: the pool's timeout)"),
    _pool("row_format", "choice", choices=("dict", "tuple"), doc="rows as dicts or tuples"),
]}


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


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
    if opt.kind == "str":
        if not isinstance(value, str):
            raise ConfigurationError(f"{source} must be a string, not {type(value).__name__}")
        if "\0" in value:
            raise ConfigurationError(f"{source} must not contain a NUL character")
        return value
    if opt.kind == "sslmode":
        return _sslmode(value, source)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            opt.kind == "int" and not isinstance(value, int)):
        want = "an integer" if opt.kind == "int" else "a number"
        raise ConfigurationError(f"{source} must be {want}, not {type(value).__name__}")
    if opt.kind == "float":
        try:
            value = float(value)
        except OverflowError:               # an int past a double: a typed error, not OverflowError
            raise ConfigurationError(f"{source} must be a finite number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigurationError(f"{source} must be a finite number")
    if opt.minimum is not None:
        if opt.exclusive_min and value <= opt.minimum:
            raise ConfigurationError(f"{source} must be greater than {opt.minimum:g}, not {_shown(value)}")
        if not opt.exclusive_min and value < opt.minimum:
            raise ConfigurationError(f"{source} must be at least {opt.minimum:g}, not {_shown(value)}")
    if opt.maximum is not None and value > opt.maximum:
        raise ConfigurationError(f"{source} must be at most {opt.maximum:g}, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A value for a message: repr of a huge int fails past 4300 digits."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    return repr(value)


def _sslmode(value: Any, source: str) -> str:
    """A libpq sslmode: True/'true' (and the other boolean spellings) mean
    'require', False/'false'/'' 'disable'; libpq's own modes pass through."""
    if isinstance(value, bool):
        return "require" if value else "disable"
    if not isinstance(value, str):
        raise ConfigurationError(f"{source} must be a string, not {type(value).__name__}")
    low = value.strip().lower()
    if low in _TRUE:
        return "require"
    if low in _FALSE or low == "":
        return "disable"
    if low in _SSL_MODES:
        return low
    raise ConfigurationError(f"{source} must be true/false or a libpq sslmode ({', '.join(_SSL_MODES)}), "
                             f"not {value!r}")


def _from_env(opt: Option, raw: str) -> Any:
    text = raw if opt.secret else raw.strip()
    shown = opt.env if opt.secret else f"{opt.env}={raw!r}"
    try:
        if opt.kind == "int":
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError
            value: Any = int(text)
        elif opt.kind == "float":
            value = float(text)
        elif opt.kind == "bool":
            low = text.lower()
            if low not in _TRUE + _FALSE:
                raise ValueError
            value = low in _TRUE
        else:
            value = text
    except ValueError:
        want = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(opt.kind, "a value")
        raise ConfigurationError(f"environment variable {shown} is not {want}", error_code=2019) from None
    try:
        return _check_value(opt, value, f"environment variable {shown}")
    except ConfigurationError as exc:
        raise ConfigurationError(exc.message, error_code=2019) from None


def env_value(opt: Option, environ: Optional[Mapping[str, str]] = None) -> Any:
    """``opt``'s value from its environment variable (checked; a bad one is
    ConfigurationError 2019 naming the variable), or its default when the
    variable is unset or blank.  A secret is taken as it is: its spaces may
    be part of it."""
    env = os.environ if environ is None else environ
    raw = env.get(opt.env) if opt.env else None
    if raw is None or (raw == "" if opt.secret else raw.strip() == ""):
        return opt.default
    return _from_env(opt, raw)


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
        else:
            out[name] = env_value(opt, env)
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


# ---------------------------------------------------------------------------
# DatabaseConfig: DatabaseManager's connection settings
# ---------------------------------------------------------------------------

#: The fields of DatabaseConfig.  max_connections, timeout and retry_attempts
#: are the pool's own options (same variables, defaults and limits).
DATABASE_OPTIONS = {o.name: o for o in [
    Option("host", "str", "localhost", "NOODLE_DB_HOST", doc="PostgreSQL host name, address or socket directory"),
    Option("port", "int", 5432, "NOODLE_DB_PORT", 1, maximum=65535, doc="PostgreSQL port"),
    Option("database", "str", "noodlecore", "NOODLE_DB_NAME",
           doc="PostgreSQL database, or the name of the embedded SQLite file"),
    Option("username", "str", "", "NOODLE_DB_USER", doc="PostgreSQL user"),
    Option("password", "str", "", "NOODLE_DB_PASSWORD", secret=True, doc="PostgreSQL password"),
    Option("ssl_mode", "sslmode", "disable", "NOODLE_DB_SSL", doc="true/false or a libpq sslmode"),
    POOL_OPTIONS["max_connections"],
    POOL_OPTIONS["timeout"],
    POOL_OPTIONS["retry_attempts"],
    Option("connection_string", "str", "", doc="the DSN; built from the other fields when empty"),
]}


def _from_environment(name: str) -> Any:
    """A dataclass field whose default is read from the environment when the object is made."""
    opt = DATABASE_OPTIONS[name]
    return field(default_factory=lambda: env_value(opt))


def _url_host(host: str) -> str:
    if host.startswith("/") or host.startswith("@"):
        return urllib.parse.quote(host, safe="")          # a Unix socket directory
    if ":" in host and not host.startswith("["):
        return f"[{host}]"                                 # IPv6
    return urllib.parse.quote(host, safe="[]:.-_~")


def _sqlite_url(database: str) -> str:
    name = database or "noodlecore"
    if name == ":memory:":
        return "sqlite:///:memory:"
    if not name.lower().endswith((".db", ".sqlite", ".sqlite3")):
        name += ".db"
    return "sqlite:///" + os.path.abspath(name)


@dataclass(repr=False)
class DatabaseConfig:
    """Connection settings; unset fields come from the NOODLE_DB_* variables
    when the object is made (HOST, PORT, NAME, USER, PASSWORD, SSL,
    MAX_CONNECTIONS, TIMEOUT, RETRY_ATTEMPTS), then the defaults.

    ``connection_string`` is built when empty: a PostgreSQL URL (user and
    password percent-encoded, ``sslmode`` from ``ssl_mode``) when
    ``database``, ``username`` and ``password`` are all set; otherwise the
    embedded default, a SQLite file ``<database>.db`` (``database`` defaults
    to "noodlecore") in the current directory, made absolute.  ``ssl_mode``
    is stored as a libpq sslmode: 'true' -> 'require', 'false' -> 'disable'.

    The string is built once, when the object is made: changing a field
    later (or ``dataclasses.replace``) keeps it; pass
    ``connection_string=""`` to have it built again.

    A bad environment value raises ConfigurationError 2019 naming the
    variable; a bad field 2013 naming the field.  Neither ``repr()`` nor
    ``to_dict()`` shows the password (``dataclasses.asdict()`` does: it
    copies every field).
    """

    host: str = _from_environment("host")
    port: int = _from_environment("port")
    database: str = _from_environment("database")
    username: str = _from_environment("username")
    password: str = _from_environment("password")
    ssl_mode: str = _from_environment("ssl_mode")
    max_connections: int = _from_environment("max_connections")
    timeout: float = _from_environment("timeout")
    retry_attempts: int = _from_environment("retry_attempts")
    connection_string: str = ""

    def __post_init__(self) -> None:
        for name, opt in DATABASE_OPTIONS.items():
            value = getattr(self, name)
            if value is None and opt.kind == "str":
                value = ""                  # None has always meant "not set" for the text fields
            setattr(self, name, _check_value(opt, value, f"DatabaseConfig.{name}"))
        if not self.connection_string.strip():
            self.connection_string = self.build_connection_string()

    @property
    def uses_postgresql(self) -> bool:
        """True when the fields name a PostgreSQL server (database, user and password set)."""
        return bool(self.database and self.username and self.password)

    def build_connection_string(self) -> str:
        """The DSN the fields describe (ignores ``connection_string``)."""
        if not self.uses_postgresql:
            return _sqlite_url(self.database)
        q = urllib.parse.quote
        return (f"postgresql://{q(self.username, safe='')}:{q(self.password, safe='')}@{_url_host(self.host)}"
                f":{self.port}/{q(self.database, safe='')}?sslmode={self.ssl_mode}")

    def to_dict(self) -> dict:
        """The fields as a dict, the password masked ("***" when set)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["password"] = "***" if self.password else ""
        d["connection_string"] = redact_dsn(self.connection_string)
        return d

    def __repr__(self) -> str:
        d = self.to_dict()
        return "DatabaseConfig(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"

    __str__ = __repr__
