"""Promises of the README that no other test held the code to, each against a
real PostgreSQL 15 server (the `pg` / `pg_factory` fixtures):

* `validation_timeout`: a health check that would hang is cut off at it;
* `max_lifetime` jitter: connections opened together do not all retire
  together, and none retires before `max_lifetime * (1 - lifetime_jitter)`;
* session settings made with `SET` stay with the connection across borrows;
* failover events are logged on `noodlecore.database.failover` with their
  structured `extra` fields.
"""

import logging
import threading
import time

from helpers import wait_for
from noodlecore.database import DatabaseConnectionPool, DatabaseError
from noodlecore.database.failover_manager import (
    DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig, FailoverMode,
)


def proxy_dsn(px, app):
    return "postgresql://postgres@127.0.0.1:%d/postgres?application_name=%s" % (px.port, app)


# ---------------------------------------------------------------------------
# validation_timeout
# ---------------------------------------------------------------------------

def test_validation_timeout_cuts_off_a_validation_that_would_hang(pg, pg_factory):
    """An idle connection whose server stops answering (a proxy that forwards
    nothing) is pinged on borrow: the ping is given up after validation_timeout,
    not the borrow's 30 s, and the borrower gets a fresh connection."""
    px = pg_factory.proxy(pg)
    vt = 0.5
    with DatabaseConnectionPool(proxy_dsn(px, "nct_validation_timeout"), max_connections=1, timeout=30,
                                validation_timeout=vt, ping_after_idle=0, connect_timeout=20,
                                retry_attempts=1, validation_interval=600) as pool:
        with pool.get_connection() as c:
            first = c.backend_pid
        px.blackhole(True)
        result = {}

        def borrow():
            try:
                with pool.get_connection() as c:
                    result["pid"] = c.backend_pid
                    result["one"] = c.execute_query("SELECT 1 AS one")
            except DatabaseError as e:  # reported by the assertions below
                result["error"] = e

        t0 = time.monotonic()
        th = threading.Thread(target=borrow)
        th.start()
        try:
            wait_for(lambda: pool.get_stats().validation_failures >= 1, timeout=15,
                     what="the hanging validation to be given up")
            cut = time.monotonic() - t0
        finally:
            px.clear()   # the replacement connection, held by the proxy, goes through
            th.join(30)
        assert not th.is_alive()
        assert "error" not in result, result
        assert result["pid"] != first and result["one"] == [{"one": 1}]
        # Not before the deadline; after it, at most the cancel's grace (0.5 s)
        # and scheduling, far below the borrow's 30 s that would apply without it.
        assert vt - 0.02 <= cut < vt + 0.5 + 2.0, "validation given up after %.3f s" % cut
        st = pool.get_stats()
        assert st.validation_failures == 1 and st.connections_replaced == 1


# ---------------------------------------------------------------------------
# max_lifetime jitter
# ---------------------------------------------------------------------------

def test_connections_opened_together_do_not_expire_together(pg):
    """16 connections opened back to back, max_lifetime 1.5 s with jitter 0.5:
    each lives between 0.75 and 1.5 s (plus a janitor round), and they retire
    spread over that range instead of in one round."""
    n, life, jitter, interval = 16, 1.5, 0.5, 0.05
    app = "nct_lifetime_jitter"
    watch = DatabaseConnectionPool(pg.dsn(application_name="nct_lifetime_watch"), max_connections=1)
    try:
        with DatabaseConnectionPool(pg.dsn(application_name=app), max_connections=n, timeout=10,
                                    max_lifetime=life, lifetime_jitter=jitter,
                                    validation_interval=interval) as pool:
            before, after, pids, held = {}, {}, [], []
            for _ in range(n):
                t = time.monotonic()
                c = pool.acquire()
                pid = c.backend_pid
                before[pid], after[pid] = t, time.monotonic()
                pids.append(pid)
                held.append(c)
            for c in held:
                c.release()
            gone = {}
            with watch.get_connection() as w:
                deadline = time.monotonic() + life + 10
                while len(gone) < n and time.monotonic() < deadline:
                    live = {r["pid"] for r in w.execute_query(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))}
                    now = time.monotonic()
                    for pid in pids:
                        if pid not in live and pid not in gone:
                            gone[pid] = now
                    time.sleep(0.005)
            assert len(gone) == n, "%d of %d connections retired" % (len(gone), n)
            # never before max_lifetime * (1 - jitter) after it was opened
            early = {pid: gone[pid] - before[pid] for pid in pids if gone[pid] - before[pid] < life * (1 - jitter)}
            assert not early, "retired before %.2f s: %s" % (life * (1 - jitter), early)
            lifetimes = sorted(gone[pid] - after[pid] for pid in pids)
            assert lifetimes[-1] < life + interval + 1.5, "retired late: %s" % lifetimes
            # Uniform over 0.75 s: 16 lifetimes within 0.2 s of each other has a
            # chance below 1e-7; without jitter they all fall within a round or two.
            assert lifetimes[-1] - lifetimes[0] > 0.2, "no jitter: lifetimes %s" % lifetimes
    finally:
        watch.shutdown(timeout=0)


# ---------------------------------------------------------------------------
# SET persistence
# ---------------------------------------------------------------------------

def test_session_settings_made_with_set_do_not_reach_the_next_borrower(pg):
    """README: "Session settings made with SET do not reach the next borrower" (issue 10): the
    return runs DISCARD ALL after a SET, on the same session (not a new connection), and a
    return that only rolled back an open transaction runs nothing more."""
    with DatabaseConnectionPool(pg.dsn(application_name="nct_set_reset"), max_connections=1,
                                timeout=5) as pool:
        def settings(c):
            return (c.execute_query("SHOW statement_timeout")[0]["statement_timeout"],
                    c.execute_query("SHOW search_path")[0]["search_path"])

        with pool.get_connection() as c:
            pid = c.backend_pid
            defaults = settings(c)
            c.execute_query("SET statement_timeout = '4321ms'")
            c.execute_query("SET search_path TO nct_nowhere, public")
            assert settings(c) == ("4321ms", "nct_nowhere, public")
        with pool.get_connection() as c:
            assert c.backend_pid == pid
            assert settings(c) == defaults
            c.begin()                                    # left open: rolled back on return
            c.execute_query("SELECT 1")
        with pool.get_connection() as c:
            assert c.backend_pid == pid
            assert settings(c) == defaults
        assert pool.get_stats().connections_opened == 1


# ---------------------------------------------------------------------------
# failover log records
# ---------------------------------------------------------------------------

FIELDS = ("event_id", "event_kind", "from_endpoint", "to_endpoint", "duration", "success", "triggered_by")


def test_failover_events_are_logged_with_structured_fields(pg_factory, caplog):
    """A failover decided by the monitor and a failback asked for by the operator
    each produce one record on noodlecore.database.failover whose extra fields are
    those of the FailoverEvent in get_events()."""
    caplog.set_level(logging.INFO, logger="noodlecore.database.failover")
    p = pg_factory.primary("plog")
    s = pg_factory.standby(p, name="slog")
    px = pg_factory.proxy(p)
    endpoints = [
        DatabaseEndpoint(id="a", name="A", connection_string=proxy_dsn(px, "nct_failover_log"), priority=1,
                         is_primary=True),
        DatabaseEndpoint(id="b", name="B", connection_string=s.dsn(), priority=2),
    ]
    conf = FailoverConfig(mode=FailoverMode.SEMI_AUTOMATIC, health_check_interval=0.1, health_check_timeout=1,
                          failover_timeout=5, hold_down=0, max_failure_count=2, require_writable=False,
                          pool_options={"connect_timeout": 1, "retry_attempts": 1})

    def records(kind):   # the successful ones: a refused trigger_recovery() logs a failed failback
        return [r for r in caplog.records if r.name == "noodlecore.database.failover"
                and getattr(r, "event_kind", None) == kind and getattr(r, "success", None)]

    def events(kind):
        return [e for e in m.get_events() if e.metadata["kind"] == kind and e.success]

    with DatabaseFailoverManager(endpoints, config=conf) as m:
        m.start_monitoring()
        wait_for(lambda: all(e["last_health_check"] for e in m.get_status()["endpoints"].values()),
                 what="first probes")
        def check(kind, level, frm, to, by):
            """The one successful record of kind: its level and fields, those of the event."""
            [rec] = wait_for(lambda: records(kind), timeout=15, what="the %s record" % kind)
            [ev] = events(kind)
            assert rec.levelno == level
            assert {f: getattr(rec, f) for f in FIELDS} == {
                "event_id": ev.event_id, "event_kind": kind, "from_endpoint": frm, "to_endpoint": to,
                "duration": ev.duration, "success": True, "triggered_by": by}
            assert isinstance(rec.duration, float) and rec.duration >= 0
            assert "%s -> %s" % (frm, to) in rec.getMessage()
            return rec

        px.reject(True)
        px.reset_all()
        first = check("failover", logging.WARNING, "a", "b", "monitor")
        px.clear()   # a answers again; SEMI_AUTOMATIC fails back only when asked
        wait_for(lambda: m.trigger_recovery(), timeout=15, interval=0.2, what="the failback")
        second = check("failback", logging.INFO, "b", "a", "operator")
        assert second.event_id != first.event_id
