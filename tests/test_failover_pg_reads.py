"""Read routing and failover_wait against real PostgreSQL 15 servers
(noodlecore.testing): a multi-host DSN as the topology, reads on streaming
standbys (balanced, within the lag limits), a standby whose replay is stalled
(its startup process stopped with SIGSTOP) excluded and then back, and a
primary borrow that waits across a promote instead of failing (and Ctrl-C
ending that wait).

``inet_server_port()`` tells which server answered.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from helpers import cfg, ep, subprocess_env, wait_for
from noodlecore.database import ConfigurationError, DatabaseConnectionPool, DatabaseManager, OperationalError
from noodlecore.database.failover_manager import DatabaseFailoverManager
from noodlecore.database.metrics import get_metrics, register_prometheus

# Slow (servers, standbys, a promote): the pytest-python3 stage only
# (conftest.py); the binding's read paths run in every stage through
# test_routing_args.py, the core's under the sanitizers in csrc/tests.
pytestmark = pytest.mark.once

PORT_SQL = "SELECT inet_server_port() AS port, pg_is_in_recovery() AS ro"


def multi_dsn(*nodes, extra="target_session_attrs=read-write"):
    hosts = ",".join("127.0.0.1:%d" % n.port for n in nodes)
    return "postgresql://postgres@%s/postgres?%s" % (hosts, extra)


def eid(node):
    return "127.0.0.1:%d" % node.port


def read_port(m, target, timeout=3):
    with m.get_connection(timeout=timeout, target=target) as c:
        row = c.execute_query(PORT_SQL)[0]
    return row["port"], row["ro"]


def standby_read_or_none(m):
    """read_port(m, "standby"), or None while no standby qualifies (4017)."""
    try:
        return read_port(m, "standby")
    except OperationalError as exc:
        if exc.error_code != 4017:
            raise
        return None


def wait_serving(m, nodes, timeout=10, ids=None):
    """Until each standby node serves reads (probed read-only, lag known and within the limits)."""
    def ok():
        eps = m.get_status()["endpoints"]
        return all(eps[(ids or {}).get(n) or eid(n)]["serves_reads"] for n in nodes)
    wait_for(ok, timeout, what="standbys serving reads: %s" % m.get_status()["endpoints"])


def startup_pid(node):
    """The standby's startup process (the one replaying WAL), from /proc."""
    pm = node.postmaster_pid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pm and cmd.startswith(b"postgres: startup"):
            return int(name)
    raise AssertionError("no startup process under postmaster %d" % pm)


# ---------------------------------------------------------------------------
# a multi-host DSN as the topology; reads balanced over two standbys
# ---------------------------------------------------------------------------

def test_multi_host_dsn_routes_writes_to_the_primary_and_reads_over_the_standbys(pg_factory):
    p = pg_factory.primary("rp")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s1 = pg_factory.standby(p, name="rs1")
    s2 = pg_factory.standby(p, name="rs2")
    # the standby first: priority follows the list, the probes find the writable host
    dsn = multi_dsn(s1, p, s2)
    with DatabaseFailoverManager.from_dsn(dsn, config=cfg()) as m:
        assert [e.id for e in m.endpoints] == [eid(s1), eid(p), eid(s2)]
        assert [e.priority for e in m.endpoints] == [1, 2, 3]
        assert all("target_session_attrs" not in e.connection_string for e in m.endpoints)
        m.start_monitoring()
        wait_for(lambda: m.current_endpoint == eid(p), 10, what="the writable host is current")
        wait_serving(m, [s1, s2])

        # writes: the primary, and never a standby
        for n in range(5):
            with m.get_connection(timeout=3) as c:
                row = c.execute_query("INSERT INTO t VALUES (%s) RETURNING inet_server_port() AS port", (n,))[0]
            assert row["port"] == p.port

        # reads on standbys, in turn while none is busy
        ports = [read_port(m, "standby") for _ in range(10)]
        assert all(ro is True for _, ro in ports), ports
        seq = [port for port, _ in ports]
        assert set(seq) == {s1.port, s2.port}
        assert all(a != b for a, b in zip(seq, seq[1:])), seq   # strict alternation on ties

        # least in flight: with one standby's connection held, the other serves
        with m.get_connection(timeout=3, target="standby") as held:
            busy = held.execute_query(PORT_SQL)[0]["port"]
            for _ in range(4):
                assert read_port(m, "standby")[0] == ({s1.port, s2.port} - {busy}).pop()
            assert read_port(m, "prefer-standby")[0] != busy

        # "any" spreads over primary and standbys alike
        assert {read_port(m, "any")[0] for _ in range(6)} == {p.port, s1.port, s2.port}

        # a write replayed is readable on the standbys
        s1.wait_replayed(p)
        s2.wait_replayed(p)
        with m.get_connection(timeout=3, target="standby") as c:
            assert c.execute_query("SELECT count(*) AS k FROM t")[0]["k"] == 5

        st = m.get_status()["endpoints"]
        assert st[eid(p)]["role"] == "primary" and st[eid(s1)]["role"] == "standby"
        assert st[eid(p)]["writes"] >= 5 and st[eid(p)]["lag_bytes"] is None
        assert st[eid(s1)]["reads"] >= 5 and st[eid(s2)]["reads"] >= 5
        assert st[eid(s1)]["writes"] == 0 and st[eid(s2)]["writes"] == 0
        for s in (s1, s2):
            assert st[eid(s)]["lag_bytes"] >= 0 and st[eid(s)]["lag_seconds"] >= 0
            assert isinstance(st[eid(s)]["lsn"], int)

        with pytest.raises(ConfigurationError) as ei:
            with m.get_connection(target="read-only"):
                pass
        assert ei.value.error_code == 4018

        # metrics: the same facts, as a dict and for Prometheus
        mx = get_metrics(m)["endpoints"]
        assert mx[eid(s1)]["serves_reads"] is True and mx[eid(s1)]["lag_bytes"] >= 0
        assert mx[eid(p)]["writes"] >= 5 and mx[eid(p)]["lag_seconds"] is None
        reg = CollectorRegistry()
        register_prometheus(m, registry=reg, name="reads")
        text = generate_latest(reg).decode()
        assert 'noodlecore_endpoint_serves_reads{endpoint="%s",name="reads"} 1.0' % eid(s2) in text
        assert 'noodlecore_endpoint_borrows_total{endpoint="%s",name="reads",target="primary"}' % eid(p) in text
        assert 'noodlecore_endpoint_replica_lag_seconds{endpoint="%s",name="reads"}' % eid(s1) in text
        assert 'noodlecore_endpoint_replica_lag_bytes{endpoint="%s",' % eid(p) not in text

    # DatabaseManager: target= on its query methods
    dm = DatabaseManager(enable_failover=True, failover_config=cfg(),
                         failover_endpoints=[ep("a", p, 1, primary=True), ep("b", s1, 2), ep("c", s2, 3)])
    with dm:
        wait_serving(dm.failover_manager, [s1, s2], ids={s1: "b", s2: "c"})
        assert dm.execute_query(PORT_SQL, target="standby")[0]["port"] in (s1.port, s2.port)
        assert len(dm.select("t", target="standby")) == 5
        assert dm.execute_query(PORT_SQL)[0]["port"] == p.port
        with dm.get_connection(target="prefer-standby") as c:
            assert c.execute_query(PORT_SQL)[0]["ro"] is True


def test_key_value_multi_host_dsn(pg_factory):
    p = pg_factory.primary("kp")
    s = pg_factory.standby(p, name="ks")
    dsn = "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres" % (p.port, s.port)
    with DatabaseFailoverManager.from_dsn(dsn, config=cfg()) as m:
        assert [e.id for e in m.endpoints] == [eid(p), eid(s)]
        m.start_monitoring()
        wait_serving(m, [s])
        assert read_port(m, "primary") == (p.port, False)
        assert read_port(m, "standby") == (s.port, True)
    # DatabaseManager: a multi-host DSN as config is its failover topology
    with DatabaseManager(config=dsn, enable_failover=True, failover_config=cfg()) as dm:
        assert [e.id for e in dm.failover_endpoints] == [eid(p), eid(s)]
        wait_serving(dm.failover_manager, [s])
        assert dm.execute_query(PORT_SQL, target="standby") == [{"port": s.port, "ro": True}]
        assert dm.execute_query(PORT_SQL) == [{"port": p.port, "ro": False}]
    with pytest.raises(ConfigurationError) as ei:
        DatabaseFailoverManager.from_dsn("host=a,,b")
    assert ei.value.error_code == 4019


# ---------------------------------------------------------------------------
# a standby whose replay is stalled: excluded by measured lag, then back
# ---------------------------------------------------------------------------

def test_stalled_replica_is_excluded_then_back(pg_factory):
    p = pg_factory.primary("sp")
    p.sql("CREATE TABLE w (n serial PRIMARY KEY, at timestamptz DEFAULT now())")
    s = pg_factory.standby(p, name="ss")
    writer_pool = DatabaseConnectionPool(p.dsn(), max_connections=1)
    stop = threading.Event()
    werrors = []

    def writer():
        # a primary that keeps writing: its WAL position moves on
        while not stop.is_set():
            try:
                with writer_pool.get_connection(timeout=3) as c:
                    c.execute_query("INSERT INTO w DEFAULT VALUES")
            except Exception as exc:   # reported below
                werrors.append(exc)
                return
            stop.wait(0.01)

    with DatabaseFailoverManager.from_dsn(multi_dsn(p, s),
                                          config=cfg(max_replica_lag_seconds=2.0)) as m:
        m.start_monitoring()
        wt = threading.Thread(target=writer, daemon=True)
        wt.start()
        try:
            wait_serving(m, [s])
            assert read_port(m, "standby") == (s.port, True)

            pid = startup_pid(s)
            os.kill(pid, signal.SIGSTOP)
            try:
                wait_for(lambda: not m.get_status()["endpoints"][eid(s)]["serves_reads"], 15,
                         what="the stalled standby excluded: %s" % m.get_status()["endpoints"])
                st = m.get_status()["endpoints"][eid(s)]
                assert st["lag_seconds"] > 2.0 and st["lag_bytes"] > 0, st
                assert st["role"] == "standby" and st["is_available"] is True   # up, only behind
                t0 = time.monotonic()
                with pytest.raises(OperationalError) as ei:
                    with m.get_connection(timeout=10, target="standby"):
                        pass
                assert ei.value.error_code == 4017
                assert time.monotonic() - t0 < 10     # at once, not at the borrow's timeout
                # never a read from the stalled standby: prefer-standby takes the primary
                for _ in range(10):
                    assert read_port(m, "prefer-standby") == (p.port, False)
                    assert read_port(m, "any")[0] == p.port
            finally:
                os.kill(pid, signal.SIGCONT)
            # back: caught up, it serves standby reads again
            wait_for(lambda: standby_read_or_none(m) == (s.port, True), 15,
                     what="the standby back: %s" % m.get_status()["endpoints"][eid(s)])
        finally:
            stop.set()
            wt.join(5)
            writer_pool.shutdown(timeout=1)
    assert not werrors, werrors


# ---------------------------------------------------------------------------
# failover_wait: a primary borrow waits across a promote; standby reads go on
# ---------------------------------------------------------------------------

def test_failover_wait_borrow_waits_for_the_promoted_standby(pg_factory):
    p = pg_factory.primary("wp")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="ws")
    with DatabaseFailoverManager.from_dsn(multi_dsn(p, s), config=cfg(failover_wait=30)) as m:
        m.start_monitoring()
        wait_serving(m, [s])
        s.wait_replayed(p)
        wait_serving(m, [s])

        p.crash()
        wait_for(lambda: m.current_state.value == "unavailable", 10, what="the outage seen")

        result = {}

        def borrower():
            t0 = time.monotonic()
            try:
                with m.get_connection(timeout=60) as c:
                    row = c.execute_query("INSERT INTO t VALUES (1) RETURNING inet_server_port() AS port, "
                                          "pg_is_in_recovery() AS ro")[0]
                result["row"] = row
            except Exception as exc:   # checked below
                result["error"] = exc
            result["waited"] = time.monotonic() - t0

        bt = threading.Thread(target=borrower, daemon=True)
        bt.start()
        # reads on the standby go on meanwhile
        for _ in range(3):
            assert read_port(m, "standby") == (s.port, True)
        # a borrow's own timeout bounds the wait
        with pytest.raises(OperationalError) as ei:
            with m.get_connection(timeout=0.3):
                pass
        assert ei.value.error_code == 4015
        assert bt.is_alive() and not result, result

        s.promote()
        bt.join(30)
        assert not bt.is_alive()
        assert "error" not in result, result
        # the write went to the promoted standby, which took writes by then
        assert result["row"] == {"port": s.port, "ro": False}
        assert m.current_endpoint == eid(s)
    assert s.scalar("SELECT count(*) FROM t") == "1"


def test_failover_wait_zero_fails_at_once(pg_factory):
    p = pg_factory.primary("zp")
    s = pg_factory.standby(p, name="zs")
    with DatabaseFailoverManager.from_dsn(multi_dsn(p, s), config=cfg()) as m:
        m.start_monitoring()
        wait_serving(m, [s])
        p.crash()
        wait_for(lambda: m.current_state.value == "unavailable", 10, what="the outage seen")
        t0 = time.monotonic()
        with pytest.raises(OperationalError) as ei:
            with m.get_connection(timeout=10):
                pass
        assert ei.value.error_code == 4015
        assert time.monotonic() - t0 < 10
        assert read_port(m, "prefer-standby") == (s.port, True)


# ---------------------------------------------------------------------------
# Ctrl-C ends a failover_wait
# ---------------------------------------------------------------------------

CTRL_C_CHILD = r'''
import sys, threading, time
from noodlecore.database.failover_manager import DatabaseFailoverManager, FailoverConfig

cfg = FailoverConfig(failover_wait=60, health_check_interval=0.1, health_check_timeout=1, hold_down=0,
                     max_failure_count=1, pool_options={"connect_timeout": 1})
m = DatabaseFailoverManager.from_dsn(sys.argv[1], config=cfg)
m.start_monitoring()
while m.current_state.value != "unavailable":
    time.sleep(0.01)
main = threading.main_thread().ident

def ready():
    # the main thread inside the native borrow (the innermost Python frame is _lend's)
    while sys._current_frames()[main].f_code.co_name != "_lend":
        time.sleep(0.005)
    print("READY", flush=True)

threading.Thread(target=ready, daemon=True).start()
try:
    with m.get_connection(timeout=60):
        print("NOT INTERRUPTED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
print("AFTER", m.current_state.value, flush=True)
m.shutdown()
'''


def test_ctrl_c_ends_a_failover_wait(tmp_path):
    """The wait is on the monitor's events without the GIL; Ctrl-C ends it
    within the core's 50 ms check (0.5 s: a correctness bound, as in
    test_interrupt.py)."""
    code = CTRL_C_CHILD
    # nothing listens on port 1: the only endpoint is down, no writable one exists
    proc = subprocess.Popen([sys.executable, "-c", code, "postgresql://postgres@127.0.0.1:1/postgres"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                            cwd=str(tmp_path))
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()[-2000:]
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "INTERRUPTED", proc.stderr.read()[-2000:]
        took = time.monotonic() - sent
        assert proc.stdout.readline().strip() == "AFTER unavailable"
        assert proc.wait(timeout=20) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert took < 0.5, "KeyboardInterrupt %.2f s after SIGINT (failover_wait)" % took


# ---------------------------------------------------------------------------
# read your writes (DatabaseManager session option, by LSN)
# ---------------------------------------------------------------------------

def test_read_your_writes_waits_for_the_standby_to_replay_the_write(pg_factory):
    p = pg_factory.primary("yp")
    p.sql("CREATE TABLE t (n int)")
    s = pg_factory.standby(p, name="ys")
    # lag limits out of the way: only read-your-writes keeps the stalled standby from this session
    fc = cfg(max_replica_lag_seconds=3600, max_replica_lag_bytes=1e12)
    count = "SELECT count(*) AS k, inet_server_port() AS port FROM t"
    with DatabaseManager(config=multi_dsn(p, s, extra="connect_timeout=2"), enable_failover=True,
                         failover_config=fc, read_your_writes=True) as dm:
        s.wait_replayed(p)
        wait_serving(dm.failover_manager, [s])
        assert dm.execute_query(count, target="standby") == [{"k": 0, "port": s.port}]   # no write yet
        pid = startup_pid(s)
        os.kill(pid, signal.SIGSTOP)
        try:
            dm.execute_query("INSERT INTO t VALUES (1)")
            # this session's reads: the primary while the standby has not replayed the write
            for _ in range(20):
                assert dm.execute_query(count, target="standby") == [{"k": 1, "port": p.port}]
                assert dm.select("t", target="prefer-standby") == [{"n": 1}]
            # another thread is another session: it wrote nothing, the standby serves it
            other = []
            th = threading.Thread(target=lambda: other.append(dm.execute_query(count, target="standby")))
            th.start()
            th.join(10)
            assert other == [[{"k": 0, "port": s.port}]]
        finally:
            os.kill(pid, signal.SIGCONT)
        s.wait_replayed(p)
        # once a probe saw the standby past the write, it serves the session again, with the row
        wait_for(lambda: dm.execute_query(count, target="standby") == [{"k": 1, "port": s.port}], 10,
                 what="the standby serving the session after replaying its write")
        # a transaction is a write too
        os.kill(pid, signal.SIGSTOP)
        try:
            with dm.transaction() as tx:
                tx.execute_query("INSERT INTO t VALUES (2)")
            assert dm.execute_query(count, target="standby") == [{"k": 2, "port": p.port}]
        finally:
            os.kill(pid, signal.SIGCONT)
