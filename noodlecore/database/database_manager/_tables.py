"""The table helpers of DatabaseManager: insert, update, delete, select,
table_exists, get_table_schema, create_table and drop_table.  They build
SQL from quoted identifiers and bound values only (the rules are in the
package docstring) and run it through ``Lending._run``; what differs per
backend comes from ``_dialect``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .. import errors
from ._dialect import quote_for, relation_columns
from ._retry import OP_CODES, Lease, Lending
from ._sqltext import check_column_type


def _count(result: Any) -> int:
    """The number of rows a statement's result stands for (-1: unknown)."""
    if isinstance(result, bool):
        return int(result)
    if isinstance(result, int):
        return result
    if isinstance(result, list):
        return len(result)
    return -1


class TableHelpers(Lending):
    """DatabaseManager's table helpers."""

    def _kind_hint(self) -> str:
        """The backend kind the helpers build SQL for (checked per borrow too)."""
        source = self._source
        if source is None:
            return "unknown"
        return self._current_pool(source)[0].backend_kind

    @staticmethod
    def _bad_arg(op: str, message: str) -> errors.ProgrammingError:
        return errors.ProgrammingError(f"{op}: {message}", OP_CODES[op][1])

    def _ident(self, op: str, name: Any, what: str) -> str:
        # For SQL sent with params, where %% means % even inside a quoted
        # identifier (the core's placeholder rule): a % of the name doubled.
        try:
            return quote_for(self._kind_hint(), name, what).replace("%", "%%")
        except errors.ProgrammingError as exc:
            raise self._bad_arg(op, exc.message) from None

    def _where(self, op: str, qt: str, conditions: Optional[Mapping[str, Any]],
               required: bool) -> Tuple[str, list]:
        # Column references are qualified with the table: SQLite takes an
        # unqualified "name" that is no column for a string literal, so
        # {"nmae": "x"} would otherwise compare 'nmae' = 'x' (or match every
        # row); "table"."nmae" is an error instead.
        if conditions is None or (isinstance(conditions, Mapping) and not conditions):
            if required:
                raise self._bad_arg(op, "conditions are required (a non-empty mapping of column to value); "
                                        "to change every row, use execute_query")
            return "", []
        if not isinstance(conditions, Mapping):
            raise self._bad_arg(op, f"conditions must be a mapping of column to value, not "
                                    f"{type(conditions).__name__}")
        parts, values = [], []
        for col, val in conditions.items():
            q = f'{qt}.{self._ident(op, col, "column name")}'
            if val is None:
                parts.append(f"{q} IS NULL")
            else:
                parts.append(f"{q} = %s")
                values.append(val)
        return " WHERE " + " AND ".join(parts), values

    def _write(self, op: str, what: str, sql: str, params: tuple, timeout: Optional[float]) -> int:
        """Run one data-changing statement (never repeated); its row count."""
        def work(lease: Lease, left: Optional[float]) -> int:
            return _count(lease.conn.execute_query(sql, params, timeout=left))
        return self._run(op, what, work, repeatable=False, timeout=timeout)

    def insert(self, table: str, data: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]],
               timeout: Optional[float] = None) -> int:
        """Insert one row (a mapping of column to value) or several (a list of
        mappings with the same columns, in one transaction); the number of
        rows inserted."""
        op = "insert"
        self._require(op)
        qt = self._ident(op, table, "table name")
        rows = [data] if isinstance(data, Mapping) else data
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
            raise self._bad_arg(op, "data must be a non-empty mapping of column to value, or a non-empty list "
                                    "of them")
        for r in rows:
            if not isinstance(r, Mapping) or not r:
                raise self._bad_arg(op, "every row must be a non-empty mapping of column to value")
        cols = list(rows[0].keys())
        for r in rows[1:]:
            if set(r.keys()) != set(cols):
                raise self._bad_arg(op, "every row must have the same columns")
        qcols = [self._ident(op, c, "column name") for c in cols]
        sql = f"INSERT INTO {qt} ({', '.join(qcols)}) VALUES ({', '.join(['%s'] * len(cols))})"
        values = [tuple(r[c] for c in cols) for r in rows]
        if len(values) == 1:
            return self._write(op, f"insert into {table!r}", sql, values[0], timeout)

        def work(lease: Lease, left: Optional[float]) -> int:
            return _count(lease.conn.execute_many(sql, values, timeout=left))
        return self._run(op, f"insert into {table!r}", work, repeatable=False, timeout=timeout)

    def update(self, table: str, data: Mapping[str, Any], conditions: Mapping[str, Any],
               timeout: Optional[float] = None) -> int:
        """``UPDATE table SET col = value, ... WHERE cond = value AND ...``;
        the number of rows changed.  Empty or missing conditions are refused."""
        op = "update"
        self._require(op)
        qt = self._ident(op, table, "table name")
        if not isinstance(data, Mapping) or not data:
            raise self._bad_arg(op, "data must be a non-empty mapping of column to value")
        sets = [f"{self._ident(op, c, 'column name')} = %s" for c in data]
        where, wvals = self._where(op, qt, conditions, required=True)
        sql = f"UPDATE {qt} SET {', '.join(sets)}{where}"
        return self._write(op, f"update of {table!r}", sql, tuple(data.values()) + tuple(wvals), timeout)

    def delete(self, table: str, conditions: Mapping[str, Any], timeout: Optional[float] = None) -> int:
        """``DELETE FROM table WHERE cond = value AND ...``; the number of rows
        deleted.  Empty or missing conditions are refused."""
        op = "delete"
        self._require(op)
        qt = self._ident(op, table, "table name")
        where, wvals = self._where(op, qt, conditions, required=True)
        return self._write(op, f"delete from {table!r}", f"DELETE FROM {qt}{where}", tuple(wvals), timeout)

    def select(self, table: str, columns: Optional[Sequence[str]] = None,
               conditions: Optional[Mapping[str, Any]] = None, limit: Optional[int] = None,
               timeout: Optional[float] = None, target: str = "primary") -> List[dict]:
        """``SELECT columns FROM table [WHERE ...] [LIMIT n]`` as a list of row
        dicts (no ORDER BY: order rows yourself).  ``columns``: None for all,
        a column name, or a list of them; ``target`` as for execute_query."""
        op = "select"
        self._require(op)
        qt = self._ident(op, table, "table name")
        if columns is None:
            cols = "*"
        else:
            names = [columns] if isinstance(columns, str) else columns
            if not isinstance(names, Iterable) or isinstance(names, (bytes, Mapping)):
                raise self._bad_arg(op, "columns must be None, a column name or a list of them")
            names = list(names)
            if not names:
                raise self._bad_arg(op, "columns must not be empty (None selects every column)")
            qcols = [self._ident(op, c, "column name") for c in names]
            cols = ", ".join(f"{qt}.{qc} AS {qc}" for qc in qcols)      # qualified: see _where
        where, params = self._where(op, qt, conditions, required=False)
        sql = f"SELECT {cols} FROM {qt}{where}"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise self._bad_arg(op, f"limit must be None or an integer >= 0, not {limit!r}")
            sql += " LIMIT %s"
            params.append(limit)
        tparams = tuple(params)

        def work(lease: Lease, left: Optional[float]) -> List[dict]:
            rows = lease.conn.execute_query(sql, tparams, timeout=left)
            return rows if isinstance(rows, list) else []
        return self._run(op, f"select from {table!r}", work, repeatable=True, timeout=timeout, target=target)

    def table_exists(self, name: str, timeout: Optional[float] = None) -> bool:
        """True when a table or view of that name is visible (PostgreSQL: on
        the search path; SQLite: in temp, main or an attached database)."""
        op = "table_exists"
        self._require(op)
        self._ident(op, name, "table name")

        def work(lease: Lease, left: Optional[float]) -> bool:
            return relation_columns(lease.conn, lease.kind, name, op, left) is not None
        return self._run(op, f"table_exists({name!r})", work, repeatable=True, timeout=timeout)

    def get_table_schema(self, name: str, timeout: Optional[float] = None) -> Dict[str, str]:
        """``{column: type}`` in column order (PostgreSQL: format_type, e.g.
        'character varying(20)'; SQLite: the declared type).  A missing table
        raises ProgrammingError 3025."""
        op = "get_table_schema"
        self._require(op)
        self._ident(op, name, "table name")

        def work(lease: Lease, left: Optional[float]) -> Dict[str, str]:
            cols = relation_columns(lease.conn, lease.kind, name, op, left)
            if cols is None:
                raise errors.ProgrammingError(f"there is no table or view {name!r}", 3025, "42P01")
            return dict(cols)
        return self._run(op, f"get_table_schema({name!r})", work, repeatable=True, timeout=timeout)

    def create_table(self, name: str, schema: Mapping[str, str], if_not_exists: bool = False,
                     timeout: Optional[float] = None) -> None:
        """``CREATE TABLE name (column type, ...)``; ``schema`` maps column
        names to SQL types, which must match the conservative grammar of the
        package docstring."""
        op = "create_table"
        self._require(op)
        qt = self._ident(op, name, "table name")
        if not isinstance(schema, Mapping) or not schema:
            raise self._bad_arg(op, "schema must be a non-empty mapping of column name to SQL type")
        parts = []
        for col, typ in schema.items():
            qc = self._ident(op, col, "column name")
            try:
                parts.append(f"{qc} {check_column_type(col, typ)}")
            except errors.ProgrammingError as exc:
                raise self._bad_arg(op, exc.message) from None
        sql = f"CREATE TABLE {'IF NOT EXISTS ' if if_not_exists else ''}{qt} ({', '.join(parts)})"
        self._write(op, f"create_table({name!r})", sql, (), timeout)

    def drop_table(self, name: str, if_exists: bool = False, timeout: Optional[float] = None) -> None:
        """``DROP TABLE [IF EXISTS] name``: a missing table is an error unless
        ``if_exists``."""
        op = "drop_table"
        self._require(op)
        qt = self._ident(op, name, "table name")
        self._write(op, f"drop_table({name!r})", f"DROP TABLE {'IF EXISTS ' if if_exists else ''}{qt}", (), timeout)
