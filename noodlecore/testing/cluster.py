"""Making and removing throwaway PostgreSQL servers: PgCluster, PgFactory, sweep_stale.

Owns the on-disk layout (everything under one root in /dev/shm)::

    /dev/shm/<prefix><pid>-<rand>/        root (owner file: "<pid> <starttime>")
        template/                         initdb'ed once, settings applied, started once
        <node>/                           per node, also its unix socket dir
            data/                         cp -a of the template (or pg_basebackup)
            server.log                    postmaster stdout/stderr

and the topology operations: a primary from the template, a standby through
pg_basebackup, an old primary rejoining through pg_rewind; closing a cluster,
and sweeping the roots of processes that died without closing theirs.

Per node settings live in ``data/node.conf``, which the template's
postgresql.conf includes last; the node rewrites it whenever its port,
settings, upstream or synchronous standbys change (pg_basebackup and pg_rewind
copy the source's copy, it is rewritten right after).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Mapping, Optional

from .node import PG_HBA_TRUST, PgNode, conf_text
from .processes import (SHM_DIR, PgHarnessError, all_pids, check_binaries, chown_pg, free_port, kill_all_hard,
                        pidfile_shmid, pids_in, proc_stat, read_pidfile, release_port, run, shm_remove,
                        tail_msg, write_pg_file)
from .proxy import TcpProxy

__all__ = ["PgCluster", "PgFactory", "sweep_stale", "BASE_SETTINGS", "ROOT_PREFIX", "PG_HBA_TRUST"]

log = logging.getLogger("noodlecore.testing")

ROOT_PREFIX = "ncpg-"

# Throwaway servers: no fsync; what pg_rewind needs (full_page_writes, wal_log_hints);
# short replication timeouts and retry interval (the 5 s default slows every reconnect).
BASE_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "on",
    "wal_log_hints": "on",
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


class PgCluster:
    """Owns a root directory in /dev/shm, a template data dir and all nodes made from it."""

    def __init__(self, root: Optional[str] = None, base_settings: Optional[Mapping[str, Any]] = None,
                 template_from: Optional[PgCluster] = None, bindir: Optional[str] = None,
                 prefix: str = ROOT_PREFIX) -> None:
        """root: the directory (default: a new /dev/shm/<prefix><pid>-XXXX).  base_settings:
        merged over BASE_SETTINGS for every node.  template_from: copy the (ready) template of
        another PgCluster instead of running initdb again.  bindir: the server binaries
        (default: find_bindir()).  Raises PgHarnessError when the servers cannot run here."""
        self.bindir = check_binaries(bindir)
        if root is None:
            root = tempfile.mkdtemp(prefix="%s%d-" % (prefix, os.getpid()), dir=SHM_DIR)
        else:
            os.makedirs(root, exist_ok=True)
        self.root = root
        st = proc_stat(os.getpid())
        with open(os.path.join(root, "owner"), "w") as f:
            f.write("%d %d\n" % (os.getpid(), st[2] if st else 0))
        os.chmod(root, 0o755)
        chown_pg(root)
        self.base_settings = dict(BASE_SETTINGS)
        self.base_settings.update(base_settings or {})
        self.template = os.path.join(root, "template")
        self._template_ready = False
        self._template_from = template_from
        self.nodes = []
        self._lock = threading.RLock()
        self._closed = False
        self.timings = {}
        atexit.register(self.close)

    def bin(self, name):
        return os.path.join(self.bindir, name)

    # ---- template ---------------------------------------------------------
    def _ensure_template(self):
        with self._lock:
            if self._closed:
                raise PgHarnessError("cluster is closed")
            if self._template_ready:
                return
            t0 = time.monotonic()
            src = self._template_from
            if src is not None:
                src._ensure_template()
                run(["cp", "-a", src.template, self.template], timeout=60, what="cp template",
                    as_postgres=False)
                self._template_ready = True
                self.timings["template"] = time.monotonic() - t0
                return
            tlog = os.path.join(self.root, "template.log")
            run([self.bin("initdb"), "-D", self.template, "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                timeout=120, what="initdb")
            conf = os.path.join(self.template, "postgresql.conf")
            with open(conf, "a") as f:
                f.write("\n# ---- noodlecore.testing ----\n" + conf_text(self.base_settings)
                        + "include_if_exists = 'node.conf'\n")
            write_pg_file(os.path.join(self.template, "pg_hba.conf"), PG_HBA_TRUST)
            # record max_connections & co. in pg_control (standbys cloned later need it)
            r = run([self.bin("postgres"), "--single", "-D", self.template, "postgres"],
                    timeout=120, what="postgres --single (template)", check=False)
            if r.returncode != 0:
                with open(tlog, "wb") as f:
                    f.write(r.stdout + r.stderr)
                raise PgHarnessError("template single-user start failed rc=%s%s"
                                     % (r.returncode, tail_msg(tlog)))
            self._template_ready = True
            self.timings["template"] = time.monotonic() - t0

    # ---- nodes --------------------------------------------------------------
    def _new_node(self, name, settings):
        if self._closed:
            raise PgHarnessError("cluster is closed")
        with self._lock:
            safe = "".join(c if (c.isalnum() or c in "_-") else "_" for c in name) or "node"
            taken = {n.name for n in self.nodes}
            cand, i = safe, 2
            while cand in taken or os.path.exists(os.path.join(self.root, cand)) or cand == "template":
                cand, i = "%s%d" % (safe, i), i + 1
            nodedir = os.path.join(self.root, cand)
            if len(nodedir) + len("/.s.PGSQL.65535.lock") > 100:
                raise PgHarnessError("socket dir too long: %s" % nodedir)
            os.mkdir(nodedir, 0o755)
            chown_pg(nodedir)
            node = PgNode(self, cand, free_port(), nodedir, settings)
            self.nodes.append(node)
            return node

    def _start_new(self, node, timeout=30):
        for attempt in range(4):
            try:
                node.start(timeout=timeout)
                return
            except PgHarnessError as e:
                tail = node.log_tail(2000)
                if attempt < 3 and ("Address already in use" in tail
                                    or "could not create any TCP/IP sockets" in tail):
                    node.port = free_port()   # lost a race for the port with another process
                    node._write_node_conf()
                    continue
                raise e

    def primary(self, name: str = "primary", settings: Optional[Mapping[str, Any]] = None) -> PgNode:
        """A new primary from the template (cp -a), started."""
        self._ensure_template()
        t0 = time.monotonic()
        node = self._new_node(name, settings)
        run(["cp", "-a", self.template, node.datadir], timeout=60, what="cp template", as_postgres=False)
        node._write_node_conf()
        self._start_new(node)
        self.timings.setdefault("primary", []).append(time.monotonic() - t0)
        return node

    def standby(self, primary: PgNode, name: str = "standby", sync: bool = False,
                settings: Optional[Mapping[str, Any]] = None, upstream: Optional[PgNode] = None) -> PgNode:
        """A hot standby of `primary` through pg_basebackup, started and streaming.

        sync=True adds it to the primary's synchronous_standby_names (application_name = node name)
        and waits until it is reported sync.  upstream=(host, port) makes the standby stream
        through e.g. a TcpProxy instead of straight from the primary.
        """
        t0 = time.monotonic()
        merged = {k: v for k, v in primary.settings.items() if k != "synchronous_standby_names"}
        merged.update(settings or {})
        node = self._new_node(name, merged)
        run([self.bin("pg_basebackup"), "-D", node.datadir,
             "-d", "host=%s port=%d user=postgres application_name=%s_basebackup"
             % (primary.sockdir, primary.port, node.name),
             "-X", "stream", "-c", "fast", "--no-sync"],
            timeout=120, what="pg_basebackup", log=primary.logfile)
        node.upstream = upstream or (primary.host, primary.port)
        node._write_node_conf()
        write_pg_file(os.path.join(node.datadir, "standby.signal"), "")
        self._start_new(node)
        if upstream is None:
            primary.wait_standby(node.name)
        if sync:
            self._add_sync_standby(primary, node)
        self.timings.setdefault("standby", []).append(time.monotonic() - t0)
        return node

    @staticmethod
    def _add_sync_standby(primary, standby):
        primary.sync_standbys.append(standby.name)
        primary._write_node_conf()
        primary.reload()
        primary.wait_standby(standby.name, sync=True)

    def rewind_as_standby(self, old_primary, new_primary, sync=False, timeout=120):
        """pg_rewind old_primary from new_primary and restart it as new_primary's standby
        (stopped first if running; after a crash pg_rewind runs crash recovery itself)."""
        t0 = time.monotonic()
        if old_primary.is_running():
            old_primary.stop("fast")
        # right after a promotion the new primary's control file still shows the old
        # timeline, and pg_rewind would say "no rewind required"
        new_primary.sql("CHECKPOINT", timeout=60)
        run([self.bin("pg_rewind"), "--target-pgdata", old_primary.datadir,
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
        old_primary._write_node_conf()       # pg_rewind copied the source's
        write_pg_file(os.path.join(old_primary.datadir, "standby.signal"), "")
        old_primary.start()
        new_primary.wait_standby(old_primary.name)
        if sync:
            self._add_sync_standby(new_primary, old_primary)
        self.timings.setdefault("rewind", []).append(time.monotonic() - t0)
        return old_primary

    def destroy(self, node):
        """Stop (immediate) a node and remove its directory."""
        _stop_hard(node)
        shutil.rmtree(node.nodedir, ignore_errors=True)
        with self._lock:
            if node in self.nodes:
                self.nodes.remove(node)
        release_port(node.port)

    def close(self) -> None:
        """Stop every node (immediate), kill leftovers, remove the root.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        for node in list(self.nodes):
            _stop_hard(node)
        # anything else still living in our root (e.g. a node object that was dropped)
        kill_all_hard(pids_in(self.root))
        shutil.rmtree(self.root, ignore_errors=True)
        self.nodes = []
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
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
        self.bouncers = []

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
        host, tport = (target.host, target.port) if isinstance(target, PgNode) else target
        px = TcpProxy(host, tport, port=port or 0).start()
        self.proxies.append(px)
        return px

    def pgbouncer(self, node, pool_mode="transaction", settings=None):
        """A started PgBouncer (pool_mode=transaction) in front of a PgNode."""
        from .pgbouncer import PgBouncer
        bouncer = PgBouncer(node, pool_mode=pool_mode, settings=settings)
        self.bouncers.append(bouncer)
        return bouncer.start()

    def close(self):
        errors = []
        for b in self.bouncers:
            try:
                b.close()
            except Exception as e:
                errors.append(e)
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
        self.proxies, self.nodes, self.bouncers = [], [], []
        if errors:
            raise errors[0]


# ---------------------------------------------------------------------------
# stale roots of processes that died without closing their cluster
# ---------------------------------------------------------------------------

def _owner_alive(root, prefix):
    """Is the process that created `root` still running?"""
    base = os.path.basename(root.rstrip("/"))
    try:
        pid = int(base[len(prefix):].split("-")[0])
    except ValueError:
        return False
    st = proc_stat(pid)
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


def sweep_stale(shm_dir=None, prefix=ROOT_PREFIX):
    """Kill servers left behind by earlier (killed) processes and remove their roots.

    Only roots named <prefix><pid>-... whose owning process is gone are touched, so
    concurrent sessions of other users of the harness are left alone.  Returns the number
    of roots swept.
    """
    shm_dir = shm_dir or SHM_DIR
    path_prefix = os.path.join(shm_dir, prefix)
    stale_roots = set()
    try:
        for n in os.listdir(shm_dir):
            if n.startswith(prefix):
                root = os.path.join(shm_dir, n)
                if not _owner_alive(root, prefix):
                    stale_roots.add(root)
    except OSError:
        pass
    # processes (postmasters and orphaned children) whose cwd is inside a stale
    # root (postgres chdirs into its data dir), including roots already deleted
    victims = []
    for p in all_pids():
        try:
            cwd = os.readlink("/proc/%d/cwd" % p)
        except OSError:
            continue
        if not cwd.startswith(path_prefix):
            continue
        root = path_prefix + cwd[len(path_prefix):].split("/")[0]
        if root in stale_roots or (not os.path.isdir(root) and not _owner_alive(root, prefix)):
            victims.append(p)
            stale_roots.add(root)
    shmids = []
    for root in stale_roots:
        try:
            for n in os.listdir(root):
                sid = pidfile_shmid(read_pidfile(os.path.join(root, n, "data")))
                if sid is not None:
                    shmids.append(sid)
        except OSError:
            pass
    kill_all_hard(victims)
    for sid in shmids:
        shm_remove(sid)
    for root in stale_roots:
        shutil.rmtree(root, ignore_errors=True)
        log.info("swept %s", root)
    return len(stale_roots)
