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
use std::time::Duration;

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
    loom::model(|| {
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

/// Two waiters, linked in a known order, then two pushes from two threads:
/// the first push to linearize goes to the older waiter, so the older waiter
/// gets 1 when the pushes are sequential, and the pair {1, 2} always.
#[test]
fn two_waiters_then_two_pushes_fifo() {
    loom::model(|| {
        let q = Arc::new(DualQueue::new());
        let a = {
            let q = q.clone();
            thread::spawn(move || q.pop().unwrap())
        };
        until_waiting(&q, 1);
        let b = {
            let q = q.clone();
            thread::spawn(move || q.pop().unwrap())
        };
        until_waiting(&q, 2);
        q.push(1).unwrap();
        q.push(2).unwrap();
        assert_eq!(a.join().unwrap(), 1, "the older waiter is served first");
        assert_eq!(b.join().unwrap(), 2);
    });
}

/// A timed-out pop (its cancel) racing a push: exactly one of "the consumer
/// got the value" and "the value is still stored".
#[test]
fn timeout_cancel_races_push() {
    loom::model(|| {
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

/// close ‖ pop on an empty queue: the pop wakes and reports closed.
#[test]
fn close_wakes_pop() {
    loom::model(|| {
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

/// push ‖ close ‖ pop: the value is either delivered or handed back, never
/// lost, and a pop that reports closed saw no stored value.
#[test]
fn push_close_pop() {
    loom::model(|| {
        let q = Arc::new(DualQueue::new());
        let producer = {
            let q = q.clone();
            thread::spawn(move || q.push(9))
        };
        let closer = {
            let q = q.clone();
            thread::spawn(move || q.close())
        };
        let popped = q.pop();
        let pushed = producer.join().unwrap();
        assert!(closer.join().unwrap());
        let drained = q.try_pop();
        match (pushed, popped, drained) {
            (Ok(()), Ok(9), Err(TryPopError::Closed)) => {}
            (Ok(()), Err(_), Ok(9)) => panic!("pop reported closed while 9 was stored"),
            (Err(e), Err(_), Err(TryPopError::Closed)) => assert_eq!(e.into_inner(), 9),
            other => panic!("lost or duplicated value: {other:?}"),
        }
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
    loom::model(|| {
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
