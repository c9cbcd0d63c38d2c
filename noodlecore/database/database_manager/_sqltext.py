"""The three questions the manager asks about SQL text, answered by the C
core's one lexer (csrc/core/nc_lexer.c, nc_sqltext.c): ``is_plain_select``
(may a statement be run again after a lost connection?),
``check_column_type`` (is a create_table column type safe to splice in?) and
``is_rollback_to`` (does a statement recover an aborted PostgreSQL
transaction?).  Nothing in Python scans SQL text.
"""

from __future__ import annotations

from typing import Any

from ... import _native
from .. import errors

__all__ = ["is_plain_select", "check_column_type", "is_rollback_to"]


def check_column_type(column: str, sql_type: Any) -> str:
    """``sql_type`` with its white space folded, when it matches the
    conservative grammar of create_table (type words with an optional
    ``(n[, m])``, ``[]``, and NOT NULL / NULL / PRIMARY KEY / UNIQUE /
    DEFAULT <number, TRUE, FALSE, NULL, CURRENT_*>); ProgrammingError naming
    ``column`` otherwise."""
    if not isinstance(sql_type, str):
        raise errors.ProgrammingError(f"the type of column {column!r} must be a string, not "
                                      f"{type(sql_type).__name__}")
    normalized = _native.sql_column_type(sql_type)
    if normalized is None:
        raise errors.ProgrammingError(
            f"the type of column {column!r}, {sql_type!r}, is not accepted: use type words with an optional "
            "(n) or (n, m), [] and NOT NULL, NULL, PRIMARY KEY, UNIQUE or DEFAULT <number, TRUE, FALSE, NULL, "
            "CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME>; create anything else with execute_query")
    return normalized


def is_rollback_to(sql: Any) -> bool:
    """True when ``sql`` is a ``ROLLBACK [WORK | TRANSACTION] TO ...``, which
    makes an aborted PostgreSQL transaction usable again."""
    return _native.sql_is_rollback_to(sql)


def is_plain_select(sql: Any) -> bool:
    """True when ``sql`` is certainly a single read without side effects, so
    that running it again is harmless: one statement (at most a trailing
    ``;``) starting with SELECT or WITH, with no INTO, FOR UPDATE/SHARE or
    data-changing words, no comments, dollar quotes or backslashes, and
    calling only well-known side-effect-free functions.  Conservative: False
    whenever it cannot tell.  (A SELECT from a view that calls a function
    with side effects cannot be seen from the text: pass idempotent=False.)"""
    return _native.sql_is_plain_select(sql)
