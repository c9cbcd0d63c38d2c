"""bench/failover.py's rounds (stage 2, inside bench/.venv): the steady
client thread and what its log says (failures, the longest request), the
crash, and one round of each scenario: noodlecore's DatabaseFailoverManager
(crash + promote, then a planned switchover back) and psycopg_pool on a
multi-host DSN (crash + promote).  noodle_config() holds the manager settings
the benchmark uses.
"""

from __future__ import annotations

import collections
import random
import threading
import time


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
