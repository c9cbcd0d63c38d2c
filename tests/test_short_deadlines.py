"""A borrow's own short deadline never condemns a healthy connection (issue 8, point 6's
sibling), and a connection given up after an unconfirmed cancel says so.

A borrow checks an idle connection before lending it: the reply its return's ROLLBACK still
owes is read (`settle`), and one idle longer than ping_after_idle is pinged.  Only
validation_timeout judges a connection: when the borrower's own, shorter, deadline ends such a
check, the connection has proven nothing, so it goes back idle with its reply still owed (read
by the next borrow), and the borrower gets PoolTimeoutError (2003).  The server's reply is made
late deterministically by a TcpProxy that holds it back (blackhole: held, not dropped, and
delivered when lifted); the server's own view (pg_stat_activity) and the pool's counters show
that the session was kept, not replaced.
"""

import os
import signal
import threading
import time

import pytest

from helpers import sessions, wait_for
from noodlecore.database import OperationalError, PoolTimeoutError, QueryTimeoutError

BORROW = 0.3     # the borrower's deadline, far below validation_timeout (30 s)


def borrow_fails(pool, timeout):
    t0 = time.monotonic()
    with pytest.raises(PoolTimeoutError) as ei:
        with pool.get_connection(timeout=timeout):
            pass
    return ei.value, time.monotonic() - t0


def kept(pool, pg, app, pid):
    """The pool's one connection is still the session pid: nothing closed, replaced or failed."""
    st = pool._raw_stats()
    assert (st["connections_opened"], st["connections_closed"], st["validation_failures"]) == (1, 0, 0), st
    assert list(sessions(pg, app)) == [pid]
    with pool.get_connection(timeout=5) as c:
        assert c.backend_pid == pid
        assert c.execute_query("SELECT 1 AS x", row_format="tuple") == [(1,)]
        assert not c.in_transaction


def test_a_slow_ping_past_the_borrowers_deadline_keeps_the_connection(proxied, pg, app):
    pool, px = proxied(max_connections=1, timeout=5, ping_after_idle=0, validation_timeout=30)
    with pool.get_connection() as c:
        pid = c.backend_pid
    px.blackhole(True)                  # the ping's reply is held back
    err, took = borrow_fails(pool, BORROW)
    assert err.error_code == 2003, err
    assert "kept" in err.message, err.message
    assert took < 5, took               # the borrower's deadline, not validation_timeout
    st = pool._raw_stats()
    assert (st["idle_connections"], st["total_connections"]) == (1, 1), st
    px.blackhole(False)                 # the reply arrives; the next borrow reads it first
    kept(pool, pg, app, pid)


def in_a_transaction_behind_a_blackhole(proxied):
    """A pool of one connection, borrowed with a transaction open, its proxy now holding the
    server's replies back: giving it back sends a ROLLBACK whose reply is owed.
    ping_after_idle large: the next borrow's only round trip is that reply."""
    pool, px = proxied(max_connections=1, timeout=5, ping_after_idle=600, validation_timeout=30)
    c = pool.acquire()
    pid = c.backend_pid
    c.begin()
    c.execute_query("SELECT 1")
    px.blackhole(True)
    return pool, px, c, pid


def test_a_slow_rollback_reply_past_the_borrowers_deadline_keeps_the_connection(proxied, pg, app):
    pool, px, c, pid = in_a_transaction_behind_a_blackhole(proxied)
    c.release()                         # ROLLBACK sent, its reply not awaited (and now held back)
    err, took = borrow_fails(pool, BORROW)
    assert err.error_code == 2003 and "kept" in err.message, err
    px.blackhole(False)
    kept(pool, pg, app, pid)


def test_a_waiter_handed_a_connection_whose_rollback_is_late_keeps_it(proxied, pg, app):
    """The same on the hand-off path: a borrower waiting in line gets the connection straight
    from its return, with the ROLLBACK's reply still owed."""
    pool, px, c, pid = in_a_transaction_behind_a_blackhole(proxied)
    out = {}

    def waiter():
        try:
            with pool.get_connection(timeout=1.0):
                out["got"] = True
        except PoolTimeoutError as e:
            out["err"] = e
    t = threading.Thread(target=waiter)
    t.start()
    wait_for(lambda: pool._raw_stats()["requests_waiting"] == 1, timeout=10, what="the waiter to queue")
    c.release()                         # handed to the waiter, its ROLLBACK's reply held back
    t.join(10)
    assert "err" in out and out["err"].error_code == 2003, out
    px.blackhole(False)
    kept(pool, pg, app, pid)


def test_the_validation_timeout_still_condemns_a_silent_connection(proxied, pg, app):
    """The other side of the rule: when validation_timeout (not the borrower) ends the ping,
    the connection is dropped and a replacement is tried."""
    pool, px = proxied(max_connections=1, timeout=5, ping_after_idle=0, validation_timeout=0.2,
                       connect_timeout=0.3, retry_attempts=1)
    with pool.get_connection():
        pass
    px.blackhole(True)
    t0 = time.monotonic()
    with pytest.raises(OperationalError) as ei:
        with pool.get_connection(timeout=3):
            pass
    assert ei.value.error_code == 2011, ei.value          # the replacement's connect failed too
    assert time.monotonic() - t0 < 3
    st = pool._raw_stats()
    assert st["validation_failures"] == 1 and st["connections_closed"] == 1, st


def test_a_statement_after_an_unconfirmed_cancel_says_why(proxied):
    """A statement past its deadline whose cancel the server never confirms (a blackhole holds
    both) leaves its connection given up; the next statement on it says so and names the
    endpoint, instead of an empty "connection lost:"."""
    pool, px = proxied(max_connections=1, timeout=5)
    with pool.get_connection() as c:
        c.execute_query("SELECT 1")
        px.blackhole(True)
        with pytest.raises(QueryTimeoutError):
            c.execute_query("SELECT 1", timeout=0.3)
        with pytest.raises(OperationalError) as ei:
            c.execute_query("SELECT 1")
    msg = ei.value.message
    assert ei.value.error_code == 2004, ei.value
    assert "127.0.0.1:%d" % px.port in msg, msg
    assert "cancel of an earlier statement was not confirmed" in msg, msg
    assert not msg.rstrip().endswith(":"), msg
    px.blackhole(False)
    with pool.get_connection(timeout=5) as c:            # the pool replaced it
        assert c.execute_query("SELECT 2 AS y") == [{"y": 2}]


@pytest.fixture
def frozen(pg):
    """frozen(pid): stop that backend (SIGSTOP: a silent server, the socket open); resumed at the end."""
    stopped = []

    def freeze(pid):
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
    yield freeze
    for pid in stopped:
        os.kill(pid, signal.SIGCONT)


def test_a_silent_connection_does_not_fail_every_short_borrow(make_pool, pg, app, frozen):
    """One silent connection (its backend frozen) on top of the idle stack, a healthy one under
    it: the first short borrow's check of the silent one is cut short and it goes back UNDER the
    healthy one, so the next short borrows get the healthy one (the review of h-intr saw every
    one fail with 2003, "0 of 2 in use", until the janitor's round).  Its ping's reply is owed
    from when it was sent, so once owed past validation_timeout the next check of it closes it
    at once, within that borrow's own short deadline, and opens a replacement."""
    vt = 1.5
    pool = make_pool(dsn="postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s" % (pg.port, app),
                     max_connections=2, timeout=5, ping_after_idle=0, validation_timeout=vt)
    a, b = pool.acquire(), pool.acquire()
    silent, healthy = a.backend_pid, b.backend_pid
    b.release()
    a.release()                         # the silent one on top
    frozen(silent)
    outcomes, owed_by = [], None
    for _ in range(4):
        try:
            with pool.get_connection(timeout=BORROW) as c:
                outcomes.append(c.backend_pid)
                assert c.execute_query("SELECT 1 AS x", row_format="tuple") == [(1,)]
        except PoolTimeoutError as e:
            assert e.error_code == 2003, e
            outcomes.append("2003")
            owed_by = time.monotonic()  # its ping was sent before this
    # the first meets the silent one (on top), the others the healthy one
    assert outcomes == ["2003"] + [healthy] * 3, (outcomes, silent, healthy)
    st = pool._raw_stats()
    assert (st["connections_closed"], st["idle_connections"]) == (0, 2), st

    # the ping owed longer than validation_timeout (a clock condition: the time must pass)
    time.sleep(max(0.0, owed_by + vt + 0.05 - time.monotonic()))
    with pool.get_connection(timeout=5) as h:
        assert h.backend_pid == healthy
        # had it waited for the reply, its 1 s would run out first (2003)
        with pool.get_connection(timeout=1.0) as n:
            assert n.backend_pid not in (silent, healthy)
            assert n.execute_query("SELECT 2 AS x", row_format="tuple") == [(2,)]
    st = pool._raw_stats()
    assert (st["validation_failures"], st["connections_closed"], st["connections_opened"]) == (1, 1, 3), st


def test_a_ping_unanswered_within_validation_timeout_gives_the_connection_up(make_pool, pg, app, frozen):
    """conn.ping() with no answer within validation_timeout: False, and the connection is given
    up at once, so a statement with no deadline of its own fails at once saying why instead of
    waiting for the ping's owed reply (for ever, with the server silent); its return closes it."""
    pool = make_pool(dsn="postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s" % (pg.port, app),
                     max_connections=1, timeout=5, validation_timeout=0.3)
    c = pool.acquire()
    pid = c.backend_pid
    frozen(pid)
    # Without the fix the statement would wait on the owed reply: the backend resumes after
    # 10 s so that the test then fails (the statement succeeds) instead of hanging.
    resume = threading.Timer(10, os.kill, (pid, signal.SIGCONT))
    try:
        assert c.ping() is False
        resume.start()
        with pytest.raises(OperationalError) as ei:
            c.execute_query("SELECT 1")
    finally:
        resume.cancel()
    assert "no answer to a ping within validation_timeout" in ei.value.message, ei.value.message
    assert ei.value.error_code != 2003, ei.value
    c.release()
    st = pool._raw_stats()
    assert (st["connections_closed"], st["total_connections"]) == (1, 0), st


def test_a_busy_sqlite_database_past_the_borrowers_deadline_keeps_the_connection(tmp_path):
    """SQLite's ping waits for a lock another connection holds: the borrow's own deadline ends
    it, which says nothing of the connection, so it is kept (nothing is owed) and the borrow
    gets 2003; once the lock is gone the same connection is lent."""
    import sqlite3
    from noodlecore.database import DatabaseConnectionPool
    path = str(tmp_path / "busy.db")
    pool = DatabaseConnectionPool("sqlite:///" + path, max_connections=1, timeout=5, ping_after_idle=0,
                                  validation_timeout=30)
    try:
        with pool.get_connection() as c:
            c.execute_query("CREATE TABLE t (x int)")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            err, took = borrow_fails(pool, BORROW)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert err.error_code == 2003, err
        assert took < 5, took
        st = pool._raw_stats()
        assert (st["validation_failures"], st["connections_closed"], st["idle_connections"]) == (0, 0, 1), st
        with pool.get_connection(timeout=5) as c:
            assert c.execute_query("SELECT count(*) FROM t", row_format="tuple") == [(0,)]
        st = pool._raw_stats()
        assert (st["connections_opened"], st["connections_closed"]) == (1, 0), st
    finally:
        pool.shutdown(timeout=0)
