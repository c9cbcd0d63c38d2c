"""``noodlecore-db status`` and ``watch``: probe endpoints and show what was found.

Owns: ``ID=DSN`` endpoint arguments, the probe of one endpoint
(probe_endpoint: up or down, role, latency, replication lag, as measured by
the C core's prober, the monitor's), probing several in parallel
(Prober), and the status as a table, as JSON and as log-like lines.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sqlite3
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from ..config import redact_dsn
from ..connection_pool import DatabaseConnectionPool
from ..errors import Error
from .output import (EXIT_FAIL, EXIT_OK, PROG, Style, UsageError, fmt_bytes, fmt_ms, is_tty, print_error,
                     print_json, render_table)

_LIBPQ_KEYS = {"host", "hostaddr", "port", "dbname", "user", "password", "passfile", "connect_timeout",
               "sslmode", "application_name", "options", "service", "target_session_attrs", "sslrootcert",
               "sslcert", "sslkey", "client_encoding", "keepalives", "gssencmode", "krbsrvname"}
_ID = re.compile(r"^([A-Za-z0-9_.:-]+)=(.+)$", re.S)


def parse_endpoint(value: str, n: int) -> tuple:
    """``ID=DSN`` (or a bare DSN, named ep<n>) -> (id, dsn)."""
    value = value.strip()
    m = _ID.match(value)
    if m and m.group(1).lower() not in _LIBPQ_KEYS:
        eid, dsn = m.group(1), m.group(2).strip()
        if "://" in eid:
            raise UsageError(f"--endpoint {redact_dsn(value)!r} is not ID=DSN")
        return eid, dsn
    if "://" in value or "=" in value:
        return f"ep{n}", value
    raise UsageError(f"--endpoint {redact_dsn(value)!r} is not ID=DSN (e.g. primary=postgresql://host/db)")


class Endpoint:
    """One probed endpoint; its pool's prober keeps its connection between probes."""

    def __init__(self, eid: str, dsn: str, timeout: float):
        self.id = eid
        self.dsn = dsn
        self.timeout = timeout
        self.shown = redact_dsn(dsn)
        self.pool: Optional[DatabaseConnectionPool] = None
        self.sqlite_path: Optional[str] = None
        low = dsn.lower()
        if low.startswith("sqlite:"):
            path = dsn[len("sqlite:///"):]
            self.sqlite_path = None if path == ":memory:" else path
        # raises ConfigurationError (2013) for a malformed DSN: bad input, before any probe
        self.pool = DatabaseConnectionPool(dsn, max_connections=1, retry_attempts=1, connect_timeout=timeout,
                                           timeout=timeout, validation_timeout=timeout, query_timeout=timeout,
                                           ping_after_idle=0.0)

    def probe(self) -> dict:
        return probe_endpoint(self)

    def down(self, error: Optional[str] = None) -> dict:
        """A result row for this endpoint saying it is down (the fields every row has)."""
        return {"id": self.id, "dsn": self.shown, "backend": self.pool.backend_kind, "state": "down",
                "up": False, "role": None, "writable": None, "latency_ms": None, "connect_ms": None,
                "replication": None, "error": error, "error_code": None}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(timeout=0)


def probe_endpoint(ep: Endpoint) -> dict:
    """One probe of one endpoint with the C core's prober, the one the failover
    monitor uses (its probe connection is kept between rounds): connect time,
    the probe's round trip, and for PostgreSQL the role (pg_is_in_recovery,
    read-only), the version and the replication lag (a standby's WAL received
    but not replayed and the age of its last replayed transaction; a
    primary's pg_stat_replication).  Every figure status and watch show comes
    from here; a failed probe makes the row "down"."""
    r: Dict[str, Any] = ep.down()
    if ep.sqlite_path is not None and not os.path.exists(ep.sqlite_path):
        # never create a database file by probing it
        r["error"] = f"no such database file: {ep.sqlite_path}"
        return r
    try:
        p = ep.pool._probe(ep.timeout)
    except Error as exc:   # the pool was shut down under us
        r["error"], r["error_code"] = " ".join(str(exc.message).split()), exc.error_code
        return r
    if not p["ok"]:
        r["error"], r["error_code"] = p["error"], p["error_code"]
        return r
    r.update(state="up", up=True, connect_ms=round(p["connect_time"] * 1e3, 3),
             latency_ms=round(p["query_time"] * 1e3, 3))
    if ep.pool.backend_kind != "postgresql":
        r.update(role="embedded", writable=True, version=sqlite3.sqlite_version)
        return r
    standby = p["in_recovery"]
    r.update(role="standby" if standby else "primary", writable=p["role"] == "primary",
             version=p["server_version"])
    if standby:
        r["replication"] = {"lag_bytes": p["replay_lag_bytes"], "lag_seconds": p["replay_delay"],
                            "receiver": p["receiver_status"], "upstream": p["upstream"]}
    else:
        reps = p["standbys"]
        lags = [x["lag_bytes"] for x in reps if x["lag_bytes"] is not None]
        secs = [x["lag_seconds"] for x in reps if x["lag_seconds"] is not None]
        r["replication"] = {"standbys": reps, "lag_bytes": max(lags) if lags else None,
                            "lag_seconds": max(secs) if secs else (0.0 if reps else None)}
    return r


class Prober:
    """The endpoints given on the command line, probed in parallel by probe_all()."""

    def __init__(self, specs: List[str], timeout: float):
        if not specs:
            raise UsageError("give at least one --endpoint ID=DSN")
        if timeout <= 0:
            raise UsageError("--timeout must be above 0")
        self.endpoints: List[Endpoint] = []
        seen = set()
        try:
            for n, spec in enumerate(specs, 1):
                eid, dsn = parse_endpoint(spec, n)
                if eid in seen:
                    raise UsageError(f"endpoint id {eid!r} given twice")
                seen.add(eid)
                self.endpoints.append(Endpoint(eid, dsn, timeout))
        except BaseException:
            self.close()
            raise
        self.timeout = timeout

    def probe_all(self) -> List[dict]:
        results: List[Optional[dict]] = [None] * len(self.endpoints)

        def run(i: int, e: Endpoint) -> None:
            results[i] = e.probe()

        threads = [threading.Thread(target=run, args=(i, e), daemon=True) for i, e in enumerate(self.endpoints)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.timeout * 2 + 2
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for i, e in enumerate(self.endpoints):
            if results[i] is None:
                results[i] = e.down(f"no answer within {self.timeout * 2 + 2:g} s")
        return results  # type: ignore[return-value]

    def close(self) -> None:
        for e in self.endpoints:
            e.close()


def probe_once(eid: str, dsn: str, timeout: float) -> dict:
    e = Endpoint(eid, dsn, timeout)
    try:
        return e.probe()
    finally:
        e.close()


def _lag_text(r: dict) -> str:
    rep = r.get("replication")
    if not rep:
        return "-"
    if r.get("role") == "standby":
        secs = rep.get("lag_seconds")
        s = f"{fmt_bytes(rep.get('lag_bytes'))} to replay"
        if secs is not None:
            s += f", last replayed xact {secs:.1f} s ago"
        if rep.get("receiver") != "streaming":
            s += f" (wal receiver: {rep.get('receiver') or 'not running'})"
        return s
    n = len(rep.get("standbys") or [])
    if not n:
        return "no standbys"
    secs = rep.get("lag_seconds")
    return (f"{n} standby{'s' if n > 1 else ''}, max {fmt_bytes(rep.get('lag_bytes'))}"
            + (f" / {secs:.2f} s" if secs is not None else ""))


def _status_rows(results: List[dict], style: Style, detail_width: Optional[int] = None) -> List[dict]:
    rows = []
    for r in results:
        up = r["up"]
        rows.append({
            "endpoint": r["id"],
            "state": style("up", "green", "bold") if up else style("down", "red", "bold"),
            "role": (style(r["role"], "cyan") if r["role"] == "primary" else r["role"]) if r["role"] else "-",
            "latency": fmt_ms(r["latency_ms"] / 1e3) if r["latency_ms"] is not None else "-",
            "replication lag": _lag_text(r) if up else "-",
            "detail": (f"PostgreSQL {r.get('version')}" if r["backend"] == "postgresql" else
                       f"SQLite {r.get('version')}") if up else
                      style(_clip((f"[{r['error_code']}] " if r["error_code"] else "") + str(r["error"]),
                                  detail_width), "red"),
        })
    return rows


def _clip(text: str, width: Optional[int]) -> str:
    return text if width is None or len(text) <= width else text[:max(1, width - 3)] + "..."


def status_table(results: List[dict], style: Style) -> str:
    width = None
    if is_tty():       # on a terminal, keep each endpoint on one line
        import shutil
        width = max(30, shutil.get_terminal_size().columns - 75)
    return render_table(_status_rows(results, style, width), style)


def _status_json(results: List[dict]) -> dict:
    return {"checked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "all_up": all(r["up"] for r in results), "endpoints": results}


def _patroni_specs(args: argparse.Namespace) -> tuple:
    """--patroni URL: Patroni's members as ID=DSN endpoint specs (the leader first, as
    DatabaseFailoverManager.from_patroni orders them), and Patroni's view."""
    from .. import patroni
    if args.timeout <= 0:
        raise UsageError("--timeout must be above 0")
    cluster = patroni.fetch_cluster(args.patroni, args.timeout)
    eps = patroni.endpoints_from_cluster(cluster, args.dsn or "")
    return [f"{e.id}={e.connection_string}" for e in eps], cluster


def cmd_status(args: argparse.Namespace) -> int:
    specs, cluster = list(args.endpoint or []), None
    if getattr(args, "patroni", None):
        more, cluster = _patroni_specs(args)
        specs += more
    prober = Prober(specs, args.timeout)
    try:
        results = prober.probe_all()
    finally:
        prober.close()
    if cluster is not None:
        # what Patroni says beside what the probe found: they differ for a loop or so
        # around a switchover, and the manager trusts the probe for writes
        by_name = {m["name"]: m for m in cluster["members"]}
        for r in results:
            m = by_name.get(r["id"])
            r["patroni"] = None if m is None else {
                "role": m["role"], "state": m["state"], "timeline": m["timeline"], "lag_bytes": m["routing_lag"]}
    if args.json:
        doc = _status_json(results)
        if cluster is not None:
            doc["patroni"] = {"scope": cluster["scope"], "source": cluster["source"]}
        print_json(doc)
    else:
        if cluster is not None:
            print(f"Patroni cluster {cluster['scope']!r} (from {cluster['source']}): "
                  + ", ".join(f"{m['name']} {m['role']}/{m['state']}"
                              + (f" lag {fmt_bytes(m['routing_lag'])}" if m["routing_lag"] else "")
                              for m in cluster["members"]))
        print(status_table(results, Style.for_stdout()))
    down = [r["id"] for r in results if not r["up"]]
    if down:
        if not args.json:
            print_error(f"{len(down)} of {len(results)} endpoint(s) down: {', '.join(down)}")
        return EXIT_FAIL
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be above 0")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    prober = Prober(args.endpoint or [], args.timeout)
    style = Style.for_stdout(args.json)
    live = is_tty() and not args.json
    rc = EXIT_OK
    n = 0
    try:
        while True:
            n += 1
            started = time.monotonic()
            results = prober.probe_all()
            rc = EXIT_OK if all(r["up"] for r in results) else EXIT_FAIL
            now = datetime.datetime.now().astimezone()
            if args.json:
                doc = _status_json(results)
                doc["round"] = n
                print_json(doc)
            elif live:
                sys.stdout.write("\x1b[H\x1b[2J")
                up = sum(r["up"] for r in results)
                head = (f"{PROG} watch  {now:%H:%M:%S}  every {args.interval:g} s  round {n}"
                        f"{'/' + str(args.count) if args.count else ''}  ")
                summary = style(f"{up}/{len(results)} up", "green" if up == len(results) else "red", "bold")
                sys.stdout.write(style(head, "bold") + summary + "   (Ctrl-C to stop)\n\n")
                sys.stdout.write(status_table(results, style) + "\n")
                sys.stdout.flush()
            else:
                stamp = now.isoformat(timespec="seconds")
                for r in results:
                    lat = f"{r['latency_ms']:.2f}ms" if r["latency_ms"] is not None else "-"
                    extra = _lag_text(r) if r["up"] else (
                        (f"[{r['error_code']}] " if r["error_code"] else "") + str(r["error"]))
                    print(f"{stamp} round={n} endpoint={r['id']} state={r['state']} role={r['role'] or '-'} "
                          f"latency={lat} {extra}", flush=True)
            if args.count and n >= args.count:
                return rc
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        if live:
            sys.stdout.write("\n")
        return rc
    finally:
        prober.close()


