"""The PostgreSQL connection pool's everyday behaviour against a real PostgreSQL
15 server (noodlecore.testing): creation and options, borrowing, reuse,
max_connections and the timeout error, validation (on borrow and in the
background), min/idle/lifetime management, shutdown, stats that add up, and a
many-thread stress run.

Pools carry the test's own application_name (``app``, ``make_pool``: conftest.py),
so that pg_stat_activity tells their sessions apart.  Other pool topics are in
the other test_pg_pool_*.py modules.
"""

import re
import threading
import time

import pytest

from helpers import check_stats_consistent, sessions, terminate, wait_for
from noodlecore.database import (
    ConnectionPoolError, IntegrityError, InterfaceError, PoolClosedError, PoolTimeoutError,
    ProgrammingError,
)


def timeout_counts(e):
    """("N of M", waiting) from a PoolTimeoutError's message."""
    m = re.search(r"(\d+ of \d+) connections in use, (\d+) callers? waiting", str(e))
    assert m, str(e)
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------------------
# the pool's scenarios
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
# stress
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
