#!/usr/bin/env python3
"""noodlecore on a real Patroni cluster against the usual answers.

    python3 bench/patroni.py [--quick] [--rounds N] [--only noodle,multihost,haproxy]
                             [--scenarios switchover,kill] [--async] [--patroni-bin PATH]
                             [--noodle-from wheel|inplace] [--reinstall] [--out FILE]

Stage 1 (the python3 that runs this file): bench/.venv as bench/run.py makes it
(benchlib.py), and a Patroni to run: --patroni-bin, else $NOODLE_PATRONI_BIN,
else a venv on /usr/bin/python3 with tests/patroni-requirements.txt in
/tmp/noodlecore-bench-patroni (the postgres user runs it).  Then re-exec with
the venv's python.

Stage 2: one Patroni cluster of 3 members (noodlecore.testing.patroni: etcd and
Patroni under tini, on 127.0.0.1) with synchronous_mode on, HAProxy in front of
it (Patroni's /primary and /replica checks, patroni_haproxy.py), and round by
round, for a switchover, a SIGKILL of the leader's postmaster and a replica
whose replay stalls for 3 lag limits, a steady
client (a write and a read in turn) through each of: noodlecore
(DatabaseFailoverManager.from_patroni, failover_wait), psycopg_pool on a
multi-host DSN (target_session_attrs=read-write), psycopg_pool through
HAProxy.  Then the read throughput of target="standby" against "primary", and
the borrow cost with Patroni discovery on and off.  Prints a Markdown report
and writes it with the raw results to bench/results/<date>-<commit>/patroni.md
and patroni.json.  Everything is removed at the end, also on an error, Ctrl-C,
SIGTERM or SIGHUP.

This file: the options and the run's outline.  patroni_clients.py: the three
clients and the steady client; patroni_rounds.py: the scenarios, throughput,
borrow cost; patroni_haproxy.py: HAProxy; patroni_report.py: the report.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    REPO, Interrupted, catch_signals, commit_info, cpu_model, git_info, loadavg, peer_versions,
    results_dir, run_checked, say, stage1,
)

CLIENT_KEYS = ("noodle", "multihost", "haproxy")
SCENARIOS = ("switchover", "kill", "stall")
PATRONI_VENV = Path(tempfile.gettempdir()) / "noodlecore-bench-patroni"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="1 round, shorter throughput and borrow-cost runs: makes sure it works; its numbers "
                         "mean little")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; each cell is the median over them (default 5)")
    ap.add_argument("--only", default=",".join(CLIENT_KEYS),
                    help="clients to run, of %s (default all)" % ",".join(CLIENT_KEYS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="scenarios to run, of %s (default all)" % ",".join(SCENARIOS))
    ap.add_argument("--async", dest="synchronous", action="store_false",
                    help="leave Patroni's synchronous_mode off (then a kill may lose acknowledged writes)")
    ap.add_argument("--interval", type=float, default=0.005,
                    help="the steady client's pause after each request, seconds (default 0.005)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds the client runs on after the cluster is whole again (default 1)")
    ap.add_argument("--request-timeout", type=float, default=10.0,
                    help="each client's borrow timeout, seconds (default 10)")
    ap.add_argument("--hc-interval", type=float, default=0.05,
                    help="noodlecore's health_check_interval (default 0.05)")
    ap.add_argument("--failover-wait", type=float, default=5.0,
                    help="noodlecore's failover_wait, seconds (default 5; a switchover takes ~1.6 s)")
    ap.add_argument("--lag-seconds", type=float, default=1.0,
                    help="the lag limit: noodlecore's max_replica_lag_seconds and the bench's staleness "
                         "judge (default 1)")
    ap.add_argument("--tp-threads", type=int, default=4, help="threads for the read throughput (default 4)")
    ap.add_argument("--tp-seconds", type=float, default=3.0, help="seconds per throughput round (default 3)")
    ap.add_argument("--tp-rows", type=int, default=20000,
                    help="generate_series size of the throughput query (default 20000)")
    ap.add_argument("--borrow-ops", type=int, default=20000, help="borrows per borrow-cost round (default 20000)")
    ap.add_argument("--patroni-bin", default=None,
                    help="the patroni executable (default $NOODLE_PATRONI_BIN, else a venv made in %s)"
                         % PATRONI_VENV)
    ap.add_argument("--noodle-from", choices=("wheel", "inplace"), default="wheel",
                    help="as in bench/run.py (default wheel)")
    ap.add_argument("--reinstall", action="store_true", help="re-install the peers and rebuild the wheel")
    ap.add_argument("--out", default=None,
                    help="the Markdown report; the raw results go beside it as .json "
                         "(default bench/results/<date>-<commit>/patroni.md)")
    ap.add_argument("--stage2", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.tp_seconds, a.borrow_ops = 1, 1.5, 3000
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    a.only = [x for x in a.only.split(",") if x]
    a.scenarios = [x for x in a.scenarios.split(",") if x]
    for x in a.only:
        if x not in CLIENT_KEYS:
            ap.error("--only: unknown client %r" % x)
    for x in a.scenarios:
        if x not in SCENARIOS:
            ap.error("--scenarios: unknown scenario %r" % x)
    return a


def patroni_bin(args):
    """The patroni executable; makes PATRONI_VENV on /usr/bin/python3 when none is given
    (the postgres user runs Patroni: the venv must be readable by it, so not under /root)."""
    exe = args.patroni_bin or os.environ.get("NOODLE_PATRONI_BIN")
    if exe:
        return exe
    exe = PATRONI_VENV / "bin" / "patroni"
    req = REPO / "tests" / "patroni-requirements.txt"
    stamp = PATRONI_VENV / ".bench-stamp"
    want = req.read_text()
    if not (exe.exists() and stamp.exists() and stamp.read_text() == want):
        say("making %s (Patroni from tests/patroni-requirements.txt)" % PATRONI_VENV)
        run_checked(["/usr/bin/python3", "-m", "venv", "--clear", str(PATRONI_VENV)], "venv for Patroni")
        run_checked([str(PATRONI_VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install",
                     "-q", "--no-deps", "-r", str(req)], "pip install Patroni")
        run_checked([str(PATRONI_VENV / "bin" / "python"), "-m", "pip", "check"], "pip check (Patroni)")
        stamp.write_text(want)
    subprocess.run(["chmod", "-R", "a+rX", str(PATRONI_VENV)], check=True)
    return str(exe)


def tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def wait_haproxy_routes(cl, hap, timeout=60):
    """Until HAProxy's checks have settled: connections on its primary listener reach the
    leader only, those on its replica listener the replicas only."""
    import psycopg
    from patroni_clients import DSN_REST, wait_until
    leader = cl.leader()

    def port_of(p):
        try:
            with psycopg.connect("host=127.0.0.1 port=%d %s" % (p, DSN_REST), autocommit=True) as c:
                return c.execute("SELECT inet_server_port()").fetchone()[0]
        except psycopg.Error:
            return None

    def ok():
        if any(port_of(hap.primary_port) != leader.port for _ in range(4)):
            return False
        seen = [port_of(hap.replica_port) for _ in range(4)]
        return all(p is not None and p != leader.port for p in seen)
    wait_until(ok, timeout, "HAProxy to route to the leader and the replicas", step=0.5)


def stage2(args):
    catch_signals()
    if args.noodle_from == "inplace":
        sys.path.insert(0, str(REPO))
    for name in ("noodlecore", "psycopg", "psycopg.pool"):      # their warnings during the faults are expected
        lg = logging.getLogger(name)
        lg.addHandler(logging.NullHandler())
        lg.propagate = False
    from noodlecore.testing.patroni import PatroniCluster
    from patroni_clients import NotAvailable, NoodleClient, haproxy_client, libpq_version, multihost_client, \
        noodle_config, noodle_features
    from patroni_haproxy import HAProxy
    from patroni_report import render
    from patroni_rounds import borrow_cost, read_throughput, run_scenario, set_synchronous

    cl = hap = None
    hap_dir = tempfile.mkdtemp(prefix="noodlebench-haproxy-")
    rc = 0
    try:
        say("starting a Patroni cluster of 3 members (noodlecore.testing.patroni)")
        cl = PatroniCluster(n=3, patroni=args.patroni_bin)
        cl.start()
        leader = cl.leader()
        leader.sql("CREATE TABLE bench_ha (run text, seq int, PRIMARY KEY (run, seq))")
        if args.synchronous:
            set_synchronous(cl, True)
        say("leader %s; members %s" % (leader.name, ", ".join("%s pg %d api %d" % (m.name, m.port, m.api_port)
                                                               for m in cl.members)))
        if "haproxy" in args.only:
            hap = HAProxy(cl.members, hap_dir).start()
            wait_haproxy_routes(cl, hap)
            say("HAProxy: primary on %d, replicas on %d" % (hap.primary_port, hap.replica_port))
        feats = noodle_features()
        c = noodle_config(args)
        pv = peer_versions()
        meta = {
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cpu": cpu_model(), "cores": os.cpu_count() or 0, "kernel": "Linux %s" % platform.release(),
            "python": platform.python_version(), "postgres": leader.sql("SHOW server_version")[0][0],
            "patroni": tool_version([cl.patroni, "--version"]), "etcd": tool_version([cl.etcd, "--version"]),
            "haproxy": hap.version() if hap else "HAProxy not run", "libpq": libpq_version(),
            "git": git_info(), "peer_versions": pv, "load_start": loadavg(), "features": feats,
            "noodle_config": "health_check_interval=%g s, failover_wait=%s, max_replica_lag_seconds=%s, "
                             "reads with target=%s, other options as bench/failover.py"
                             % (c.health_check_interval, getattr(c, "failover_wait", "not available"),
                                getattr(c, "max_replica_lag_seconds", "not available"),
                                "prefer-standby" if feats["target"] else "(not available: primary)"),
            "not_available": [k for k, v in feats.items() if not v],
        }
        makers = {"noodle": lambda: NoodleClient(cl, args), "multihost": lambda: multihost_client(cl, args),
                  "haproxy": lambda: haproxy_client(hap, args)}
        res = {"scenarios": {s: {k: [] for k in args.only} for s in args.scenarios}, "round_errors": []}
        for k in range(args.rounds):
            order = args.only[k % len(args.only):] + args.only[:k % len(args.only)]
            for scen in args.scenarios:
                for key in order:
                    run_id = "%s_%s_%d" % (key, scen, k + 1)
                    t = time.monotonic()
                    try:
                        r = run_scenario(cl, makers[key], scen, run_id, args, say)
                    except NotAvailable as e:
                        say("%s: %s" % (key, e))
                        meta["not_available"].append(str(e))
                        continue
                    except (RuntimeError, OSError) as e:
                        say("round %d %s %s FAILED: %s" % (k + 1, scen, key, e))
                        res["round_errors"].append({"round": k + 1, "scenario": scen, "client": key,
                                                    "error": str(e)[:2000]})
                        continue
                    res["scenarios"][scen][key].append(r)
                    say("round %d %s %-9s: %d failed, outage %.0f ms, longest %.0f ms, write gap %.0f ms, "
                        "lost %d, stale reads %d (%.1f s)"
                        % (k + 1, scen, key, r["failed"], r["outage_ms"], r["longest_ms"], r["write_gap_ms"],
                           r["writes_lost"], r["stale_reads"], time.monotonic() - t))
        for name, fn in (("throughput", read_throughput), ("borrow", borrow_cost)):
            try:
                res[name] = fn(cl, args, say)
            except NotAvailable as e:
                res[name] = str(e)
                meta["not_available"].append(str(e))
        meta["load_end"] = loadavg()
        md = render(meta, res, args)
        if res["round_errors"]:
            md += "\n## Rounds that failed\n\n" + "\n".join(
                "- round %(round)d, %(scenario)s, %(client)s: %(error)s" % e for e in res["round_errors"]) + "\n"
        out = Path(args.out) if args.out else results_dir() / "patroni.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        meta.update(commit_info())
        raw = {"meta": meta, "settings": {k: v for k, v in vars(args).items() if k != "stage2"}, "raw": res}
        out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
        out.write_text(md)
        print(md)
        say("wrote %s and %s" % (out, out.with_suffix(".json")))
        if res["round_errors"]:
            rc = 1
    except (KeyboardInterrupt, Interrupted) as e:
        say("interrupted (%s); cleaning up" % (str(e) or "Ctrl-C"))
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if hap is not None:
            hap.stop()
        if cl is not None:
            cl.close()
            say("cluster removed")
        shutil.rmtree(hap_dir, ignore_errors=True)
    return rc


def main():
    args = parse_args(sys.argv[1:])
    if not args.stage2:
        os.environ["NOODLE_PATRONI_BIN"] = patroni_bin(args)
        stage1(args, __file__)        # does not return (execs the venv's python)
    args.patroni_bin = args.patroni_bin or os.environ.get("NOODLE_PATRONI_BIN")
    sys.exit(stage2(args))


if __name__ == "__main__":
    main()
