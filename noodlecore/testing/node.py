"""One throwaway PostgreSQL server: PgNode.

Owns: a node's configuration file (node.conf: port, socket dir, settings,
upstream, synchronous standbys), its postmaster process (start, stop, restart,
crash, freeze/thaw, promote), its connection strings, and the SQL views the
tests wait on (recovery, replay position, replication state), through psql.
Making nodes (the template, pg_basebackup, pg_rewind) is the cluster's job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.parse
from typing import Any, Optional

from .processes import (PgHarnessError, alive, as_pg, children, clean_env, dsm_files, kill, log_tail,
                        pidfile_shmid, proc_stat, read_pidfile, shm_remove, tail_msg, unlink_all, wait_dead,
                        write_pg_file)
from .psql import SqlError, run_psql

__all__ = ["PgNode", "conf_text", "PG_HBA_TRUST"]

PG_HBA_TRUST = """\
# noodlecore.testing: trust everything local (the template's, and every node's last lines)
local   all             all                     trust
local   replication     all                     trust
host    all             all     127.0.0.1/32    trust
host    replication     all     127.0.0.1/32    trust
"""


def _conf_value(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def conf_text(settings):
    """postgresql.conf lines for a dict of settings."""
    return "".join("%s = %s\n" % (k, _conf_value(v)) for k, v in settings.items())


def _kv_quote(v):
    v = str(v)
    if v and all(c not in v for c in " '\\"):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgNode:
    """A server made by a PgCluster: `datadir`, `port` on 127.0.0.1, a unix socket in
    `sockdir`, its log in `logfile`.  Made by PgCluster.primary() / .standby()."""

    host = "127.0.0.1"
    user = "postgres"
    dbname = "postgres"

    def __init__(self, cluster, name, port, nodedir, settings=None):
        self.cluster = cluster
        self.name = name
        self.port = port
        self.nodedir = nodedir
        self.datadir = os.path.join(nodedir, "data")
        self.sockdir = nodedir
        self.logfile = os.path.join(nodedir, "server.log")
        self.settings = dict(settings or {})
        self.upstream = None          # (host, port) we stream from, when a standby
        self.sync_standbys = []       # application names in synchronous_standby_names
        self.hba_lines = []           # pg_hba.conf lines before the trust-everything ones
        self._proc = None
        self._frozen = False

    def __repr__(self):
        return "<PgNode %s port=%s %s>" % (
            self.name, self.port, "running" if self.is_running() else "stopped")

    # ---- connection strings -------------------------------------------
    def dsn(self, **extra: Any) -> str:
        s = "postgresql://%s@%s:%d/%s" % (self.user, self.host, self.port, self.dbname)
        if extra:
            s += "?" + urllib.parse.urlencode({k: str(v) for k, v in extra.items()})
        return s

    def kv_dsn(self, **extra: Any) -> str:
        parts = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname}
        parts.update(extra)
        return " ".join("%s=%s" % (k, _kv_quote(v)) for k, v in parts.items())

    def unix_kv_dsn(self, **extra):
        return self.kv_dsn(host=self.sockdir, **extra)

    # ---- configuration --------------------------------------------------
    def _write_node_conf(self):
        conf = {"port": self.port, "unix_socket_directories": self.sockdir}
        conf.update(self.settings)
        if self.sync_standbys:
            names = ", ".join('"%s"' % n for n in self.sync_standbys)
            conf["synchronous_standby_names"] = ("ANY 1 (%s)" % names
                                                 if len(self.sync_standbys) > 1 else names)
        elif "synchronous_standby_names" not in self.settings:
            conf["synchronous_standby_names"] = ""
        if self.upstream:
            h, p = self.upstream
            conf["primary_conninfo"] = "host=%s port=%d user=postgres application_name=%s" % (
                h, p, self.name)
        write_pg_file(os.path.join(self.datadir, "node.conf"),
                      "# written by noodlecore.testing\n" + conf_text(conf))

    def configure(self, settings=None, reload=True, **kw):
        """Merge settings into node.conf; SIGHUP the server if running and reload."""
        self.settings.update(settings or {})
        self.settings.update(kw)
        self._write_node_conf()
        if reload and self.is_running():
            self.reload()

    def enable_tls(self, cert, key, ca=None):
        """Serve TLS with the certificate and key files (e.g. from TestCA.server_cert): copied
        into the data dir (the server wants its key owned by it, mode 0600), then ssl=on,
        ssl_cert_file, ssl_key_file (and ssl_ca_file when ca is given, for client
        certificates) and a reload.  Clients may still connect without TLS (sslmode=disable)."""
        names = {"ssl_cert_file": ("server.crt", cert), "ssl_key_file": ("server.key", key)}
        if ca:
            names["ssl_ca_file"] = ("root.crt", ca)
        settings = {"ssl": True}
        for setting, (name, src) in names.items():
            with open(src) as f:
                write_pg_file(os.path.join(self.datadir, name), f.read())
            settings[setting] = name
        self.configure(settings)

    def add_password_user(self, user, password, method="scram-sha-256", superuser=False):
        """A role that logs in over TCP with `password` (checked with `method`, e.g.
        scram-sha-256 or md5); everything else keeps trusting as before (the harness's own
        unix-socket psql, replication).  Reloads the server."""
        enc = "scram-sha-256" if method == "scram-sha-256" else "md5"
        lit = "'" + password.replace("'", "''") + "'"
        self.sql("SET password_encryption = '%s'; DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN%s PASSWORD %s"
                 % (enc, user, user, " SUPERUSER" if superuser else "", lit))
        self.hba_lines.append("host    all             %s      127.0.0.1/32    %s" % (user, method))
        self._write_hba()
        if self.is_running():
            self.reload()

    def _write_hba(self):
        write_pg_file(os.path.join(self.datadir, "pg_hba.conf"),
                      "# written by noodlecore.testing (first match wins)\n"
                      + "".join(line + "\n" for line in self.hba_lines) + PG_HBA_TRUST)

    def reload(self, timeout=10):
        """SIGHUP the postmaster and wait until it has re-read its configuration: a new session
        inherits the postmaster's pg_conf_load_time(), which moves on when it has."""
        q = "select pg_conf_load_time()"
        before = self.scalar(q)
        kill(self.postmaster_pid(), signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.scalar(q) == before:
            if time.monotonic() > deadline:
                raise self._err("reload(): the configuration was not re-read within %ss" % timeout)
            time.sleep(0.005)

    def log_tail(self, nbytes=4000):
        return log_tail(self.logfile, nbytes)

    def _err(self, msg):
        return PgHarnessError("[%s port %s] %s%s" % (self.name, self.port, msg, tail_msg(self.logfile)))

    # ---- process control -----------------------------------------------
    def is_running(self):
        if self._proc is not None:
            if self._proc.poll() is None:
                return True
            self._proc = None
            self._frozen = False
            return False
        lines = read_pidfile(self.datadir)
        try:
            return alive(int(lines[0]))
        except (TypeError, ValueError, IndexError):
            return False

    def postmaster_pid(self):
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        lines = read_pidfile(self.datadir)
        try:
            pid = int(lines[0])
            if alive(pid):
                return pid
        except (TypeError, ValueError, IndexError):
            pass
        raise self._err("server is not running")

    def _remove_stale_lock_files(self):
        for path in (os.path.join(self.datadir, "postmaster.pid"),
                     os.path.join(self.sockdir, ".s.PGSQL.%d.lock" % self.port),
                     os.path.join(self.sockdir, ".s.PGSQL.%d" % self.port)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def start(self, wait=True, timeout=30):
        if self.is_running():
            raise self._err("start(): already running")
        lines = read_pidfile(self.datadir)
        if lines is not None:
            try:
                stale = not alive(int(lines[0]))
            except (ValueError, IndexError):
                stale = True
            if stale:
                self._remove_stale_lock_files()
        with open(self.logfile, "ab") as logf:
            logf.write(("\n=== noodlecore.testing: start %s port %d at %s ===\n"
                        % (self.name, self.port, time.strftime("%H:%M:%S"))).encode())
            logf.flush()
            self._proc = subprocess.Popen(
                as_pg([os.path.join(self.cluster.bindir, "postgres"), "-D", self.datadir]),
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=clean_env(), cwd="/")
        self._frozen = False
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout=30):
        """Wait until the postmaster reports it accepts connections (like pg_ctl -w, but 5 ms polling)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                raise self._err("postmaster exited during startup (rc=%s)" % rc)
            lines = read_pidfile(self.datadir)
            if lines and len(lines) >= 8 and lines[7].strip() in ("ready", "standby"):
                try:
                    if self._proc is None or int(lines[0]) == self._proc.pid:
                        return
                except ValueError:
                    pass
            if time.monotonic() > deadline:
                raise self._err("server did not become ready within %ss" % timeout)
            time.sleep(0.005)

    def stop(self, mode="fast", timeout=30):
        """Stop the server: mode smart|fast|immediate. Falls back to crash() on timeout (and raises)."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        if not self.is_running():
            return
        if self._frozen:
            self.thaw()
        pid = self.postmaster_pid()
        kill(pid, sig)
        ok = False
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                ok = True
            except subprocess.TimeoutExpired:
                pass
        else:
            ok = wait_dead([pid], timeout)
        if not ok:
            msg = "stop(%s) did not finish within %ss; killed" % (mode, timeout)
            err = self._err(msg)
            self.crash()
            raise err
        self._proc = None
        if mode == "immediate":
            # immediate shutdown leaves the pid file alone only on crash; be safe
            lines = read_pidfile(self.datadir)
            if lines is not None:
                try:
                    if not alive(int(lines[0])):
                        self._remove_stale_lock_files()
                except (ValueError, IndexError):
                    self._remove_stale_lock_files()

    def restart(self, mode="fast", timeout=30):
        self.stop(mode, timeout)
        self.start(timeout=timeout)

    def crash(self):
        """SIGKILL the postmaster and all its children; clean pid/lock files and shm so start() works.

        Returns the time.monotonic() at which the first SIGKILL went out (the moment of the
        crash, for whoever measures what follows), or None if the server was not running.
        """
        if not self.is_running():
            return None
        pm = self.postmaster_pid()
        lines = read_pidfile(self.datadir)
        shmid = pidfile_shmid(lines)
        kill(pm, signal.SIGSTOP)          # no more forks while we collect the children
        kids = children(pm)
        dsm = dsm_files([pm] + kids)
        killed_at = time.monotonic()
        for k in kids:
            kill(k, signal.SIGKILL)
        kill(pm, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pm:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None
        self._frozen = False
        wait_dead([pm] + kids, 10)
        self._remove_stale_lock_files()
        shm_remove(shmid)
        unlink_all(dsm)
        return killed_at

    def freeze(self):
        """SIGSTOP postmaster and every child: the server accepts TCP in the kernel but never answers."""
        pm = self.postmaster_pid()
        kill(pm, signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            st = proc_stat(pm)
            if st is None or st[0] == "T":
                break
            time.sleep(0.001)
        for k in children(pm):
            kill(k, signal.SIGSTOP)
        self._frozen = True

    def thaw(self):
        pm = self.postmaster_pid()
        for k in children(pm):
            kill(k, signal.SIGCONT)
        kill(pm, signal.SIGCONT)
        self._frozen = False

    @property
    def frozen(self):
        return self._frozen

    def promote(self, wait=True, timeout=30):
        """Promote a standby the way pg_ctl promote does (a ``promote`` file in the data dir,
        then SIGUSR1 to the postmaster), then poll until out of recovery (every 10 ms, where
        pg_ctl -w polls every 100 ms)."""
        if not os.path.exists(os.path.join(self.datadir, "standby.signal")):
            raise self._err("promote(): not a standby (no standby.signal)")
        pm = self.postmaster_pid()
        # The server may consume the file before our signal (any SIGUSR1 the postmaster gets,
        # e.g. from a walreceiver, makes it look): write_pg_file creates it whole and owned
        # by postgres in one rename, and nothing touches it afterwards.
        write_pg_file(os.path.join(self.datadir, "promote"), "")
        kill(pm, signal.SIGUSR1)
        if wait:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if not self.in_recovery():
                        break
                except SqlError:
                    pass
                if time.monotonic() > deadline:
                    raise self._err("promote(): still in recovery after %ss" % timeout)
                time.sleep(0.01)
        self.upstream = None

    def repair(self):
        """Bring a shared node back to 'running, not frozen'; returns what had to be fixed."""
        fixed = []
        if self._frozen:
            self.thaw()
            fixed.append("thawed")
        if not self.is_running():
            self.start()
            fixed.append("started")
        return fixed

    # ---- SQL --------------------------------------------------------------
    def sql(self, query: str, timeout: float = 10, dbname: Optional[str] = None, tcp: bool = False,
            user: Optional[str] = None) -> list[list[str]]:
        """Run query through psql (unix socket, or TCP with tcp=True); rows as lists of str (NULL -> '')."""
        host = self.host if tcp else self.sockdir
        return run_psql(host, self.port, query, timeout=timeout, dbname=dbname or self.dbname,
                        user=user or self.user, label="%s port %s" % (self.name, self.port),
                        bindir=self.cluster.bindir)

    def scalar(self, query: str, timeout: float = 10, **kw: Any) -> Optional[str]:
        rows = self.sql(query, timeout=timeout, **kw)
        return rows[0][0] if rows and rows[0] else None

    def in_recovery(self):
        return self.scalar("select pg_is_in_recovery()") == "t"

    def current_lsn(self):
        if self.in_recovery():
            return self.scalar("select pg_last_wal_replay_lsn()")
        return self.scalar("select pg_current_wal_lsn()")

    def backend_pids(self):
        rows = self.sql("select pid from pg_stat_activity where backend_type = 'client backend' "
                        "and pid <> pg_backend_pid() order by pid")
        return [int(r[0]) for r in rows]

    def terminate_all_clients(self, wait=True, timeout=10):
        """pg_terminate_backend every other client backend; with wait, until they are gone."""
        ms = int(timeout * 1000) if wait else 0
        q = ("with victims as materialized (select pid from pg_stat_activity "
             "where backend_type = 'client backend' and pid <> pg_backend_pid()) "
             "select pid from victims where pg_terminate_backend(pid%s)"
             % (", %d" % ms if wait else ""))
        rows = self.sql(q, timeout=timeout + 5)
        return [int(r[0]) for r in rows]

    def wait_replayed(self, primary: PgNode, timeout: float = 30) -> Optional[str]:
        """Wait until this standby has replayed the primary's current WAL position; returns that position."""
        lsn = primary.scalar("select pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        q = "select pg_last_wal_replay_lsn() >= '%s'::pg_lsn" % lsn
        while True:
            try:
                if self.scalar(q) == "t":
                    return lsn
            except SqlError:
                pass
            if time.monotonic() > deadline:
                raise self._err("wait_replayed: %s did not reach %s within %ss" % (self.name, lsn, timeout))
            time.sleep(0.01)

    def replication_state(self):
        """{application_name: (state, sync_state)} from pg_stat_replication."""
        rows = self.sql("select application_name, state, sync_state from pg_stat_replication")
        return {r[0]: (r[1], r[2]) for r in rows}

    def wait_standby(self, name, sync=False, timeout=30):
        """On a primary: wait until standby `name` streams (and is sync/quorum when sync=True)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.replication_state().get(name)
            if st and st[0] == "streaming" and (not sync or st[1] in ("sync", "quorum")):
                return
            if time.monotonic() > deadline:
                raise self._err("standby %s not %s after %ss (state %s)"
                                % (name, "sync streaming" if sync else "streaming", timeout, st))
            time.sleep(0.01)
