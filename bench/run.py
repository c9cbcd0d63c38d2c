#!/usr/bin/env python3
"""noodlecore pool benchmark: one command, one throwaway PostgreSQL 15 server.

    python3 bench/run.py [--quick] [--only IMPL,...] [--no-raw] [--no-pgbench]
                         [--ops N] [--reps R] [--ops-b N] [--reps-b R]
                         [--threads T] [--duration S] [--warmup S] [--c-rounds R]
                         [--pgbench-duration S] [--fetch-reps R] [--rows N]
                         [--noodle-from wheel|inplace] [--reinstall] [--out-dir DIR]

Stage 1 (the python3 that runs this file): make bench/.venv with that python3,
pip-install the peers (psycopg[binary], psycopg_pool, SQLAlchemy,
psycopg2-binary), build a wheel of noodlecore from a snapshot of the repo's
sources (in a temp dir, so the work tree is not touched) and install it, then
re-exec this script with the venv's python.

Stage 2 (the venv): build bench/raw_libpq.c, start PostgreSQL through
noodlecore.testing, create the 100k-row table and pgbench's tables, run
bench/worker.py once per implementation (each in a fresh process), the raw
libpq loops and pgbench -S, then print a Markdown report and write it with the
raw results to bench/results/<date>-<commit>/run.md and run.json.  The server
is removed at the end, also on Ctrl-C, SIGTERM or an error.

This file: the options and the run's outline.  benchlib.py: stage 1 and what
bench/failover.py shares; run_measure.py: the measurements; run_report.py:
the report.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
from pathlib import Path

from benchlib import (
    VENV, Interrupted, catch_signals, commit_info, cpu_model, fingerprint, git_info, noodle_sources,
    peer_versions, results_dir, say, stage1,
)
from run_measure import IMPL_ORDER, build_raw, measure, setup_data
from run_report import cell_values, evaluate, render


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 x 2000 ops, 1 x 1 s threads, 2 s pgbench, 2 fetches")
    ap.add_argument("--only", default=",".join(IMPL_ORDER),
                    help="comma list of Python implementations to run (default: all): "
                         + ",".join(IMPL_ORDER))
    ap.add_argument("--no-raw", action="store_true", help="skip the raw libpq C loops")
    ap.add_argument("--no-pgbench", action="store_true", help="skip pgbench")
    ap.add_argument("--ops", type=int, default=20000, help="ops per repetition for (a)")
    ap.add_argument("--reps", type=int, default=5, help="rounds for (a) (median)")
    ap.add_argument("--ops-b", type=int, default=1000, help="ops per repetition for (b)")
    ap.add_argument("--reps-b", type=int, default=30,
                    help="rounds for (b) (median); many short rounds, because single-connection "
                         "round-trip latency on a shared VM drifts by 2-4x within seconds")
    ap.add_argument("--threads", type=int, default=8, help="threads = connections = pool max")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per (c) round")
    ap.add_argument("--c-rounds", type=int, default=3, help="rounds for (c) (median)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up before (c)")
    ap.add_argument("--pgbench-duration", type=int, default=5, help="pgbench -T")
    ap.add_argument("--pgbench-jobs", type=int, default=2, help="pgbench -j")
    ap.add_argument("--fetch-reps", type=int, default=5, help="runs for (d) (median)")
    ap.add_argument("--rows", type=int, default=100000, help="rows in bench_rows for (d)")
    ap.add_argument("--noodle-from", choices=("wheel", "inplace"), default="wheel",
                    help="wheel: build+install a wheel of the repo into the venv (default); "
                         "inplace: import the repo's in-place build (setup.py build_ext --inplace)")
    ap.add_argument("--reinstall", action="store_true",
                    help="re-install the peers and rebuild the noodlecore wheel")
    ap.add_argument("--baseline", metavar="REV", default=None,
                    help="also measure noodlecore as built from commit REV (its own venv), interleaved with "
                         "the working tree's in every scenario: before and after in one run")
    ap.add_argument("--out-dir", default=None,
                    help="where run.json (raw results) and run.md go (default bench/results/<date>-<commit>/)")
    ap.add_argument("--stage2", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.ops, a.reps, a.ops_b, a.reps_b = 2000, 2, 1000, 3
        a.duration, a.warmup, a.c_rounds = 1.0, 0.2, 1
        a.pgbench_duration, a.fetch_reps = 2, 2
    a.only = [x.strip() for x in a.only.split(",") if x.strip()]
    bad = [x for x in a.only if x not in IMPL_ORDER]
    if bad:
        ap.error("unknown implementation(s): %s" % ", ".join(bad))
    return a


def stage2(args):
    catch_signals()
    from noodlecore.testing import PgCluster     # installed into the venv with noodlecore

    if not args.no_raw:
        build_raw()
    meta = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "git": git_info(),
        "peer_versions": peer_versions(),
        "noodle_from": args.noodle_from,
        "baseline": os.environ.get("NOODLE_BENCH_BASELINE") if args.baseline else None,
    }
    nm = VENV / ".bench-noodle"
    meta["noodle_sources"] = (nm.read_text().strip() if (args.noodle_from == "wheel" and nm.exists())
                              else fingerprint(noodle_sources()))
    meta["noodlecore_version"] = (meta["peer_versions"].get("noodlecore") or "").replace("noodlecore ", "")
    cl = None
    rc = 0
    try:
        say("starting PostgreSQL (noodlecore.testing)")
        cl = PgCluster()
        node = cl.primary("bench")
        say("server up on port %d" % node.port)
        meta["postgres"] = node.scalar("SHOW server_version")
        meta["postgres_full"] = node.scalar("SELECT version()")
        setup_data(node, args)
        results = measure(node, args)
        libpq = results["workers"].get("raw_libpq", {}).get("libpq_version")
        meta["libpq"] = ("%d.%d" % (libpq // 10000, libpq % 10000) if libpq else "?")
        nc = results["workers"].get("noodlecore")
        if nc:
            meta["noodlecore_module"] = nc.get("module_file")
            meta["noodlecore_version"] = nc.get("version") or meta["noodlecore_version"]
        vals = cell_values(results)
        targets = evaluate(vals, results["samples"])
        md = render(meta, results, vals, targets, args)
        out_dir = Path(args.out_dir) if args.out_dir else results_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        meta.update(commit_info())
        doc = {
            "meta": meta,
            "settings": {k: v for k, v in vars(args).items() if k != "stage2"},
            "table": vals,
            "targets": [{"target": t[0], "measured": t[1], "met": t[2], "ratio": t[3]} for t in targets],
            "raw": results,
        }
        (out_dir / "run.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out_dir / "run.md").write_text(md)
        print(md)
        say("wrote %s and %s" % (out_dir / "run.json", out_dir / "run.md"))
    except (KeyboardInterrupt, Interrupted) as e:
        say("interrupted (%s); cleaning up" % (str(e) or "Ctrl-C"))
        rc = 130
    finally:
        if cl is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cl.close()
            say("server removed")
    return rc


def main():
    args = parse_args(sys.argv[1:])
    if not args.stage2:
        stage1(args, __file__)          # does not return (execs the venv's python)
    sys.exit(stage2(args))


if __name__ == "__main__":
    main()
