"""Our own tests of the SQLAlchemy dialects (noodlecore/sqla/) on the
harness's PostgreSQL and a SQLite file: what the compliance suite does not
look at (the pool underneath, disconnects, isolation per engine).

Marked `once`: SQLAlchemy is installed in the pytest-python3 stage only.
"""

import pytest

pytestmark = pytest.mark.once

import sqlalchemy as sa  # noqa: E402  (a missing SQLAlchemy is an error, never a skip)
from sqlalchemy import pool as sa_pool  # noqa: E402

from noodlecore.sqla import PGDialect_noodlecore, SQLiteDialect_noodlecore, _common  # noqa: E402


def pg_url(pg, app, **query):
    url = "postgresql+noodlecore://%s@%s:%d/%s?application_name=%s" % (pg.user, pg.host, pg.port,
                                                                        pg.dbname, app)
    return url + "".join("&%s=%s" % kv for kv in query.items())


def test_entry_points_pick_our_dialects_and_a_pass_through_pool(pg, app, tmp_path):
    e = sa.create_engine(pg_url(pg, app))
    s = sa.create_engine("sqlite+noodlecore:///%s" % (tmp_path / "a.db"))
    try:
        assert type(e.dialect) is PGDialect_noodlecore and type(s.dialect) is SQLiteDialect_noodlecore
        assert isinstance(e.pool, sa_pool.NullPool) and isinstance(s.pool, sa_pool.NullPool)
        from noodlecore import dbapi
        assert e.dialect.dbapi is dbapi and s.dialect.dbapi is dbapi
    finally:
        e.dispose()
        s.dispose()


def test_url_query_splits_pool_options_from_the_dsn(pg, app):
    e = sa.create_engine(pg_url(pg, app, max_connections=3, timeout="2.5", validate_connections="false"))
    args, kwargs = e.dialect.create_connect_args(e.url)
    assert kwargs == {"max_connections": 3, "timeout": 2.5, "validate_connections": False}
    assert args == ["postgresql://%s@%s:%d/%s?application_name=%s" % (pg.user, pg.host, pg.port,
                                                                      pg.dbname, app)]
    multi = sa.engine.make_url("postgresql+noodlecore://u@/db?host=h1:5432&host=h2:5433"
                               "&target_session_attrs=read-write")
    args, kwargs = e.dialect.create_connect_args(multi)
    assert args == ["postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write"]
    assert kwargs == {"_noodle_failover": {}}


def test_orm_session_with_relationships_across_a_failover(pg_factory):
    """A multi-host URL runs the failover manager under the engine: the primary
    crashes, the standby is promoted, and the same engine's next sessions read
    what was committed and write again, without a change in the application."""
    from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

    class Base(DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = "parent"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        children: Mapped[list["Child"]] = relationship(back_populates="parent", order_by="Child.id")

    class Child(Base):
        __tablename__ = "child"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(sa.ForeignKey("parent.id"))
        parent: Mapped[Parent] = relationship(back_populates="children")

    p = pg_factory.primary("sqp")
    s = pg_factory.standby(p, name="sqs")
    url = ("postgresql+noodlecore://postgres@/postgres?host=127.0.0.1:%d&host=127.0.0.1:%d"
           "&target_session_attrs=read-write&health_check_interval=0.1&health_check_timeout=1"
           "&failover_timeout=5&hold_down=0.5&max_failure_count=2&failover_wait=30&connect_timeout=1"
           % (p.port, s.port))
    engine = sa.create_engine(url)
    managers = []
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            session.add(Parent(name="p1", children=[Child(), Child()]))
        s.wait_replayed(p)
        p.crash()
        s.promote()
        with Session(engine) as session:
            parent = session.scalars(sa.select(Parent)).one()
            assert parent.name == "p1" and len(parent.children) == 2
            parent.children.append(Child())
            session.commit()
        with engine.connect() as c:
            assert c.scalar(sa.text("select inet_server_port()")) == s.port
            assert c.scalar(sa.text("select count(*) from child")) == 3
        # the engine's connections came from the failover manager, which switched
        managers = [m for (dsn, _), m in _common._managers.items() if ":%d," % p.port in dsn]
        assert len(managers) == 1 and managers[0].monitoring
        assert managers[0].current_endpoint == "127.0.0.1:%d" % s.port
    finally:
        engine.dispose()
        for m in managers:
            m.shutdown()


def test_connect_args_configure_the_native_pool(pg, app):
    """connect_args reach dbapi.connect(): here a one-connection pool whose
    second borrow times out with the pool's typed error."""
    e = sa.create_engine(pg_url(pg, app), connect_args={"max_connections": 1, "timeout": 0.2})
    try:
        with e.connect():
            with pytest.raises(sa.exc.DBAPIError) as info:
                e.connect()
            assert 1000 <= info.value.orig.error_code <= 9999
    finally:
        e.dispose()


def test_checkins_go_back_to_the_native_pool(pg, app):
    """Same backend on the next checkout: the native pool kept it."""
    e = sa.create_engine(pg_url(pg, app, max_connections=1))
    try:
        with e.connect() as c:
            pid = c.scalar(sa.text("select pg_backend_pid()"))
        with e.connect() as c:
            assert c.scalar(sa.text("select pg_backend_pid()")) == pid
    finally:
        e.dispose()


def test_terminated_backend_is_invalidated_and_the_next_checkout_works(pg, app):
    e = sa.create_engine(pg_url(pg, app, max_connections=1))
    try:
        with e.connect() as c:
            pid = c.scalar(sa.text("select pg_backend_pid()"))
            pg.sql("select pg_terminate_backend(%d)" % pid)
            with pytest.raises(sa.exc.DBAPIError) as info:
                c.execute(sa.text("select 1"))
            assert info.value.connection_invalidated
            assert info.value.orig.connection_failure
        with e.connect() as c:
            assert c.scalar(sa.text("select pg_backend_pid()")) != pid
    finally:
        e.dispose()


def test_outcome_unknown_is_a_disconnect():
    """A failover connection's write lost in flight raises OutcomeUnknownError
    (3039, issue 9): to SQLAlchemy still a disconnect (the connection is gone)."""
    from noodlecore.database import errors
    e = errors._native_error(3039, 0, "08006", "the outcome is unknown", statement_sent=True)
    assert type(e) is errors.OutcomeUnknownError and e.connection_failure
    for dialect in (PGDialect_noodlecore(), SQLiteDialect_noodlecore()):
        assert dialect.is_disconnect(e, None, None) is True
    assert PGDialect_noodlecore().is_disconnect(errors._native_error(2005, 0, "23505", "dup"), None, None) is False


def test_pre_ping_uses_the_native_check(pg, app):
    e = sa.create_engine(pg_url(pg, app), pool_pre_ping=True)
    try:
        with e.connect() as c:
            assert c.scalar(sa.text("select 1")) == 1
            assert c.connection.dbapi_connection._live().looks_alive() is True
    finally:
        e.dispose()


def test_two_engines_on_one_url_keep_their_own_isolation_level(pg, app):
    url = pg_url(pg, app, max_connections=1)     # one native connection: both engines borrow it
    ser = sa.create_engine(url, isolation_level="SERIALIZABLE")
    default = sa.create_engine(url)
    auto = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    q = sa.text("show transaction_isolation")
    try:
        for _ in range(2):
            with ser.connect() as c:
                assert c.scalar(q) == "serializable"
            with default.connect() as c:
                assert c.scalar(q) == "read committed"
            with auto.connect() as c:
                assert c.get_isolation_level() == "AUTOCOMMIT"
                c.execute(sa.text("create temp table if not exists nc_auto (x int)"))
    finally:
        for e in (ser, default, auto):
            e.dispose()


def test_returning_and_insertmanyvalues_on_postgresql(pg, app):
    e = sa.create_engine(pg_url(pg, app))
    md = sa.MetaData()
    t = sa.Table("nc_sqla_imv_" + app[-20:], md, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("v", sa.String(20)), sa.Column("doc", sa.JSON))
    try:
        md.create_all(e)
        with e.begin() as c:
            rows = c.execute(t.insert().returning(t.c.id, t.c.v, sort_by_parameter_order=True),
                             [{"v": "r%d" % i, "doc": {"i": i}} for i in range(500)]).all()
            assert [r.v for r in rows] == ["r%d" % i for i in range(500)]
            assert c.execute(sa.select(t.c.doc).where(t.c.v == "r7")).scalar() == {"i": 7}
    finally:
        md.drop_all(e)
        e.dispose()


def test_stream_results_fetches_in_batches_from_a_server_side_cursor(pg, app):
    e = sa.create_engine(pg_url(pg, app))
    try:
        with e.connect() as c:
            r = c.execution_options(yield_per=100).execute(sa.text("select g from generate_series(1, 1000) g"))
            assert r.cursor.server_side
            # the cursor is PostgreSQL's: the server holds it, the client a batch
            held = c.exec_driver_sql("select count(*) from pg_cursors where name = %(n)s",
                                     {"n": r.cursor.name}).scalar()
            assert held == 1
            assert [row.g for row in r] == list(range(1, 1001))
    finally:
        e.dispose()


def test_sqlite_lastrowid_and_isolation(tmp_path):
    e = sa.create_engine("sqlite+noodlecore:///%s" % (tmp_path / "b.db"))
    md = sa.MetaData()
    t = sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.String))
    try:
        md.create_all(e)
        with e.begin() as c:
            assert c.execute(t.insert(), {"v": "a"}).inserted_primary_key == (1,)
            assert c.execute(t.insert(), {"v": "b"}).lastrowid == 2
        with e.connect().execution_options(isolation_level="READ UNCOMMITTED") as c:
            assert c.exec_driver_sql("PRAGMA read_uncommitted").scalar() == 1
        with e.connect() as c:
            assert c.exec_driver_sql("PRAGMA read_uncommitted").scalar() == 0
    finally:
        e.dispose()


def test_sqlite_memory_is_refused_with_a_reason():
    from noodlecore import dbapi
    with pytest.raises(dbapi.NotSupportedError, match="in-memory database is not shared") as info:
        sa.create_engine("sqlite+noodlecore://")
    assert 1000 <= info.value.error_code <= 9999


def test_a_checkout_select_and_return_wait_for_the_server_once(pg, app):
    """Issue 10: a checkout + Core select + return sends BEGIN with the SELECT
    (the one wait for the server) and the return's ROLLBACK without waiting
    for its reply, which the next checkout reads.  A proxy that forwards
    nothing (blackhole) proves both: what a waiting client could not send, it
    sent; what would wait, returned."""
    import threading

    from helpers import wait_for
    from noodlecore.testing.proxy import TcpProxy

    stmt = sa.text("SELECT CAST(:k AS int) AS k, '" + "x" * 3000 + "' AS pad")

    def in_thread(fn):
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("value", fn()), daemon=True)
        t.start()
        return t, out

    with TcpProxy(pg.host, pg.port) as px:
        e = sa.create_engine("postgresql+noodlecore://postgres@127.0.0.1:%d/postgres?application_name=%s"
                             "&ping_after_idle=3600" % (px.port, app))
        try:
            with e.connect() as c:                  # the first connect: the dialect's own queries
                c.execute(stmt, {"k": 0}).one()
            c = e.connect()
            px.blackhole(True)
            before = px.client_bytes
            t, out = in_thread(lambda: c.execute(stmt, {"k": 1}).one().k)
            wait_for(lambda: px.client_bytes - before >= 3000, timeout=10,
                     what="the SELECT sent with BEGIN, before any reply")
            assert t.is_alive()
            px.blackhole(False)
            t.join(10)
            assert out == {"value": 1}
            pid = c.connection.dbapi_connection.backend_pid
            px.blackhole(True)
            before = px.client_bytes
            t, out = in_thread(c.close)             # SQLAlchemy's rollback, then the native return
            t.join(10)
            assert not t.is_alive(), "the return waited for ROLLBACK's reply"
            wait_for(lambda: px.client_bytes > before, timeout=10, what="the ROLLBACK to reach the proxy")
            px.blackhole(False)
            with e.connect() as c:
                assert c.connection.dbapi_connection.backend_pid == pid   # reused once the reply was read
                assert c.execute(stmt, {"k": 2}).one().k == 2
        finally:
            px.blackhole(False)
            e.dispose()
