"""``postgresql+noodlecore``: SQLAlchemy's PostgreSQL dialect on noodlecore.dbapi."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import TEXT
from sqlalchemy import cast as sa_cast
from sqlalchemy import type_coerce
from sqlalchemy.dialects.postgresql import JSON, JSONB, ranges
from sqlalchemy.dialects.postgresql.base import PGDialect, PGExecutionContext
from sqlalchemy.dialects.postgresql.pg8000 import PGDialect_pg8000
from sqlalchemy.sql import sqltypes

from ._common import NoodleDialectMixin, failover_manager_for, failover_options, pool_options, switch_autocommit

_LEVELS = ("AUTOCOMMIT", "READ COMMITTED", "READ UNCOMMITTED", "REPEATABLE READ", "SERIALIZABLE")


_server_side_id = itertools.count(1)


class _ServerSideCursor:
    """SQLAlchemy's server-side cursor (``stream_results``, ``yield_per``):
    PostgreSQL's own cursor (DECLARE, then FETCH FORWARD n), so a large result
    comes in batches and never sits in memory whole.  Outside a transaction
    (AUTOCOMMIT) it is declared WITH HOLD, which PostgreSQL requires there."""

    server_side = True

    def __init__(self, dbapi_connection: Any, name: str):
        self._dbapi_connection = dbapi_connection
        self.cursor = dbapi_connection.cursor()
        self.name = name
        self.arraysize = 1

    @property
    def connection(self) -> Any:
        return self.cursor.connection

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)

    @property
    def description(self) -> Any:
        return self.cursor.description

    def execute(self, operation: str, parameters: Any = None) -> "_ServerSideCursor":
        hold = " WITH HOLD" if self._dbapi_connection.autocommit else ""
        self.cursor.execute("DECLARE %s NO SCROLL CURSOR%s FOR %s" % (self.name, hold, operation),
                            parameters)
        return self

    def executemany(self, operation: str, seq_of_parameters: Any) -> "_ServerSideCursor":
        self.cursor.executemany(operation, seq_of_parameters)
        return self

    def _fetch(self, how: str) -> Any:
        self.cursor.execute("FETCH FORWARD %s FROM %s" % (how, self.name))
        return self.cursor.fetchall()

    def fetchone(self) -> Any:
        rows = self._fetch("1")
        return rows[0] if rows else None

    def fetchmany(self, size: Any = None) -> Any:
        return self._fetch(str(int(self.arraysize if size is None else size)))

    def fetchall(self) -> Any:
        return self._fetch("ALL")

    def close(self) -> None:
        if not self._dbapi_connection.closed:
            self.cursor.execute("CLOSE " + self.name)
        self.cursor.close()

    def setinputsizes(self, *sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass


class PGExecutionContext_noodlecore(PGExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return _ServerSideCursor(self._dbapi_connection, "nc_ss_%d_%d" % (id(self), next(_server_side_id)))


class _JSONAsText(JSON):
    """JSON read as text, for an engine with its own ``json_deserializer``:
    the driver decodes JSON itself (with json.loads), so the column is
    selected as text and SQLAlchemy's result processor decodes it once, with
    the user's function."""

    render_bind_cast = True

    def column_expression(self, colexpr: Any) -> Any:
        return type_coerce(sa_cast(colexpr, TEXT), self)


class _JSONBAsText(JSONB):
    __doc__ = _JSONAsText.__doc__
    render_bind_cast = True

    def column_expression(self, colexpr: Any) -> Any:
        return type_coerce(sa_cast(colexpr, TEXT), self)


def _colspecs() -> Any:
    # Like pg8000 (binary-free, server-side $n parameters, JSON decoded by the
    # driver): bound values carry a cast where PostgreSQL cannot infer their
    # type, and result types are converted by the description's type OID.  Its
    # range types are its driver's own classes: ours use the base dialect's.
    specs = {k: v for k, v in PGDialect_pg8000.colspecs.items()
             if v.__module__ == "sqlalchemy.dialects.postgresql.pg8000"
             and not v.__name__.startswith("_Pg8000")}
    specs.update({k: v for k, v in PGDialect.colspecs.items()
                  if isinstance(k, type) and issubclass(k, (ranges.AbstractRange,
                                                            ranges.AbstractMultiRange))})
    out = dict(PGDialect.colspecs)
    out.update(specs)
    return out


class PGDialect_noodlecore(NoodleDialectMixin, PGDialect):
    render_bind_cast = True
    supports_native_json_serialization = False
    supports_native_json_deserialization = True
    # a custom json_deserializer: columns read as text (type_descriptor), decoded by SQLAlchemy
    dialect_injects_custom_json_deserializer = False
    colspecs = _colspecs()
    supports_statement_cache = True
    default_paramstyle = "pyformat"
    supports_sane_multi_rowcount = True
    supports_server_side_cursors = True
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
        failover = None
        if hosts and len(hosts) > 1:
            # Several hosts: the failover manager under the engine (its
            # probes find the writable one; target_session_attrs is dropped).
            failover, rest = failover_options(rest)
        dsn = "postgresql://%s/%s" % (netloc, quote(url.database or "", safe=""))
        if rest:
            dsn += "?" + urlencode(rest, doseq=True)
        if failover is not None:
            pool["_noodle_failover"] = failover
        return [dsn], pool

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        failover = cparams.pop("_noodle_failover", None)
        if failover is None:
            return self._noodle_track(self.loaded_dbapi.connect(*cargs, **cparams))
        return self._noodle_track(failover_manager_for(cargs[0], failover, cparams).connect())

    def type_descriptor(self, typeobj: Any) -> Any:
        impl = super().type_descriptor(typeobj)
        if self._json_deserializer is not None and type(impl) in _JSON_IMPLS:
            return impl.adapt(_JSON_IMPLS[type(impl)])
        return impl

    def get_isolation_level_values(self, dbapi_connection: Any) -> Any:
        return _LEVELS

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        level = level.replace("_", " ")
        if switch_autocommit(dbapi_connection, level):
            return
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


_JSON_IMPLS = {PGDialect_noodlecore.colspecs[sqltypes.JSON]: _JSONAsText,
               PGDialect_noodlecore.colspecs[JSONB]: _JSONBAsText}

dialect = PGDialect_noodlecore
