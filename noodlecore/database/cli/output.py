"""What noodlecore-db writes and how it exits.

Owns: the program name and exit statuses (UsageError is exit 2), colour
(Style: only on a terminal and without NO_COLOR), plain-text tables, JSON
output, durations and sizes as text, error lines on stderr, and the log
format the command gives the library's loggers.  The commands decide what to
say; this module decides how it looks.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
from typing import Any, Optional

PROG = "noodlecore-db"
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input found after argument parsing (exit status 2)."""


def is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class Style:
    """ANSI colours, only on a terminal and without NO_COLOR."""

    CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, enabled: bool):
        self.enabled = enabled

    @classmethod
    def for_stdout(cls, json_mode: bool = False) -> "Style":
        return cls(not json_mode and is_tty() and "NO_COLOR" not in os.environ
                   and os.environ.get("TERM") != "dumb")

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        return "\x1b[" + ";".join(self.CODES[s] for s in styles) + "m" + text + "\x1b[0m"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def render_table(rows: list, style: Optional[Style] = None) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0].keys())
    cells = [[str(r.get(c)) for c in cols] for r in rows]
    width = lambda s: len(_ANSI.sub("", s))  # noqa: E731
    widths = [max(len(c), *(width(row[i]) for row in cells)) for i, c in enumerate(cols)]
    pad = lambda s, w: s + " " * (w - width(s))  # noqa: E731
    head = "  ".join(pad(c, w) for c, w in zip(cols, widths)).rstrip()
    if style:
        head = style(head, "bold")
    sep = "  ".join("-" * w for w in widths)
    body = "\n".join("  ".join(pad(v, w) for v, w in zip(row, widths)).rstrip() for row in cells)
    return f"{head}\n{sep}\n{body}"


def print_error(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


def _json_default(o: Any) -> Any:
    import decimal
    import uuid
    if isinstance(o, decimal.Decimal):
        return float(o)
    if isinstance(o, (datetime.datetime, datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).hex()
    if isinstance(o, uuid.UUID):
        return str(o)
    return str(o)


def print_json(obj: Any, **kw: Any) -> None:
    print(json.dumps(obj, default=_json_default, **kw), flush=True)


def fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


# ---------------------------------------------------------------------------
# logging (the library only has loggers; the CLI gives them a handler)
# ---------------------------------------------------------------------------

class LogFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` with the structured extras."""

    _STD = set(vars(logging.LogRecord("x", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in self._STD and not k.startswith("_")}
        if extras:
            text += "  " + " ".join(f"{k}={v!r}" for k, v in extras.items())
        return text


def setup_logging(level: str) -> None:
    logger = logging.getLogger("noodlecore")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False

