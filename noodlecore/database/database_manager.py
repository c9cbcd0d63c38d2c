"""DatabaseManager: one object for queries, transactions and table helpers,
over a single pool or over a DatabaseFailoverManager with transparent failover.

::

    from noodlecore.database.database_manager import DatabaseManager

    with DatabaseManager("sqlite:///app.db") as db:          # or DatabaseConfig(...), or nothing
        db.create_table("users", {"id": "INTEGER PRIMARY KEY", "name": "TEXT NOT NULL"})
        db.insert("users", {"id": 1, "name": "Ada"})
        rows = db.select("users", conditions={"id": 1})
        with db.transaction() as tx:
            tx.execute_query("UPDATE users SET name = %s WHERE id = %s", ("Ada L.", 1))

What happens when:

* **Configuration.**  ``config`` is a :class:`DatabaseConfig`, a DSN string or
  None (``DatabaseConfig()``: everything from the NOODLE_DB_* variables).
  With nothing configured the manager uses the embedded default, the SQLite
  file ``<NOODLE_DB_NAME or "noodlecore">.db`` in the current directory.
* **backend_factory.**  None: the native backend the DSN (or each endpoint's
  connection string) names.  A DSN string (as DatabaseConnectionPool takes
  one) is the same as ``config=DSN`` (without failover; not with a config as
  well).  A callable is handed on unchanged, so it follows
  the protocol of what receives it: without failover the
  DatabaseConnectionPool calls ``backend_factory()`` with no arguments; with
  failover the DatabaseFailoverManager calls ``backend_factory(connection_string)``
  once per endpoint connection.
* **Pool options.**  Without failover the pool gets ``max_connections``,
  ``timeout`` and ``retry_attempts`` from the config, then the keyword
  ``pool_options`` on top.  With failover every endpoint's pool is sized by
  ``failover_config`` (``pool_max_connections``, ``pool_timeout``,
  ``pool_options``) with the keyword ``pool_options`` on top; the config's
  connection fields are not used (each endpoint has its own DSN).
* **connect()** builds the pool (or the failover manager, and starts its
  monitoring) and borrows one connection to check it; **disconnect()** /
  **close()** shut everything down (a later connect() starts afresh).  Every
  other operation on a manager that is not connected raises
  :class:`NotConnectedError` with the operation's "no connection" code.
* **Errors** keep their class (an IntegrityError stays an IntegrityError) but
  carry the manager's code of the operation (3005 query failed, 3011 insert
  failed, ...; 3004 for a statement deadline), with the original error as
  ``__cause__``; they also get ``endpoint`` and ``correlation_id``
  attributes.  Exceptions that are not noodlecore errors (a Python backend's
  own, a TypeError for bad arguments) pass through unchanged.
* **Transparent failover** (failover on) in ``execute_query`` and the table
  helpers: a connection-class failure (connection lost or refused, SQLSTATE
  08xxx, 57P01-57P03, no usable endpoint; also 25006 "read-only
  transaction", which the server rejected) is retried once on the (possibly
  new) current endpoint when repeating it is certainly harmless: the
  statement never reached the server (``statement_sent`` is False), or the
  borrow itself failed, or the server rejected it as read-only, or the caller
  passed ``idempotent=True``, or it is a plain SELECT the manager can tell is
  free of side effects (see :func:`is_plain_select`).  Before the retry the
  manager gives the failover manager up to ``failover_retry_wait`` seconds
  (bounded by the call's ``timeout``) to come up with a usable endpoint.
* **Unknown outcome.**  When the connection was lost after a statement that
  may change data was sent, its outcome is unknown: the manager raises
  :class:`OutcomeUnknownError` (3039, naming the endpoint) and never runs it
  again by itself (failover on or off).  ``idempotent=False`` makes even a
  plain SELECT count as one that may change data.
* **Transactions.**  ``transaction()`` yields a :class:`Transaction`; the
  block's statements run on one connection, committed at the end, rolled back
  when the block raises (the exception propagates as it was).  A lost
  connection inside it (a failover, say) rolls it back and raises
  :class:`TransactionError` (3009): nothing of it was applied.  A connection
  lost during COMMIT itself raises OutcomeUnknownError.  On PostgreSQL a
  statement that failed inside the transaction aborts it: committing then
  raises TransactionError instead of silently rolling back (unless a
  ``ROLLBACK TO SAVEPOINT`` recovered it).  ``execute_batch`` runs its
  statements in one transaction the same way; as a batch whose connection was
  lost before COMMIT was certainly rolled back, with failover on it is run
  once more from the start on the new endpoint.
* **Table helpers** quote every identifier (``"..."``, an embedded quote
  doubled), refuse empty names, NUL characters, non-strings and (on
  PostgreSQL) names longer than 63 bytes, and bind every value.  A name is
  one identifier: ``"a.b"`` is a table called ``a.b``, not ``b`` in schema
  ``a``.  ``update`` and ``delete`` refuse missing or empty ``conditions``
  (no accidental whole-table writes: use execute_query for those); a
  condition value None matches with ``IS NULL``.  Column types for
  ``create_table`` must match a conservative grammar (type words with an
  optional ``(n[, m])``, ``[]``, and NOT NULL / NULL / PRIMARY KEY / UNIQUE /
  DEFAULT <number, TRUE, FALSE, NULL, CURRENT_*>); anything else (quotes,
  ``;``, comments, CHECK, REFERENCES, ...) is refused: create such tables with
  execute_query.
* **Logging** goes to ``logging.getLogger("noodlecore.database.manager")``
  only, with ``extra`` fields ``correlation_id`` (one per request and per
  transaction), ``endpoint``, ``duration_ms``, ``error_code`` and
  ``operation``.  Manual failover and recovery are logged at INFO with
  ``triggered_by`` and ``reason`` (the failover manager logs the events).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import errors
from .config import backend_kind, redact_dsn, resolve_pool_options
from .connection_pool import DatabaseConnectionPool, PooledConnection, PoolStats
from .failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig

__all__ = [
    "DatabaseConfig", "DatabaseManager", "Transaction", "OutcomeUnknownError", "TransactionError",
    "FailoverNotEnabledError", "NotConnectedError", "is_plain_select", "quote_identifier",
]

log = logging.getLogger("noodlecore.database.manager")

#: The code of OutcomeUnknownError, in the manager's range after the contract's 3001-3038.
OUTCOME_UNKNOWN = 3039
errors.ERROR_CODES.setdefault(
    OUTCOME_UNKNOWN, "manager: outcome of the statement is unknown (connection lost after it was sent)")


# ---------------------------------------------------------------------------
# exceptions
# ---------------------------------------------------------------------------

class OutcomeUnknownError(errors.OperationalError):
    """The connection was lost after a statement that may change data was sent:
    it may or may not have been applied.  It was not run again.  Attributes:
    ``endpoint`` (where it was sent), ``correlation_id``."""
    default_code = OUTCOME_UNKNOWN


class TransactionError(errors.OperationalError):
    """A transaction was rolled back as a whole (its connection was lost, a
    failover happened inside it, or a failed statement aborted it)."""
    default_code = 3009


class FailoverNotEnabledError(errors.InterfaceError):
    """trigger_failover (3037) or trigger_recovery (3038) on a manager made
    without ``enable_failover=True``."""
    default_code = 3037


class NotConnectedError(errors.InterfaceError):
    """An operation on a manager that is not connected (connect() not called,
    or after disconnect()/close()); the code is the operation's "no
    connection" code (3003 for execute_query)."""
    default_code = 3003


# operation -> ("no connection" code, "failed" code), as in the API contract
_OP_CODES = {
    "connect": (3001, 3001),
    "query": (3003, 3005),
    "execute_batch": (3006, 3007),
    "transaction": (3008, 3009),
    "insert": (3010, 3011),
    "update": (3012, 3013),
    "delete": (3014, 3015),
    "select": (3016, 3017),
    "table_exists": (3018, 3019),
    "create_table": (3020, 3021),
    "drop_table": (3022, 3023),
    "get_table_schema": (3024, 3025),
    "stats": (3032, 3033),
    "health_check": (3034, 3035),
}


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------

_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env(name: str) -> Optional[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw


def _env_bad(name: str, raw: str, want: str) -> errors.ConfigurationError:
    return errors.ConfigurationError(f"environment variable {name}={raw!r} is not {want}", error_code=2019)


def _env_int(name: str, default: int, minimum: int, maximum: Optional[int] = None) -> Callable[[], int]:
    def read() -> int:
        raw = _env(name)
        if raw is None:
            return default
        text = raw.strip()
        want = f"an integer of at least {minimum}" + (f" and at most {maximum}" if maximum else "")
        if not re.fullmatch(r"[+-]?\d+", text):
            raise _env_bad(name, raw, want)
        value = int(text)
        if value < minimum or (maximum is not None and value > maximum):
            raise _env_bad(name, raw, want)
        return value
    return read


def _env_float(name: str, default: float) -> Callable[[], float]:
    def read() -> float:
        raw = _env(name)
        if raw is None:
            return default
        try:
            value = float(raw.strip())
        except ValueError:
            raise _env_bad(name, raw, "a number of seconds greater than 0") from None
        if not (value > 0) or math.isinf(value):
            raise _env_bad(name, raw, "a number of seconds greater than 0")
        return value
    return read


def _env_str(name: str, default: str) -> Callable[[], str]:
    def read() -> str:
        raw = _env(name)
        return default if raw is None else raw.strip()
    return read


def _env_password() -> str:
    # A password is taken as it is (spaces may be part of it).
    raw = os.environ.get("NOODLE_DB_PASSWORD")
    return raw if raw else ""


def _normalize_ssl(value: Any, source: str, code: int) -> str:
    """'true'/'false' (and the other boolean spellings, or a bool) map to
    'require'/'disable'; libpq's sslmodes pass through."""
    if isinstance(value, bool):
        return "require" if value else "disable"
    if not isinstance(value, str):
        raise errors.ConfigurationError(f"{source} must be a string, not {type(value).__name__}",
                                        error_code=code)
    low = value.strip().lower()
    if low in _TRUE:
        return "require"
    if low in _FALSE or low == "":
        return "disable"
    if low in _SSL_MODES:
        return low
    raise errors.ConfigurationError(
        f"{source}={value!r} is not true/false or a libpq sslmode ({', '.join(_SSL_MODES)})", error_code=code)


def _env_ssl() -> str:
    raw = _env("NOODLE_DB_SSL")
    if raw is None:
        return "disable"
    return _normalize_ssl(raw, "environment variable NOODLE_DB_SSL", 2019)


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

    host: str = field(default_factory=_env_str("NOODLE_DB_HOST", "localhost"))
    port: int = field(default_factory=_env_int("NOODLE_DB_PORT", 5432, 1, 65535))
    database: str = field(default_factory=_env_str("NOODLE_DB_NAME", "noodlecore"))
    username: str = field(default_factory=_env_str("NOODLE_DB_USER", ""))
    password: str = field(default_factory=_env_password)
    ssl_mode: str = field(default_factory=_env_ssl)
    max_connections: int = field(default_factory=_env_int("NOODLE_DB_MAX_CONNECTIONS", 20, 1))
    timeout: float = field(default_factory=_env_float("NOODLE_DB_TIMEOUT", 30.0))
    retry_attempts: int = field(default_factory=_env_int("NOODLE_DB_RETRY_ATTEMPTS", 3, 1))
    connection_string: str = ""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise errors.ConfigurationError(f"DatabaseConfig.{name} {why}")
        for name in ("host", "database", "username", "password", "connection_string"):
            v = getattr(self, name)
            if v is None:
                setattr(self, name, "")
            elif not isinstance(v, str):
                bad(name, f"must be a string, not {type(v).__name__}")
            elif "\0" in v:
                bad(name, "must not contain a NUL character")
        for name, lo, hi in (("port", 1, 65535), ("max_connections", 1, None), ("retry_attempts", 1, None)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                bad(name, f"must be an integer of at least {lo}" + (f" and at most {hi}" if hi else "")
                    + f", not {v!r}")
        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or math.isinf(t):
            bad("timeout", f"must be a number of seconds greater than 0, not {t!r}")
        self.timeout = float(t)
        self.ssl_mode = _normalize_ssl(self.ssl_mode, "DatabaseConfig.ssl_mode", 2013)
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


# ---------------------------------------------------------------------------
# SQL helpers
# ---------------------------------------------------------------------------

def quote_identifier(name: Any, what: str = "identifier", max_bytes: Optional[int] = None) -> str:
    """``name`` as one double-quoted SQL identifier (embedded quotes doubled).

    Raises ProgrammingError for a non-string, an empty name, a NUL character,
    or a name longer than ``max_bytes`` UTF-8 bytes."""
    if not isinstance(name, str):
        raise errors.ProgrammingError(f"{what} must be a string, not {type(name).__name__}")
    if name == "":
        raise errors.ProgrammingError(f"{what} must not be empty")
    if "\0" in name:
        raise errors.ProgrammingError(f"{what} {name!r} contains a NUL character, which SQL cannot name")
    if max_bytes is not None and len(name.encode("utf-8", "surrogatepass")) > max_bytes:
        raise errors.ProgrammingError(
            f"{what} {name!r} is longer than {max_bytes} bytes (PostgreSQL would silently truncate it)")
    return '"' + name.replace('"', '""') + '"'


_WORD = r"[A-Za-z_][A-Za-z0-9_]*"
# Words that start a constraint or clause cannot be part of the type.
_TYPE_WORD = (r"(?!(?:NOT|NULL|PRIMARY|UNIQUE|DEFAULT|KEY|REFERENCES|CHECK|COLLATE|GENERATED|CONSTRAINT|AS|ON"
              r"|USING|FOREIGN|AUTOINCREMENT)\b)" + _WORD)
_TYPE_ARGS = r"\(\s*\d+\s*(?:,\s*\d+\s*)?\)"
_SQL_TYPE = re.compile(
    r"^\s*" + _TYPE_WORD + r"(?:\s+" + _TYPE_WORD + r")*"
    + r"(?:\s*" + _TYPE_ARGS + r")?"
    + r"(?:\s+" + _TYPE_WORD + r")*"
    + r"(?:\s*\[\s*\d*\s*\])*"
    + r"(?:\s+(?:NOT\s+NULL|NULL|PRIMARY\s+KEY(?:\s+AUTOINCREMENT)?|UNIQUE"
    + r"|DEFAULT\s+(?:[-+]?\d+(?:\.\d+)?|TRUE|FALSE|NULL|CURRENT_TIMESTAMP|CURRENT_DATE|CURRENT_TIME)))*"
    + r"\s*$", re.IGNORECASE)


def _check_sql_type(column: str, sql_type: Any) -> str:
    if not isinstance(sql_type, str):
        raise errors.ProgrammingError(f"the type of column {column!r} must be a string, not "
                                      f"{type(sql_type).__name__}")
    if not _SQL_TYPE.match(sql_type):
        raise errors.ProgrammingError(
            f"the type of column {column!r}, {sql_type!r}, is not accepted: use type words with an optional "
            "(n) or (n, m), [] and NOT NULL, NULL, PRIMARY KEY, UNIQUE or DEFAULT <number, TRUE, FALSE, NULL, "
            "CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME>; create anything else with execute_query")
    return " ".join(sql_type.split())


# -- telling a plain read for sure -------------------------------------------

# Functions without side effects that a plain read may call (repeating such a
# read changes nothing).  Anything else called -- nextval, set_config,
# pg_advisory_lock, a user function -- makes the statement not "plain".
_SAFE_FUNCTIONS = frozenset("""
count sum avg min max coalesce nullif greatest least lower upper length char_length character_length
octet_length abs round floor ceil ceiling trunc sign mod power sqrt exp ln log random
concat concat_ws substr substring trim ltrim rtrim btrim replace position strpos left right lpad rpad
reverse split_part md5 to_char to_date to_number to_timestamp date_trunc date_part extract age now
clock_timestamp statement_timestamp transaction_timestamp timezone make_date make_timestamp
array_agg string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg bool_and bool_or every
json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb
array_length array_to_string cardinality unnest generate_series
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
inet_server_port inet_server_addr pg_backend_pid pg_is_in_recovery current_database current_schema
current_setting version pg_database_size pg_relation_size pg_total_relation_size format_type to_regclass
typeof ifnull iif instr hex quote sqlite_version total group_concat printf format julianday
date time datetime strftime unixepoch
cast numeric decimal varchar char character timestamp interval bit
""".split())

# Keywords that may stand before a parenthesis.
_PAREN_KEYWORDS = frozenset("""
select from where in exists any all some and or not on as join values over filter within by using
lateral with case when then else is like ilike between union intersect except having group order
limit offset distinct row array recursive materialized varying precision zone
""".split())

# Words that make a SELECT or WITH statement more than a plain read: SELECT
# INTO, FOR UPDATE/SHARE (row locks), data-changing CTEs.  (Other statements
# cannot follow a SELECT without a ';', which is refused.)
_WRITE_WORDS = frozenset("into for insert update delete merge".split())


def _strip_literals(sql: str) -> Optional[str]:
    """sql with '...' strings replaced by '' and "..." identifiers by a
    placeholder word; None when it has anything the scan does not handle
    for sure (backslashes, $, backticks, brackets, comments, an unterminated
    quote)."""
    if any(ch in sql for ch in "\\$`[\0") or "--" in sql or "/*" in sql:
        return None
    out: List[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            j = i + 1
            while True:
                k = sql.find(ch, j)
                if k < 0:
                    return None
                if k + 1 < n and sql[k + 1] == ch:
                    j = k + 2
                    continue
                break
            out.append(" '' " if ch == "'" else " qident ")
            i = k + 1
        else:
            out.append(ch)
            i += 1
    text = "".join(out)
    if "--" in text or "/*" in text:
        return None
    return text


def is_plain_select(sql: str) -> bool:
    """True when ``sql`` is certainly a single read without side effects, so
    that running it again is harmless: one statement (at most a trailing
    ``;``) starting with SELECT or WITH, with no INTO, FOR UPDATE/SHARE or
    data-changing words, no comments, dollar quotes or backslashes, and
    calling only well-known side-effect-free functions.  Conservative: False
    whenever it cannot tell.  (A SELECT from a view that calls a function
    with side effects cannot be seen from the text: pass idempotent=False.)"""
    if not isinstance(sql, str):
        return False
    text = _strip_literals(sql)
    if text is None:
        return False
    text = text.strip()
    if text.endswith(";"):
        text = text[:-1].rstrip()
    if ";" in text:
        return False
    if not re.match(r"(?i)(select|with)\b", text):
        return False
    low = text.lower()
    words = set(re.findall(r"[a-z_][a-z0-9_$]*", low))
    if words & _WRITE_WORDS:
        return False
    if re.search(r"\.\s*[a-z_][a-z0-9_$]*\s*\(", low):          # schema-qualified call
        return False
    for name in re.findall(r"([a-z_][a-z0-9_$]*)\s*\(", low):
        if name not in _SAFE_FUNCTIONS and name not in _PAREN_KEYWORDS:
            return False
    return True


_ROLLBACK_TO = re.compile(r"(?is)^\s*rollback\s+(?:work\s+|transaction\s+)?to\b")


def _is_connection_error(exc: BaseException) -> bool:
    """A failure of the connection or of reaching the endpoint (not of the SQL)."""
    if isinstance(exc, OSError):
        return True                      # a Python backend's ConnectionError and kin
    if not isinstance(exc, errors.Error) or isinstance(exc, errors.QueryTimeoutError):
        return False
    if isinstance(exc, (errors.PoolClosedError, errors.PoolTimeoutError)):
        return False
    if exc.error_code in (2004, 2008, 2009, 2010, 2011, 4015):
        return True
    st = exc.sqlstate or ""
    return st.startswith("08") or st in ("57P01", "57P02", "57P03", "25006")


def _rejected_read_only(exc: BaseException) -> bool:
    """The server refused the statement because it is read-only now (a demoted
    primary): certainly not applied."""
    return isinstance(exc, errors.Error) and exc.sqlstate == "25006"


def _sent(exc: BaseException) -> Optional[bool]:
    return getattr(exc, "statement_sent", None)


def _code_of(exc: BaseException) -> Optional[int]:
    return getattr(exc, "error_code", None)


# ---------------------------------------------------------------------------
# the manager
# ---------------------------------------------------------------------------

class _Lease:
    """A borrowed connection, where it came from, and how to give it back."""

    __slots__ = ("conn", "endpoint", "kind", "_release")

    def __init__(self, conn: PooledConnection, endpoint: Optional[str], kind: str, release: Callable[[], Any]):
        self.conn = conn
        self.endpoint = endpoint
        self.kind = kind
        self._release = release

    def release(self) -> None:
        r, self._release = self._release, None
        if r is not None:
            r()


class _Source:
    """What connect() built: a pool or a failover manager."""

    def __init__(self, pool: Optional[DatabaseConnectionPool] = None,
                 failover: Optional[DatabaseFailoverManager] = None):
        self.pool = pool
        self.failover = failover


def _new_id() -> str:
    return uuid.uuid4().hex


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000.0, 3)


def _left(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


class DatabaseManager:
    """Queries, transactions and table helpers over a pool, with or without
    failover; see the module docstring.

    ``backend_factory``: None, a DSN string (same as ``config=``), or a
    callable handed to the pool (called with no arguments) or, with
    failover, to the DatabaseFailoverManager (called with an endpoint's
    connection string).  ``config``: a DatabaseConfig, a
    DSN string, or None for ``DatabaseConfig()``.  ``enable_failover=True``
    needs ``failover_endpoints`` (DatabaseEndpoint objects or dicts of their
    fields); ``failover_config`` is a FailoverConfig.  ``failover_retry_wait``
    bounds how long a transparent retry waits for a usable endpoint.  Other
    keywords are pool options (see DatabaseConnectionPool).  Every problem
    with these raises ConfigurationError here, before connect().
    """

    def __init__(self, backend_factory: Optional[Callable[..., Any]] = None,
                 config: Union[DatabaseConfig, str, None] = None, enable_failover: bool = False,
                 failover_endpoints: Optional[Sequence[Union[DatabaseEndpoint, Mapping[str, Any]]]] = None,
                 failover_config: Optional[FailoverConfig] = None, *, failover_retry_wait: float = 5.0,
                 **pool_options: Any):
        if isinstance(backend_factory, str):
            # What DatabaseConnectionPool accepts: a DSN in place of a factory.
            if config is not None or enable_failover:
                raise errors.ConfigurationError(
                    "backend_factory is a DSN string: pass it as config= (with failover, each endpoint has its "
                    "own connection string)")
            config, backend_factory = backend_factory, None
        if config is None:
            config = DatabaseConfig()
        elif isinstance(config, str):
            if not config.strip():
                raise errors.ConfigurationError("config must not be an empty DSN")
            config = DatabaseConfig(connection_string=config.strip())
        elif not isinstance(config, DatabaseConfig):
            raise errors.ConfigurationError(
                f"config must be a DatabaseConfig, a DSN string or None, not {type(config).__name__}")
        if backend_factory is not None and not callable(backend_factory):
            raise errors.ConfigurationError(
                f"backend_factory must be None, a DSN string or a callable returning a backend, not "
                f"{type(backend_factory).__name__}")
        if not isinstance(enable_failover, bool):
            raise errors.ConfigurationError(f"enable_failover must be True or False, not {enable_failover!r}")
        w = failover_retry_wait
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 or math.isinf(w):
            raise errors.ConfigurationError(f"failover_retry_wait must be a number of seconds >= 0, not {w!r}")
        self.config = config
        self.backend_factory = backend_factory
        self.enable_failover = enable_failover
        self.failover_retry_wait = float(w)
        self.failover_endpoints: List[DatabaseEndpoint] = []
        self.failover_config: Optional[FailoverConfig] = None

        if enable_failover:
            if not failover_endpoints:
                raise errors.ConfigurationError(
                    "enable_failover=True needs failover_endpoints (a list of DatabaseEndpoint); "
                    "without failover, leave enable_failover False")
            eps = []
            for e in failover_endpoints:
                if isinstance(e, Mapping):
                    try:
                        e = DatabaseEndpoint(**e)
                    except TypeError as exc:
                        raise errors.ConfigurationError(f"bad endpoint {dict(e)!r}: {exc}") from None
                if not isinstance(e, DatabaseEndpoint):
                    raise errors.ConfigurationError(
                        f"failover_endpoints must hold DatabaseEndpoint objects, not {type(e).__name__}")
                if backend_factory is None:
                    backend_kind(e.connection_string)      # a bad DSN fails here
                eps.append(e)
            fc = failover_config if failover_config is not None else FailoverConfig()
            if not isinstance(fc, FailoverConfig):
                raise errors.ConfigurationError("failover_config must be a FailoverConfig")
            if not isinstance(fc.pool_options, dict):
                raise errors.ConfigurationError("FailoverConfig.pool_options must be a dict of pool options")
            fc = dataclasses.replace(fc, pool_options={**fc.pool_options, **pool_options})
            fc.validate()
            resolve_pool_options({"max_connections": fc.pool_max_connections, "timeout": fc.pool_timeout,
                                  **fc.pool_options})
            self.failover_endpoints = eps
            self.failover_config = fc
            self._pool_options: Dict[str, Any] = {}
        else:
            if failover_endpoints:
                raise errors.ConfigurationError("failover_endpoints given but enable_failover is False")
            if failover_config is not None:
                raise errors.ConfigurationError("failover_config given but enable_failover is False")
            opts = {"max_connections": config.max_connections, "timeout": config.timeout,
                    "retry_attempts": config.retry_attempts}
            opts.update(pool_options)
            resolve_pool_options(opts)            # unknown or bad options fail here
            if backend_factory is None:
                backend_kind(config.connection_string)
            self._pool_options = opts

        self._lock = threading.RLock()
        self._source: Optional[_Source] = None

    # -- lifecycle -----------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._source is not None

    def connect(self) -> None:
        """Build the pool (or the failover manager, and start its monitoring)
        and borrow one connection to check it.  Idempotent.  Raises the cause's
        class with code 3001 when the check fails; ConfigurationError as is."""
        with self._lock:
            if self._source is not None:
                return
            cid = _new_id()
            t0 = time.monotonic()
            source = _Source()
            endpoint = None
            try:
                if self.enable_failover:
                    source.failover = DatabaseFailoverManager(self.failover_endpoints, self.backend_factory,
                                                              self.failover_config)
                    source.failover.start_monitoring()
                    fc = self.failover_config
                    timeout = fc.pool_options.get("timeout", fc.pool_timeout)
                else:
                    target = self.backend_factory if self.backend_factory is not None \
                        else self.config.connection_string
                    source.pool = DatabaseConnectionPool(target, **self._pool_options)
                    timeout = self._pool_options["timeout"]
                    endpoint = source.pool.target
                lease = self._lend_from(source, timeout)
                endpoint = lease.endpoint
                try:
                    ok = lease.conn.ping()
                finally:
                    lease.release()
                if not ok:
                    raise errors.OperationalError(f"the server at {endpoint!r} did not answer a ping", 3001)
            except BaseException as exc:
                self._teardown(source)
                if isinstance(exc, errors.Error) and not isinstance(exc, errors.ConfigurationError):
                    new = self._rewrap(exc, 3001, f"connect failed: {exc.message}", endpoint, cid)
                    self._log(logging.WARNING, "connect failed: %s", exc.message, op="connect", cid=cid,
                              endpoint=endpoint, t0=t0, code=3001)
                    raise new from exc
                raise
            self._source = source
            self._log(logging.INFO, "connected (%s)", "failover" if self.enable_failover else "single pool",
                      op="connect", cid=cid, endpoint=endpoint, t0=t0)

    def disconnect(self) -> None:
        """Shut the pool (or failover manager) down; a later connect() starts
        afresh.  Does nothing when not connected.  Failure: code 3002."""
        self._shutdown("disconnect", 3002)

    def close(self) -> None:
        """Like disconnect() (failure: code 3036); the context manager's exit."""
        self._shutdown("close", 3036)

    def _shutdown(self, op: str, code: int) -> None:
        with self._lock:
            source, self._source = self._source, None
        if source is None:
            return
        cid = _new_id()
        t0 = time.monotonic()
        try:
            if source.failover is not None:
                source.failover.shutdown()
            if source.pool is not None:
                source.pool.shutdown()
        except errors.Error as exc:
            new = self._rewrap(exc, code, f"{op} failed: {exc.message}", None, cid)
            self._log(logging.WARNING, "%s failed: %s", op, exc.message, op=op, cid=cid, t0=t0, code=code)
            raise new from exc
        self._log(logging.INFO, "%s", "disconnected" if op == "disconnect" else "closed", op=op, cid=cid, t0=t0)

    @staticmethod
    def _teardown(source: _Source) -> None:
        try:
            if source.failover is not None:
                source.failover.shutdown()
            if source.pool is not None:
                source.pool.shutdown(timeout=0)
        except Exception:  # pragma: no cover - best effort after a failed connect
            log.debug("teardown after a failed connect raised", exc_info=True)

    def __enter__(self) -> "DatabaseManager":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "not connected"
        if self.enable_failover:
            where = "failover over " + ", ".join(e.id for e in self.failover_endpoints)
        elif self.backend_factory is not None:
            where = "python backend"
        else:
            where = redact_dsn(self.config.connection_string)
        return f"<DatabaseManager {where} {state}>"

    # -- borrowing -------------------------------------------------------------

    def _require(self, op: str) -> _Source:
        source = self._source
        if source is None:
            code = _OP_CODES.get(op, (3003, 3005))[0]
            raise NotConnectedError(
                f"{op}: the DatabaseManager is not connected; call connect() first (or use it in a with-block)",
                code)
        return source

    @staticmethod
    def _lend_from(source: _Source, timeout: Optional[float]) -> _Lease:
        if source.failover is not None:
            fo = source.failover
            cm = fo.get_connection(timeout)
            conn = cm.__enter__()
            # The lend hands out only connections of the endpoint current at
            # that moment: read it now (a switch in between is rare and only
            # affects what the logs and messages name).
            eid = fo.current_endpoint
            try:
                if conn.backend is not None:
                    kind = "python"
                elif conn.backend_pid is not None:
                    kind = "postgresql"
                else:
                    kind = "sqlite"
            except BaseException:
                cm.__exit__(None, None, None)
                raise
            return _Lease(conn, eid, kind, lambda: cm.__exit__(None, None, None))
        pool = source.pool
        conn = pool.acquire(timeout)
        return _Lease(conn, pool.target, pool.backend_kind, conn.release)

    def _lend(self, source: _Source, deadline: Optional[float], wait_until: Optional[float]) -> _Lease:
        """Borrow; with failover, a borrow that fails for connection reasons is
        tried again (nothing was sent) until ``wait_until``."""
        while True:
            try:
                return self._lend_from(source, _left(deadline))
            except BaseException as exc:
                if (source.failover is None or wait_until is None or not _is_connection_error(exc)
                        or time.monotonic() >= wait_until or (deadline is not None and time.monotonic() >= deadline)):
                    raise
                time.sleep(0.02)

    def _wait_bound(self, deadline: Optional[float]) -> float:
        w = time.monotonic() + self.failover_retry_wait
        return w if deadline is None else min(w, deadline)

    @contextlib.contextmanager
    def get_connection(self, timeout: Optional[float] = None) -> Iterator[PooledConnection]:
        """Borrow a connection (of the current endpoint with failover), a
        context manager; the pool's errors pass through as they are."""
        source = self._require("query")
        lease = self._lend_from(source, timeout)
        try:
            yield lease.conn
        finally:
            lease.release()

    # -- errors and logs -------------------------------------------------------

    @staticmethod
    def _rewrap(exc: BaseException, code: int, message: str, endpoint: Optional[str], cid: str) -> BaseException:
        """The same class as exc with the manager's code (exc becomes the cause)."""
        if not isinstance(exc, errors.Error):
            return exc
        cls = type(exc)
        try:
            new = cls(message, code, exc.sqlstate, exc.server_message)
        except Exception:
            new = errors.DatabaseError(message, code, exc.sqlstate, exc.server_message)
        if "statement_sent" in vars(exc):
            new.statement_sent = exc.statement_sent
        new.endpoint = endpoint
        new.correlation_id = cid
        return new

    @staticmethod
    def _log(level: int, msg: str, *args: Any, op: str, cid: str, endpoint: Optional[str] = None,
             t0: Optional[float] = None, code: Optional[int] = None, **more: Any) -> None:
        if not log.isEnabledFor(level):
            return
        extra = {"correlation_id": cid, "endpoint": endpoint,
                 "duration_ms": _ms(t0) if t0 is not None else None, "error_code": code, "operation": op}
        extra.update(more)
        log.log(level, msg, *args, extra=extra)

    def _fail(self, exc: BaseException, op: str, cid: str, endpoint: Optional[str], t0: float,
              what: str) -> BaseException:
        """Log a failed operation and build what to raise."""
        code = _OP_CODES[op][1]
        if op == "query" and isinstance(exc, errors.QueryTimeoutError):
            code = 3004
        if isinstance(exc, errors.Error):
            new = self._rewrap(exc, code, f"{what} failed on endpoint {endpoint!r}: {exc.message}", endpoint, cid)
        else:
            new = exc
        level = logging.WARNING if _is_connection_error(exc) else logging.DEBUG
        self._log(level, "%s failed: %s", what, exc, op=op, cid=cid, endpoint=endpoint, t0=t0,
                  code=_code_of(new), cause_code=_code_of(exc))
        return new

    # -- the statement path with transparent failover --------------------------

    def _run(self, op: str, what: str, work: Callable[[_Lease, Optional[float]], Any], *,
             repeatable: bool, timeout: Optional[float], cid: Optional[str] = None) -> Any:
        """Borrow, run ``work(lease, seconds_left)``, give back; the failover
        and error rules of the module docstring.  ``repeatable``: running the
        work twice is harmless."""
        source = self._require(op)
        cid = cid or _new_id()
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        failover = source.failover is not None
        retried = False
        endpoint: Optional[str] = None
        while True:
            try:
                lease = self._lend(source, deadline, self._wait_bound(deadline) if failover else None)
            except BaseException as exc:
                if not isinstance(exc, errors.Error):
                    raise
                code = _OP_CODES[op][0]
                new = self._rewrap(exc, code, f"{what}: no connection: {exc.message}", endpoint, cid)
                self._log(logging.WARNING, "%s: no connection: %s", what, exc.message, op=op, cid=cid,
                          endpoint=endpoint, t0=t0, code=code, cause_code=exc.error_code)
                raise new from exc
            endpoint = lease.endpoint
            try:
                result = work(lease, _left(deadline))
            except BaseException as exc:
                lease.release()
                if not _is_connection_error(exc):
                    new = self._fail(exc, op, cid, endpoint, t0, what)
                    if new is exc:
                        raise
                    raise new from exc
                not_applied = _sent(exc) is False or _rejected_read_only(exc)
                if failover and not retried and (not_applied or repeatable):
                    retried = True
                    self._log(logging.WARNING, "%s: connection failure on endpoint %r (%s); running it once more "
                              "on the current endpoint", what, endpoint, exc, op=op, cid=cid, endpoint=endpoint,
                              t0=t0, code=_code_of(exc), retry=True)
                    continue
                if not_applied or repeatable:
                    new = self._fail(exc, op, cid, endpoint, t0, what)
                    if new is exc:
                        raise
                    raise new from exc
                new = OutcomeUnknownError(
                    f"{what}: the outcome is unknown: the connection to endpoint {endpoint!r} was lost after the "
                    f"statement was sent, so it may or may not have been applied; it was not run again "
                    f"(cause: {exc})")
                new.endpoint = endpoint
                new.correlation_id = cid
                new.statement_sent = _sent(exc)
                self._log(logging.ERROR, "%s: outcome unknown on endpoint %r: %s", what, endpoint, exc, op=op,
                          cid=cid, endpoint=endpoint, t0=t0, code=OUTCOME_UNKNOWN, cause_code=_code_of(exc))
                raise new from exc
            lease.release()
            self._log(logging.DEBUG, "%s ok", what, op=op, cid=cid, endpoint=endpoint, t0=t0, retried=retried)
            return result

    def execute_query(self, query: str, params: Any = None, timeout: Optional[float] = None,
                      idempotent: Optional[bool] = None) -> Any:
        """Run one statement: a list of row dicts, or the affected row count.

        Placeholders as the pool's: ``%s`` with a sequence, ``%(name)s`` with
        a mapping.  ``timeout`` bounds the whole call (borrow, statement,
        failover wait); past it the statement is cancelled (QueryTimeoutError,
        3004).  ``idempotent``: True when running it twice is harmless, False
        when even a read must not be repeated, None to let the manager decide
        (plain SELECTs only)."""
        if idempotent is not None and not isinstance(idempotent, bool):
            raise errors.ProgrammingError(f"idempotent must be True, False or None, not {idempotent!r}", 3005)
        repeatable = idempotent if idempotent is not None else is_plain_select(query)

        def work(lease: _Lease, left: Optional[float]) -> Any:
            return lease.conn.execute_query(query, params, timeout=left)
        return self._run("query", "query", work, repeatable=repeatable, timeout=timeout)

    # -- batches and transactions ---------------------------------------------

    def execute_batch(self, queries: Iterable[Union[str, Tuple[str, Any]]],
                      timeout: Optional[float] = None) -> List[Any]:
        """Run ``[(query, params), ...]`` (a bare string means no params) in
        one transaction; the list of their results.  Any failure rolls the
        whole batch back: a statement's error keeps its class, with code 3007
        and a ``batch_index`` attribute; a lost connection raises
        TransactionError (3007) -- after one more run on the new endpoint when
        failover is on -- or OutcomeUnknownError if it was lost during COMMIT."""
        op = "execute_batch"
        items: List[Tuple[str, Any]] = []
        for i, item in enumerate(queries):
            if isinstance(item, str):
                items.append((item, None))
            elif isinstance(item, (tuple, list)) and len(item) in (1, 2) and isinstance(item[0], str):
                items.append((item[0], item[1] if len(item) == 2 else None))
            else:
                raise errors.ProgrammingError(
                    f"execute_batch: item {i} must be a query string or a (query, params) pair, not {item!r}", 3007)
        source = self._require(op)
        cid = _new_id()
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        failover = source.failover is not None
        retried = False
        endpoint: Optional[str] = None
        while True:
            try:
                lease = self._lend(source, deadline, self._wait_bound(deadline) if failover else None)
            except errors.Error as exc:
                new = self._rewrap(exc, 3006, f"execute_batch: no connection: {exc.message}", endpoint, cid)
                self._log(logging.WARNING, "execute_batch: no connection: %s", exc.message, op=op, cid=cid,
                          t0=t0, code=3006, cause_code=exc.error_code)
                raise new from exc
            endpoint = lease.endpoint
            conn = lease.conn
            results: List[Any] = []
            stage, index = "begin", -1
            try:
                conn.begin()
                stage = "statements"
                for index, (q, p) in enumerate(items):
                    results.append(conn.execute_query(q, p, timeout=_left(deadline)))
                stage = "commit"
                conn.commit()
            except BaseException as exc:
                self._quiet_rollback(conn)
                lease.release()
                if not _is_connection_error(exc):
                    what = {"begin": "execute_batch BEGIN", "commit": "execute_batch COMMIT"}.get(
                        stage, f"execute_batch statement {index}")
                    new = self._fail(exc, op, cid, endpoint, t0, what)
                    if isinstance(new, errors.Error):
                        new.batch_index = index if stage == "statements" else None
                    if new is exc:
                        raise
                    raise new from exc
                if stage == "commit" and _sent(exc) is not False and not _rejected_read_only(exc):
                    new = OutcomeUnknownError(
                        f"execute_batch: the outcome is unknown: the connection to endpoint {endpoint!r} was lost "
                        f"during COMMIT, so the batch may or may not have been applied; it was not run again "
                        f"(cause: {exc})")
                    new.endpoint, new.correlation_id = endpoint, cid
                    self._log(logging.ERROR, "execute_batch: outcome unknown on endpoint %r: %s", endpoint, exc,
                              op=op, cid=cid, endpoint=endpoint, t0=t0, code=OUTCOME_UNKNOWN,
                              cause_code=_code_of(exc))
                    raise new from exc
                if failover and not retried:
                    retried = True
                    self._log(logging.WARNING, "execute_batch: connection lost on endpoint %r before COMMIT (%s); "
                              "the batch was rolled back, running it once more", endpoint, exc, op=op, cid=cid,
                              endpoint=endpoint, t0=t0, code=_code_of(exc), retry=True)
                    continue
                new = TransactionError(
                    f"execute_batch: the connection to endpoint {endpoint!r} was lost before COMMIT; the batch was "
                    f"rolled back, nothing of it was applied (cause: {exc})", 3007)
                new.endpoint, new.correlation_id = endpoint, cid
                self._log(logging.WARNING, "%s", new.message, op=op, cid=cid, endpoint=endpoint, t0=t0, code=3007,
                          cause_code=_code_of(exc))
                raise new from exc
            lease.release()
            self._log(logging.DEBUG, "execute_batch ok (%d statements)", len(items), op=op, cid=cid,
                      endpoint=endpoint, t0=t0, retried=retried)
            return results

    @staticmethod
    def _quiet_rollback(conn: PooledConnection) -> None:
        try:
            conn.rollback()
        except Exception:
            log.debug("rollback after a failure raised", exc_info=True)

    @contextlib.contextmanager
    def transaction(self, timeout: Optional[float] = None) -> Iterator["Transaction"]:
        """A context manager yielding a :class:`Transaction`: commits when the
        block ends, rolls back when it raises (the exception propagates as it
        was).  ``timeout`` bounds borrowing the connection.  A lost
        connection (a failover) inside it: TransactionError (3009), all of it
        rolled back; lost during COMMIT: OutcomeUnknownError."""
        op = "transaction"
        source = self._require(op)
        cid = _new_id()
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        failover = source.failover is not None
        lease: Optional[_Lease] = None
        for attempt in (0, 1):
            try:
                lease = self._lend(source, deadline, self._wait_bound(deadline) if failover else None)
            except errors.Error as exc:
                new = self._rewrap(exc, 3008, f"transaction: no connection: {exc.message}", None, cid)
                self._log(logging.WARNING, "transaction: no connection: %s", exc.message, op=op, cid=cid, t0=t0,
                          code=3008, cause_code=exc.error_code)
                raise new from exc
            try:
                lease.conn.begin()
                break
            except BaseException as exc:
                lease.release()
                if _is_connection_error(exc) and failover and attempt == 0:
                    continue          # nothing of the transaction ran yet
                if isinstance(exc, errors.Error):
                    new = TransactionError(f"transaction: BEGIN failed on endpoint {lease.endpoint!r}: {exc.message}",
                                           3009, exc.sqlstate, exc.server_message)
                    new.endpoint, new.correlation_id = lease.endpoint, cid
                    self._log(logging.WARNING, "%s", new.message, op=op, cid=cid, endpoint=lease.endpoint, t0=t0,
                              code=3009, cause_code=exc.error_code)
                    raise new from exc
                raise
        assert lease is not None
        tx = Transaction(self, lease, cid)
        self._log(logging.DEBUG, "transaction begun", op=op, cid=cid, endpoint=lease.endpoint, t0=t0)
        try:
            try:
                yield tx
            except BaseException as exc:
                tx._done = True
                self._quiet_rollback(lease.conn)
                self._log(logging.DEBUG, "transaction rolled back: %s", exc.__class__.__name__, op=op, cid=cid,
                          endpoint=lease.endpoint, t0=t0, code=_code_of(exc))
                raise
            tx._done = True
            if tx._failed is not None or tx._aborted is not None:
                cause = tx._failed if tx._failed is not None else tx._aborted
                self._quiet_rollback(lease.conn)
                if tx._failed is not None:
                    msg = (f"the transaction was rolled back: the connection to endpoint {lease.endpoint!r} was "
                           f"lost inside it; nothing of it was applied (cause: {cause})")
                else:
                    msg = (f"the transaction was rolled back: a statement failed inside it, which aborts a "
                           f"PostgreSQL transaction; nothing of it was applied (cause: {cause})")
                new = TransactionError(msg, 3009)
                new.endpoint, new.correlation_id = lease.endpoint, cid
                self._log(logging.WARNING if tx._failed is not None else logging.DEBUG, "%s", msg, op=op,
                          cid=cid, endpoint=lease.endpoint, t0=t0, code=3009)
                raise new from cause
            try:
                lease.conn.commit()
            except BaseException as exc:
                self._quiet_rollback(lease.conn)
                if _is_connection_error(exc) and _sent(exc) is not False and not _rejected_read_only(exc):
                    new = OutcomeUnknownError(
                        f"transaction: the outcome is unknown: the connection to endpoint {lease.endpoint!r} was "
                        f"lost during COMMIT, so the transaction may or may not have been applied (cause: {exc})")
                    code = OUTCOME_UNKNOWN
                elif isinstance(exc, errors.Error):
                    msg = (f"transaction: COMMIT failed on endpoint {lease.endpoint!r}, the transaction was "
                           f"rolled back: {exc.message}")
                    if _is_connection_error(exc):
                        new = TransactionError(msg, 3009, exc.sqlstate, exc.server_message)
                    else:
                        new = self._rewrap(exc, 3009, msg, lease.endpoint, cid)
                    code = 3009
                else:
                    raise
                new.endpoint, new.correlation_id = lease.endpoint, cid
                self._log(logging.WARNING if code == 3009 else logging.ERROR, "%s", new.message, op=op, cid=cid,
                          endpoint=lease.endpoint, t0=t0, code=code, cause_code=_code_of(exc))
                raise new from exc
            self._log(logging.DEBUG, "transaction committed", op=op, cid=cid, endpoint=lease.endpoint, t0=t0)
        finally:
            tx._done = True
            lease.release()

    # -- failover ----------------------------------------------------------------

    def _failover_or_raise(self, op: str, code: int) -> DatabaseFailoverManager:
        if not self.enable_failover:
            raise FailoverNotEnabledError(
                f"{op}: failover is not enabled (make the DatabaseManager with enable_failover=True and "
                "failover_endpoints)", code)
        return self._require("query").failover

    def trigger_failover(self, reason: str = "Manual failover", target: Optional[str] = None) -> bool:
        """Switch to ``target`` (an endpoint id) or the best other endpoint;
        True when it switched.  FailoverNotEnabledError (3037) without failover."""
        fo = self._failover_or_raise("trigger_failover", 3037)
        cid = _new_id()
        t0 = time.monotonic()
        before = fo.current_endpoint
        self._log(logging.INFO, "manual failover requested: %s", reason, op="trigger_failover", cid=cid,
                  endpoint=before, triggered_by="operator (DatabaseManager.trigger_failover)", reason=reason,
                  target=target)
        done = fo.trigger_failover(reason, target=target)
        self._log(logging.INFO if done else logging.WARNING, "manual failover %s: %s -> %s",
                  "done" if done else "not done", before, fo.current_endpoint, op="trigger_failover", cid=cid,
                  endpoint=fo.current_endpoint, t0=t0, triggered_by="operator (DatabaseManager.trigger_failover)",
                  reason=reason, success=bool(done))
        return done

    def trigger_recovery(self) -> bool:
        """Fail back to the preferred endpoint if it qualifies; True when it
        did.  FailoverNotEnabledError (3038) without failover."""
        fo = self._failover_or_raise("trigger_recovery", 3038)
        cid = _new_id()
        t0 = time.monotonic()
        before = fo.current_endpoint
        self._log(logging.INFO, "manual recovery requested", op="trigger_recovery", cid=cid, endpoint=before,
                  triggered_by="operator (DatabaseManager.trigger_recovery)")
        done = fo.trigger_recovery()
        self._log(logging.INFO if done else logging.WARNING, "manual recovery %s: %s -> %s",
                  "done" if done else "not done", before, fo.current_endpoint, op="trigger_recovery", cid=cid,
                  endpoint=fo.current_endpoint, t0=t0, triggered_by="operator (DatabaseManager.trigger_recovery)",
                  success=bool(done))
        return done

    def get_failover_status(self) -> Optional[dict]:
        """The failover manager's get_status(); None when failover is off."""
        if not self.enable_failover:
            return None
        return self._require("query").failover.get_status()

    @property
    def failover_manager(self) -> Optional[DatabaseFailoverManager]:
        """The DatabaseFailoverManager while connected with failover, else None."""
        source = self._source
        return source.failover if source is not None else None

    @property
    def pool(self) -> Optional[DatabaseConnectionPool]:
        """The DatabaseConnectionPool while connected without failover, else
        None (with failover: ``failover_manager.get_pool(endpoint_id)``)."""
        source = self._source
        return source.pool if source is not None else None

    # -- health and stats ------------------------------------------------------------

    def _current_pool(self, source: _Source) -> Tuple[DatabaseConnectionPool, Optional[str]]:
        if source.failover is None:
            return source.pool, source.pool.target
        fo = source.failover
        eid = fo.current_endpoint
        if eid is None:       # an outage: the preferred endpoint's pool
            best = min(self.failover_endpoints, key=lambda e: (not e.is_primary, e.priority))
            return fo.get_pool(best.id), None
        return fo.get_pool(eid), eid

    def health_check(self, timeout: float = 5.0) -> bool:
        """True when a connection of the current endpoint answers ``SELECT 1``
        within ``timeout``; False otherwise (also when not connected).  The
        reason of a False is logged (codes 3034/3035)."""
        cid = _new_id()
        t0 = time.monotonic()
        source = self._source
        if source is None:
            self._log(logging.DEBUG, "health check: not connected", op="health_check", cid=cid, t0=t0, code=3034)
            return False
        try:
            lease = self._lend_from(source, timeout)
        except Exception as exc:
            self._log(logging.WARNING, "health check: no connection: %s", exc, op="health_check", cid=cid, t0=t0,
                      code=3034, cause_code=_code_of(exc))
            return False
        try:
            lease.conn.execute_query("SELECT 1", None, timeout=max(0.001, timeout - (time.monotonic() - t0)))
        except Exception as exc:
            self._log(logging.WARNING, "health check failed: %s", exc, op="health_check", cid=cid,
                      endpoint=lease.endpoint, t0=t0, code=3035, cause_code=_code_of(exc))
            return False
        finally:
            lease.release()
        self._log(logging.DEBUG, "health check ok", op="health_check", cid=cid, endpoint=lease.endpoint, t0=t0)
        return True

    def get_pool_stats(self) -> PoolStats:
        """PoolStats of the current pool (the current endpoint's with failover)."""
        source = self._require("stats")
        return self._current_pool(source)[0].get_stats()

    def get_database_stats(self) -> dict:
        """``{"backend", "endpoint", "server_version", "database_size" (bytes),
        "table_count", "pool": PoolStats as a dict}``.  For a Python backend
        the server fields are None."""
        op = "stats"
        source = self._require(op)
        pool, _ = self._current_pool(source)

        def work(lease: _Lease, left: Optional[float]) -> dict:
            c = lease.conn
            out = {"backend": lease.kind, "endpoint": lease.endpoint, "server_version": None,
                   "database_size": None, "table_count": None}
            if lease.kind == "postgresql":
                row = c.execute_query(
                    "SELECT current_setting('server_version') AS v, pg_database_size(current_database()) AS size, "
                    "(SELECT count(*) FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = k.relnamespace WHERE k.relkind IN ('r', 'p') AND n.nspname NOT IN "
                    "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%') AS tables",
                    (), timeout=left)[0]
                out.update(server_version=row["v"], database_size=int(row["size"]), table_count=int(row["tables"]))
            elif lease.kind == "sqlite":
                row = c.execute_query(
                    "SELECT sqlite_version() AS v, (SELECT page_count FROM pragma_page_count()) * "
                    "(SELECT page_size FROM pragma_page_size()) AS size, (SELECT count(*) FROM sqlite_master "
                    "WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_') AS tables", (), timeout=left)[0]
                out.update(server_version=row["v"], database_size=int(row["size"]), table_count=int(row["tables"]))
            return out
        stats = self._run(op, "get_database_stats", work, repeatable=True, timeout=None)
        stats["pool"] = pool.get_stats().to_dict()
        return stats

    def get_connection_info(self) -> dict:
        """Where the manager connects: ``{"backend", "dsn" (password redacted),
        "connected", "failover_enabled", "current_endpoint", "endpoints"
        ({id: redacted dsn}, failover only), "max_connections", "timeout"}``."""
        source = self._source
        info: Dict[str, Any] = {"connected": source is not None, "failover_enabled": self.enable_failover,
                                "current_endpoint": None, "endpoints": None}
        if self.enable_failover:
            fc = self.failover_config
            info["endpoints"] = {e.id: redact_dsn(e.connection_string) for e in self.failover_endpoints}
            info["max_connections"] = fc.pool_options.get("max_connections", fc.pool_max_connections)
            info["timeout"] = fc.pool_options.get("timeout", fc.pool_timeout)
            backend, dsn = None, None
            if source is not None:
                eid = source.failover.current_endpoint
                info["current_endpoint"] = eid
                if eid is not None:
                    backend = source.failover.get_pool(eid).backend_kind
                    dsn = info["endpoints"][eid]
            elif self.backend_factory is None:
                best = min(self.failover_endpoints, key=lambda e: (not e.is_primary, e.priority))
                backend, dsn = backend_kind(best.connection_string), redact_dsn(best.connection_string)
            if self.backend_factory is not None:
                backend = "python"
            info["backend"], info["dsn"] = backend, dsn
        else:
            info["max_connections"] = self._pool_options["max_connections"]
            info["timeout"] = self._pool_options["timeout"]
            if self.backend_factory is not None:
                info["backend"], info["dsn"] = "python", None
            else:
                info["backend"] = backend_kind(self.config.connection_string)
                info["dsn"] = redact_dsn(self.config.connection_string)
            if source is not None:
                info["current_endpoint"] = source.pool.target
        return info

    # -- table helpers ---------------------------------------------------------------

    @staticmethod
    def _q(name: Any, what: str, kind: str) -> str:
        return quote_identifier(name, what, 63 if kind == "postgresql" else None)

    def _kind_hint(self) -> str:
        """The backend kind the helpers build SQL for (checked per borrow too)."""
        source = self._source
        if source is None:
            return "unknown"
        return self._current_pool(source)[0].backend_kind

    def _bad_arg(self, op: str, message: str) -> errors.ProgrammingError:
        return errors.ProgrammingError(f"{op}: {message}", _OP_CODES[op][1])

    def _ident(self, op: str, name: Any, what: str) -> str:
        try:
            return self._q(name, what, self._kind_hint())
        except errors.ProgrammingError as exc:
            raise self._bad_arg(op, exc.message) from None

    def _where(self, op: str, qt: str, conditions: Optional[Mapping[str, Any]],
               required: bool) -> Tuple[str, list]:
        # Column references are qualified with the table: SQLite takes an
        # unqualified "name" that is no column for a string literal, so
        # {"nmae": "x"} would otherwise compare 'nmae' = 'x' (or match every
        # row); "table"."nmae" is an error instead.
        if conditions is None or (isinstance(conditions, Mapping) and not conditions):
            if required:
                raise self._bad_arg(op, "conditions are required (a non-empty mapping of column to value); "
                                        "to change every row, use execute_query")
            return "", []
        if not isinstance(conditions, Mapping):
            raise self._bad_arg(op, f"conditions must be a mapping of column to value, not "
                                    f"{type(conditions).__name__}")
        parts, values = [], []
        for col, val in conditions.items():
            q = f'{qt}.{self._ident(op, col, "column name")}'
            if val is None:
                parts.append(f"{q} IS NULL")
            else:
                parts.append(f"{q} = %s")
                values.append(val)
        return " WHERE " + " AND ".join(parts), values

    @staticmethod
    def _count(result: Any) -> int:
        if isinstance(result, bool):
            return int(result)
        if isinstance(result, int):
            return result
        if isinstance(result, list):
            return len(result)
        return -1

    def insert(self, table: str, data: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]],
               timeout: Optional[float] = None) -> int:
        """Insert one row (a mapping of column to value) or several (a list of
        mappings with the same columns, in one transaction); the number of
        rows inserted."""
        op = "insert"
        self._require(op)
        qt = self._ident(op, table, "table name")
        rows = [data] if isinstance(data, Mapping) else data
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
            raise self._bad_arg(op, "data must be a non-empty mapping of column to value, or a non-empty list "
                                    "of them")
        for r in rows:
            if not isinstance(r, Mapping) or not r:
                raise self._bad_arg(op, "every row must be a non-empty mapping of column to value")
        cols = list(rows[0].keys())
        for r in rows[1:]:
            if set(r.keys()) != set(cols):
                raise self._bad_arg(op, "every row must have the same columns")
        qcols = [self._ident(op, c, "column name") for c in cols]
        sql = f"INSERT INTO {qt} ({', '.join(qcols)}) VALUES ({', '.join(['%s'] * len(cols))})"
        values = [tuple(r[c] for c in cols) for r in rows]

        def work(lease: _Lease, left: Optional[float]) -> int:
            if len(values) == 1:
                return self._count(lease.conn.execute_query(sql, values[0], timeout=left))
            return self._count(lease.conn.execute_many(sql, values, timeout=left))
        return self._run(op, f"insert into {table!r}", work, repeatable=False, timeout=timeout)

    def update(self, table: str, data: Mapping[str, Any], conditions: Mapping[str, Any],
               timeout: Optional[float] = None) -> int:
        """``UPDATE table SET col = value, ... WHERE cond = value AND ...``;
        the number of rows changed.  Empty or missing conditions are refused."""
        op = "update"
        self._require(op)
        qt = self._ident(op, table, "table name")
        if not isinstance(data, Mapping) or not data:
            raise self._bad_arg(op, "data must be a non-empty mapping of column to value")
        sets = [f"{self._ident(op, c, 'column name')} = %s" for c in data]
        where, wvals = self._where(op, qt, conditions, required=True)
        sql = f"UPDATE {qt} SET {', '.join(sets)}{where}"
        params = tuple(data.values()) + tuple(wvals)

        def work(lease: _Lease, left: Optional[float]) -> int:
            return self._count(lease.conn.execute_query(sql, params, timeout=left))
        return self._run(op, f"update of {table!r}", work, repeatable=False, timeout=timeout)

    def delete(self, table: str, conditions: Mapping[str, Any], timeout: Optional[float] = None) -> int:
        """``DELETE FROM table WHERE cond = value AND ...``; the number of rows
        deleted.  Empty or missing conditions are refused."""
        op = "delete"
        self._require(op)
        qt = self._ident(op, table, "table name")
        where, wvals = self._where(op, qt, conditions, required=True)
        sql = f"DELETE FROM {qt}{where}"
        params = tuple(wvals)

        def work(lease: _Lease, left: Optional[float]) -> int:
            return self._count(lease.conn.execute_query(sql, params, timeout=left))
        return self._run(op, f"delete from {table!r}", work, repeatable=False, timeout=timeout)

    def select(self, table: str, columns: Optional[Sequence[str]] = None,
               conditions: Optional[Mapping[str, Any]] = None, limit: Optional[int] = None,
               timeout: Optional[float] = None) -> List[dict]:
        """``SELECT columns FROM table [WHERE ...] [LIMIT n]`` as a list of row
        dicts (no ORDER BY: order rows yourself).  ``columns``: None for all,
        a column name, or a list of them."""
        op = "select"
        self._require(op)
        qt = self._ident(op, table, "table name")
        if columns is None:
            cols = "*"
        else:
            names = [columns] if isinstance(columns, str) else columns
            if not isinstance(names, Iterable) or isinstance(names, (bytes, Mapping)):
                raise self._bad_arg(op, "columns must be None, a column name or a list of them")
            names = list(names)
            if not names:
                raise self._bad_arg(op, "columns must not be empty (None selects every column)")
            qcols = [self._ident(op, c, "column name") for c in names]
            cols = ", ".join(f"{qt}.{qc} AS {qc}" for qc in qcols)      # qualified: see _where
        where, params = self._where(op, qt, conditions, required=False)
        sql = f"SELECT {cols} FROM {qt}{where}"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise self._bad_arg(op, f"limit must be None or an integer >= 0, not {limit!r}")
            sql += " LIMIT %s"
            params.append(limit)
        tparams = tuple(params)

        def work(lease: _Lease, left: Optional[float]) -> List[dict]:
            rows = lease.conn.execute_query(sql, tparams, timeout=left)
            return rows if isinstance(rows, list) else []
        return self._run(op, f"select from {table!r}", work, repeatable=True, timeout=timeout)

    def _relation(self, op: str, lease: _Lease, name: str, left: Optional[float]) -> Optional[List[Tuple[str, str]]]:
        """[(column, type), ...] of table or view ``name``, None when there is none."""
        kind = lease.kind
        if kind == "postgresql":
            qname = self._q(name, "table name", kind)
            rows = lease.conn.execute_query(
                "SELECT k.oid IS NOT NULL AS found, a.attname AS name, "
                "format_type(a.atttypid, a.atttypmod) AS type "
                "FROM (SELECT (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(%s) "
                "AND c.relkind IN ('r', 'p', 'v', 'm', 'f')) AS oid) k "
                "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum", (qname,), timeout=left)
            if not rows or not rows[0]["found"]:
                return None
            return [(r["name"], r["type"]) for r in rows if r["name"] is not None]
        if kind == "sqlite":
            rows = lease.conn.execute_query(
                "SELECT name, type FROM pragma_table_info(%s) ORDER BY cid", (name,), timeout=left)
            return [(r["name"], r["type"]) for r in rows] if rows else None
        raise errors.NotSupportedError(f"{op} needs a native PostgreSQL or SQLite backend, not {kind!r}")

    def table_exists(self, name: str, timeout: Optional[float] = None) -> bool:
        """True when a table or view of that name is visible (PostgreSQL: on
        the search path; SQLite: in temp, main or an attached database)."""
        op = "table_exists"
        self._require(op)
        self._ident(op, name, "table name")

        def work(lease: _Lease, left: Optional[float]) -> bool:
            return self._relation(op, lease, name, left) is not None
        return self._run(op, f"table_exists({name!r})", work, repeatable=True, timeout=timeout)

    def get_table_schema(self, name: str, timeout: Optional[float] = None) -> Dict[str, str]:
        """``{column: type}`` in column order (PostgreSQL: format_type, e.g.
        'character varying(20)'; SQLite: the declared type).  A missing table
        raises ProgrammingError 3025."""
        op = "get_table_schema"
        self._require(op)
        self._ident(op, name, "table name")

        def work(lease: _Lease, left: Optional[float]) -> Dict[str, str]:
            cols = self._relation(op, lease, name, left)
            if cols is None:
                raise errors.ProgrammingError(f"there is no table or view {name!r}", 3025, "42P01")
            return dict(cols)
        return self._run(op, f"get_table_schema({name!r})", work, repeatable=True, timeout=timeout)

    def create_table(self, name: str, schema: Mapping[str, str], if_not_exists: bool = False,
                     timeout: Optional[float] = None) -> None:
        """``CREATE TABLE name (column type, ...)``; ``schema`` maps column
        names to SQL types, which must match the conservative grammar of the
        module docstring."""
        op = "create_table"
        self._require(op)
        qt = self._ident(op, name, "table name")
        if not isinstance(schema, Mapping) or not schema:
            raise self._bad_arg(op, "schema must be a non-empty mapping of column name to SQL type")
        parts = []
        for col, typ in schema.items():
            qc = self._ident(op, col, "column name")
            try:
                parts.append(f"{qc} {_check_sql_type(col, typ)}")
            except errors.ProgrammingError as exc:
                raise self._bad_arg(op, exc.message) from None
        sql = f"CREATE TABLE {'IF NOT EXISTS ' if if_not_exists else ''}{qt} ({', '.join(parts)})"

        def work(lease: _Lease, left: Optional[float]) -> None:
            lease.conn.execute_query(sql, (), timeout=left)
        self._run(op, f"create_table({name!r})", work, repeatable=False, timeout=timeout)

    def drop_table(self, name: str, if_exists: bool = False, timeout: Optional[float] = None) -> None:
        """``DROP TABLE [IF EXISTS] name``: a missing table is an error unless
        ``if_exists``."""
        op = "drop_table"
        self._require(op)
        qt = self._ident(op, name, "table name")
        sql = f"DROP TABLE {'IF EXISTS ' if if_exists else ''}{qt}"

        def work(lease: _Lease, left: Optional[float]) -> None:
            lease.conn.execute_query(sql, (), timeout=left)
        self._run(op, f"drop_table({name!r})", work, repeatable=False, timeout=timeout)


class Transaction:
    """What ``DatabaseManager.transaction()`` yields: ``execute_query`` on the
    transaction's connection, plus ``endpoint``, ``correlation_id`` and
    ``connection`` (the PooledConnection).  Valid inside the with-block only."""

    def __init__(self, manager: DatabaseManager, lease: _Lease, cid: str):
        self._manager = manager
        self._lease = lease
        self.correlation_id = cid
        self.endpoint = lease.endpoint
        self._done = False
        self._failed: Optional[BaseException] = None      # connection lost: rolled back
        self._aborted: Optional[BaseException] = None     # PostgreSQL: a statement failed

    @property
    def connection(self) -> PooledConnection:
        return self._lease.conn

    def execute_query(self, query: str, params: Any = None, timeout: Optional[float] = None) -> Any:
        """Run one statement inside the transaction (rows or a count).  Errors
        keep their class with code 3005; a lost connection raises
        TransactionError (3009): the transaction was rolled back."""
        if self._done:
            raise errors.InterfaceError("this transaction is over (its with-block has ended)", 2016)
        if self._failed is not None:
            raise TransactionError(
                f"the transaction was already rolled back: the connection to endpoint {self.endpoint!r} was "
                f"lost ({self._failed})", 3009) from self._failed
        m = self._manager
        t0 = time.monotonic()
        try:
            result = self._lease.conn.execute_query(query, params, timeout=timeout)
        except BaseException as exc:
            if _is_connection_error(exc):
                self._failed = exc
                m._quiet_rollback(self._lease.conn)
                new = TransactionError(
                    f"the connection to endpoint {self.endpoint!r} was lost inside the transaction; it was "
                    f"rolled back, nothing of it was applied (cause: {exc})", 3009)
                new.endpoint, new.correlation_id = self.endpoint, self.correlation_id
                m._log(logging.WARNING, "%s", new.message, op="transaction", cid=self.correlation_id,
                       endpoint=self.endpoint, t0=t0, code=3009, cause_code=_code_of(exc))
                raise new from exc
            if self._lease.kind == "postgresql" and isinstance(exc, errors.Error):
                self._aborted = exc
            new = m._fail(exc, "query", self.correlation_id, self.endpoint, t0, "query in transaction")
            if new is exc:
                raise
            raise new from exc
        if self._aborted is not None and isinstance(query, str) and _ROLLBACK_TO.match(query):
            self._aborted = None
        m._log(logging.DEBUG, "query in transaction ok", op="transaction", cid=self.correlation_id,
               endpoint=self.endpoint, t0=t0)
        return result
