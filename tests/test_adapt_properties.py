"""Property tests of the value adapters (csrc/py/adapt.c, pg_adapt.c, sqlite_adapt.c).

Every supported Python value either round-trips through the real server
(PostgreSQL: ``SELECT %s``; SQLite: ``SELECT %s``) unchanged, as the README's
type rules say, or raises ProgrammingError before anything is sent: for
PostgreSQL the connection's last statement in pg_stat_activity (seen from a
second connection) is still the marker run just before, and the connection
is idle and usable; for SQLite a row that the statement would have inserted
is not there.

Hypothesis runs derandomized (the same examples on every run, so a failure is
reproducible and the suite cannot flake), with no deadline (the machine is
shared, the sanitizer stages are slow) and bounded example counts.  The
@example lines are the values that broke the promise before it was fixed
(found by these tests), so they are tried on every run.
"""

import datetime
import decimal
import json
import math
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from noodlecore.database import DatabaseConnectionPool, DataError, ProgrammingError

settings.register_profile(
    "noodlecore-adapters", max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROFILE = settings.get_profile("noodlecore-adapters")
# Nested JSON values cost hypothesis far more to make than a scalar, and the
# refusal checks take three statements each: fewer examples there.
few = settings(PROFILE, max_examples=60)

INT4 = (-2**31, 2**31 - 1)
INT8 = (-2**63, 2**63 - 1)
EDGES = [0, 1, -1, INT4[0], INT4[1], INT4[0] - 1, INT4[1] + 1, INT8[0], INT8[1], INT8[0] - 1, INT8[1] + 1,
         2**64, -2**64, 10**40, -10**40]

# PostgreSQL's own limits, not the adapter's: UTC offsets of whole seconds
# within +-15:59:59 (others raise ProgrammingError, tested below), timestamptz
# instants in years 1..9999 (BC and later years come back as str, as the
# README says), numeric exponents within its range.
pg_offsets = st.integers(-57599, 57599).map(lambda s: datetime.timezone(datetime.timedelta(seconds=s)))
# Any str, now and then with a lone surrogate (not UTF-8: refused) or a NUL.
any_text = st.text() | st.lists(st.text(max_size=3) | st.characters(categories=["Cs"]) | st.just("\x00"),
                                max_size=6).map("".join)
# Every UTC offset Python allows: less than a day, microseconds included.
any_offsets = st.timedeltas(min_value=datetime.timedelta(hours=-24) + datetime.timedelta(microseconds=1),
                            max_value=datetime.timedelta(hours=24) - datetime.timedelta(microseconds=1)
                            ).map(datetime.timezone)
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text())
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
json_dicts = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
json_top = st.lists(json_values, max_size=4) | json_dicts


# ---- fixtures -------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_pool(pg):
    with DatabaseConnectionPool(pg.dsn(application_name="adapt-props"), max_connections=2,
                                row_format="tuple") as pool:
        yield pool


@pytest.fixture(scope="module")
def sqlite_pool():
    with DatabaseConnectionPool("sqlite:///:memory:", max_connections=1, row_format="tuple") as pool:
        with pool.get_connection() as conn:
            conn.execute_query("CREATE TABLE sent (v)")
        yield pool


def pg_roundtrip(pool, value, cast=""):
    with pool.get_connection() as conn:
        [(got,)] = conn.execute_query("SELECT %s" + cast, (value,))
    return got


def sqlite_roundtrip(pool, value):
    with pool.get_connection() as conn:
        [(got,)] = conn.execute_query("SELECT %s", (value,))
    return got


def pg_refused_before_sending(pool, value):
    """ProgrammingError, and the server never saw the statement: the last query of the
    connection (pg_stat_activity, seen from another connection) is still the marker."""
    with pool.get_connection() as conn, pool.get_connection() as observer:
        [(pid,)] = conn.execute_query("SELECT pg_backend_pid()")
        marker = "SELECT 'adapt-props marker %d'" % id(value)
        conn.execute_query(marker)
        with pytest.raises(ProgrammingError) as info:
            conn.execute_query("INSERT INTO no_such_table VALUES (%s)", (value,))
        assert info.value.error_code == 2015, info.value
        [(query, state)] = observer.execute_query(
            "SELECT query, state FROM pg_stat_activity WHERE pid = %s", (pid,))
        assert (query, state) == (marker, "idle"), "the statement reached the server: %r" % query
        assert conn.execute_query("SELECT 1") == [(1,)]


def sqlite_refused_before_sending(pool, value):
    with pool.get_connection() as conn:
        conn.execute_query("DELETE FROM sent")
        with pytest.raises(ProgrammingError) as info:
            conn.execute_query("INSERT INTO sent (v) VALUES (%s)", (value,))
        assert info.value.error_code == 2015, info.value
        assert conn.execute_query("SELECT count(*) FROM sent") == [(0,)]


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


# ---- PostgreSQL -------------------------------------------------------------------

@PROFILE
@given(st.integers() | st.sampled_from(EDGES))
def test_pg_int(pg_pool, n):
    got = pg_roundtrip(pg_pool, n)
    # int4/int8 come back as int; beyond int8 the value goes as numeric and
    # comes back as Decimal (as psycopg 3 does), equal to it.
    assert got == n
    assert type(got) is (int if INT8[0] <= n <= INT8[1] else decimal.Decimal)


@PROFILE
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_pg_float(pg_pool, x):
    got = pg_roundtrip(pg_pool, x)
    assert type(got) is float and same_float(got, x), (x, got)


@PROFILE
@given(st.decimals(allow_nan=True, allow_infinity=True).filter(
    lambda d: not d.is_finite() or -1000 < d.adjusted() < 1000))
def test_pg_decimal(pg_pool, d):
    if d.is_snan():
        pg_refused_before_sending(pg_pool, d)
        return
    got = pg_roundtrip(pg_pool, d)
    assert type(got) is decimal.Decimal
    assert (got.is_nan() and d.is_nan()) or got == d, (d, got)


@PROFILE
@given(any_text)
@example("a\x00b")
@example("\ud800")
def test_pg_str(pg_pool, s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:                 # lone surrogates: not UTF-8
        pg_refused_before_sending(pg_pool, s)
        return
    if "\x00" in s:                            # PostgreSQL text cannot hold NUL
        pg_refused_before_sending(pg_pool, s)
        return
    got = pg_roundtrip(pg_pool, s)
    assert type(got) is str and got == s


@PROFILE
@given(st.binary(), st.sampled_from([bytes, bytearray, memoryview]))
def test_pg_bytes(pg_pool, b, kind):
    got = pg_roundtrip(pg_pool, kind(b))
    assert type(got) is bytes and got == b


@few
@given(st.none() | st.booleans() | st.uuids())
def test_pg_none_bool_uuid(pg_pool, v):
    got = pg_roundtrip(pg_pool, v)
    assert type(got) is type(v) and got == v


@PROFILE
@given(st.dates() | st.times() | st.datetimes())
def test_pg_naive_temporal(pg_pool, v):
    got = pg_roundtrip(pg_pool, v)
    assert type(got) is type(v) and got == v


@PROFILE
@given(st.times(timezones=pg_offsets) | st.datetimes(
    min_value=datetime.datetime(2, 1, 1), max_value=datetime.datetime(9998, 12, 31), timezones=pg_offsets))
def test_pg_aware_temporal(pg_pool, v):
    got = pg_roundtrip(pg_pool, v)
    assert type(got) is type(v) and got.utcoffset() is not None
    if isinstance(v, datetime.datetime):
        assert got == v                        # the same instant (shown in the session's time zone)
    else:
        assert (got, got.utcoffset()) == (v, v.utcoffset())


@few
@given(st.integers(-86399, 86399).filter(lambda s: abs(s) > 57599)
       | st.integers(-57599, 57599).flatmap(lambda s: st.integers(1, 999999).map(lambda us: s + us / 1e6)),
       st.booleans())
@example(82800, True)
@example(30.000001, False)
def test_pg_offset_out_of_range_refused(pg_pool, seconds, as_datetime):
    tz = datetime.timezone(datetime.timedelta(seconds=seconds))
    v = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=tz) if as_datetime else datetime.time(7, 8, 9, tzinfo=tz)
    pg_refused_before_sending(pg_pool, v)


@few
@given(st.timedeltas())
@example(datetime.timedelta.max)
@example(datetime.timedelta.min)
@example(-datetime.timedelta(microseconds=1))
def test_pg_timedelta(pg_pool, td):
    # An interval comes back as the same timedelta: it is sent in days, seconds and
    # microseconds, which the server keeps apart (no months), and decoded from them.
    got = pg_roundtrip(pg_pool, td)
    assert type(got) is datetime.timedelta and got == td, (td, got)


@few
@given(st.integers(-178000000 * 12, 178000000 * 12), st.integers(-10**6, 10**6),
       st.integers(-10**6, 10**6), st.integers(-10**12, 10**12))
@example(12, 0, 0, 0)
@example(1, 0, 0, 0)
@example(-13, 0, 0, 0)
@example(0, 0, -1, 7200 * 10**6)
@example(0, 0, 0, -1)
@example(178000000 * 12, 0, 0, 0)
def test_pg_interval_months_years(pg_pool, months, days, hours, us):
    """An interval with months (12 to a year): a month is 30 days and a year 365 (psycopg 3's
    rule); beyond timedelta's range it is a DataError (2018), never a wrong value."""
    years, mons = divmod(abs(months), 12)
    sign = -1 if months < 0 else 1
    want_days = sign * (years * 365 + mons * 30) + days
    want = None
    try:
        want = (datetime.timedelta(days=want_days) + datetime.timedelta(hours=hours)
                + datetime.timedelta(microseconds=us))
    except OverflowError:
        pass
    sql = "SELECT make_interval(months => %s, days => %s, hours => %s) + %s * interval '1 microsecond'"
    with pg_pool.get_connection() as conn:
        if want is None:
            with pytest.raises(DataError) as info:
                conn.execute_query(sql, (months, days, hours, us))
            assert info.value.error_code == 2018
            return
        [(got,)] = conn.execute_query(sql, (months, days, hours, us))
    assert got == want, (months, days, hours, us, got)


# PostgreSQL arrays of the scalar types: a list goes as an array of the type its
# elements imply and comes back as the same nested lists.
def rectangular(elements, max_dims=3):
    """Lists of 1..max_dims dimensions, every level rectangular, None anywhere."""
    @st.composite
    def build(draw):
        dims = draw(st.lists(st.integers(1, 3), min_size=1, max_size=max_dims))

        def fill(level):
            if level == len(dims):
                return draw(st.none() | elements)
            return [fill(level + 1) for _ in range(dims[level])]
        return fill(0)
    return build()


def utf8_text(s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in s


ARRAY_ELEMENTS = {
    "int": st.integers(*INT8),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "text": st.text().filter(utf8_text),
    "bool": st.booleans(),
    "bytes": st.binary(max_size=8),
    "decimal": st.decimals(allow_nan=False, allow_infinity=False, places=3),
    "date": st.dates(),
    "timestamp": st.datetimes(),
    "timestamptz": st.datetimes(timezones=pg_offsets).map(lambda d: d.astimezone(datetime.timezone.utc)),
    "interval": st.timedeltas(),
    "uuid": st.uuids(),
}


def _leaves(v):
    if isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


def same_array(a, b):
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_array(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return type(b) is float and same_float(a, b)
    return type(a) is type(b) and a == b


@PROFILE
@given(st.sampled_from(sorted(ARRAY_ELEMENTS)).flatmap(lambda k: rectangular(ARRAY_ELEMENTS[k])))
@example(["a\"b", "c\\d", "NULL", "", " x ", "{}", ",", "\t", None])
@example([[1, 2], [3, None]])
@example([1, 2**40, 2**70])
@example([b"", b"\x00\\", None])
@example([[[None]]])
def test_pg_array(pg_pool, v):
    with pg_pool.get_connection() as conn:
        conn.execute_query("SET TimeZone = 'UTC'")
        [(got,)] = conn.execute_query("SELECT %s", (v,))
    if all(x is None for x in _leaves(v)):
        # no element to imply a type: sent as "unknown", which SELECT reads as text
        assert type(got) is str
        return
    if any(type(x) is int and not INT8[0] <= x <= INT8[1] for x in _leaves(v)):
        # an int beyond int8 makes the array numeric[]: the values come back as Decimal
        v = [decimal.Decimal(x) if x is not None else None for x in v]
    assert same_array(v, got), (v, got)


@few
@given(st.sampled_from([[[1, 2], [3]], [[1], 2], [1, [2]], [1, "a"], [1.5, "a"], [[[[[[[1]]]]]]],
                        [datetime.datetime(2024, 1, 1),
                         datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)],
                        [{1, 2}], [(1, 2)], ["a\x00b"]]))
def test_pg_array_refused(pg_pool, v):
    """Not rectangular, mixed element types, more than 6 dimensions, unsupported elements:
    ProgrammingError (2015) before anything is sent."""
    pg_refused_before_sending(pg_pool, v)


@few
@given(json_dicts)
def test_pg_json(pg_pool, v):
    # a dict goes as json and comes back parsed, once
    got = pg_roundtrip(pg_pool, v)
    assert got == v


@few
@given(json_values)
@example("123")
@example('"123"')
def test_pg_json_decoded_once(pg_pool, v):
    """JSON text written by json.dumps comes back as the value, decoded exactly once: the JSON
    string "123" is the str '123', never the int 123."""
    text = json.dumps(v)
    got = pg_roundtrip(pg_pool, text, "::json")
    assert got == v and type(got) is type(v), (text, got)
    # jsonb keeps numbers as numeric (1e+16 comes back as 10000000000000000): the value is
    # what its own text says, parsed once (jsonb refuses \u0000: tested with json only)
    if "\\u0000" in text:
        return
    got = pg_roundtrip(pg_pool, text, "::jsonb")
    held = json.loads(pg_roundtrip(pg_pool, text, "::jsonb::text"))
    assert got == held and type(got) is type(held), (text, got)


@few
@given(json_dicts, st.sampled_from([math.nan, math.inf, -math.inf]))
@example({"a": 1}, math.inf)
def test_json_nan_refused(pg_pool, sqlite_pool, v, bad):
    # NaN and Infinity are not JSON: PostgreSQL's json type refused them after
    # sending (DataError) and SQLite stored text no JSON reader accepts.
    pg_refused_before_sending(pg_pool, {**v, "bad": bad})
    sqlite_refused_before_sending(sqlite_pool, {**v, "bad": bad})
    sqlite_refused_before_sending(sqlite_pool, [v, bad])


# ---- SQLite ----------------------------------------------------------------------

@PROFILE
@given(st.integers() | st.sampled_from(EDGES))
def test_sqlite_int(sqlite_pool, n):
    if not INT8[0] <= n <= INT8[1]:
        sqlite_refused_before_sending(sqlite_pool, n)
        return
    got = sqlite_roundtrip(sqlite_pool, n)
    assert type(got) is int and got == n


@PROFILE
@given(st.floats(allow_nan=True, allow_infinity=True))
@example(math.nan)
def test_sqlite_float(sqlite_pool, x):
    if math.isnan(x):                          # SQLite would store NULL
        sqlite_refused_before_sending(sqlite_pool, x)
        return
    got = sqlite_roundtrip(sqlite_pool, x)
    assert type(got) is float and same_float(got, x), (x, got)


@PROFILE
@given(any_text)
@example("a\x00b")
@example("\udfff")
def test_sqlite_str(sqlite_pool, s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        sqlite_refused_before_sending(sqlite_pool, s)
        return
    got = sqlite_roundtrip(sqlite_pool, s)
    assert type(got) is str and got == s


@PROFILE
@given(st.binary(), st.sampled_from([bytes, bytearray, memoryview]))
def test_sqlite_bytes(sqlite_pool, b, kind):
    got = sqlite_roundtrip(sqlite_pool, kind(b))
    assert type(got) is bytes and got == b


@PROFILE
@given(st.none() | st.booleans() | st.uuids() | st.decimals(allow_nan=True, allow_infinity=True)
       | st.dates() | st.times() | st.datetimes() | st.times(timezones=any_offsets)
       | st.datetimes(timezones=any_offsets))
def test_sqlite_stored_as_documented(sqlite_pool, v):
    """None as NULL, bool as INTEGER; Decimal, UUID, date/time/datetime as TEXT, their str()."""
    got = sqlite_roundtrip(sqlite_pool, v)
    if v is None or isinstance(v, bool):
        assert got == v and type(got) is type(None if v is None else 1)
    else:
        assert got == str(v), (v, got)


@few
@given(json_top)
def test_sqlite_json(sqlite_pool, v):
    got = sqlite_roundtrip(sqlite_pool, v)
    assert type(got) is str and json.loads(got) == v


@few
@given(st.timedeltas())
def test_sqlite_timedelta_refused(sqlite_pool, td):
    sqlite_refused_before_sending(sqlite_pool, td)


@few
@given(st.sampled_from([object(), {1, 2}, (1, 2), 1j, uuid]))
def test_unsupported_types_refused(pg_pool, sqlite_pool, v):
    pg_refused_before_sending(pg_pool, v)
    sqlite_refused_before_sending(sqlite_pool, v)
