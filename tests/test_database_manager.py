"""DatabaseManager without a server: DatabaseConfig (environment, DSN building,
no password in reprs), the SQLite backend without failover (connect, queries,
batches, transactions, every table helper with hostile identifiers and
values, stats, logging), and the transparent-failover rules through a mock
Python backend (a read retried on the new endpoint, a write whose outcome is
unknown never replayed, transactions and batches across a lost connection).
The same scenarios on real PostgreSQL replication: test_database_manager_pg.py.
"""

import logging
import os
import re
import threading
import time
import urllib.parse

import pytest

from noodlecore.database import (
    ConfigurationError, DatabaseError, IntegrityError, InterfaceError, OperationalError, PoolStats,
    ProgrammingError, QueryTimeoutError,
)
from noodlecore.database import errors
from noodlecore.database.database_manager import (
    DatabaseConfig, DatabaseManager, FailoverNotEnabledError, NotConnectedError, OutcomeUnknownError,
    Transaction, TransactionError, is_plain_select, quote_identifier,
)
from noodlecore.database.failover_manager import DatabaseEndpoint, FailoverConfig

ENV_VARS = ["NOODLE_DB_HOST", "NOODLE_DB_PORT", "NOODLE_DB_NAME", "NOODLE_DB_USER", "NOODLE_DB_PASSWORD",
            "NOODLE_DB_SSL", "NOODLE_DB_MAX_CONNECTIONS", "NOODLE_DB_TIMEOUT", "NOODLE_DB_RETRY_ATTEMPTS"]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture
def db(clean_env, tmp_path):
    with DatabaseManager(config="sqlite:///%s" % (tmp_path / "t.db"), max_connections=4, timeout=5) as m:
        yield m


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


# ---------------------------------------------------------------------------
# queries, batches, transactions
# ---------------------------------------------------------------------------

def test_execute_query_shapes_and_errors(db):
    assert db.execute_query("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)") in (0, -1)
    assert db.execute_query("INSERT INTO t (id, name) VALUES (%s, %s)", (1, "a")) == 1
    assert db.execute_query("INSERT INTO t (id, name) VALUES (%(id)s, %(name)s)", {"id": 2, "name": "b"}) == 1
    assert db.execute_query("SELECT id, name FROM t ORDER BY id") == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert db.execute_query("SELECT id FROM t WHERE id = %s", (9,)) == []
    with pytest.raises(ProgrammingError) as ei:
        db.execute_query("SELEKT nonsense")
    assert ei.value.error_code == 3005
    assert isinstance(ei.value.__cause__, ProgrammingError) and ei.value.__cause__.error_code == 2005
    assert ei.value.correlation_id and re.fullmatch(r"[0-9a-f]{32}", ei.value.correlation_id)
    with pytest.raises(IntegrityError) as ei:
        db.execute_query("INSERT INTO t (id, name) VALUES (%s, %s)", (1, "dup"))
    assert ei.value.error_code == 3005
    with pytest.raises(ProgrammingError):
        db.execute_query("SELECT 1", idempotent="yes")


def test_execute_query_timeout_is_3004(db):
    t0 = time.monotonic()
    with pytest.raises(QueryTimeoutError) as ei:
        db.execute_query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                         timeout=0.2)
    assert ei.value.error_code == 3004
    assert time.monotonic() - t0 < 3


def test_execute_batch_one_transaction(db):
    db.execute_query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    res = db.execute_batch([("INSERT INTO t VALUES (%s, %s)", (1, "a")),
                            ("INSERT INTO t VALUES (%s, %s)", (2, "b")),
                            "UPDATE t SET v = 'z' WHERE id = 2",
                            ("SELECT id, v FROM t ORDER BY id", None)])
    assert res == [1, 1, 1, [{"id": 1, "v": "a"}, {"id": 2, "v": "z"}]]
    with pytest.raises(IntegrityError) as ei:
        db.execute_batch([("INSERT INTO t VALUES (%s, %s)", (3, "c")),
                          ("INSERT INTO t VALUES (%s, %s)", (1, "dup"))])
    assert ei.value.error_code == 3007
    assert ei.value.batch_index == 1
    assert db.execute_query("SELECT count(*) AS n FROM t") == [{"n": 2}]     # 3 was rolled back
    with pytest.raises(ProgrammingError):
        db.execute_batch([42])
    assert db.execute_batch([]) == []


def test_transaction_commits(db):
    db.execute_query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    with db.transaction() as tx:
        assert isinstance(tx, Transaction)
        assert tx.execute_query("INSERT INTO t VALUES (%s)", (1,)) == 1
        assert tx.execute_query("INSERT INTO t VALUES (%s)", (2,)) == 1
        assert tx.execute_query("SELECT count(*) AS n FROM t") == [{"n": 2}]
        assert re.fullmatch(r"[0-9a-f]{32}", tx.correlation_id)
    assert db.execute_query("SELECT count(*) AS n FROM t") == [{"n": 2}]
    with pytest.raises(InterfaceError):
        tx.execute_query("SELECT 1")                # the block is over


def test_transaction_rolls_back_and_reraises_as_it_was(db):
    db.execute_query("CREATE TABLE t (id INTEGER PRIMARY KEY)")

    class Boom(Exception):
        pass
    boom = Boom("stop")
    with pytest.raises(Boom) as ei:
        with db.transaction() as tx:
            tx.execute_query("INSERT INTO t VALUES (%s)", (1,))
            raise boom
    assert ei.value is boom
    assert db.execute_query("SELECT count(*) AS n FROM t") == [{"n": 0}]
    # a database error inside the block propagates as it was raised, all rolled back
    with pytest.raises(IntegrityError) as ei:
        with db.transaction() as tx:
            tx.execute_query("INSERT INTO t VALUES (%s)", (5,))
            tx.execute_query("INSERT INTO t VALUES (%s)", (5,))
    assert ei.value.error_code == 3005
    assert db.execute_query("SELECT count(*) AS n FROM t") == [{"n": 0}]
    # the connection went back: the pool is not exhausted
    assert db.get_pool_stats().active_connections == 0


def test_get_connection_passthrough(db):
    with db.get_connection() as conn:
        assert conn.execute_query("SELECT 2 AS two") == [{"two": 2}]
        assert db.get_pool_stats().active_connections == 1
    assert db.get_pool_stats().active_connections == 0


# ---------------------------------------------------------------------------
# table helpers
# ---------------------------------------------------------------------------

HOSTILE_NAMES = ['weird"name', "x; DROP TABLE y", "Robert'); DROP TABLE sentinel;--", "ünïcødé 表 🙂",
                 "a%sb%%c", "  spaced  ", "select", '"', "a.b"]

HOSTILE_VALUES = ["'; DROP TABLE sentinel; --", "%s", "%(x)s", "%%", '"quoted"', "back\\slash", "ünïcødé 表 🙂",
                  "line\nbreak\ttab", "", " ", "a\0b"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_every_helper_with_a_hostile_identifier(db, name):
    db.create_table("sentinel", {"id": "INTEGER"})
    db.create_table(name, {"id": "INTEGER PRIMARY KEY", name: "TEXT"})
    assert db.table_exists(name) is True
    assert db.get_table_schema(name) == {"id": "INTEGER", name: "TEXT"}
    assert db.insert(name, {"id": 1, name: "one"}) == 1
    assert db.insert(name, [{"id": 2, name: "two"}, {"id": 3, name: None}]) == 2
    assert sorted(db.select(name), key=lambda r: r["id"]) == [
        {"id": 1, name: "one"}, {"id": 2, name: "two"}, {"id": 3, name: None}]
    assert db.select(name, columns=[name], conditions={"id": 2}) == [{name: "two"}]
    assert db.select(name, columns=name, conditions={name: None}) == [{name: None}]
    assert db.update(name, {name: "TWO"}, {"id": 2}) == 1
    assert db.update(name, {name: "three"}, {name: None}) == 1       # None matches with IS NULL
    assert db.delete(name, {name: "one"}) == 1
    assert sorted(r["id"] for r in db.select(name)) == [2, 3]
    db.drop_table(name)
    assert db.table_exists(name) is False
    assert db.table_exists("sentinel") is True


def test_hostile_values_are_stored_verbatim(db):
    db.create_table("v", {"id": "INTEGER PRIMARY KEY", "s": "TEXT", "b": "BLOB"})
    for i, val in enumerate(HOSTILE_VALUES):
        assert db.insert("v", {"id": i, "s": val, "b": val.encode()}) == 1
    rows = db.select("v", conditions=None)
    assert {r["id"]: r["s"] for r in rows} == dict(enumerate(HOSTILE_VALUES))
    assert {r["id"]: r["b"] for r in rows} == {i: v.encode() for i, v in enumerate(HOSTILE_VALUES)}
    for i, val in enumerate(HOSTILE_VALUES):
        assert db.select("v", ["id"], {"s": val}) == [{"id": i}]
    assert db.update("v", {"s": "%s"}, {"s": "'; DROP TABLE sentinel; --"}) == 1
    assert db.delete("v", {"s": "%(x)s"}) == 1
    assert db.execute_query("SELECT count(*) AS n FROM v") == [{"n": len(HOSTILE_VALUES) - 1}]


BAD_NAMES = [("", "empty"), ("a\0b", "NUL"), (None, "string"), (42, "string"), (b"t", "string")]

HELPER_CALLS = [
    ("insert", 3011, lambda m, n: m.insert(n, {"a": 1})),
    ("insert column", 3011, lambda m, n: m.insert("t", {n: 1})),
    ("update", 3013, lambda m, n: m.update(n, {"a": 1}, {"a": 2})),
    ("update column", 3013, lambda m, n: m.update("t", {n: 1}, {"a": 2})),
    ("update condition", 3013, lambda m, n: m.update("t", {"a": 1}, {n: 2})),
    ("delete", 3015, lambda m, n: m.delete(n, {"a": 1})),
    ("delete condition", 3015, lambda m, n: m.delete("t", {n: 1})),
    ("select", 3017, lambda m, n: m.select(n)),
    ("select column", 3017, lambda m, n: m.select("t", columns=[n])),
    ("table_exists", 3019, lambda m, n: m.table_exists(n)),
    ("create_table", 3021, lambda m, n: m.create_table(n, {"a": "INTEGER"})),
    ("create_table column", 3021, lambda m, n: m.create_table("u", {n: "INTEGER"})),
    ("drop_table", 3023, lambda m, n: m.drop_table(n)),
    ("get_table_schema", 3025, lambda m, n: m.get_table_schema(n)),
]


@pytest.mark.parametrize("bad,why", BAD_NAMES, ids=[b[1] + repr(b[0]) for b in BAD_NAMES])
@pytest.mark.parametrize("label,code,call", HELPER_CALLS, ids=[h[0] for h in HELPER_CALLS])
def test_bad_identifiers_are_refused(db, bad, why, label, code, call):
    db.execute_query("CREATE TABLE t (a INTEGER)")
    db.execute_query("INSERT INTO t VALUES (2)")
    with pytest.raises(ProgrammingError) as ei:
        call(db, bad)
    assert ei.value.error_code == code
    assert why in str(ei.value)
    assert db.execute_query("SELECT a FROM t") == [{"a": 2}]       # nothing changed
    assert not db.table_exists("u")


def test_update_and_delete_refuse_missing_conditions(db):
    db.create_table("t", {"a": "INTEGER"})
    db.insert("t", [{"a": 1}, {"a": 2}])
    for conditions in (None, {}):
        with pytest.raises(ProgrammingError, match="conditions are required") as ei:
            db.update("t", {"a": 9}, conditions)
        assert ei.value.error_code == 3013
        with pytest.raises(ProgrammingError, match="conditions are required") as ei:
            db.delete("t", conditions)
        assert ei.value.error_code == 3015
    with pytest.raises(ProgrammingError):
        db.delete("t", [("a", 1)])
    with pytest.raises(ProgrammingError):
        db.update("t", {}, {"a": 1})
    assert sorted(r["a"] for r in db.select("t")) == [1, 2]


def test_insert_argument_checks(db):
    db.create_table("t", {"a": "INTEGER", "b": "TEXT"})
    for data in ({}, [], "a=1", [{"a": 1}, {"b": "x"}], [{"a": 1}, 5]):
        with pytest.raises(ProgrammingError) as ei:
            db.insert("t", data)
        assert ei.value.error_code == 3011
    assert db.select("t") == []


def test_select_limit_and_columns(db):
    db.create_table("t", {"a": "INTEGER", "b": "TEXT"})
    db.insert("t", [{"a": i, "b": str(i)} for i in range(10)])
    assert len(db.select("t", limit=3)) == 3
    assert db.select("t", limit=0) == []
    assert sorted(db.select("t", ["b"], {"a": 4})[0].keys()) == ["b"]
    for bad in (-1, "3", True, 1.5):
        with pytest.raises(ProgrammingError) as ei:
            db.select("t", limit=bad)
        assert ei.value.error_code == 3017
    with pytest.raises(ProgrammingError):
        db.select("t", columns=[])
    with pytest.raises(ProgrammingError) as ei:
        db.select("t", columns=["nope"])                 # the server's error, with the operation's code
    assert ei.value.error_code == 3017 and ei.value.__cause__ is not None


@pytest.mark.parametrize("sql_type", [
    "INTEGER", "integer not null", "VARCHAR(255)", "NUMERIC(10, 2)", "DOUBLE PRECISION",
    "TIMESTAMP WITH TIME ZONE", "TEXT NOT NULL UNIQUE", "INTEGER PRIMARY KEY", "INTEGER DEFAULT -5",
    "INTEGER PRIMARY KEY AUTOINCREMENT", "REAL DEFAULT 1.5", "BOOLEAN DEFAULT FALSE",
    "TIMESTAMP DEFAULT CURRENT_TIMESTAMP", "INTEGER[]", "BLOB NULL",
])
def test_create_table_accepts_plain_types(db, sql_type):
    db.create_table("t", {"c": sql_type})
    assert list(db.get_table_schema("t")) == ["c"]


@pytest.mark.parametrize("sql_type", [
    "TEXT; DROP TABLE sentinel", "TEXT -- comment", "TEXT /* x */", "TEXT DEFAULT 'x'", 'TEXT DEFAULT "x"',
    "INTEGER CHECK (c > 0)", "INTEGER REFERENCES sentinel", "INTEGER DEFAULT pg_sleep(10)", "", "   ",
    "INTEGER, other TEXT", "NOT NULL", "TEXT)", "TEXT COLLATE nocase", "INTEGER AS (1)", 5, None,
])
def test_create_table_refuses_other_types(db, sql_type):
    db.create_table("sentinel", {"id": "INTEGER"})
    with pytest.raises(ProgrammingError) as ei:
        db.create_table("t", {"c": sql_type})
    assert ei.value.error_code == 3021
    assert not db.table_exists("t") and db.table_exists("sentinel")


def test_create_drop_exists_and_schema_errors(db):
    db.create_table("t", {"a": "INTEGER"})
    with pytest.raises(DatabaseError) as ei:
        db.create_table("t", {"a": "INTEGER"})
    assert ei.value.error_code == 3021
    db.create_table("t", {"a": "INTEGER"}, if_not_exists=True)
    with pytest.raises(ProgrammingError):
        db.create_table("u", {})
    db.drop_table("t")
    with pytest.raises(DatabaseError) as ei:
        db.drop_table("t")
    assert ei.value.error_code == 3023
    db.drop_table("t", if_exists=True)
    with pytest.raises(ProgrammingError) as ei:
        db.get_table_schema("t")
    assert ei.value.error_code == 3025 and "no table" in str(ei.value)
    db.execute_query("CREATE VIEW vw AS SELECT 1 AS one")
    assert db.table_exists("vw") and db.get_table_schema("vw") == {"one": ""}


def test_quote_identifier_and_plain_select_classifier():
    assert quote_identifier('we"ird') == '"we""ird"'
    assert quote_identifier("x; DROP TABLE y") == '"x; DROP TABLE y"'
    with pytest.raises(ProgrammingError):
        quote_identifier("a" * 64, max_bytes=63)
    plain = ["SELECT 1", "select count(*) from t where a = %s", "WITH x AS (SELECT a FROM t) SELECT * FROM x;",
             "SELECT 'a;b' AS s, \"weird;col\" FROM t", "SELECT lower(name) FROM t LEFT JOIN u ON (t.id = u.id)",
             "SELECT count(*) FROM t a CROSS JOIN t b", "SELECT x FROM t WHERE y IN (SELECT y FROM u)"]
    not_plain = ["INSERT INTO t VALUES (1)", "SELECT * FROM t FOR UPDATE", "SELECT * INTO new FROM t",
                 "SELECT nextval('s')", "SELECT 1; DELETE FROM t", "select my_func(1)", "SELECT pg_sleep(1)",
                 "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "SELECT 1 -- x", "SELECT $$a$$",
                 "SELECT public.count(x) FROM t", "UPDATE t SET a = 1", "SELECT 'unterminated", "",
                 "SELECT set_config('a', 'b', false)", "SELECT * FROM t FOR SHARE", "  select e'\\''", None]
    for q in plain:
        assert is_plain_select(q), q
    for q in not_plain:
        assert not is_plain_select(q), q


# ---------------------------------------------------------------------------
# failover off; health, stats, info, logging
# ---------------------------------------------------------------------------

def test_failover_operations_when_failover_is_off(db):
    with pytest.raises(FailoverNotEnabledError) as ei:
        db.trigger_failover()
    assert ei.value.error_code == 3037
    with pytest.raises(FailoverNotEnabledError) as ei:
        db.trigger_failover("maintenance")
    assert ei.value.error_code == 3037
    with pytest.raises(FailoverNotEnabledError) as ei:
        db.trigger_recovery()
    assert ei.value.error_code == 3038
    assert isinstance(ei.value, InterfaceError)
    assert db.get_failover_status() is None
    assert db.failover_manager is None
    assert db.pool is not None and db.pool.backend_kind == "sqlite"


def test_health_stats_and_info(db, tmp_path):
    assert db.health_check() is True
    db.create_table("t1", {"a": "INTEGER"})
    db.create_table("t2", {"a": "INTEGER"})
    stats = db.get_pool_stats()
    assert isinstance(stats, PoolStats) and stats.max_connections == 4 and stats.pool_health_score > 0
    ds = db.get_database_stats()
    assert ds["backend"] == "sqlite"
    assert re.match(r"\d+\.\d+", ds["server_version"])
    assert ds["table_count"] == 2
    assert ds["database_size"] == os.path.getsize(tmp_path / "t.db") or ds["database_size"] > 0
    assert ds["pool"]["max_connections"] == 4
    info = db.get_connection_info()
    assert info["backend"] == "sqlite" and info["connected"] is True and info["failover_enabled"] is False
    assert info["dsn"] == "sqlite:///%s" % (tmp_path / "t.db")
    assert info["max_connections"] == 4 and info["timeout"] == 5
    db.close()
    assert db.health_check() is False
    assert db.get_connection_info()["connected"] is False


def test_logging_has_structured_fields_and_no_handlers(db, caplog):
    logger = logging.getLogger("noodlecore.database.manager")
    assert logger.handlers == []
    caplog.set_level(logging.DEBUG, logger="noodlecore.database.manager")
    db.execute_query("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    db.insert("t", {"a": 1})
    with pytest.raises(IntegrityError):
        db.insert("t", {"a": 1})
    with db.transaction() as tx:
        tx.execute_query("INSERT INTO t VALUES (2)")
        tx.execute_query("INSERT INTO t VALUES (3)")
    recs = [r for r in caplog.records if r.name == "noodlecore.database.manager"]
    assert recs
    for r in recs:
        for f in ("correlation_id", "endpoint", "duration_ms", "error_code", "operation"):
            assert hasattr(r, f), (f, r.getMessage())
        assert re.fullmatch(r"[0-9a-f]{32}", r.correlation_id)
    failed = [r for r in recs if r.error_code == 3011]
    assert failed and failed[0].operation == "insert" and failed[0].duration_ms >= 0
    tx_recs = [r for r in recs if r.operation == "transaction"]
    assert len(tx_recs) >= 3 and len({r.correlation_id for r in tx_recs}) == 1
    assert tx_recs[0].correlation_id == tx.correlation_id
    others = [r.correlation_id for r in recs if r.operation != "transaction"]
    assert len(set(others)) == len(others) or len(set(others)) >= 3     # one id per request


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
