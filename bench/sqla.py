#!/usr/bin/env python3
"""noodlecore through SQLAlchemy, against SQLAlchemy's psycopg 3 and psycopg2 dialects.

    python3 bench/sqla.py [--rounds N] [--n N] [--rows R] [--only a,b]
                          [--noodle-from wheel|inplace] [--reinstall] [--out FILE]

Stage 1 (the python3 that runs this file): make or refresh bench/.venv the way
bench/run.py does (benchlib.py: the peers from PyPI and a noodlecore wheel of
the repo), then re-exec this script with the venv's python.

Stage 2: one throwaway PostgreSQL 15 (noodlecore.testing) with the tables
sqla_items (10,000 rows) and sqla_bulk; one long-lived worker process per
SQLAlchemy URL (bench/sqla_worker.py):

    noodlecore  postgresql+noodlecore://  (the native pool does the pooling)
    psycopg     postgresql+psycopg://     (psycopg 3, C build; QueuePool of 8)
    psycopg2    postgresql+psycopg2://    (QueuePool of 8)

and, round by round (the order rotated each round, so that background load hits
every driver alike), each scenario once per driver: a Core select by primary
key with a checkout per request, session.get in a new Session per request, an
ORM bulk insert (add_all + commit: insertmanyvalues with RETURNING) and a bare
cursor's executemany.  Each cell is the median over the rounds.  Prints a
Markdown table and writes it with every sample to
bench/results/<date>-<commit>/sqla.md and sqla.json.  The server is removed at
the end, also on an error, Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

from benchlib import (
    BENCH, REPO, VENV_PY, Interrupted, catch_signals, cpu_model, fmt_load, git_info, loadavg, peer_versions,
    results_dir, say, stage1,
)

DRIVERS = ["noodlecore", "psycopg", "psycopg2"]
SCENARIOS = [
    # key, label, unit, better, the worker's argument name
    ("core_get", "Core `select` by primary key, a checkout per request, µs/op", "us", "lower", "n"),
    ("orm_get", "`session.get` by primary key, a new Session per request, µs/op", "us", "lower", "n"),
    ("orm_bulk", "ORM bulk insert (`add_all` + commit, insertmanyvalues), rows/s", "rows_per_s", "higher", "rows"),
    ("executemany", "bare cursor `executemany` + commit, rows/s", "rows_per_s", "higher", "rows"),
]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="rounds; each cell is the median (default 7)")
    ap.add_argument("--n", type=int, default=2000, help="requests per round for the two get scenarios")
    ap.add_argument("--rows", type=int, default=10000, help="rows per round for the two bulk scenarios")
    ap.add_argument("--only", default=",".join(DRIVERS), help="drivers to run (default: all)")
    ap.add_argument("--noodle-from", choices=("wheel", "inplace"), default="wheel")
    ap.add_argument("--reinstall", action="store_true", help="re-install the peers and rebuild the wheel")
    ap.add_argument("--out", default=None, help="default bench/results/<date>-<commit>/sqla.md")
    ap.add_argument("--stage2", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.only = [d for d in a.only.split(",") if d]
    bad = [d for d in a.only if d not in DRIVERS]
    if bad:
        ap.error("unknown driver(s) %s; choose from %s" % (", ".join(bad), ", ".join(DRIVERS)))
    return a


def fmt(v, unit):
    return "%.1f" % v if unit == "us" else "{:,.0f}".format(v)


def render(res):
    m = res["meta"]
    drivers = [d for d in DRIVERS if d in res["samples"]["core_get"]]
    lines = ["# noodlecore through SQLAlchemy", "",
             "- Date: %s" % m["date"],
             "- Machine: %s, %d cores; Python %s; PostgreSQL %s on the same host (TCP 127.0.0.1, fsync off); "
             "load average %s at the start, %s at the end" % (
                 m["cpu"], m["cores"], m["python"], m["postgres"], fmt_load(m["load_start"]),
                 fmt_load(m["load_end"])),
             "- %s" % "; ".join(v for v in m["peer_versions"].values() if v),
             "- %d rounds, medians; %d requests per round for the gets, %d rows per round for the bulk "
             "scenarios" % (m["rounds"], m["n"], m["rows"]), "",
             "| scenario | " + " | ".join("postgresql+%s" % d for d in drivers) + " | better |",
             "|---|" + "---:|" * len(drivers) + "---|"]
    for key, label, unit, better, _ in SCENARIOS:
        cells = [fmt(statistics.median(res["samples"][key][d]), unit) for d in drivers]
        lines.append("| %s | %s | %s |" % (label, " | ".join(cells), better))
    if "noodlecore" in drivers and len(drivers) > 1:
        lines += ["", "noodlecore against the fastest peer (medians):", ""]
        for key, label, unit, better, _ in SCENARIOS:
            ours = statistics.median(res["samples"][key]["noodlecore"])
            peers = {d: statistics.median(res["samples"][key][d]) for d in drivers if d != "noodlecore"}
            best = (min if better == "lower" else max)(peers, key=peers.get)
            if better == "lower":
                gain = (peers[best] - ours) / peers[best] * 100
                lines.append("- %s: %s faster than %s by %.0f%%" % (key, "noodlecore" if gain >= 0 else "NOT",
                                                                   best, gain))
            else:
                lines.append("- %s: noodlecore / %s = %.2f" % (key, best, ours / peers[best]))
    return "\n".join(lines) + "\n"


def stage2(args):
    catch_signals()
    if args.noodle_from == "inplace":
        os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
        sys.path.insert(0, str(REPO))
    else:
        os.environ.pop("PYTHONPATH", None)
    from noodlecore.testing import PgCluster
    from run_measure import Worker

    cl = None
    workers = {}
    rc = 0
    try:
        say("starting a PostgreSQL server (noodlecore.testing)")
        cl = PgCluster()
        node = cl.primary("sqla")
        node.sql("CREATE TABLE sqla_items (id serial PRIMARY KEY, name varchar(50), value float8);"
                 "INSERT INTO sqla_items (name, value) SELECT 'item ' || g, g * 0.5 FROM generate_series(1, 10000) g;"
                 "CREATE TABLE sqla_bulk (id serial PRIMARY KEY, name varchar(50), value float8)")
        node.sql("VACUUM ANALYZE")
        base = node.dsn().split("://", 1)[1]
        meta = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
                "cpu": cpu_model(), "cores": os.cpu_count() or 0, "python": platform.python_version(),
                "postgres": node.scalar("SHOW server_version"), "git": git_info(),
                "peer_versions": peer_versions(), "rounds": args.rounds, "n": args.n, "rows": args.rows,
                "load_start": loadavg()}
        for d in args.only:
            say("starting worker %s" % d)
            workers[d] = Worker(d, [str(VENV_PY), str(BENCH / "sqla_worker.py"), "postgresql+%s://%s" % (d, base)])
        samples = {key: {} for key, *_ in SCENARIOS}
        names = list(workers)
        for key, label, unit, better, arg in SCENARIOS:
            t0 = time.monotonic()
            for r in range(args.rounds):
                k = r % len(names)
                for d in names[k:] + names[:k]:
                    out = workers[d].call({"op": key, arg: args.n if arg == "n" else args.rows})
                    samples[key].setdefault(d, []).append(out[unit])
            say("  %s: %d rounds in %.1fs: %s" % (key, args.rounds, time.monotonic() - t0, ", ".join(
                "%s %s" % (d, fmt(statistics.median(samples[key][d]), unit)) for d in names)))
        meta["load_end"] = loadavg()
        res = {"meta": meta, "samples": samples, "workers": {d: w.hello for d, w in workers.items()}}
        report = render(res)
        out = args.out or str(results_dir() / "sqla.md")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            f.write(report)
        with open(os.path.splitext(out)[0] + ".json", "w") as f:
            json.dump(res, f, indent=1)
        print(report)
        say("wrote %s and its .json" % out)
    except Interrupted as e:
        say("interrupted (%s)" % e)
        rc = 130
    except KeyboardInterrupt:
        say("interrupted")
        rc = 130
    finally:
        for w in workers.values():
            w.close()
        if cl is not None:
            cl.close()
            say("server removed")
    return rc


def main():
    args = parse_args(sys.argv[1:])
    if not args.stage2:
        stage1(args, __file__)
    sys.exit(stage2(args))


if __name__ == "__main__":
    main()
