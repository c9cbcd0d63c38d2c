"""Throwaway PostgreSQL servers for ``noodlecore-db demo --postgres``.

Self-contained (standard library and noodlecore only): finds the server
binaries, initdb's a primary into a temporary directory under /dev/shm,
clones standbys with ``pg_basebackup -R``, crashes a server for real
(SIGKILL of the postmaster and every backend), promotes with ``pg_ctl
promote`` and removes everything in ``close()`` (also registered with
atexit).  As root the servers run as the ``postgres`` user through
``setpriv`` (or ``runuser``), since PostgreSQL refuses to run as root.

Each demo's directory is ``/dev/shm/noodlecore-demo-<pid>-XXXX``; a later
demo removes the directories (and kills the servers) of demos whose process
is gone, e.g. after a SIGKILL.

This is library code: it logs on ``noodlecore.database.pgdemo`` and prints
nothing; the CLI reports progress through the ``on_step`` callback.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable, List, Optional

from .connection_pool import DatabaseConnectionPool

__all__ = ["PgDemoError", "PgDemoCluster", "PgDemoNode", "find_bindir"]

import logging

log = logging.getLogger("noodlecore.database.pgdemo")

PREFIX = "noodlecore-demo-"
REQUIRED = ("initdb", "postgres", "pg_ctl", "pg_basebackup")

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "hot_standby": "on",
    "wal_keep_size": "'64MB'",
    "wal_receiver_timeout": "'5s'",
    "wal_sender_timeout": "'5s'",
    "wal_retrieve_retry_interval": "'200ms'",
    "max_connections": "60",
    "shared_buffers": "'16MB'",
    "dynamic_shared_memory_type": "mmap",     # segments in the data dir: nothing leaks into /dev/shm
    "huge_pages": "off",
    "jit": "off",
    "logging_collector": "off",
}


class PgDemoError(RuntimeError):
    """Setting up or driving a throwaway server failed (the message says how)."""


def _version_key(path: str):
    m = re.search(r"/(\d+)(?:\.(\d+))?/bin$", path)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


def find_bindir() -> str:
    """The directory of the PostgreSQL server binaries: $NOODLE_PG_BIN, then
    ``pg_config --bindir``, /usr/lib/postgresql/<newest>/bin,
    /usr/local/pgsql/bin and the PATH.  Raises PgDemoError naming where it
    looked."""
    candidates: List[str] = []
    env = os.environ.get("NOODLE_PG_BIN")
    if env:
        candidates.append(env)
    exe = shutil.which("pg_config")
    if exe:
        try:
            candidates.append(subprocess.run([exe, "--bindir"], capture_output=True, text=True,
                                             timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += ["/usr/local/pgsql/bin"]
    pg = shutil.which("postgres")
    if pg:
        candidates.append(os.path.dirname(pg))
    for d in candidates:
        if d and all(os.access(os.path.join(d, b), os.X_OK) for b in REQUIRED):
            return d
    raise PgDemoError(
        "PostgreSQL server binaries (%s) not found in: %s. Install the PostgreSQL server "
        "(e.g. apt-get install postgresql) or set NOODLE_PG_BIN to their directory."
        % (", ".join(REQUIRED), ", ".join(c for c in candidates if c) or "(nowhere to look)"))


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def _pg_ids():
    if os.geteuid() != 0:
        return None
    import pwd
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise PgDemoError("running as root, but there is no 'postgres' user to run the servers as "
                          "(PostgreSQL refuses to run as root)") from None
    return pw.pw_uid, pw.pw_gid


def _as_pg(cmd: List[str]) -> List[str]:
    if os.geteuid() != 0:
        return list(cmd)
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + list(cmd)
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"] + list(cmd)
    raise PgDemoError("running as root, but neither setpriv nor runuser is installed to run the "
                      "servers as the postgres user")


def _chown(path: str) -> None:
    ids = _pg_ids()
    if ids:
        os.chown(path, *ids)


def _env() -> dict:
    # no PG* variables of the caller (they would redirect the tools), no sanitizer preloads
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                                   "LSAN_OPTIONS", "PYTHONMALLOC")}
    env["LC_ALL"] = "C"
    return env


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _run(cmd: List[str], what: str, timeout: float = 60, log_path: Optional[str] = None) -> str:
    try:
        r = subprocess.run(_as_pg(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, env=_env(), cwd="/")
    except subprocess.TimeoutExpired:
        raise PgDemoError(f"{what} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise PgDemoError(f"{what} could not run: {exc}") from None
    if r.returncode != 0:
        extra = ("\n--- server log ---\n" + _tail(log_path)) if log_path else ""
        raise PgDemoError(f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-1500:]}"
                          f"{extra}")
    return r.stdout


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


_libc = None


def _shm_remove(shmid: Optional[int]) -> None:
    """IPC_RMID the SysV segment a SIGKILLed postmaster leaves behind."""
    global _libc
    if shmid is None:
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.shmctl(int(shmid), 0, None)
    except Exception:
        pass


def _sql(dsn: str, query: str, timeout: float = 5.0):
    with DatabaseConnectionPool(dsn, max_connections=1, retry_attempts=1, connect_timeout=timeout,
                                timeout=timeout, query_timeout=timeout) as pool:
        with pool.get_connection() as conn:
            return conn.execute_query(query)


# ---------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------

class PgDemoNode:
    """One throwaway server: a data dir, a port, a postmaster child process."""

    def __init__(self, cluster: "PgDemoCluster", name: str):
        self.cluster = cluster
        self.name = name
        self.nodedir = os.path.join(cluster.root, name)
        self.datadir = os.path.join(self.nodedir, "data")
        self.logfile = os.path.join(self.nodedir, "server.log")
        self.port = _free_port()
        self.proc: Optional[subprocess.Popen] = None
        os.mkdir(self.nodedir, 0o755)
        _chown(self.nodedir)

    def __repr__(self) -> str:
        return f"<PgDemoNode {self.name} port={self.port} {'running' if self.running else 'stopped'}>"

    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_node_conf(self, primary: Optional["PgDemoNode"] = None) -> None:
        lines = [f"port = {self.port}", f"unix_socket_directories = '{self.nodedir}'"]
        if primary is not None:
            lines.append(f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres "
                         f"application_name={self.name}'")
        path = os.path.join(self.datadir, "node.conf")
        with open(path, "w") as f:
            f.write("# written by noodlecore-db demo\n" + "\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        _chown(path)

    def start(self, timeout: float = 30) -> None:
        logf = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(
                _as_pg([self.cluster.bin("postgres"), "-D", self.datadir]), stdin=subprocess.DEVNULL,
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                env=_env(), cwd="/")
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                raise PgDemoError(f"server {self.name} exited during startup (exit {rc}):\n"
                                  f"{_tail(self.logfile)}")
            lines = self._pidfile()
            if lines and len(lines) >= 8 and lines[7].strip() in ("ready", "standby"):
                return
            if time.monotonic() > deadline:
                raise PgDemoError(f"server {self.name} not ready within {timeout:g} s:\n{_tail(self.logfile)}")
            time.sleep(0.01)

    def _pidfile(self) -> Optional[List[str]]:
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return f.read().split("\n")
        except OSError:
            return None

    def _shmid(self) -> Optional[int]:
        try:
            return int(self._pidfile()[6].split()[1])
        except (TypeError, IndexError, ValueError):
            return None

    def crash(self) -> None:
        """SIGKILL the postmaster and every backend at once (they share its
        process group): a real crash, no shutdown checkpoint."""
        if not self.running:
            return
        shmid = self._shmid()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.proc = None
        _shm_remove(shmid)

    def _group_alive(self) -> bool:
        pgid = self.proc.pid if self.proc else None
        if pgid is None:
            return False
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT): clients disconnected, shutdown checkpoint written."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
            self.proc = None
        except subprocess.TimeoutExpired:
            self.crash()
            raise PgDemoError(f"server {self.name} did not stop within {timeout:g} s; killed") from None

    def promote(self, timeout: float = 30) -> None:
        """``pg_ctl promote -w``: the standby leaves recovery and accepts writes."""
        _run([self.cluster.bin("pg_ctl"), "promote", "-D", self.datadir, "-w", "-t", str(int(timeout))],
             f"pg_ctl promote ({self.name})", timeout=timeout + 5, log_path=self.logfile)

    def sql(self, query: str, timeout: float = 5.0):
        return _sql(self.dsn(), query, timeout)

    def destroy(self) -> None:
        if self.running:
            shmid = self._shmid()
            try:
                self.proc.send_signal(signal.SIGQUIT)     # immediate shutdown
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
            if self.running or self._group_alive():
                self.crash()
            self.proc = None
            _shm_remove(shmid)


# ---------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------

class PgDemoCluster:
    """A temporary directory under /dev/shm holding throwaway servers."""

    def __init__(self, bindir: Optional[str] = None, on_step: Optional[Callable[[str], None]] = None):
        self.bindir = bindir or find_bindir()
        self.on_step = on_step or (lambda msg: None)
        _pg_ids()       # fail early when root without a postgres user
        _as_pg(["true"])
        swept = sweep_stale()
        if swept:
            log.info("removed %d directory(ies) left by earlier demos", swept)
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
            else tempfile.gettempdir()
        self.root = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base)
        os.chmod(self.root, 0o755)
        self.nodes: List[PgDemoNode] = []
        self._closed = False
        atexit.register(self.close)
        try:
            out = subprocess.run([self.bin("postgres"), "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        m = re.search(r"\(PostgreSQL\) (\S+)", out)
        self.version = m.group(1) if m else (out or "?")

    def bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def primary(self, name: str = "a") -> PgDemoNode:
        """initdb, settings, start."""
        node = PgDemoNode(self, name)
        self.nodes.append(node)
        t0 = time.monotonic()
        _run([self.bin("initdb"), "-D", node.datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
              "--locale=C", "--no-sync"], "initdb", timeout=120)
        conf = os.path.join(node.datadir, "postgresql.conf")
        with open(conf, "a") as f:
            f.write("\n# noodlecore-db demo\n" + "".join(f"{k} = {v}\n" for k, v in SETTINGS.items())
                    + "include_if_exists = 'node.conf'\n")
        node._write_node_conf()
        node.start()
        log.info("primary %s started on port %d in %.2f s", name, node.port, time.monotonic() - t0)
        return node

    def standby(self, primary: PgDemoNode, name: str = "b", node: Optional[PgDemoNode] = None,
                timeout: float = 30) -> PgDemoNode:
        """A streaming hot standby of ``primary`` (pg_basebackup -R); with
        ``node``, that node's data dir is rebuilt (a crashed or stopped old
        primary rejoining)."""
        if node is None:
            node = PgDemoNode(self, name)
            self.nodes.append(node)
        else:
            node.destroy()
            shutil.rmtree(node.datadir, ignore_errors=True)
        _run([self.bin("pg_basebackup"), "-D", node.datadir,
              "-d", f"host=127.0.0.1 port={primary.port} user=postgres application_name={node.name}",
              "-X", "stream", "-c", "fast", "--no-sync", "-R"],
             f"pg_basebackup ({node.name} from {primary.name})", timeout=120, log_path=primary.logfile)
        node._write_node_conf(primary)
        node.start()
        self.wait_streaming(primary, node, timeout)
        return node

    def wait_streaming(self, primary: PgDemoNode, standby: PgDemoNode, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        q = f"SELECT count(*) AS n FROM pg_stat_replication WHERE application_name = '{standby.name}' " \
            "AND state = 'streaming'"
        while True:
            try:
                if primary.sql(q)[0]["n"]:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise PgDemoError(f"standby {standby.name} not streaming from {primary.name} after "
                                  f"{timeout:g} s:\n{_tail(standby.logfile)}")
            time.sleep(0.05)

    def wait_replayed(self, primary: PgDemoNode, standby: PgDemoNode, timeout: float = 30) -> None:
        lsn = primary.sql("SELECT pg_current_wal_lsn()::text AS l")[0]["l"]
        deadline = time.monotonic() + timeout
        while True:
            try:
                if standby.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn AS ok")[0]["ok"]:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise PgDemoError(f"standby {standby.name} did not replay {lsn} within {timeout:g} s")
            time.sleep(0.02)

    def close(self) -> None:
        """Stop every server (immediate shutdown, SIGKILL if need be) and remove
        the directory.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            try:
                node.destroy()
            except Exception:
                log.exception("stopping demo server %s", node.name)
        _kill_in(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    def __enter__(self) -> "PgDemoCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _kill_in(root: str) -> int:
    """SIGKILL every process whose working directory is inside root (a
    postmaster and its children chdir into their data directory)."""
    victims = []
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{n}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root.rstrip("/") + "/"):
            victims.append(int(n))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while victims and time.monotonic() < deadline:
        victims = [p for p in victims if _alive(p)]
        time.sleep(0.01)
    return len(victims)


def sweep_stale() -> int:
    """Remove the directories (and kill the servers) of demos whose process is gone."""
    swept = 0
    for base in {"/dev/shm", tempfile.gettempdir()}:
        for root in glob.glob(os.path.join(base, PREFIX + "*")):
            m = re.match(re.escape(PREFIX) + r"(\d+)-", os.path.basename(root))
            if not m or _alive(int(m.group(1))):
                continue
            for pidfile in glob.glob(os.path.join(root, "*", "data", "postmaster.pid")):
                try:
                    with open(pidfile) as f:
                        _shm_remove(int(f.read().split("\n")[6].split()[1]))
                except (OSError, IndexError, ValueError):
                    pass
            _kill_in(root)
            shutil.rmtree(root, ignore_errors=True)
            swept += 1
    return swept
