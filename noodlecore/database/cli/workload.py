"""What every demo shares: the workload, the live display, the report.

Owns: the demo's table and statements, the worker threads that borrow
connections and run them (Workload), the timeline and live progress line
(Display), failover events as text and JSON, pool stats summed over
endpoints, the closing lines and the list of problems that make a demo fail.
The demos (demo_sqlite, demo_postgres, demo) decide what happens when.
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..failover_manager import DatabaseFailoverManager
from .output import Style, fmt_ms, print_error

TABLE = "noodlecore_demo_orders"
STOP_WORKERS_TIMEOUT = 15.0

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


def sum_stats(stats: List[Any]) -> dict:
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



# ---------------------------------------------------------------------------
# events, progress and the report
# ---------------------------------------------------------------------------

def event_text(ev: Any, when: str, style: Style) -> str:
    """One line for a FailoverEvent: what, when (relative to the outage), how long the switch took."""
    kind = ev.metadata.get("kind", "?")
    by = ev.metadata.get("triggered_by", "?")
    if kind in ("failover", "failback", "resumed"):
        colour = "yellow" if kind == "failover" else "green"
        ok = "" if ev.success else style(" FAILED", "red", "bold")
        head = f"{style(kind.upper(), 'bold', colour)} {ev.from_endpoint or '-'} -> {ev.to_endpoint or '-'}{ok}"
        return f"{head}  {when}; switch took {fmt_ms(ev.duration)} [{by}]"
    if kind == "no_target":
        return (f"{style('NO USABLE ENDPOINT', 'bold', 'red')}: {ev.from_endpoint or '-'} failed and no endpoint "
                f"can take over yet  {when} [{by}]")
    return f"{style(kind.upper(), 'bold', 'red')} {ev.from_endpoint or '-'} / {ev.to_endpoint or '-'}  {when} [{by}]"


def event_dict(ev: Any, display: Display, ref_wall: Optional[float], ref_name: str) -> dict:
    d = ev.to_dict()
    wall = ev.timestamp.timestamp()
    d["kind"] = ev.metadata.get("kind")
    d["at"] = display.at(wall)
    d["after"] = ref_name
    d["seconds_after"] = round(wall - ref_wall, 4) if ref_wall is not None else None
    return d


def manager_progress(mgr: DatabaseFailoverManager, work: Workload, t0: float, style: Style) -> Callable[[], str]:
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


def final_lines(stats: dict, per: Dict[str, dict], elapsed: float, work: Workload, style: Style) -> List[str]:
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


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()



def sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def find_problems(work: Workload, failover: Optional[dict], failback: Optional[dict]) -> List[str]:
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


def print_problems(problems: List[str], work: Workload, style: Style) -> None:
    for p in problems:
        print_error(p)
    if problems and work.last_errors:
        print_error("first errors seen by the workers: " + "; ".join(work.last_errors[:3]))


