"""Error codes and exception classes of noodlecore.database.

Every exception raised by the library carries a 4-digit ``error_code``.  The
classes follow PEP 249 (``Error`` and its subclasses) with the pool's own
classes beside them.  A server error also carries ``sqlstate`` (the five
character SQLSTATE) and the server's own message in ``server_message``; its
class follows the SQLSTATE class (23 integrity, 42 programming, 08
operational, ...).

The table ``ERROR_CODES`` is the single list of codes: one code, one meaning.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "ERROR_CODES",
    "DatabaseWarning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "ConnectionPoolError",
    "PoolTimeoutError",
    "PoolClosedError",
    "ConfigurationError",
    "QueryTimeoutError",
    "OutcomeUnknownError",
    "TransactionError",
    "FailoverNotEnabledError",
    "NotConnectedError",
    "describe",
]

#: code -> what it means.  The first block is the API contract's; codes after
#: a contract block are the conditions this implementation added in the same
#: range.
ERROR_CODES = {
    # pool
    2001: "pool error",
    2002: "pool is shut down",
    2003: "no connection available within the timeout",
    2004: "connection failed",
    2005: "query failed",
    2006: "connection wait timeout",
    2008: "new connection failed validation",
    2009: "failed to create a new connection",
    2010: "replacement connection failed validation",
    2011: "failed to create a replacement connection",
    2012: "statement timeout: the statement was cancelled",
    2013: "invalid configuration",
    2014: "query parameters do not match the placeholders",
    2015: "unsupported parameter type",
    2016: "connection used after it was returned to the pool",
    2017: "invalid transaction state",
    2018: "a value from the database could not be decoded",
    2019: "invalid environment variable value",
    2020: "backend object failed or broke the backend protocol",
    2021: "not supported by this backend",
    2022: "connection in use by another thread",
    2099: "internal error",
    # manager
    3001: "manager: connect failed",
    3002: "manager: disconnect failed",
    3003: "manager: no connection",
    3004: "manager: query timeout",
    3005: "manager: query failed",
    3006: "manager: execute_batch: no connection",
    3007: "manager: execute_batch failed",
    3008: "manager: transaction: no connection",
    3009: "manager: transaction failed",
    3010: "manager: insert: no connection",
    3011: "manager: insert failed",
    3012: "manager: update: no connection",
    3013: "manager: update failed",
    3014: "manager: delete: no connection",
    3015: "manager: delete failed",
    3016: "manager: select: no connection",
    3017: "manager: select failed",
    3018: "manager: table_exists: no connection",
    3019: "manager: table_exists failed",
    3020: "manager: create_table: no connection",
    3021: "manager: create_table failed",
    3022: "manager: drop_table: no connection",
    3023: "manager: drop_table failed",
    3024: "manager: get_table_schema: no connection",
    3025: "manager: get_table_schema failed",
    3026: "manager: backup: no connection",
    3027: "manager: backup failed",
    3028: "manager: restore: no connection",
    3029: "manager: restore failed",
    3030: "manager: optimize: no connection",
    3031: "manager: optimize failed",
    3032: "manager: stats: no connection",
    3033: "manager: stats failed",
    3034: "manager: health_check: no connection",
    3035: "manager: health_check failed",
    3036: "manager: close failed",
    3037: "failover is not enabled (trigger_failover)",
    3038: "failover is not enabled (trigger_recovery)",
    3039: "manager: outcome of the statement is unknown (connection lost after it was sent)",
    # failover
    4010: "failover: start monitoring failed",
    4011: "failover: stop monitoring failed",
    4012: "failover: manual failover failed",
    4013: "failover: manual recovery failed",
    4014: "failover: shutdown failed",
    4015: "failover: no usable endpoint",
    4016: "failover: unknown endpoint",
}


def describe(code: int) -> str:
    """Return what ``code`` means, or ``"unknown error"``."""
    return ERROR_CODES.get(code, "unknown error")


class DatabaseWarning(Exception):
    """PEP 249's Warning, named so that it does not shadow the builtin ``Warning``.

    noodlecore does not raise it; it is here for code that catches it."""


class Error(Exception):
    """Base of every noodlecore database error.

    Attributes: ``error_code`` (4-digit int), ``sqlstate`` (str or None),
    ``server_message`` (the server's message or None).
    """

    default_code = 2001

    #: For errors of a statement: False when it certainly never reached the
    #: server (safe to run again elsewhere), True when it did (its outcome
    #: may be unknown if the connection was lost), None when not known.
    statement_sent = None

    def __init__(self, message: str = "", error_code: Optional[int] = None,
                 sqlstate: Optional[str] = None, server_message: Optional[str] = None):
        self.error_code = int(error_code if error_code is not None else self.default_code)
        self.sqlstate = sqlstate or None
        self.server_message = server_message
        self.message = message or describe(self.error_code)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"[{self.error_code}] {self.message}"

    def __reduce__(self):
        return (self.__class__, (self.message, self.error_code, self.sqlstate, self.server_message))


class InterfaceError(Error):
    """Misuse of the library's interface (for example a connection used after return)."""
    default_code = 2016


class DatabaseError(Error):
    """An error reported by, or about, the database."""
    default_code = 2005


class DataError(DatabaseError):
    """Bad data: a value out of range, or one that cannot be decoded (SQLSTATE class 22)."""
    default_code = 2018


class OperationalError(DatabaseError):
    """The database could not be reached or the connection was lost (class 08, 57, 53 ...)."""
    default_code = 2004


class IntegrityError(DatabaseError):
    """A constraint was violated (SQLSTATE class 23)."""
    default_code = 2005


class InternalError(DatabaseError):
    """The database or this library reached an internal error state (class XX)."""
    default_code = 2099


class ProgrammingError(DatabaseError):
    """Bad SQL or bad parameters (SQLSTATE class 42, placeholder mismatches)."""
    default_code = 2014


class NotSupportedError(DatabaseError):
    """A feature the backend does not support (SQLSTATE class 0A)."""
    default_code = 2021


class ConnectionPoolError(OperationalError):
    """An error of the connection pool itself."""
    default_code = 2001


class PoolTimeoutError(ConnectionPoolError):
    """No connection could be borrowed within the timeout (2003)."""
    default_code = 2003


class PoolClosedError(ConnectionPoolError):
    """The pool was shut down (2002)."""
    default_code = 2002


class ConfigurationError(InterfaceError):
    """An invalid option, DSN or environment value; the message names it."""
    default_code = 2013


class QueryTimeoutError(OperationalError):
    """A statement ran past its deadline and was cancelled (2012)."""
    default_code = 2012


_CODE_CLASS = {
    2002: PoolClosedError,
    2003: PoolTimeoutError,
    2006: ConnectionPoolError,
    2001: ConnectionPoolError,
    2004: OperationalError,
    2008: ConnectionPoolError,
    2009: ConnectionPoolError,
    2010: ConnectionPoolError,
    2011: ConnectionPoolError,
    2012: QueryTimeoutError,
    2013: ConfigurationError,
    2014: ProgrammingError,
    2015: ProgrammingError,
    2016: InterfaceError,
    2017: ProgrammingError,
    2018: DataError,
    2019: ConfigurationError,
    2020: InterfaceError,
    2021: NotSupportedError,
    2022: InterfaceError,
    2099: InternalError,
    4010: ConnectionPoolError,
    4011: ConnectionPoolError,
    4012: ConnectionPoolError,
    4013: ConnectionPoolError,
    4014: ConnectionPoolError,
    4015: OperationalError,
    4016: ConfigurationError,
}

# kind hints from the C core (nc_error.h enum nc_kind)
_KIND_CLASS = {
    1: InterfaceError,
    2: OperationalError,
    3: ProgrammingError,
    4: IntegrityError,
    5: DataError,
    6: NotSupportedError,
    7: InternalError,
}

_SQLSTATE_CLASS = {
    "08": OperationalError,   # connection exception
    "0A": NotSupportedError,  # feature not supported
    "21": ProgrammingError,   # cardinality violation
    "22": DataError,          # data exception
    "23": IntegrityError,     # integrity constraint violation
    "24": InternalError,      # invalid cursor state
    "25": InternalError,      # invalid transaction state
    "26": ProgrammingError,   # invalid SQL statement name
    "27": OperationalError,   # triggered data change violation
    "28": OperationalError,   # invalid authorization
    "2B": InternalError,
    "2D": InternalError,
    "2F": InternalError,
    "34": ProgrammingError,   # invalid cursor name
    "3D": ProgrammingError,   # invalid catalog name
    "3F": ProgrammingError,   # invalid schema name
    "40": OperationalError,   # transaction rollback (serialization, deadlock)
    "42": ProgrammingError,   # syntax error or access rule violation
    "44": ProgrammingError,   # with check option violation
    "53": OperationalError,   # insufficient resources
    "54": OperationalError,   # program limit exceeded
    "55": OperationalError,   # object not in prerequisite state
    "57": OperationalError,   # operator intervention (57014 is cancel)
    "58": OperationalError,   # system error
    "XX": InternalError,
}


def class_for(code: int, kind: int = 0, sqlstate: Optional[str] = None) -> type:
    """The exception class for a code, a C-core kind hint and a SQLSTATE."""
    if sqlstate and code in (2004, 2005):
        cls = _SQLSTATE_CLASS.get(sqlstate[:2])
        if cls is not None:
            return cls
    cls = _CODE_CLASS.get(code)
    if cls is not None and not (code == 2005 and kind):
        return cls
    return _KIND_CLASS.get(kind, DatabaseError)


def _native_error(code: int, kind: int, sqlstate: Optional[str], message: str) -> Error:
    """Build the exception for an error from the C core (called from C)."""
    cls = class_for(code, kind, sqlstate)
    server_message = message if sqlstate else None
    return cls(message, code, sqlstate, server_message)


# ---------------------------------------------------------------------------
# DatabaseManager's errors (raised by noodlecore.database.database_manager)
# ---------------------------------------------------------------------------

class OutcomeUnknownError(OperationalError):
    """The connection was lost after a statement that may change data was sent:
    it may or may not have been applied.  It was not run again.  Attributes:
    ``endpoint`` (where it was sent), ``correlation_id``."""
    default_code = 3039


class TransactionError(OperationalError):
    """A transaction was rolled back as a whole (its connection was lost, a
    failover happened inside it, or a failed statement aborted it)."""
    default_code = 3009


class FailoverNotEnabledError(InterfaceError):
    """trigger_failover (3037) or trigger_recovery (3038) on a manager made
    without ``enable_failover=True``."""
    default_code = 3037


class NotConnectedError(InterfaceError):
    """An operation on a manager that is not connected (connect() not called,
    or after disconnect()/close()); the code is the operation's "no
    connection" code (3003 for execute_query)."""
    default_code = 3003
