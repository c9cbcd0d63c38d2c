"""get_metrics() for pools, failover managers and DatabaseManager; the
Prometheus collector (prometheus_client is installed by tests/run.sh); the
library's logging hygiene (loggers only: no handlers, no prints)."""

import ast
import json
import logging
import pathlib
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from noodlecore.database import ConfigurationError, DatabaseConnectionPool, PoolTimeoutError
from noodlecore.database.failover_manager import (
    DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig, FailoverMode,
)
from noodlecore.database.metrics import (
    NoodlecoreCollector, get_metrics, register_prometheus, unregister_prometheus,
)


class Servers:
    """Mock servers for a failover manager's Python backend_factory."""

    def __init__(self):
        self.down = set()

    def factory(self, cs):
        if cs in self.down:
            raise ConnectionError(f"{cs} refused")
        return Backend(self, cs)


class Backend:
    def __init__(self, servers, cs):
        self.servers, self.cs = servers, cs

    def execute_query(self, sql, params=None):
        if self.cs in self.servers.down:
            raise ConnectionError(f"{self.cs} lost")
        return [{"server": self.cs}]

    def close(self):
        pass


def manager(servers, **kw):
    cfg = dict(mode=FailoverMode.MANUAL, health_check_interval=0.05, health_check_timeout=0.5,
               failover_timeout=2, recovery_check_interval=0.2, hold_down=0.0, max_failure_count=2)
    cfg.update(kw)
    eps = [DatabaseEndpoint("a", "A", "mock://a", priority=1, is_primary=True),
           DatabaseEndpoint("b", "B", "mock://b", priority=2)]
    return DatabaseFailoverManager(eps, servers.factory, FailoverConfig(**cfg))


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def samples(text):
    """{(name, frozenset(labels.items())): value} of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(smp, metric, **labels):
    return smp[(metric, frozenset(labels.items()))]


# ---------------------------------------------------------------------------
# get_metrics
# ---------------------------------------------------------------------------

def test_pool_metrics_plain_dict():
    with DatabaseConnectionPool("sqlite:///:memory:", max_connections=1, timeout=5) as pool:
        with pool.get_connection() as c:
            c.execute_query("SELECT 1")
            with pytest.raises(Exception):
                c.execute_query("SELEC broken")
            # the only connection is borrowed: a second borrow times out
            with pytest.raises(PoolTimeoutError):
                with pool.get_connection(timeout=0.05):
                    pass
            m = get_metrics(pool)
            assert m["connections"]["active"] == 1 and m["connections"]["idle"] == 0
        m2 = get_metrics(pool)
    json.dumps(m2)          # plain, serialisable
    assert m2["kind"] == "pool" and m2["backend"] == "sqlite"
    assert m2["connections"] == {"active": 0, "idle": 1, "opening": 0, "total": 1, "max": 1, "min": 0}
    assert m2["acquires"] == 1 and m2["acquire_timeouts"] == 1
    assert m2["queries"] == 2 and m2["errors"] == 1
    assert m2["validation_failures"] == 0 and m2["connections_opened"] == 1 and m2["leaked"] == 0
    w = m2["acquire_wait_seconds"]
    assert set(w) == {"p50", "p99", "mean", "sum"} and 0 <= w["p50"] <= w["p99"]
    assert 0 < m2["health_score"] < 1
    assert m2["closed"] is False
    assert get_metrics(pool)["closed"] is True


def test_failover_metrics_plain_dict():
    servers = Servers()
    with manager(servers) as m:
        m.start_monitoring()
        assert wait_for(lambda: all(e["last_health_check"] for e in m.get_status()["endpoints"].values()))
        with m.get_connection() as c:
            c.execute_query("SELECT 1")
        d = get_metrics(m)
        json.dumps(d)
        assert d["kind"] == "failover" and d["state"] == "primary" and d["current_endpoint"] == "a"
        assert d["monitoring"] is True and d["failovers_total"] == 0 and d["recoveries_total"] == 0
        a = d["endpoints"]["a"]
        assert a["up"] is True and a["role"] == "unknown" and a["current"] is True
        assert a["latency_seconds"] > 0 and a["priority"] == 1
        assert a["pool"]["kind"] == "pool" and a["pool"]["queries"] == 1
        assert d["endpoints"]["b"]["current"] is False

        servers.down.add("mock://a")
        assert wait_for(lambda: not m.get_status()["endpoints"]["a"]["is_available"])
        assert m.trigger_failover("maintenance") is True
        servers.down.clear()
        assert wait_for(lambda: m.get_status()["endpoints"]["a"]["is_available"])
        assert m.trigger_recovery() is True
        d = get_metrics(m)
        assert d["failovers_total"] == 1 and d["failovers_successful"] == 1
        assert d["recoveries_total"] == 1 and d["current_endpoint"] == "a"


def test_get_metrics_refuses_other_objects():
    for obj in (None, "sqlite:///:memory:", object()):
        with pytest.raises(ConfigurationError):
            get_metrics(obj)


def test_database_manager_metrics(tmp_path):
    from noodlecore.database.database_manager import DatabaseManager
    dm = DatabaseManager(config=f"sqlite:///{tmp_path / 'm.db'}")
    assert get_metrics(dm) == {"kind": "manager", "manager": {"connected": False, "failover_enabled": False}}
    dm.connect()
    try:
        dm.execute_query("SELECT 1")
        d = get_metrics(dm)
        assert d["kind"] == "pool" and d["manager"] == {"connected": True, "failover_enabled": False}
        assert d["queries"] >= 1
    finally:
        dm.close()


# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------

def test_prometheus_pool_metric_names_and_labels():
    reg = CollectorRegistry()
    with DatabaseConnectionPool("sqlite:///:memory:", max_connections=2, timeout=5) as pool:
        col = register_prometheus(pool, registry=reg, name="orders")
        assert isinstance(col, NoodlecoreCollector)
        with pool.get_connection() as c:
            c.execute_query("SELECT 1")
            text = generate_latest(reg).decode()
        smp = samples(text)
        assert value(smp, "noodlecore_pool_connections", name="orders", endpoint="", state="active") == 1
        assert value(smp, "noodlecore_pool_connections", name="orders", endpoint="", state="idle") == 0
        assert value(smp, "noodlecore_pool_max_connections", name="orders", endpoint="") == 2
        for n in ("noodlecore_pool_acquire_timeouts_total", "noodlecore_pool_validation_failures_total",
                  "noodlecore_pool_connect_failures_total", "noodlecore_pool_query_errors_total",
                  "noodlecore_pool_connections_leaked_total"):
            assert value(smp, n, name="orders", endpoint="") == 0
        assert value(smp, "noodlecore_pool_acquires_total", name="orders", endpoint="") == 1
        assert value(smp, "noodlecore_pool_queries_total", name="orders", endpoint="") == 1
        assert value(smp, "noodlecore_pool_acquire_wait_seconds_count", name="orders", endpoint="") == 1
        assert ("noodlecore_pool_acquire_wait_seconds",
                frozenset({"name": "orders", "endpoint": "", "quantile": "0.99"}.items())) in smp
        assert "# TYPE noodlecore_pool_acquire_wait_seconds summary" in text
        assert "# TYPE noodlecore_pool_acquire_timeouts_total counter" in text
        assert "# TYPE noodlecore_pool_connections gauge" in text
        assert 'noodlecore_pool_connections{endpoint="",name="orders",state="idle"}' in text
    # closed: dropped at the next scrape
    assert "noodlecore_pool_connections{" not in generate_latest(reg).decode()
    assert col.names == []


def test_prometheus_failover_metrics():
    reg = CollectorRegistry()
    servers = Servers()
    with manager(servers) as m:
        register_prometheus(m, registry=reg, name="fo")
        m.start_monitoring()
        assert wait_for(lambda: all(e["last_health_check"] for e in m.get_status()["endpoints"].values()))
        smp = samples(generate_latest(reg).decode())
        for eid in ("a", "b"):
            assert value(smp, "noodlecore_endpoint_up", name="fo", endpoint=eid) == 1
            assert value(smp, "noodlecore_endpoint_role", name="fo", endpoint=eid, role="unknown") == 1
            assert value(smp, "noodlecore_endpoint_role", name="fo", endpoint=eid, role="primary") == 0
            assert value(smp, "noodlecore_endpoint_latency_seconds", name="fo", endpoint=eid) > 0
            assert value(smp, "noodlecore_pool_max_connections", name="fo", endpoint=eid) == 20
        assert value(smp, "noodlecore_current_endpoint", name="fo", endpoint="a") == 1
        assert value(smp, "noodlecore_current_endpoint", name="fo", endpoint="b") == 0
        assert value(smp, "noodlecore_failovers_total", name="fo") == 0
        assert value(smp, "noodlecore_failover_state", name="fo", state="primary") == 1
        assert value(smp, "noodlecore_failover_monitoring", name="fo") == 1

        servers.down.add("mock://a")
        assert wait_for(lambda: not m.get_status()["endpoints"]["a"]["is_available"])
        assert m.trigger_failover() is True
        text = generate_latest(reg).decode()
        smp = samples(text)
        assert value(smp, "noodlecore_endpoint_up", name="fo", endpoint="a") == 0
        assert value(smp, "noodlecore_current_endpoint", name="fo", endpoint="b") == 1
        assert value(smp, "noodlecore_failovers_total", name="fo") == 1
        assert value(smp, "noodlecore_failover_state", name="fo", state="secondary") == 1
        servers.down.clear()
        assert wait_for(lambda: m.get_status()["endpoints"]["a"]["is_available"])
        assert m.trigger_recovery() is True
        smp = samples(generate_latest(reg).decode())
        assert value(smp, "noodlecore_recoveries_total", name="fo") == 1
        assert value(smp, "noodlecore_recoveries_failed_total", name="fo") == 0
        assert value(smp, "noodlecore_current_endpoint", name="fo", endpoint="a") == 1
        assert 'noodlecore_failovers_total{name="fo"} 1.0' in text


def test_prometheus_endpoint_role_of_a_real_primary(pg):
    reg = CollectorRegistry()
    cfg = FailoverConfig(mode=FailoverMode.MANUAL, health_check_interval=0.05, health_check_timeout=2)
    with DatabaseFailoverManager([DatabaseEndpoint("main", "main", pg.dsn(), is_primary=True)],
                                 config=cfg) as m:
        register_prometheus(m, registry=reg, name="pg")
        m.start_monitoring()
        assert wait_for(lambda: m.get_status()["endpoints"]["main"]["role"] == "primary")
        smp = samples(generate_latest(reg).decode())
        assert value(smp, "noodlecore_endpoint_role", name="pg", endpoint="main", role="primary") == 1
        assert value(smp, "noodlecore_endpoint_role", name="pg", endpoint="main", role="standby") == 0
        assert value(smp, "noodlecore_endpoint_up", name="pg", endpoint="main") == 1
        assert 0 < value(smp, "noodlecore_endpoint_latency_seconds", name="pg", endpoint="main") < 2


def test_prometheus_several_objects_share_one_collector_per_registry():
    reg = CollectorRegistry()
    with DatabaseConnectionPool("sqlite:///:memory:") as p1, DatabaseConnectionPool("sqlite:///:memory:") as p2:
        c1 = register_prometheus(p1, registry=reg, name="one")
        c2 = register_prometheus(p2, registry=reg, name="two")
        assert c1 is c2 and c1.names == ["one", "two"]
        with pytest.raises(ConfigurationError):
            register_prometheus(p2, registry=reg, name="one")
        text = generate_latest(reg).decode()
        assert text.count("# TYPE noodlecore_pool_connections gauge") == 1
        assert 'name="one"' in text and 'name="two"' in text
        assert unregister_prometheus("one", registry=reg) is True
        assert unregister_prometheus("one", registry=reg) is False
        text = generate_latest(reg).decode()
        assert 'name="one"' not in text and 'name="two"' in text
        # another registry gets its own collector
        other = CollectorRegistry()
        assert register_prometheus(p1, registry=other, name="one") is not c1


def test_prometheus_default_registry_and_bad_input():
    from prometheus_client import REGISTRY
    with DatabaseConnectionPool("sqlite:///:memory:") as pool:
        register_prometheus(pool, name="test-default-registry")
        try:
            assert 'name="test-default-registry"' in generate_latest(REGISTRY).decode()
        finally:
            assert unregister_prometheus("test-default-registry") is True
        with pytest.raises(ConfigurationError):
            register_prometheus(object(), registry=CollectorRegistry())
        with pytest.raises(ConfigurationError):
            register_prometheus(pool, registry=CollectorRegistry(), name="")


def test_prometheus_collects_while_pools_are_busy():
    reg = CollectorRegistry()
    stop = threading.Event()
    with DatabaseConnectionPool("sqlite:///:memory:", max_connections=2) as pool:
        register_prometheus(pool, registry=reg, name="busy")

        def work():
            while not stop.is_set():
                with pool.get_connection() as c:
                    c.execute_query("SELECT 1")

        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        try:
            for _ in range(20):
                smp = samples(generate_latest(reg).decode())
                assert value(smp, "noodlecore_pool_connections", name="busy", endpoint="", state="active") <= 2
        finally:
            stop.set()
            for t in ts:
                t.join()
        smp = samples(generate_latest(reg).decode())
        assert value(smp, "noodlecore_pool_queries_total", name="busy", endpoint="") > 0


def test_register_prometheus_without_prometheus_client_says_how_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    with DatabaseConnectionPool("sqlite:///:memory:") as pool:
        with pytest.raises(ConfigurationError) as ei:
            register_prometheus(pool, registry=object())
        assert "prometheus_client" in str(ei.value)
        assert get_metrics(pool)["kind"] == "pool"      # the plain dict needs nothing


# ---------------------------------------------------------------------------
# logging hygiene of the library
# ---------------------------------------------------------------------------

LIB = pathlib.Path(__import__("noodlecore").__file__).resolve().parent


def test_library_installs_no_handlers_and_logs_under_noodlecore():
    import importlib
    for mod in ("noodlecore.database", "noodlecore.database.metrics", "noodlecore.testing",
                "noodlecore.database.database_manager", "noodlecore.database.cli.main"):
        importlib.import_module(mod)
    for name, lg in logging.Logger.manager.loggerDict.items():
        if name.startswith("noodlecore") and isinstance(lg, logging.Logger):
            assert lg.handlers == [], f"{name} has handlers {lg.handlers}"
    assert logging.getLogger("noodlecore.database.metrics").name.startswith("noodlecore.database")


def test_library_code_has_no_prints_and_configures_no_logging():
    bad = []
    for path in sorted(LIB.rglob("*.py")):
        if path.name == "__main__.py" or "cli" in path.relative_to(LIB).parts:
            continue                          # the CLI may print and configure its own output
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("print", "basicConfig", "addHandler", "dictConfig", "fileConfig"):
                bad.append(f"{path.name}:{node.lineno} {name}()")
    assert not bad, bad
