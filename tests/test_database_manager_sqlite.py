"""DatabaseManager on the SQLite backend without failover: queries, batches and
transactions, every table helper with hostile identifiers and values, the
failover operations when failover is off, health, stats, info and structured
logging.

``clean_env`` (conftest.py) clears the NOODLE_DB_* variables; the same scenarios
on real PostgreSQL replication: test_database_manager_pg.py.
"""

import logging
import os
import re
import time

import pytest

from noodlecore.database import (
    DatabaseError, IntegrityError, InterfaceError, PoolStats, ProgrammingError, QueryTimeoutError,
)
from noodlecore.database.database_manager import (
    DatabaseManager, FailoverNotEnabledError, Transaction, is_plain_select, quote_identifier,
)


@pytest.fixture
def db(clean_env, tmp_path):
    with DatabaseManager(config="sqlite:///%s" % (tmp_path / "t.db"), max_connections=4, timeout=5) as m:
        yield m


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
