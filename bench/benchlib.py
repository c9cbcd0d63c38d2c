"""What bench/run.py and bench/failover.py share: the paths, progress lines,
stage 1 (bench/.venv with the peers and a noodlecore wheel built from a
snapshot of the repo's sources, then a re-exec of the script with the venv's
python), the results directory bench/results/<date>-<commit>/ and the commit
measured, signal handling (SIGTERM/SIGHUP raise Interrupted so that the servers
are removed), and the machine and version facts every report prints.

Standard library only: stage 1 runs it with the python3 that started the
script, before the venv exists.  See bench/README.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv"
VENV_PY = VENV / "bin" / "python"
# --baseline REV: a second venv with noodlecore built from that commit alone,
# measured in the same run (interleaved) as the working tree's
BASELINE_VENV = BENCH / ".venv-baseline"
BASELINE_PY = BASELINE_VENV / "bin" / "python"
PEERS = ["psycopg[binary]", "psycopg_pool", "SQLAlchemy", "psycopg2-binary"]
BUILD_DEPS = ["setuptools>=61", "wheel"]
T0 = float(os.environ.get("NOODLE_BENCH_T0") or time.time())   # carried over the re-exec


def say(msg):
    print("[%6.1fs] %s" % (time.time() - T0, msg), file=sys.stderr, flush=True)


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


def prepare_baseline(rev):
    """bench/.venv-baseline with noodlecore built from commit rev (git archive,
    so the work tree's state does not matter).  Returns the full commit id."""
    sha = run_checked(["git", "-C", str(REPO), "rev-parse", "--verify", rev + "^{commit}"],
                      "git rev-parse").stdout.strip()
    marker = BASELINE_VENV / ".bench-baseline"
    if marker.exists() and marker.read_text().strip() == sha and BASELINE_PY.exists():
        say("baseline noodlecore %s up to date" % sha[:12])
        return sha
    say("building baseline noodlecore from %s" % sha[:12])
    run_checked([sys.executable, "-m", "venv", "--clear", str(BASELINE_VENV)], "python3 -m venv (baseline)")
    run_checked([str(BASELINE_PY), "-m", "pip", "--disable-pip-version-check", "install", *BUILD_DEPS],
                "pip install (baseline build deps)")
    tmp = Path(tempfile.mkdtemp(prefix="noodlebase-"))
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        run_checked([str(BASELINE_PY), "-m", "pip", "--disable-pip-version-check", "install",
                     "--no-build-isolation", "--no-deps", str(tmp)], "pip install (baseline noodlecore)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(sha + "\n")
    return sha


def stage1(args, script):
    """Make or refresh bench/.venv, then re-exec script (the running bench command)
    with the venv's python and --stage2; does not return."""
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
    if getattr(args, "baseline", None):
        os.environ["NOODLE_BENCH_BASELINE"] = prepare_baseline(args.baseline)
    argv = [str(VENV_PY), str(Path(script).resolve()), "--stage2"] + sys.argv[1:]
    os.environ["NOODLE_BENCH_T0"] = repr(T0)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execv(str(VENV_PY), argv)


# ===========================================================================
# stage 2: signals, results, the machine and the versions
# ===========================================================================

class Interrupted(BaseException):
    pass


def _on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


def catch_signals():
    # Ctrl-C must reach us even when started with SIGINT ignored (e.g. `cmd &` in a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


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


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def fmt_load(l):
    return "/".join("%.2f" % x for x in l) if l else "?"


def peer_versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("noodlecore", "psycopg", "psycopg-binary", "psycopg-pool", "SQLAlchemy", "psycopg2-binary"):
        try:
            out[name] = "%s %s" % (name, version(name))
        except PackageNotFoundError:
            out[name] = None
    return out
