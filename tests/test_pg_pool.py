"""The connection pool against a real PostgreSQL 15 server (noodlecore.testing).

Borrowing, reuse, limits, validation (on borrow and in the background),
min/idle/lifetime management, shutdown, stats, a many-thread stress run,
servers that terminate sessions, restart, freeze (SIGSTOP) and come back,
statement deadlines, parameters, transactions, the GIL, use after return,
server errors, interpreter exit and unreachable servers.

Every pool gets its own application_name so that pg_stat_activity can tell
its sessions apart from anyone else's.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from helpers import subprocess_env, wait_for
from noodlecore.database import (
    ConfigurationError, ConnectionPoolError, DatabaseConnectionPool, DatabaseError, DataError,
    IntegrityError, InterfaceError, InternalError, OperationalError, PoolClosedError,
    PoolTimeoutError, ProgrammingError, QueryTimeoutError,
)
from noodlecore.testing import free_port


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def app_name(request):
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)
    return ("nct_" + name)[:60]


def sessions(node, app):
    """{pid: (state, query)} of the server sessions with application_name app."""
    rows = node.sql("select pid, coalesce(state, ''), query from pg_stat_activity "
                    "where application_name = '%s'" % app)
    return {int(r[0]): (r[1], r[2]) for r in rows}


def terminate(node, pid):
    """pg_terminate_backend(pid) and wait until the session is gone from the server."""
    node.sql("select pg_terminate_backend(%d, 5000)" % pid)
    wait_for(lambda: pid not in node.backend_pids(), what="backend %d to exit" % pid)


def timeout_counts(e):
    """("N of M", waiting) from a PoolTimeoutError's message."""
    m = re.search(r"(\d+ of \d+) connections in use, (\d+) callers? waiting", str(e))
    assert m, str(e)
    return m.group(1), int(m.group(2))


def check_stats_consistent(st):
    assert st.total_connections == st.active_connections + st.idle_connections
    assert st.connections_opened - st.connections_closed == st.total_connections, st
    assert 0 <= st.total_connections <= st.max_connections


@pytest.fixture
def app(request):
    return app_name(request)


@pytest.fixture
def make_pool(pg, app):
    """make_pool(**options) -> a pool on the shared server, shut down at the end."""
    pools = []

    def make(node=None, dsn=None, **options):
        node = node or pg
        pool = DatabaseConnectionPool(dsn or node.dsn(application_name=app), **options)
        pools.append(pool)
        return pool

    yield make
    for p in pools:
        p.shutdown(timeout=0)


@pytest.fixture
def table(pg, app):
    """A fresh table (id serial, v int unique, note text) named after the test."""
    name = "t_" + app
    pg.sql("drop table if exists %s; create table %s (id serial primary key, v int unique, note text)"
           % (name, name))
    yield name
    pg.sql("drop table if exists %s" % name)


def count_rows(node, table, where="true"):
    return int(node.scalar("select count(*) from %s where %s" % (table, where)))


# ---------------------------------------------------------------------------
# 1. the pool's scenarios
# ---------------------------------------------------------------------------

def test_creation_and_configuration(pg, make_pool, app):
    pool = make_pool(max_connections=5, timeout=2, retry_attempts=2, validation_interval=10,
                     query_timeout=7, row_format="tuple")
    assert pool.backend_kind == "postgresql"
    assert pool.target == "postgres@127.0.0.1:%d/postgres" % pg.port
    assert not pool.closed
    opts = pool.options
    assert opts["max_connections"] == 5 and opts["timeout"] == 2.0
    assert opts["retry_attempts"] == 2 and opts["query_timeout"] == 7.0
    assert opts["row_format"] == "tuple"
    # nothing is opened before the first borrow (min_connections=0)
    st = pool.get_stats()
    assert (st.total_connections, st.connections_opened, st.acquires) == (0, 0, 0)
    assert st.max_connections == 5 and st.min_connections == 0
    assert st.pool_health_score == 1.0
    assert sessions(pg, app) == {}
    with pool.get_connection() as c:
        assert c.execute_query("select 1 as one") == [(1,)]          # row_format option
        assert c.execute_query("select 1 as one", row_format="dict") == [{"one": 1}]
        pid = c.backend_pid
    assert list(sessions(pg, app)) == [pid]
    # a libpq key=value DSN and a config dict work too
    pool2 = make_pool(dsn=pg.kv_dsn(application_name=app),
                      config={"max_connections": 1, "timeout": 1})
    with pool2.get_connection() as c:
        assert c.execute_query("select current_database() as db") == [{"db": "postgres"}]
    assert pool2.options["max_connections"] == 1


def test_borrow_return_and_reuse(pg, make_pool, app):
    pool = make_pool(max_connections=3, timeout=2)
    with pool.get_connection() as c:
        assert c.valid
        assert not c.in_transaction
        pid, cid = c.backend_pid, c.connection_id
        assert c.execute_query("select pg_backend_pid() as p") == [{"p": pid}]
        st = pool.get_stats()
        assert (st.active_connections, st.idle_connections, st.total_connections) == (1, 0, 1)
    assert not c.valid
    st = pool.get_stats()
    assert (st.active_connections, st.idle_connections, st.total_connections) == (0, 1, 1)
    for _ in range(5):
        with pool.get_connection() as c:
            assert c.backend_pid == pid and c.connection_id == cid
            assert c.execute_query("select pg_backend_pid() as p") == [{"p": pid}]
    # acquire()/release() is the same thing without a with-block
    c = pool.acquire(timeout=1)
    assert c.backend_pid == pid
    c.release()
    c.release()                     # idempotent
    st = pool.get_stats()
    assert st.connections_opened == 1 and st.acquires == 7 and st.query_count == 6
    assert list(sessions(pg, app)) == [pid]
    check_stats_consistent(st)


def test_max_connections_and_timeout_error(pg, make_pool, app):
    pool = make_pool(max_connections=2, timeout=5)
    a, b = pool.acquire(), pool.acquire()
    assert a.backend_pid != b.backend_pid
    t0 = time.monotonic()
    with pytest.raises(PoolTimeoutError) as ei:
        with pool.get_connection(timeout=0.3):
            pass
    took = time.monotonic() - t0
    assert 0.28 <= took < 0.8, took
    e = ei.value
    assert e.error_code == 2003 and isinstance(e, ConnectionPoolError)
    in_use, waiting = timeout_counts(e)
    assert in_use == "2 of 2" and waiting in (0, 1), str(e)    # with or without the caller

    # with somebody else waiting in line, the message says so
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=3)))
    waiter.start()
    wait_for(lambda: pool.get_stats().requests_waiting == 1, what="a waiter")
    with pytest.raises(PoolTimeoutError) as ei:
        pool.acquire(timeout=0.2)
    in_use, waiting = timeout_counts(ei.value)
    assert in_use == "2 of 2" and waiting in (1, 2), str(ei.value)
    # a return goes to the waiter (first come, first served), no third connection
    pid_a = a.backend_pid
    a.release()
    waiter.join(5)
    assert got and got[0].backend_pid == pid_a
    st = pool.get_stats()
    assert st.total_connections == 2 and st.acquire_timeouts == 2
    assert len(sessions(pg, app)) == 2
    assert st.pool_health_score < 1.0
    got[0].release()
    b.release()
    check_stats_consistent(pool.get_stats())


def test_validation_replaces_a_terminated_idle_connection(pg, make_pool, app):
    pool = make_pool(max_connections=2, timeout=2, validation_interval=60)
    with pool.get_connection() as c:
        old = c.backend_pid
    terminate(pg, old)
    assert old not in sessions(pg, app)
    with pool.get_connection() as c:         # no error reaches the caller
        new = c.backend_pid
        assert new != old
        assert c.execute_query("select 41 + 1 as x") == [{"x": 42}]
    st = pool.get_stats()
    assert st.validation_failures == 1 and st.connections_replaced == 1
    assert st.connections_opened == 2 and st.connections_closed == 1
    assert st.error_count == 0 and st.total_connections == 1
    assert list(sessions(pg, app)) == [new]
    check_stats_consistent(st)


def test_background_validation_replaces_without_a_borrow(pg, make_pool, app):
    pool = make_pool(max_connections=2, timeout=2, validation_interval=0.2)
    with pool.get_connection() as c:
        old = c.backend_pid
    terminate(pg, old)
    wait_for(lambda: pool.get_stats().connections_replaced >= 1, timeout=3,
             what="the janitor to replace the dead connection")
    st = pool.get_stats()
    assert st.validation_failures >= 1 and st.acquires == 1   # nobody borrowed
    assert st.total_connections == 1 and st.idle_connections == 1
    live = wait_for(lambda: list(sessions(pg, app)), what="the replacement session")
    assert old not in live and len(live) == 1
    with pool.get_connection() as c:
        assert c.backend_pid == live[0]
        assert c.execute_query("select 1 as x") == [{"x": 1}]
    check_stats_consistent(pool.get_stats())


def test_min_connections_kept_warm(pg, make_pool, app):
    pool = make_pool(max_connections=4, min_connections=2, timeout=2, validation_interval=0.2)
    wait_for(lambda: pool.get_stats().idle_connections == 2, what="2 warm connections")
    assert len(wait_for(lambda: len(sessions(pg, app)) == 2 and sessions(pg, app))) == 2
    st = pool.get_stats()
    assert st.acquires == 0 and st.total_connections == 2
    # the server kills them: the pool opens others to get back to min
    before = set(sessions(pg, app))
    for pid in before:
        terminate(pg, pid)
    wait_for(lambda: len(sessions(pg, app)) == 2 and not before & set(sessions(pg, app)),
             timeout=5, what="2 new warm sessions")
    wait_for(lambda: pool.get_stats().idle_connections == 2)
    with pool.get_connection() as c:
        assert c.backend_pid in sessions(pg, app)
    check_stats_consistent(pool.get_stats())


def test_idle_timeout_closes_extra_connections(pg, make_pool, app):
    pool = make_pool(max_connections=4, min_connections=1, timeout=2, idle_timeout=0.3,
                     validation_interval=0.1)
    held = [pool.acquire() for _ in range(4)]
    pids = {c.backend_pid for c in held}
    assert len(pids) == 4 and set(sessions(pg, app)) == pids
    for c in held:
        c.release()
    wait_for(lambda: pool.get_stats().total_connections == 1, timeout=3,
             what="idle connections above min to be closed")
    live = wait_for(lambda: len(sessions(pg, app)) == 1 and sessions(pg, app), timeout=3)
    assert set(live) <= pids            # one of the old ones kept, no new one opened
    st = pool.get_stats()
    assert st.connections_closed == 3 and st.connections_opened == 4
    assert st.validation_failures == 0
    check_stats_consistent(st)


def test_max_lifetime_retires_connections(pg, make_pool, app):
    pool = make_pool(max_connections=2, timeout=2, max_lifetime=0.4, lifetime_jitter=0,
                     validation_interval=0.1)
    # an idle connection past its lifetime is replaced in the background
    with pool.get_connection() as c:
        first = c.backend_pid
    wait_for(lambda: first not in sessions(pg, app), timeout=3, what="retirement of the idle one")
    wait_for(lambda: pool.get_stats().connections_replaced >= 1)
    # one borrowed across its lifetime is closed when it comes back
    c = pool.acquire()
    held = c.backend_pid
    assert held != first
    time.sleep(0.5)
    assert c.execute_query("select 1 as x") == [{"x": 1}]   # still usable while borrowed
    c.release()
    wait_for(lambda: held not in sessions(pg, app), timeout=2, what="the retired session to end")
    with pool.get_connection() as c:
        assert c.backend_pid not in (first, held)
    st = pool.get_stats()
    assert st.validation_failures == 0 and st.error_count == 0
    check_stats_consistent(st)


def test_shutdown(pg, make_pool, app):
    pool = make_pool(max_connections=3, timeout=2)
    held = pool.acquire()
    idle = pool.acquire()
    idle_pid, held_pid = idle.backend_pid, held.backend_pid
    idle.release()
    assert set(sessions(pg, app)) == {idle_pid, held_pid}
    t0 = time.monotonic()
    pool.shutdown(timeout=0.2)                  # one still borrowed: gives up after 0.2 s
    assert time.monotonic() - t0 < 1.0
    assert pool.closed
    wait_for(lambda: idle_pid not in sessions(pg, app), what="idle session closed at shutdown")
    with pytest.raises(PoolClosedError) as ei:
        with pool.get_connection():
            pass
    assert ei.value.error_code == 2002
    with pytest.raises(PoolClosedError):
        pool.acquire(timeout=0.1)
    # the borrowed one still works until it is given back, then it is closed
    assert held.execute_query("select 1 as x") == [{"x": 1}]
    assert held_pid in sessions(pg, app)
    held.release()
    wait_for(lambda: sessions(pg, app) == {}, what="the returned session to be closed")
    st = pool.get_stats()
    assert st.closed and st.total_connections == 0 and st.pool_health_score == 0.0
    assert st.connections_opened == st.connections_closed == 2
    pool.shutdown()                             # idempotent
    with pytest.raises(InterfaceError):
        held.execute_query("select 1")


def test_shutdown_wakes_waiters(make_pool):
    pool = make_pool(max_connections=1, timeout=10)
    c = pool.acquire()
    errors = []

    def waiter():
        try:
            pool.acquire(timeout=10)
        except Exception as e:           # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    wait_for(lambda: pool.get_stats().requests_waiting == 1)
    t0 = time.monotonic()
    pool.shutdown(timeout=0)
    t.join(5)
    assert time.monotonic() - t0 < 1.0
    assert len(errors) == 1 and isinstance(errors[0], PoolClosedError), errors
    c.release()


def test_stats_add_up(pg, make_pool, table):
    pool = make_pool(max_connections=3, timeout=2)
    held = [pool.acquire() for _ in range(3)]
    st = pool.get_stats()
    assert (st.total_connections, st.active_connections, st.idle_connections) == (3, 3, 0)
    held[0].execute_query("insert into %s (v) values (1)" % table)
    with pytest.raises(IntegrityError):
        held[1].execute_query("insert into %s (v) values (1)" % table)
    with pytest.raises(ProgrammingError):
        held[2].execute_query("selec 1")
    held[0].release()
    st = pool.get_stats()
    assert (st.total_connections, st.active_connections, st.idle_connections) == (3, 2, 1)
    assert st.query_count == 3 and st.error_count == 2
    assert st.acquires == 3 and st.connections_opened == 3 and st.connections_closed == 0
    assert 0.0 < st.pool_health_score < 1.0
    assert st.connection_wait_time >= 0 and st.acquire_wait_p50 <= st.acquire_wait_p99
    for c in held[1:]:
        c.release()
    st = pool.get_stats()
    check_stats_consistent(st)
    assert st.to_dict()["query_count"] == 3


# ---------------------------------------------------------------------------
# 2. stress
# ---------------------------------------------------------------------------

def test_stress_no_connection_lent_twice(pg, make_pool, app):
    threads, per_thread, max_conn = 32, 2000, 5
    pool = make_pool(max_connections=max_conn, timeout=60)
    holders = {}
    lock = threading.Lock()
    problems = []
    start = threading.Barrier(threads)

    def work(tid):
        try:
            start.wait()
            for _ in range(per_thread):
                with pool.get_connection() as c:
                    pid = c.backend_pid
                    with lock:
                        if pid in holders:
                            problems.append("pid %d lent to %d while %d holds it"
                                            % (pid, tid, holders[pid]))
                        holders[pid] = tid
                    rows = c.execute_query("SELECT pg_backend_pid() AS p", row_format="tuple")
                    if rows != [(pid,)]:
                        problems.append("thread %d: %r on pid %d" % (tid, rows, pid))
                    with lock:
                        if holders.get(pid) != tid:
                            problems.append("pid %d taken from %d by %s" % (pid, tid, holders.get(pid)))
                        holders.pop(pid, None)
        except Exception as e:           # noqa: BLE001
            problems.append("thread %d: %r" % (tid, e))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in ts)
    assert problems == [], problems[:10]
    st = pool.get_stats()
    total_ops = threads * per_thread
    assert st.acquires == total_ops
    assert st.query_count == total_ops
    assert st.error_count == 0 and st.acquire_timeouts == 0
    assert st.total_connections <= max_conn
    assert st.connections_opened - st.connections_closed == st.total_connections
    assert len(sessions(pg, app)) == st.total_connections
    print("stress: %d borrow/query/return in %.2f s" % (total_ops, elapsed))
    assert elapsed < 45, elapsed


# ---------------------------------------------------------------------------
# 3. server terminating every session, server restart
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
    # several borrows in a row
    for _ in range(4):
        with pool.get_connection() as c:
            assert c.backend_pid not in old
            assert c.execute_query("select 1 as x") == [{"x": 1}]
    _borrow_all_and_threads(pool, 4, 8)
    st = pool.get_stats()
    assert st.error_count == 0 and st.validation_failures >= 4
    assert not set(sessions(pg, app)) & old
    check_stats_consistent(st)

    # a full restart
    before = set(sessions(pg, app))
    failures_before = st.validation_failures
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


# ---------------------------------------------------------------------------
# 4. a frozen server (SIGSTOP)
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
# 5. statement deadlines on a healthy server
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
# 6. parameters
# ---------------------------------------------------------------------------

def test_placeholders(make_pool):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        assert c.execute_query("SELECT %s::int AS a, %s::text AS b", (1, "x")) == [{"a": 1, "b": "x"}]
        assert c.execute_query("SELECT %s AS a", [7]) == [{"a": 7}]
        assert c.execute_query("SELECT %(a)s::int AS x, %(a)s::int + %(b)s AS y, %(b)s AS z",
                               {"a": 2, "b": 40, "unused": object()}) == [{"x": 2, "y": 42, "z": 40}]
        assert c.execute_query("SELECT 7 %% 3 AS m, %s AS p", (5,)) == [{"m": 1, "p": 5}]
        # '%' inside literals, dollar quotes, comments and quoted identifiers is left alone
        rows = c.execute_query(
            "SELECT '50%' AS lit, '%s' AS lit_s, E'it\\'s %s' AS estr, $$a %s b$$ AS dq, "
            "$t$%(x)s$t$ AS tagged, \"pct%s\" AS ident, %s AS p -- a %s comment\n"
            "/* block %s /* nested %d */ still %s */ FROM (SELECT 1 AS \"pct%s\") q",
            ("param",))
        assert rows == [{"lit": "50%", "lit_s": "%s", "estr": "it's %s", "dq": "a %s b",
                         "tagged": "%(x)s", "ident": 1, "p": "param"}]
        # without params the SQL goes as it is: no placeholder processing at all
        assert c.execute_query("SELECT '100%%' AS a, 7 % 3 AS m") == [{"a": "100%%", "m": 1}]
        # several statements are fine without params
        assert c.execute_query("SELECT 1 AS a; SELECT 2 AS b") == [{"b": 2}]
        # values are bound, never pasted into the SQL
        evil = "'); DROP TABLE pg_class; --"
        assert c.execute_query("SELECT %s AS v", (evil,)) == [{"v": evil}]


BAD_PARAMS = [
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1,), 2014, "2 placeholders but 1 parameter"),
    ("INSERT INTO {t} (v, note) VALUES (%s, 'x')", (1, 2), 2014, "1 placeholder but 2 parameters"),
    ("INSERT INTO {t} (v) VALUES (1)", (1,), 2014, "0 placeholders"),
    ("INSERT INTO {t} (v) VALUES (1)", {"a": 1}, 2014, "no placeholders"),
    ("INSERT INTO {t} (v, note) VALUES (%(v)s, %(note)s)", {"v": 1}, 2014, "'note' is missing"),
    ("INSERT INTO {t} (v) VALUES (%(v)s)", (1,), 2014, "must be a mapping"),
    ("INSERT INTO {t} (v) VALUES (%s)", {"v": 1}, 2014, "must be a sequence"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %(n)s)", (1, 2), 2014, "mixes"),
    ("INSERT INTO {t} (v, note) VALUES (%(v)s, %s)", {"v": 1}, 2014, "mixes"),
    ("INSERT INTO {t} (v) VALUES (%s)", "1", 2014, "not str"),
    ("INSERT INTO {t} (v) VALUES (%s)", b"1", 2014, "not bytes"),
    ("INSERT INTO {t} (v) VALUES (%s)", 1, 2014, "sequence or a mapping"),
    ("INSERT INTO {t} (v) VALUES (%d)", (1,), 2014, "unsupported placeholder"),
    ("INSERT INTO {t} (v) VALUES (1) -- %s\n RETURNING v %", (1,), 2014, "lone"),
    ("INSERT INTO {t} (v) VALUES (%s1)", (1,), 2014, "followed by a digit"),
    ("INSERT INTO {t} (v, note) VALUES (%(v)s, %(n)", {"v": 1, "n": 2}, 2014, "not followed by s"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, {1, 2}), 2015, "type 'set'"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, object()), 2015, "type 'object'"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, (1, 2)), 2015, "type 'tuple'"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, "nul\x00inside"), 2015, "NUL"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, "\udc80"), 2015, "UTF-8"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, {"k": {1, 2}}), 2015, "JSON"),
]


@pytest.mark.parametrize("sql,params,code,fragment", BAD_PARAMS,
                         ids=["%d-%s" % (i, b[3] or "x") for i, b in enumerate(BAD_PARAMS)])
def test_bad_parameters_raise_before_sending(pg, make_pool, table, sql, params, code, fragment):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        c.begin()
        c.execute_query("INSERT INTO %s (v) VALUES (-1)" % table)
        before = pool.get_stats()
        with pytest.raises(ProgrammingError) as ei:
            c.execute_query(sql.format(t=table), params)
        e = ei.value
        assert e.error_code == code, e
        assert e.sqlstate is None                   # not from the server
        assert fragment in str(e), str(e)
        after = pool.get_stats()
        # nothing was sent: no statement counted, the transaction is not aborted
        assert (after.query_count, after.error_count) == (before.query_count, before.error_count)
        assert c.in_transaction
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 1}]
        c.commit()
    assert count_rows(pg, table) == 1
    with pool.get_connection() as c:                # the pool is fine
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]


def test_a_set_is_not_a_sequence_of_parameters(make_pool, table):
    """A set has no order: binding it to %s, %s would pick the order by hash."""
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("INSERT INTO %s (v, note) VALUES (%%s, %%s)" % table, {1, "one"})
        assert ei.value.error_code == 2014
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]


def test_nul_in_query_without_params_is_rejected(make_pool, table):
    """With params the translator rejects a NUL in the query ("libpq stops at a NUL, so the
    statement run would silently be a truncated one"); without params the truncated
    statement is run."""
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("INSERT INTO %s (v) VALUES (1)\x00; DELETE FROM %s" % (table, table))
        assert ei.value.error_code in (2014, 2015)
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]


# ---------------------------------------------------------------------------
# 7. transactions
# ---------------------------------------------------------------------------

def test_autocommit_outside_begin(pg, make_pool, table):
    pool = make_pool(max_connections=2, timeout=2)
    with pool.get_connection() as a, pool.get_connection() as b:
        assert a.execute_query("INSERT INTO %s (v) VALUES (%%s)" % table, (1,)) == 1
        assert not a.in_transaction
        assert b.execute_query("SELECT v FROM %s" % table) == [{"v": 1}]
        assert a.execute_query("UPDATE %s SET v = 2 WHERE v = 99" % table) == 0
        assert a.execute_query("CREATE TEMP TABLE tt (x int)") == -1
        a.commit()        # no-op outside a transaction
        a.rollback()
    assert count_rows(pg, table) == 1


def test_begin_commit_rollback(pg, make_pool, table):
    pool = make_pool(max_connections=2, timeout=2)
    with pool.get_connection() as a, pool.get_connection() as b:
        a.begin()
        assert a.in_transaction
        a.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        assert b.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]
        with pytest.raises(ProgrammingError) as ei:
            a.begin()
        assert ei.value.error_code == 2017
        a.commit()
        assert not a.in_transaction
        assert b.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 1}]
        a.begin()
        a.execute_query("INSERT INTO %s (v) VALUES (2)" % table)
        a.rollback()
        assert not a.in_transaction
        assert b.execute_query("SELECT v FROM %s ORDER BY v" % table) == [{"v": 1}]


def test_transaction_context(pg, make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        with c.transaction() as t:
            assert t is c and c.in_transaction
            c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        assert not c.in_transaction
        assert count_rows(pg, table) == 1

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with c.transaction():
                c.execute_query("INSERT INTO %s (v) VALUES (2)" % table)
                raise Boom()
        assert not c.in_transaction
        assert count_rows(pg, table) == 1
        # a server error inside: rolled back, the server error propagates
        with pytest.raises(IntegrityError):
            with c.transaction():
                c.execute_query("INSERT INTO %s (v) VALUES (3)" % table)
                c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        assert not c.in_transaction
        assert count_rows(pg, table) == 1
        # a failure at COMMIT (deferred constraint) raises from the with statement
        c.execute_query("ALTER TABLE %s ADD CONSTRAINT %s_n UNIQUE (note) DEFERRABLE INITIALLY DEFERRED"
                        % (table, table))
        with pytest.raises(IntegrityError) as ei:
            with c.transaction():
                c.execute_query("INSERT INTO %s (v, note) VALUES (10, 'dup'), (11, 'dup')" % table)
        assert ei.value.sqlstate == "23505"
        assert not c.in_transaction
        assert count_rows(pg, table) == 1


def test_open_transaction_rolled_back_on_return(pg, make_pool, table, app):
    pool = make_pool(max_connections=1, timeout=2)
    c = pool.acquire()
    pid = c.backend_pid
    c.begin()
    c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
    assert sessions(pg, app)[pid][0] == "idle in transaction"
    c.release()
    assert count_rows(pg, table) == 0
    assert sessions(pg, app)[pid][0] == "idle"
    with pool.get_connection() as c:
        assert c.backend_pid == pid            # kept: the rollback worked
        assert not c.in_transaction
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]
        # also a transaction opened with plain SQL, and one in the failed state
        c.execute_query("BEGIN; INSERT INTO %s (v) VALUES (2)" % table)
        assert c.in_transaction
    with pool.get_connection() as c:
        assert c.backend_pid == pid and not c.in_transaction
        c.begin()
        with pytest.raises(ProgrammingError):
            c.execute_query("SELECT nope")
    with pool.get_connection() as c:
        assert c.backend_pid == pid and not c.in_transaction
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
    assert count_rows(pg, table) == 0


def test_execute_many_is_atomic(pg, make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        n = c.execute_many("INSERT INTO %s (v, note) VALUES (%%s, %%s)" % table,
                           [(i, "n%d" % i) for i in range(5)])
        assert n == 5 and not c.in_transaction
        assert count_rows(pg, table) == 5
        with pytest.raises(IntegrityError):
            c.execute_many("INSERT INTO %s (v) VALUES (%%(v)s)" % table,
                           [{"v": 10}, {"v": 11}, {"v": 3}, {"v": 12}])
        assert not c.in_transaction
        assert count_rows(pg, table) == 5
        with pytest.raises(ProgrammingError):        # a bad parameter set mid-way
            c.execute_many("INSERT INTO %s (v) VALUES (%%s)" % table, [(20,), (21,), (22, 23)])
        assert count_rows(pg, table) == 5
        # inside an open transaction it joins it
        c.begin()
        c.execute_many("INSERT INTO %s (v) VALUES (%%s)" % table, [(30,), (31,)])
        assert c.in_transaction
        c.rollback()
        assert count_rows(pg, table) == 5
        assert c.execute_many("INSERT INTO %s (v) VALUES (%%s)" % table, []) == 0


def test_failed_statement_aborts_the_transaction(pg, make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        c.begin()
        c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        with pytest.raises(DataError):
            c.execute_query("SELECT 1/0")
        with pytest.raises(DatabaseError) as ei:
            c.execute_query("INSERT INTO %s (v) VALUES (2)" % table)
        e = ei.value
        assert e.sqlstate == "25P02" and e.error_code == 2005
        assert isinstance(e, InternalError)
        assert "current transaction is aborted" in str(e)
        assert c.in_transaction
        c.rollback()
        assert not c.in_transaction
        assert c.execute_query("INSERT INTO %s (v) VALUES (3)" % table) == 1
    assert [r[0] for r in pg.sql("select v from %s order by v" % table)] == ["3"]


# ---------------------------------------------------------------------------
# 8. the GIL
# ---------------------------------------------------------------------------

def test_gil_released_during_queries(make_pool):
    pool = make_pool(max_connections=4, timeout=5)
    warm = [pool.acquire() for _ in range(4)]
    for c in warm:
        c.release()
    barrier = threading.Barrier(5)
    errors = []

    def sleeper():
        try:
            with pool.get_connection() as c:
                barrier.wait()
                c.execute_query("SELECT pg_sleep(0.5)")
        except Exception as e:           # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=sleeper) for _ in range(4)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    # the main thread keeps running Python meanwhile
    spins = 0
    while any(t.is_alive() for t in ts):
        spins += 1
        time.sleep(0.001)
    took = time.monotonic() - t0
    assert errors == []
    assert took < 1.2, took
    assert spins > 50


# ---------------------------------------------------------------------------
# 9. use after return
# ---------------------------------------------------------------------------

def test_use_after_return(make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as old:
        pid, cid = old.backend_pid, old.connection_id
    new = pool.acquire()
    assert new.backend_pid == pid and new.connection_id == cid        # the same slot, lent again
    new.begin()
    new.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
    for call in (lambda: old.execute_query("SELECT 1"),
                 lambda: old.execute_query("INSERT INTO %s (v) VALUES (2)" % table),
                 lambda: old.execute_many("SELECT %s", [(1,)]),
                 old.begin, old.commit, old.rollback, old.ping, old.transaction,
                 lambda: old.backend_pid, lambda: old.in_transaction, lambda: old.connection_id,
                 old.__enter__):
        with pytest.raises(InterfaceError) as ei:
            call()
        assert ei.value.error_code == 2016
    assert not old.valid
    old.release()                       # a no-op: must not give back the new borrower's slot
    old.close()
    assert new.valid and new.in_transaction
    assert pool.get_stats().active_connections == 1
    assert new.execute_query("SELECT v FROM %s" % table) == [{"v": 1}]
    new.commit()
    new.release()
    with pool.get_connection() as c:
        assert c.execute_query("SELECT v FROM %s" % table) == [{"v": 1}]


SHARED_CONNECTION_PROGRAM = """
import json, sys, threading
from noodlecore.database import DatabaseConnectionPool, Error, InterfaceError
pool = DatabaseConnectionPool(sys.argv[1], max_connections=1, timeout=5)
c = pool.acquire()
pid = c.backend_pid
out = {"ok": 0, "refused": 0, "wrong": [], "errors": []}
lock = threading.Lock()
def work(tid):
    for i in range(300):
        want = tid * 100000 + i
        try:
            # a deadline, so that a thread waiting for a result another thread took ends
            r = c.execute_query("SELECT %s::int AS v", (want,), timeout=2, row_format="tuple")
        except InterfaceError:
            with lock:
                out["refused"] += 1      # refusing concurrent use cleanly is fine
            continue
        except Error as e:
            with lock:
                out["errors"].append("%s: %s" % (type(e).__name__, str(e)[:100]))
            continue
        with lock:
            if r == [(want,)]:
                out["ok"] += 1
            else:
                out["wrong"].append("%d got %r" % (want, r))
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
try:
    out["after"] = [c.backend_pid == pid, c.execute_query("SELECT 1 AS x")]
except Error as e:
    out["after"] = repr(e)
out["nerrors"] = len(out["errors"])
out["errors"] = sorted(set(out["errors"]))[:5]
out["nwrong"] = len(out["wrong"])
out["wrong"] = out["wrong"][:5]
print(json.dumps(out))
"""


def test_one_connection_used_by_several_threads_at_once(pg, app):
    """Statements run with the GIL released, so two threads could drive the same PGconn at
    once: each call must either run on its own or be refused with InterfaceError -- never
    return another thread's rows, desynchronise the protocol or hang.  In a child process:
    unsynchronised libpq use may crash."""
    proc = subprocess.run([sys.executable, "-c", SHARED_CONNECTION_PROGRAM,
                           pg.dsn(application_name=app)],
                          capture_output=True, text=True, timeout=60, env=subprocess_env(), cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["nwrong"] == 0, out
    assert out["nerrors"] == 0, out
    assert out["ok"] + out["refused"] == 1200 and out["ok"] > 0, out
    assert out["after"] == [True, [{"x": 1}]], out
    assert proc.stderr == "", proc.stderr[-2000:]     # libpq complaining about the protocol


# ---------------------------------------------------------------------------
# 10. server errors
# ---------------------------------------------------------------------------

def test_server_errors(make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        with pytest.raises(IntegrityError) as ei:
            c.execute_query("INSERT INTO %s (v) VALUES (%%s)" % table, (1,))
        e = ei.value
        assert e.sqlstate == "23505" and e.error_code == 2005
        assert "duplicate key value violates unique constraint" in e.server_message
        assert "Key (v)=(1) already exists" in e.server_message
        assert not c.in_transaction
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]

        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("SELEC 1")
        assert ei.value.sqlstate == "42601" and ei.value.error_code == 2005
        assert "syntax error" in ei.value.server_message
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]

        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("SELECT * FROM no_such_table_here")
        assert ei.value.sqlstate == "42P01"

        with pytest.raises(DataError) as ei:
            c.execute_query("SELECT 1 / %s AS x", (0,))
        assert ei.value.sqlstate == "22012" and "division by zero" in str(ei.value)
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]

        with pytest.raises(DataError) as ei:
            c.execute_query("SELECT %s::int AS x", ("abc",))
        assert ei.value.sqlstate == "22P02"
        assert not c.in_transaction
        assert c.execute_query("SELECT 2 AS x") == [{"x": 2}]
    assert pool.get_stats().total_connections == 1    # server errors do not discard


def test_borrowed_connection_whose_session_was_terminated(pg, make_pool, app):
    pool = make_pool(max_connections=1, timeout=2)
    c = pool.acquire()
    pid = c.backend_pid
    terminate(pg, pid)
    with pytest.raises(OperationalError) as ei:
        c.execute_query("SELECT 1")
    assert ei.value.error_code == 2004 and ei.value.sqlstate == "08006"
    c.release()                                        # discarded
    with pool.get_connection() as c:
        assert c.backend_pid != pid
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
    st = pool.get_stats()
    assert st.total_connections == 1
    check_stats_consistent(st)


def test_session_terminated_during_a_statement(pg, make_pool):
    pool = make_pool(max_connections=1, timeout=2)
    c = pool.acquire()
    pid = c.backend_pid
    killer = threading.Timer(0.3, pg.sql, ("select pg_terminate_backend(%d)" % pid,))
    killer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(OperationalError) as ei:
            c.execute_query("SELECT pg_sleep(5)")
    finally:
        killer.join()
    assert time.monotonic() - t0 < 3
    assert ei.value.error_code == 2004 and ei.value.sqlstate == "08006"
    assert "terminating connection" in str(ei.value)
    c.release()
    with pool.get_connection() as c:
        assert c.backend_pid != pid and c.execute_query("SELECT 1 AS x") == [{"x": 1}]
    check_stats_consistent(pool.get_stats())


# ---------------------------------------------------------------------------
# 11. interpreter exit with a busy PostgreSQL pool
# ---------------------------------------------------------------------------

EXIT_PROGRAM = """
import os, sys, threading, time
from noodlecore.database import DatabaseConnectionPool
pool = DatabaseConnectionPool(sys.argv[1], max_connections=3, min_connections=1,
                              validation_interval=0.05)
held = pool.acquire()                       # borrowed by the main thread, never returned
held.execute_query("SELECT 1")
sleeping = threading.Event()
def busy():
    with pool.get_connection() as c:
        sleeping.set()
        c.execute_query("SELECT pg_sleep(30)")
threading.Thread(target=busy, daemon=True).start()
sleeping.wait(10)
time.sleep(0.3)
sys.stdout.write("MAIN-DONE %f\\n" % time.time())
sys.stdout.flush()
"""


def test_exit_with_busy_pg_pool(pg, app):
    t_start = time.time()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(EXIT_PROGRAM),
                           pg.dsn(application_name=app)],
                          capture_output=True, text=True, timeout=30, env=subprocess_env(), cwd="/")
    t_end = time.time()
    try:
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr
        done = [l for l in proc.stdout.splitlines() if l.startswith("MAIN-DONE")]
        assert done, proc.stdout
        done_at = float(done[0].split()[1])
        assert t_start < done_at
        assert t_end - done_at < 2.0, "exit took %.2f s" % (t_end - done_at)
    finally:
        # the pg_sleep(30) session only notices its client is gone when it finishes
        pg.sql("select pg_terminate_backend(pid) from pg_stat_activity "
               "where application_name = '%s'" % app)


FROZEN_EXIT_PROGRAM = """
import sys, threading, time
from noodlecore.database import DatabaseConnectionPool
pool = DatabaseConnectionPool(sys.argv[1], max_connections=4, min_connections=2,
                              validation_interval=0.05)
held = pool.acquire()
held.execute_query("SELECT 1")
with pool.get_connection() as c:
    c.execute_query("SELECT 1")
sys.stdout.write("READY\\n")
sys.stdout.flush()
sys.stdin.readline()                    # the server is frozen from here on
def stuck():
    with pool.get_connection() as c:
        c.execute_query("SELECT 1")     # never answered, no deadline
threading.Thread(target=stuck, daemon=True).start()
time.sleep(0.3)                         # the janitor is stuck in a ping by now
sys.stdout.write("MAIN-DONE %f\\n" % time.time())
sys.stdout.flush()
"""


def test_exit_with_pg_pool_on_a_frozen_server(pg, app):
    proc = subprocess.Popen([sys.executable, "-c", FROZEN_EXIT_PROGRAM, pg.dsn(application_name=app)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=subprocess_env(), cwd="/")
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        pg.freeze()
        try:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            end = time.time()
        finally:
            pg.thaw()
        assert proc.poll() is not None, "the program did not exit"
        assert line.startswith("MAIN-DONE"), line
        assert end - float(line.split()[1]) < 2.0
        assert proc.returncode == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()


# ---------------------------------------------------------------------------
# 12. nothing listening
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
