"""Processes, files and ports of throwaway PostgreSQL servers.

Owns: finding the server binaries, running them as the ``postgres`` user when
we are root, writing files the server reads (atomically, already owned by the
server's user), the /proc view of server processes (alive, children, signals),
the shared memory a SIGKILLed postmaster leaves behind, and free TCP ports.
Knows nothing about nodes or SQL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

__all__ = ["PgHarnessError", "REQUIRED", "find_bindir", "check_binaries", "free_port", "claim_port", "alive",
           "children", "log_tail"]

#: The binaries the harness runs; find_bindir() wants all of them in one directory.
REQUIRED = ("initdb", "postgres", "pg_ctl", "pg_basebackup", "psql", "pg_rewind")

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
    else tempfile.gettempdir()
# Outside the kernel's ephemeral range (32768-60999): a port chosen there can be
# handed to an outgoing connection while its server is down.
PORT_RANGE = (20000, 31999)


class PgHarnessError(RuntimeError):
    """A harness operation failed (the message says how, with the server log's tail)."""


# ---------------------------------------------------------------------------
# binaries
# ---------------------------------------------------------------------------

def _version_key(path):
    m = re.search(r"/(\d+)(?:\.(\d+))?/bin$", path)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


def _bindir_candidates():
    """Where the server binaries may be, most specific first (computed lazily: pg_config
    is only run when $NOODLE_PG_BIN does not answer)."""
    env = os.environ.get("NOODLE_PG_BIN")
    if env:
        yield env
    exe = shutil.which("pg_config")
    if exe:
        try:
            yield subprocess.run([exe, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    yield from sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    yield "/usr/local/pgsql/bin"
    pg = shutil.which("postgres")
    if pg:
        yield os.path.dirname(pg)


def find_bindir():
    """The directory holding every binary in REQUIRED: $NOODLE_PG_BIN, then ``pg_config
    --bindir``, /usr/lib/postgresql/<newest>/bin, /usr/local/pgsql/bin and the PATH.
    Raises PgHarnessError naming where it looked."""
    looked = []
    for d in _bindir_candidates():
        if d and all(os.access(os.path.join(d, b), os.X_OK) for b in REQUIRED):
            return d
        if d:
            looked.append(d)
    raise PgHarnessError(
        "PostgreSQL server binaries (%s) not found in: %s. Install the PostgreSQL server "
        "(e.g. apt-get install postgresql) or set NOODLE_PG_BIN to their directory."
        % (", ".join(REQUIRED), ", ".join(looked) or "(nowhere to look)"))


def check_binaries(bindir=None):
    """Raise PgHarnessError (loudly, never a skip) unless the servers can run here: the
    binaries exist and, as root, there is a ``postgres`` user and a way to become it.
    Returns the binaries' directory."""
    if bindir is None:
        bindir = find_bindir()
    else:
        missing = [b for b in REQUIRED if not os.access(os.path.join(bindir, b), os.X_OK)]
        if missing:
            raise PgHarnessError("PostgreSQL binaries missing in %s: %s (install the PostgreSQL server "
                                 "or set NOODLE_PG_BIN)" % (bindir, ", ".join(missing)))
    pg_ids()
    as_pg(["true"])
    return bindir


_default_bindir = None


def default_bindir():
    """find_bindir(), looked up once per process (for the psql helpers)."""
    global _default_bindir
    if _default_bindir is None:
        _default_bindir = find_bindir()
    return _default_bindir


# ---------------------------------------------------------------------------
# running as the postgres user; files the server reads
# ---------------------------------------------------------------------------

def pg_ids():
    """(uid, gid) of the ``postgres`` user when we are root (initdb and postgres refuse
    to run as root), else None."""
    if os.geteuid() != 0:
        return None
    import pwd
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise PgHarnessError("running as root, but there is no 'postgres' user to run the servers as "
                             "(PostgreSQL refuses to run as root)") from None
    return pw.pw_uid, pw.pw_gid


def as_pg(cmd):
    """cmd, run as the postgres user when we are root (setpriv is faster than runuser)."""
    if os.geteuid() != 0:
        return list(cmd)
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + list(cmd)
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"] + list(cmd)
    raise PgHarnessError("running as root, but neither setpriv nor runuser is installed to run the "
                         "servers as the postgres user")


def chown_pg(path):
    ids = pg_ids()
    if ids:
        os.chown(path, *ids)


def write_pg_file(path, text, mode=0o600):
    """Put a whole file the server reads at path, in one step.

    The content, mode and owner are set on a temporary file in the same directory, which
    is then renamed over path.  A running server may consume a file the moment it appears
    (the promote trigger is unlinked as soon as the postmaster gets any SIGUSR1), so
    nothing may be done to path after it exists: a chown after the fact raced the server
    and failed with FileNotFoundError.  A reader never sees it half written either.
    """
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), mode)
            ids = pg_ids()
            if ids:
                os.fchown(f.fileno(), *ids)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# The sanitizer pass preloads libasan into the test process; the servers and
# psql must not inherit that (initdb hangs under it).  PG* variables of the
# caller would redirect the tools.
_NOT_FOR_SERVERS = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC", "LSAN_OPTIONS")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in _NOT_FOR_SERVERS}
    env.setdefault("LC_ALL", "C")
    env.update(extra)
    return env


def run(cmd, timeout, what, as_postgres=True, log=None, check=True):
    """Run a server tool to completion (as postgres unless as_postgres=False); raises
    PgHarnessError with its output and the tail of `log` on failure or timeout."""
    full = as_pg(cmd) if as_postgres else list(cmd)
    try:
        r = subprocess.run(full, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, env=clean_env(), cwd="/")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        raise PgHarnessError("%s timed out after %ss: %s\n%s%s" % (
            what, timeout, " ".join(cmd), out[-3000:], tail_msg(log))) from None
    except OSError as e:
        raise PgHarnessError("%s could not run: %s" % (what, e)) from None
    if check and r.returncode != 0:
        raise PgHarnessError("%s failed (rc=%s): %s\nstdout: %s\nstderr: %s%s" % (
            what, r.returncode, " ".join(cmd), r.stdout.decode(errors="replace")[-2000:],
            r.stderr.decode(errors="replace")[-3000:], tail_msg(log)))
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


def tail_msg(log):
    if not log:
        return ""
    return "\n--- tail of %s ---\n%s" % (log, log_tail(log))


# ---------------------------------------------------------------------------
# processes (PostgreSQL's children are not in the postmaster's process group,
# so signals go to each pid found through /proc)
# ---------------------------------------------------------------------------

def proc_stat(pid):
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


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def children(pid):
    kids = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st[1] == pid and st[0] not in ("Z", "X"):
            kids.append(p)
    return kids


def pids_in(root):
    """Processes whose working directory is inside root (postgres chdirs into its data dir)."""
    prefix = root.rstrip("/") + "/"
    found = []
    for p in all_pids():
        try:
            if os.readlink("/proc/%d/cwd" % p).startswith(prefix):
                found.append(p)
        except OSError:
            pass
    return found


def kill(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def wait_dead(pids, timeout):
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if alive(p)}
        if pending:
            time.sleep(0.005)
    return not pending


# ---------------------------------------------------------------------------
# what a SIGKILLed postmaster leaves behind
# ---------------------------------------------------------------------------

_libc = None


def shm_remove(shmid):
    """IPC_RMID a SysV segment (left behind by a SIGKILLed postmaster)."""
    global _libc
    if shmid is None:
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.shmctl(int(shmid), 0, None)  # IPC_RMID == 0
    except Exception:
        pass


def dsm_files(pids):
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


def unlink_all(paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def read_pidfile(datadir):
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            return f.read().split("\n")
    except OSError:
        return None


def pidfile_shmid(lines):
    try:
        return int(lines[6].split()[1])
    except (TypeError, IndexError, ValueError):
        return None


def kill_all_hard(pids):
    """SIGKILL pids, wait for them, then remove the DSM segments they had mapped."""
    dsm = dsm_files(pids)
    for p in pids:
        kill(p, signal.SIGKILL)
    wait_dead(pids, 5)
    unlink_all(dsm)


# ---------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------

_used_ports = set()
_port_lock = threading.Lock()


def free_port():
    """A free TCP port on 127.0.0.1 in 20000-31999, checked by binding, not handed out twice."""
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


def release_port(port):
    with _port_lock:
        _used_ports.discard(port)


def claim_port(port):
    """Hand out port again (one a stopped server had, e.g. a Patroni member restarted at
    its address): checked by binding, as free_port.  PgHarnessError when it is taken."""
    with _port_lock:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if port in _used_ports:
                raise OSError("handed out already")
            # connections the stopped server closed may linger in TIME_WAIT: they do not
            # keep a server from listening (PostgreSQL and Patroni set SO_REUSEADDR too)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise PgHarnessError("port %d is not free: %s" % (port, e)) from None
        finally:
            s.close()
        _used_ports.add(port)
