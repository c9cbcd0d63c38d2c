"""The DB-API connection: a connection borrowed from a native pool, with
PEP 249's transaction rules on top (the binding opens the implicit
transaction; Python only says whether to).
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

from .. import _native
from ..database import errors
from .cursor import Cursor

__all__ = ["Connection"]

_CLOSED = 2024       # DB-API connection or cursor used after close() (nc_error.c)
_TXN_STATE = 2017    # invalid transaction state (nc_error.c)


class Connection:
    """A PEP 249 connection lent by a noodlecore pool.

    Transactional as PEP 249 says: the first statement opens a transaction;
    ``commit()`` and ``rollback()`` end it.  With ``autocommit = True`` each
    statement commits on its own (set it while no transaction is open).
    ``close()`` gives the connection back to its pool, which rolls back an
    open transaction; afterwards the connection and its cursors raise
    InterfaceError (2024); closing twice does not raise.

    As a context manager it behaves like psycopg 3's: leaving the block
    commits (rolls back when the block raised), then closes.

    One thread at a time: a connection used by two threads at once raises
    InterfaceError (2022); give each thread its own (``threadsafety`` 1).
    """

    def __init__(self, pooled: Any, autocommit: bool = False, discard: bool = False, source: Any = None):
        self._pooled: Optional[Any] = pooled
        # what lent it (a DatabaseConnectionPool or DatabaseFailoverManager):
        # the SQLAlchemy dialects drain it on engine.dispose()
        self._source = source
        self._autocommit = bool(autocommit)
        self._discard = discard      # close() closes the native connection instead of pooling it
        self._streamer: Optional["weakref.ref[Cursor]"] = None   # the cursor a stream was started by

    def _live(self) -> Any:
        if self._pooled is None:
            raise _native.make_error(_CLOSED, 0, None, "the connection is closed")
        return self._pooled

    def _idle(self) -> Any:
        """The pooled connection, for a statement: a stream whose cursor was
        dropped unread is ended first (its rows read and dropped)."""
        pooled = self._pooled     # _live(), inlined: this is every statement's path
        if pooled is None:
            raise _native.make_error(_CLOSED, 0, None, "the connection is closed")
        ref = self._streamer
        if ref is not None and ref() is None:
            self._streamer = None
            try:
                pooled._stream_close()
            except errors.Error:
                pass    # the stream is over either way; the statement will tell
        return pooled

    @property
    def closed(self) -> bool:
        return self._pooled is None

    @property
    def autocommit(self) -> bool:
        """True: every statement commits on its own.  False (the default):
        the first statement opens a transaction."""
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        pooled = self._live()
        value = bool(value)
        if value != self._autocommit and pooled.in_transaction:
            raise _native.make_error(_TXN_STATE, 0, None,
                                     "autocommit cannot change while a transaction is open; "
                                     "commit() or rollback() first")
        self._autocommit = value

    @property
    def backend_pid(self) -> Optional[int]:
        """The PostgreSQL server process of the session (None on SQLite)."""
        return self._live().backend_pid

    def cursor(self, stream: bool = False) -> Cursor:
        """A new cursor on this connection's session; ``stream=True``: one
        that reads a query's rows as they are fetched (see Cursor)."""
        self._live()
        return Cursor(self, stream=stream)

    def execute(self, operation: str, parameters: Any = None) -> Cursor:
        """A new cursor with ``operation`` executed on it (the shortcut
        sqlite3 and psycopg 3 connections have; SQLAlchemy's SQLite test
        provisioning uses it)."""
        return self.cursor().execute(operation, parameters)

    def commit(self) -> None:
        """Commit the open transaction (nothing to do when none is open)."""
        self._idle().commit()

    def rollback(self) -> None:
        """Roll the open transaction back (nothing to do when none is open)."""
        self._idle().rollback()

    def close(self) -> None:
        """Give the connection back to its pool (an open transaction is
        rolled back there).  Idempotent."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            if self._discard:
                pooled.discard()
            else:
                pooled.release()

    def __enter__(self) -> "Connection":
        self._live()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._pooled is not None:
                if exc_type is None:
                    self.commit()
                else:
                    self.rollback()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<noodlecore.dbapi.Connection {'closed' if self.closed else repr(self._pooled)}>"


#: PEP 249's exceptions (the module's, and as Connection attributes: the
#: PEP's optional extension); Warning is DatabaseWarning.
PEP249_ERRORS = {"Warning": errors.DatabaseWarning, "Error": errors.Error,
                 **{name: getattr(errors, name) for name in (
                     "InterfaceError", "DatabaseError", "DataError", "OperationalError", "IntegrityError",
                     "InternalError", "ProgrammingError", "NotSupportedError")}}
for _name, _cls in PEP249_ERRORS.items():
    setattr(Connection, _name, _cls)
