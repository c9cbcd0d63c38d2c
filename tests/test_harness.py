"""Tests of the test harness itself: real PostgreSQL 15 servers, the TCP fault proxy and the test CA."""

import os
import subprocess
import time

import pytest

from noodlecore.testing import PgCluster, SqlError, SqlTimeout, TcpProxy, popen_psql, run_psql, sweep_stale
from noodlecore.testing import processes
from noodlecore.testing.cluster import ROOT_PREFIX

# The command line and the harness are Python over code the other tests cover:
# they run in the pytest-python3 stage only (tests/run.sh).
pytestmark = pytest.mark.once


def _wait_for(cond, timeout=5, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s" % what)


def _background_sleeper(node, host, port, appname):
    """A psql through host:port sitting in pg_sleep; returns (popen, backend pid)."""
    p = popen_psql(host, port, "select pg_sleep(30)", appname=appname)
    q = "select pid from pg_stat_activity where application_name = '%s' and state = 'active'" % appname
    _wait_for(lambda: node.sql(q) or p.poll() is not None, what="background psql")
    assert p.poll() is None, p.stderr.read()
    return p, int(node.sql(q)[0][0])


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------

def test_primary_starts_and_sql_works(pg):
    assert pg.is_running()
    assert not pg.in_recovery()
    assert pg.postmaster_pid() > 0
    assert 20000 <= pg.port <= 31999
    assert pg.dsn(connect_timeout=2) == \
        "postgresql://postgres@127.0.0.1:%d/postgres?connect_timeout=2" % pg.port
    assert pg.kv_dsn() == "host=127.0.0.1 port=%d user=postgres dbname=postgres" % pg.port
    assert pg.sql("select 1, 'a b', null") == [["1", "a b", ""]]
    assert pg.sql("select 1 where false") == []
    assert pg.sql("select E'two\\nlines', 'x' union all select 'y', 'z'") == \
        [["two\nlines", "x"], ["y", "z"]]
    assert pg.sql("show max_connections") == [["200"]]
    assert pg.sql("show port", tcp=True) == [[str(pg.port)]]
    with pytest.raises(SqlError, match="does_not_exist"):
        pg.sql("select * from does_not_exist")


def test_standby_replicates_and_sync(pg_factory):
    p = pg_factory.primary()
    s = pg_factory.standby(p)
    s2 = pg_factory.standby(p, name="sync1", sync=True)
    assert s.in_recovery() and s2.in_recovery()
    p.sql("create table t (id int primary key, v text); insert into t values (1, 'one')")
    s.wait_replayed(p)
    assert s.sql("select v from t where id = 1") == [["one"]]
    state = p.replication_state()
    assert state[s.name] == ("streaming", "async")
    assert state[s2.name] == ("streaming", "sync")
    # synchronous commit: the row is on the sync standby's disk once the insert returns
    p.sql("insert into t values (2, 'two')")
    s2.wait_replayed(p)
    assert s2.sql("select count(*) from t") == [["2"]]


def test_promote_crash_and_rewind(pg_factory):
    p = pg_factory.primary()
    s = pg_factory.standby(p)
    p.sql("create table t (id int); insert into t values (1)")
    s.wait_replayed(p)

    t0 = time.monotonic()
    p.crash()
    assert not p.is_running()
    # the standby now signals its postmaster every 200 ms (walreceiver restarts), and each
    # signal makes it consume a promote file at once: the race write_pg_file closes
    s.promote()
    assert time.monotonic() - t0 < 5
    assert not s.in_recovery()
    s.sql("insert into t values (2)")

    # old primary comes back as a standby of the promoted one
    pg_factory.rewind_as_standby(p, s)
    assert p.in_recovery()
    s.sql("insert into t values (3)")
    p.wait_replayed(s)
    assert p.sql("select array_agg(id order by id) from t") == [["{1,2,3}"]]


def test_files_for_the_server_appear_whole_and_owned(tmp_path):
    # A running server may consume a file (the promote trigger) the moment it exists, so it
    # must appear in one step, already with its mode and owner: a new inode renamed into
    # place, never an existing file rewritten (a reader holding the old one keeps it whole).
    path = tmp_path / "node.conf"
    processes.write_pg_file(str(path), "port = 1\n")
    with open(path) as old_reader:
        first_inode = os.stat(path).st_ino
        processes.write_pg_file(str(path), "port = 2\n", mode=0o640)
        st = os.stat(path)
        assert st.st_ino != first_inode
        assert old_reader.read() == "port = 1\n"
    assert path.read_text() == "port = 2\n"
    assert st.st_mode & 0o777 == 0o640
    ids = processes.pg_ids()
    assert (st.st_uid, st.st_gid) == (ids if ids else (os.geteuid(), os.getegid()))
    assert os.listdir(tmp_path) == ["node.conf"]        # no temporary file left behind


def test_crash_and_start(pg_factory):
    n = pg_factory.primary()
    n.sql("create table t (id int); insert into t select generate_series(1, 100)")
    old_pid = n.postmaster_pid()
    n.crash()
    assert not n.is_running()
    assert not os.path.exists(os.path.join(n.datadir, "postmaster.pid"))
    with pytest.raises(SqlError):
        n.sql("select 1", timeout=2)
    n.start()
    assert n.postmaster_pid() != old_pid
    assert n.sql("select count(*) from t") == [["100"]]   # committed rows survived
    n.restart()
    assert n.sql("select count(*) from t") == [["100"]]


def test_freeze_and_thaw(pg):
    pg.freeze()
    try:
        t0 = time.monotonic()
        with pytest.raises(SqlTimeout):
            pg.sql("select 1", timeout=0.5)
        assert time.monotonic() - t0 < 2
        with pytest.raises(SqlError):   # a TCP client gets in the kernel's backlog only
            run_psql(pg.host, pg.port, "select 1", timeout=5, connect_timeout=2)
    finally:
        pg.thaw()
    assert pg.sql("select 1") == [["1"]]


def test_terminate_all_clients(pg):
    p, pid = _background_sleeper(pg, pg.host, pg.port, "harness_term")
    try:
        assert pid in pg.backend_pids()
        assert pid in pg.terminate_all_clients()
        assert pid not in pg.backend_pids()
        assert p.wait(5) != 0
    finally:
        p.kill()
        p.wait()


def test_sweep_stale_kills_orphaned_servers(pg_cluster):
    # a root whose owner pid is dead, with a running server in it
    dead = subprocess.Popen(["true"])
    dead.wait()
    import tempfile
    root = tempfile.mkdtemp(prefix="%s%d-" % (ROOT_PREFIX, dead.pid), dir=processes.SHM_DIR)
    orphan = PgCluster(root=root, template_from=pg_cluster)
    try:
        n = orphan.primary()
        pm = n.postmaster_pid()
        kids = processes.children(pm)
        assert kids
        assert sweep_stale() >= 1
        assert not processes.alive(pm)
        assert not any(processes.alive(k) for k in kids)
        assert not os.path.exists(root)
    finally:
        orphan.close()
    # our own live root is never swept
    assert os.path.isdir(pg_cluster.root)


# ---------------------------------------------------------------------------
# TCP proxy
# ---------------------------------------------------------------------------

def test_proxy_forwards_psql(pg):
    with TcpProxy(pg.host, pg.port) as px:
        assert run_psql("127.0.0.1", px.port, "show port") == [[str(pg.port)]]
        assert run_psql("127.0.0.1", px.port, "select repeat('x', 200000)")[0][0] == "x" * 200000
        assert px.accepted == 2


def test_proxy_delay(pg):
    with TcpProxy(pg.host, pg.port) as px:
        t0 = time.monotonic()
        run_psql("127.0.0.1", px.port, "select 1")
        base = time.monotonic() - t0
        px.set_delay(0.3)
        t0 = time.monotonic()
        assert run_psql("127.0.0.1", px.port, "select 1") == [["1"]]
        slow = time.monotonic() - t0
        assert slow >= 0.3 and slow > base + 0.25, (base, slow)
        px.set_delay(0)
        px.set_connect_delay(0.3)
        t0 = time.monotonic()
        run_psql("127.0.0.1", px.port, "select 1")
        assert time.monotonic() - t0 >= 0.3


def test_proxy_blackhole(pg):
    with TcpProxy(pg.host, pg.port) as px:
        px.blackhole(True)
        t0 = time.monotonic()
        with pytest.raises(SqlError, match="timeout"):
            run_psql("127.0.0.1", px.port, "select 1", timeout=10, connect_timeout=2)
        took = time.monotonic() - t0
        assert 1.5 <= took < 5, took
        px.blackhole(False)
        assert run_psql("127.0.0.1", px.port, "select 1") == [["1"]]


def test_proxy_blackhole_freezes_established_connection(pg):
    with TcpProxy(pg.host, pg.port) as px:
        p = popen_psql("127.0.0.1", px.port, "select pg_sleep(0.3), 'done'")
        try:
            time.sleep(0.1)              # connected, query running
            px.blackhole(True)
            time.sleep(0.6)              # the answer is held by the proxy
            assert p.poll() is None
            px.blackhole(False)          # partition heals: the answer arrives
            out, err = p.communicate(timeout=5)
            assert p.returncode == 0, err
            assert b"done" in out
        finally:
            p.kill()
            p.wait()


def test_proxy_reject_reset_redirect(pg, pg_factory):
    other = pg_factory.primary("other")
    with TcpProxy(pg.host, pg.port) as px:
        px.reject(True)
        t0 = time.monotonic()
        with pytest.raises(SqlError):
            run_psql("127.0.0.1", px.port, "select 1", timeout=5)
        assert time.monotonic() - t0 < 1
        px.reject(False)

        p, pid = _background_sleeper(pg, "127.0.0.1", px.port, "harness_reset")
        try:
            assert px.active_connections == 1
            px.reset_all()
            out, err = p.communicate(timeout=5)
            assert p.returncode != 0
            assert b"reset" in err or b"closed" in err, err
            assert px.active_connections == 0
        finally:
            p.kill()
            p.wait()
        # the backend notices the dead connection at its next write; don't wait for it
        pg.sql("select pg_terminate_backend(%d)" % pid)

        px.redirect(other.host, other.port)
        assert run_psql("127.0.0.1", px.port, "show port") == [[str(other.port)]]


def _echo_server():
    """A one-connection TCP server in a thread: echoes, records when its peer closes."""
    import socket
    import threading
    lsock = socket.create_server(("127.0.0.1", 0))
    state = {"closed": threading.Event(), "send": None}

    def serve():
        conn, _ = lsock.accept()
        with conn:
            state["send"] = conn.sendall
            state["ready"].set()
            while True:
                data = conn.recv(4096)
                if not data:
                    state["closed"].set()
                    return
                conn.sendall(data)

    state["ready"] = threading.Event()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock, state


def test_proxy_half_open_and_drip():
    import socket
    lsock, state = _echo_server()
    with lsock, TcpProxy("127.0.0.1", lsock.getsockname()[1]) as px:
        c = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        with c:
            c.sendall(b"ping")
            assert c.recv(10) == b"ping"
            assert state["ready"].wait(5)
            # slow drip: 100 bytes, 10 every 50 ms: at least 0.45 s for all of them
            px.set_drip(10, 0.05)
            t0 = time.monotonic()
            state["send"](b"y" * 100)
            got = b""
            while len(got) < 100:
                chunk = c.recv(100)
                assert chunk, "EOF during the drip"
                got += chunk
            assert time.monotonic() - t0 >= 0.45
            px.clear()
            c.sendall(b"pong")
            assert c.recv(10) == b"pong"
            # half-open: the server's side is closed, the client's stays open and silent
            px.half_open()
            assert state["closed"].wait(5), "the server side was not closed"
            c.sendall(b"anyone?")             # accepted by the kernel, answered by nobody
            c.settimeout(0.3)
            with pytest.raises(socket.timeout):
                c.recv(10)                      # no data and no EOF


def test_test_ca_certificates(tmp_path):
    from noodlecore.testing import TestCA
    ca = TestCA(str(tmp_path / "ca"))
    cert, key = ca.server_cert("srv")
    old, _ = ca.server_cert("old", expired=True)
    other = TestCA(str(tmp_path / "other"), name="other CA")

    def openssl(*args):
        return subprocess.run(["openssl", *args], capture_output=True, text=True)

    assert openssl("verify", "-CAfile", ca.cert, cert).returncode == 0
    assert openssl("verify", "-CAfile", other.cert, cert).returncode != 0
    assert openssl("x509", "-in", cert, "-noout", "-checkend", "0").returncode == 0
    assert openssl("x509", "-in", old, "-noout", "-checkend", "0").returncode != 0     # expired
    assert "IP Address:127.0.0.1" in openssl("x509", "-in", cert, "-noout", "-ext", "subjectAltName").stdout
    assert os.path.exists(key)
