"""DatabaseFailoverManager against real PostgreSQL 15 servers (noodlecore.testing):
switching between servers.  A primary crash with the standby promoted, writes
through a failover with synchronous replication (no acknowledged insert lost),
a switchover with the old primary rewound as a read-only standby (role
mismatch, no failback to it, failback once it is writable again), and split
brain holding the failback.

Native libpq pools per endpoint and the native monitor; servers come from
``pg_factory`` (gone when the test ends), the helpers (cfg, two, port_of, ...)
from helpers.py; ``inet_server_port()`` tells which server answered.
"""

import threading
import time

import pytest

from helpers import cfg, events, insert, on_endpoint, switches, two, wait_for, wait_probed
from noodlecore.database import DatabaseError
from noodlecore.database.failover_manager import DatabaseFailoverManager, FailoverEvent

# Timing scenarios on real servers: the same C paths on every interpreter, so
# tests/run.sh runs them in pytest-python3 only (not on the second CPython nor under ASan).
pytestmark = pytest.mark.scenario


def ints(node, sql):
    return [int(r[0]) for r in node.sql(sql)]


# ---------------------------------------------------------------------------
# primary crash, standby promoted: automatic failover
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
# synchronous replication: no acknowledged insert is lost across the failover
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
# switchover: the old primary rewound as a read-only standby
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
