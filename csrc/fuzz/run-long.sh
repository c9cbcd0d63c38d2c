#!/usr/bin/env bash
# csrc/fuzz/run-long.sh - long fuzzing runs of the core's text parsers.
#
#   csrc/fuzz/run-long.sh [SECONDS [JOBS]]     default 3600 s per target, 1 job
#
# Builds the libFuzzer targets (csrc/fuzz/Makefile: clang, ASan + UBSan) and
# runs each for SECONDS with JOBS parallel workers, starting from the repo's
# corpus (csrc/fuzz/corpus/<target>) and the target's dictionary.  New
# interesting inputs go to csrc/fuzz/build/new/<target>; at the end they are
# merged (-merge=1: only inputs that add coverage) into the repo's corpus, so
# `git status` shows what a long run found worth keeping.  A crash or broken
# promise leaves its input in csrc/fuzz/build/artifacts/<target>/ and the
# script exits 1: replay it with csrc/fuzz/build/fuzz_<target> FILE, fix the
# core with a C unit test, and copy the file into the corpus.
# The test command (tests/run.sh, stage c-fuzz) runs the same targets for a
# short time on every run.
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-3600}
JOBS=${2:-1}
make -s all || exit 2
status=0
for t in sql dsn; do
    mkdir -p build/new/$t build/artifacts/$t
    echo "== fuzz_$t: $SECONDS_EACH s, $JOBS job(s)"
    par=()
    # -jobs writes each worker's output to fuzz-N.log here (build/ keeps them out of git).
    [ "$JOBS" -gt 1 ] && par=(-jobs="$JOBS" -workers="$JOBS")
    ( cd build && ./fuzz_$t -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -max_total_time="$SECONDS_EACH" \
        "${par[@]}" -dict=../$t.dict -artifact_prefix=artifacts/$t/ new/$t ../corpus/$t ) || status=1
    ./build/fuzz_$t -merge=1 corpus/$t build/new/$t >/dev/null 2>&1 || status=1
    ls build/artifacts/$t/crash-* build/artifacts/$t/leak-* build/artifacts/$t/timeout-* build/artifacts/$t/oom-* 2>/dev/null
done
[ "$status" = 0 ] && echo "no crash, no broken promise" || echo "FOUND SOMETHING: see csrc/fuzz/build/artifacts/"
exit $status
