"""Read routing without a server: the argument checks and error codes of
target=, from_dsn and the new FailoverConfig fields, and what read targets
do where no endpoint can be a standby (SQLite endpoints: their role is
unknown).  The routing itself on real standbys: test_failover_pg_reads.py."""

import pytest

from noodlecore import _native
from noodlecore.database import ConfigurationError, DatabaseManager, OperationalError
from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig
from noodlecore.database.routing import TARGETS


def sqlite_manager(tmp_path, **cfg):
    eps = [DatabaseEndpoint(id=x, name=x, connection_string="sqlite:///%s" % (tmp_path / (x + ".db")), priority=i)
           for i, x in enumerate(("a", "b"), 1)]
    return DatabaseFailoverManager(eps, config=FailoverConfig(**cfg))


def test_targets_are_the_cores():
    assert TARGETS == _native.TARGETS == ("primary", "standby", "prefer-standby", "any")


def test_read_targets_on_endpoints_that_cannot_be_standbys(tmp_path):
    with sqlite_manager(tmp_path) as m:
        with pytest.raises(OperationalError) as ei:
            with m.get_connection(timeout=5, target="standby"):
                pass
        assert ei.value.error_code == 4017 and "lag" in str(ei.value)
        for target in ("prefer-standby", "any", "primary"):
            with m.get_connection(timeout=5, target=target) as c:
                assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
        for bad in ("read-write", "", None, 1):
            with pytest.raises(ConfigurationError) as ei:
                with m.get_connection(target=bad):
                    pass
            assert ei.value.error_code == 4018
        st = m.get_status()["endpoints"]["a"]
        assert (st["reads"], st["writes"], st["serves_reads"], st["lag_bytes"], st["lsn"]) == (2, 1, False, None,
                                                                                               None)


def test_database_manager_target_argument():
    with DatabaseManager("sqlite:///:memory:") as dm:
        with pytest.raises(ConfigurationError) as ei:
            dm.execute_query("SELECT 1", target="nope")
        assert ei.value.error_code == 4018
        with pytest.raises(ConfigurationError) as ei:
            dm.select("t", target=None)
        assert ei.value.error_code == 4018
        # one database, no standby: "standby" fails (the query's no-connection code, caused by 4017)
        with pytest.raises(OperationalError) as ei:
            dm.execute_query("SELECT 1", target="standby")
        assert ei.value.__cause__.error_code == 4017
        assert dm.execute_query("SELECT 1 AS x", target="prefer-standby") == [{"x": 1}]
        with dm.get_connection(target="any") as c:
            assert c.execute_query("SELECT 2 AS y") == [{"y": 2}]
    with pytest.raises(ConfigurationError, match="read_your_writes"):
        DatabaseManager("sqlite:///:memory:", read_your_writes="yes")


def test_failover_config_new_fields():
    cfg = FailoverConfig()
    assert (cfg.failover_wait, cfg.max_replica_lag_bytes, cfg.max_replica_lag_seconds) == (0, 16 * 1024 * 1024, 30)
    for name, bad in (("failover_wait", -1), ("failover_wait", float("inf")), ("max_replica_lag_bytes", 0),
                      ("max_replica_lag_seconds", -1), ("max_replica_lag_seconds", float("nan")),
                      ("max_replica_lag_bytes", True)):
        with pytest.raises(ConfigurationError, match=name):
            FailoverConfig(**{name: bad}).validate()


def test_from_dsn_splits_in_list_order_and_refuses_what_it_cannot_split():
    pairs = _native.split_hosts("postgresql://u:secret@h1:5432,h2:5433/db?target_session_attrs=read-write")
    assert [name for name, _ in pairs] == ["h1:5432", "h2:5433"]
    assert all("target_session_attrs" not in dsn and "dbname='db'" in dsn for _, dsn in pairs)
    assert [name for name, _ in _native.split_hosts("host=a,b port=1")] == ["a:1", "b:1"]
    with pytest.raises(ConfigurationError) as ei:
        DatabaseFailoverManager.from_dsn("host=a,,b")
    assert ei.value.error_code == 4019
    with pytest.raises(ConfigurationError) as ei:
        DatabaseFailoverManager.from_dsn("host=" + ",".join("h%d" % i for i in range(17)))
    assert ei.value.error_code == 2013
    with pytest.raises(ConfigurationError) as ei:
        DatabaseFailoverManager.from_dsn(42)
    assert ei.value.error_code == 2013
    # a DatabaseManager needs endpoints, or several hosts in its DSN, to fail over
    with pytest.raises(ConfigurationError, match="multi-host"):
        DatabaseManager(config="postgresql://u@h1/db", enable_failover=True)
    dm = DatabaseManager(config="postgresql://u@h1,h2:6000/db", enable_failover=True)
    assert [e.id for e in dm.failover_endpoints] == ["h1:5432", "h2:6000"]
