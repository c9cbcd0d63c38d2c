"""The pool through pgbouncer in transaction mode (issue 9, "Deployment shapes").

Debian's pgbouncer (noodlecore.testing.PgBouncer, one per test, pool_mode=transaction) in front of
the shared server.  What must work: statements with parameters, transactions, a statement deadline
whose cancel reaches the right server backend through pgbouncer (the statement really stops on the
server), Ctrl-C, a backend killed behind pgbouncer, pgbouncer restarted, health checks.  And what
the README says does not work in transaction mode (session state outside a transaction is the
server connection's, not the client's), each claim shown here with a server connection shared by
two clients (default_pool_size=1).

pgbouncer answers the client's startup with a cancel key of its own (a random pid and key): our
cancel sends that key to pgbouncer, which forwards the request to the server connection the client
is linked to at that moment.  backend_pid is therefore pgbouncer's number, not a server pid.
"""

import threading

import pytest

from noodlecore.database import DatabaseConnectionPool, DataError, OperationalError, QueryTimeoutError
from noodlecore.database.errors import ConnectionPoolError
from helpers import wait_for
from test_interrupt import BOUND, Child

# Their subject is the server's and the network's behaviour (the same C paths on
# every interpreter): tests/run.sh runs them in pytest-python3 and pytest-asan,
# not on the second CPython.
pytestmark = pytest.mark.network


@pytest.fixture
def bouncer(pg_factory, pg):
    return pg_factory.pgbouncer(pg)


@pytest.fixture
def shared_server(pg_factory, pg):
    """pgbouncer with one server connection: every client's statements run on it, one at a time."""
    return pg_factory.pgbouncer(pg, settings={"default_pool_size": 1})


@pytest.fixture
def bpool(make_pool, app):
    """bpool(bouncer, **options) -> a pool connected through that pgbouncer."""
    def make(b, **options):
        return make_pool(dsn=b.dsn(application_name=app), **options)
    return make


def server_sessions(pg, app):
    """{server pid: (state, query)} of the server's sessions of this test (pgbouncer passes the
    client's application_name on to the server connection it links the client to)."""
    rows = pg.sql("select pid, coalesce(state, ''), query from pg_stat_activity "
                  "where application_name = '%s' and backend_type = 'client backend'" % app)
    return {int(r[0]): (r[1], r[2]) for r in rows}


def running(pg, app, marker):
    """Server pids where a statement containing marker is active now."""
    return [pid for pid, (state, query) in server_sessions(pg, app).items()
            if state == "active" and marker in query]


def assert_connection_failure(exc):
    assert exc.error_code == 2004, exc
    assert exc.connection_failure is True, exc


# ---------------------------------------------------------------------------
# what works
# ---------------------------------------------------------------------------

def test_statements_and_transactions(bouncer, bpool, pg, table):
    pool = bpool(bouncer, max_connections=4, timeout=10, query_timeout=10)
    with pool.get_connection() as conn:
        assert conn.execute_query("select %s::int + %s as n", (40, 2)) == [{"n": 42}]
        assert conn.execute_query("select %(a)s::text || %(a)s as s", {"a": "ab"}, row_format="tuple") == [("abab",)]
        with conn.transaction():
            assert conn.execute_query("insert into %s (v, note) values (%%s, %%s)" % table, (1, "kept")) == 1
            assert conn.in_transaction
        with pytest.raises(RuntimeError):
            with conn.transaction():
                conn.execute_query("insert into %s (v, note) values (%%s, %%s)" % table, (2, "rolled back"))
                raise RuntimeError("roll it back")
        conn.execute_many("insert into %s (v, note) values (%%s, %%s)" % table, [(3, "m"), (4, "m")])
    # what the server holds, seen without pgbouncer
    assert pg.sql("select v, note from %s order by v" % table) == [["1", "kept"], ["3", "m"], ["4", "m"]]


def test_returning_an_open_transaction_frees_the_server_connection(shared_server, bpool, pg, table):
    """A lease given back with its transaction open (or failed) is rolled back by the pool, which
    also gives pgbouncer's server connection back: with one server connection, the next client
    runs at once and sees nothing of the abandoned transaction."""
    pool = bpool(shared_server, max_connections=2, timeout=10, query_timeout=5)
    other = pool.acquire()
    try:
        for fail in (False, True):
            with pool.get_connection() as conn:
                conn.begin()
                conn.execute_query("insert into %s (v) values (1)" % table)
                if fail:
                    with pytest.raises(DataError):
                        conn.execute_query("select 1/0")
            # a server connection still pinned to the abandoned transaction would make this wait
            # in pgbouncer's queue past its deadline
            assert other.execute_query("select count(*) as n from %s" % table, timeout=3) == [{"n": 0}]
    finally:
        other.release()
    assert pg.scalar("select count(*) from %s" % table) == "0"


def test_threads_share_few_server_connections(pg_factory, bpool, table, pg):
    """Six clients on pgbouncer's two server connections: our statements are unnamed (Parse, Bind,
    Execute, Sync in one go), so they never clash on a server connection another client used."""
    b = pg_factory.pgbouncer(pg, settings={"default_pool_size": 2})
    pool = bpool(b, max_connections=6, timeout=20, query_timeout=20)
    errors = []

    def work(k):
        try:
            for i in range(20):
                with pool.get_connection() as conn:
                    with conn.transaction():
                        conn.execute_query("insert into %s (v, note) values (%%s, %%s)" % table,
                                           (k * 100 + i, "t%d" % k))
                        [row] = conn.execute_query("select note from %s where v = %%s" % table, (k * 100 + i,))
                        assert row == {"note": "t%d" % k}
        except Exception as e:      # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert pg.scalar("select count(*) from %s" % table) == "120"
    servers = [r for r in b.admin_dicts("SHOW SERVERS") if r["database"] == "postgres"]
    assert 1 <= len(servers) <= 2, servers


def test_execute_many_on_a_shared_server_connection(shared_server, bpool, pg, table):
    """execute_many parses its statement once per pipeline into the unnamed statement and binds
    each row to it: two clients taking turns on pgbouncer's one server connection, each with
    batches of several pipelines (1500 rows: two) in their own or the caller's transaction, never
    find the other's statement there (a named statement would clash or be missing)."""
    pool = bpool(shared_server, max_connections=2, timeout=10, query_timeout=10, row_format="tuple")
    a, b = pool.acquire(), pool.acquire()
    try:
        ins = "insert into %s (v, note) values (%%s, %%s)" % table
        upd = "update %s set note = %%s where v = %%s" % table
        assert a.execute_many(ins, [(i, "a") for i in range(1500)]) == 1500
        assert b.execute_many(upd, [("b", i) for i in range(0, 1500, 2)]) == 750
        assert a.execute_many(ins, [(i, "a2") for i in range(1500, 3000)]) == 1500
        b.begin()
        assert b.execute_many(ins, [(i, 2 ** 40 if i % 2 else "x") for i in range(3000, 4500)]) == 1500
        b.commit()
    finally:
        a.release()
        b.release()
    assert pg.sql("select note, count(*) from %s group by note order by note" % table) == [
        ["1099511627776", "750"], ["a", "750"], ["a2", "1500"], ["b", "750"], ["x", "750"]]


def test_statement_timeout_cancels_the_right_backend(pg_factory, bpool, make_pool, pg, app):
    """Two server connections, one statement on each: the one past its deadline is cancelled
    (through pgbouncer, with pgbouncer's key) and stops on the server; the other, waiting on a
    lock we hold, is still waiting afterwards and then ends normally."""
    b = pg_factory.pgbouncer(pg, settings={"default_pool_size": 2})
    holder = make_pool(max_connections=1).acquire()         # straight to the server
    holder.execute_query("select pg_advisory_lock(777)")
    pool = bpool(b, max_connections=2, timeout=10)
    other = pool.acquire()
    mine = pool.acquire()
    try:
        result = {}

        def waits_for_the_lock():
            try:
                with other.transaction():
                    result["other"] = other.execute_query(
                        "select pg_advisory_xact_lock(777) /* other */, 'other done' as s", row_format="tuple")
            except Exception as e:      # checked below
                result["other"] = e

        t = threading.Thread(target=waits_for_the_lock)
        t.start()
        [other_pid] = wait_for(lambda: running(pg, app, "/* other */"), timeout=10, what="the other statement")
        with pytest.raises(QueryTimeoutError) as ei:
            mine.execute_query("select pg_sleep(30) /* mine */", timeout=0.3)
        assert ei.value.error_code == 2012
        assert "cancelled on the server" in str(ei.value), ei.value
        # the server stopped it (the core waited for the server's "canceled" answer)...
        assert running(pg, app, "/* mine */") == []
        # ...and not the other one, which still waits on its own backend
        assert running(pg, app, "/* other */") == [other_pid]
        assert mine.execute_query("select 1 as still_usable") == [{"still_usable": 1}]
        holder.execute_query("select pg_advisory_unlock(777)")
        t.join(30)
        assert result["other"] == [("", "other done")], result["other"]
    finally:
        holder.release()
        mine.release()
        other.release()


def test_startup_options_are_refused(bouncer, bpool, app):
    """pgbouncer refuses startup parameters it does not know, libpq's `options` (-c settings) among
    them: a typed connect error naming it.  (Our own startup asks only for client_encoding and
    application_name, which pgbouncer knows.)"""
    pool = bpool(bouncer, max_connections=1, timeout=5, retry_attempts=1)
    with pool.get_connection() as conn:
        assert conn.execute_query("select 1 as x") == [{"x": 1}]
    bad = DatabaseConnectionPool(bouncer.dsn(application_name=app, options="-c work_mem=7MB"),
                                 max_connections=1, timeout=5, retry_attempts=1)
    try:
        with pytest.raises(ConnectionPoolError) as ei:
            with bad.get_connection():
                pass
    finally:
        bad.shutdown(timeout=0)
    assert ei.value.error_code == 2009, ei.value
    assert "unsupported startup parameter: options" in str(ei.value), ei.value


def queue_behind_a_transaction(pool):
    """Two leases on a pgbouncer with one server connection: the first holds it in a transaction,
    so the second's statements wait in pgbouncer's queue."""
    blocker, queued = pool.acquire(), pool.acquire()
    blocker.begin()
    blocker.execute_query("select 1")
    return blocker, queued


def test_deadline_of_a_statement_queued_in_pgbouncer(shared_server, bpool, pg, table):
    """pgbouncer 1.18 ignores the cancel of a statement still waiting for a server connection
    ("cancel request for idle client"; pgbouncer issues #1222 and #1314).  The pool gives up on the
    connection after the cancel grace: QueryTimeoutError 2012 saying so, not_applied false, the
    connection closed.  But pgbouncer had already read the statement and still runs it once a
    server connection frees up: the README's warning, checked here."""
    pool = bpool(shared_server, max_connections=2, timeout=10)
    blocker, queued = queue_behind_a_transaction(pool)
    try:
        with pytest.raises(QueryTimeoutError) as ei:
            queued.execute_query("insert into %s (v, note) values (1, 'queued')" % table, timeout=0.3)
        assert ei.value.error_code == 2012 and ei.value.not_applied is False
        assert "connection discarded" in str(ei.value) and "pgbouncer" in str(ei.value), ei.value
        assert "cancelled on the server" not in str(ei.value)
        with pytest.raises(OperationalError) as ei:     # given up on: that lease's connection is gone
            queued.execute_query("select 1")
        assert_connection_failure(ei.value)
        assert pg.scalar("select count(*) from %s" % table) == "0"
        blocker.rollback()
        # the server connection is free: pgbouncer hands it to the queued statement
        wait_for(lambda: pg.scalar("select count(*) from %s" % table) == "1", timeout=10,
                 what="the timed-out statement to run after all")
    finally:
        blocker.release()
        queued.release()
    with pool.get_connection() as conn:
        assert conn.execute_query("select 1 as x") == [{"x": 1}]


def test_query_wait_timeout_below_the_deadline_drops_the_queued_statement(pg_factory, bpool, pg, table):
    """The remedy: pgbouncer's query_wait_timeout below the statement deadlines.  pgbouncer then
    ends the waiting client itself (FATAL query_wait_timeout: OperationalError 2004 with
    connection_failure) and drops its statement, which never runs."""
    b = pg_factory.pgbouncer(pg, settings={"default_pool_size": 1, "query_wait_timeout": 1})
    pool = bpool(b, max_connections=2, timeout=10)
    blocker, queued = queue_behind_a_transaction(pool)
    try:
        with pytest.raises(OperationalError) as ei:
            queued.execute_query("insert into %s (v, note) values (1, 'queued')" % table, timeout=20)
        assert_connection_failure(ei.value)
        assert "query_wait_timeout" in str(ei.value), ei.value
        blocker.execute_query("insert into %s (v, note) values (2, 'blocker')" % table)
        blocker.commit()
        # the server connection was free since: had pgbouncer kept the queued insert, it would
        # have run before this
        assert blocker.execute_query("select v from %s order by v" % table) == [{"v": 2}]
    finally:
        blocker.release()
        queued.release()
    assert pg.sql("select v from %s order by v" % table) == [["2"]]


def test_backend_pid_is_pgbouncers(bouncer, bpool, pg, app):
    """backend_pid is the pid of the cancel key pgbouncer gave the client, not a server pid;
    SELECT pg_backend_pid() names the server connection that ran that statement."""
    pool = bpool(bouncer, max_connections=1, timeout=10)
    with pool.get_connection() as conn:
        [row] = conn.execute_query("select pg_backend_pid() as pid")
        assert row["pid"] in server_sessions(pg, app)
        assert conn.backend_pid is not None
        assert conn.backend_pid != row["pid"]
        assert conn.backend_pid not in [int(p) for p in pg.backend_pids()]


def test_ctrl_c_in_a_statement(bouncer, pg, app):
    """Ctrl-C in a statement through pgbouncer: KeyboardInterrupt within the bound, the statement
    cancelled on the server, the pool still works (test_interrupt's child, through pgbouncer)."""
    child = Child("statement", bouncer.dsn(application_name=app))
    try:
        child.expect("PID")
        wait_for(lambda: running(pg, app, "pg_sleep(30)"), timeout=10, what="pg_sleep(30) to run")
        took = child.interrupt()
        wait_for(lambda: not running(pg, app, "pg_sleep(30)"), timeout=5, what="the statement to stop")
        _, after = child.expect("AFTER")
        assert after == "[(1,)] 0", after
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT" % took


def test_backend_killed_mid_statement(bouncer, bpool, pg, app):
    """pg_terminate_backend on the server while a statement runs: pgbouncer closes the client's
    connection ("server conn crashed?"); the pool raises OperationalError 2004 with
    connection_failure, drops that connection and the next borrow works."""
    pool = bpool(bouncer, max_connections=2, timeout=10)
    with pool.get_connection() as conn:
        killed = []

        def kill_it():
            [pid] = wait_for(lambda: running(pg, app, "pg_sleep(30)"), timeout=10, what="the statement")
            pg.sql("select pg_terminate_backend(%d)" % pid)
            killed.append(pid)

        t = threading.Thread(target=kill_it)
        t.start()
        with pytest.raises(OperationalError) as ei:
            conn.execute_query("select pg_sleep(30)", timeout=20)
        t.join(20)
        assert killed
        assert_connection_failure(ei.value)
        assert "terminating connection due to administrator command" in str(ei.value)
    stats = pool.get_stats()
    assert stats.total_connections == 0 and stats.connections_closed == 1, stats
    with pool.get_connection() as conn:
        assert conn.execute_query("select 1 as x") == [{"x": 1}]


def test_backend_killed_inside_a_transaction(bouncer, bpool, pg, app, table):
    """Killed while the client is idle inside a transaction (its server connection is pinned to
    it): the next statement raises 2004 with connection_failure, leaving the block too; nothing of
    the transaction is committed; the pool recovers."""
    pool = bpool(bouncer, max_connections=2, timeout=10)
    with pool.get_connection() as conn:
        with pytest.raises(OperationalError) as ei:
            with conn.transaction():
                conn.execute_query("insert into %s (v) values (1)" % table)
                [row] = conn.execute_query("select pg_backend_pid() as pid")
                pg.sql("select pg_terminate_backend(%d)" % row["pid"])
                wait_for(lambda: row["pid"] not in [int(p) for p in pg.backend_pids()], what="the backend to exit")
                conn.execute_query("select 1")
        assert_connection_failure(ei.value)
    assert pg.scalar("select count(*) from %s" % table) == "0"
    with pool.get_connection() as conn:
        assert conn.execute_query("select 1 as x") == [{"x": 1}]


def test_idle_backend_killed_is_invisible(bouncer, bpool, pg, app):
    """Killed while no transaction is open: the client holds no server connection then, so its
    connection to pgbouncer stays up and the next statement runs on another server connection."""
    pool = bpool(bouncer, max_connections=1, timeout=10)
    with pool.get_connection() as conn:
        [row] = conn.execute_query("select pg_backend_pid() as pid")
        pg.sql("select pg_terminate_backend(%d)" % row["pid"])
        wait_for(lambda: row["pid"] not in [int(p) for p in pg.backend_pids()], what="the backend to exit")
        [again] = conn.execute_query("select pg_backend_pid() as pid")
        assert again["pid"] != row["pid"]
    assert pool.get_stats().connections_closed == 0


def test_pgbouncer_restarted(bouncer, bpool):
    """A restart closes every client connection.  Idle ones: the next borrow finds them dead
    (socket check or ping) and opens new ones, the caller sees nothing.  One in a statement:
    OperationalError 2004 with connection_failure."""
    pool = bpool(bouncer, max_connections=2, timeout=10, ping_after_idle=0)
    a, b = pool.acquire(), pool.acquire()
    a.release()
    b.release()
    assert pool.get_stats().idle_connections == 2
    bouncer.restart()
    for _ in range(2):
        with pool.get_connection() as conn:
            assert conn.execute_query("select 1 as x") == [{"x": 1}]
    stats = pool.get_stats()
    assert stats.connections_opened >= 3, stats       # at least one dead idle connection replaced

    with pool.get_connection() as conn:
        errors = []

        def run():
            try:
                conn.execute_query("select pg_sleep(30)", timeout=20)
            except Exception as e:          # checked below
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: any(r["state"] == "active" for r in bouncer.admin_dicts("SHOW SERVERS")),
                 timeout=10, what="the statement to reach a server")
        bouncer.restart()
        t.join(20)
        assert len(errors) == 1
        assert isinstance(errors[0], OperationalError), errors[0]
        assert_connection_failure(errors[0])
    with pool.get_connection() as conn:
        assert conn.execute_query("select 1 as x") == [{"x": 1}]


def test_health_checks_through_pgbouncer(bouncer, bpool):
    """The pool's ping (an empty query) goes through pgbouncer; the background check finds the
    connections dead while pgbouncer is down; a borrow then fails with a typed error naming the
    refused connect, and works again once pgbouncer is back."""
    pool = bpool(bouncer, max_connections=2, timeout=2, connect_timeout=2, retry_attempts=1,
                 validation_interval=0.1, ping_after_idle=0)
    with pool.get_connection() as conn:
        conn.execute_query("select 1")
    with pool.get_connection() as conn:     # pinged on the way out of the pool (ping_after_idle=0)
        assert conn.execute_query("select 1 as x") == [{"x": 1}]
    assert pool.get_stats().validation_failures == 0
    bouncer.stop()
    wait_for(lambda: pool.get_stats().idle_connections == 0, timeout=10, what="the janitor to drop it")
    with pytest.raises(ConnectionPoolError) as ei:
        with pool.get_connection():
            pass
    assert ei.value.error_code == 2009 and ei.value.connection_failure is True, ei.value
    assert "Connection refused" in str(ei.value)
    bouncer.start()
    with pool.get_connection() as conn:
        assert conn.execute_query("select 1 as x") == [{"x": 1}]


# ---------------------------------------------------------------------------
# what does not work in transaction mode (the README's list): session state
# belongs to the server connection, which other clients get next
# ---------------------------------------------------------------------------

def two_clients(shared_server, bpool):
    pool = bpool(shared_server, max_connections=2, timeout=10, query_timeout=10)
    return pool, pool.acquire(), pool.acquire()


def test_set_outside_a_transaction_leaks_to_other_clients(shared_server, bpool):
    pool, a, b = two_clients(shared_server, bpool)
    try:
        a.execute_query("SET work_mem = '7MB'")
        assert b.execute_query("SHOW work_mem") == [{"work_mem": "7MB"}]     # b never SET it
        # SET LOCAL inside a transaction stays with it
        with a.transaction():
            a.execute_query("SET LOCAL work_mem = '9MB'")
            assert a.execute_query("SHOW work_mem") == [{"work_mem": "9MB"}]
        assert b.execute_query("SHOW work_mem") == [{"work_mem": "7MB"}]
    finally:
        a.release()
        b.release()


def test_session_advisory_locks_are_not_the_clients(shared_server, bpool):
    pool, a, b = two_clients(shared_server, bpool)
    try:
        a.execute_query("select pg_advisory_lock(42)")
        # b "holds" a's lock: it can release it
        assert b.execute_query("select pg_advisory_unlock(42) as u") == [{"u": True}]
        # a transaction-level lock is fine: it lives exactly as long as the transaction
        with a.transaction():
            a.execute_query("select pg_advisory_xact_lock(43)")
            assert a.execute_query("select count(*) as n from pg_locks where locktype = 'advisory' "
                                   "and objid = 43 and granted") == [{"n": 1}]
        assert b.execute_query("select count(*) as n from pg_locks where locktype = 'advisory' "
                               "and objid = 43") == [{"n": 0}]
    finally:
        a.release()
        b.release()


def test_listen_belongs_to_the_server_connection(shared_server, bpool):
    pool, a, b = two_clients(shared_server, bpool)
    try:
        a.execute_query("LISTEN nc_channel")
        assert b.execute_query("select pg_listening_channels() as c") == [{"c": "nc_channel"}]
        b.execute_query("UNLISTEN *")
    finally:
        a.release()
        b.release()


def test_sql_prepared_statements_and_temp_tables_belong_to_the_server_connection(shared_server, bpool):
    pool, a, b = two_clients(shared_server, bpool)
    try:
        a.execute_query("PREPARE nc_q AS SELECT 7 AS n")
        assert b.execute_query("EXECUTE nc_q") == [{"n": 7}]
        b.execute_query("DEALLOCATE nc_q")
        a.execute_query("CREATE TEMP TABLE nc_tmp (v int)")
        b.execute_query("INSERT INTO nc_tmp VALUES (1)")
        assert a.execute_query("SELECT v FROM nc_tmp") == [{"v": 1}]
        a.execute_query("DROP TABLE nc_tmp")
    finally:
        a.release()
        b.release()


# ---------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------

def test_harness_pgbouncer_lifecycle(pg_cluster, pg):
    """PgBouncer runs as postgres with its working directory under the cluster's root (so
    sweep_stale and PgCluster.close find one a killed run left), restarts on the same port, and
    close() stops it and removes its directory."""
    import os
    from noodlecore.testing import PgBouncer
    from noodlecore.testing.processes import alive, pids_in
    b = PgBouncer(pg)
    try:
        b.start()
        pid, port = b.pid, b.port
        assert os.readlink("/proc/%d/cwd" % pid).startswith(pg_cluster.root + "/")
        assert pid in pids_in(pg_cluster.root)
        if os.geteuid() == 0:
            assert os.stat("/proc/%d" % pid).st_uid != 0
        assert b.admin("SHOW VERSION")[0][0].startswith("PgBouncer")
        b.restart()
        assert b.port == port and b.pid != pid and not alive(pid)
        assert [r["value"] for r in b.admin_dicts("SHOW CONFIG") if r["key"] == "pool_mode"] == ["transaction"]
    finally:
        last = b.pid
        b.close()
    assert not alive(last)
    assert not os.path.exists(b.dir)
