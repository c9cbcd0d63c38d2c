#!/usr/bin/env bash
# The test command (see README).  Stages, each reporting its own counts:
#
#   c-plain         the C core's unit tests (csrc/tests), plain build
#   c-sanitizers    the same under AddressSanitizer + LeakSanitizer + UBSan
#   c-tsan          the threaded ones (pool, janitor, monitor, route; make
#                   list-threaded) built with clang -fsanitize=thread
#   c-fuzz          the libFuzzer targets of csrc/fuzz (SQL lexer/rewrite,
#                   DSN parser, Patroni HTTP/JSON/URL readers) under ASan + UBSan, NOODLE_FUZZ_SECONDS (45)
#                   each on the repo's corpus; runs in the background while
#                   c-tsan runs (the machine has 2 cores)
#   pytest-python3  the pytest suite on python3, PYTHONMALLOC=debug; the only
#                   stage that runs the tests marked `once` (among them those
#                   on a real Patroni cluster: etcd, Patroni from
#                   tests/patroni-requirements.txt in its own venv on
#                   /usr/bin/python3, tini); the others deselect them
#                   (-m "not once")
#   pytest-second   the suite on a second CPython: the newest pyenv CPython
#                   newer than python3 if there is one, else Debian's debug
#                   build python3-dbg (catches reference-count errors);
#                   without the timing scenarios (marked `scenario`) and the
#                   server and network behaviour tests (marked `network`)
#   pytest-asan     the suite with the extension built with ASan + UBSan,
#                   leak detection on; without the timing scenarios
#
# Before that it installs what is missing, as root with apt-get (python3,
# python3-venv, python3-dev, python3-dbg when it is the second CPython,
# libpq-dev, libsqlite3-dev, postgresql-15, pgbouncer, gcc, libc6-dev, make, and for
# c-tsan and c-fuzz clang with its sanitizer/libFuzzer runtime, for the Patroni
# tests etcd-server and tini; no service is started by an install), and makes
# one virtual environment per interpreter with the exact versions of
# tests/requirements.txt.  The suite starts its own PostgreSQL servers.
#
# A stage that cannot run FAILS the run.  To leave stages out say so:
#   NOODLE_TEST_SKIP="pytest-second c-sanitizers"   (reported as opted out)
#   NOODLE_TEST_QUICK=1                              only pytest-python3
# Every pytest test has a timeout (NOODLE_TEST_TIMEOUT, default 300 s) and
# every C test program too (NOODLE_C_TEST_TIMEOUT, default 300 s); a stage
# that crashes or hangs is reported as CRASHED or HUNG with the test that was
# running.  Other settings: NOODLE_TEST_WORK (work directory), PYTHON.
#
# Ends with one line "total: N passed, N failed, N skipped": the sum over the
# stages that ran, where a C test is one test function of csrc/tests, a fuzz
# target one test, and a pytest test counts once for each stage it ran in
# (the output says so too).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=${NOODLE_TEST_WORK:-/tmp/noodlecore-test-work}
PGBIN=/usr/lib/postgresql/15/bin
TEST_TIMEOUT=${NOODLE_TEST_TIMEOUT:-300}
C_TEST_TIMEOUT=${NOODLE_C_TEST_TIMEOUT:-300}
# A whole pytest stage: far above its normal 1-4 minutes, below CI's limit.
STAGE_TIMEOUT=${NOODLE_STAGE_TIMEOUT:-1800}
STAGES=(c-plain c-sanitizers c-tsan c-fuzz pytest-python3 pytest-second pytest-asan)
FUZZ_SECONDS=${NOODLE_FUZZ_SECONDS:-45}
JOBS=$(nproc 2>/dev/null || echo 2)   # parallel builds (make -j, the extension's sources)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
mkdir -p "$WORK"

say() { printf '\n== [%d s] %s\n' "$SECONDS" "$*"; }   # seconds since the start
die() { echo "tests/run.sh: $*" >&2; exit 2; }

# -- which stages ------------------------------------------------------------
declare -A SKIP=()
SKIP_LIST=${NOODLE_TEST_SKIP:-}
for s in ${SKIP_LIST//,/ }; do
    [[ " ${STAGES[*]} " == *" $s "* ]] || die "NOODLE_TEST_SKIP: unknown stage '$s' (stages: ${STAGES[*]})"
    SKIP[$s]="NOODLE_TEST_SKIP"
done
if [ -n "${NOODLE_TEST_QUICK:-}" ]; then
    for s in "${STAGES[@]}"; do
        [ "$s" = pytest-python3 ] || SKIP[$s]="NOODLE_TEST_QUICK"
    done
fi
wanted() { [ -z "${SKIP[$1]:-}" ]; }

# Per stage: status (ok, FAILED, CRASHED, HUNG, MISSING, opted out), counts, notes.
declare -A ST_STATUS=() ST_PASS=() ST_FAIL=() ST_SKIP=() ST_NOTE=()
record() {   # record STAGE STATUS PASSED FAILED SKIPPED NOTE
    ST_STATUS[$1]=$2 ST_PASS[$1]=$3 ST_FAIL[$1]=$4 ST_SKIP[$1]=$5 ST_NOTE[$1]=$6
    printf -- '-- stage %s: %s: %s passed, %s failed, %s skipped%s\n' "$1" "$2" "$3" "$4" "$5" "${6:+ ($6)}"
}

# -- 1. system packages ------------------------------------------------------
PY=${PYTHON:-python3}
APT_UPDATED=
apt_install() {
    [ $# -gt 0 ] || return 0
    say "installing $*"
    [ "$(id -u)" = 0 ] || die "missing $* and not root: install them first"
    # Debian's postgresql-common makes and starts a "main" cluster when the
    # server is installed; the suite starts its own servers, so ask for none.
    # Nor any other service (etcd): a policy-rc.d that says no, when there is none.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# tests/run.sh: packages must not start services\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/50-noodlecore-tests.conf
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    # Debian starts a package's service when it is installed (pgbouncer on port
    # 6432): the suite starts its own, so a policy-rc.d refuses it for the
    # install (ours only: an existing one is left alone).
    local policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$WORK/apt.log" 2>&1
    local rc=$?
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || { cat "$WORK/apt.log" >&2; die "apt-get install $* failed"; }
}

py_has() {   # py_has PYTHON: the interpreter runs, makes venvs and has its headers
    "$1" - <<'PYEOF' >/dev/null 2>&1
import ensurepip, os, sysconfig, venv
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
PYEOF
}

need=()
if ! command -v "$PY" >/dev/null; then
    [ "$PY" = python3 ] || die "PYTHON=$PY not found"
    need+=(python3 python3-venv python3-dev)
elif ! py_has "$PY"; then
    # Debian splits venv/ensurepip and the headers out of python3.
    [ "$(command -v "$PY")" = /usr/bin/python3 ] || die "$PY cannot make a venv or has no Python.h"
    need+=(python3-venv python3-dev)
fi
[ -x "$PGBIN/initdb" ] || need+=(postgresql-15)
command -v pg_config >/dev/null && [ -f "$(pg_config --includedir)/libpq-fe.h" ] || need+=(libpq-dev)
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
# tests/test_pgbouncer.py: the pool through Debian's pgbouncer
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/stdio.h ] || need+=(libc6-dev)
command -v make >/dev/null || need+=(make)
if wanted c-tsan || wanted c-fuzz; then
    command -v clang >/dev/null || need+=(clang)
fi
if wanted pytest-python3; then
    command -v etcd >/dev/null || need+=(etcd-server)
    command -v tini >/dev/null || need+=(tini)
    # Patroni's venv is built on Debian's interpreter: the postgres user runs it
    [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 \
        || need+=(python3 python3-venv)
fi
apt_install "${need[@]}"
# clang's libFuzzer and ThreadSanitizer runtimes are a package of their own
# on Debian (libclang-rt-N-dev): check by building, install when it fails.
clang_runtimes_ok() {
    local d
    d=$(mktemp -d) || return 1
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; return (int)n * 0; }\n' >"$d/f.c"
    printf 'int main(void) { return 0; }\n' >"$d/t.c"
    clang -fsanitize=fuzzer,address,undefined -o "$d/f" "$d/f.c" >/dev/null 2>&1 \
        && clang -fsanitize=thread -o "$d/t" "$d/t.c" >/dev/null 2>&1
    local rc=$?
    rm -rf "$d"
    return $rc
}
if (wanted c-tsan || wanted c-fuzz) && ! clang_runtimes_ok; then
    apt_install "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
    clang_runtimes_ok || die "clang cannot build with -fsanitize=fuzzer / thread after installing its runtime"
fi
py_has "$PY" || die "$PY still cannot make a venv with headers after installing"

# The second CPython: the newest pyenv CPython newer than python3, else
# Debian's debug build of its own CPython (a different build: Py_DEBUG, with
# reference-count and allocator checks).
SECOND=
SECOND_WHY=
if wanted pytest-second; then
    SECOND=$("$PY" - <<'PYEOF'
import glob, os, re, sys
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
    if [ -n "$SECOND" ]; then
        SECOND_WHY="newest pyenv CPython newer than $PY"
    elif [ -f /etc/debian_version ]; then
        [ -x /usr/bin/python3-dbg ] || apt_install python3-dbg
        SECOND=/usr/bin/python3-dbg
        SECOND_WHY="no newer pyenv CPython: Debian's debug build"
    fi
fi

# -- 2. C unit tests ---------------------------------------------------------
SAN_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
SAN_LDFLAGS="-fsanitize=address,undefined"
# Leak detection on; every report goes to a file of the stage (log_path) so
# reports of child processes are seen too, and any sanitizer exit is non-zero.
# use_sigaltstack=0: GCC 12's libasan can report a stack-buffer-underflow in
# its own thread teardown (AsanThread::Destroy -> sigaltstack, no frame of
# ours) when a native thread ends while the process exits; the alternate
# stack only serves ASan's stack-overflow reports.
asan_options() { echo "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=99:use_sigaltstack=0:log_path=$1/asan"; }
LSAN_OPTS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
ubsan_options() { echo "halt_on_error=1:print_stacktrace=1:exitcode=98:log_path=$1/ubsan"; }

# run_c_stage STAGE SANFLAGS [ENV...]; C_BUILD (build dir), C_WHICH (all or
# threaded), C_CC and C_RUN (a command put before each program) from the
# environment of the call.
run_c_stage() {
    local stage=$1 sanflags=$2 build=${C_BUILD:-build} which=${C_WHICH:-all} cc=${C_CC:-gcc}
    shift 2
    say "$stage: C core unit tests ($which, $cc)${sanflags:+ built with $sanflags}"
    local logdir="$WORK/$stage"
    rm -rf "$logdir"
    mkdir -p "$logdir"
    # clean, then the build on every core (the programs are independent)
    if ! { make -s -C csrc/tests BUILD="$build" clean \
            && make -s -j"$JOBS" -C csrc/tests BUILD="$build" CC="$cc" "$which" SANFLAGS="$sanflags"; } \
            >"$logdir/build.log" 2>&1; then
        cat "$logdir/build.log"
        record "$stage" FAILED 0 0 0 "build failed"
        return
    fi
    local progs status=ok tp=0 tf=0 checks=0 notes=()
    if [ "$which" = threaded ]; then
        progs=$(make -s -C csrc/tests list-threaded)
    else
        progs=$(make -s -C csrc/tests list)
    fi
    for t in $progs; do
        local log="$logdir/$t.log" rc
        env "$@" timeout -k 10 "$C_TEST_TIMEOUT" ${C_RUN:-} "csrc/tests/$build/$t" >"$log" 2>&1
        rc=$?
        local sum cases cfail chk last what
        sum=$(grep '^NCTEST summary ' "$log" | tail -1)
        cases=$(grep -c '^NCTEST case .* ok ' "$log")
        cfail=$(grep -c '^NCTEST case .* FAIL ' "$log")
        chk=$(sed -n 's/^NCTEST summary .* checks=\([0-9]*\) .*/\1/p' "$log" | tail -1)
        last=$(sed -n 's/^NCTEST start [^ ]* //p' "$log" | tail -1)
        last=${last:-(before the first)}
        tp=$((tp + cases)) tf=$((tf + cfail)) checks=$((checks + ${chk:-0}))
        grep -E '^FAIL ' "$log" | head -20
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            what="HUNG: killed after ${C_TEST_TIMEOUT} s in test function '$last'"
            status=HUNG tf=$((tf + 1))
        elif [ -z "$sum" ]; then
            if [ "$rc" = 99 ] || [ "$rc" = 98 ] || [ "$rc" = 97 ]; then
                what="stopped by a sanitizer report (exit $rc) in test function '$last'"
            elif [ "$rc" -gt 128 ]; then
                what="CRASHED (signal $((rc - 128))) in test function '$last'"
            else
                what="CRASHED (exit $rc, no summary) in test function '$last'"
            fi
            [ "$status" = HUNG ] || status=CRASHED
            tf=$((tf + 1))
        elif [ "$rc" != 0 ] && [ "$cfail" = 0 ]; then
            what="exit $rc after all tests passed: a sanitizer report"
            [ "$status" = ok ] && status=FAILED
        elif [ "$rc" != 0 ]; then
            what="$cfail test functions failed"
            [ "$status" = ok ] && status=FAILED
        else
            what="ok"
        fi
        if [ "$what" != ok ]; then
            notes+=("$t: $what")
            grep -v '^NCTEST ' "$log" | tail -15
            # the first sanitizer report in full, then the summary of each
            cat "$(ls "$logdir"/asan.* "$logdir"/ubsan.* "$logdir"/tsan.* 2>/dev/null | head -1)" 2>/dev/null | head -60
            grep -h 'SUMMARY:' "$logdir"/asan.* "$logdir"/ubsan.* "$logdir"/tsan.* 2>/dev/null
            rm -f "$logdir"/asan.* "$logdir"/ubsan.* "$logdir"/tsan.*   # shown: the next program's are its own
        fi
        printf '  %-14s %3d test functions passed, %d failed, %5d checks  %s\n' "$t" "$cases" "$cfail" "${chk:-0}" "$what"
    done
    # Reports of the sanitizers that did not change an exit status (none expected).
    if ls "$logdir"/asan.* "$logdir"/ubsan.* "$logdir"/tsan.* >/dev/null 2>&1 && [ "$status" = ok ]; then
        cat "$logdir"/asan.* "$logdir"/ubsan.* "$logdir"/tsan.* 2>/dev/null | head -80
        status=FAILED
        notes+=("sanitizer reports in $logdir")
    fi
    local IFS=';'
    record "$stage" "$status" "$tp" "$tf" 0 "$(echo $(wc -w <<<"$progs")) programs, $checks checks${notes[*]:+; ${notes[*]}}"
}

# run_fuzz_targets DIR: build csrc/fuzz (clang, libFuzzer, ASan + UBSan) and
# run the targets at once, FUZZ_SECONDS each, on the repo's corpus (new
# inputs go to DIR, the repo's corpus is not changed) with its
# dictionary.  A crash, a sanitizer report, a leak or a broken invariant ends
# the target with a non-zero exit and an input file (shown).  Prints a line
# per target and last "result STATUS PASSED FAILED NOTE".
run_fuzz_targets() {
    local dir=$1 pass=0 fail=0 status=ok notes=() t
    if ! make -s -C csrc/fuzz clean all CC=clang >"$dir/build.log" 2>&1; then
        cat "$dir/build.log"
        echo "result FAILED 0 1 build failed"
        return
    fi
    # The three targets at once (the wall time is what bounds them).
    for t in sql dsn patroni; do
        local art="$dir/artifacts-$t/"
        mkdir -p "$dir/new-$t" "$art"
        # No log_path: libFuzzer prints the report with the input that caused it.
        env ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" LSAN_OPTIONS="$LSAN_OPTS" \
            UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
            timeout -k 10 $((FUZZ_SECONDS + 300)) csrc/fuzz/build/fuzz_$t -rss_limit_mb=1024 -timeout=10 \
            -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -dict=csrc/fuzz/$t.dict \
            -artifact_prefix="$art" "$dir/new-$t" csrc/fuzz/corpus/$t >"$dir/fuzz_$t.log" 2>&1 &
        eval "fuzz_pid_$t=\$!"
    done
    for t in sql dsn patroni; do
        local log="$dir/fuzz_$t.log" new="$dir/new-$t" art="$dir/artifacts-$t/" rc pidvar="fuzz_pid_$t"
        wait "${!pidvar}"
        rc=$?
        local runs secs corpus newu
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
        corpus=$(ls csrc/fuzz/corpus/$t | wc -l)
        newu=$(ls "$new" | wc -l)
        if [ "$rc" = 0 ]; then
            pass=$((pass + 1))
            printf '  fuzz_%-4s ok: %s inputs in %s s, from a corpus of %s, %s new (not kept)\n' \
                "$t" "${runs:-?}" "${secs:-?}" "$corpus" "$newu"
        else
            fail=$((fail + 1)) status=FAILED
            grep -a -E 'broken promise|ERROR: |SUMMARY: |runtime error|Test unit written' "$log" | head -10
            printf '  fuzz_%-4s FAILED (exit %s): the input is in %s; replay: make -C csrc/fuzz && csrc/fuzz/build/fuzz_%s FILE\n' \
                "$t" "$rc" "$art" "$t"
            notes+=("fuzz_$t: exit $rc, input in $art")
        fi
    done
    make -s -C csrc/fuzz clean
    local IFS=';'
    echo "result $status $pass $fail ${FUZZ_SECONDS} s each${notes[*]:+; ${notes[*]}}"
}

if wanted c-plain; then
    run_c_stage c-plain ""
fi
if wanted c-sanitizers; then
    mkdir -p "$WORK/c-sanitizers"
    run_c_stage c-sanitizers "$SAN_CFLAGS" \
        ASAN_OPTIONS="$(asan_options "$WORK/c-sanitizers")" LSAN_OPTIONS="$LSAN_OPTS" \
        UBSAN_OPTIONS="$(ubsan_options "$WORK/c-sanitizers")"
fi
# c-fuzz: in the background from here, so it overlaps c-tsan (mostly
# compiling; its timing bounds are scaled for TSan) and not the plain and
# ASan stages, whose tighter timing bounds a busy second core could break.
# The targets run at once; the report comes after c-tsan.
FUZZ_PID=
if wanted c-fuzz; then
    rm -rf "$WORK/c-fuzz"
    mkdir -p "$WORK/c-fuzz"
    run_fuzz_targets "$WORK/c-fuzz" >"$WORK/c-fuzz/stage.log" 2>&1 &
    FUZZ_PID=$!
fi
if wanted c-tsan; then
    # setarch -R: no address randomisation, which ThreadSanitizer's fixed
    # memory layout needs on kernels with high mmap entropy.
    C_RUN=
    setarch "$(uname -m)" -R true 2>/dev/null && C_RUN="setarch $(uname -m) -R"
    C_BUILD=build-tsan C_WHICH=threaded C_CC=clang C_RUN=$C_RUN \
        run_c_stage c-tsan "-fsanitize=thread -fno-omit-frame-pointer -g -O1" \
        TSAN_OPTIONS="halt_on_error=1:exitcode=97:second_deadlock_stack=1:log_path=$WORK/c-tsan/tsan"
    make -s -C csrc/tests BUILD=build-tsan clean
fi
if wanted c-plain || wanted c-sanitizers; then
    make -s -C csrc/tests clean
fi
if [ -n "$FUZZ_PID" ]; then
    say "c-fuzz: libFuzzer targets (csrc/fuzz), $FUZZ_SECONDS s each, ASan + UBSan"
    wait "$FUZZ_PID"
    cat "$WORK/c-fuzz/stage.log"
    # The script's last line: "result STATUS PASSED FAILED NOTE"
    read -r _ f_status f_pass f_fail f_note < <(grep '^result ' "$WORK/c-fuzz/stage.log" | tail -1)
    record c-fuzz "${f_status:-CRASHED}" "${f_pass:-0}" "${f_fail:-1}" 0 "${f_note:-no result line: $WORK/c-fuzz/stage.log}"
fi

# -- 3. virtual environments -------------------------------------------------
# A copy of the source tree without build products, so every install builds
# from scratch with the flags it is given.
fresh_source() {
    local dest=$1
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude='./*.egg-info' \
        --exclude='*.so' --exclude='*.o' --exclude='./bench/.venv' --exclude='__pycache__' \
        --exclude='./csrc/tests/build' --exclude='./csrc/tests/build-tsan' --exclude='./csrc/fuzz/build' \
        -cf - . | tar -C "$dest" -xf -
}

# make_env NAME PYTHON [CFLAGS [LDFLAGS]] -> prints the venv with noodlecore
# installed.  The venv is reused only when its stamp (written last, after every
# install succeeded) names this interpreter and these requirements; anything
# else is removed and made afresh, so a half-made venv is never used.
make_env() {
    local name=$1 python=$2 cflags=${3:-} ldflags=${4:-}
    local venv="$WORK/venv-$name" src="$WORK/src-$name" log="$WORK/pip-$name.log"
    # The packaging tests' tools (mypy, auditwheel) only where they run, and
    # SQLAlchemy's compliance suite with its control driver
    # (tests/requirements-sqla.txt, tests marked `once`) likewise.
    local reqs=(tests/requirements.txt)
    [ "$name" = main ] && reqs+=(tests/requirements-packaging.txt scripts/requirements-wheel.txt tests/requirements-sqla.txt)
    local key
    key="$(readlink -f "$(command -v "$python")") $("$python" -c 'import sys; print(sys.version.split()[0], sys.abiflags)') $(cat "${reqs[@]}" | sha256sum | cut -c1-16)"
    if [ ! -f "$venv/.noodlecore-stamp" ] || [ "$(cat "$venv/.noodlecore-stamp")" != "$key" ] \
        || ! "$venv/bin/python" -c 'import pytest, pytest_timeout' >/dev/null 2>&1; then
        rm -rf "$venv"
        { "$python" -m venv "$venv" \
            && "$venv/bin/python" -m pip install -q --no-deps -r tests/requirements.txt \
                ${reqs[1]:+-r "${reqs[1]}"} ${reqs[3]:+-r "${reqs[3]}"} \
            && "$venv/bin/python" -m pip check; } >"$log" 2>&1 || { cat "$log" >&2; return 1; }
        echo "$key" >"$venv/.noodlecore-stamp"
    fi
    fresh_source "$src"
    # A wheel, then its install: the first pytest stage's wheel test repairs
    # this one (NOODLE_RAW_WHEEL) instead of compiling the extension again.
    rm -rf "$WORK/wheel-$name"
    { NOODLE_CFLAGS="-Werror $cflags" NOODLE_LDFLAGS="$ldflags" \
        "$venv/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/wheel-$name" "$src" \
        && "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$WORK/wheel-$name"/noodlecore-*.whl; } \
        >>"$log" 2>&1 || { cat "$log" >&2; return 1; }
    echo "$venv"
}

describe_python() {   # "CPython 3.11.7 (path)", "debug build" when it is one, and a venv's base interpreter
    "$1" -c 'import os, platform, sys
venv = sys.prefix != sys.base_prefix
print("%s %s%s (%s%s)" % (platform.python_implementation(), platform.python_version(),
      ", debug build" if hasattr(sys, "gettotalrefcount") else "", sys.executable,
      ", a venv of " + os.path.realpath(sys.executable) if venv else ""))'
}

# -- 4. the pytest suite -----------------------------------------------------
# Tests marked `once` (tests/conftest.py) run in pytest-python3 only: slow
# integration tests whose subject is neither the extension's memory safety
# nor the interpreter version (the CLI, the test harness itself, other
# projects' suites, clusters of other programs).  The other stages run
# everything else; their note says how many were left to pytest-python3.
ONCE_ONLY=(-m "not once")
PYTEST_SELECT=()
# run_pytest_stage STAGE VENV [ENV...]; PYTEST_SELECT: extra pytest arguments
run_pytest_stage() {
    local stage=$1 venv=$2
    shift 2
    local dir="$WORK/$stage"
    local xml="$dir/junit.xml" log="$dir/pytest.log"
    rm -rf "$dir"
    mkdir -p "$dir"
    say "$stage: pytest suite on $(describe_python "$venv/bin/python")${PYTEST_SELECT[*]:+ (${PYTEST_SELECT[*]})}"
    # The venv's pytest script, not "python -m pytest": the repo root must
    # not be on sys.path, so the tests import the installed package.  -v in
    # the log names the test that was running if the stage dies.  The thread
    # method of pytest-timeout works even when a test hangs in C code without
    # the GIL: it dumps every thread's stack and ends the process.
    ( cd "$ROOT" && env NOODLE_EXPECT_INSTALLED=1 "$@" timeout -k 30 "$STAGE_TIMEOUT" \
          "$venv/bin/pytest" -v -rfEs -p no:cacheprovider --timeout="$TEST_TIMEOUT" --timeout-method=thread \
          --junitxml="$xml" "${PYTEST_SELECT[@]}" tests ) >"$log" 2>&1
    local rc=$?
    local counts
    counts=$("$PY" - "$xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("none")
    sys.exit()
p = f = s = 0
for suite in root.iter("testsuite"):
    t = int(suite.get("tests", 0)); fl = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    sk = int(suite.get("skipped", 0))
    p += t - fl - sk; f += fl; s += sk
print(p, f, s)
PYEOF
)
    # Show the failures and the closing lines; the whole output is in the log.
    if grep -q -E '^=+ (FAILURES|ERRORS) =+$' "$log"; then
        sed -n '/^=* \(FAILURES\|ERRORS\) =*$/,$p' "$log" | head -400
    else
        grep -E '^(SKIPPED|FAILED|ERROR) |^=+ .*(passed|failed|error|skipped).* =+$' "$log" | tail -20
    fi
    local p f s status=ok note="log: $log"
    local desel
    desel=$(grep -o -E '[0-9]+ deselected' "$log" | tail -1)
    [ -n "$desel" ] && note="$desel (${PYTEST_SELECT[*]}; modules marked once are not collected); $note"
    if [ "$counts" = none ]; then
        # No report: the process died or was killed.  From the -v lines, what
        # finished and which test had started without a result.
        read -r p f s < <(grep -E '^tests/.*::.* (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)' "$log" \
            | awk '/ PASSED| XFAIL| XPASS/{p++} / FAILED| ERROR/{f++} / SKIPPED/{s++} END{print p+0, f+0, s+0}')
        local last
        last=$(grep -E '^tests/[^ ]*::' "$log" | tail -1 | awk '{print $1}')
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            status=HUNG note="stage killed after ${STAGE_TIMEOUT} s; running: $last; $note"
        elif grep -q -E '^\+{5,} Timeout \+{5,}$' "$log"; then
            status=HUNG note="test timed out after ${TEST_TIMEOUT} s and the stage was ended: $last; $note"
        else
            status=CRASHED note="exit $rc$([ "$rc" -gt 128 ] && echo " (signal $((rc - 128)))") with no report; running: $last; $note"
        fi
        tail -60 "$log"
        f=$((f + 1))
    else
        read -r p f s <<<"$counts"
        if [ "$rc" != 0 ]; then
            status=FAILED
            [ "$f" = 0 ] && note="pytest exit $rc with no failed test; $note"
        fi
    fi
    if [ -n "$(ls "$dir"/asan.* "$dir"/ubsan.* 2>/dev/null)" ]; then
        # Fails on sanitizer errors and on leaks with a frame in our code;
        # lists the leaks of others (see the script).
        if ! "$PY" tests/sanitizer_report.py "$dir"; then
            [ "$status" = ok ] && status=FAILED
            note="sanitizer reports of our code; $note"
        fi
    fi
    record "$stage" "$status" "$p" "$f" "$s" "$note"
}

INTERPRETERS=()
env_or_fail() {   # env_or_fail STAGE NAME PYTHON [CFLAGS LDFLAGS] -> sets VENV or records a failure
    local stage=$1
    shift
    say "$stage: building and installing noodlecore for $(describe_python "$2")"
    if ! VENV=$(make_env "$@"); then
        record "$stage" FAILED 0 0 0 "could not make the venv or build noodlecore (log: $WORK/pip-$1.log)"
        return 1
    fi
}

# The Patroni the Patroni tests run (noodlecore.testing.patroni finds it through
# NOODLE_PATRONI_BIN): a venv on /usr/bin/python3 with tests/patroni-requirements.txt,
# kept under the work dir while its stamp matches.  Prints the patroni executable.
make_patroni_env() {
    local venv="$WORK/venv-patroni" log="$WORK/pip-patroni.log" key
    key="$(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])') $(sha256sum tests/patroni-requirements.txt | cut -c1-16)"
    if [ ! -f "$venv/.noodlecore-stamp" ] || [ "$(cat "$venv/.noodlecore-stamp")" != "$key" ] \
        || ! "$venv/bin/python" -c 'import patroni' >/dev/null 2>&1; then
        rm -rf "$venv"
        { /usr/bin/python3 -m venv "$venv" \
            && "$venv/bin/python" -m pip install -q --no-deps -r tests/patroni-requirements.txt \
            && "$venv/bin/python" -m pip check; } >"$log" 2>&1 || { cat "$log" >&2; return 1; }
        echo "$key" >"$venv/.noodlecore-stamp"
    fi
    # the postgres user runs it: every directory on the way must be searchable
    chmod -R a+rX "$venv"
    local d=$venv
    while [ "$d" != / ]; do chmod a+x "$d" 2>/dev/null; d=$(dirname "$d"); done
    echo "$venv/bin/patroni"
}

if wanted pytest-python3; then
    PATRONI_BIN=
    say "pytest-python3: the Patroni venv (tests/patroni-requirements.txt)"
    PATRONI_BIN=$(make_patroni_env) || echo "could not make the Patroni venv (log: $WORK/pip-patroni.log): the patroni tests will fail"
    # PYTHONMALLOC=debug makes CPython abort on any allocator call made without
    # the GIL (a native thread bug that the release build would hide).
    if env_or_fail pytest-python3 main "$PY"; then
        INTERPRETERS+=("pytest-python3: $(describe_python "$VENV/bin/python"), PYTHONMALLOC=debug")
        run_pytest_stage pytest-python3 "$VENV" PYTHONMALLOC=debug NOODLE_PATRONI_BIN="$PATRONI_BIN" \
            NOODLE_RAW_WHEEL="$(ls "$WORK"/wheel-main/noodlecore-*.whl)"
    fi
fi

if wanted pytest-second; then
    if [ -z "$SECOND" ]; then
        record pytest-second MISSING 0 0 0 "no second CPython: no pyenv CPython newer than $PY and not Debian; opt out with NOODLE_TEST_SKIP=pytest-second"
    elif env_or_fail pytest-second second "$SECOND"; then
        INTERPRETERS+=("pytest-second: $(describe_python "$VENV/bin/python") [$SECOND_WHY]")
        # nor the timing scenarios (marked `scenario`) nor the tests whose
        # subject is the server's or the network's behaviour (marked
        # `network`): the second CPython is there for the binding's
        # interpreter-dependent code
        PYTEST_SELECT=(-m "not once and not scenario and not network")
        run_pytest_stage pytest-second "$VENV"
        PYTEST_SELECT=()
    fi
fi

if wanted pytest-asan; then
    if env_or_fail pytest-asan asan "$PY" "$SAN_CFLAGS" "$SAN_LDFLAGS"; then
        LIBASAN=$(gcc -print-file-name=libasan.so)
        INTERPRETERS+=("pytest-asan: $(describe_python "$VENV/bin/python"), extension with ASan+UBSan, $LIBASAN preloaded")
        # nor the timing scenarios (marked `scenario`): their C paths (probe,
        # switch, drain) run under ASan in the failover tests that remain
        # (test_failover_mock, test_failover_pg_reads, test_teardown,
        # test_fork); the scenarios' subject is timing, and the budget is 15 min
        PYTEST_SELECT=(-m "not once and not scenario")
        run_pytest_stage pytest-asan "$VENV" LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc \
            ASAN_OPTIONS="$(asan_options "$WORK/pytest-asan")" LSAN_OPTIONS="$LSAN_OPTS" \
            UBSAN_OPTIONS="$(ubsan_options "$WORK/pytest-asan")" \
            NOODLE_SANITIZER=1
    fi
fi

# -- 5. summary --------------------------------------------------------------
say "summary"
TP=0 TF=0 TS=0 BAD=()
for s in "${STAGES[@]}"; do
    if [ -n "${SKIP[$s]:-}" ]; then
        printf '  %-15s opted out (%s)\n' "$s" "${SKIP[$s]}"
        continue
    fi
    if [ -z "${ST_STATUS[$s]:-}" ]; then
        ST_STATUS[$s]=MISSING ST_PASS[$s]=0 ST_FAIL[$s]=0 ST_SKIP[$s]=0 ST_NOTE[$s]="did not run"
    fi
    printf '  %-15s %-8s %5d passed, %d failed, %d skipped\n' "$s" "${ST_STATUS[$s]}" "${ST_PASS[$s]}" \
        "${ST_FAIL[$s]}" "${ST_SKIP[$s]}"
    [ "${ST_STATUS[$s]}" = ok ] || BAD+=("$s: ${ST_STATUS[$s]} (${ST_NOTE[$s]})")
    TP=$((TP + ST_PASS[$s])) TF=$((TF + ST_FAIL[$s])) TS=$((TS + ST_SKIP[$s]))
done
echo "elapsed: $SECONDS s"
echo "interpreters:"
for i in "${INTERPRETERS[@]}"; do
    echo "  $i"
done
for b in "${BAD[@]}"; do
    echo "NOT OK: $b"
done
echo "total = sum over the stages that ran; a C test is one test function of csrc/tests, a fuzz target"
echo "one test, a pytest test counts once per stage it ran in, and a test that crashed or hung its stage"
echo "counts as failed."
echo
echo "total: $TP passed, $TF failed, $TS skipped"
[ ${#BAD[@]} -eq 0 ]
