"""noodlecore.database: a C-core connection pool for PostgreSQL and SQLite.

The names users need are re-exported here; see connection_pool for the pool
and errors for the exception classes and error codes.
"""

from .connection_pool import ConnectionLeakWarning, DatabaseConnectionPool, PooledConnection, PoolStats
from .database_manager import (
    DatabaseConfig,
    DatabaseManager,
    FailoverNotEnabledError,
    NotConnectedError,
    OutcomeUnknownError,
    TransactionError,
)
from .failover_manager import (
    DatabaseEndpoint,
    DatabaseFailoverManager,
    FailoverConfig,
    FailoverEvent,
    FailoverMode,
    FailoverPolicy,
    FailoverState,
)
from .errors import (
    ERROR_CODES,
    ConfigurationError,
    ConnectionPoolError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PoolClosedError,
    PoolTimeoutError,
    ProgrammingError,
    QueryTimeoutError,
)

__all__ = [
    "DatabaseConnectionPool", "PooledConnection", "PoolStats", "ConnectionLeakWarning", "ERROR_CODES",
    "DatabaseConfig", "DatabaseManager", "FailoverNotEnabledError", "NotConnectedError",
    "OutcomeUnknownError", "TransactionError",
    "DatabaseEndpoint", "DatabaseFailoverManager", "FailoverConfig", "FailoverEvent", "FailoverMode",
    "FailoverPolicy", "FailoverState",
    "ConfigurationError", "ConnectionPoolError", "DatabaseError", "DataError", "Error",
    "IntegrityError", "InterfaceError", "InternalError", "NotSupportedError", "OperationalError",
    "PoolClosedError", "PoolTimeoutError", "ProgrammingError", "QueryTimeoutError",
]
