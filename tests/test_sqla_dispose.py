"""engine.dispose() on the noodlecore dialects (and noodlecore.dbapi.dispose()):
the native pools behind an engine give up their server connections, idle ones
at once and checked-out ones when they come back, on a real PostgreSQL (its
sessions counted in pg_stat_activity by application_name) and a SQLite file
(its descriptors counted in /proc/self/fd); after fork(), dispose(close=False)
in the child leaves the parent's sessions alone.

Marked `once`: SQLAlchemy is installed in the pytest-python3 stage only.
"""

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

pytestmark = pytest.mark.once

import sqlalchemy as sa  # noqa: E402  (a missing SQLAlchemy is an error, never a skip)

from helpers import dbapi_pool, sessions, subprocess_env, wait_for  # noqa: E402
from noodlecore.database.errors import ConfigurationError  # noqa: E402


def pg_url(pg, app, dbname=None, **query):
    url = "postgresql+noodlecore://%s@%s:%d/%s?application_name=%s" % (pg.user, pg.host, pg.port,
                                                                        dbname or pg.dbname, app)
    return url + "".join("&%s=%s" % kv for kv in query.items())


def pg_dsn(pg, app, dbname=None):
    return "postgresql://%s@%s:%d/%s?application_name=%s" % (pg.user, pg.host, pg.port, dbname or pg.dbname, app)


def backend_pid(conn):
    return conn.exec_driver_sql("select pg_backend_pid()").scalar()


def open_idle(engine, n):
    """n connections checked out at once and checked in: n idle sessions in
    the native pool; their backend pids."""
    conns = [engine.connect() for _ in range(n)]
    pids = {backend_pid(c) for c in conns}
    for c in conns:
        c.close()
    return pids


def wait_sessions(pg, app, pids, what):
    wait_for(lambda: set(sessions(pg, app)) == set(pids), timeout=10, what=what)


def test_dispose_closes_the_idle_sessions_and_the_next_checkout_opens_fresh_ones(pg, app, fresh_dbapi_pools):
    engine = sa.create_engine(pg_url(pg, app))
    before = open_idle(engine, 3)
    assert set(sessions(pg, app)) == before
    engine.dispose()
    wait_sessions(pg, app, (), "the idle sessions to close on dispose()")
    with engine.connect() as c:
        assert backend_pid(c) not in before
    stats = dbapi_pool(pg_dsn(pg, app)).get_stats()
    assert stats.connections_closed == 3 and stats.total_connections == 1, stats
    engine.dispose()


def test_a_checked_out_connection_survives_dispose_and_is_closed_on_return(pg, app, fresh_dbapi_pools):
    engine = sa.create_engine(pg_url(pg, app))
    idle = open_idle(engine, 2)
    held = engine.connect()
    tx = held.begin()
    held_pid = backend_pid(held)
    assert held_pid in idle
    engine.dispose()
    wait_sessions(pg, app, {held_pid}, "only the checked-out session to stay")
    # not yanked from under its user: same session, same transaction
    assert backend_pid(held) == held_pid
    tx.commit()
    held.close()
    wait_sessions(pg, app, (), "the checked-out session to close when it came back")
    with engine.connect() as c:
        assert backend_pid(c) not in idle


def test_another_engine_on_the_same_url_only_sees_its_idle_connections_go(pg, app, fresh_dbapi_pools):
    a = sa.create_engine(pg_url(pg, app))
    b = sa.create_engine(pg_url(pg, app))       # the same native pool underneath
    b_out = b.connect()
    b_pid = backend_pid(b_out)
    b_idle = open_idle(b, 2)                    # b's idle sessions
    with a.connect() as c:                      # a borrows one of them and gives it back
        assert backend_pid(c) in b_idle
    assert set(sessions(pg, app)) == b_idle | {b_pid}
    a.dispose()
    wait_sessions(pg, app, {b_pid}, "the shared pool's idle sessions to close")
    assert backend_pid(b_out) == b_pid          # b's checkout goes on
    b_out.close()
    with b.connect() as c:                      # and b's next checkout opens a fresh one
        assert backend_pid(c) != b_pid
        assert c.exec_driver_sql("select 41 + 1").scalar() == 42


def test_drop_database_after_dispose(pg, app, fresh_dbapi_pools):
    """What SQLAlchemy's own test provisioning does before CREATE/DROP
    DATABASE: dispose the engines.  min_connections would have the janitor
    open sessions again at once; a drain holds them until the next checkout."""
    db = "nct_dispose_drop"
    pg.sql("drop database if exists %s" % db, dbname="postgres")
    pg.sql("create database %s" % db, dbname="postgres")
    try:
        engine = sa.create_engine(pg_url(pg, app, dbname=db, min_connections=2))
        open_idle(engine, 3)
        engine.dispose()
        pg.sql("drop database %s" % db, dbname="postgres")   # waits up to 5 s for other sessions, then fails
        assert pg.scalar("select count(*) from pg_database where datname = '%s'" % db,
                         dbname="postgres") == "0"
        assert dbapi_pool(pg_dsn(pg, app, db)).get_stats().total_connections == 0
    finally:
        pg.sql("drop database if exists %s with (force)" % db, dbname="postgres")


def test_dbapi_dispose_drains_the_pools_connect_shares(pg, app, fresh_dbapi_pools):
    from noodlecore import dbapi
    dsn = pg_dsn(pg, app)
    idle, held = dbapi.connect(dsn), dbapi.connect(dsn)
    held_pid = held.backend_pid
    other = dbapi.connect(dsn, max_connections=3)   # another pool of the same DSN (other options)
    idle.close()
    other.close()
    assert len(sessions(pg, app)) == 3
    dbapi.dispose(dsn)
    wait_sessions(pg, app, {held_pid}, "only the borrowed session to stay")
    assert held.cursor().execute("select 1").fetchone() == (1,)
    held.close()
    wait_sessions(pg, app, (), "the borrowed one to close on return")
    with pytest.raises(ConfigurationError) as info:
        dbapi.dispose(b"postgresql://x")
    assert isinstance(info.value, dbapi.Error)
    assert info.value.error_code == 2013 and "dsn must be a str or None, not bytes" in str(info.value)


def test_a_failover_managers_drain_reaches_every_endpoint_pool(pg, app):
    """What engine.dispose() calls for a multi-host URL (the connections' source
    is the failover manager)."""
    from noodlecore.database import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig
    eps = [DatabaseEndpoint(n, n, pg.dsn(application_name=app), is_primary=n == "a") for n in "ab"]
    with DatabaseFailoverManager(eps, config=FailoverConfig()) as m:
        idle, held = m.connect(), m.connect()
        assert idle._source is m
        held_pid = held.backend_pid
        idle.close()
        with m.get_pool("b").connect() as other:   # a session of the other endpoint's pool
            other_pid = other.backend_pid
        assert len(sessions(pg, app)) == 3
        m.drain()
        wait_sessions(pg, app, {held_pid}, "every endpoint pool's idle sessions to close")
        assert other_pid not in sessions(pg, app)
        held.close()
        wait_sessions(pg, app, (), "the borrowed one to close on return")
    m.drain()   # shut down: nothing to do, no error


def test_dispose_on_a_multi_host_url_drains_the_failover_managers_pools(pg_factory):
    """A multi-host URL's connections come from the failover manager under the
    engine: dispose() closes its idle sessions too (the probes' own sessions
    are not the pool's: pids are compared, not counts)."""
    from noodlecore.sqla import _common
    p = pg_factory.primary("dsp")
    s = pg_factory.standby(p, name="dss")
    app = "nct_dispose_multi"
    url = ("postgresql+noodlecore://postgres@/postgres?host=127.0.0.1:%d&host=127.0.0.1:%d"
           "&target_session_attrs=read-write&application_name=%s&health_check_interval=0.2"
           % (p.port, s.port, app))
    engine = sa.create_engine(url)
    managers = []
    try:
        idle, held = engine.connect(), engine.connect()
        idle_pid, held_pid = backend_pid(idle), backend_pid(held)
        idle.close()
        managers = [m for (dsn, _), m in _common._managers.items() if ":%d," % p.port in dsn]
        assert len(managers) == 1 and {idle_pid, held_pid} <= set(sessions(p, app))
        engine.dispose()
        wait_for(lambda: idle_pid not in sessions(p, app), timeout=10, what="the idle session to close")
        assert held_pid in sessions(p, app) and backend_pid(held) == held_pid
        held.close()
        wait_for(lambda: held_pid not in sessions(p, app), timeout=10, what="the held one to close on return")
        with engine.connect() as c:
            assert backend_pid(c) not in (idle_pid, held_pid)
    finally:
        engine.dispose()
        for m in managers:
            m.shutdown()


def sqlite_fds(path):
    """How many of this process's descriptors are open on the database file."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd) == str(path):
                n += 1
        except OSError:
            pass   # closed meanwhile (listdir's own descriptor)
    return n


def test_sqlite_dispose_closes_the_file(tmp_path, fresh_dbapi_pools):
    path = tmp_path / "d.db"
    engine = sa.create_engine("sqlite+noodlecore:///%s" % path)
    with engine.begin() as c:
        c.exec_driver_sql("create table t (v int)")
        c.exec_driver_sql("insert into t values (1)")
    conns = [engine.connect() for _ in range(2)]
    for c in conns:
        assert c.exec_driver_sql("select count(*) from t").scalar() == 1
        c.close()
    assert sqlite_fds(path) == 2
    held = engine.connect()
    assert held.exec_driver_sql("select v from t").scalar() == 1
    # (while a connection holds a lock on the file SQLite defers closing the
    # process's other descriptors on it: closing one would drop that lock)
    held.commit()
    engine.dispose()
    assert sqlite_fds(path) == 1              # the checked-out one stays open
    held.close()
    assert sqlite_fds(path) == 0              # closed when it came back
    # the file can go: a fresh one is made and used from here on
    path.unlink()
    with engine.begin() as c:
        c.exec_driver_sql("create table t2 (v int)")
    engine.dispose()
    assert sqlite_fds(path) == 0


def test_dispose_while_other_threads_check_out(pg, app, fresh_dbapi_pools):
    """dispose() racing checkouts on the same engine: nobody gets an error, and
    once they are done and disposed again, no session stays."""
    engine = sa.create_engine(pg_url(pg, app, max_connections=4))
    stop = threading.Event()
    errors = []

    def work():
        try:
            while not stop.is_set():
                with engine.connect() as c:
                    assert c.exec_driver_sql("select 1").scalar() == 1
        except Exception as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            engine.dispose()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    engine.dispose()
    wait_sessions(pg, app, (), "every session to close")


FORK_PROGRAM = """
import json, os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork() with threads running
import sqlalchemy as sa
from noodlecore import dbapi

engine = sa.create_engine({url!r})
idle, held = engine.connect(), engine.connect()
idle_pid = idle.exec_driver_sql("select pg_backend_pid()").scalar()
idle.close()                                         # an idle session in the native pool
tx = held.begin()                                    # and a checked-out one in a transaction
held_pid = held.exec_driver_sql("select pg_backend_pid()").scalar()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    engine.dispose(close={close})
    with engine.connect() as c:
        child_pid = c.exec_driver_sql("select pg_backend_pid()").scalar()
    os.write(w, json.dumps(child_pid).encode())
    sys.exit(0)                                      # the exit hook runs in the child too
os.close(w)
with os.fdopen(r) as f:
    child_pid = json.loads(f.read() or "null")
_, status = os.waitpid(pid, 0)
alive = held.exec_driver_sql(
    "select count(*) from pg_stat_activity where pid in (%d, %d)" % (idle_pid, held_pid)).scalar()
tx.commit()
held.close()
a, b = engine.connect(), engine.connect()            # the parent's two sessions, reused
reused = sorted(c.exec_driver_sql("select pg_backend_pid()").scalar() for c in (a, b))
a.close(); b.close()
st = [p for k, p in dbapi._pools.items()][0].get_stats()
print("RESULT " + json.dumps(dict(status=os.waitstatus_to_exitcode(status), child_pid=child_pid,
                                  parent_pids=sorted([idle_pid, held_pid]), alive=alive, reused=reused,
                                  opened=st.connections_opened, failures=st.validation_failures)))
"""


@pytest.mark.parametrize("close", [False, True])
def test_dispose_in_a_forked_child_leaves_the_parent_alone(pg, app, close):
    """The SQLAlchemy docs' after-fork recipe, engine.dispose(close=False) in
    the child; and dispose() with close=True too, which a child must not turn
    into closing the parent's sessions (the native pools notice the fork)."""
    code = FORK_PROGRAM.format(url=pg_url(pg, app), close=close)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env=subprocess_env(), cwd="/")
    lines = [ln[len("RESULT "):] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, "exit %s\n%s\n%s" % (proc.returncode, proc.stdout[-2000:],
                                                              proc.stderr[-3000:])
    res = json.loads(lines[-1])
    assert res["status"] == 0, res
    assert res["child_pid"] not in (None, *res["parent_pids"]), res   # the child's own session
    assert res["alive"] == 2, res                                      # both parent sessions still there
    assert res["reused"] == res["parent_pids"], res                    # and reused, not replaced
    assert res["opened"] == 2 and res["failures"] == 0, res
