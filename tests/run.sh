#!/usr/bin/env bash
# The test command (see README):
#   1. installs what is missing (Debian packages for libpq, SQLite and the
#      PostgreSQL 15 server; pytest into fresh virtual environments),
#   2. runs the C core's unit tests, plain and under AddressSanitizer+UBSan,
#   3. pip-installs noodlecore (built with -Werror) into a fresh venv for
#      python3 and for the newest newer CPython that pyenv has, and runs the
#      pytest suite with each (the suite starts its own PostgreSQL servers),
#   4. builds the extension with AddressSanitizer and UBSan and runs the
#      suite once more; any sanitizer report fails the run.
# Ends with one line "total: N passed, N failed, N skipped".
# NOODLE_TEST_QUICK=1 runs only step 3 for python3 (for development).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=${NOODLE_TEST_WORK:-/tmp/noodlecore-test-work}
PY=${PYTHON:-python3}
PGBIN=/usr/lib/postgresql/15/bin
mkdir -p "$WORK"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf '\n== %s\n' "$*"; }

# -- 1. system packages ------------------------------------------------------
need=()
[ -x "$PGBIN/initdb" ] || need+=(postgresql-15)
[ -f "$(pg_config --includedir 2>/dev/null)/libpq-fe.h" ] || need+=(libpq-dev)
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" postgresql-common- >/dev/null \
          || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing ${need[*]} and not root: install them first" >&2
        exit 2
    fi
    # Debian's package starts a cluster of its own; the suite starts its own servers.
    command -v pg_ctlcluster >/dev/null && pg_ctlcluster 15 main stop 2>/dev/null || true
fi

SAN_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"

# -- 2. C unit tests ---------------------------------------------------------
if [ -z "${NOODLE_TEST_QUICK:-}" ]; then
    say "C core unit tests"
    make -s -C csrc/tests clean check
    say "C core unit tests under AddressSanitizer + UBSan"
    make -s -C csrc/tests clean check SANFLAGS="$SAN_CFLAGS"
    make -s -C csrc/tests clean
fi

# A copy of the source tree without build products, so every install builds
# from scratch with the flags it is given.
fresh_source() {
    local dest=$1
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude='./*.egg-info' \
        --exclude='*.so' --exclude='*.o' --exclude='./bench/.venv' --exclude='__pycache__' \
        --exclude='./csrc/tests/build' -cf - . | tar -C "$dest" -xf -
}

# make_env NAME PYTHON [CFLAGS [LDFLAGS]] -> venv with noodlecore installed
make_env() {
    local name=$1 python=$2 cflags=${3:-} ldflags=${4:-}
    local venv="$WORK/venv-$name" src="$WORK/src-$name"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    local log="$WORK/pip-$name.log"
    "$venv/bin/python" -m pip install -q --upgrade "setuptools>=61" wheel "pytest>=7" prometheus_client >"$log" 2>&1 \
        || { cat "$log" >&2; return 1; }
    fresh_source "$src"
    NOODLE_CFLAGS="-Werror $cflags" NOODLE_LDFLAGS="$ldflags" \
        "$venv/bin/python" -m pip install -q --no-build-isolation --force-reinstall --no-deps "$src" \
        >>"$log" 2>&1 || { cat "$log" >&2; return 1; }
    echo "$venv"
}

RESULTS=()
FAILED=0
run_suite() {
    local name=$1 venv=$2
    shift 2
    local xml="$WORK/junit-$name.xml"
    rm -f "$xml"
    say "pytest suite: $name ($("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])'))"
    # The venv's pytest script, not "python -m pytest": the repo root must
    # not be on sys.path, so the tests import the installed package.
    ( cd "$ROOT" && env NOODLE_EXPECT_INSTALLED=1 "$@" "$venv/bin/pytest" -q -p no:cacheprovider \
          --junitxml="$xml" tests ) || FAILED=1
    RESULTS+=("$xml")
}

say "building and installing noodlecore for $PY"
V1=$(make_env main "$PY")
# PYTHONMALLOC=debug makes CPython abort on any allocator call made without
# the GIL (a native thread bug that the release build would hide).
run_suite "$(basename "$PY")" "$V1" PYTHONMALLOC=debug

if [ -z "${NOODLE_TEST_QUICK:-}" ]; then
    # The newest CPython newer than python3 that pyenv has, if any.
    NEWER=$("$PY" - <<'PYEOF'
import glob, os, re, subprocess, sys
root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
best = None
for exe in glob.glob(os.path.join(root, "versions", "*", "bin", "python3")):
    m = re.search(r"versions/(\d+)\.(\d+)\.(\d+)/", exe)
    if not m:
        continue
    v = tuple(map(int, m.groups()))
    if v[:2] > sys.version_info[:2] and (best is None or v > best[0]):
        best = (v, exe)
print(best[1] if best else "")
PYEOF
)
    if [ -n "$NEWER" ]; then
        say "building and installing noodlecore for $NEWER"
        V2=$(make_env newer "$NEWER")
        run_suite "python$("$NEWER" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$V2"
    else
        say "no newer CPython found under pyenv; skipping that run"
    fi

    say "building noodlecore with AddressSanitizer + UBSan"
    V3=$(make_env asan "$PY" "$SAN_CFLAGS" "-fsanitize=address,undefined")
    LIBASAN=$(gcc -print-file-name=libasan.so)
    run_suite "asan+ubsan" "$V3" LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=99 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=98 NOODLE_SANITIZER=1
fi

"$PY" - "${RESULTS[@]}" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
p = f = s = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except Exception:
        f += 1
        continue
    for suite in root.iter("testsuite"):
        t = int(suite.get("tests", 0)); fl = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        sk = int(suite.get("skipped", 0))
        p += t - fl - sk; f += fl; s += sk
print()
print(f"total: {p} passed, {f} failed, {s} skipped")
PYEOF
exit $FAILED
