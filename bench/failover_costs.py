"""bench/failover.py's costs (stage 2, inside bench/.venv): the probe cost
(process CPU with monitoring on vs off, cross-checked with the monitor
threads' schedstat and the servers' xact_commit) and the resident memory of N
pooled connections, measured in fresh processes for noodlecore and
psycopg_pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchlib import say
from failover_rounds import noodle_config, wait_until


# ---------------------------------------------------------------------------
# probe cost
# ---------------------------------------------------------------------------

def task_ids():
    try:
        return set(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        return set()


def thread_cpu_ns(tids):
    tot = 0
    for t in tids:
        try:
            with open("/proc/self/task/%d/schedstat" % t) as f:
                tot += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return tot


def xact_commits(node):
    return int(node.scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


def probe_cost(pri, sby, args):
    from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager
    nodes = [pri, sby]
    eps = [DatabaseEndpoint("a", pri.name, pri.dsn(), priority=1, is_primary=True),
           DatabaseEndpoint("b", sby.name, sby.dsn(), priority=2)]
    per = args.probe_seconds / args.runs
    interval = args.hc_interval
    # psql's own transactions land in xact_commit (flushed when psql exits): calibrate
    x0 = [xact_commits(n) for n in nodes]
    time.sleep(0.2)
    x1 = [xact_commits(n) for n in nodes]
    psql_cost = [b - a for a, b in zip(x0, x1)]
    m = DatabaseFailoverManager(eps, config=noodle_config(args, health_check_interval=interval))
    rounds = []
    on_total = 0.0
    try:
        # warm-up: open the probe connections so that no round pays for a connect
        w0 = time.monotonic()
        m.start_monitoring()
        wait_until(lambda: all(e["last_health_check"] for e in m.get_status()["endpoints"].values()),
                   10, "the first probes")
        time.sleep(0.2)
        m.stop_monitoring()
        on_total += time.monotonic() - w0
        time.sleep(0.2)
        for _ in range(args.runs):
            c0, t0 = time.process_time(), time.monotonic()
            time.sleep(per)
            c1, t1 = time.process_time(), time.monotonic()
            before = task_ids()
            c2, t2 = time.process_time(), time.monotonic()
            m.start_monitoring()
            mon = sorted(task_ids() - before)
            # nc_monitor_start starts one probe thread per endpoint, then the decision thread;
            # thread ids grow, so the highest is the decision thread
            probe_t, decide_t = mon[:-1], mon[-1:]
            n0, d0 = thread_cpu_ns(probe_t), thread_cpu_ns(decide_t)
            time.sleep(per)
            n1, d1 = thread_cpu_ns(probe_t), thread_cpu_ns(decide_t)
            c3, t3 = time.process_time(), time.monotonic()
            m.stop_monitoring()
            on_total += time.monotonic() - t2
            off_rate = (c1 - c0) / (t1 - t0)
            on_rate = (c3 - c2) / (t3 - t2)
            probes = len(eps) * (t3 - t2) / interval
            rounds.append({
                "off_cpu_ms_per_s": off_rate * 1e3, "on_cpu_ms_per_s": on_rate * 1e3,
                "probes": probes, "monitor_threads": len(mon),
                "us_per_probe": (on_rate - off_rate) * (t3 - t2) / probes * 1e6,
                "monitor_threads_us_per_probe": (n1 - n0 + d1 - d0) / 1e3 / probes,
                "probe_threads_us_per_probe": (n1 - n0) / 1e3 / probes,
                "decision_thread_us_per_probe": (d1 - d0) / 1e3 / probes,
            })
    finally:
        m.shutdown()     # closes the probe connections: their backends flush their statistics
    counted = None
    try:
        time.sleep(0.3)
        x2 = [xact_commits(n) for n in nodes]
        counted = sum(c - b - p for b, c, p in zip(x1, x2, psql_cost))
    except Exception as e:   # the cross-check is optional
        say("could not count probes on the servers: %s" % e)
    expected = len(eps) * on_total / interval
    return {"rounds": rounds, "seconds_per_round": per, "interval": interval,
            "probes_expected": expected, "probes_counted": counted}


# ---------------------------------------------------------------------------
# resident memory of N open connections (fresh processes)
# ---------------------------------------------------------------------------

RSS_SCRIPT = r"""
import gc, json, sys
impl, dsn, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

def rss():
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

held = []
if impl == "noodlecore":
    from noodlecore.database import DatabaseConnectionPool
    pool = DatabaseConnectionPool(dsn, max_connections=2 * n, row_format="tuple")
    def more(k):
        for _ in range(k):
            c = pool.acquire()
            c.execute_query("SELECT 1")
            held.append(c)
    def count():
        return pool.get_stats().total_connections
    def close():
        for c in held:
            c.release()
        pool.shutdown()
else:
    from psycopg_pool import ConnectionPool
    pool = ConnectionPool(dsn, min_size=1, max_size=2 * n, open=False, kwargs={"autocommit": True})
    opened = []
    def more(k):
        if not opened:
            pool.open(wait=True, timeout=10)
            opened.append(1)
        for _ in range(k):
            c = pool.getconn(timeout=10)
            c.execute("SELECT 1").fetchall()
            held.append(c)
    def count():
        return pool.get_stats()["pool_size"]
    def close():
        for c in held:
            pool.putconn(c)
        pool.close()
r0 = rss()
more(n)
rn = rss()
open_n = count()
more(n)
r2n = rss()
print(json.dumps({"r0_kb": r0, "rn_kb": rn, "r2n_kb": r2n, "open_n": open_n, "open_2n": count()}))
close()
"""


def rss_run(impl, dsn, n, env):
    # cwd "/": "python -c" puts the working directory first on sys.path, and
    # a source checkout there would shadow the installed noodlecore.
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, impl, dsn, str(n)], capture_output=True,
                       text=True, timeout=60, env=env, stdin=subprocess.DEVNULL, cwd="/")
    if r.returncode != 0:
        raise RuntimeError("memory measurement (%s) failed: %s" % (impl, r.stderr[-2000:]))
    d = json.loads(r.stdout.strip().splitlines()[-1])
    if (d["open_n"], d["open_2n"]) != (n, 2 * n):
        raise RuntimeError("memory measurement (%s): %s/%s connections open, not %d/%d"
                           % (impl, d["open_n"], d["open_2n"], n, 2 * n))
    return {"delta_mb": (d["rn_kb"] - d["r0_kb"]) / 1024.0,
            "per_conn_kb": (d["rn_kb"] - d["r0_kb"]) / n,
            "warm_kb": (d["r2n_kb"] - d["rn_kb"]) / n,
            "base_mb": d["r0_kb"] / 1024.0}
