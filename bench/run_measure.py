"""bench/run.py's measurements (stage 2, inside bench/.venv): the raw libpq
program, the data (bench_rows and pgbench's tables), pgbench -S, the worker
processes (bench/worker.py per Python implementation, raw_libpq serve), and
the rounds: every implementation once per round, the order rotated.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import threading
import time

from benchlib import BASELINE_PY, BENCH, REPO, VENV, VENV_PY, loadavg, run_checked, say
from run_report import fmt

RAW_SRC = BENCH / "raw_libpq.c"
RAW_BIN = VENV / "raw_libpq"
IMPL_ORDER = ["noodlecore", "psycopg_pool", "sqlalchemy", "psycopg2"]


def pg_config(flag):
    try:
        return subprocess.check_output(["pg_config", flag], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def build_raw():
    if RAW_BIN.exists() and RAW_BIN.stat().st_mtime >= RAW_SRC.stat().st_mtime:
        return
    inc = pg_config("--includedir") or "/usr/include/postgresql"
    libdir = pg_config("--libdir")
    cmd = ["gcc", "-O2", "-Wall", "-pthread", "-I" + inc, str(RAW_SRC), "-o", str(RAW_BIN)]
    if libdir:
        cmd += ["-L" + libdir]
    cmd += ["-lpq"]
    say("building raw_libpq: " + " ".join(cmd))
    run_checked(cmd, "gcc raw_libpq.c")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


def run_pgbench(node, args):
    base = ["-h", node.host, "-p", str(node.port), "-U", node.user]
    env = clean_env(LC_ALL="C")
    cmd = [node.cluster.bin("pgbench"), "-S", "-c", str(args.threads), "-j", str(args.pgbench_jobs),
           "-T", str(args.pgbench_duration), "-n", *base, node.dbname]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                       timeout=args.pgbench_duration + 60)
    if r.returncode != 0:
        raise RuntimeError("pgbench failed: %s\n%s" % (r.stdout[-2000:], r.stderr[-2000:]))
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", r.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", r.stdout)
    if not m:
        raise RuntimeError("cannot parse pgbench output:\n" + r.stdout)
    return {"qps": float(m.group(1)), "latency_ms": float(lat.group(1)) if lat else None,
            "command": "pgbench " + " ".join(cmd[1:]), "output": r.stdout}


def setup_data(node, args):
    say("creating bench_rows (%d rows) and pgbench tables (-s 1)" % args.rows)
    node.sql("DROP TABLE IF EXISTS bench_rows; "
             "CREATE TABLE bench_rows (id int4 NOT NULL, name text NOT NULL, val float8 NOT NULL); "
             "INSERT INTO bench_rows SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, %d) g"
             % args.rows, timeout=120)
    node.sql("VACUUM ANALYZE bench_rows", timeout=120)
    if not args.no_pgbench:
        r = subprocess.run([node.cluster.bin("pgbench"), "-i", "-s", "1", "-q", "-h", node.host,
                            "-p", str(node.port), "-U", node.user, node.dbname],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=clean_env(LC_ALL="C"), timeout=180)
        if r.returncode != 0:
            raise RuntimeError("pgbench -i failed: %s\n%s" % (r.stdout, r.stderr))


class Worker:
    """A measuring process (bench/worker.py or raw_libpq serve): one command line in, one JSON line out."""

    def __init__(self, name, cmd, env=None, timeout=300):
        self.name = name
        self.timeout = timeout
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                                  text=True, bufsize=1, env=env)
        self.hello = self._read()

    def _read(self):
        timer = threading.Timer(self.timeout, self.p.kill)
        timer.start()
        try:
            line = self.p.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            raise RuntimeError("%s: worker exited (rc=%s) or timed out after %ss"
                               % (self.name, self.p.wait(), self.timeout))
        r = json.loads(line)
        if "error" in r:
            raise RuntimeError("%s: %s" % (self.name, r["error"]))
        return r

    def call(self, cmd):
        self.p.stdin.write((cmd if isinstance(cmd, str) else json.dumps(cmd)) + "\n")
        self.p.stdin.flush()
        return self._read()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()

    def close(self):
        try:
            if self.p.poll() is None:
                self.p.stdin.write(json.dumps({"op": "quit"}) if self.name != "raw_libpq" else "quit")
                self.p.stdin.write("\n")
                self.p.stdin.close()
                self.p.wait(15)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def interleave(scen, reps, participants, samples, unit):
    """reps rounds; each round runs every participant once, the order rotated each round."""
    t0 = time.monotonic()
    n = len(participants)
    for rep in range(reps):
        k = rep % n
        for label, fn in participants[k:] + participants[:k]:
            samples[scen].setdefault(label, []).append(fn())
    meds = ", ".join("%s %s" % (label, fmt(statistics.median(samples[scen][label]), unit))
                     for label, _ in participants)
    say("    (%s) %d rounds in %.1fs: %s" % (scen, reps, time.monotonic() - t0, meds))


def measure(node, args):
    dsn = node.dsn()
    worker_env = dict(os.environ)
    if args.noodle_from == "inplace":
        worker_env["PYTHONPATH"] = str(REPO) + os.pathsep + worker_env.get("PYTHONPATH", "")
    else:
        worker_env.pop("PYTHONPATH", None)
    workers = {}
    results = {"workers": {}, "samples": {"a": {}, "b": {}, "c": {}, "d": {}}, "pgbench": [],
               "load": {}}
    samples = results["samples"]
    try:
        for impl in IMPL_ORDER:
            if impl in args.only:
                say("starting worker %s (pool of %d, all connections opened)" % (impl, args.threads))
                workers[impl] = Worker(impl, [str(VENV_PY), str(BENCH / "worker.py"), impl, dsn,
                                              "--threads", str(args.threads)], env=worker_env)
                results["workers"][impl] = workers[impl].hello
        if getattr(args, "baseline", None) and "noodlecore" in args.only:
            # the same worker code, importing noodlecore as built from the baseline commit
            say("starting worker baseline (noodlecore at %s)" % args.baseline)
            env = dict(worker_env)
            env.pop("PYTHONPATH", None)
            workers["baseline"] = Worker("baseline", [str(BASELINE_PY), str(BENCH / "worker.py"), "noodlecore",
                                                      dsn, "--threads", str(args.threads)], env=env)
            results["workers"]["baseline"] = workers["baseline"].hello
        if not args.no_raw:
            workers["raw_libpq"] = Worker("raw_libpq", [str(RAW_BIN), dsn, "serve"])
            results["workers"]["raw_libpq"] = workers["raw_libpq"].hello

        def py(impl, op, **kw):
            w = workers[impl]
            cmd = dict(op=op, **kw)
            scen = op if op in ("a", "b", "d") else w.hello["extras"][op]
            key = "s" if scen == "d" else "us"
            return lambda: w.call(cmd)[key]

        def extras(scen):
            out = []
            n = {"a": args.ops, "b": args.ops_b}.get(scen)
            for impl in IMPL_ORDER:
                if impl in workers:
                    for name, sc in workers[impl].hello.get("extras", {}).items():
                        if sc == scen:
                            out.append(("%s.%s" % (impl, name),
                                        py(impl, name, n=n) if n else py(impl, name)))
            return out

        pys = [i for i in IMPL_ORDER + ["baseline"] if i in workers]
        raw = workers.get("raw_libpq")

        results["load"]["start"] = loadavg()
        say("(a) borrow + return: %d rounds x %d ops" % (args.reps, args.ops))
        interleave("a", args.reps, [(i, py(i, "a", n=args.ops)) for i in pys] + extras("a"),
                   samples, "us")

        say("(b) borrow + SELECT 1 + return: %d rounds x %d ops" % (args.reps_b, args.ops_b))
        part = [(i, py(i, "b", n=args.ops_b)) for i in pys] + extras("b")
        if raw:
            part.append(("raw_libpq", lambda: raw.call("select1 %d" % args.ops_b)["us"]))
            part.append(("raw_libpq.select1params",
                         lambda: raw.call("select1params %d" % args.ops_b)["us"]))
        interleave("b", args.reps_b, part, samples, "us")

        say("(d) fetch %d rows: %d rounds" % (args.rows, args.fetch_reps))
        part = [(i, py(i, "d")) for i in pys] + extras("d")
        if raw:
            def rawf():
                r = raw.call("fetch bench_rows")
                samples["d"].setdefault("raw_libpq.with_convert", []).append(r["s_convert"])
                return r["s"]
            part.append(("raw_libpq", rawf))
        interleave("d", args.fetch_reps, part, samples, "s")

        say("(c) %d threads: %d rounds of %gs (+%gs warm-up) each%s" % (
            args.threads, args.c_rounds, args.duration, args.warmup,
            "" if args.no_pgbench else ", pgbench -T %d" % args.pgbench_duration))
        def pyc(w):
            return lambda: w.call({"op": "c", "duration": args.duration, "warmup": args.warmup})["qps"]
        part = [(i, pyc(workers[i])) for i in pys]
        if raw:
            part.append(("raw_libpq", lambda: raw.call("threads %d %g %g" % (
                args.threads, args.duration, args.warmup))["qps"]))
        if not args.no_pgbench:
            def pgb():
                r = run_pgbench(node, args)
                results["pgbench"].append(r)
                return r["qps"]
            part.append(("pgbench", pgb))
        interleave("c", args.c_rounds, part, samples, "qps")
        results["load"]["end"] = loadavg()
    except BaseException:
        for w in workers.values():      # interrupted or failed: no goodbyes
            w.kill()
        raise
    for w in workers.values():
        w.close()
    return results
