"""Patroni as a topology source: the endpoints of a DatabaseFailoverManager from
Patroni's ``GET /cluster`` (read by the C core's REST client, ``_native.patroni_cluster``).

Thin on purpose: the request, the deadline, the fallback to the next URL, the JSON
and which member leads are the core's; here only the argument checks and the shape
of DatabaseEndpoint.  Patroni's view is a hint, never trusted for writes: each
endpoint is still probed by the monitor (its live role decides where writes go).
"""

from __future__ import annotations

import urllib.parse
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .. import _native
from . import errors

__all__ = ["PatroniUrls", "patroni_urls", "fetch_cluster", "member_dsn", "endpoints_from_cluster", "describe",
           "PatroniSource"]

PatroniUrls = Union[str, Sequence[str]]

DEFAULT_TIMEOUT = 5.0

log = logging.getLogger("noodlecore.database.failover")


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
    """dsn pointed at host:port.  libpq lets a later host/port override the earlier
    one in both forms, so nothing of the DSN is parsed here: the URI form gets them as
    query parameters, the key=value form appended."""
    if "://" in dsn:
        sep = "&" if "?" in dsn else "?"
        return "%s%shost=%s&port=%d" % (dsn, sep, urllib.parse.quote(host, safe=""), port)
    quoted = host.replace("\\", "\\\\").replace("'", "\\'")
    return "%s host='%s' port=%d" % (dsn, quoted, port) if dsn.strip() else "host='%s' port=%d" % (quoted, port)


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

    @classmethod
    def from_patroni(cls, urls: PatroniUrls, dsn: str = "", config: Any = None, timeout: float = DEFAULT_TIMEOUT,
                     backend_factory: Optional[Callable[[str], Any]] = None) -> Any:
        """A manager over the members Patroni lists (``GET /cluster`` from the first of
        ``urls`` that answers within ``timeout``): the leader first (priority 1), then
        the others in Patroni's order, each at its host and port with the rest of ``dsn``
        (user, database, password, options; libpq's defaults when empty).  Patroni's view
        only orders the endpoints: the monitor's own probes decide where writes go (and
        which standbys serve reads), so a Patroni API that becomes unreachable later
        changes nothing.  Raises OperationalError 4025 when no URL answers, 4028 when no
        member has an address, ConfigurationError 4027 for a bad URL."""
        url_list = patroni_urls(urls)
        if not isinstance(dsn, str):
            raise errors.ConfigurationError(f"dsn must be a str, not {type(dsn).__name__}")
        cluster = fetch_cluster(url_list, timeout)
        m = cls(endpoints_from_cluster(cluster, dsn), backend_factory=backend_factory, config=config)
        m.patroni_urls = url_list
        log.info("failover manager from Patroni %s (scope %r): %s", cluster["source"], cluster["scope"],
                 ", ".join(f"{e.id} ({e.metadata['patroni']['role']})" for e in m.endpoints))
        return m

    def patroni_cluster(self, timeout: float = DEFAULT_TIMEOUT) -> Dict[str, Any]:
        """Patroni's current view (fetch_cluster) from the URLs this manager was made from.
        ConfigurationError when it was not made by from_patroni()."""
        if not self.patroni_urls:
            raise errors.ConfigurationError("this failover manager was not made by from_patroni()")
        return fetch_cluster(self.patroni_urls, timeout)
