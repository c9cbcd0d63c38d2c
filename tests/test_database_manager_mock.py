"""DatabaseManager's transparent-failover rules through a mock Python backend
(the backend_factory protocol): a read retried on the new endpoint, a write
whose outcome is unknown never replayed, a write that never reached the server
retried, the idempotent flag, transactions and batches across a lost
connection, and no usable endpoint.

``clean_env`` (conftest.py) clears the NOODLE_DB_* variables; the same scenarios
on real PostgreSQL replication: test_database_manager_pg.py.
"""

import threading
import time

import pytest

from noodlecore.database import DatabaseError, OperationalError
from noodlecore.database import errors
from noodlecore.database.database_manager import DatabaseManager, OutcomeUnknownError, TransactionError
from noodlecore.database.failover_manager import DatabaseEndpoint, FailoverConfig


# ---------------------------------------------------------------------------
# a mock Python backend: backend_factory protocol and the failover rules
# ---------------------------------------------------------------------------

class Lost(ConnectionError):
    """A lost connection, saying (like the native backends) whether the
    statement reached the server."""

    def __init__(self, msg, sent):
        super().__init__(msg)
        if sent is not None:
            self.statement_sent = sent


class MockCluster:
    """Mock servers by connection string.  ``lose[cs] = (sent, applied)``:
    the next statement on cs loses the connection (and cs goes down); with
    ``applied`` it took effect first."""

    def __init__(self):
        self.down = set()
        self.lose = {}
        self.applied = {}            # cs -> [sql, ...] committed
        self.lock = threading.Lock()

    def factory(self, cs):
        if cs in self.down:
            raise ConnectionError(f"{cs} refused the connection")
        return MockBackend(self, cs)

    def statements(self, cs, prefix=""):
        return [s for s in self.applied.get(cs, []) if s.startswith(prefix)]


class MockBackend:
    def __init__(self, cluster, cs):
        self.cluster, self.cs = cluster, cs
        self.txn = None

    def _check(self):
        if self.cs in self.cluster.down:
            self.txn = None
            raise Lost(f"connection to {self.cs} lost", None)

    def _apply(self, sqls):
        with self.cluster.lock:
            self.cluster.applied.setdefault(self.cs, []).extend(sqls)

    def execute_query(self, sql, params=None):
        self._check()
        if sql == "SELECT 1" and self.txn is None:
            return [{"server": self.cs}]
        rule = self.cluster.lose.get(self.cs)
        if rule is not None and rule[1] != "commit":
            del self.cluster.lose[self.cs]
            sent, applied = rule
            if applied and self.txn is None:
                self._apply([sql])
            self.cluster.down.add(self.cs)
            self.txn = None
            raise Lost(f"connection to {self.cs} lost during {sql!r}", sent)
        if self.txn is not None:
            self.txn.append(sql)
        else:
            self._apply([sql])
        if sql.lstrip().upper().startswith("SELECT"):
            return [{"server": self.cs}]
        return 1

    def begin(self):
        self._check()
        self.txn = []

    def commit(self):
        self._check()
        rule = self.cluster.lose.get(self.cs)
        if rule is not None and rule[1] == "commit":
            del self.cluster.lose[self.cs]
            self._apply(self.txn or [])
            self.txn = None
            self.cluster.down.add(self.cs)
            raise Lost(f"connection to {self.cs} lost during COMMIT", True)
        self._apply(self.txn or [])
        self.txn = None

    def rollback(self):
        self.txn = None
        self._check()

    def close(self):
        pass


def mock_endpoints():
    return [DatabaseEndpoint(id="db0", name="DB 0", connection_string="mock://0", priority=1, is_primary=True),
            DatabaseEndpoint(id="db1", name="DB 1", connection_string="mock://1", priority=2)]


def fast_config(**kw):
    base = dict(health_check_interval=0.05, health_check_timeout=0.5, failover_timeout=2,
                recovery_check_interval=0.3, hold_down=0.0, max_failure_count=2, failure_timeout=5,
                auto_recovery=False, pool_max_connections=4, pool_timeout=2)
    base.update(kw)
    return FailoverConfig(**base)


@pytest.fixture
def cluster():
    return MockCluster()


@pytest.fixture
def fm(cluster, clean_env):
    with DatabaseManager(cluster.factory, enable_failover=True, failover_endpoints=mock_endpoints(),
                         failover_config=fast_config(), failover_retry_wait=3) as m:
        yield m


def test_backend_factory_without_failover_is_called_without_arguments(cluster, clean_env):
    calls = []

    def factory(*args):
        calls.append(args)
        return MockBackend(cluster, "mock://solo")
    with DatabaseManager(factory, max_connections=2) as m:
        assert m.execute_query("SELECT x") == [{"server": "mock://solo"}]
        assert m.insert("t", {"a": 1}) == 1
        info = m.get_connection_info()
        assert info["backend"] == "python" and info["dsn"] is None
        assert m.get_database_stats()["backend"] == "python"
        with pytest.raises(DatabaseError) as ei:
            m.table_exists("t")                   # needs a native backend to look
        assert ei.value.error_code == 3019
    assert calls and all(a == () for a in calls)
    assert cluster.statements("mock://solo", "INSERT") == ['INSERT INTO "t" ("a") VALUES (%s)']


def wait_for(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.01)


def wait_probed(m):
    wait_for(lambda: all(e["last_health_check"] for e in m.get_failover_status()["endpoints"].values()),
             what="every endpoint probed")


def test_mock_failover_connect_status_and_manual_switches(fm, cluster):
    assert fm.execute_query("SELECT x") == [{"server": "mock://0"}]
    wait_probed(fm)
    st = fm.get_failover_status()
    assert st["current_endpoint"] == "db0" and st["current_state"] == "primary" and st["monitoring"] is True
    assert fm.get_connection_info()["current_endpoint"] == "db0"
    assert fm.get_connection_info()["endpoints"] == {"db0": "mock://0", "db1": "mock://1"}
    assert fm.trigger_failover("planned maintenance") is True
    assert fm.execute_query("SELECT x") == [{"server": "mock://1"}]
    st = fm.get_failover_status()
    assert (st["current_endpoint"], st["current_state"]) == ("db1", "secondary")
    assert "planned maintenance" in st["recent_failovers"][-1]["reason"]
    assert fm.trigger_recovery() is True
    assert fm.get_failover_status()["current_endpoint"] == "db0"
    assert fm.health_check() is True


def test_mock_plain_read_is_retried_on_the_new_endpoint(fm, cluster):
    fm.execute_query("SELECT warmup")
    cluster.lose["mock://0"] = (True, False)
    assert fm.execute_query("SELECT count(*) FROM t") == [{"server": "mock://1"}]
    assert fm.get_failover_status()["current_endpoint"] == "db1"


def test_mock_write_with_unknown_outcome_is_not_replayed(fm, cluster):
    fm.execute_query("SELECT warmup")
    cluster.lose["mock://0"] = (True, True)      # applied, then the connection died
    with pytest.raises(OutcomeUnknownError) as ei:
        fm.execute_query("INSERT INTO t VALUES (1)")
    e = ei.value
    assert e.error_code == 3039 and isinstance(e, OperationalError)
    assert "unknown" in str(e) and "'db0'" in str(e) and e.endpoint == "db0"
    assert errors.describe(3039) != "unknown error"
    assert cluster.statements("mock://0", "INSERT") == ["INSERT INTO t VALUES (1)"]
    assert cluster.statements("mock://1", "INSERT") == []
    # statement_sent unknown (no attribute at all) is just as unknown
    wait_for(lambda: fm.get_failover_status()["current_endpoint"] == "db1", what="failover to db1")
    cluster.lose["mock://1"] = (None, False)
    with pytest.raises(OutcomeUnknownError):
        fm.execute_query("UPDATE t SET a = 1")
    assert cluster.statements("mock://0", "UPDATE") == []


def test_mock_write_that_never_reached_the_server_is_retried(fm, cluster):
    fm.execute_query("SELECT warmup")
    cluster.lose["mock://0"] = (False, False)
    assert fm.execute_query("INSERT INTO t VALUES (2)") == 1
    assert cluster.statements("mock://0", "INSERT") == []
    assert cluster.statements("mock://1", "INSERT") == ["INSERT INTO t VALUES (2)"]


def test_mock_idempotent_flag(fm, cluster):
    fm.execute_query("SELECT warmup")
    cluster.lose["mock://0"] = (True, True)
    assert fm.execute_query("UPDATE t SET a = 5 WHERE id = 1", idempotent=True) == 1
    assert cluster.statements("mock://1", "UPDATE") == ["UPDATE t SET a = 5 WHERE id = 1"]
    # idempotent=False: even a SELECT is not repeated
    wait_for(lambda: fm.get_failover_status()["current_endpoint"] == "db1", what="failover to db1")
    cluster.lose["mock://1"] = (True, False)
    with pytest.raises(OutcomeUnknownError):
        fm.execute_query("SELECT my_side_effect()", idempotent=False)


def test_mock_transaction_rolls_back_on_failover(fm, cluster):
    fm.execute_query("SELECT warmup")
    with pytest.raises(TransactionError) as ei:
        with fm.transaction() as tx:
            tx.execute_query("INSERT INTO t VALUES (1)")
            cluster.lose["mock://0"] = (True, False)
            tx.execute_query("INSERT INTO t VALUES (2)")
    assert ei.value.error_code == 3009 and isinstance(ei.value, OperationalError)
    assert "rolled back" in str(ei.value)
    assert cluster.statements("mock://0", "INSERT") == [] and cluster.statements("mock://1", "INSERT") == []
    # a transaction after the failover runs on the new endpoint
    with fm.transaction() as tx:
        tx.execute_query("INSERT INTO t VALUES (3)")
    assert tx.endpoint == "db1" and cluster.statements("mock://1", "INSERT") == ["INSERT INTO t VALUES (3)"]
    # caught inside the block: it cannot be committed afterwards
    cluster.down.discard("mock://0")
    cluster.lose["mock://1"] = (True, False)
    with pytest.raises(TransactionError):
        with fm.transaction() as tx:
            try:
                tx.execute_query("INSERT INTO t VALUES (4)")
            except TransactionError:
                pass
    assert cluster.statements("mock://0", "INSERT") == []


def test_mock_batch_is_rerun_after_failover_but_commit_loss_is_unknown(fm, cluster):
    fm.execute_query("SELECT warmup")
    cluster.lose["mock://0"] = (True, False)
    res = fm.execute_batch(["INSERT INTO t VALUES (1)", "SELECT a FROM t"])
    assert res == [1, [{"server": "mock://1"}]]
    assert cluster.statements("mock://0", "INSERT") == []
    assert cluster.statements("mock://1", "INSERT") == ["INSERT INTO t VALUES (1)"]
    cluster.lose["mock://1"] = (True, "commit")
    with pytest.raises(OutcomeUnknownError) as ei:
        fm.execute_batch(["INSERT INTO t VALUES (2)"])
    assert "COMMIT" in str(ei.value)
    assert cluster.statements("mock://0", "INSERT") == []      # never replayed elsewhere


def test_mock_lost_statement_that_commits_is_unknown_not_rolled_back(fm, cluster):
    """Inside transaction() or execute_batch, a lost statement is rolled back
    with the session, unless it commits (COMMIT, END ... sent as SQL: the
    core's nc_sql_effect): then its outcome is unknown, and a batch is not
    run again."""
    fm.execute_query("SELECT warmup")
    with pytest.raises(OutcomeUnknownError) as ei:
        with fm.transaction() as tx:
            tx.execute_query("INSERT INTO t VALUES (1)")
            cluster.lose["mock://0"] = (True, False)
            tx.execute_query("COMMIT")
    assert ei.value.error_code == 3039 and "unknown" in str(ei.value) and ei.value.endpoint == "db0"
    wait_for(lambda: fm.get_failover_status()["current_endpoint"] == "db1", what="failover to db1")
    cluster.lose["mock://1"] = (True, False)
    with pytest.raises(OutcomeUnknownError) as ei:
        fm.execute_batch(["end transaction"])
    assert "statement 0" in str(ei.value) and ei.value.endpoint == "db1"
    assert cluster.statements("mock://0", "INSERT") == [] and cluster.statements("mock://1", "end") == []


def test_mock_no_usable_endpoint_waits_then_fails(cluster, clean_env):
    with DatabaseManager(cluster.factory, enable_failover=True, failover_endpoints=mock_endpoints(),
                         failover_config=fast_config(), failover_retry_wait=0.3) as m:
        m.execute_query("SELECT warmup")
        cluster.down.update({"mock://0", "mock://1"})
        t0 = time.monotonic()
        with pytest.raises(OperationalError) as ei:
            m.execute_query("SELECT x")
        assert 0.2 < time.monotonic() - t0 < 3
        assert ei.value.error_code in (3003, 3005)
        assert m.health_check() is False
        cluster.down.clear()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert m.execute_query("SELECT x")
                break
            except OperationalError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
