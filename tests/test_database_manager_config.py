"""DatabaseManager without a server: DatabaseConfig (environment, DSN building,
no password in reprs), construction errors, the DSN or config argument, the
embedded default, operations before connect, and connect / disconnect /
reconnect on the SQLite backend.

``clean_env`` (conftest.py) clears the NOODLE_DB_* variables; the same scenarios
on real PostgreSQL replication: test_database_manager_pg.py.
"""

import urllib.parse

import pytest

from noodlecore.database import ConfigurationError, InterfaceError, OperationalError
from noodlecore.database import errors
from noodlecore.database.database_manager import DatabaseConfig, DatabaseManager, NotConnectedError
from noodlecore.database.failover_manager import DatabaseEndpoint, FailoverConfig


# ---------------------------------------------------------------------------
# DatabaseConfig
# ---------------------------------------------------------------------------

def test_config_defaults_are_the_embedded_sqlite_file(clean_env, tmp_path):
    c = DatabaseConfig()
    assert (c.host, c.port, c.database, c.username, c.password, c.ssl_mode, c.max_connections, c.timeout,
            c.retry_attempts) == ("localhost", 5432, "noodlecore", "", "", "disable", 20, 30.0, 3)
    assert c.connection_string == "sqlite:///" + str(tmp_path / "noodlecore.db")
    assert not c.uses_postgresql


def test_config_reads_the_environment_at_construction(clean_env):
    clean_env.setenv("NOODLE_DB_HOST", "db.example.com")
    clean_env.setenv("NOODLE_DB_PORT", "6543")
    clean_env.setenv("NOODLE_DB_NAME", "my db")
    clean_env.setenv("NOODLE_DB_USER", "ad min")
    clean_env.setenv("NOODLE_DB_PASSWORD", "p@ss:w/rd%?#")
    clean_env.setenv("NOODLE_DB_SSL", "true")
    clean_env.setenv("NOODLE_DB_MAX_CONNECTIONS", "7")
    clean_env.setenv("NOODLE_DB_TIMEOUT", "2.5")
    clean_env.setenv("NOODLE_DB_RETRY_ATTEMPTS", "5")
    c = DatabaseConfig()
    assert (c.host, c.port, c.database, c.username, c.password, c.ssl_mode, c.max_connections, c.timeout,
            c.retry_attempts) == ("db.example.com", 6543, "my db", "ad min", "p@ss:w/rd%?#", "require", 7, 2.5, 5)
    assert c.uses_postgresql
    assert c.connection_string == ("postgresql://ad%20min:p%40ss%3Aw%2Frd%25%3F%23@db.example.com:6543/my%20db"
                                   "?sslmode=require")
    u = urllib.parse.urlsplit(c.connection_string)
    assert urllib.parse.unquote(u.password) == "p@ss:w/rd%?#"
    assert urllib.parse.unquote(u.username) == "ad min"
    # read when made, not when imported: a later change shows in a new object
    clean_env.setenv("NOODLE_DB_PORT", "7000")
    assert DatabaseConfig().port == 7000 and c.port == 6543


@pytest.mark.parametrize("raw,mode", [("true", "require"), ("false", "disable"), ("1", "require"),
                                      ("off", "disable"), ("verify-full", "verify-full"), ("PREFER", "prefer")])
def test_config_ssl_values(clean_env, raw, mode):
    clean_env.setenv("NOODLE_DB_SSL", raw)
    c = DatabaseConfig(username="u", password="p")
    assert c.ssl_mode == mode
    assert c.connection_string.endswith("?sslmode=" + mode)


@pytest.mark.parametrize("var,value", [
    ("NOODLE_DB_PORT", "abc"), ("NOODLE_DB_PORT", "0"), ("NOODLE_DB_PORT", "70000"),
    ("NOODLE_DB_MAX_CONNECTIONS", "0"), ("NOODLE_DB_MAX_CONNECTIONS", "2.5"), ("NOODLE_DB_TIMEOUT", "soon"),
    ("NOODLE_DB_TIMEOUT", "-1"), ("NOODLE_DB_TIMEOUT", "inf"), ("NOODLE_DB_RETRY_ATTEMPTS", "x"),
    ("NOODLE_DB_SSL", "sometimes"),
])
def test_config_bad_environment_names_the_variable(clean_env, var, value):
    clean_env.setenv(var, value)
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConfig()
    assert ei.value.error_code == 2019
    assert var in str(ei.value)
    # the manager made from the environment fails the same way
    with pytest.raises(ConfigurationError) as ei:
        DatabaseManager()
    assert ei.value.error_code == 2019


@pytest.mark.parametrize("field,value", [("port", 0), ("port", "5432"), ("max_connections", 0),
                                         ("timeout", 0), ("timeout", float("nan")), ("retry_attempts", True),
                                         ("ssl_mode", "maybe"), ("host", 5), ("password", "a\0b")])
def test_config_bad_field_names_the_field(clean_env, field, value):
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConfig(**{field: value})
    assert ei.value.error_code == 2013
    assert field in str(ei.value)


def test_config_never_shows_the_password(clean_env):
    clean_env.setenv("NOODLE_DB_PASSWORD", "s3cr3t-pw")
    clean_env.setenv("NOODLE_DB_USER", "alice")
    c = DatabaseConfig()
    assert "s3cr3t-pw" in c.connection_string
    for text in (repr(c), str(c), str(c.to_dict()), repr(DatabaseManager(config=c)),
                 str(DatabaseManager(config=c).get_connection_info())):
        assert "s3cr3t-pw" not in text, text
    assert c.to_dict()["password"] == "***"
    assert "***" in repr(c)
    explicit = DatabaseConfig(connection_string="postgresql://bob:hunter2@h/db")
    assert "hunter2" not in repr(explicit) and "hunter2" not in str(explicit.to_dict())


def test_config_connection_string_choices(clean_env, tmp_path):
    assert DatabaseConfig(connection_string="sqlite:///x.db").connection_string == "sqlite:///x.db"
    assert DatabaseConfig(database=":memory:").connection_string == "sqlite:///:memory:"
    assert DatabaseConfig(database="app.sqlite3").connection_string == "sqlite:///" + str(tmp_path / "app.sqlite3")
    # a user without a password stays on the embedded default
    assert DatabaseConfig(username="u").connection_string.startswith("sqlite:///")
    assert DatabaseConfig(host="::1", username="u", password="p", database="d").connection_string == \
        "postgresql://u:p@[::1]:5432/d?sslmode=disable"
    assert DatabaseConfig(host="/var/run/postgresql", username="u", password="p", database="d") \
        .connection_string == "postgresql://u:p@%2Fvar%2Frun%2Fpostgresql:5432/d?sslmode=disable"


# ---------------------------------------------------------------------------
# construction and lifecycle
# ---------------------------------------------------------------------------

def test_manager_construction_errors(clean_env):
    with pytest.raises(ConfigurationError, match="failover_endpoints"):
        DatabaseManager(enable_failover=True)
    with pytest.raises(ConfigurationError, match="failover_endpoints"):
        DatabaseManager(enable_failover=True, failover_endpoints=[])
    ep = DatabaseEndpoint("a", "A", "sqlite:///a.db")
    with pytest.raises(ConfigurationError, match="enable_failover"):
        DatabaseManager(failover_endpoints=[ep])
    with pytest.raises(ConfigurationError, match="enable_failover"):
        DatabaseManager(failover_config=FailoverConfig())
    with pytest.raises(ConfigurationError):
        DatabaseManager(backend_factory=42)
    with pytest.raises(ConfigurationError):
        DatabaseManager(config=3.14)
    with pytest.raises(ConfigurationError, match="unknown pool option"):
        DatabaseManager(config="sqlite:///x.db", bogus_option=1)
    with pytest.raises(ConfigurationError):
        DatabaseManager(config="sqlite:///x.db", max_connections=0)
    with pytest.raises(ConfigurationError, match="unrecognised DSN"):
        DatabaseManager(config="mysql://nope")
    with pytest.raises(ConfigurationError):
        DatabaseManager(enable_failover=True, failover_endpoints=[ep], failover_config=FailoverConfig(hold_down=-1))
    with pytest.raises(ConfigurationError):
        DatabaseManager("sqlite:///x.db", config="sqlite:///y.db")


def test_dsn_as_first_argument_or_config(clean_env, tmp_path):
    with DatabaseManager("sqlite:///%s" % (tmp_path / "a.db")) as m:
        assert m.execute_query("SELECT 1 AS one") == [{"one": 1}]
    with DatabaseManager(config="sqlite:///%s" % (tmp_path / "a.db")) as m:
        assert m.get_connection_info()["backend"] == "sqlite"


def test_nothing_configured_uses_the_embedded_default(clean_env, tmp_path):
    with DatabaseManager() as m:
        m.execute_query("CREATE TABLE t (x INTEGER)")
        assert m.get_connection_info()["backend"] == "sqlite"
    assert (tmp_path / "noodlecore.db").exists()


OPS_NO_CONNECTION = [
    ("query", 3003, lambda m: m.execute_query("SELECT 1")),
    ("execute_batch", 3006, lambda m: m.execute_batch([("SELECT 1", None)])),
    ("transaction", 3008, lambda m: m.transaction().__enter__()),
    ("insert", 3010, lambda m: m.insert("t", {"a": 1})),
    ("update", 3012, lambda m: m.update("t", {"a": 1}, {"a": 2})),
    ("delete", 3014, lambda m: m.delete("t", {"a": 1})),
    ("select", 3016, lambda m: m.select("t")),
    ("table_exists", 3018, lambda m: m.table_exists("t")),
    ("create_table", 3020, lambda m: m.create_table("t", {"a": "INTEGER"})),
    ("drop_table", 3022, lambda m: m.drop_table("t")),
    ("get_table_schema", 3024, lambda m: m.get_table_schema("t")),
    ("stats", 3032, lambda m: m.get_database_stats()),
    ("pool stats", 3032, lambda m: m.get_pool_stats()),
    ("get_connection", 3003, lambda m: m.get_connection().__enter__()),
]


@pytest.mark.parametrize("name,code,call", OPS_NO_CONNECTION, ids=[o[0] for o in OPS_NO_CONNECTION])
def test_operations_before_connect_say_no_connection(clean_env, name, code, call):
    m = DatabaseManager(config="sqlite:///x.db")
    assert not m.is_connected
    with pytest.raises(NotConnectedError) as ei:
        call(m)
    assert ei.value.error_code == code
    assert isinstance(ei.value, InterfaceError)
    assert "connect()" in str(ei.value)
    assert m.health_check() is False


def test_connect_disconnect_reconnect(clean_env, tmp_path):
    m = DatabaseManager(config="sqlite:///%s" % (tmp_path / "c.db"))
    m.connect()
    m.connect()                                    # idempotent
    assert m.is_connected and "connected" in repr(m)
    m.execute_query("CREATE TABLE t (x INTEGER)")
    m.disconnect()
    assert not m.is_connected
    m.disconnect()                                 # nothing to do
    with pytest.raises(NotConnectedError):
        m.execute_query("SELECT 1")
    m.connect()
    assert m.table_exists("t")
    m.close()
    assert not m.is_connected
    with DatabaseManager(config="sqlite:///%s" % (tmp_path / "c.db")) as m2:
        assert m2.is_connected
    assert not m2.is_connected


def test_connect_failure_is_3001_with_the_cause(clean_env, tmp_path):
    m = DatabaseManager(config="sqlite:///%s" % (tmp_path / "no" / "such" / "dir.db"), retry_attempts=1)
    with pytest.raises(OperationalError) as ei:
        m.connect()
    assert ei.value.error_code == 3001
    assert isinstance(ei.value.__cause__, errors.Error) and ei.value.__cause__.error_code != 3001
    assert not m.is_connected
