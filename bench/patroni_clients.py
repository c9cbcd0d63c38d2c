"""bench/patroni.py's clients: the three ways to talk to a Patroni cluster that the
bench compares, each with the same two calls (a write on the leader, a read
where the implementation sends reads), and the steady client that logs every
request.

  noodlecore      DatabaseFailoverManager.from_patroni(the members' REST URLs),
                  monitoring on, ``failover_wait`` set; writes borrow for the
                  primary, reads with ``target="prefer-standby"``
  psycopg_pool    on a libpq multi-host DSN: writes through a pool with
  (multi-host)    target_session_attrs=read-write, reads through one with
                  prefer-standby (and load_balance_hosts=random when libpq has it)
  psycopg_pool    through HAProxy: writes on its /primary listener, reads on its
  (HAProxy)       /replica listener

The peers use ``check=ConnectionPool.check_connection`` (a connection is tested
when it is borrowed), their better setting in bench/failover.py, and
autocommit; every pool borrows per request.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import time

DSN_REST = "user=postgres dbname=postgres connect_timeout=2"
# every write: one row of the run; the read: the highest seq of the run visible
# where it is served, and which server served it
WRITE_Q = "INSERT INTO bench_ha (run, seq) VALUES (%s, %s) RETURNING inet_server_port()"
READ_Q = "SELECT coalesce(max(seq), 0), inet_server_port() FROM bench_ha WHERE run = %s"


def short_error(e):
    text = str(e).strip().splitlines()
    code = getattr(e, "error_code", None) or getattr(e, "sqlstate", None)
    return "%s%s: %s" % (type(e).__name__, "[%s]" % code if code else "", text[0][:110] if text else "")


def wait_until(pred, timeout, what, step=0.01):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(step)


# ---------------------------------------------------------------------------
# what this build of noodlecore offers (h-patroni / h-routing may not be merged)
# ---------------------------------------------------------------------------

def noodle_features():
    """{feature: True/False} for from_patroni, read targets and failover_wait."""
    from noodlecore.database.failover_manager import DatabaseFailoverManager, FailoverConfig
    fields = {f.name for f in dataclasses.fields(FailoverConfig)}
    return {
        "from_patroni": hasattr(DatabaseFailoverManager, "from_patroni"),
        "target": "target" in inspect.signature(DatabaseFailoverManager.get_connection).parameters,
        "failover_wait": "failover_wait" in fields,
        "max_replica_lag_seconds": "max_replica_lag_seconds" in fields,
    }


def noodle_config(args, **kw):
    from noodlecore.database.failover_manager import FailoverConfig
    feats = noodle_features()
    base = dict(health_check_interval=args.hc_interval, health_check_timeout=1.0, failover_timeout=2.0,
                hold_down=0.0, recovery_check_interval=0.1, pool_options={"row_format": "tuple"})
    if feats["failover_wait"]:
        base["failover_wait"] = args.failover_wait
    if feats["max_replica_lag_seconds"]:
        base["max_replica_lag_seconds"] = args.lag_seconds
    base.update(kw)
    return FailoverConfig(**base)


def static_manager(cl, args):
    """The same members as fixed endpoints (no Patroni): the leader first."""
    from noodlecore.database.failover_manager import DatabaseEndpoint, DatabaseFailoverManager
    leader = cl.leader()
    members = [leader] + [m for m in cl.members if m is not leader]
    eps = [DatabaseEndpoint(id=m.name, name=m.name, priority=i + 1, is_primary=(i == 0),
                            connection_string="%s host=127.0.0.1 port=%d" % (DSN_REST, m.port))
           for i, m in enumerate(members)]
    return DatabaseFailoverManager(eps, config=noodle_config(args))


def patroni_manager(cl, args):
    from noodlecore.database.failover_manager import DatabaseFailoverManager
    return DatabaseFailoverManager.from_patroni(cl.api_urls, dsn=DSN_REST, config=noodle_config(args))


def wait_manager_ready(m, n_members, timeout=20):
    """Until the monitor has probed every endpoint and one of them is the primary."""
    def ready():
        eps = m.get_status()["endpoints"].values()
        return (sum(1 for e in eps if e["role"] in ("primary", "standby") and e["is_available"]) == n_members
                and any(e["role"] == "primary" for e in eps))
    wait_until(ready, timeout, "the manager to probe every member")


class NoodleClient:
    name = "noodlecore"

    def __init__(self, cl, args):
        self.feats = noodle_features()
        if not self.feats["from_patroni"]:
            raise NotAvailable("DatabaseFailoverManager.from_patroni is not available in this build")
        self.timeout = args.request_timeout
        self.read_target = "prefer-standby" if self.feats["target"] else None
        self.m = patroni_manager(cl, args)
        self.m.start_monitoring()
        wait_manager_ready(self.m, len(cl.members))

    def write(self, run, seq):
        with self.m.get_connection(timeout=self.timeout) as c:
            rows = c.execute_query(WRITE_Q, (run, seq))
        return int(rows[0][0])

    def read(self, run):
        kw = {"target": self.read_target} if self.read_target else {}
        with self.m.get_connection(timeout=self.timeout, **kw) as c:
            rows = c.execute_query(READ_Q, (run,))
        return int(rows[0][0]), int(rows[0][1])

    def close(self):
        self.m.shutdown()


class PsycopgClient:
    """psycopg_pool: one pool for writes, one for reads."""

    def __init__(self, name, write_conninfo, read_conninfo, args):
        from psycopg_pool import ConnectionPool
        self.name = name
        kw = dict(min_size=2, max_size=2, kwargs={"autocommit": True}, check=ConnectionPool.check_connection,
                  timeout=args.request_timeout, open=True)
        self.wp = ConnectionPool(write_conninfo, name=name + "-w", **kw)
        self.rp = ConnectionPool(read_conninfo, name=name + "-r", **kw)
        self.wp.wait(20)
        self.rp.wait(20)

    def write(self, run, seq):
        with self.wp.connection() as c:
            return int(c.execute(WRITE_Q, (run, seq)).fetchone()[0])

    def read(self, run):
        with self.rp.connection() as c:
            r = c.execute(READ_Q, (run,)).fetchone()
        return int(r[0]), int(r[1])

    def close(self):
        self.wp.close()
        self.rp.close()


def libpq_version():
    import psycopg
    return psycopg.pq.version()


def multihost_client(cl, args):
    hosts = ",".join("127.0.0.1" for _ in cl.members)
    ports = ",".join(str(m.port) for m in cl.members)
    base = "host=%s port=%s %s" % (hosts, ports, DSN_REST)
    read = base + " target_session_attrs=prefer-standby"
    if libpq_version() >= 160000:
        read += " load_balance_hosts=random"
    return PsycopgClient("psycopg_pool (multi-host DSN)", base + " target_session_attrs=read-write", read, args)


def haproxy_client(hap, args):
    base = "host=127.0.0.1 %s port=" % DSN_REST
    return PsycopgClient("psycopg_pool (HAProxy)", base + str(hap.primary_port), base + str(hap.replica_port),
                         args)


class NotAvailable(Exception):
    """A part of noodlecore that this build does not have: said in the report, not faked."""


# ---------------------------------------------------------------------------
# the steady client
# ---------------------------------------------------------------------------

class SteadyClient(threading.Thread):
    """Alternates a write (seq 1, 2, ...) and a read of run `run`, with `interval`
    seconds of pause after each request.  Logs (kind, t_start, t_end, port or None,
    seq written or seq seen, error or None), monotonic times."""

    def __init__(self, impl, run, interval):
        super().__init__(name="steady-" + run, daemon=True)
        self.impl = impl
        self.run_id = run
        self.interval = interval
        self.log = []
        self.stopping = threading.Event()

    def run(self):
        seq = 0
        i = 0
        while not self.stopping.is_set():
            i += 1
            t0 = time.monotonic()
            if i % 2:
                seq += 1
                try:
                    port = self.impl.write(self.run_id, seq)
                    self.log.append(("w", t0, time.monotonic(), port, seq, None))
                except Exception as e:      # counted, never fatal
                    self.log.append(("w", t0, time.monotonic(), None, seq, short_error(e)))
            else:
                try:
                    seen, port = self.impl.read(self.run_id)
                    self.log.append(("r", t0, time.monotonic(), port, seen, None))
                except Exception as e:
                    self.log.append(("r", t0, time.monotonic(), None, None, short_error(e)))
            time.sleep(self.interval)

    def stop(self):
        self.stopping.set()
        self.join(60)

    def ok_count(self, after=0.0, kind=None):
        return sum(1 for r in list(self.log) if r[5] is None and r[1] > after and (kind is None or r[0] == kind))
