"""Edges of the binding found by a review of the restructured C code: each
test failed (a crash, an UnicodeDecodeError, a SystemError) before its fix."""

import pytest

from noodlecore import _native
from noodlecore.database import DatabaseConnectionPool, ProgrammingError, errors


def test_the_failover_monitor_keeps_its_own_list_of_pools():
    # It used to keep the caller's list: emptying it made lend() read past
    # its end (a segfault), replacing an item lent from the wrong pool.
    pool = DatabaseConnectionPool("sqlite:///:memory:", max_connections=1)
    pools = [pool]
    fm = _native.FailoverMonitor(pools, [1], 0, {})
    try:
        pools.clear()
        conn = fm.lend(1.0)
        assert conn.execute_query("SELECT 1 AS one") == [{"one": 1}]
        conn.release()
    finally:
        fm.close()
        pool.shutdown()


def test_a_pool_belongs_to_one_failover_monitor():
    pool = DatabaseConnectionPool("sqlite:///:memory:", max_connections=1)
    fm = _native.FailoverMonitor([pool], [1], 0, {})
    try:
        with pytest.raises(errors.ConfigurationError) as ei:
            _native.FailoverMonitor([pool], [1], 0, {})
        assert ei.value.error_code == 2013 and "already has a route" in str(ei.value)
    finally:
        fm.close()
        pool.shutdown()


def test_long_non_ascii_names_in_messages_are_cut_on_a_character(tmp_path):
    name = "a" + "я" * 100
    with DatabaseConnectionPool(f"sqlite:///{tmp_path}/x.db") as pool:
        with pool.get_connection() as conn:
            with pytest.raises(ProgrammingError) as ei:
                conn.execute_query(f"SELECT %({name})s", {name: object()})
    assert ei.value.error_code == 2015 and "я" in str(ei.value)
    # a DSN whose shown form (host:port/db) is cut at its limit
    pool = DatabaseConnectionPool("postgresql://127.0.0.1:1/dd" + "я" * 130, connect_timeout=1, retry_attempts=1)
    try:
        assert pool.target.startswith("127.0.0.1:1/dd") and pool.target.endswith("я")
    finally:
        pool.shutdown()


def test_execute_many_with_a_huge_count_from_a_python_backend():
    class Backend:
        def execute_query(self, sql, params=None):
            return 2 ** 70 if params else [{"?column?": 1}]

        def close(self):
            pass

    with DatabaseConnectionPool(Backend, max_connections=1) as pool:
        with pool.get_connection() as conn:
            # not a SystemError: the count past 64 bits is not added up
            assert conn.execute_many("UPDATE t SET x = %s", [(1,), (2,)]) == 0


def test_make_error_with_a_sent_flag_that_cannot_be_read():
    class Bad:
        def __bool__(self):
            raise ValueError("no truth")

    with pytest.raises(ValueError):
        _native.make_error(2004, 0, None, "lost", Bad())
    e = _native.make_error(2004, 0, None, "lost", False)
    assert e.statement_sent is False and e.not_applied is True


def test_a_backends_own_unknown_verdict_does_not_hide_a_connection_error():
    class Unsure(ConnectionResetError):
        connection_failure = None    # "I do not know": the class (OSError) decides

    class Backend:
        def execute_query(self, sql, params=None):
            if params == {}:
                return [{"?column?": 1}]
            raise Unsure("socket closed")

        def close(self):
            pass

    with DatabaseConnectionPool(Backend, max_connections=1) as pool:
        with pool.get_connection() as conn:
            with pytest.raises(Unsure) as ei:
                conn.execute_query("SELECT 2")
    assert ei.value.connection_failure is True


def test_the_binding_option_reader_names_the_bad_option():
    # DatabaseConnectionPool checks options first; the binding's own reader
    # (one policy for every option table) still refuses, naming the option.
    with pytest.raises(errors.ConfigurationError) as ei:
        _native.Pool("sqlite", "sqlite:///:memory:", {"max_connections": "many"})
    assert ei.value.error_code == 2013 and "pool option 'max_connections' must be an integer" in str(ei.value)
    pool = DatabaseConnectionPool("sqlite:///:memory:", max_connections=1)
    try:
        for bad in ({"mode": "sometimes"}, {"hold_down": "soon"}, {"auto_recovery": 1}):
            with pytest.raises(errors.ConfigurationError) as ei:
                _native.FailoverMonitor([pool], [1], 0, bad)
            assert ei.value.error_code == 2013 and f"failover option '{next(iter(bad))}'" in str(ei.value)
    finally:
        pool.shutdown()


def test_one_pool_twice_in_a_failover_monitor_is_refused():
    pool = DatabaseConnectionPool("sqlite:///:memory:", max_connections=1)
    try:
        with pytest.raises(errors.ConfigurationError) as ei:
            _native.FailoverMonitor([pool, pool], [1, 2], 0, {})
        assert ei.value.error_code == 2013 and "share a pool" in str(ei.value)
    finally:
        pool.shutdown()


def test_probe_of_a_pool(tmp_path):
    pool = DatabaseConnectionPool(f"sqlite:///{tmp_path}/p.db", max_connections=1)
    r = pool._probe(2.0)
    assert r["ok"] is True and r["role"] == "unknown" and r["error"] is None and r["error_code"] is None
    assert r["connect_time"] > 0 and r["query_time"] >= 0
    with pytest.raises(errors.ConfigurationError) as ei:
        pool._probe(0)
    assert ei.value.error_code == 2013
    pool.shutdown()
    with pytest.raises(errors.PoolClosedError) as ei:
        pool._probe(2.0)
    assert ei.value.error_code == 2002
