"""A PostgreSQL pool when the server misbehaves (noodlecore.testing): every
session terminated and a restart, a frozen server (SIGSTOP) with statement,
borrow, connect and validation-ping deadlines, statement deadlines and stale
cancels on a healthy server, and nothing listening (dead port, bad DSNs that
must not show the password, multi-host fallback past an unresponsive host).

Pools carry the test's own application_name (``app``, ``make_pool``: conftest.py),
so that pg_stat_activity tells their sessions apart.  Other pool topics are in
the other test_pg_pool_*.py modules.
"""

import os
import signal
import socket
import threading
import time

import pytest

from figures import record_figure
from helpers import check_stats_consistent, sessions, wait_for
from noodlecore.database import (
    ConfigurationError, ConnectionPoolError, DatabaseConnectionPool, DatabaseError, OperationalError,
    PoolTimeoutError, QueryTimeoutError,
)
from noodlecore.testing import free_port

# Timing scenarios on real servers: the same C paths on every interpreter, so
# tests/run.sh runs them in pytest-python3 only (not on the second CPython nor under ASan).
pytestmark = pytest.mark.scenario


# ---------------------------------------------------------------------------
# server terminating every session, server restart
# ---------------------------------------------------------------------------

def _borrow_all_and_threads(pool, n_conn, n_threads):
    held = [pool.acquire(timeout=5) for _ in range(n_conn)]      # every idle one, dead or not
    try:
        for c in held:
            assert c.execute_query("select 1 as x") == [{"x": 1}]
    finally:
        for c in held:
            c.release()
    errors = []

    def worker():
        try:
            for _ in range(5):
                with pool.get_connection(timeout=5) as c:
                    assert c.execute_query("select pg_backend_pid() as p")[0]["p"] == c.backend_pid
        except Exception as e:           # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert errors == []


def test_terminate_all_then_restart(pg, make_pool, app):
    pool = make_pool(max_connections=4, timeout=5, validation_interval=60)
    held = [pool.acquire() for _ in range(4)]
    old = {c.backend_pid for c in held}
    for c in held:
        c.release()
    victims = pg.terminate_all_clients(wait=True)
    assert old <= set(victims)
    # several borrows in a row: not one gets a dead connection (error_count stays 0)
    for _ in range(4):
        with pool.get_connection() as c:
            assert c.backend_pid not in old
            assert c.execute_query("select 1 as x") == [{"x": 1}]
    _borrow_all_and_threads(pool, 4, 8)
    st = pool.get_stats()
    assert st.error_count == 0 and st.validation_failures >= 4
    assert not set(sessions(pg, app)) & old
    check_stats_consistent(st)
    record_figure("pg_terminate_backend", "4 idle sessions terminated: connections lent dead: 0 of %d borrows "
                  "(%d replaced on borrow)" % (st.acquires - 4, st.validation_failures))

    # a full restart
    before = set(sessions(pg, app))
    failures_before = st.validation_failures
    acquires_before = st.acquires
    pg.restart()
    for _ in range(3):
        with pool.get_connection() as c:
            assert c.execute_query("select 2 as x") == [{"x": 2}]
    _borrow_all_and_threads(pool, 4, 8)
    st = pool.get_stats()
    assert st.error_count == 0
    assert st.validation_failures >= failures_before + len(before)
    assert not set(sessions(pg, app)) & before
    check_stats_consistent(st)
    record_figure("server restart", "fast restart with %d idle sessions: connections lent dead: 0 of %d borrows"
                  % (len(before), st.acquires - acquires_before))


# ---------------------------------------------------------------------------
# a frozen server (SIGSTOP)
# ---------------------------------------------------------------------------

def test_frozen_server(pg, make_pool, app):
    pool = make_pool(max_connections=2, timeout=5, connect_timeout=0.5, retry_attempts=3)
    busy = pool.acquire()
    other = pool.acquire()
    busy_pid = busy.backend_pid
    other_pid = other.backend_pid
    pg.freeze()
    try:
        # (a) a statement's deadline
        t0 = time.monotonic()
        with pytest.raises(QueryTimeoutError) as ei:
            busy.execute_query("select 1", timeout=1)
        took = time.monotonic() - t0
        assert 1.0 <= took < 2.0, took
        assert ei.value.error_code == 2012
        busy.release()                  # broken: discarded, not put back
        # (b) every connection is borrowed, so a new one is needed: connecting times out
        t0 = time.monotonic()
        with pytest.raises((ConnectionPoolError, OperationalError)) as ei:
            with pool.get_connection(timeout=1):
                pass
        took = time.monotonic() - t0
        assert took < 1.5, took
        assert ei.value.error_code in (2003, 2009), ei.value
    finally:
        pg.thaw()
    # (c) the pool works again; the broken connection was not kept
    with pool.get_connection(timeout=5) as c:
        assert c.execute_query("select 1 as x") == [{"x": 1}]
        assert c.backend_pid not in (busy_pid, other_pid)
    wait_for(lambda: busy_pid not in sessions(pg, app), what="the broken session to end")
    assert other.execute_query("select pg_backend_pid() as p") == [{"p": other_pid}]
    other.release()
    with pool.get_connection(timeout=5) as c1, pool.get_connection(timeout=5) as c2:
        assert c1.execute_query("select 1 as x") == c2.execute_query("select 1 as x")
    check_stats_consistent(pool.get_stats())


def test_frozen_server_all_borrowed_times_out(pg, make_pool):
    pool = make_pool(max_connections=1, timeout=5, connect_timeout=0.5)
    c = pool.acquire()
    pg.freeze()
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeoutError) as ei:
            pool.acquire(timeout=1)
        took = time.monotonic() - t0
        assert 0.95 <= took < 1.5, took
        assert ei.value.error_code == 2003
    finally:
        pg.thaw()
    assert c.execute_query("select 1 as x") == [{"x": 1}]
    c.release()


def test_frozen_server_new_connection_times_out(pg, make_pool):
    pool = make_pool(max_connections=2, timeout=5, connect_timeout=0.5, retry_attempts=3,
                     retry_backoff=0.05)
    pg.freeze()
    try:
        t0 = time.monotonic()
        with pytest.raises(ConnectionPoolError) as ei:
            pool.acquire(timeout=1)
        took = time.monotonic() - t0
        assert took < 1.5, took
        assert ei.value.error_code in (2003, 2009)
        assert "127.0.0.1:%d" % pg.port in str(ei.value) or ei.value.error_code == 2003
    finally:
        pg.thaw()
    with pool.get_connection(timeout=5) as c:
        assert c.execute_query("select 1 as x") == [{"x": 1}]
    st = pool.get_stats()
    assert st.total_connections == 1
    check_stats_consistent(st)


def test_frozen_server_validation_ping_keeps_the_acquire_timeout(pg, make_pool):
    """An idle connection that must be pinged before it is lent (ping_after_idle=0) on a
    frozen server: get_connection(timeout=T) must give up after about T seconds."""
    pool = make_pool(max_connections=2, timeout=5, connect_timeout=0.5, ping_after_idle=0,
                     validation_interval=60)
    with pool.get_connection() as c:
        pass
    pg.freeze()
    try:
        t0 = time.monotonic()
        with pytest.raises((ConnectionPoolError, OperationalError)):
            pool.acquire(timeout=1)
        took = time.monotonic() - t0
    finally:
        pg.thaw()
    with pool.get_connection(timeout=5) as c:
        assert c.execute_query("select 1 as x") == [{"x": 1}]
    # BUG: the ping's deadline passes at 1.0 s, then nc_pg_exec sends a cancel and waits
    # NC_PG_CANCEL_GRACE (0.5 s) more before giving up: ~1.5 s for timeout=1.
    assert took < 1.25, "get_connection(timeout=1) took %.2f s" % took


# ---------------------------------------------------------------------------
# statement deadlines on a healthy server
# ---------------------------------------------------------------------------

def test_query_deadline_cancels_on_the_server(pg, make_pool, app):
    pool = make_pool(max_connections=2, timeout=2)
    with pool.get_connection() as c:
        pid = c.backend_pid
        t0 = time.monotonic()
        with pytest.raises(QueryTimeoutError) as ei:
            c.execute_query("SELECT pg_sleep(10)", timeout=0.3)
        took = time.monotonic() - t0
        assert 0.29 <= took < 1.0, took
        e = ei.value
        assert e.error_code == 2012 and e.sqlstate == "57014"
        assert isinstance(e, OperationalError)
        # the same connection goes on
        assert c.backend_pid == pid
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
        assert not c.in_transaction
        state = sessions(pg, app)
        assert state[pid][0] == "idle"
        assert "pg_sleep" not in state[pid][1]
        active = pg.sql("select count(*) from pg_stat_activity where state = 'active' "
                        "and query like '%%pg_sleep(10)%%' and pid <> pg_backend_pid()")
        assert active == [["0"]]
    with pool.get_connection() as c:
        assert c.backend_pid == pid      # kept, not discarded
    st = pool.get_stats()
    assert st.connections_opened == 1 and st.error_count == 1


def test_query_timeout_pool_option(pg, make_pool, app):
    pool = make_pool(max_connections=1, timeout=2, query_timeout=0.3)
    with pool.get_connection() as c:
        t0 = time.monotonic()
        with pytest.raises(QueryTimeoutError):
            c.execute_query("SELECT pg_sleep(10)")
        assert time.monotonic() - t0 < 1.0
        # a per-call timeout overrides it
        assert c.execute_query("SELECT pg_sleep(0.5) AS s", timeout=3) == [{"s": ""}]
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
        # the deadline also applies inside a transaction; the transaction is then aborted
        c.begin()
        with pytest.raises(QueryTimeoutError):
            c.execute_query("SELECT pg_sleep(10)")
        with pytest.raises(DatabaseError) as ei:
            c.execute_query("SELECT 1")
        assert ei.value.sqlstate == "25P02"
        c.rollback()
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]


def test_stale_cancel_does_not_hit_the_next_statement(pg, make_pool, app):
    """A statement that passes its deadline gets a cancel request, sent from a detached
    thread.  If the statement's result still arrives before the server acts on the cancel,
    that cancel must not reach whatever runs next on the session (here another borrower's
    statement without any deadline).  The postmaster, which forks the process that handles
    a cancel request, is paused for a moment to make the late delivery deterministic; the
    session's own backend keeps running."""
    pool = make_pool(max_connections=1, timeout=5)
    pm = pg.postmaster_pid()
    with pool.get_connection() as c:
        pid = c.backend_pid
        os.kill(pm, signal.SIGSTOP)
        try:
            c.execute_query("SELECT pg_sleep(0.3) AS s", timeout=0.1)
        except QueryTimeoutError:
            pass            # also fine: what matters is the next statement
        except BaseException:
            os.kill(pm, signal.SIGCONT)
            raise
    # the postmaster resumes 0.2 s into the next borrower's statement
    timer = threading.Timer(0.2, os.kill, (pm, signal.SIGCONT))
    timer.start()
    try:
        with pool.get_connection() as c2:
            same_session = c2.backend_pid == pid
            t0 = time.monotonic()
            try:
                result = c2.execute_query("SELECT pg_sleep(0.6) AS s")
            except OperationalError as e:
                raise AssertionError(
                    "a statement without a deadline was cancelled after %.2f s (same session as "
                    "the timed-out statement: %s): %r code=%s sqlstate=%s"
                    % (time.monotonic() - t0, same_session, e, e.error_code, e.sqlstate)) from e
            assert result == [{"s": ""}]
    finally:
        timer.join()
        os.kill(pm, signal.SIGCONT)


# ---------------------------------------------------------------------------
# nothing listening
# ---------------------------------------------------------------------------

def test_dead_port(make_pool):
    port = free_port()
    dsn = "postgresql://postgres:secretpw42@127.0.0.1:%d/postgres" % port
    pool = make_pool(dsn=dsn, max_connections=2, timeout=5, retry_attempts=2, retry_backoff=0.05)
    assert "secretpw42" not in repr(pool) and "secretpw42" not in pool.target
    t0 = time.monotonic()
    with pytest.raises(ConnectionPoolError) as ei:
        with pool.get_connection():
            pass
    took = time.monotonic() - t0
    e = ei.value
    msg = str(e)
    assert e.error_code == 2009, msg
    assert isinstance(e, OperationalError)
    assert "127.0.0.1:%d" % port in msg, msg
    assert "2 attempts" in msg, msg
    assert "secretpw42" not in msg and "secretpw42" not in repr(e.args)
    assert 0.05 <= took < 1.0, took
    st = pool.get_stats()
    assert st.total_connections == 0 and st.active_connections == 0
    assert st.connect_failures == 2 and st.connections_opened == 0
    # the pool is still usable: same error again, no slot leaked
    for _ in range(3):
        with pytest.raises(ConnectionPoolError):
            pool.acquire(timeout=2)
    st = pool.get_stats()
    assert st.total_connections == 0 and st.connect_failures == 8
    assert st.requests_waiting == 0
    # key=value DSN: same endpoint in the message, no password
    pool2 = make_pool(dsn="host=127.0.0.1 port=%d user=postgres password=secretpw42 "
                          "dbname=postgres" % port, retry_attempts=1)
    with pytest.raises(ConnectionPoolError) as ei:
        pool2.acquire(timeout=2)
    assert "127.0.0.1:%d" % port in str(ei.value) and "secretpw42" not in str(ei.value)
    assert "1 attempt" in str(ei.value)


@pytest.mark.parametrize("dsn", [
    "postgresql://postgres:s3cretpw@[::1/postgres",          # unterminated IPv6 address
    "postgresql://postgres:s3cret%zzpw@127.0.0.1/postgres",  # bad percent-encoding
])
def test_invalid_dsn_error_does_not_show_the_password(dsn):
    """nc_pg_ctx_new promises "libpq's reason; never the password", but libpq's URI
    parser quotes the URI (or the token) it choked on, password included."""
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool(dsn)
    assert ei.value.error_code == 2013
    assert "s3cret" not in str(ei.value), str(ei.value)
    assert "s3cret" not in repr(ei.value.args)


def test_multi_host_dsn_falls_back_past_an_unresponsive_host(pg, make_pool, app):
    """libpq's multi-host DSNs try the next host when one does not answer within
    connect_timeout ("applies separately to each host").  The pool drives PQconnectPoll
    with one deadline for the whole attempt, so an unresponsive first host (accepts TCP,
    never answers: a frozen or black-holed server) uses up every attempt and the healthy
    second host is never tried.  A refused first host is fine."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)                                   # accepted by the kernel, never answered
    try:
        dead = free_port()
        for first in (dead, silent.getsockname()[1]):
            dsn = ("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
                   "application_name=%s" % (first, pg.port, app))
            pool = make_pool(dsn=dsn, max_connections=1, connect_timeout=0.5, retry_attempts=3,
                             retry_backoff=0.05)
            t0 = time.monotonic()
            with pool.get_connection(timeout=5) as c:
                assert c.execute_query("SELECT inet_server_port() AS p") == [{"p": pg.port}]
            assert time.monotonic() - t0 < 2.0
    finally:
        silent.close()
