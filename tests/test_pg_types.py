"""Values between Python and a real PostgreSQL 15 server (noodlecore.testing).

Results arrive in text format and are decoded by column type; parameters go
with the type their Python type implies (str as "unknown", bytes-likes as
binary bytea).  See csrc/py/adapt_pg.c.
"""

import datetime
import decimal
import json
import math
import re
import time
import uuid

import pytest

from noodlecore.database import DatabaseConnectionPool, DataError, ProgrammingError

D = decimal.Decimal
UTC = datetime.timezone.utc


def tz(hours=0, minutes=0, seconds=0):
    return datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds))


@pytest.fixture
def app(request):
    return ("nctt_" + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name))[:60]


@pytest.fixture
def pool(pg, app):
    # a pool per test: session settings (SET TimeZone ...) never leak into another test
    p = DatabaseConnectionPool(pg.dsn(application_name=app), max_connections=2, timeout=5)
    yield p
    p.shutdown(timeout=0)


@pytest.fixture
def conn(pool):
    with pool.get_connection() as c:
        yield c


def one(conn, sql, params=None):
    """The single value of a one-row, one-column result."""
    rows = conn.execute_query(sql, params, row_format="tuple")
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def same(a, b):
    """Equal, with NaN equal to NaN and the type checked too."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, D) and a.is_nan():
        return b.is_nan()
    if isinstance(a, float) and a == 0:
        return math.copysign(1, a) == math.copysign(1, b)
    return a == b


# ---------------------------------------------------------------------------
# from PostgreSQL
# ---------------------------------------------------------------------------

def test_bool_and_integers(conn):
    assert conn.execute_query("SELECT true AS t, false AS f, NULL::bool AS n") == [
        {"t": True, "f": False, "n": None}]
    row = conn.execute_query(
        "SELECT (-32768)::int2 AS a, 32767::int2 AS b, (-2147483648)::int4 AS c, "
        "2147483647::int4 AS d, (-9223372036854775808)::int8 AS e, 9223372036854775807::int8 AS f, "
        "0::int8 AS z, 4294967295::oid AS o, 'pg_class'::regclass::oid AS oc")[0]
    assert row == {"a": -32768, "b": 32767, "c": -2147483648, "d": 2147483647,
                   "e": -2 ** 63, "f": 2 ** 63 - 1, "z": 0, "o": 4294967295, "oc": 1259}
    assert all(type(v) is int for v in row.values())


def test_floats(conn):
    row = conn.execute_query(
        "SELECT 1.5::float4 AS a, 0.1::float4 AS b, 'NaN'::float4 AS c, 'Infinity'::float4 AS d, "
        "'-Infinity'::float4 AS e, 0.1::float8 AS f, 1e308::float8 AS g, 5e-324::float8 AS h, "
        "'-0'::float8 AS i, 'NaN'::float8 AS j, 'Infinity'::float8 AS k, '-Infinity'::float8 AS l, "
        "3.4028235e38::float4 AS m")[0]
    assert all(type(v) is float for v in row.values())
    assert row["a"] == 1.5 and row["b"] == 0.1 and math.isnan(row["c"])
    assert row["d"] == math.inf and row["e"] == -math.inf
    assert row["f"] == 0.1 and row["g"] == 1e308 and row["h"] == 5e-324
    assert row["i"] == 0 and math.copysign(1, row["i"]) == -1
    assert math.isnan(row["j"]) and row["k"] == math.inf and row["l"] == -math.inf
    assert row["m"] == 3.4028235e38


def test_numeric(conn):
    row = conn.execute_query(
        "SELECT 1.10::numeric AS a, (-0.000001)::numeric AS b, 'NaN'::numeric AS c, "
        "12345678901234567890.123456789012345678901234567890::numeric AS d, "
        "(2::numeric ^ 200) AS e, 'Infinity'::numeric AS f, '-Infinity'::numeric AS g, "
        "0::numeric(10,3) AS h, 123::numeric AS i")[0]
    assert all(type(v) is D for v in row.values())
    assert str(row["a"]) == "1.10"                   # the scale is kept
    assert row["b"] == D("-0.000001")
    assert row["c"].is_nan()
    assert str(row["d"]) == "12345678901234567890.123456789012345678901234567890"
    assert row["e"] == 2 ** 200
    assert row["f"] == D("Infinity") and row["g"] == D("-Infinity")
    assert str(row["h"]) == "0.000" and row["i"] == 123


def test_text_types(conn):
    s = "h\u00e9llo \u2713 \U0001F389 \u4e2d\u6587"
    row = conn.execute_query(
        "SELECT %s::text AS t, 'abc'::varchar(10) AS v, 'ab'::char(5) AS c, 'x'::\"char\" AS ch, "
        "current_user AS n, ''::text AS e, 'a''b\\c'::text AS q", (s,))[0]
    assert row == {"t": s, "v": "abc", "c": "ab   ", "ch": "x", "n": "postgres", "e": "", "q": "a'b\\c"}
    # the connection always talks UTF-8, whatever the DSN asks for
    assert one(conn, "SHOW client_encoding") == "UTF8"


def test_client_encoding_in_dsn_is_overridden(pg, app):
    with DatabaseConnectionPool(pg.dsn(application_name=app, client_encoding="LATIN1"),
                                max_connections=1) as p:
        with p.get_connection() as c:
            assert one(c, "SHOW client_encoding") == "UTF8"
            assert one(c, "SELECT %s::text", ("\U0001F600 \u20ac",)) == "\U0001F600 \u20ac"


ALL_BYTES_SQL = ("SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') "
                 "FROM generate_series(0, 255) i")


def test_bytea(conn):
    assert one(conn, "SELECT ''::bytea") == b""
    assert one(conn, "SELECT '\\x00ff'::bytea") == b"\x00\xff"
    every = one(conn, ALL_BYTES_SQL)
    assert type(every) is bytes and every == bytes(range(256))
    # the escape output format decodes the same
    conn.begin()
    conn.execute_query("SET LOCAL bytea_output = 'escape'")
    assert one(conn, "SHOW bytea_output") == "escape"
    assert one(conn, ALL_BYTES_SQL) == bytes(range(256))
    assert one(conn, "SELECT ''::bytea") == b""
    assert one(conn, "SELECT 'a\\\\b'::bytea") == b"a\\b"
    conn.rollback()


def test_dates_and_times(conn):
    row = conn.execute_query(
        "SELECT '2024-02-29'::date AS d, '0001-01-01'::date AS d1, '9999-12-31'::date AS d9, "
        "'13:45:30.123456'::time AS t, '00:00:00'::time AS t0, '12:00:00.5'::time AS th, "
        "'13:45:30+05:30'::timetz AS ttz, '01:02:03-08'::timetz AS ttz2, "
        "'2024-01-02 03:04:05.678'::timestamp AS ts, '0099-12-31 23:59:59.999999'::timestamp AS ts99")[0]
    assert row["d"] == datetime.date(2024, 2, 29)
    assert row["d1"] == datetime.date(1, 1, 1) and row["d9"] == datetime.date(9999, 12, 31)
    assert row["t"] == datetime.time(13, 45, 30, 123456) and row["t"].tzinfo is None
    assert row["t0"] == datetime.time(0) and row["th"] == datetime.time(12, 0, 0, 500000)
    assert row["ttz"] == datetime.time(13, 45, 30, tzinfo=tz(5, 30))
    assert row["ttz"].utcoffset() == datetime.timedelta(hours=5, minutes=30)
    assert row["ttz2"].utcoffset() == datetime.timedelta(hours=-8)
    assert row["ts"] == datetime.datetime(2024, 1, 2, 3, 4, 5, 678000) and row["ts"].tzinfo is None
    assert row["ts99"] == datetime.datetime(99, 12, 31, 23, 59, 59, 999999)
    # values Python cannot hold come back as str
    row = conn.execute_query(
        "SELECT 'infinity'::date AS a, '-infinity'::timestamp AS b, 'infinity'::timestamptz AS c, "
        "'0044-03-15 BC'::date AS d, '10000-01-01'::date AS e, '24:00:00'::time AS f")[0]
    assert row == {"a": "infinity", "b": "-infinity", "c": "infinity", "d": "0044-03-15 BC",
                   "e": "10000-01-01", "f": "24:00:00"}


def test_timestamptz_offsets(conn):
    instant = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    cases = [
        ("UTC", datetime.timedelta(0)),
        ("Asia/Kolkata", datetime.timedelta(hours=5, minutes=30)),
        ("America/St_Johns", datetime.timedelta(hours=-2, minutes=-30)),   # summer: -02:30
        ("Asia/Kathmandu", datetime.timedelta(hours=5, minutes=45)),
        ("America/Los_Angeles", datetime.timedelta(hours=-7)),
    ]
    for zone, offset in cases:
        conn.execute_query("SET TimeZone = '%s'" % zone)
        v = one(conn, "SELECT '2024-06-01 12:00:00+00'::timestamptz")
        assert type(v) is datetime.datetime
        assert v.utcoffset() == offset, (zone, v)
        assert v == instant
        assert v.replace(tzinfo=None) == (instant + offset).replace(tzinfo=None)
    # an offset with seconds (local mean time before time zones)
    conn.execute_query("SET TimeZone = 'Europe/Amsterdam'")
    v = one(conn, "SELECT '1850-01-01 00:00:00+00'::timestamptz")
    assert v.utcoffset() == datetime.timedelta(minutes=19, seconds=32)
    assert v == datetime.datetime(1850, 1, 1, tzinfo=UTC)
    conn.execute_query("SET TimeZone = 'UTC'")
    assert one(conn, "SELECT '2024-06-01 17:30:00+05:30'::timestamptz") == instant


def test_uuid_json_null_and_str_types(conn):
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    row = conn.execute_query(
        "SELECT '12345678-1234-5678-1234-567812345678'::uuid AS u, "
        "'{\"a\": [1, 2.5, null, true], \"b\": \"x\\u00e9\"}'::json AS j, "
        "'{\"b\": {\"c\": []}, \"a\": 1}'::jsonb AS jb, '\"s\"'::json AS js, 'null'::jsonb AS jn, "
        "'[1, \"two\"]'::jsonb AS ja")[0]
    assert row["u"] == u and type(row["u"]) is uuid.UUID
    assert row["j"] == {"a": [1, 2.5, None, True], "b": "x\u00e9"}
    assert row["jb"] == {"a": 1, "b": {"c": []}}
    assert row["js"] == "s" and row["jn"] is None and row["ja"] == [1, "two"]
    nulls = conn.execute_query(
        "SELECT NULL AS a, NULL::int AS b, NULL::text AS c, NULL::bytea AS d, NULL::jsonb AS e, "
        "NULL::timestamptz AS f, NULL::numeric AS g, NULL::uuid AS h, NULL::int[] AS i, "
        "NULL::interval AS j", row_format="tuple")
    assert nulls == [(None,) * 10]
    row = conn.execute_query(
        "SELECT '1 day 02:03:04.5'::interval AS iv, '-1 mon'::interval AS iv2, "
        "ARRAY[1, 2, 3] AS arr, ARRAY['a', NULL, 'b c'] AS tarr, '{}'::int[] AS earr, "
        "'192.168.0.1/24'::inet AS inet, '10.0.0.0/8'::cidr AS cidr, 'hello'::xml AS x, "
        "int4range(1, 5) AS rng, 12.5::money AS m, point(1, 2) AS pt")[0]
    # interval as timedelta (a month is 30 days), arrays as lists; the rest as str
    assert row == {"iv": datetime.timedelta(days=1, seconds=7384.5), "iv2": datetime.timedelta(days=-30),
                   "arr": [1, 2, 3], "tarr": ["a", None, "b c"], "earr": [], "inet": "192.168.0.1/24",
                   "cidr": "10.0.0.0/8", "x": "hello", "rng": "[1,5)", "m": "$12.50",
                   "pt": "(1,2)"}


# ---------------------------------------------------------------------------
# to PostgreSQL and back
# ---------------------------------------------------------------------------

ROUND_TRIPS = [
    # (value, cast, expected back, pg_typeof of the bare parameter; None for None and str,
    #  which go as "unknown" for the server to infer -- pg_typeof() cannot)
    (None, "int", None, None),
    (True, "bool", True, "boolean"),
    (False, "bool", False, "boolean"),
    (0, "int8", 0, "integer"),
    (-1, "int4", -1, "integer"),
    (2 ** 31, "int8", 2 ** 31, "bigint"),
    (2 ** 63 - 1, "int8", 2 ** 63 - 1, "bigint"),
    (-2 ** 63, "int8", -2 ** 63, "bigint"),
    (2 ** 63, "numeric", D(2 ** 63), "numeric"),
    (-2 ** 100, "numeric", D(-2 ** 100), "numeric"),
    (0.1, "float8", 0.1, "double precision"),
    (-0.0, "float8", -0.0, "double precision"),
    (1e308, "float8", 1e308, "double precision"),
    (5e-324, "float8", 5e-324, "double precision"),
    (math.nan, "float8", math.nan, "double precision"),
    (math.inf, "float8", math.inf, "double precision"),
    (-math.inf, "float8", -math.inf, "double precision"),
    (D("1.10"), "numeric", D("1.10"), "numeric"),
    (D("-0.000001"), "numeric", D("-0.000001"), "numeric"),
    (D("1E+5"), "numeric", D("100000"), "numeric"),
    (D("12345678901234567890.123456789012345678901234567890"), "numeric",
     D("12345678901234567890.123456789012345678901234567890"), "numeric"),
    (D("NaN"), "numeric", D("NaN"), "numeric"),
    (D("Infinity"), "numeric", D("Infinity"), "numeric"),
    (D("-Infinity"), "numeric", D("-Infinity"), "numeric"),
    ("h\u00e9llo", "text", "h\u00e9llo", None),
    ("\U0001F389\U0001F44D\U0001F3FD", "text", "\U0001F389\U0001F44D\U0001F3FD", None),
    ("", "text", "", None),
    ("it's \\ \"q\" \t\n%s", "text", "it's \\ \"q\" \t\n%s", None),
    ("2024-05-06", "date", datetime.date(2024, 5, 6), None),
    (b"", "bytea", b"", "bytea"),
    (bytes(range(256)), "bytea", bytes(range(256)), "bytea"),
    (bytearray(b"\x00\x01\xff"), "bytea", b"\x00\x01\xff", "bytea"),
    (memoryview(b"abc\x00"), "bytea", b"abc\x00", "bytea"),
    (datetime.date(2024, 2, 29), "date", datetime.date(2024, 2, 29), "date"),
    (datetime.date(1, 1, 1), "date", datetime.date(1, 1, 1), "date"),
    (datetime.time(13, 45, 30, 123456), "time", datetime.time(13, 45, 30, 123456),
     "time without time zone"),
    (datetime.time(1, 2, 3, tzinfo=tz(5, 30)), "timetz", datetime.time(1, 2, 3, tzinfo=tz(5, 30)),
     "time with time zone"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, 6), "timestamp", datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
     "timestamp without time zone"),
    (datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), "timestamp",
     datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), "timestamp without time zone"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "timestamptz",
     datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "timestamp with time zone"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz(5, 30)), "timestamptz",
     datetime.datetime(2024, 1, 1, 21, 34, 5, tzinfo=UTC), "timestamp with time zone"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz(-3, -30)), "timestamptz",
     datetime.datetime(2024, 1, 2, 6, 34, 5, tzinfo=UTC), "timestamp with time zone"),
    (datetime.timedelta(days=1, seconds=5, microseconds=7), "interval",
     datetime.timedelta(days=1, seconds=5, microseconds=7), "interval"),
    (-datetime.timedelta(seconds=1), "interval", -datetime.timedelta(seconds=1), "interval"),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "uuid",
     uuid.UUID("12345678-1234-5678-1234-567812345678"), "uuid"),
    ({"a": [1, 2.5, None, True], "\u00e9": "\U0001F389"}, "jsonb",
     {"a": [1, 2.5, None, True], "\u00e9": "\U0001F389"}, "json"),
    # a list is an array (psycopg 3's rule); JSON that is a list is sent as its text
    (json.dumps([1, "two", {"three": 3}]), "json", [1, "two", {"three": 3}], None),
    ([1, None, 3], "int[]", [1, None, 3], "integer[]"),
    ([[1.5], [2.0]], "float8[]", [[1.5], [2.0]], "double precision[]"),
    (["a", 'b"c', None], "text[]", ["a", 'b"c', None], "text[]"),
    ([{"a": 1}], "json[]", [{"a": 1}], "json[]"),
    ([], "int[]", [], None),
]


@pytest.mark.parametrize("value,cast,expected,typeof", ROUND_TRIPS,
                         ids=["%d-%s" % (i, r[1]) for i, r in enumerate(ROUND_TRIPS)])
def test_round_trip_select(conn, value, cast, expected, typeof):
    conn.execute_query("SET TimeZone = 'UTC'")
    got = one(conn, "SELECT %%s::%s" % cast, (value,))
    assert same(got, expected), (got, expected)
    if typeof is not None:
        assert one(conn, "SELECT pg_typeof(%s)::text", (value,)) == typeof
    elif value is None:
        assert one(conn, "SELECT %%s::%s IS NULL" % cast, (value,)) is True
    elif isinstance(value, str):    # the server takes it for whatever the context needs
        assert one(conn, "SELECT %s", (value,)) == value
    else:       # an empty list: "unknown" too, so the context gives the array type
        assert one(conn, "SELECT %s", (value,)) == "{}"


def test_round_trip_through_typed_columns(pg, conn, app):
    table = "tt_" + app
    conn.execute_query("SET TimeZone = 'UTC'")
    conn.execute_query(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id int PRIMARY KEY, b bool, i2 int2, i4 int4, "
        "i8 int8, n numeric, f4 float4, f8 float8, t text, vc varchar(20), c char(3), by bytea, "
        "d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval, u uuid, "
        "j json, jb jsonb)".format(t=table))
    try:
        cols = ["b", "i2", "i4", "i8", "n", "f4", "f8", "t", "vc", "c", "by", "d", "tm", "ttz",
                "ts", "tstz", "iv", "u", "j", "jb"]
        u = uuid.uuid4()
        values = {
            "b": True, "i2": -32768, "i4": 2147483647, "i8": -2 ** 63, "n": D("-123.4500"),
            "f4": 1.5, "f8": -0.1, "t": "\u00e9\U0001F389", "vc": "", "c": "ab",
            "by": bytes(range(256)), "d": datetime.date(2000, 2, 29),
            "tm": datetime.time(23, 59, 59, 999999), "ttz": datetime.time(1, 2, 3, tzinfo=tz(-8)),
            "ts": datetime.datetime(1999, 12, 31, 23, 59, 59),
            "tstz": datetime.datetime(2024, 3, 10, 2, 30, tzinfo=tz(5, 30)),
            "iv": datetime.timedelta(hours=25), "u": u,
            "j": {"k": [1, {"x": None}]}, "jb": {"a": [True, 1.5, "s"]},
        }
        insert = "INSERT INTO %s (id, %s) VALUES (%%(id)s, %s)" % (
            table, ", ".join(cols), ", ".join("%%(%s)s" % c for c in cols))
        assert conn.execute_query(insert, dict(values, id=1)) == 1
        assert conn.execute_query(insert, dict({c: None for c in cols}, id=2)) == 1
        # the same values as other Python types the columns accept
        alt = dict(values, id=3, i2=7, n=2 ** 70, f4=D("2.25"), f8=3, by=bytearray(b"\x00"),
                   d="2001-01-01", tm="04:05:06", ts=datetime.datetime(2020, 1, 1, 0, 0, 0, 1),
                   u=str(u), iv="1 hour", jb={"a": 1})
        assert conn.execute_query(insert, alt) == 1
        rows = conn.execute_query("SELECT * FROM %s ORDER BY id" % table)
        assert rows[0] == dict(values, id=1, c="ab ", f4=1.5,
                               tstz=datetime.datetime(2024, 3, 9, 21, 0, tzinfo=UTC),
                               iv=datetime.timedelta(hours=25))
        assert rows[1] == dict({c: None for c in cols}, id=2)
        r3 = rows[2]
        assert (r3["i2"], r3["n"], r3["f4"], r3["f8"], r3["by"], r3["d"], r3["tm"], r3["u"],
                r3["iv"], r3["jb"]) == (7, D(2 ** 70), 2.25, 3.0, b"\x00", datetime.date(2001, 1, 1),
                                        datetime.time(4, 5, 6), u, datetime.timedelta(hours=1), {"a": 1})
        assert r3["ts"] == datetime.datetime(2020, 1, 1, 0, 0, 0, 1)
        # values the columns cannot take: server errors, nothing half-done
        with pytest.raises(DataError) as ei:
            conn.execute_query("INSERT INTO %s (id, i8) VALUES (4, %%s)" % table, (2 ** 63,))
        assert ei.value.sqlstate == "22003"
        with pytest.raises(DataError) as ei:
            conn.execute_query("INSERT INTO %s (id, i4) VALUES (4, %%s)" % table, (2 ** 40,))
        assert ei.value.sqlstate == "22003"
        with pytest.raises(DataError):
            conn.execute_query("INSERT INTO %s (id, vc) VALUES (4, %%s)" % table, ("x" * 21,))
        assert one(conn, "SELECT count(*) FROM %s" % table) == 3
    finally:
        conn.execute_query("DROP TABLE IF EXISTS %s" % table)


def test_parameter_values_that_cannot_be_sent(conn):
    cases = [
        ("nul\x00inside", "NUL"),
        (D("sNaN"), "signaling NaN"),
        ({1, 2}, "type 'set'"),
        (frozenset(), "type 'frozenset'"),
        (object(), "type 'object'"),
        ((1, 2), "type 'tuple'"),
        (1j, "type 'complex'"),
        ({"a": object()}, "JSON"),
        ("\ud800", "UTF-8"),
    ]
    for value, fragment in cases:
        with pytest.raises(ProgrammingError) as ei:
            conn.execute_query("SELECT %s", (value,))
        assert ei.value.error_code == 2015, (value, ei.value)
        assert fragment in str(ei.value), (value, str(ei.value))
        assert ei.value.sqlstate is None
    # a NUL inside a JSON value is fine: JSON escapes it (json keeps it, jsonb refuses it)
    assert one(conn, "SELECT %s::json", ({"a": "x\x00y"},)) == {"a": "x\x00y"}
    with pytest.raises(DataError):
        conn.execute_query("SELECT %s::jsonb", ({"a": "x\x00y"},))
    assert one(conn, "SELECT 1") == 1


def test_row_formats(pool, conn):
    sql = "SELECT 1 AS a, 'x' AS b, NULL AS c, 2 AS a"
    assert conn.execute_query(sql, row_format="tuple") == [(1, "x", None, 2)]
    assert conn.execute_query(sql) == [{"a": 2, "b": "x", "c": None}]     # last "a" wins
    assert conn.execute_query(sql, row_format="dict") == [{"a": 2, "b": "x", "c": None}]
    assert conn.execute_query("SELECT 1 AS x WHERE false") == []
    assert conn.execute_query("SELECT 1 AS x WHERE false", row_format="tuple") == []
    assert conn.execute_query("SELECT", row_format="tuple") == [()]
    assert conn.execute_query("SELECT") == [{}]
    with pytest.raises(Exception) as ei:
        conn.execute_query("SELECT 1", row_format="list")
    assert ei.value.error_code == 2013
    row = conn.execute_query("SELECT 1 AS \"Mixed Case\", 2 AS \"\u00e9\u00e8\"")[0]
    assert row == {"Mixed Case": 1, "\u00e9\u00e8": 2}


def test_hundred_thousand_rows(conn):
    sql = ("SELECT i, i::text AS t, i * 0.5 AS h, (i %% 2 = 0) AS even "
           "FROM generate_series(1, %s) i")
    n = 100_000
    for fmt in ("tuple", "dict"):
        t0 = time.monotonic()
        rows = conn.execute_query(sql, (n,), row_format=fmt)
        took = time.monotonic() - t0
        assert len(rows) == n
        if fmt == "tuple":
            assert rows[0] == (1, "1", D("0.5"), False)
            assert rows[-1] == (n, str(n), D(n) / 2, True)
            assert sum(r[0] for r in rows) == n * (n + 1) // 2
            assert all(r[1] == str(r[0]) for r in rows)
            assert sum(r[3] for r in rows) == n // 2
        else:
            assert rows[0] == {"i": 1, "t": "1", "h": D("0.5"), "even": False}
            assert rows[-1] == {"i": n, "t": str(n), "h": D(n) / 2, "even": True}
            assert sum(r["i"] for r in rows) == n * (n + 1) // 2
            assert all(r["t"] == str(r["i"]) for r in rows)
            assert sum(r["h"] for r in rows) == D(n * (n + 1) // 2) / 2
        assert took < 10, (fmt, took)
    assert one(conn, "SELECT 1") == 1


def test_big_values(conn):
    text = "\u00e9" * 500_000 + "end"
    assert one(conn, "SELECT %s::text", (text,)) == text
    blob = bytes(range(256)) * 4096
    assert one(conn, "SELECT %s::bytea", (blob,)) == blob
    assert one(conn, "SELECT length(%s::bytea)", (blob,)) == len(blob)
    doc = {"k%d" % i: [i, str(i)] for i in range(5000)}
    assert one(conn, "SELECT %s::jsonb", (doc,)) == doc
    assert json.loads(one(conn, "SELECT %s::text", (json.dumps(doc),))) == doc


def test_non_iso_datestyle_from_the_dsn(pg, app):
    """The pool needs ISO dates to decode them; a DSN asking for another DateStyle still
    gets ISO on the session (the day/month order part is kept)."""
    dsn = pg.kv_dsn(application_name=app, options="-c DateStyle=SQL,DMY -c TimeZone=Asia/Kolkata")
    with DatabaseConnectionPool(dsn, max_connections=1) as p:
        with p.get_connection() as c:
            assert one(c, "SHOW DateStyle").startswith("ISO")
            assert one(c, "SELECT '2024-02-29'::date") == datetime.date(2024, 2, 29)
            v = one(c, "SELECT '2024-06-01 12:00:00+00'::timestamptz")
            assert v.utcoffset() == datetime.timedelta(hours=5, minutes=30)
            assert v == datetime.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
            assert one(c, "SELECT %s::date", (datetime.date(2024, 3, 4),)) == datetime.date(2024, 3, 4)


def test_arrays_from_the_server(conn):
    """Arrays of the decoded types as nested lists, the vectors the catalogue holds as lists of
    int, lower bounds dropped, quoting and NULL read as array_out writes them."""
    row = conn.execute_query(
        "SELECT '{{1,2},{3,NULL}}'::int8[] AS m, '[0:1]={7,8}'::int[] AS lb, "
        "ARRAY['NULL', NULL, '', 'a\"b', 'c\\d', ' sp ', '{x}'] AS q, "
        "'{1.5,NaN,-Infinity}'::float8[] AS f, '{1.25,NaN}'::numeric[] AS n, "
        "ARRAY[true, false] AS b, ARRAY['\\x00ff'::bytea] AS by, "
        "ARRAY['2024-01-02'::date] AS d, ARRAY['1 day'::interval, '-1 mon'] AS iv, "
        "ARRAY['{\"a\": [1]}'::jsonb, '\"123\"'] AS jb, "
        "'1 2 3'::int2vector AS i2v, '23 25'::oidvector AS ov, ''::int2vector AS ev, "
        "ARRAY['1 2'::int2vector] AS i2va")[0]
    assert row["m"] == [[1, 2], [3, None]]
    assert row["lb"] == [7, 8]
    assert row["q"] == ["NULL", None, "", 'a"b', "c\\d", " sp ", "{x}"]
    f = row["f"]
    assert f[0] == 1.5 and math.isnan(f[1]) and f[2] == -math.inf
    assert row["n"][0] == D("1.25") and row["n"][1].is_nan()
    assert row["b"] == [True, False] and row["by"] == [b"\x00\xff"]
    assert row["d"] == [datetime.date(2024, 1, 2)]
    assert row["iv"] == [datetime.timedelta(days=1), datetime.timedelta(days=-30)]
    assert row["jb"] == [{"a": [1]}, "123"]
    assert row["i2v"] == [1, 2, 3] and row["ov"] == [23, 25] and row["ev"] == []
    assert row["i2va"] == [[1, 2]]
    # what SQLAlchemy's reflection reads: pg_index.indkey is an int2vector
    conn.execute_query("CREATE TEMP TABLE arr_idx (a int, b int, c int)")
    conn.execute_query("CREATE INDEX ON arr_idx (c, a)")
    [(indkey,)] = conn.execute_query(
        "SELECT indkey FROM pg_index WHERE indrelid = 'arr_idx'::regclass", row_format="tuple")
    assert indkey == [3, 1]


def test_arrays_to_the_server(conn):
    """A list is an array parameter: = ANY, array columns, an empty list taking its type from
    the context, ints widening to int8 and numeric."""
    assert one(conn, "SELECT 3 = ANY(%s)", ([1, 2, 3],)) is True
    assert one(conn, "SELECT pg_typeof(%s)::text", ([1, 2**40],)) == "bigint[]"
    assert one(conn, "SELECT pg_typeof(%s)::text", ([1, 2**70, D("1.5")],)) == "numeric[]"
    assert one(conn, "SELECT cardinality(%s::int[])", ([],)) == 0
    conn.execute_query("CREATE TEMP TABLE arr_cols (t text[], v varchar(5)[], j jsonb[], u uuid[])")
    u = uuid.uuid4()
    assert conn.execute_query("INSERT INTO arr_cols VALUES (%s, %s, %s, %s)",
                              (["x", None], [["ab"], ["cd"]], [{"k": 1}], [u])) == 1
    assert conn.execute_query("SELECT * FROM arr_cols", row_format="tuple") == [
        (["x", None], [["ab"], ["cd"]], [{"k": 1}], [u])]
    assert conn.execute_query("SELECT count(*) FROM arr_cols WHERE t = %s", ([],),
                              row_format="tuple") == [(0,)]


def test_interval_style_is_set_on_connect(pg, app):
    """A DSN asking for another IntervalStyle still decodes: the connection sets postgres."""
    with DatabaseConnectionPool(pg.kv_dsn(application_name=app, options="-c IntervalStyle=iso_8601"),
                                max_connections=1) as p, p.get_connection() as c:
        assert one(c, "SHOW IntervalStyle") == "postgres"
        assert one(c, "SELECT '1 day 1 hour'::interval") == datetime.timedelta(days=1, hours=1)
