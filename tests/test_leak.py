"""Fault matrix: a leaked connection (borrowed, never returned).

`leak_timeout` (HikariCP's leakDetectionThreshold): the pool's maintenance
thread finds a borrow held longer than the threshold and counts it
(`PoolStats.leaked`); the pool's next borrow or `get_stats()` warns with
`ConnectionLeakWarning` carrying the stack of the code that borrowed it.
Each borrow is reported once.  0 (the default) turns it off.
"""

import time
import warnings

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from figures import record_figure
from helpers import wait_for
from noodlecore import _native
from noodlecore.database import ConfigurationError, ConnectionLeakWarning, DatabaseConnectionPool
from noodlecore.database.metrics import get_metrics, register_prometheus

LEAK = 0.3


def borrow_and_keep(pool):
    """The borrower the warning must name."""
    conn = pool.acquire(timeout=5)
    return conn, time.monotonic()


def leaks_seen(pool, caught):
    """Call get_stats() (which reports found leaks) until the warning came."""
    pool.get_stats()
    return [w for w in caught if issubclass(w.category, ConnectionLeakWarning)]


def test_leak_timeout_is_off_by_default_and_checked():
    assert _native.POOL_DEFAULTS["leak_timeout"] == 0
    assert issubclass(ConnectionLeakWarning, RuntimeWarning)
    with pytest.raises(ConfigurationError) as ei:
        DatabaseConnectionPool("sqlite:///:memory:", leak_timeout=-1)
    assert ei.value.error_code == 2013 and "leak_timeout" in str(ei.value)


def test_a_connection_held_past_leak_timeout_is_warned_with_its_borrowers_stack(make_pool):
    pool = make_pool(max_connections=3, timeout=5, leak_timeout=LEAK)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conn, borrowed_at = borrow_and_keep(pool)
        found = wait_for(lambda: leaks_seen(pool, caught), timeout=10, what="a leak warning")
        warned_after = time.monotonic() - borrowed_at
    assert len(found) == 1
    text = str(found[0].message)
    assert "borrow_and_keep" in text and "test_leak.py" in text, text
    assert "leak_timeout 0.3 s" in text and "password" not in text
    assert warned_after >= LEAK
    st = pool.get_stats()
    assert st.leaked == 1
    # ... and in the metrics, plain and Prometheus (a leak alert needs the counter)
    assert get_metrics(pool)["leaked"] == 1
    reg = CollectorRegistry()
    register_prometheus(pool, registry=reg, name="leaky")
    assert 'noodlecore_pool_connections_leaked_total{endpoint="",name="leaky"} 1.0' in \
        generate_latest(reg).decode()
    assert conn.execute_query("SELECT 1 AS one") == [{"one": 1}]   # still the borrower's
    conn.release()
    record_figure("leaked connection", "warned %.2f s after the borrow (leak_timeout %.1f s), stack names "
                  "the borrower, stats.leaked=%d" % (warned_after, LEAK, st.leaked))


def test_each_borrow_is_reported_once_and_a_returned_one_never(make_pool):
    pool = make_pool(max_connections=3, timeout=5, leak_timeout=LEAK)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pool.get_connection() as c:          # returned in time: never reported
            c.execute_query("SELECT 1")
        first, _ = borrow_and_keep(pool)
        wait_for(lambda: leaks_seen(pool, caught), timeout=10, what="the first leak")
        # A second borrow held past the threshold is the next report; the first one,
        # still held all along, is not reported again.
        second, _ = borrow_and_keep(pool)
        wait_for(lambda: len(leaks_seen(pool, caught)) >= 2, timeout=10, what="the second leak")
        assert pool.get_stats().leaked == 2
        assert len(leaks_seen(pool, caught)) == 2
        first.release()
        second.release()
        # The slot lent again is a new borrow: it is reported on its own.
        third, _ = borrow_and_keep(pool)
        wait_for(lambda: len(leaks_seen(pool, caught)) >= 3, timeout=10, what="the third leak")
        third.release()
    assert pool.get_stats().leaked == 3


def test_the_next_borrow_warns(make_pool):
    """Without get_stats(), the pool's next borrow reports the leak (on the borrowing thread)."""
    pool = make_pool(max_connections=2, timeout=5, leak_timeout=LEAK)
    held, _ = borrow_and_keep(pool)
    wait_for(pool._leaks_pending, timeout=10, what="the leak to be found")
    with pytest.warns(ConnectionLeakWarning, match="borrow_and_keep"):
        with pool.get_connection() as c:
            c.execute_query("SELECT 1")
    assert not pool._leaks_pending()
    held.release()
    assert pool.get_stats().leaked == 1


def test_a_failover_manager_borrow_warns_too(pg, app):
    """Endpoint pools of a failover manager take leak_timeout from pool_options; the manager's
    next borrow reports what they found."""
    from helpers import cfg, ep
    from noodlecore.database import DatabaseFailoverManager
    config = cfg()
    config.pool_options["leak_timeout"] = LEAK
    with DatabaseFailoverManager([ep("a", pg, 1, primary=True)], config=config) as m:
        cm, _conn = keep_through_manager(m)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")

                def warned():
                    with m.get_connection(timeout=5) as c:
                        c.execute_query("SELECT 1")
                    return [w for w in caught if issubclass(w.category, ConnectionLeakWarning)]

                found = wait_for(warned, timeout=10, what="the manager's borrow to warn")
            assert "keep_through_manager" in str(found[0].message)
        finally:
            cm.__exit__(None, None, None)


def keep_through_manager(m):
    cm = m.get_connection(timeout=5)
    return cm, cm.__enter__()
