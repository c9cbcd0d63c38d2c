"""Borrowing and the statement path with transparent failover: where a
connection comes from (a pool or a failover manager), which failures are
connection failures (``classify_failure``, the one place that decides it),
when a statement is run once more and when its outcome is unknown, and how
errors are rewrapped with the manager's codes and logged.

``Lending`` is the part of DatabaseManager that the other parts build on:
``_run`` borrows, runs a piece of work, gives the connection back and applies
the retry rules of the package docstring.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from ... import _native
from .. import errors
from ..connection_pool import DatabaseConnectionPool, PooledConnection
from ..failover_manager import DatabaseEndpoint, DatabaseFailoverManager
from ..routing import check_target
from ._dialect import connection_kind

log = logging.getLogger("noodlecore.database.manager")

# operation -> ("no connection" code, "failed" code): the core's code table
OP_CODES = errors.operation_codes()


# ---------------------------------------------------------------------------
# classifying a failure
# ---------------------------------------------------------------------------

class Failure(NamedTuple):
    connection: bool     # the connection or the endpoint failed, not the SQL: another endpoint may do better
    not_applied: bool    # the statement certainly took no effect (never sent, or refused as read-only)


def classify_failure(exc: BaseException) -> Failure:
    """What a failure of a borrow or a statement means for the retry rules,
    as the exception says it: the C core marks every error it raises (and
    every exception a Python backend raises through a pool) with
    ``connection_failure`` and ``not_applied`` from its tables
    (csrc/core/nc_error.c: a lost or refused connection, no usable endpoint,
    a write refused as read-only; never sent, or refused before running);
    errors made in Python get them from the same tables.  Anything else is no
    connection failure."""
    return Failure(connection=bool(getattr(exc, "connection_failure", False)),
                   not_applied=bool(getattr(exc, "not_applied", False)))


def outcome_is_unknown(failure: Failure, effect: int, in_transaction: bool = False) -> bool:
    """Whether a failure of a statement that may leave ``effect`` behind
    (``_native.EFFECT_NONE`` / ``EFFECT_WRITE`` / ``EFFECT_COMMIT``) leaves
    its outcome unknown: the C core's rule (nc_outcome_unknown), the same one
    a DatabaseFailoverManager's connections raise OutcomeUnknownError by."""
    return _native.outcome_unknown(failure.connection, failure.not_applied, effect, in_transaction)


# ---------------------------------------------------------------------------
# borrowing
# ---------------------------------------------------------------------------

class Lease:
    """A borrowed connection, where it came from, and how to give it back."""

    __slots__ = ("conn", "endpoint", "kind", "_release")

    def __init__(self, conn: PooledConnection, endpoint: Optional[str], kind: str, release: Callable[[], Any]):
        self.conn = conn
        self.endpoint = endpoint
        self.kind = kind
        self._release = release

    def release(self) -> None:
        r, self._release = self._release, None
        if r is not None:
            r()


class Source:
    """What connect() built: a pool or a failover manager."""

    def __init__(self, pool: Optional[DatabaseConnectionPool] = None,
                 failover: Optional[DatabaseFailoverManager] = None):
        self.pool = pool
        self.failover = failover


def lend_from(source: Source, timeout: Optional[float], target: str = "primary",
              written_at: float = 0.0) -> Lease:
    """One borrow from the pool, or from the failover manager's endpoint for
    ``target`` (the core chooses; a plain pool has no standbys); written_at:
    read your writes (DatabaseFailoverManager._lend)."""
    check_target(target)
    if source.failover is not None:
        fo = source.failover
        conn, eid = fo._lend(timeout, target, written_at)
        try:
            kind = connection_kind(conn)
        except BaseException:
            fo._give_back(conn)
            raise
        return Lease(conn, eid, kind, lambda: fo._give_back(conn))
    if target == "standby":
        raise errors.OperationalError(
            'target="standby": this manager has one database (no failover endpoints), no standby', 4017)
    pool = source.pool
    conn = pool.acquire(timeout)
    return Lease(conn, pool.target, pool.backend_kind, conn.release)


def lend(source: Source, deadline: Optional[float], wait_until: Optional[float],
         target: str = "primary", written_at: float = 0.0) -> Lease:
    """Borrow; with failover, a borrow that fails for connection reasons is
    tried again (nothing was sent) until ``wait_until``."""
    while True:
        try:
            return lend_from(source, left(deadline), target, written_at)
        except BaseException as exc:
            now = time.monotonic()
            if (source.failover is None or wait_until is None or not classify_failure(exc).connection
                    or now >= wait_until or (deadline is not None and now >= deadline)):
                raise
            time.sleep(0.02)


def preferred_endpoint(endpoints: List[DatabaseEndpoint]) -> DatabaseEndpoint:
    """The endpoint the failover manager prefers: is_primary, else the lowest priority number."""
    return min(endpoints, key=lambda e: (not e.is_primary, e.priority))


def new_id() -> str:
    return uuid.uuid4().hex


def left(deadline: Optional[float]) -> Optional[float]:
    """Seconds until ``deadline`` (a monotonic time; None: no deadline)."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


# ---------------------------------------------------------------------------
# errors and logs
# ---------------------------------------------------------------------------

def log_event(level: int, msg: str, *args: Any, op: str, cid: str, endpoint: Optional[str] = None,
              t0: Optional[float] = None, code: Optional[int] = None, **more: Any) -> None:
    """Log on noodlecore.database.manager with the structured ``extra`` fields."""
    if not log.isEnabledFor(level):
        return
    extra = {"correlation_id": cid, "endpoint": endpoint,
             "duration_ms": round((time.monotonic() - t0) * 1000.0, 3) if t0 is not None else None,
             "error_code": code, "operation": op}
    extra.update(more)
    log.log(level, msg, *args, extra=extra)


def code_of(exc: BaseException) -> Optional[int]:
    return getattr(exc, "error_code", None)


def rewrap(exc: BaseException, code: int, message: str, endpoint: Optional[str], cid: str) -> BaseException:
    """The same class as exc with the manager's code (exc becomes the cause)."""
    if not isinstance(exc, errors.Error):
        return exc
    cls = type(exc)
    try:
        new = cls(message, code, exc.sqlstate, exc.server_message)
    except Exception:
        new = errors.DatabaseError(message, code, exc.sqlstate, exc.server_message)
    # what the core said of the cause stays true of the rewrapped error
    for name in ("statement_sent", "connection_failure", "not_applied"):
        if name in vars(exc):
            setattr(new, name, getattr(exc, name))
    new.endpoint = endpoint
    new.correlation_id = cid
    return new


def fail(exc: BaseException, op: str, cid: str, endpoint: Optional[str], t0: float, what: str) -> BaseException:
    """Log a failed operation and build what to raise: a noodlecore error
    rewrapped with the operation's "failed" code (3004 for a statement
    deadline), anything else as it is."""
    code = OP_CODES[op][1]
    if op == "query" and isinstance(exc, errors.QueryTimeoutError):
        code = 3004
    if isinstance(exc, errors.OutcomeUnknownError):
        code = exc.error_code     # the failover connection's verdict stays what it says (3039)
    if isinstance(exc, errors.Error):
        new = rewrap(exc, code, f"{what} failed on endpoint {endpoint!r}: {exc.message}", endpoint, cid)
    else:
        new = exc
    level = logging.WARNING if classify_failure(exc).connection else logging.DEBUG
    log_event(level, "%s failed: %s", what, exc, op=op, cid=cid, endpoint=endpoint, t0=t0,
              code=code_of(new), cause_code=code_of(exc))
    return new


def lost_cause(exc: BaseException) -> BaseException:
    """The lost-connection error behind ``exc``: a failover connection's own
    OutcomeUnknownError carries it as its cause (the manager's keeps it so)."""
    if isinstance(exc, errors.OutcomeUnknownError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def outcome_unknown(exc: BaseException, message: str, op: str, cid: str, endpoint: Optional[str],
                    t0: float) -> errors.OutcomeUnknownError:
    """Log (at ERROR) and build the OutcomeUnknownError for ``exc``, a
    connection lost after something that may change data was sent."""
    new = errors.OutcomeUnknownError(message, None, getattr(exc, "sqlstate", None),
                                     getattr(exc, "server_message", None))
    new.endpoint = endpoint
    new.correlation_id = cid
    new.statement_sent = getattr(exc, "statement_sent", None)
    log_event(logging.ERROR, "%s", message, op=op, cid=cid, endpoint=endpoint, t0=t0, code=new.error_code,
              cause_code=code_of(exc))
    return new


# ---------------------------------------------------------------------------
# the statement path with transparent failover
# ---------------------------------------------------------------------------

class Lending:
    """Borrowing and running work for DatabaseManager, whose ``__init__``
    and ``connect()`` set these attributes."""

    _source: Optional[Source]
    failover_retry_wait: float
    failover_endpoints: List[DatabaseEndpoint]
    read_your_writes: bool
    _session: threading.local     # read_your_writes: this thread's last write (time.monotonic())

    def _note_write(self) -> None:
        """A write of this session (thread) completed now."""
        if self.read_your_writes:
            self._session.written_at = time.monotonic()

    def _written_at(self, target: str) -> float:
        # The core's clock is CLOCK_MONOTONIC, as time.monotonic() on Linux.
        if not self.read_your_writes or target == "primary":
            return 0.0
        return getattr(self._session, "written_at", 0.0)

    def _require(self, op: str) -> Source:
        source = self._source
        if source is None:
            code = OP_CODES.get(op, (3003, 3005))[0]
            raise errors.NotConnectedError(
                f"{op}: the DatabaseManager is not connected; call connect() first (or use it in a with-block)",
                code)
        return source

    def _borrow(self, source: Source, op: str, what: str, cid: str, t0: float, deadline: Optional[float],
                endpoint: Optional[str] = None, target: str = "primary") -> Lease:
        """Borrow for ``op``; with failover wait up to ``failover_retry_wait``
        (bounded by ``deadline``) for a usable endpoint.  A failure raises
        the operation's "no connection" code, naming ``endpoint`` (where a
        previous attempt ran, if any)."""
        wait_until = None
        if source.failover is not None:
            wait_until = time.monotonic() + self.failover_retry_wait
            if deadline is not None:
                wait_until = min(wait_until, deadline)
        try:
            return lend(source, deadline, wait_until, target, self._written_at(target))
        except errors.Error as exc:
            code = OP_CODES[op][0]
            new = rewrap(exc, code, f"{what}: no connection: {exc.message}", endpoint, cid)
            log_event(logging.WARNING, "%s: no connection: %s", what, exc.message, op=op, cid=cid,
                      endpoint=endpoint, t0=t0, code=code, cause_code=exc.error_code)
            raise new from exc

    def _current_pool(self, source: Source) -> Tuple[DatabaseConnectionPool, Optional[str]]:
        """The pool borrows come from now and its endpoint (the preferred
        endpoint's pool, and None, during an outage)."""
        if source.failover is None:
            return source.pool, source.pool.target
        fo = source.failover
        eid = fo.current_endpoint
        if eid is None:
            return fo.get_pool(preferred_endpoint(self.failover_endpoints).id), None
        return fo.get_pool(eid), eid

    def _run(self, op: str, what: str, work: Callable[[Lease, Optional[float]], Any], *,
             repeatable: bool, timeout: Optional[float], cid: Optional[str] = None,
             target: str = "primary", write: Optional[bool] = None) -> Any:
        """Borrow, run ``work(lease, seconds_left)``, give back; the failover
        and error rules of the package docstring.  ``repeatable``: running the
        work twice is harmless; ``target``: where the borrow goes
        (DatabaseFailoverManager.get_connection); ``write``: the work writes
        (read_your_writes notes it; default: not repeatable)."""
        source = self._require(op)
        check_target(target)      # a bad argument, not a failure to borrow
        cid = cid or new_id()
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        retried = False
        endpoint: Optional[str] = None
        while True:
            lease = self._borrow(source, op, what, cid, t0, deadline, endpoint, target)
            endpoint = lease.endpoint
            try:
                result = work(lease, left(deadline))
            except BaseException as exc:
                lease.release()
                failure = classify_failure(exc)
                if failure.connection and source.failover is not None and not retried \
                        and (failure.not_applied or repeatable):
                    retried = True
                    log_event(logging.WARNING, "%s: connection failure on endpoint %r (%s); running it once more "
                              "on the current endpoint", what, endpoint, exc, op=op, cid=cid, endpoint=endpoint,
                              t0=t0, code=code_of(exc), retry=True)
                    continue
                if outcome_is_unknown(failure, _native.EFFECT_NONE if repeatable else _native.EFFECT_WRITE):
                    raise outcome_unknown(
                        exc, f"{what}: the outcome is unknown: the connection to endpoint {endpoint!r} was lost "
                        f"after the statement was sent, so it may or may not have been applied; it was not run "
                        f"again (cause: {lost_cause(exc)})", op, cid, endpoint, t0) from lost_cause(exc)
                new = fail(exc, op, cid, endpoint, t0, what)
                if new is exc:
                    raise
                raise new from exc
            lease.release()
            if target == "primary" and (not repeatable if write is None else write):
                self._note_write()
            log_event(logging.DEBUG, "%s ok", what, op=op, cid=cid, endpoint=endpoint, t0=t0, retried=retried)
            return result
