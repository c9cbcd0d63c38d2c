"""``noodlecore-db demo`` (the default): two SQLite endpoints and a simulated outage.

Owns: the simulated endpoint (SimServer: a SQLite file and a ``down`` flag;
SimBackend: the Python backend the pools use over it) and the demo's script:
load through a DatabaseFailoverManager, the outage of endpoint a by the flag,
the failover and failback the native monitor decides, the report.  Nothing
crashes here; ``demo --postgres`` (demo_postgres) does it with real servers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import tempfile
import time
from typing import Any, Dict, List, Optional

from ... import _native
from ..failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig
from .output import EXIT_FAIL, EXIT_OK, Style, fmt_ms, is_tty, print_json, render_table
from .workload import (CREATE_SQL, TABLE, Display, Workload, event_dict, event_text, final_lines, find_problems,
                       manager_progress, print_problems, sleep_until, sum_stats, wait_until)


class SimServer:
    """One simulated endpoint: a SQLite file and a ``down`` flag.  While
    down it refuses new connections and fails health checks (the native
    monitor's probes and the pool's checks of idle connections); a
    statement on a session already handed to a worker still completes."""

    def __init__(self, eid: str, path: str):
        self.id = eid
        self.path = path
        self.down = False
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(CREATE_SQL)
            db.commit()

    def factory(self, connection_string: str = "") -> "SimBackend":
        return SimBackend(self)


class SimBackend:
    """A Python backend (see DatabaseConnectionPool) over sqlite3."""

    def __init__(self, server: SimServer):
        if server.down:
            raise ConnectionRefusedError(f"endpoint {server.id}: connection refused (simulated outage)")
        self.server = server
        self.db = sqlite3.connect(server.path, timeout=10, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA synchronous=OFF")

    def execute_query(self, sql: str, params: Any = None) -> Any:
        if sql == "SELECT 1" and params == {} and self.server.down:
            # the health check of the pool and of the native monitor
            raise ConnectionError(f"endpoint {self.server.id}: no answer (simulated outage)")
        values: Any = ()
        if params is not None:
            # The pool's own placeholder rewrite (the core's SQL lexer, as for a native SQLite
            # pool): %s and %(name)s become ?1..?n, %% becomes %; names[i] is slot i+1's name.
            sql, _style, _nslots, names = _native.translate(sql, _native.DIALECT_SQLITE)
            values = [params[n] for n in names] if names else list(params)
        cur = self.db.execute(sql, values)
        if cur.description:
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
        return cur.rowcount

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------
# the demo
# ---------------------------------------------------------------------------

def run_sqlite_demo(args: argparse.Namespace, style: Style) -> int:
    s = float(args.seconds)
    outage_at = max(0.15, 0.3 * s)
    outage_len = max(0.3, 0.25 * s)
    rci = min(1.5, max(0.25, 0.15 * s))
    say = (lambda *a: None) if args.json else print
    tmp = tempfile.TemporaryDirectory(prefix="noodlecore-demo-")
    try:
        servers = {eid: SimServer(eid, os.path.join(tmp.name, f"{eid}.db")) for eid in ("a", "b")}
        cfg = FailoverConfig(health_check_interval=0.1, health_check_timeout=1.0, max_failure_count=2,
                             failure_timeout=5, recovery_check_interval=rci, hold_down=min(0.5, rci),
                             failover_timeout=2, pool_max_connections=args.pool_size, pool_timeout=5,
                             pool_options={"ping_after_idle": 0.0})
        endpoints = [DatabaseEndpoint("a", "endpoint a (SQLite a.db)", "sim://a", priority=1, is_primary=True),
                     DatabaseEndpoint("b", "endpoint b (SQLite b.db)", "sim://b", priority=2)]
        say(style(f"noodlecore demo: {args.threads} worker threads, a pool of {args.pool_size} connections "
                  f"per endpoint, {s:g} s", "bold"))
        say(f"  endpoints: a (preferred) and b, two SQLite files in {tmp.name}, through "
            f"DatabaseFailoverManager (native health monitor every 0.1 s)")
        say("  " + style("the outage is SIMULATED", "yellow", "bold") + ": a flag makes endpoint a refuse "
            "connections and fail health checks (nothing crashes, no server is involved); the failover and "
            "the failback are real decisions of the native monitor.  `demo --postgres` does it with a real "
            "crash.")
        with DatabaseFailoverManager(endpoints, lambda cs: servers[cs[-1]].factory(cs), cfg) as mgr, \
                contextlib.ExitStack() as cleanup:
            work = Workload(mgr.get_connection, args.threads)
            display = Display(live=is_tty() and not args.json, quiet=args.json, style=style,
                              progress=lambda: "")
            # also on Ctrl-C or SIGTERM: workers stopped and the display closed before the manager
            cleanup.callback(display.close)
            cleanup.callback(work.stop)
            refs: Dict[str, Optional[float]] = {"down": None, "up": None}
            events: List[dict] = []

            def on_event(ev: Any) -> None:
                kind = ev.metadata.get("kind")
                ref_name = "outage_start" if kind != "failback" else "outage_end"
                d = event_dict(ev, display, refs["down" if ref_name == "outage_start" else "up"], ref_name)
                events.append(d)
                when = (f"{fmt_ms(d['seconds_after'])} after the outage began" if ref_name == "outage_start"
                        else f"{fmt_ms(d['seconds_after'])} after endpoint a came back")
                display.note(kind, event_text(ev, when, style), wall=ev.timestamp.timestamp(),
                             event_id=ev.event_id)
                display.say(f"             {style(ev.reason, 'dim')}")

            mgr.add_listener(on_event)
            mgr.start_monitoring()
            display.start()
            t0 = time.monotonic()
            display.progress = manager_progress(mgr, work, t0, style)
            display.note("load", f"{args.threads} workers start (1 INSERT in 4, else a SELECT)")
            work.start()

            def kinds() -> List[str]:
                return [e["kind"] for e in events]

            sleep_until(t0 + outage_at)
            refs["down"] = time.time()
            servers["a"].down = True
            display.note("outage_start", "OUTAGE (simulated): endpoint a stops accepting connections and "
                         "answering health checks", wall=refs["down"], colour="red", simulated=True)
            sleep_until(t0 + outage_at + outage_len)
            # a slow machine: keep a down until the monitor has failed over
            wait_until(lambda: "failover" in kinds(), 10)
            refs["up"] = time.time()
            servers["a"].down = False
            display.note("outage_end", "endpoint a is back (simulated): accepting connections again",
                         wall=refs["up"], colour="green", simulated=True)
            sleep_until(t0 + s)
            wait_until(lambda: "failback" in kinds(), 10)
            time.sleep(0.1)
            work.stop()
            elapsed = time.monotonic() - t0
            mgr.get_events()     # deliver anything pending to the listener
            time.sleep(0.05)
            display.close()
            status = mgr.get_status()
            per = {e.id: mgr.get_pool(e.id).get_stats() for e in mgr.endpoints}
        by_ep = {}
        for eid, srv in servers.items():
            with contextlib.closing(sqlite3.connect(srv.path)) as db:
                n, total = db.execute(f"SELECT count(*), coalesce(sum(amount), 0) FROM {TABLE}").fetchone()
            by_ep[eid] = {"orders": n, "total": round(float(total), 2)}
    finally:
        tmp.cleanup()
    stats = sum_stats(list(per.values()))
    per_d = {k: v.to_dict() for k, v in per.items()}
    failover = next((e for e in events if e["kind"] == "failover"), None)
    failback = next((e for e in events if e["kind"] == "failback"), None)
    problems = find_problems(work, failover, failback)
    result = {"orders": sum(v["orders"] for v in by_ep.values()),
              "total": round(sum(v["total"] for v in by_ep.values()), 2)}
    if args.json:
        print_json({
            "mode": "sqlite", "simulated": True,
            "outage": {"simulated": True, "endpoint": "a",
                       "how": "a flag in the demo's SQLite backend: endpoint a refuses new connections and "
                              "fails health checks (the monitor's probes, the pool's checks of idle "
                              "connections); a statement already running on a borrowed session completes; "
                              "nothing crashes",
                       "start": display.at(refs["down"]), "end": display.at(refs["up"])},
            "events": events, "failover": failover, "recovery": failback, "timeline": display.timeline,
            "stats": stats, "endpoints": per_d, "result": result, "result_by_endpoint": by_ep,
            "failures": work.total("failures"), "retried": work.total("retried"),
            "errors_seen": work.last_errors, "threads": args.threads, "pool_size": args.pool_size,
            "seconds": elapsed, "status": status, "problems": problems,
        })
    else:
        print(render_table([{"endpoint": k, **v} for k, v in by_ep.items()], style))
        for line in final_lines(stats, per_d, elapsed, work, style):
            print(line)
        print_problems(problems, work, style)
    return EXIT_FAIL if problems else EXIT_OK


