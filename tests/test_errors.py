"""The error table and classes: PEP 249 hierarchy, codes, SQLSTATE mapping."""

import builtins

import noodlecore.database.errors as E


def test_codes_are_four_digits_and_contract_codes_present():
    for code in E.ERROR_CODES:
        assert 1000 <= code <= 9999
    for code in list(range(2001, 2007)) + list(range(2008, 2012)) + list(range(3001, 3039)) + \
            list(range(4010, 4015)):
        assert code in E.ERROR_CODES, code
    assert E.ERROR_CODES[2002] == "pool is shut down"
    assert E.ERROR_CODES[2003] == "no connection available within the timeout"


def test_no_class_shadows_a_builtin():
    for name in E.__all__:
        assert not hasattr(builtins, name), name


def test_hierarchy():
    assert issubclass(E.InterfaceError, E.Error)
    assert issubclass(E.DatabaseError, E.Error)
    for cls in (E.DataError, E.OperationalError, E.IntegrityError, E.InternalError,
                E.ProgrammingError, E.NotSupportedError):
        assert issubclass(cls, E.DatabaseError)
    assert issubclass(E.PoolTimeoutError, E.ConnectionPoolError)
    assert issubclass(E.PoolClosedError, E.ConnectionPoolError)
    assert issubclass(E.QueryTimeoutError, E.OperationalError)
    assert issubclass(E.ConfigurationError, E.Error)


def test_every_class_has_its_code():
    assert E.PoolTimeoutError("x").error_code == 2003
    assert E.PoolClosedError("x").error_code == 2002
    assert E.QueryTimeoutError("x").error_code == 2012
    assert E.ConfigurationError("x").error_code == 2013
    e = E.Error()
    assert e.error_code == 2001 and "pool error" in str(e)


def test_sqlstate_classes():
    cases = {"23505": E.IntegrityError, "42601": E.ProgrammingError, "42P01": E.ProgrammingError,
             "22012": E.DataError, "08006": E.OperationalError, "57P01": E.OperationalError,
             "0A000": E.NotSupportedError, "40001": E.OperationalError, "XX000": E.InternalError}
    for state, cls in cases.items():
        exc = E._native_error(2005, 0, state, "server said no")
        assert type(exc) is cls, state
        assert exc.sqlstate == state and exc.server_message == "server said no"
        assert exc.error_code == 2005


def test_pickle_roundtrip():
    import pickle
    e = E._native_error(2005, 0, "23505", "dup")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is E.IntegrityError and e2.sqlstate == "23505" and e2.error_code == 2005
