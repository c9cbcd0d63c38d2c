"""The repaired wheel of scripts/build-wheel.sh installs and runs on a machine
without libpq-dev, the system libpq and libsqlite3, or a C compiler.

Such a machine is made here from this one with a mount namespace
(``unshare --mount``, root only): an empty directory is mounted over the
header directories and the compiler's, and a file that is not a library, or
a program that fails, over every libpq and libsqlite3 file, pg_config and
every C compiler.  Inside, before anything else, the script checks that they
really are out of reach (a compiler that still works or a libpq that still
loads fails the test).  Then a fresh venv installs the wheel from the file
alone (``--no-index``), ``ldd`` of the extension must resolve libpq and
SQLite to the wheel's own copies, and the native module runs a PostgreSQL
query through the wheel's libpq (on the suite's server) and a SQLite one
through its SQLite.  Last, ``noodlecore-db demo`` runs with the system
libsqlite3.so.0 back in place, only because the interpreter's own sqlite3
module (which the demo's simulated endpoint uses) links it; libpq, the
headers and the compilers stay hidden.

Building the wheel compiles the extension (about 30 s here): the module
builds it once, and the marker keeps it in the pytest-python3 stage only.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.once

# A C compiler by any of its usual names; their real files are replaced.
COMPILERS = ["cc", "gcc", "c89", "c99", "c++", "g++", "clang", "clang++", "tcc", "x86_64-linux-gnu-gcc",
             "pg_config"]
HEADER_DIRS = ["/usr/include/postgresql", "/usr/lib/gcc", "/usr/libexec/gcc"]
HEADER_FILES = ["/usr/include/sqlite3.h", "/usr/include/sqlite3ext.h", "/usr/include/libpq-fe.h"]
# Libraries a manylinux wheel may take from the system (glibc, libgcc): any
# other library the extension loads must come from the wheel.
SYSTEM_LIBS = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
               "libresolv.so.2", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "libutil.so.1", "libnsl.so.1"}


def _system_lib_files():
    """Every libpq and libsqlite3 file of the system, by real path (a bind
    mount over a symlink lands on its target), and which is the runtime
    libsqlite3 the interpreter's sqlite3 module needs."""
    files, sqlite_runtime = set(), set()
    for d in ("/usr/lib", "/usr/lib64", "/lib", "/usr/local/lib"):
        base = pathlib.Path(d)
        if not base.is_dir():
            continue
        for pat in ("libpq.*", "libsqlite3.*", "*/libpq.*", "*/libsqlite3.*"):
            for p in base.glob(pat):
                real = os.path.realpath(p)
                if os.path.isfile(real):
                    files.add(real)
                    if re.search(r"libsqlite3\.so\.\d", real):
                        sqlite_runtime.add(real)
    return sorted(files), sorted(sqlite_runtime)


@pytest.fixture(scope="module")
def repaired_wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("PYTHONMALLOC", None)      # pip and auditwheel are not what this stage's debug allocator checks
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-wheel.sh"), str(out)], capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = pathlib.Path(proc.stdout.strip().splitlines()[-1])
    assert wheel.is_file() and wheel.parent == out, proc.stdout
    REPAIR_LOG[wheel] = proc.stderr    # the script's `auditwheel show` of the repaired wheel
    return wheel


REPAIR_LOG = {}


def test_the_wheel_bundles_libpq_and_sqlite_under_an_honest_tag(repaired_wheel):
    tag = re.search(r"-(manylinux_(\d+)_(\d+)_x86_64)\.whl$", repaired_wheel.name)
    assert tag, repaired_wheel.name
    glibc = tuple(map(int, os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2]))
    # not newer than the glibc it was built with, and what auditwheel says it is
    assert (int(tag.group(2)), int(tag.group(3))) <= glibc
    names = zipfile.ZipFile(repaired_wheel).namelist()
    libs = [n for n in names if n.startswith("noodlecore.libs/")]
    assert any(re.match(r"noodlecore.libs/libpq-[0-9a-f]+\.so", n) for n in libs), libs
    assert any(re.match(r"noodlecore.libs/libsqlite3-[0-9a-f]+\.so", n) for n in libs), libs
    assert any(re.match(r"noodlecore.libs/libssl-[0-9a-f]+\.so", n) for n in libs), libs
    assert "noodlecore/py.typed" in names and "noodlecore/_native.pyi" in names
    show = REPAIR_LOG[repaired_wheel]
    said = " ".join(show.split())      # auditwheel wraps its lines
    assert '%s is consistent with the following platform tag: "%s"' % (repaired_wheel.name, tag.group(1)) in said, \
        show


INSIDE = r"""
set -euo pipefail
nothing=$WORK/not-a-library
printf 'not a library\n' >"$nothing"
fails=$WORK/no-compiler
printf '#!/bin/sh\necho "$0: no C compiler on this machine" >&2\nexit 127\n' >"$fails"
chmod +x "$fails"
mkdir -p "$WORK/empty"
for d in $HEADER_DIRS; do if [ -d "$d" ]; then mount --bind "$WORK/empty" "$d"; fi; done
for f in $HEADER_FILES $LIB_FILES; do if [ -e "$f" ]; then mount --bind "$nothing" "$f"; fi; done
for f in $COMPILER_FILES; do mount --bind "$fails" "$f"; done

echo "== out of reach"
echo "hidden: $HEADER_DIRS $HEADER_FILES $LIB_FILES $COMPILER_FILES"
for c in cc gcc c++ clang pg_config; do
    if command -v "$c" >/dev/null && "$c" --version >/dev/null 2>&1; then echo "STILL THERE: $c"; exit 3; fi
done
for f in /usr/include/postgresql/libpq-fe.h /usr/include/libpq-fe.h /usr/include/sqlite3.h; do
    if [ -e "$f" ] && grep -q -E 'PQconnectdb|sqlite3_open' "$f"; then echo "STILL THERE: $f"; exit 3; fi
done
"$BASE_PY" -c '
import ctypes, sys
for name in ("libpq.so.5", "libpq.so", "libsqlite3.so.0", "libsqlite3.so"):
    try:
        ctypes.CDLL(name)
    except OSError:
        continue
    print("STILL THERE:", name); sys.exit(3)
print("compilers, headers, libpq and libsqlite3: none usable")'

echo "== fresh venv, wheel installed from its file alone"
"$BASE_PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --no-index --no-deps "$WHEEL"
so=$("$WORK/venv/bin/python" -c 'import importlib.util; print(importlib.util.find_spec("noodlecore._native").origin)')
echo "extension: $so"
echo "== ldd"
ldd "$so"
echo "== native check"
cd "$WORK"
"$WORK/venv/bin/python" - <<'PYEOF'
import json, os
from noodlecore import _native
from noodlecore.database import DatabaseConnectionPool
with DatabaseConnectionPool("sqlite:///:memory:", max_connections=1) as pool:
    with pool.get_connection() as conn:
        lite = conn.execute_query("SELECT sqlite_version() AS v")[0]["v"]
with DatabaseConnectionPool(os.environ["PG_DSN"], max_connections=1) as pool:
    with pool.get_connection() as conn:
        pg = conn.execute_query("SELECT current_setting('server_version_num')::int AS v")[0]["v"]
print("NATIVE " + json.dumps({"libpq": _native.libpq_version, "sqlite": _native.sqlite_version,
                              "sqlite_query": lite, "pg_server": pg}))
PYEOF

echo "== demo (the interpreter's sqlite3 module gets the system libsqlite3.so.0 back)"
for f in $SQLITE_RUNTIME; do umount "$f"; done
"$WORK/venv/bin/noodlecore-db" demo --seconds 1 --json >"$WORK/demo.json"
echo "demo exit 0"
"""


def test_the_wheel_installs_and_runs_without_libpq_headers_or_compiler(repaired_wheel, pg, tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("this test makes a mount namespace: run it as root with unshare (util-linux)")
    lib_files, sqlite_runtime = _system_lib_files()
    compilers = sorted({os.path.realpath(p) for p in map(shutil.which, COMPILERS) if p})
    base_py = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    env = dict(os.environ, WORK=str(tmp_path), WHEEL=str(repaired_wheel), BASE_PY=base_py,
               PG_DSN=pg.dsn(application_name="nct_wheel"), HEADER_DIRS=" ".join(HEADER_DIRS),
               HEADER_FILES=" ".join(HEADER_FILES), LIB_FILES=" ".join(lib_files),
               SQLITE_RUNTIME=" ".join(sqlite_runtime), COMPILER_FILES=" ".join(compilers))
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "LD_PRELOAD"):
        env.pop(var, None)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", INSIDE],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    print(out)                         # shown with -s or -rP: what was hidden, ldd, the checks
    assert proc.returncode == 0, out
    assert "compilers, headers, libpq and libsqlite3: none usable" in out

    venv_libs = str(tmp_path / "venv") + "/"
    ldd = proc.stdout.split("== ldd\n", 1)[1].split("== native check\n", 1)[0]
    resolved = {}
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+)(?: => (\S+| not found))?", line)
        if m:
            resolved[m.group(1)] = (m.group(2) or m.group(1)).strip()
    assert "not found" not in ldd, ldd
    pq = [path for name, path in resolved.items() if name.startswith("libpq")]
    lite = [path for name, path in resolved.items() if name.startswith("libsqlite3")]
    assert len(pq) == 1 and len(lite) == 1, ldd
    for path in pq + lite:
        assert path.startswith(venv_libs) and "/noodlecore.libs/" in path, ldd
    for name, path in resolved.items():
        if not path.startswith(venv_libs):
            assert os.path.basename(name) in SYSTEM_LIBS, "%s comes from the system: %s" % (name, ldd)

    native = json.loads(re.search(r"^NATIVE (.*)$", proc.stdout, re.M).group(1))
    assert native["libpq"] >= 150000 and native["pg_server"] >= 150000
    assert native["sqlite"] == native["sqlite_query"]
    demo = json.loads((tmp_path / "demo.json").read_text())
    assert demo["failures"] == 0 and demo["stats"]["error_count"] == 0 and demo["stats"]["query_count"] > 100
