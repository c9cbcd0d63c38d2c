#!/usr/bin/env python3
"""noodlecore soak: an hour of mixed load with faults injected every few seconds.

    python3 bench/soak.py [--minutes 60] [--threads 6] [--fault-interval 3]
                          [--seed 1] [--work DIR] [--json FILE]

Run it with a Python in which noodlecore is installed (``pip install .``);
the report names the module it loaded and the commit of this checkout.  Not
part of the test command: it takes an hour.

What it sets up (through noodlecore.testing; the servers are removed at the
end, also after an error or Ctrl-C):

* a PostgreSQL 15 primary with a streaming standby, and the test proxy
  (TcpProxy) in front of the primary;
* a DatabaseConnectionPool through the proxy, a DatabaseManager straight to
  the primary, a DatabaseFailoverManager over primary + standby (AUTOMATIC,
  monitoring on), and a DatabaseConnectionPool on a SQLite file;
* --threads worker threads, each borrowing per request from one of them at
  random: queries, transactions, statements past their deadline, the
  manager's insert/select/transaction, failover borrows (bench/soak_load.py);
* a fault every --fault-interval seconds: pg_terminate_backend of a random
  half of the sessions, the proxy's resets and blackholes (0.5-2 s), the
  SQLite database locked by another writer, the server's statement_timeout
  set to 20 ms for a second, and every 15th fault a restart of the primary.

What it prints: RSS at the start (after setup and a warm-up) and the end and
every minute in between, operations and errors by type/error_code (and the
tracebacks of any exception the faults do not explain), and leaks: each
pool's connections in use once every worker has joined (must be 0), the
sessions each pool holds on the server against its own count, and the
sessions left on the server after shutdown (must be 0).  Exit status 1 when
a leak or an unexplained exception was seen.
"""

from __future__ import annotations

import argparse
import logging
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import noodlecore
from noodlecore.database import (
    DatabaseConnectionPool, DatabaseEndpoint, DatabaseFailoverManager, DatabaseManager, FailoverConfig,
    FailoverMode,
)
from noodlecore.testing import PgCluster, TcpProxy, sweep_stale

from soak_load import APP_DB, APP_FO, APP_POOL, Faults, Targets, Tally, worker

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class LogCount(logging.Handler):
    """The library's log records, counted by level and logger; the text goes to a file in the work dir."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def emit(self, record):
        key = "%s %s" % (record.levelname, record.name)
        self.counts[key] = self.counts.get(key, 0) + 1


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def commit():
    r = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def server_sessions(node):
    """Client sessions on the server by application_name (psql's own excluded)."""
    rows = node.sql("SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1")
    return {r[0]: int(r[1]) for r in rows}


def pool_line(name, st):
    return ("%-14s total %2d  in use %2d  idle %2d  opened %6d  closed %6d  replaced %5d  connect failures %5d  "
            "validation failures %5d  acquire timeouts %4d  acquires %7d  queries %7d  errors %6d"
            % (name, st.total_connections, st.active_connections, st.idle_connections, st.connections_opened,
               st.connections_closed, st.connections_replaced, st.connect_failures, st.validation_failures,
               st.acquire_timeouts, st.acquires, st.query_count, st.error_count))


def setup(cluster, work, args):
    primary = cluster.primary("soak-a", settings={"max_connections": 100})
    standby = cluster.standby(primary, "soak-b")
    proxy = TcpProxy(primary.host, primary.port).start()
    primary.sql("CREATE TABLE soak_t (id bigserial PRIMARY KEY, worker int, v text)")
    pool_opts = dict(timeout=3, connect_timeout=2, validation_interval=2, validation_timeout=1,
                     ping_after_idle=0.5, query_timeout=3, retry_attempts=2, retry_backoff=0.05)
    via_proxy = "postgresql://%s@%s:%d/%s?application_name=%s" % (
        primary.user, proxy.host, proxy.port, primary.dbname, APP_POOL)
    pool = DatabaseConnectionPool(via_proxy, max_connections=6, min_connections=2, **pool_opts)
    sqlite_path = os.path.join(work, "soak.db")
    sqlite_pool = DatabaseConnectionPool("sqlite:///" + sqlite_path, max_connections=4, busy_timeout=2,
                                         timeout=3, query_timeout=3)
    with sqlite_pool.get_connection() as conn:
        conn.execute_query("PRAGMA journal_mode=WAL")
        conn.execute_query("CREATE TABLE soak_t (id INTEGER PRIMARY KEY, worker INTEGER, v)")
    dbm = DatabaseManager(config=primary.dsn(application_name=APP_DB), max_connections=4, **pool_opts)
    dbm.connect()
    endpoints = [
        DatabaseEndpoint(id="a", name="primary", connection_string=primary.dsn(application_name=APP_FO),
                         is_primary=True),
        DatabaseEndpoint(id="b", name="standby", connection_string=standby.dsn(application_name=APP_FO),
                         priority=2),
    ]
    fo_config = FailoverConfig(mode=FailoverMode.AUTOMATIC, health_check_interval=0.5, health_check_timeout=1,
                               failover_timeout=3, hold_down=2, recovery_check_interval=1,
                               pool_max_connections=3, pool_timeout=3, pool_options=dict(pool_opts))
    manager = DatabaseFailoverManager(endpoints, config=fo_config)
    manager.start_monitoring()
    return primary, standby, proxy, Targets(pool, sqlite_pool, dbm, manager, args.seed), sqlite_path


def run(args):
    work = args.work or tempfile.mkdtemp(prefix="noodlecore-soak-")
    os.makedirs(work, exist_ok=True)
    log("noodlecore %s from %s; checkout commit %s; %s threads, a fault every %s s, %s minutes"
        % (noodlecore.__version__, os.path.dirname(noodlecore.__file__), commit(),
           args.threads, args.fault_interval, args.minutes))
    sweep_stale()
    logging.basicConfig(filename=os.path.join(work, "soak.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    counter = LogCount()
    logging.getLogger("noodlecore").addHandler(counter)
    report = {"minutes": args.minutes, "threads": args.threads, "fault_interval": args.fault_interval,
              "seed": args.seed, "commit": commit(), "noodlecore": os.path.dirname(noodlecore.__file__)}
    tally = Tally()
    stop = threading.Event()
    with PgCluster() as cluster:
        primary, standby, proxy, t, sqlite_path = setup(cluster, work, args)
        try:
            threads = [threading.Thread(target=worker, args=(t, tally, stop, i), name="soak-worker-%d" % i,
                                        daemon=True) for i in range(args.threads)]
            for th in threads:
                th.start()
            stop.wait(5)                       # warm-up: every pool has its connections
            gc.collect()
            if args.tracemalloc:
                import tracemalloc
                tracemalloc.start(8)
                snap0 = tracemalloc.take_snapshot()
            rss0 = rss_mb()
            report["rss_start_mb"] = round(rss0, 1)
            log("RSS at the start (after setup and a 5 s warm-up): %.1f MB; threads alive: %d"
                % (rss0, threading.active_count()))
            faults = Faults(primary, proxy, sqlite_path, tally, args.fault_interval,
                            random.Random(args.seed), log)
            fth = threading.Thread(target=faults.run, args=(stop,), name="soak-faults", daemon=True)
            fth.start()
            end = time.monotonic() + args.minutes * 60
            rss_trail = []
            while not stop.wait(min(60, max(0.0, end - time.monotonic()))):
                if time.monotonic() >= end:
                    break
                rss_trail.append(round(rss_mb(), 1))
                log("RSS %.1f MB; ops %d, errors %d, faults %d"
                    % (rss_trail[-1], sum(v for k, v in tally.ops.items() if "failed" not in k),
                       sum(tally.errors.values()), sum(tally.faults.values())))
            stop.set()
            fth.join(30)
            proxy.clear()
            t0 = time.monotonic()
            for th in threads:
                th.join(30)
            hung = [th.name for th in threads if th.is_alive()] + (["soak-faults"] if fth.is_alive() else [])
            report["workers_join_s"] = round(time.monotonic() - t0, 2)
            report["workers_hung"] = hung
            if not primary.is_running():
                primary.start()
            gc.collect()
            report["rss_trail_mb"] = rss_trail
            if args.tracemalloc:
                # What Python objects grew (memory of the C core is not seen here).
                stats = tracemalloc.take_snapshot().compare_to(snap0, "traceback")
                report["tracemalloc_growth"] = ["%+.1f kB in %d blocks at %s" % (
                    st.size_diff / 1024, st.count_diff, " < ".join(
                        "%s:%d" % (f.filename.split("/")[-1], f.lineno) for f in list(st.traceback)[-4:][::-1]))
                    for st in stats[:10]]
                tracemalloc.stop()
            report["rss_end_mb"] = round(rss_mb(), 1)
            report.update(leaks(t, primary, standby))
        finally:
            stop.set()
            shutdown_all(t, proxy)
        report["sessions_after_shutdown"] = {k: v for k, v in server_sessions(primary).items()
                                             if k.startswith("soak-")}
        report["threads_after_shutdown"] = [th.name for th in threading.enumerate()
                                            if th is not threading.main_thread()]
    report["ops"] = dict(tally.ops)
    report["errors"] = dict(tally.errors)
    report["error_samples"] = {k: c.most_common(4) for k, c in tally.samples.items()}
    report["faults"] = dict(tally.faults)
    report["log_records"] = counter.counts
    report["unexpected"] = tally.unexpected_count
    report["unexpected_tracebacks"] = tally.unexpected
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log("the library's log: %s" % os.path.join(work, "soak.log"))
    return report


def leaks(t, primary, standby):
    """In use after every worker joined, and what the server holds against each pool's own count."""
    out = {}
    stats = {"pool (proxy)": t.pool.get_stats(), "sqlite pool": t.sqlite_pool.get_stats(),
             "DatabaseManager": t.dbm.get_pool_stats(),
             "failover a": t.manager.get_pool("a").get_stats(),
             "failover b": t.manager.get_pool("b").get_stats()}
    out["pool_stats_after_join"] = {k: pool_line(k, st) for k, st in stats.items()}
    out["in_use_after_join"] = {k: st.active_connections for k, st in stats.items()}
    # The janitor replaces dead connections on its own schedule: wait (bounded) for the
    # server's sessions and the pools' counts to settle before comparing them.
    deadline = time.monotonic() + 10
    while True:
        on_a, on_b = server_sessions(primary), server_sessions(standby)
        # The failover monitor's prober keeps one connection of its own per endpoint.
        own = {APP_POOL: t.pool.get_stats().total_connections,
               APP_DB: t.dbm.get_pool_stats().total_connections,
               APP_FO: t.manager.get_pool("a").get_stats().total_connections + 1}
        server = {APP_POOL: on_a.get(APP_POOL, 0), APP_DB: on_a.get(APP_DB, 0), APP_FO: on_a.get(APP_FO, 0)}
        if all(server[k] <= own[k] for k in own) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out["server_sessions_vs_pool"] = {k: {"server": server[k], "pool": own[k]} for k in own}
    out["standby_sessions"] = {"server": on_b.get(APP_FO, 0),
                               "pool": t.manager.get_pool("b").get_stats().total_connections + 1}
    return out


def shutdown_all(t, proxy):
    for what, fn in (("pool", lambda: t.pool.shutdown(timeout=5)),
                     ("sqlite pool", lambda: t.sqlite_pool.shutdown(timeout=5)),
                     ("DatabaseManager", t.dbm.close), ("failover manager", t.manager.shutdown),
                     ("proxy", proxy.close)):
        try:
            fn()
        except Exception as exc:
            log("shutting down %s: %s: %s" % (what, type(exc).__name__, exc))


def render(r):
    lines = ["", "== soak report: %s minutes, %d threads, a fault every %s s, commit %s"
             % (r["minutes"], r["threads"], r["fault_interval"], r["commit"]),
             "noodlecore from %s" % r["noodlecore"],
             "RSS: start %.1f MB, end %.1f MB (%+.1f MB); per minute: %s"
             % (r["rss_start_mb"], r["rss_end_mb"], r["rss_end_mb"] - r["rss_start_mb"], r["rss_trail_mb"]),
             "workers joined in %s s; hung: %s" % (r["workers_join_s"], r["workers_hung"] or "none"),
             "", "faults injected:"]
    lines += ["  %6d  %s" % (v, k) for k, v in sorted(r["faults"].items(), key=lambda kv: -kv[1])]
    lines += ["", "operations (succeeded / failed):"]
    lines += ["  %8d  %s" % (v, k) for k, v in sorted(r["ops"].items())]
    lines += ["", "errors by type and error_code (sqlstate):"]
    for k, v in sorted(r["errors"].items(), key=lambda kv: -kv[1]):
        lines.append("  %8d  %s; by step and message:" % (v, k))
        lines += ["  %16d  %s" % (n, m) for m, n in r["error_samples"].get(k, [])]
    if r.get("tracemalloc_growth"):
        lines += ["", "tracemalloc: the largest growths of Python memory since the start:"]
        lines += ["  " + g for g in r["tracemalloc_growth"]]
    lines += ["", "the library's log records (by level and logger):"]
    lines += ["  %8d  %s" % (v, k) for k, v in sorted(r["log_records"].items())]
    lines += ["", "unexplained exceptions (not OperationalError): %d" % r["unexpected"]]
    lines += ["  " + tb.replace("\n", "\n  ") for tb in r["unexpected_tracebacks"][:5]]
    lines += ["", "leaks:", "  pool stats after every worker joined:"]
    lines += ["    " + v for v in r["pool_stats_after_join"].values()]
    lines += ["  connections in use after join: %s" % r["in_use_after_join"],
              "  sessions on the primary vs the pool's own count (failover: + the prober's one): %s"
              % r["server_sessions_vs_pool"],
              "  sessions on the standby vs failover pool b + the prober's one: %s" % r["standby_sessions"],
              "  sessions left on the primary after shutdown: %s" % (r["sessions_after_shutdown"] or "none"),
              "  threads left after shutdown: %s" % (r["threads_after_shutdown"] or "none")]
    return "\n".join(lines)


def verdict(r):
    bad = []
    if any(r["in_use_after_join"].values()):
        bad.append("connections still in use after every worker joined")
    if any(v["server"] > v["pool"] for v in [*r["server_sessions_vs_pool"].values(), r["standby_sessions"]]):
        bad.append("more sessions on the server than the pool counts")
    if r["sessions_after_shutdown"]:
        bad.append("sessions left on the server after shutdown")
    if r["workers_hung"]:
        bad.append("workers did not finish")
    if r["unexpected"]:
        bad.append("unexplained exceptions")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--fault-interval", type=float, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", help="directory for the SQLite file (default: a temporary one, removed)")
    ap.add_argument("--json", help="also write the report as JSON here")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also show which Python allocations grew (slower; for an RSS that rises)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    r = run(args)
    print(render(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1, default=str)
    bad = verdict(r)
    print("\nverdict: %s" % ("; ".join(bad) if bad else "ok (no leak, no unexplained exception, no hang)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
