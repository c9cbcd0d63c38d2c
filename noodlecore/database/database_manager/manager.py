"""The DatabaseManager class: its arguments, its lifecycle (connect,
disconnect, close, the with-block), execute_query, get_connection, the
failover operations, health, stats and connection info.  The statement path
it shares with the other parts is ``_retry.Lending``; batches and
transactions are in ``_transactions``, the table helpers in ``_tables``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from .. import errors
from ..config import DatabaseConfig, backend_kind, redact_dsn, resolve_pool_options
from ..connection_pool import DatabaseConnectionPool, PooledConnection, PoolStats
from ..failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig, dsn_endpoints
from ..patroni import patroni_urls
from ._dialect import server_stats
from ._retry import Lease, Source, code_of, lend_from, log, log_event, new_id, preferred_endpoint, rewrap
from ._sqltext import is_plain_select
from ._tables import TableHelpers
from ._transactions import Transactions


# Managers alive in this process: a forked child gets a new lock for each
# (a parent thread may have held one at the moment of the fork).  Their
# pools and failover managers need nothing: a child's first use makes its
# own (csrc/py/connection.c, failover.c).
_live: "weakref.WeakSet[DatabaseManager]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for m in list(_live):
        m._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class DatabaseManager(TableHelpers, Transactions):
    """Queries, transactions and table helpers over a pool, with or without
    failover; see the package docstring.

    ``backend_factory``: None, a DSN string (same as ``config=``), or a
    callable handed to the pool (called with no arguments) or, with
    failover, to the DatabaseFailoverManager (called with an endpoint's
    connection string).  ``config``: a DatabaseConfig, a
    DSN string, or None for ``DatabaseConfig()``.  ``enable_failover=True``
    needs ``failover_endpoints`` (DatabaseEndpoint objects or dicts of their
    fields) or a multi-host PostgreSQL DSN as ``config`` (each host an
    endpoint, as DatabaseFailoverManager.from_dsn); ``failover_config`` is a FailoverConfig.  ``failover_retry_wait``
    bounds how long a transparent retry waits for a usable endpoint.
    ``patroni``: Patroni REST API URL(s): failover over the members Patroni
    lists when connect() runs (DatabaseFailoverManager.from_patroni, with
    ``config``'s connection string for user, database and options; implies
    ``enable_failover``).  ``read_your_writes``: after a write of a thread (its session), that
    thread's reads with a standby target go to a standby only once it has
    replayed the write, else to the primary (no round trip added; writes
    made on a connection from get_connection() are not seen).  Other
    keywords are pool options (see DatabaseConnectionPool).  Every problem
    with these raises ConfigurationError here, before connect().
    """

    def __init__(self, backend_factory: Union[str, Callable[..., Any], None] = None,
                 config: Union[DatabaseConfig, str, None] = None, enable_failover: bool = False,
                 failover_endpoints: Optional[Sequence[Union[DatabaseEndpoint, Mapping[str, Any]]]] = None,
                 failover_config: Optional[FailoverConfig] = None, *, failover_retry_wait: float = 5.0,
                 read_your_writes: bool = False, patroni: Any = None, **pool_options: Any):
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
        self.patroni = None if patroni is None else patroni_urls(patroni)
        if self.patroni:
            if failover_endpoints:
                raise errors.ConfigurationError("patroni= and failover_endpoints are two topologies: give one")
            if backend_factory is None and backend_kind(config.connection_string) != "postgresql":
                raise errors.ConfigurationError("patroni= needs a PostgreSQL connection string as config= (user, "
                                                "database, options; Patroni gives the hosts)")
            enable_failover = True
        w = failover_retry_wait
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 or math.isinf(w):
            raise errors.ConfigurationError(f"failover_retry_wait must be a number of seconds >= 0, not {w!r}")
        self.config = config
        self.backend_factory = backend_factory
        self.enable_failover = enable_failover
        self.failover_retry_wait = float(w)
        if not isinstance(read_your_writes, bool):
            raise errors.ConfigurationError(f"read_your_writes must be True or False, not {read_your_writes!r}")
        self.read_your_writes = read_your_writes
        self._session = threading.local()
        self.failover_endpoints: List[DatabaseEndpoint] = []
        self.failover_config: Optional[FailoverConfig] = None

        if enable_failover:
            if not failover_endpoints and backend_factory is None and not self.patroni:
                failover_endpoints = self._dsn_endpoints(config.connection_string)
            if not self.patroni:             # else Patroni names them at connect()
                self.failover_endpoints = self._check_endpoints(failover_endpoints)
            fc = failover_config if failover_config is not None else FailoverConfig()
            if not isinstance(fc, FailoverConfig):
                raise errors.ConfigurationError("failover_config must be a FailoverConfig")
            if not isinstance(fc.pool_options, dict):
                raise errors.ConfigurationError("FailoverConfig.pool_options must be a dict of pool options")
            fc = dataclasses.replace(fc, pool_options={**fc.pool_options, **pool_options})
            fc.validate()
            resolve_pool_options({"max_connections": fc.pool_max_connections, "timeout": fc.pool_timeout,
                                  **fc.pool_options})
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
        self._source: Optional[Source] = None
        _live.add(self)

    @staticmethod
    def _dsn_endpoints(dsn: str) -> List[DatabaseEndpoint]:
        """A multi-host PostgreSQL DSN's hosts as endpoints (as
        DatabaseFailoverManager.from_dsn); [] for one host or another backend."""
        if backend_kind(dsn) != "postgresql":
            return []
        eps = dsn_endpoints(dsn)
        return eps if len(eps) > 1 else []

    def _check_endpoints(self, failover_endpoints: Any) -> List[DatabaseEndpoint]:
        if not failover_endpoints:
            raise errors.ConfigurationError(
                "enable_failover=True needs failover_endpoints (a list of DatabaseEndpoint) or a multi-host "
                "PostgreSQL DSN as config; "
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
            if self.backend_factory is None:
                backend_kind(e.connection_string)      # a bad DSN fails here
            eps.append(e)
        return eps

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
            cid = new_id()
            t0 = time.monotonic()
            source = Source()
            endpoint = None
            try:
                if self.patroni:
                    source.failover = DatabaseFailoverManager.from_patroni(
                        self.patroni, dsn=self.config.connection_string, config=self.failover_config,
                        backend_factory=self.backend_factory)
                    self.failover_endpoints = source.failover.endpoints
                if self.enable_failover:
                    if source.failover is None:
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
                lease = lend_from(source, timeout)
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
                    new = rewrap(exc, 3001, f"connect failed: {exc.message}", endpoint, cid)
                    log_event(logging.WARNING, "connect failed: %s", exc.message, op="connect", cid=cid,
                              endpoint=endpoint, t0=t0, code=3001)
                    raise new from exc
                raise
            self._source = source
            log_event(logging.INFO, "connected (%s)", "failover" if self.enable_failover else "single pool",
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
        cid = new_id()
        t0 = time.monotonic()
        try:
            if source.failover is not None:
                source.failover.shutdown()
            if source.pool is not None:
                source.pool.shutdown()
        except errors.Error as exc:
            new = rewrap(exc, code, f"{op} failed: {exc.message}", None, cid)
            log_event(logging.WARNING, "%s failed: %s", op, exc.message, op=op, cid=cid, t0=t0, code=code)
            raise new from exc
        log_event(logging.INFO, "%s", "disconnected" if op == "disconnect" else "closed", op=op, cid=cid, t0=t0)

    @staticmethod
    def _teardown(source: Source) -> None:
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

    # -- statements ------------------------------------------------------------

    @contextlib.contextmanager
    def get_connection(self, timeout: Optional[float] = None,
                       target: str = "primary") -> Iterator[PooledConnection]:
        """Borrow a connection (of the current endpoint with failover, or for
        ``target`` as DatabaseFailoverManager.get_connection), a context
        manager; the pool's errors pass through as they are."""
        source = self._require("query")
        lease = lend_from(source, timeout, target, self._written_at(target))
        try:
            yield lease.conn
        finally:
            lease.release()

    def execute_query(self, query: str, params: Any = None, timeout: Optional[float] = None,
                      idempotent: Optional[bool] = None, target: str = "primary") -> Any:
        """Run one statement: a list of row dicts, or the affected row count.

        Placeholders as the pool's: ``%s`` with a sequence, ``%(name)s`` with
        a mapping.  ``timeout`` bounds the whole call (borrow, statement,
        failover wait); past it the statement is cancelled (QueryTimeoutError,
        3004).  ``idempotent``: True when running it twice is harmless, False
        when even a read must not be repeated, None to let the manager decide
        (plain SELECTs only).  ``target``: ``"primary"`` (default), or with
        failover a read target, ``"standby"``, ``"prefer-standby"`` or
        ``"any"`` (DatabaseFailoverManager.get_connection); a standby refuses
        writes."""
        if idempotent is not None and not isinstance(idempotent, bool):
            raise errors.ProgrammingError(f"idempotent must be True, False or None, not {idempotent!r}", 3005)
        repeatable = idempotent if idempotent is not None else is_plain_select(query)

        def work(lease: Lease, left: Optional[float]) -> Any:
            return lease.conn.execute_query(query, params, timeout=left)
        return self._run("query", "query", work, repeatable=repeatable, timeout=timeout, target=target,
                         write=not is_plain_select(query))

    # -- failover ----------------------------------------------------------------

    def _failover_or_raise(self, op: str, code: int) -> DatabaseFailoverManager:
        if not self.enable_failover:
            raise errors.FailoverNotEnabledError(
                f"{op}: failover is not enabled (make the DatabaseManager with enable_failover=True and "
                "failover_endpoints)", code)
        return self._require("query").failover

    def trigger_failover(self, reason: str = "Manual failover", target: Optional[str] = None) -> bool:
        """Switch to ``target`` (an endpoint id) or the best other endpoint;
        True when it switched.  FailoverNotEnabledError (3037) without failover."""
        fo = self._failover_or_raise("trigger_failover", 3037)
        cid = new_id()
        t0 = time.monotonic()
        who = "operator (DatabaseManager.trigger_failover)"
        before = fo.current_endpoint
        log_event(logging.INFO, "manual failover requested: %s", reason, op="trigger_failover", cid=cid,
                  endpoint=before, triggered_by=who, reason=reason, target=target)
        done = fo.trigger_failover(reason, target=target)
        log_event(logging.INFO if done else logging.WARNING, "manual failover %s: %s -> %s",
                  "done" if done else "not done", before, fo.current_endpoint, op="trigger_failover", cid=cid,
                  endpoint=fo.current_endpoint, t0=t0, triggered_by=who, reason=reason, success=bool(done))
        return done

    def trigger_recovery(self) -> bool:
        """Fail back to the preferred endpoint if it qualifies; True when it
        did.  FailoverNotEnabledError (3038) without failover."""
        fo = self._failover_or_raise("trigger_recovery", 3038)
        cid = new_id()
        t0 = time.monotonic()
        who = "operator (DatabaseManager.trigger_recovery)"
        before = fo.current_endpoint
        log_event(logging.INFO, "manual recovery requested", op="trigger_recovery", cid=cid, endpoint=before,
                  triggered_by=who)
        done = fo.trigger_recovery()
        log_event(logging.INFO if done else logging.WARNING, "manual recovery %s: %s -> %s",
                  "done" if done else "not done", before, fo.current_endpoint, op="trigger_recovery", cid=cid,
                  endpoint=fo.current_endpoint, t0=t0, triggered_by=who, success=bool(done))
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

    def health_check(self, timeout: float = 5.0) -> bool:
        """True when a connection of the current endpoint answers ``SELECT 1``
        within ``timeout``; False otherwise (also when not connected).  The
        reason of a False is logged (codes 3034/3035)."""
        cid = new_id()
        t0 = time.monotonic()
        source = self._source
        if source is None:
            log_event(logging.DEBUG, "health check: not connected", op="health_check", cid=cid, t0=t0, code=3034)
            return False
        try:
            lease = lend_from(source, timeout)
        except Exception as exc:
            log_event(logging.WARNING, "health check: no connection: %s", exc, op="health_check", cid=cid, t0=t0,
                      code=3034, cause_code=code_of(exc))
            return False
        try:
            lease.conn.execute_query("SELECT 1", None, timeout=max(0.001, timeout - (time.monotonic() - t0)))
        except Exception as exc:
            log_event(logging.WARNING, "health check failed: %s", exc, op="health_check", cid=cid,
                      endpoint=lease.endpoint, t0=t0, code=3035, cause_code=code_of(exc))
            return False
        finally:
            lease.release()
        log_event(logging.DEBUG, "health check ok", op="health_check", cid=cid, endpoint=lease.endpoint, t0=t0)
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

        def work(lease: Lease, left: Optional[float]) -> dict:
            return {"backend": lease.kind, "endpoint": lease.endpoint, **server_stats(lease.conn, lease.kind, left)}
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
                best = preferred_endpoint(self.failover_endpoints)
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
