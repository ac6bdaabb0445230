#!/usr/bin/env bash
# Runs dualq's tests under Miri (nightly): the integration tests and the
# doctests, with Tree Borrows, the data-race detector and weak-memory
# emulation (both on by default), over several scheduler seeds.
#
#   scripts/miri.sh [--optional] [--seeds N] [--quick]
#
# --optional  if Miri cannot be installed, print why and exit 0 (for CI);
#             without it that is an error (exit 1).
# --seeds N   run every test binary under seeds 0..N (default 2; env
#             MIRI_SEEDS works too). Seeds run in parallel, one per core.
# --quick     every test binary but tests/stress.rs (40+ threads per test:
#             two thirds of the run), listed by name below (a new test file
#             must be added there); what .ci/run uses.
#
# Sizes shrink under `cfg(miri)` (iteration counts, waiter counts: see the
# `if cfg!(miri)` constants in tests/); the tests Miri cannot run are
# `#[cfg_attr(miri, ignore = "...")]` with the reason beside them.
#
# Flags, and why each is there:
# * -Zmiri-tree-borrows: crossbeam-epoch 0.9 violates Stacked Borrows inside
#   its own list of thread records (`Local::element_of`, crossbeam issue
#   #545); under the default Stacked Borrows every test stops at its first
#   `epoch::pin()`, before any of our code is checked. crossbeam runs its own
#   Miri CI with Tree Borrows for the same reason (crossbeam PR #996).
# * -Zmiri-permissive-provenance (not -Zmiri-strict-provenance): crossbeam-
#   epoch 0.9 stores pointers as `usize` (`Atomic<T>` is an `AtomicUsize`,
#   `Shared::deref` casts an integer to a pointer), so strict provenance
#   stops at the first `pin()` too. Our own code makes no integer-to-pointer
#   cast (the MARK/SEAL tags go through crossbeam's `with_tag`/`tag`); this
#   flag only silences Miri's warning about crossbeam's casts.
# * -Zmiri-ignore-leaks: crossbeam-epoch's global collector is never torn
#   down, so garbage still deferred at exit is never freed, and Miri cannot
#   see it is still reachable (it hangs off `usize` words). Every run would
#   "leak" hundreds of retired nodes. Leaks are checked by LeakSanitizer in
#   scripts/sanitizers.sh instead, which scans memory conservatively, and by
#   the counting-allocator tests (tests/memory.rs, tests/stack_memory.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

optional=0
quick=0
seeds="${MIRI_SEEDS:-2}"
while [ $# -gt 0 ]; do
    case "$1" in
        --optional) optional=1 ;;
        --seeds) seeds="$2"; shift ;;
        --quick) quick=1 ;;
        *) echo "usage: $0 [--optional] [--seeds N] [--quick]" >&2; exit 2 ;;
    esac
    shift
done

skip() {
    if [ "$optional" = 1 ]; then
        echo "skipped: Miri: $*"
        exit 0
    fi
    echo "error: Miri: $*" >&2
    exit 1
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component miri,rust-src \
        || skip "the nightly toolchain could not be installed"
fi
rustup component add --toolchain nightly miri rust-src \
    || skip "could not install the nightly components miri and rust-src"
cargo +nightly miri --version || skip "cargo +nightly miri does not run"
cargo +nightly miri setup >/dev/null 2>&1 || skip "cargo miri setup failed"

export MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-permissive-provenance -Zmiri-ignore-leaks -Zmiri-many-seeds=0..${seeds} ${MIRIFLAGS:-}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "MIRIFLAGS=$MIRIFLAGS"

started=$(date +%s)
# The unit tests in src/ and the integration tests (tests/*.rs; loom_tests/
# compiles to nothing without --cfg loom). One test thread: each seed then replays one schedule.
if [ "$quick" = 1 ]; then
    tests=(--lib --test dual --test model --test lincheck_checker --test lincheck_stress)
else
    tests=(--tests)
fi
cargo +nightly miri test "${tests[@]}" -- --test-threads=1
# The queue's multi-producer tests again with 2-cell segments, where appends
# lose their CAS all the time (a segment taken from the pool, handed back
# through the epoch: ~60 such appends per seed measured) and segments are
# recycled every few values. With 64-cell segments Miri almost never sees
# either.
RUSTFLAGS="${RUSTFLAGS:-} --cfg dualq_small_segments" CARGO_TARGET_DIR=target/miri-small \
    cargo +nightly miri test --test dual -- --test-threads=1 queue::mpmc
# The doctests (README-style examples in src/).
cargo +nightly miri test --doc
echo "Miri: clean over seeds 0..${seeds} in $(( $(date +%s) - started )) s"
