"""Ctrl-C in the waits of shutting down and of ping() (issue 8, point 8; house rule 3: "every
blocking call has a deadline, and Ctrl-C ends it").

As in tests/test_interrupt.py (whose child harness these tests share): a child Python blocks in
one wait and says READY once it is inside it, the test sends SIGINT and measures the time until
the child reports the KeyboardInterrupt (within 0.5 s: a correctness bound, the core checks
every 50 ms), then the child shows the state it was left in.
"""

from helpers import sessions, wait_for
from test_interrupt import BOUND, CHILD, Child


SHUTDOWN = CHILD.split("if mode == \"borrow\"")[0] + r'''
from noodlecore.database import PoolClosedError
pool = DatabaseConnectionPool(target, max_connections=2, timeout=30)
held = pool.acquire()
with pool.get_connection():
    pass                                               # and one idle
when(lambda: pool.closed)                              # set inside shutdown(), before its wait
try:
    pool.shutdown(timeout=30)
    say("NOT INTERRUPTED")
except KeyboardInterrupt:
    say("INTERRUPTED")
st = pool._raw_stats()
say("STATE", int(pool.closed), st["active_connections"], st["idle_connections"])
held.release()                                         # closed as it comes back
st = pool._raw_stats()
try:
    pool.get_connection(timeout=1).__enter__()
    refused = "no"
except PoolClosedError as e:
    refused = e.error_code
say("AFTER", st["total_connections"], st["connections_closed"], refused)
pool.shutdown(timeout=30)                              # nothing left to wait for
say("DONE")
'''


def test_ctrl_c_in_shutdown_waiting_for_a_borrowed_connection(pg, app):
    """pool.shutdown(timeout=30) waits for a connection still borrowed; Ctrl-C ends the wait.
    The state chosen: the pool stays closed (new borrows raise PoolClosedError 2002), the idle
    connection is already closed, and the borrowed one is closed when it comes back, exactly
    as after a shutdown whose timeout ran out."""
    child = Child("-", pg.dsn(application_name=app), code=SHUTDOWN)
    try:
        child.expect("READY")
        took = child.interrupt()
        _, state = child.expect("STATE")
        assert state == "1 1 0", state             # closed; the borrowed one still out, no idle one
        _, after = child.expect("AFTER")
        assert after == "0 2 2002", after          # both closed; borrows refused
        child.finish()
    finally:
        child.close()
    wait_for(lambda: not sessions(pg, app), timeout=10, what="the pool's sessions to end")
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (shutdown)" % took


PING = CHILD.split("if mode == \"borrow\"")[0] + r'''
from noodlecore.testing.proxy import TcpProxy
host, port, app = target.split("|")
px = TcpProxy(host, int(port)).start()
pool = DatabaseConnectionPool("postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s" % (px.port, app),
                              max_connections=1, timeout=30, validation_timeout=30)
c = pool.acquire()
pid = c.backend_pid
px.blackhole(True)                                     # the server's reply is held: the ping waits
when(on_the_call_line(PING_LINE))
try:
    c.ping()  # PING
    say("NOT INTERRUPTED")
except KeyboardInterrupt:
    say("INTERRUPTED")
px.blackhole(False)                                    # the held reply arrives
# the same connection: the ping's reply is read before the statement
say("SAME", c.execute_query("select 1 as x", row_format="tuple"), int(c.backend_pid == pid))
c.release()
with pool.get_connection(timeout=5) as c:
    st = pool._raw_stats()
    say("AFTER", int(c.backend_pid == pid), st["connections_closed"], st["validation_failures"])
pool.shutdown()
px.close()
say("DONE")
'''
PING_LINE = next(i for i, l in enumerate(PING.split("\n"), 1) if l.rstrip().endswith("# PING"))


def test_ctrl_c_in_ping_of_a_server_that_does_not_answer(pg, app):
    """PooledConnection.ping() (bounded by validation_timeout, here 30 s) of a server whose
    replies a TCP proxy holds back: Ctrl-C ends it, and the connection is kept (an interrupted
    ping proves nothing): once the reply comes, the same session runs the next statement."""
    child = Child("-", "%s|%d|%s" % (pg.host, pg.port, app), code=PING.replace("PING_LINE", str(PING_LINE)))
    try:
        child.expect("READY")
        took = child.interrupt()
        _, same = child.expect("SAME")
        assert same == "[(1,)] 1", same
        _, after = child.expect("AFTER")
        assert after == "1 0 0", after             # same session, nothing closed, no failed check
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (ping)" % took


FAILOVER_SHUTDOWN = CHILD.split("if mode == \"borrow\"")[0] + r'''
from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig
from noodlecore.testing.proxy import TcpProxy
host, port, app = target.split("|")
px = TcpProxy(host, int(port)).start()
px.blackhole(True)                 # endpoint b accepts and never answers: its probe hangs in the connect
cfg = FailoverConfig(health_check_interval=0.2, health_check_timeout=30, pool_timeout=30)
direct = "postgresql://postgres@%s:%s/postgres?application_name=%s" % (host, port, app)
silent = "postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s" % (px.port, app)
m = DatabaseFailoverManager([DatabaseEndpoint(id="a", name="A", connection_string=direct, priority=1, is_primary=True),
                             DatabaseEndpoint(id="b", name="B", connection_string=silent, priority=2)], config=cfg)
m.start_monitoring()
while px.accepted < 1:             # b's prober is inside its connect (up to 30 s)
    time.sleep(0.005)
main = threading.main_thread().ident
when(lambda: sys._current_frames()[main].f_code.co_name == "shutdown")
try:
    m.shutdown()                   # stopping the monitor waits for that probe
    say("NOT INTERRUPTED")
except KeyboardInterrupt:
    say("INTERRUPTED")
try:
    with m.get_connection(timeout=1):
        refused = "no"
except Exception as e:
    refused = getattr(e, "error_code", repr(e))
say("AFTER", int(m.get_pool("a").closed), int(m.get_pool("b").closed), refused)
m.shutdown()                       # already shut down: returns at once
px.close()
say("DONE")
'''


def test_ctrl_c_in_a_failover_managers_shutdown(pg, app):
    """DatabaseFailoverManager.shutdown() waits for its monitor's threads, one of them probing an
    endpoint that never answers (up to health_check_timeout, here 30 s): Ctrl-C ends the wait,
    and the shutdown still closes the monitor and every pool before raising."""
    child = Child("-", "%s|%d|%s" % (pg.host, pg.port, app), code=FAILOVER_SHUTDOWN)
    try:
        child.expect("READY")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "1 1 2002", after          # both pools closed, the manager refuses borrows
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (failover shutdown)" % took


MANAGER_CLOSE = CHILD.split("if mode == \"borrow\"")[0] + r'''
from noodlecore.database import DatabaseManager
db = DatabaseManager(target)
db.connect()
pool = db._source.pool
held = pool.acquire()                  # a borrow still out: close() waits for it (5 s)
when(lambda: pool.closed)
try:
    db.close()
    say("NOT INTERRUPTED")
except KeyboardInterrupt:
    say("INTERRUPTED")
say("AFTER", int(db.is_connected), int(pool.closed))
held.release()
say("LEFT", pool._raw_stats()["total_connections"])
say("DONE")
'''


def test_ctrl_c_in_database_manager_close(pg, app):
    """DatabaseManager.close() shuts its pool down, which waits for a borrowed connection:
    Ctrl-C ends the wait; the manager is disconnected and the pool closed, and the borrowed
    connection is closed when it comes back."""
    child = Child("-", pg.dsn(application_name=app), code=MANAGER_CLOSE)
    try:
        child.expect("READY")
        took = child.interrupt()
        _, after = child.expect("AFTER")
        assert after == "0 1", after
        _, left = child.expect("LEFT")
        assert left == "0", left
        child.finish()
    finally:
        child.close()
    assert took < BOUND, "KeyboardInterrupt %.2f s after SIGINT (DatabaseManager.close)" % took
