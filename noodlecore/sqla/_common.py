"""What both dialects share: the pass-through pool (and what its dispose()
closes), splitting URL query options between the native pool and the DSN,
disconnect detection and the pre-ping.  The facts themselves (which options the pool has, what counts as
a lost connection) come from the core, through the binding."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Dict, Tuple

from sqlalchemy import pool as sa_pool

from .. import _native


def pool_options(query: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a URL's query into (native pool options, the rest).  A pool
    option's text is converted to the type of its default (the core's
    POOL_DEFAULTS); a bad value is left to the pool's option reader, which
    raises the typed error naming the option."""
    defaults = _native.POOL_DEFAULTS
    pool, rest = {}, {}
    for key, value in query.items():
        if key in defaults:
            pool[key] = _convert(value, defaults[key])
        else:
            rest[key] = value
    return pool, rest


def failover_options(query: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split (FailoverConfig's fields, the rest), converted like pool options."""
    from ..database.failover_manager import FailoverConfig
    fields = {f.name: f.default for f in dataclasses.fields(FailoverConfig)}
    fo, rest = {}, {}
    for key, value in query.items():
        if key in fields and key != "pool_options":
            fo[key] = _convert(value, fields[key])
        else:
            rest[key] = value
    return fo, rest


_managers: Dict[Tuple[str, str], Any] = {}
_managers_lock = threading.Lock()


def failover_manager_for(dsn: str, failover: Dict[str, Any], pool: Dict[str, Any]) -> Any:
    """The failover manager, monitoring, for a multi-host DSN and these
    options: one per process, as noodlecore.dbapi keeps one pool per DSN."""
    from ..database.failover_manager import DatabaseFailoverManager, FailoverConfig
    key = (dsn, repr(sorted(failover.items())) + repr(sorted(pool.items())))
    with _managers_lock:
        manager = _managers.get(key)
        if manager is None or manager._closed:
            config = FailoverConfig(**failover, pool_options=pool)
            manager = DatabaseFailoverManager.from_dsn(dsn, config=config)
            manager.start_monitoring()
            _managers[key] = manager
        return manager


def _convert(value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(default, bool):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        return value
    for kind in (int, float):
        if isinstance(default, kind) or default is None:
            try:
                return kind(value)
            except ValueError:
                continue
    return value


class NativePassThroughPool(sa_pool.NullPool):
    """SQLAlchemy's NullPool (a checkout borrows from the native pool, a
    check-in gives the connection back), whose dispose() drains the native
    pools this engine borrowed from: their idle server connections close now,
    borrowed ones when they come back, and the next checkout opens a fresh
    one.  The native pools stay (shared with every engine and dbapi.connect()
    on the same URL and options, which see only that their idle connections
    went).  ``engine.dispose(close=False)``, the after-fork form, does not
    call dispose(): nothing is touched, and the child's first checkout gets
    its own pool (the native pools notice the fork)."""

    def dispose(self) -> None:
        drain = getattr(self._dialect, "noodle_drain", None)
        if drain is not None:
            drain()


_sources_lock = threading.Lock()


class NoodleDialectMixin:
    """Pool, disconnects and pings, the same for PostgreSQL and SQLite."""

    driver = "noodlecore"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What this engine's connections were lent by (the native pools, or
        # the failover manager of a multi-host URL): engine.dispose() drains them.
        self._noodle_sources: set = set()

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        return self._noodle_track(super().connect(*cargs, **cparams))  # type: ignore[misc]

    def _noodle_track(self, dbapi_connection: Any) -> Any:
        source = dbapi_connection._source
        if source not in self._noodle_sources:   # every checkout's path: the lock only for a new one
            with _sources_lock:
                self._noodle_sources.add(source)
        return dbapi_connection

    def noodle_drain(self) -> None:
        """Drain every native pool this engine borrowed from (engine.dispose())."""
        with _sources_lock:
            sources = tuple(self._noodle_sources)
        for source in sources:
            source.drain()

    @classmethod
    def import_dbapi(cls) -> Any:
        from .. import dbapi
        return dbapi

    @classmethod
    def load_provisioning(cls) -> None:
        # SQLAlchemy's test provisioning (temporary tables, schemas, database
        # files) for this backend lives with its own dialects, not beside ours.
        __import__("sqlalchemy.dialects.%s.provision" % cls.name)

    @classmethod
    def get_pool_class(cls, url: Any) -> Any:
        # The native pool queues, validates and recycles; SQLAlchemy's pool
        # only passes connections through (a check-in is close(), which
        # gives the connection back to the native pool).
        return NativePassThroughPool

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        # The core decides what a lost connection is (nc_error_failure);
        # the binding puts its answer on the exception.
        if getattr(e, "connection_failure", False):
            return True
        # A closed DB-API connection or cursor used again (InterfaceError 2024).
        return getattr(e, "error_code", None) == 2024

    def do_ping(self, dbapi_connection: Any) -> bool:
        # pool_pre_ping: the native pool's zero-round-trip check (a poll of
        # the socket).  The native borrow behind every checkout has already
        # validated the connection (a round trip after ping_after_idle).
        return bool(dbapi_connection._live().looks_alive())


def switch_autocommit(dbapi_connection: Any, level: str) -> bool:
    """The part of set_isolation_level both dialects share: AUTOCOMMIT (True:
    done), or back from it before a real level is set (False: set it).
    SQLAlchemy switches outside its transactions; what is open on the DB-API
    connection is the driver's implicit one (e.g. from reading the level), so
    it is ended first."""
    if level == "AUTOCOMMIT":
        dbapi_connection.rollback()
        dbapi_connection.autocommit = True
        return True
    if dbapi_connection.autocommit:
        dbapi_connection.rollback()
        dbapi_connection.autocommit = False
    return False
