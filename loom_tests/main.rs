//! Loom models of `DualQueue`: every interleaving (up to the preemption
//! bound) of small concurrent scenarios, with crossbeam-epoch in its loom
//! mode so loom sees every atomic.
//!
//! Run: `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 \
//!       cargo test --release --test loom`
//!
//! Loom has no clock: a timed wait behaves as if its deadline fires right
//! after its first check (see `src/sync.rs`), so `pop_timeout` models a cancel
//! racing a fulfilment at every point.
#![cfg(loom)]

use dualq::{DualQueue, PopTimeoutError, TryPopError};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::time::Duration;

/// Runs `f` under loom with `bound` preemptions (unless `LOOM_MAX_PREEMPTIONS`
/// overrides it) and prints how many interleavings it explored, and how long
/// it took. (The counter is the model's own, so the count stays right when
/// the test harness runs models in parallel.)
fn model<F: Fn() + Sync + Send + 'static>(name: &str, bound: usize, f: F) {
    let runs = std::sync::Arc::new(StdAtomicUsize::new(0));
    let counter = runs.clone();
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    let started = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    let explored = runs.load(StdOrdering::Relaxed);
    println!(
        "loom model {name}: {explored} interleavings (preemption bound {:?}) in {:.1?}",
        builder.preemption_bound,
        started.elapsed()
    );
}

/// Spins (yielding to loom) until `n` consumers wait on `q`.
fn until_waiting<T>(q: &DualQueue<T>, n: usize) {
    while q.waiting_consumers() != n {
        thread::yield_now();
    }
}

/// push ‖ pop on an empty queue: the value arrives exactly once, whether the
/// pop found it stored or waited and was fulfilled.
#[test]
fn push_pop_on_empty() {
    model("push_pop_on_empty", 3, || {
        let q = Arc::new(DualQueue::new());
        let consumer = {
            let q = q.clone();
            thread::spawn(move || q.pop())
        };
        q.push(7).unwrap();
        assert_eq!(consumer.join().unwrap(), Ok(7));
        assert_eq!(q.try_pop(), Err(TryPopError::Empty));
    });
}

/// Two waiters, then two pushes: A is waiting before B links, so whatever
/// the interleaving of B's link with the pushes, A gets the first value and
/// B the second. (B is the main thread; the producer pushes 1 then 2.)
#[test]
fn two_waiters_then_two_pushes_fifo() {
    model("two_waiters_then_two_pushes_fifo", 1, || {
        let q = Arc::new(DualQueue::new());
        let a = {
            let q = q.clone();
            thread::spawn(move || q.pop().unwrap())
        };
        until_waiting(&q, 1);
        let producer = {
            let q = q.clone();
            thread::spawn(move || {
                q.push(1).unwrap();
                q.push(2).unwrap();
            })
        };
        let b = q.pop().unwrap();
        producer.join().unwrap();
        assert_eq!(a.join().unwrap(), 1, "the older waiter is served first");
        assert_eq!(b, 2);
    });
}

/// A queue whose only segment has had its one value taken: drained, still
/// open to writers (under loom a segment has 2 cells, so 1 is left).
fn with_a_drained_open_segment() -> Arc<DualQueue<u64>> {
    let q = Arc::new(DualQueue::new());
    q.push(1).unwrap();
    assert_eq!(q.try_pop(), Ok(1));
    q
}

/// A push racing a pop on a queue whose last segment is drained but still
/// open to writers: the pop seals the segment before it links its
/// reservation, so the value either lands in the segment before the seal
/// (and the pop takes it there) or goes to the reservation; never into the
/// segment behind the reservation, where nobody would take it (the pop
/// would wait for ever, which loom reports as a deadlock).
#[test]
fn push_races_seal_of_a_drained_segment() {
    model("push_races_seal_of_a_drained_segment", 3, || {
        let q = with_a_drained_open_segment();
        let consumer = {
            let q = q.clone();
            thread::spawn(move || q.pop())
        };
        q.push(2).unwrap();
        assert_eq!(consumer.join().unwrap(), Ok(2));
        assert_eq!(q.try_pop(), Err(TryPopError::Empty));
    });
}

/// A push into a drained segment that is still open to writers, racing a
/// close and a pop after it: a push that succeeds lands before the close
/// (its value is drained), one that fails lands nowhere, and once a pop
/// reports closed no value appears later.
#[test]
fn push_into_open_segment_races_close() {
    model("push_into_open_segment_races_close", 3, || {
        let q = with_a_drained_open_segment();
        let producer = {
            let q = q.clone();
            thread::spawn(move || q.push(2).map_err(|e| e.into_inner()))
        };
        q.close();
        let first = q.try_pop();
        let pushed = producer.join().unwrap();
        let second = q.try_pop();
        match first {
            Ok(v) => {
                assert_eq!(v, 2);
                assert_eq!(pushed, Ok(()));
            }
            Err(TryPopError::Closed) => {
                assert_eq!(second, Err(TryPopError::Closed), "closed is final")
            }
            Err(TryPopError::Empty) => panic!("empty after the close returned"),
        }
        match pushed {
            Ok(()) => assert!(first == Ok(2) || second == Ok(2), "a pushed value was lost"),
            Err(v) => assert_eq!(v, 2),
        }
        assert_eq!(q.try_pop(), Err(TryPopError::Closed));
    });
}

/// A push into a drained, still open segment racing a `try_pop` (which may
/// break the push's cell if the push is late, sending it to append a
/// segment of its own) and then a `reserve` (which seals the segment and
/// links): the value ends up in exactly one place: the poll, the
/// reservation, or stored.
#[test]
fn broken_push_races_reserve() {
    model("broken_push_races_reserve", 3, || {
        let q = with_a_drained_open_segment();
        let producer = {
            let q = q.clone();
            thread::spawn(move || q.push(2).unwrap())
        };
        let polled = q.try_pop().ok();
        let mut reservation = q.reserve();
        producer.join().unwrap();
        let reserved = reservation.try_take();
        drop(reservation);
        let stored = q.try_pop().ok();
        let got: Vec<u64> = [polled, reserved, stored].into_iter().flatten().collect();
        assert_eq!(
            got,
            [2],
            "polled {polled:?}, reserved {reserved:?}, stored {stored:?}"
        );
        assert_eq!(q.try_pop(), Err(TryPopError::Empty));
    });
}

/// A timed-out pop (its cancel) racing a push: exactly one of "the consumer
/// got the value" and "the value is still stored".
#[test]
fn timeout_cancel_races_push() {
    model("timeout_cancel_races_push", 3, || {
        let q = Arc::new(DualQueue::new());
        let consumer = {
            let q = q.clone();
            thread::spawn(move || q.pop_timeout(Duration::from_secs(60)))
        };
        q.push(5).unwrap();
        match consumer.join().unwrap() {
            Ok(v) => {
                assert_eq!(v, 5);
                assert_eq!(q.try_pop(), Err(TryPopError::Empty));
            }
            Err(PopTimeoutError::Timeout) => assert_eq!(q.try_pop(), Ok(5)),
            Err(PopTimeoutError::Closed) => panic!("never closed"),
        }
        assert_eq!(q.waiting_consumers(), 0);
    });
}

/// close ‖ pop on an empty queue: the pop wakes and reports closed, and a
/// push after the close hands its value back.
#[test]
fn close_wakes_pop() {
    model("close_wakes_pop", 3, || {
        let q = Arc::new(DualQueue::<u32>::new());
        let consumer = {
            let q = q.clone();
            thread::spawn(move || q.pop())
        };
        assert!(q.close());
        assert!(consumer.join().unwrap().is_err());
        assert_eq!(q.push(1).unwrap_err().into_inner(), 1);
    });
}

/// close ‖ pop with a value stored before: the pop drains it (closing does
/// not discard stored values), then pops report closed.
#[test]
fn close_pop_drains() {
    model("close_pop_drains", 3, || {
        let q = Arc::new(DualQueue::new());
        q.push(3).unwrap();
        let consumer = {
            let q = q.clone();
            thread::spawn(move || q.pop())
        };
        assert!(q.close());
        assert_eq!(consumer.join().unwrap(), Ok(3));
        assert_eq!(q.try_pop(), Err(TryPopError::Closed));
    });
}

/// push ‖ close: the push either lands (and is drained after the close) or
/// fails with its value; never lost.
#[test]
fn push_races_close() {
    model("push_races_close", 3, || {
        let q = Arc::new(DualQueue::new());
        let producer = {
            let q = q.clone();
            thread::spawn(move || q.push(9))
        };
        assert!(q.close());
        match producer.join().unwrap() {
            Ok(()) => assert_eq!(q.pop(), Ok(9)),
            Err(e) => assert_eq!(e.into_inner(), 9),
        }
        assert!(q.pop().is_err());
    });
}

/// push ‖ close with a consumer already waiting: the value is delivered to
/// the waiter, or the push fails with it and the waiter reports closed.
#[test]
fn push_races_close_with_waiter() {
    model("push_races_close_with_waiter", 1, || {
        let q = Arc::new(DualQueue::new());
        let consumer = {
            let q = q.clone();
            thread::spawn(move || q.pop())
        };
        until_waiting(&q, 1);
        let producer = {
            let q = q.clone();
            thread::spawn(move || q.push(4))
        };
        assert!(q.close());
        match (producer.join().unwrap(), consumer.join().unwrap()) {
            (Ok(()), Ok(4)) => {}
            (Err(e), Err(_)) => assert_eq!(e.into_inner(), 4),
            other => panic!("lost or duplicated value: {other:?}"),
        }
        assert_eq!(q.try_pop(), Err(TryPopError::Closed));
    });
}

/// Dropping a queue with stored values drops each exactly once.
#[test]
fn drop_with_stored_values() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    model("drop_with_stored_values", 3, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(DualQueue::new());
        let producer = {
            let (q, drops) = (q.clone(), drops.clone());
            thread::spawn(move || q.push(Counted(drops)).map_err(|_| ()).unwrap())
        };
        q.push(Counted(drops.clone())).map_err(|_| ()).unwrap();
        let taken = q.try_pop().ok();
        producer.join().unwrap();
        drop(taken);
        let q = Arc::try_unwrap(q).map_err(|_| ()).unwrap();
        drop(q);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

mod stack;

mod reservation;

mod transfer;

#[path = "../tests/lincheck/mod.rs"]
mod lincheck;

mod lin;
mod lin_queue;
mod lin_stack;
