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
