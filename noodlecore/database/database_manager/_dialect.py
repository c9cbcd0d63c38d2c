"""What differs between PostgreSQL, SQLite and a Python backend, for the
manager: which kind a borrowed connection is, identifier quoting and its
length limit, the catalog queries (a relation's columns, the server's
version, size and table count), whether a failed statement aborts the
transaction around it, and what a statement may leave behind (the core's
reading, in the connection's dialect).  SQL that depends on the backend is written here only.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from ... import _native
from .. import errors
from ..connection_pool import PooledConnection

POSTGRESQL = "postgresql"
SQLITE = "sqlite"
PYTHON = "python"

# PostgreSQL silently truncates longer names (NAMEDATALEN - 1); refusing them
# keeps "a name is one identifier" true.  SQLite has no limit.
_IDENTIFIER_BYTES = {POSTGRESQL: 63}


def connection_kind(conn: PooledConnection) -> str:
    """POSTGRESQL, SQLITE or PYTHON for a borrowed connection."""
    if conn.backend is not None:
        return PYTHON
    if conn.backend_pid is not None:
        return POSTGRESQL
    return SQLITE


def quote_identifier(name: Any, what: str = "identifier", max_bytes: Optional[int] = None) -> str:
    """``name`` as one double-quoted SQL identifier (embedded quotes doubled).

    Raises ProgrammingError for a non-string, an empty name, a NUL character,
    or a name longer than ``max_bytes`` UTF-8 bytes."""
    if not isinstance(name, str):
        raise errors.ProgrammingError(f"{what} must be a string, not {type(name).__name__}")
    if name == "":
        raise errors.ProgrammingError(f"{what} must not be empty")
    if "\0" in name:
        raise errors.ProgrammingError(f"{what} {name!r} contains a NUL character, which SQL cannot name")
    if max_bytes is not None and len(name.encode("utf-8", "surrogatepass")) > max_bytes:
        raise errors.ProgrammingError(
            f"{what} {name!r} is longer than {max_bytes} bytes (PostgreSQL would silently truncate it)")
    return '"' + name.replace('"', '""') + '"'


def quote_for(kind: str, name: Any, what: str) -> str:
    """quote_identifier with the length limit of backend ``kind``."""
    return quote_identifier(name, what, _IDENTIFIER_BYTES.get(kind))


def failed_statement_aborts_transaction(kind: str) -> bool:
    """PostgreSQL refuses every statement after a failed one until ROLLBACK
    (or ROLLBACK TO SAVEPOINT); SQLite carries on."""
    return kind == POSTGRESQL


def relation_columns(conn: PooledConnection, kind: str, name: str, op: str,
                     timeout: Optional[float]) -> Optional[List[Tuple[str, str]]]:
    """[(column, type), ...] of table or view ``name``, None when there is
    none (PostgreSQL: on the search path; SQLite: in temp, main or an
    attached database).  NotSupportedError for a Python backend."""
    if kind == POSTGRESQL:
        rows = conn.execute_query(
            "SELECT k.oid IS NOT NULL AS found, a.attname AS name, "
            "format_type(a.atttypid, a.atttypmod) AS type "
            "FROM (SELECT (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(%s) "
            "AND c.relkind IN ('r', 'p', 'v', 'm', 'f')) AS oid) k "
            "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum", (quote_for(kind, name, "table name"),), timeout=timeout)
        if not rows or not rows[0]["found"]:
            return None
        return [(r["name"], r["type"]) for r in rows if r["name"] is not None]
    if kind == SQLITE:
        rows = conn.execute_query(
            "SELECT name, type FROM pragma_table_info(%s) ORDER BY cid", (name,), timeout=timeout)
        return [(r["name"], r["type"]) for r in rows] if rows else None
    raise errors.NotSupportedError(f"{op} needs a native PostgreSQL or SQLite backend, not {kind!r}")


_STATS_SQL = {
    POSTGRESQL: (
        "SELECT current_setting('server_version') AS v, pg_database_size(current_database()) AS size, "
        "(SELECT count(*) FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n "
        "ON n.oid = k.relnamespace WHERE k.relkind IN ('r', 'p') AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%') AS tables"),
    SQLITE: (
        "SELECT sqlite_version() AS v, (SELECT page_count FROM pragma_page_count()) * "
        "(SELECT page_size FROM pragma_page_size()) AS size, (SELECT count(*) FROM sqlite_master "
        "WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_') AS tables"),
}


def server_stats(conn: PooledConnection, kind: str, timeout: Optional[float]) -> dict:
    """``{"server_version", "database_size" (bytes), "table_count"}``; all
    None for a Python backend (nothing to ask)."""
    sql = _STATS_SQL.get(kind)
    if sql is None:
        return {"server_version": None, "database_size": None, "table_count": None}
    row = conn.execute_query(sql, (), timeout=timeout)[0]
    return {"server_version": row["v"], "database_size": int(row["size"]), "table_count": int(row["tables"])}


def statement_effect(kind: str, sql: Any) -> int:
    """What ``sql`` may leave behind once it ran (``_native.EFFECT_*``, the
    core's nc_sql_effect): a commit, a plain read, or a write (also anything
    that is not a str)."""
    if not isinstance(sql, str):
        return _native.EFFECT_WRITE
    return _native.sql_effect(sql, _native.DIALECT_SQLITE if kind == SQLITE else _native.DIALECT_PG)
