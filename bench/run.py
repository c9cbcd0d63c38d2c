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

See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def results_dir():
    """bench/results/<UTC date>-<short commit>[-dirty]/: where a run keeps its raw
    results, in the repo beside the commit it measured (-dirty: the work tree had
    uncommitted changes to tracked files).  The README's tables name the file
    they came from."""
    date = time.strftime("%Y-%m-%d", time.gmtime())
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "nogit", ""
    return BENCH / "results" / ("%s-%s%s" % (date, commit, "-dirty" if dirty else ""))


def commit_info():
    """The commit measured, for the results file."""
    def git(*a):
        try:
            return subprocess.run(["git", "-C", str(REPO)] + list(a), capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}
VENV = BENCH / ".venv"
VENV_PY = VENV / "bin" / "python"
RAW_SRC = BENCH / "raw_libpq.c"
RAW_BIN = VENV / "raw_libpq"
PEERS = ["psycopg[binary]", "psycopg_pool", "SQLAlchemy", "psycopg2-binary"]
BUILD_DEPS = ["setuptools>=61", "wheel"]
IMPL_ORDER = ["noodlecore", "psycopg_pool", "sqlalchemy", "psycopg2"]
COLUMNS = [
    ("noodlecore", "noodlecore"),
    ("psycopg_pool", "psycopg_pool"),
    ("sqlalchemy", "SQLAlchemy QueuePool"),
    ("psycopg2", "psycopg2 ThreadedConnectionPool"),
    ("raw_libpq", "raw libpq (C)"),
    ("pgbench", "pgbench -S"),
]
T0 = float(os.environ.get("NOODLE_BENCH_T0") or time.time())   # carried over the re-exec


def say(msg):
    print("[%6.1fs] %s" % (time.time() - T0, msg), file=sys.stderr, flush=True)


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


# ===========================================================================
# stage 1: the virtualenv
# ===========================================================================

def run_checked(cmd, what, **kw):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit("bench: %s failed (rc=%s): %s\n%s\n%s" % (
            what, r.returncode, " ".join(map(str, cmd)), r.stdout[-3000:], r.stderr[-5000:]))
    return r


def noodle_sources():
    """The files a wheel of noodlecore is built from (tracked or not), repo-relative."""
    files = [REPO / "pyproject.toml", REPO / "setup.py"]
    for p in ("README.md", "LICENSE", "MANIFEST.in", "setup.cfg"):
        if (REPO / p).exists():
            files.append(REPO / p)
    for sub in ("csrc/core", "csrc/py"):
        files += sorted(f for f in (REPO / sub).rglob("*") if f.is_file() and f.suffix in (".c", ".h"))
    files += sorted(f for f in (REPO / "noodlecore").rglob("*.py") if "__pycache__" not in f.parts)
    return [f.relative_to(REPO) for f in files]


def fingerprint(files):
    h = hashlib.sha256()
    for rel in files:
        h.update(str(rel).encode() + b"\0")
        h.update((REPO / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def venv_python_version():
    if not VENV_PY.exists():
        return None
    r = subprocess.run([str(VENV_PY), "-c", "import sys; print(sys.version)"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def pip(*args, what="pip install"):
    return run_checked([str(VENV_PY), "-m", "pip", "--disable-pip-version-check", *args], what)


def build_noodle_wheel(files, attempts=3):
    """Snapshot the sources into a temp dir and build a wheel there (the work tree stays clean)."""
    for attempt in range(1, attempts + 1):
        tmp = Path(tempfile.mkdtemp(prefix="noodlebench-"))
        try:
            src = tmp / "src"
            for rel in files:
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, src / rel)
            if not (src / "README.md").exists():   # pyproject names it as the readme
                (src / "README.md").write_text("noodlecore\n")
            fp = fingerprint(files)
            say("building noodlecore wheel (sources %s, attempt %d)" % (fp, attempt))
            r = subprocess.run([str(VENV_PY), "-m", "pip", "--disable-pip-version-check", "wheel",
                                "--no-build-isolation", "--no-deps", "-w", str(tmp / "dist"), str(src)],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
            wheels = list((tmp / "dist").glob("noodlecore-*.whl")) if r.returncode == 0 else []
            if wheels:
                pip("install", "--force-reinstall", "--no-deps", str(wheels[0]),
                    what="pip install noodlecore wheel")
                return fp
            say("wheel build failed (rc=%s):\n%s" % (r.returncode, (r.stdout + r.stderr)[-3000:]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if attempt < attempts:
            say("the tree may be mid-edit by someone else; retrying in 20 s")
            time.sleep(20)
        files = noodle_sources()
    sys.exit("bench: could not build noodlecore (see the log above); "
             "fix the build or use --noodle-from inplace with an existing in-place build")


def stage1(args):
    want = sys.version
    have = venv_python_version()
    if have != want:
        say("creating %s with %s%s" % (VENV, sys.executable,
                                        " (was %r)" % have if have else ""))
        run_checked([sys.executable, "-m", "venv", "--clear", str(VENV)], "python3 -m venv")
    marker = VENV / ".bench-peers.json"
    want_peers = {"peers": PEERS, "build": BUILD_DEPS}
    try:
        have_peers = json.loads(marker.read_text())
    except (OSError, ValueError):
        have_peers = None
    if args.reinstall or have_peers != want_peers:
        say("pip install %s %s" % (" ".join(PEERS), " ".join(BUILD_DEPS)))
        pip("install", *PEERS, *BUILD_DEPS)
        marker.write_text(json.dumps(want_peers))
    if args.noodle_from == "wheel":
        files = noodle_sources()
        fp = fingerprint(files)
        nmarker = VENV / ".bench-noodle"
        installed = nmarker.read_text().strip() if nmarker.exists() else None
        if args.reinstall or installed != fp:
            nmarker.unlink(missing_ok=True)
            fp = build_noodle_wheel(files)
            nmarker.write_text(fp + "\n")
        else:
            say("noodlecore wheel up to date (sources %s)" % fp)
    argv = [str(VENV_PY), str(Path(__file__).resolve()), "--stage2"] + sys.argv[1:]
    os.environ["NOODLE_BENCH_T0"] = repr(T0)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execv(str(VENV_PY), argv)


# ===========================================================================
# stage 2: measurements (inside the venv)
# ===========================================================================

class Interrupted(BaseException):
    pass


def _on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


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


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_info():
    def g(*a):
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    head = g("rev-parse", "--short", "HEAD")
    dirty = g("status", "--porcelain", "--", "csrc/core", "csrc/py", "noodlecore", "setup.py",
              "pyproject.toml")
    return {"commit": head, "dirty_sources": bool(dirty)}


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


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


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

        pys = [i for i in IMPL_ORDER if i in workers]
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


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def med(samples, scen, label, scale=1.0):
    v = samples[scen].get(label)
    return statistics.median(v) * scale if v else None


def cell_values(results):
    """{scenario: {column: median}} in report units (us, us, qps, ms)."""
    s = results["samples"]
    out = {"a": {}, "b": {}, "c": {}, "d": {}}
    for col, _ in COLUMNS:
        out["a"][col] = med(s, "a", col)
        out["b"][col] = med(s, "b", col)
        out["c"][col] = med(s, "c", col)
        out["d"][col] = med(s, "d", col, 1e3)
    return out


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "s":
        return "%.1f ms" % (v * 1e3)
    if kind == "us":
        return "%.2f" % v if v < 100 else "%.0f" % v
    if kind == "qps":
        return "{:,.0f}".format(v)
    if kind == "ms":
        return "%.1f" % v
    return str(v)


def paired(samples, scen, a, b):
    """Median over rounds of a/b measured in the same round (None if missing)."""
    xa, xb = samples[scen].get(a), samples[scen].get(b)
    if not xa or not xb or len(xa) != len(xb):
        return None
    return statistics.median(x / y for x, y in zip(xa, xb))


def evaluate(vals, samples):
    """The targets: list of (label, measured text, verdict, ratio)."""
    def ratio(a, b):
        return a / b if (a is not None and b) else None

    rows = []
    n, p = vals["a"].get("noodlecore"), vals["a"].get("psycopg_pool")
    r = ratio(p, n)
    rows.append(("(a) noodlecore borrow+return at least 10x faster than psycopg_pool",
                 "psycopg_pool / noodlecore = %.1fx" % r if r else "n/a",
                 None if r is None else r >= 10, r))
    n, raw = vals["b"].get("noodlecore"), vals["b"].get("raw_libpq")
    r = ratio(n, raw)
    pr = paired(samples, "b", "noodlecore", "raw_libpq")
    xn, xr = samples["b"].get("noodlecore"), samples["b"].get("raw_libpq")
    mr = min(xn) / min(xr) if (xn and xr) else None
    rows.append(("(b) noodlecore borrow+SELECT 1+return within 15% of raw libpq PQexec",
                 ("noodlecore / raw libpq = %.3f (%+.1f%%) [median of per-round ratios %.3f; "
                  "best round / best round %.3f]" % (r, (r - 1) * 100, pr, mr)) if (r and pr) else "n/a",
                 None if r is None else r <= 1.15, r))
    n, p, pgb = vals["c"].get("noodlecore"), vals["c"].get("psycopg_pool"), vals["c"].get("pgbench")
    r1, r2 = ratio(n, p), ratio(n, pgb)
    ok = None if (r1 is None or r2 is None) else (r1 > 1.0 and r2 >= 0.70)
    rows.append(("(c) noodlecore qps above psycopg_pool and at least 70% of pgbench -S (same clients)",
                 "noodlecore / psycopg_pool = %s; noodlecore / pgbench = %s" % (
                     "%.2fx" % r1 if r1 else "n/a", "%.1f%%" % (r2 * 100) if r2 else "n/a"),
                 ok, {"vs_psycopg_pool": r1, "vs_pgbench": r2}))
    n, p = vals["d"].get("noodlecore"), vals["d"].get("psycopg_pool")
    r = ratio(n, p)
    rows.append(("(d) noodlecore 100k-row fetch no slower than psycopg 3",
                 "noodlecore / psycopg 3 = %.2f" % r if r else "n/a",
                 None if r is None else r <= 1.0, r))
    return rows


def render(meta, results, vals, targets, args):
    L = []
    L.append("# noodlecore pool benchmark")
    L.append("")
    L.append("- Date: %s" % meta["date"])
    L.append("- Machine: %s, %d cores; Python %s; PostgreSQL %s on the same host (TCP 127.0.0.1, "
             "fsync off, data in /dev/shm); libpq %s; load average %s at the start, %s at the end"
             % (meta["cpu"], meta["cores"], meta["python"], meta["postgres"], meta["libpq"],
                fmt_load(results["load"].get("start")), fmt_load(results["load"].get("end"))))
    L.append("- noodlecore %s (git %s%s, sources %s, %s); %s"
             % (meta.get("noodlecore_version") or "?", meta["git"]["commit"],
                " + uncommitted changes" if meta["git"]["dirty_sources"] else "",
                meta.get("noodle_sources") or "?",
                "installed from a wheel" if args.noodle_from == "wheel" else "in-place build",
                "; ".join(v for k, v in meta["peer_versions"].items() if k != "noodlecore" and v)))
    L.append("")
    heads = [c[1] for c in COLUMNS]
    L.append("| scenario | " + " | ".join(heads) + " |")
    L.append("|---|" + "---:|" * len(heads))
    labels = {
        "a": ("(a) borrow + return, µs/op (median of %d x %d ops)" % (args.reps, args.ops), "us"),
        "b": ("(b) borrow + `SELECT 1` + return, µs/op (median of %d x %d ops)" % (args.reps_b, args.ops_b),
              "us"),
        "c": ("(c) `SELECT 1` queries/s, %d threads on %d connections (median of %d x %g s)" % (
            args.threads, args.threads, args.c_rounds, args.duration), "qps"),
        "d": ("(d) fetch %s rows (int4, text, float8) as tuples, ms (median of %d)" % (
            "{:,}".format(args.rows), args.fetch_reps), "ms"),
    }
    for s in "abcd":
        label, kind = labels[s]
        L.append("| %s | " % label + " | ".join(fmt(vals[s].get(c[0]), kind) for c in COLUMNS) + " |")
    L.append("")
    L.append("| target | measured | result |")
    L.append("|---|---|---|")
    for label, measured, ok, _ in targets:
        L.append("| %s | %s | %s |" % (label, measured,
                                       "n/a" if ok is None else ("MET" if ok else "NOT MET")))
    L.append("")
    L.append("Notes:")
    L.append("- Each Python implementation runs in its own process with its pool (max %d) filled before "
             "timing; the repetitions of all implementations are interleaved round by round (order "
             "rotated) so that background load on the shared host hits them alike.  The peers run in "
             "autocommit (one round trip per `SELECT 1`, like noodlecore); noodlecore runs with its "
             "default options and `row_format=\"tuple\"`." % args.threads)
    L.append("- (a)/(b): noodlecore `with pool.get_connection() as c` (+ `c.execute_query`); psycopg_pool "
             "`with pool.connection() as c` (+ `c.execute(...).fetchall()`); SQLAlchemy `with "
             "engine.connect() as c` (+ `c.exec_driver_sql(...).fetchall()`, psycopg2 driver); psycopg2 "
             "`getconn()`/`putconn()` (+ cursor execute/fetchall).  raw libpq: `PQexec(\"SELECT 1\")` "
             "in a loop on one connection, no pool.")
    pgcmd = results["pgbench"][0]["command"] if results.get("pgbench") else "skipped"
    L.append("- (c): the (b) loop in %d threads for %g s after %g s of warm-up; raw libpq: %d pthreads, "
             "one connection each; pgbench: `%s` (its select-only script: a primary-key lookup in "
             "pgbench_accounts, scale 1; tps without connection time)."
             % (args.threads, args.duration, args.warmup, args.threads, pgcmd))
    L.append("- (d): `SELECT * FROM bench_rows` execute + fetch all, timed after the borrow; raw libpq: "
             "`PQexec` until the PGresult is complete (no conversion to values).")
    ex = extras_lines(results)
    if ex:
        L.append("")
        L.append("Extra measurements (medians, same rounds):")
        L += ex
    return "\n".join(L) + "\n"


def fmt_load(l):
    return "/".join("%.2f" % x for x in l) if l else "?"


EXTRAS = [
    ("a", "noodlecore.acquire_release", 1, "noodlecore `pool.acquire()` / `.release()` (no with-block), µs/op"),
    ("a", "noodlecore.validate_off", 1, "noodlecore borrow + return with `validate_connections=False` "
     "(no zero-timeout `poll()` liveness check on borrow), µs/op"),
    ("a", "sqlalchemy.raw_connection", 1, "SQLAlchemy `engine.raw_connection().close()` (QueuePool "
     "checkout/checkin without the Connection facade), µs/op"),
    ("b", "noodlecore.select1_validate_off", 1, "noodlecore borrow + `SELECT 1` + return with "
     "`validate_connections=False`, µs/op"),
    ("b", "noodlecore.select1_one_borrow", 1, "noodlecore `SELECT 1` only (one borrow for the whole "
     "loop: the query path without the pool), µs/op"),
    ("b", "raw_libpq.select1params", 1, "raw libpq `PQexecParams(\"SELECT 1\")` (extended protocol), µs/op"),
    ("d", "noodlecore.fetch_dict_rows", 1e3, "noodlecore 100k-row fetch with `row_format=\"dict\"`, ms"),
    ("d", "raw_libpq.with_convert", 1e3, "raw libpq 100k-row fetch plus walking every value "
     "(strtol/strtod), ms"),
]


def extras_lines(results):
    s = results["samples"]
    out = []
    for scen, label, scale, text in EXTRAS:
        v = med(s, scen, label, scale)
        if v is None:
            continue
        ref = label.split(".")[0]
        extra = ""
        if scen == "b" and s["b"].get("raw_libpq") and ref == "noodlecore":
            extra = " (%.2fx raw libpq, per-round median)" % paired(s, "b", label, "raw_libpq")
        out.append("- %s: %.2f%s" % (text, v, extra))
    return out


def peer_versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("noodlecore", "psycopg", "psycopg-binary", "psycopg-pool", "SQLAlchemy", "psycopg2-binary"):
        try:
            out[name] = "%s %s" % (name, version(name))
        except PackageNotFoundError:
            out[name] = None
    return out


def stage2(args):
    # Ctrl-C must reach us even when started with SIGINT ignored (e.g. `cmd &` in a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
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
        stage1(args)          # does not return (execs the venv's python)
    sys.exit(stage2(args))


if __name__ == "__main__":
    main()
