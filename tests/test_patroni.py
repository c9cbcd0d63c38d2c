"""A real Patroni cluster (etcd + 3 Patroni members running PostgreSQL 15, started by
noodlecore.testing.patroni): the harness itself, the core's REST client
(_native.patroni_cluster), DatabaseFailoverManager.from_patroni across a planned
switchover and a kill of the leader's postmaster, the Patroni API down, and
``noodlecore-db status --patroni``.

Marked `patroni`: tests/run.sh runs them in the pytest-python3 stage only.  The
cluster is shared by the module; the `patroni` fixture waits until it is healthy
before each test.
"""

import json
import subprocess
import sys
import threading
import time

import pytest

from figures import record_figure
from helpers import cfg, subprocess_env, wait_for
from noodlecore.database import DatabaseError
from noodlecore.database import errors as nerrors
from noodlecore.database.failover_manager import DatabaseFailoverManager
from noodlecore.database.patroni import fetch_cluster, member_dsn

pytestmark = pytest.mark.once

DSN = "user=postgres dbname=postgres connect_timeout=2"


def by_name(view):
    return {m["name"]: m for m in view["members"]}


# ---------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------

def test_harness_cluster_and_replay_stall(patroni):
    leader = patroni.leader()
    assert leader is not None
    view = patroni.cluster_view()
    assert sorted(by_name(view)) == sorted(m.name for m in patroni.members)
    replicas = [m for m in patroni.members if m is not leader]
    assert all(by_name(view)[m.name]["state"] == "streaming" for m in replicas)
    # a stalled replay: WAL still arrives, nothing is replayed; Patroni reports replay_lag
    r = replicas[0]
    patroni.stall_replay(r)
    try:
        leader.sql("drop table if exists stall; create table stall as select g from generate_series(1, 30000) g")

        def lagging():
            m = by_name(patroni.cluster_view())[r.name]
            return m.get("replay_lag", 0) > 100000 and m

        wait_for(lagging, 30, interval=0.2, what="Patroni to report %s's replay lag" % r.name)
        # the core's client reads the same figure, and routing uses replay_lag (not `lag`,
        # which follows the received position)
        native = by_name(fetch_cluster(patroni.api_urls, 5))[r.name]
        assert native["replay_lag"] > 100000 and native["routing_lag"] == native["replay_lag"]
    finally:
        patroni.resume_replay(r)
    wait_for(lambda: by_name(patroni.cluster_view())[r.name].get("replay_lag") == 0, 30, interval=0.2,
             what="replay to catch up")


def test_harness_member_added_and_removed(patroni):
    """A member that joins becomes an endpoint (the core's watch applies /cluster) and
    serves standby reads once streaming; one that leaves is marked removed and no borrow
    goes to it; back at its address it gets its slot again; the leader never changes
    meanwhile."""
    leader = patroni.leader()
    before = set(by_name(patroni.cluster_view()))
    with DatabaseFailoverManager.from_patroni(patroni.api_urls, dsn=DSN, config=cfg(), interval=0.2) as fm:
        fm.start_monitoring()
        ids = [e.id for e in fm.endpoints]
        assert sorted(ids) == sorted(before)

        def watched(cond):
            def check():
                st = fm.get_status()["patroni"]
                return cond(st) and st
            return check

        st = wait_for(watched(lambda st: st["fetches"] >= 1), 10, interval=0.05, what="the watch's first answer")
        assert st["running"] and st["joined"] == [] and st["gone"] == [] and st["failures"] == 0
        assert st["follow"] == {"added": 0, "removed": 0, "returned": 0, "refusals": 0, "last_refusal": ""}
        m = patroni.add_member()
        view = by_name(patroni.cluster_view())
        assert set(view) == before | {m.name}
        assert view[m.name]["state"] == "streaming" and view[m.name]["port"] == m.port
        assert by_name(fetch_cluster(patroni.api_urls, 5))[m.name]["state"] == "streaming"

        # it becomes an endpoint, appended (the others keep their places) ...
        def joined():
            st = fm.get_status()
            e = st["endpoints"].get(m.name)
            return e is not None and e["serves_reads"] and st
        st = wait_for(joined, 20, interval=0.05, what="%s to serve reads" % m.name)
        assert [e.id for e in fm.endpoints] == ids + [m.name]
        assert fm.endpoints[-1].connection_string == member_dsn(DSN, "127.0.0.1", m.port)
        assert st["endpoints"][m.name]["role"] == "standby" and not st["endpoints"][m.name]["removed"]
        assert st["patroni"]["joined"] == [m.name] and st["patroni"]["follow"]["added"] == 1
        # ... and serves target="standby" reads (the core balances the standbys by in-flight count)
        wait_for(lambda: m.port in standby_ports(fm), 10, interval=0.05, what="a standby read on %s" % m.name)
        assert fm.get_pool(m.name).get_stats().connections_opened >= 1
        assert fm.current_endpoint == leader.name and port_of(fm) == leader.port

        # it leaves: marked removed (the entry stays), no borrow goes to it
        with fm.get_connection(timeout=3, target="standby"):
            pass
        patroni.remove_member(m)
        assert set(by_name(patroni.cluster_view())) == before
        assert m.name not in by_name(fetch_cluster(patroni.api_urls, 5))
        st = wait_for(lambda: (s := fm.get_status())["endpoints"][m.name]["removed"] and s, 10, interval=0.05,
                      what="%s marked removed" % m.name)
        assert st["patroni"]["follow"]["removed"] == 1 and st["patroni"]["gone"] == []
        assert not st["endpoints"][m.name]["is_available"] and not st["endpoints"][m.name]["serves_reads"]
        assert "removed" in st["endpoints"][m.name]["last_error"]
        assert [e.id for e in fm.endpoints] == ids + [m.name]
        ports = standby_ports(fm, 12)
        assert m.port not in ports and set(ports) <= {patroni.member(i).port for i in ids}
        assert fm.get_pool(m.name).get_stats().total_connections == 0     # its connections were closed
        with fm.get_connection(timeout=3) as c:      # service went on throughout, on the same leader
            assert c.execute_query("SELECT 1 AS one")[0]["one"] == 1
        assert fm.current_endpoint == leader.name and patroni.leader().name == leader.name

        # back under its name at its address: its slot again, reads again
        patroni.restart_member(m)
        try:
            st = wait_for(lambda: (s := fm.get_status())["endpoints"][m.name]["serves_reads"] and s, 20,
                          interval=0.05, what="%s back and serving reads" % m.name)
            assert not st["endpoints"][m.name]["removed"] and st["patroni"]["follow"]["returned"] == 1
            assert [e.id for e in fm.endpoints] == ids + [m.name]
            wait_for(lambda: m.port in standby_ports(fm), 10, interval=0.05, what="a read on %s again" % m.name)
        finally:
            patroni.remove_member(m)
        assert fm.current_endpoint == leader.name and patroni.leader().name == leader.name
        assert fm.get_status()["statistics"]["total_failovers"] == 0
        fm.stop_monitoring()
        assert fm.get_status()["patroni"]["running"] is False


# ---------------------------------------------------------------------------
# the core's REST client
# ---------------------------------------------------------------------------

def test_native_client_matches_patroni(patroni):
    leader = patroni.leader()
    # a dead URL first: the client falls back to the next
    dead = "http://127.0.0.1:1"
    got = fetch_cluster([dead] + patroni.api_urls, 5)
    assert got["source"] == patroni.api_urls[0]
    assert got["scope"] == patroni.scope
    mine = by_name(patroni.cluster_view())
    assert sorted(by_name(got)) == sorted(mine)
    for name, m in by_name(got).items():
        assert (m["host"], m["port"], m["role"], m["state"], m["timeline"]) == (
            mine[name]["host"], mine[name]["port"], mine[name]["role"], mine[name]["state"],
            mine[name]["timeline"])
        assert m["leader"] == (name == leader.name)
        assert m["api_url"] == mine[name]["api_url"]
    assert by_name(got)[leader.name]["replay_lag"] is None       # the leader has no lag
    # comma-separated string form, and the 4025 error naming each URL
    assert fetch_cluster(",".join(patroni.api_urls), 5)["scope"] == patroni.scope
    with pytest.raises(nerrors.OperationalError) as ei:
        fetch_cluster([dead, "http://127.0.0.1:2"], 2)
    assert ei.value.error_code == 4025 and dead in str(ei.value)
    with pytest.raises(nerrors.ConfigurationError) as ei:
        fetch_cluster("https://127.0.0.1:8008", 2)
    assert ei.value.error_code == 4027


# ---------------------------------------------------------------------------
# from_patroni
# ---------------------------------------------------------------------------

def port_of(m):
    with m.get_connection(timeout=3) as c:
        return c.execute_query("SELECT inet_server_port() AS port")[0]["port"]


def test_from_patroni_discovery(patroni):
    leader = patroni.leader()
    with DatabaseFailoverManager.from_patroni(patroni.api_urls, dsn=DSN, config=cfg()) as m:
        ids = [e.id for e in m.endpoints]
        assert ids[0] == leader.name and sorted(ids) == sorted(x.name for x in patroni.members)
        assert [e.priority for e in m.endpoints] == [1, 2, 3]
        assert m.endpoints[0].is_primary and not any(e.is_primary for e in m.endpoints[1:])
        for e in m.endpoints:
            member = patroni.member(e.id)
            assert e.metadata["patroni"]["port"] == member.port
            assert e.connection_string == member_dsn(DSN, "127.0.0.1", member.port)
        assert m.patroni_urls == patroni.api_urls
        assert m.current_endpoint == leader.name
        assert port_of(m) == leader.port
        assert m.patroni_cluster(timeout=5)["scope"] == patroni.scope
    # the URI form of the DSN too
    with DatabaseFailoverManager.from_patroni(patroni.api_urls[1], dsn="postgresql://postgres@/postgres",
                                              config=cfg()) as m:
        assert port_of(m) == leader.port
    with pytest.raises(nerrors.OperationalError) as ei:
        DatabaseFailoverManager.from_patroni(["http://127.0.0.1:1"], dsn=DSN, timeout=1)
    assert ei.value.error_code == 4025


class Writer:
    """Inserts 1, 2, 3, ... through the manager, one borrow per statement; records which
    server acknowledged each row and every error."""

    def __init__(self, m, table):
        self.m, self.table = m, table
        self.acked = {}          # n -> server port
        self.errors = []
        self.stop = threading.Event()
        self.n = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.n += 1
            try:
                with self.m.get_connection(timeout=2) as c:
                    row = c.execute_query("INSERT INTO %s (n) VALUES (%%s) RETURNING inet_server_port() AS port"
                                          % self.table, (self.n,))[0]
                self.acked[self.n] = row["port"]
            except DatabaseError as e:
                self.errors.append(e)
                time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def rows_on(member, table):
    return {int(r[0]) for r in member.sql("SELECT n FROM %s" % table)}


def test_switchover_followed(patroni):
    old = patroni.leader()
    old.sql("DROP TABLE IF EXISTS sw; CREATE TABLE sw (n int PRIMARY KEY)")
    # failover_wait: a borrow for the primary waits for the new leader instead of failing
    with DatabaseFailoverManager.from_patroni(patroni.api_urls, dsn=DSN, config=cfg(failover_wait=10)) as m:
        m.start_monitoring()
        with Writer(m, "sw") as w:
            wait_for(lambda: len(w.acked) >= 20, 10, what="writes before the switchover")
            new = patroni.switchover()
            wait_for(lambda: m.current_endpoint == new.name, 15,
                     what="the manager on the new leader %s (status %s)" % (new.name, m.get_status()))
            after = len(w.acked)
            wait_for(lambda: len(w.acked) >= after + 20, 10, what="writes after the switchover")
        assert port_of(m) == new.port
        wait_for(lambda: m.get_status()["endpoints"][old.name]["role"] == "standby", 15,
                 what="the demoted leader probed as a standby")
    # every acknowledged write is on the new leader (a switchover loses nothing), and none
    # was acknowledged by the old leader after the first one the new leader took
    on_new = rows_on(new, "sw")
    assert set(w.acked) <= on_new, sorted(set(w.acked) - on_new)
    first_new = min(n for n, port in w.acked.items() if port == new.port)
    assert all(port == new.port for n, port in w.acked.items() if n > first_new)
    assert set(w.acked.values()) <= {old.port, new.port}
    # what failed during it failed with a typed error, never a write on the demoted node
    record_figure("Patroni switchover (failover_wait 10 s, one writer)", "%d writes acknowledged, %d failed %s" % (
        len(w.acked), len(w.errors), sorted({e.error_code for e in w.errors})))
    for e in w.errors:
        assert getattr(e, "error_code", None), e


def test_leader_postgres_killed(patroni):
    leader = patroni.leader()
    leader.sql("DROP TABLE IF EXISTS kl; CREATE TABLE kl (n int PRIMARY KEY)")
    with DatabaseFailoverManager.from_patroni(patroni.api_urls, dsn=DSN, config=cfg(failover_wait=10)) as m:
        m.start_monitoring()
        with Writer(m, "kl") as w:
            wait_for(lambda: len(w.acked) >= 20, 10, what="writes before the kill")
            old = patroni.kill_leader_postgres()
            new = patroni.wait_new_leader(old, timeout=30)
            wait_for(lambda: m.current_endpoint == new.name, 15,
                     what="the manager on the new leader %s (status %s)" % (new.name, m.get_status()))
            n_switch = w.n
            wait_for(lambda: len([n for n in w.acked if n > n_switch]) >= 20, 10,
                     what="writes after the failover")
        assert port_of(m) == new.port
    record_figure("Patroni leader postgres killed (one writer)", "%d writes acknowledged, %d failed %s" % (
        len(w.acked), len(w.errors), sorted({e.error_code for e in w.errors})))
    after = {n for n in w.acked if n > n_switch}
    assert after <= rows_on(new, "kl")
    assert all(w.acked[n] == new.port for n in after)


def test_patroni_api_down_service_goes_on(patroni):
    leader = patroni.leader()
    leader.sql("DROP TABLE IF EXISTS ad; CREATE TABLE ad (n int PRIMARY KEY)")
    with DatabaseFailoverManager.from_patroni(patroni.api_urls, dsn=DSN, config=cfg(), timeout=2,
                                              interval=0.2) as m:
        m.start_monitoring()
        first = wait_for(lambda: m.get_status()["patroni"]["fetches"] >= 1 and m.get_status()["patroni"], 10,
                         interval=0.05, what="the watch's first answer")
        patroni.pause_api()       # every Patroni SIGSTOPped: the API accepts TCP and never answers
        try:
            t0 = time.monotonic()
            with pytest.raises(nerrors.OperationalError) as ei:
                m.patroni_cluster(timeout=1.5)
            took = time.monotonic() - t0
            assert ei.value.error_code == 4025 and "timed out" in str(ei.value)
            assert 1.0 < took < 5, took      # the deadline holds against a hung API
            for n in range(1, 21):
                with m.get_connection(timeout=3) as c:
                    port = c.execute_query("INSERT INTO ad (n) VALUES (%s) RETURNING inet_server_port() AS p",
                                           (n,))[0]["p"]
                assert port == leader.port
            assert m.current_endpoint == leader.name
            with pytest.raises(nerrors.OperationalError):
                DatabaseFailoverManager.from_patroni(patroni.api_urls, dsn=DSN, timeout=1)
            # the core's watch counts its failed re-reads (each within its 2 s deadline)
            # and keeps the last answer; nothing else changes
            st = wait_for(lambda: m.get_status()["patroni"]["consecutive_failures"] >= 2 and m.get_status()["patroni"],
                          30, interval=0.05, what="two failed re-reads of /cluster")
            assert st["failures"] >= 2 and "timed out" in st["last_error"]
            assert by_name(st["cluster"]).keys() == by_name(first["cluster"]).keys()
            assert st["joined"] == [] and st["gone"] == []
            with m.get_connection(timeout=3) as c:
                assert c.execute_query("SELECT inet_server_port() AS p")[0]["p"] == leader.port
            assert m.current_endpoint == leader.name
        finally:
            patroni.resume_api()
        wait_for(lambda: m.get_status()["patroni"]["consecutive_failures"] == 0, 30, interval=0.05,
                 what="the watch to read /cluster again after the API came back")
    assert rows_on(leader, "ad") == set(range(1, 21))


# ---------------------------------------------------------------------------
# reads on the replicas Patroni lists (read routing: the core's, from the probes)
# ---------------------------------------------------------------------------

def standby_ports(m, n=12):
    """Ports of the servers n standby reads went to (None: no standby eligible, 4017)."""
    ports = []
    for _ in range(n):
        try:
            with m.get_connection(timeout=3, target="standby") as c:
                ports.append(c.execute_query("SELECT inet_server_port() AS port")[0]["port"])
        except nerrors.OperationalError as e:
            if e.error_code != 4017:
                raise
            ports.append(None)
    return ports


def test_reads_on_replicas_stalled_one_excluded_then_back(patroni):
    leader = patroni.leader()
    r1, r2 = [x for x in patroni.members if x is not leader]
    config = cfg(max_replica_lag_bytes=512 * 1024)
    with DatabaseFailoverManager.from_patroni(patroni.api_urls, dsn=DSN, config=config) as m:
        m.start_monitoring()
        # both replicas serve reads (balanced), the leader none
        wait_for(lambda: set(standby_ports(m)) == {r1.port, r2.port}, 15, interval=0.1,
                 what="reads on both replicas")
        patroni.stall_replay(r1)
        try:
            leader.sql("DROP TABLE IF EXISTS rs; CREATE TABLE rs AS SELECT g FROM generate_series(1, 40000) g")
            # r1 falls behind the lag limit: no read goes there any more
            wait_for(lambda: set(standby_ports(m)) == {r2.port}, 15, interval=0.1, what="r1 excluded")
            assert set(standby_ports(m, 30)) == {r2.port}
        finally:
            patroni.resume_replay(r1)
        wait_for(lambda: r1.port in standby_ports(m), 20, interval=0.1, what="r1 serving reads again")
        # writes still go to the leader
        assert port_of(m) == leader.port


def test_database_manager_patroni_option(patroni):
    from noodlecore.database import DatabaseManager
    leader = patroni.leader()
    replicas = {m.port for m in patroni.members if m is not leader}
    db = DatabaseManager(config="postgresql://postgres@/postgres?connect_timeout=2", patroni=patroni.api_urls,
                         failover_config=cfg())
    with pytest.raises(nerrors.ConfigurationError):
        DatabaseManager(config="sqlite:///x.db", patroni=patroni.api_urls)
    try:
        db.connect()
        assert [e.id for e in db.failover_endpoints][0] == leader.name
        assert db.execute_query("SELECT inet_server_port() AS p")[0]["p"] == leader.port
        wait_for(lambda: db.execute_query("SELECT inet_server_port() AS p", target="prefer-standby")[0]["p"]
                 in replicas, 15, interval=0.1, what="a read on a replica")
    finally:
        db.close()


# ---------------------------------------------------------------------------
# noodlecore-db status --patroni
# ---------------------------------------------------------------------------

def test_cli_status_patroni(patroni):
    leader = patroni.leader()
    cmd = [sys.executable, "-m", "noodlecore.database", "status", "--patroni", ",".join(patroni.api_urls),
           "--dsn", DSN, "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=subprocess_env(), cwd="/")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["patroni"]["scope"] == patroni.scope
    eps = doc["endpoints"]
    assert eps[0]["id"] == leader.name and eps[0]["role"] == "primary"
    assert eps[0]["patroni"]["role"] == "leader"
    assert all(e["role"] == "standby" and e["patroni"]["state"] == "streaming" for e in eps[1:])
    r = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=60, env=subprocess_env(), cwd="/")
    assert r.returncode == 0 and leader.name in r.stdout and "Patroni cluster" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "noodlecore.database", "status", "--patroni", "http://127.0.0.1:1",
                        "--timeout", "1"], capture_output=True, text=True, timeout=60, env=subprocess_env(), cwd="/")
    assert r.returncode != 0 and "4025" in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# the README's Patroni example (a ```python patroni block: test_readme.py runs
# the plain ```python ones on a single server)
# ---------------------------------------------------------------------------

def test_readme_patroni_example(patroni, capsys):
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python patroni\n(.*?)```", text, flags=re.S)
    assert blocks
    for i, code in enumerate(blocks):
        exec(compile(code, "README.md patroni block %d" % i, "exec"),
             {"__name__": "__readme__", "PATRONI_URLS": patroni.api_urls})
    out = capsys.readouterr().out
    assert all(m.name in out for m in patroni.members)
