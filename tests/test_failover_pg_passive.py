"""DatabaseFailoverManager against real PostgreSQL 15 servers (noodlecore.testing):
what the query path sees.  Passive detection before monitoring starts (and of
a connection lost mid-use, and resuming without a monitor), the abandoned
endpoint's pool drained on a switch, passive reports from one session's
trouble on a healthy primary (a read-only transaction, a terminated session),
bounded waits on frozen servers, and MANUAL mode without monitoring.

Native libpq pools per endpoint and the native monitor; servers come from
``pg_factory`` (gone when the test ends), the helpers (cfg, two, port_of, ...)
from helpers.py; ``inet_server_port()`` tells which server answered.
"""

import threading
import time

import pytest

from helpers import cfg, ep, events, insert, port_of, query_until_ok, switches, two, wait_for, wait_probed
from noodlecore.database import DatabaseError, OperationalError
from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverMode

# Timing scenarios on real servers: the same C paths on every interpreter, so
# tests/run.sh runs them in pytest-python3 only (not on the second CPython nor under ASan).
pytestmark = pytest.mark.scenario


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
