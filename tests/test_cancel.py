"""Cancels with their own deadline, and the deadlines of the work around a statement
(issue 8, points 5, 6 and 11).

- Point 5: a cancel request to a server that never answers (frozen, or behind a blackholing
  network) must not block anything forever nor starve the cancels of healthy servers, and the
  error must name the right cause; a statement that ends with another error after its cancel went
  out must not keep a connection the late cancel can still hit.
- Point 6: get_connection(timeout=0) means "do not wait", not "do not validate": a healthy idle
  connection that needs a ping is lent, not destroyed.
- Point 11: BEGIN / COMMIT / ROLLBACK follow the pool's query_timeout and, on SQLite,
  busy_timeout, like any statement (no hard-coded 30 s).
"""

import os
import signal
import sqlite3
import threading
import time

import pytest

from noodlecore.database import DatabaseConnectionPool, DataError, PoolTimeoutError, QueryTimeoutError
from helpers import sessions, wait_for

# Their subject is the server's and the network's behaviour (the same C paths on
# every interpreter): tests/run.sh runs them in pytest-python3 and pytest-asan,
# not on the second CPython.
pytestmark = pytest.mark.network

FROZEN = 17        # one more than the old process-wide cap of cancel threads


def test_frozen_servers_do_not_starve_the_cancels_of_a_healthy_one(pg, pg_factory, make_pool, app):
    proxy = pg_factory.proxy(pg)
    frozen_pool = make_pool(dsn="postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s_f"
                            % (proxy.port, app), max_connections=FROZEN, timeout=10, validate_connections=False)
    conns = [frozen_pool.acquire() for _ in range(FROZEN)]
    proxy.blackhole(True)           # accepts (cancel requests too), never answers
    errors = [None] * FROZEN

    def timed_out(i):
        try:
            conns[i].execute_query("select 1", timeout=0.1)
        except QueryTimeoutError as e:
            errors[i] = e
        finally:
            conns[i].release()

    threads = [threading.Thread(target=timed_out, args=(i,)) for i in range(FROZEN)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    took = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads)

    # a healthy server: its statement past the deadline is still cancelled there
    pool = make_pool(max_connections=1, timeout=5)
    with pool.get_connection() as c:
        pid = c.backend_pid
        with pytest.raises(QueryTimeoutError) as ei:
            c.execute_query("select pg_sleep(30)", timeout=0.3)
        assert "cancelled on the server" in str(ei.value), ei.value
        assert sessions(pg, app)[pid][0] == "idle"
        assert c.execute_query("select 1 as x") == [{"x": 1}]
    proxy.blackhole(False)

    assert took < 3.0, "cancels to a frozen server took %.2f s" % took
    for e in errors:
        assert e is not None and e.error_code == 2012
        # the cause: the cancel went out and the server never acknowledged it
        assert "did not acknowledge the cancel request" in str(e), e


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_frozen_postmaster_cancel_is_bounded_and_named(pg, make_pool, app, via):
    """The postmaster (which takes cancel requests) is stopped; the session's backend is not.
    The statement's error says the cancel was not acknowledged and comes at deadline + grace."""
    dsn = pg.dsn(application_name=app) if via == "tcp" else pg.unix_kv_dsn(application_name=app)
    pool = make_pool(dsn=dsn, max_connections=1, timeout=5)
    pm = pg.postmaster_pid()
    with pool.get_connection() as c:
        pid = c.backend_pid
        os.kill(pm, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(QueryTimeoutError) as ei:
                c.execute_query("select pg_sleep(3)", timeout=0.2)
            took = time.monotonic() - t0
        finally:
            os.kill(pm, signal.SIGCONT)
        assert "did not acknowledge the cancel request" in str(ei.value), ei.value
        assert took < 1.5, took
    with pool.get_connection() as c:
        assert c.backend_pid != pid        # the connection was discarded
    wait_for(lambda: pid not in sessions(pg, app), timeout=10, what="the discarded session to end")


def test_cancelled_statement_ending_in_another_error_is_discarded(pg, make_pool, app):
    """The deadline passes, the cancel request goes out but is not processed yet (postmaster
    stopped), and the statement then fails on its own (division by zero).  The cancel is still in
    flight: the connection must not be kept, or the late cancel hits a later statement."""
    pool = make_pool(max_connections=1, timeout=5)
    pm = pg.postmaster_pid()
    with pool.get_connection() as c:
        pid = c.backend_pid
        os.kill(pm, signal.SIGSTOP)
        try:
            with pytest.raises(DataError) as ei:
                c.execute_query("select pg_sleep(0.6); select 1/0", timeout=0.2)
        finally:
            os.kill(pm, signal.SIGCONT)
        assert ei.value.sqlstate == "22012"
    with pool.get_connection() as c:
        assert c.backend_pid != pid, "a connection with a cancel in flight was kept"
        assert c.execute_query("select pg_sleep(0.3) as s") == [{"s": ""}]


def test_zero_timeout_lends_a_healthy_idle_connection(make_pool):
    # ping_after_idle=0: every borrow of an idle connection pings it first
    pool = make_pool(max_connections=1, timeout=5, ping_after_idle=0, validation_interval=60)
    with pool.get_connection() as c:
        serial = c.connection_id
    with pool.get_connection(timeout=0) as c:
        assert c.connection_id == serial
        assert c.execute_query("select 1 as x") == [{"x": 1}]
    st = pool.get_stats()
    assert st.connections_closed == 0 and st.connections_opened == 1, st


def test_zero_timeout_still_does_not_wait(make_pool):
    pool = make_pool(max_connections=1, timeout=5, ping_after_idle=0)
    with pool.get_connection():
        t0 = time.monotonic()
        with pytest.raises(PoolTimeoutError) as ei:
            with pool.get_connection(timeout=0):
                pass
        assert ei.value.error_code == 2003
        assert time.monotonic() - t0 < 0.5


def test_sqlite_commit_waits_for_a_lock_only_busy_timeout(tmp_path):
    path = str(tmp_path / "commit.db")
    pool = DatabaseConnectionPool("sqlite:///" + path, max_connections=1, busy_timeout=0.3, timeout=30)
    try:
        with pool.get_connection() as c:
            c.execute_query("create table t (x int)")
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("begin")
        reader.execute("select * from t").fetchall()     # holds a SHARED lock: COMMIT must wait
        try:
            with pool.get_connection() as c:
                c.begin()
                c.execute_query("insert into t values (1)")
                t0 = time.monotonic()
                with pytest.raises(QueryTimeoutError) as ei:
                    c.commit()
                took = time.monotonic() - t0
                assert "locked" in str(ei.value), ei.value
        finally:
            reader.execute("rollback")
            reader.close()
        assert took < 3.0, "COMMIT waited %.2f s on a lock with busy_timeout=0.3" % took
        with pool.get_connection() as c:
            assert c.execute_query("select count(*) as n from t") == [{"n": 0}]
    finally:
        pool.shutdown(timeout=0)


def test_cancel_over_a_unix_socket(pg, make_pool, app):
    """The cancel request goes to the address the connection uses, a Unix socket too."""
    pool = make_pool(dsn=pg.unix_kv_dsn(application_name=app), max_connections=1, timeout=5)
    with pool.get_connection() as c:
        pid = c.backend_pid
        t0 = time.monotonic()
        with pytest.raises(QueryTimeoutError) as ei:
            c.execute_query("select pg_sleep(30)", timeout=0.2)
        assert time.monotonic() - t0 < 1.5
        assert "cancelled on the server" in str(ei.value), ei.value
        assert sessions(pg, app)[pid][0] == "idle"
        assert c.execute_query("select 1 as x") == [{"x": 1}]
    with pool.get_connection() as c:
        assert c.backend_pid == pid        # kept: the cancel was confirmed
