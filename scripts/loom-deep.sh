#!/usr/bin/env bash
# The deep loom run: every three-thread linearizability model (`lin_*` in
# loom_tests/lin_queue.rs and lin_stack.rs, bound 1 in CI) at preemption
# bound 2, one after another, each checked against the sequential
# specification on every interleaving. Too slow for CI: on the 2-core project
# VM one model takes from ~15 s to well over 10 minutes (the queue's and the
# stack's pop/push/close: 5.8 million interleavings in 447 s for the stack).
#
#   scripts/loom-deep.sh [--bound N] [--limit SECONDS] [FILTER...]
#
# --bound N        preemption bound (default 2)
# --limit SECONDS  give up on one model after this long (default 3600); a
#                  model that hits it is reported as "unfinished", never as
#                  passed
# FILTER...        only models whose name contains one of these
#
# Prints, per model: interleavings explored, time, and passed / FAILED /
# unfinished; exits non-zero if any model failed.
set -uo pipefail
cd "$(dirname "$0")/.."

bound=2
limit=3600
filters=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bound) bound="$2"; shift 2 ;;
        --limit) limit="$2"; shift 2 ;;
        *) filters+=("$1"); shift ;;
    esac
done

export RUSTFLAGS="--cfg loom --cfg crossbeam_loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
export LOOM_MAX_PREEMPTIONS="$bound"

cargo test --release --test loom --no-run -q || exit 1

# The three-thread models: those CI runs at bound 1 (and the ignored slow ones).
# (Calls may span lines: join each file into one line first.)
models=$(for f in loom_tests/lin_queue.rs loom_tests/lin_stack.rs; do tr '\n' ' ' <"$f"; echo; done |
    grep -oE 'run\( *"lin_[a-z_]*", *1,' | sed -E 's/run\( *"(lin_[a-z_]*)".*/\1/')

failed=0
for m in $models; do
    if [ ${#filters[@]} -gt 0 ]; then
        keep=0
        for f in "${filters[@]}"; do
            case "$m" in *"$f"*) keep=1 ;; esac
        done
        [ $keep = 1 ] || continue
    fi
    case "$m" in lin_stack_*) path="lin_stack::$m" ;; *) path="lin_queue::$m" ;; esac
    start=$(date +%s)
    out=$(timeout "$limit" cargo test -q --release --test loom -- --exact "$path" \
        --include-ignored --nocapture 2>&1)
    status=$?
    took=$(( $(date +%s) - start ))
    explored=$(printf '%s\n' "$out" | grep -o '[0-9]* interleavings' | head -1)
    if [ $status = 0 ]; then
        echo "$m (bound $bound): passed, ${explored:-? interleavings}, ${took} s"
    elif [ $status = 124 ]; then
        echo "$m (bound $bound): unfinished after ${limit} s"
    else
        echo "$m (bound $bound): FAILED after ${took} s"
        printf '%s\n' "$out" | grep -E "panicked|not linearizable|deadlock" | head -5
        failed=1
    fi
done
exit $failed
