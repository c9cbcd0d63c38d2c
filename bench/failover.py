#!/usr/bin/env python3
"""noodlecore failover benchmark: crash, promote, fail back, on loopback.

    python3 bench/failover.py [--runs N] [--probe-seconds S] [--interval S]
                              [--hc-interval S] [--conns N] [--no-psycopg]
                              [--noodle-from wheel|inplace] [--reinstall] [--out FILE]

Stage 1 (the python3 that runs this file): make or refresh bench/.venv the way
bench/run.py does (benchlib.py, shared with it: psycopg[binary], psycopg_pool &
co., and a noodlecore wheel built from a snapshot of the repo), then re-exec
this script with the venv's python.

Stage 2 (the venv): one throwaway primary + async hot standby (PostgreSQL 15
through noodlecore.testing), then, round by round (--runs, default 5):

  noodlecore   a DatabaseFailoverManager [primary (preferred), standby] with
               monitoring on; a steady client thread does SELECT / INSERT
               through it every --interval (5 ms).  SIGKILL the primary
               (node.crash()), promote the standby at once; measure detection,
               switch, failed requests.  Then pg_rewind the old primary as a
               standby of the new one and do a planned switchover back (stop
               the new primary "fast", promote the old one): measure the
               failback.  pg_rewind the other node: the topology is back.
  psycopg_pool the same client loop on a libpq multi-host DSN with
               target_session_attrs=read-write, once with psycopg_pool's
               default (check=None) and once with
               check=ConnectionPool.check_connection: SIGKILL + promote,
               failed requests and time to the first successful query.

then the probe cost (process CPU with monitoring on vs off) and the resident
memory of 20 open connections (in fresh processes).  Prints a Markdown report
and writes it with the raw results to bench/results/<date>-<commit>/failover.md
and failover.json.  The servers are removed at the end, also on an error,
Ctrl-C, SIGTERM or SIGHUP.

This file: the options and the run's outline.  benchlib.py: stage 1 and what
bench/run.py shares; failover_rounds.py: the client and the failover rounds;
failover_costs.py: probe cost and memory; failover_report.py: the report.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import signal
import sys
import time
from pathlib import Path

from benchlib import (
    REPO, Interrupted, catch_signals, commit_info, cpu_model, git_info, loadavg, peer_versions,
    results_dir, say, stage1,
)
from failover_costs import probe_cost, rss_run
from failover_report import med, render, values
from failover_rounds import noodle_config, noodle_run, psycopg_run


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5,
                    help="rounds of every scenario; each cell is the median over them (default 5)")
    ap.add_argument("--interval", type=float, default=0.005,
                    help="the steady client's pause between two requests, seconds (default 0.005)")
    ap.add_argument("--hc-interval", type=float, default=0.05,
                    help="health_check_interval of the manager in the failover runs and the probe-cost "
                         "measurement (default 0.05)")
    ap.add_argument("--probe-seconds", type=float, default=10.0,
                    help="total seconds with monitoring on (and as many with it off) for the probe cost, "
                         "split over --runs rounds (default 10)")
    ap.add_argument("--conns", type=int, default=20, help="connections for the memory measurement (default 20)")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds the client keeps running after the first successful query on the new "
                         "endpoint (late failures are counted too; default 0.3)")
    ap.add_argument("--no-psycopg", action="store_true", help="skip the psycopg_pool runs")
    ap.add_argument("--noodle-from", choices=("wheel", "inplace"), default="wheel",
                    help="wheel: build+install a wheel of the repo into bench/.venv (default, shared with "
                         "bench/run.py); inplace: import the repo's in-place build")
    ap.add_argument("--reinstall", action="store_true", help="re-install the peers and rebuild the wheel")
    ap.add_argument("--out", default=None,
                    help="the Markdown report; the raw results go beside it as .json "
                         "(default bench/results/<date>-<commit>/failover.md)")
    ap.add_argument("--stage2", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    return a


def meta_info(pri, args):
    import noodlecore
    pv = peer_versions()
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model(), "cores": os.cpu_count() or 0,
        "kernel": "Linux %s" % platform.release(),
        "python": platform.python_version(), "postgres": pri.scalar("SHOW server_version"),
        "git": git_info(), "peer_versions": pv,
        "noodlecore_version": noodlecore.__version__,
        "noodlecore_module": noodlecore.__file__,
    }


def stage2(args):
    catch_signals()
    if args.noodle_from == "inplace":
        sys.path.insert(0, str(REPO))
        os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    else:
        os.environ.pop("PYTHONPATH", None)
    from noodlecore.testing import PgCluster     # the installed (or --noodle-from inplace) noodlecore
    for name in ("noodlecore", "psycopg"):      # their warnings during the crashes are expected
        lg = logging.getLogger(name)
        lg.addHandler(logging.NullHandler())
        lg.propagate = False
    from noodlecore.database.failover_manager import FailoverConfig  # noqa: F401  (fail early)

    cl = None
    rc = 0
    try:
        say("starting a primary and a standby (noodlecore.testing)")
        cl = PgCluster()
        pri = cl.primary("fo_a")
        sby = cl.standby(pri, "fo_b")
        pri.sql("CREATE TABLE bench_fo (id bigserial PRIMARY KEY, v int, at timestamptz DEFAULT now())")
        say("primary on port %d, standby on port %d" % (pri.port, sby.port))
        meta = meta_info(pri, args)
        meta["load_start"] = loadavg()
        c = noodle_config(args)
        meta["noodle_config"] = ("health_check_interval=%g s, health_check_timeout=%g s, "
                                 "failover_timeout=%g s, hold_down=%g s, recovery_check_interval=%g s, "
                                 "policy %s, require_writable=%s, other options default"
                                 % (c.health_check_interval, c.health_check_timeout, c.failover_timeout,
                                    c.hold_down, c.recovery_check_interval, c.policy.value,
                                    c.require_writable))
        res = {"noodle": [], "noodle_r1": [], "psycopg_default": [], "psycopg_check": [], "rss": {}}
        for k in range(args.runs):
            for key, extra in (("noodle", None), ("noodle_r1", {"retry_attempts": 1})):
                t = time.monotonic()
                r = noodle_run(cl, pri, sby, args, extra)
                res[key].append(r)
                say("round %d %s: detection %.1f ms, switch %.1f ms, outage %.1f ms, %d failed; "
                    "recovery %.1f ms, %d failed (%.1fs)"
                    % (k + 1, key, r["crash"]["detection_ms"], r["crash"]["switch_ms"],
                       r["crash"]["outage_ms"], r["crash"]["failed"], r["failback"]["recovery_ms"],
                       r["failback"]["failed"], time.monotonic() - t))
            if not args.no_psycopg:
                for check, key in ((False, "psycopg_default"), (True, "psycopg_check")):
                    t = time.monotonic()
                    r = psycopg_run(cl, pri, sby, args, check)
                    pri, sby = sby, pri
                    res[key].append(r)
                    say("round %d %s: outage %.1f ms, %d failed, longest request %.1f ms (%.1fs)"
                        % (k + 1, key, r["outage_ms"], r["failed"], r["longest_ms"], time.monotonic() - t))
        say("probe cost: %d x (%.1f s off + %.1f s on)" % (args.runs, args.probe_seconds / args.runs,
                                                           args.probe_seconds / args.runs))
        res["probe"] = probe_cost(pri, sby, args)
        say("probe cost: %s us/probe" % ", ".join("%.0f" % r["us_per_probe"] for r in res["probe"]["rounds"]))
        env = dict(os.environ)
        impls = ["noodlecore"] + ([] if args.no_psycopg else ["psycopg_pool"])
        for k in range(args.runs):
            for impl in impls:
                res["rss"].setdefault(impl, []).append(rss_run(impl, pri.dsn(), args.conns, env))
        say("memory: %s" % "; ".join("%s %.2f MB" % (i, med(values(res["rss"][i], "delta_mb"))) for i in impls))
        meta["load_end"] = loadavg()
        md = render(meta, res, args)
        out = Path(args.out) if args.out else results_dir() / "failover.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        meta.update(commit_info())
        raw = {"meta": meta, "settings": {k: v for k, v in vars(args).items() if k != "stage2"}, "raw": res}
        out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
        out.write_text(md)
        print(md)
        say("wrote %s and %s" % (out, out.with_suffix(".json")))
    except (KeyboardInterrupt, Interrupted) as e:
        say("interrupted (%s); cleaning up" % (str(e) or "Ctrl-C"))
        rc = 130
    finally:
        if cl is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cl.close()
            say("servers removed")
    return rc


def main():
    args = parse_args(sys.argv[1:])
    if not args.stage2:
        stage1(args, __file__)        # does not return (execs the venv's python)
    sys.exit(stage2(args))


if __name__ == "__main__":
    main()
