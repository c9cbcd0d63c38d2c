"""PEP 249's type objects and constructors.

A type object (``STRING``, ``BINARY``, ``NUMBER``, ``DATETIME``, ``ROWID``)
compares equal to the type codes in a cursor's ``description`` of its
category: PostgreSQL type OIDs, SQLite declared column types.  Which code
is in which category is the C core's table (csrc/core/nc_types.c), read
through ``_native.type_category``; nothing is listed here.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from .. import _native

__all__ = ["DBAPITypeObject", "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID",
           "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Binary"]


class DBAPITypeObject:
    """One of PEP 249's type categories; ``STRING == description[i][1]``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, DBAPITypeObject):
            return other is self
        return _native.type_category(other) == self.name

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"noodlecore.dbapi.{self.name}"


STRING = DBAPITypeObject("STRING")
BINARY = DBAPITypeObject("BINARY")
NUMBER = DBAPITypeObject("NUMBER")
DATETIME = DBAPITypeObject("DATETIME")
ROWID = DBAPITypeObject("ROWID")

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> datetime.date:
    """The local date of a POSIX timestamp (as PEP 249 says: local time)."""
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:
    """The local time of day of a POSIX timestamp."""
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:
    """The local date and time of a POSIX timestamp."""
    return Timestamp(*time.localtime(ticks)[:6])
