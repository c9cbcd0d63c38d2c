"""DatabaseFailoverManager against real PostgreSQL 15 servers (noodlecore.testing):
modes, policies and endpoint choice.  MANUAL and SEMI_AUTOMATIC modes, the
RESPONSE_TIME policy through a latency proxy, a frozen primary detected within
the health-check timeout, priority order with three endpoints, no usable
endpoint and resumption, and a flapping endpoint held down (no failover
storm).

Native libpq pools per endpoint and the native monitor; servers come from
``pg_factory`` (gone when the test ends), the helpers (cfg, two, port_of, ...)
from helpers.py; ``inet_server_port()`` tells which server answered.
"""

import threading
import time

import pytest

from helpers import (
    cfg, ep, events, on_endpoint, port_of, query_until_ok, switches, two, wait_for, wait_probed,
)
from noodlecore.database import DatabaseError, OperationalError
from noodlecore.database.failover_manager import DatabaseFailoverManager, FailoverMode, FailoverPolicy

# Timing scenarios on real servers: the same C paths on every interpreter, so
# tests/run.sh runs them in pytest-python3 only (not on the second CPython nor under ASan).
pytestmark = pytest.mark.scenario


# ---------------------------------------------------------------------------
# MANUAL and SEMI_AUTOMATIC
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
# RESPONSE_TIME through a latency proxy; a frozen server
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
# three endpoints: priority, the best writable target, none usable
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
# a flapping endpoint: hold-down prevents a failover storm
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
