"""Session state does not leak between borrowers of one native pool.

A statement that may change the session (nc_sql_changes_session in csrc/core/nc_sqltext.c: SET,
RESET, SET SESSION CHARACTERISTICS, set_config(), PREPARE, CREATE TEMP on PostgreSQL;
a writing PRAGMA, ATTACH, CREATE TEMP on SQLite) marks the connection; its return then runs
DISCARD ALL on PostgreSQL, or closes the connection on SQLite (which has no way to reset a
PRAGMA). A clean borrow costs nothing: no statement on return (the server's view of the session's
last statement, pg_stat_activity.query, is still the borrower's).
"""

import datetime
import re

import pytest

from noodlecore.database import DatabaseConnectionPool


@pytest.fixture
def app(request):
    return ("ncsr_" + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name))[:60]


@pytest.fixture
def pool(pg, app):
    # one connection: the second borrower gets the first one's session
    p = DatabaseConnectionPool(pg.dsn(application_name=app), max_connections=1, timeout=5,
                               row_format="tuple")
    yield p
    p.shutdown(timeout=0)


@pytest.fixture
def observer(pg, app):
    with DatabaseConnectionPool(pg.dsn(application_name=app + "_obs"), max_connections=1,
                                row_format="tuple") as p:
        yield p


def one(conn, sql, params=None):
    [(v,)] = conn.execute_query(sql, params)
    return v


def last_statement(observer, pid):
    with observer.get_connection() as o:
        return one(o, "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))


DEFAULTS = ("SELECT current_setting('TimeZone'), current_setting('default_transaction_isolation'), "
            "current_setting('default_transaction_read_only'), current_setting('search_path'), "
            "current_setting('statement_timeout')")


def test_second_borrower_sees_the_defaults(pool, observer):
    with pool.get_connection() as c:
        pid = c.backend_pid
        defaults = c.execute_query(DEFAULTS)[0]
        c.execute_query("SET TimeZone = 'Asia/Tokyo'")
        c.execute_query("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY")
        c.execute_query("SET search_path TO pg_catalog")
        c.execute_query("SELECT set_config('statement_timeout', '12345', false)")
        c.execute_query("PREPARE leaked AS SELECT 1")
        assert c.execute_query(DEFAULTS)[0] != defaults
    assert last_statement(observer, pid) == "DISCARD ALL"
    with pool.get_connection() as c:
        assert c.backend_pid == pid                  # the same session, reset
        assert c.execute_query(DEFAULTS)[0] == defaults
        assert one(c, "SELECT count(*) FROM pg_prepared_statements") == 0
        # and the text formats the pool decodes are still in force
        assert one(c, "SELECT '2024-02-29'::date") == datetime.date(2024, 2, 29)
        assert one(c, "SELECT '1 day'::interval") == datetime.timedelta(days=1)


def test_a_clean_borrow_runs_no_extra_statement(pool, observer):
    with pool.get_connection() as c:
        pid = c.backend_pid
        c.execute_query("SELECT 'clean borrow marker'")
    assert last_statement(observer, pid) == "SELECT 'clean borrow marker'"
    with pool.get_connection() as c:
        c.begin()
        c.execute_query("SET LOCAL TimeZone = 'Asia/Tokyo'")  # ends with the transaction
        c.execute_query("SELECT 'transaction marker'")
        c.commit()
    assert last_statement(observer, pid) == "COMMIT"
    with pool.get_connection() as c:                 # a reset happens once, not on every return
        c.execute_query("SET TimeZone = 'Asia/Tokyo'")
    with pool.get_connection() as c:
        c.execute_query("SELECT 'after the reset'")
    assert last_statement(observer, pid) == "SELECT 'after the reset'"


def test_reset_after_a_failed_transaction(pool, observer):
    with pool.get_connection() as c:
        pid = c.backend_pid
        default = one(c, "SHOW TimeZone")
        c.begin()
        c.execute_query("SET TimeZone = 'Asia/Tokyo'")
        with pytest.raises(Exception):
            c.execute_query("SELECT 1 / 0")
    with pool.get_connection() as c:
        assert c.backend_pid == pid and not c.in_transaction
        assert one(c, "SHOW TimeZone") == default


def test_non_iso_styles_come_back_after_the_reset(pg, app):
    """A DSN asking for other DateStyle/IntervalStyle: DISCARD ALL returns to them, so the reset
    sets the formats the pool decodes again."""
    dsn = pg.kv_dsn(application_name=app, options="-c DateStyle=SQL,DMY -c IntervalStyle=sql_standard")
    with DatabaseConnectionPool(dsn, max_connections=1, row_format="tuple") as p:
        with p.get_connection() as c:
            pid = c.backend_pid
            c.execute_query("SET TimeZone = 'UTC'")
        with p.get_connection() as c:
            assert c.backend_pid == pid
            assert one(c, "SHOW DateStyle") == "ISO, DMY"
            assert one(c, "SHOW IntervalStyle") == "postgres"
            assert one(c, "SELECT '2024-02-29'::date") == datetime.date(2024, 2, 29)
            assert one(c, "SELECT '1 day 2 hours'::interval") == datetime.timedelta(days=1, hours=2)


def test_sqlite_pragma_does_not_reach_the_next_borrower(tmp_path):
    """SQLAlchemy's SQLite isolation levels are PRAGMA read_uncommitted: a writing PRAGMA closes
    the connection on return (SQLite cannot reset it); a clean borrow keeps the connection."""
    with DatabaseConnectionPool("sqlite:///%s" % (tmp_path / "sr.db"), max_connections=1,
                                row_format="tuple") as p:
        with p.get_connection() as c:
            serial = c.connection_id
            c.execute_query("SELECT 1")
        with p.get_connection() as c:
            assert c.connection_id == serial                 # clean: the same connection
            assert one(c, "PRAGMA read_uncommitted") == 0   # a read: no change
        with p.get_connection() as c:
            assert c.connection_id == serial
            c.execute_query("PRAGMA read_uncommitted = 1")
            assert one(c, "PRAGMA read_uncommitted") == 1
        with p.get_connection() as c:
            assert c.connection_id != serial                 # a fresh connection, with the defaults
            assert one(c, "PRAGMA read_uncommitted") == 0


def test_sqlite_memory_database_survives_the_closed_connection():
    """sqlite:///:memory: is one shared database per pool (kept open by the pool): closing a
    connection a PRAGMA marked does not lose it."""
    with DatabaseConnectionPool("sqlite:///:memory:", max_connections=1, row_format="tuple") as p:
        with p.get_connection() as c:
            c.execute_query("CREATE TABLE kept (a)")
            c.execute_query("INSERT INTO kept VALUES (1)")
            c.execute_query("PRAGMA read_uncommitted = 1")
            first = c.connection_id
        with p.get_connection() as c:
            assert c.connection_id != first
            assert one(c, "PRAGMA read_uncommitted") == 0
            assert c.execute_query("SELECT a FROM kept") == [(1,)]
