//! Linearizability models of `DualQueue`: every interleaving (up to the
//! preemption bound) of small scenarios, each execution's history checked
//! against the sequential specification (see `lin.rs`). Run only these with
//! `cargo test --release --test loom -- lin_queue` (plus the loom `RUSTFLAGS`).

use super::lin::{self, lin_model, Scenario};
use dualq::DualQueue;

fn run(name: &'static str, bound: usize, scenario: Scenario) {
    lin_model::<DualQueue<u64>>(name, bound, scenario);
}

#[test]
fn lin_push_pop() {
    run("lin_push_pop", 2, lin::PUSH_POP);
}

#[test]
fn lin_push_try_pop() {
    run("lin_push_try_pop", 2, lin::PUSH_TRY_POP);
}

/// Bound 3: a cancel that drops a value which won the race (a
/// lost-on-timeout bug planted on purpose) needs three preemptions here (the
/// waiter's spin-phase yield, then one before its last look, one before its
/// cancel); bound 2 misses it, bound 3 rejects the history.
#[test]
fn lin_push_pop_timeout() {
    run("lin_push_pop_timeout", 3, lin::PUSH_POP_TIMEOUT);
}

#[test]
fn lin_push_push() {
    run("lin_push_push", 2, lin::PUSH_PUSH);
}

#[test]
fn lin_pop_pop_stored() {
    run("lin_pop_pop_stored", 2, lin::POP_POP_STORED);
}

#[test]
fn lin_pop_close() {
    run("lin_pop_close", 2, lin::POP_CLOSE);
}

#[test]
fn lin_pop_timeout_close() {
    run("lin_pop_timeout_close", 2, lin::POP_TIMEOUT_CLOSE);
}

#[test]
fn lin_push_close() {
    run("lin_push_close", 2, lin::PUSH_CLOSE);
}

#[test]
fn lin_try_pop_close_stored() {
    run("lin_try_pop_close_stored", 2, lin::TRY_POP_CLOSE_STORED);
}

#[test]
fn lin_two_timeouts() {
    run("lin_two_timeouts", 2, lin::TWO_TIMEOUTS);
}

/// Not run by default (185,508 interleavings, about a minute at preemption bound 1; `two_waiters_then_two_pushes_fifo` in `main.rs` checks the same service order in CI, and `lin_waiter_timeout_pushes` checks it against the specification); run it with
/// `cargo test --release --test loom -- --ignored lin_two_waiters_marked`.
#[test]
#[ignore = "slow"]
fn lin_two_waiters_marked() {
    run("lin_two_waiters_marked", 1, lin::TWO_WAITERS_MARKED);
}

#[test]
fn lin_pop_pop_pushes() {
    run("lin_pop_pop_pushes", 1, lin::POP_POP_PUSHES);
}

#[test]
fn lin_pop_push_close() {
    run("lin_pop_push_close", 1, lin::POP_PUSH_CLOSE);
}

#[test]
fn lin_waiter_push_close() {
    run("lin_waiter_push_close", 1, lin::WAITER_PUSH_CLOSE);
}

#[test]
fn lin_waiter_timeout_pushes() {
    run("lin_waiter_timeout_pushes", 1, lin::WAITER_TIMEOUT_PUSHES);
}

/// Not run by default (more than 10 minutes at preemption bound 1); run it with
/// `cargo test --release --test loom -- --ignored lin_push_push_pop`.
#[test]
#[ignore = "slow"]
fn lin_push_push_pop() {
    run("lin_push_push_pop", 1, lin::PUSH_PUSH_POP);
}

#[test]
fn lin_waiter_push_push() {
    run("lin_waiter_push_push", 1, lin::WAITER_PUSH_PUSH);
}

#[test]
fn lin_pop_try_pop_push() {
    run("lin_pop_try_pop_push", 1, lin::POP_TRY_POP_PUSH);
}

#[test]
fn lin_waiter_try_pop_push() {
    run("lin_waiter_try_pop_push", 1, lin::WAITER_TRY_POP_PUSH);
}

/// Not run by default (123,908 interleavings, 35 to 45 s at preemption
/// bound 1 on a loaded 2-core machine; `lin_two_timeouts` and
/// `lin_waiter_timeout_pushes` cover its races in CI); run it with
/// `cargo test --release --test loom -- --ignored lin_two_timeouts_push`.
#[test]
#[ignore = "slow"]
fn lin_two_timeouts_push() {
    run("lin_two_timeouts_push", 1, lin::TWO_TIMEOUTS_PUSH);
}

#[test]
fn lin_push_try_pop_close() {
    run("lin_push_try_pop_close", 1, lin::PUSH_TRY_POP_CLOSE);
}

#[test]
fn lin_reserve_drop_push() {
    run("lin_reserve_drop_push", 2, lin::RESERVE_DROP_PUSH);
}

#[test]
fn lin_reserve_try_take_push() {
    run("lin_reserve_try_take_push", 2, lin::RESERVE_TRY_TAKE_PUSH);
}
