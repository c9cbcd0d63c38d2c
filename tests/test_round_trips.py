"""Round trips of a borrow on PostgreSQL (issue 10): PEP 249's implicit BEGIN
travels with the statement that opens the transaction, and a ROLLBACK (the
DB-API's rollback(), the return of a connection in a transaction) is sent
without waiting for its reply, which is read before the connection's next use.

The proof of "no wait" is a TcpProxy in blackhole mode: it takes what the
client sends and forwards nothing, so a client that waited for a reply would
block; these tests wait for bytes to arrive at the proxy, or for a call to
return, while no reply can come.  Then the error paths of both: a failing
statement after the pipelined BEGIN, the deadline, a lost connection, a
ROLLBACK whose connection dies before its reply is read (the next borrower is
served by another connection; on a borrowed connection the next statement
fails, not sent), shutdown and fork() with a reply pending, Ctrl-C.
"""

import json
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from helpers import subprocess_env, wait_for
from noodlecore import dbapi
from noodlecore.database import DatabaseConnectionPool
from noodlecore.database.errors import OperationalError, QueryTimeoutError
from noodlecore.testing.proxy import TcpProxy

# A statement long enough that its bytes cannot be mistaken for BEGIN's.
LONG = "SELECT %s::int AS k, '" + "x" * 3000 + "' AS pad"


@pytest.fixture
def proxy(pg):
    with TcpProxy(pg.host, pg.port) as px:
        yield px


def via(px, app, **opts):
    q = "".join("&%s=%s" % kv for kv in opts.items())
    return "postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s%s" % (px.port, app, q)


def in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:   # checked by the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# ---- BEGIN with the first statement ---------------------------------------

def test_the_implicit_begin_goes_with_the_first_statement(proxy, app):
    conn = dbapi.connect(via(proxy, app), ping_after_idle=3600)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")            # the session is up
        conn.commit()                      # (a rollback's reply would be read before the next statement)
        proxy.blackhole(True)
        before = proxy.client_bytes
        t, out = in_thread(lambda: cur.execute(LONG, (7,)).fetchone()[0])
        # BEGIN alone would wait for its reply: the statement is sent before any reply
        wait_for(lambda: proxy.client_bytes - before >= 3000, timeout=10,
                 what="the statement to be sent with BEGIN, before any reply")
        assert t.is_alive()
        proxy.blackhole(False)
        t.join(10)
        assert out == {"value": 7}
        assert conn._pooled.in_transaction     # BEGIN ran: the transaction is PEP 249's
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() "
                    "AND xact_start IS NOT NULL AND state = 'active'")
        assert cur.fetchone() == (1,)
        conn.commit()
        assert not conn._pooled.in_transaction
    finally:
        proxy.blackhole(False)
        conn.close()


def test_a_failing_first_statement_leaves_the_transaction_failed(pg, app):
    conn = dbapi.connect(pg.dsn(application_name=app))
    try:
        cur = conn.cursor()
        with pytest.raises(dbapi.DataError) as ei:
            cur.execute("SELECT 1 / %s", (0,))
        assert ei.value.sqlstate == "22012" and ei.value.statement_sent is True
        assert not str(ei.value).startswith("BEGIN")   # the statement's error, not BEGIN's
        assert conn._pooled.in_transaction             # failed, for the caller to roll back
        with pytest.raises(dbapi.InternalError) as ei:
            cur.execute("SELECT %s", (1,))
        assert ei.value.sqlstate == "25P02"
        conn.rollback()
        assert cur.execute("SELECT %s::int", (5,)).fetchone() == (5,)
        conn.commit()
    finally:
        conn.close()


def test_pipelined_begin_and_statement_past_the_deadline(pg, app):
    conn = dbapi.connect(pg.dsn(application_name=app), query_timeout=0.3)
    try:
        cur = conn.cursor()
        with pytest.raises(QueryTimeoutError) as ei:
            cur.execute("SELECT pg_sleep(%s)", (30,))
        assert ei.value.statement_sent is True
        conn.rollback()
        assert cur.execute("SELECT %s::int", (1,)).fetchone() == (1,)   # the cancel kept the session
        conn.rollback()
    finally:
        conn.close()


def test_pipelined_begin_and_statement_on_a_connection_killed_meanwhile(pg, app):
    conn = dbapi.connect(pg.dsn(application_name=app))
    other = DatabaseConnectionPool(pg.dsn(application_name=app + "_k"), max_connections=1)
    k = other.acquire()
    try:
        k.execute_query("SELECT pg_advisory_lock(4242)")
        pid = conn.backend_pid
        cur = conn.cursor()
        t, out = in_thread(lambda: cur.execute("SELECT pg_advisory_xact_lock(%s)", (4242,)))
        wait_for(lambda: k.execute_query("SELECT count(*) AS n FROM pg_locks WHERE pid = %s AND NOT granted",
                                         (pid,))[0]["n"], timeout=10, what="the statement to wait for the lock")
        k.execute_query("SELECT pg_terminate_backend(%s)", (pid,))
        t.join(10)
        e = out.get("error")
        assert e is not None and e.connection_failure and e.statement_sent is True, out
    finally:
        k.release()
        conn.close()
        other.shutdown(timeout=0)


def test_a_statement_refused_before_sending_leaves_no_transaction_behind(pg, app):
    """BEGIN travels with the statement: when the statement is refused before
    anything is sent (a parameter that cannot be converted), no transaction
    was opened, and the connection must not think one was (an execute_many
    would then not get its own all-or-nothing transaction)."""
    conn = dbapi.connect(pg.dsn(application_name=app))
    try:
        cur = conn.cursor()
        conn.autocommit = True
        cur.execute("CREATE TEMP TABLE rt_refused (v int CHECK (v < 1500))")
        conn.autocommit = False
        with pytest.raises(dbapi.ProgrammingError) as ei:
            cur.execute("SELECT %s", (object(),))
        assert "cannot send" in str(ei.value)
        assert not conn._pooled.in_transaction
        conn.autocommit = True                            # no transaction open: allowed
        with pytest.raises(dbapi.IntegrityError):         # row 1500 fails, in the second pipeline
            cur.executemany("INSERT INTO rt_refused VALUES (%s)", [(i,) for i in range(2000)])
        assert cur.execute("SELECT count(*) FROM rt_refused").fetchone() == (0,)   # all or nothing
    finally:
        conn.close()


def test_without_parameters_begin_is_its_own_statement(pg, app):
    """Text sent as it is may hold several statements (the simple protocol):
    BEGIN is not glued to it."""
    conn = dbapi.connect(pg.dsn(application_name=app))
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1; SELECT 2")
        assert cur.fetchall() == [(2,)]
        assert conn._pooled.in_transaction
        conn.rollback()
    finally:
        conn.close()


# ---- ROLLBACK without waiting for its reply -------------------------------

def test_rollback_and_return_do_not_wait_for_the_reply(proxy, app):
    with DatabaseConnectionPool(via(proxy, app), max_connections=1, ping_after_idle=3600) as pool:
        c = pool.acquire()
        pid = c.backend_pid
        c.begin()
        c.execute_query("SELECT 1")
        proxy.blackhole(True)
        before = proxy.client_bytes
        t, out = in_thread(c.release)      # the return rolls back
        t.join(10)
        assert not t.is_alive() and "error" not in out, "the return waited for ROLLBACK's reply"
        wait_for(lambda: proxy.client_bytes > before, timeout=10, what="ROLLBACK on its way")
        assert pool.get_stats().idle_connections == 1
        # the next borrow reads the reply first (a borrow waits, the return did not)
        t, out = in_thread(pool.acquire)
        wait_for(lambda: pool.get_stats().idle_connections == 0, timeout=10, what="the borrow to take it")
        assert t.is_alive()
        proxy.blackhole(False)
        t.join(10)
        c = out["value"]
        assert c.backend_pid == pid and not c.in_transaction
        assert c.execute_query("SELECT 2 AS v") == [{"v": 2}]
        c.release()
        st = pool.get_stats()
        assert st.validation_failures == 0 and st.connections_opened == 1


def test_dbapi_rollback_does_not_wait_and_the_next_statement_reads_the_reply(proxy, app):
    conn = dbapi.connect(via(proxy, app), ping_after_idle=3600)
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s::int", (1,))
        proxy.blackhole(True)
        t, out = in_thread(conn.rollback)
        t.join(10)
        assert not t.is_alive() and "error" not in out, "rollback() waited for its reply"
        assert not conn._pooled.in_transaction
        proxy.blackhole(False)
        assert cur.execute("SELECT %s::int", (2,)).fetchone() == (2,)
        conn.commit()
    finally:
        proxy.blackhole(False)
        conn.close()


def test_a_connection_lost_with_a_reply_pending_is_replaced_before_the_next_borrower_uses_it(proxy, app):
    with DatabaseConnectionPool(via(proxy, app), max_connections=1, ping_after_idle=3600) as pool:
        with pool.get_connection() as c:
            pid = c.backend_pid
            c.begin()
            c.execute_query("SELECT 1")
            proxy.blackhole(True)
        assert pool.get_stats().idle_connections == 1      # returned, its ROLLBACK's reply pending
        proxy.reset_all()                                   # and the connection dies
        proxy.blackhole(False)
        with pool.get_connection() as c:                    # served by another connection, no error
            assert c.backend_pid != pid
            assert c.execute_query("SELECT 3 AS v") == [{"v": 3}]
        st = pool.get_stats()
        assert st.validation_failures == 1 and st.connections_replaced == 1, st
        assert st.connections_opened == 2 and st.connections_closed == 1, st


def test_a_borrowed_connection_lost_after_rollback_fails_the_next_statement_unsent(proxy, app):
    conn = dbapi.connect(via(proxy, app), ping_after_idle=3600)
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s::int", (1,))
        proxy.blackhole(True)
        conn.rollback()                       # sent; its reply held
        proxy.reset_all()
        proxy.blackhole(False)
        with pytest.raises(OperationalError) as ei:
            cur.execute("SELECT %s::int", (2,))
        assert ei.value.connection_failure is True
        assert ei.value.statement_sent is False            # nothing of it went out
    finally:
        proxy.blackhole(False)
        conn.close()


def test_a_reply_not_read_before_the_deadline_is_a_timeout_not_a_lost_connection(proxy, app):
    """The next statement's deadline passes while the ROLLBACK's reply is
    awaited: a QueryTimeoutError (not sent), not a lost connection (which a
    failover manager's observer would take for the endpoint failing)."""
    conn = dbapi.connect(via(proxy, app), ping_after_idle=3600, query_timeout=0.3)
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s::int", (1,))
        proxy.blackhole(True)
        conn.rollback()                       # sent; its reply held
        with pytest.raises(QueryTimeoutError) as ei:
            cur.execute("SELECT %s::int", (2,))
        assert ei.value.statement_sent is False and ei.value.connection_failure is False, ei.value
        assert "ROLLBACK" in str(ei.value)
    finally:
        proxy.blackhole(False)
        conn.close()


def test_shutdown_with_a_reply_pending(proxy, app):
    pool = DatabaseConnectionPool(via(proxy, app), max_connections=2, ping_after_idle=3600)
    with pool.get_connection() as c:
        c.begin()
        c.execute_query("SELECT 1")
        proxy.blackhole(True)
    assert pool.get_stats().idle_connections == 1
    t, out = in_thread(lambda: pool.shutdown(timeout=5))
    t.join(10)
    proxy.blackhole(False)
    assert not t.is_alive() and "error" not in out, out
    st = pool.get_stats()
    assert st.closed and st.total_connections == 0 and st.connections_closed == 1, st


def test_fork_with_a_reply_pending_leaves_it_to_the_parent(pg, app):
    """The child never reads the parent's pending reply (it would steal it
    from the parent's socket): the parent's next borrow gets the same session
    with no validation failure."""
    code = f"""
import json, os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
from noodlecore.database import DatabaseConnectionPool
from noodlecore.testing.proxy import TcpProxy
px = TcpProxy({pg.host!r}, {pg.port}).start()
pool = DatabaseConnectionPool("postgresql://postgres@127.0.0.1:%d/postgres?application_name={app}" % px.port,
                              max_connections=2, ping_after_idle=3600)
with pool.get_connection() as c:
    parent_pid = c.backend_pid
    c.begin()
    c.execute_query("SELECT 1")
    px.blackhole(True)
assert pool.get_stats().idle_connections == 1
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    with pool.get_connection() as c:
        child_pid = c.backend_pid
        c.execute_query("SELECT 1")
    os.write(w, json.dumps({{"pid": child_pid}}).encode())
    os._exit(0)
os.close(w)
px.blackhole(False)
with os.fdopen(r) as f:
    said = json.loads(f.read() or "null")
_, status = os.waitpid(pid, 0)
with pool.get_connection() as c:
    again = c.backend_pid
    c.execute_query("SELECT 1")
st = pool.get_stats()
print("RESULT " + json.dumps({{"status": status, "parent_pid": parent_pid, "again": again, "child": said,
                               "validation_failures": st.validation_failures}}))
pool.shutdown(timeout=0)
px.close()
"""
    env = subprocess_env()
    if "ASAN_OPTIONS" in env:   # as tests/test_fork.py: no leak check in a child forked from threads
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env=env, cwd="/")
    lines = [ln[len("RESULT "):] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    res = json.loads(lines[-1])
    assert res["status"] == 0 and res["child"] and res["child"]["pid"] != res["parent_pid"], res
    assert res["again"] == res["parent_pid"] and res["validation_failures"] == 0, res


def test_a_session_to_reset_still_waits_for_rollback_and_discard(pg, app):
    """A borrower that changed the session: the return rolls back and runs
    DISCARD ALL as before (waiting), so the next borrower gets clean defaults."""
    with DatabaseConnectionPool(pg.dsn(application_name=app), max_connections=1) as pool:
        with pool.get_connection() as c:
            c.begin()
            c.execute_query("SET search_path TO pg_catalog")
        with pool.get_connection() as c:
            assert not c.in_transaction
            assert c.execute_query("SHOW search_path")[0]["search_path"] == '"$user", public'


def test_too_many_parameters_are_refused_before_anything_is_sent(pg, app):
    conn = dbapi.connect(pg.dsn(application_name=app))
    try:
        cur = conn.cursor()
        with pytest.raises(dbapi.ProgrammingError) as ei:
            cur.execute("SELECT " + ",".join(["%s"] * 70000), [1] * 70000)
        assert ei.value.statement_sent is False and "65535" in str(ei.value)
        assert cur.execute("SELECT %s::int", (3,)).fetchone() == (3,)   # the same session goes on
    finally:
        conn.close()


CTRL_C_CHILD = r'''
import sys
from noodlecore import dbapi
conn = dbapi.connect(sys.argv[1])
cur = conn.cursor()
print("PID", conn.backend_pid, flush=True)
try:
    cur.execute("SELECT pg_sleep(%s)", (30,))       # BEGIN and the statement, one pipeline
    print("NOT INTERRUPTED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
conn.rollback()
print("AFTER", cur.execute("SELECT %s::int", (1,)).fetchone()[0], flush=True)
conn.close()
'''


def test_ctrl_c_during_the_pipelined_begin_and_statement(pg, app):
    """Ctrl-C cancels the statement on the server; the session stays usable."""
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, pg.dsn(application_name=app)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                            cwd="/")
    try:
        first = proc.stdout.readline().split()
        assert first[:1] == ["PID"], (first, proc.stderr.read() if proc.poll() is not None else "")
        pid = int(first[1])
        with DatabaseConnectionPool(pg.dsn(application_name=app + "_w"), max_connections=1) as watch:
            def active():
                with watch.get_connection() as c:
                    return c.execute_query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = %s "
                                           "AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'",
                                           (pid,))[0]["n"]
            wait_for(active, timeout=15, what="the statement to run")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            assert not active()
        assert "INTERRUPTED" in out.split("\n") and "AFTER 1" in out, (out, err)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
