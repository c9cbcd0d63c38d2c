"""Each table exists once, in the C core: the Python names are the native
module's values (codes, classes, what a failure means, enums, defaults),
and the README's defaults table says what the core says."""

import dataclasses
import pathlib
import re

import pytest

from noodlecore import _native
from noodlecore.database import errors
from noodlecore.database.config import POOL_OPTIONS
from noodlecore.database.database_manager import _retry
from noodlecore.database.failover_manager import FailoverConfig, FailoverMode, FailoverPolicy, FailoverState

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---- error codes and classes ----------------------------------------------

def test_error_codes_are_the_cores_table():
    table = {code: text for code, text, _cls, _op, _failed in _native.ERROR_TABLE}
    assert errors.ERROR_CODES == table
    assert [row[0] for row in _native.ERROR_TABLE] == sorted(table), "one row per code, in order"
    # the contract's codes, and this implementation's, all there
    for code in [*range(2001, 2007), *range(2008, 2023), 2099, *range(3001, 3040), *range(4010, 4017)]:
        assert code in table, code


def test_each_code_class_and_default_code_is_the_cores():
    for name, code in _native.ERROR_CLASSES.items():
        cls = getattr(errors, name)
        assert issubclass(cls, errors.Error) and cls.default_code == code, name
        assert cls(name).error_code == code
    for code, _text, cls_name, _op, _failed in _native.ERROR_TABLE:
        if cls_name is not None:
            assert errors.class_for(code) is getattr(errors, cls_name), code
            assert type(errors._native_error(code, 0, None, "x")) is getattr(errors, cls_name), code


@pytest.mark.parametrize("sqlstate,name", [
    ("23505", "IntegrityError"), ("42601", "ProgrammingError"), ("22012", "DataError"),
    ("08006", "OperationalError"), ("0A000", "NotSupportedError"), ("XX000", "InternalError"),
    # class 25 was OperationalError in C and InternalError in Python: the one
    # table says InternalError (as psycopg does)
    ("25006", "InternalError"), ("25P02", "InternalError"),
    ("P0001", "OperationalError"),          # a class the table does not name
])
def test_sqlstate_classes_come_from_the_core(sqlstate, name):
    assert _native.error_class(2005, 0, sqlstate) == name
    assert errors.class_for(2005, 0, sqlstate) is getattr(errors, name)


@pytest.mark.parametrize("code,sqlstate,failure,not_applied", [
    (2004, None, True, False), (2008, None, True, False), (2009, None, True, False), (2010, None, True, False),
    (2011, None, True, False), (4015, None, True, False), (2005, "08006", True, False),
    (2005, "57P01", True, False), (2005, "57P02", True, False), (2005, "57P03", True, False),
    (2005, "25006", True, True), (2005, "23505", False, False), (2012, "57014", False, False),
    (2002, None, False, False), (2003, None, False, False), (2013, None, False, False),
])
def test_what_a_failure_means_is_the_cores(code, sqlstate, failure, not_applied):
    assert _native.error_facts(code, sqlstate) == (failure, not_applied)
    exc = errors.class_for(code, 0, sqlstate)("x", code, sqlstate)
    assert (exc.connection_failure, exc.not_applied) == (failure, not_applied)
    native = errors._native_error(code, 0, sqlstate, "x")
    assert (native.connection_failure, native.not_applied) == (failure, not_applied)


def test_manager_operation_codes_come_from_the_table():
    ops = errors.operation_codes()
    assert _retry.OP_CODES == ops
    assert ops["query"] == (3003, 3005) and ops["insert"] == (3010, 3011) and ops["connect"] == (3001, 3001)
    for op, (no_conn, failed) in ops.items():
        if no_conn != failed:
            assert errors.ERROR_CODES[no_conn].endswith("no connection") and "failed" in errors.ERROR_CODES[failed]


# ---- enums ------------------------------------------------------------------

def test_failover_enums_are_the_cores_names():
    assert tuple(m.value for m in FailoverMode) == _native.FAILOVER_MODES
    assert tuple(m.value for m in FailoverPolicy) == _native.FAILOVER_POLICIES
    assert tuple(m.value for m in FailoverState) == _native.FAILOVER_STATES
    # the API contract's members
    assert FailoverMode.MANUAL.value == "manual" and FailoverMode.SEMI_AUTOMATIC.value == "semi_automatic"
    assert FailoverPolicy.COMBINED.value == "combined" and FailoverPolicy.FAILURE_COUNT.value == "failure_count"
    assert [m.name for m in FailoverState][:5] == ["PRIMARY", "FAILING_OVER", "SECONDARY", "FAILING_BACK",
                                                   "RECOVERING"]
    assert _native.EVENT_KINDS == ("failover", "failback", "split_brain", "no_target", "resumed")
    assert _native.ROLES == ("unknown", "primary", "standby")


# ---- defaults -----------------------------------------------------------------

def test_pool_option_defaults_are_the_cores():
    assert {name: opt.default for name, opt in POOL_OPTIONS.items()} == _native.POOL_DEFAULTS


def test_failover_config_defaults_are_the_cores():
    cfg = FailoverConfig()
    for name, value in _native.FAILOVER_DEFAULTS.items():
        got = getattr(cfg, name)
        assert (got.value if isinstance(got, (FailoverMode, FailoverPolicy)) else got) == value, name
    assert cfg.pool_max_connections == _native.POOL_DEFAULTS["max_connections"]
    assert cfg.pool_timeout == _native.POOL_DEFAULTS["timeout"]
    # the contract's values (api-contract.md)
    assert (cfg.max_failure_count, cfg.failure_timeout, cfg.health_check_interval, cfg.failover_timeout,
            cfg.recovery_check_interval, cfg.max_recovery_attempts) == (3, 30, 10, 60, 30, 5)
    fields = {f.name for f in dataclasses.fields(FailoverConfig)}
    assert set(_native.FAILOVER_DEFAULTS) <= fields


def test_the_readme_options_table_says_the_core_defaults():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", readme, re.M)
    shown = {name: text.strip() for name, text in rows if name in POOL_OPTIONS}
    assert set(shown) == set(POOL_OPTIONS), "every pool option has a row"
    for name, text in shown.items():
        default = _native.POOL_DEFAULTS[name]
        if name == "busy_timeout":
            assert default is None and text == "`timeout`"
        elif default is None or isinstance(default, (bool, str)):
            assert text.strip('"`') == str(default), name
        else:
            assert float(text) == default, name
