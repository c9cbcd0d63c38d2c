"""Metrics of pools and failover managers: a plain dict, and Prometheus.

``get_metrics(obj)`` takes a DatabaseConnectionPool, a
DatabaseFailoverManager or a DatabaseManager and returns a plain dict (JSON
serialisable) of its counters and gauges::

    from noodlecore.database.metrics import get_metrics
    get_metrics(pool)["acquire_wait_seconds"]["p99"]

``register_prometheus(obj, registry=None, name="default")`` needs the
optional ``prometheus_client`` package (``pip install noodlecore[prometheus]``)
and exposes the same numbers in Prometheus conventions through one custom
collector per registry.  Every series carries a ``name`` label (the name
given when registering, so several pools can share a registry) and, for the
pools of a failover manager's endpoints, an ``endpoint`` label (empty for a
plain pool):

==============================================  =========  ==================================
metric                                          type       labels (besides name)
==============================================  =========  ==================================
noodlecore_pool_connections                     gauge      endpoint, state (active/idle/opening)
noodlecore_pool_max_connections                 gauge      endpoint
noodlecore_pool_requests_waiting                gauge      endpoint
noodlecore_pool_acquires_total                  counter    endpoint
noodlecore_pool_acquire_timeouts_total          counter    endpoint
noodlecore_pool_acquire_wait_seconds            summary    endpoint (quantile 0.5 / 0.99, sum, count)
noodlecore_pool_validation_failures_total       counter    endpoint
noodlecore_pool_connect_failures_total          counter    endpoint
noodlecore_pool_connections_opened_total        counter    endpoint
noodlecore_pool_connections_closed_total        counter    endpoint
noodlecore_pool_connections_replaced_total      counter    endpoint
noodlecore_pool_connections_leaked_total        counter    endpoint (borrows held past leak_timeout)
noodlecore_pool_queries_total                   counter    endpoint
noodlecore_pool_query_errors_total              counter    endpoint
noodlecore_pool_health_score                    gauge      endpoint
noodlecore_endpoint_up                          gauge      endpoint
noodlecore_endpoint_role                        gauge      endpoint, role (1 for the current role)
noodlecore_endpoint_latency_seconds             gauge      endpoint (last health probe)
noodlecore_endpoint_consecutive_failures        gauge      endpoint
noodlecore_current_endpoint                     gauge      endpoint (1 for the one in use)
noodlecore_endpoint_replica_lag_bytes           gauge      endpoint (standbys whose lag is known)
noodlecore_endpoint_replica_lag_seconds         gauge      endpoint (standbys whose lag is known)
noodlecore_endpoint_serves_reads                gauge      endpoint (1 for a standby within the lag limits)
noodlecore_endpoint_borrows_total               counter    endpoint, target (read/primary)
noodlecore_failover_state                       gauge      state (1 for the current state)
noodlecore_failover_monitoring                  gauge
noodlecore_failovers_total                      counter
noodlecore_failovers_failed_total               counter
noodlecore_recoveries_total                     counter
noodlecore_recoveries_failed_total              counter
==============================================  =========  ==================================

The acquire wait is a summary (the pool keeps a histogram in C and reports
its median and 99th percentile, the total wait and the number of borrows).
A closed pool or failover manager is dropped from the collector at the next
scrape; a DatabaseManager stays registered and is exposed while connected.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .. import _native
from . import errors
from .connection_pool import DatabaseConnectionPool
from .failover_manager import DatabaseFailoverManager, FailoverState

__all__ = ["get_metrics", "register_prometheus", "unregister_prometheus", "NoodlecoreCollector"]

log = logging.getLogger("noodlecore.database.metrics")

#: the roles an endpoint may report: the C core's names
_ROLES = _native.ROLES


# ---------------------------------------------------------------------------
# plain dicts
# ---------------------------------------------------------------------------

def _pool_metrics(pool: DatabaseConnectionPool) -> Dict[str, Any]:
    raw = pool._raw_stats()
    acquires = raw["acquires"]
    return {
        "kind": "pool",
        "backend": pool.backend_kind,
        "target": pool.target,
        "closed": bool(raw["closed"]),
        "connections": {
            "active": raw["active_connections"],
            "idle": raw["idle_connections"],
            "opening": raw["opening_connections"],
            "total": raw["total_connections"],
            "max": raw["max_connections"],
            "min": raw["min_connections"],
        },
        "requests_waiting": raw["requests_waiting"],
        "acquires": acquires,
        "acquire_timeouts": raw["acquire_timeouts"],
        "acquire_wait_seconds": {
            "p50": raw["acquire_wait_p50"],
            "p99": raw["acquire_wait_p99"],
            "mean": (raw["wait_time_total"] / acquires) if acquires else 0.0,
            "sum": raw["wait_time_total"],
        },
        "validation_failures": raw["validation_failures"],
        "connect_failures": raw["connect_failures"],
        "connections_opened": raw["connections_opened"],
        "connections_closed": raw["connections_closed"],
        "connections_replaced": raw["connections_replaced"],
        "leaked": raw["leaked"],
        "queries": raw["query_count"],
        "errors": raw["error_count"],
        "health_score": pool.get_stats().pool_health_score,
    }


def _failover_metrics(mgr: DatabaseFailoverManager) -> Dict[str, Any]:
    st = mgr.get_status()
    s = st["statistics"]
    endpoints = {}
    for e in mgr.endpoints:
        h = st["endpoints"][e.id]
        endpoints[e.id] = {
            "name": h["name"],
            "priority": h["priority"],
            "up": bool(h["is_available"]),
            "role": h["role"],
            "latency_seconds": h["response_time"],
            "consecutive_failures": h["failure_count"],
            "last_health_check": h["last_health_check"],
            "last_error": h["last_error"],
            "current": e.id == st["current_endpoint"],
            "lag_bytes": h["lag_bytes"],
            "lag_seconds": h["lag_seconds"],
            "serves_reads": h["serves_reads"],
            "reads": h["reads"],
            "writes": h["writes"],
            "pool": _pool_metrics(mgr.get_pool(e.id)),
        }
    return {
        "kind": "failover",
        "state": st["current_state"],
        "current_endpoint": st["current_endpoint"],
        "monitoring": bool(st["monitoring"]),
        "closed": bool(getattr(mgr, "_closed", False)),
        "endpoints": endpoints,
        "failovers_total": s["total_failovers"],
        "failovers_successful": s["successful_failovers"],
        "failovers_failed": s["failed_failovers"],
        "recoveries_total": s["total_recoveries"],
        "recoveries_successful": s["successful_recoveries"],
        "recoveries_failed": s["failed_recoveries"],
        "average_failover_seconds": s["average_failover_time"],
        "recovery_suspended": s["recovery_suspended"],
    }


def _is_manager(obj: Any) -> bool:
    try:
        from .database_manager import DatabaseManager
    except ImportError:     # pragma: no cover - the package always has it
        return False
    return isinstance(obj, DatabaseManager)


def _check(obj: Any) -> None:
    if not (isinstance(obj, (DatabaseConnectionPool, DatabaseFailoverManager)) or _is_manager(obj)):
        raise errors.ConfigurationError(
            f"metrics need a DatabaseConnectionPool, a DatabaseFailoverManager or a DatabaseManager, "
            f"not {type(obj).__name__}")


def _resolve(obj: Any) -> Any:
    """The pool or failover manager behind ``obj``: itself, or what a
    DatabaseManager uses right now (None while it is not connected)."""
    _check(obj)
    if isinstance(obj, (DatabaseConnectionPool, DatabaseFailoverManager)):
        return obj
    fo = obj.failover_manager
    if fo is not None:
        return fo
    return obj.pool


def get_metrics(obj: Any) -> Dict[str, Any]:
    """A plain dict of the metrics of a pool, a failover manager or a
    DatabaseManager (whichever it uses).

    Pool: ``kind`` "pool", ``connections`` by state (active, idle, opening,
    total, max, min), ``requests_waiting``, ``acquires``,
    ``acquire_timeouts``, ``acquire_wait_seconds`` (p50, p99, mean, sum),
    ``validation_failures``, ``connect_failures``, ``connections_opened`` /
    ``_closed`` / ``_replaced``, ``queries``, ``errors``, ``health_score``.

    Failover manager: ``kind`` "failover", ``state``, ``current_endpoint``,
    ``monitoring``, ``endpoints`` (per id: up, role, latency_seconds,
    consecutive_failures, priority, current, a standby's ``lag_bytes`` and
    ``lag_seconds`` (None unknown), ``serves_reads``, the borrows served for
    reads (``reads``) and for the primary (``writes``), and its ``pool`` as above),
    ``failovers_total`` / ``_successful`` / ``_failed``,
    ``recoveries_total`` / ``_successful`` / ``_failed``,
    ``average_failover_seconds``.

    DatabaseManager: the dict of the pool or failover manager it uses, with
    ``manager`` set to ``{"connected": True, "failover_enabled": ...}``; not
    connected: ``{"kind": "manager", "manager": {"connected": False, ...}}``.

    Raises ConfigurationError (2013) for anything else.
    """
    target = _resolve(obj)
    if target is None:
        return {"kind": "manager", "manager": {"connected": False, "failover_enabled": obj.enable_failover}}
    out = _failover_metrics(target) if isinstance(target, DatabaseFailoverManager) else _pool_metrics(target)
    if target is not obj:
        out["manager"] = {"connected": True, "failover_enabled": obj.enable_failover}
    return out


# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------

def _prometheus():
    try:
        import prometheus_client  # noqa: F401
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, Metric,
                                            REGISTRY)
    except ImportError:
        raise errors.ConfigurationError(
            "register_prometheus() needs the prometheus_client package: "
            "pip install 'noodlecore[prometheus]' (or pip install prometheus_client)") from None
    return CounterMetricFamily, GaugeMetricFamily, Metric, REGISTRY


class NoodlecoreCollector:
    """A Prometheus collector for the pools and failover managers registered
    on one registry (made by register_prometheus(); one per registry, so
    each metric family is exposed once whatever the number of objects)."""

    def __init__(self) -> None:
        self._objects: Dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- membership --------------------------------------------------------

    def add(self, name: str, obj: Any) -> None:
        with self._lock:
            if name in self._objects:
                raise errors.ConfigurationError(
                    f"a noodlecore object named {name!r} is already registered on this registry")
            self._objects[name] = obj

    def remove(self, name: str) -> bool:
        with self._lock:
            return self._objects.pop(name, None) is not None

    @property
    def names(self) -> List[str]:
        with self._lock:
            return list(self._objects)

    def describe(self):
        # Lets a registry that checks for duplicate names see ours without
        # calling collect() (no stats are read at registration).
        return list(self._families(with_samples=False))

    # -- collection --------------------------------------------------------

    def _families(self, with_samples: bool = True) -> Iterator[Any]:
        Counter, Gauge, Metric, _ = _prometheus()
        pl = ["name", "endpoint"]
        f = {
            "conn": Gauge("noodlecore_pool_connections", "Connections of the pool by state.",
                          labels=pl + ["state"]),
            "max": Gauge("noodlecore_pool_max_connections", "The pool's max_connections.", labels=pl),
            "waiting": Gauge("noodlecore_pool_requests_waiting", "Callers waiting for a connection.",
                             labels=pl),
            "acq": Counter("noodlecore_pool_acquires", "Connections handed out.", labels=pl),
            "tmo": Counter("noodlecore_pool_acquire_timeouts",
                           "Borrows that gave up after the pool timeout (PoolTimeoutError 2003).", labels=pl),
            "vf": Counter("noodlecore_pool_validation_failures",
                          "Connections that failed a validation check and were replaced.", labels=pl),
            "cf": Counter("noodlecore_pool_connect_failures", "Failed attempts to open a connection.",
                          labels=pl),
            "opened": Counter("noodlecore_pool_connections_opened", "Connections opened.", labels=pl),
            "closed": Counter("noodlecore_pool_connections_closed", "Connections closed.", labels=pl),
            "replaced": Counter("noodlecore_pool_connections_replaced", "Dead connections replaced.",
                                labels=pl),
            "leaked": Counter("noodlecore_pool_connections_leaked",
                              "Borrows held longer than leak_timeout (each warned once with "
                              "ConnectionLeakWarning).", labels=pl),
            "q": Counter("noodlecore_pool_queries", "Statements run.", labels=pl),
            "qe": Counter("noodlecore_pool_query_errors", "Statements that raised.", labels=pl),
            "health": Gauge("noodlecore_pool_health_score",
                            "1.0 for a healthy pool, lower with errors, timeouts and validation failures.",
                            labels=pl),
            "wait": Metric("noodlecore_pool_acquire_wait_seconds",
                           "Time a borrow waited for a connection (median and 99th percentile of the "
                           "pool's histogram, total and count).", "summary"),
            "up": Gauge("noodlecore_endpoint_up", "1 when the endpoint passed its last health probe.",
                        labels=pl),
            "role": Gauge("noodlecore_endpoint_role", "1 for the role the endpoint reported last.",
                          labels=pl + ["role"]),
            "lat": Gauge("noodlecore_endpoint_latency_seconds", "Duration of the last health probe.",
                         labels=pl),
            "cfail": Gauge("noodlecore_endpoint_consecutive_failures",
                           "Consecutive failed health probes.", labels=pl),
            "cur": Gauge("noodlecore_current_endpoint", "1 for the endpoint connections come from.",
                         labels=pl),
            "lagb": Gauge("noodlecore_endpoint_replica_lag_bytes",
                          "Bytes of WAL a standby has not replayed yet (standbys whose lag is known).", labels=pl),
            "lags": Gauge("noodlecore_endpoint_replica_lag_seconds",
                          "How long the primary has been past a standby's replay position.", labels=pl),
            "reads_ok": Gauge("noodlecore_endpoint_serves_reads", "1 for a standby within the lag limits.",
                              labels=pl),
            "borrows": Counter("noodlecore_endpoint_borrows", "Borrows served, by target (read or primary).",
                               labels=pl + ["target"]),
            "state": Gauge("noodlecore_failover_state", "1 for the failover manager's current state.",
                           labels=["name", "state"]),
            "mon": Gauge("noodlecore_failover_monitoring", "1 while the native health monitor runs.",
                         labels=["name"]),
            "fo": Counter("noodlecore_failovers", "Failovers attempted (automatic and manual).",
                          labels=["name"]),
            "fof": Counter("noodlecore_failovers_failed", "Failovers that did not complete.", labels=["name"]),
            "rec": Counter("noodlecore_recoveries", "Failbacks to the preferred endpoint attempted.",
                           labels=["name"]),
            "recf": Counter("noodlecore_recoveries_failed", "Failbacks that did not complete.",
                            labels=["name"]),
        }
        with self._lock:
            objects = list(self._objects.items()) if with_samples else []
        dead = []
        for name, obj in objects:
            try:
                target = _resolve(obj)
                if target is None:       # a DatabaseManager not connected (yet, or any more)
                    continue
                if isinstance(target, DatabaseFailoverManager):
                    if getattr(target, "_closed", False):
                        if target is obj:
                            dead.append(name)
                        continue
                    self._add_failover(f, name, _failover_metrics(target))
                else:
                    m = _pool_metrics(target)
                    if m["closed"]:
                        if target is obj:      # a manager may connect again: keep it
                            dead.append(name)
                        continue
                    self._add_pool(f, name, "", m)
            except Exception:   # a scrape must not fail because one object did
                log.debug("metrics of %r not collected", name, exc_info=True)
        for name in dead:
            self.remove(name)
        return iter(f.values())

    @staticmethod
    def _add_pool(f: dict, name: str, endpoint: str, m: dict) -> None:
        lv = [name, endpoint]
        for state in ("active", "idle", "opening"):
            f["conn"].add_metric(lv + [state], m["connections"][state])
        f["max"].add_metric(lv, m["connections"]["max"])
        f["waiting"].add_metric(lv, m["requests_waiting"])
        f["acq"].add_metric(lv, m["acquires"])
        f["tmo"].add_metric(lv, m["acquire_timeouts"])
        f["vf"].add_metric(lv, m["validation_failures"])
        f["cf"].add_metric(lv, m["connect_failures"])
        f["opened"].add_metric(lv, m["connections_opened"])
        f["closed"].add_metric(lv, m["connections_closed"])
        f["replaced"].add_metric(lv, m["connections_replaced"])
        f["leaked"].add_metric(lv, m["leaked"])
        f["q"].add_metric(lv, m["queries"])
        f["qe"].add_metric(lv, m["errors"])
        f["health"].add_metric(lv, m["health_score"])
        w = m["acquire_wait_seconds"]
        labels = {"name": name, "endpoint": endpoint}
        wait = f["wait"]
        wait.add_sample("noodlecore_pool_acquire_wait_seconds", dict(labels, quantile="0.5"), w["p50"])
        wait.add_sample("noodlecore_pool_acquire_wait_seconds", dict(labels, quantile="0.99"), w["p99"])
        wait.add_sample("noodlecore_pool_acquire_wait_seconds_sum", labels, w["sum"])
        wait.add_sample("noodlecore_pool_acquire_wait_seconds_count", labels, m["acquires"])

    def _add_failover(self, f: dict, name: str, m: dict) -> None:
        for eid, e in m["endpoints"].items():
            lv = [name, eid]
            f["up"].add_metric(lv, 1 if e["up"] else 0)
            role = e["role"] if e["role"] in _ROLES else "unknown"
            for r in _ROLES:
                f["role"].add_metric(lv + [r], 1 if r == role else 0)
            f["lat"].add_metric(lv, e["latency_seconds"] or 0.0)
            f["cfail"].add_metric(lv, e["consecutive_failures"])
            f["cur"].add_metric(lv, 1 if e["current"] else 0)
            if e["lag_bytes"] is not None:
                f["lagb"].add_metric(lv, e["lag_bytes"])
            if e["lag_seconds"] is not None:
                f["lags"].add_metric(lv, e["lag_seconds"])
            f["reads_ok"].add_metric(lv, 1 if e["serves_reads"] else 0)
            f["borrows"].add_metric(lv + ["read"], e["reads"])
            f["borrows"].add_metric(lv + ["primary"], e["writes"])
            self._add_pool(f, name, eid, e["pool"])
        for s in FailoverState:
            f["state"].add_metric([name, s.value], 1 if s.value == m["state"] else 0)
        f["mon"].add_metric([name], 1 if m["monitoring"] else 0)
        f["fo"].add_metric([name], m["failovers_total"])
        f["fof"].add_metric([name], m["failovers_failed"])
        f["rec"].add_metric([name], m["recoveries_total"])
        f["recf"].add_metric([name], m["recoveries_failed"])

    def collect(self):
        return self._families()


_collectors: Dict[int, Tuple[Any, NoodlecoreCollector]] = {}
_collectors_lock = threading.Lock()


def _collector_for(registry: Any, create: bool) -> Optional[NoodlecoreCollector]:
    with _collectors_lock:
        entry = _collectors.get(id(registry))
        if entry is not None and entry[0] is registry:
            return entry[1]
        if not create:
            return None
        col = NoodlecoreCollector()
        registry.register(col)
        _collectors[id(registry)] = (registry, col)
        return col


def register_prometheus(obj: Any, registry: Any = None, name: str = "default") -> NoodlecoreCollector:
    """Expose ``obj`` (a pool, a failover manager or a DatabaseManager) on a
    Prometheus registry (default: prometheus_client's global REGISTRY) under
    the label ``name``.

    Returns the registry's NoodlecoreCollector (one per registry, shared by
    every object registered on it).  A second object with the same name on
    the same registry raises ConfigurationError; so does a missing
    prometheus_client.  ``unregister_prometheus(name, registry)`` removes it.
    """
    _check(obj)   # refuse what we cannot describe now, not at the first scrape
    if not isinstance(name, str) or not name:
        raise errors.ConfigurationError("register_prometheus(): name must be a non-empty string")
    _, _, _, default_registry = _prometheus()
    registry = default_registry if registry is None else registry
    col = _collector_for(registry, create=True)
    col.add(name, obj)
    log.debug("registered %s for Prometheus as %r", type(obj).__name__, name)
    return col


def unregister_prometheus(name: str, registry: Any = None) -> bool:
    """Stop exposing the object registered as ``name``; True if there was one."""
    _, _, _, default_registry = _prometheus()
    registry = default_registry if registry is None else registry
    col = _collector_for(registry, create=False)
    return bool(col and col.remove(name))
