"""The Python backend_factory protocol, with a small mock backend: the
report's pool scenarios (creation, borrow/return, reuse, the 2003 timeout,
validation replacing an unhealthy connection, background validation,
shutdown, stats)."""

import threading
import time

import pytest

from noodlecore.database import (
    ConnectionPoolError, DatabaseConnectionPool, DatabaseError, InterfaceError, PoolClosedError,
    PoolTimeoutError,
)


class MockBackend:
    """What the report's mock did: records queries, can be made unhealthy."""
    created = 0

    def __init__(self):
        MockBackend.created += 1
        self.id = MockBackend.created
        self.healthy = True
        self.queries = []
        self.closed = False

    def execute_query(self, sql, params=None):
        if not self.healthy:
            raise RuntimeError("connection is broken")
        self.queries.append((sql, params))
        if sql.strip().upper().startswith("SELECT"):
            return [{"id": self.id, "sql": sql}]
        return 1

    def close(self):
        self.closed = True


class PingOnly:
    def __init__(self, ok=True):
        self.ok = ok
        self.disconnected = False

    def execute_query(self, sql, params=None):
        return []

    def disconnect(self):
        self.disconnected = True


@pytest.fixture
def made():
    backends = []

    def factory():
        b = MockBackend()
        backends.append(b)
        return b
    factory.backends = backends
    return factory


def test_creation_and_config(made):
    pool = DatabaseConnectionPool(made, {"max_connections": 5, "timeout": 1, "retry_attempts": 2,
                                         "validate_connections": True, "validation_interval": 30})
    assert pool.backend_kind == "python"
    s = pool.get_stats()
    assert s.max_connections == 5 and s.total_connections == 0 and s.pool_health_score == 1.0
    pool.shutdown()


def test_borrow_return_and_reuse(made):
    with DatabaseConnectionPool(made, max_connections=3) as pool:
        with pool.get_connection() as c:
            assert c.execute_query("SELECT 1") == [{"id": made.backends[0].id, "sql": "SELECT 1"}]
            assert c.backend is made.backends[0]
        with pool.get_connection() as c:
            c.execute_query("SELECT 2", {"x": 1})
        assert len(made.backends) == 1, "the idle connection is reused"
        # params reach the backend as given
        assert made.backends[0].queries[-1] == ("SELECT 2", {"x": 1})
        s = pool.get_stats()
        assert s.active_connections == 0 and s.idle_connections == 1
        assert s.query_count == 2


def test_max_connections_and_2003(made):
    with DatabaseConnectionPool(made, max_connections=2, timeout=0.3) as pool:
        a, b = pool.acquire(), pool.acquire()
        t0 = time.monotonic()
        with pytest.raises(PoolTimeoutError) as ei:
            with pool.get_connection():
                pass
        assert 0.25 < time.monotonic() - t0 < 1.0
        assert ei.value.error_code == 2003
        assert "2 of 2 connections in use" in str(ei.value)
        a.release()
        with pool.get_connection(timeout=0.1) as c:
            assert c.valid
        b.release()
        assert pool.get_stats().acquire_timeouts == 1


def test_unhealthy_connection_replaced_on_borrow(made):
    with DatabaseConnectionPool(made, max_connections=2, ping_after_idle=0) as pool:
        with pool.get_connection() as c:
            c.execute_query("SELECT 1")
        made.backends[0].healthy = False
        time.sleep(0.01)
        with pool.get_connection() as c:
            assert c.backend is made.backends[1]   # the broken one was not handed out
            c.execute_query("SELECT 1")
        assert made.backends[0].closed
        s = pool.get_stats()
        assert s.validation_failures == 1 and s.connections_replaced == 1


def test_backend_error_marks_connection_for_check(made):
    with DatabaseConnectionPool(made, max_connections=1) as pool:
        with pool.get_connection() as c:
            made.backends[0].healthy = False
            with pytest.raises(RuntimeError):
                c.execute_query("SELECT 1")
        # the failing backend was checked on return and discarded
        assert made.backends[0].closed
        with pool.get_connection() as c:
            assert c.backend is made.backends[1]
        assert pool.get_stats().error_count == 1


def test_background_validation_replaces_unhealthy(made):
    with DatabaseConnectionPool(made, max_connections=2, min_connections=1,
                                validation_interval=0.1) as pool:
        deadline = time.monotonic() + 3
        while not made.backends and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(made.backends) == 1, "min_connections opened in the background"
        made.backends[0].healthy = False
        while len(made.backends) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert made.backends[0].closed
        s = pool.get_stats()
        assert s.validation_failures >= 1 and s.connections_replaced >= 1
        assert s.idle_connections == 1


def test_new_connection_failing_validation_is_2008():
    class Bad(MockBackend):
        def __init__(self):
            super().__init__()
            self.healthy = False
    with DatabaseConnectionPool(Bad, max_connections=1, timeout=1) as pool:
        with pytest.raises(ConnectionPoolError) as ei:
            with pool.get_connection():
                pass
        assert ei.value.error_code == 2008


def test_factory_failures_retry_then_2009():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("server not there yet")
        return MockBackend()
    with DatabaseConnectionPool(flaky, retry_attempts=3, retry_backoff=0.01) as pool:
        with pool.get_connection() as c:
            assert c.execute_query("SELECT 1")
    assert len(calls) == 3

    def always_down():
        raise OSError("server down")
    with DatabaseConnectionPool(always_down, retry_attempts=2, retry_backoff=0.01) as pool:
        with pytest.raises(ConnectionPoolError) as ei:
            with pool.get_connection():
                pass
        assert ei.value.error_code == 2009
        assert "2 attempts" in str(ei.value) and "server down" in str(ei.value)
        # the pool is still usable: nothing leaked, no slot stuck
        assert pool.get_stats().total_connections == 0


def test_factory_returning_garbage():
    with DatabaseConnectionPool(lambda: None, retry_attempts=1) as pool:
        with pytest.raises(DatabaseError) as ei:
            with pool.get_connection():
                pass
        assert "returned None" in str(ei.value)


def test_disconnect_is_used_when_there_is_no_close():
    made = []

    def factory():
        b = PingOnly()
        made.append(b)
        return b
    pool = DatabaseConnectionPool(factory, max_connections=1)
    with pool.get_connection():
        pass
    pool.shutdown()
    assert made[0].disconnected


def test_shutdown(made):
    pool = DatabaseConnectionPool(made, max_connections=2, timeout=5)
    held = pool.acquire()
    with pool.get_connection():
        pass
    results = []

    def waiter():
        try:
            with pool.get_connection(timeout=5):
                results.append("got")
        except PoolClosedError as exc:
            results.append(exc.error_code)
    # fill the pool so the waiter has to wait
    other = pool.acquire()
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    pool.shutdown(timeout=0.2)
    t.join(2)
    assert results == [2002]
    assert time.monotonic() - t0 < 1.5
    assert pool.closed
    with pytest.raises(PoolClosedError) as ei:
        with pool.get_connection():
            pass
    assert ei.value.error_code == 2002
    # borrowed ones are closed when they come back
    held.release()
    other.release()
    assert all(b.closed for b in made.backends)
    assert pool.get_stats().pool_health_score == 0.0
    pool.shutdown()   # idempotent


def test_stats_add_up(made):
    with DatabaseConnectionPool(made, max_connections=3) as pool:
        def work():
            for _ in range(200):
                with pool.get_connection() as c:
                    c.execute_query("SELECT 1")
        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = pool.get_stats()
        assert s.acquires == 1200
        assert s.query_count == 1200
        assert s.error_count == 0
        assert s.total_connections <= 3
        assert s.connections_opened - s.connections_closed == s.total_connections
        assert s.acquire_wait_p50 <= s.acquire_wait_p99
        assert s.pool_health_score == 1.0


def test_connection_used_after_release(made):
    with DatabaseConnectionPool(made) as pool:
        c = pool.acquire()
        c.release()
        c.release()   # idempotent
        with pytest.raises(InterfaceError):
            c.execute_query("SELECT 1")
