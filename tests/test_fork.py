"""fork(): a child process abandons every pool, manager and connection it
inherited without touching them (no ROLLBACK, no Terminate, no SQLite close),
opens its own at first use, and the parent never notices.

Each scenario runs in a fresh Python (a forked pytest would go on running the
suite in the child) under a timeout, so that a child that deadlocks fails the
test instead of hanging it.  The programs print one JSON line with what they
saw; the assertions are here.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from figures import record_figure
from helpers import subprocess_env

ROW = "fork with pools, managers and borrowed connections"

# A child's exit status when all went well.
CHILD_OK = {0}

PRELUDE = """
import json, os, sys, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork() with threads running
from noodlecore.database import DatabaseConnectionPool, DatabaseManager
from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig

def report(**kw):
    sys.stdout.write("RESULT " + json.dumps(kw) + "\\n")
    sys.stdout.flush()

def wait_child(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
"""


def run(code, timeout=60):
    """Run the program; its RESULT line as a dict (and the seconds it took)."""
    env = subprocess_env()
    if "ASAN_OPTIONS" in env:
        # No leak check in these programs (ASan stage of tests/run.sh): in a
        # child forked from a threaded process LeakSanitizer still lists the
        # parent's threads ("was not suspended. False leaks are possible"),
        # reports CPython's thread states as leaks, and its stop-the-world
        # tracer crashed (SIGSEGV, exit 99) in a parent whose native threads
        # were ending.  Every other ASan and UBSan report still fails the run.
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd="/")
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the program hung (deadlock?): %s" % (exc.stdout or b"")[-2000:]) from None
    elapsed = time.monotonic() - t0
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(results[-1]), elapsed


@pytest.fixture
def fork_table(pg, app):
    name = "t_" + app
    pg.sql("drop table if exists %s; create table %s (v int, note text, pid int)" % (name, name))
    yield name
    pg.sql("drop table if exists %s" % name)


# The parent holds an open transaction (and an idle connection) while the
# child does one of these, then commits.
CHILD_ACTIONS = {
    # the exit hook and every finalizer run in the child
    "sys_exit": "sys.exit(0)",
    # nothing runs
    "os_exit": "os._exit(0)",
    # the child uses the inherited pool: its own connection, its own row
    "uses_pool": """
with pool.get_connection() as c:
    pid = c.execute_query("select pg_backend_pid() as p")[0]["p"]
    c.execute_query("insert into {table} (v, note, pid) values (2, 'child', %s)", (pid,))
try:
    conn.execute_query("select 1")          # the parent's borrow: not the child's to use
    inherited = "usable"
except Exception as exc:
    inherited = "%s %s" % (type(exc).__name__, getattr(exc, "error_code", None))
probe = pool._probe(timeout=5)["ok"]      # its own prober, not the parent's probe session
os.write(w, json.dumps({{"pid": pid, "inherited": inherited, "opened": pool.get_stats().connections_opened,
                        "probe": probe}}).encode())
sys.exit(0)
""",
    # the child drops everything it inherited and collects it
    "drops_all": """
import gc
del conn, pool
gc.collect()
sys.exit(0)
""",
}


@pytest.mark.parametrize("action", sorted(CHILD_ACTIONS))
def test_child_leaves_the_parents_transaction_alone(pg, app, fork_table, action):
    child = textwrap.indent(textwrap.dedent(CHILD_ACTIONS[action]).format(table=fork_table), "    ")
    code = f"""
pool = DatabaseConnectionPool({pg.dsn(application_name=app)!r}, max_connections=3, min_connections=1,
                              ping_after_idle=0)
with pool.get_connection() as c:
    c.execute_query("select 1")                 # an idle connection in the pool as well
assert pool._probe(timeout=5)["ok"]             # and a probe session
conn = pool.acquire()
conn.begin()
conn.execute_query("insert into {fork_table} (v, note, pid) values (1, 'parent', pg_backend_pid())")
parent_pid = conn.backend_pid
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
{child}
os.close(w)
with os.fdopen(r) as f:
    said = f.read()
status = wait_child(pid)
commit = "ok"
try:
    conn.commit()
except Exception as exc:
    commit = "%s %s" % (type(exc).__name__, getattr(exc, "error_code", None))
conn.release()
with pool.get_connection() as c:
    rows = c.execute_query("select v, note, pid from {fork_table} order by v")
st = pool.get_stats()
report(status=status, commit=commit, probe=pool._probe(timeout=5)["ok"], rows=rows, parent_pid=parent_pid, child=json.loads(said or "null"),
       validation_failures=st.validation_failures, replaced=st.connections_replaced)
"""
    res, _ = run(code)
    assert res["status"] in CHILD_OK, res
    assert res["commit"] == "ok", res
    assert res["probe"] is True, res
    assert {"v": 1, "note": "parent", "pid": res["parent_pid"]} in res["rows"], res
    # the parent's idle connection was not terminated by the child either
    assert res["validation_failures"] == 0 and res["replaced"] == 0, res
    if action == "uses_pool":
        child = res["child"]
        assert child["probe"] is True, child
        assert child["pid"] != res["parent_pid"]
        assert child["inherited"] == "InterfaceError 2016", child
        # its own connection: the borrow's, and perhaps one more that the
        # child's janitor opened for min_connections=1 at the same time
        assert 1 <= child["opened"] <= 2, "the child's pool opened %s connections" % child["opened"]
        assert {"v": 2, "note": "child", "pid": child["pid"]} in res["rows"], res
    else:
        assert len(res["rows"]) == 1, res
    record_figure(ROW, "os.fork, child %s: parent COMMIT %s, %d row(s), parent sessions replaced %d"
                  % (action, res["commit"], len(res["rows"]), res["replaced"]))


def test_sqlite_child_gets_its_own_handle(tmp_path):
    db = tmp_path / "fork.db"
    code = f"""
pool = DatabaseConnectionPool("sqlite:///{db}", max_connections=2)
with pool.get_connection() as c:
    c.execute_query("create table t (v int, who text)")
conn = pool.acquire()
conn.begin()
conn.execute_query("insert into t values (1, 'parent')")
pid = os.fork()
if pid == 0:
    # a handle of its own: it does not see the parent's uncommitted row, and
    # waits for the parent's write lock like any other connection
    with pool.get_connection() as c:
        n = c.execute_query("select count(*) as n from t")[0]["n"]
    sys.exit(0 if n == 0 else 3)
status = wait_child(pid)
conn.commit()
conn.release()
with pool.get_connection() as c:
    rows = c.execute_query("select v, who from t")
report(status=status, rows=rows, opened=pool.get_stats().connections_opened)
"""
    res, _ = run(code)
    assert res["status"] in CHILD_OK, "the child saw the parent's uncommitted row (same handle)"
    assert res["rows"] == [{"v": 1, "who": "parent"}]
    assert res["opened"] == 1


def test_multiprocessing_children_use_inherited_pool_manager_and_database_manager(pg, pg_factory, app,
                                                                                   fork_table):
    other = pg.dsn(application_name=app + "_b")
    code = f"""
import multiprocessing as mp
DSN = {pg.dsn(application_name=app)!r}
pool = DatabaseConnectionPool(DSN, max_connections=3, min_connections=1)
fo = DatabaseFailoverManager(
    [DatabaseEndpoint("a", "a", DSN, priority=1, is_primary=True), DatabaseEndpoint("b", "b", {other!r}, priority=2)],
    config=FailoverConfig(health_check_interval=0.2, health_check_timeout=2))
fo.start_monitoring()
dbm = DatabaseManager(config=DSN, max_connections=2)
dbm.connect()

# The parent's work in flight: an open transaction on each.
held = []
for source in (pool, fo):
    cm = source.get_connection()
    c = cm.__enter__()
    c.begin()
    c.execute_query("insert into {fork_table} (v, note, pid) values (1, 'parent', pg_backend_pid())")
    held.append((cm, c))
parent_pids = [c.backend_pid for _, c in held]
# every session the parent has (pools, probes, the manager's) when it forks
parent_sessions = [r["pid"] for r in dbm.execute_query(
    "select pid from pg_stat_activity where application_name in (%s, %s)", ({app!r}, {app + "_b"!r}))]

def work(i, q):
    out = {{"i": i}}
    with pool.get_connection() as c:
        out["pool_pid"] = c.execute_query("select pg_backend_pid() as p")[0]["p"]
        c.execute_query("insert into {fork_table} (v, note, pid) values (%s, 'pool', %s)", (10 + i, out["pool_pid"]))
    with fo.get_connection() as c:
        out["fo_pid"] = c.backend_pid
        c.execute_query("insert into {fork_table} (v, note, pid) values (%s, 'failover', %s)", (20 + i, c.backend_pid))
    out["monitoring"] = fo.monitoring
    out["switched"] = fo.trigger_failover("the child's own", target="b")
    out["child_current"] = fo.current_endpoint
    out["dbm"] = dbm.execute_query("select pg_backend_pid() as p")[0]["p"]
    dbm.execute_query("insert into {fork_table} (v, note, pid) values (%s, 'dbm', %s)", (30 + i, out["dbm"]))
    q.put(out)

ctx = mp.get_context("fork")
q = ctx.Queue()
procs = [ctx.Process(target=work, args=(i, q)) for i in range(3)]
for p in procs:
    p.start()
outs = [q.get(timeout=30) for _ in procs]
for p in procs:
    p.join(30)
codes = [p.exitcode for p in procs]

commits = []
for cm, c in held:
    try:
        c.commit()
        commits.append("ok")
    except Exception as exc:
        commits.append("%s %s" % (type(exc).__name__, getattr(exc, "error_code", None)))
    cm.__exit__(None, None, None)
rows = dbm.execute_query("select v, note, pid from {fork_table} order by v")
report(codes=codes, outs=outs, commits=commits, rows=rows, parent_pids=parent_pids,
       parent_sessions=parent_sessions,
       parent_current=fo.current_endpoint, parent_monitoring=fo.monitoring,
       parent_replaced=pool.get_stats().connections_replaced)
dbm.close()
fo.shutdown()
pool.shutdown()
"""
    res, elapsed = run(code, timeout=90)
    assert res["codes"] == [0, 0, 0], res
    assert res["commits"] == ["ok", "ok"], res
    notes = [(r["v"], r["note"]) for r in res["rows"]]
    assert notes.count((1, "parent")) == 2
    for out in res["outs"]:
        i = out["i"]
        for v, note in ((10 + i, "pool"), (20 + i, "failover"), (30 + i, "dbm")):
            assert (v, note) in notes, (v, note, notes)
        # the child's own sessions, never one of the parent's
        assert {out["pool_pid"], out["fo_pid"], out["dbm"]}.isdisjoint(res["parent_sessions"]), (out, res)
        assert out["monitoring"] is True, "the child's manager monitors, as the parent's did"
        assert out["switched"] is True and out["child_current"] == "b"
    # The children's switches were their own business.
    assert res["parent_current"] == "a" and res["parent_monitoring"] is True
    assert res["parent_replaced"] == 0
    record_figure(ROW, "multiprocessing (fork): 3 children x (pool, failover manager, DatabaseManager) "
                       "%d rows on their own sessions, parent's 2 open transactions committed, %.1f s"
                  % (len(res["rows"]) - 2, elapsed))


def test_fork_while_a_probe_holds_the_switch_does_not_deadlock_the_child():
    # A parent thread is inside a switch: the monitor is busy and the
    # target's prober holds its lock while the Python backend's health check
    # waits on an Event.  The main thread forks right then.  The child's own
    # switch, borrow and status must not wait for that thread (it does not
    # exist in the child).
    code = """
import threading
PARENT = os.getpid()
entered, release = threading.Event(), threading.Event()
block = {"on": False}

class Backend:
    def __init__(self, cs):
        self.cs = cs
    def execute_query(self, sql, params=None):
        if block["on"] and self.cs == "b" and os.getpid() == PARENT:
            entered.set()
            release.wait(60)
        return [{"x": 1, "cs": self.cs}]
    def close(self):
        pass

m = DatabaseFailoverManager(
    [DatabaseEndpoint("a", "a", "a", priority=1, is_primary=True), DatabaseEndpoint("b", "b", "b", priority=2)],
    backend_factory=Backend, config=FailoverConfig(failover_timeout=60, health_check_timeout=60, hold_down=0))
with m.get_connection() as c:
    c.execute_query("select 1")
block["on"] = True
t = threading.Thread(target=lambda: m.trigger_failover("parent's switch", target="b"))
t.start()
assert entered.wait(20), "the parent's switch never reached the probe"
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    ok = m.trigger_failover("child's switch", target="b")
    with m.get_connection() as c:
        rows = c.execute_query("select 1")
    st = m.get_status()
    good = ok and rows[0]["cs"] == "b" and st["current_endpoint"] == "b"
    m.shutdown()
    sys.exit(0 if good else 3)
status = wait_child(pid)
child_seconds = time.monotonic() - t0
release.set()
t.join(20)
report(status=status, child_seconds=child_seconds, parent_current=m.current_endpoint)
m.shutdown()
"""
    res, _ = run(code, timeout=45)
    assert res["status"] in CHILD_OK, res
    assert res["parent_current"] == "b"
    record_figure(ROW, "fork during a switch whose probe holds the prober lock: child switched, borrowed "
                       "and shut down in %.2f s (no deadlock)" % res["child_seconds"])


def test_child_starts_on_the_endpoint_the_parent_switched_to():
    # The parent failed over from a (now refusing connections) to b.  The
    # child's own route must not send its first borrow to a.
    code = """
down = {"a": False}
attempts = []

class Backend:
    def __init__(self, cs):
        attempts.append((os.getpid(), cs))
        if down.get(cs):
            raise ConnectionError("endpoint %s refuses connections" % cs)
        self.cs = cs
    def execute_query(self, sql, params=None):
        return [{"cs": self.cs}]
    def close(self):
        pass

m = DatabaseFailoverManager(
    [DatabaseEndpoint("a", "a", "a", priority=1, is_primary=True), DatabaseEndpoint("b", "b", "b", priority=2)],
    backend_factory=Backend, config=FailoverConfig(hold_down=0))
assert m.trigger_failover("the parent's switch", target="b")
down["a"] = True
with m.get_connection() as c:
    assert c.execute_query("select 1")[0]["cs"] == "b"
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    try:
        with m.get_connection(timeout=5) as c:
            got = c.execute_query("select 1")[0]["cs"]
    except Exception as exc:
        got = "%s %s" % (type(exc).__name__, exc)
    mine = [cs for p, cs in attempts if p == os.getpid()]
    events = [(e.to_endpoint, e.reason) for e in m.get_events()]
    os.write(w, json.dumps({"got": got, "connects": mine, "current": m.current_endpoint,
                            "events": events}).encode())
    m.shutdown()
    sys.exit(0)
os.close(w)
with os.fdopen(r) as f:
    child = json.loads(f.read())
status = wait_child(pid)
report(status=status, child=child, parent_current=m.current_endpoint)
m.shutdown()
"""
    res, _ = run(code)
    assert res["status"] in CHILD_OK, res
    child = res["child"]
    assert child["got"] == "b" and child["current"] == "b", child
    # at most the switch's look at a (a probe), never a borrow from it
    assert child["connects"].count("a") <= 1, child
    # the history: the parent's switch, then the child's own (its route numbers events from 1 again)
    assert [to for to, _ in child["events"]] == ["b", "b"], child
    assert "parent process" in child["events"][-1][1], child
    assert res["parent_current"] == "b"


def test_fork_while_another_thread_connects_a_database_manager():
    # A thread is inside DatabaseManager.connect() (holding the manager's
    # lock) while the Python backend's factory waits; the main thread forks.
    # The child's own connect() and query must not wait for that thread.
    # The factory waits in read(2) on a pipe, and the fork comes once the
    # thread is seen blocked there (/proc/.../syscall): a thread forked in the
    # middle of a malloc would deadlock the child under GCC 12's libasan,
    # whose allocator has no fork handler (glibc's malloc has one), whatever
    # our code does.
    code = """
import signal, threading
PARENT = os.getpid()
gate_r, gate_w = os.pipe()
waiter = []

class Backend:
    def __init__(self):
        if os.getpid() == PARENT:
            waiter.append(threading.get_native_id())
            os.read(gate_r, 1)
        self.pid = os.getpid()
    def execute_query(self, sql, params=None):
        return [{"pid": self.pid}]
    def close(self):
        pass

def blocked_in_read(tid):
    try:
        with open("/proc/self/task/%d/syscall" % tid) as f:
            fields = f.read().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == "0" and int(fields[1], 16) == gate_r   # read(gate_r, ...)

dbm = DatabaseManager(backend_factory=Backend, max_connections=2)
t = threading.Thread(target=dbm.connect)
t.start()
deadline = time.monotonic() + 20
while not (waiter and blocked_in_read(waiter[0])):
    assert time.monotonic() < deadline, "connect never reached the factory"
    time.sleep(0.005)
pid = os.fork()
if pid == 0:
    signal.alarm(20)          # a deadlock ends the child (SIGALRM) instead of the test
    dbm.connect()
    rows = dbm.execute_query("select 1")
    dbm.close()
    sys.exit(0 if rows == [{"pid": os.getpid()}] else 3)
status = wait_child(pid)
os.write(gate_w, b"x")
t.join(20)
report(status=status, parent=dbm.execute_query("select 1"), me=os.getpid())
dbm.close()
"""
    res, _ = run(code)
    assert res["status"] in CHILD_OK, res
    assert res["parent"] == [{"pid": res["me"]}]


def test_child_exit_leaves_the_parents_monitor_and_probe_sessions_alone(pg, app):
    # The parent monitors two endpoints (probe sessions kept open between
    # probes) and holds a transaction through the manager.  A child that
    # only exits must close none of the parent's probe sessions: the parent
    # would count failed probes (and might even fail over).
    code = f"""
A, B = {pg.dsn(application_name=app + "_a")!r}, {pg.dsn(application_name=app + "_b")!r}
m = DatabaseFailoverManager(
    [DatabaseEndpoint("a", "a", A, priority=1, is_primary=True), DatabaseEndpoint("b", "b", B, priority=2)],
    config=FailoverConfig(health_check_interval=0.1, health_check_timeout=2))
m.start_monitoring()
checks = lambda: [e["last_check"] for e in m._native.status()["endpoints"]]
def after(t0, rounds):
    deadline = time.monotonic() + 20
    while not all(c > t0 + rounds * 0.1 for c in checks()):
        assert time.monotonic() < deadline, "no probes"
        time.sleep(0.02)
after(time.time(), 1)
cm = m.get_connection()
conn = cm.__enter__()
conn.begin()
conn.execute_query("select 1")
watch = DatabaseConnectionPool({pg.dsn(application_name=app + "_w")!r}, max_connections=1)
def sessions():
    with watch.get_connection() as c:
        rows = c.execute_query("select pid, application_name as app from pg_stat_activity "
                               "where application_name in (%s, %s)", ({app + "_a"!r}, {app + "_b"!r}))
    return sorted((r["app"], r["pid"]) for r in rows)
before = sessions()
pid = os.fork()
if pid == 0:
    sys.exit(0)
status = wait_child(pid)
after(time.time(), 3)                    # three more probe rounds of each endpoint
st = m.get_status()
conn.commit()
cm.__exit__(None, None, None)
report(status=status, before=before, after=sessions(), events=[e.to_dict() for e in m.get_events()],
       failures=[e["failure_count"] for e in st["endpoints"].values()], current=st["current_endpoint"])
m.shutdown()
"""
    res, _ = run(code)
    assert res["status"] in CHILD_OK, res
    assert res["failures"] == [0, 0] and res["events"] == [] and res["current"] == "a", res
    # every session of the parent (probe and pool connections) is still the same
    assert res["before"] == res["after"] and len(res["before"]) == 3, res
