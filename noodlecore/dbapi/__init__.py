"""noodlecore.dbapi: a PEP 249 (DB-API 2.0) module on the native pool.

    from noodlecore import dbapi
    conn = dbapi.connect("postgresql://app@db/app")   # or "sqlite:///path.db"
    cur = conn.cursor()
    cur.execute("SELECT %s + 1", (41,))
    conn.commit(); conn.close()

``connect(dsn, **options)`` takes the pool's DSNs (PostgreSQL URL or
key=value, multi-host; ``sqlite:///path``) and its options
(``max_connections``, ``query_timeout`` ...; ``autocommit`` is the
connection's).  The connection is lent by a native pool shared by every
``connect()`` with the same DSN and options, made on first use and shut
down at exit; ``close()`` gives it back; ``dispose(dsn)`` closes a pool's server
connections (idle ones now, borrowed ones when given back) and keeps it.  ``DatabaseConnectionPool.connect()``
and ``DatabaseFailoverManager.connect()`` lend the same kind of connection
from a pool you configured.

``threadsafety`` is 1: threads may share the module (and its pools), not a
connection (one used by two threads at once raises InterfaceError 2022).
``paramstyle`` is "pyformat" (``%(name)s``; ``%s`` works too).  The
exceptions are noodlecore.database.errors' classes (``Warning`` is its
DatabaseWarning); errors keep ``error_code``, ``sqlstate``,
``connection_failure`` and ``statement_sent``.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

from .. import _native
from ..database import errors
from ..database.connection_pool import DatabaseConnectionPool
from .connection import Connection
from .cursor import Cursor
from .types import (BINARY, DATETIME, NUMBER, ROWID, STRING, Binary, Date, DateFromTicks,
                    DBAPITypeObject, Time, TimeFromTicks, Timestamp, TimestampFromTicks)

__all__ = [
    "apilevel", "threadsafety", "paramstyle", "connect", "dispose", "Connection", "Cursor",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "DBAPITypeObject", "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID",
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Binary",
]

apilevel = "2.0"
threadsafety = 1
paramstyle = "pyformat"

# The linked SQLite, under the names the sqlite3 module uses (SQLAlchemy's
# SQLite dialect reads sqlite_version_info to pick its features).
sqlite_version = _native.sqlite_version
sqlite_version_info = tuple(int(x) for x in sqlite_version.split("."))

Warning = errors.DatabaseWarning   # noqa: A001 - PEP 249's name
Error = errors.Error
InterfaceError = errors.InterfaceError
DatabaseError = errors.DatabaseError
DataError = errors.DataError
OperationalError = errors.OperationalError
IntegrityError = errors.IntegrityError
InternalError = errors.InternalError
ProgrammingError = errors.ProgrammingError
NotSupportedError = errors.NotSupportedError

_pools: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], DatabaseConnectionPool] = {}
_pools_lock = threading.Lock()


def _pool_for(dsn: str, options: Dict[str, Any]) -> DatabaseConnectionPool:
    # repr() makes any option value part of a key; equal options, one pool
    key = (dsn, tuple(sorted((k, repr(v)) for k, v in options.items())) if options else ())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool.closed:
            pool = _pools[key] = DatabaseConnectionPool(dsn, **options)
        return pool


def connect(dsn: str, *, autocommit: bool = False, timeout: Any = None, **options: Any) -> Connection:
    """A PEP 249 connection to ``dsn``, lent by the native pool shared by
    every connect() with this DSN and these pool options.  ``timeout``
    bounds the wait for a connection (the pool's ``timeout`` when None)."""
    if not isinstance(dsn, str):
        raise errors.ConfigurationError(f"dsn must be a str, not {type(dsn).__name__}")
    pool = _pool_for(dsn.strip(), options)
    return Connection(pool.acquire(timeout), autocommit=autocommit, source=pool)


def dispose(dsn: Optional[str] = None) -> None:
    """Close the server connections of the pools connect() shares: those
    of ``dsn`` (whatever the options), or all of them.  Idle ones close now,
    borrowed ones when they are closed; the pools stay, and the next
    connect() opens a fresh connection (``DatabaseConnectionPool.drain()``)."""
    if dsn is not None and not isinstance(dsn, str):
        raise errors.ConfigurationError(f"dsn must be a str or None, not {type(dsn).__name__}")
    with _pools_lock:
        pools = [p for (d, _), p in _pools.items() if dsn is None or d == dsn.strip()]
    for pool in pools:
        if not pool.closed:
            pool.drain()
