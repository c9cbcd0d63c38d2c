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
                # every row carries its values and its Bind, Describe and Execute messages (5, 7
                # and 10 bytes at least), so the 299 other rows are this much on the way:
                rest = sum(22 + sum(len(str(v)) for v in row) for row in rows[1:])
                wait_for(lambda: px.client_bytes - before >= rest, timeout=10,
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
        assert "parameter 'v'" in str(ei.value)          # the slot's name, made once per batch
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
            c.execute_many("SELECT %s, %s", [(1, 2), (3, b"x"), (4, object())])
        assert ei.value.row_index == 2 and ei.value.error_code == 2015
        assert "parameter 2: cannot send a value of type 'object'" in str(ei.value)
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


def parses_logged(pg, table, offset):
    """How many times the server parsed (extended protocol) a statement on table since offset of
    its log: with log_min_duration_statement = 0 it logs each Parse as "parse <unnamed>: ..."."""
    with open(pg.logfile, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return len(re.findall(r"parse <unnamed>: INSERT INTO %s\b" % table, text))


def log_size(pg):
    with open(pg.logfile, "rb") as f:
        return f.seek(0, 2)


def test_the_server_parses_the_statement_once_per_pipeline(pg, pool, table):
    """Each row binds and executes the statement parsed once at the head of its pipeline (the
    unnamed statement): 2500 rows in three pipelines are three parses, not 2500. The server logs
    every statement's parse while log_min_duration_statement is 0 (its lines are written before
    the results are sent, so they are all there when execute_many returns)."""
    sql = "INSERT INTO %s (k, v) VALUES (%%s, %%s)" % table
    with pool.get_connection() as c:
        c.execute_query("SET log_min_duration_statement = 0")
        start = log_size(pg)
        assert c.execute_many(sql, [(i, "v%d" % i) for i in range(2500)]) == 2500
        assert parses_logged(pg, table, start) == 3
        # inside the caller's transaction, the same
        c.begin()
        start = log_size(pg)
        assert c.execute_many(sql, [(i, None) for i in range(2500, 2600)]) == 100
        c.commit()
        assert parses_logged(pg, table, start) == 1
        # the unnamed statement: no named one stays in the session for the next borrower
        assert c.execute_query("SELECT count(*) FROM pg_prepared_statements") == [(0,)]
    assert count(pool, table) == 2600


def test_each_row_runs_with_its_own_parameter_types(pg, pool, table):
    """A row whose parameter types differ from the rows before it (int4 by value, int8 beyond, a
    float, a NULL) is parsed again with its own types, as it would be alone: the statement sees the
    type of each row's value, and no value is sent for a type chosen for another row."""
    sql = "INSERT INTO %s (k, v) VALUES (%%s, pg_typeof(%%s)::text)" % table
    rows = [(1, 7), (2, 2 ** 40), (3, 2 ** 41), (4, 8), (5, 1.5), (6, 9)]
    with pool.get_connection() as c:
        c.execute_query("SET log_min_duration_statement = 0")
        start = log_size(pg)
        assert c.execute_many(sql, rows) == 6
        assert parses_logged(pg, table, start) == 5        # rows 0, 1, 3, 4, 5: row 2 has row 1's types
        got = c.execute_query("SELECT k, v FROM %s ORDER BY k" % table)
        assert got == [(1, "integer"), (2, "bigint"), (3, "bigint"), (4, "integer"), (5, "double precision"),
                       (6, "integer")]
        # a NULL has no type of its own (unknown): alone, pg_typeof cannot take it, and after an
        # int4 row it is not given the int4 either
        with pytest.raises(ProgrammingError) as ei:
            c.execute_many(sql, [(7, 7), (8, None)])
        assert ei.value.row_index == 1 and "could not determine data type of parameter $2" in str(ei.value)
    assert count(pool, table) == 6


def test_a_failed_reparse_names_its_row(pool, table):
    """A parse sent for a row whose types changed fails as that row: here the text value meets
    int4 % int4 is fine, float8 % int4 is no operator."""
    with pool.get_connection() as c:
        with pytest.raises(ProgrammingError) as ei:
            c.execute_many("INSERT INTO %s (k, v) VALUES (%%s %%%% 7, 'x')" % table, [(1,), (2,), (3.5,), (4,)])
        assert ei.value.row_index == 2 and "row 2 of the batch" in str(ei.value)
        assert ei.value.sqlstate == "42883"
        assert not c.in_transaction
    assert count(pool, table) == 0


def test_copy_in_a_pipeline_is_refused_and_the_pool_goes_on(pool, table):
    """COPY cannot run inside a pipeline: execute_many, and a DB-API statement
    whose BEGIN travels with it, refuse it with NotSupportedError (the
    connection, out of step with the server, is discarded), nothing of the
    batch stays, and the next borrow works."""
    from noodlecore.database import NotSupportedError
    with pool.get_connection() as c:
        with pytest.raises(NotSupportedError, match="COPY is not supported through execute_many") as ei:
            c.execute_many("COPY %s (k, v) FROM STDIN" % table, [(), ()])
        assert ei.value.error_code and ei.value.statement_sent
    conn = pool.connect()
    try:
        with pytest.raises(NotSupportedError, match="COPY is not supported through execute_query"):
            conn.cursor().execute("COPY (SELECT 1) TO STDOUT", ())
    finally:
        conn.close()
    with pool.get_connection() as c:
        assert c.execute_query("SELECT count(*) FROM %s" % table) == [(0,)]
        assert c.execute_many("INSERT INTO %s (k, v) VALUES (%%s, %%s)" % table, [(1, "a"), (2, "b")]) == 2
