"""Error codes and exception classes of noodlecore.database.

Every exception raised by the library carries a 4-digit ``error_code``.  The
classes follow PEP 249 (``Error`` and its subclasses) with the pool's own
classes beside them.  A server error also carries ``sqlstate`` (the five
character SQLSTATE) and the server's own message in ``server_message``; its
class follows the SQLSTATE class (23 integrity, 42 programming, 08
operational, ...).

The tables (codes and their meanings, which class each error gets, what
counts as a connection failure) are the C core's (csrc/core/nc_error.c);
this module defines the classes and reads the rest from ``_native``:
``ERROR_CODES`` is that table, one code, one meaning.
"""

from __future__ import annotations

from typing import Optional

from .. import _native

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

#: code -> what it means: the C core's table (csrc/core/nc_error.c), the
#: one copy.  Pool codes 2001-2099, manager codes 3001-3099, failover codes
#: 4010-4099.
ERROR_CODES = {code: text for code, text, _cls, _op, _failed in _native.ERROR_TABLE}


def operation_codes() -> dict:
    """The manager's codes per operation, from the core's table:
    ``{"insert": (3010, 3011), ...}`` -- the "no connection" code, then the
    "<operation> failed" code (the same code twice when there is one)."""
    ops: dict = {}
    for code, _text, _cls, op, failed in _native.ERROR_TABLE:
        if op is not None:
            pair = ops.setdefault(op, [code, code])
            if failed:
                pair[1] = code
            else:
                pair[0] = code
    return {op: tuple(pair) for op, pair in ops.items()}


def _default(name: str) -> int:
    # the code a core class stands for when raised without one (nc_error.c)
    return _native.ERROR_CLASSES[name]


def describe(code: int) -> str:
    """Return what ``code`` means, or ``"unknown error"``."""
    return ERROR_CODES.get(code, "unknown error")


class DatabaseWarning(Exception):
    """PEP 249's Warning, named so that it does not shadow the builtin ``Warning``.

    noodlecore does not raise it; it is here for code that catches it."""


class Error(Exception):
    """Base of every noodlecore database error.

    Attributes: ``error_code`` (4-digit int), ``sqlstate`` (str or None),
    ``server_message`` (the server's message or None), and what the C core
    says of an error it raised: ``statement_sent``, ``connection_failure``,
    ``not_applied``.
    """

    default_code = _default("Error")

    #: For errors of a statement: False when it certainly never reached the
    #: server (safe to run again elsewhere), True when it did (its outcome
    #: may be unknown if the connection was lost), None when not known.
    statement_sent: Optional[bool] = None

    #: For an error of ``execute_many``: the index in its sequence of the
    #: parameter set that failed (None when no one row is to blame).
    row_index = None

    #: (set per instance) ``connection_failure``: True when the error is a
    #: failure of the connection or the endpoint (lost, refused, no usable
    #: endpoint, the server read-only now), not of the SQL; the C core marks
    #: a Python backend's own exceptions with it too.  ``not_applied``: True
    #: when the statement certainly had no effect (it never reached the
    #: server, or the server refused it as read-only before running it).

    def __init__(self, message: str = "", error_code: Optional[int] = None,
                 sqlstate: Optional[str] = None, server_message: Optional[str] = None):
        self.error_code = int(error_code if error_code is not None else self.default_code)
        self.sqlstate = sqlstate or None
        self.server_message = server_message
        self.message = message or describe(self.error_code)
        # What the code and SQLSTATE say, by the core's tables (an error the
        # core raises gets them, and statement_sent, from the core itself).
        self.connection_failure, self.not_applied = _native.error_facts(self.error_code, self.sqlstate)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"[{self.error_code}] {self.message}"

    def __reduce__(self):
        # the state keeps the attributes set after construction (endpoint,
        # statement_sent, connection_failure ...)
        return (self.__class__, (self.message, self.error_code, self.sqlstate, self.server_message),
                dict(self.__dict__))


class InterfaceError(Error):
    """Misuse of the library's interface (for example a connection used after return)."""
    default_code = _default("InterfaceError")


class DatabaseError(Error):
    """An error reported by, or about, the database."""
    default_code = _default("DatabaseError")


class DataError(DatabaseError):
    """Bad data: a value out of range, or one that cannot be decoded (SQLSTATE class 22)."""
    default_code = _default("DataError")


class OperationalError(DatabaseError):
    """The database could not be reached or the connection was lost (class 08, 57, 53 ...)."""
    default_code = _default("OperationalError")


class IntegrityError(DatabaseError):
    """A constraint was violated (SQLSTATE class 23)."""
    default_code = _default("IntegrityError")


class InternalError(DatabaseError):
    """The database or this library reached an internal error state (class XX)."""
    default_code = _default("InternalError")


class ProgrammingError(DatabaseError):
    """Bad SQL or bad parameters (SQLSTATE class 42, placeholder mismatches)."""
    default_code = _default("ProgrammingError")


class NotSupportedError(DatabaseError):
    """A feature the backend does not support (SQLSTATE class 0A)."""
    default_code = _default("NotSupportedError")


class ConnectionPoolError(OperationalError):
    """An error of the connection pool itself."""
    default_code = _default("ConnectionPoolError")


class PoolTimeoutError(ConnectionPoolError):
    """No connection could be borrowed within the timeout (2003)."""
    default_code = _default("PoolTimeoutError")


class PoolClosedError(ConnectionPoolError):
    """The pool was shut down (2002)."""
    default_code = _default("PoolClosedError")


class ConfigurationError(InterfaceError):
    """An invalid option, DSN or environment value; the message names it."""
    default_code = _default("ConfigurationError")


class QueryTimeoutError(OperationalError):
    """A statement ran past its deadline and was cancelled (2012)."""
    default_code = _default("QueryTimeoutError")


def class_for(code: int, kind: int = 0, sqlstate: Optional[str] = None) -> type:
    """The exception class of an error with this code, C-core kind hint and
    SQLSTATE (the core's rule: the SQLSTATE's class for a server error, else
    the code's, else the kind's)."""
    return _CLASSES[_native.error_class(code, kind, sqlstate)]


def _native_error(code: int, kind: int, sqlstate: Optional[str], message: str,
                  statement_sent: Optional[bool] = None) -> Error:
    """The exception the C core raises for such an error, with its attributes."""
    return _native.make_error(code, kind, sqlstate, message, statement_sent)


# ---------------------------------------------------------------------------
# DatabaseManager's errors (raised by noodlecore.database.database_manager)
# ---------------------------------------------------------------------------

class OutcomeUnknownError(OperationalError):
    """The connection was lost after a statement that may change data was sent
    (an autocommit write, or a COMMIT): it may or may not have been applied.
    It was not run again.  Raised by DatabaseManager (attributes ``endpoint``,
    ``correlation_id``) and by a DatabaseFailoverManager's connections (the
    message names the endpoint; ``statement_sent``, ``sqlstate`` and the
    lost-connection error as ``__cause__`` kept).  The C core decides when
    (nc_outcome_unknown); ``connection_failure`` is True, so code that treats
    a lost connection as a disconnect still does."""
    default_code = _default("OutcomeUnknownError")


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
    default_code = _default("Error")


# The classes the C core raises, by the names its tables use.
_CLASSES = {name: globals()[name] for name in _native.ERROR_CLASSES}
_native._set_error_classes(_CLASSES)
