"""The core's Patroni REST client through the binding (_native.patroni_cluster, via
noodlecore.database.patroni.fetch_cluster), against small local HTTP servers made here
(no Patroni needed; the real cluster is in test_patroni.py): the answer with
Content-Length and chunked, the fallback past a silent URL within the deadline, the GIL
released while it waits, Ctrl-C ending the wait, and the typed errors.
"""

import json
import os
import signal
import socket
import sys
import threading
import time

import pytest

from noodlecore.database import errors
from noodlecore.database.patroni import endpoints_from_cluster, fetch_cluster, member_dsn

CLUSTER = {
    "members": [
        {"name": "a", "role": "replica", "state": "streaming", "api_url": "http://127.0.0.1:1/patroni",
         "host": "127.0.0.1", "port": 5433, "timeline": 2, "receive_lag": 0, "replay_lag": 4096, "lag": 0,
         "tags": {"nofailover": False}},
        {"name": "b", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:2/patroni",
         "host": "127.0.0.1", "port": 5432, "timeline": 2},
        {"name": "c", "role": "replica", "state": "starting", "host": "", "port": 0, "lag": "unknown"},
    ],
    "scope": "demo \u00e9",
}


class OneShotServer:
    """Answers GET /cluster on 127.0.0.1 with `body`, chunked or with Content-Length."""

    def __init__(self, body, chunked=False, status=200):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.body, self.chunked, self.status = body.encode(), chunked, status
        self.requests = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                req = b""
                while b"\r\n\r\n" not in req:
                    data = c.recv(4096)
                    if not data:
                        break
                    req += data
                self.requests.append(req.decode())
                head = "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n" % self.status
                if self.chunked:
                    out = head.encode() + b"Transfer-Encoding: chunked\r\n\r\n"
                    for i in range(0, len(self.body), 17):
                        piece = self.body[i:i + 17]
                        out += b"%x\r\n%s\r\n" % (len(piece), piece)
                    out += b"0\r\n\r\n"
                else:
                    out = head.encode() + b"Content-Length: %d\r\n\r\n" % len(self.body) + self.body
                c.sendall(out)

    def close(self):
        # shutdown() wakes the accept() of the serving thread (close() alone does not)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def silent():
    """A socket that accepts in the kernel and never answers (a hung API)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield "http://127.0.0.1:%d" % s.getsockname()[1]
    s.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_cluster_answer_read(chunked):
    srv = OneShotServer(json.dumps(CLUSTER), chunked=chunked)
    try:
        got = fetch_cluster(srv.url + "/patroni", 5)
    finally:
        srv.close()
    assert srv.requests[0].startswith("GET /cluster HTTP/1.1\r\n") and "Connection: close" in srv.requests[0]
    assert got["scope"] == "demo \u00e9" and got["source"] == srv.url + "/patroni"
    a, b, c = got["members"]
    assert (a["name"], a["role"], a["state"], a["port"], a["timeline"]) == ("a", "replica", "streaming", 5433, 2)
    assert (a["replay_lag"], a["lag"], a["routing_lag"], a["leader"]) == (4096, 0, 4096, False)
    assert b["leader"] is True and b["replay_lag"] is None and b["routing_lag"] is None
    assert c["lag"] is None and c["port"] is None and c["api_url"] == ""
    # endpoints: the leader first, members without an address left out
    eps = endpoints_from_cluster(got, "user=app dbname=shop")
    assert [(e.id, e.priority, e.is_primary) for e in eps] == [("b", 1, True), ("a", 2, False)]
    assert eps[0].connection_string == "user=app dbname=shop host='127.0.0.1' port=5432"
    assert member_dsn("postgresql://app@/shop?sslmode=disable", "::1", 5) == \
        "postgresql://app@/shop?sslmode=disable&host=%3A%3A1&port=5"
    # the core's (nc_patroni_member_dsn: also what members that join later get)
    assert member_dsn("", "it's\\x", 6) == "host='it\\'s\\\\x' port=6"
    assert member_dsn("postgresql://app@/shop", "db 1", 7) == "postgresql://app@/shop?host=db%201&port=7"


def test_falls_back_past_a_silent_url_within_the_deadline(silent):
    srv = OneShotServer(json.dumps(CLUSTER))
    try:
        t0 = time.monotonic()
        got = fetch_cluster([silent, srv.url], 2.0)
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert got["source"] == srv.url
    assert 0.9 <= took < 2.0 + 1.0, took     # the silent URL had half the budget, no more


def test_unreachable_names_each_url(silent):
    t0 = time.monotonic()
    with pytest.raises(errors.OperationalError) as ei:
        fetch_cluster([silent, "http://127.0.0.1:1"], 0.6)
    assert time.monotonic() - t0 < 0.6 + 1.0
    e = ei.value
    assert e.error_code == 4025 and silent in str(e) and "timed out" in str(e) and "127.0.0.1:1" in str(e)


def test_bad_answers_and_arguments():
    srv = OneShotServer("<html>not json</html>")
    try:
        with pytest.raises(errors.OperationalError) as ei:
            fetch_cluster(srv.url, 2)
    finally:
        srv.close()
    assert ei.value.error_code == 4025 and "not a JSON object" in str(ei.value)
    srv = OneShotServer(json.dumps(CLUSTER), status=503)
    try:
        with pytest.raises(errors.OperationalError, match="HTTP status 503"):
            fetch_cluster(srv.url, 2)
    finally:
        srv.close()
    for bad in ("https://h:8008", ["http://h", 5], [], ["http://h"] * 17, 42):
        with pytest.raises(errors.ConfigurationError) as ei:
            fetch_cluster(bad, 1)
        assert ei.value.error_code == 4027, bad
    for t in (0, -1, float("nan"), "1", True):
        with pytest.raises(errors.ConfigurationError):
            fetch_cluster("http://127.0.0.1:1", t)
    with pytest.raises(errors.OperationalError) as ei:
        endpoints_from_cluster({"members": [CLUSTER["members"][2]], "source": "u", "scope": "s"}, "")
    assert ei.value.error_code == 4028


def test_gil_released_while_waiting(silent):
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.005)

    t = threading.Thread(target=spin)
    t.start()
    try:
        with pytest.raises(errors.OperationalError):
            fetch_cluster(silent, 0.5)
    finally:
        stop.set()
        t.join()
    assert len(ticks) > 20      # the other thread ran all along (~100 ticks in 0.5 s)


def test_ctrl_c_ends_the_wait(silent):
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fetch_cluster(silent, 30)
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 0.3 + 1.0     # not the 30 s deadline


# ---------------------------------------------------------------------------
# the core's watch (_native.PatroniWatch: /cluster re-read every interval on a native thread)
# ---------------------------------------------------------------------------

def watch_status(w, cond, what, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        st = w.status()
        if cond(st):
            return st
        assert time.monotonic() < deadline, "timed out waiting for %s: %r" % (what, st)
        time.sleep(0.01)


def test_watch_reports_members_joined_and_gone_and_survives_fork():
    from noodlecore import _native
    srv = OneShotServer(json.dumps(CLUSTER))
    w = _native.PatroniWatch([srv.url], 0.05, 2.0, ["a", "b", "old"])
    try:
        st = w.status()
        assert st["running"] is False and st["cluster"] is None and st["last_ok_age"] is None
        w.start()
        st = watch_status(w, lambda st: st["fetches"] >= 1, "the first answer")
        assert st["joined"] == ["c"] and st["gone"] == ["old"] and st["failures"] == 0
        assert [m["name"] for m in st["cluster"]["members"]] == ["a", "b", "c"] and st["last_ok_age"] >= 0
        pid = os.fork()
        if pid == 0:     # the child: the parent's thread is not here; a new watch runs in its place
            code = 1
            try:
                before = w.status()["fetches"]
                watch_status(w, lambda st: st["running"] and st["fetches"] > before, "the child's own answer")
                w.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        n = w.status()["fetches"]
        watch_status(w, lambda st: st["fetches"] > n, "the parent's watch going on")
    finally:
        w.close()
        srv.close()
    with pytest.raises(errors.PoolClosedError):
        w.status()


def test_watch_counts_failures_and_a_stop_ends_a_hung_read(silent):
    from noodlecore import _native
    w = _native.PatroniWatch([silent], 0.05, 60.0, [])
    w.start()
    time.sleep(0.1)      # lower bound only: let the read begin (the check below holds either way)
    t0 = time.monotonic()
    w.stop()             # the 60 s deadline of the hung read is not waited for
    assert time.monotonic() - t0 < 5
    assert w.status()["running"] is False and w.status()["fetches"] == 0
    w2 = _native.PatroniWatch(["http://127.0.0.1:1"], 0.05, 1.0, ["a"])
    try:
        w2.start()
        st = watch_status(w2, lambda st: st["consecutive_failures"] >= 2, "two failed reads")
        assert st["failures"] >= 2 and "127.0.0.1:1" in st["last_error"] and st["cluster"] is None
        assert st["joined"] == [] and st["gone"] == []    # nothing known of the members: no difference claimed
    finally:
        w2.close()
        w.close()


def test_watch_bad_arguments():
    from noodlecore import _native
    from noodlecore.database.failover_manager import DatabaseFailoverManager
    with pytest.raises(errors.ConfigurationError) as ei:
        _native.PatroniWatch(["https://x"], 1.0, 1.0, [])
    assert ei.value.error_code == 4027
    with pytest.raises(errors.ConfigurationError) as ei:
        _native.PatroniWatch(["http://x"], 0.0, 1.0, [])
    assert ei.value.error_code == 2013
    with pytest.raises(errors.ConfigurationError):
        DatabaseFailoverManager.from_patroni("http://127.0.0.1:1", interval=0)


def watch_threads():
    """How many of this process's threads are Patroni watch threads (the core names them)."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % tid) as f:
                n += f.read().strip() == "nc-patroni"
        except OSError:      # a thread that ended meanwhile
            pass
    return n


def test_watch_stop_and_close_from_two_threads(silent):
    """stop() and close() at once from two threads (the binding releases the GIL while the
    core joins the watch thread): close() returns only once the thread has ended, whoever
    joined it, and nothing is used after it was freed (the pytest-asan stage runs this).
    The thread is kept inside a read of a silent API, so a join takes up to the stop
    check's period and the two calls overlap in most rounds."""
    import gc
    from noodlecore import _native
    gc.collect()                 # a watch of an earlier test that is garbage ends now, not midway
    others = watch_threads()     # watches of earlier tests still alive, if any
    for k in range(30):
        w = _native.PatroniWatch([silent], 0.01, 60.0, [])
        w.start()
        if k == 0:
            assert watch_threads() == others + 1     # the core names its thread
        barrier = threading.Barrier(2)
        seen, failed = [], []

        def call(name):
            try:
                barrier.wait(10)
                getattr(w, name)()
                if name == "close":
                    seen.append(watch_threads())
            except BaseException as e:      # reported below, in the test's thread
                failed.append((name, e))

        # The thread that reaches the barrier last usually runs first (it holds the GIL):
        # each order in turn.
        order = ("stop", "close") if k % 2 else ("close", "stop")
        threads = [threading.Thread(target=call, args=(name,)) for name in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "stop() or close() hangs"
        assert failed == []
        assert len(seen) == 1 and seen[0] <= others, "close() returned while the watch thread still ran"
        with pytest.raises(errors.PoolClosedError):
            w.status()
        w.stop()        # after close: nothing to do, no error
        w.close()


def test_forked_child_follows_the_members_again(pg):
    """A manager that followed a member joining, then fork(): the child's route starts
    over from the endpoints the manager was made with (the parent's later pools are the
    parent's), and its own watch, renewed at the child's first use, learns the member
    again from its answers: the child lists it, added by its own follower, and the
    parent's follower is untouched.  Member "b" has no server (127.0.0.1:1): following
    it needs none."""
    from noodlecore.database.failover_manager import DatabaseFailoverManager, FailoverConfig
    a = {"name": "a", "role": "leader", "state": "running", "host": pg.host, "port": pg.port, "timeline": 1}
    b = {"name": "b", "role": "replica", "state": "streaming", "host": "127.0.0.1", "port": 1, "timeline": 1,
         "lag": 0}
    srv = OneShotServer(json.dumps({"members": [a], "scope": "fork"}))
    m = DatabaseFailoverManager.from_patroni(srv.url, dsn=pg.dsn(), interval=0.05, timeout=2.0,
                                             config=FailoverConfig(health_check_interval=0.2))
    try:
        srv.body = json.dumps({"members": [a, b], "scope": "fork"}).encode()
        m.start_monitoring()
        deadline = time.monotonic() + 10
        while "b" not in m.get_status()["endpoints"]:
            assert time.monotonic() < deadline, "the parent never followed b"
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                st = m.get_status()             # the first use: a new route over "a", a new watch
                first = sorted(st["endpoints"])
                deadline = time.monotonic() + 10
                while "b" not in st["endpoints"] and time.monotonic() < deadline:
                    time.sleep(0.01)
                    st = m.get_status()
                follow = st["patroni"]["follow"]
                ok = (first in (["a"], ["a", "b"]) and sorted(st["endpoints"]) == ["a", "b"]
                      and follow["added"] == 1 and [e.id for e in m.endpoints] == ["a", "b"]
                      and m.endpoints[1].metadata.get("patroni_joined"))
                code = 0 if ok else 3
                if not ok:
                    sys.stderr.write("child saw %r then %r, follow %r\n" % (first, sorted(st["endpoints"]), follow))
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the child did not follow b: %r" % status
        st = m.get_status()
        assert sorted(st["endpoints"]) == ["a", "b"] and st["patroni"]["follow"]["added"] == 1
    finally:
        m.shutdown()
        srv.close()
