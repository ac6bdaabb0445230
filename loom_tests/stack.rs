//! Loom models of `DualStack` (wired in by `mod stack;` in `main.rs`, whose
//! `model` helper they share). Run only these with
//! `cargo test --release --test loom -- stack` (plus the loom `RUSTFLAGS`).
//!
//! As for the queue, loom has no clock: a timed wait behaves as if its
//! deadline fires right after its first check, so `pop_timeout` models a
//! cancel racing a fulfilment at every point.
//!
//! Three-thread models run at preemption bound 1. Loom's bounded search is
//! not exhaustive for every one-preemption schedule, so where it matters a
//! model lets one thread yield until the other has started (the race then
//! needs no extra preemption). Deeper runs pass too, e.g.
//! `LOOM_MAX_PREEMPTIONS=2` on `stack_helping_second_pusher` (2.5 million
//! interleavings, about 3 minutes), which is what catches a push that
//! skips helping and pushes over a fulfilling node.

use super::model;
use dualq::{DualStack, PopTimeoutError, TryPopError};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

/// Spins (yielding to loom) until `n` consumers wait on `s`.
fn until_waiting<T>(s: &DualStack<T>, n: usize) {
    while s.waiting_consumers() != n {
        thread::yield_now();
    }
}

/// push ‖ pop on an empty stack: the value arrives exactly once, whether the
/// pop found it stored or waited and was fulfilled through a fulfilling node.
#[test]
fn stack_push_pop_on_empty() {
    model("stack_push_pop_on_empty", 3, || {
        let s = Arc::new(DualStack::new());
        let consumer = {
            let s = s.clone();
            thread::spawn(move || s.pop())
        };
        s.push(7).unwrap();
        assert_eq!(consumer.join().unwrap(), Ok(7));
        assert_eq!(s.try_pop(), Err(TryPopError::Empty));
        assert_eq!(s.waiting_consumers(), 0);
    });
}

/// Two waiters (A, then B), then two pushes: the newest waiter is served
/// first, B gets 1 and A gets 2, however the pushes interleave with the
/// waiters waking up and leaving.
#[test]
fn stack_two_waiters_then_two_pushes_newest_first() {
    model("stack_two_waiters_then_two_pushes_newest_first", 1, || {
        let s = Arc::new(DualStack::new());
        let a = {
            let s = s.clone();
            thread::spawn(move || s.pop().unwrap())
        };
        until_waiting(&s, 1);
        let b = {
            let s = s.clone();
            thread::spawn(move || s.pop().unwrap())
        };
        until_waiting(&s, 2);
        s.push(1).unwrap();
        s.push(2).unwrap();
        assert_eq!(b.join().unwrap(), 1, "the newest waiter is served first");
        assert_eq!(a.join().unwrap(), 2);
        assert!(s.is_empty());
    });
}

/// Helping: a waiter W, a pusher P1 (the main thread), and a second pusher
/// P2 that may arrive while P1's fulfilling node is on top, so it must help
/// P1 before pushing. W gets exactly one of the values, the other is stored.
/// (P2 is spawned before P1 pushes, so "P1 pushed its fulfilling node, then
/// P2 ran" costs one preemption.)
#[test]
fn stack_helping_second_pusher() {
    model("stack_helping_second_pusher", 1, || {
        let s = Arc::new(DualStack::new());
        let w = {
            let s = s.clone();
            thread::spawn(move || s.pop().unwrap())
        };
        until_waiting(&s, 1);
        let p2 = {
            let s = s.clone();
            thread::spawn(move || s.push(2).unwrap())
        };
        s.push(1).unwrap();
        p2.join().unwrap();
        let got = w.join().unwrap();
        let stored = s.try_pop().unwrap();
        assert_eq!(got + stored, 3, "W got {got}, {stored} stored");
        assert_eq!(s.try_pop(), Err(TryPopError::Empty));
        assert_eq!(s.waiting_consumers(), 0);
    });
}

/// Helping by a consumer: a waiter W, a pusher P (the main thread), and a
/// `try_pop` C that may meet P's fulfilling node and must help it. The value
/// goes to W whatever happens (W waited before P pushed), and C never sees
/// it.
#[test]
fn stack_helping_popper() {
    model("stack_helping_popper", 1, || {
        let s = Arc::new(DualStack::new());
        let w = {
            let s = s.clone();
            thread::spawn(move || s.pop().unwrap())
        };
        until_waiting(&s, 1);
        let c = {
            let s = s.clone();
            thread::spawn(move || s.try_pop())
        };
        s.push(1).unwrap();
        assert_eq!(c.join().unwrap(), Err(TryPopError::Empty));
        assert_eq!(w.join().unwrap(), 1);
        assert!(s.is_empty());
    });
}

/// A timed-out pop (its cancel) racing a push: exactly one of "the consumer
/// got the value" and "the value is still stored".
#[test]
fn stack_timeout_cancel_races_push() {
    model("stack_timeout_cancel_races_push", 3, || {
        let s = Arc::new(DualStack::new());
        let consumer = {
            let s = s.clone();
            thread::spawn(move || s.pop_timeout(Duration::from_secs(60)))
        };
        s.push(5).unwrap();
        match consumer.join().unwrap() {
            Ok(v) => {
                assert_eq!(v, 5);
                assert_eq!(s.try_pop(), Err(TryPopError::Empty));
            }
            Err(PopTimeoutError::Timeout) => assert_eq!(s.try_pop(), Ok(5)),
            Err(PopTimeoutError::Closed) => panic!("never closed"),
        }
        assert_eq!(s.waiting_consumers(), 0);
    });
}

/// A timed-out pop on top of a permanent waiter, racing a push: the push's
/// fulfilling node meets the cancelled reservation and unlinks it from under
/// itself (or the cleaning waiter does, helping), or the timed pop gets the
/// value; either way the permanent waiter stays waiting or is served, and
/// nothing is lost. The push starts once the timed pop has pushed its
/// reservation (or returned), so "the cancel lands between the push of the
/// fulfilling node and its claim" costs one preemption.
#[test]
fn stack_timeout_over_waiter_races_push() {
    model("stack_timeout_over_waiter_races_push", 1, || {
        let s = Arc::new(DualStack::new());
        let permanent = {
            let s = s.clone();
            thread::spawn(move || s.pop().unwrap())
        };
        until_waiting(&s, 1);
        let timed_done = Arc::new(AtomicUsize::new(0));
        let timed = {
            let (s, done) = (s.clone(), timed_done.clone());
            thread::spawn(move || {
                let got = s.pop_timeout(Duration::from_secs(60));
                done.store(1, Ordering::Release);
                got
            })
        };
        while s.waiting_consumers() < 2 && timed_done.load(Ordering::Acquire) == 0 {
            thread::yield_now();
        }
        s.push(5).unwrap();
        let timed = timed.join().unwrap();
        // Release the permanent waiter if it is still waiting.
        s.push(6).unwrap();
        let permanent = permanent.join().unwrap();
        match timed {
            Ok(v) => assert_eq!((v, permanent), (5, 6)),
            Err(PopTimeoutError::Timeout) => {
                assert_eq!(permanent, 5);
                assert_eq!(s.try_pop(), Ok(6));
            }
            Err(PopTimeoutError::Closed) => panic!("never closed"),
        }
        assert_eq!(s.try_pop(), Err(TryPopError::Empty));
        assert_eq!(s.waiting_consumers(), 0);
    });
}

/// Two timed-out pops cancelling and cleaning at once: each may pop the
/// other's dead reservation off the top, or unsplice it from under a live
/// one. Both time out, nothing is left waiting, and a push afterwards is
/// stored. This is where a cleaner's unsplice through a node that was just
/// popped would retire a node still on top, were a popped node's `next` not
/// frozen first.
#[test]
fn stack_two_timeouts_clean() {
    model("stack_two_timeouts_clean", 3, || {
        let s = Arc::new(DualStack::<i32>::new());
        let other = {
            let s = s.clone();
            thread::spawn(move || s.pop_timeout(Duration::from_secs(60)))
        };
        let mine = s.pop_timeout(Duration::from_secs(60));
        assert_eq!(mine, Err(PopTimeoutError::Timeout));
        assert_eq!(other.join().unwrap(), Err(PopTimeoutError::Timeout));
        assert_eq!(s.waiting_consumers(), 0);
        s.push(8).unwrap();
        assert_eq!(s.try_pop(), Ok(8));
        assert_eq!(s.try_pop(), Err(TryPopError::Empty));
    });
}

/// close ‖ pop on an empty stack: the pop wakes (or never waits) and reports
/// closed, and a push after the close hands its value back.
#[test]
fn stack_close_wakes_pop() {
    model("stack_close_wakes_pop", 3, || {
        let s = Arc::new(DualStack::<u32>::new());
        let consumer = {
            let s = s.clone();
            thread::spawn(move || s.pop())
        };
        assert!(s.close());
        assert!(consumer.join().unwrap().is_err());
        assert_eq!(s.push(1).unwrap_err().into_inner(), 1);
        assert_eq!(s.try_pop(), Err(TryPopError::Closed));
    });
}

/// close ‖ pop with a value stored before: the pop drains it (closing keeps
/// stored values), then pops report closed.
#[test]
fn stack_close_pop_drains() {
    model("stack_close_pop_drains", 3, || {
        let s = Arc::new(DualStack::new());
        s.push(3).unwrap();
        let consumer = {
            let s = s.clone();
            thread::spawn(move || s.pop())
        };
        assert!(s.close());
        assert_eq!(consumer.join().unwrap(), Ok(3));
        assert_eq!(s.try_pop(), Err(TryPopError::Closed));
    });
}

/// push ‖ close with a consumer already waiting: the value is delivered to
/// the waiter (the push's fulfilling node is helped off the top before the
/// seal), or the push fails with it and the waiter reports closed. Either
/// way the stack ends closed and empty. The close starts once the producer
/// has started (the main thread yields until then), so "close meets the
/// fulfilling node on top" costs one preemption.
#[test]
fn stack_push_races_close_with_waiter() {
    model("stack_push_races_close_with_waiter", 1, || {
        let s = Arc::new(DualStack::new());
        let consumer = {
            let s = s.clone();
            thread::spawn(move || s.pop())
        };
        until_waiting(&s, 1);
        let started = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (s, started) = (s.clone(), started.clone());
            thread::spawn(move || {
                started.store(1, Ordering::Release);
                s.push(4)
            })
        };
        while started.load(Ordering::Acquire) == 0 {
            thread::yield_now();
        }
        assert!(s.close());
        match (producer.join().unwrap(), consumer.join().unwrap()) {
            (Ok(()), Ok(4)) => {}
            (Err(e), Err(_)) => assert_eq!(e.into_inner(), 4),
            other => panic!("lost or duplicated value: {other:?}"),
        }
        assert_eq!(s.try_pop(), Err(TryPopError::Closed));
        assert_eq!(s.push(5).unwrap_err().into_inner(), 5);
    });
}

/// Dropping a stack with stored values drops each exactly once.
#[test]
fn stack_drop_with_stored_values() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    model("stack_drop_with_stored_values", 3, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let s = Arc::new(DualStack::new());
        let producer = {
            let (s, drops) = (s.clone(), drops.clone());
            thread::spawn(move || s.push(Counted(drops)).map_err(|_| ()).unwrap())
        };
        s.push(Counted(drops.clone())).map_err(|_| ()).unwrap();
        let taken = s.try_pop().ok();
        producer.join().unwrap();
        drop(taken);
        let s = Arc::try_unwrap(s).map_err(|_| ()).unwrap();
        drop(s);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

/// Stored values cross a block boundary (blocks hold 2 cells under loom)
/// while another thread pops: the first block's cells all die and a push
/// installs the next block, retiring the first, possibly while the other
/// thread still reads one of its cells (it loaded `top` before the pop that
/// removed the cell; the epoch keeps the block until it unpins). Each value
/// comes out once, newest first, and a claim never lands in a retired block
/// (the cells' debug assertion).
#[test]
fn stack_pops_race_a_block_retirement() {
    model("stack_pops_race_a_block_retirement", 3, || {
        let s = Arc::new(DualStack::new());
        s.push(1).unwrap();
        s.push(2).unwrap(); // the first block is full
        let popper = {
            let s = s.clone();
            thread::spawn(move || s.try_pop())
        };
        let mine = [s.try_pop(), s.try_pop()];
        s.push(3).unwrap(); // installs the second block
        let theirs = popper.join().unwrap();
        let mut got: Vec<u32> = mine
            .iter()
            .chain([&theirs])
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        // Whatever is left comes out newest first: 3 on top of any survivor.
        while let Ok(v) = s.try_pop() {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3], "each value exactly once");
        // Our two pops took the newest values there were: 2 before 1.
        if let [Ok(a), Ok(b)] = mine {
            assert!(a > b, "popped {a} before {b}");
        }
    });
}
