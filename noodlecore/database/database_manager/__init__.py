"""DatabaseManager: one object for queries, transactions and table helpers,
over a single pool or over a DatabaseFailoverManager with transparent failover.

::

    from noodlecore.database.database_manager import DatabaseManager

    with DatabaseManager("sqlite:///app.db") as db:          # or DatabaseConfig(...), or nothing
        db.create_table("users", {"id": "INTEGER PRIMARY KEY", "name": "TEXT NOT NULL"})
        db.insert("users", {"id": 1, "name": "Ada"})
        rows = db.select("users", conditions={"id": 1})
        with db.transaction() as tx:
            tx.execute_query("UPDATE users SET name = %s WHERE id = %s", ("Ada L.", 1))

What happens when:

* **Configuration.**  ``config`` is a :class:`DatabaseConfig`, a DSN string or
  None (``DatabaseConfig()``: everything from the NOODLE_DB_* variables).
  With nothing configured the manager uses the embedded default, the SQLite
  file ``<NOODLE_DB_NAME or "noodlecore">.db`` in the current directory.
* **backend_factory.**  None: the native backend the DSN (or each endpoint's
  connection string) names.  A DSN string (as DatabaseConnectionPool takes
  one) is the same as ``config=DSN`` (without failover; not with a config as
  well).  A callable is handed on unchanged, so it follows
  the protocol of what receives it: without failover the
  DatabaseConnectionPool calls ``backend_factory()`` with no arguments; with
  failover the DatabaseFailoverManager calls ``backend_factory(connection_string)``
  once per endpoint connection.
* **Pool options.**  Without failover the pool gets ``max_connections``,
  ``timeout`` and ``retry_attempts`` from the config, then the keyword
  ``pool_options`` on top.  With failover every endpoint's pool is sized by
  ``failover_config`` (``pool_max_connections``, ``pool_timeout``,
  ``pool_options``) with the keyword ``pool_options`` on top; the config's
  connection fields are not used (each endpoint has its own DSN).
* **connect()** builds the pool (or the failover manager, and starts its
  monitoring) and borrows one connection to check it; **disconnect()** /
  **close()** shut everything down (a later connect() starts afresh).  Every
  other operation on a manager that is not connected raises
  :class:`NotConnectedError` with the operation's "no connection" code.
* **Errors** keep their class (an IntegrityError stays an IntegrityError) but
  carry the manager's code of the operation (3005 query failed, 3011 insert
  failed, ...; 3004 for a statement deadline), with the original error as
  ``__cause__``; they also get ``endpoint`` and ``correlation_id``
  attributes.  Exceptions that are not noodlecore errors (a Python backend's
  own, a TypeError for bad arguments) pass through unchanged.
* **Transparent failover** (failover on) in ``execute_query`` and the table
  helpers: a connection-class failure (connection lost or refused, SQLSTATE
  08xxx, 57P01-57P03, no usable endpoint; also 25006 "read-only
  transaction", which the server rejected) is retried once on the (possibly
  new) current endpoint when repeating it is certainly harmless: the
  statement never reached the server (``statement_sent`` is False), or the
  borrow itself failed, or the server rejected it as read-only, or the caller
  passed ``idempotent=True``, or it is a plain SELECT the manager can tell is
  free of side effects (see :func:`is_plain_select`).  Before the retry the
  manager gives the failover manager up to ``failover_retry_wait`` seconds
  (bounded by the call's ``timeout``) to come up with a usable endpoint.
* **Unknown outcome.**  When the connection was lost after a statement that
  may change data was sent, its outcome is unknown: the manager raises
  :class:`OutcomeUnknownError` (3039, naming the endpoint) and never runs it
  again by itself (failover on or off).  ``idempotent=False`` makes even a
  plain SELECT count as one that may change data.
* **Transactions.**  ``transaction()`` yields a :class:`Transaction`; the
  block's statements run on one connection, committed at the end, rolled back
  when the block raises (the exception propagates as it was).  A lost
  connection inside it (a failover, say) rolls it back and raises
  :class:`TransactionError` (3009): nothing of it was applied.  A connection
  lost during COMMIT itself (or during a statement of it that commits,
  such as COMMIT or END sent as SQL) raises OutcomeUnknownError.  On PostgreSQL a
  statement that failed inside the transaction aborts it: committing then
  raises TransactionError instead of silently rolling back (unless a
  ``ROLLBACK TO SAVEPOINT`` recovered it).  ``execute_batch`` runs its
  statements in one transaction the same way; as a batch whose connection was
  lost before COMMIT was certainly rolled back, with failover on it is run
  once more from the start on the new endpoint.
* **Table helpers** quote every identifier (``"..."``, an embedded quote
  doubled), refuse empty names, NUL characters, non-strings and (on
  PostgreSQL) names longer than 63 bytes, and bind every value.  A name is
  one identifier: ``"a.b"`` is a table called ``a.b``, not ``b`` in schema
  ``a``.  ``update`` and ``delete`` refuse missing or empty ``conditions``
  (no accidental whole-table writes: use execute_query for those); a
  condition value None matches with ``IS NULL``.  Column types for
  ``create_table`` must match a conservative grammar (type words with an
  optional ``(n[, m])``, ``[]``, and NOT NULL / NULL / PRIMARY KEY / UNIQUE /
  DEFAULT <number, TRUE, FALSE, NULL, CURRENT_*>); anything else (quotes,
  ``;``, comments, CHECK, REFERENCES, ...) is refused: create such tables with
  execute_query.
* **Logging** goes to ``logging.getLogger("noodlecore.database.manager")``
  only, with ``extra`` fields ``correlation_id`` (one per request and per
  transaction), ``endpoint``, ``duration_ms``, ``error_code`` and
  ``operation``.  Manual failover and recovery are logged at INFO with
  ``triggered_by`` and ``reason`` (the failover manager logs the events).

Where things are (the modules' own docstrings say more): ``manager``, the
DatabaseManager class (arguments, lifecycle, execute_query, failover, health
and stats); ``_retry``, borrowing and the transparent-failover rules;
``_transactions``, execute_batch and transaction(); ``_tables``, the table
helpers; ``_dialect``, what differs between PostgreSQL and SQLite;
``_sqltext``, the questions about SQL text (answered by the C core's lexer).  DatabaseConfig lives in
``noodlecore.database.config``, the exceptions in ``noodlecore.database.errors``.
"""

from ..config import DatabaseConfig
from ..errors import FailoverNotEnabledError, NotConnectedError, OutcomeUnknownError, TransactionError
from ._dialect import quote_identifier
from ._sqltext import is_plain_select
from ._transactions import Transaction
from .manager import DatabaseManager

__all__ = [
    "DatabaseConfig", "DatabaseManager", "Transaction", "OutcomeUnknownError", "TransactionError",
    "FailoverNotEnabledError", "NotConnectedError", "is_plain_select", "quote_identifier",
]
