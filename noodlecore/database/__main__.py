"""noodlecore-db: the command line of noodlecore.database.

  noodlecore-db demo [--postgres | --db DSN] [--threads N] [--pool-size N] [--seconds S] [--json]
      Worker threads under load through pools, an outage of the preferred
      endpoint, the failover and the failback the native monitor decides, and
      the final stats.  By default on two embedded SQLite files, no server
      needed, the outage SIMULATED by a flag (and said so); with --postgres on
      a throwaway PostgreSQL primary and streaming standby: a real SIGKILL of
      the primary and a pg_ctl promote.  With --db, a single pool on that DSN
      (no outage).
  noodlecore-db query DSN SQL [--param name=value ...] [--json]
      Run one statement and print the rows as a table.
  noodlecore-db status --endpoint ID=DSN [...] [--timeout S] [--json]
      One probe per endpoint: up/down, role, latency, replication lag.
  noodlecore-db watch --endpoint ID=DSN [...] [--interval S] [--count N] [--json]
      The status, refreshed.
  noodlecore-db bench [--builtin] [--dsn DSN] [--seconds S] [--json] [-- ARGS for bench/run.py]
      The pool benchmark (bench/run.py of a source checkout) or a built-in
      micro-bench of borrow/return and SELECT 1.

Exit status: 0 success; 1 a database, server or scenario failure (an endpoint
down, a query error, an unreachable server); 2 bad usage or input (unknown
command or option, a malformed DSN or parameter); 128+N on signal N (130 on
Ctrl-C).  Errors go to stderr as "noodlecore-db: [code] message".
Colour and live displays appear only when stdout is a terminal (and NO_COLOR
is unset); --json prints machine-readable output only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import pathlib
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .config import redact_dsn
from .connection_pool import DatabaseConnectionPool
from .errors import ConfigurationError, Error
from .failover_manager import DatabaseEndpoint, DatabaseFailoverManager, FailoverConfig

PROG = "noodlecore-db"
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
TABLE = "noodlecore_demo_orders"
STOP_WORKERS_TIMEOUT = 15.0


class UsageError(Exception):
    """Bad input found after argument parsing (exit status 2)."""


class _Terminated(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# ---------------------------------------------------------------------------
# output helpers
# ---------------------------------------------------------------------------

def _isatty() -> bool:
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
        return cls(not json_mode and _isatty() and "NO_COLOR" not in os.environ
                   and os.environ.get("TERM") != "dumb")

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        return "\x1b[" + ";".join(self.CODES[s] for s in styles) + "m" + text + "\x1b[0m"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _table(rows: list, style: Optional[Style] = None) -> str:
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


def _err(msg: str) -> None:
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


def _print_json(obj: Any, **kw: Any) -> None:
    print(json.dumps(obj, default=_json_default, **kw), flush=True)


def _ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _bytes(n: Optional[float]) -> str:
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

class _LogFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` with the structured extras."""

    _STD = set(vars(logging.LogRecord("x", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in self._STD and not k.startswith("_")}
        if extras:
            text += "  " + " ".join(f"{k}={v!r}" for k, v in extras.items())
        return text


def _setup_logging(level: str) -> None:
    logger = logging.getLogger("noodlecore")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False


# ---------------------------------------------------------------------------
# the demo's workload
# ---------------------------------------------------------------------------

INSERT_SQL = f"INSERT INTO {TABLE} (id, worker, amount) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING"
SELECT_SQL = f"SELECT count(*) AS n FROM {TABLE} WHERE worker = %(w)s"
CREATE_SQL = f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGINT PRIMARY KEY, worker INTEGER, amount REAL)"


class Workload:
    """Worker threads: one INSERT in four, else a SELECT, each with a
    borrowed connection.  An operation that raises is retried with the same
    id (the INSERT is idempotent) for up to 10 s before it counts as a
    failure."""

    def __init__(self, borrow: Callable[..., Any], threads: int, give_up_after: float = 10.0):
        self.borrow = borrow
        self.nthreads = threads
        self.give_up_after = give_up_after
        self.base = random.randrange(1, 2 ** 31) << 31
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._count = [dict(ops=0, inserts=0, retried=0, failures=0) for _ in range(threads)]
        self.last_errors: List[str] = []
        self.crashed: List[BaseException] = []

    def _worker(self, k: int) -> None:
        c = self._count[k]
        i = 0
        first_error = None
        try:
            while not self._stop.is_set():
                ins = i % 4 == 0
                try:
                    with self.borrow(timeout=5) as conn:
                        if ins:
                            conn.execute_query(INSERT_SQL, (self.base + i * self.nthreads + k, k,
                                                           5 + (i * 37 % 9500) / 100))
                        else:
                            conn.execute_query(SELECT_SQL, {"w": k})
                except Exception as exc:    # the pool's errors, and a Python backend's own
                    c["retried"] += 1
                    if len(self.last_errors) < 20:
                        self.last_errors.append(f"{type(exc).__name__}: {exc}")
                    now = time.monotonic()
                    first_error = first_error or now
                    if now - first_error < self.give_up_after:
                        self._stop.wait(0.02)
                        continue
                    c["failures"] += 1       # given up: the next operation
                    first_error = None
                    i += 1
                    continue
                first_error = None
                c["ops"] += 1
                c["inserts"] += ins
                i += 1
        except BaseException as exc:  # pragma: no cover - reported as a failure
            self.crashed.append(exc)

    def start(self) -> None:
        for k in range(self.nthreads):
            t = threading.Thread(target=self._worker, args=(k,), name=f"demo-worker-{k}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        """Stop the workers and wait for them (idempotent)."""
        self._stop.set()
        deadline = time.monotonic() + STOP_WORKERS_TIMEOUT
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def total(self, key: str) -> int:
        return sum(c[key] for c in self._count)


def _sum_stats(stats: List[Any]) -> dict:
    """PoolStats of several pools as one dict with the PoolStats keys: counts
    summed, mean wait weighted, percentiles the largest of the pools (an
    upper bound), health the lowest."""
    ds = [s.to_dict() for s in stats]
    out = {}
    for key in ds[0]:
        vals = [d[key] for d in ds]
        if key == "connection_wait_time":
            acq = sum(d["acquires"] for d in ds)
            out[key] = sum(d[key] * d["acquires"] for d in ds) / acq if acq else 0.0
        elif key in ("acquire_wait_p50", "acquire_wait_p99"):
            out[key] = max(vals)
        elif key == "pool_health_score":
            out[key] = min(vals)
        elif key == "closed":
            out[key] = all(vals)
        else:
            out[key] = sum(vals)
    return out


class Display:
    """Prints the demo as it happens: timeline lines as they come and, on a
    terminal, a live progress line.  One thread does all the printing."""

    def __init__(self, live: bool, quiet: bool, style: Style, progress: Callable[[], str]):
        self.live = live
        self.quiet = quiet
        self.style = style
        self.progress = progress
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.timeline: List[dict] = []
        self._q: "queue.Queue[str]" = queue.Queue()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def at(self, wall: Optional[float] = None) -> float:
        return round((wall if wall is not None else time.time()) - self.wall0, 3)

    def note(self, what: str, text: str, wall: Optional[float] = None, colour: Optional[str] = None,
             **data: Any) -> dict:
        entry = {"at": self.at(wall), "what": what, "text": text}
        entry.update(data)
        with self._lock:
            self.timeline.append(entry)
        stamp = self.style("+%6.2f s" % entry["at"], "dim")
        line = f"  {stamp}  {self.style(text, colour) if colour else text}"
        self._q.put(line)
        return entry

    def say(self, text: str) -> None:
        self._q.put(text)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self._thread = threading.Thread(target=self._run, name="demo-display", daemon=True)
        self._thread.start()

    def _flush(self) -> bool:
        printed = False
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return printed
            if not self.quiet:
                if self.live:
                    sys.stdout.write("\r\x1b[K")
                sys.stdout.write(line + "\n")
                printed = True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(0.1)

    def _tick(self) -> None:
        try:
            self._flush()
            if self.live and not self.quiet:
                sys.stdout.write("\r\x1b[K" + self.progress())
            if not self.quiet:
                sys.stdout.flush()
        except Exception:   # never let the display kill the demo (e.g. a closed pool)
            pass

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._flush()
        if self.live and not self.quiet:
            sys.stdout.write("\r\x1b[K")
        if not self.quiet:
            sys.stdout.flush()


# ---- the simulated SQLite endpoints ----------------------------------------

_PARAM = re.compile(r"%\((\w+)\)s|%s")


class SimServer:
    """One simulated endpoint: a SQLite file and a ``down`` flag.  While
    down it refuses new connections and fails health checks (the native
    monitor's probes and the pool's checks of idle connections); a
    statement on a session already handed to a worker still completes."""

    def __init__(self, eid: str, path: str):
        self.id = eid
        self.path = path
        self.down = False
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(CREATE_SQL)
            db.commit()

    def factory(self, connection_string: str = "") -> "SimBackend":
        return SimBackend(self)


class SimBackend:
    """A Python backend (see DatabaseConnectionPool) over sqlite3."""

    def __init__(self, server: SimServer):
        if server.down:
            raise ConnectionRefusedError(f"endpoint {server.id}: connection refused (simulated outage)")
        self.server = server
        self.db = sqlite3.connect(server.path, timeout=10, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA synchronous=OFF")

    def execute_query(self, sql: str, params: Any = None) -> Any:
        if sql == "SELECT 1" and params == {} and self.server.down:
            # the health check of the pool and of the native monitor
            raise ConnectionError(f"endpoint {self.server.id}: no answer (simulated outage)")
        if params:
            sql = _PARAM.sub(lambda m: f":{m.group(1)}" if m.group(1) else "?", sql)
        cur = self.db.execute(sql, params if params else ())
        if cur.description:
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
        return cur.rowcount

    def close(self) -> None:
        self.db.close()


# ---- demo: shared pieces ------------------------------------------------------

def _event_text(ev: Any, when: str, style: Style) -> str:
    """One line for a FailoverEvent: what, when (relative to the outage), how long the switch took."""
    kind = ev.metadata.get("kind", "?")
    by = ev.metadata.get("triggered_by", "?")
    if kind in ("failover", "failback", "resumed"):
        colour = "yellow" if kind == "failover" else "green"
        ok = "" if ev.success else style(" FAILED", "red", "bold")
        head = f"{style(kind.upper(), 'bold', colour)} {ev.from_endpoint or '-'} -> {ev.to_endpoint or '-'}{ok}"
        return f"{head}  {when}; switch took {_ms(ev.duration)} [{by}]"
    if kind == "no_target":
        return (f"{style('NO USABLE ENDPOINT', 'bold', 'red')}: {ev.from_endpoint or '-'} failed and no endpoint "
                f"can take over yet  {when} [{by}]")
    return f"{style(kind.upper(), 'bold', 'red')} {ev.from_endpoint or '-'} / {ev.to_endpoint or '-'}  {when} [{by}]"


def _event_dict(ev: Any, display: Display, ref_wall: Optional[float], ref_name: str) -> dict:
    d = ev.to_dict()
    wall = ev.timestamp.timestamp()
    d["kind"] = ev.metadata.get("kind")
    d["at"] = display.at(wall)
    d["after"] = ref_name
    d["seconds_after"] = round(wall - ref_wall, 4) if ref_wall is not None else None
    return d


def _manager_progress(mgr: DatabaseFailoverManager, work: Workload, t0: float, style: Style) -> Callable[[], str]:
    def line() -> str:
        cur = mgr.current_endpoint
        queries = 0
        for e in mgr.endpoints:
            queries += mgr.get_pool(e.id).get_stats().query_count
        el = max(1e-9, time.monotonic() - t0)
        s = mgr.get_pool(cur).get_stats() if cur else None
        busy = (f"in use {s.active_connections}  idle {s.idle_connections}  waiting {s.requests_waiting}"
                if s else style("no usable endpoint", "red"))
        return (f"  {el:5.1f} s  on {style(cur or '-', 'bold')}  queries {queries:,} ({queries / el:,.0f}/s)  "
                f"{busy}  retried {work.total('retried')}")
    return line


def _final_lines(stats: dict, per: Dict[str, dict], elapsed: float, work: Workload, style: Style) -> List[str]:
    q = stats["query_count"]
    lines = [
        f"queries: {q:,} in {elapsed:.1f} s ({q / max(elapsed, 1e-9):,.0f}/s), errors: {stats['error_count']}, "
        f"worker errors (retried): {work.total('retried')}, operations given up: {work.total('failures')}, "
        f"connections opened: {stats['connections_opened']}, acquire wait p50/p99: "
        f"{stats['acquire_wait_p50'] * 1e6:.0f}/{stats['acquire_wait_p99'] * 1e6:.0f} us, "
        f"health: {stats['pool_health_score']}",
    ]
    for eid, s in per.items():
        lines.append(f"  pool {eid}: {s['query_count']:,} queries, {s['error_count']} errors, "
                     f"{s['connections_opened']} opened, {s['connect_failures']} connect failures, "
                     f"{s['validation_failures']} validation failures, {s['acquire_timeouts']} timeouts")
    return lines


def _wait(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ---- demo: SQLite, simulated outage ---------------------------------------

def _demo_sqlite(args: argparse.Namespace, style: Style) -> int:
    s = float(args.seconds)
    outage_at = max(0.15, 0.3 * s)
    outage_len = max(0.3, 0.25 * s)
    rci = min(1.5, max(0.25, 0.15 * s))
    say = (lambda *a: None) if args.json else print
    tmp = tempfile.TemporaryDirectory(prefix="noodlecore-demo-")
    try:
        servers = {eid: SimServer(eid, os.path.join(tmp.name, f"{eid}.db")) for eid in ("a", "b")}
        cfg = FailoverConfig(health_check_interval=0.1, health_check_timeout=1.0, max_failure_count=2,
                             failure_timeout=5, recovery_check_interval=rci, hold_down=min(0.5, rci),
                             failover_timeout=2, pool_max_connections=args.pool_size, pool_timeout=5,
                             pool_options={"ping_after_idle": 0.0})
        endpoints = [DatabaseEndpoint("a", "endpoint a (SQLite a.db)", "sim://a", priority=1, is_primary=True),
                     DatabaseEndpoint("b", "endpoint b (SQLite b.db)", "sim://b", priority=2)]
        say(style(f"noodlecore demo: {args.threads} worker threads, a pool of {args.pool_size} connections "
                  f"per endpoint, {s:g} s", "bold"))
        say(f"  endpoints: a (preferred) and b, two SQLite files in {tmp.name}, through "
            f"DatabaseFailoverManager (native health monitor every 0.1 s)")
        say("  " + style("the outage is SIMULATED", "yellow", "bold") + ": a flag makes endpoint a refuse "
            "connections and fail health checks (nothing crashes, no server is involved); the failover and "
            "the failback are real decisions of the native monitor.  `demo --postgres` does it with a real "
            "crash.")
        with DatabaseFailoverManager(endpoints, lambda cs: servers[cs[-1]].factory(cs), cfg) as mgr, \
                contextlib.ExitStack() as cleanup:
            work = Workload(mgr.get_connection, args.threads)
            display = Display(live=_isatty() and not args.json, quiet=args.json, style=style,
                              progress=lambda: "")
            # also on Ctrl-C or SIGTERM: workers stopped and the display closed before the manager
            cleanup.callback(display.close)
            cleanup.callback(work.stop)
            refs: Dict[str, Optional[float]] = {"down": None, "up": None}
            events: List[dict] = []

            def on_event(ev: Any) -> None:
                kind = ev.metadata.get("kind")
                ref_name = "outage_start" if kind != "failback" else "outage_end"
                d = _event_dict(ev, display, refs["down" if ref_name == "outage_start" else "up"], ref_name)
                events.append(d)
                when = (f"{_ms(d['seconds_after'])} after the outage began" if ref_name == "outage_start"
                        else f"{_ms(d['seconds_after'])} after endpoint a came back")
                display.note(kind, _event_text(ev, when, style), wall=ev.timestamp.timestamp(),
                             event_id=ev.event_id)
                display.say(f"             {style(ev.reason, 'dim')}")

            mgr.add_listener(on_event)
            mgr.start_monitoring()
            display.start()
            t0 = time.monotonic()
            display.progress = _manager_progress(mgr, work, t0, style)
            display.note("load", f"{args.threads} workers start (1 INSERT in 4, else a SELECT)")
            work.start()

            def kinds() -> List[str]:
                return [e["kind"] for e in events]

            _sleep_until(t0 + outage_at)
            refs["down"] = time.time()
            servers["a"].down = True
            display.note("outage_start", "OUTAGE (simulated): endpoint a stops accepting connections and "
                         "answering health checks", wall=refs["down"], colour="red", simulated=True)
            _sleep_until(t0 + outage_at + outage_len)
            # a slow machine: keep a down until the monitor has failed over
            _wait(lambda: "failover" in kinds(), 10)
            refs["up"] = time.time()
            servers["a"].down = False
            display.note("outage_end", "endpoint a is back (simulated): accepting connections again",
                         wall=refs["up"], colour="green", simulated=True)
            _sleep_until(t0 + s)
            _wait(lambda: "failback" in kinds(), 10)
            time.sleep(0.1)
            work.stop()
            elapsed = time.monotonic() - t0
            mgr.get_events()     # deliver anything pending to the listener
            time.sleep(0.05)
            display.close()
            status = mgr.get_status()
            per = {e.id: mgr.get_pool(e.id).get_stats() for e in mgr.endpoints}
        by_ep = {}
        for eid, srv in servers.items():
            with contextlib.closing(sqlite3.connect(srv.path)) as db:
                n, total = db.execute(f"SELECT count(*), coalesce(sum(amount), 0) FROM {TABLE}").fetchone()
            by_ep[eid] = {"orders": n, "total": round(float(total), 2)}
    finally:
        tmp.cleanup()
    stats = _sum_stats(list(per.values()))
    per_d = {k: v.to_dict() for k, v in per.items()}
    failover = next((e for e in events if e["kind"] == "failover"), None)
    failback = next((e for e in events if e["kind"] == "failback"), None)
    problems = _problems(work, failover, failback)
    result = {"orders": sum(v["orders"] for v in by_ep.values()),
              "total": round(sum(v["total"] for v in by_ep.values()), 2)}
    if args.json:
        _print_json({
            "mode": "sqlite", "simulated": True,
            "outage": {"simulated": True, "endpoint": "a",
                       "how": "a flag in the demo's SQLite backend: endpoint a refuses new connections and "
                              "fails health checks (the monitor's probes, the pool's checks of idle "
                              "connections); a statement already running on a borrowed session completes; "
                              "nothing crashes",
                       "start": display.at(refs["down"]), "end": display.at(refs["up"])},
            "events": events, "failover": failover, "recovery": failback, "timeline": display.timeline,
            "stats": stats, "endpoints": per_d, "result": result, "result_by_endpoint": by_ep,
            "failures": work.total("failures"), "retried": work.total("retried"),
            "errors_seen": work.last_errors, "threads": args.threads, "pool_size": args.pool_size,
            "seconds": elapsed, "status": status, "problems": problems,
        })
    else:
        print(_table([{"endpoint": k, **v} for k, v in by_ep.items()], style))
        for line in _final_lines(stats, per_d, elapsed, work, style):
            print(line)
        _print_problems(problems, work, style)
    return EXIT_FAIL if problems else EXIT_OK


def _sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def _problems(work: Workload, failover: Optional[dict], failback: Optional[dict]) -> List[str]:
    out = []
    if work.total("failures"):
        out.append(f"{work.total('failures')} operation(s) failed after 10 s of retries")
    if work.crashed:
        out.append(f"a worker thread died: {work.crashed[0]!r}")
    if failover is None:
        out.append("no failover happened")
    if failback is None:
        out.append("no failback to the preferred endpoint happened")
    return out


def _print_problems(problems: List[str], work: Workload, style: Style) -> None:
    for p in problems:
        _err(p)
    if problems and work.last_errors:
        _err("first errors seen by the workers: " + "; ".join(work.last_errors[:3]))


# ---- demo: PostgreSQL, real crash -------------------------------------------

def _demo_postgres(args: argparse.Namespace, style: Style) -> int:
    from . import _pgdemo

    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    try:
        bindir = _pgdemo.find_bindir()
    except _pgdemo.PgDemoError as exc:
        _err(f"demo --postgres: {exc}")
        return EXIT_FAIL
    s = float(args.seconds)
    t_setup = time.monotonic()
    try:
        cluster = _pgdemo.PgDemoCluster(bindir)
    except _pgdemo.PgDemoError as exc:
        _err(f"demo --postgres: {exc}")
        return EXIT_FAIL
    mgr = None
    display = None
    work = None
    try:
        say(style(f"noodlecore demo --postgres: {args.threads} worker threads, a pool of {args.pool_size} "
                  f"connections per endpoint, at least {s:g} s of load", "bold"))
        who = " as the postgres user" if os.geteuid() == 0 else ""
        say(f"  starting PostgreSQL {cluster.version} ({bindir}){who}: primary a and streaming standby b, "
            f"data in {cluster.root}")
        a = cluster.primary("a")
        a.sql(CREATE_SQL)
        b = cluster.standby(a, "b")
        setup = time.monotonic() - t_setup
        say(f"  ready in {setup:.1f} s: a on port {a.port}, b on port {b.port}; nothing here is simulated")
        cfg = FailoverConfig(health_check_interval=0.1, health_check_timeout=1.0, max_failure_count=2,
                             failure_timeout=5, recovery_check_interval=1.0, hold_down=0.5,
                             failover_timeout=5, pool_max_connections=args.pool_size, pool_timeout=5,
                             pool_options={"connect_timeout": 1, "retry_attempts": 1})
        endpoints = [DatabaseEndpoint("a", "primary a", a.dsn(), priority=1, is_primary=True),
                     DatabaseEndpoint("b", "standby b", b.dsn(), priority=2)]
        mgr = DatabaseFailoverManager(endpoints, config=cfg)
        mgr.start_monitoring()
        ok = _wait(lambda: {k: v["role"] for k, v in mgr.get_status()["endpoints"].items()}
                   == {"a": "primary", "b": "standby"}, 10)
        if not ok:
            raise _pgdemo.PgDemoError(f"the monitor did not see a as primary and b as standby: "
                                      f"{mgr.get_status()['endpoints']}")
        work = Workload(mgr.get_connection, args.threads)
        display = Display(live=_isatty() and not args.json, quiet=args.json, style=style, progress=lambda: "")
        refs: Dict[str, Optional[float]] = {"crash": None, "switchover": None}
        events: List[dict] = []

        def on_event(ev: Any) -> None:
            kind = ev.metadata.get("kind")
            ref_name = "switchover" if refs["switchover"] else "crash"
            d = _event_dict(ev, display, refs[ref_name], ref_name)
            events.append(d)
            what = "the crash" if ref_name == "crash" else "the switchover began"
            when = f"{_ms(d['seconds_after'])} after {what}" if d["seconds_after"] is not None else ""
            display.note(kind, _event_text(ev, when, style), wall=ev.timestamp.timestamp(),
                         event_id=ev.event_id)
            display.say(f"             {style(ev.reason, 'dim')}")

        mgr.add_listener(on_event)
        display.start()
        t0 = time.monotonic()
        display.progress = _manager_progress(mgr, work, t0, style)
        display.note("load", f"{args.threads} workers start (1 INSERT in 4, else a SELECT) on a")
        work.start()
        _sleep_until(t0 + max(1.0, 0.25 * s))

        # 1. crash a, promote b
        pm = a.proc.pid if a.proc else None
        refs["crash"] = time.time()
        display.note("crash", f"CRASH: SIGKILL to a's postmaster (pid {pm}) and all its backends at once",
                     wall=refs["crash"], colour="red", simulated=False)
        a.crash()
        display.note("promote", "promoting b: pg_ctl promote", colour="cyan")
        t = time.monotonic()
        b.promote()
        display.note("promoted", f"b accepts writes (pg_ctl promote -w took {_ms(time.monotonic() - t)})",
                     colour="cyan")
        if not _wait(lambda: mgr.current_endpoint == "b", 20):
            raise _pgdemo.PgDemoError(f"no failover to b within 20 s: {mgr.get_status()}")
        _sleep_until(time.monotonic() + max(0.5, 0.15 * s))

        # 2. a rejoins as a standby of b
        t = time.monotonic()
        cluster.standby(b, node=a)
        display.note("rejoin", f"a rejoined as a streaming standby of b (pg_basebackup, "
                     f"{_ms(time.monotonic() - t)})", colour="cyan")
        _wait(lambda: mgr.get_status()["endpoints"]["a"]["role"] == "standby", 10)
        _sleep_until(time.monotonic() + max(0.5, 0.1 * s))

        # 3. switchover back: stop b cleanly, promote a; the monitor fails back
        cluster.wait_replayed(b, a)
        refs["switchover"] = time.time()
        display.note("switchover", "switchover back to a: stopping b (fast shutdown; a has replayed all of "
                     "its WAL)", wall=refs["switchover"], colour="yellow")
        b.stop()
        display.note("promote", "promoting a: pg_ctl promote", colour="cyan")
        t = time.monotonic()
        a.promote()
        display.note("promoted", f"a accepts writes (pg_ctl promote -w took {_ms(time.monotonic() - t)})",
                     colour="cyan")
        if not _wait(lambda: mgr.current_endpoint == "a" and mgr.current_state.value == "primary", 20):
            raise _pgdemo.PgDemoError(f"no failback to a within 20 s: {mgr.get_status()}")

        # 4. b rejoins as a standby of a: the cluster is as it began
        t = time.monotonic()
        cluster.standby(a, node=b)
        display.note("rejoin", f"b rejoined as a streaming standby of a (pg_basebackup, "
                     f"{_ms(time.monotonic() - t)})", colour="cyan")
        _sleep_until(max(t0 + s, time.monotonic() + 0.5))
        work.stop()
        elapsed = time.monotonic() - t0
        mgr.get_events()
        time.sleep(0.05)
        display.close()
        status = mgr.get_status()
        per = {e.id: mgr.get_pool(e.id).get_stats() for e in mgr.endpoints}
        row = a.sql(f"SELECT count(*) AS orders, coalesce(sum(amount), 0)::float8 AS total FROM {TABLE} "
                    f"WHERE id >= {work.base} AND id < {work.base + 2 ** 31}")[0]
        cluster.wait_replayed(a, b)
        on_b = b.sql(f"SELECT count(*) AS n FROM {TABLE}")[0]["n"]
        probes = [_probe_once(eid, dsn, 3.0) for eid, dsn in (("a", a.dsn()), ("b", b.dsn()))]
    except _pgdemo.PgDemoError as exc:
        if display is not None:
            display.close()
        _err(f"demo --postgres: {exc}")
        return EXIT_FAIL
    finally:
        if work is not None:
            work.stop()
        if display is not None:
            display.close()
        if mgr is not None:
            mgr.shutdown()
        cluster.close()
    stats = _sum_stats(list(per.values()))
    per_d = {k: v.to_dict() for k, v in per.items()}
    failover = next((e for e in events if e["kind"] in ("failover", "resumed") and e["to_endpoint"] == "b"), None)
    failback = next((e for e in events if e["kind"] in ("failback", "failover", "resumed")
                     and e["to_endpoint"] == "a"), None)
    problems = _problems(work, failover, failback)
    acked = work.total("inserts")
    result = {"orders": row["orders"], "total": round(float(row["total"]), 2), "acknowledged_inserts": acked,
              "rows_on_standby_b": on_b}
    if args.json:
        _print_json({
            "mode": "postgres", "simulated": False, "server_version": cluster.version,
            "outage": {"simulated": False, "endpoint": "a",
                       "how": "SIGKILL of the primary's postmaster and backends; the standby promoted with "
                              "pg_ctl promote; later a switchover back (clean stop of b, a promoted)",
                       "start": display.at(refs["crash"])},
            "events": events, "failover": failover, "recovery": failback, "timeline": display.timeline,
            "stats": stats, "endpoints": per_d, "result": result, "failures": work.total("failures"),
            "retried": work.total("retried"), "errors_seen": work.last_errors, "threads": args.threads,
            "pool_size": args.pool_size, "seconds": elapsed, "setup_seconds": setup, "status": status,
            "final_probe": probes, "problems": problems,
        })
    else:
        print(_table([{"orders": row["orders"], "total": result["total"], "acknowledged inserts": acked,
                       "rows on standby b": on_b}], style))
        if acked > row["orders"]:
            print(style(f"  {acked - row['orders']} acknowledged insert(s) were lost: asynchronous replication "
                        "loses what the crashed primary had not yet sent", "yellow"))
        for line in _final_lines(stats, per_d, elapsed, work, style):
            print(line)
        print(_status_table(probes, style))
        _print_problems(problems, work, style)
    return EXIT_FAIL if problems else EXIT_OK


# ---- demo: one pool on a given DSN --------------------------------------------

def _demo_single(args: argparse.Namespace, style: Style) -> int:
    url = args.db
    say = (lambda *a: None) if args.json else print
    say(style(f"noodlecore demo: {args.threads} worker threads on a pool of {args.pool_size} connections "
              f"to {redact_dsn(url)} for {args.seconds:g} s (one endpoint: no outage; run without --db for the "
              "failover demo)", "bold"))
    with DatabaseConnectionPool(url, max_connections=args.pool_size, timeout=10) as pool:
        with pool.get_connection() as conn:
            existed = _table_exists(conn, pool.backend_kind)
            conn.execute_query(CREATE_SQL)
        work = Workload(pool.get_connection, args.threads)
        display = Display(live=_isatty() and not args.json, quiet=args.json, style=style, progress=lambda: "")

        def progress() -> str:
            st = pool.get_stats()
            el = max(1e-9, time.monotonic() - display.t0)
            return (f"  {el:5.1f} s  queries {st.query_count:,} ({st.query_count / el:,.0f}/s)  in use "
                    f"{st.active_connections}  idle {st.idle_connections}  waiting {st.requests_waiting}")

        display.progress = progress
        display.start()
        t0 = time.monotonic()
        work.start()
        _sleep_until(t0 + args.seconds)
        work.stop()
        elapsed = time.monotonic() - t0
        display.close()
        with pool.get_connection() as conn:
            row = conn.execute_query(f"SELECT count(*) AS orders, coalesce(sum(amount), 0) AS total FROM {TABLE} "
                                     f"WHERE id >= {work.base} AND id < {work.base + 2 ** 31}")[0]
            if not existed:
                conn.execute_query(f"DROP TABLE {TABLE}")
        stats = pool.get_stats().to_dict()
    result = {"orders": row["orders"], "total": round(float(row["total"]), 2)}
    problems = [] if not (work.total("failures") or work.crashed) else \
        [f"{work.total('failures')} operation(s) failed"]
    if args.json:
        _print_json({"mode": "single", "simulated": False, "stats": stats, "result": result,
                     "failures": work.total("failures"), "retried": work.total("retried"),
                     "errors_seen": work.last_errors, "seconds": elapsed})
    else:
        print(_table([result], style))
        for line in _final_lines(stats, {}, elapsed, work, style):
            print(line)
        _print_problems(problems, work, style)
    return EXIT_FAIL if problems else EXIT_OK


def _table_exists(conn: Any, kind: str) -> bool:
    if kind == "sqlite":
        q = "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = %s"
    else:
        q = "SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE tablename = %s"
    return bool(conn.execute_query(q, (TABLE,))[0]["n"])


def cmd_demo(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.pool_size < 1:
        raise UsageError("--threads and --pool-size must be at least 1")
    if not 0 < args.seconds <= 300:
        raise UsageError("--seconds must be above 0 and at most 300")
    if args.postgres and args.db:
        raise UsageError("--postgres and --db exclude each other")
    style = Style.for_stdout(args.json)
    if args.postgres:
        return _demo_postgres(args, style)
    if args.db:
        return _demo_single(args, style)
    return _demo_sqlite(args, style)


# ---------------------------------------------------------------------------
# query
# ---------------------------------------------------------------------------

def cmd_query(args: argparse.Namespace) -> int:
    params = {}
    for p in args.param or []:
        if "=" not in p:
            raise UsageError(f"--param {p!r} is not name=value")
        k, v = p.split("=", 1)
        params[k] = v
    if args.timeout <= 0:
        raise UsageError("--timeout must be above 0")
    with DatabaseConnectionPool(args.dsn, max_connections=1, retry_attempts=1,
                                timeout=args.timeout, connect_timeout=args.timeout) as pool:
        with pool.get_connection() as conn:
            result = conn.execute_query(args.sql, params if params else None, timeout=args.timeout)
    if args.json:
        _print_json(result)
    elif isinstance(result, list):
        print(_table(result, Style.for_stdout()))
    else:
        print(f"{result} row(s) affected")
    return EXIT_OK


# ---------------------------------------------------------------------------
# status and watch
# ---------------------------------------------------------------------------

_LIBPQ_KEYS = {"host", "hostaddr", "port", "dbname", "user", "password", "passfile", "connect_timeout",
               "sslmode", "application_name", "options", "service", "target_session_attrs", "sslrootcert",
               "sslcert", "sslkey", "client_encoding", "keepalives", "gssencmode", "krbsrvname"}
_ID = re.compile(r"^([A-Za-z0-9_.:-]+)=(.+)$", re.S)


def parse_endpoint(value: str, n: int) -> tuple:
    """``ID=DSN`` (or a bare DSN, named ep<n>) -> (id, dsn)."""
    value = value.strip()
    m = _ID.match(value)
    if m and m.group(1).lower() not in _LIBPQ_KEYS:
        eid, dsn = m.group(1), m.group(2).strip()
        if "://" in eid:
            raise UsageError(f"--endpoint {redact_dsn(value)!r} is not ID=DSN")
        return eid, dsn
    if "://" in value or "=" in value:
        return f"ep{n}", value
    raise UsageError(f"--endpoint {redact_dsn(value)!r} is not ID=DSN (e.g. primary=postgresql://host/db)")


_PG_PROBE = """SELECT pg_is_in_recovery() AS in_recovery,
  current_setting('default_transaction_read_only') = 'on' AS read_only,
  current_setting('server_version') AS version,
  CASE WHEN pg_is_in_recovery()
       THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS replay_delay,
  CASE WHEN pg_is_in_recovery()
       THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 END AS replay_lag_bytes,
  CASE WHEN pg_is_in_recovery()
       THEN (SELECT status FROM pg_stat_wal_receiver LIMIT 1) END AS receiver_status,
  CASE WHEN pg_is_in_recovery()
       THEN (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver LIMIT 1) END AS upstream"""

_PG_REPLICAS = """SELECT application_name, client_addr::text AS client_addr, state, sync_state,
  pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS lag_bytes,
  extract(epoch FROM replay_lag)::float8 AS lag_seconds
FROM pg_stat_replication ORDER BY application_name"""


class Endpoint:
    """One probed endpoint; keeps its pool (one connection) between probes."""

    def __init__(self, eid: str, dsn: str, timeout: float):
        self.id = eid
        self.dsn = dsn
        self.timeout = timeout
        self.shown = redact_dsn(dsn)
        self.pool: Optional[DatabaseConnectionPool] = None
        self.sqlite_path: Optional[str] = None
        low = dsn.lower()
        if low.startswith("sqlite:"):
            path = dsn[len("sqlite:///"):]
            self.sqlite_path = None if path == ":memory:" else path
        # raises ConfigurationError (2013) for a malformed DSN: bad input, before any probe
        self.pool = DatabaseConnectionPool(dsn, max_connections=1, retry_attempts=1, connect_timeout=timeout,
                                           timeout=timeout, validation_timeout=timeout, query_timeout=timeout,
                                           ping_after_idle=0.0)

    def probe(self) -> dict:
        r: Dict[str, Any] = {"id": self.id, "dsn": self.shown, "backend": self.pool.backend_kind,
                             "state": "down", "up": False, "role": None, "writable": None,
                             "latency_ms": None, "connect_ms": None, "replication": None,
                             "error": None, "error_code": None}
        if self.sqlite_path is not None and not os.path.exists(self.sqlite_path):
            # never create a database file by probing it
            r["error"] = f"no such database file: {self.sqlite_path}"
            return r
        t0 = time.perf_counter()
        try:
            with self.pool.get_connection(timeout=self.timeout) as conn:
                r["connect_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
                t1 = time.perf_counter()
                conn.execute_query("SELECT 1")
                r["latency_ms"] = round((time.perf_counter() - t1) * 1e3, 3)
                if self.pool.backend_kind == "postgresql":
                    self._pg_details(conn, r)
                else:
                    r.update(role="embedded", writable=True, version=sqlite3.sqlite_version)
            r.update(state="up", up=True)
        except Error as exc:
            r["error"] = " ".join(str(exc.message).split())
            r["error_code"] = exc.error_code
        except Exception as exc:   # pragma: no cover - defensive
            r["error"] = f"{type(exc).__name__}: {exc}"
        return r

    @staticmethod
    def _pg_details(conn: Any, r: dict) -> None:
        info = conn.execute_query(_PG_PROBE)[0]
        standby = bool(info["in_recovery"])
        r["role"] = "standby" if standby else "primary"
        r["writable"] = not standby and not info["read_only"]
        r["version"] = info["version"]
        if standby:
            r["replication"] = {
                "lag_bytes": info["replay_lag_bytes"],
                "lag_seconds": info["replay_delay"],
                "receiver": info["receiver_status"],
                "upstream": info["upstream"],
            }
        else:
            reps = conn.execute_query(_PG_REPLICAS)
            lags = [x["lag_bytes"] for x in reps if x["lag_bytes"] is not None]
            secs = [x["lag_seconds"] for x in reps if x["lag_seconds"] is not None]
            r["replication"] = {
                "standbys": reps,
                "lag_bytes": max(lags) if lags else None,
                "lag_seconds": max(secs) if secs else (0.0 if reps else None),
            }

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(timeout=0)


class Prober:
    def __init__(self, specs: List[str], timeout: float):
        if not specs:
            raise UsageError("give at least one --endpoint ID=DSN")
        if timeout <= 0:
            raise UsageError("--timeout must be above 0")
        self.endpoints: List[Endpoint] = []
        seen = set()
        try:
            for n, spec in enumerate(specs, 1):
                eid, dsn = parse_endpoint(spec, n)
                if eid in seen:
                    raise UsageError(f"endpoint id {eid!r} given twice")
                seen.add(eid)
                self.endpoints.append(Endpoint(eid, dsn, timeout))
        except BaseException:
            self.close()
            raise
        self.timeout = timeout

    def probe_all(self) -> List[dict]:
        results: List[Optional[dict]] = [None] * len(self.endpoints)

        def run(i: int, e: Endpoint) -> None:
            results[i] = e.probe()

        threads = [threading.Thread(target=run, args=(i, e), daemon=True) for i, e in enumerate(self.endpoints)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.timeout * 2 + 2
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for i, e in enumerate(self.endpoints):
            if results[i] is None:
                results[i] = {"id": e.id, "dsn": e.shown, "backend": e.pool.backend_kind, "state": "down",
                              "up": False, "role": None, "writable": None, "latency_ms": None,
                              "connect_ms": None, "replication": None,
                              "error": f"no answer within {self.timeout * 2 + 2:g} s", "error_code": None}
        return results  # type: ignore[return-value]

    def close(self) -> None:
        for e in self.endpoints:
            e.close()


def _probe_once(eid: str, dsn: str, timeout: float) -> dict:
    e = Endpoint(eid, dsn, timeout)
    try:
        return e.probe()
    finally:
        e.close()


def _lag_text(r: dict) -> str:
    rep = r.get("replication")
    if not rep:
        return "-"
    if r.get("role") == "standby":
        secs = rep.get("lag_seconds")
        s = f"{_bytes(rep.get('lag_bytes'))} to replay"
        if secs is not None:
            s += f", last replayed xact {secs:.1f} s ago"
        if rep.get("receiver") != "streaming":
            s += f" (wal receiver: {rep.get('receiver') or 'not running'})"
        return s
    n = len(rep.get("standbys") or [])
    if not n:
        return "no standbys"
    secs = rep.get("lag_seconds")
    return (f"{n} standby{'s' if n > 1 else ''}, max {_bytes(rep.get('lag_bytes'))}"
            + (f" / {secs:.2f} s" if secs is not None else ""))


def _status_rows(results: List[dict], style: Style, detail_width: Optional[int] = None) -> List[dict]:
    rows = []
    for r in results:
        up = r["up"]
        rows.append({
            "endpoint": r["id"],
            "state": style("up", "green", "bold") if up else style("down", "red", "bold"),
            "role": (style(r["role"], "cyan") if r["role"] == "primary" else r["role"]) if r["role"] else "-",
            "latency": _ms(r["latency_ms"] / 1e3) if r["latency_ms"] is not None else "-",
            "replication lag": _lag_text(r) if up else "-",
            "detail": (f"PostgreSQL {r.get('version')}" if r["backend"] == "postgresql" else
                       f"SQLite {r.get('version')}") if up else
                      style(_clip((f"[{r['error_code']}] " if r["error_code"] else "") + str(r["error"]),
                                  detail_width), "red"),
        })
    return rows


def _clip(text: str, width: Optional[int]) -> str:
    return text if width is None or len(text) <= width else text[:max(1, width - 3)] + "..."


def _status_table(results: List[dict], style: Style) -> str:
    width = None
    if _isatty():       # on a terminal, keep each endpoint on one line
        import shutil
        width = max(30, shutil.get_terminal_size().columns - 75)
    return _table(_status_rows(results, style, width), style)


def _status_json(results: List[dict]) -> dict:
    return {"checked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "all_up": all(r["up"] for r in results), "endpoints": results}


def cmd_status(args: argparse.Namespace) -> int:
    prober = Prober(args.endpoint or [], args.timeout)
    try:
        results = prober.probe_all()
    finally:
        prober.close()
    if args.json:
        _print_json(_status_json(results))
    else:
        print(_status_table(results, Style.for_stdout()))
    down = [r["id"] for r in results if not r["up"]]
    if down:
        if not args.json:
            _err(f"{len(down)} of {len(results)} endpoint(s) down: {', '.join(down)}")
        return EXIT_FAIL
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be above 0")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    prober = Prober(args.endpoint or [], args.timeout)
    style = Style.for_stdout(args.json)
    live = _isatty() and not args.json
    rc = EXIT_OK
    n = 0
    try:
        while True:
            n += 1
            started = time.monotonic()
            results = prober.probe_all()
            rc = EXIT_OK if all(r["up"] for r in results) else EXIT_FAIL
            now = datetime.datetime.now().astimezone()
            if args.json:
                doc = _status_json(results)
                doc["round"] = n
                _print_json(doc)
            elif live:
                sys.stdout.write("\x1b[H\x1b[2J")
                up = sum(r["up"] for r in results)
                head = (f"{PROG} watch  {now:%H:%M:%S}  every {args.interval:g} s  round {n}"
                        f"{'/' + str(args.count) if args.count else ''}  ")
                summary = style(f"{up}/{len(results)} up", "green" if up == len(results) else "red", "bold")
                sys.stdout.write(style(head, "bold") + summary + "   (Ctrl-C to stop)\n\n")
                sys.stdout.write(_status_table(results, style) + "\n")
                sys.stdout.flush()
            else:
                stamp = now.isoformat(timespec="seconds")
                for r in results:
                    lat = f"{r['latency_ms']:.2f}ms" if r["latency_ms"] is not None else "-"
                    extra = _lag_text(r) if r["up"] else (
                        (f"[{r['error_code']}] " if r["error_code"] else "") + str(r["error"]))
                    print(f"{stamp} round={n} endpoint={r['id']} state={r['state']} role={r['role'] or '-'} "
                          f"latency={lat} {extra}", flush=True)
            if args.count and n >= args.count:
                return rc
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        if live:
            sys.stdout.write("\n")
        return rc
    finally:
        prober.close()


# ---------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------

def _checkout_bench() -> Optional[pathlib.Path]:
    """bench/run.py of a source checkout holding this package, if any."""
    pkg_parent = pathlib.Path(__file__).resolve().parent.parent.parent
    run = pkg_parent / "bench" / "run.py"
    return run if run.is_file() and (pkg_parent / "csrc").is_dir() else None


def _timed(fn: Callable[[], Any], seconds: float) -> dict:
    lat = []
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        if t >= end:
            break
        fn()
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0.0  # noqa: E731
    return {"ops": len(lat), "seconds": round(total, 4), "ops_per_second": round(len(lat) / total, 1),
            "p50_us": round(q(0.5) * 1e6, 2), "p99_us": round(q(0.99) * 1e6, 2)}


def _builtin_bench(args: argparse.Namespace) -> int:
    tmp = None
    dsn = args.dsn
    if dsn is None:
        tmp = tempfile.TemporaryDirectory(prefix="noodlecore-bench-")
        dsn = f"sqlite:///{os.path.join(tmp.name, 'bench.db')}"
    each = args.seconds / 3
    say = (lambda *a: None) if args.json else print
    say(f"built-in micro-bench against {redact_dsn(dsn)}{' (a temporary SQLite file)' if tmp else ''}: "
        f"{each:.2f} s per case, {args.threads} thread(s) in the concurrent case")
    try:
        with DatabaseConnectionPool(dsn, max_connections=max(args.threads, 1), timeout=10,
                                    retry_attempts=1, connect_timeout=10) as pool:
            with pool.get_connection() as c:      # open one before timing
                c.execute_query("SELECT 1")

            def borrow() -> None:
                with pool.get_connection():
                    pass

            def select1() -> None:
                with pool.get_connection() as c:
                    c.execute_query("SELECT 1")

            cases = {"borrow_return": _timed(borrow, each), "borrow_select1_return": _timed(select1, each)}
            results: List[dict] = []

            def worker() -> None:
                results.append(_timed(select1, each))

            threads = [threading.Thread(target=worker) for _ in range(args.threads)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            ops = sum(r["ops"] for r in results)
            cases[f"select1_{args.threads}_threads"] = {
                "ops": ops, "seconds": round(wall, 4), "ops_per_second": round(ops / wall, 1),
                "p50_us": max(r["p50_us"] for r in results), "p99_us": max(r["p99_us"] for r in results)}
            stats = pool.get_stats().to_dict()
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        _print_json({"ran": "builtin", "target": redact_dsn(dsn), "backend": "sqlite" if tmp or
                     dsn.lower().startswith("sqlite") else "postgresql", "cases": cases, "stats": stats})
    else:
        print(_table([{"case": k, "ops": f"{v['ops']:,}", "ops/s": f"{v['ops_per_second']:,.0f}",
                       "p50": f"{v['p50_us']:.1f} us", "p99": f"{v['p99_us']:.1f} us"}
                      for k, v in cases.items()], Style.for_stdout()))
        print("(p50/p99 of the concurrent case: the slowest thread's)")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    if args.seconds <= 0:
        raise UsageError("--seconds must be above 0")
    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    extra = list(args.bench_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    run = None if (args.builtin or args.dsn) else _checkout_bench()
    if extra and run is None:
        raise UsageError("arguments after -- go to bench/run.py, which is not used here "
                         "(--builtin, --dsn, or no source checkout)")
    if run is not None:
        cmd = [sys.executable, str(run)] + (["--quick"] if args.quick else []) + extra
        if args.dry_run:
            if args.json:
                _print_json({"ran": "bench/run.py", "command": cmd, "dry_run": True})
            else:
                print("would run: " + " ".join(cmd))
            return EXIT_OK
        if args.json:
            raise UsageError("--json is for the built-in micro-bench; bench/run.py writes "
                             "bench/results.json itself")
        print(f"running the pool bench of this checkout: {' '.join(cmd)}\n"
              "(a throwaway PostgreSQL server and peer pools in bench/.venv; about 2 minutes, ~15 s with "
              "--quick; results in bench/results.md and bench/results.json)", flush=True)
        return subprocess.call(cmd, cwd=str(run.parent.parent))
    if args.quick:
        raise UsageError("--quick is an option of bench/run.py, which is not used here")
    if args.dry_run:
        target = redact_dsn(args.dsn) if args.dsn else "a temporary SQLite file"
        if args.json:
            _print_json({"ran": "builtin", "target": target, "dry_run": True})
        else:
            print(f"would run the built-in micro-bench against {target}")
        return EXIT_OK
    return _builtin_bench(args)


# ---------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------

def _wrap(text: str, width: int = 79) -> str:
    """Fill the prose paragraphs of a help text; keep indented or option lines as written."""
    import textwrap
    out = []
    for para in text.split("\n\n"):
        if any(line.startswith((" ", "-")) for line in para.splitlines()):
            out.append(para)
        else:
            out.append("\n".join(textwrap.fill(line, width) for line in para.splitlines()))
    return "\n\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout only")
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error", "critical"],
                        help="show the library's log records at this level and above on stderr "
                             "(default: warning; error for demo, which narrates the events itself)")
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog=PROG, formatter_class=fmt,
                                 description=_wrap("noodlecore database pool tools: a demo of pooling and "
                                             "failover, one-off queries, endpoint status, the bench."),
                                 epilog=_wrap("exit status: 0 ok, 1 database/server failure (e.g. an endpoint "
                                        "down), 2 bad usage or input, 130 interrupted.\n"
                                        f"`{PROG} COMMAND --help` describes a command."))
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", parents=[common], formatter_class=fmt,
                       help="pooling under load, an outage, failover and failback (no server needed)",
                       description=_wrap("Worker threads run INSERTs and SELECTs through pools while the preferred "
                                   "endpoint has an outage; the native monitor fails over and back, and the "
                                   "events are shown with their timings, then the final stats.\n\n"
                                   "default      two embedded SQLite files; the outage is SIMULATED "
                                   "(a flag)\n"
                                   "--postgres   a throwaway PostgreSQL primary and streaming standby in "
                                   "/dev/shm:\n"
                                   "             a real SIGKILL of the primary, pg_ctl promote, the old "
                                   "primary\n"
                                   "             rejoining and a switchover back; everything removed at "
                                   "the end\n"
                                   "--db DSN     a single pool on DSN, no outage"))
    d.add_argument("--postgres", action="store_true",
                   help="real servers (needs the PostgreSQL server binaries; as root they run as postgres)")
    d.add_argument("--db", metavar="DSN", help="run the workload on one pool to DSN instead (no failover)")
    d.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    d.add_argument("--pool-size", type=int, default=4, help="connections per endpoint (default 4)")
    d.add_argument("--seconds", type=float, default=6.0, help="seconds of load (default 6)")
    d.set_defaults(func=cmd_demo)

    q = sub.add_parser("query", parents=[common], help="run one statement and print the rows",
                       description=_wrap("Run one statement and print the rows as a table (or JSON)."))
    q.add_argument("dsn", help="postgresql://..., key=value, or sqlite:///path")
    q.add_argument("sql")
    q.add_argument("--param", action="append", metavar="NAME=VALUE", help="a %%(name)s parameter (repeatable)")
    q.add_argument("--timeout", type=float, default=10.0, help="connect and statement deadline (default 10 s)")
    q.set_defaults(func=cmd_query)

    ep_help = ("an endpoint as ID=DSN (repeatable), e.g. primary=postgresql://db1/app; a bare DSN is named "
               "ep1, ep2, ...")
    st = sub.add_parser("status", parents=[common], formatter_class=fmt,
                        help="probe endpoints once: up/down, role, latency, replication lag",
                        description=_wrap("One probe per endpoint (in parallel): up or down, role (primary, "
                                    "standby; embedded for SQLite), latency of a SELECT 1, and replication "
                                    "lag: for a standby the WAL received but not replayed and the age of "
                                    "the last replayed transaction; for a primary the largest lag in "
                                    "pg_stat_replication.\nExit status 1 when any endpoint is down."))
    st.add_argument("--endpoint", action="append", metavar="ID=DSN", help=ep_help)
    st.add_argument("--timeout", type=float, default=3.0, help="deadline of each probe (default 3 s)")
    st.set_defaults(func=cmd_status)

    w = sub.add_parser("watch", parents=[common], help="the status, refreshed",
                       description=_wrap("Probe the endpoints every --interval seconds: a live screen on a "
                                   "terminal, one line per endpoint and round otherwise, JSON Lines with "
                                   "--json. Exit status: that of the last round."))
    w.add_argument("--endpoint", action="append", metavar="ID=DSN", help=ep_help)
    w.add_argument("--interval", type=float, default=2.0, help="seconds between rounds (default 2)")
    w.add_argument("--count", type=int, help="stop after N rounds (default: until Ctrl-C)")
    w.add_argument("--timeout", type=float, default=3.0, help="deadline of each probe (default 3 s)")
    w.set_defaults(func=cmd_watch)

    b = sub.add_parser("bench", parents=[common], formatter_class=fmt, help="the pool benchmark",
                       description=_wrap("In a source checkout: bench/run.py (noodlecore against psycopg_pool, "
                                   "SQLAlchemy, psycopg2 and raw libpq on a throwaway PostgreSQL; about 2 "
                                   "minutes).\nOtherwise, or with --builtin / --dsn: a built-in micro-bench "
                                   "of borrow/return, borrow+SELECT 1, and SELECT 1 from several threads, "
                                   "against --dsn or a temporary SQLite file.\nThe output says which ran."))
    b.add_argument("--builtin", action="store_true", help="the built-in micro-bench even in a checkout")
    b.add_argument("--dsn", help="micro-bench against this DSN (implies --builtin)")
    b.add_argument("--seconds", type=float, default=3.0, help="micro-bench duration (default 3 s)")
    b.add_argument("--threads", type=int, default=4, help="threads of the concurrent case (default 4)")
    b.add_argument("--quick", action="store_true", help="bench/run.py --quick (a ~15 s smoke run)")
    b.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    b.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="more arguments for bench/run.py")
    b.set_defaults(func=cmd_bench)
    return ap


def _on_signal(signum: int, frame: Any) -> None:
    raise _Terminated(signum)


def main(argv: Optional[list] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level or ("error" if args.command == "demo" else "warning"))
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, _on_signal)   # so that cleanups (servers, temp dirs) run
        except (ValueError, OSError):   # not the main thread
            pass
    try:
        return args.func(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"{PROG} {args.command}: error: {exc}\n")
    except ConfigurationError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except Error as exc:
        _err(str(exc))
        return EXIT_FAIL
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except _Terminated as exc:
        _err(f"terminated by signal {exc.signum}")
        return 128 + exc.signum
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_FAIL
    finally:
        for sig, h in old.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):
                pass
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
