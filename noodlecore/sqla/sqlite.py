"""``sqlite+noodlecore``: SQLAlchemy's SQLite dialect on noodlecore.dbapi."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from ._common import NoodleDialectMixin, pool_options, switch_autocommit


class _QmarkConnection:
    """SQLAlchemy's SQLite dialect writes its few parameterised reflection
    queries in pysqlite's qmark style (``name = ?``); ours is pyformat.  They
    have no ``?`` or ``%`` but these, so the rewrite is exact."""

    def __init__(self, connection: Any):
        self._connection = connection

    def exec_driver_sql(self, statement: str, parameters: Any = None, *args: Any, **kw: Any) -> Any:
        if parameters is not None:
            statement = statement.replace("%", "%%").replace("?", "%s")
        return self._connection.exec_driver_sql(statement, parameters, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def _qmark(connection: Any) -> Any:
    return connection if isinstance(connection, _QmarkConnection) else _QmarkConnection(connection)


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

    @classmethod
    def _is_url_file_db(cls, url: Any) -> bool:
        # Always a file (create_connect_args refuses :memory:); SQLAlchemy's
        # test provisioning asks.
        return True

    def _get_server_version_info(self, connection: Any) -> Any:
        return self.dbapi.sqlite_version_info

    def _ensure_has_table_connection(self, arg: Any) -> None:
        super()._ensure_has_table_connection(
            arg._connection if isinstance(arg, _QmarkConnection) else arg)

    def get_view_definition(self, connection: Any, view_name: str, schema: Any = None, **kw: Any) -> Any:
        return super().get_view_definition(_qmark(connection), view_name, schema=schema, **kw)

    def get_indexes(self, connection: Any, table_name: str, schema: Any = None, **kw: Any) -> Any:
        return super().get_indexes(_qmark(connection), table_name, schema=schema, **kw)

    def _get_table_sql(self, connection: Any, table_name: str, schema: Any = None, **kw: Any) -> Any:
        return super()._get_table_sql(_qmark(connection), table_name, schema=schema, **kw)

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        if switch_autocommit(dbapi_connection, level):
            return
        super().set_isolation_level(dbapi_connection, level)

    def get_isolation_level(self, dbapi_connection: Any) -> str:
        if dbapi_connection.autocommit:
            return "AUTOCOMMIT"
        return str(super().get_isolation_level(dbapi_connection))

    def detect_autocommit_setting(self, dbapi_connection: Any) -> bool:
        return bool(dbapi_connection.autocommit)


dialect = SQLiteDialect_noodlecore
