"""Small helpers shared by test files, grouped by topic under banner
comments: general ones (waiting, a child Python's environment), the
PostgreSQL pool tests' (test_pg_pool_*.py: server sessions, stats), and the
failover-on-PostgreSQL tests' (test_failover_pg_*.py: endpoints, config,
queries through a manager, its events).  Fixtures live in conftest.py."""

import os
import pathlib
import time

from noodlecore.database import DatabaseError
from noodlecore.database.failover_manager import DatabaseEndpoint, FailoverConfig


def wait_for(cond, timeout=5.0, interval=0.01, what="condition"):
    """Poll cond() until it returns something true (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def subprocess_env(**extra):
    """Environment for a child Python that must import the same noodlecore as
    this process (the installed one under tests/run.sh, the source tree in
    development), whatever its working directory."""
    import noodlecore
    env = dict(os.environ)
    pkg_parent = str(pathlib.Path(noodlecore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ===========================================================================
# PostgreSQL pool tests (test_pg_pool_*.py)
# ===========================================================================

def sessions(node, app):
    """{pid: (state, query)} of the server sessions with application_name app."""
    rows = node.sql("select pid, coalesce(state, ''), query from pg_stat_activity "
                    "where application_name = '%s'" % app)
    return {int(r[0]): (r[1], r[2]) for r in rows}


def terminate(node, pid):
    """pg_terminate_backend(pid) and wait until the session is gone from the server."""
    node.sql("select pg_terminate_backend(%d, 5000)" % pid)
    wait_for(lambda: pid not in node.backend_pids(), what="backend %d to exit" % pid)


def check_stats_consistent(st):
    assert st.total_connections == st.active_connections + st.idle_connections
    assert st.connections_opened - st.connections_closed == st.total_connections, st
    assert 0 <= st.total_connections <= st.max_connections


# ===========================================================================
# failover managers on PostgreSQL (test_failover_pg_*.py)
# ===========================================================================

BASE = dict(health_check_interval=0.1, health_check_timeout=1, failover_timeout=5, hold_down=0.5,
            recovery_check_interval=1, max_failure_count=2, pool_max_connections=4, pool_timeout=3)


def cfg(**kw):
    d = dict(BASE)
    d["pool_options"] = {"connect_timeout": 1, "retry_attempts": 1}
    d.update(kw)
    return FailoverConfig(**d)


def dsn_of(target):
    """A node's DSN, or the DSN of a TcpProxy in front of a node."""
    if hasattr(target, "dsn"):
        return target.dsn()
    return "postgresql://postgres@127.0.0.1:%d/postgres" % target.port


def ep(eid, target, priority, primary=False):
    return DatabaseEndpoint(id=eid, name=eid.upper(), connection_string=dsn_of(target),
                            priority=priority, is_primary=primary)


def two(p, s, a_target=None):
    return [ep("a", a_target or p, 1, primary=True), ep("b", s, 2)]


def port_of(m, timeout=2):
    with m.get_connection(timeout=timeout) as c:
        return c.execute_query("SELECT inet_server_port() AS port")[0]["port"]


def insert(m, table, n, timeout=2):
    """Insert row n through the manager; the port of the server that took it."""
    with m.get_connection(timeout=timeout) as c:
        rows = c.execute_query("INSERT INTO %s (n) VALUES (%%s) RETURNING inet_server_port() AS port" % table,
                               (n,))
    return rows[0]["port"]


def events(m, kind=None):
    evs = m.get_events()
    return [e for e in evs if kind is None or e.metadata["kind"] == kind]


def switches(m):
    return [e for e in m.get_events() if e.metadata["kind"] in ("failover", "failback") and e.success]


def wait_probed(m, roles, timeout=5):
    """Until every endpoint id in roles has been probed with that role."""
    def ok():
        st = m.get_status()["endpoints"]
        return all(st[k]["role"] == r and st[k]["last_health_check"] for k, r in roles.items())
    wait_for(ok, timeout, what="probes %s (status %s)" % (roles, m.get_status()["endpoints"]))


def on_endpoint(m, eid):
    return lambda: m.get_status()["current_endpoint"] == eid


def query_until_ok(m, sql, params=None, timeout=10):
    """Run sql through the manager, retrying transient errors; (result, errors seen)."""
    deadline = time.monotonic() + timeout
    errs = []
    while True:
        try:
            with m.get_connection(timeout=2) as c:
                return c.execute_query(sql, params), errs
        except DatabaseError as e:
            errs.append(e)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# DB-API (test_dbapi*.py)
# ---------------------------------------------------------------------------

def dbapi_pool(dsn):
    """The native pool noodlecore.dbapi.connect(dsn) lends from (its first, by options)."""
    from noodlecore import dbapi
    return next(p for k, p in dbapi._pools.items() if k[0] == dsn)
