"""Misuse that must not crash or corrupt: one PooledConnection shared by
threads, pools in garbage cycles, exceptions unwinding through a borrow,
absurd timeouts."""

import gc
import threading
import time
import weakref

import pytest

from noodlecore.database import (
    ConfigurationError, DatabaseConnectionPool, InterfaceError, QueryTimeoutError,
)

LONG_CTE = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < %d) "
            "SELECT count(*) AS n FROM r")


def test_second_thread_on_same_connection_is_refused_and_release_waits(tmp_path):
    with DatabaseConnectionPool(f"sqlite:///{tmp_path}/a.db", max_connections=2) as pool:
        conn = pool.acquire()
        cid = conn.connection_id
        done = {}

        def long_query():
            done["rows"] = conn.execute_query(LONG_CTE % 3_000_000, ())

        t = threading.Thread(target=long_query)
        t.start()
        time.sleep(0.05)
        with pytest.raises(InterfaceError) as ei:
            conn.execute_query("SELECT 1")
        assert ei.value.error_code == 2022
        # releasing while the statement runs: the connection goes back only
        # when the statement is done, so nobody else gets it meanwhile
        conn.release()
        other = pool.acquire()
        assert other.connection_id != cid
        t.join(30)
        assert done["rows"] == [{"n": 3_000_000}]
        with pytest.raises(InterfaceError):
            conn.execute_query("SELECT 1")
        other.release()
        assert pool.get_stats().active_connections == 0


def test_pool_subclass_in_a_garbage_cycle_is_collected_cleanly(pg):
    """A pool kept alive only by a cycle through its instance dict is collected by
    gc and shut down: the connection it lent and got back is closed, so its server
    session ends."""
    class MyPool(DatabaseConnectionPool):
        pass
    app = "nct_binding_safety_cycle"

    def live_sessions():
        return int(pg.scalar("select count(*) from pg_stat_activity where application_name = '%s'" % app))

    for _ in range(3):
        p = MyPool(pg.dsn(application_name=app), max_connections=2)
        p.me = p            # a cycle through the instance dict
        with p.get_connection() as c:
            assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
        assert live_sessions() == 1 and p.get_stats().idle_connections == 1   # returned, open
        ref = weakref.ref(p)
        del p, c            # a PooledConnection holds its pool: only the cycle is left
        gc.collect()
        assert ref() is None, "the pool in a garbage cycle was not collected"
        # Shut down on collection: the returned connection is closed, the session ends.
        deadline = time.monotonic() + 10
        while live_sessions() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert live_sessions() == 0, "the collected pool left its connections open"
    q = MyPool(pg.dsn(application_name=app))
    with q.get_connection() as c:
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
    q.shutdown()


def test_exception_unwinding_through_a_borrow_is_kept():
    class Flaky:
        def __init__(self):
            self.calls = 0

        def execute_query(self, sql, params=None):
            self.calls += 1
            if sql == "boom":
                raise RuntimeError("backend failure")
            return []

    with DatabaseConnectionPool(Flaky, max_connections=1) as pool:
        def work():
            lease = pool.get_connection()
            conn = lease.__enter__()
            conn.execute_query("boom")     # the lease dies while this unwinds
        with pytest.raises(RuntimeError, match="backend failure"):
            work()
        gc.collect()
        # The lease died with work's frame: its connection went back (the only one).
        assert pool.get_stats().active_connections == 0
        with pool.get_connection(timeout=1) as c:
            assert c.execute_query("SELECT 1") == []
        # The caller's own exception leaves the with block intact, and the connection goes back.
        with pytest.raises(ZeroDivisionError):
            with pool.get_connection(timeout=1) as c:
                c.execute_query("SELECT 1")
                1 / 0
        assert pool.get_stats().active_connections == 0
        with pool.get_connection(timeout=1) as c:
            assert c.execute_query("SELECT 2") == []


def test_long_sqlite_statement_without_deadline_is_not_cut_by_busy_timeout(tmp_path):
    with DatabaseConnectionPool(f"sqlite:///{tmp_path}/c.db", busy_timeout=0.2) as pool:
        with pool.get_connection() as c:
            t0 = time.monotonic()
            rows = c.execute_query(LONG_CTE % 2_000_000, ())
            assert rows == [{"n": 2_000_000}]
            assert time.monotonic() - t0 > 0.2, "the statement must outlast busy_timeout for this test"
            with pytest.raises(QueryTimeoutError):
                c.execute_query(LONG_CTE % 50_000_000, (), timeout=0.1)


@pytest.mark.parametrize("bad", [10 ** 400, -1, float("nan"), "3", True])
def test_absurd_timeouts_are_configuration_errors(bad):
    with DatabaseConnectionPool("sqlite:///:memory:") as pool:
        with pytest.raises(ConfigurationError):
            pool.get_connection(timeout=bad)
        with pool.get_connection() as c:
            with pytest.raises(ConfigurationError):
                c.execute_query("SELECT 1", timeout=bad)


def test_huge_but_finite_timeout_works():
    with DatabaseConnectionPool("sqlite:///:memory:", max_connections=1) as pool:
        with pool.get_connection(timeout=1e20) as c:
            assert c.execute_query("SELECT 1 AS x", timeout=1e20) == [{"x": 1}]
