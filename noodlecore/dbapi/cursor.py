"""The DB-API cursor: statements through the pooled connection's
``_execute`` (the C binding runs them and returns description, rows,
row count and rowid), fetching from the rows it returned.

A cursor holds the whole result of its last statement (the binding reads
it in one go); ``fetch*`` hands it out.  A streaming cursor
(``connection.cursor(stream=True)``) holds ``itersize`` rows at most: the
binding reads the rest as they are fetched.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Tuple

from .. import _native
from ..database import errors

if TYPE_CHECKING:   # pragma: no cover
    from .connection import Connection

__all__ = ["Cursor"]

_CLOSED = 2024       # DB-API connection or cursor used after close() (nc_error.c)
_NO_RESULT = 2025    # fetch without a result set (nc_error.c)


def _error(code: int, message: str) -> Exception:
    # the class is the core's for the code
    return _native.make_error(code, 0, None, message)


class Cursor:
    """A PEP 249 cursor of a ``noodlecore.dbapi`` connection.

    ``execute(sql, params)`` runs one statement (``%s`` with a sequence,
    ``%(name)s`` with a mapping; with params given, ``%%`` is a ``%``
    everywhere; without, the SQL is sent as it is).  Cursors of one
    connection share its session and so its transaction.  ``fetchone``,
    ``fetchmany`` (``arraysize`` rows, default 1), ``fetchall`` and
    iteration give tuples; they raise ProgrammingError (2025) before any
    ``execute`` and after a statement that returned no rows.  A closed
    cursor, or one of a closed connection, raises InterfaceError (2024);
    closing twice does not.

    ``stream=True``: the rows of a query are read as they are fetched,
    ``itersize`` (default 2000) at a time (PostgreSQL: libpq's single-row
    mode; SQLite: the statement is stepped on), so a large result never sits
    in memory at once; ``rowcount`` is -1 until the last row was fetched.
    While a stream is open its connection runs nothing else (InterfaceError
    2026): fetch to the end, or ``close()`` the cursor or run another
    statement on it (PostgreSQL reads the rest and drops it, SQLite just
    stops).  Closing the connection meanwhile: on PostgreSQL the session is
    closed rather than pooled.
    """

    def __init__(self, connection: "Connection", stream: bool = False):
        self._connection = connection
        self._closed = False
        self._stream = bool(stream)
        self._streaming = False     # rows still to come from the server
        self._count = 0             # rows of the stream so far
        #: streaming cursors: how many rows one round of fetching reads.
        self.itersize = 2000
        self._rows: Optional[List[Tuple[Any, ...]]] = None
        self._pos = 0
        #: PEP 249: a sequence of 7-item tuples, or None after a statement without a result set.
        self.description: Optional[List[Tuple[Any, ...]]] = None
        #: rows returned or affected by the last statement; -1 where not known (DDL).
        self.rowcount = -1
        #: SQLite: the rowid of the row the last INSERT added; None otherwise.
        self.lastrowid: Optional[int] = None
        #: how many rows fetchmany() returns by default.
        self.arraysize = 1

    @property
    def connection(self) -> "Connection":
        """The connection this cursor belongs to (PEP 249 extension)."""
        return self._connection

    @property
    def closed(self) -> bool:
        return self._closed or self._connection.closed

    def _pooled(self, statement: bool = False) -> Any:
        if self._closed:
            raise _error(_CLOSED, "the cursor is closed")
        return self._connection._idle() if statement else self._connection._live()

    def _end_stream(self) -> None:
        # the rest of a stream read and dropped (the connection is free again)
        if self._streaming:
            self._streaming = False
            if not self._connection.closed:
                try:
                    self._connection._live()._stream_close()
                except errors.Error:
                    pass    # the stream is over either way; the next statement tells

    def _forget(self) -> None:
        self._end_stream()
        self._rows = None
        self._pos = 0
        self.description = None
        self.rowcount = -1
        self.lastrowid = None

    def execute(self, operation: str, parameters: Any = None) -> "Cursor":
        """Run one statement; returns the cursor (so ``cur.execute(...).fetchall()`` works).

        Outside autocommit mode the first statement opens a transaction
        that ``commit()`` or ``rollback()`` of the connection ends."""
        if self._closed:
            raise _error(_CLOSED, "the cursor is closed")
        pooled = self._connection._idle()
        if self._streaming:
            self._end_stream()
        # _forget(), inlined (the hot path): what stays if the statement fails
        self._rows = None
        self._pos = 0
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        desc, rows, count, rowid = pooled._execute(operation, parameters,
                                                   begin=not self._connection._autocommit, stream=self._stream)
        if self._stream and desc is not None and count == -1:
            self._streaming = True      # rows holds the first row; the rest is on its way
            self._count = len(rows)
            self._connection._streamer = weakref.ref(self)
        self.description = desc
        self._rows = rows
        self.rowcount = count
        self.lastrowid = rowid
        return self

    def executemany(self, operation: str, seq_of_parameters: Any) -> "Cursor":
        """Run one statement once per parameter set (in one transaction);
        ``rowcount`` is the total of rows affected."""
        pooled = self._pooled(statement=True)
        self._forget()
        if not self._connection.autocommit and not pooled.in_transaction:
            pooled.begin()
        self.rowcount = pooled.execute_many(operation, seq_of_parameters)
        return self

    def _result(self, want: int = 1) -> List[Tuple[Any, ...]]:
        # the rows at hand; a stream reads more first when fewer than want
        # are left (want < 0: all)
        pooled = self._pooled()
        if self._rows is None:
            raise _error(_NO_RESULT, "no result set to fetch from: no statement was executed yet, "
                                     "or the last one returned no rows")
        if self._streaming and (want < 0 or len(self._rows) - self._pos < want):
            rows = self._rows = self._rows[self._pos:]   # the unread rows, then more of them
            self._pos = 0
            while self._streaming and (want < 0 or len(rows) < want):
                try:
                    more, done = pooled._stream_fetch(max(self.itersize, want, 1))
                except BaseException:
                    self._streaming = False     # an error ends the stream
                    raise
                rows.extend(more)
                self._count += len(more)
                if done:
                    self._streaming = False
                    self.rowcount = self._count
        return self._rows

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        """The next row, or None when there are no more."""
        rows = self._rows
        if rows is None or self._streaming or self._closed or self._connection._pooled is None:
            rows = self._result(1)      # the checks (and their errors), a stream's next rows
        pos = self._pos
        if pos >= len(rows):
            return None
        self._pos = pos + 1
        return rows[pos]

    def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        """Up to ``size`` (default ``arraysize``) next rows."""
        n = self.arraysize if size is None else size
        rows = self._result(n)
        start = self._pos
        self._pos = min(len(rows), start + max(0, n))
        return rows[start:self._pos]

    def fetchall(self) -> List[Tuple[Any, ...]]:
        """All remaining rows."""
        rows = self._result(-1)
        start, self._pos = self._pos, len(rows)
        return rows[start:]

    def __iter__(self) -> Iterator[Tuple[Any, ...]]:
        return self

    def __next__(self) -> Tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def setinputsizes(self, sizes: Sequence[Any]) -> None:
        """PEP 249: may do nothing, and does nothing."""

    def setoutputsize(self, size: int, column: Optional[int] = None) -> None:
        """PEP 249: may do nothing, and does nothing."""

    def close(self) -> None:
        """Close the cursor (its result is dropped; a stream's remaining rows
        are read and dropped); closing twice does not raise."""
        self._end_stream()
        self._closed = True
        self._rows = None

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<noodlecore.dbapi.Cursor {'closed' if self.closed else 'open'}>"
