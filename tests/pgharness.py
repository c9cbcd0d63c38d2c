"""Throwaway PostgreSQL 15 servers for tests (standard library only).

Layout (everything under one per-session root in /dev/shm)::

    /dev/shm/ncpg-<pid>-<rand>/          session root (owner file: "<pid> <starttime>")
        template/                        initdb'ed once per session, settings applied
        <node>/                          per node, also its unix socket dir
            data/                        cp -a of the template (or pg_basebackup)
            server.log                   postmaster stdout/stderr

Servers run as the ``postgres`` user (initdb/postgres refuse root) through
``setpriv``.  The postmaster is a direct child of the test process (started
with ``start_new_session``) so that crash()/stop() can reap it at once.

Per node settings live in ``data/node.conf`` which the template's
postgresql.conf includes last; the harness rewrites it whenever the node's
port, settings, upstream or synchronous standbys change (pg_basebackup and
pg_rewind copy the source's copy, it is rewritten right after).

See /work/shared/reference/postgres-testing.md for the facts this is built on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

__all__ = [
    "PG_BIN", "PgHarnessError", "SqlError", "SqlTimeout", "PgNode", "PgCluster",
    "PgFactory", "run_psql", "popen_psql", "sweep_stale", "free_port", "check_binaries", "BASE_SETTINGS",
]

PG_BIN = os.environ.get("NOODLE_PG_BIN", "/usr/lib/postgresql/15/bin")
SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
ROOT_PREFIX = "ncpg-"
PORT_RANGE = (20000, 31999)
FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"
HARNESS_APPNAME = "pgharness"

BASE_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "on",          # pg_rewind needs it
    "wal_log_hints": "on",             # pg_rewind needs it
    "wal_level": "replica",
    "max_wal_senders": 10,
    "hot_standby": "on",
    "wal_keep_size": "256MB",
    "wal_receiver_timeout": "5s",
    "wal_sender_timeout": "5s",
    "wal_retrieve_retry_interval": "200ms",
    "listen_addresses": "127.0.0.1",
    "jit": "off",
    "max_connections": 200,
    "huge_pages": "off",
    "log_line_prefix": "%m [%p] %b ",
}

_PG_HBA = """\
# pgharness: trust everything local
local   all             all                     trust
local   replication     all                     trust
host    all             all     127.0.0.1/32    trust
host    replication     all     127.0.0.1/32    trust
"""


class PgHarnessError(RuntimeError):
    """A harness operation failed (message includes the server log tail)."""


class SqlError(PgHarnessError):
    def __init__(self, msg, query=None, returncode=None, stderr=""):
        super().__init__(msg)
        self.query = query
        self.returncode = returncode
        self.stderr = stderr


class SqlTimeout(SqlError, TimeoutError):
    pass


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def _bin(name):
    return os.path.join(PG_BIN, name)


def check_binaries():
    """Raise PgHarnessError (loudly) if the PostgreSQL 15 binaries are missing."""
    missing = [b for b in ("initdb", "postgres", "pg_ctl", "pg_basebackup", "psql", "pg_rewind")
               if not os.access(_bin(b), os.X_OK)]
    if missing:
        raise PgHarnessError(
            "PostgreSQL binaries missing in %s: %s (install postgresql-15 or set NOODLE_PG_BIN)"
            % (PG_BIN, ", ".join(missing)))
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            raise PgHarnessError("running as root but setpriv is not installed")
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            raise PgHarnessError("running as root but there is no 'postgres' user") from None


def _pg_ids():
    if os.geteuid() != 0:
        return None
    import pwd
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _as_pg(cmd):
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + list(cmd)
    return list(cmd)


def _chown_pg(path):
    ids = _pg_ids()
    if ids:
        os.chown(path, *ids)


def _write_pg_file(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    _chown_pg(path)


# The sanitizer pass preloads libasan into the test process; the servers and
# psql must not inherit that (initdb hangs under it).
_NOT_FOR_SERVERS = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC", "LSAN_OPTIONS")


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in _NOT_FOR_SERVERS}
    env.setdefault("LC_ALL", "C")
    env.update(extra)
    return env


def _run(cmd, timeout, what, as_pg=True, log=None, check=True, env=None):
    full = _as_pg(cmd) if as_pg else list(cmd)
    try:
        r = subprocess.run(full, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, env=env or _clean_env())
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        raise PgHarnessError("%s timed out after %ss: %s\n%s%s" % (
            what, timeout, " ".join(cmd), out[-3000:], _tail_msg(log))) from None
    if check and r.returncode != 0:
        raise PgHarnessError("%s failed (rc=%s): %s\nstdout: %s\nstderr: %s%s" % (
            what, r.returncode, " ".join(cmd), r.stdout.decode(errors="replace")[-2000:],
            r.stderr.decode(errors="replace")[-3000:], _tail_msg(log)))
    return r


def log_tail(path, nbytes=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode(errors="replace")
    except OSError as e:
        return "<no log: %s>" % e


def _tail_msg(log):
    if not log:
        return ""
    return "\n--- tail of %s ---\n%s" % (log, log_tail(log))


def _proc_stat(pid):
    """(state, ppid, starttime) of pid, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode(errors="replace")
    except (OSError, ValueError):
        return None
    rest = data[data.rfind(")") + 2:].split()
    # rest[0] = state (field 3), rest[1] = ppid (4), rest[19] = starttime (22)
    try:
        return rest[0], int(rest[1]), int(rest[19])
    except (IndexError, ValueError):
        return None


def _alive(pid):
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _all_pids():
    out = []
    for n in os.listdir("/proc"):
        if n.isdigit():
            out.append(int(n))
    return out


def _children(pid):
    kids = []
    for p in _all_pids():
        st = _proc_stat(p)
        if st and st[1] == pid and st[0] not in ("Z", "X"):
            kids.append(p)
    return kids


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _wait_dead(pids, timeout):
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if _alive(p)}
        if pending:
            time.sleep(0.005)
    return not pending


_libc = None


def _shm_remove(shmid):
    """IPC_RMID a SysV segment (left behind by a SIGKILLed postmaster)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.shmctl(int(shmid), 0, None)  # IPC_RMID == 0
    except Exception:
        pass


def _dsm_files(pids):
    """/dev/shm/PostgreSQL.* segments mapped by pids (unlinked after a SIGKILL, else they leak)."""
    files = set()
    for p in pids:
        try:
            with open("/proc/%d/maps" % p) as f:
                for line in f:
                    i = line.find("/dev/shm/PostgreSQL.")
                    if i >= 0:
                        files.add(line[i:].split()[0])
        except OSError:
            pass
    return files


def _unlink_all(paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _read_pidfile(datadir):
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            return f.read().split("\n")
    except OSError:
        return None


def _pidfile_shmid(lines):
    try:
        return int(lines[6].split()[1])
    except (TypeError, IndexError, ValueError):
        return None


_used_ports = set()
_port_lock = threading.Lock()


def free_port():
    """A free TCP port on 127.0.0.1 in 20000-31999 (outside the ephemeral range), checked by binding."""
    with _port_lock:
        for _ in range(500):
            port = random.randint(*PORT_RANGE)
            if port in _used_ports:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                s.close()
            _used_ports.add(port)
            return port
    raise PgHarnessError("no free port found in %s-%s" % PORT_RANGE)


def _conf_value(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def _conf_text(settings):
    return "".join("%s = %s\n" % (k, _conf_value(v)) for k, v in settings.items())


def _kv_quote(v):
    v = str(v)
    if v and all(c not in v for c in " '\\"):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------
# psql
# --------------------------------------------------------------------------

def _psql_cmd(host, port, query, dbname="postgres", user="postgres"):
    return [_bin("psql"), "-X", "-A", "-t", "-q", "-F", FIELD_SEP, "-R", RECORD_SEP,
            "-v", "ON_ERROR_STOP=1", "-h", str(host), "-p", str(port),
            "-U", user, "-d", dbname, "-c", query]


def run_psql(host, port, query, timeout=10, connect_timeout=None, dbname="postgres",
             user="postgres", label=None):
    """Run one query with the psql binary against host:port (host may be a socket dir).

    Returns rows as lists of strings (NULL -> '').  Raises SqlTimeout when the whole call
    exceeds `timeout` (psql is killed), SqlError on any psql failure (with its stderr).
    connect_timeout defaults to max(2, timeout) (libpq's minimum is 2 s).
    """
    label = label or "%s:%s" % (host, port)
    ct = connect_timeout if connect_timeout is not None else max(2, int(timeout + 0.999))
    env = _clean_env(PGAPPNAME=HARNESS_APPNAME, PGCONNECT_TIMEOUT=str(ct))
    try:
        r = subprocess.run(_psql_cmd(host, port, query, dbname, user), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise SqlTimeout("[%s] psql timed out after %ss: %s" % (label, timeout, query),
                         query) from None
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        raise SqlError("[%s] psql failed (rc=%s): %s\nquery: %s" % (label, r.returncode, err, query),
                       query, r.returncode, err)
    out = r.stdout.decode()
    if out.endswith("\n"):
        out = out[:-1]
    if not out:
        return []
    return [rec.split(FIELD_SEP) for rec in out.split(RECORD_SEP)]


def popen_psql(host, port, query, connect_timeout=5, dbname="postgres", user="postgres",
               appname=HARNESS_APPNAME + "_bg"):
    """Start psql in the background (e.g. a long pg_sleep to be killed/reset); caller waits/kills."""
    env = _clean_env(PGAPPNAME=appname, PGCONNECT_TIMEOUT=str(connect_timeout))
    return subprocess.Popen(_psql_cmd(host, port, query, dbname, user), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


# --------------------------------------------------------------------------
# stale sweeping
# --------------------------------------------------------------------------

def _owner_alive(root):
    """Is the session that created `root` still running?"""
    base = os.path.basename(root.rstrip("/"))
    try:
        pid = int(base[len(ROOT_PREFIX):].split("-")[0])
    except ValueError:
        return False
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    try:
        with open(os.path.join(root, "owner")) as f:
            opid, ostart = f.read().split()[:2]
        return int(opid) == pid and int(ostart) == st[2]
    except (OSError, ValueError):
        # no owner file (yet): trust the pid only for young dirs
        try:
            return time.time() - os.stat(root).st_mtime < 300
        except OSError:
            return False


def sweep_stale(shm_dir=None, verbose=False):
    """Kill servers left behind by earlier (killed) test sessions and remove their dirs.

    Only roots whose owning process is gone are touched, so concurrent sessions
    of other engineers are left alone.  Returns the number of roots swept.
    """
    shm_dir = shm_dir or SHM_DIR
    prefix = os.path.join(shm_dir, ROOT_PREFIX)
    stale_roots = set()
    try:
        for n in os.listdir(shm_dir):
            if n.startswith(ROOT_PREFIX):
                root = os.path.join(shm_dir, n)
                if not _owner_alive(root):
                    stale_roots.add(root)
    except OSError:
        pass
    # processes (postmasters and orphaned children) whose cwd is inside a stale
    # root (postgres chdirs into its data dir), including roots already deleted
    victims = []
    for p in _all_pids():
        try:
            cwd = os.readlink("/proc/%d/cwd" % p)
        except OSError:
            continue
        if not cwd.startswith(prefix):
            continue
        root = prefix + cwd[len(prefix):].split("/")[0]
        if root in stale_roots or (not os.path.isdir(root) and not _owner_alive(root)):
            victims.append(p)
            stale_roots.add(root)
    shmids = []
    for root in stale_roots:
        try:
            for n in os.listdir(root):
                lines = _read_pidfile(os.path.join(root, n, "data"))
                sid = _pidfile_shmid(lines)
                if sid is not None:
                    shmids.append(sid)
        except OSError:
            pass
    dsm = _dsm_files(victims)
    for p in victims:
        _kill(p, signal.SIGKILL)
    _wait_dead(victims, 5)
    _unlink_all(dsm)
    for sid in shmids:
        _shm_remove(sid)
    for root in stale_roots:
        shutil.rmtree(root, ignore_errors=True)
        if verbose:
            print("pgharness: swept", root)
    return len(stale_roots)


# --------------------------------------------------------------------------
# nodes
# --------------------------------------------------------------------------

class PgNode:
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
        self._proc = None
        self._frozen = False

    def __repr__(self):
        return "<PgNode %s port=%s %s>" % (
            self.name, self.port, "running" if self.is_running() else "stopped")

    # ---- connection strings -------------------------------------------
    def dsn(self, **extra):
        s = "postgresql://%s@%s:%d/%s" % (self.user, self.host, self.port, self.dbname)
        if extra:
            s += "?" + urllib.parse.urlencode({k: str(v) for k, v in extra.items()})
        return s

    def kv_dsn(self, **extra):
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
        _write_pg_file(os.path.join(self.datadir, "node.conf"),
                       "# written by pgharness\n" + _conf_text(conf))

    def configure(self, settings=None, reload=True, **kw):
        """Merge settings into node.conf; SIGHUP the server if running and reload."""
        self.settings.update(settings or {})
        self.settings.update(kw)
        self._write_node_conf()
        if reload and self.is_running():
            self.reload()

    def reload(self):
        _kill(self.postmaster_pid(), signal.SIGHUP)
        time.sleep(0.05)

    def log_tail(self, nbytes=4000):
        return log_tail(self.logfile, nbytes)

    def _err(self, msg):
        return PgHarnessError("[%s port %s] %s%s" % (self.name, self.port, msg, _tail_msg(self.logfile)))

    # ---- process control -----------------------------------------------
    def is_running(self):
        if self._proc is not None:
            if self._proc.poll() is None:
                return True
            self._proc = None
            self._frozen = False
            return False
        lines = _read_pidfile(self.datadir)
        try:
            return _alive(int(lines[0]))
        except (TypeError, ValueError, IndexError):
            return False

    def postmaster_pid(self):
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        lines = _read_pidfile(self.datadir)
        try:
            pid = int(lines[0])
            if _alive(pid):
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
        lines = _read_pidfile(self.datadir)
        if lines is not None:
            try:
                stale = not _alive(int(lines[0]))
            except (ValueError, IndexError):
                stale = True
            if stale:
                self._remove_stale_lock_files()
        with open(self.logfile, "ab") as logf:
            logf.write(("\n=== pgharness start %s port %d at %s ===\n"
                        % (self.name, self.port, time.strftime("%H:%M:%S"))).encode())
            logf.flush()
            self._proc = subprocess.Popen(
                _as_pg([_bin("postgres"), "-D", self.datadir]),
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=_clean_env(), cwd="/")
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
            lines = _read_pidfile(self.datadir)
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
        _kill(pid, sig)
        ok = False
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                ok = True
            except subprocess.TimeoutExpired:
                pass
        else:
            ok = _wait_dead([pid], timeout)
        if not ok:
            msg = "stop(%s) did not finish within %ss; killed" % (mode, timeout)
            err = self._err(msg)
            self.crash()
            raise err
        self._proc = None
        if mode == "immediate":
            # immediate shutdown leaves the pid file alone only on crash; be safe
            lines = _read_pidfile(self.datadir)
            if lines is not None:
                try:
                    if not _alive(int(lines[0])):
                        self._remove_stale_lock_files()
                except (ValueError, IndexError):
                    self._remove_stale_lock_files()

    def restart(self, mode="fast", timeout=30):
        self.stop(mode, timeout)
        self.start(timeout=timeout)

    def _all_pids(self):
        pm = self.postmaster_pid()
        return pm, _children(pm)

    def crash(self):
        """SIGKILL the postmaster and all its children; clean pid/lock files and shm so start() works."""
        if not self.is_running():
            return
        pm = self.postmaster_pid()
        lines = _read_pidfile(self.datadir)
        shmid = _pidfile_shmid(lines)
        _kill(pm, signal.SIGSTOP)          # no more forks while we collect the children
        kids = _children(pm)
        dsm = _dsm_files([pm] + kids)
        for k in kids:
            _kill(k, signal.SIGKILL)
        _kill(pm, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pm:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._proc = None
        self._frozen = False
        _wait_dead([pm] + kids, 10)
        self._remove_stale_lock_files()
        if shmid is not None:
            _shm_remove(shmid)
        _unlink_all(dsm)

    def freeze(self):
        """SIGSTOP postmaster and every child: the server accepts TCP in the kernel but never answers."""
        pm = self.postmaster_pid()
        _kill(pm, signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            st = _proc_stat(pm)
            if st is None or st[0] == "T":
                break
            time.sleep(0.001)
        for k in _children(pm):
            _kill(k, signal.SIGSTOP)
        self._frozen = True

    def thaw(self):
        pm = self.postmaster_pid()
        for k in _children(pm):
            _kill(k, signal.SIGCONT)
        _kill(pm, signal.SIGCONT)
        self._frozen = False

    @property
    def frozen(self):
        return self._frozen

    def promote(self, wait=True, timeout=30):
        """Promote a standby (what pg_ctl promote does), then poll until out of recovery."""
        if not os.path.exists(os.path.join(self.datadir, "standby.signal")):
            raise self._err("promote(): not a standby (no standby.signal)")
        pm = self.postmaster_pid()
        _write_pg_file(os.path.join(self.datadir, "promote"), "")
        _kill(pm, signal.SIGUSR1)
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
    def sql(self, query, timeout=10, dbname=None, tcp=False, user=None):
        """Run query through psql (unix socket, or TCP with tcp=True); rows as lists of str (NULL -> '')."""
        host = self.host if tcp else self.sockdir
        return run_psql(host, self.port, query, timeout=timeout, dbname=dbname or self.dbname,
                        user=user or self.user, label="%s port %s" % (self.name, self.port))

    def scalar(self, query, timeout=10, **kw):
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

    def wait_replayed(self, primary, timeout=30):
        """Wait until this standby has replayed the primary's current WAL position."""
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


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------

class PgCluster:
    """Owns a per-session root in /dev/shm, a template data dir and all nodes made from it."""

    def __init__(self, root=None, base_settings=None, template_from=None):
        """root: session dir (default: a new /dev/shm/ncpg-<pid>-XXXX).  template_from: copy the
        (ready) template of another PgCluster instead of running initdb again."""
        check_binaries()
        if root is None:
            root = tempfile.mkdtemp(prefix="%s%d-" % (ROOT_PREFIX, os.getpid()), dir=SHM_DIR)
        else:
            os.makedirs(root, exist_ok=True)
        self.root = root
        st = _proc_stat(os.getpid())
        with open(os.path.join(root, "owner"), "w") as f:
            f.write("%d %d\n" % (os.getpid(), st[2] if st else 0))
        os.chmod(root, 0o755)
        _chown_pg(root)
        self.base_settings = dict(BASE_SETTINGS)
        self.base_settings.update(base_settings or {})
        self.template = os.path.join(root, "template")
        self._template_ready = False
        self._template_from = template_from
        self.nodes = []
        self._lock = threading.RLock()
        self._closed = False
        self.timings = {}
        import atexit
        atexit.register(self.close)

    # ---- template ---------------------------------------------------------
    def _ensure_template(self):
        with self._lock:
            if self._template_ready:
                return
            t0 = time.monotonic()
            src = self._template_from
            if src is not None:
                src._ensure_template()
                _run(["cp", "-a", src.template, self.template], timeout=60,
                     what="cp template", as_pg=False)
                self._template_ready = True
                self.timings["template"] = time.monotonic() - t0
                return
            tlog = os.path.join(self.root, "template.log")
            _run([_bin("initdb"), "-D", self.template, "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                 timeout=120, what="initdb")
            conf = os.path.join(self.template, "postgresql.conf")
            with open(conf, "a") as f:
                f.write("\n# ---- pgharness ----\n" + _conf_text(self.base_settings)
                        + "include_if_exists = 'node.conf'\n")
            _write_pg_file(os.path.join(self.template, "pg_hba.conf"), _PG_HBA)
            # record max_connections & co. in pg_control (standbys cloned later need it)
            r = _run([_bin("postgres"), "--single", "-D", self.template, "postgres"],
                     timeout=120, what="postgres --single (template)", check=False)
            if r.returncode != 0:
                with open(tlog, "wb") as f:
                    f.write(r.stdout + r.stderr)
                raise PgHarnessError("template single-user start failed rc=%s%s"
                                     % (r.returncode, _tail_msg(tlog)))
            self._template_ready = True
            self.timings["template"] = time.monotonic() - t0

    # ---- nodes --------------------------------------------------------------
    def _new_nodedir(self, name):
        safe = "".join(c if (c.isalnum() or c in "_-") else "_" for c in name) or "node"
        taken = {n.name for n in self.nodes}
        cand, i = safe, 2
        while cand in taken or os.path.exists(os.path.join(self.root, cand)) or cand == "template":
            cand, i = "%s%d" % (safe, i), i + 1
        nodedir = os.path.join(self.root, cand)
        if len(nodedir) + len("/.s.PGSQL.65535.lock") > 100:
            raise PgHarnessError("socket dir too long: %s" % nodedir)
        os.mkdir(nodedir, 0o755)
        _chown_pg(nodedir)
        return cand, nodedir

    def _start_new(self, node, timeout=30):
        for attempt in range(4):
            try:
                node.start(timeout=timeout)
                return
            except PgHarnessError as e:
                tail = node.log_tail(2000)
                if attempt < 3 and ("Address already in use" in tail
                                    or "could not create any TCP/IP sockets" in tail):
                    node.port = free_port()   # lost a race for the port with another session
                    node._write_node_conf()
                    continue
                raise e

    def primary(self, name="primary", settings=None):
        """A new primary from the template (cp -a), started."""
        if self._closed:
            raise PgHarnessError("cluster is closed")
        self._ensure_template()
        t0 = time.monotonic()
        with self._lock:
            name, nodedir = self._new_nodedir(name)
            node = PgNode(self, name, free_port(), nodedir, settings)
            self.nodes.append(node)
        _run(["cp", "-a", self.template, node.datadir], timeout=60, what="cp template", as_pg=False)
        node._write_node_conf()
        self._start_new(node)
        self.timings.setdefault("primary", []).append(time.monotonic() - t0)
        return node

    def standby(self, primary, name="standby", sync=False, settings=None, upstream=None):
        """A hot standby of `primary` through pg_basebackup, started and streaming.

        sync=True adds it to the primary's synchronous_standby_names (application_name = node name)
        and waits until it is reported sync.  upstream=(host, port) makes the standby stream
        through e.g. a TcpProxy instead of straight from the primary.
        """
        if self._closed:
            raise PgHarnessError("cluster is closed")
        t0 = time.monotonic()
        merged = {k: v for k, v in primary.settings.items() if k != "synchronous_standby_names"}
        merged.update(settings or {})
        with self._lock:
            name, nodedir = self._new_nodedir(name)
            node = PgNode(self, name, free_port(), nodedir, merged)
            self.nodes.append(node)
        _run([_bin("pg_basebackup"), "-D", node.datadir,
              "-d", "host=%s port=%d user=postgres application_name=%s_basebackup"
              % (primary.sockdir, primary.port, name),
              "-X", "stream", "-c", "fast", "--no-sync"],
             timeout=120, what="pg_basebackup", log=primary.logfile)
        node.upstream = upstream or (primary.host, primary.port)
        node._write_node_conf()
        _write_pg_file(os.path.join(node.datadir, "standby.signal"), "")
        self._start_new(node)
        if upstream is None:
            primary.wait_standby(name)
        if sync:
            primary.sync_standbys.append(name)
            primary._write_node_conf()
            primary.reload()
            primary.wait_standby(name, sync=True)
        self.timings.setdefault("standby", []).append(time.monotonic() - t0)
        return node

    def rewind_as_standby(self, old_primary, new_primary, sync=False, timeout=120):
        """pg_rewind old_primary from new_primary and restart it as new_primary's standby."""
        t0 = time.monotonic()
        if old_primary.is_running():
            old_primary.stop("fast")
        new_primary.sql("CHECKPOINT", timeout=60)
        _run([_bin("pg_rewind"), "--target-pgdata", old_primary.datadir,
              "--source-server", "host=%s port=%d user=postgres dbname=postgres"
              % (new_primary.sockdir, new_primary.port), "--no-sync"],
             timeout=timeout, what="pg_rewind", log=old_primary.logfile)
        for f in ("postmaster.pid", "promote"):
            try:
                os.unlink(os.path.join(old_primary.datadir, f))
            except FileNotFoundError:
                pass
        old_primary.sync_standbys = []
        old_primary.upstream = (new_primary.host, new_primary.port)
        old_primary._write_node_conf()
        _write_pg_file(os.path.join(old_primary.datadir, "standby.signal"), "")
        old_primary.start()
        new_primary.wait_standby(old_primary.name)
        if sync:
            new_primary.sync_standbys.append(old_primary.name)
            new_primary._write_node_conf()
            new_primary.reload()
            new_primary.wait_standby(old_primary.name, sync=True)
        self.timings.setdefault("rewind", []).append(time.monotonic() - t0)
        return old_primary

    def destroy(self, node):
        """Stop (immediate) a node and remove its directory."""
        _stop_hard(node)
        shutil.rmtree(node.nodedir, ignore_errors=True)
        with self._lock:
            if node in self.nodes:
                self.nodes.remove(node)
            _used_ports.discard(node.port)

    def close(self):
        """Stop every node (immediate), kill leftovers, remove the root."""
        if self._closed:
            return
        self._closed = True
        for node in list(self.nodes):
            _stop_hard(node)
        # anything else still living in our root (e.g. a node object that was dropped)
        victims = []
        for p in _all_pids():
            try:
                if os.readlink("/proc/%d/cwd" % p).startswith(self.root + "/"):
                    victims.append(p)
            except OSError:
                pass
        dsm = _dsm_files(victims)
        for p in victims:
            _kill(p, signal.SIGKILL)
        _wait_dead(victims, 5)
        _unlink_all(dsm)
        shutil.rmtree(self.root, ignore_errors=True)
        self.nodes = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stop_hard(node):
    try:
        if node.is_running():
            try:
                node.stop("immediate", timeout=10)
            except PgHarnessError:
                pass  # stop() already fell back to crash()
    except Exception:
        try:
            node.crash()
        except Exception:
            pass


class PgFactory:
    """Per-test maker of nodes and proxies on a shared PgCluster; close() tears down what it made."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.nodes = []
        self.proxies = []

    def primary(self, name="primary", settings=None):
        node = self.cluster.primary(name, settings)
        self.nodes.append(node)
        return node

    def standby(self, primary, name="standby", sync=False, settings=None, upstream=None):
        node = self.cluster.standby(primary, name, sync=sync, settings=settings, upstream=upstream)
        self.nodes.append(node)
        return node

    def rewind_as_standby(self, old_primary, new_primary, sync=False):
        return self.cluster.rewind_as_standby(old_primary, new_primary, sync=sync)

    def proxy(self, target, port=None):
        """A started TcpProxy in front of a PgNode (or a (host, port) tuple)."""
        from tcpproxy import TcpProxy
        host, tport = (target.host, target.port) if isinstance(target, PgNode) else target
        px = TcpProxy(host, tport, port=port or 0).start()
        self.proxies.append(px)
        return px

    def close(self):
        errors = []
        for px in self.proxies:
            try:
                px.close()
            except Exception as e:
                errors.append(e)
        for node in reversed(self.nodes):
            try:
                self.cluster.destroy(node)
            except Exception as e:
                errors.append(e)
        self.proxies, self.nodes = [], []
        if errors:
            raise errors[0]
