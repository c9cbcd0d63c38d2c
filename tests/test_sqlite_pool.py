"""The native SQLite backend through the pool: types, parameters, results,
transactions, several threads on one file, writers waiting on a lock up to
their deadline."""

import datetime
import decimal
import threading
import time
import uuid

import pytest

from noodlecore.database import (
    DatabaseConnectionPool, IntegrityError, InterfaceError, ProgrammingError, QueryTimeoutError,
)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/test.db"
    with DatabaseConnectionPool(url, max_connections=4, timeout=5) as pool:
        with pool.get_connection() as c:
            c.execute_query("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE, "
                            "price REAL, data BLOB)")
        yield pool


def test_absolute_and_relative_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with DatabaseConnectionPool("sqlite:///rel.db") as pool:
        with pool.get_connection() as c:
            c.execute_query("CREATE TABLE x (a)")
    assert (tmp_path / "rel.db").exists()
    with DatabaseConnectionPool(f"sqlite:///{tmp_path}/abs.db") as pool:
        with pool.get_connection() as c:
            c.execute_query("CREATE TABLE x (a)")
    assert (tmp_path / "abs.db").exists()


def test_memory_database_is_shared_by_the_pool():
    with DatabaseConnectionPool("sqlite:///:memory:", max_connections=2) as pool:
        a = pool.acquire()
        b = pool.acquire()
        a.execute_query("CREATE TABLE t (v)")
        a.execute_query("INSERT INTO t VALUES (%s)", (1,))
        assert b.execute_query("SELECT v FROM t") == [{"v": 1}]
        a.release()
        b.release()


def test_insert_select_types(db):
    with db.get_connection() as c:
        n = c.execute_query("INSERT INTO items (name, price, data) VALUES (%s, %s, %s)",
                            ("apple", 1.25, b"\x00\xff"))
        assert n == 1
        rows = c.execute_query("SELECT id, name, price, data FROM items")
        assert rows == [{"id": 1, "name": "apple", "price": 1.25, "data": b"\x00\xff"}]
        assert c.execute_query("SELECT name FROM items", row_format="tuple") == [("apple",)]
        # values of Python types SQLite has no storage class for
        r = c.execute_query("SELECT %s AS d, %s AS u, %s AS n, %s AS b, %s AS z",
                            (decimal.Decimal("1.10"), uuid.UUID(int=1), None, True,
                             datetime.date(2024, 2, 29)))
        assert r == [{"d": "1.10", "u": "00000000-0000-0000-0000-000000000001", "n": None, "b": 1,
                      "z": "2024-02-29"}]


def test_named_params_repeat_and_percent_literals(db):
    with db.get_connection() as c:
        c.execute_query("INSERT INTO items (name, price) VALUES (%(n)s, %(p)s)", {"n": "50%", "p": 2})
        rows = c.execute_query(
            "SELECT name, '100%' AS lit FROM items WHERE name = %(n)s OR name = %(n)s || 'x' "
            "-- a comment with %s\n", {"n": "50%"})
        assert rows == [{"name": "50%", "lit": "100%"}]
        # %% outside literals is a literal %
        assert c.execute_query("SELECT 7 %% 4 AS m", ()) == [{"m": 3}]


def test_parameter_errors_send_nothing(db):
    with db.get_connection() as c:
        cases = [
            ("INSERT INTO items (name) VALUES (%s)", ("a", "b"), 2014),
            ("INSERT INTO items (name) VALUES (%s)", (), 2014),
            ("INSERT INTO items (name) VALUES (%(n)s)", {"m": 1}, 2014),
            ("INSERT INTO items (name) VALUES (%(n)s)", ("a",), 2014),
            ("INSERT INTO items (name) VALUES (%s)", {"n": "a"}, 2014),
            ("INSERT INTO items (name) VALUES (%s, %(n)s)", ("a",), 2014),
            ("INSERT INTO items (name) VALUES (%d)", (1,), 2014),
            ("INSERT INTO items (name) VALUES (%s)", ({1, 2},), 2015),
            ("INSERT INTO items (name) VALUES (%s)", (object(),), 2015),
            ("INSERT INTO items (name) VALUES (%s)", "a", 2014),
        ]
        for sql, params, code in cases:
            with pytest.raises(ProgrammingError) as ei:
                c.execute_query(sql, params)
            assert ei.value.error_code == code, (sql, params)
        assert c.execute_query("SELECT count(*) AS n FROM items") == [{"n": 0}]
        assert "missing" in str(_raises(c, "SELECT %(zz)s", {}))
        assert "2 placeholders" in str(_raises(c, "SELECT %s, %s", (1,)))


def _raises(c, sql, params):
    with pytest.raises(ProgrammingError) as ei:
        c.execute_query(sql, params)
    return ei.value


def test_integrity_error_and_pool_still_usable(db):
    with db.get_connection() as c:
        c.execute_query("INSERT INTO items (name) VALUES (%s)", ("dup",))
        with pytest.raises(IntegrityError) as ei:
            c.execute_query("INSERT INTO items (name) VALUES (%s)", ("dup",))
        assert ei.value.error_code == 2005
        assert c.execute_query("SELECT count(*) AS n FROM items") == [{"n": 1}]
    assert db.get_stats().error_count == 1


def test_transactions(db):
    with db.get_connection() as c:
        with c.transaction():
            c.execute_query("INSERT INTO items (name) VALUES (%s)", ("t1",))
        with pytest.raises(ZeroDivisionError):
            with c.transaction():
                c.execute_query("INSERT INTO items (name) VALUES (%s)", ("t2",))
                1 / 0
        assert [r["name"] for r in c.execute_query("SELECT name FROM items")] == ["t1"]
        c.begin()
        with pytest.raises(ProgrammingError) as ei:
            c.begin()
        assert ei.value.error_code == 2017
        c.execute_query("INSERT INTO items (name) VALUES ('t3')")
        c.rollback()
        assert c.execute_query("SELECT count(*) AS n FROM items") == [{"n": 1}]
        # execute_many is all or nothing
        with pytest.raises(IntegrityError):
            c.execute_many("INSERT INTO items (name) VALUES (%s)", [("a",), ("b",), ("a",)])
        assert c.execute_query("SELECT count(*) AS n FROM items") == [{"n": 1}]
        assert c.execute_many("INSERT INTO items (name) VALUES (%s)", [("a",), ("b",)]) == 2
        # an open transaction is rolled back when the connection goes back
        c.begin()
        c.execute_query("INSERT INTO items (name) VALUES ('lost')")
    with db.get_connection() as c:
        assert c.execute_query("SELECT count(*) AS n FROM items WHERE name = 'lost'") == [{"n": 0}]
        assert not c.in_transaction


def test_connection_dead_after_return(db):
    with db.get_connection() as c:
        pass
    with pytest.raises(InterfaceError) as ei:
        c.execute_query("SELECT 1")
    assert ei.value.error_code == 2016
    assert not c.valid
    # even though the same slot is now lent to someone else
    with db.get_connection() as c2:
        assert c2.valid
        with pytest.raises(InterfaceError):
            c.execute_query("SELECT 1")


def test_several_threads_one_file(db):
    errors = []

    def worker(k):
        try:
            for i in range(50):
                with db.get_connection() as c:
                    c.execute_query("INSERT INTO items (name, price) VALUES (%s, %s)", (f"w{k}-{i}", i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.get_connection() as c:
        assert c.execute_query("SELECT count(*) AS n FROM items") == [{"n": 400}]
    s = db.get_stats()
    assert s.total_connections <= 4
    assert s.query_count >= 401


def test_writer_waits_on_lock_up_to_deadline(db):
    holder = db.acquire()
    holder.execute_query("BEGIN IMMEDIATE")
    holder.execute_query("INSERT INTO items (name) VALUES ('held')")
    with db.get_connection() as c:
        t0 = time.monotonic()
        with pytest.raises(QueryTimeoutError) as ei:
            c.execute_query("INSERT INTO items (name) VALUES ('blocked')", timeout=0.5)
        waited = time.monotonic() - t0
        assert 0.45 <= waited < 1.5
        assert ei.value.error_code == 2012
    # a writer that waits longer succeeds once the lock goes away
    result = {}

    def late_writer():
        with db.get_connection() as c2:
            result["n"] = c2.execute_query("INSERT INTO items (name) VALUES ('later')", timeout=5)

    t = threading.Thread(target=late_writer)
    t.start()
    time.sleep(0.3)
    holder.commit()
    holder.release()
    t.join(5)
    assert result == {"n": 1}


def test_long_statement_is_interrupted_at_deadline(db):
    with db.get_connection() as c:
        t0 = time.monotonic()
        with pytest.raises(QueryTimeoutError):
            c.execute_query("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                            "SELECT count(*) FROM r", timeout=0.3)
        assert time.monotonic() - t0 < 1.5
        assert c.execute_query("SELECT 1 AS ok") == [{"ok": 1}]


def test_script_without_params(db):
    with db.get_connection() as c:
        c.execute_query("CREATE TABLE s (a); INSERT INTO s VALUES (1); INSERT INTO s VALUES (2);")
        assert c.execute_query("SELECT sum(a) AS s FROM s") == [{"s": 3}]
        with pytest.raises(ProgrammingError):
            c.execute_query("INSERT INTO s VALUES (%s); INSERT INTO s VALUES (%s)", (1, 2))


def test_misspelled_quoted_column_is_an_error_not_a_string(db):
    with db.get_connection() as c:
        c.execute_query("INSERT INTO items (name) VALUES ('keep')")
        with pytest.raises(ProgrammingError):
            c.execute_query('SELECT "nope" FROM items')
        with pytest.raises(ProgrammingError):
            c.execute_query('DELETE FROM items WHERE "nope" = \'nope\'')
        assert c.execute_query("SELECT count(*) AS n FROM items") == [{"n": 1}]
