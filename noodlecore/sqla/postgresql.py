"""``postgresql+noodlecore``: SQLAlchemy's PostgreSQL dialect on noodlecore.dbapi."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.dialects.postgresql.base import PGDialect, PGExecutionContext

from ._common import NoodleDialectMixin, pool_options

_LEVELS = ("AUTOCOMMIT", "READ COMMITTED", "READ UNCOMMITTED", "REPEATABLE READ", "SERIALIZABLE")


class PGExecutionContext_noodlecore(PGExecutionContext):
    pass


class PGDialect_noodlecore(NoodleDialectMixin, PGDialect):
    supports_statement_cache = True
    default_paramstyle = "pyformat"
    supports_sane_multi_rowcount = True
    supports_server_side_cursors = False
    execution_ctx_cls = PGExecutionContext_noodlecore

    def create_connect_args(self, url: Any) -> Any:
        """The URL as a libpq URL DSN for dbapi.connect(); pool options
        (POOL_DEFAULTS' names) from the query go to the native pool.  Several
        ``host=h:port`` query values become libpq's multi-host list."""
        pool, rest = pool_options(dict(url.query))
        hosts = rest.pop("host", None)
        if isinstance(hosts, str):
            hosts = (hosts,)
        netloc = ""
        if url.username is not None:
            netloc = quote(url.username, safe="")
            if url.password is not None:
                netloc += ":" + quote(str(url.password), safe="")
            netloc += "@"
        if hosts:
            netloc += ",".join(hosts)
        elif url.host:
            netloc += ("[%s]" % url.host) if ":" in url.host else url.host
            if url.port:
                netloc += ":%d" % url.port
        dsn = "postgresql://%s/%s" % (netloc, quote(url.database or "", safe=""))
        if rest:
            dsn += "?" + urlencode(rest, doseq=True)
        return [dsn], pool

    def get_isolation_level_values(self, dbapi_connection: Any) -> Any:
        return _LEVELS

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        level = level.replace("_", " ")
        if level == "AUTOCOMMIT":
            dbapi_connection.autocommit = True
            return
        if dbapi_connection.autocommit:
            dbapi_connection.rollback()
            dbapi_connection.autocommit = False
        self._session_characteristics(dbapi_connection, "ISOLATION LEVEL " + level)

    def get_isolation_level(self, dbapi_connection: Any) -> str:
        if dbapi_connection.autocommit:
            return "AUTOCOMMIT"
        return str(super().get_isolation_level(dbapi_connection))

    def detect_autocommit_setting(self, dbapi_connection: Any) -> bool:
        return bool(dbapi_connection.autocommit)

    def set_readonly(self, connection: Any, value: bool) -> None:
        self._session_characteristics(connection, "READ ONLY" if value else "READ WRITE")

    def get_readonly(self, connection: Any) -> bool:
        return self._show(connection, "transaction_read_only") == "on"

    def set_deferrable(self, connection: Any, value: bool) -> None:
        self._session_characteristics(connection, "DEFERRABLE" if value else "NOT DEFERRABLE")

    def get_deferrable(self, connection: Any) -> bool:
        return self._show(connection, "transaction_deferrable") == "on"

    @staticmethod
    def _session_characteristics(dbapi_connection: Any, what: str) -> None:
        # Outside a transaction, so the SET is the session's, not a
        # transaction's that a later rollback would undo.
        autocommit = dbapi_connection.autocommit
        if not autocommit:
            dbapi_connection.rollback()
            dbapi_connection.autocommit = True
        try:
            cur = dbapi_connection.cursor()
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION " + what)
            cur.close()
        finally:
            if not autocommit:
                dbapi_connection.autocommit = False

    @staticmethod
    def _show(dbapi_connection: Any, name: str) -> str:
        cur = dbapi_connection.cursor()
        cur.execute("SHOW " + name)
        value = cur.fetchone()[0]
        cur.close()
        return str(value)


dialect = PGDialect_noodlecore
