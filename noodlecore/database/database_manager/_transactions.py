"""Transactions and batches: ``execute_batch`` (its statements in one
transaction, run once more from the start when its connection was lost
before COMMIT and failover is on), ``transaction()`` and the
:class:`Transaction` it yields, with the rules for a connection lost inside
a transaction or during COMMIT and for PostgreSQL's aborted transactions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

from ... import _native
from .. import errors
from ..connection_pool import PooledConnection
from ._dialect import failed_statement_aborts_transaction, statement_effect
from ._retry import (
    Lease, Lending, classify_failure, code_of, fail, left, log, log_event, lost_cause, new_id, outcome_is_unknown,
    outcome_unknown, rewrap,
)
from ._sqltext import is_rollback_to


def quiet_rollback(conn: PooledConnection) -> None:
    """Roll back after a failure; a failure of the rollback itself is only logged."""
    try:
        conn.rollback()
    except Exception:
        log.debug("rollback after a failure raised", exc_info=True)


def _batch_items(queries: Iterable[Union[str, Tuple[str, Any]]]) -> List[Tuple[str, Any]]:
    items: List[Tuple[str, Any]] = []
    for i, item in enumerate(queries):
        if isinstance(item, str):
            items.append((item, None))
        elif isinstance(item, (tuple, list)) and len(item) in (1, 2) and isinstance(item[0], str):
            items.append((item[0], item[1] if len(item) == 2 else None))
        else:
            raise errors.ProgrammingError(
                f"execute_batch: item {i} must be a query string or a (query, params) pair, not {item!r}", 3007)
    return items


class Transactions(Lending):
    """DatabaseManager's execute_batch and transaction()."""

    def execute_batch(self, queries: Iterable[Union[str, Tuple[str, Any]]],
                      timeout: Optional[float] = None) -> List[Any]:
        """Run ``[(query, params), ...]`` (a bare string means no params) in
        one transaction; the list of their results.  Any failure rolls the
        whole batch back: a statement's error keeps its class, with code 3007
        and a ``batch_index`` attribute; a lost connection raises
        TransactionError (3007) -- after one more run on the new endpoint when
        failover is on -- or OutcomeUnknownError if it was lost during COMMIT."""
        op = "execute_batch"
        items = _batch_items(queries)
        source = self._require(op)
        cid = new_id()
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        retried = False
        endpoint: Optional[str] = None
        while True:
            lease = self._borrow(source, op, op, cid, t0, deadline, endpoint)
            endpoint = lease.endpoint
            conn = lease.conn
            results: List[Any] = []
            stage, index = "begin", -1
            try:
                conn.begin()
                stage = "statements"
                for index, (q, p) in enumerate(items):
                    results.append(conn.execute_query(q, p, timeout=left(deadline)))
                stage = "commit"
                conn.commit()
                self._note_write()
            except BaseException as exc:
                quiet_rollback(conn)
                lease.release()
                failure = classify_failure(exc)
                if not failure.connection:
                    what = {"begin": "execute_batch BEGIN", "commit": "execute_batch COMMIT"}.get(
                        stage, f"execute_batch statement {index}")
                    new = fail(exc, op, cid, endpoint, t0, what)
                    if isinstance(new, errors.Error):
                        new.batch_index = index if stage == "statements" else None
                    if new is exc:
                        raise
                    raise new from exc
                if stage == "commit" and outcome_is_unknown(failure, _native.EFFECT_COMMIT, True):
                    raise outcome_unknown(
                        exc, f"execute_batch: the outcome is unknown: the connection to endpoint {endpoint!r} was "
                        f"lost during COMMIT, so the batch may or may not have been applied; it was not run again "
                        f"(cause: {lost_cause(exc)})", op, cid, endpoint, t0) from lost_cause(exc)
                if stage == "statements" and outcome_is_unknown(
                        failure, statement_effect(lease.kind, items[index][0]), True):
                    # a statement of the batch that commits (COMMIT, END ...): what it committed may stand
                    raise outcome_unknown(
                        exc, f"execute_batch: the outcome is unknown: the connection to endpoint {endpoint!r} was "
                        f"lost during statement {index}, which commits, so the batch may or may not have been "
                        f"applied; it was not run again (cause: {lost_cause(exc)})", op, cid, endpoint,
                        t0) from lost_cause(exc)
                if source.failover is not None and not retried:
                    retried = True
                    log_event(logging.WARNING, "execute_batch: connection lost on endpoint %r before COMMIT (%s); "
                              "the batch was rolled back, running it once more", endpoint, exc, op=op, cid=cid,
                              endpoint=endpoint, t0=t0, code=code_of(exc), retry=True)
                    continue
                new = errors.TransactionError(
                    f"execute_batch: the connection to endpoint {endpoint!r} was lost before COMMIT; the batch was "
                    f"rolled back, nothing of it was applied (cause: {exc})", 3007)
                new.endpoint, new.correlation_id = endpoint, cid
                log_event(logging.WARNING, "%s", new.message, op=op, cid=cid, endpoint=endpoint, t0=t0, code=3007,
                          cause_code=code_of(exc))
                raise new from exc
            lease.release()
            log_event(logging.DEBUG, "execute_batch ok (%d statements)", len(items), op=op, cid=cid,
                      endpoint=endpoint, t0=t0, retried=retried)
            return results

    def _begin(self, op: str, cid: str, t0: float, deadline: Optional[float]) -> Lease:
        """Borrow and BEGIN; with failover, once more when the connection was
        lost before anything of the transaction ran."""
        source = self._require(op)
        may_retry = source.failover is not None
        while True:
            lease = self._borrow(source, op, op, cid, t0, deadline)
            try:
                lease.conn.begin()
                return lease
            except BaseException as exc:
                lease.release()
                if may_retry and classify_failure(exc).connection:
                    may_retry = False
                    continue
                if not isinstance(exc, errors.Error):
                    raise
                new = errors.TransactionError(
                    f"transaction: BEGIN failed on endpoint {lease.endpoint!r}: {exc.message}",
                    3009, exc.sqlstate, exc.server_message)
                new.endpoint, new.correlation_id = lease.endpoint, cid
                log_event(logging.WARNING, "%s", new.message, op=op, cid=cid, endpoint=lease.endpoint, t0=t0,
                          code=3009, cause_code=exc.error_code)
                raise new from exc

    @contextlib.contextmanager
    def transaction(self, timeout: Optional[float] = None) -> Iterator["Transaction"]:
        """A context manager yielding a :class:`Transaction`: commits when the
        block ends, rolls back when it raises (the exception propagates as it
        was).  ``timeout`` bounds borrowing the connection.  A lost
        connection (a failover) inside it: TransactionError (3009), all of it
        rolled back; lost during COMMIT: OutcomeUnknownError."""
        op = "transaction"
        cid = new_id()
        t0 = time.monotonic()
        lease = self._begin(op, cid, t0, None if timeout is None else t0 + timeout)
        endpoint = lease.endpoint
        tx = Transaction(lease, cid)
        log_event(logging.DEBUG, "transaction begun", op=op, cid=cid, endpoint=endpoint, t0=t0)
        try:
            try:
                yield tx
            except BaseException as exc:
                tx._done = True
                quiet_rollback(lease.conn)
                log_event(logging.DEBUG, "transaction rolled back: %s", exc.__class__.__name__, op=op, cid=cid,
                          endpoint=endpoint, t0=t0, code=code_of(exc))
                raise
            tx._done = True
            if tx._failed is not None or tx._aborted is not None:
                cause = tx._failed if tx._failed is not None else tx._aborted
                quiet_rollback(lease.conn)
                if tx._failed is not None:
                    msg = (f"the transaction was rolled back: the connection to endpoint {endpoint!r} was "
                           f"lost inside it; nothing of it was applied (cause: {cause})")
                else:
                    msg = (f"the transaction was rolled back: a statement failed inside it, which aborts a "
                           f"PostgreSQL transaction; nothing of it was applied (cause: {cause})")
                new = errors.TransactionError(msg, 3009)
                new.endpoint, new.correlation_id = endpoint, cid
                log_event(logging.WARNING if tx._failed is not None else logging.DEBUG, "%s", msg, op=op,
                          cid=cid, endpoint=endpoint, t0=t0, code=3009)
                raise new from cause
            try:
                lease.conn.commit()
            except BaseException as exc:
                quiet_rollback(lease.conn)
                failure = classify_failure(exc)
                if outcome_is_unknown(failure, _native.EFFECT_COMMIT, True):
                    raise outcome_unknown(
                        exc, f"transaction: the outcome is unknown: the connection to endpoint {endpoint!r} was "
                        f"lost during COMMIT, so the transaction may or may not have been applied (cause: "
                        f"{lost_cause(exc)})", op, cid, endpoint, t0) from lost_cause(exc)
                if not isinstance(exc, errors.Error):
                    raise
                msg = (f"transaction: COMMIT failed on endpoint {endpoint!r}, the transaction was "
                       f"rolled back: {exc.message}")
                if failure.connection:
                    new = errors.TransactionError(msg, 3009, exc.sqlstate, exc.server_message)
                else:
                    new = rewrap(exc, 3009, msg, endpoint, cid)
                new.endpoint, new.correlation_id = endpoint, cid
                log_event(logging.WARNING, "%s", new.message, op=op, cid=cid, endpoint=endpoint, t0=t0,
                          code=3009, cause_code=code_of(exc))
                raise new from exc
            self._note_write()
            log_event(logging.DEBUG, "transaction committed", op=op, cid=cid, endpoint=endpoint, t0=t0)
        finally:
            tx._done = True
            lease.release()


class Transaction:
    """What ``DatabaseManager.transaction()`` yields: ``execute_query`` on the
    transaction's connection, plus ``endpoint``, ``correlation_id`` and
    ``connection`` (the PooledConnection).  Valid inside the with-block only."""

    def __init__(self, lease: Lease, cid: str):
        self._lease = lease
        self.correlation_id = cid
        self.endpoint = lease.endpoint
        self._done = False
        self._failed: Optional[BaseException] = None      # connection lost: rolled back
        self._aborted: Optional[BaseException] = None     # PostgreSQL: a statement failed

    @property
    def connection(self) -> PooledConnection:
        return self._lease.conn

    def execute_query(self, query: str, params: Any = None, timeout: Optional[float] = None) -> Any:
        """Run one statement inside the transaction (rows or a count).  Errors
        keep their class with code 3005; a lost connection raises
        TransactionError (3009): the transaction was rolled back."""
        if self._done:
            raise errors.InterfaceError("this transaction is over (its with-block has ended)", 2016)
        if self._failed is not None:
            raise errors.TransactionError(
                f"the transaction was already rolled back: the connection to endpoint {self.endpoint!r} was "
                f"lost ({self._failed})", 3009) from self._failed
        t0 = time.monotonic()
        try:
            result = self._lease.conn.execute_query(query, params, timeout=timeout)
        except BaseException as exc:
            failure = classify_failure(exc)
            if failure.connection:
                self._failed = exc
                quiet_rollback(self._lease.conn)
                if outcome_is_unknown(failure, statement_effect(self._lease.kind, query), True):
                    # the statement commits (COMMIT, END ...): what it committed may stand
                    raise outcome_unknown(
                        exc, f"transaction: the outcome is unknown: the connection to endpoint {self.endpoint!r} "
                        f"was lost during a statement that commits, so the transaction may or may not have been "
                        f"applied (cause: {lost_cause(exc)})", "transaction", self.correlation_id, self.endpoint,
                        t0) from lost_cause(exc)
                new = errors.TransactionError(
                    f"the connection to endpoint {self.endpoint!r} was lost inside the transaction; it was "
                    f"rolled back, nothing of it was applied (cause: {exc})", 3009)
                new.endpoint, new.correlation_id = self.endpoint, self.correlation_id
                log_event(logging.WARNING, "%s", new.message, op="transaction", cid=self.correlation_id,
                          endpoint=self.endpoint, t0=t0, code=3009, cause_code=code_of(exc))
                raise new from exc
            if failed_statement_aborts_transaction(self._lease.kind) and isinstance(exc, errors.Error):
                self._aborted = exc
            new = fail(exc, "query", self.correlation_id, self.endpoint, t0, "query in transaction")
            if new is exc:
                raise
            raise new from exc
        if self._aborted is not None and is_rollback_to(query):
            self._aborted = None
        log_event(logging.DEBUG, "query in transaction ok", op="transaction", cid=self.correlation_id,
                  endpoint=self.endpoint, t0=t0)
        return result
