"""A throwaway Patroni cluster: etcd and N Patroni members on 127.0.0.1.

Owns: starting one etcd (Debian's ``etcd``, v3 API) and Patroni members (each
under ``tini -s``, so a SIGKILLed postmaster is reaped at once and Patroni
does not take the zombie for a live server), their configuration, the REST
calls the tests need (``GET /cluster``, ``POST /switchover``), the faults
(kill the leader's postmaster, stall a replica's replay, pause the REST API),
adding and removing members, and removing everything afterwards.

Layout (a root named like PgCluster's, so ``sweep_stale`` cleans it after a
killed run; every process runs with its cwd inside the root)::

    /dev/shm/ncpg-<pid>-<rand>/          root (owner file)
        etcd/                            etcd's data dir and log
        <member>/                        patroni.yml, patroni.log (its output), pgpass
            data/                        the member's PostgreSQL data dir

Patroni comes from $NOODLE_PATRONI_BIN (tests/run.sh builds a venv on
/usr/bin/python3 with tests/patroni-requirements.txt) or the PATH; it runs as
the ``postgres`` user when we are root.  Standard library only.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from .cluster import ROOT_PREFIX
from .processes import (SHM_DIR, PgHarnessError, alive, as_pg, check_binaries, chown_pg, claim_port, clean_env,
                        free_port, kill, kill_all_hard, pids_in, proc_stat, read_pidfile, release_port, tail_msg,
                        wait_dead)
from .psql import run_psql

__all__ = ["PatroniCluster", "PatroniMember", "find_patroni"]

# Failover-friendly timings (see shared reference: Patroni 4 raises ttl < 20 and
# retry_timeout < 3 itself).  primary_start_timeout 0: a crashed primary fails over
# instead of being restarted in place.
DCS_SETTINGS = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3, "primary_start_timeout": 0,
                "maximum_lag_on_failover": 16 * 1024 * 1024}

PG_PARAMETERS = {
    "fsync": "off",
    "max_connections": 100,
    "wal_keep_size": "64MB",
    "wal_receiver_timeout": "5s",
    "wal_sender_timeout": "5s",
    "wal_retrieve_retry_interval": "200ms",
    "jit": "off",
    "huge_pages": "off",
    # after a SIGKILL, no stale /dev/shm/PostgreSQL.* files
    "dynamic_shared_memory_type": "mmap",
    "log_line_prefix": "%m [%p] %b ",
}


def find_patroni():
    """The patroni executable: $NOODLE_PATRONI_BIN, else ``patroni`` on the PATH.
    Raises PgHarnessError (never a skip) when there is none."""
    exe = os.environ.get("NOODLE_PATRONI_BIN") or shutil.which("patroni")
    if not exe or not os.access(exe, os.X_OK):
        raise PgHarnessError("patroni not found: set NOODLE_PATRONI_BIN (tests/run.sh builds it from "
                             "tests/patroni-requirements.txt) or put patroni on the PATH")
    return exe


def _need(tool, package):
    exe = shutil.which(tool)
    if not exe:
        raise PgHarnessError("%s not found (apt-get install %s)" % (tool, package))
    return exe


def http_json(url, body=None, timeout=5.0):
    """GET (or POST body as JSON) url -> (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class PatroniMember:
    """One Patroni member: `name`, `port` (PostgreSQL), `api_port`, `api_url`, `datadir`."""

    host = "127.0.0.1"
    user = "postgres"
    dbname = "postgres"

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.port = free_port()
        self.api_port = free_port()
        self.dir = os.path.join(cluster.root, name)
        self.datadir = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "patroni.log")   # Patroni's stdout and stderr
        self.config = os.path.join(self.dir, "patroni.yml")
        self.proc = None
        self._api_paused = False

    def __repr__(self):
        return "<PatroniMember %s pg=%d api=%d>" % (self.name, self.port, self.api_port)

    @property
    def api_url(self):
        return "http://127.0.0.1:%d" % self.api_port

    def dsn(self, **extra):
        s = "postgresql://%s@%s:%d/%s" % (self.user, self.host, self.port, self.dbname)
        if extra:
            s += "?" + "&".join("%s=%s" % (k, v) for k, v in extra.items())
        return s

    def sql(self, query, timeout=10):
        return run_psql(self.host, self.port, query, timeout=timeout, connect_timeout=3,
                        bindir=self.cluster.pg_bindir)

    def postmaster_pid(self):
        lines = read_pidfile(self.datadir)
        try:
            pid = int(lines[0])
        except (TypeError, IndexError, ValueError):
            return None
        return pid if alive(pid) else None

    def _write_config(self):
        c = self.cluster
        conf = {
            "scope": c.scope,
            "namespace": "/noodlecore/",
            "name": self.name,
            "restapi": {"listen": "127.0.0.1:%d" % self.api_port,
                        "connect_address": "127.0.0.1:%d" % self.api_port},
            "etcd3": {"hosts": ["127.0.0.1:%d" % c.etcd_port]},
            "bootstrap": {
                "dcs": dict(DCS_SETTINGS, postgresql={"use_pg_rewind": True, "use_slots": True,
                                                      "parameters": {"wal_log_hints": "on",
                                                                     "max_wal_senders": 10,
                                                                     "max_replication_slots": 10,
                                                                     "hot_standby": "on"}}),
                # values must be strings; Patroni refuses "nosync"
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"wal-segsize": "1"}],
            },
            "postgresql": {
                "listen": "127.0.0.1:%d" % self.port,
                "connect_address": "127.0.0.1:%d" % self.port,
                "data_dir": self.datadir,
                "bin_dir": c.pg_bindir,
                "pgpass": os.path.join(self.dir, "pgpass"),
                # a new replica's base backup starts at once, not after a spread checkpoint
                "basebackup": [{"checkpoint": "fast"}],
                "authentication": {"superuser": {"username": "postgres"},
                                   "replication": {"username": "postgres"}},
                "parameters": dict(PG_PARAMETERS, unix_socket_directories=self.dir),
                "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                           "host replication all 127.0.0.1/32 trust"],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }
        with open(self.config, "w") as f:
            json.dump(conf, f, indent=1)   # JSON is YAML
        chown_pg(self.config)

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o700)
        chown_pg(self.dir)
        self._write_config()
        env = clean_env(HOME=self.dir, PGPASSFILE=os.path.join(self.dir, "pgpass"))
        log = open(self.logfile, "ab")
        try:
            # tini -s: a subreaper, so the postmaster Patroni detaches is reaped the
            # moment it dies (else PID 1 leaves a zombie Patroni counts as running).
            self.proc = subprocess.Popen(
                as_pg([self.cluster.tini, "-s", "--", self.cluster.patroni, self.config]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=env,
                start_new_session=True)
        finally:
            log.close()

    def patroni_pids(self):
        """The Patroni daemon's pids (tini's children: setpriv execs, so tini's child is Patroni,
        and Patroni's own worker processes)."""
        if self.proc is None:
            return []
        pids = []
        for p in _all_children(self.proc.pid):
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"patroni" in cmd and b"postgres:" not in cmd and b"tini" not in cmd.split(b"\0")[0]:
                pids.append(p)
        return pids

    def startup_pid(self):
        """The startup (WAL replay) process of a replica's postmaster."""
        pm = self.postmaster_pid()
        if pm is None:
            return None
        for p in _all_children(pm, depth=1):
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if "startup" in cmd:
                return p
        return None

    def stop(self, timeout=30):
        """Patroni's own shutdown (it stops postgres too), then SIGKILL of whatever is left."""
        if self.proc is None:
            return
        if self._api_paused:
            self.resume_api()
        kill(self.proc.pid, signal.SIGTERM)      # tini forwards it to Patroni
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        kill_all_hard(pids_in(self.dir))
        if self.proc.poll() is None:
            kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def pause_api(self):
        """SIGSTOP the Patroni daemon: its REST API accepts TCP connections (the kernel does)
        but never answers, and it does nothing to postgres meanwhile."""
        for p in self.patroni_pids():
            kill(p, signal.SIGSTOP)
        self._api_paused = True

    def resume_api(self):
        for p in self.patroni_pids():
            kill(p, signal.SIGCONT)
        self._api_paused = False


def _all_children(pid, depth=8):
    """Descendants of pid (by /proc ppid), up to depth levels."""
    by_parent = {}
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        st = proc_stat(int(n))
        if st and st[0] not in ("Z", "X"):
            by_parent.setdefault(st[1], []).append(int(n))
    out, level = [], [pid]
    for _ in range(depth):
        level = [c for p in level for c in by_parent.get(p, [])]
        if not level:
            break
        out.extend(level)
    return out


class PatroniCluster:
    """etcd plus `n` Patroni members; ``start()`` returns once the leader takes writes and every
    replica streams.  Use as a context manager, or call close()."""

    def __init__(self, n=3, scope=None, patroni=None, pg_bindir=None):
        self.pg_bindir = check_binaries(pg_bindir)
        self.patroni = patroni or find_patroni()
        self.tini = _need("tini", "tini")
        self.etcd = _need("etcd", "etcd-server")
        self.root = tempfile.mkdtemp(prefix="%s%d-" % (ROOT_PREFIX, os.getpid()), dir=SHM_DIR)
        st = proc_stat(os.getpid())
        with open(os.path.join(self.root, "owner"), "w") as f:
            f.write("%d %d\n" % (os.getpid(), st[2] if st else 0))
        os.chmod(self.root, 0o755)
        chown_pg(self.root)
        self.scope = scope or "nct%d" % os.getpid()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.etcd_proc = None
        self.n = n
        self.members = []
        self._counter = 0
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    # ---- lifecycle -------------------------------------------------------
    def start(self, timeout=90):
        self._start_etcd()
        for _ in range(self.n):
            self._new_member()
        self.wait_healthy(timeout=timeout)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _start_etcd(self):
        d = os.path.join(self.root, "etcd")
        os.makedirs(d)
        peer = "http://127.0.0.1:%d" % self.etcd_peer_port
        client = "http://127.0.0.1:%d" % self.etcd_port
        log = open(os.path.join(d, "etcd.log"), "ab")
        try:
            self.etcd_proc = subprocess.Popen(
                [self.etcd, "--name", "e0", "--data-dir", os.path.join(d, "data"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", "e0=" + peer, "--initial-cluster-state", "new",
                 "--listen-metrics-urls", "", "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=d, env=clean_env(),
                start_new_session=True)
        finally:
            log.close()
        self._wait(lambda: self._etcd_ok(client), 30, "etcd did not answer", os.path.join(d, "etcd.log"))

    def _etcd_ok(self, client):
        if self.etcd_proc.poll() is not None:
            raise PgHarnessError("etcd exited (rc=%s)%s" % (
                self.etcd_proc.returncode, tail_msg(os.path.join(self.root, "etcd", "etcd.log"))))
        try:
            status, body = http_json(client + "/health", timeout=1)
        except OSError:
            return False
        return status == 200

    def _new_member(self):
        with self._lock:
            name = "m%d" % self._counter
            self._counter += 1
        m = PatroniMember(self, name)
        self.members.append(m)
        m.start()
        return m

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for m in self.members:
            try:
                m.stop(timeout=15)
            except Exception:
                pass
            release_port(m.port)
            release_port(m.api_port)
        if self.etcd_proc is not None and self.etcd_proc.poll() is None:
            self.etcd_proc.kill()
            self.etcd_proc.wait(10)
        kill_all_hard(pids_in(self.root))
        shutil.rmtree(self.root, ignore_errors=True)
        release_port(self.etcd_port)
        release_port(self.etcd_peer_port)

    # ---- what Patroni says ------------------------------------------------
    def member(self, name):
        for m in self.members:
            if m.name == name:
                return m
        raise PgHarnessError("no member named %r" % name)

    @property
    def api_urls(self):
        return [m.api_url for m in self.members]

    def cluster_view(self, timeout=3.0):
        """GET /cluster from the first member that answers (as a dict), else None."""
        for m in self.members:
            if m._api_paused or m.proc is None:
                continue
            try:
                status, body = http_json(m.api_url + "/cluster", timeout=timeout)
            except OSError:
                continue
            if status == 200 and isinstance(body, dict):
                return body
        return None

    def leader(self):
        """The leader member according to Patroni, or None."""
        view = self.cluster_view()
        for x in (view or {}).get("members", []):
            if x.get("role") == "leader" and x.get("state") == "running":
                return self.member(x["name"])
        return None

    def replicas(self):
        view = self.cluster_view() or {}
        return [self.member(x["name"]) for x in view.get("members", []) if x.get("role") != "leader"]

    def _writable(self, m):
        try:
            return m.sql("select pg_is_in_recovery()", timeout=3) == [["f"]]
        except Exception:
            return False

    def _streaming(self, leader):
        """Application names of the replicas streaming from leader (pg_stat_replication)."""
        try:
            out = leader.sql("select application_name from pg_stat_replication where state = 'streaming'",
                             timeout=3)
        except Exception:
            return set()
        return {row[0] for row in out}

    def wait_healthy(self, timeout=60, members=None):
        """Until Patroni names a running leader that takes writes and every member (of `members`,
        default all) other than it streams from it, both in pg_stat_replication and in
        Patroni's view.  Returns the leader."""
        names = {m.name for m in (members or self.members)}
        found = {}

        def ok():
            self._check_alive()
            view = self.cluster_view()
            if not view:
                return False
            leader = [x for x in view.get("members", []) if x.get("role") == "leader"
                      and x.get("state") == "running"]
            if len(leader) != 1:
                return False
            lm = self.member(leader[0]["name"])
            if not self._writable(lm):
                return False
            want = names - {lm.name}
            states = {x["name"]: x.get("state") for x in view.get("members", [])}
            if any(states.get(n) != "streaming" for n in want):
                return False
            if not want <= self._streaming(lm):
                return False
            found["leader"] = lm
            return True

        self._wait(ok, timeout, "cluster not healthy (leader writable, replicas streaming)")
        return found["leader"]

    def _check_alive(self):
        for m in self.members:
            if m.proc is not None and m.proc.poll() is not None:
                raise PgHarnessError("patroni %s exited (rc=%s)%s" % (m.name, m.proc.returncode,
                                                                        tail_msg(m.logfile)))

    def _wait(self, cond, timeout, what, log=None):
        deadline = time.monotonic() + timeout
        while True:
            if cond():
                return
            if time.monotonic() > deadline:
                view = None
                try:
                    view = self.cluster_view(timeout=1)
                except Exception:
                    pass
                logs = log and tail_msg(log) or "".join(tail_msg(m.logfile) for m in self.members)
                raise PgHarnessError("%s within %ss; Patroni's view: %s%s" % (what, timeout, view, logs))
            time.sleep(0.1)

    # ---- operations -------------------------------------------------------
    def switchover(self, candidate=None, timeout=60):
        """A planned switchover (REST POST /switchover) to candidate (a member or name; default
        the first replica).  Returns the new leader once it takes writes and every other member
        streams from it again."""
        leader = self.leader()
        if leader is None:
            raise PgHarnessError("switchover: no leader")
        if candidate is None:
            candidate = next(m for m in self.members if m is not leader and m.proc is not None)
        if isinstance(candidate, str):
            candidate = self.member(candidate)
        status, body = http_json(leader.api_url + "/switchover",
                                 {"leader": leader.name, "candidate": candidate.name}, timeout=30)
        if status != 200:
            raise PgHarnessError("switchover %s -> %s refused: %s %s" % (leader.name, candidate.name,
                                                                        status, body))
        self._wait(lambda: self._writable(candidate) and (self.leader() is candidate), timeout,
                   "switchover: %s did not become a writable leader" % candidate.name)
        return candidate

    def kill_leader_postgres(self):
        """SIGKILL the leader's postmaster (not Patroni); returns the old leader."""
        leader = self.leader()
        pid = leader.postmaster_pid() if leader else None
        if pid is None:
            raise PgHarnessError("kill_leader_postgres: no leader postmaster")
        kill(pid, signal.SIGKILL)
        wait_dead([pid], 10)
        return leader

    def wait_new_leader(self, old, timeout=60):
        """Until a member other than `old` is the leader and takes writes; returns it."""
        found = {}

        def ok():
            lm = self.leader()
            if lm is None or lm is old or not self._writable(lm):
                return False
            found["m"] = lm
            return True

        self._wait(ok, timeout, "no new leader after %s" % old.name)
        return found["m"]

    def stall_replay(self, member):
        """SIGSTOP a replica's startup process: it still receives WAL but replays none
        (pg_wal_replay_pause() would be undone by Patroni within a loop)."""
        pid = member.startup_pid()
        if pid is None:
            raise PgHarnessError("stall_replay: %s has no startup process" % member.name)
        kill(pid, signal.SIGSTOP)
        member._stalled = pid
        return pid

    def resume_replay(self, member):
        pid = getattr(member, "_stalled", None)
        if pid is not None:
            kill(pid, signal.SIGCONT)
            member._stalled = None

    def add_member(self, timeout=90):
        """A new member (bootstrapped from the leader by Patroni); returns it once it streams."""
        m = self._new_member()
        self.wait_healthy(timeout=timeout)
        return m

    def restart_member(self, member, timeout=90):
        """A member remove_member took out, back under its name at its address (its data
        directory kept: Patroni starts it as a replica again); returns it once it streams."""
        claim_port(member.port)
        try:
            claim_port(member.api_port)
        except PgHarnessError:
            release_port(member.port)
            raise
        self.members.append(member)
        member.start()
        self.wait_healthy(timeout=timeout)
        return member

    def remove_member(self, member, timeout=60):
        """Stop a member's Patroni (and its postgres) and wait until Patroni's view no longer
        lists it.  A stopped member's key stays in etcd as "stopped" until its lease (ttl, 20 s)
        runs out; the harness deletes the key at once, which is all that expiry does."""
        if isinstance(member, str):
            member = self.member(member)
        member.stop()
        self.members.remove(member)
        release_port(member.port)
        release_port(member.api_port)
        key = "/noodlecore/%s/members/%s" % (self.scope, member.name)
        status, body = http_json("http://127.0.0.1:%d/v3/kv/deleterange" % self.etcd_port,
                                 {"key": base64.b64encode(key.encode()).decode()}, timeout=5)
        if status != 200:
            raise PgHarnessError("remove_member: etcd refused to delete %s: %s %s" % (key, status, body))

        def gone():
            view = self.cluster_view()
            return bool(view) and member.name not in {x["name"] for x in view.get("members", [])}

        self._wait(gone, timeout, "%s still listed after it stopped" % member.name)

    def pause_api(self, members=None):
        """SIGSTOP the Patroni daemons (all by default): the REST API hangs, postgres goes on."""
        for m in members or self.members:
            m.pause_api()

    def resume_api(self, members=None):
        for m in members or self.members:
            m.resume_api()
