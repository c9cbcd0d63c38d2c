"""``noodlecore-db demo --postgres``: a real crash, promotion, rejoin and switchover.

Owns the demo's script on real servers: a throwaway primary a and streaming
standby b (built with noodlecore.testing, the harness noodlecore's own tests
use), load through a DatabaseFailoverManager, a SIGKILL of a, b promoted, a
rewound as b's standby, a switchover back to a, b rewound as a's standby, and
the report (rows kept, events, a final probe of both servers).  Everything is
removed at the end, also on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Dict, List, Optional

from ...testing import PgCluster, PgHarnessError, find_bindir, sweep_stale
from ..failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig
from .output import EXIT_FAIL, EXIT_OK, Style, fmt_ms, is_tty, print_error, print_json, render_table
from .status import probe_once, status_table
from .workload import (CREATE_SQL, TABLE, Display, Workload, event_dict, event_text, final_lines, find_problems,
                       manager_progress, print_problems, sleep_until, sum_stats, wait_until)

# The demo's directories, /dev/shm/noodlecore-demo-<pid>-XXXX; a later demo sweeps
# those of demos whose process is gone (e.g. after a SIGKILL).
DEMO_PREFIX = "noodlecore-demo-"
# Small servers: the demo needs a few connections per endpoint; DSM segments in the
# data dir rather than /dev/shm.
DEMO_SETTINGS = {
    "max_connections": 60,
    "max_wal_senders": 5,
    "wal_keep_size": "64MB",
    "shared_buffers": "16MB",
    "dynamic_shared_memory_type": "mmap",
}


def run_postgres_demo(args: argparse.Namespace, style: Style) -> int:
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    s = float(args.seconds)
    t_setup = time.monotonic()
    try:
        bindir = find_bindir()
        sweep_stale(prefix=DEMO_PREFIX)
        cluster = PgCluster(bindir=bindir, prefix=DEMO_PREFIX, base_settings=DEMO_SETTINGS)
    except PgHarnessError as exc:
        print_error(f"demo --postgres: {exc}")
        return EXIT_FAIL
    mgr = None
    display = None
    work = None
    try:
        say(style(f"noodlecore demo --postgres: {args.threads} worker threads, a pool of {args.pool_size} "
                  f"connections per endpoint, at least {s:g} s of load", "bold"))
        who = " as the postgres user" if os.geteuid() == 0 else ""
        say(f"  starting PostgreSQL ({bindir}){who}: primary a and streaming standby b, data in {cluster.root}")
        a = cluster.primary("a")
        version = a.scalar("SHOW server_version").split()[0]    # "15.18", without the packager's note
        a.sql(CREATE_SQL)
        b = cluster.standby(a, "b")
        setup = time.monotonic() - t_setup
        say(f"  ready in {setup:.1f} s: PostgreSQL {version}, a on port {a.port}, b on port {b.port}; "
            "nothing here is simulated")
        cfg = FailoverConfig(health_check_interval=0.1, health_check_timeout=1.0, max_failure_count=2,
                             failure_timeout=5, recovery_check_interval=1.0, hold_down=0.5,
                             failover_timeout=5, pool_max_connections=args.pool_size, pool_timeout=5,
                             pool_options={"connect_timeout": 1, "retry_attempts": 1})
        endpoints = [DatabaseEndpoint("a", "primary a", a.dsn(), priority=1, is_primary=True),
                     DatabaseEndpoint("b", "standby b", b.dsn(), priority=2)]
        mgr = DatabaseFailoverManager(endpoints, config=cfg)
        mgr.start_monitoring()
        ok = wait_until(lambda: {k: v["role"] for k, v in mgr.get_status()["endpoints"].items()}
                        == {"a": "primary", "b": "standby"}, 10)
        if not ok:
            raise PgHarnessError(f"the monitor did not see a as primary and b as standby: "
                                 f"{mgr.get_status()['endpoints']}")
        work = Workload(mgr.get_connection, args.threads)
        display = Display(live=is_tty() and not args.json, quiet=args.json, style=style, progress=lambda: "")
        refs: Dict[str, Optional[float]] = {"crash": None, "switchover": None}
        events: List[dict] = []

        def on_event(ev: Any) -> None:
            kind = ev.metadata.get("kind")
            ref_name = "switchover" if refs["switchover"] else "crash"
            d = event_dict(ev, display, refs[ref_name], ref_name)
            events.append(d)
            what = "the crash" if ref_name == "crash" else "the switchover began"
            when = f"{fmt_ms(d['seconds_after'])} after {what}" if d["seconds_after"] is not None else ""
            display.note(kind, event_text(ev, when, style), wall=ev.timestamp.timestamp(),
                         event_id=ev.event_id)
            display.say(f"             {style(ev.reason, 'dim')}")

        mgr.add_listener(on_event)
        display.start()
        t0 = time.monotonic()
        display.progress = manager_progress(mgr, work, t0, style)
        display.note("load", f"{args.threads} workers start (1 INSERT in 4, else a SELECT) on a")
        work.start()
        sleep_until(t0 + max(1.0, 0.25 * s))

        # 1. crash a, promote b
        pm = a.postmaster_pid()
        refs["crash"] = time.time()
        display.note("crash", f"CRASH: SIGKILL to a's postmaster (pid {pm}) and all its backends at once",
                     wall=refs["crash"], colour="red", simulated=False)
        a.crash()
        _promote(b, display)
        if not wait_until(lambda: mgr.current_endpoint == "b", 20):
            raise PgHarnessError(f"no failover to b within 20 s: {mgr.get_status()}")
        sleep_until(time.monotonic() + max(0.5, 0.15 * s))

        # 2. a rejoins as a standby of b
        _rejoin(cluster, a, b, display)
        wait_until(lambda: mgr.get_status()["endpoints"]["a"]["role"] == "standby", 10)
        sleep_until(time.monotonic() + max(0.5, 0.1 * s))

        # 3. switchover back: stop b cleanly, promote a; the monitor fails back
        a.wait_replayed(b)
        refs["switchover"] = time.time()
        display.note("switchover", "switchover back to a: stopping b (fast shutdown; a has replayed all of "
                     "its WAL)", wall=refs["switchover"], colour="yellow")
        b.stop("fast")
        _promote(a, display)
        if not wait_until(lambda: mgr.current_endpoint == "a" and mgr.current_state.value == "primary", 20):
            raise PgHarnessError(f"no failback to a within 20 s: {mgr.get_status()}")

        # 4. b rejoins as a standby of a: the cluster is as it began
        _rejoin(cluster, b, a, display)
        sleep_until(max(t0 + s, time.monotonic() + 0.5))
        work.stop()
        elapsed = time.monotonic() - t0
        mgr.get_events()
        time.sleep(0.05)
        display.close()
        status = mgr.get_status()
        per = {e.id: mgr.get_pool(e.id).get_stats() for e in mgr.endpoints}
        orders, total = a.sql(f"SELECT count(*), coalesce(sum(amount), 0)::float8 FROM {TABLE} "
                              f"WHERE id >= {work.base} AND id < {work.base + 2 ** 31}")[0]
        row = {"orders": int(orders), "total": float(total)}
        b.wait_replayed(a)
        on_b = int(b.scalar(f"SELECT count(*) FROM {TABLE}"))
        probes = [probe_once(eid, dsn, 3.0) for eid, dsn in (("a", a.dsn()), ("b", b.dsn()))]
    except PgHarnessError as exc:
        if display is not None:
            display.close()
        print_error(f"demo --postgres: {exc}")
        return EXIT_FAIL
    finally:
        if work is not None:
            work.stop()
        if display is not None:
            display.close()
        if mgr is not None:
            mgr.shutdown()
        cluster.close()
    stats = sum_stats(list(per.values()))
    per_d = {k: v.to_dict() for k, v in per.items()}
    failover = next((e for e in events if e["kind"] in ("failover", "resumed") and e["to_endpoint"] == "b"), None)
    failback = next((e for e in events if e["kind"] in ("failback", "failover", "resumed")
                     and e["to_endpoint"] == "a"), None)
    problems = find_problems(work, failover, failback)
    acked = work.total("inserts")
    result = {"orders": row["orders"], "total": round(float(row["total"]), 2), "acknowledged_inserts": acked,
              "rows_on_standby_b": on_b}
    if args.json:
        print_json({
            "mode": "postgres", "simulated": False, "server_version": version,
            "outage": {"simulated": False, "endpoint": "a",
                       "how": "SIGKILL of the primary's postmaster and backends; the standby promoted the way "
                              "pg_ctl promote does it (a promote file and SIGUSR1 to the postmaster); later a "
                              "switchover back (clean stop of b, a promoted)",
                       "start": display.at(refs["crash"])},
            "events": events, "failover": failover, "recovery": failback, "timeline": display.timeline,
            "stats": stats, "endpoints": per_d, "result": result, "failures": work.total("failures"),
            "retried": work.total("retried"), "errors_seen": work.last_errors, "threads": args.threads,
            "pool_size": args.pool_size, "seconds": elapsed, "setup_seconds": setup, "status": status,
            "final_probe": probes, "problems": problems,
        })
    else:
        print(render_table([{"orders": row["orders"], "total": result["total"], "acknowledged inserts": acked,
                             "rows on standby b": on_b}], style))
        if acked > row["orders"]:
            print(style(f"  {acked - row['orders']} acknowledged insert(s) were lost: asynchronous replication "
                        "loses what the crashed primary had not yet sent", "yellow"))
        for line in final_lines(stats, per_d, elapsed, work, style):
            print(line)
        print(status_table(probes, style))
        print_problems(problems, work, style)
    return EXIT_FAIL if problems else EXIT_OK




def _promote(node: Any, display: Display) -> None:
    display.note("promote", f"promoting {node.name}: a promote file and SIGUSR1 to the postmaster "
                 "(what pg_ctl promote does)", colour="cyan")
    t = time.monotonic()
    node.promote()
    display.note("promoted", f"{node.name} accepts writes (the promotion took {fmt_ms(time.monotonic() - t)})",
                 colour="cyan")


def _rejoin(cluster: PgCluster, old: Any, new: Any, display: Display) -> None:
    t = time.monotonic()
    cluster.rewind_as_standby(old, new)
    display.note("rejoin", f"{old.name} rejoined as a streaming standby of {new.name} (pg_rewind, "
                 f"{fmt_ms(time.monotonic() - t)})", colour="cyan")
