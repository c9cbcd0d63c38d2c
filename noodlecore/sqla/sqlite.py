"""``sqlite+noodlecore``: SQLAlchemy's SQLite dialect on noodlecore.dbapi."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from ._common import NoodleDialectMixin, pool_options


class SQLiteDialect_noodlecore(NoodleDialectMixin, SQLiteDialect):
    supports_statement_cache = True
    default_paramstyle = "pyformat"
    supports_sane_multi_rowcount = True
    returns_native_bytes = True
    description_encoding = None

    _isolation_lookup = SQLiteDialect._isolation_lookup.union({"AUTOCOMMIT": None})

    def create_connect_args(self, url: Any) -> Any:
        """``sqlite:///<path>`` for dbapi.connect() (a relative path is taken
        from the current directory, as SQLAlchemy's pysqlite does); pool
        options from the query go to the native pool."""
        pool, rest = pool_options(dict(url.query))
        path = url.database or ""
        if path in ("", ":memory:"):
            # Each native connection would be its own empty database.
            raise self.dbapi.NotSupportedError(
                "sqlite+noodlecore needs a database file; an in-memory database is not shared "
                "between the native pool's connections")
        dsn = "sqlite:///" + os.path.abspath(path)
        if rest:
            dsn += "?" + urlencode(rest, doseq=True)
        return [dsn], pool

    def _get_server_version_info(self, connection: Any) -> Any:
        return self.dbapi.sqlite_version_info

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        if level == "AUTOCOMMIT":
            dbapi_connection.autocommit = True
            return
        if dbapi_connection.autocommit:
            dbapi_connection.rollback()
            dbapi_connection.autocommit = False
        super().set_isolation_level(dbapi_connection, level)

    def get_isolation_level(self, dbapi_connection: Any) -> str:
        if dbapi_connection.autocommit:
            return "AUTOCOMMIT"
        return str(super().get_isolation_level(dbapi_connection))

    def detect_autocommit_setting(self, dbapi_connection: Any) -> bool:
        return bool(dbapi_connection.autocommit)


dialect = SQLiteDialect_noodlecore
