"""Ctrl-C while the core waits without the GIL (issue 8, point 8; the fault-matrix row "Ctrl-C in
borrow and in statement").

Each case runs a child Python that blocks in one wait (a borrow from an exhausted pool, a
PostgreSQL statement, SQLite waiting on a lock or running a long query) and says READY once it is
certainly inside it (the pool counts it as a waiter, the server shows the statement active, the
main thread's frame sits on the call).  The test then sends SIGINT and measures the time until the
child reports the KeyboardInterrupt: it must come within 0.5 s (a correctness bound, not a speed
claim; the core checks every 50 ms).  Afterwards the child shows that its pool still works, and
for PostgreSQL the test checks from its own connection that the statement was cancelled on the
server.
"""

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

from figures import record_figure
from helpers import subprocess_env, wait_for

BOUND = 0.5        # seconds from SIGINT to KeyboardInterrupt

CHILD = r'''
import os, sys, threading, time, sqlite3
from noodlecore.database import DatabaseConnectionPool

mode, target = sys.argv[1], sys.argv[2]

def say(*words):
    print(*words, flush=True)

def when(cond):
    """Print READY from a helper thread once cond() holds (the main thread is in C)."""
    def run():
        while not cond():
            time.sleep(0.005)
        say("READY")
    threading.Thread(target=run, daemon=True).start()

def on_the_call_line(line):
    main = threading.main_thread().ident
    return lambda: sys._current_frames()[main].f_lineno == line

if mode == "borrow":
    pool = DatabaseConnectionPool(target, max_connections=1, timeout=30)
    held = pool.acquire()
    when(lambda: pool._raw_stats()["requests_waiting"] == 1)
    try:
        pool.acquire(timeout=30)
        say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    held.release()
    with pool.get_connection(timeout=5) as c:
        say("AFTER", c.execute_query("select 1 as x", row_format="tuple"), pool._raw_stats()["requests_waiting"])
elif mode == "statement":
    pool = DatabaseConnectionPool(target, max_connections=1, timeout=30)
    c = pool.acquire()
    say("PID", c.backend_pid)
    try:
        c.execute_query("select pg_sleep(30)")
        say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    # the same connection when it is still good, a new one otherwise: the pool works
    c.release()
    with pool.get_connection(timeout=5) as c:
        say("AFTER", c.execute_query("select 1 as x", row_format="tuple"), int(c.in_transaction))
elif mode == "failover-borrow":
    from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig
    cfg = FailoverConfig(pool_max_connections=1, pool_timeout=30)
    m = DatabaseFailoverManager([DatabaseEndpoint(id="a", name="A", connection_string=target, priority=1,
                                                  is_primary=True)], config=cfg)
    pool = m.get_pool("a")
    held = pool.acquire()
    when(lambda: pool._raw_stats()["requests_waiting"] == 1)
    try:
        with m.get_connection(timeout=30):
            say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    held.release()
    with m.get_connection(timeout=5) as c:
        say("AFTER", c.execute_query("select 1 as x", row_format="tuple"), pool._raw_stats()["requests_waiting"],
            [e.reason for e in m.get_events()])
    m.shutdown()
elif mode == "nested":
    # the program's SIGINT handler uses the pool itself, from inside the wait it interrupts
    import signal
    pool = DatabaseConnectionPool(target, max_connections=2, timeout=30)

    def on_sigint(signum, frame):
        with pool.get_connection(timeout=5) as other:
            say("HANDLER", other.execute_query("select 2 as y", row_format="tuple"))
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    c = pool.acquire()
    say("PID", c.backend_pid)
    try:
        c.execute_query("select pg_sleep(30)")
        say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    c.release()
    with pool.get_connection(timeout=5) as c:
        say("AFTER", c.execute_query("select 1 as x", row_format="tuple"), int(c.in_transaction))
elif mode == "connect":
    # a server that accepts but never answers: the borrow waits in the connect
    pool = DatabaseConnectionPool(target, max_connections=1, timeout=30, connect_timeout=30, retry_attempts=1)
    when(lambda: pool._raw_stats()["opening_connections"] == 1)
    try:
        pool.acquire()
        say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    st = pool._raw_stats()
    say("AFTER", st["total_connections"], st["opening_connections"], st["connect_failures"])
elif mode == "sqlite-commit":
    pool = DatabaseConnectionPool("sqlite:///" + target, max_connections=1, timeout=30, busy_timeout=30)
    with pool.get_connection() as c:
        c.execute_query("create table t (x int)")
    reader = sqlite3.connect(target, isolation_level=None)
    reader.execute("begin")
    reader.execute("select * from t").fetchall()     # a SHARED lock: COMMIT waits
    c = pool.acquire()
    c.begin()
    c.execute_query("insert into t values (1)")
    when(on_the_call_line(COMMIT_LINE))
    try:
        c.commit()  # COMMIT
        say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    c.release()                                       # rolls back
    reader.execute("rollback")
    with pool.get_connection(timeout=5) as c:
        say("AFTER", c.execute_query("select count(*) from t", row_format="tuple"), int(c.in_transaction))
elif mode in ("sqlite-lock", "sqlite-long"):
    pool = DatabaseConnectionPool("sqlite:///" + target, max_connections=2, timeout=30, busy_timeout=30)
    with pool.get_connection() as c:
        c.execute_query("create table if not exists t (x int)")
    if mode == "sqlite-lock":
        other = sqlite3.connect(target, isolation_level=None)
        other.execute("begin exclusive")
        sql = "insert into t values (1)"
    else:
        sql = "with recursive n(i) as (select 1 union all select i + 1 from n) select count(*) from n"
    c = pool.acquire()
    when(on_the_call_line(CALL_LINE))
    try:
        c.execute_query(sql)  # CALL
        say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    c.release()
    if mode == "sqlite-lock":
        other.execute("rollback")
    with pool.get_connection(timeout=5) as c:
        say("AFTER", c.execute_query("select count(*) from t", row_format="tuple"), int(c.in_transaction))
say("DONE")
'''
CALL_LINE = next(i for i, l in enumerate(CHILD.split("\n"), 1) if l.rstrip().endswith("# CALL"))
COMMIT_LINE = next(i for i, l in enumerate(CHILD.split("\n"), 1) if l.rstrip().endswith("# COMMIT"))


class Child:
    def __init__(self, mode, target, code=None):
        code = code or CHILD.replace("CALL_LINE", str(CALL_LINE)).replace("COMMIT_LINE", str(COMMIT_LINE))
        env = subprocess_env()
        if "ASAN_OPTIONS" in env:
            # No leak check in the child (ASan stage of tests/run.sh): at its exit
            # LeakSanitizer's own stop-the-world tracer crashed ("Tracer caught
            # signal 11", exit 99) in 50-75% of runs while native threads were
            # ending, as in tests/test_fork.py.  Every other ASan and UBSan report
            # still fails the child.
            env["ASAN_OPTIONS"] += ":detect_leaks=0"
        self.proc = subprocess.Popen([sys.executable, "-c", code, mode, target], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=tempfile.gettempdir())
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))
        self.lines.put((time.monotonic(), None))

    def expect(self, prefix, timeout=20):
        """The next line, which must start with prefix; returns (arrival time, words after it)."""
        try:
            at, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("child said nothing for %ss (waiting for %s)" % (timeout, prefix)) from None
        if line is None or not line.startswith(prefix):
            self.proc.kill()
            raise AssertionError("expected %r from the child, got %r; stderr: %s"
                                 % (prefix, line, self.proc.stderr.read()[-2000:]))
        return at, line[len(prefix):].strip()

    def interrupt(self):
        """SIGINT now; seconds until the child reports its KeyboardInterrupt."""
        sent = time.monotonic()
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            at, _ = self.expect("INTERRUPTED", timeout=10)
        except AssertionError:
            self.proc.kill()
            raise
        return at - sent

    def finish(self):
        self.expect("DONE")
        assert self.proc.wait(timeout=20) == 0, self.proc.stderr.read()[-2000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.reader.join(10)        # ends at EOF
        self.proc.stdout.close()
        self.proc.stderr.close()


def sleeping_sessions(pg, app):
    rows = pg.sql("select pid from pg_stat_activity where application_name = '%s' and state = 'active' "
                  "and query like '%%pg_sleep(30)%%'" % app)
    return [int(r[0]) for r in rows]


def test_ctrl_c_in_borrow_and_in_statement(pg, app):
    # a borrow waiting on an exhausted pool
    child = Child("borrow", pg.dsn(application_name=app))
    try:
        child.expect("READY")
        borrow = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "[(1,)] 0", after          # the pool works; nobody left waiting
        child.finish()
    finally:
        child.close()
    assert borrow < BOUND, "KeyboardInterrupt %.2f s after SIGINT (borrow)" % borrow

    # a statement running on the server
    child = Child("statement", pg.dsn(application_name=app))
    try:
        _, pid = child.expect("PID")
        wait_for(lambda: int(pid) in sleeping_sessions(pg, app), timeout=10, what="pg_sleep(30) to run")
        statement = child.interrupt()
        # cancelled on the server, not left running there
        wait_for(lambda: not sleeping_sessions(pg, app), timeout=5, what="the statement to stop on the server")
        _, after = child.expect("AFTER")
        assert after == "[(1,)] 0", after          # the pool works, the connection is clean
        child.finish()
    finally:
        child.close()
    assert statement < BOUND, "KeyboardInterrupt %.2f s after SIGINT (statement)" % statement
    record_figure("Ctrl-C in borrow and in statement",
                  "borrow: %.2f s, statement: %.2f s, cancelled server-side" % (borrow, statement))


def test_ctrl_c_in_a_failover_borrow(pg, app):
    """The same through a failover manager (not monitoring: its probes run in the borrowing
    thread, and a Ctrl-C must never count as an endpoint failure)."""
    child = Child("failover-borrow", pg.dsn(application_name=app))
    try:
        child.expect("READY")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "[(1,)] 0 []", after       # nobody waiting, no failover event
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (failover borrow)" % took


def test_ctrl_c_in_statement_keeps_the_connection(pg, app):
    """A statement stopped by Ctrl-C on a healthy server is cancelled there and its connection
    goes back clean: the next borrow gets the same session."""
    code = CHILD.split("if mode == \"borrow\"")[0] + r'''
pool = DatabaseConnectionPool(target, max_connections=1, timeout=30)
with pool.get_connection() as c:
    pid = c.backend_pid
    say("PID", pid)
    try:
        c.execute_query("select pg_sleep(30)")
    except KeyboardInterrupt:
        say("INTERRUPTED")
with pool.get_connection() as c:
    say("AFTER", int(c.backend_pid == pid), pool._raw_stats()["connections_closed"])
say("DONE")
'''
    child = Child("-", pg.dsn(application_name=app), code=code)
    try:
        _, pid = child.expect("PID")
        wait_for(lambda: int(pid) in sleeping_sessions(pg, app), timeout=10, what="pg_sleep(30) to run")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "1 0", after               # same session, nothing closed
        child.finish()
    finally:
        child.close()
    assert took < BOUND, took


def test_ctrl_c_in_execute_many_keeps_the_connection(pg, app):
    """execute_many's pipeline (csrc/core/nc_pg_pipeline.c) honours Ctrl-C like a statement: the
    running row is cancelled, the rest skipped, the batch's transaction rolled back, and the
    connection goes back clean."""
    code = CHILD.split("if mode == \"borrow\"")[0] + r'''
pool = DatabaseConnectionPool(target, max_connections=1, timeout=30)
with pool.get_connection() as c:
    pid = c.backend_pid
    say("PID", pid)
    try:
        c.execute_many("select pg_sleep(%s)", [(0,), (30,), (0,)])
        say("NOT INTERRUPTED")
    except KeyboardInterrupt:
        say("INTERRUPTED")
    say("TXN", int(c.in_transaction))
with pool.get_connection() as c:
    say("AFTER", int(c.backend_pid == pid), pool._raw_stats()["connections_closed"])
say("DONE")
'''
    child = Child("-", pg.dsn(application_name=app), code=code)

    def sleeping(pid):
        rows = pg.sql("select pid from pg_stat_activity where application_name = '%s' and state = 'active' "
                      "and query like '%%pg_sleep%%'" % app)
        return pid in [int(r[0]) for r in rows]
    try:
        _, pid = child.expect("PID")
        wait_for(lambda: sleeping(int(pid)), timeout=10, what="the batch's pg_sleep(30) to run")
        took = child.interrupt()
        _, txn = child.expect("TXN")
        assert txn == "0"
        _, after = child.expect("AFTER")
        assert after == "1 0", after               # same session, nothing closed
        child.finish()
    finally:
        child.close()
    assert took < BOUND, took


def test_ctrl_c_handler_that_uses_the_pool(pg, app):
    child = Child("nested", pg.dsn(application_name=app))
    try:
        _, pid = child.expect("PID")
        wait_for(lambda: int(pid) in sleeping_sessions(pg, app), timeout=10, what="pg_sleep(30) to run")
        sent = time.monotonic()
        os.kill(child.proc.pid, signal.SIGINT)
        _, handler = child.expect("HANDLER", timeout=10)
        assert handler == "[(2,)]", handler
        at, _ = child.expect("INTERRUPTED", timeout=10)
        wait_for(lambda: not sleeping_sessions(pg, app), timeout=5, what="the statement to stop on the server")
        _, after = child.expect("AFTER")
        assert after == "[(1,)] 0", after
        child.finish()
    finally:
        child.close()
    assert at - sent < 2 * BOUND, at - sent    # the handler ran a borrow and a statement first


def test_ctrl_c_while_sqlite_waits_for_a_lock(tmp_path):
    child = Child("sqlite-lock", str(tmp_path / "locked.db"))
    try:
        child.expect("READY")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "[(0,)] 0", after          # nothing inserted, no transaction left open
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (SQLite lock)" % took


def test_ctrl_c_in_a_long_sqlite_query(tmp_path):
    child = Child("sqlite-long", str(tmp_path / "long.db"))
    try:
        child.expect("READY")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "[(0,)] 0", after
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (SQLite query)" % took


def test_ctrl_c_while_connecting(pg_factory, pg):
    proxy = pg_factory.proxy(pg)
    proxy.blackhole(True)           # accepts, never answers: libpq waits for the server's reply
    child = Child("connect", "postgresql://postgres@127.0.0.1:%d/postgres" % proxy.port)
    try:
        child.expect("READY")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "0 0 0", after             # the slot is free again; not counted as a failure
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (connect)" % took


def test_ctrl_c_in_a_sqlite_commit_waiting_for_a_lock(tmp_path):
    child = Child("sqlite-commit", str(tmp_path / "commit.db"))
    try:
        child.expect("READY")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "[(0,)] 0", after          # rolled back when it went back to the pool
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (SQLite COMMIT)" % took


STORM = r'''
import gc, os, random, signal, sys, threading, time
from noodlecore.database import DatabaseConnectionPool, Error

pool = DatabaseConnectionPool(sys.argv[2], max_connections=2, timeout=5, ping_after_idle=0)
stop = threading.Event()
rounds = {"interrupted": 0, "done": 0, "errors": 0}

def storm():
    while not stop.wait(random.uniform(0.005, 0.15)):
        os.kill(os.getpid(), signal.SIGINT)

def hold():
    # keeps the pool busy so that the main thread also waits in line
    while not stop.is_set():
        try:
            with pool.get_connection() as c:
                c.execute_query("select pg_sleep(0.01)")
        except Error:
            pass

# KeyboardInterrupt only inside the loop below (a handler of one's own, as programs have)
armed = False

def on_sigint(signum, frame):
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_sigint)
threads = [threading.Thread(target=storm), threading.Thread(target=hold), threading.Thread(target=hold)]
for t in threads:
    t.start()
end = time.monotonic() + 2.0
while time.monotonic() < end:
    try:
        armed = True
        try:
            with pool.get_connection() as c:
                c.begin()
                c.execute_query("select pg_sleep(0.07)")
                c.commit()
            rounds["done"] += 1
        except KeyboardInterrupt:
            rounds["interrupted"] += 1
        except Error:
            rounds["errors"] += 1
        armed = False
    except KeyboardInterrupt:
        armed = False
        rounds["interrupted"] += 1      # one that arrived in the handler above
stop.set()
for t in threads:
    t.join()
gc.collect()
st = pool._raw_stats()
print("ROUNDS", rounds["interrupted"], rounds["done"], rounds["errors"], flush=True)
print("STATS", st["active_connections"], st["total_connections"], st["idle_connections"],
      st["requests_waiting"], flush=True)
with pool.get_connection() as c:
    print("AFTER", c.execute_query("select 1 as x", row_format="tuple"), int(c.in_transaction), flush=True)
print("DONE", flush=True)
'''


def test_ctrl_c_storm_leaves_the_pool_consistent(pg, app):
    """SIGINT every few milliseconds while the main thread borrows, runs statements and commits
    (and two threads keep the pool busy): every KeyboardInterrupt leaves no connection lent, no
    waiter queued and no transaction open."""
    child = Child("storm", pg.dsn(application_name=app), code=STORM)
    try:
        _, rounds = child.expect("ROUNDS", timeout=60)
        interrupted, done, errors = map(int, rounds.split())
        assert interrupted > 0, rounds
        _, stats = child.expect("STATS")
        active, total, idle, waiting = map(int, stats.split())
        assert active == 0 and waiting == 0 and total == idle, stats
        _, after = child.expect("AFTER")
        assert after == "[(1,)] 0", after
        child.finish()
    finally:
        child.close()
    active = pg.sql("select count(*) from pg_stat_activity where application_name = '%s' "
                    "and state <> 'idle'" % app)
    assert active == [["0"]], active
