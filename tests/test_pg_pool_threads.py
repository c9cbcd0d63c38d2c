"""A PostgreSQL pool and Python threads (noodlecore.testing): the GIL released
during queries, a connection used after it was returned, one connection driven
by several threads at once (in a child process), and interpreter exit with a
busy pool or with a pool on a frozen server.

Pools carry the test's own application_name (``app``, ``make_pool``: conftest.py),
so that pg_stat_activity tells their sessions apart.  Other pool topics are in
the other test_pg_pool_*.py modules.
"""

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from helpers import subprocess_env
from noodlecore.database import InterfaceError


# ---------------------------------------------------------------------------
# the GIL
# ---------------------------------------------------------------------------

def test_gil_released_during_queries(make_pool):
    pool = make_pool(max_connections=4, timeout=5)
    warm = [pool.acquire() for _ in range(4)]
    for c in warm:
        c.release()
    barrier = threading.Barrier(5)
    errors = []

    def sleeper():
        try:
            with pool.get_connection() as c:
                barrier.wait()
                c.execute_query("SELECT pg_sleep(0.5)")
        except Exception as e:           # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=sleeper) for _ in range(4)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    # the main thread keeps running Python meanwhile
    spins = 0
    while any(t.is_alive() for t in ts):
        spins += 1
        time.sleep(0.001)
    took = time.monotonic() - t0
    assert errors == []
    assert took < 1.2, took
    assert spins > 50


# ---------------------------------------------------------------------------
# use after return
# ---------------------------------------------------------------------------

def test_use_after_return(make_pool, table):
    pool = make_pool(max_connections=1, timeout=2)
    with pool.get_connection() as old:
        pid, cid = old.backend_pid, old.connection_id
    new = pool.acquire()
    assert new.backend_pid == pid and new.connection_id == cid        # the same slot, lent again
    new.begin()
    new.execute_query("INSERT INTO %s (v) VALUES (1)" % table)
    for call in (lambda: old.execute_query("SELECT 1"),
                 lambda: old.execute_query("INSERT INTO %s (v) VALUES (2)" % table),
                 lambda: old.execute_many("SELECT %s", [(1,)]),
                 old.begin, old.commit, old.rollback, old.ping, old.transaction,
                 lambda: old.backend_pid, lambda: old.in_transaction, lambda: old.connection_id,
                 old.__enter__):
        with pytest.raises(InterfaceError) as ei:
            call()
        assert ei.value.error_code == 2016
    assert not old.valid
    old.release()                       # a no-op: must not give back the new borrower's slot
    old.close()
    assert new.valid and new.in_transaction
    assert pool.get_stats().active_connections == 1
    assert new.execute_query("SELECT v FROM %s" % table) == [{"v": 1}]
    new.commit()
    new.release()
    with pool.get_connection() as c:
        assert c.execute_query("SELECT v FROM %s" % table) == [{"v": 1}]


SHARED_CONNECTION_PROGRAM = """
import json, sys, threading
from noodlecore.database import DatabaseConnectionPool, Error, InterfaceError
pool = DatabaseConnectionPool(sys.argv[1], max_connections=1, timeout=5)
c = pool.acquire()
pid = c.backend_pid
out = {"ok": 0, "refused": 0, "wrong": [], "errors": []}
lock = threading.Lock()
def work(tid):
    for i in range(300):
        want = tid * 100000 + i
        try:
            # a deadline, so that a thread waiting for a result another thread took ends
            r = c.execute_query("SELECT %s::int AS v", (want,), timeout=2, row_format="tuple")
        except InterfaceError:
            with lock:
                out["refused"] += 1      # refusing concurrent use cleanly is fine
            continue
        except Error as e:
            with lock:
                out["errors"].append("%s: %s" % (type(e).__name__, str(e)[:100]))
            continue
        with lock:
            if r == [(want,)]:
                out["ok"] += 1
            else:
                out["wrong"].append("%d got %r" % (want, r))
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
try:
    out["after"] = [c.backend_pid == pid, c.execute_query("SELECT 1 AS x")]
except Error as e:
    out["after"] = repr(e)
out["nerrors"] = len(out["errors"])
out["errors"] = sorted(set(out["errors"]))[:5]
out["nwrong"] = len(out["wrong"])
out["wrong"] = out["wrong"][:5]
print(json.dumps(out))
"""


def test_one_connection_used_by_several_threads_at_once(pg, app):
    """Statements run with the GIL released, so two threads could drive the same PGconn at
    once: each call must either run on its own or be refused with InterfaceError -- never
    return another thread's rows, desynchronise the protocol or hang.  In a child process:
    unsynchronised libpq use may crash."""
    proc = subprocess.run([sys.executable, "-c", SHARED_CONNECTION_PROGRAM,
                           pg.dsn(application_name=app)],
                          capture_output=True, text=True, timeout=60, env=subprocess_env(), cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["nwrong"] == 0, out
    assert out["nerrors"] == 0, out
    assert out["ok"] + out["refused"] == 1200 and out["ok"] > 0, out
    assert out["after"] == [True, [{"x": 1}]], out
    assert proc.stderr == "", proc.stderr[-2000:]     # libpq complaining about the protocol


# ---------------------------------------------------------------------------
# interpreter exit with a busy PostgreSQL pool
# ---------------------------------------------------------------------------

EXIT_PROGRAM = """
import os, sys, threading, time
from noodlecore.database import DatabaseConnectionPool
pool = DatabaseConnectionPool(sys.argv[1], max_connections=3, min_connections=1,
                              validation_interval=0.05)
held = pool.acquire()                       # borrowed by the main thread, never returned
held.execute_query("SELECT 1")
sleeping = threading.Event()
def busy():
    with pool.get_connection() as c:
        sleeping.set()
        c.execute_query("SELECT pg_sleep(30)")
threading.Thread(target=busy, daemon=True).start()
sleeping.wait(10)
time.sleep(0.3)
sys.stdout.write("MAIN-DONE %f\\n" % time.time())
sys.stdout.flush()
"""


def test_exit_with_busy_pg_pool(pg, app):
    t_start = time.time()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(EXIT_PROGRAM),
                           pg.dsn(application_name=app)],
                          capture_output=True, text=True, timeout=30, env=subprocess_env(), cwd="/")
    t_end = time.time()
    try:
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr
        done = [l for l in proc.stdout.splitlines() if l.startswith("MAIN-DONE")]
        assert done, proc.stdout
        done_at = float(done[0].split()[1])
        assert t_start < done_at
        assert t_end - done_at < 2.0, "exit took %.2f s" % (t_end - done_at)
    finally:
        # the pg_sleep(30) session only notices its client is gone when it finishes
        pg.sql("select pg_terminate_backend(pid) from pg_stat_activity "
               "where application_name = '%s'" % app)


FROZEN_EXIT_PROGRAM = """
import sys, threading, time
from noodlecore.database import DatabaseConnectionPool
pool = DatabaseConnectionPool(sys.argv[1], max_connections=4, min_connections=2,
                              validation_interval=0.05)
held = pool.acquire()
held.execute_query("SELECT 1")
with pool.get_connection() as c:
    c.execute_query("SELECT 1")
sys.stdout.write("READY\\n")
sys.stdout.flush()
sys.stdin.readline()                    # the server is frozen from here on
def stuck():
    with pool.get_connection() as c:
        c.execute_query("SELECT 1")     # never answered, no deadline
threading.Thread(target=stuck, daemon=True).start()
time.sleep(0.3)                         # the janitor is stuck in a ping by now
sys.stdout.write("MAIN-DONE %f\\n" % time.time())
sys.stdout.flush()
"""


def test_exit_with_pg_pool_on_a_frozen_server(pg, app):
    proc = subprocess.Popen([sys.executable, "-c", FROZEN_EXIT_PROGRAM, pg.dsn(application_name=app)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=subprocess_env(), cwd="/")
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        pg.freeze()
        try:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            end = time.time()
        finally:
            pg.thaw()
        assert proc.poll() is not None, "the program did not exit"
        assert line.startswith("MAIN-DONE"), line
        assert end - float(line.split()[1]) < 2.0
        assert proc.returncode == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()
