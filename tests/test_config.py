"""Options, environment variables and DSNs: every bad value is refused with
ConfigurationError naming what is wrong, and nothing is created."""

import pytest

from noodlecore.database import ConfigurationError, DatabaseConnectionPool
from noodlecore.database.config import redact_dsn, resolve_pool_options

MEM = "sqlite:///:memory:"


def test_defaults_match_the_contract(monkeypatch):
    for var in ("NOODLE_DB_MAX_CONNECTIONS", "NOODLE_DB_TIMEOUT", "NOODLE_DB_RETRY_ATTEMPTS"):
        monkeypatch.delenv(var, raising=False)
    o = resolve_pool_options()
    assert o["max_connections"] == 20
    assert o["min_connections"] == 0
    assert o["timeout"] == 30.0
    assert o["retry_attempts"] == 3
    assert o["validate_connections"] is True
    assert o["validation_interval"] == 30.0
    assert o["validation_timeout"] == 5.0
    assert o["idle_timeout"] == 600.0
    assert o["max_lifetime"] == 3600.0
    assert o["query_timeout"] is None


def test_explicit_beats_environment_beats_default(monkeypatch):
    monkeypatch.setenv("NOODLE_DB_MAX_CONNECTIONS", "7")
    monkeypatch.setenv("NOODLE_DB_TIMEOUT", "2.5")
    monkeypatch.setenv("NOODLE_DB_RETRY_ATTEMPTS", "5")
    o = resolve_pool_options()
    assert (o["max_connections"], o["timeout"], o["retry_attempts"]) == (7, 2.5, 5)
    o = resolve_pool_options({"max_connections": 3}, {"timeout": 1})
    assert (o["max_connections"], o["timeout"], o["retry_attempts"]) == (3, 1.0, 5)
    # keywords beat the config dict
    o = resolve_pool_options({"max_connections": 3}, {"max_connections": 4})
    assert o["max_connections"] == 4
    with DatabaseConnectionPool(MEM) as pool:
        assert pool.get_stats().max_connections == 7


@pytest.mark.parametrize("key,value,words", [
    ("max_connections", 0, "max_connections"),
    ("max_connections", -1, "max_connections"),
    ("max_connections", 2.5, "integer"),
    ("max_connections", "10", "integer"),
    ("max_connections", True, "integer"),
    ("min_connections", -1, "min_connections"),
    ("timeout", 0, "timeout"),
    ("timeout", -3, "timeout"),
    ("timeout", "30", "number"),
    ("timeout", float("nan"), "finite"),
    ("retry_attempts", 0, "retry_attempts"),
    ("validate_connections", 1, "True or False"),
    ("validation_interval", 0, "validation_interval"),
    ("validation_timeout", -1, "validation_timeout"),
    ("idle_timeout", -1, "idle_timeout"),
    ("max_lifetime", -5, "max_lifetime"),
    ("query_timeout", 0, "query_timeout"),
    ("row_format", "list", "row_format"),
])
def test_bad_option_names_the_key(key, value, words):
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool(MEM, **{key: value})
    assert ei.value.error_code == 2013
    assert key in str(ei.value)
    assert words in str(ei.value)


def test_unknown_key_and_min_above_max():
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool(MEM, max_conections=5)
    assert "max_conections" in str(ei.value) and ei.value.error_code == 2013
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool(MEM, {"min_connections": 5, "max_connections": 2})
    assert "min_connections" in str(ei.value) and "max_connections" in str(ei.value)
    with pytest.raises(ConfigurationError):
        DatabaseConnectionPool(MEM, config=["max_connections"])


@pytest.mark.parametrize("var,value", [
    ("NOODLE_DB_MAX_CONNECTIONS", "abc"),
    ("NOODLE_DB_MAX_CONNECTIONS", "0"),
    ("NOODLE_DB_MAX_CONNECTIONS", "2.5"),
    ("NOODLE_DB_TIMEOUT", "soon"),
    ("NOODLE_DB_TIMEOUT", "-1"),
    ("NOODLE_DB_RETRY_ATTEMPTS", "x"),
    ("NOODLE_DB_RETRY_ATTEMPTS", "0"),
])
def test_bad_environment_value_names_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool(MEM)
    assert var in str(ei.value)
    assert ei.value.error_code == 2019
    # an explicit value for that option makes the environment irrelevant
    key = {"NOODLE_DB_MAX_CONNECTIONS": "max_connections", "NOODLE_DB_TIMEOUT": "timeout",
           "NOODLE_DB_RETRY_ATTEMPTS": "retry_attempts"}[var]
    with DatabaseConnectionPool(MEM, **{key: 3}) as pool:
        assert not pool.closed


@pytest.mark.parametrize("factory", [
    "mysql://x", "sqlite:/x.db", "sqlite:///", "", 42, None, ["postgresql://"],
])
def test_bad_backend_factory(factory):
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool(factory)
    assert ei.value.error_code == 2013


def test_bad_libpq_string_is_a_configuration_error():
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool("host=127.0.0.1 port=1 password=hunter2 bogus_key=1")
    assert "bogus_key" in str(ei.value)
    assert "hunter2" not in str(ei.value)


def test_passwords_never_shown():
    dsn = "postgresql://app:s3cr3t-pw@127.0.0.1:1/db"
    assert "s3cr3t-pw" not in redact_dsn(dsn)
    assert "s3cr3t-pw" not in redact_dsn("host=x password=s3cr3t-pw user=y")
    assert "s3cr3t-pw" not in redact_dsn("postgresql://h/db?password=s3cr3t-pw&sslmode=off")
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool("mysql://app:s3cr3t-pw@h/db")
    assert "s3cr3t-pw" not in str(ei.value)
    pool = DatabaseConnectionPool(dsn, max_connections=1, timeout=1, connect_timeout=0.5,
                                  retry_attempts=1, validate_connections=False)
    try:
        assert "s3cr3t-pw" not in repr(pool)
        assert "s3cr3t-pw" not in pool.target
        with pytest.raises(Exception) as ei:
            with pool.get_connection():
                pass
        assert "s3cr3t-pw" not in str(ei.value)
        assert ei.value.error_code == 2009
    finally:
        pool.shutdown()


def test_timeout_arguments_are_checked():
    with DatabaseConnectionPool(MEM) as pool:
        with pytest.raises(ConfigurationError):
            pool.get_connection(timeout=-1)
        with pytest.raises(ConfigurationError):
            pool.get_connection(timeout="1")
        with pool.get_connection() as conn:
            with pytest.raises(ConfigurationError):
                conn.execute_query("SELECT 1", timeout=0)
            with pytest.raises(ConfigurationError):
                conn.execute_query("SELECT 1", row_format="rows")
            assert conn.execute_query("SELECT 1 AS x") == [{"x": 1}]
