"""What the fuzz targets of csrc/fuzz found, seen from Python (the C unit tests
test_params 'touching' and test_pg_dsn hold the same cases in the core)."""

from noodlecore.database import ConfigurationError, ConnectionPoolError, DatabaseConnectionPool
from noodlecore.testing import free_port


def test_placeholder_touching_a_word_stays_a_parameter(pg):
    # PostgreSQL read "LIMIT$1" as one identifier and "$a$1$" as a dollar
    # quote: the rewrite now puts a space before the $n.
    with DatabaseConnectionPool(pg.dsn(), max_connections=1, row_format="tuple") as pool:
        with pool.get_connection() as conn:
            assert conn.execute_query("SELECT n FROM generate_series(1, 5) AS n ORDER BY n LIMIT%s", (2,)) \
                == [(1,), (2,)]
            assert conn.execute_query("SELECT 7 AS x WHERE 7 IN(%s,%s)AND 1=%s", (6, 7, 1)) == [(7,)]
            assert conn.execute_query("SELECT %s::text||$$lit$$||%s", ("a", "b")) == [("alitb",)]


def test_dsn_with_percent_encoded_non_utf8_bytes():
    # libpq decodes %XX: the message (and the display in later messages)
    # held bytes that are not UTF-8, and Python raised UnicodeDecodeError.
    try:
        DatabaseConnectionPool("postgres://u:pw@127.0.0.1/app?con%ect_timeout=3")
    except ConfigurationError as exc:
        assert exc.error_code == 2013 and 'con?t_timeout' in str(exc)
    else:
        raise AssertionError("an unknown DSN option must raise ConfigurationError")
    port = free_port()
    with DatabaseConnectionPool("postgresql://%%ff@127.0.0.1:%d/db" % port, max_connections=1, timeout=5,
                                connect_timeout=2, retry_attempts=1) as pool:
        try:
            with pool.get_connection():
                pass
        except ConnectionPoolError as exc:
            assert exc.error_code == 2009 and "?@127.0.0.1:%d" % port in str(exc), exc
        else:
            raise AssertionError("nothing listens on port %d" % port)
