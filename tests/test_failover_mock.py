"""The report's failover scenarios through a Python backend_factory with a
mock backend: automatic failover, passive detection, manual and
semi-automatic modes, recovery, no target, listeners, status shape, config
validation."""

import threading
import time

import pytest

from noodlecore.database import ConfigurationError, OperationalError, PoolClosedError
from noodlecore.database.failover_manager import (
    DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig, FailoverEvent, FailoverMode,
    FailoverPolicy, FailoverState,
)


class Cluster:
    """Mock servers by connection string; a server can be taken down."""

    def __init__(self):
        self.down = set()
        self.slow = {}
        self.queries = {}

    def factory(self, cs):
        if cs in self.down:
            raise ConnectionError(f"{cs} refused the connection")
        return MockBackend(self, cs)


class MockBackend:
    def __init__(self, cluster, cs):
        self.cluster = cluster
        self.cs = cs

    def execute_query(self, sql, params=None):
        if self.cs in self.cluster.down:
            raise ConnectionError(f"connection to {self.cs} lost")
        delay = self.cluster.slow.get(self.cs)
        if delay:
            time.sleep(delay)
        self.cluster.queries[self.cs] = self.cluster.queries.get(self.cs, 0) + 1
        return [{"server": self.cs}]

    def close(self):
        pass


def endpoints(n=2):
    return [DatabaseEndpoint(id=f"db{i}", name=f"DB {i}", connection_string=f"mock://{i}",
                             priority=i + 1, is_primary=(i == 0)) for i in range(n)]


def fast(**kw):
    base = dict(health_check_interval=0.05, health_check_timeout=0.5, failover_timeout=2,
                recovery_check_interval=0.3, hold_down=0.0, max_failure_count=2, failure_timeout=5)
    base.update(kw)
    return FailoverConfig(**base)


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def server_of(m):
    with m.get_connection(timeout=2) as c:
        return c.execute_query("SELECT 1")[0]["server"]


def test_defaults_match_the_report():
    c = FailoverConfig()
    assert (c.mode, c.policy, c.max_failure_count, c.failure_timeout, c.response_time_threshold,
            c.health_check_interval, c.failover_timeout, c.recovery_check_interval,
            c.max_recovery_attempts, c.enable_connection_pooling, c.pool_max_connections,
            c.pool_timeout) == (FailoverMode.AUTOMATIC, FailoverPolicy.COMBINED, 3, 30, 2.0, 10, 60, 30,
                                5, True, 20, 30)
    assert c.require_writable is True
    assert [m.value for m in FailoverMode] == ["manual", "automatic", "semi_automatic"]
    assert [s.value for s in FailoverState][:5] == ["primary", "failing_over", "secondary",
                                                     "failing_back", "recovering"]


@pytest.mark.parametrize("field,value", [
    ("max_failure_count", 0), ("failure_timeout", 0), ("response_time_threshold", -1),
    ("health_check_interval", 0), ("failover_timeout", "60"), ("recovery_check_interval", None),
    ("max_recovery_attempts", 0), ("pool_max_connections", 0), ("pool_timeout", 0),
    ("health_check_timeout", 0), ("hold_down", -1), ("mode", "sometimes"), ("policy", "vibes"),
    ("auto_recovery", 1), ("require_writable", "yes"), ("enable_connection_pooling", None),
])
def test_bad_config_names_the_field(field, value):
    cl = Cluster()
    with pytest.raises(ConfigurationError) as ei:
        DatabaseFailoverManager(endpoints(), cl.factory, FailoverConfig(**{field: value}))
    assert field in str(ei.value)


def test_bad_endpoints():
    cl = Cluster()
    with pytest.raises(ConfigurationError):
        DatabaseFailoverManager([], cl.factory)
    eps = endpoints()
    eps[1].id = eps[0].id
    with pytest.raises(ConfigurationError):
        DatabaseFailoverManager(eps, cl.factory)
    eps = endpoints()
    eps[1].is_primary = True
    with pytest.raises(ConfigurationError):
        DatabaseFailoverManager(eps, cl.factory)


def test_automatic_failover_and_event():
    cl = Cluster()
    seen = []
    with DatabaseFailoverManager(endpoints(), cl.factory, fast(auto_recovery=False)) as m:
        m.add_listener(seen.append)
        m.start_monitoring()
        m.start_monitoring()  # idempotent
        assert server_of(m) == "mock://0"
        assert m.get_status()["current_state"] == "primary"
        cl.down.add("mock://0")
        assert wait_for(lambda: m.get_status()["current_endpoint"] == "db1")
        assert server_of(m) == "mock://1"
        st = m.get_status()
        assert st["current_state"] == "secondary"
        assert st["endpoints"]["db0"]["is_available"] is False
        assert st["statistics"]["successful_failovers"] == 1
        evs = [e for e in m.get_events() if e.metadata["kind"] == "failover"]
        assert len(evs) == 1
        ev = evs[0]
        assert isinstance(ev, FailoverEvent)
        assert (ev.from_endpoint, ev.to_endpoint, ev.success) == ("db0", "db1", True)
        assert ev.reason and ev.duration is not None and ev.duration >= 0
        assert "db0" in ev.reason
        assert wait_for(lambda: any(e.event_id == ev.event_id for e in seen))
        assert st["recent_failovers"][-1]["to_endpoint"] == "db1"


def test_passive_detection_before_monitoring_starts():
    cl = Cluster()
    with DatabaseFailoverManager(endpoints(), cl.factory, fast()) as m:
        assert server_of(m) == "mock://0"
        cl.down.add("mock://0")
        with pytest.raises(ConnectionError):
            with m.get_connection() as c:
                c.execute_query("SELECT 1")
        # the failure seen by the query path switched without any monitor thread
        assert m.get_status()["current_endpoint"] == "db1"
        assert server_of(m) == "mock://1"
        assert not m.monitoring


def test_manual_mode_switches_only_when_told():
    cl = Cluster()
    with DatabaseFailoverManager(endpoints(), cl.factory, fast(mode=FailoverMode.MANUAL)) as m:
        m.start_monitoring()
        cl.down.add("mock://0")
        time.sleep(0.4)
        assert m.get_status()["current_endpoint"] == "db0"
        assert m.trigger_failover("operator says so") is True
        assert m.get_status()["current_endpoint"] == "db1"
        ev = m.get_events()[-1]
        assert ev.reason.startswith("operator says so") or "operator says so" in ev.reason
        assert ev.metadata["triggered_by"] == "operator"


def test_semi_automatic_fails_back_only_when_asked():
    cl = Cluster()
    cfg = fast(mode=FailoverMode.SEMI_AUTOMATIC, recovery_check_interval=0.1)
    with DatabaseFailoverManager(endpoints(), cl.factory, cfg) as m:
        m.start_monitoring()
        cl.down.add("mock://0")
        assert wait_for(lambda: m.get_status()["current_endpoint"] == "db1")
        cl.down.discard("mock://0")
        time.sleep(0.6)
        assert m.get_status()["current_endpoint"] == "db1"
        assert m.trigger_recovery() is True
        st = m.get_status()
        assert (st["current_endpoint"], st["current_state"]) == ("db0", "primary")
        assert st["statistics"]["successful_recoveries"] == 1


def test_automatic_failback_after_recovery_check_interval():
    cl = Cluster()
    with DatabaseFailoverManager(endpoints(), cl.factory, fast(recovery_check_interval=0.3)) as m:
        m.start_monitoring()
        cl.down.add("mock://0")
        assert wait_for(lambda: m.get_status()["current_endpoint"] == "db1")
        t_up = time.monotonic()
        cl.down.discard("mock://0")
        assert wait_for(lambda: m.get_status()["current_endpoint"] == "db0")
        assert time.monotonic() - t_up >= 0.3
        assert m.get_status()["current_state"] == "primary"
        kinds = [e.metadata["kind"] for e in m.get_events()]
        assert kinds[-1] == "failback"


def test_no_target_fails_fast_and_resumes():
    cl = Cluster()
    with DatabaseFailoverManager(endpoints(), cl.factory, fast(auto_recovery=False)) as m:
        m.start_monitoring()
        cl.down.update({"mock://0", "mock://1"})
        assert wait_for(lambda: m.get_status()["current_state"] == "unavailable")
        t0 = time.monotonic()
        with pytest.raises(OperationalError) as ei:
            with m.get_connection(timeout=10):
                pass
        assert time.monotonic() - t0 < 0.5
        assert ei.value.error_code == 4015
        cl.down.discard("mock://1")
        assert wait_for(lambda: m.get_status()["current_state"] != "unavailable")
        assert server_of(m) == "mock://1"


def test_priority_order_with_three_endpoints():
    cl = Cluster()
    eps = endpoints(3)
    eps[1].priority, eps[2].priority = 3, 2   # db2 is preferred over db1
    with DatabaseFailoverManager(eps, cl.factory, fast(auto_recovery=False)) as m:
        m.start_monitoring()
        time.sleep(0.2)
        cl.down.add("mock://0")
        assert wait_for(lambda: m.get_status()["current_endpoint"] == "db2")


def test_trigger_failover_to_a_named_target_and_unknown():
    cl = Cluster()
    with DatabaseFailoverManager(endpoints(3), cl.factory, fast(auto_recovery=False)) as m:
        m.start_monitoring()
        time.sleep(0.2)
        assert m.trigger_failover(target="db2") is True
        assert m.get_status()["current_endpoint"] == "db2"
        with pytest.raises(ConfigurationError):
            m.trigger_failover(target="nope")
        cl.down.add("mock://1")
        time.sleep(0.2)
        assert m.trigger_failover(target="db1") is False   # never to a failed endpoint


def test_shutdown_and_use_after():
    cl = Cluster()
    m = DatabaseFailoverManager(endpoints(), cl.factory, fast())
    m.start_monitoring()
    m.shutdown()
    m.shutdown()
    with pytest.raises(PoolClosedError):
        with m.get_connection():
            pass


def test_connection_pooling_off_closes_each_connection():
    cl = Cluster()
    made = []

    def factory(cs):
        b = cl.factory(cs)
        made.append(b)
        return b
    with DatabaseFailoverManager(endpoints(), factory, fast(enable_connection_pooling=False)) as m:
        for _ in range(3):
            server_of(m)
        assert m.get_pool("db0").get_stats().connections_opened == 3
    with DatabaseFailoverManager(endpoints(), factory, fast()) as m:
        for _ in range(3):
            server_of(m)
        assert m.get_pool("db0").get_stats().connections_opened == 1


def test_pool_size_and_timeout_fields_shape_the_endpoint_pools():
    from noodlecore.database import PoolTimeoutError
    cl = Cluster()
    with DatabaseFailoverManager(endpoints(), cl.factory, fast(pool_max_connections=1, pool_timeout=0.2)) as m:
        with m.get_connection():
            t0 = time.monotonic()
            with pytest.raises(PoolTimeoutError):
                with m.get_connection():
                    pass
            assert 0.15 < time.monotonic() - t0 < 1.5
        assert m.get_pool("db0").get_stats().max_connections == 1


def test_event_history_is_bounded():
    cl = Cluster()
    with DatabaseFailoverManager(endpoints(), cl.factory, fast(event_history=2, auto_recovery=False)) as m:
        m.start_monitoring()
        time.sleep(0.2)
        for target in ("db1", "db0", "db1"):
            assert m.trigger_failover("rotate", target=target) is True
        evs = m.get_events()
        assert len(evs) == 2 and evs[-1].to_endpoint == "db1"


@pytest.mark.parametrize("count", [1, 5])
def test_max_failure_count_sets_how_many_failed_probes_it_takes(count):
    cl = Cluster()
    cfg = fast(policy=FailoverPolicy.FAILURE_COUNT, max_failure_count=count, health_check_interval=0.1,
               auto_recovery=False)
    with DatabaseFailoverManager(endpoints(), cl.factory, cfg) as m:
        m.start_monitoring()
        time.sleep(0.3)
        t0 = time.monotonic()
        cl.down.add("mock://0")
        assert wait_for(lambda: m.get_status()["current_endpoint"] == "db1", timeout=5)
        took = time.monotonic() - t0
        if count == 1:
            assert took < 0.35, took
        else:
            assert took >= 0.35, took   # at least four more probe intervals
