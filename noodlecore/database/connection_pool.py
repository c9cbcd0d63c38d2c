"""DatabaseConnectionPool: a connection pool whose work is done in C.

Give it a DSN (``postgresql://...``, a libpq ``key=value`` string, or
``sqlite:///path.db``) for the native libpq or SQLite backend, or a callable
returning a backend object of your own (``execute_query(sql, params)``,
optional ``ping()``, and ``close()`` or ``disconnect()``)::

    with DatabaseConnectionPool("sqlite:///app.db", max_connections=5) as pool:
        with pool.get_connection() as conn:
            rows = conn.execute_query("SELECT %s AS answer", (42,))

What happens when:

* ``get_connection()`` hands out an idle connection, opens a new one (up to
  ``max_connections``, ``retry_attempts`` tries with backoff), or waits in
  line, first come first served, up to ``timeout`` seconds and then raises
  PoolTimeoutError (2003).  A borrowed connection is checked without a round
  trip (its socket must be quiet); one idle for longer than
  ``ping_after_idle`` is pinged first.  A dead one is replaced silently.
* Leaving the ``with`` block gives it back; an open transaction is rolled
  back and a broken connection is closed, never lent again.
* A native thread validates idle connections every ``validation_interval``,
  closes those idle beyond ``idle_timeout`` above ``min_connections``,
  retires those older than ``max_lifetime`` and keeps ``min_connections`` open.
* ``shutdown()`` stops that thread, closes idle connections, waits up to its
  timeout for borrowed ones and closes each as it comes back; later borrows
  raise PoolClosedError (2002).  At interpreter exit every pool is shut down
  without waiting, so a program never hangs on its pools.
* In a child after ``fork()`` the pool is left as inherited (those are the
  parent's sessions: nothing is rolled back or closed); its first use in the
  child makes the child's own connections and thread.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional, Union

from .. import _native
from . import errors
from .config import backend_kind, redact_dsn, resolve_pool_options, scrub_password

__all__ = ["DatabaseConnectionPool", "PooledConnection", "PoolStats", "ConnectionLeakWarning"]

log = logging.getLogger("noodlecore.database.pool")

#: A borrowed connection (implemented in C).  Methods: execute_query,
#: execute_many, begin, commit, rollback, transaction, ping, release.
PooledConnection = _native.PooledConnection

#: Warned (a RuntimeWarning) at the pool's next borrow or get_stats() when a
#: connection has been borrowed longer than ``leak_timeout``; the message holds
#: the stack of the code that borrowed it.
ConnectionLeakWarning = _native.ConnectionLeakWarning


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's counters.

    The report's fields come first.  ``connection_wait_time`` is the mean
    time a borrow waited, in seconds; ``pool_health_score`` is 1.0 for a
    healthy pool and falls with query errors, acquire timeouts and
    validation failures (0.0 once the pool is shut down).
    """

    total_connections: int
    active_connections: int
    idle_connections: int
    connection_wait_time: float
    query_count: int
    error_count: int
    pool_health_score: float
    max_connections: int = 0
    min_connections: int = 0
    requests_waiting: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connections_replaced: int = 0
    connect_failures: int = 0
    validation_failures: int = 0
    leaked: int = 0
    acquires: int = 0
    acquire_timeouts: int = 0
    acquire_wait_p50: float = 0.0
    acquire_wait_p99: float = 0.0
    closed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _health(raw: dict) -> float:
    if raw["closed"]:
        return 0.0
    score = 1.0
    if raw["query_count"]:
        score -= 0.5 * min(1.0, raw["error_count"] / raw["query_count"])
    if raw["acquires"] or raw["acquire_timeouts"]:
        score -= 0.3 * min(1.0, raw["acquire_timeouts"] / (raw["acquires"] + raw["acquire_timeouts"]))
    if raw["connections_opened"]:
        score -= 0.2 * min(1.0, raw["validation_failures"] / raw["connections_opened"])
    return round(max(0.0, score), 4)


class DatabaseConnectionPool(_native.Pool):
    """A pool of database connections; see the module docstring.

    ``backend_factory``: a DSN string or a zero-argument callable returning a
    backend object.  ``config``: a dict of options; keyword options override
    it; unset options come from NOODLE_DB_MAX_CONNECTIONS, NOODLE_DB_TIMEOUT,
    NOODLE_DB_RETRY_ATTEMPTS, then the defaults.  Bad options raise
    ConfigurationError (2013; 2019 for an environment variable).
    """

    def __init__(self, backend_factory: Union[str, Callable[[], Any]],
                 config: Optional[Mapping[str, Any]] = None, **options: Any):
        kind = backend_kind(backend_factory)
        opts = resolve_pool_options(config, options)
        self._options = opts
        target = backend_factory.strip() if isinstance(backend_factory, str) else backend_factory
        try:
            super().__init__(kind, target, opts)
        except errors.Error as exc:
            if isinstance(target, str):
                # libpq quotes the part of a DSN it cannot parse: keep the
                # password out of what we show.
                clean = scrub_password(exc.message, target)
                if clean != exc.message:
                    raise type(exc)(clean, exc.error_code, exc.sqlstate) from None
            raise
        self._dsn = redact_dsn(target) if isinstance(target, str) else None
        log.debug("pool created", extra={"backend": kind, "target": self.target,
                                         "max_connections": opts["max_connections"]})

    # get_connection(timeout=None) and acquire(timeout=None) come from C.

    def connect(self, timeout: Optional[float] = None, autocommit: bool = False) -> Any:
        """A PEP 249 connection (``noodlecore.dbapi.Connection``) lent by this
        pool; its ``close()`` gives it back."""
        from ..dbapi.connection import Connection   # dbapi builds on this module
        return Connection(self.acquire(timeout), autocommit=autocommit, source=self)

    @property
    def options(self) -> dict:
        """The resolved options (a copy)."""
        return dict(self._options)

    def get_stats(self) -> PoolStats:
        """A PoolStats snapshot of the pool's counters."""
        raw = self._raw_stats()
        acquires = raw["acquires"]
        return PoolStats(
            total_connections=raw["total_connections"],
            active_connections=raw["active_connections"],
            idle_connections=raw["idle_connections"],
            connection_wait_time=(raw["wait_time_total"] / acquires) if acquires else 0.0,
            query_count=raw["query_count"],
            error_count=raw["error_count"],
            pool_health_score=_health(raw),
            max_connections=raw["max_connections"],
            min_connections=raw["min_connections"],
            requests_waiting=raw["requests_waiting"],
            connections_opened=raw["connections_opened"],
            connections_closed=raw["connections_closed"],
            connections_replaced=raw["connections_replaced"],
            connect_failures=raw["connect_failures"],
            validation_failures=raw["validation_failures"],
            leaked=raw["leaked"],
            acquires=acquires,
            acquire_timeouts=raw["acquire_timeouts"],
            acquire_wait_p50=raw["acquire_wait_p50"],
            acquire_wait_p99=raw["acquire_wait_p99"],
            closed=raw["closed"],
        )

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Stop the maintenance thread, close idle connections, wait up to
        ``timeout`` seconds (default 5) for borrowed ones to come back; those
        still out are closed when they return.  Ctrl-C ends the wait as the
        timeout would (KeyboardInterrupt; the pool stays closed).  Idempotent:
        a second call waits again for those still borrowed."""
        left = self._shutdown(timeout)
        if left:
            log.warning("pool shut down with %d connection(s) still borrowed; they will be closed "
                        "when returned", left, extra={"target": self.target})
        else:
            log.debug("pool shut down", extra={"target": self.target})

    close = shutdown

    def drain(self) -> None:
        """Close every connection this pool holds, and keep it open: idle
        ones now, borrowed ones (and any being checked or opened) when they
        come back; the next borrow opens a fresh one.  ``min_connections``
        are not reopened until that borrow, so after a drain the pool holds
        no server session (before ``DROP DATABASE``, after a credential
        rotation or a failover).  In a forked child it never touches the
        parent's connections.  SQLAlchemy's ``engine.dispose()`` calls it."""
        self._drain(True, True)

    def __enter__(self) -> "DatabaseConnectionPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<DatabaseConnectionPool {self.backend_kind} {self.target} {state}>"

