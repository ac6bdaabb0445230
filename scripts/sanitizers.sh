#!/usr/bin/env bash
# Runs dualq's tests under ThreadSanitizer and AddressSanitizer (with
# LeakSanitizer) on nightly, std rebuilt with the sanitizer (-Zbuild-std).
#
#   scripts/sanitizers.sh [--optional] [--all] [thread|address ...]
#
# --optional  if the nightly components cannot be installed, print why and
#             exit 0 (for CI); without it that is an error (exit 1).
# --all       every test binary (tests/*.rs), not just the stress tests.
# thread, address: which sanitizers to run (default: both).
#
# By default each sanitizer runs the unit tests in src/, the stress tests
# (tests/stress.rs: 40+ threads on 2 cores mixing every operation with a
# racing close, on both structures), the shared queue/stack suite
# (tests/dual.rs), and the transfer and reservation/async suites
# (tests/transfer.rs, tests/reservation.rs: their stress runs drop futures
# and handles at random points), which are fast enough. --all runs every
# test binary.
# Debug builds: the assertions stay on and the build is quicker.
#
# No suppressions file: both sanitizers run clean with none.
#
# ThreadSanitizer and fences: TSan does not model standalone `fence`s, so
# code that synchronizes through one shows false races. Two places do:
# * crossbeam-epoch's own epoch tracking. Its build script sees
#   CARGO_CFG_SANITIZE=thread and sets `crossbeam_sanitize_thread`, under
#   which it replaces its fences by equivalent acquire loads. Nothing to do.
# * our reference count: `Node::release` frees a node after
#   `fetch_sub(Release) == 1` and `fence(Acquire)`, as `Arc` does. Our
#   build.rs likewise sets `dualq_sanitize_thread`, under which
#   `sync::acquire_last_ref` is an `Acquire` load of the counter instead (as
#   std's `Arc` does under TSan); the equivalence argument is in
#   src/sync.rs. Without it TSan reports the free as racing the other owners'
#   earlier writes (54 reports in tests/stress.rs alone).
# The other fences in src/ are the `SeqCst` ones of the close/fulfil Dekker
# handshake (src/slot.rs, `note_closed` and `try_pop` in src/queue.rs and
# src/stack.rs). They order atomic accesses against atomic accesses only (no
# plain memory access relies on them: the value hand-off is a Release store
# of FULFILLED and an Acquire load), and TSan never reports atomic-vs-atomic
# pairs, so they cannot cause a false report, and replacing them would hide
# nothing either. What they guarantee (a close and a fulfilment cannot both
# miss each other) is a question of which values are read, which TSan does
# not check: the loom models (loom_tests/) and the stress tests' conservation
# checks cover it.
set -euo pipefail
cd "$(dirname "$0")/.."

optional=0
all=0
sanitizers=()
for arg in "$@"; do
    case "$arg" in
        --optional) optional=1 ;;
        --all) all=1 ;;
        thread|address) sanitizers+=("$arg") ;;
        *) echo "usage: $0 [--optional] [--all] [thread|address ...]" >&2; exit 2 ;;
    esac
done
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(thread address)

skip() {
    if [ "$optional" = 1 ]; then
        echo "skipped: sanitizers: $*"
        exit 0
    fi
    echo "error: sanitizers: $*" >&2
    exit 1
}

target=x86_64-unknown-linux-gnu
[ "$(uname -sm)" = "Linux x86_64" ] || skip "only set up for $target"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component rust-src \
        || skip "the nightly toolchain could not be installed"
fi
rustup component add --toolchain nightly rust-src \
    || skip "could not install the nightly component rust-src (needed by -Zbuild-std)"

if [ "$all" = 1 ]; then
    tests=(--tests)
else
    tests=(--lib --test stress --test dual --test transfer --test reservation)
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Fail the run on the first report (TSan's default exit code is 66 only at
# exit; halt_on_error makes the failing test obvious). Leak checking is on by
# default for ASan on Linux; spelled out so it stays on.
export TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"

for san in "${sanitizers[@]}"; do
    started=$(date +%s)
    echo "==> ${san} sanitizer: ${tests[*]}"
    # One target directory per sanitizer: the std and the dependencies are
    # rebuilt with its instrumentation.
    RUSTFLAGS="-Zsanitizer=${san} ${RUSTFLAGS:-}" \
    RUSTDOCFLAGS="-Zsanitizer=${san} ${RUSTDOCFLAGS:-}" \
    CARGO_TARGET_DIR="target/san-${san}" \
        cargo +nightly test -Zbuild-std --target "$target" "${tests[@]}"
    echo "${san} sanitizer: clean in $(( $(date +%s) - started )) s"
done
