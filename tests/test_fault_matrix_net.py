"""Fault matrix, network rows: a TcpProxy (noodlecore.testing) between the pool and
the shared server drops packets (blackhole), resets connections (RST), leaves
them half-open (the server's side gone without a word) or trickles the server's
bytes (slow drip).

What must hold: an error at the deadline, never later (a blackhole), a typed
error (a reset, a half-open socket, a slow drip), and the pool recovers: the
next borrow after the fault is lifted works.  Each test records what it
measured (tests/figures.py).  Bounds on elapsed time are correctness bounds
(the deadline plus the documented 0.5 s cancel grace) with generous slack for
a loaded machine; they never assert speed.
"""

import threading
import time

import pytest

from figures import record_figure
from helpers import sessions, wait_for
from noodlecore.database import DatabaseError, OperationalError, QueryTimeoutError

# Their subject is the server's and the network's behaviour (the same C paths on
# every interpreter): tests/run.sh runs them in pytest-python3 and pytest-asan,
# not on the second CPython.
pytestmark = pytest.mark.network

CANCEL_GRACE = 0.5   # nc_pg.c: how long a cancelled statement may take to stop
SLACK = 1.5          # a loaded 2-core machine under ASan


def timed(fn):
    """(exception raised by fn, seconds it took); fails if fn returns."""
    t0 = time.monotonic()
    with pytest.raises(DatabaseError) as ei:
        fn()
    return ei.value, time.monotonic() - t0


def works(pool, timeout=5):
    with pool.get_connection(timeout=timeout) as c:
        return c.execute_query("SELECT 7 AS n", timeout=timeout) == [{"n": 7}]


# ---------------------------------------------------------------------------
# TCP blackhole: packets go nowhere, sockets stay open
# ---------------------------------------------------------------------------

def test_blackhole_mid_statement_errors_at_the_deadline(proxied):
    pool, px = proxied(max_connections=2, timeout=5)
    deadline = 0.5
    with pool.get_connection() as c:
        c.execute_query("SELECT 1")
        px.blackhole(True)
        err, took = timed(lambda: c.execute_query("SELECT 1", timeout=deadline))
    assert isinstance(err, QueryTimeoutError) and err.error_code == 2012, err
    assert deadline <= took <= deadline + CANCEL_GRACE + SLACK, took
    px.blackhole(False)
    assert works(pool)
    record_figure("TCP blackhole mid-statement", "QueryTimeoutError 2012 after %.2f s (deadline %.1f s + "
                  "%.1f s cancel grace); next borrow works" % (took, deadline, CANCEL_GRACE))


def test_blackhole_mid_borrow_errors_at_the_borrow_deadline(proxied):
    # ping_after_idle=0: the borrow pings the idle connection (a round trip into the hole);
    # the validation and connect deadlines are far beyond the borrow's, which must win.
    pool, px = proxied(max_connections=1, timeout=5, ping_after_idle=0, validation_timeout=30,
                       connect_timeout=30)
    assert works(pool)
    px.blackhole(True)
    deadline = 0.6
    # The borrower's deadline ends the ping: 2003, and the connection is kept (not proven
    # dead: tests/test_short_deadlines.py).
    err, took_ping = timed(lambda: pool.get_connection(timeout=deadline).__enter__())
    assert isinstance(err, OperationalError) and err.error_code == 2003, err
    assert deadline <= took_ping <= deadline + SLACK, took_ping
    # An empty pool (a second one through another proxy): the borrow's connect goes into the hole.
    empty, px2 = proxied(max_connections=1, timeout=5, validation_timeout=30, connect_timeout=30)
    px2.blackhole(True)
    err2, took_connect = timed(lambda: empty.get_connection(timeout=deadline).__enter__())
    assert isinstance(err2, OperationalError) and err2.error_code in (2003, 2009), err2
    assert deadline <= took_connect <= deadline + SLACK, took_connect
    px.blackhole(False)
    px2.blackhole(False)
    assert works(pool) and works(empty)
    record_figure("TCP blackhole mid-borrow", "ping of an idle connection: %s %d after %.2f s (connection kept), "
                  "connect: %s %d after %.2f s (borrow deadline %.1f s, validation/connect deadlines 30 s); pool "
                  "recovers" % (type(err).__name__, err.error_code, took_ping, type(err2).__name__, err2.error_code,
                                took_connect, deadline))


# ---------------------------------------------------------------------------
# connection reset (RST), half-open socket, slow drip
# ---------------------------------------------------------------------------

def test_reset_mid_statement_and_idle(pg, proxied, app):
    pool, px = proxied(max_connections=2, timeout=5)
    out = {}

    def run():
        with pool.get_connection() as c:
            t0 = time.monotonic()
            try:
                c.execute_query("SELECT pg_sleep(30)", timeout=60)
            except DatabaseError as e:
                out["err"], out["took"] = e, time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: any("pg_sleep" in q for _s, q in sessions(pg, app).values()), timeout=10,
             what="the statement to run")
    t_reset = time.monotonic()
    px.reset_all()
    t.join(15)
    assert not t.is_alive()
    after_reset = time.monotonic() - t_reset
    err = out["err"]
    assert isinstance(err, OperationalError) and err.error_code == 2004 and err.connection_failure, err
    assert after_reset <= SLACK, after_reset
    # Idle connections reset while in the pool: replaced on borrow.  One polled within the
    # last 5 ms is lent without a new poll (README, "Borrowing") and fails its statement with
    # 2004 once; it is discarded then, never lent dead twice.
    held = [pool.acquire() for _ in range(2)]
    for c in held:
        c.release()
    px.reset_all()
    before = pool.get_stats()
    errors = []
    for _ in range(6):
        try:
            assert works(pool)
        except DatabaseError as e:
            errors.append(e)
    st = pool.get_stats()
    assert len(errors) <= 2 and all(e.error_code == 2004 and e.connection_failure for e in errors), errors
    assert works(pool) and works(pool)
    record_figure("connection reset", "statement: OperationalError 2004 %.2f s after the RST; 2 idle reset "
                  "connections: %d replaced on borrow, %d lent dead once (5 ms poll window), of 6 borrows"
                  % (after_reset, st.validation_failures - before.validation_failures, len(errors)))


def test_half_open_socket(proxied):
    pool, px = proxied(max_connections=1, timeout=5, ping_after_idle=0, validation_timeout=0.5)
    deadline = 0.5
    with pool.get_connection() as c:
        c.execute_query("SELECT 1")
        px.half_open()
        err, took = timed(lambda: c.execute_query("SELECT 1", timeout=deadline))
    assert isinstance(err, QueryTimeoutError) and err.error_code == 2012, err
    assert deadline <= took <= deadline + CANCEL_GRACE + SLACK, took
    assert works(pool)              # discarded: the next borrow opens a new connection
    # Idle and half-open: the borrow's ping (validation_timeout) finds it, a new one is lent.
    px.half_open()
    t0 = time.monotonic()
    assert works(pool)
    took_idle = time.monotonic() - t0
    assert took_idle <= 0.5 + SLACK, took_idle
    st = pool.get_stats()
    record_figure("half-open socket", "statement: QueryTimeoutError 2012 after %.2f s (deadline %.1f s), "
                  "connection discarded; idle: ping failed and replaced, borrow took %.2f s "
                  "(validation_timeout 0.5 s); validation_failures=%d" % (took, deadline, took_idle,
                                                                           st.validation_failures))


def test_slow_drip(proxied):
    pool, px = proxied(max_connections=1, timeout=5)
    deadline = 0.8
    with pool.get_connection() as c:
        c.execute_query("SELECT 1")
        px.set_drip(1, 0.02)        # 50 bytes/s: 8000 bytes of result would take minutes
        err, took = timed(lambda: c.execute_query("SELECT repeat('x', 8000) AS big", timeout=deadline))
    assert isinstance(err, QueryTimeoutError) and err.error_code == 2012, err
    assert deadline <= took <= deadline + CANCEL_GRACE + SLACK, took
    px.set_drip(0, 0)
    assert works(pool)
    record_figure("slow drip", "1 byte per 20 ms: QueryTimeoutError 2012 after %.2f s (deadline %.1f s), "
                  "connection discarded; next borrow works" % (took, deadline))
