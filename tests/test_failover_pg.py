"""DatabaseFailoverManager against real PostgreSQL 15 servers (noodlecore.testing).

Native libpq pools per endpoint (backend_factory=None) and the native monitor:
a primary crash with the standby promoted, writes through a failover with
synchronous replication, a switchover with the old primary rewound as a
read-only standby (role mismatch, no failback to it, failback once it is
writable again), split brain, MANUAL and SEMI_AUTOMATIC modes, the
RESPONSE_TIME policy through a latency proxy, a frozen server, priority order
with three endpoints, no usable endpoint and resumption, a flapping endpoint
(hold-down), passive detection on the query path before monitoring starts, the
abandoned endpoint's pool drained on a switch, passive reports from one
session's trouble on a healthy primary (a read-only transaction, a terminated
session), bounded waits on frozen servers, and MANUAL mode without monitoring.

Every server is made by the function-scoped ``pg_factory`` fixture, which
destroys them when the test ends; every manager is closed by its ``with``.
Which server answered is told by ``inet_server_port()``.
"""

import threading
import time

import pytest

from noodlecore.database import DatabaseError, OperationalError
from noodlecore.database.failover_manager import (
    DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig, FailoverEvent, FailoverMode,
    FailoverPolicy,
)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

BASE = dict(health_check_interval=0.1, health_check_timeout=1, failover_timeout=5, hold_down=0.5,
            recovery_check_interval=1, max_failure_count=2, pool_max_connections=4, pool_timeout=3)


def cfg(**kw):
    d = dict(BASE)
    d["pool_options"] = {"connect_timeout": 1, "retry_attempts": 1}
    d.update(kw)
    return FailoverConfig(**d)


def dsn_of(target):
    """A node's DSN, or the DSN of a TcpProxy in front of a node."""
    if hasattr(target, "dsn"):
        return target.dsn()
    return "postgresql://postgres@127.0.0.1:%d/postgres" % target.port


def ep(eid, target, priority, primary=False):
    return DatabaseEndpoint(id=eid, name=eid.upper(), connection_string=dsn_of(target),
                            priority=priority, is_primary=primary)


def two(p, s, a_target=None):
    return [ep("a", a_target or p, 1, primary=True), ep("b", s, 2)]


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def port_of(m, timeout=2):
    with m.get_connection(timeout=timeout) as c:
        return c.execute_query("SELECT inet_server_port() AS port")[0]["port"]


def insert(m, table, n, timeout=2):
    """Insert row n through the manager; the port of the server that took it."""
    with m.get_connection(timeout=timeout) as c:
        rows = c.execute_query("INSERT INTO %s (n) VALUES (%%s) RETURNING inet_server_port() AS port" % table,
                               (n,))
    return rows[0]["port"]


def events(m, kind=None):
    evs = m.get_events()
    return [e for e in evs if kind is None or e.metadata["kind"] == kind]


def switches(m):
    return [e for e in m.get_events() if e.metadata["kind"] in ("failover", "failback") and e.success]


def wait_probed(m, roles, timeout=5):
    """Until every endpoint id in roles has been probed with that role."""
    def ok():
        st = m.get_status()["endpoints"]
        return all(st[k]["role"] == r and st[k]["last_health_check"] for k, r in roles.items())
    wait_for(ok, timeout, what="probes %s (status %s)" % (roles, m.get_status()["endpoints"]))


def on_endpoint(m, eid):
    return lambda: m.get_status()["current_endpoint"] == eid


def query_until_ok(m, sql, params=None, timeout=10):
    """Run sql through the manager, retrying transient errors; (result, errors seen)."""
    deadline = time.monotonic() + timeout
    errs = []
    while True:
        try:
            with m.get_connection(timeout=2) as c:
                return c.execute_query(sql, params), errs
        except DatabaseError as e:
            errs.append(e)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ints(node, sql):
    return [int(r[0]) for r in node.sql(sql)]


# ---------------------------------------------------------------------------
# 1. primary crash, standby promoted: automatic failover
# ---------------------------------------------------------------------------

def test_primary_crash_promoted_standby_automatic_failover(pg_factory):
    p = pg_factory.primary("p1")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="s1")
    seen = []
    with DatabaseFailoverManager(two(p, s), config=cfg(auto_recovery=True)) as m:
        m.add_listener(seen.append)
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        assert insert(m, "t", 1) == p.port
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("primary", "a")
        s.wait_replayed(p)      # asynchronous replication: row 1 is on s before the crash

        t0 = time.monotonic()
        p.crash()
        s.promote()
        wait_for(on_endpoint(m, "b"), 10, what="failover to b")
        took = time.monotonic() - t0
        # the first borrow after the switch goes to the new primary at once
        assert insert(m, "t", 2) == s.port
        for n in range(3, 8):
            assert insert(m, "t", n) == s.port
        with m.get_connection(timeout=2) as c:
            assert c.execute_query("SELECT pg_is_in_recovery() AS r")[0]["r"] is False

        time.sleep(1.0)   # a is still down: nothing else may happen (no failback, no second failover)
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("secondary", "b"), st
        assert st["endpoints"]["a"]["is_available"] is False
        assert st["endpoints"]["b"]["role"] == "primary"
        fos = events(m, "failover")
        assert len(fos) == 1, [e.to_dict() for e in m.get_events()]
        ev = fos[0]
        assert isinstance(ev, FailoverEvent)
        assert (ev.from_endpoint, ev.to_endpoint, ev.success) == ("a", "b", True)
        assert ev.reason and "'a'" in ev.reason and "'b'" in ev.reason
        assert isinstance(ev.duration, float) and 0 <= ev.duration < cfg().failover_timeout
        assert ev.metadata["triggered_by"] == "monitor" and ev.metadata["manual"] is False
        assert not events(m, "failback") and not events(m, "split_brain")
        assert took < 10
        assert st["statistics"]["successful_failovers"] == 1
        assert [r["to_endpoint"] for r in st["recent_failovers"]] == ["b"]
        wait_for(lambda: any(e.event_id == ev.event_id for e in seen), 3, what="listener call")
    # the writes after the failover are on the new primary
    assert ints(s, "SELECT n FROM t ORDER BY n") == list(range(1, 8))


# ---------------------------------------------------------------------------
# 2. synchronous replication: no acknowledged insert is lost across the failover
# ---------------------------------------------------------------------------

def test_sync_replication_writer_loses_no_acknowledged_insert(pg_factory):
    p = pg_factory.primary("p2")
    p.sql("CREATE TABLE w (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="s2", sync=True)
    ok = []                 # (n, port, after_crash) of inserts that returned OK
    errors = []             # (n, error) of inserts that raised (retried with the same n)
    crashed = threading.Event()
    stop = threading.Event()
    failed = []

    with DatabaseFailoverManager(two(p, s), config=cfg(auto_recovery=False)) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})

        def writer():
            n = 1
            try:
                while not stop.is_set():
                    try:
                        with m.get_connection(timeout=2) as c:
                            c.execute_query("INSERT INTO w (n) VALUES (%s) ON CONFLICT DO NOTHING", (n,))
                            port = c.execute_query("SELECT inet_server_port() AS port")[0]["port"]
                    except DatabaseError as e:
                        # unknown outcome or refused: retry the same number (ON CONFLICT covers a
                        # commit that reached the server before the error)
                        errors.append((n, e))
                        time.sleep(0.02)
                        continue
                    ok.append((n, port, crashed.is_set()))
                    n += 1
            except BaseException as e:  # pragma: no cover - reported by the main thread
                failed.append(e)

        th = threading.Thread(target=writer, name="writer")
        th.start()
        try:
            wait_for(lambda: len(ok) >= 40, 15, what="40 inserts before the crash")
            p.crash()
            crashed.set()
            s.promote()
            wait_for(lambda: sum(1 for x in ok if x[2] and x[1] == s.port) >= 40, 20,
                     what="40 inserts on the new primary after the crash")
        finally:
            stop.set()
            th.join(15)
        assert not th.is_alive() and not failed, failed
        assert m.get_status()["current_endpoint"] == "b"

    before = [n for n, port, after in ok if not after]
    assert len(before) >= 40 and all(port == p.port for n, port, after in ok if not after)
    rows = ints(s, "SELECT n FROM w ORDER BY n")
    assert len(rows) == len(set(rows)), "a number appears twice"
    missing = sorted(set(before) - set(rows))
    assert not missing, "acknowledged inserts lost in the failover: %s" % missing[:20]
    # the writer moved on only after an OK, and retried every error: exactly 1..last
    assert rows == [n for n, _, _ in ok] == list(range(1, len(ok) + 1))


# ---------------------------------------------------------------------------
# 3/4. switchover: the old primary rewound as a read-only standby
# ---------------------------------------------------------------------------

def _switchover(pg_factory, m, p, s):
    """Clean switchover under manager m: stop p, promote s, wait for m on b, rewind p as s's standby."""
    s.wait_replayed(p)
    p.stop("fast")
    s.promote()
    wait_for(on_endpoint(m, "b"), 10, what="failover to b after the switchover")
    pg_factory.rewind_as_standby(p, s)
    assert p.in_recovery() and not s.in_recovery()


def test_switchover_rewound_old_primary_gets_no_writes_and_no_failback(pg_factory):
    p = pg_factory.primary("p3")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="s3")
    with DatabaseFailoverManager(two(p, s), config=cfg(auto_recovery=True, recovery_check_interval=0.2)) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        assert insert(m, "t", 1) == p.port
        _switchover(pg_factory, m, p, s)
        # the old primary is back and healthy, but read-only: the manager must stay on b
        wait_probed(m, {"a": "standby", "b": "primary"})
        time.sleep(0.3)
        ports, ro = [], []
        end = time.monotonic() + 2.0     # well past recovery_check_interval and hold_down
        n = 2
        while time.monotonic() < end:
            try:
                ports.append(insert(m, "t", n))
                n += 1
            except DatabaseError as e:
                ro.append(e)
            time.sleep(0.02)
        assert not ro, ["%s (sqlstate %s)" % (e, e.sqlstate) for e in ro]
        assert set(ports) == {s.port}
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("secondary", "b"), st
        assert st["endpoints"]["a"]["is_available"] is True and st["endpoints"]["a"]["role"] == "standby"
        assert not events(m, "failback"), [e.to_dict() for e in m.get_events()]
        assert [(e.from_endpoint, e.to_endpoint) for e in switches(m)] == [("a", "b")]
    # everything was written on s; the standby only has it by replication
    p.wait_replayed(s)
    assert ints(s, "SELECT count(*) FROM t") == [n - 1] == ints(p, "SELECT count(*) FROM t")
    assert p.in_recovery()


def test_role_mismatch_preferred_endpoint_is_a_read_only_standby(pg_factory):
    """After a switchover, a manager made with the old layout (a preferred) starts on a read-only
    server: with require_writable it notices the role (probe or 25006 on the query path) and uses
    the writable server."""
    p = pg_factory.primary("p3r")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="s3r")
    p.stop("fast")
    s.promote()
    pg_factory.rewind_as_standby(p, s)

    # monitored: within a few probe intervals it is on b, and no write ever meets the standby
    with DatabaseFailoverManager(two(p, s), config=cfg()) as m:
        m.start_monitoring()
        wait_for(on_endpoint(m, "b"), 5, what="switch away from the read-only preferred endpoint")
        for n in range(1, 21):
            assert insert(m, "t", n) == s.port
        ev = switches(m)
        assert [(e.from_endpoint, e.to_endpoint) for e in ev] == [("a", "b")]
        assert "read-only" in ev[0].reason
        assert m.get_status()["current_state"] == "secondary"

    # passive, no monitor thread: the first write meets 25006, the manager notices and the
    # next write goes to the writable server
    with DatabaseFailoverManager(two(p, s), config=cfg()) as m:
        with pytest.raises(DatabaseError) as ei:
            insert(m, "t", 100)
        assert ei.value.sqlstate == "25006"
        assert insert(m, "t", 101) == s.port
        assert m.get_status()["current_endpoint"] == "b"
        assert not m.monitoring
    p.wait_replayed(s)
    assert ints(s, "SELECT n FROM t WHERE n > 20") == [101]


def test_failback_once_the_rewound_old_primary_is_writable_again(pg_factory):
    p = pg_factory.primary("p4")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="s4")
    with DatabaseFailoverManager(two(p, s), config=cfg(auto_recovery=True, recovery_check_interval=0.3)) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        _switchover(pg_factory, m, p, s)
        wait_probed(m, {"a": "standby", "b": "primary"})
        assert insert(m, "t", 1) == s.port
        time.sleep(0.5)
        assert m.get_status()["current_endpoint"] == "b"
        # the new primary goes away cleanly, the rewound old one is promoted: back to a
        p.wait_replayed(s)
        s.stop("fast")
        p.promote()
        wait_for(lambda: m.get_status()["current_state"] == "primary", 10, what="failback to a")
        st = m.get_status()
        assert st["current_endpoint"] == "a"
        fb = events(m, "failback")
        assert fb and fb[-1].success and (fb[-1].from_endpoint, fb[-1].to_endpoint) == ("b", "a")
        assert insert(m, "t", 2) == p.port
        assert st["statistics"]["successful_recoveries"] >= 1
    assert ints(p, "SELECT n FROM t ORDER BY n") == [1, 2]


def test_split_brain_holds_the_failback(pg_factory):
    p = pg_factory.primary("p5")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="s5")
    with DatabaseFailoverManager(two(p, s), config=cfg(auto_recovery=True, recovery_check_interval=0.2)) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        p.crash()
        s.promote()
        wait_for(on_endpoint(m, "b"), 10, what="failover to b")
        # the old primary comes back without a rewind: two servers accept writes
        p.start()
        assert not p.in_recovery()
        wait_for(lambda: events(m, "split_brain"), 5, what="a split_brain event")
        time.sleep(1.0)   # recovery_check_interval and hold_down long past
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("secondary", "b"), st
        assert st["endpoints"]["a"]["role"] == "primary" and st["endpoints"]["a"]["is_available"]
        assert not events(m, "failback")
        sb = events(m, "split_brain")
        assert len(sb) == 1, [e.to_dict() for e in sb]   # recorded once, not once per tick
        assert "split brain" in sb[0].reason and not sb[0].success
        assert insert(m, "t", 1) == s.port
    assert ints(p, "SELECT count(*) FROM t") == [0]


# ---------------------------------------------------------------------------
# 5. MANUAL and SEMI_AUTOMATIC
# ---------------------------------------------------------------------------

def test_manual_mode_switches_only_on_trigger_failover(pg_factory):
    p = pg_factory.primary("p6")
    s = pg_factory.standby(p, name="s6")
    with DatabaseFailoverManager(two(p, s), config=cfg(mode=FailoverMode.MANUAL)) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        # a standby cannot take over while require_writable
        assert m.trigger_failover("too early") is False
        p.crash()
        s.promote()
        wait_probed(m, {"b": "primary"})
        wait_for(lambda: m.get_status()["endpoints"]["a"]["is_available"] is False, 5, what="a seen down")
        time.sleep(1.0)
        st = m.get_status()
        assert st["current_endpoint"] == "a", st
        assert not switches(m)
        assert m.trigger_failover("operator says so", target="b") is True
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("secondary", "b")
        assert port_of(m) == s.port
        (ev,) = switches(m)
        assert ev.metadata["manual"] is True and ev.metadata["triggered_by"] == "operator"
        assert "operator says so" in ev.reason and (ev.from_endpoint, ev.to_endpoint) == ("a", "b")


def test_semi_automatic_fails_over_alone_and_back_only_on_trigger_recovery(pg_factory):
    # require_writable=False: the (unpromoted) standby is a valid target, and when the
    # old primary restarts it is the only writable server (no split brain)
    p = pg_factory.primary("p7")
    s = pg_factory.standby(p, name="s7")
    conf = cfg(mode=FailoverMode.SEMI_AUTOMATIC, require_writable=False, recovery_check_interval=0.2)
    with DatabaseFailoverManager(two(p, s), config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        p.crash()
        wait_for(on_endpoint(m, "b"), 10, what="automatic failover to b")
        assert port_of(m) == s.port
        assert m.trigger_recovery() is False          # a is down
        p.start()
        wait_probed(m, {"a": "primary"})
        wait_for(lambda: m.get_status()["endpoints"]["a"]["is_available"], 5, what="a available")
        time.sleep(1.0)   # past recovery_check_interval and hold_down: still no failback
        assert m.get_status()["current_endpoint"] == "b"
        assert not events(m, "failback")
        assert m.trigger_recovery() is True
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("primary", "a")
        (fb,) = events(m, "failback")
        assert fb.success and fb.metadata["manual"] is True
        assert port_of(m) == p.port
        fo = events(m, "failover")
        assert len(fo) == 1 and fo[0].metadata["manual"] is False


# ---------------------------------------------------------------------------
# 6. RESPONSE_TIME through a latency proxy; a frozen server
# ---------------------------------------------------------------------------

def test_response_time_policy_through_latency_proxy(pg_factory):
    p = pg_factory.primary("p8")
    s = pg_factory.standby(p, name="s8")
    px = pg_factory.proxy(p)
    conf = cfg(policy=FailoverPolicy.RESPONSE_TIME, response_time_threshold=0.1, require_writable=False,
               recovery_check_interval=0.3, health_check_timeout=2)
    with DatabaseFailoverManager(two(p, s, a_target=px), config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        assert port_of(m) == p.port
        time.sleep(0.5)
        assert not switches(m)     # fast: nothing happens
        t0 = time.monotonic()
        px.set_delay(0.3)
        wait_for(on_endpoint(m, "b"), 10, what="failover on response time")
        took = time.monotonic() - t0
        # two slow probes of ~0.3 s each, an interval apart, plus margin
        assert took < 5, took
        (ev,) = switches(m)
        assert ev.metadata["policy"] == "response_time" and "response time" in ev.reason
        assert port_of(m) == s.port
        time.sleep(1.0)            # a is slow: no failback to it
        assert m.get_status()["current_endpoint"] == "b"
        px.set_delay(0)            # fast again: automatic failback
        wait_for(on_endpoint(m, "a"), 10, what="failback once a is fast again")
        assert m.get_status()["current_state"] == "primary"
        assert port_of(m) == p.port


def test_frozen_primary_detected_within_health_check_timeout(pg_factory):
    p = pg_factory.primary("p9")
    s = pg_factory.standby(p, name="s9")
    conf = cfg(auto_recovery=False)
    with DatabaseFailoverManager(two(p, s), config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        assert port_of(m) == p.port
        t_wall, t0 = time.time(), time.monotonic()
        p.freeze()
        s.promote()
        wait_for(on_endpoint(m, "b"), 15, what="failover away from the frozen primary")
        took = time.monotonic() - t0
        bound = conf.health_check_timeout * conf.max_failure_count + 5 * conf.health_check_interval + 1.5
        assert took < bound, (took, bound)
        (ev,) = switches(m)
        ev_at = ev.timestamp.timestamp() + ev.duration - t_wall
        assert 0 < ev_at < bound, ev_at
        assert ev.metadata["policy"] == "health_check" and "timed out" in ev.reason
        dts = ev.metadata["detection_to_switch"]
        assert isinstance(dts, float) and 0 <= dts < bound, ev.metadata
        # nothing answers faster than health_check_timeout when frozen (the probe's deadline)
        assert took > conf.health_check_timeout * 0.5, took
        t1 = time.monotonic()
        assert port_of(m) == s.port
        assert time.monotonic() - t1 < 1.0


# ---------------------------------------------------------------------------
# 7. three endpoints: priority, the best writable target, none usable
# ---------------------------------------------------------------------------

def test_three_endpoints_picks_the_only_writable_target_despite_priority(pg_factory):
    p = pg_factory.primary("p10")
    s1 = pg_factory.standby(p, name="s10a")
    s2 = pg_factory.standby(p, name="s10b")
    eps = [ep("a", p, 1, primary=True), ep("b", s1, 2), ep("c", s2, 3)]
    with DatabaseFailoverManager(eps, config=cfg(auto_recovery=False)) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby", "c": "standby"})
        p.crash()
        s2.promote()      # only the worst-priority standby becomes writable
        wait_for(lambda: m.get_status()["current_endpoint"] in ("b", "c"), 10, what="a failover")
        time.sleep(0.5)
        st = m.get_status()
        assert st["current_endpoint"] == "c", (st, [e.to_dict() for e in m.get_events()])
        assert [(e.from_endpoint, e.to_endpoint) for e in switches(m)] == [("a", "c")]
        assert st["endpoints"]["b"]["role"] == "standby"
        assert port_of(m) == s2.port


def test_three_endpoints_priority_order_then_none_usable_then_resume(pg_factory):
    p = pg_factory.primary("p11")
    s1 = pg_factory.standby(p, name="s11a")
    s2 = pg_factory.standby(p, name="s11b")
    # priority numbers against list order: c (2) before b (3)
    eps = [ep("a", p, 1, primary=True), ep("b", s1, 3), ep("c", s2, 2)]
    conf = cfg(require_writable=False, auto_recovery=False)
    with DatabaseFailoverManager(eps, config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby", "c": "standby"})
        p.crash()
        wait_for(on_endpoint(m, "c"), 10, what="failover to c (priority 2)")
        assert port_of(m) == s2.port
        s2.crash()
        wait_for(on_endpoint(m, "b"), 10, what="failover to b (priority 3)")
        assert port_of(m) == s1.port
        assert [(e.from_endpoint, e.to_endpoint) for e in switches(m)] == [("a", "c"), ("c", "b")]

        # none usable
        s1.stop("immediate")
        wait_for(lambda: m.get_status()["current_state"] == "unavailable", 10, what="unavailable")
        st = m.get_status()
        assert st["current_endpoint"] is None
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(OperationalError) as ei:
                with m.get_connection(timeout=2):
                    pass
            assert ei.value.error_code == 4015
            assert time.monotonic() - t0 < 0.5
        assert events(m, "no_target")

        # one comes back: service resumes by itself
        s1.start()
        wait_for(lambda: m.get_status()["current_state"] != "unavailable", 10, what="service resumed")
        st = m.get_status()
        assert st["current_endpoint"] == "b", st
        rows, _ = query_until_ok(m, "SELECT inet_server_port() AS port", timeout=5)
        assert rows[0]["port"] == s1.port
        assert events(m, "resumed")


# ---------------------------------------------------------------------------
# 8. a flapping endpoint: hold-down prevents a failover storm
# ---------------------------------------------------------------------------

def test_flapping_endpoint_does_not_cause_a_failover_storm(pg_factory):
    p = pg_factory.primary("p12")
    s = pg_factory.standby(p, name="s12")
    px = pg_factory.proxy(p)
    conf = cfg(hold_down=2, require_writable=False, recovery_check_interval=0.2, health_check_timeout=0.5)
    with DatabaseFailoverManager(two(p, s, a_target=px), config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        stop = threading.Event()
        queries = {"ok": 0, "err": 0}

        def client():
            while not stop.is_set():
                try:
                    port_of(m, timeout=1)
                    queries["ok"] += 1
                except DatabaseError:
                    queries["err"] += 1
                time.sleep(0.01)

        th = threading.Thread(target=client)
        th.start()
        t0 = time.monotonic()
        first = None
        try:
            # Flap until the flapping has caused a failover (so hold-down is put to
            # the test), then 3 s more (< 2 hold-downs: at most one more switch).
            k = 0
            while first is None or time.monotonic() - first < 3.0:
                assert time.monotonic() - t0 < 30, "30 s of flapping caused no failover"
                px.reset_all()
                px.blackhole(k % 2 == 0)
                k += 1
                time.sleep(0.2)
                if first is None and switches(m):
                    first = time.monotonic()
        finally:
            px.clear()
            stop.set()
            th.join(10)
        sw = switches(m)   # none before t0: the topology was quiet
        assert 1 <= len(sw) <= 2, [e.to_dict() for e in sw]
        for e1, e2 in zip(sw, sw[1:]):
            gap = e2.timestamp.timestamp() - (e1.timestamp.timestamp() + e1.duration)
            assert gap >= conf.hold_down - 0.1, gap
        assert queries["ok"] > 0


# ---------------------------------------------------------------------------
# passive detection on the query path, no monitor thread
# ---------------------------------------------------------------------------

def test_passive_detection_before_monitoring_starts(pg_factory):
    """Crash + promote with no monitor thread: the next query fails (connection lost) or is
    already served by the promoted standby (the borrow noticed a cannot be reached and switched);
    the one after succeeds on the promoted standby in any case."""
    p = pg_factory.primary("p13")
    s = pg_factory.standby(p, name="s13")
    with DatabaseFailoverManager(two(p, s), config=cfg()) as m:
        assert port_of(m) == p.port          # a pooled connection to a is now idle
        p.crash()
        s.promote()
        try:
            assert port_of(m) == s.port
        except OperationalError:
            pass
        assert port_of(m) == s.port
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("secondary", "b")
        assert not m.monitoring
        assert len(switches(m)) == 1


def test_passive_detection_of_a_connection_lost_mid_use(pg_factory):
    """Same, with the connection already borrowed when the server dies: the query on it fails
    and the next borrow goes to the promoted standby."""
    p = pg_factory.primary("p14")
    s = pg_factory.standby(p, name="s14")
    with DatabaseFailoverManager(two(p, s), config=cfg()) as m:
        with m.get_connection(timeout=2) as c:
            assert c.execute_query("SELECT inet_server_port() AS port")[0]["port"] == p.port
            p.crash()
            s.promote()
            with pytest.raises(OperationalError):
                c.execute_query("SELECT 1")
        assert port_of(m) == s.port
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("secondary", "b")
        assert not m.monitoring


def test_passive_outage_without_monitoring_resumes_when_the_primary_is_back(pg_factory):
    """No monitor thread; the primary restarts (fast shutdown ends the session with 57P01, the
    server is back at once) while the standby stays a standby: no target, so the manager says
    unavailable.  The primary is usable again, so service must resume by itself."""
    p = pg_factory.primary("p16")
    s = pg_factory.standby(p, name="s16")
    with DatabaseFailoverManager(two(p, s), config=cfg()) as m:
        with m.get_connection(timeout=2) as c:
            assert c.execute_query("SELECT inet_server_port() AS port")[0]["port"] == p.port
            p.restart("fast")
            assert p.is_running() and not p.in_recovery()
            with pytest.raises(OperationalError):
                c.execute_query("SELECT 1")
        rows, errs = query_until_ok(m, "SELECT inet_server_port() AS port", timeout=3)
        assert rows[0]["port"] == p.port
        assert m.get_status()["current_state"] == "primary"
        assert not m.monitoring


# ---------------------------------------------------------------------------
# a switch drains the abandoned (live) endpoint; no later borrow reaches it
# ---------------------------------------------------------------------------

def test_switch_drains_the_abandoned_endpoint_and_no_later_borrow_reaches_it(pg_factory):
    p = pg_factory.primary("p15")
    s = pg_factory.standby(p, name="s15")
    app = "nct_fo_drain"
    eps = [DatabaseEndpoint(id="a", name="A", connection_string=p.dsn(application_name=app), priority=1,
                            is_primary=True), ep("b", s, 2)]
    conf = cfg(mode=FailoverMode.MANUAL, require_writable=False, pool_max_connections=6)

    def sessions_on_a():
        return int(p.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'" % app))

    with DatabaseFailoverManager(eps, config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        stop = threading.Event()
        log = []     # (monotonic time the borrow started, port or error)

        def borrower():
            while not stop.is_set():
                t = time.monotonic()
                try:
                    log.append((t, port_of(m)))
                except DatabaseError as e:
                    log.append((t, repr(e)))
                time.sleep(0.002)

        threads = [threading.Thread(target=borrower) for _ in range(3)]
        with m.get_connection(timeout=2) as held:
            assert held.execute_query("SELECT inet_server_port() AS port")[0]["port"] == p.port
            for th in threads:
                th.start()
            try:
                wait_for(lambda: len(log) > 50, 5, what="borrows on a")
                assert sessions_on_a() >= 3     # the probe, the held one, the borrowers'
                assert m.trigger_failover("drain test", target="b") is True
                t_switch = time.monotonic()
                wait_for(lambda: sum(1 for t, _ in log if t > t_switch) > 50, 5, what="borrows after")
            finally:
                stop.set()
                for th in threads:
                    th.join(5)
            # the connection borrowed before the switch still works until it is given back
            assert held.execute_query("SELECT inet_server_port() AS port")[0]["port"] == p.port
        before = {port for t, port in log if t < t_switch - 0.05}
        after = {port for t, port in log if t > t_switch}
        assert before == {p.port} and after == {s.port}, (before, after)
        st = m.get_pool("a").get_stats()
        assert (st.total_connections, st.idle_connections, st.active_connections) == (0, 0, 0), st
        # only the monitor's probe connection is left on a
        wait_for(lambda: sessions_on_a() == 1, 5, what="a's pool sessions closed (%s)" % sessions_on_a())


# ---------------------------------------------------------------------------
# passive reports on a healthy primary: one session's trouble is not the server's
# ---------------------------------------------------------------------------

def _no_outage_for(m, seconds):
    """Borrow and query for `seconds`; the errors seen and the states observed."""
    errs, states = [], set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        states.add(m.get_status()["current_state"])
        try:
            with m.get_connection(timeout=2) as c:
                c.execute_query("SELECT 1")
        except DatabaseError as e:
            errs.append(e)
        time.sleep(0.01)
    return errs, states


def test_read_only_transaction_on_the_writable_primary_does_not_make_it_unusable(pg_factory):
    """25006 also comes from a read-only TRANSACTION (BEGIN READ ONLY, SET TRANSACTION READ ONLY,
    a session's default_transaction_read_only) on a perfectly writable primary.  One client doing
    that must not take the primary out of service for everyone."""
    p = pg_factory.primary("p17")
    p.sql("CREATE TABLE t (n int)")
    s = pg_factory.standby(p, name="s17")
    conf = cfg(health_check_interval=3, max_failure_count=3)
    with DatabaseFailoverManager(two(p, s), config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        with m.get_connection(timeout=2) as c:
            c.execute_query("BEGIN READ ONLY")
            with pytest.raises(DatabaseError) as ei:
                c.execute_query("INSERT INTO t VALUES (1)")
            assert ei.value.sqlstate == "25006"
            c.execute_query("ROLLBACK")
        assert not p.in_recovery()          # the server is writable all along
        errs, states = _no_outage_for(m, 1.0)
        assert not errs, "%d borrows failed after one read-only transaction, e.g. %s; events %s" % (
            len(errs), errs[0], [(e.metadata["kind"], e.reason) for e in m.get_events()])
        assert states == {"primary"}, states
        assert insert(m, "t", 2) == p.port


def test_one_terminated_session_does_not_make_a_healthy_primary_unusable(pg_factory):
    """pg_terminate_backend of one pooled session (an admin, idle_session_timeout, a proxy): the
    query on it fails with a lost connection, but the server is fine; with max_failure_count=3
    one such failure must not put the manager out of service until the next probe."""
    p = pg_factory.primary("p18")
    s = pg_factory.standby(p, name="s18")
    conf = cfg(health_check_interval=3, max_failure_count=3)
    with DatabaseFailoverManager(two(p, s), config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        with m.get_connection(timeout=2) as c:
            pid = c.execute_query("SELECT pg_backend_pid() AS pid")[0]["pid"]
            assert p.scalar("SELECT pg_terminate_backend(%d, 5000)" % pid) == "t"
            with pytest.raises(OperationalError):
                c.execute_query("SELECT 1")
        errs, states = _no_outage_for(m, 1.0)
        assert not errs, "%d borrows failed after one terminated session, e.g. %s; events %s" % (
            len(errs), errs[0], [(e.metadata["kind"], e.reason) for e in m.get_events()])
        assert states == {"primary"}, states


# ---------------------------------------------------------------------------
# bounded waits on a frozen target / frozen servers
# ---------------------------------------------------------------------------

def test_manual_failover_to_a_frozen_target_is_bounded_and_shutdown_too(pg_factory):
    p = pg_factory.primary("p19")
    s = pg_factory.standby(p, name="s19")
    conf = cfg(mode=FailoverMode.MANUAL, require_writable=False, failover_timeout=1.5)
    m = DatabaseFailoverManager(two(p, s), config=conf)
    try:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        assert port_of(m) == p.port
        s.freeze()
        t0 = time.monotonic()
        assert m.trigger_failover("to a frozen server", target="b") is False
        took = time.monotonic() - t0
        assert conf.failover_timeout * 0.8 < took < conf.failover_timeout + 2.0, took
        st = m.get_status()
        assert (st["current_state"], st["current_endpoint"]) == ("primary", "a")
        assert st["statistics"]["failed_failovers"] == 1
        (ev,) = events(m, "failover")
        assert ev.success is False and ev.metadata["manual"] is True and "verification" in ev.reason
        assert port_of(m) == p.port            # still served by a
        p.freeze()                             # now both are frozen, probes hang
        time.sleep(0.3)
    finally:
        t0 = time.monotonic()
        m.shutdown()
        took = time.monotonic() - t0
    # stop joins probes for at most health_check_timeout + 0.5, then each pool gets 1 s
    assert took < conf.health_check_timeout + 0.5 + 2 * 1 + 2.0, took


def test_manual_mode_outage_without_monitoring_never_switches_on_its_own(pg_factory):
    """MANUAL mode, monitor stopped: a manual switch to b fails verification while a is down, so
    the manager is unavailable.  When b comes back, a borrow must not move the manager to b on
    its own (MANUAL: "UNAVAILABLE resumes on the same endpoint when it is back, never on
    another"); when a comes back, service resumes on a."""
    p = pg_factory.primary("p20")
    s = pg_factory.standby(p, name="s20")
    conf = cfg(mode=FailoverMode.MANUAL, require_writable=False)
    with DatabaseFailoverManager(two(p, s), config=conf) as m:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        m.stop_monitoring()
        assert not m.monitoring
        s.crash()
        p.crash()
        with pytest.raises(OperationalError):
            port_of(m)                       # a cannot be reached (reported on the query path)
        assert m.get_status()["current_endpoint"] == "a"
        assert m.trigger_failover("operator", target="b") is False     # b is down too
        assert m.get_status()["current_state"] == "unavailable"
        s.start()
        s.wait_ready()
        for _ in range(3):
            try:
                port = port_of(m)
            except OperationalError as e:
                assert e.error_code == 4015
                port = None
            assert port != s.port, "MANUAL mode switched to b without the operator: %s" % [
                e.to_dict() for e in switches(m)]
            time.sleep(0.1)
        assert not [e for e in switches(m)], [e.to_dict() for e in m.get_events()]
        p.start()
        rows, _ = query_until_ok(m, "SELECT inet_server_port() AS port", timeout=5)
        assert rows[0]["port"] == p.port
        assert m.get_status()["current_endpoint"] == "a"
