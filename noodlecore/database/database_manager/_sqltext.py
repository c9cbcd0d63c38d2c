"""Every piece of SQL text scanning the manager does, behind three functions:
``is_plain_select`` (may a statement be run again after a lost connection?),
``check_column_type`` (is a create_table column type safe to splice in?) and
``is_rollback_to`` (does a statement recover an aborted PostgreSQL
transaction?).  Nothing else in the package looks inside SQL text.

They scan in Python until the C core exports its lexer; then their bodies
become calls into ``noodlecore._native`` and the rest stays as it is.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional

from .. import errors

__all__ = ["is_plain_select", "check_column_type", "is_rollback_to"]


# -- create_table column types ------------------------------------------------

_WORD = r"[A-Za-z_][A-Za-z0-9_]*"
# Words that start a constraint or clause cannot be part of the type.
_TYPE_WORD = (r"(?!(?:NOT|NULL|PRIMARY|UNIQUE|DEFAULT|KEY|REFERENCES|CHECK|COLLATE|GENERATED|CONSTRAINT|AS|ON"
              r"|USING|FOREIGN|AUTOINCREMENT)\b)" + _WORD)
_TYPE_ARGS = r"\(\s*\d+\s*(?:,\s*\d+\s*)?\)"
_SQL_TYPE = re.compile(
    r"^\s*" + _TYPE_WORD + r"(?:\s+" + _TYPE_WORD + r")*"
    + r"(?:\s*" + _TYPE_ARGS + r")?"
    + r"(?:\s+" + _TYPE_WORD + r")*"
    + r"(?:\s*\[\s*\d*\s*\])*"
    + r"(?:\s+(?:NOT\s+NULL|NULL|PRIMARY\s+KEY(?:\s+AUTOINCREMENT)?|UNIQUE"
    + r"|DEFAULT\s+(?:[-+]?\d+(?:\.\d+)?|TRUE|FALSE|NULL|CURRENT_TIMESTAMP|CURRENT_DATE|CURRENT_TIME)))*"
    + r"\s*$", re.IGNORECASE)


def check_column_type(column: str, sql_type: Any) -> str:
    """``sql_type`` with its white space folded, when it matches the
    conservative grammar of create_table (type words with an optional
    ``(n[, m])``, ``[]``, and NOT NULL / NULL / PRIMARY KEY / UNIQUE /
    DEFAULT <number, TRUE, FALSE, NULL, CURRENT_*>); ProgrammingError naming
    ``column`` otherwise."""
    if not isinstance(sql_type, str):
        raise errors.ProgrammingError(f"the type of column {column!r} must be a string, not "
                                      f"{type(sql_type).__name__}")
    if not _SQL_TYPE.match(sql_type):
        raise errors.ProgrammingError(
            f"the type of column {column!r}, {sql_type!r}, is not accepted: use type words with an optional "
            "(n) or (n, m), [] and NOT NULL, NULL, PRIMARY KEY, UNIQUE or DEFAULT <number, TRUE, FALSE, NULL, "
            "CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME>; create anything else with execute_query")
    return " ".join(sql_type.split())


# -- ROLLBACK TO SAVEPOINT ----------------------------------------------------

_ROLLBACK_TO = re.compile(r"(?is)^\s*rollback\s+(?:work\s+|transaction\s+)?to\b")


def is_rollback_to(sql: Any) -> bool:
    """True when ``sql`` is a ``ROLLBACK [WORK | TRANSACTION] TO ...``, which
    makes an aborted PostgreSQL transaction usable again."""
    return isinstance(sql, str) and _ROLLBACK_TO.match(sql) is not None


# -- telling a plain read for sure -------------------------------------------

# Functions without side effects that a plain read may call (repeating such a
# read changes nothing).  Anything else called -- nextval, set_config,
# pg_advisory_lock, a user function -- makes the statement not "plain".
_SAFE_FUNCTIONS = frozenset("""
count sum avg min max coalesce nullif greatest least lower upper length char_length character_length
octet_length abs round floor ceil ceiling trunc sign mod power sqrt exp ln log random
concat concat_ws substr substring trim ltrim rtrim btrim replace position strpos left right lpad rpad
reverse split_part md5 to_char to_date to_number to_timestamp date_trunc date_part extract age now
clock_timestamp statement_timestamp transaction_timestamp timezone make_date make_timestamp
array_agg string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg bool_and bool_or every
json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb
array_length array_to_string cardinality unnest generate_series
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
inet_server_port inet_server_addr pg_backend_pid pg_is_in_recovery current_database current_schema
current_setting version pg_database_size pg_relation_size pg_total_relation_size format_type to_regclass
typeof ifnull iif instr hex quote sqlite_version total group_concat printf format julianday
date time datetime strftime unixepoch
cast numeric decimal varchar char character timestamp interval bit
""".split())

# Keywords that may stand before a parenthesis.
_PAREN_KEYWORDS = frozenset("""
select from where in exists any all some and or not on as join values over filter within by using
lateral with case when then else is like ilike between union intersect except having group order
limit offset distinct row array recursive materialized varying precision zone
""".split())

# Words that make a SELECT or WITH statement more than a plain read: SELECT
# INTO, FOR UPDATE/SHARE (row locks), data-changing CTEs.  (Other statements
# cannot follow a SELECT without a ';', which is refused.)
_WRITE_WORDS = frozenset("into for insert update delete merge".split())


def _strip_literals(sql: str) -> Optional[str]:
    """sql with '...' strings replaced by '' and "..." identifiers by a
    placeholder word; None when it has anything the scan does not handle
    for sure (backslashes, $, backticks, brackets, comments, an unterminated
    quote)."""
    if any(ch in sql for ch in "\\$`[\0") or "--" in sql or "/*" in sql:
        return None
    out: List[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            j = i + 1
            while True:
                k = sql.find(ch, j)
                if k < 0:
                    return None
                if k + 1 < n and sql[k + 1] == ch:
                    j = k + 2
                    continue
                break
            out.append(" '' " if ch == "'" else " qident ")
            i = k + 1
        else:
            out.append(ch)
            i += 1
    text = "".join(out)
    if "--" in text or "/*" in text:
        return None
    return text


def is_plain_select(sql: Any) -> bool:
    """True when ``sql`` is certainly a single read without side effects, so
    that running it again is harmless: one statement (at most a trailing
    ``;``) starting with SELECT or WITH, with no INTO, FOR UPDATE/SHARE or
    data-changing words, no comments, dollar quotes or backslashes, and
    calling only well-known side-effect-free functions.  Conservative: False
    whenever it cannot tell.  (A SELECT from a view that calls a function
    with side effects cannot be seen from the text: pass idempotent=False.)"""
    if not isinstance(sql, str):
        return False
    text = _strip_literals(sql)
    if text is None:
        return False
    text = text.strip()
    if text.endswith(";"):
        text = text[:-1].rstrip()
    if ";" in text:
        return False
    if not re.match(r"(?i)(select|with)\b", text):
        return False
    low = text.lower()
    words = set(re.findall(r"[a-z_][a-z0-9_$]*", low))
    if words & _WRITE_WORDS:
        return False
    if re.search(r"\.\s*[a-z_][a-z0-9_$]*\s*\(", low):          # schema-qualified call
        return False
    for name in re.findall(r"([a-z_][a-z0-9_$]*)\s*\(", low):
        if name not in _SAFE_FUNCTIONS and name not in _PAREN_KEYWORDS:
            return False
    return True
