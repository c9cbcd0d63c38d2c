"""DatabaseFailoverManager: one pool per endpoint, a native health monitor,
and automatic (or manual) failover and failback.

What happens when:

* ``start_monitoring()`` starts native threads (no GIL, except to run a Python
  backend's health check for an endpoint built by ``backend_factory``) that probe every
  endpoint each ``health_check_interval`` within ``health_check_timeout``:
  reachability, latency and, for PostgreSQL, whether it accepts writes
  (``pg_is_in_recovery()`` / ``default_transaction_read_only``).
* The query path reports failures at once: a lost connection, SQLSTATE
  08xxx or 57P01-57P03, or 25006 ("read-only transaction") on the current
  endpoint counts before the next probe, monitoring started or not.
* When the current endpoint fails by the configured policy, the manager
  (AUTOMATIC and SEMI_AUTOMATIC modes) verifies the best target (lowest
  priority number, healthy, writable when ``require_writable``) and switches
  to it atomically: no borrow after the switch returns a connection to the
  abandoned endpoint, whose idle connections are closed and borrowed ones
  discarded on return.  With no target nothing switches, ``get_status()``
  says ``unavailable`` and ``get_connection()`` fails at once (4015) until
  an endpoint is usable again, which resumes service by itself.
* With ``auto_recovery`` (AUTOMATIC mode) the manager fails back to the
  preferred endpoint once it has been healthy and writable for
  ``recovery_check_interval``, unless two endpoints accept writes at once
  (split brain: it holds and records a ``split_brain`` event).  A switch
  waits out ``hold_down`` seconds after the previous one.
* Every event is a FailoverEvent in a bounded history, logged on
  ``logging.getLogger("noodlecore.database.failover")`` and passed to
  listeners on a Python thread of the manager (never a native thread).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, Optional

from .. import _native
from . import errors, patroni as _patroni
from .config import backend_kind, redact_dsn
from .connection_pool import DatabaseConnectionPool, PooledConnection
from .failover_enums import FailoverMode, FailoverPolicy, FailoverState
from .routing import check_target

__all__ = [
    "FailoverMode", "FailoverPolicy", "FailoverState", "FailoverConfig", "DatabaseEndpoint",
    "FailoverEvent", "DatabaseFailoverManager",
]

log = logging.getLogger("noodlecore.database.failover")


#: The defaults of the failover settings: the C core's (nc_monitor_config_defaults).
_FO_DEFAULTS = _native.FAILOVER_DEFAULTS
_POOL_DEFAULTS = _native.POOL_DEFAULTS


@dataclass
class FailoverConfig:
    """Failover settings; every field is checked when the manager is made.

    ``failure_timeout`` is the window in which failures count towards
    ``max_failure_count``; ``failover_timeout`` bounds one switch (verifying
    the target); ``max_recovery_attempts`` failed failbacks stop automatic
    failback until ``trigger_recovery()``; ``hold_down`` is the least time
    between two automatic switches; ``failover_wait``: how long a primary
    borrow waits while no writable endpoint exists (0: 4015 at once); a
    standby serves reads while at most ``max_replica_lag_bytes`` and
    ``max_replica_lag_seconds`` behind; ``slow_probe_count`` consecutive probes
    slower than ``response_time_threshold`` fire the RESPONSE_TIME policy;
    ``enable_connection_pooling=False`` closes every connection when it is
    returned instead of keeping it; ``pool_options`` go to every endpoint's
    DatabaseConnectionPool.
    """

    mode: FailoverMode = FailoverMode(_FO_DEFAULTS["mode"])
    policy: FailoverPolicy = FailoverPolicy(_FO_DEFAULTS["policy"])
    max_failure_count: int = _FO_DEFAULTS["max_failure_count"]
    failure_timeout: float = _FO_DEFAULTS["failure_timeout"]
    response_time_threshold: float = _FO_DEFAULTS["response_time_threshold"]
    health_check_interval: float = _FO_DEFAULTS["health_check_interval"]
    failover_timeout: float = _FO_DEFAULTS["failover_timeout"]
    recovery_check_interval: float = _FO_DEFAULTS["recovery_check_interval"]
    max_recovery_attempts: int = _FO_DEFAULTS["max_recovery_attempts"]
    enable_connection_pooling: bool = True
    pool_max_connections: int = _POOL_DEFAULTS["max_connections"]
    pool_timeout: float = _POOL_DEFAULTS["timeout"]
    health_check_timeout: float = _FO_DEFAULTS["health_check_timeout"]
    auto_recovery: bool = _FO_DEFAULTS["auto_recovery"]
    require_writable: bool = _FO_DEFAULTS["require_writable"]
    slow_probe_count: int = _FO_DEFAULTS["slow_probe_count"]
    hold_down: float = _FO_DEFAULTS["hold_down"]
    failover_wait: float = _FO_DEFAULTS["failover_wait"]
    max_replica_lag_bytes: float = _FO_DEFAULTS["max_replica_lag_bytes"]
    max_replica_lag_seconds: float = _FO_DEFAULTS["max_replica_lag_seconds"]
    event_history: int = 100
    pool_options: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigurationError naming the first bad field."""
        def bad(name: str, why: str) -> None:
            raise errors.ConfigurationError(f"FailoverConfig.{name} {why}")
        if not isinstance(self.mode, FailoverMode):
            try:
                self.mode = FailoverMode(self.mode)
            except ValueError:
                bad("mode", f"must be a FailoverMode, not {self.mode!r}")
        if not isinstance(self.policy, FailoverPolicy):
            try:
                self.policy = FailoverPolicy(self.policy)
            except ValueError:
                bad("policy", f"must be a FailoverPolicy, not {self.policy!r}")
        for name in ("max_failure_count", "max_recovery_attempts", "pool_max_connections",
                     "slow_probe_count", "event_history"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, f"must be an integer of at least 1, not {v!r}")
        for name in ("failure_timeout", "response_time_threshold", "health_check_interval",
                     "failover_timeout", "recovery_check_interval", "pool_timeout",
                     "health_check_timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v \
                    or v == float("inf"):
                bad(name, f"must be a positive number of seconds, not {v!r}")
        for name in ("hold_down", "failover_wait", "max_replica_lag_bytes", "max_replica_lag_seconds"):
            v, pos = getattr(self, name), name.startswith("max_")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 if pos else v >= 0) \
                    or v == float("inf"):
                bad(name, f"must be a {'positive number' if pos else 'number of seconds of at least 0'}, not {v!r}")
        for name in ("enable_connection_pooling", "auto_recovery", "require_writable"):
            if not isinstance(getattr(self, name), bool):
                bad(name, f"must be True or False, not {getattr(self, name)!r}")
        if not isinstance(self.pool_options, dict):
            bad("pool_options", "must be a dict of pool options")


@dataclass
class DatabaseEndpoint:
    """One database server.  Priority 1 is the most preferred.  The health
    fields are filled in from the native monitor by the manager."""

    id: str
    name: str
    connection_string: str
    priority: int = 1
    is_primary: bool = False
    is_available: bool = True
    last_health_check: Optional[datetime.datetime] = None
    failure_count: int = 0
    last_failure: Optional[datetime.datetime] = None
    response_time: float = 0.0
    role: str = "unknown"
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"DatabaseEndpoint(id={self.id!r}, name={self.name!r}, "
                f"connection_string={redact_dsn(self.connection_string)!r}, priority={self.priority}, "
                f"is_primary={self.is_primary}, is_available={self.is_available}, role={self.role!r})")


@dataclass
class FailoverEvent:
    """One failover, failback, split-brain hold or outage, as recorded."""

    event_id: str
    from_endpoint: Optional[str]
    to_endpoint: Optional[str]
    reason: str
    timestamp: datetime.datetime
    duration: Optional[float] = None
    success: bool = False
    metadata: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"event_id": self.event_id, "from_endpoint": self.from_endpoint,
                "to_endpoint": self.to_endpoint, "reason": self.reason,
                "timestamp": self.timestamp.isoformat(), "duration": self.duration,
                "success": self.success, "metadata": dict(self.metadata)}


def dsn_endpoints(dsn: str) -> List[DatabaseEndpoint]:
    """Each host of a libpq (multi-host) DSN as an endpoint (the core splits it)."""
    return [DatabaseEndpoint(id=name, name=name, connection_string=one, priority=i + 1)
            for i, (name, one) in enumerate(_native.split_hosts(dsn))]


# Managers alive in this process, for the fork hook below: plain weak
# references without callbacks (a WeakSet's callbacks kept a dropped manager
# in a reference cycle from being collected under pytest's thread-exception
# plugin; tests/test_gc.py), pruned as managers are added.
_live_managers: "list[weakref.ref[DatabaseFailoverManager]]" = []
_live_lock = threading.Lock()


def _track(manager: "DatabaseFailoverManager") -> None:
    with _live_lock:
        _live_managers[:] = [r for r in _live_managers if r() is not None]
        _live_managers.append(weakref.ref(manager))


def _after_fork_in_child() -> None:
    # The native side needs nothing here (a child's first use makes its own route,
    # csrc/py/failover.c).  The Python side: the parent's event thread does not exist in
    # the child and may have held _events_lock at the moment of the fork, so new ones; the
    # thread restarts at first use.  The child's route numbers its events from 1 again:
    # read from there (the parent's events stay in the history).
    global _live_lock
    _live_lock = threading.Lock()   # a parent thread may have held it at the fork
    for r in list(_live_managers):
        m = r()
        if m is None:
            continue
        m._events_lock = threading.Lock()
        m._last_event_id = 0
        m._stop_dispatch = threading.Event()
        m._dispatcher = None
        m._restart_dispatcher = not m._closed


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _iso(ts: Optional[float]) -> Optional[datetime.datetime]:
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)


class DatabaseFailoverManager(_patroni.PatroniSource):
    """Pools per endpoint, a native monitor, and the switch between them.

    ``backend_factory``: None to use the native backend each endpoint's
    connection string names, or a callable ``backend_factory(connection_string)``
    returning a backend object (see DatabaseConnectionPool).
    """

    def __init__(self, endpoints: List[DatabaseEndpoint],
                 backend_factory: Optional[Callable[[str], Any]] = None,
                 config: Optional[FailoverConfig] = None):
        if not endpoints:
            raise errors.ConfigurationError("DatabaseFailoverManager needs at least one endpoint")
        self.config = config if config is not None else FailoverConfig()
        if not isinstance(self.config, FailoverConfig):
            raise errors.ConfigurationError("config must be a FailoverConfig")
        self.config.validate()
        ids = [e.id for e in endpoints]
        if len(set(ids)) != len(ids):
            raise errors.ConfigurationError(f"endpoint ids must be unique: {ids}")
        for e in endpoints:
            if isinstance(e.priority, bool) or not isinstance(e.priority, int) or e.priority < 1:
                raise errors.ConfigurationError(
                    f"endpoint {e.id!r}: priority must be an integer of at least 1, not {e.priority!r}")
        primaries = [i for i, e in enumerate(endpoints) if e.is_primary]
        if len(primaries) > 1:
            raise errors.ConfigurationError(
                f"only one endpoint may be is_primary=True: {[endpoints[i].id for i in primaries]}")
        self.endpoints = list(endpoints)
        self.backend_factory = backend_factory
        self._index = {e.id: i for i, e in enumerate(self.endpoints)}
        self._listeners: List[Callable[[FailoverEvent], None]] = []
        self._events: deque = deque(maxlen=self.config.event_history)
        self._events_lock = threading.Lock()
        self._closed = False
        self._dispatcher: Optional[threading.Thread] = None
        self._stop_dispatch = threading.Event()
        self._restart_dispatcher = False     # set in a forked child
        self._last_event_id = 0

        cfg = self.config
        # One connect attempt per borrow: a server that refuses is reported
        # to the monitor at once (which may switch) instead of being retried
        # with backoff while a healthy endpoint waits.  pool_options may say
        # otherwise.
        pool_opts = dict(max_connections=cfg.pool_max_connections, timeout=cfg.pool_timeout,
                         retry_attempts=1)
        pool_opts.update(cfg.pool_options)
        self._pools: List[DatabaseConnectionPool] = []
        try:
            for e in self.endpoints:
                if backend_factory is None:
                    kind = backend_kind(e.connection_string)
                    if kind == "python":
                        raise errors.ConfigurationError(f"endpoint {e.id!r}: no backend for its connection string")
                    pool = DatabaseConnectionPool(e.connection_string, **pool_opts)
                else:
                    if not callable(backend_factory):
                        raise errors.ConfigurationError("backend_factory must be callable or None")
                    factory = (lambda cs=e.connection_string: backend_factory(cs))
                    pool = DatabaseConnectionPool(factory, **pool_opts)
                self._pools.append(pool)
            # The settings the C core reads: those it has defaults for.
            native_cfg = {name: getattr(cfg, name) for name in _FO_DEFAULTS}
            native_cfg.update(mode=cfg.mode.value, policy=cfg.policy.value)
            primary = primaries[0] if primaries else -1
            self._native = _native.FailoverMonitor(
                self._pools, [e.priority for e in self.endpoints], primary, native_cfg)
        except BaseException:
            for p in self._pools:
                p.shutdown(timeout=0)
            raise
        self._start_dispatcher()
        _track(self)

    def _resume_in_child(self) -> None:
        # The first use in a forked child starts this process's event thread and Patroni watch.
        if self._restart_dispatcher:
            self._restart_dispatcher = False
            self._patroni_resume()
            self._start_dispatcher()

    # -- borrowing --------------------------------------------------------

    @classmethod
    def from_dsn(cls, dsn: str, config: Optional[FailoverConfig] = None) -> "DatabaseFailoverManager":
        """A manager over a libpq multi-host connection string (URI or
        ``host=h1,h2 port=5432,5433``): each host an endpoint, id
        ``"host:port"``, priority in list order; ``target_session_attrs`` is
        dropped (the probes find the writable host)."""
        return cls(dsn_endpoints(dsn), config=config)

    @contextlib.contextmanager
    def get_connection(self, timeout: Optional[float] = None,
                       target: str = "primary") -> Iterator[PooledConnection]:
        """Borrow a connection (a context manager).  ``target``: ``"primary"``
        (the current writable endpoint), ``"standby"`` (a standby within the
        lag limits, the least busy, ties in turn; OperationalError 4017 at
        once when none is), ``"prefer-standby"`` (such a standby, else the
        primary) or ``"any"`` (the least busy of the primary and those).
        Primary: OperationalError 4015 when no endpoint is usable, at once or
        after ``failover_wait`` s (within ``timeout``); PoolClosedError (2002)
        after shutdown().  A lost autocommit write or COMMIT: 3039."""
        conn, _ = self._lend(timeout, target)
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _lend(self, timeout: Optional[float], target: str, written_at: float = 0.0) -> "tuple[PooledConnection, str]":
        # The connection and its endpoint's id (for the DatabaseManager's logs).
        if self._closed:
            raise errors.PoolClosedError("the failover manager is shut down")
        if self._restart_dispatcher:
            self._resume_in_child()
        check_target(target)
        conn, idx = self._native.lend_to(timeout, target, written_at)
        self._sync_endpoints(idx)     # served by a member that joined since?
        return conn, self.endpoints[idx].id

    def _give_back(self, conn: PooledConnection) -> None:
        if self.config.enable_connection_pooling:
            conn.release()
        else:
            conn.discard()

    def connect(self, timeout: Optional[float] = None, autocommit: bool = False) -> Any:
        """A PEP 249 connection (``noodlecore.dbapi.Connection``) of the
        current endpoint; its ``close()`` gives it back (or closes it, without
        ``enable_connection_pooling``).  Errors as get_connection()."""
        if self._closed:
            raise errors.PoolClosedError("the failover manager is shut down")
        if self._restart_dispatcher:
            self._resume_in_child()
        from ..dbapi.connection import Connection   # dbapi builds on the database package
        return Connection(self._native.lend(timeout), autocommit=autocommit,
                          discard=not self.config.enable_connection_pooling, source=self)

    # -- monitoring -------------------------------------------------------

    def start_monitoring(self) -> None:
        """Start the native monitor threads (idempotent)."""
        if self._closed:
            raise errors.ConnectionPoolError("the failover manager is shut down", 4010)
        self._resume_in_child()
        self._native.start()
        self._patroni_start()
        log.info("failover monitoring started", extra={"endpoints": list(self._index)})

    def stop_monitoring(self) -> None:
        """Stop the monitor threads; passive detection on the query path goes on."""
        self._native.stop()
        self._patroni_stop()
        log.info("failover monitoring stopped")

    @property
    def monitoring(self) -> bool:
        return self._native.running

    # -- operations -------------------------------------------------------

    def trigger_failover(self, reason: str = "Manual failover", target: Optional[str] = None) -> bool:
        """Switch to ``target`` (an endpoint id) or the best other endpoint.
        True when the switch happened; False (with the reason logged) when no
        endpoint qualifies."""
        if self._closed:
            raise errors.ConnectionPoolError("the failover manager is shut down", 4012)
        self._resume_in_child()
        idx = -1
        if target is not None:
            idx = self._endpoint_index(target)
            if idx is None:
                raise errors.ConfigurationError(f"unknown endpoint id {target!r}", 4016)
        done, why = self._native.trigger_failover(idx, str(reason))
        if not done:
            log.warning("manual failover not done: %s", self._names(why), extra={"reason": reason})
        self._drain_events()
        return bool(done)

    def trigger_recovery(self) -> bool:
        """Fail back to the preferred endpoint now if it qualifies (healthy,
        writable when required), and re-enable automatic failback."""
        if self._closed:
            raise errors.ConnectionPoolError("the failover manager is shut down", 4013)
        self._resume_in_child()
        done, why = self._native.trigger_recovery()
        if not done:
            log.info("recovery not done: %s", self._names(why))
        self._drain_events()
        return bool(done)

    def add_listener(self, callback: Callable[[FailoverEvent], None]) -> None:
        """Call ``callback(event)`` for every new event, on the manager's
        event thread (exceptions it raises are logged and ignored)."""
        if not callable(callback):
            raise errors.ConfigurationError("listener must be callable")
        self._listeners.append(callback)

    def get_events(self, limit: Optional[int] = None) -> List[FailoverEvent]:
        """The recorded events, oldest first (the last ``limit``)."""
        self._drain_events()
        with self._events_lock:
            evs = list(self._events)
        return evs[-limit:] if limit else evs

    @property
    def current_endpoint(self) -> Optional[str]:
        st = self._status()
        return self.endpoints[st["current"]].id if st["current"] >= 0 else None

    @property
    def current_state(self) -> FailoverState:
        return FailoverState(self._native.status()["state"])

    def get_status(self) -> dict:
        """State, current endpoint, per-endpoint health, statistics and the
        last 10 failovers, in the shape of the original manager."""
        self._resume_in_child()
        st = self._status()
        self._drain_events()
        endpoints = {}
        for e, h in zip(self.endpoints, st["endpoints"]):
            self._refresh_endpoint(e, h)
            endpoints[e.id] = {
                "name": e.name, "priority": e.priority, "is_primary": e.is_primary, "removed": h["removed"],
                "is_available": e.is_available, "role": e.role, "failure_count": e.failure_count,
                "last_failure": e.last_failure.isoformat() if e.last_failure else None,
                "response_time": e.response_time,
                "last_health_check": e.last_health_check.isoformat() if e.last_health_check else None,
                "last_error": h["last_error"] or None,
                # read routing (README "Reads on standbys"): reads/writes are
                # borrows served for read targets / for the primary
                "lsn": h["lsn"], "lag_bytes": h["lag_bytes"], "lag_seconds": h["lag_seconds"],
                "serves_reads": h["serves_reads"], "in_flight": h["in_flight"],
                "reads": h["reads"], "writes": h["writes"],
            }
        s = st["stats"]
        with self._events_lock:
            recent = [ev for ev in self._events if ev.metadata.get("kind") in ("failover", "failback")]
        return {
            "current_state": st["state"],
            "current_endpoint": self.endpoints[st["current"]].id if st["current"] >= 0 else None,
            "endpoints": endpoints,
            "statistics": {
                "total_failovers": s["total_failovers"], "successful_failovers": s["successful_failovers"],
                "failed_failovers": s["failed_failovers"], "total_recoveries": s["total_recoveries"],
                "successful_recoveries": s["successful_recoveries"], "failed_recoveries": s["failed_recoveries"],
                "average_failover_time": (s["failover_time_total"] / s["successful_failovers"]
                                          if s["successful_failovers"] else 0.0),
                "recovery_suspended": bool(s["recovery_suspended"]),
            },
            "recent_failovers": [
                {"event_id": ev.event_id, "from_endpoint": ev.from_endpoint, "to_endpoint": ev.to_endpoint,
                 "reason": ev.reason, "timestamp": ev.timestamp.isoformat(), "duration": ev.duration,
                 "success": ev.success} for ev in recent[-10:]],
            "monitoring": st["running"],
            "patroni": self._patroni_status(),
        }

    def get_pool(self, endpoint_id: str) -> DatabaseConnectionPool:
        """The pool of one endpoint (for stats)."""
        i = self._endpoint_index(endpoint_id, strict=True)
        return self._pools[i] if i < len(self._pools) else self._joined_pool(i)

    def shutdown(self) -> None:
        """Stop monitoring and the event thread, shut down every pool.  Ctrl-C (or an error) ends
        a wait, not the shutdown: the rest runs without waiting, then KeyboardInterrupt is raised."""
        if self._closed:
            return
        self._closed, self._restart_dispatcher = True, False
        got: List[BaseException] = []
        d, me, wait = self._dispatcher, threading.current_thread(), lambda t, q=0.0: q if got else t  # noqa: E731
        for step in [self._stop_dispatch.set, self._native.stop,   # the event thread ends at the stop's wake-up
                     lambda: d is None or d is me or d.join(wait(2, 0.2)), self._drain_events, self._native.close,
                     self._patroni_close, *[lambda p=p: p.shutdown(timeout=wait(1)) for p in self._pools]]:
            try:
                step()
            except BaseException as exc:
                got.append(exc)
        if got:
            raise got[0]
        log.info("failover manager shut down")

    close = shutdown

    def __enter__(self) -> "DatabaseFailoverManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # -- internals --------------------------------------------------------

    def _names(self, text: str) -> str:
        # the native core names endpoints by index; show their ids
        for i, e in reversed(list(enumerate(self.endpoints))):
            text = text.replace(f"endpoint {i}", f"endpoint {e.id!r}")
        return text

    def _refresh_endpoint(self, e: DatabaseEndpoint, h: dict) -> None:
        e.is_available = False if h["removed"] else bool(h["available"]) if h["probed"] else e.is_available
        e.role = h["role"]
        e.failure_count = h["consecutive_failures"]
        e.response_time = h["response_time"]
        e.last_health_check = _iso(h["last_check"])
        e.last_failure = _iso(h["last_failure"])

    def _make_event(self, raw: tuple) -> FailoverEvent:
        (eid, kind, frm, to, success, policy, manual, ts, duration, detected_ago, reason) = raw
        self._sync_endpoints(max(frm, to))
        meta = {"kind": kind, "manual": manual, "triggered_by": "operator" if manual else "monitor"}
        if policy is not None:
            meta["policy"] = policy
        if detected_ago is not None:
            meta["detection_to_switch"] = detected_ago
        return FailoverEvent(
            event_id=f"evt-{eid}",
            from_endpoint=self.endpoints[frm].id if frm >= 0 else None,
            to_endpoint=self.endpoints[to].id if to >= 0 else None,
            reason=self._names(reason), timestamp=_iso(ts), duration=duration,
            success=bool(success), metadata=meta)

    def _drain_events(self, timeout: float = 0.0) -> List[FailoverEvent]:
        with self._events_lock:
            raws = self._native.events(self._last_event_id, timeout if timeout else 0.0)
            new = []
            for raw in raws:
                ev = self._make_event(raw)
                self._last_event_id = max(self._last_event_id, raw[0])
                self._events.append(ev)
                new.append(ev)
        for ev in new:
            level = logging.WARNING if ev.metadata["kind"] in ("failover", "no_target", "split_brain") \
                or not ev.success else logging.INFO
            log.log(level, "%s %s -> %s: %s (%s)", ev.metadata["kind"], ev.from_endpoint, ev.to_endpoint,
                    ev.reason, "ok" if ev.success else "failed",
                    extra={"event_id": ev.event_id, "from_endpoint": ev.from_endpoint,
                           "to_endpoint": ev.to_endpoint, "duration": ev.duration, "success": ev.success,
                           "event_kind": ev.metadata["kind"], "triggered_by": ev.metadata["triggered_by"]})
            for cb in list(self._listeners):
                try:
                    cb(ev)
                except Exception:  # a listener must not stop the others
                    log.exception("failover listener %r raised", cb)
        return new

    def _start_dispatcher(self) -> None:
        # The thread holds a weak reference to the manager and a waiter that
        # keeps nothing of Python alive (not the monitor, its pools, nor a
        # backend_factory that may refer back to the application): a manager
        # dropped without shutdown() is collected, cycles and all, its monitor
        # and pools stop, and the thread ends at its next wake-up.
        ref = weakref.ref(self)
        waiter = self._native.waiter()
        stop = self._stop_dispatch

        def loop() -> None:
            while not stop.is_set():
                m = ref()
                if m is None:
                    return
                after = m._last_event_id
                m = None
                try:
                    # waits in C with the GIL released
                    got = waiter.wait(after, 0.5)
                    if got is None:         # the monitor was closed
                        return
                    if got:
                        m = ref()
                        if m is None:
                            return
                        m._drain_events()
                        m = None
                except Exception:  # pragma: no cover - the manager is going away
                    m = None
                    if stop.is_set():
                        return
                    log.exception("failover event thread")
                    stop.wait(0.5)
        self._dispatcher = threading.Thread(target=loop, name="noodlecore-failover-events", daemon=True)
        self._dispatcher.start()

    def __repr__(self) -> str:
        return f"<DatabaseFailoverManager endpoints={list(self._index)} closed={self._closed}>"
