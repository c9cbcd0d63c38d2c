"""PEP 249's classic compliance test (Stuart Bishop's dbapi20.py, from the
pinned dbapi-compliance package) against noodlecore.dbapi, on a real
PostgreSQL server and on SQLite.

dbapi20 leaves three tests for each driver to write; ours say what we do:
no ``nextset`` (neither backend's statements return several result sets
through this module), ``setoutputsize`` a no-op, and ``close()`` twice does
not raise (issue 10, as psycopg and sqlite3: the suite's own comment says
"reasonable persons differ" on that one).
"""

import dbapi20
import pytest

from noodlecore import dbapi


pytestmark = pytest.mark.usefixtures("fresh_dbapi_pools")


class _Ours:
    driver = dbapi

    def test_nextset(self):
        # not offered: dbapi20's own test returns at once without it
        con = self._connect()
        try:
            assert not hasattr(con.cursor(), "nextset")
        finally:
            con.close()

    def test_setoutputsize(self):
        con = self._connect()
        try:
            cur = con.cursor()
            cur.setoutputsize(1000)
            cur.setoutputsize(2000, 0)
            self._paraminsert(cur)      # a no-op: the cursor still works
        finally:
            con.close()

    def test_non_idempotent_close(self):
        # replaced: closing twice does not raise, a closed connection does
        con = self._connect()
        con.close()
        con.close()
        with pytest.raises(dbapi.InterfaceError):
            con.cursor()


class TestPostgreSQL(_Ours, dbapi20.DatabaseAPI20Test):
    @pytest.fixture(autouse=True)
    def _server(self, pg):
        self.connect_args = (pg.dsn(application_name="nct_dbapi20"),)


class TestSQLite(_Ours, dbapi20.DatabaseAPI20Test):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path):
        self.connect_args = (f"sqlite:///{tmp_path}/dbapi20.db",)
