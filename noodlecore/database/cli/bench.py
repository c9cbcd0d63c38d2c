"""``noodlecore-db bench``: the pool benchmark of a checkout, or a built-in micro-bench.

Owns: finding bench/run.py of a source checkout that holds this package (and
running it), and the built-in micro-bench (borrow/return, borrow + SELECT 1,
SELECT 1 from several threads) against --dsn or a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, List, Optional

from ..config import redact_dsn
from ..connection_pool import DatabaseConnectionPool
from .output import EXIT_OK, Style, UsageError, print_json, render_table


def _checkout_bench() -> Optional[pathlib.Path]:
    """bench/run.py of a source checkout holding this package, if any."""
    # this file is <checkout>/noodlecore/database/cli/bench.py
    pkg_parent = pathlib.Path(__file__).resolve().parents[3]
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
        print_json({"ran": "builtin", "target": redact_dsn(dsn), "backend": "sqlite" if tmp or
                     dsn.lower().startswith("sqlite") else "postgresql", "cases": cases, "stats": stats})
    else:
        print(render_table([{"case": k, "ops": f"{v['ops']:,}", "ops/s": f"{v['ops_per_second']:,.0f}",
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
                print_json({"ran": "bench/run.py", "command": cmd, "dry_run": True})
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
            print_json({"ran": "builtin", "target": target, "dry_run": True})
        else:
            print(f"would run the built-in micro-bench against {target}")
        return EXIT_OK
    return _builtin_bench(args)


