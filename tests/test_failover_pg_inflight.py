"""A statement in flight when the primary is killed (issue 9): through a
DatabaseFailoverManager's connections a write whose outcome cannot be known
raises OutcomeUnknownError (3039), never a silent replay; what is known
keeps its lost-connection error (2004).

The rule is the C core's (nc_outcome_unknown, nc_sql_effect: csrc/tests
test_error.c and test_lexer.c test it as plain C); here it is seen on a real
PostgreSQL primary, SIGKILLed while every statement waits on a lock another
session holds (so each is certainly in flight at the kill, and nothing burns
CPU meanwhile).  A plain DatabaseConnectionPool keeps 2004 with
``statement_sent`` (README, "Failover").
"""

import threading

import pytest

from helpers import cfg, on_endpoint, two, wait_for, wait_probed
from noodlecore import _native
from noodlecore.database import (DatabaseConnectionPool, OperationalError, OutcomeUnknownError)
from noodlecore.database.failover_manager import DatabaseFailoverManager
from test_database_manager_pg import failover_manager, in_thread, wait_active


def test_the_core_rule_as_the_binding_exports_it():
    none, write, commit = _native.EFFECT_NONE, _native.EFFECT_WRITE, _native.EFFECT_COMMIT
    assert _native.sql_effect("SELECT count(*) AS n FROM t") == none
    assert _native.sql_effect("INSERT INTO t (n) VALUES (1)") == write
    assert _native.sql_effect("insert into t values (1); commit") == commit
    assert _native.sql_effect("COMMIT PREPARED 'x'") == commit
    assert _native.sql_effect("END", dialect=_native.DIALECT_SQLITE) == commit
    # (connection_failure, not_applied, effect, in_transaction)
    assert _native.outcome_unknown(True, False, write, False) is True
    assert _native.outcome_unknown(True, False, write, True) is False     # rolled back with the session
    assert _native.outcome_unknown(True, False, none, False) is False
    assert _native.outcome_unknown(True, False, commit, True) is True
    assert _native.outcome_unknown(True, True, commit, True) is False     # never sent
    assert _native.outcome_unknown(False, False, write, False) is False   # the server answered
    with pytest.raises(ValueError):
        _native.outcome_unknown(True, False, 7, False)
    e = OutcomeUnknownError("x")
    assert e.error_code == 3039 and isinstance(e, OperationalError)
    # a lost connection to whoever asks (the DB-API, SQLAlchemy's is_disconnect)
    assert e.connection_failure is True and e.not_applied is False


# 5000 rows come at once (more than the server's 8 kB send buffer), then it sleeps
STREAM_Q = ("SELECT g, (SELECT 1 FROM pg_sleep(CASE WHEN g = 5000 THEN 60 ELSE 0 END)) AS s "
            "FROM generate_series(1, 6000) g")


def lost(e):
    return isinstance(e, OperationalError) and e.connection_failure and e.statement_sent is True


@pytest.mark.scenario
def test_statements_in_flight_at_a_primary_kill(pg_factory):
    p = pg_factory.primary("inflight")
    p.sql("CREATE TABLE t (n int); INSERT INTO t VALUES (0); CREATE TABLE parent (id int PRIMARY KEY); "
          "INSERT INTO parent VALUES (1); CREATE TABLE child (pid int REFERENCES parent "
          "DEFERRABLE INITIALLY DEFERRED)")
    s = pg_factory.standby(p, name="inflight_s")
    s.wait_replayed(p)
    plain = DatabaseConnectionPool(p.dsn(application_name="nct_plain"), max_connections=3, timeout=5)
    m = DatabaseFailoverManager(two(p, s), config=cfg(pool_max_connections=12))
    try:
        m.start_monitoring()
        wait_probed(m, {"a": "primary", "b": "standby"})
        # The COMMIT to be in flight: its deferred foreign-key check runs at
        # COMMIT, and waits for the lock on parent taken below.
        tx_commit = m._lend(5, "primary")[0]
        tx_commit.begin()
        tx_commit.execute_query("INSERT INTO child VALUES (1)")
        holder = plain.acquire(5)
        holder.begin()
        holder.execute_query("LOCK TABLE t, parent IN ACCESS EXCLUSIVE MODE")

        def on_manager(sql, begin=False):
            def run():
                with m.get_connection(timeout=5) as c:
                    if begin:
                        c.begin()
                    return c.execute_query(sql)
            return run

        def dbapi(sql, autocommit, params=None):
            def run():
                conn = m.connect(timeout=5, autocommit=autocommit)
                try:
                    conn.cursor().execute(sql, params)
                finally:
                    conn.close()
            return run

        # a DB-API stream lost midway (its first rows read, then the server
        # sleeps): its statement is not a plain read (pg_sleep), in autocommit
        streaming, first = threading.Event(), []

        def stream():
            conn = m.connect(timeout=5, autocommit=True)
            try:
                cur = conn.cursor(stream=True)
                cur.execute(STREAM_Q)
                first.append(cur.fetchone())
                streaming.set()
                return cur.fetchall()
            finally:
                conn.close()

        def many(sql, rows):
            def run():
                with m.get_connection(timeout=5) as c:
                    return c.execute_many(sql, rows)
            return run

        def on_plain():
            with plain.get_connection(timeout=5) as c:
                return c.execute_query("INSERT INTO t (n) VALUES (5)")

        runs = {
            "insert": (on_manager("INSERT INTO t (n) VALUES (1)"), "INSERT INTO t (n) VALUES (1)"),
            "select": (on_manager("SELECT count(*) AS n FROM t"), "SELECT count(*) AS n FROM t"),
            "update_in_tx": (on_manager("UPDATE t SET n = n + 1", begin=True), "UPDATE t SET n = n + 1"),
            "commit": (tx_commit.commit, "COMMIT"),
            "dbapi_autocommit": (dbapi("INSERT INTO t (n) VALUES (3)", True), "INSERT INTO t (n) VALUES (3)"),
            "dbapi_tx": (dbapi("INSERT INTO t (n) VALUES (4)", False), "INSERT INTO t (n) VALUES (4)"),
            # with parameters, PEP 249's BEGIN travels with the statement (one round trip)
            "dbapi_tx_params": (dbapi("INSERT INTO t (n) VALUES (%s + 0)", False, (8,)),
                                "INSERT INTO t (n) VALUES ($1 + 0)"),
            # its own BEGIN ... COMMIT, which goes with the last pipeline of 1000 rows:
            # lost with it, unknown; lost in an earlier one, rolled back
            "execute_many": (many("INSERT INTO t (n) VALUES (%s)", [(6,), (7,)]),
                             "INSERT INTO t (n) VALUES ($1)"),
            "execute_many_early": (many("INSERT INTO t (n) VALUES (%s::int)", [(i,) for i in range(1500)]),
                                   "INSERT INTO t (n) VALUES ($1::int)"),
            "plain_insert": (on_plain, "INSERT INTO t (n) VALUES (5)"),
        }
        threads = {}
        for name, (fn, sql) in runs.items():
            threads[name] = in_thread(fn)
            wait_active(p, sql)     # waiting on the lock: in flight
        threads["stream"] = in_thread(stream)
        assert streaming.wait(30) and first == [(1, 1)]
        p.crash()
        out = {}
        for name, (th, o) in threads.items():
            th.join(30)
            assert not th.is_alive(), name
            out[name] = o.get("error", o)
        holder.discard()
        tx_commit.discard()

        # an autocommit write and a COMMIT: the outcome is unknown
        for name in ("insert", "commit", "dbapi_autocommit", "stream", "execute_many"):
            e = out[name]
            assert isinstance(e, OutcomeUnknownError), (name, e)
            assert e.error_code == 3039 and lost(e), (name, e)
            assert "unknown" in str(e) and str(p.port) in str(e), (name, str(e))
            assert isinstance(e.__cause__, OperationalError) and e.__cause__.error_code == 2004, (name, e.__cause__)
            assert e.sqlstate == e.__cause__.sqlstate, name
        # a read, and a write inside a transaction (rolled back with the session): known
        for name in ("select", "update_in_tx", "dbapi_tx", "dbapi_tx_params", "execute_many_early"):
            e = out[name]
            assert not isinstance(e, OutcomeUnknownError) and e.error_code == 2004 and lost(e), (name, e)
        # a plain pool keeps 2004 with statement_sent
        e = out["plain_insert"]
        assert not isinstance(e, OutcomeUnknownError) and e.error_code == 2004 and lost(e), e

        # nothing was replayed on the new primary
        s.promote()
        wait_for(on_endpoint(m, "b"), 15, what="failover to b")
        with m.get_connection(timeout=5) as c:
            assert c.execute_query("SELECT n FROM t ORDER BY n", row_format="tuple") == [(0,)]
            assert c.execute_query("SELECT count(*) AS n FROM child") == [{"n": 0}]
            assert c.execute_query("INSERT INTO t (n) VALUES (9) RETURNING inet_server_port() AS port") == \
                [{"port": s.port}]
    finally:
        m.shutdown()
        plain.shutdown()


@pytest.mark.scenario
def test_manager_over_the_binding_verdict(pg_factory):
    """DatabaseManager on failover connections, whose lost write now comes as
    3039: an idempotent write is still run once more on the new primary; any
    other gets the manager's 3039 (endpoint id, the 2004 as cause)."""
    p = pg_factory.primary("inflight_m")
    p.sql("CREATE TABLE t (n int PRIMARY KEY)")
    s = pg_factory.standby(p, name="inflight_ms")
    s.wait_replayed(p)
    plain = DatabaseConnectionPool(p.dsn(application_name="nct_plain"), max_connections=1, timeout=5)
    try:
        with failover_manager(p, s) as dbm:
            assert dbm.execute_query("SELECT 1 AS one") == [{"one": 1}]
            holder = plain.acquire(5)
            holder.begin()
            holder.execute_query("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            again = "INSERT INTO t (n) VALUES (1) ON CONFLICT DO NOTHING RETURNING inet_server_port() AS port"
            once = "INSERT INTO t (n) VALUES (2)"
            th_again, out_again = in_thread(lambda: dbm.execute_query(again, idempotent=True))
            wait_active(p, again)
            th_once, out_once = in_thread(lambda: dbm.execute_query(once))
            wait_active(p, once)
            p.crash()
            holder.discard()
            s.promote()
            th_again.join(30)
            th_once.join(30)
            assert out_again.get("result") == [{"port": s.port}], out_again
            e = out_once.get("error")
            assert isinstance(e, OutcomeUnknownError) and e.error_code == 3039, out_once
            assert e.endpoint == "a" and "'a'" in str(e)
            assert type(e.__cause__) is OperationalError and e.__cause__.error_code == 2004
            assert e.statement_sent is True
            assert dbm.execute_query("SELECT n FROM t ORDER BY n") == [{"n": 1}]   # 2 not replayed
    finally:
        plain.shutdown()
