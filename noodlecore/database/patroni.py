"""Patroni as a topology source: the endpoints of a DatabaseFailoverManager from
Patroni's ``GET /cluster`` (read by the C core's REST client, ``_native.patroni_cluster``).

Thin on purpose: the request, the deadline, the fallback to the next URL, the JSON
and which member leads are the core's; here only the argument checks and the shape
of DatabaseEndpoint.  Patroni's view is a hint, never trusted for writes: each
endpoint is still probed by the monitor (its live role decides where writes go).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .. import _native
from . import errors
from .config import redact_dsn

__all__ = ["PatroniUrls", "patroni_urls", "fetch_cluster", "member_dsn", "endpoints_from_cluster", "describe",
           "PatroniSource"]

PatroniUrls = Union[str, Sequence[str]]

DEFAULT_TIMEOUT = 5.0
# How often a running manager re-reads /cluster: half of Patroni's default loop_wait
# (10 s), so a change Patroni made is seen within about one of its loops; one HTTP
# request per interval, apart from the health checks (a round trip to every endpoint).
DEFAULT_INTERVAL = 5.0

log = logging.getLogger("noodlecore.database.failover")

# Serialises PatroniSource._sync_endpoints (made anew in a forked child: a parent
# thread may have held it at the fork).
_sync_lock = threading.Lock()
# Managers whose endpoints follow Patroni's members (from_patroni), for the fork hook:
# weak references, pruned as managers are added.
_following: "list[weakref.ref[Any]]" = []


def _new_lock_in_child() -> None:
    global _sync_lock
    _sync_lock = threading.Lock()
    for r in list(_following):
        m = r()
        if m is not None:
            m._patroni_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def patroni_urls(urls: PatroniUrls) -> List[str]:
    """One URL, a comma-separated string of them, or a sequence -> a list (checked)."""
    if isinstance(urls, str):
        out = [u.strip() for u in urls.split(",") if u.strip()]
    elif isinstance(urls, (list, tuple)):
        out = list(urls)
    else:
        raise errors.ConfigurationError(f"Patroni URLs must be a str or a list of str, not {type(urls).__name__}",
                                        error_code=4027)
    if not out or not all(isinstance(u, str) and u for u in out):
        raise errors.ConfigurationError(f"Patroni URLs must be non-empty strings: {urls!r}", error_code=4027)
    return out


def fetch_cluster(urls: PatroniUrls, timeout: float = DEFAULT_TIMEOUT) -> Dict[str, Any]:
    """Patroni's ``/cluster`` from the first URL that answers within ``timeout`` seconds
    (shared among the URLs): ``{"scope", "source", "members": [{"name", "role", "state",
    "host", "port", "timeline", "replay_lag", "lag", "routing_lag", "api_url", "leader"}]}``.
    Raises OperationalError 4025 when none answers, ConfigurationError 4027 for a bad URL."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise errors.ConfigurationError(f"Patroni timeout must be a positive number of seconds, not {timeout!r}")
    return _native.patroni_cluster(patroni_urls(urls), float(timeout))


def member_dsn(dsn: str, host: str, port: int) -> str:
    """dsn pointed at host:port (the core's nc_patroni_member_dsn, which also makes the
    DSNs of members that join later).  libpq lets a later host/port override the earlier
    one in both forms, so nothing of the DSN is parsed: the URI form gets them as query
    parameters, the key=value form appended."""
    return _native.patroni_member_dsn(dsn, host, int(port))


def endpoints_from_cluster(cluster: Dict[str, Any], dsn: str) -> list:
    """DatabaseEndpoints for the members with a host and port: the leader first (priority 1,
    is_primary), the others in Patroni's order.  Each endpoint's id and name are the member's
    name; metadata["patroni"] keeps what Patroni said of it."""
    from .failover_manager import DatabaseEndpoint
    members = [m for m in cluster["members"] if m["host"] and m["port"]]
    if not members:
        raise errors.OperationalError(
            f"Patroni at {cluster['source']} lists no member with a host and port "
            f"({len(cluster['members'])} members)", error_code=4028)
    members.sort(key=lambda m: 0 if m["leader"] else 1)     # stable: Patroni's order otherwise
    out = []
    for i, m in enumerate(members):
        out.append(DatabaseEndpoint(
            id=m["name"], name=m["name"], connection_string=member_dsn(dsn, m["host"], m["port"]),
            priority=i + 1, is_primary=bool(m["leader"]) and i == 0,
            metadata={"patroni": dict(m), "patroni_scope": cluster["scope"]}))
    return out


def describe(cluster: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rows for a status display: name, role, state, host:port, timeline, lag (bytes)."""
    rows = []
    for m in (cluster or {}).get("members", []):
        rows.append({"name": m["name"], "role": m["role"], "state": m["state"],
                     "address": "%s:%s" % (m["host"], m["port"]), "timeline": m["timeline"],
                     "lag_bytes": m["routing_lag"]})
    return rows


class PatroniSource:
    """DatabaseFailoverManager's Patroni methods (a base class of it, kept here so that
    failover_manager.py stays about failover)."""

    #: the Patroni URLs the manager was made from (from_patroni), else None
    patroni_urls: Optional[List[str]] = None
    #: the core's re-reader of /cluster (from_patroni): runs while the manager monitors
    _patroni_watch: Any = None
    #: the DSN new members' endpoints are made from (from_patroni)
    _patroni_dsn: Optional[str] = None
    #: refusals to follow a member already logged (_patroni_status)
    _patroni_refusals_logged = 0
    #: how many endpoints the manager was made with (from_patroni): a forked child's
    #: route starts over from these and learns the members that joined since again
    _patroni_initial = 0

    @classmethod
    def from_patroni(cls, urls: PatroniUrls, dsn: str = "", config: Any = None, timeout: float = DEFAULT_TIMEOUT,
                     backend_factory: Optional[Callable[[str], Any]] = None,
                     interval: float = DEFAULT_INTERVAL) -> Any:
        """A manager over the members Patroni lists (``GET /cluster`` from the first of
        ``urls`` that answers within ``timeout``): the leader first (priority 1), then
        the others in Patroni's order, each at its host and port with the rest of ``dsn``
        (user, database, password, options; libpq's defaults when empty).  Patroni's view
        only orders the endpoints: the monitor's own probes decide where writes go (and
        which standbys serve reads), so a Patroni API that becomes unreachable later
        changes nothing.  While the manager monitors, the core re-reads ``/cluster`` every
        ``interval`` seconds (each fetch within ``timeout``, falling back across the URLs);
        ``get_status()["patroni"]`` shows the last answer and the fetch failures.  The
        endpoints follow the members (the core applies each answer, no Python involved):
        a member that joins becomes an endpoint (its pool made from ``dsn`` with its
        host and port and the other endpoints' pool options; writes only once probed
        writable, reads only once probed a standby within the lag limits), one that
        leaves is marked ``removed`` (never routed to, its connections closed; its entry
        stays), one that comes back at the same address is used again; at most 32
        endpoints in all (removed ones included), more are refused and counted in
        ``get_status()["patroni"]["follow"]``.  With a ``backend_factory`` the endpoints
        stay those it was made with.  Raises OperationalError 4025 when no URL answers, 4028 when no
        member has an address, ConfigurationError 4027 for a bad URL."""
        url_list = patroni_urls(urls)
        if not isinstance(dsn, str):
            raise errors.ConfigurationError(f"dsn must be a str, not {type(dsn).__name__}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < float("inf"):
            raise errors.ConfigurationError(f"Patroni interval must be a positive number of seconds, not {interval!r}")
        cluster = fetch_cluster(url_list, timeout)
        m = cls(endpoints_from_cluster(cluster, dsn), backend_factory=backend_factory, config=config)
        m.patroni_urls = url_list
        m._patroni_dsn = dsn
        m._patroni_initial = len(m.endpoints)
        _following[:] = [r for r in _following if r() is not None] + [weakref.ref(m)]
        try:
            m._patroni_watch = _native.PatroniWatch(url_list, float(interval), float(timeout),
                                                    [e.id for e in m.endpoints])
            if backend_factory is None:
                m._patroni_watch.follow(m._native, [e.id for e in m.endpoints],
                                        [e.metadata["patroni"]["host"] for e in m.endpoints],
                                        [int(e.metadata["patroni"]["port"]) for e in m.endpoints], dsn)
        except BaseException:
            m.shutdown()
            raise
        log.info("failover manager from Patroni %s (scope %r): %s", cluster["source"], cluster["scope"],
                 ", ".join(f"{e.id} ({e.metadata['patroni']['role']})" for e in m.endpoints))
        return m

    def _patroni_after_fork(self) -> None:
        """In a forked child (the fork hook, before any thread of it runs): the child's
        route starts over from the endpoints the manager was made with, and its watch,
        renewed at the first use, adds the members that joined since in the order it
        meets them; so the endpoints that joined in the parent go from the list, and
        _sync_endpoints appends them again as the child's route numbers them."""
        if self._patroni_watch is None or not self._patroni_initial:
            return
        del self.endpoints[self._patroni_initial:]
        self._index = {e.id: i for i, e in enumerate(self.endpoints)}
        self._patroni_refusals_logged = 0

    def _patroni_resume(self) -> None:
        """The first use in a forked child: the watch is renewed (following this
        process's route, running when the parent's ran) now, not only when it is next
        asked for its status."""
        if self._patroni_watch is not None:
            self._patroni_watch.endpoints()

    def _sync_endpoints(self, index: int = -2) -> None:
        """Append a DatabaseEndpoint for each endpoint the core added since (a member that
        joined), in the core's order: endpoint i of the core is self.endpoints[i].  With
        index: only when that endpoint is not known yet (-1: none)."""
        w = self._patroni_watch
        if w is None or (index != -2 and index < len(self.endpoints)):
            return
        eps = w.endpoints()
        if not eps or len(eps) <= len(self.endpoints):
            return
        from .failover_manager import DatabaseEndpoint
        with _sync_lock:
            for i in range(len(self.endpoints), len(eps)):
                name, host, port = eps[i][:3]
                self.endpoints.append(DatabaseEndpoint(
                    id=name, name=name, connection_string=member_dsn(self._patroni_dsn or "", host, port),
                    priority=i + 1, metadata={"patroni": {"name": name, "host": host, "port": port},
                                              "patroni_joined": True}))
                self._index[name] = i
                log.info("Patroni member %s joined: endpoint %s at %s:%d", name, name, host, port)

    def _status(self) -> Dict[str, Any]:
        """The core's status, with a DatabaseEndpoint for every endpoint it lists."""
        st = self._native.status()
        self._sync_endpoints(len(st["endpoints"]) - 1)
        return st

    def _endpoint_index(self, endpoint_id: str, strict: bool = False) -> Optional[int]:
        """The index of an endpoint id (one that joined since included); None, or with
        strict KeyError, when there is none."""
        if endpoint_id not in self._index:
            self._sync_endpoints()
        return self._index[endpoint_id] if strict else self._index.get(endpoint_id)

    def _joined_pool(self, i: int) -> Any:
        """The pool of endpoint i, which joined later: a DatabaseConnectionPool over the
        core's pool (its __init__ was the core's: the options are endpoint 0's)."""
        p = self._native.pool(i)
        if getattr(p, "_options", None) is None:
            p._options = self._pools[0].options
            p._dsn = redact_dsn(self.endpoints[i].connection_string)
        return p

    def drain(self) -> None:
        """``DatabaseConnectionPool.drain()`` on every endpoint's pool, the members that
        joined included (SQLAlchemy's ``engine.dispose()`` on a multi-host URL calls it)."""
        if not self._closed:
            self._sync_endpoints()
            for i in range(len(self.endpoints)):
                (self._pools[i] if i < len(self._pools) else self._joined_pool(i)).drain()

    def _patroni_start(self) -> None:
        if self._patroni_watch is not None:
            self._patroni_watch.start()

    def _patroni_stop(self) -> None:
        if self._patroni_watch is not None:
            self._patroni_watch.stop()

    def _patroni_close(self) -> None:
        w, self._patroni_watch = self._patroni_watch, None
        if w is not None:
            w.close()

    def _patroni_status(self) -> Optional[Dict[str, Any]]:
        """What the core's watch saw (None when not made by from_patroni): running,
        fetches, failures, consecutive_failures, last_ok_age (seconds, None before the
        first answer), last_error, cluster (the last answer, as fetch_cluster; None
        before one), joined and gone (member names Patroni lists that are no endpoint,
        endpoint ids Patroni no longer lists), interval, follow (None with a
        backend_factory: the endpoints that were added, removed, returned, and the
        refusals with the last one's reason; a new refusal is logged here as a warning)."""
        if self._patroni_watch is None:
            return None
        st = self._patroni_watch.status()
        f = st["follow"]
        if f is not None and f["refusals"] > self._patroni_refusals_logged:
            self._patroni_refusals_logged = f["refusals"]
            log.warning("Patroni: %s (%d refusal(s) so far)", f["last_refusal"], f["refusals"])
        return st

    def patroni_cluster(self, timeout: float = DEFAULT_TIMEOUT) -> Dict[str, Any]:
        """Patroni's current view (fetch_cluster) from the URLs this manager was made from.
        ConfigurationError when it was not made by from_patroni()."""
        if not self.patroni_urls:
            raise errors.ConfigurationError("this failover manager was not made by from_patroni()")
        return fetch_cluster(self.patroni_urls, timeout)
