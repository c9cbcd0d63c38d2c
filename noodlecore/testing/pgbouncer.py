"""PgBouncer: Debian's pgbouncer in front of a PgNode, for tests of the pool through it.

Owns: one pgbouncer process (its ini file, log, pid file in a directory of
its own under the cluster's root), on 127.0.0.1 with a harness port, run as
the ``postgres`` user (pgbouncer refuses to run as root), started, stopped,
restarted on the same port, and its admin console (``SHOW SERVERS`` and
friends, through psql).  Knows nothing about noodlecore::

    bouncer = factory.pgbouncer(node)            # pool_mode=transaction, started
    pool = DatabaseConnectionPool(bouncer.dsn(application_name="app"))
    bouncer.admin("SHOW SERVERS")                # rows as lists of strings
    bouncer.restart()                            # same port, every connection dropped
    bouncer.close()                              # (the factory does it at the end of the test)

The directory lives under the cluster's root and pgbouncer runs with its
working directory there, so ``sweep_stale()`` finds one left by a killed run
the same way it finds the servers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

from .processes import (PgHarnessError, as_pg, chown_pg, clean_env, free_port, kill, log_tail, release_port,
                        tail_msg, wait_dead, write_pg_file)
from .psql import run_psql

__all__ = ["PgBouncer", "find_pgbouncer"]

_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")


def find_pgbouncer():
    """The pgbouncer binary: $NOODLE_PGBOUNCER, the PATH, /usr/sbin (Debian's).  Raises
    PgHarnessError (never a skip) when there is none."""
    env = os.environ.get("NOODLE_PGBOUNCER")
    for path in ([env] if env else []) + [shutil.which("pgbouncer")] + list(_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    raise PgHarnessError("pgbouncer not found (install Debian's pgbouncer, e.g. apt-get install pgbouncer, "
                         "or set NOODLE_PGBOUNCER)")


def _ini_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


class PgBouncer:
    """pgbouncer on 127.0.0.1:`port` forwarding every database name to `node` (a PgNode or
    anything with host and port).  Defaults: pool_mode=transaction, trust authentication,
    no unix socket, short server_login_retry (a restarted server is found again quickly).
    `settings` are merged over them into the [pgbouncer] section."""

    host = "127.0.0.1"
    user = "postgres"
    dbname = "postgres"

    def __init__(self, node, pool_mode="transaction", settings=None, root=None, port=None, binary=None):
        self.node = node
        self.binary = binary or find_pgbouncer()
        parent = root or getattr(getattr(node, "cluster", None), "root", None) or tempfile.gettempdir()
        self.dir = tempfile.mkdtemp(prefix="pgbouncer-", dir=parent)
        os.chmod(self.dir, 0o755)
        chown_pg(self.dir)
        self.port = port or free_port()
        self._own_port = port is None
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.logfile = os.path.join(self.dir, "pgbouncer.log")
        self.settings = {
            "listen_addr": self.host,
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": os.path.join(self.dir, "userlist.txt"),
            "admin_users": self.user,
            "stats_users": self.user,
            "pool_mode": pool_mode,
            "default_pool_size": 10,
            "max_client_conn": 200,
            "logfile": self.logfile,
            "pidfile": os.path.join(self.dir, "pgbouncer.pid"),
            "server_login_retry": 0.2,
            "server_connect_timeout": 5,
            "log_connections": 1,
            "log_disconnections": 1,
        }
        self.settings.update(settings or {})
        self._proc = None
        self._closed = False

    def __repr__(self):
        return "<PgBouncer port=%s -> %s:%s %s>" % (self.port, self.node.host, self.node.port,
                                                    "running" if self.is_running() else "stopped")

    # ---- connection strings -------------------------------------------
    def dsn(self, **extra):
        """A URL DSN to a database through pgbouncer (libpq parameters as keywords)."""
        s = "postgresql://%s@%s:%d/%s" % (self.user, self.host, self.port, self.dbname)
        if extra:
            s += "?" + urllib.parse.urlencode({k: str(v) for k, v in extra.items()})
        return s

    # ---- files ------------------------------------------------------------
    def _write_files(self):
        lines = ["; written by noodlecore.testing", "[databases]",
                 "* = host=%s port=%d" % (self.node.host, self.node.port), "", "[pgbouncer]"]
        lines += ["%s = %s" % (k, _ini_value(v)) for k, v in self.settings.items()]
        write_pg_file(self.ini, "\n".join(lines) + "\n")
        write_pg_file(self.settings["auth_file"], '"%s" ""\n' % self.user)

    # ---- process control -----------------------------------------------
    def is_running(self):
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self):
        return self._proc.pid if self.is_running() else None

    def start(self, timeout=15):
        """Start pgbouncer and return once it accepts TCP connections on its port."""
        if self._closed:
            raise PgHarnessError("PgBouncer.start(): closed")
        if self.is_running():
            raise PgHarnessError("PgBouncer.start(): already running on port %d" % self.port)
        self._write_files()
        with open(self.logfile, "ab") as logf:
            logf.write(("\n=== noodlecore.testing: start pgbouncer port %d at %s ===\n"
                        % (self.port, time.strftime("%H:%M:%S"))).encode())
        chown_pg(self.logfile)        # pgbouncer (as postgres) appends to it
        out = open(os.path.join(self.dir, "stderr.log"), "ab")
        try:
            # cwd inside the cluster's root: sweep_stale() finds it after a killed run.
            self._proc = subprocess.Popen(as_pg([self.binary, self.ini]), stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                          close_fds=True, env=clean_env(), cwd=self.dir)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                raise self._err("pgbouncer exited during start-up (rc=%s)" % rc)
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._kill()
                raise self._err("pgbouncer did not listen on port %d within %ss" % (self.port, timeout))
            time.sleep(0.01)

    def stop(self, timeout=10):
        """Immediate shutdown (SIGTERM: every client and server connection is closed at once);
        SIGKILL if it has not exited within timeout."""
        if not self.is_running():
            self._proc = None
            return
        kill(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        self._proc = None

    def _kill(self):
        if self._proc is None:
            return
        kill(self._proc.pid, signal.SIGKILL)
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            wait_dead([self._proc.pid], 5)
        self._proc = None

    def restart(self, timeout=15):
        """stop() then start() on the same port: every client sees its connection closed."""
        self.stop()
        return self.start(timeout)

    def close(self):
        """Stop, remove the directory, release the port.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self._own_port:
                release_port(self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- the admin console --------------------------------------------
    def admin(self, command, timeout=10):
        """A command of pgbouncer's admin console (``SHOW POOLS``, ``SHOW SERVERS``, ``RECONNECT``
        ...) through psql: rows as lists of strings."""
        return run_psql(self.host, self.port, command, timeout=timeout, dbname="pgbouncer", user=self.user,
                        label="pgbouncer:%d" % self.port)

    def admin_dicts(self, command, timeout=10):
        """Like admin(), rows as dicts by column name."""
        rows = run_psql(self.host, self.port, command, timeout=timeout, dbname="pgbouncer", user=self.user,
                        label="pgbouncer:%d" % self.port, header=True)
        if not rows:
            return []
        names = rows[0]
        return [dict(zip(names, r)) for r in rows[1:]]

    def log_tail(self, nbytes=4000):
        return log_tail(self.logfile, nbytes)

    def _err(self, msg):
        return PgHarnessError("[pgbouncer port %s] %s%s%s" % (
            self.port, msg, tail_msg(self.logfile), tail_msg(os.path.join(self.dir, "stderr.log"))))
