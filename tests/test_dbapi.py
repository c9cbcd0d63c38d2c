"""noodlecore.dbapi, the PEP 249 module, on a real PostgreSQL server and on
SQLite: module globals, transactions (uncommitted work invisible to another
connection), autocommit, close() giving the connection back to its pool,
cursors (description, rowcount, lastrowid, fetch rules, closed objects),
type objects, and the percent-sign rule with parameters."""

import datetime
import threading

import pytest

from helpers import dbapi_pool
from noodlecore import dbapi
from noodlecore.database import DatabaseConnectionPool, errors

pytestmark = pytest.mark.usefixtures("fresh_dbapi_pools")


@pytest.fixture(params=["pg", "sqlite"])
def db(request, tmp_path):
    """(kind, dsn) of an empty database."""
    if request.param == "pg":
        pg = request.getfixturevalue("pg")
        app = request.getfixturevalue("app")
        dsn = pg.dsn(application_name=app)
        pg.sql("drop table if exists dbt; drop table if exists dbt2")
    else:
        dsn = f"sqlite:///{tmp_path}/dbapi.db"
    yield request.param, dsn
    if request.param == "pg":
        request.getfixturevalue("pg").sql("drop table if exists dbt; drop table if exists dbt2")


def make_table(conn, kind):
    cur = conn.cursor()
    if kind == "pg":
        cur.execute("create table dbt (id serial primary key, name varchar(20), n numeric(8, 2), "
                    "at timestamp, data bytea)")
    else:
        cur.execute("create table dbt (id integer primary key, name varchar(20), n decimal(8, 2), "
                    "at timestamp, data blob)")
    conn.commit()
    return cur


# ---- module ------------------------------------------------------------------

def test_module_globals_and_exceptions():
    assert dbapi.apilevel == "2.0"
    assert dbapi.threadsafety == 1
    assert dbapi.paramstyle == "pyformat"
    # the same classes as noodlecore.database.errors
    for name in ("Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                 "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert getattr(dbapi, name) is getattr(errors, name)
        assert getattr(dbapi.Connection, name) is getattr(errors, name)
    assert dbapi.Warning is errors.DatabaseWarning and issubclass(dbapi.Warning, Exception)
    assert issubclass(dbapi.ProgrammingError, dbapi.DatabaseError)
    assert issubclass(dbapi.DatabaseError, dbapi.Error)
    assert issubclass(dbapi.InterfaceError, dbapi.Error)


def test_constructors():
    assert dbapi.Date(2024, 2, 29) == datetime.date(2024, 2, 29)
    assert dbapi.Time(1, 2, 3) == datetime.time(1, 2, 3)
    assert dbapi.Timestamp(2024, 2, 29, 1, 2, 3) == datetime.datetime(2024, 2, 29, 1, 2, 3)
    assert dbapi.Binary(b"\x00\x01") == b"\x00\x01"
    t = 1_700_000_000
    assert dbapi.TimestampFromTicks(t) == datetime.datetime.fromtimestamp(t)
    assert dbapi.DateFromTicks(t) == datetime.date.fromtimestamp(t)
    assert dbapi.TimeFromTicks(t) == datetime.datetime.fromtimestamp(t).time()


def test_type_objects_read_the_cores_categories():
    assert dbapi.STRING == 25 and dbapi.STRING == 1043 and dbapi.NUMBER == 23
    assert dbapi.BINARY == 17 and dbapi.DATETIME == 1184 and dbapi.ROWID == 26
    assert dbapi.STRING != 23 and dbapi.NUMBER != 25
    assert dbapi.STRING == "VARCHAR(10)" and dbapi.NUMBER == "INTEGER" and dbapi.BINARY == "BLOB"
    assert dbapi.DATETIME == "timestamp"
    for t in (dbapi.STRING, dbapi.BINARY, dbapi.NUMBER, dbapi.DATETIME, dbapi.ROWID):
        assert t != None and t != 16 and t != object()   # noqa: E711 (bool is none of them)
    assert len({dbapi.STRING, dbapi.NUMBER, dbapi.STRING}) == 2


def test_connect_rejects_bad_input(tmp_path):
    with pytest.raises(errors.ConfigurationError):
        dbapi.connect(None)
    with pytest.raises(errors.ConfigurationError) as e:
        dbapi.connect(f"sqlite:///{tmp_path}/x.db", max_connections=-3)
    assert e.value.error_code == 2013 and "max_connections" in e.value.message


# ---- cursors -----------------------------------------------------------------

def test_description_rowcount_and_fetch(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    cur = make_table(conn, kind)
    assert cur.description is None
    assert cur.rowcount == -1   # DDL
    cur.execute("insert into dbt (name, n, at, data) values (%s, %s, %s, %s)",
                ("a", 1, datetime.datetime(2024, 1, 1), b"\x00"))
    assert cur.rowcount == 1 and cur.description is None
    cur.execute("insert into dbt (name) values (%(x)s)", {"x": "b"})
    cur.execute("insert into dbt (name) values (%(x)s)", {"x": "c"})
    # an empty result still describes its columns, with type codes
    cur.execute("select id, name, n, at, data from dbt where id < 0")
    assert [d[0] for d in cur.description] == ["id", "name", "n", "at", "data"]
    assert all(len(d) == 7 for d in cur.description)
    codes = [d[1] for d in cur.description]
    assert codes[0] == dbapi.NUMBER and codes[1] == dbapi.STRING and codes[2] == dbapi.NUMBER
    assert codes[3] == dbapi.DATETIME and codes[4] == dbapi.BINARY
    assert cur.rowcount == 0 and cur.fetchall() == [] and cur.fetchone() is None
    if kind == "pg":
        assert cur.description[2][4:6] == (8, 2)    # numeric(8, 2): precision and scale
    cur.execute("select name from dbt order by id")
    assert cur.rowcount == 3
    assert cur.arraysize == 1
    assert cur.fetchone() == ("a",)
    assert cur.fetchmany() == [("b",)]
    assert cur.fetchmany(5) == [("c",)]
    assert cur.fetchone() is None and cur.fetchmany() == [] and cur.fetchall() == []
    cur.execute("select name from dbt order by id")
    cur.arraysize = 2
    assert cur.fetchmany() == [("a",), ("b",)]
    assert cur.fetchall() == [("c",)]
    assert [r for r in cur.execute("select name from dbt order by id")] == [("a",), ("b",), ("c",)]
    cur.execute("update dbt set name = name || 'x' where name <> %s", ("a",))
    assert cur.rowcount == 2 and cur.description is None
    cur.execute("update dbt set name = 'z' where id < 0")
    assert cur.rowcount == 0
    cur.execute("delete from dbt where name = %s", ("a",))
    assert cur.rowcount == 1
    conn.commit()
    conn.close()


def test_fetch_errors_and_closed_objects(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    cur = conn.cursor()
    with pytest.raises(dbapi.ProgrammingError) as e:     # before any execute
        cur.fetchone()
    assert e.value.error_code == 2025
    cur.execute("create table dbt (x int)")
    for fetch in (cur.fetchone, cur.fetchmany, cur.fetchall):   # after a statement without rows
        with pytest.raises(dbapi.Error):
            fetch()
    cur.execute("insert into dbt values (1)")
    with pytest.raises(dbapi.ProgrammingError):
        cur.fetchall()
    cur.setinputsizes([None])
    cur.setoutputsize(10)
    cur.setoutputsize(10, 0)
    cur.close()
    cur.close()                                          # twice: fine
    with pytest.raises(dbapi.InterfaceError) as e:
        cur.execute("select 1")
    assert e.value.error_code == 2024
    with pytest.raises(dbapi.InterfaceError):
        cur.fetchall()
    other = conn.cursor()
    conn.close()
    conn.close()                                         # twice: fine
    for call in (lambda: other.execute("select 1"), conn.cursor, conn.commit, conn.rollback,
                 lambda: setattr(conn, "autocommit", True)):
        with pytest.raises(dbapi.InterfaceError) as e:
            call()
        assert e.value.error_code == 2024
    assert conn.closed and other.closed


def test_lastrowid(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    cur = make_table(conn, kind)
    cur.execute("insert into dbt (name) values (%s)", ("a",))
    cur.execute("insert into dbt (name) values (%s)", ("b",))
    if kind == "sqlite":
        assert cur.lastrowid == 2
        cur.execute("select id from dbt where name = 'a'")
        assert cur.lastrowid is None
        cur.execute("replace into dbt (id, name) values (7, 'c')")
        assert cur.lastrowid == 7
    else:
        assert cur.lastrowid is None
        cur.execute("insert into dbt (name) values ('c') returning id")
        assert cur.fetchone() == (3,) and cur.rowcount == 1
    conn.close()


def test_executemany(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    cur = make_table(conn, kind)
    cur.executemany("insert into dbt (name) values (%s)", [("a",), ("b",), ("c",)])
    assert cur.rowcount == 3 and cur.description is None
    with pytest.raises(dbapi.Error):
        cur.fetchone()
    conn.rollback()                                      # executemany is part of the transaction
    cur.execute("select count(*) from dbt")
    assert cur.fetchone() == (0,)
    cur.executemany("insert into dbt (name) values (%(n)s)", [{"n": "x"}, {"n": "y"}])
    conn.commit()
    cur.execute("select name from dbt order by name")
    assert cur.fetchall() == [("x",), ("y",)]
    conn.close()


# ---- transactions ------------------------------------------------------------

def test_uncommitted_work_is_invisible_to_another_connection(db):
    kind, dsn = db
    a = dbapi.connect(dsn)
    make_table(a, kind)
    b = dbapi.connect(dsn, timeout=10)
    ca, cb = a.cursor(), b.cursor()
    ca.execute("insert into dbt (name) values ('a')")
    if kind == "pg":
        cb.execute("select count(*) from dbt")
        assert cb.fetchone() == (0,)
        b.rollback()
    a.commit()
    cb.execute("select count(*) from dbt")
    assert cb.fetchone() == (1,)
    b.commit()
    ca.execute("insert into dbt (name) values ('b')")
    a.rollback()
    cb.execute("select count(*) from dbt")
    assert cb.fetchone() == (1,)
    a.close()
    b.close()


def test_two_cursors_share_the_transaction(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    make_table(conn, kind)
    one, two = conn.cursor(), conn.cursor()
    one.execute("insert into dbt (name) values ('a')")
    two.execute("select name from dbt")
    assert two.fetchall() == [("a",)]
    conn.rollback()
    two.execute("select name from dbt")
    assert two.fetchall() == []
    conn.close()


def test_autocommit(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    make_table(conn, kind)
    assert conn.autocommit is False
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("insert into dbt (name) values ('a')")
    conn.rollback()                                      # nothing to roll back: it committed
    other = dbapi.connect(dsn, timeout=10)
    oc = other.cursor()
    oc.execute("select count(*) from dbt")
    assert oc.fetchone() == (1,)
    other.close()
    conn.autocommit = False
    cur.execute("insert into dbt (name) values ('b')")
    with pytest.raises(dbapi.ProgrammingError) as e:    # not inside a transaction
        conn.autocommit = True
    assert e.value.error_code == 2017
    conn.autocommit = False                              # unchanged: fine
    conn.rollback()
    conn.autocommit = True
    conn.close()
    ac = dbapi.connect(dsn, autocommit=True)
    assert ac.autocommit is True
    ac.close()


def test_close_rolls_back_and_returns_the_connection(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    make_table(conn, kind)
    conn.cursor().execute("insert into dbt (name) values ('a')")
    pid = conn.backend_pid
    conn.close()
    again = dbapi.connect(dsn)
    assert again.backend_pid == pid                      # the same session, from the pool
    cur = again.cursor()
    cur.execute("select count(*) from dbt")
    assert cur.fetchone() == (0,)                        # rolled back on return
    if kind == "pg":
        assert pid is not None
        cur.execute("select pg_backend_pid()")
        assert cur.fetchone() == (pid,)
    else:
        assert pid is None
    again.close()


def test_context_manager_commits_or_rolls_back_then_closes(db):
    kind, dsn = db
    with dbapi.connect(dsn) as conn:
        make_table(conn, kind)
        conn.cursor().execute("insert into dbt (name) values ('kept')")
    assert conn.closed
    with pytest.raises(ZeroDivisionError):
        with dbapi.connect(dsn) as conn:
            conn.cursor().execute("insert into dbt (name) values ('lost')")
            1 / 0
    assert conn.closed
    with dbapi.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select name from dbt")
        assert cur.fetchall() == [("kept",)]
    assert cur.closed


def test_errors_keep_the_pools_attributes(db):
    kind, dsn = db
    conn = dbapi.connect(dsn)
    cur = make_table(conn, kind)
    cur.execute("create unique index dbt_name on dbt (name)")
    cur.execute("insert into dbt (name) values ('a')")
    with pytest.raises(dbapi.IntegrityError) as e:
        cur.execute("insert into dbt (name) values ('a')")
    assert e.value.error_code == 2005 and e.value.connection_failure is False
    if kind == "pg":
        assert e.value.sqlstate == "23505" and e.value.statement_sent is True
    conn.rollback()
    with pytest.raises(dbapi.ProgrammingError):
        cur.execute("select * from no_such_table")
    conn.close()


def test_connect_shares_one_pool_per_dsn_and_options(db):
    kind, dsn = db
    a = dbapi.connect(dsn, max_connections=3)
    b = dbapi.connect(dsn, max_connections=3)
    c = dbapi.connect(dsn, max_connections=4)
    pools = [p for k, p in dbapi._pools.items() if k[0] == dsn]
    assert len(pools) == 2
    assert sorted(p.get_stats().active_connections for p in pools) == [1, 2]
    for x in (a, b, c):
        x.close()
    assert sum(p.get_stats().active_connections for p in pools) == 0


def test_pool_connect(db):
    kind, dsn = db
    with DatabaseConnectionPool(dsn, max_connections=2) as pool:
        conn = pool.connect()
        make_table(conn, kind)
        cur = conn.cursor()
        cur.execute("insert into dbt (name) values (%s)", ("p",))
        assert pool.get_stats().active_connections == 1
        conn.close()
        assert pool.get_stats().active_connections == 0
        with pool.get_connection() as pc:
            assert pc.execute_query("select count(*) as n from dbt") == [{"n": 0}]   # close rolled back
        with pool.connect(autocommit=True) as conn:
            conn.cursor().execute("insert into dbt (name) values ('q')")
        with pool.get_connection() as pc:
            assert pc.execute_query("select name from dbt") == [{"name": "q"}]


# ---- percent signs -----------------------------------------------------------

def test_percent_signs_with_and_without_params(db):
    kind, dsn = db
    conn = dbapi.connect(dsn, autocommit=True)
    cur = conn.cursor()
    # with params (even empty ones) %% is % everywhere, inside literals too
    cur.execute("select '100%%' || %s", ("!",))
    assert cur.fetchone() == ("100%!",)
    cur.execute("select '100%%'", {})
    assert cur.fetchone() == ("100%",)
    cur.execute("select '100%%'", ())
    assert cur.fetchone() == ("100%",)
    # a lone % inside a literal stays as it is
    cur.execute("select '5%' || %s", ("",))
    assert cur.fetchone() == ("5%",)
    # without params the SQL is sent as it is
    cur.execute("select '100%%'")
    assert cur.fetchone() == ("100%%",)
    cur.execute("select 7 %% 3", [])
    assert cur.fetchone() == (1,)
    conn.close()


def test_failover_manager_connect(pg, app, table):
    from noodlecore.database import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig
    ep = DatabaseEndpoint("a", "a", pg.dsn(application_name=app), is_primary=True)
    with DatabaseFailoverManager([ep], config=FailoverConfig()) as m:
        with m.connect() as conn:
            cur = conn.cursor()
            cur.execute("insert into %s (v) values (%%s)" % table, (1,))
            assert cur.rowcount == 1
            pid = conn.backend_pid
        assert conn.closed
        conn = m.connect(autocommit=True)
        assert conn.backend_pid == pid       # the same pooled session: close gave it back
        cur = conn.cursor()
        cur.execute("select v from %s" % table)      # committed by the context manager
        assert cur.fetchall() == [(1,)]
        conn.close()
    with DatabaseFailoverManager([ep], config=FailoverConfig(enable_connection_pooling=False)) as m:
        conn = m.connect()
        pid = conn.backend_pid
        conn.close()                          # closed, not pooled
        conn = m.connect()
        assert conn.backend_pid != pid
        conn.close()


def test_two_threads_on_one_connection_are_refused(pg, app):
    # threadsafety 1: a connection in use by one thread refuses another
    conn = dbapi.connect(pg.dsn(application_name=app), autocommit=True)
    pid = conn.backend_pid
    errors_seen = []

    def long_statement():
        try:
            conn.cursor().execute("select pg_sleep(60)")
        except dbapi.Error as exc:
            errors_seen.append(exc)

    t = threading.Thread(target=long_statement)
    t.start()
    try:
        for _ in range(600):     # until the server runs it (each psql call is a round trip)
            if pg.sql("select count(*) from pg_stat_activity where pid = %d and state = 'active' "
                      "and query like 'select pg_sleep%%'" % pid)[0][0] == "1":
                break
        else:
            pytest.fail("the statement never started")
        with pytest.raises(dbapi.InterfaceError) as e:
            conn.cursor().execute("select 1")
        assert e.value.error_code == 2022
    finally:
        pg.sql("select pg_cancel_backend(%d)" % pid)
        t.join(60)
    assert not t.is_alive()
    assert len(errors_seen) == 1 and errors_seen[0].sqlstate == "57014"
    assert conn.cursor().execute("select 1").fetchone() == (1,)   # usable again
    conn.close()


def test_a_dropped_connection_goes_back_to_its_pool(db):
    import gc
    kind, dsn = db
    conn = dbapi.connect(dsn)
    conn.cursor().execute("select 1")
    pool = dbapi_pool(dsn)
    assert pool.get_stats().active_connections == 1
    del conn
    gc.collect()
    assert pool.get_stats().active_connections == 0


def test_multi_host_dsn(pg, app):
    # the pool's DSNs: the first host refuses, libpq goes on to the second
    dsn = "postgresql://%s@127.0.0.1:1,%s:%d/%s?application_name=%s" % (pg.user, pg.host, pg.port, pg.dbname, app)
    conn = dbapi.connect(dsn)
    assert conn.cursor().execute("select 41 + 1").fetchone() == (42,)
    conn.close()


def test_a_python_backend_pool_is_refused():
    class Backend:
        def execute_query(self, sql, params=None):
            return 1

        def close(self):
            pass

    with DatabaseConnectionPool(Backend, max_connections=1) as pool:
        conn = pool.connect()
        with pytest.raises(dbapi.NotSupportedError) as e:
            conn.cursor().execute("select 1")
        assert e.value.error_code == 2021
        conn.close()


def test_passwords_stay_out_of_errors_and_reprs(pg, app):
    dsn = "postgresql://nobody:s3cr3t-pw@127.0.0.1:1/db?connect_timeout=2"
    with pytest.raises(dbapi.OperationalError) as e:
        dbapi.connect(dsn, retry_attempts=1, timeout=5)
    assert "s3cr3t-pw" not in str(e.value) and "s3cr3t-pw" not in repr(e.value)
    assert "s3cr3t-pw" not in repr(dbapi_pool(dsn))
    good = pg.dsn(application_name=app).replace("postgresql://postgres@", "postgresql://postgres:unused-pw@")
    conn = dbapi.connect(good)        # trust authentication: the password is not needed
    assert "unused-pw" not in repr(conn) and "unused-pw" not in repr(conn.cursor())
    conn.close()
    assert "unused-pw" not in repr(conn)
