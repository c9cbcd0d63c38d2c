"""Statements on a PostgreSQL pool's connections against a real PostgreSQL 15
server (noodlecore.testing): placeholders and bad parameters refused before
anything is sent, autocommit, transactions (begin/commit/rollback, the
transaction context, rollback on return, execute_many, an aborted
transaction), and server errors mapped to their PEP 249 classes.

Pools carry the test's own application_name (``app``, ``make_pool``: conftest.py),
so that pg_stat_activity tells their sessions apart.  Other pool topics are in
the other test_pg_pool_*.py modules.
"""

import threading
import time

import pytest

from helpers import check_stats_consistent, sessions, terminate
from noodlecore.database import (
    DatabaseError, DataError, IntegrityError, InternalError, OperationalError, ProgrammingError,
)


def count_rows(node, table, where="true"):
    return int(node.scalar("select count(*) from %s where %s" % (table, where)))


# ---------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------

def test_placeholders(make_pool):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        assert c.execute_query("SELECT %s::int AS a, %s::text AS b", (1, "x")) == [{"a": 1, "b": "x"}]
        assert c.execute_query("SELECT %s AS a", [7]) == [{"a": 7}]
        assert c.execute_query("SELECT %(a)s::int AS x, %(a)s::int + %(b)s AS y, %(b)s AS z",
                               {"a": 2, "b": 40, "unused": object()}) == [{"x": 2, "y": 42, "z": 40}]
        assert c.execute_query("SELECT 7 %% 3 AS m, %s AS p", (5,)) == [{"m": 1, "p": 5}]
        # '%' inside literals, dollar quotes, comments and quoted identifiers is left alone
        rows = c.execute_query(
            "SELECT '50%' AS lit, '%s' AS lit_s, E'it\\'s %s' AS estr, $$a %s b$$ AS dq, "
            "$t$%(x)s$t$ AS tagged, \"pct%s\" AS ident, %s AS p -- a %s comment\n"
            "/* block %s /* nested %d */ still %s */ FROM (SELECT 1 AS \"pct%s\") q",
            ("param",))
        assert rows == [{"lit": "50%", "lit_s": "%s", "estr": "it's %s", "dq": "a %s b",
                         "tagged": "%(x)s", "ident": 1, "p": "param"}]
        # with params (even empty ones) %% is % inside literals too, as in psycopg
        assert c.execute_query("SELECT '100%%' AS a, '5%' AS b", ()) == [{"a": "100%", "b": "5%"}]
        # without params the SQL goes as it is: no placeholder processing at all
        assert c.execute_query("SELECT '100%%' AS a, 7 % 3 AS m") == [{"a": "100%%", "m": 1}]
        # several statements are fine without params
        assert c.execute_query("SELECT 1 AS a; SELECT 2 AS b") == [{"b": 2}]
        # values are bound, never pasted into the SQL
        evil = "'); DROP TABLE pg_class; --"
        assert c.execute_query("SELECT %s AS v", (evil,)) == [{"v": evil}]


BAD_PARAMS = [
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1,), 2014, "2 placeholders but 1 parameter"),
    ("INSERT INTO {t} (v, note) VALUES (%s, 'x')", (1, 2), 2014, "1 placeholder but 2 parameters"),
    ("INSERT INTO {t} (v) VALUES (1)", (1,), 2014, "0 placeholders"),
    ("INSERT INTO {t} (v) VALUES (1)", {"a": 1}, 2014, "no placeholders"),
    ("INSERT INTO {t} (v, note) VALUES (%(v)s, %(note)s)", {"v": 1}, 2014, "'note' is missing"),
    ("INSERT INTO {t} (v) VALUES (%(v)s)", (1,), 2014, "must be a mapping"),
    ("INSERT INTO {t} (v) VALUES (%s)", {"v": 1}, 2014, "must be a sequence"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %(n)s)", (1, 2), 2014, "mixes"),
    ("INSERT INTO {t} (v, note) VALUES (%(v)s, %s)", {"v": 1}, 2014, "mixes"),
    ("INSERT INTO {t} (v) VALUES (%s)", "1", 2014, "not str"),
    ("INSERT INTO {t} (v) VALUES (%s)", b"1", 2014, "not bytes"),
    ("INSERT INTO {t} (v) VALUES (%s)", 1, 2014, "sequence or a mapping"),
    ("INSERT INTO {t} (v) VALUES (%d)", (1,), 2014, "unsupported placeholder"),
    ("INSERT INTO {t} (v) VALUES (1) -- %s\n RETURNING v %", (1,), 2014, "lone"),
    ("INSERT INTO {t} (v) VALUES (%s1)", (1,), 2014, "followed by a digit"),
    ("INSERT INTO {t} (v, note) VALUES (%(v)s, %(n)", {"v": 1, "n": 2}, 2014, "not followed by s"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, {1, 2}), 2015, "type 'set'"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, object()), 2015, "type 'object'"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, (1, 2)), 2015, "type 'tuple'"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, "nul\x00inside"), 2015, "NUL"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, "\udc80"), 2015, "UTF-8"),
    ("INSERT INTO {t} (v, note) VALUES (%s, %s)", (1, {"k": {1, 2}}), 2015, "JSON"),
]


@pytest.mark.parametrize("sql,params,code,fragment", BAD_PARAMS,
                         ids=["%d-%s" % (i, b[3] or "x") for i, b in enumerate(BAD_PARAMS)])
def test_bad_parameters_raise_before_sending(pg, make_pool, table, sql, params, code, fragment):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        c.begin()
        c.execute_query("INSERT INTO %s (v) VALUES (-1)" % table)
        before = pool.get_stats()
        with pytest.raises(ProgrammingError) as ei:
            c.execute_query(sql.format(t=table), params)
        e = ei.value
        assert e.error_code == code, e
        assert e.sqlstate is None                   # not from the server
        assert fragment in str(e), str(e)
        after = pool.get_stats()
        # nothing was sent: no statement counted, the transaction is not aborted
        assert (after.query_count, after.error_count) == (before.query_count, before.error_count)
        assert c.in_transaction
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 1}]
        c.commit()
    assert count_rows(pg, table) == 1
    with pool.get_connection() as c:                # the pool is fine
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]


def test_a_set_is_not_a_sequence_of_parameters(make_pool, table):
    """A set has no order: binding it to %s, %s would pick the order by hash."""
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("INSERT INTO %s (v, note) VALUES (%%s, %%s)" % table, {1, "one"})
        assert ei.value.error_code == 2014
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]


def test_nul_in_query_without_params_is_rejected(make_pool, table):
    """With params the translator rejects a NUL in the query ("libpq stops at a NUL, so the
    statement run would silently be a truncated one"); without params the truncated
    statement is run."""
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("INSERT INTO %s (v) VALUES (1)\x00; DELETE FROM %s" % (table, table))
        assert ei.value.error_code in (2014, 2015)
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]


# ---------------------------------------------------------------------------
# transactions
# ---------------------------------------------------------------------------

def test_autocommit_outside_begin(pg, make_pool, table):
    pool = make_pool(max_connections=2, timeout=2)
    with pool.get_connection() as a, pool.get_connection() as b:
        assert a.execute_query("INSERT INTO %s (v) VALUES (%%s)" % table, (1,)) == 1
        assert not a.in_transaction
        assert b.execute_query("SELECT v FROM %s" % table) == [{"v": 1}]
        assert a.execute_query("UPDATE %s SET v = 2 WHERE v = 99" % table) == 0
        assert a.execute_query("CREATE TEMP TABLE tt (x int)") == -1
        a.commit()        # no-op outside a transaction
        a.rollback()
    assert count_rows(pg, table) == 1


def test_begin_commit_rollback(pg, make_pool, table):
    pool = make_pool(max_connections=2, timeout=2)
    with pool.get_connection() as a, pool.get_connection() as b:
        a.begin()
        assert a.in_transaction
        a.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        assert b.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]
        with pytest.raises(ProgrammingError) as ei:
            a.begin()
        assert ei.value.error_code == 2017
        a.commit()
        assert not a.in_transaction
        assert b.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 1}]
        a.begin()
        a.execute_query("INSERT INTO %s (v) VALUES (2)" % table)
        a.rollback()
        assert not a.in_transaction
        assert b.execute_query("SELECT v FROM %s ORDER BY v" % table) == [{"v": 1}]


def test_transaction_context(pg, make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        with c.transaction() as t:
            assert t is c and c.in_transaction
            c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        assert not c.in_transaction
        assert count_rows(pg, table) == 1

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with c.transaction():
                c.execute_query("INSERT INTO %s (v) VALUES (2)" % table)
                raise Boom()
        assert not c.in_transaction
        assert count_rows(pg, table) == 1
        # a server error inside: rolled back, the server error propagates
        with pytest.raises(IntegrityError):
            with c.transaction():
                c.execute_query("INSERT INTO %s (v) VALUES (3)" % table)
                c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        assert not c.in_transaction
        assert count_rows(pg, table) == 1
        # a failure at COMMIT (deferred constraint) raises from the with statement
        c.execute_query("ALTER TABLE %s ADD CONSTRAINT %s_n UNIQUE (note) DEFERRABLE INITIALLY DEFERRED"
                        % (table, table))
        with pytest.raises(IntegrityError) as ei:
            with c.transaction():
                c.execute_query("INSERT INTO %s (v, note) VALUES (10, 'dup'), (11, 'dup')" % table)
        assert ei.value.sqlstate == "23505"
        assert not c.in_transaction
        assert count_rows(pg, table) == 1


def test_open_transaction_rolled_back_on_return(pg, make_pool, table, app):
    pool = make_pool(max_connections=1, timeout=2)
    c = pool.acquire()
    pid = c.backend_pid
    c.begin()
    c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
    assert sessions(pg, app)[pid][0] == "idle in transaction"
    c.release()
    assert count_rows(pg, table) == 0
    assert sessions(pg, app)[pid][0] == "idle"
    with pool.get_connection() as c:
        assert c.backend_pid == pid            # kept: the rollback worked
        assert not c.in_transaction
        assert c.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 0}]
        # also a transaction opened with plain SQL, and one in the failed state
        c.execute_query("BEGIN; INSERT INTO %s (v) VALUES (2)" % table)
        assert c.in_transaction
    with pool.get_connection() as c:
        assert c.backend_pid == pid and not c.in_transaction
        c.begin()
        with pytest.raises(ProgrammingError):
            c.execute_query("SELECT nope")
    with pool.get_connection() as c:
        assert c.backend_pid == pid and not c.in_transaction
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
    assert count_rows(pg, table) == 0


def test_execute_many_is_atomic(pg, make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        n = c.execute_many("INSERT INTO %s (v, note) VALUES (%%s, %%s)" % table,
                           [(i, "n%d" % i) for i in range(5)])
        assert n == 5 and not c.in_transaction
        assert count_rows(pg, table) == 5
        with pytest.raises(IntegrityError):
            c.execute_many("INSERT INTO %s (v) VALUES (%%(v)s)" % table,
                           [{"v": 10}, {"v": 11}, {"v": 3}, {"v": 12}])
        assert not c.in_transaction
        assert count_rows(pg, table) == 5
        with pytest.raises(ProgrammingError):        # a bad parameter set mid-way
            c.execute_many("INSERT INTO %s (v) VALUES (%%s)" % table, [(20,), (21,), (22, 23)])
        assert count_rows(pg, table) == 5
        # inside an open transaction it joins it
        c.begin()
        c.execute_many("INSERT INTO %s (v) VALUES (%%s)" % table, [(30,), (31,)])
        assert c.in_transaction
        c.rollback()
        assert count_rows(pg, table) == 5
        assert c.execute_many("INSERT INTO %s (v) VALUES (%%s)" % table, []) == 0


def test_failed_statement_aborts_the_transaction(pg, make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        c.begin()
        c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        with pytest.raises(DataError):
            c.execute_query("SELECT 1/0")
        with pytest.raises(DatabaseError) as ei:
            c.execute_query("INSERT INTO %s (v) VALUES (2)" % table)
        e = ei.value
        assert e.sqlstate == "25P02" and e.error_code == 2005
        assert isinstance(e, InternalError)
        assert "current transaction is aborted" in str(e)
        assert c.in_transaction
        c.rollback()
        assert not c.in_transaction
        assert c.execute_query("INSERT INTO %s (v) VALUES (3)" % table) == 1
    assert [r[0] for r in pg.sql("select v from %s order by v" % table)] == ["3"]


# ---------------------------------------------------------------------------
# server errors
# ---------------------------------------------------------------------------

def test_server_errors(make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as c:
        c.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
        with pytest.raises(IntegrityError) as ei:
            c.execute_query("INSERT INTO %s (v) VALUES (%%s)" % table, (1,))
        e = ei.value
        assert e.sqlstate == "23505" and e.error_code == 2005
        assert "duplicate key value violates unique constraint" in e.server_message
        assert "Key (v)=(1) already exists" in e.server_message
        assert not c.in_transaction
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]

        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("SELEC 1")
        assert ei.value.sqlstate == "42601" and ei.value.error_code == 2005
        assert "syntax error" in ei.value.server_message
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]

        with pytest.raises(ProgrammingError) as ei:
            c.execute_query("SELECT * FROM no_such_table_here")
        assert ei.value.sqlstate == "42P01"

        with pytest.raises(DataError) as ei:
            c.execute_query("SELECT 1 / %s AS x", (0,))
        assert ei.value.sqlstate == "22012" and "division by zero" in str(ei.value)
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]

        with pytest.raises(DataError) as ei:
            c.execute_query("SELECT %s::int AS x", ("abc",))
        assert ei.value.sqlstate == "22P02"
        assert not c.in_transaction
        assert c.execute_query("SELECT 2 AS x") == [{"x": 2}]
    assert pool.get_stats().total_connections == 1    # server errors do not discard


def test_borrowed_connection_whose_session_was_terminated(pg, make_pool, app):
    pool = make_pool(max_connections=1, timeout=2)
    c = pool.acquire()
    pid = c.backend_pid
    terminate(pg, pid)
    with pytest.raises(OperationalError) as ei:
        c.execute_query("SELECT 1")
    assert ei.value.error_code == 2004 and ei.value.sqlstate == "08006"
    c.release()                                        # discarded
    with pool.get_connection() as c:
        assert c.backend_pid != pid
        assert c.execute_query("SELECT 1 AS x") == [{"x": 1}]
    st = pool.get_stats()
    assert st.total_connections == 1
    check_stats_consistent(st)


def test_session_terminated_during_a_statement(pg, make_pool):
    pool = make_pool(max_connections=1, timeout=2)
    c = pool.acquire()
    pid = c.backend_pid
    killer = threading.Timer(0.3, pg.sql, ("select pg_terminate_backend(%d)" % pid,))
    killer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(OperationalError) as ei:
            c.execute_query("SELECT pg_sleep(5)")
    finally:
        killer.join()
    assert time.monotonic() - t0 < 3
    assert ei.value.error_code == 2004 and ei.value.sqlstate == "08006"
    assert "terminating connection" in str(ei.value)
    c.release()
    with pool.get_connection() as c:
        assert c.backend_pid != pid and c.execute_query("SELECT 1 AS x") == [{"x": 1}]
    check_stats_consistent(pool.get_stats())
