"""DatabaseManager against real PostgreSQL 15 servers (noodlecore.testing).

Without failover, on the shared ``pg`` primary (a database of this module's
own): DatabaseConfig fields turned into a URL libpq accepts, every table
helper with hostile identifiers and values, PostgreSQL types, the aborted
transaction rule, stats and info.

With failover, on a primary and a streaming standby made per test by
``pg_factory``: connect and query, a plain read in flight when the primary
crashes and the standby is promoted (the caller sees no error), a write in
flight at the crash (OutcomeUnknownError 3039, nothing replayed), a
transaction across the crash (TransactionError 3009, nothing half-applied on
the new primary), a batch rerun exactly once, and trigger_failover /
trigger_recovery / get_failover_status.  Which server answered is told by
``inet_server_port()``.
"""

import threading
import time
import uuid

import pytest

from noodlecore.database import DatabaseError, DataError, IntegrityError, OperationalError, ProgrammingError
from noodlecore.database.database_manager import (
    DatabaseConfig, DatabaseManager, OutcomeUnknownError, TransactionError,
)
from noodlecore.database.failover_manager import DatabaseEndpoint, FailoverConfig


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def fo_config(**kw):
    d = dict(health_check_interval=0.1, health_check_timeout=1, failover_timeout=5, hold_down=0.5,
             recovery_check_interval=1, max_failure_count=2, pool_max_connections=4, pool_timeout=3,
             auto_recovery=False, pool_options={"connect_timeout": 1, "retry_attempts": 1})
    d.update(kw)
    return FailoverConfig(**d)


def endpoints(p, s):
    return [DatabaseEndpoint("a", "A", p.dsn(), 1, is_primary=True), DatabaseEndpoint("b", "B", s.dsn(), 2)]


def pair(pg_factory, table_sql="CREATE TABLE t (n int)"):
    p = pg_factory.primary("p")
    if table_sql:
        p.sql(table_sql)
    s = pg_factory.standby(p, name="s")
    s.wait_replayed(p)
    return p, s


def failover_manager(p, s, **kw):
    return DatabaseManager(enable_failover=True, failover_endpoints=endpoints(p, s),
                           failover_config=fo_config(**kw), failover_retry_wait=10)


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.01)


def wait_active(node, like):
    """Until a statement LIKE ``like`` runs on node."""
    q = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%s' "
         "AND pid <> pg_backend_pid()" % like.replace("'", "''"))
    wait_for(lambda: node.scalar(q) != "0", what="statement %r to run" % like)


def in_thread(fn):
    out = {}

    def run():
        t0 = time.monotonic()
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: B902 - handed to the test
            out["error"] = e
        out["seconds"] = time.monotonic() - t0
    th = threading.Thread(target=run)
    th.start()
    return th, out


# ---------------------------------------------------------------------------
# without failover, on the shared primary
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dbname(pg):
    name = "dm_%s" % uuid.uuid4().hex[:10]
    pg.sql("CREATE DATABASE %s" % name)
    try:
        yield name
    finally:
        pg.sql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)


@pytest.fixture
def db(pg, dbname):
    with DatabaseManager(config="postgresql://postgres@127.0.0.1:%d/%s" % (pg.port, dbname),
                         max_connections=4, timeout=5) as m:
        yield m
        for row in m.execute_query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
            m.drop_table(row["tablename"])
        m.execute_query("DROP VIEW IF EXISTS vw")


def test_config_fields_make_a_url_libpq_accepts(pg, dbname):
    # trust authentication: the password is sent nowhere, but it must survive the URL
    cfg = DatabaseConfig(host="127.0.0.1", port=pg.port, database=dbname, username="postgres",
                         password="p@ss:w/rd %?#&=", ssl_mode="false")
    assert cfg.connection_string.startswith("postgresql://postgres:p%40ss%3Aw%2Frd%20%25%3F%23%26%3D@")
    with DatabaseManager(config=cfg) as m:
        assert m.execute_query("SELECT current_database() AS d, current_user AS u") == [
            {"d": dbname, "u": "postgres"}]
        info = m.get_connection_info()
        assert info["backend"] == "postgresql"
        assert "p@ss" not in str(info) and "p%40ss" not in str(info) and "***" in info["dsn"]


HOSTILE_NAMES = ['weird"name', "x; DROP TABLE sentinel", "Robert'); DROP TABLE sentinel;--", "ünïcødé 表 🙂",
                 "a%sb%%c", "  spaced  ", "select", '"', "a.b", "Mixed Case", "é" * 31]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_every_helper_with_a_hostile_identifier(db, name):
    db.create_table("sentinel", {"id": "INTEGER"})
    db.create_table(name, {"id": "INTEGER PRIMARY KEY", name: "VARCHAR(40)"})
    assert db.table_exists(name) is True
    assert db.get_table_schema(name) == {"id": "integer", name: "character varying(40)"}
    assert db.insert(name, {"id": 1, name: "one"}) == 1
    assert db.insert(name, [{"id": 2, name: "two"}, {"id": 3, name: None}]) == 2
    assert sorted(db.select(name), key=lambda r: r["id"]) == [
        {"id": 1, name: "one"}, {"id": 2, name: "two"}, {"id": 3, name: None}]
    assert db.select(name, columns=[name], conditions={"id": 2}) == [{name: "two"}]
    assert db.select(name, columns=name, conditions={name: None}) == [{name: None}]
    assert db.select(name, limit=1) and len(db.select(name, limit=2)) == 2
    assert db.update(name, {name: "TWO"}, {"id": 2}) == 1
    assert db.update(name, {name: "three"}, {name: None}) == 1
    assert db.delete(name, {name: "one"}) == 1
    assert sorted(r["id"] for r in db.select(name)) == [2, 3]
    db.drop_table(name)
    assert db.table_exists(name) is False
    assert db.table_exists("sentinel") is True


def test_identifier_length_and_bad_names(db):
    ok = "é" * 31 + "x"                      # 63 bytes
    db.create_table(ok, {"c": "INTEGER"})
    assert db.table_exists(ok)
    too_long = "é" * 32                      # 64 bytes: PostgreSQL would truncate it
    for call, code in ((lambda: db.create_table(too_long, {"c": "INTEGER"}), 3021),
                       (lambda: db.insert(ok, {too_long: 1}), 3011),
                       (lambda: db.select(too_long), 3017)):
        with pytest.raises(ProgrammingError) as ei:
            call()
        assert ei.value.error_code == code and "63 bytes" in str(ei.value)
    for bad in ("", "a\0b", None):
        with pytest.raises(ProgrammingError) as ei:
            db.delete(bad, {"c": 1})
        assert ei.value.error_code == 3015
    with pytest.raises(ProgrammingError) as ei:
        db.delete(ok, {})
    assert ei.value.error_code == 3015
    with pytest.raises(ProgrammingError) as ei:
        db.update(ok, {"c": 1}, None)
    assert ei.value.error_code == 3013
    # a misspelt column is an error, never a literal that matches every row
    db.insert(ok, {"c": 5})
    with pytest.raises(ProgrammingError) as ei:
        db.delete(ok, {"nope": "nope"})
    assert ei.value.error_code == 3015 and ei.value.sqlstate == "42703"
    assert db.select(ok) == [{"c": 5}]


HOSTILE_VALUES = ["'; DROP TABLE sentinel; --", "%s", "%(x)s", "%%", '"quoted"', "back\\slash", "ünïcødé 表 🙂",
                  "line\nbreak\ttab", "", " ", "$$dollar$$", "E'\\''"]


def test_hostile_values_are_stored_verbatim(db):
    db.create_table("sentinel", {"id": "INTEGER"})
    db.create_table("v", {"id": "INTEGER PRIMARY KEY", "s": "TEXT", "b": "BYTEA"})
    for i, val in enumerate(HOSTILE_VALUES):
        assert db.insert("v", {"id": i, "s": val, "b": val.encode()}) == 1
    rows = db.select("v")
    assert {r["id"]: r["s"] for r in rows} == dict(enumerate(HOSTILE_VALUES))
    assert {r["id"]: bytes(r["b"]) for r in rows} == {i: v.encode() for i, v in enumerate(HOSTILE_VALUES)}
    for i, val in enumerate(HOSTILE_VALUES):
        assert db.select("v", ["id"], {"s": val}) == [{"id": i}]
    assert db.update("v", {"s": "%s"}, {"s": "'; DROP TABLE sentinel; --"}) == 1
    assert db.delete("v", {"s": "%(x)s"}) == 1
    # PostgreSQL text cannot hold NUL: refused by the server, nothing stored
    with pytest.raises(DatabaseError) as ei:
        db.insert("v", {"id": 99, "s": "a\0b"})
    assert ei.value.error_code == 3011
    assert db.execute_query("SELECT count(*) AS n FROM v") == [{"n": len(HOSTILE_VALUES) - 1}]
    assert db.table_exists("sentinel")


def test_postgresql_types_schema_and_errors(db):
    db.create_table("typed", {"id": "SERIAL PRIMARY KEY", "amount": "NUMERIC(10, 2) NOT NULL DEFAULT 0",
                              "at": "TIMESTAMP(3) WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP",
                              "tags": "TEXT[]", "ratio": "DOUBLE PRECISION", "flag": "BOOLEAN DEFAULT FALSE"})
    assert db.get_table_schema("typed") == {
        "id": "integer", "amount": "numeric(10,2)", "at": "timestamp(3) with time zone", "tags": "text[]",
        "ratio": "double precision", "flag": "boolean"}
    assert db.insert("typed", {"ratio": 0.5}) == 1
    [row] = db.select("typed", ["amount", "flag", "ratio"])
    assert (str(row["amount"]), row["flag"], row["ratio"]) == ("0.00", False, 0.5)
    with pytest.raises(ProgrammingError):
        db.create_table("bad", {"c": "INTEGER DEFAULT pg_sleep(5)"})
    with pytest.raises(DatabaseError) as ei:
        db.create_table("typed", {"c": "INTEGER"})
    assert ei.value.error_code == 3021 and ei.value.sqlstate == "42P07"
    db.create_table("typed", {"c": "INTEGER"}, if_not_exists=True)
    with pytest.raises(ProgrammingError) as ei:
        db.get_table_schema("missing")
    assert ei.value.error_code == 3025
    with pytest.raises(DatabaseError) as ei:
        db.drop_table("missing")
    assert ei.value.error_code == 3023
    db.drop_table("missing", if_exists=True)
    with pytest.raises(IntegrityError) as ei:
        db.execute_query("INSERT INTO typed (id, ratio) VALUES (1, 1)")
    assert ei.value.error_code == 3005 and ei.value.sqlstate == "23505"
    with pytest.raises(DataError):
        db.insert("typed", {"amount": "not a number"})
    db.execute_query("CREATE VIEW vw AS SELECT 1 AS one")
    assert db.table_exists("vw") and db.get_table_schema("vw") == {"one": "integer"}
    db.execute_query("CREATE SEQUENCE seq_not_a_table")
    assert db.table_exists("seq_not_a_table") is False
    db.execute_query("DROP SEQUENCE seq_not_a_table")


def test_batches_and_transactions(db):
    db.create_table("t", {"id": "INTEGER PRIMARY KEY"})
    assert db.execute_batch([("INSERT INTO t VALUES (%s)", (1,)), ("INSERT INTO t VALUES (%s)", (2,)),
                             "SELECT count(*) AS n FROM t"]) == [1, 1, [{"n": 2}]]
    with pytest.raises(IntegrityError) as ei:
        db.execute_batch([("INSERT INTO t VALUES (%s)", (3,)), ("INSERT INTO t VALUES (%s)", (1,))])
    assert ei.value.error_code == 3007 and ei.value.batch_index == 1
    with db.transaction() as tx:
        tx.execute_query("INSERT INTO t VALUES (%s)", (10,))
    with pytest.raises(ZeroDivisionError):
        with db.transaction() as tx:
            tx.execute_query("INSERT INTO t VALUES (%s)", (11,))
            1 / 0
    # a failed statement aborts a PostgreSQL transaction: no silent rollback at the end
    with pytest.raises(TransactionError) as ei:
        with db.transaction() as tx:
            tx.execute_query("INSERT INTO t VALUES (%s)", (12,))
            with pytest.raises(IntegrityError):
                tx.execute_query("INSERT INTO t VALUES (%s)", (1,))
    assert ei.value.error_code == 3009 and isinstance(ei.value.__cause__, IntegrityError)
    # ... unless a savepoint recovered it
    with db.transaction() as tx:
        tx.execute_query("INSERT INTO t VALUES (%s)", (13,))
        tx.execute_query("SAVEPOINT sp")
        with pytest.raises(IntegrityError):
            tx.execute_query("INSERT INTO t VALUES (%s)", (1,))
        tx.execute_query("ROLLBACK TO SAVEPOINT sp")
    assert sorted(r["id"] for r in db.select("t")) == [1, 2, 10, 13]
    assert db.get_pool_stats().active_connections == 0


def test_stats_and_info(db, pg, dbname):
    db.create_table("t1", {"a": "INTEGER"})
    ds = db.get_database_stats()
    assert ds["backend"] == "postgresql" and ds["server_version"].startswith("15")
    assert ds["database_size"] > 1_000_000 and ds["table_count"] == 1
    assert ds["pool"]["max_connections"] == 4
    info = db.get_connection_info()
    assert (info["backend"], info["failover_enabled"], info["connected"]) == ("postgresql", False, True)
    assert info["dsn"] == "postgresql://postgres@127.0.0.1:%d/%s" % (pg.port, dbname)
    assert db.health_check() is True
    assert db.get_failover_status() is None


# ---------------------------------------------------------------------------
# with failover: a primary and a streaming standby per test
# ---------------------------------------------------------------------------

def test_failover_connect_query_and_transparent_read(pg_factory):
    p, s = pair(pg_factory, "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 300)")
    with failover_manager(p, s) as m:
        assert m.is_connected
        st = m.get_failover_status()
        assert (st["current_endpoint"], st["current_state"], st["monitoring"]) == ("a", "primary", True)
        assert m.execute_query("SELECT inet_server_port() AS port") == [{"port": p.port}]
        assert m.health_check() is True
        slow_read = "SELECT count(*) AS n, inet_server_port() AS port FROM t a CROSS JOIN t b CROSS JOIN t c"
        th, out = in_thread(lambda: m.execute_query(slow_read))
        wait_active(p, "SELECT count(*) AS n, inet_server_port()%")
        p.crash()
        s.promote()
        th.join(30)
        assert "error" not in out, out.get("error")           # the caller saw no fault
        assert out["result"] == [{"n": 300 ** 3, "port": s.port}]
        assert m.execute_query("SELECT inet_server_port() AS port") == [{"port": s.port}]
        st = m.get_failover_status()
        assert (st["current_endpoint"], st["current_state"]) == ("b", "secondary")
        assert m.get_connection_info()["current_endpoint"] == "b"
        # the helpers' reads and writes go to the new primary
        assert m.insert("t", {"n": 301}) == 1
        assert m.select("t", conditions={"n": 301}) == [{"n": 301}]


def test_interrupted_write_outcome_unknown_never_replayed(pg_factory):
    p, s = pair(pg_factory)
    with failover_manager(p, s) as m:
        assert m.execute_query("SELECT 1 AS one") == [{"one": 1}]
        th, out = in_thread(lambda: m.execute_query("INSERT INTO t (n) SELECT 1 FROM pg_sleep(2)"))
        wait_active(p, "INSERT INTO t (n) SELECT 1 FROM pg_sleep%")
        p.crash()
        s.promote()
        th.join(30)
        e = out.get("error")
        assert isinstance(e, OutcomeUnknownError), out
        assert e.error_code == 3039 and isinstance(e, OperationalError)
        assert "unknown" in str(e) and "'a'" in str(e) and e.endpoint == "a"
        assert isinstance(e.__cause__, OperationalError) and e.__cause__.error_code == 2004
        assert out["seconds"] < 2                       # raised at the crash, not after a replay
        wait_for(lambda: m.get_failover_status()["current_endpoint"] == "b", what="failover to b")
        time.sleep(0.3)
        assert s.scalar("SELECT count(*) FROM t") == "0"        # not replayed on the new primary
        # the manager keeps working on the new primary
        assert m.execute_query("INSERT INTO t (n) VALUES (%s) RETURNING inet_server_port() AS port",
                               (2,)) == [{"port": s.port}]


def test_transaction_rolled_back_on_failover(pg_factory):
    p, s = pair(pg_factory)
    with failover_manager(p, s) as m:
        with pytest.raises(TransactionError) as ei:
            with m.transaction() as tx:
                assert tx.endpoint == "a"
                for n in (1, 2, 3):
                    tx.execute_query("INSERT INTO t (n) VALUES (%s)", (n,))
                p.crash()
                s.promote()
                tx.execute_query("INSERT INTO t (n) VALUES (%s)", (4,))
        e = ei.value
        assert e.error_code == 3009 and isinstance(e, OperationalError)
        assert "rolled back" in str(e) and e.endpoint == "a"
        wait_for(lambda: m.get_failover_status()["current_endpoint"] == "b", what="failover to b")
        assert s.scalar("SELECT count(*) FROM t") == "0"        # nothing half-applied
        with m.transaction() as tx:
            assert tx.endpoint == "b"
            tx.execute_query("INSERT INTO t (n) VALUES (%s)", (5,))
        assert s.sql("SELECT n FROM t") == [["5"]]


def test_batch_lost_before_commit_runs_once_on_the_new_primary(pg_factory):
    p, s = pair(pg_factory)
    with failover_manager(p, s) as m:
        m.execute_query("SELECT 1")
        th, out = in_thread(lambda: m.execute_batch([
            ("INSERT INTO t (n) VALUES (%s)", (7,)),
            ("SELECT pg_sleep(1), inet_server_port() AS port", None),
        ]))
        wait_active(p, "SELECT pg_sleep(1)%")
        p.crash()
        s.promote()
        th.join(30)
        assert "error" not in out, out.get("error")
        assert out["result"][0] == 1 and out["result"][1][0]["port"] == s.port
        assert s.sql("SELECT n FROM t") == [["7"]]              # exactly once


def test_trigger_failover_recovery_and_status_with_failover_on(pg_factory):
    p, s = pair(pg_factory)
    # the standby is read-only: allow switching to it for this test
    with failover_manager(p, s, require_writable=False) as m:
        wait_for(lambda: all(e["last_health_check"] for e in m.get_failover_status()["endpoints"].values()),
                 what="both endpoints probed")
        st = m.get_failover_status()
        assert set(st) >= {"current_state", "current_endpoint", "endpoints", "statistics", "recent_failovers"}
        assert st["endpoints"]["a"]["role"] == "primary" and st["endpoints"]["b"]["role"] == "standby"
        assert m.get_connection_info()["endpoints"] == {"a": p.dsn(), "b": s.dsn()}
        assert m.trigger_failover("planned maintenance of a") is True
        st = m.get_failover_status()
        assert (st["current_endpoint"], st["current_state"]) == ("b", "secondary")
        assert "planned maintenance of a" in st["recent_failovers"][-1]["reason"]
        assert st["statistics"]["successful_failovers"] == 1
        assert m.execute_query("SELECT inet_server_port() AS port") == [{"port": s.port}]
        assert m.get_database_stats()["endpoint"] == "b"
        assert m.get_pool_stats().acquires >= 1
        assert m.trigger_recovery() is True
        st = m.get_failover_status()
        assert (st["current_endpoint"], st["current_state"]) == ("a", "primary")
        assert st["statistics"]["successful_recoveries"] == 1
        assert m.execute_query("SELECT inet_server_port() AS port") == [{"port": p.port}]
    assert m.get_failover_status is not None and not m.is_connected
