"""The soak's moving parts: the client workers, the fault injector, the tallies.

bench/soak.py sets up the servers and the objects under test and prints the
report; this file holds what runs during the soak.  Every call the workers
make has a deadline, so a worker never blocks the end of the run for longer
than the largest of them.
"""

from __future__ import annotations

import collections
import random
import re
import sqlite3
import threading
import time
import traceback

from noodlecore.database import errors

# The pools' application_name on the server: the report counts sessions by it.
APP_POOL = "soak-pool"        # DatabaseConnectionPool through the fault proxy
APP_DB = "soak-dbm"           # DatabaseManager, direct to the primary
APP_FO = "soak-fo"            # DatabaseFailoverManager's endpoint pools


class Tally:
    """Operations and errors by kind, shared by every thread (one lock)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.faults = collections.Counter()
        self.samples = {}             # error key -> Counter of its messages (digits folded)
        self.unexpected = []          # the first tracebacks of exceptions the faults do not explain
        self.unexpected_count = 0

    def op(self, kind):
        with self._lock:
            self.ops[kind] += 1

    def fault(self, kind):
        with self._lock:
            self.faults[kind] += 1

    def error(self, kind, exc):
        code = getattr(exc, "error_code", None)
        key = "%s %s%s" % (type(exc).__name__, code if code is not None else "-",
                           " (%s)" % getattr(exc, "sqlstate", None) if getattr(exc, "sqlstate", None) else "")
        with self._lock:
            self.errors[key] += 1
            self.ops[kind + " failed"] += 1
            msg = re.sub(r"\d+", "N", " ".join(str(exc).split()))[:120]
            self.samples.setdefault(key, collections.Counter())["%s: %s" % (kind, msg)] += 1

    def finding(self, kind, exc):
        """An exception the faults do not explain: counted, and its traceback kept."""
        self.error(kind, exc)
        with self._lock:
            self.unexpected_count += 1
            if len(self.unexpected) < 20:
                self.unexpected.append("%s: %s" % (kind, traceback.format_exc()))


class Targets:
    """What the workers use; filled in by soak.py."""

    def __init__(self, pool, sqlite_pool, dbm, manager, rng_seed):
        self.pool = pool
        self.sqlite_pool = sqlite_pool
        self.dbm = dbm
        self.manager = manager
        self.seed = rng_seed


# -- the workers ---------------------------------------------------------------

def _pg_pool_op(t, rng, where):
    """Borrow per request from the proxied pool: a query, a transaction, or a timed-out statement."""
    r = rng.random()
    with t.pool.get_connection(timeout=3) as conn:
        if r < 0.45:
            n = rng.randint(-2**31, 2**31 - 1)
            rows = conn.execute_query("SELECT %s::int4 AS n, %s AS s", (n, "x" * rng.randint(0, 50)))
            assert rows[0]["n"] == n, rows
            return "pg select"
        if r < 0.8:
            with conn.transaction():
                conn.execute_query("INSERT INTO soak_t (worker, v) VALUES (%s, %s)", (rng.randint(0, 99), "t"))
                conn.execute_query("SELECT count(*) AS c FROM soak_t WHERE worker = %s", (rng.randint(0, 99),))
            return "pg transaction"
        if r < 0.9:
            # A statement past its deadline: cancelled on the server, 2012 expected.
            where[0] = "pg statement timeout"
            try:
                conn.execute_query("SELECT pg_sleep(0.3)", timeout=0.05)
            except errors.QueryTimeoutError:
                pass
            where[0] = "pg statement after a timed-out one"   # a late cancel would hit this one
            conn.execute_query("SELECT 1")
            return "pg statement timeout"
        conn.execute_query("SELECT pg_sleep(%s)", (rng.random() * 0.05,), timeout=2)
        return "pg short sleep"


def _sqlite_op(t, rng, where):
    r = rng.random()
    with t.sqlite_pool.get_connection(timeout=3) as conn:
        if r < 0.5:
            with conn.transaction():
                conn.execute_query("INSERT INTO soak_t (worker, v) VALUES (%s, %s)",
                                   (rng.randint(0, 99), rng.random()))
            return "sqlite transaction"
        conn.execute_query("SELECT count(*) AS c, max(v) AS m FROM soak_t", timeout=2)
        return "sqlite select"


def _dbm_op(t, rng, where):
    r = rng.random()
    if r < 0.4:
        t.dbm.insert("soak_t", {"worker": rng.randint(0, 99), "v": "dbm"}, timeout=3)
        return "dbm insert"
    if r < 0.7:
        t.dbm.select("soak_t", ["id"], {"worker": rng.randint(0, 99)}, timeout=3)
        return "dbm select"
    with t.dbm.transaction() as tx:
        tx.execute_query("UPDATE soak_t SET v = %s WHERE worker = %s", ("u", rng.randint(0, 99)))
    return "dbm transaction"


def _fo_op(t, rng, where):
    with t.manager.get_connection(timeout=3) as conn:
        conn.execute_query("SELECT pg_is_in_recovery() AS r, %s AS n", (rng.randint(0, 1000),), timeout=2)
    return "failover borrow"


OPS = [(_pg_pool_op, 0.4), (_sqlite_op, 0.25), (_dbm_op, 0.2), (_fo_op, 0.15)]


def worker(t, tally, stop, index):
    rng = random.Random(t.seed * 1000 + index)
    fns, weights = zip(*OPS)
    while not stop.is_set():
        fn = rng.choices(fns, weights)[0]
        where = [fn.__name__.strip("_").replace("_op", "")]    # an op may name the step it is in
        try:
            tally.op(fn(t, rng, where))
        except errors.OperationalError as exc:     # lost connections, deadlines, failovers: the faults' doing
            tally.error(where[0], exc)
        except Exception as exc:                   # anything else is a finding
            tally.finding(where[0], exc)
            if stop.wait(0.05):                        # not a tight loop on a broken object
                break


# -- the faults ----------------------------------------------------------------

class Faults:
    """Every `interval` seconds one fault, chosen at random; the primary is restarted now and then."""

    def __init__(self, primary, proxy, sqlite_path, tally, interval, rng, log):
        self.primary = primary
        self.proxy = proxy
        self.sqlite_path = sqlite_path
        self.tally = tally
        self.interval = interval
        self.rng = rng
        self.log = log
        self.n = 0

    def run(self, stop):
        while not stop.wait(self.interval):
            self.n += 1
            kind = "restart" if self.n % 15 == 0 else self.rng.choice(
                ["terminate", "terminate", "reset", "blackhole", "sqlite lock", "server statement_timeout"])
            try:
                getattr(self, "_" + kind.replace(" ", "_"))(stop)
                self.tally.fault(kind)
            except Exception as exc:           # a fault that could not be injected is reported, not fatal
                self.tally.fault(kind + " (could not inject: %s)" % type(exc).__name__)
                self.log("fault %s failed: %s" % (kind, exc))
        self.proxy.clear()

    def _terminate(self, stop):
        """pg_terminate_backend of a random half of the client sessions."""
        pids = self.primary.backend_pids()
        victims = [p for p in pids if self.rng.random() < 0.5]
        if victims:
            self.primary.sql("SELECT pg_terminate_backend(p) FROM unnest(ARRAY[%s]) AS p"
                             % ",".join(map(str, victims)))

    def _reset(self, stop):
        self.proxy.reset_all()

    def _blackhole(self, stop):
        """Packets dropped for 0.5-2 s: statements and borrows through the proxy hit their deadlines."""
        self.proxy.blackhole(True)
        try:
            stop.wait(0.5 + 1.5 * self.rng.random())
        finally:
            self.proxy.blackhole(False)
        # Connections that were held through the blackhole are half dead: cut them.
        self.proxy.reset_all()

    def _restart(self, stop):
        self.primary.restart(mode="fast" if self.rng.random() < 0.5 else "immediate")

    def _sqlite_lock(self, stop):
        """Another process-level writer holds the SQLite database for up to 1 s."""
        db = sqlite3.connect(self.sqlite_path, timeout=5, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            stop.wait(0.2 + 0.8 * self.rng.random())
            db.execute("COMMIT")
        finally:
            db.close()

    def _server_statement_timeout(self, stop):
        """The server's own statement_timeout (57014 from the server, not our deadline) for ~1 s."""
        self.primary.sql("ALTER ROLE %s SET statement_timeout = '20ms'" % self.primary.user)
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1 and not stop.is_set():
                # Only new sessions read role settings: cut some so the setting bites.
                self._terminate(stop)
                stop.wait(0.3)
        finally:
            self.primary.sql("ALTER ROLE %s RESET statement_timeout" % self.primary.user)
            # Sessions opened meanwhile keep the setting for life: end them too.
            self.primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                             "backend_type = 'client backend' AND pid <> pg_backend_pid() AND "
                             "backend_start > now() - interval '3 seconds'")
