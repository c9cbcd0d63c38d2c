"""Edges of issue 8 (points 3, 4 and part of 12), each reproduced first:

* a Python backend's transaction left open by a borrower is rolled back on
  return (the README's promise), through the backend protocol;
* a long non-ASCII server message is cut on a character boundary: a duplicate
  key raises IntegrityError with its code and SQLSTATE, not UnicodeDecodeError;
* integers are never silently cut (2**32 + 3 is not 3), a DSN with more hosts
  than a pool tries is refused by name, and a NOTIFY waiting on an idle socket
  does not make the borrow check throw away a good connection.
"""

import pathlib
import re
import sqlite3

import pytest

from helpers import wait_for
from noodlecore.database import (
    ConfigurationError, DatabaseConnectionPool, DatabaseEndpoint, DatabaseFailoverManager, IntegrityError,
)


# ---------------------------------------------------------------------------
# point 3: a Python backend's open transaction does not reach the next borrower
# ---------------------------------------------------------------------------

class TxBackend:
    """A backend with begin/commit/rollback that knows whether it is inside a
    transaction, as a DB-API wrapper would."""

    def __init__(self, log):
        self.log = log
        self.in_txn = False

    def execute_query(self, sql, params=None):
        self.log.append(("execute", sql))
        return 1

    def begin(self):
        self.log.append(("begin",))
        self.in_txn = True

    def commit(self):
        self.log.append(("commit",))
        self.in_txn = False

    def rollback(self):
        self.log.append(("rollback",))
        self.in_txn = False


def test_python_backend_transaction_left_open_is_rolled_back_on_return():
    log = []
    with DatabaseConnectionPool(lambda: TxBackend(log), max_connections=1) as pool:
        with pool.get_connection() as conn:
            conn.begin()
            conn.execute_query("INSERT INTO t VALUES (1)")
            backend = conn.backend
            # leaves the block without commit()
        assert log[-1] == ("rollback",) and not backend.in_txn
        with pool.get_connection() as conn:
            assert conn.backend is backend, "the same connection, reused"
            assert not conn.in_transaction and not conn.backend.in_txn


def test_python_backend_clean_return_costs_no_rollback():
    log = []
    with DatabaseConnectionPool(lambda: TxBackend(log), max_connections=1) as pool:
        with pool.get_connection() as conn:
            conn.ping()
        with pool.get_connection() as conn:
            with conn.transaction():
                conn.execute_query("INSERT INTO t VALUES (1)")
        assert ("rollback",) not in log, log
        assert log[-1] == ("commit",)


class SqlOnlyBackend:
    """No begin()/rollback(): the binding sends the commands as SQL."""

    def __init__(self, log):
        self.log = log

    def execute_query(self, sql, params=None):
        self.log.append(sql)
        return 1


def test_python_backend_without_rollback_method_gets_rollback_sql():
    log = []
    with DatabaseConnectionPool(lambda: SqlOnlyBackend(log), max_connections=1) as pool:
        with pool.get_connection() as conn:
            conn.begin()
            conn.execute_query("UPDATE t SET x = 1")
        # (the new connection's health check, SELECT 1, comes first)
        assert log[log.index("BEGIN"):] == ["BEGIN", "UPDATE t SET x = 1", "ROLLBACK"]
        with pool.get_connection() as conn:
            conn.execute_query("SELECT 1")      # autocommit statements: nothing to undo
        assert log[-1] == "SELECT 1"


class Sqlite3Backend:
    """A real DB-API connection (Python's sqlite3, default isolation level:
    the first INSERT opens a transaction implicitly)."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, timeout=0, check_same_thread=False)

    def execute_query(self, sql, params=None):
        cur = self.db.execute(sql, params or ())
        return cur.fetchall() if cur.description else cur.rowcount

    def rollback(self):
        self.db.rollback()

    def close(self):
        self.db.close()


def test_dbapi_backend_implicit_transaction_is_rolled_back_on_return(tmp_path):
    path = str(tmp_path / "implicit.db")
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x int)")
    setup.commit()
    with DatabaseConnectionPool(lambda: Sqlite3Backend(path), max_connections=1) as pool:
        with pool.get_connection() as conn:
            conn.execute_query("INSERT INTO t VALUES (1)", ())
            assert conn.backend.db.in_transaction
        # Another writer gets the database at once: no lock left behind
        # (before: "database is locked" until the pooled connection's next use).
        setup.execute("INSERT INTO t VALUES (2)")
        setup.commit()
        with pool.get_connection() as conn:
            assert not conn.backend.db.in_transaction
            assert conn.execute_query("SELECT x FROM t", ()) == [(2,)]
    setup.close()


def test_dbapi_backend_commit_outside_begin_commits(tmp_path):
    """The other half: commit() after statements outside begin() reaches a
    backend that has commit() (before: a no-op, and the work stayed in an
    open transaction; with the rollback on return it would be lost)."""
    path = str(tmp_path / "commit.db")
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x int)")
    setup.commit()

    class Committing(Sqlite3Backend):
        def commit(self):
            self.db.commit()

    with DatabaseConnectionPool(lambda: Committing(path), max_connections=1) as pool:
        with pool.get_connection() as conn:
            conn.execute_query("INSERT INTO t VALUES (1)", ())
            conn.commit()
            assert not conn.backend.db.in_transaction
    assert setup.execute("SELECT x FROM t").fetchall() == [(1,)]
    setup.close()


class FailingRollback(TxBackend):
    def rollback(self):
        raise RuntimeError("connection lost during rollback")

    def close(self):
        self.log.append(("close",))


def test_python_backend_whose_rollback_fails_is_discarded():
    log = []
    made = []

    def factory():
        made.append(FailingRollback(log))
        return made[-1]

    with DatabaseConnectionPool(factory, max_connections=1) as pool:
        with pool.get_connection() as conn:
            conn.begin()
        assert ("close",) in log, "a transaction that cannot be rolled back is never lent again"
        with pool.get_connection() as conn:
            assert conn.backend is made[1]


# ---------------------------------------------------------------------------
# point 4: long non-ASCII messages are cut on character boundaries
# ---------------------------------------------------------------------------

# 4-byte characters after 0..3 ASCII ones: wherever the 768-byte cut falls, at
# least three of the four messages would be cut inside a character.
PREFIXES = ["", "a", "ab", "abc"]
WIDE = "\U0001F600" * 300


def test_duplicate_key_on_long_non_ascii_value_is_integrity_error(pg, make_pool, app):
    table = "t_utf8_" + app
    pool = make_pool(max_connections=1)
    with pool.get_connection() as conn:
        conn.execute_query("CREATE TEMP TABLE %s (v text PRIMARY KEY)" % table)
        for prefix in PREFIXES:
            value = prefix + WIDE
            conn.execute_query("INSERT INTO %s VALUES (%%s)" % table, (value,))
            with pytest.raises(IntegrityError) as ei:
                conn.execute_query("INSERT INTO %s VALUES (%%s)" % table, (value,))
            exc = ei.value
            assert exc.error_code == 2005 and exc.sqlstate == "23505"
            assert "duplicate key" in exc.message and "\ufffd" not in exc.message
            assert exc.message.encode("utf-8")          # whole characters only
        assert conn.execute_query("SELECT count(*) AS n FROM %s" % table) == [{"n": 4}]


def test_sqlite_long_non_ascii_message_is_cut_on_a_character(tmp_path):
    """Guard (SQLite's path was already cut safely): RAISE(ABORT, ...) in a trigger."""
    with DatabaseConnectionPool(f"sqlite:///{tmp_path}/u.db", max_connections=1) as pool:
        with pool.get_connection() as conn:
            conn.execute_query("CREATE TABLE t (x text)")
            for i, prefix in enumerate(PREFIXES):
                conn.execute_query("DROP TRIGGER IF EXISTS tr")
                conn.execute_query("CREATE TRIGGER tr BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, '%s'); END"
                                   % (prefix + WIDE))
                with pytest.raises(IntegrityError) as ei:
                    conn.execute_query("INSERT INTO t VALUES (%s)", (str(i),))
                assert ei.value.message.startswith(prefix + "\U0001F600")


# ---------------------------------------------------------------------------
# point 12: integers not cut, too many hosts refused, NOTIFY is not death
# ---------------------------------------------------------------------------

def test_integer_options_past_32_bits_raise_2013():
    for name in ("max_connections", "min_connections", "retry_attempts"):
        for value in (2 ** 32 + 3, -(10 ** 5000)):
            with pytest.raises(ConfigurationError) as ei:
                DatabaseConnectionPool(lambda: SqlOnlyBackend([]), **{name: value})
            assert ei.value.error_code == 2013 and name in ei.value.message
    for name in ("timeout", "retry_backoff", "validation_interval"):      # an int past a double
        with pytest.raises(ConfigurationError) as ei:
            DatabaseConnectionPool(lambda: SqlOnlyBackend([]), **{name: 10 ** 400})
        assert ei.value.error_code == 2013 and name in ei.value.message


def test_endpoint_priority_past_32_bits_raises_2013():
    """Before: priority 2**32 + 3 became priority 3, silently."""
    eps = [DatabaseEndpoint(id="a", name="a", connection_string="sqlite:///:memory:", priority=2 ** 32 + 3)]
    with pytest.raises(ConfigurationError) as ei:
        DatabaseFailoverManager(eps)
    assert ei.value.error_code == 2013 and "priority" in ei.value.message


def hosts_dsn(n):
    return "host=%s port=5432 dbname=x user=u" % ",".join("h%d.invalid" % i for i in range(n))


def test_dsn_with_more_than_sixteen_hosts_is_refused_by_name():
    DatabaseConnectionPool(hosts_dsn(16)).shutdown()      # the limit itself is fine
    for dsn in (hosts_dsn(17), "postgresql://u@" + ",".join("h%d:5432" % i for i in range(20)) + "/x"):
        with pytest.raises(ConfigurationError) as ei:
            DatabaseConnectionPool(dsn)
        assert ei.value.error_code == 2013 and "16 hosts" in ei.value.message


def rx_queue(port, server_port):
    """Bytes waiting to be read on the established TCP socket from local port
    to server_port.  The table lists every socket of the network namespace,
    TIME_WAIT ones of earlier connections on the same port number too: match
    both ends and the state (01, ESTABLISHED)."""
    for name in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(name) as f:
            next(f)
            for line in f:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01"
                        and int(fields[2].rsplit(":", 1)[1], 16) == server_port):
                    return int(fields[4].split(":")[1], 16)
    return None


def test_notify_on_an_idle_connection_does_not_discard_it(pg, make_pool, app):
    """A borrower LISTENed; a NOTIFY from another session waits on the idle
    socket.  Before: the borrow check saw a readable socket and closed a good
    connection.  Now it reads the message first."""
    pool = make_pool(max_connections=1, ping_after_idle=3600)
    channel = "nct_ch_" + app[-40:]
    with pool.get_connection() as conn:
        conn.execute_query("LISTEN %s" % channel)
        pid = conn.backend_pid
    port = int(pg.scalar("select client_port from pg_stat_activity where pid = %d" % pid))
    assert rx_queue(port, pg.port) == 0
    pg.sql("NOTIFY %s, 'hello'" % channel)
    wait_for(lambda: rx_queue(port, pg.port), timeout=10, what="the notification to reach the idle socket")
    for _ in range(2):
        with pool.get_connection() as conn:
            assert conn.backend_pid == pid, "the same session: the notification did not cost the connection"
            assert conn.execute_query("SELECT 1 AS one") == [{"one": 1}]
    st = pool.get_stats()
    assert st.connections_opened == 1 and st.connections_closed == 0 and st.validation_failures == 0


def test_terminated_idle_connection_is_still_caught_by_the_borrow_check(pg, make_pool):
    """The other side of reading before judging: a FATAL (pg_terminate_backend)
    on the idle socket still means dead, and the borrower gets a fresh one."""
    pool = make_pool(max_connections=1, ping_after_idle=3600)
    with pool.get_connection() as conn:
        pid = conn.backend_pid
    pg.sql("select pg_terminate_backend(%d)" % pid)
    wait_for(lambda: pg.scalar("select count(*) from pg_stat_activity where pid = %d" % pid) == "0",
             timeout=10, what="the backend to end")
    with pool.get_connection() as conn:
        assert conn.backend_pid != pid
        assert conn.execute_query("SELECT 1 AS one") == [{"one": 1}]


def test_readme_gil_claims_name_python_backends():
    """The README said the monitor and the maintenance thread run without the
    GIL; for a Python backend they run its code, with the GIL.  Every
    paragraph that promises "no GIL" must say where that stops."""
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    paragraphs = re.split(r"\n(?=- \*\*)|\n\n", readme)
    claims = [p for p in paragraphs if re.search(r"no GIL|without the GIL|GIL is released", p)]
    assert claims
    for p in claims:
        assert "Python" in p, "a 'no GIL' promise that forgets Python backends:\n" + p
