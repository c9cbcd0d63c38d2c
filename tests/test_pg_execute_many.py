"""execute_many on PostgreSQL: libpq's pipeline mode (csrc/core/nc_pg_pipeline.c).

The rows of a batch go to the server without waiting for each other's results (one round trip
per 1000 rows), inside one transaction: the batch's own (its BEGIN and COMMIT travel in the
pipeline) or the caller's. A failed row is named by its index (message and `row_index`), and
nothing of the batch stays. Real server, real proxy (noodlecore.testing).
"""

import re
import threading

import pytest

from helpers import wait_for
from noodlecore.database import (DatabaseConnectionPool, DatabaseError, IntegrityError, ProgrammingError,
                                 QueryTimeoutError)
from noodlecore.testing.proxy import TcpProxy


@pytest.fixture
def app(request):
    return ("ncem_" + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name))[:60]


@pytest.fixture
def pool(pg, app):
    p = DatabaseConnectionPool(pg.dsn(application_name=app), max_connections=2, timeout=5,
                               row_format="tuple")
    yield p
    p.shutdown(timeout=0)


@pytest.fixture
def table(pool, app):
    with pool.get_connection() as c:
        c.execute_query("CREATE TABLE %s (k int PRIMARY KEY, v text)" % app)
    yield app
    with pool.get_connection() as c:
        c.execute_query("DROP TABLE IF EXISTS %s" % app)


def count(pool, table):
    with pool.get_connection() as c:
        return c.execute_query("SELECT count(*) FROM %s" % table)[0][0]


def lock_waiters(pool, pid):
    with pool.get_connection() as c:
        return c.execute_query("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,),
                               row_format="tuple")[0][0]


def test_rows_go_without_waiting_for_each_other(pg, app, pool, table):
    """The proof of one round trip: while the first row waits for a lock, the server has already
    been sent every other row (a batch that waited for each result would have sent one)."""
    sql = ("INSERT INTO %s (k, v) SELECT %%s, %%s FROM (SELECT pg_advisory_xact_lock_shared(%%s)) AS l"
           % table)
    rows = [(0, "first", 7001)] + [(i, "row %d" % i, 7002) for i in range(1, 300)]
    with TcpProxy(pg.host, pg.port) as px, \
            DatabaseConnectionPool("postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s"
                                   % (px.port, app), max_connections=1, timeout=5) as through, \
            DatabaseConnectionPool(pg.dsn(application_name=app + "_o"), max_connections=2) as direct:
        with through.get_connection() as c, direct.get_connection() as holder:
            pid = c.backend_pid
            holder.execute_query("SELECT pg_advisory_lock(7001)")
            before = px.client_bytes
            out = {}
            t = threading.Thread(target=lambda: out.setdefault("n", c.execute_many(sql, rows, timeout=30)))
            t.start()
            try:
                wait_for(lambda: lock_waiters(direct, pid), timeout=10, what="the first row to wait")
                # every row carries the statement (Parse) at least: 299 more of them are on the way
                wait_for(lambda: px.client_bytes - before >= len(rows) * len(sql), timeout=10,
                         what="the whole batch to be sent while the first row waits")
                assert "n" not in out
            finally:
                holder.execute_query("SELECT pg_advisory_unlock(7001)")
                t.join(30)
            assert out["n"] == 300
    assert count(pool, table) == 300


def test_a_failed_row_is_named_and_nothing_stays(pool, table):
    rows = [(i, "v") for i in range(10)]
    rows[7] = (3, "duplicate")
    with pool.get_connection() as c:
        with pytest.raises(IntegrityError) as ei:
            c.execute_many("INSERT INTO %s (k, v) VALUES (%%s, %%s)" % table, rows)
        assert ei.value.row_index == 7
        assert ei.value.sqlstate == "23505"
        assert "row 7 of the batch" in str(ei.value)
        assert ei.value.error_code == 2005 or ei.value.error_code > 0
        assert not c.in_transaction                   # its own transaction, rolled back
        assert c.execute_query("SELECT 1") == [(1,)]
    assert count(pool, table) == 0


def test_inside_a_transaction_the_batch_is_the_callers(pool, table):
    with pool.get_connection() as c:
        c.begin()
        c.execute_query("INSERT INTO %s VALUES (100, 'before')" % table)
        assert c.execute_many("INSERT INTO %s VALUES (%%s, 'x')" % table, [(1,), (2,)]) == 2
        with pytest.raises(IntegrityError) as ei:
            c.execute_many("INSERT INTO %s VALUES (%%s, 'x')" % table, [(3,), (1,)])
        assert ei.value.row_index == 1
        assert c.in_transaction                       # aborted, for the caller to roll back
        c.rollback()
    assert count(pool, table) == 0
    with pool.get_connection() as c:                  # a BEGIN sent as a statement counts too
        c.execute_query("BEGIN")
        assert c.execute_many("INSERT INTO %s VALUES (%%s, 'x')" % table, [(5,), (6,)]) == 2
        c.execute_query("ROLLBACK")
    assert count(pool, table) == 0


def test_many_pipelines_one_transaction(pool, table):
    """2500 rows go in three pipelines; a failure in the last rolls back the first two."""
    sql = "INSERT INTO %s (k, v) VALUES (%%(k)s, %%(v)s)" % table
    with pool.get_connection() as c:
        rows = [{"k": i, "v": str(i)} for i in range(2500)]
        rows[2100]["k"] = 5
        with pytest.raises(IntegrityError) as ei:
            c.execute_many(sql, rows)
        assert ei.value.row_index == 2100
        assert count(pool, table) == 0
        # a value that cannot be sent, in the second pipeline: refused before that pipeline goes
        rows = [{"k": i, "v": str(i)} for i in range(2500)]
        rows[1500]["v"] = object()
        with pytest.raises(ProgrammingError) as ei:
            c.execute_many(sql, rows)
        assert ei.value.row_index == 1500 and ei.value.error_code == 2015
        assert not c.in_transaction
        assert count(pool, table) == 0
        # a generator, counted exactly; a pipeline's worth exactly, and one more
        assert c.execute_many(sql, ({"k": i, "v": "g"} for i in range(2500))) == 2500
        assert c.execute_many(sql, [{"k": i, "v": "g"} for i in range(2500, 3500)]) == 1000
        assert c.execute_many(sql, [{"k": i, "v": "g"} for i in range(3500, 4501)]) == 1001
        assert not c.in_transaction
    assert count(pool, table) == 4501


def test_row_counts_add_up(pool, table):
    with pool.get_connection() as c:
        c.execute_many("INSERT INTO %s VALUES (%%s, %%s)" % table, [(i, "a" if i % 2 else "b") for i in range(10)])
        assert c.execute_many("UPDATE %s SET v = 'c' WHERE v = %%s" % table, [("a",), ("b",), ("zz",)]) == 10
        assert c.execute_many("DELETE FROM %s WHERE k = %%s" % table, [(1,), (1,), (2,)]) == 2
        assert c.execute_many("SELECT 1", []) == 0
        assert c.execute_many("SELECT %s", [(1,), (2,)]) == 2     # rows returned count, as psycopg's rowcount


def test_deadline_cancels_the_batch(pool, table, pg, app):
    """The timeout covers the whole batch: the row still running is cancelled on the server, the
    rest skipped, the batch rolled back, and the connection stays usable."""
    sql = ("INSERT INTO %s (k, v) SELECT %%s, 'x' FROM (SELECT pg_advisory_xact_lock_shared(%%s)) AS l"
           % table)
    with DatabaseConnectionPool(pg.dsn(application_name=app + "_h"), max_connections=1) as other, \
            other.get_connection() as holder, pool.get_connection() as c:
        pid = c.backend_pid
        holder.execute_query("SELECT pg_advisory_lock(7101)")
        try:
            with pytest.raises(QueryTimeoutError) as ei:
                c.execute_many(sql, [(1, 0), (2, 7101), (3, 0)], timeout=0.5)
            assert ei.value.row_index == 1 and ei.value.error_code == 2012
        finally:
            holder.execute_query("SELECT pg_advisory_unlock(7101)")
        assert c.backend_pid == pid and not c.in_transaction
        assert c.execute_query("SELECT 1") == [(1,)]
    assert count(pool, table) == 0


def test_errors_keep_what_the_pool_errors_carry(pool):
    with pool.get_connection() as c:
        with pytest.raises(DatabaseError) as ei:
            c.execute_many("SELECT 1 / %s", [(1,), (0,)])
        assert ei.value.sqlstate == "22012" and ei.value.row_index == 1
        with pytest.raises(ProgrammingError) as ei:
            c.execute_many("SELECT %s, %s", [(1, 2), (1,)])
        assert ei.value.row_index == 1 and ei.value.error_code == 2014
        assert not c.in_transaction


def test_sqlite_names_the_failed_row_too(tmp_path):
    with DatabaseConnectionPool("sqlite:///%s" % (tmp_path / "em.db"), max_connections=1) as p, \
            p.get_connection() as c:
        c.execute_query("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        with pytest.raises(IntegrityError) as ei:
            c.execute_many("INSERT INTO t VALUES (%s)", [(1,), (2,), (1,)])
        assert ei.value.row_index == 2
        assert c.execute_query("SELECT count(*) FROM t", row_format="tuple") == [(0,)]


def test_row_index_is_none_when_no_row_is_to_blame(pool):
    with pool.get_connection() as c:
        with pytest.raises(DatabaseError) as ei:
            c.execute_query("SELECT 1 / 0")
        assert ei.value.row_index is None
        with pytest.raises(DatabaseError) as ei:
            c.execute_many("SELECT 1 /", [(), ()])     # the statement itself: the first row fails
        assert ei.value.row_index == 0
