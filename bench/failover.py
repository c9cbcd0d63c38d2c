#!/usr/bin/env python3
"""noodlecore failover benchmark: crash, promote, fail back, on loopback.

    python3 bench/failover.py [--runs N] [--probe-seconds S] [--interval S]
                              [--hc-interval S] [--conns N] [--no-psycopg]
                              [--noodle-from wheel|inplace] [--reinstall] [--out FILE]

Stage 1 (the python3 that runs this file): make or refresh bench/.venv the way
bench/run.py does (its helpers are imported: psycopg[binary], psycopg_pool &
co., and a noodlecore wheel built from a snapshot of the repo), then re-exec
this script with the venv's python.

Stage 2 (the venv): one throwaway primary + async hot standby (PostgreSQL 15
through noodlecore.testing), then, round by round (--runs, default 5):

  noodlecore   a DatabaseFailoverManager [primary (preferred), standby] with
               monitoring on; a steady client thread does SELECT / INSERT
               through it every --interval (5 ms).  SIGKILL the primary
               (node.crash()), promote the standby at once; measure detection,
               switch, failed requests.  Then pg_rewind the old primary as a
               standby of the new one and do a planned switchover back (stop
               the new primary "fast", promote the old one): measure the
               failback.  pg_rewind the other node: the topology is back.
  psycopg_pool the same client loop on a libpq multi-host DSN with
               target_session_attrs=read-write, once with psycopg_pool's
               default (check=None) and once with
               check=ConnectionPool.check_connection: SIGKILL + promote,
               failed requests and time to the first successful query.

then the probe cost (process CPU with monitoring on vs off) and the resident
memory of 20 open connections (in fresh processes).  Prints a Markdown report
and writes it with the raw results to bench/results/<date>-<commit>/failover.md
and failover.json.  The servers are removed at the end, also on an error,
Ctrl-C, SIGTERM or SIGHUP.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import run as benchrun  # noqa: E402  (bench/run.py: the venv and report helpers)

VENV, VENV_PY = benchrun.VENV, benchrun.VENV_PY
# The report and the raw results go to bench/results/<date>-<commit>/failover.{md,json}
# (benchrun.results_dir()) unless --out names the Markdown file.
T0 = float(os.environ.get("NOODLE_BENCH_T0") or time.time())

# the report's targets
TARGET_SWITCH_MS, AIM_SWITCH_MS = 100.0, 20.0
TARGET_RECOVERY_MS = 200.0
TARGET_PROBE_US = 1000.0
TARGET_RSS_MB, AIM_RSS_MB = 10.0, 5.0


def say(msg):
    print("[%6.1fs] %s" % (time.time() - T0, msg), file=sys.stderr, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5,
                    help="rounds of every scenario; each cell is the median over them (default 5)")
    ap.add_argument("--interval", type=float, default=0.005,
                    help="the steady client's pause between two requests, seconds (default 0.005)")
    ap.add_argument("--hc-interval", type=float, default=0.05,
                    help="health_check_interval of the manager in the failover runs and the probe-cost "
                         "measurement (default 0.05)")
    ap.add_argument("--probe-seconds", type=float, default=10.0,
                    help="total seconds with monitoring on (and as many with it off) for the probe cost, "
                         "split over --runs rounds (default 10)")
    ap.add_argument("--conns", type=int, default=20, help="connections for the memory measurement (default 20)")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds the client keeps running after the first successful query on the new "
                         "endpoint (late failures are counted too; default 0.3)")
    ap.add_argument("--no-psycopg", action="store_true", help="skip the psycopg_pool runs")
    ap.add_argument("--noodle-from", choices=("wheel", "inplace"), default="wheel",
                    help="wheel: build+install a wheel of the repo into bench/.venv (default, shared with "
                         "bench/run.py); inplace: import the repo's in-place build")
    ap.add_argument("--reinstall", action="store_true", help="re-install the peers and rebuild the wheel")
    ap.add_argument("--out", default=None,
                    help="the Markdown report; the raw results go beside it as .json "
                         "(default bench/results/<date>-<commit>/failover.md)")
    ap.add_argument("--stage2", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    return a


# ===========================================================================
# stage 1: the venv (bench/run.py's, same marker files)
# ===========================================================================

def stage1(args):
    want, have = sys.version, benchrun.venv_python_version()
    if have != want:
        say("creating %s with %s" % (VENV, sys.executable))
        benchrun.run_checked([sys.executable, "-m", "venv", "--clear", str(VENV)], "python3 -m venv")
    marker = VENV / ".bench-peers.json"
    want_peers = {"peers": benchrun.PEERS, "build": benchrun.BUILD_DEPS}
    try:
        have_peers = json.loads(marker.read_text())
    except (OSError, ValueError):
        have_peers = None
    if args.reinstall or have_peers != want_peers:
        say("pip install %s %s" % (" ".join(benchrun.PEERS), " ".join(benchrun.BUILD_DEPS)))
        benchrun.pip("install", *benchrun.PEERS, *benchrun.BUILD_DEPS)
        marker.write_text(json.dumps(want_peers))
    if args.noodle_from == "wheel":
        files = benchrun.noodle_sources()
        fp = benchrun.fingerprint(files)
        nmarker = VENV / ".bench-noodle"
        installed = nmarker.read_text().strip() if nmarker.exists() else None
        if args.reinstall or installed != fp:
            nmarker.unlink(missing_ok=True)
            fp = benchrun.build_noodle_wheel(files)
            nmarker.write_text(fp + "\n")
        else:
            say("noodlecore wheel up to date (sources %s)" % fp)
    os.environ["NOODLE_BENCH_T0"] = repr(T0)
    argv = [str(VENV_PY), str(Path(__file__).resolve()), "--stage2"] + sys.argv[1:]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(str(VENV_PY), argv)


# ===========================================================================
# stage 2: measurements
# ===========================================================================

class Interrupted(BaseException):
    pass


def _on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


def crash(node):
    """SIGKILL node; returns the monotonic time of the first SIGKILL.  node.crash() SIGSTOPs
    the postmaster, lists its children, then SIGKILLs them and the postmaster: the first
    SIGKILL is the crash."""
    t_kill = node.crash()
    if t_kill is None:
        raise RuntimeError("crash(%s): the server was not running" % node.name)
    return t_kill


def wall_offset():
    """time.time() - time.monotonic(), from the tightest of a few brackets (event
    timestamps are wall clock; everything else here is monotonic)."""
    best = None
    for _ in range(7):
        m1 = time.monotonic()
        w = time.time()
        m2 = time.monotonic()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, w - (m1 + m2) / 2)
    return best[1]


def wait_until(pred, timeout, what, step=0.005):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(step)


def short_error(e):
    text = str(e).strip().splitlines()
    code = getattr(e, "error_code", None) or getattr(e, "sqlstate", None)
    return "%s%s: %s" % (type(e).__name__, "[%s]" % code if code else "", text[0][:110] if text else "")


class SteadyClient(threading.Thread):
    """Calls request(i) every `interval` seconds (after the previous one ended) and
    logs (t_start, t_end, server_port or None, error or None), monotonic."""

    def __init__(self, request, interval):
        super().__init__(name="steady-client", daemon=True)
        self.request = request
        self.interval = interval
        self.log = []
        self.stopping = threading.Event()

    def run(self):
        i = 0
        log = self.log
        while not self.stopping.is_set():
            i += 1
            t0 = time.monotonic()
            try:
                port = self.request(i)
                log.append((t0, time.monotonic(), port, None))
            except Exception as e:   # counted, never fatal
                log.append((t0, time.monotonic(), None, short_error(e)))
            time.sleep(self.interval)

    def stop(self):
        self.stopping.set()
        self.join(10)

    def first_ok(self, port, after, start=0):
        log = self.log
        for k in range(start, len(log)):
            t0, t1, p, err = log[k]
            if err is None and p == port and t1 > after:
                return (t0, t1)
        return None

    def ok_count(self, port, after):
        return sum(1 for t0, t1, p, err in list(self.log) if err is None and p == port and t0 > after)

    def window(self, start, end):
        """Requests that ended after start and began before end."""
        return [r for r in list(self.log) if r[1] > start and r[0] < end]


SELECT_Q = "SELECT inet_server_port()"
INSERT_Q = "INSERT INTO bench_fo (v) VALUES (%s) RETURNING inet_server_port()"


def failures(reqs):
    errs = [r for r in reqs if r[3] is not None]
    kinds = collections.Counter(r[3].split(":")[0] for r in errs)
    return len(errs), dict(kinds), [r[3] for r in errs[:1]]


def longest(reqs):
    return max((r[1] - r[0] for r in reqs), default=0.0)


def ms(x):
    return None if x is None else x * 1e3


# ---------------------------------------------------------------------------
# noodlecore: crash + promote, then planned switchover back
# ---------------------------------------------------------------------------

def noodle_config(args, **kw):
    from noodlecore.database.failover_manager import FailoverConfig
    base = dict(health_check_interval=args.hc_interval, health_check_timeout=1.0, failover_timeout=2.0,
                hold_down=0.0, recovery_check_interval=0.1, pool_options={"row_format": "tuple"})
    base.update(kw)
    return FailoverConfig(**base)


def noodle_run(cl, pri, sby, args, pool_extra=None):
    """One noodlecore round.  pri/sby: the current primary and standby; on return the
    topology is the same again.  pool_extra: pool options on top of noodle_config's."""
    from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager
    eps = [DatabaseEndpoint("a", pri.name, pri.dsn(), priority=1, is_primary=True),
           DatabaseEndpoint("b", sby.name, sby.dsn(), priority=2)]
    cfg = noodle_config(args)
    cfg.pool_options.update(pool_extra or {})
    m = DatabaseFailoverManager(eps, config=cfg)
    client = None
    out = {}
    try:
        m.start_monitoring()

        def roles(a, b):
            st = m.get_status()["endpoints"]
            return (st["a"]["role"], st["b"]["role"]) == (a, b) and st["a"]["is_available"] \
                and st["b"]["is_available"]

        wait_until(lambda: roles("primary", "standby"), 10, "the manager to probe both endpoints")

        def request(i):
            with m.get_connection() as c:
                rows = c.execute_query(SELECT_Q) if i % 2 else c.execute_query(INSERT_Q, (i,))
            return int(rows[0][0])

        client = SteadyClient(request, args.interval)
        client.start()
        t_start = time.monotonic()
        wait_until(lambda: client.ok_count(pri.port, t_start) >= 20, 10, "the client to run on the primary")

        # -- crash + promote ------------------------------------------------
        time.sleep(random.uniform(0, args.hc_interval))   # random phase against the probe schedule
        n_ev = len(m.get_events())
        off = wall_offset()
        k0 = len(client.log)
        t_kill = crash(pri)
        t_p0 = time.monotonic()
        sby.promote()
        t_p1 = time.monotonic()
        ok = wait_until(lambda: client.first_ok(sby.port, t_kill, k0), 15,
                        "a successful query on the promoted standby")
        time.sleep(args.settle)
        t_end = time.monotonic()
        evs = m.get_events()[n_ev:]
        mono = [ev.timestamp.timestamp() - off for ev in evs]
        if not evs:
            raise RuntimeError("no failover event after the crash")
        fo = next(((ev, t) for ev, t in zip(evs, mono) if ev.metadata.get("kind") == "failover"
                   and ev.success and ev.to_endpoint == "b"), None)
        if fo is None:
            raise RuntimeError("no successful failover to the standby: %s" % [e.to_dict() for e in evs])
        reqs = client.window(t_kill, t_end)
        nfail, kinds, sample = failures(reqs)
        first_err = next((r for r in reqs if r[3] is not None), None)
        stuck = [r for r in reqs if r[0] < fo[1] < r[1]]
        out["crash"] = {
            "detection_ms": ms(mono[0] - t_kill),
            "detection_event": evs[0].metadata.get("kind"),
            "detection_reason": evs[0].reason[:160],
            "client_first_error_ms": ms(first_err[1] - t_kill) if first_err else None,
            "promote_ms": ms(t_p1 - t_p0),
            "kill_to_promote_start_ms": ms(t_p0 - t_kill),
            "promoted_to_decision_ms": ms(fo[1] - t_p1),
            "kill_to_decision_ms": ms(fo[1] - t_kill),
            "switch_ms": ms(ok[1] - fo[1]),
            "switch_in_manager_ms": ms(fo[0].duration),
            "first_ok_started_before_decision": ok[0] < fo[1],
            "in_flight_at_decision_ms": ms(max((r[1] - r[0] for r in stuck), default=0.0)),
            "outage_ms": ms(ok[1] - t_kill),
            "failed": nfail, "failed_kinds": kinds, "failed_sample": sample,
            "requests": len(reqs), "longest_ms": ms(longest(reqs)),
            "events": ["%s %s->%s %s +%.1fms" % (e.metadata.get("kind"), e.from_endpoint, e.to_endpoint,
                                                  "ok" if e.success else "failed", (t - t_kill) * 1e3)
                       for e, t in zip(evs, mono)],
        }

        # -- failback: rewind the old primary, planned switchover back ---------
        cl.rewind_as_standby(pri, sby)
        wait_until(lambda: roles("standby", "primary"), 10, "the manager to see the rewound node as a standby")
        time.sleep(0.1 + random.uniform(0, args.hc_interval))
        n_ev = len(m.get_events())
        off = wall_offset()
        k0 = len(client.log)
        t_s0 = time.monotonic()
        sby.stop("fast")
        t_s1 = time.monotonic()
        pri.promote()
        t_p1 = time.monotonic()
        ok = wait_until(lambda: client.first_ok(pri.port, t_s0, k0), 15,
                        "a successful query on the preferred endpoint")
        time.sleep(args.settle)
        t_end = time.monotonic()
        evs = m.get_events()[n_ev:]
        mono = [ev.timestamp.timestamp() - off for ev in evs]
        fb = next(((ev, t) for ev, t in zip(evs, mono) if ev.metadata.get("kind") == "failback"
                   and ev.success and ev.to_endpoint == "a"), None)
        if fb is None:
            raise RuntimeError("no successful failback to the preferred endpoint: %s"
                               % [e.to_dict() for e in evs])
        reqs = client.window(t_s0, t_end)
        nfail, kinds, sample = failures(reqs)
        stuck = [r for r in reqs if r[0] < fb[1] < r[1]]
        out["failback"] = {
            "detection_ms": ms(mono[0] - t_s0) if evs else None,
            "stop_ms": ms(t_s1 - t_s0),
            "promote_ms": ms(t_p1 - t_s1),
            "promoted_to_decision_ms": ms(fb[1] - t_p1),
            "recovery_ms": ms(ok[1] - fb[1]),
            "switch_in_manager_ms": ms(fb[0].duration),
            "first_ok_started_before_decision": ok[0] < fb[1],
            "in_flight_at_decision_ms": ms(max((r[1] - r[0] for r in stuck), default=0.0)),
            "in_flight_at_decision_error": next((r[3] for r in stuck if r[3]), None),
            "outage_ms": ms(ok[1] - t_s0),
            "failed": nfail, "failed_kinds": kinds, "failed_sample": sample,
            "requests": len(reqs), "longest_ms": ms(longest(reqs)),
            "events": ["%s %s->%s %s +%.1fms" % (e.metadata.get("kind"), e.from_endpoint, e.to_endpoint,
                                                  "ok" if e.success else "failed", (t - t_s0) * 1e3)
                       for e, t in zip(evs, mono)],
        }
    finally:
        if client is not None:
            client.stop()
        m.shutdown()
    # back to the starting topology: the switched-over node follows the preferred one again
    cl.rewind_as_standby(sby, pri)
    return out


# ---------------------------------------------------------------------------
# psycopg_pool: crash + promote on a multi-host DSN
# ---------------------------------------------------------------------------

def psycopg_run(cl, pri, sby, args, check):
    """One psycopg_pool round; on return sby is the primary and pri its standby."""
    from psycopg_pool import ConnectionPool
    conninfo = ("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
                "target_session_attrs=read-write" % (pri.port, sby.port))
    kw = {"check": ConnectionPool.check_connection} if check else {}
    pool = ConnectionPool(conninfo, kwargs={"autocommit": True}, open=False,
                          name="bench-%s" % ("check" if check else "default"), **kw)
    client = None
    try:
        pool.open(wait=True, timeout=10)

        def request(i):
            with pool.connection() as c:
                row = (c.execute(SELECT_Q) if i % 2 else c.execute(INSERT_Q, (i,))).fetchone()
            return int(row[0])

        client = SteadyClient(request, args.interval)
        client.start()
        t_start = time.monotonic()
        wait_until(lambda: client.ok_count(pri.port, t_start) >= 20, 10, "the client to run on the primary")
        time.sleep(random.uniform(0, args.hc_interval))   # as in noodle_run
        k0 = len(client.log)
        t_kill = crash(pri)
        t_p0 = time.monotonic()
        sby.promote()
        t_p1 = time.monotonic()
        ok = wait_until(lambda: client.first_ok(sby.port, t_kill, k0), 40,
                        "a successful psycopg_pool query on the promoted standby")
        time.sleep(args.settle)
        t_end = time.monotonic()
        reqs = client.window(t_kill, t_end)
        nfail, kinds, sample = failures(reqs)
        first_err = next((r for r in reqs if r[3] is not None), None)
        stats = pool.get_stats()
        out = {
            "client_first_error_ms": ms(first_err[1] - t_kill) if first_err else None,
            "promote_ms": ms(t_p1 - t_p0),
            "outage_ms": ms(ok[1] - t_kill),
            "promoted_to_first_ok_ms": ms(ok[1] - t_p1),
            "failed": nfail, "failed_kinds": kinds, "failed_sample": sample,
            "requests": len(reqs), "longest_ms": ms(longest(reqs)),
            "pool_stats": {k: v for k, v in stats.items()
                           if k in ("connections_num", "connections_errors", "connections_lost",
                                    "requests_errors", "pool_size", "pool_min", "pool_max")},
        }
    finally:
        if client is not None:
            client.stopping.set()
        pool.close(timeout=2)
        if client is not None:
            client.join(10)
    cl.rewind_as_standby(pri, sby)
    return out


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


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def values(runs, *path):
    out = []
    for r in runs:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v is not None:
            out.append(v)
    return out


def med(xs):
    return statistics.median(xs) if xs else None


def cell(xs, fmt="%.1f", unit=""):
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return (fmt % xs[0]) + unit
    return "%s%s (%s–%s)" % (fmt % med(xs), unit, fmt % min(xs), fmt % max(xs))


def verdict(value, limit, aim=None):
    if value is None:
        return "n/a"
    if value >= limit:
        return "NOT MET"
    if aim is not None:
        return "MET (aim %s)" % ("met" if value < aim else "not met")
    return "MET"


COLUMNS = [
    ("noodle", "noodlecore (defaults)"),
    ("noodle_r1", "noodlecore, `pool_options={'retry_attempts': 1}`"),
    ("psycopg_default", "psycopg_pool, default `check=None`"),
    ("psycopg_check", "psycopg_pool, `check=ConnectionPool.check_connection`"),
]


def render(meta, res, args):
    probe, rss = res["probe"], res["rss"]
    L = ["# noodlecore failover benchmark", ""]
    L.append("- Date: %s" % meta["date"])
    L.append("- Machine: %s, %d cores, %s; Python %s; PostgreSQL %s, primary + async hot standby "
             "on the same host (TCP 127.0.0.1, fsync off, data in /dev/shm); load average %s at the "
             "start, %s at the end"
             % (meta["cpu"], meta["cores"], meta["kernel"], meta["python"], meta["postgres"],
                benchrun.fmt_load(meta["load_start"]), benchrun.fmt_load(meta["load_end"])))
    L.append("- noodlecore %s (git %s%s, %s); %s"
             % (meta["noodlecore_version"] or "?", meta["git"]["commit"],
                " + uncommitted changes" if meta["git"]["dirty_sources"] else "",
                "wheel of the work tree in bench/.venv" if args.noodle_from == "wheel" else "in-place build",
                "; ".join(v for k, v in meta["peer_versions"].items() if k in
                          ("psycopg", "psycopg-binary", "psycopg-pool") and v)))
    L.append("- %d rounds; cells are `median (min–max)` over them. Steady client: one thread, "
             "`SELECT inet_server_port()` and `INSERT ... RETURNING inet_server_port()` alternately, "
             "a %g ms pause after each request. noodlecore manager: %s."
             % (args.runs, args.interval * 1e3, meta["noodle_config"]))
    L.append("")
    cols = [c for c in COLUMNS if res.get(c[0])]
    L.append("| measurement | " + " | ".join(c[1] for c in cols) + " | target | result |")
    L.append("|---|" + "---:|" * len(cols) + "---|---|")

    def row(label, path, fmt="%.1f", only=None, target="", judge=None, extra=None):
        cells, verdicts = [], []
        for key, name in cols:
            if extra is not None:
                xs = extra.get(key)
            elif only is not None and key not in only:
                xs = None
            else:
                xs = values(res[key], *path)
            if xs is None:
                cells.append("n/a")
                continue
            if not xs and path and path[-1] in ("client_first_error_ms",):
                cells.append("no failure")
                continue
            cells.append(cell(xs, fmt))
            if judge and key.startswith("noodle") and xs:
                v = judge(med(xs))
                over = sum(1 for x in xs if judge(x) == "NOT MET")
                if over and v != "NOT MET":
                    v += ", but %d of %d rounds over the target" % (over, len(xs))
                verdicts.append("%s: %s" % ("defaults" if key == "noodle" else "retry_attempts=1", v))
        L.append("| %s | %s | %s | %s |" % (label, " | ".join(cells), target, "; ".join(verdicts)))

    NOODLE = ("noodle", "noodle_r1")
    row("**Detection**, ms: SIGKILL of the primary → the manager's first decision (event timestamp)",
        ("crash", "detection_ms"), only=NOODLE)
    row("client's first failed request after the SIGKILL, ms (when it ended)",
        ("client_first_error_ms",), extra={
            k: (values(res[k], "crash", "client_first_error_ms") if k.startswith("noodle")
                else values(res[k], "client_first_error_ms")) for k, _ in cols})
    row("promotion of the standby, ms (`promote()`: signal, then psql polls `pg_is_in_recovery()` "
        "every 10 ms; started right after the crash; **not** part of the switch time)", (), extra={
            k: (values(res[k], "crash", "promote_ms") if k.startswith("noodle")
                else values(res[k], "promote_ms")) for k, _ in cols})
    row("`promote()` returned → the manager's failover decision, ms (the next probe of the standby; "
        "negative: a probe saw it writable before `promote()` noticed)",
        ("crash", "promoted_to_decision_ms"), only=NOODLE)
    row("**Switch**, ms: failover decision → end of the first successful query on the new primary",
        ("crash", "switch_ms"), only=NOODLE,
        target="< %g ms (aim < %g)" % (TARGET_SWITCH_MS, AIM_SWITCH_MS),
        judge=lambda v: verdict(v, TARGET_SWITCH_MS, AIM_SWITCH_MS))
    row("of which inside the manager (event `duration`: verification probe + switch), ms",
        ("crash", "switch_in_manager_ms"), fmt="%.2f", only=NOODLE)
    row("client-visible outage, ms: SIGKILL → first successful query on the new primary "
        "(**includes** the promotion)", (), extra={
            k: (values(res[k], "crash", "outage_ms") if k.startswith("noodle")
                else values(res[k], "outage_ms")) for k, _ in cols})
    row("**failed requests** across one crash-and-promote (exceptions the client saw)", (), fmt="%g", extra={
        k: (values(res[k], "crash", "failed") if k.startswith("noodle") else values(res[k], "failed"))
        for k, _ in cols})
    row("longest single request in that window, ms", (), extra={
        k: (values(res[k], "crash", "longest_ms") if k.startswith("noodle") else values(res[k], "longest_ms"))
        for k, _ in cols})
    row("**Recovery**, ms: failback decision → end of the first successful query on the preferred "
        "endpoint (after a planned switchover back: `stop('fast')` of the current primary, `promote()` "
        "of the preferred)", ("failback", "recovery_ms"), only=NOODLE,
        target="< %g ms" % TARGET_RECOVERY_MS, judge=lambda v: verdict(v, TARGET_RECOVERY_MS))
    row("switchover outage, ms: `stop` of the current primary → first successful query on the "
        "preferred (includes stop and promotion)", ("failback", "outage_ms"), only=NOODLE)
    row("failed requests during the switchover back", ("failback", "failed"), fmt="%g", only=NOODLE)
    pus = [r["us_per_probe"] for r in probe["rounds"]]
    row("**Probe cost**, µs of process CPU per probe ((CPU with monitoring on − off) / probes; 2 "
        "endpoints, health_check_interval=%g s)" % probe["interval"], (), fmt="%.0f",
        extra={"noodle": pus}, target="< 1 ms CPU",
        judge=lambda v: verdict(v, TARGET_PROBE_US))
    row("of which the monitor's own threads (their schedstat), µs per probe", (), fmt="%.0f",
        extra={"noodle": [r["monitor_threads_us_per_probe"] for r in probe["rounds"]]})
    L.append("| … split: probe threads / decision thread, µs per probe | %s / %s |%s |  |" % (
        cell([r["probe_threads_us_per_probe"] for r in probe["rounds"]], "%.0f"),
        cell([r["decision_thread_us_per_probe"] for r in probe["rounds"]], "%.0f"),
        " n/a |" * (len(cols) - 1)))
    memcol = {"noodle": "noodlecore", "psycopg_default": "psycopg_pool"}
    row("**Resident memory**, MB: RSS after opening %d pooled connections to one server − before"
        % args.conns, (), fmt="%.2f",
        extra={k: values(rss.get(v, []), "delta_mb") for k, v in memcol.items() if rss.get(v)},
        target="~%g MB (aim < %g)" % (TARGET_RSS_MB, AIM_RSS_MB),
        judge=lambda v: verdict(v, TARGET_RSS_MB + 1e-9, AIM_RSS_MB))
    row("per connection, KB (that delta / %d)" % args.conns, (), fmt="%.0f",
        extra={k: values(rss.get(v, []), "per_conn_kb") for k, v in memcol.items() if rss.get(v)})
    row("per connection once warm, KB ((RSS with %d − with %d) / %d)" % (2 * args.conns, args.conns, args.conns),
        (), fmt="%.1f",
        extra={k: values(rss.get(v, []), "warm_kb") for k, v in memcol.items() if rss.get(v)})
    L.append("")
    L.append("Verdicts are on the medians (target or aim missed in single rounds is said so).")
    L.append("")
    L += notes(res, args)
    L.append("")
    L.append("<details><summary>per-round samples</summary>")
    L.append("")
    L.append("```")
    for key, name in cols:
        for i, r in enumerate(res[key]):
            if "crash" in r:
                L.append("%s round %d crash:    %s" % (key, i + 1, compact(r["crash"])))
                L.append("%s round %d failback: %s" % (key, i + 1, compact(r["failback"])))
            else:
                L.append("%s round %d: %s" % (key, i + 1, compact(r)))
    for i, r in enumerate(probe["rounds"]):
        L.append("probe round %d: %s" % (i + 1, compact(r)))
    L.append("probes expected from the interval %.0f, counted on the servers (xact_commit) %s"
             % (probe["probes_expected"], probe["probes_counted"]))
    for impl, runs in rss.items():
        for i, r in enumerate(runs):
            L.append("memory %s round %d: %s" % (impl, i + 1, compact(r)))
    L.append("```")
    L.append("")
    L.append("</details>")
    return "\n".join(L) + "\n"


def compact(d):
    parts = []
    for k, v in d.items():
        if isinstance(v, float):
            v = "%.2f" % v
        parts.append("%s=%s" % (k, v))
    return ", ".join(parts)


def kinds_text(runs, *path):
    k = collections.Counter()
    for r in runs:
        v = r
        for p in path:
            v = v[p]
        k.update(v)
    return ", ".join("%s ×%d" % kv for kv in k.most_common()) or "none"


def notes(res, args):
    nr = res["noodle"]
    probe = res["probe"]
    L = ["What was measured:", ""]
    L.append("- All times are `time.monotonic()` in the benchmark process. The crash instant is the "
             "first `SIGKILL` that `node.crash()` sends (it first SIGSTOPs the postmaster and lists "
             "its children). The manager's event timestamps (wall clock, taken when it starts carrying "
             "a decision out) are converted with the wall − monotonic offset read just before.")
    kinds = collections.Counter(r["crash"]["detection_event"] for r in nr + res.get("noodle_r1", []))
    L.append("- **Detection** is the first event the manager records after the crash (%s). Right "
             "after the crash the standby is still read-only, so the first decision is `no_target` "
             "(state `unavailable`: `get_connection()` fails at once with 4015); the `failover` "
             "follows when a probe sees the promoted standby writable. Detection is passive or by "
             "probe, whichever comes first: the client's next request (within %g ms) on the dead "
             "connection, or a probe (every %g s)."
             % (", ".join("%s ×%d" % kv for kv in kinds.items()), args.interval * 1e3, args.hc_interval))
    L.append("- **Switch** starts at the `failover` event (the decision) and ends when the first "
             "request answered by the new primary's port returns. It leaves out the promotion, which "
             "the script starts right after the crash and which is reported on its own row; the "
             "client-visible outage (SIGKILL → first success) includes everything. The client's "
             "%g ms pause limits the resolution." % (args.interval * 1e3))
    L.append("- **Recovery**: after the failover the crashed node is pg_rewound as a standby of the "
             "new primary; then a planned switchover back: `stop('fast')` of the current primary, "
             "`promote()` of the preferred one. The manager goes `unavailable` (nothing writable), "
             "then records a `failback` when a probe sees the preferred endpoint writable; recovery "
             "runs from that decision to the first successful query on it. A failback while the "
             "current endpoint stays writable cannot be staged on a real pair: two writable "
             "endpoints are a split brain, which the manager refuses (by design). `hold_down=0` "
             "lets the switchover follow the failover within a second; with the default 5 s the "
             "manager would ignore the failing current endpoint until 5 s after the last switch.")
    for key, label in (("noodle", "defaults"), ("noodle_r1", "retry_attempts=1")):
        runs = res.get(key) or []
        for phase, what in (("crash", "failover"), ("failback", "failback")):
            stuck = [r[phase] for r in runs if r[phase]["first_ok_started_before_decision"]]
            if stuck:
                L.append("- noodlecore (%s), %s: in %d of %d rounds the request that first succeeded "
                         "on the new endpoint had started **before** the %s decision (the request in "
                         "flight at the decision took %s ms)."
                         % (label, phase, len(stuck), len(runs), what,
                            cell([s["in_flight_at_decision_ms"] for s in stuck])))
    if any(r[ph]["first_ok_started_before_decision"] for r in nr for ph in ("crash", "failback")):
        L.append("  That request was inside `get_connection()`: the borrow found the pooled idle "
                 "connection dead (the zero-timeout liveness poll; it is skipped within 5 ms of the "
                 "previous one, so with a 5 ms client pause the dead connection is sometimes found by "
                 "the query instead, which fails with 2004 and reports at once) and reconnected to the "
                 "failed endpoint with the pool's `retry_attempts=3` and backoff from "
                 "`retry_backoff=0.05 s`, about 150 ms. The manager's switch does not cut that backoff "
                 "short, and the borrow reports to the manager and moves to the new endpoint only "
                 "after its last attempt. With `retry_attempts=1` the borrow gives up at once: one more "
                 "failed request, and the next request goes to the new endpoint.")
    L.append("- Failed requests by exception, crash-and-promote: noodlecore (defaults) %s; noodlecore "
             "(retry_attempts=1) %s; psycopg_pool default %s; psycopg_pool check_connection %s. "
             "Switchover back: noodlecore (defaults) %s; (retry_attempts=1) %s."
             % (kinds_text(nr, "crash", "failed_kinds"), kinds_text(res.get("noodle_r1", []), "crash", "failed_kinds"),
                kinds_text(res.get("psycopg_default", []), "failed_kinds"),
                kinds_text(res.get("psycopg_check", []), "failed_kinds"),
                kinds_text(nr, "failback", "failed_kinds"),
                kinds_text(res.get("noodle_r1", []), "failback", "failed_kinds")))
    if res.get("psycopg_default"):
        L.append("- psycopg_pool: `ConnectionPool(conninfo, kwargs={'autocommit': True})`, its other "
                 "options default (min_size=4, timeout=30 s), on `host=127.0.0.1,127.0.0.1 "
                 "port=P1,P2 user=postgres dbname=postgres target_session_attrs=read-write`. It has no "
                 "monitor, hence no detection, decision or recovery rows. With the default "
                 "`check=None` a pooled connection is handed out unchecked, so every connection open "
                 "at the crash fails one request. A broken connection is replaced by the pool's "
                 "reconnect task; its first attempt, right after the crash, finds no writable host "
                 "(the standby is being promoted) and the next comes after its backoff (1 s ± 10 %, "
                 "then 2 s, 4 s...), while requests wait in `getconn()`. `check_connection` runs an "
                 "empty query on every borrow and drops dead connections, but psycopg_pool 3.3 sleeps "
                 "with the same backoff (0, then about 1 s, 2 s, 4 s) between two failed checks in one "
                 "`getconn()`, and takes pooled connections oldest first: one request walks through "
                 "the dead ones at those intervals even once fresh connections are waiting behind them. "
                 "The default's outage depends on a race: when the reconnect attempt made right after "
                 "the first failure comes after the promotion has completed, service is back within "
                 "tens of ms; when it comes before, it waits for the next attempt, about 1 s later.")
    L.append("- **Probe cost**: one manager on both servers; %d rounds of %.1f s with monitoring off, "
             "then %.1f s on (after a warm-up that opened the probe connections). Probes per round "
             "are taken from the interval (2 endpoints × on-time / %g s); the servers' `xact_commit` "
             "counted %s probe transactions in all against %.0f expected. Server-side CPU is not "
             "included. The monitor-thread row sums `/proc/self/task/*/schedstat` of the threads "
             "`start_monitoring()` started (one probe thread per endpoint, and the decision thread, "
             "which wakes after every probe)."
             % (args.runs, probe["seconds_per_round"], probe["seconds_per_round"], probe["interval"],
                probe["probes_counted"] if probe["probes_counted"] is not None else "?",
                probe["probes_expected"]))
    L.append("- **Memory**: a fresh process per measurement; VmRSS (after `gc.collect()`) once the pool "
             "exists with no connection, then with %d connections borrowed at once (each ran "
             "`SELECT 1`), then with %d. noodlecore: `DatabaseConnectionPool` (what the manager keeps "
             "per endpoint); psycopg_pool: `ConnectionPool(min_size=1, max_size=%d)`, opened after "
             "the first reading (its worker threads are in the delta). Most of the delta is the "
             "first connection (libpq/TLS/resolver initialisation, ~0.8 MB for both); the warm row "
             "is the cost of one more connection. The servers' memory (a backend process per "
             "connection) is not included." % (args.conns, 2 * args.conns, 2 * args.conns))
    return L


def meta_info(pri, args):
    import noodlecore
    pv = benchrun.peer_versions()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": benchrun.cpu_model(), "cores": os.cpu_count() or 0,
        "kernel": "Linux %s" % platform.release(),
        "python": platform.python_version(), "postgres": pri.scalar("SHOW server_version"),
        "git": benchrun.git_info(), "peer_versions": pv,
        "noodlecore_version": getattr(noodlecore, "__version__", None)
        or (pv.get("noodlecore") or "").replace("noodlecore ", ""),
        "noodlecore_module": noodlecore.__file__,
    }


def stage2(args):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if args.noodle_from == "inplace":
        sys.path.insert(0, str(REPO))
        os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    else:
        os.environ.pop("PYTHONPATH", None)
    from noodlecore.testing import PgCluster     # the installed (or --noodle-from inplace) noodlecore
    for name in ("noodlecore", "psycopg"):      # their warnings during the crashes are expected
        lg = logging.getLogger(name)
        lg.addHandler(logging.NullHandler())
        lg.propagate = False
    from noodlecore.database.failover_manager import FailoverConfig  # noqa: F401  (fail early)

    cl = None
    rc = 0
    try:
        say("starting a primary and a standby (noodlecore.testing)")
        cl = PgCluster()
        pri = cl.primary("fo_a")
        sby = cl.standby(pri, "fo_b")
        pri.sql("CREATE TABLE bench_fo (id bigserial PRIMARY KEY, v int, at timestamptz DEFAULT now())")
        say("primary on port %d, standby on port %d" % (pri.port, sby.port))
        meta = meta_info(pri, args)
        meta["load_start"] = benchrun.loadavg()
        c = noodle_config(args)
        meta["noodle_config"] = ("health_check_interval=%g s, health_check_timeout=%g s, "
                                 "failover_timeout=%g s, hold_down=%g s, recovery_check_interval=%g s, "
                                 "policy %s, require_writable=%s, other options default"
                                 % (c.health_check_interval, c.health_check_timeout, c.failover_timeout,
                                    c.hold_down, c.recovery_check_interval, c.policy.value,
                                    c.require_writable))
        res = {"noodle": [], "noodle_r1": [], "psycopg_default": [], "psycopg_check": [], "rss": {}}
        for k in range(args.runs):
            for key, extra in (("noodle", None), ("noodle_r1", {"retry_attempts": 1})):
                t = time.monotonic()
                r = noodle_run(cl, pri, sby, args, extra)
                res[key].append(r)
                say("round %d %s: detection %.1f ms, switch %.1f ms, outage %.1f ms, %d failed; "
                    "recovery %.1f ms, %d failed (%.1fs)"
                    % (k + 1, key, r["crash"]["detection_ms"], r["crash"]["switch_ms"],
                       r["crash"]["outage_ms"], r["crash"]["failed"], r["failback"]["recovery_ms"],
                       r["failback"]["failed"], time.monotonic() - t))
            if not args.no_psycopg:
                for check, key in ((False, "psycopg_default"), (True, "psycopg_check")):
                    t = time.monotonic()
                    r = psycopg_run(cl, pri, sby, args, check)
                    pri, sby = sby, pri
                    res[key].append(r)
                    say("round %d %s: outage %.1f ms, %d failed, longest request %.1f ms (%.1fs)"
                        % (k + 1, key, r["outage_ms"], r["failed"], r["longest_ms"], time.monotonic() - t))
        say("probe cost: %d x (%.1f s off + %.1f s on)" % (args.runs, args.probe_seconds / args.runs,
                                                           args.probe_seconds / args.runs))
        res["probe"] = probe_cost(pri, sby, args)
        say("probe cost: %s us/probe" % ", ".join("%.0f" % r["us_per_probe"] for r in res["probe"]["rounds"]))
        env = dict(os.environ)
        impls = ["noodlecore"] + ([] if args.no_psycopg else ["psycopg_pool"])
        for k in range(args.runs):
            for impl in impls:
                res["rss"].setdefault(impl, []).append(rss_run(impl, pri.dsn(), args.conns, env))
        say("memory: %s" % "; ".join("%s %.2f MB" % (i, med(values(res["rss"][i], "delta_mb"))) for i in impls))
        meta["load_end"] = benchrun.loadavg()
        md = render(meta, res, args)
        out = Path(args.out) if args.out else benchrun.results_dir() / "failover.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        meta.update(benchrun.commit_info())
        raw = {"meta": meta, "settings": {k: v for k, v in vars(args).items() if k != "stage2"}, "raw": res}
        out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
        out.write_text(md)
        print(md)
        say("wrote %s and %s" % (out, out.with_suffix(".json")))
    except (KeyboardInterrupt, Interrupted) as e:
        say("interrupted (%s); cleaning up" % (str(e) or "Ctrl-C"))
        rc = 130
    finally:
        if cl is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cl.close()
            say("servers removed")
    return rc


def main():
    args = parse_args(sys.argv[1:])
    if not args.stage2:
        stage1(args)        # does not return (execs the venv's python)
    sys.exit(stage2(args))


if __name__ == "__main__":
    main()
