"""noodlecore.dbapi's streaming cursors (``connection.cursor(stream=True)``)
on a real PostgreSQL server (libpq's single-row mode) and on SQLite (the
statement stepped on): rows read as fetched with at most ``itersize`` held,
the connection blocked until the stream ends, errors mid-way, closing the
cursor or the connection mid-stream, the statement deadline."""

import gc

import pytest

from helpers import dbapi_pool
from noodlecore import dbapi
from noodlecore.database import errors

pytestmark = pytest.mark.usefixtures("fresh_dbapi_pools")


def _held(conn):
    # rows the cursor holds right now (its buffer), to show it never holds them all
    return len(conn._rows) - conn._pos if conn._rows is not None else 0


def test_streaming_cursor_reads_rows_as_fetched(pg, app):
    conn = dbapi.connect(pg.dsn(application_name=app))
    cur = conn.cursor(stream=True)
    cur.itersize = 100
    cur.execute("select g, g::text from generate_series(1, 100000) g")
    assert [d[0] for d in cur.description] == ["g", "g"] and cur.description[0][1] == dbapi.NUMBER
    assert cur.rowcount == -1                      # not known until the end
    assert cur.fetchone() == (1, "1")
    assert cur.fetchmany(3) == [(2, "2"), (3, "3"), (4, "4")]
    held = []
    total = 4
    for row in cur:
        total += 1
        held.append(_held(cur))
        assert row[0] == total
    assert total == 100000 and cur.rowcount == 100000
    assert max(held) <= 100                        # never more than itersize rows at once
    cur.execute("select g from generate_series(1, 30000) g")
    assert cur.fetchmany(2) == [(1,), (2,)]
    rest = cur.fetchall()                          # the rest, in itersize rounds
    assert len(rest) == 29998 and rest[0] == (3,) and rest[-1] == (30000,) and cur.rowcount == 30000
    # the connection is free again, still in the transaction the stream opened
    other = conn.cursor()
    other.execute("select 1")
    assert other.fetchall() == [(1,)]
    conn.rollback()
    conn.close()


def test_streaming_blocks_the_connection_until_closed(pg, app, table):
    conn = dbapi.connect(pg.dsn(application_name=app))
    cur = conn.cursor(stream=True)
    cur.execute("insert into %s (v) values (1)" % table)     # no rows: nothing to stream
    assert cur.rowcount == 1 and cur.description is None
    cur.execute("select g from generate_series(1, 10000) g")
    assert cur.fetchone() == (1,)
    other = conn.cursor()
    with pytest.raises(dbapi.InterfaceError) as e:
        other.execute("select 1")
    assert e.value.error_code == 2026
    with pytest.raises(dbapi.InterfaceError):
        conn.commit()
    cur.close()                                    # the rest is read and dropped
    conn.commit()                                  # the insert survived the stream
    other.execute("select count(*) from %s" % table)
    assert other.fetchone() == (1,)
    # a new statement on a streaming cursor ends the old stream first
    s = conn.cursor(stream=True)
    s.execute("select g from generate_series(1, 5000) g")
    s.execute("select 'x'")
    assert s.fetchall() == [("x",)] and s.rowcount == 1
    # an empty result streams nothing
    s.execute("select 1 where false")
    assert s.fetchall() == [] and s.rowcount == 0
    conn.close()


def test_streaming_error_mid_way_and_on_close(pg, app):
    conn = dbapi.connect(pg.dsn(application_name=app), autocommit=True)
    cur = conn.cursor(stream=True)
    cur.itersize = 10
    # fails at g = 500, after the first rows arrived
    cur.execute("select 1 / (500 - g) from generate_series(1, 1000) g")
    got = 0
    with pytest.raises(dbapi.DataError) as e:
        for _ in cur:
            got += 1
    assert e.value.sqlstate == "22012" and 0 < got < 500
    assert conn.cursor().execute("select 2").fetchone() == (2,)   # the connection is fine
    # closing the connection while streaming: the session is closed, not pooled
    pool = dbapi_pool(pg.dsn(application_name=app))
    cur.execute("select g from generate_series(1, 100000) g")
    pid = conn.backend_pid
    conn.close()
    again = dbapi.connect(pg.dsn(application_name=app))
    assert again.backend_pid != pid
    again.close()
    assert pool.get_stats().active_connections == 0


def test_streaming_on_sqlite(tmp_path):
    dsn = f"sqlite:///{tmp_path}/s.db"
    conn = dbapi.connect(dsn)
    cur = conn.cursor(stream=True)
    cur.itersize = 50
    big = "with recursive n(g) as (select 1 union all select g + 1 from n where g < 20000) select g, 'x' from n"
    cur.execute(big)
    assert [d[0] for d in cur.description] == ["g", "'x'"] and cur.rowcount == -1
    assert cur.fetchone() == (1, "x")
    held = []
    total = 1
    for row in cur:
        total += 1
        held.append(len(cur._rows) - cur._pos)
        assert row[0] == total
    assert total == 20000 and cur.rowcount == 20000 and max(held) <= 50
    # while streaming the connection runs nothing else; close() just stops it
    cur.execute(big)
    with pytest.raises(dbapi.InterfaceError) as e:
        conn.cursor().execute("select 1")
    assert e.value.error_code == 2026
    cur.close()
    other = conn.cursor()
    other.execute("create table t (a)")
    other.execute("insert into t values (1)")
    # closing the connection mid-stream: the statement is finalized, the
    # rollback runs, the connection goes back to the pool
    s = conn.cursor(stream=True)
    s.execute(big)
    serial = conn._pooled.connection_id
    conn.close()
    again = dbapi.connect(dsn)
    assert again._pooled.connection_id == serial
    c = again.cursor()
    c.execute("select name from sqlite_master where name = 't'")
    assert c.fetchall() == []                         # rolled back on return
    # an error mid-stream ends it
    c.execute("create table n (v)")
    c.executemany("insert into n values (%s)", [(1,), (2,), ("x",)])
    s = again.cursor(stream=True)
    s.execute("select v, json(v) from n order by rowid")    # json('x') fails at the third row
    assert s.fetchone() == (1, "1")
    with pytest.raises(dbapi.Error):
        s.fetchall()
    assert again.cursor().execute("select count(*) from n").fetchone() == (3,)
    again.close()


def test_streaming_keeps_the_statement_deadline(pg, app):
    dsn = pg.dsn(application_name=app)
    conn = dbapi.connect(dsn, query_timeout=0.5, autocommit=True)
    cur = conn.cursor(stream=True)
    # the first rows come at once (each longer than the server's 8 kB output
    # buffer, so none waits there), then the server stalls past the deadline
    cur.execute("select g, repeat('x', 10000), case when g = 50 then pg_sleep(30) end "
                "from generate_series(1, 100) g")
    assert cur.fetchone()[0] == 1
    with pytest.raises(errors.QueryTimeoutError) as e:
        cur.fetchall()
    assert e.value.error_code == 2012 and e.value.sqlstate == "57014"
    assert conn.cursor().execute("select 3").fetchone() == (3,)   # cancelled; the session is fine
    conn.close()


def test_a_dropped_streaming_cursor_frees_its_connection(pg, app):
    dsn = pg.dsn(application_name=app)
    conn = dbapi.connect(dsn)
    cur = conn.cursor(stream=True)
    cur.execute("select g from generate_series(1, 50000) g")
    assert cur.fetchone() == (1,)
    del cur
    gc.collect()
    assert conn.cursor().execute("select 5").fetchone() == (5,)   # the stream was ended first
    conn.commit()
    conn.close()
