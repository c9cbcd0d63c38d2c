"""The manager's decisions as single functions: which failures count as a
lost connection (what the exception says: ``connection_failure`` and
``not_applied``, set from the C core's tables), and DatabaseConfig reading
the environment through the pool's own options.  The end-to-end behaviour is
in test_database_manager_*.py."""

import pytest

from noodlecore.database import ConfigurationError, OperationalError, errors
from noodlecore.database.config import DATABASE_OPTIONS, POOL_OPTIONS, DatabaseConfig, resolve_pool_options
from noodlecore.database.database_manager import DatabaseManager, OutcomeUnknownError
from noodlecore.database.database_manager._retry import classify_failure


@pytest.fixture(autouse=True)
def _no_noodle_env(monkeypatch, tmp_path):
    for var in [o.env for o in DATABASE_OPTIONS.values() if o.env]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _flagged(exc, connection_failure):
    exc.connection_failure = connection_failure
    return exc


@pytest.mark.parametrize("exc,connection,not_applied", [
    # errors made in Python: the core's tables by code and SQLSTATE
    (errors.OperationalError("lost", 2004), True, False),
    (errors.ConnectionPoolError("no endpoint", 4015), True, False),
    (errors.OperationalError("server closed", 2005, "08006"), True, False),
    (errors.OperationalError("admin shutdown", 2005, "57P01"), True, False),
    (errors.QueryTimeoutError("slow", 2012, "57014"), False, False),
    (errors.PoolTimeoutError("busy"), False, False),
    (errors.IntegrityError("dup", 2005, "23505"), False, False),
    # another exception is one only when marked (the binding marks what a
    # Python backend raises through the pool: see test_mock_backend.py)
    (ConnectionResetError("never went through the binding"), False, False),
    (ValueError("python backend"), False, False),
    # the attribute decides
    (_flagged(ValueError("python backend"), True), True, False),
    (_flagged(ConnectionResetError("python backend"), False), False, False),
    (_flagged(errors.OperationalError("lost", 2004), False), False, False),
    (_flagged(errors.IntegrityError("dup", 2005, "23505"), True), True, False),
    # a read-only refusal is connection-class and certainly not applied
    (errors.InternalError("read-only", 2005, "25006"), True, True),
    (_flagged(errors.InternalError("read-only", 2005, "25006"), False), False, True),
])
def test_classify_failure(exc, connection, not_applied):
    f = classify_failure(exc)
    assert (f.connection, f.not_applied) == (connection, not_applied)


def test_statement_sent_false_means_not_applied():
    exc = errors._native_error(2004, 0, None, "lost", statement_sent=False)
    assert exc.statement_sent is False and classify_failure(exc) == (True, True)
    exc = errors._native_error(2004, 0, None, "lost", statement_sent=True)
    assert exc.statement_sent is True and classify_failure(exc) == (True, False)


def test_a_python_backends_connection_error_is_marked_by_the_binding():
    class Gone:
        def execute_query(self, sql, params=None):
            if sql == "SELECT 1" and params == {}:
                return [{"?column?": 1}]
            raise ConnectionResetError("socket closed")

        def close(self):
            pass

    from noodlecore.database import DatabaseConnectionPool
    with DatabaseConnectionPool(Gone, max_connections=1) as pool:
        with pool.get_connection() as conn:
            with pytest.raises(ConnectionResetError) as ei:
                conn.execute_query("SELECT now()")
    assert ei.value.connection_failure is True
    assert classify_failure(ei.value) == (True, False)


class _LostMidWrite(Exception):
    """A Python backend's own exception class, flagged as a lost connection."""
    connection_failure = True
    statement_sent = True


class _Backend:
    def execute_query(self, sql, params=None):
        if sql.startswith("INSERT"):
            raise _LostMidWrite("the socket went away")
        return [{"ok": 1}]

    def close(self):
        pass


def test_manager_reads_connection_failure_from_the_exception():
    with DatabaseManager(_Backend, max_connections=1) as m:
        with pytest.raises(OutcomeUnknownError) as ei:
            m.execute_query("INSERT INTO t VALUES (1)")
        assert isinstance(ei.value, OperationalError) and ei.value.error_code == 3039
        assert isinstance(ei.value.__cause__, _LostMidWrite)


def test_database_config_shares_the_pool_options():
    for name in ("max_connections", "timeout", "retry_attempts"):
        assert DATABASE_OPTIONS[name] is POOL_OPTIONS[name]


@pytest.mark.parametrize("var,value", [
    ("NOODLE_DB_MAX_CONNECTIONS", "0"), ("NOODLE_DB_MAX_CONNECTIONS", "2.5"), ("NOODLE_DB_TIMEOUT", "nan"),
    ("NOODLE_DB_TIMEOUT", "0"), ("NOODLE_DB_RETRY_ATTEMPTS", "-3"),
])
def test_database_config_and_pool_refuse_the_same_way(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as from_config:
        DatabaseConfig()
    with pytest.raises(ConfigurationError) as from_pool:
        resolve_pool_options()
    assert from_config.value.error_code == from_pool.value.error_code == 2019
    assert str(from_config.value) == str(from_pool.value)


def test_password_from_the_environment_is_taken_as_it_is(monkeypatch):
    monkeypatch.setenv("NOODLE_DB_PASSWORD", "  pass word ")
    monkeypatch.setenv("NOODLE_DB_USER", " alice ")
    c = DatabaseConfig()
    assert c.password == "  pass word " and c.username == "alice"
    assert "pass word" not in repr(c)
    monkeypatch.setenv("NOODLE_DB_PORT", "70000")
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConfig()
    assert ei.value.error_code == 2019 and "NOODLE_DB_PORT" in str(ei.value) and "65535" in str(ei.value)
