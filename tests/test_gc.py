"""Garbage collection (issue 8, point 9): every binding type that holds Python
references takes part in the cycle collector, and a collected pool stops its
maintenance thread and closes its connections.

The scenarios are the ones a real program builds without meaning to: an
application object whose pool's backend factory is one of its own methods,
a pool remembering the connection (or lease, or transaction) it lent, a
backend that points back at its application, a failover monitor whose pools
point back at it.  Each test checks the objects are really gone (weak
references), the backends were closed, and no native thread was left behind
(counted in /proc/self/task).
"""

import gc
import os
import threading
import weakref

from helpers import wait_for
from noodlecore import _native
from noodlecore.database import (
    DatabaseConnectionPool, DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig,
)

import pytest


def native_threads():
    return len(os.listdir("/proc/self/task"))


class Backend:
    """The smallest Python backend; counts opens and closes."""
    opened = 0
    closed = 0

    def __init__(self, owner=None):
        Backend.opened += 1
        self.owner = owner          # a backend that refers back to its application

    def execute_query(self, sql, params=None):
        return [{"one": 1}] if sql.lstrip().upper().startswith("SELECT") else 1

    def close(self):
        Backend.closed += 1


@pytest.fixture
def counted():
    """Backend counters reset, no stray garbage, and the thread count to come
    back to (other tests' threads may still be ending: collect first)."""
    gc.collect()
    Backend.opened = Backend.closed = 0
    yield native_threads()
    gc.collect()


def all_gone(refs):
    gc.collect()
    return all(r() is None for r in refs)


class App:
    """An application object whose pool's factory is its own bound method:
    App -> pool -> app.make_backend -> App."""

    def __init__(self, backend_points_back=False):
        self.back = backend_points_back
        self.pool = DatabaseConnectionPool(self.make_backend, max_connections=2, min_connections=1,
                                           validate_connections=True, validation_interval=30)
        with self.pool.get_connection() as conn:
            assert conn.execute_query("SELECT 1") == [{"one": 1}]

    def make_backend(self):
        return Backend(self if self.back else None)


def test_twenty_dropped_apps_are_collected_with_their_threads(counted):
    """The issue's scenario: 20 dropped apps left 21 threads and 20 live pools."""
    base = counted
    pools = []
    for _ in range(20):
        app = App()
        pools.append(weakref.ref(app.pool))
        del app
    assert native_threads() >= base + 20, "each pool runs its maintenance thread"
    gc.collect()
    assert [r for r in pools if r() is not None] == [], "every pool was collected"
    # Dealloc stops and joins each janitor (bounded join): count until they end.
    wait_for(lambda: native_threads() <= base, timeout=20, what="the janitor threads to end")
    assert Backend.closed == Backend.opened > 0, "a collected pool closes its connections"


def test_backend_pointing_back_at_its_app_is_collected(counted):
    """App -> pool -> backend object -> App: the pool visits its backends."""
    base = counted
    app = App(backend_points_back=True)
    ref = weakref.ref(app)
    pool_ref = weakref.ref(app.pool)
    del app
    assert all_gone([ref, pool_ref])
    wait_for(lambda: native_threads() <= base, timeout=20, what="the janitor thread to end")
    assert Backend.closed == Backend.opened > 0


class KeepingPool(DatabaseConnectionPool):
    """A pool subclass (it has a __dict__) used to hold what it lent."""


def make_keeping_pool():
    return KeepingPool(Backend, max_connections=2)


def test_pool_holding_its_borrowed_connection_is_collected(counted):
    pool = make_keeping_pool()
    pool.kept = pool.acquire()          # pool -> conn -> pool
    pool.kept.execute_query("SELECT 1")
    ref = weakref.ref(pool)
    del pool
    assert all_gone([ref])
    assert Backend.closed == Backend.opened == 1


def test_pool_holding_a_lease_is_collected(counted):
    pool = make_keeping_pool()
    pool.idle_lease = pool.get_connection()      # never entered
    pool.busy_lease = pool.get_connection()      # entered: holds a connection
    conn = pool.busy_lease.__enter__()
    conn.execute_query("SELECT 1")
    pool.conn_of_lease = conn
    del conn
    ref = weakref.ref(pool)
    del pool
    assert all_gone([ref])
    assert Backend.closed == Backend.opened == 1


def test_pool_holding_a_transaction_is_collected(counted):
    pool = make_keeping_pool()
    conn = pool.acquire()
    pool.tx = conn.transaction()        # pool -> tx -> conn -> pool
    del conn
    ref = weakref.ref(pool)
    del pool
    assert all_gone([ref])
    assert Backend.closed == Backend.opened == 1


class SelfFactoryPool(DatabaseConnectionPool):
    """The only link back is the factory: pool -> self.make -> pool (a bound
    method cannot be cleared; the pool's clear must drop it)."""

    def __init__(self):
        super().__init__(self.make, max_connections=1, min_connections=1,
                         validate_connections=True, validation_interval=30)

    def make(self):
        return Backend()


def test_pool_whose_factory_is_its_own_method_is_collected(counted):
    base = counted
    pool = SelfFactoryPool()
    with pool.get_connection() as conn:
        conn.execute_query("SELECT 1")
    ref = weakref.ref(pool)
    del pool, conn
    assert all_gone([ref])
    wait_for(lambda: native_threads() <= base, timeout=20, what="the janitor thread to end")
    assert Backend.closed == Backend.opened == 1


def test_failover_monitor_in_a_cycle_is_collected(counted):
    """pool -> FailoverMonitor -> its pools -> pool: the monitor's threads stop
    (they run the Python backend's health checks) and the pools close."""
    base = counted
    pools = [KeepingPool(Backend, max_connections=1), KeepingPool(Backend, max_connections=1)]
    mon = _native.FailoverMonitor(pools, [1, 2], 0, {"health_check_interval": 0.05,
                                                     "health_check_timeout": 1.0})
    mon.start()
    for p in pools:
        p.monitor = mon
    wait_for(lambda: mon.status()["endpoints"][1]["probed"], timeout=20, what="both endpoints probed")
    conn = mon.lend(5.0)
    assert conn.execute_query("SELECT 1") == [{"one": 1}]
    conn.release()
    refs = [weakref.ref(p) for p in pools]     # (FailoverMonitor has no weak references)
    del pools, mon, p, conn
    assert all_gone(refs)
    wait_for(lambda: native_threads() <= base, timeout=20, what="the monitor threads to end")
    assert Backend.closed == Backend.opened > 0


def test_collection_on_the_janitor_thread_does_not_deadlock(counted):
    """A Python factory runs on the pool's own maintenance thread, with the
    GIL: a collection started there may free that very pool.  The janitor
    must not join itself, and the pool must still end up closed."""
    base = counted
    go = threading.Event()
    collected = threading.Event()
    seen = {}

    def factory():
        b = Backend()
        if threading.current_thread() is not threading.main_thread() and not collected.is_set():
            assert go.wait(20)
            gc.collect()            # frees the pool below, on this thread
            seen["freed"] = seen["ref"]() is None
            collected.set()
        return b

    pool = KeepingPool(factory, max_connections=2, min_connections=1,
                       validate_connections=True, validation_interval=30)
    pool.me = pool                      # only a cycle keeps it
    seen["ref"] = weakref.ref(pool)
    del pool
    go.set()
    assert collected.wait(20), "the janitor's factory ran its collection"
    assert seen["freed"], "the collection on the janitor thread freed its own pool"
    wait_for(lambda: native_threads() <= base, timeout=20, what="the janitor thread to end")
    wait_for(lambda: Backend.closed == Backend.opened, timeout=20, what="the janitor's connection closed")


def test_collection_on_a_monitor_probe_thread_does_not_deadlock(counted):
    """The same on the failover monitor's probe thread: a Python endpoint's
    health check is user code, with the GIL; a collection there may free the
    monitor whose thread it is."""
    base = counted
    go = threading.Event()
    done = threading.Event()
    seen = {}

    class ProbeCollects(Backend):
        def execute_query(self, sql, params=None):
            on_native = threading.current_thread() is not threading.main_thread()
            if on_native and go.is_set() and not done.is_set():
                seen["found"] = gc.collect()    # frees the monitor and its pools, on this thread
                seen["freed"] = all(r() is None for r in seen["refs"])
                done.set()
            return super().execute_query(sql, params)

    pools = [KeepingPool(ProbeCollects, max_connections=1), KeepingPool(ProbeCollects, max_connections=1)]
    mon = _native.FailoverMonitor(pools, [1, 2], 0, {"health_check_interval": 0.05,
                                                     "health_check_timeout": 2.0})
    mon.start()
    for p in pools:
        p.monitor = mon
    wait_for(lambda: mon.status()["endpoints"][1]["probed"], timeout=20, what="both endpoints probed")
    seen["refs"] = [weakref.ref(p) for p in pools]
    del pools, mon, p
    go.set()
    assert done.wait(20), "a probe ran its collection"
    assert seen["freed"], "the collection on the probe thread freed the monitor and its pools"
    wait_for(lambda: native_threads() <= base, timeout=20, what="the monitor threads to end")
    wait_for(lambda: Backend.closed == Backend.opened, timeout=20, what="every backend closed")


def test_dropped_failover_manager_stops_its_threads(counted, tmp_path):
    """A manager dropped without shutdown(): its event thread held it alive
    for ever (and with it the monitor threads and the pools).  It now holds
    only a weak reference: the manager is freed, the thread ends at its next
    wake-up, and the monitor's threads and the pools' go with it."""
    base = counted
    eps = [DatabaseEndpoint(id="a", name="a", connection_string=f"sqlite:///{tmp_path}/a.db", is_primary=True),
           DatabaseEndpoint(id="b", name="b", connection_string=f"sqlite:///{tmp_path}/b.db", priority=2)]
    m = DatabaseFailoverManager(eps, config=FailoverConfig(health_check_interval=0.05))
    m.start_monitoring()
    with m.get_connection() as conn:
        assert conn.execute_query("SELECT 1 AS one") == [{"one": 1}]
    pool_refs = [weakref.ref(m.get_pool("a")), weakref.ref(m.get_pool("b"))]
    ref = weakref.ref(m)
    del m, conn
    # (the event thread holds the manager for a few bytecodes at each wake-up:
    # a collection that lands there finds it alive; the next one does not)
    wait_for(lambda: all_gone([ref]), timeout=20, what="nothing but the caller to keep the manager")
    wait_for(lambda: all_gone(pool_refs), timeout=20, what="the pools to go with the monitor")
    wait_for(lambda: native_threads() <= base, timeout=20, what="the event and monitor threads to end")


class FailoverApp:
    """App -> manager -> monitor -> pools -> factory -> app.make_backend -> App."""

    def __init__(self):
        eps = [DatabaseEndpoint(id="a", name="a", connection_string="mock://a", is_primary=True),
               DatabaseEndpoint(id="b", name="b", connection_string="mock://b", priority=2)]
        self.manager = DatabaseFailoverManager(eps, backend_factory=self.make_backend,
                                               config=FailoverConfig(health_check_interval=0.05))
        self.manager.start_monitoring()
        with self.manager.get_connection() as conn:
            assert conn.execute_query("SELECT 1") == [{"one": 1}]

    def make_backend(self, connection_string):
        return Backend(self)


def test_dropped_failover_app_in_a_cycle_is_collected(counted):
    """The manager-level form of the twenty apps: the event thread used to
    hold the manager, and would still hold the monitor (and so the factory and
    the app) if it waited on the monitor itself; it waits on a waiter that
    keeps only the core route."""
    base = counted
    refs = []
    for _ in range(3):
        app = FailoverApp()
        refs += [weakref.ref(app), weakref.ref(app.manager), weakref.ref(app.manager.get_pool("a"))]
        del app
    wait_for(lambda: all_gone(refs), timeout=20, what="apps, managers and pools collected")
    wait_for(lambda: native_threads() <= base, timeout=20, what="every event, monitor and pool thread to end")
    wait_for(lambda: Backend.closed == Backend.opened, timeout=20, what="every backend closed")


def test_collection_inside_a_statement_returns_a_lent_connection_of_the_same_pool(counted):
    """Guard: a collection run by a Python backend's statement (GIL held, a
    borrow in progress on this thread) frees a garbage cycle holding another
    connection of the same pool: it goes back without deadlocking."""

    class Collecting(Backend):
        def execute_query(self, sql, params=None):
            if sql == "COLLECT":
                return gc.collect()
            return super().execute_query(sql, params)

    pool = KeepingPool(Collecting, max_connections=2)
    lost = pool.acquire()
    lost.execute_query("SELECT 1")
    cycle = [lost]
    cycle.append(cycle)
    del lost, cycle
    with pool.get_connection() as conn:
        assert pool.get_stats().active_connections == 2
        assert conn.execute_query("COLLECT") >= 1
        assert pool.get_stats().active_connections == 1, "the collected borrow went back"
    assert pool.get_stats().active_connections == 0
    pool.shutdown()
    assert Backend.closed == Backend.opened == 2
