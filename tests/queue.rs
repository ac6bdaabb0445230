//! The canonical `DualQueue` tests (in the style of crossbeam-queue's
//! `tests/seg_queue.rs`) plus the dual cases: waiting consumers, their
//! service order, timeouts racing pushes, and closing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_for_waiters, CloseOnUnwind, DropLog, Tracked, PATIENCE};
use dualq::{DualQueue, PopError, PopTimeoutError, PushError, TryPopError};

/// Values moved through the queue by the spsc tests.
const COUNT: usize = if cfg!(miri) { 100 } else { 100_000 };
/// Producer and consumer threads of the (non-oversubscribed) mpmc test.
const THREADS: usize = 4;
/// Threads per side of the oversubscribed tests (these machines have 2 cores).
const MANY: usize = if cfg!(miri) { 4 } else { 32 };

/// A small deterministic PRNG (xorshift64*), so the tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Joins a thread, failing the test (instead of hanging it) if it has not
/// finished after [`PATIENCE`].
fn join<T>(handle: thread::JoinHandle<T>) -> T {
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(
            start.elapsed() < PATIENCE,
            "thread did not finish within {PATIENCE:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    handle.join().expect("thread panicked")
}

/// An instant well in the past (or now, if the clock cannot go that far back).
fn past() -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
}

// ---------------------------------------------------------------------------
// Single-threaded basics
// ---------------------------------------------------------------------------

// Push and every pop flavour on one thread: FIFO order, Empty when empty.
#[test]
fn smoke() {
    let q = DualQueue::new();
    q.push(7).unwrap();
    assert_eq!(q.try_pop(), Ok(7));
    assert_eq!(q.try_pop(), Err(TryPopError::Empty));

    q.push(8).unwrap();
    assert_eq!(q.pop(), Ok(8));
    q.push(9).unwrap();
    assert_eq!(q.pop_timeout(Duration::from_secs(1)), Ok(9));
    q.push(10).unwrap();
    assert_eq!(
        q.pop_deadline(Instant::now() + Duration::from_secs(1)),
        Ok(10)
    );

    for i in 0..10 {
        q.push(i).unwrap();
    }
    for i in 0..10 {
        assert_eq!(q.try_pop(), Ok(i));
    }
    assert_eq!(q.try_pop(), Err(TryPopError::Empty));
    assert_eq!(q.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Timeout));
    assert!(q.is_empty());
    assert!(!q.is_closed());
}

// len, is_empty and waiting_consumers track stored values and waiters.
#[test]
fn len_empty_waiting_snapshots() {
    let q = DualQueue::new();
    assert_eq!(q.len(), 0);
    assert!(q.is_empty());
    assert_eq!(q.waiting_consumers(), 0);

    for i in 0..5 {
        q.push(i).unwrap();
        assert_eq!(q.len(), i + 1);
        assert!(!q.is_empty());
        assert_eq!(q.waiting_consumers(), 0);
    }
    for i in 0..5 {
        assert_eq!(q.try_pop(), Ok(i));
        assert_eq!(q.len(), 4 - i);
    }
    assert!(q.is_empty());

    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let a = s.spawn(|| q.pop());
        wait_for_waiters(&q, 1);
        let b = s.spawn(|| q.pop());
        wait_for_waiters(&q, 2);
        // Reservations are neither values nor make the queue non-empty.
        assert_eq!(q.len(), 0);
        assert!(q.is_empty());

        q.push(100).unwrap();
        assert_eq!(a.join().unwrap(), Ok(100));
        assert_eq!(q.waiting_consumers(), 1);
        assert_eq!(q.len(), 0, "a value handed to a waiter is not stored");
        q.push(200).unwrap();
        assert_eq!(b.join().unwrap(), Ok(200));
    });
    assert_eq!(q.waiting_consumers(), 0);
    assert_eq!(q.len(), 0);
    assert!(q.is_empty());

    // A timed-out waiter leaves no waiting reservation behind.
    assert_eq!(
        q.pop_timeout(Duration::from_millis(2)),
        Err(PopTimeoutError::Timeout)
    );
    assert_eq!(q.waiting_consumers(), 0);
    q.push(1).unwrap();
    assert_eq!(q.len(), 1, "a push after a timeout must store its value");
    assert!(!q.is_empty());
}

// Debug does not need T: Debug and names the type; Default is an open, empty queue.
#[test]
fn debug_and_default() {
    struct NotDebug;
    let q: DualQueue<NotDebug> = DualQueue::default();
    assert!(format!("{q:?}").contains("DualQueue"));
    assert!(q.is_empty());
    assert!(!q.is_closed());
    assert!(q.push(NotDebug).is_ok());
    assert_eq!(q.len(), 1);
}

// Error types: Display texts, Debug (PushError's without T: Debug), helpers, conversions.
#[test]
fn errors_display_debug() {
    struct NotDebug(u32);
    let e = PushError(NotDebug(5));
    assert!(!format!("{e:?}").is_empty());
    assert!(format!("{e}").contains("closed"));
    assert_eq!(e.into_inner().0, 5);
    assert_eq!(PushError(3), PushError(3));
    assert_eq!(PushError(3).0, 3);

    assert!(format!("{PopError}").contains("closed"));
    assert_eq!(format!("{PopError:?}"), "PopError");

    assert!(format!("{}", TryPopError::Empty).contains("empty"));
    assert!(format!("{}", TryPopError::Closed).contains("closed"));
    assert_eq!(format!("{:?}", TryPopError::Empty), "Empty");
    assert!(TryPopError::Empty.is_empty() && !TryPopError::Empty.is_closed());
    assert!(TryPopError::Closed.is_closed() && !TryPopError::Closed.is_empty());
    assert_eq!(TryPopError::from(PopError), TryPopError::Closed);

    assert!(format!("{}", PopTimeoutError::Timeout).contains("timed out"));
    assert!(format!("{}", PopTimeoutError::Closed).contains("closed"));
    assert_eq!(format!("{:?}", PopTimeoutError::Timeout), "Timeout");
    assert!(PopTimeoutError::Timeout.is_timeout() && !PopTimeoutError::Timeout.is_closed());
    assert!(PopTimeoutError::Closed.is_closed() && !PopTimeoutError::Closed.is_timeout());
    assert_eq!(PopTimeoutError::from(PopError), PopTimeoutError::Closed);

    // All are std errors, usable as trait objects; padding is honoured.
    let errs: Vec<Box<dyn std::error::Error + Send + Sync>> = vec![
        Box::new(PushError(1u8)),
        Box::new(PopError),
        Box::new(TryPopError::Empty),
        Box::new(PopTimeoutError::Timeout),
    ];
    for e in &errs {
        let text = e.to_string();
        assert!(!text.is_empty());
        assert_eq!(format!("{e:>80}").len(), 80.max(text.len()));
    }
}

// The queue is Send + Sync whenever T: Send (even for a !Sync T like Cell).
#[test]
fn send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DualQueue<u8>>();
    assert_send_sync::<DualQueue<Box<dyn FnOnce() + Send>>>();
    assert_send_sync::<DualQueue<std::cell::Cell<u8>>>();
}

// ---------------------------------------------------------------------------
// Throughput and conservation
// ---------------------------------------------------------------------------

// One producer, one blocking consumer: 100k values arrive in push order.
#[test]
fn spsc() {
    let q = DualQueue::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        s.spawn(|| {
            for i in 0..COUNT {
                assert_eq!(q.pop(), Ok(i));
            }
            assert_eq!(q.try_pop(), Err(TryPopError::Empty));
        });
        s.spawn(|| {
            for i in 0..COUNT {
                q.push(i).unwrap();
            }
        });
    });
    assert!(q.is_empty());
}

// One producer, one consumer mixing try_pop and pop_timeout: order still holds.
#[test]
fn spsc_nonblocking_consumer() {
    let q = DualQueue::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        s.spawn(|| {
            let mut next = 0;
            while next < COUNT {
                let got = if next % 2 == 0 {
                    q.try_pop().ok()
                } else {
                    q.pop_timeout(Duration::from_micros(10)).ok()
                };
                if let Some(v) = got {
                    assert_eq!(v, next);
                    next += 1;
                }
            }
        });
        s.spawn(|| {
            for i in 0..COUNT {
                q.push(i).unwrap();
            }
        });
    });
    assert_eq!(q.try_pop(), Err(TryPopError::Empty));
}

/// Runs `producers` producers of `per_producer` values each against
/// `consumers` consumers (which pick pop / pop_timeout / try_pop by `mix`),
/// then closes the queue. Checks that every value arrives exactly once and
/// that each consumer sees each producer's values in push order.
fn mpmc_run(producers: usize, consumers: usize, per_producer: usize, mix: bool) {
    let total = producers * per_producer;
    let q = DualQueue::<usize>::new();
    let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
    let done = AtomicUsize::new(0);

    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        for c in 0..consumers {
            let (q, seen, done) = (&q, &seen, &done);
            s.spawn(move || {
                let mut rng = Rng::new(c as u64 + 1);
                // Last sequence number seen from each producer.
                let mut last: Vec<Option<usize>> = vec![None; producers];
                loop {
                    let v = match if mix { rng.below(3) } else { 0 } {
                        0 => match q.pop() {
                            Ok(v) => v,
                            Err(PopError) => break,
                        },
                        1 => match q.pop_timeout(Duration::from_micros(rng.below(200) as u64)) {
                            Ok(v) => v,
                            Err(PopTimeoutError::Timeout) => continue,
                            Err(PopTimeoutError::Closed) => break,
                        },
                        _ => match q.try_pop() {
                            Ok(v) => v,
                            Err(TryPopError::Empty) => {
                                thread::yield_now();
                                continue;
                            }
                            Err(TryPopError::Closed) => break,
                        },
                    };
                    seen[v].fetch_add(1, Ordering::Relaxed);
                    let (p, seq) = (v / per_producer, v % per_producer);
                    if let Some(prev) = last[p] {
                        assert!(
                            prev < seq,
                            "consumer {c} saw producer {p}'s {seq} after {prev}"
                        );
                    }
                    last[p] = Some(seq);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let producers: Vec<_> = (0..producers)
            .map(|p| {
                let q = &q;
                s.spawn(move || {
                    for seq in 0..per_producer {
                        q.push(p * per_producer + seq).unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        // Every value was pushed; closing lets the consumers drain and stop.
        assert!(q.close());
    });

    assert_eq!(done.load(Ordering::Relaxed), total);
    for (v, n) in seen.iter().enumerate() {
        assert_eq!(
            n.load(Ordering::Relaxed),
            1,
            "value {v} received the wrong number of times"
        );
    }
    assert_eq!(q.try_pop(), Err(TryPopError::Closed));
    assert_eq!(q.waiting_consumers(), 0);
}

// Several producers and blocking consumers: each value received exactly once, per-producer order kept.
#[test]
fn mpmc() {
    mpmc_run(THREADS, THREADS, COUNT / THREADS, false);
}

// Same with consumers mixing pop / pop_timeout / try_pop.
#[test]
fn mpmc_mixed_consumers() {
    mpmc_run(THREADS, THREADS, COUNT / THREADS / 2, true);
}

// Oversubscribed: 32 producers and 32 mixed consumers on 2 cores, exactly-once delivery.
#[test]
fn mpmc_oversubscribed() {
    mpmc_run(MANY, MANY, COUNT / MANY / 4, true);
}

// More consumers than producers (many waiters, few pushes) and vice versa.
#[test]
fn mpmc_unbalanced() {
    mpmc_run(2, MANY, COUNT / 20, false);
    mpmc_run(MANY, 2, COUNT / MANY / 10, false);
}

// ---------------------------------------------------------------------------
// Drops and unusual element types
// ---------------------------------------------------------------------------

// Values popped by a waiting consumer and values left in the dropped queue are each dropped exactly once.
#[test]
fn drops() {
    const RUNS: usize = if cfg!(miri) { 3 } else { 100 };
    const STEPS: usize = if cfg!(miri) { 50 } else { 2_000 };
    let mut rng = Rng::new(0x5eed);

    for _ in 0..RUNS {
        let steps = rng.below(STEPS);
        let additional = rng.below(50);
        let log = DropLog::new(steps + additional);
        let q = DualQueue::new();

        thread::scope(|s| {
            let _close = CloseOnUnwind(&q);
            s.spawn(|| {
                for _ in 0..steps {
                    // Blocking pop: some of these wait and are handed values.
                    drop(q.pop().expect("queue closed"));
                }
            });
            s.spawn(|| {
                for i in 0..steps {
                    assert!(q.push(Tracked::new(i, &log)).is_ok());
                }
            });
        });
        assert_eq!(
            log.total(),
            steps,
            "every popped value is dropped once, by its popper"
        );

        for i in steps..steps + additional {
            assert!(q.push(Tracked::new(i, &log)).is_ok());
        }
        assert_eq!(log.total(), steps, "stored values are not dropped");
        assert_eq!(q.len(), additional);
        drop(q);
        log.assert_each_dropped_once();
    }
}

// Dropping a queue that still links cancelled reservations (behind a served waiter) drops each stored value once.
#[test]
fn drops_with_cancelled_reservations() {
    const N: usize = 20;
    let log = DropLog::new(N);
    let q = DualQueue::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let waiter = s.spawn(|| q.pop().ok().map(|t: Tracked| t.id()));
        wait_for_waiters(&q, 1);
        // Cancelled reservations pile up behind the waiter.
        for _ in 0..5 {
            assert!(matches!(
                q.pop_timeout(Duration::from_micros(100)),
                Err(PopTimeoutError::Timeout)
            ));
        }
        assert_eq!(q.waiting_consumers(), 1);
        assert!(q.push(Tracked::new(0, &log)).is_ok());
        assert_eq!(waiter.join().unwrap(), Some(0));
    });
    assert_eq!(log.total(), 1);
    for i in 1..N {
        assert!(q.push(Tracked::new(i, &log)).is_ok());
    }
    assert_eq!(
        q.len(),
        N - 1,
        "cancelled reservations must not swallow values"
    );
    // Take a few out, leave the rest to the queue's drop.
    for i in 1..5 {
        assert_eq!(q.try_pop().ok().map(|t| t.id()), Some(i));
    }
    drop(q);
    log.assert_each_dropped_once();
}

// A rejected push hands back the very same value, undropped.
#[test]
fn push_error_keeps_value() {
    let log = DropLog::new(1);
    let q = DualQueue::new();
    q.close();
    let err = q
        .push(Tracked::new(0, &log))
        .expect_err("push into closed queue succeeded");
    assert!(!format!("{err:?}").is_empty());
    assert_eq!(log.total(), 0);
    let value = err.into_inner();
    assert_eq!(value.id(), 0);
    assert_eq!(log.total(), 0);
    drop(value);
    drop(q);
    log.assert_each_dropped_once();
}

/// A 16 KiB value moved by value through the queue (and its waiters).
type Big = [u64; 2048];

fn big(n: u64) -> Big {
    let mut a = [0u64; 2048];
    for (i, x) in a.iter_mut().enumerate() {
        *x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64;
    }
    a
}

// Large values, by value and boxed (64 KiB), arrive intact whether stored or handed to a waiter.
#[test]
fn large_values() {
    const N: u64 = if cfg!(miri) { 4 } else { 200 };

    // By value, on normal thread stacks: stored, then handed to a waiter.
    let q = DualQueue::<Big>::new();
    for n in 0..N {
        q.push(big(n)).unwrap();
    }
    for n in 0..N {
        assert!(q.try_pop().unwrap() == big(n));
    }
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let c = s.spawn(|| (0..N).all(|n| q.pop().unwrap() == big(n)));
        for n in 0..N {
            q.push(big(n)).unwrap();
        }
        assert!(c.join().unwrap(), "a large value was corrupted in transit");
    });

    // Boxed 64 KiB arrays, some left inside at drop.
    let q = DualQueue::<Box<[u8; 64 * 1024]>>::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let c = s.spawn(|| {
            for n in 0..N {
                let b = q.pop().unwrap();
                assert!(b.iter().all(|&x| x == n as u8));
            }
        });
        for n in 0..N {
            q.push(Box::new([n as u8; 64 * 1024])).unwrap();
        }
        c.join().unwrap();
    });
    for n in 0..8 {
        q.push(Box::new([n; 64 * 1024])).unwrap();
    }
    assert_eq!(q.len(), 8);
}

static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);

/// A zero-sized type with a drop that counts (only `zero_sized` uses it).
struct ZstDrop;

impl Drop for ZstDrop {
    fn drop(&mut self) {
        ZST_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

// Zero-sized values: counted by len, handed to waiters, dropped exactly once.
#[test]
fn zero_sized() {
    let q = DualQueue::<()>::new();
    for _ in 0..1000 {
        q.push(()).unwrap();
    }
    assert_eq!(q.len(), 1000);
    for _ in 0..1000 {
        assert_eq!(q.pop(), Ok(()));
    }
    assert_eq!(q.try_pop(), Err(TryPopError::Empty));
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let c = s.spawn(|| q.pop());
        wait_for_waiters(&q, 1);
        q.push(()).unwrap();
        assert_eq!(c.join().unwrap(), Ok(()));
    });

    let q = DualQueue::<ZstDrop>::new();
    for _ in 0..100 {
        assert!(q.push(ZstDrop).is_ok());
    }
    for _ in 0..40 {
        drop(q.try_pop().ok().unwrap());
    }
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 40);
    drop(q);
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 100);
}

// ---------------------------------------------------------------------------
// Dual behaviour: waiting consumers
// ---------------------------------------------------------------------------

// A pop on an empty queue really waits (a reservation is linked) until a push hands it the value.
#[test]
fn pop_blocks_until_push() {
    let q = DualQueue::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let c = s.spawn(|| q.pop());
        wait_for_waiters(&q, 1);
        thread::sleep(Duration::from_millis(20));
        assert!(!c.is_finished(), "pop returned with nothing pushed");
        assert_eq!(q.waiting_consumers(), 1);
        q.push(42).unwrap();
        assert_eq!(c.join().unwrap(), Ok(42));
    });
    assert!(q.is_empty());
    assert_eq!(q.waiting_consumers(), 0);
    assert_eq!(
        q.try_pop(),
        Err(TryPopError::Empty),
        "a handed-off value must not also be stored"
    );
}

// Waiters A, B, C (started in that order) get 1, 2, 3: oldest waiter served first.
#[test]
fn waiter_order_abc() {
    let q = DualQueue::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let a = s.spawn(|| q.pop());
        wait_for_waiters(&q, 1);
        let b = s.spawn(|| q.pop());
        wait_for_waiters(&q, 2);
        let c = s.spawn(|| q.pop());
        wait_for_waiters(&q, 3);
        q.push(1).unwrap();
        q.push(2).unwrap();
        q.push(3).unwrap();
        assert_eq!(a.join().unwrap(), Ok(1));
        assert_eq!(b.join().unwrap(), Ok(2));
        assert_eq!(c.join().unwrap(), Ok(3));
    });
    assert!(q.is_empty());
}

// Waiters of every flavour (pop, pop_timeout, pop_deadline) are served in arrival order.
#[test]
fn waiter_order_mixed_flavours() {
    let q = DualQueue::new();
    let far = Duration::from_secs(3600);
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let a = s.spawn(|| q.pop_timeout(far).ok());
        wait_for_waiters(&q, 1);
        let b = s.spawn(|| q.pop().ok());
        wait_for_waiters(&q, 2);
        let c = s.spawn(|| q.pop_deadline(Instant::now() + far).ok());
        wait_for_waiters(&q, 3);
        let d = s.spawn(|| q.pop_timeout(Duration::MAX).ok());
        wait_for_waiters(&q, 4);
        for v in 1..=4 {
            q.push(v).unwrap();
        }
        assert_eq!(a.join().unwrap(), Some(1));
        assert_eq!(b.join().unwrap(), Some(2));
        assert_eq!(c.join().unwrap(), Some(3));
        assert_eq!(d.join().unwrap(), Some(4));
    });
}

/// Polls `cond` until it holds; fails the test after [`PATIENCE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::sleep(Duration::from_micros(50));
    }
}

// A waiter that timed out in the middle of the line is skipped: the value goes to the next live waiter.
#[test]
fn cancelled_waiter_is_skipped() {
    // B must still be waiting when C lines up behind it; on a loaded machine
    // that may take longer than B's timeout, so retry with longer ones.
    let mut timeout = Duration::from_millis(20);
    loop {
        let q = DualQueue::new();
        let achieved = thread::scope(|s| {
            let _close = CloseOnUnwind(&q);
            let q = &q;
            let a = s.spawn(move || q.pop());
            wait_for_waiters(q, 1);
            let b = s.spawn(move || q.pop_timeout(timeout));
            wait_until("B to wait", || {
                q.waiting_consumers() == 2 || b.is_finished()
            });
            let c = s.spawn(move || q.pop());
            wait_until("C to wait", || {
                q.waiting_consumers() == 3 || b.is_finished()
            });
            let achieved = q.waiting_consumers() == 3 || !b.is_finished();
            assert_eq!(b.join().unwrap(), Err(PopTimeoutError::Timeout));
            wait_for_waiters(q, 2);
            q.push(1).unwrap();
            q.push(2).unwrap();
            assert_eq!(a.join().unwrap(), Ok(1));
            assert_eq!(c.join().unwrap(), Ok(2));
            achieved
        });
        assert!(q.is_empty());
        if achieved {
            break;
        }
        timeout *= 2;
        assert!(
            timeout < PATIENCE,
            "could never line up A, B, C before B timed out"
        );
    }
}

// Oversubscribed: 40 waiters started one after another get 0..40 in that order.
#[test]
fn waiter_order_oversubscribed() {
    const WAITERS: usize = if cfg!(miri) { 4 } else { 40 };
    let q = DualQueue::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let mut handles = Vec::new();
        for i in 0..WAITERS {
            handles.push(s.spawn(|| q.pop()));
            wait_for_waiters(&q, i + 1);
        }
        // Pushed from another thread, all at once.
        s.spawn(|| {
            for v in 0..WAITERS {
                q.push(v).unwrap();
            }
        });
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), Ok(i), "waiter {i} served out of order");
        }
    });
    assert!(q.is_empty());
    assert_eq!(q.waiting_consumers(), 0);
}

// Many waiters and concurrent pushers: each waiter gets exactly one value, all distinct.
#[test]
fn waiters_served_by_concurrent_pushers() {
    const WAITERS: usize = if cfg!(miri) { 4 } else { 48 };
    let q = DualQueue::new();
    let mut got: Vec<usize> = thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let handles: Vec<_> = (0..WAITERS).map(|_| s.spawn(|| q.pop().unwrap())).collect();
        wait_for_waiters(&q, WAITERS);
        for p in 0..4 {
            let q = &q;
            s.spawn(move || {
                for v in (p..WAITERS).step_by(4) {
                    q.push(v).unwrap();
                }
            });
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    got.sort_unstable();
    assert_eq!(got, (0..WAITERS).collect::<Vec<_>>());
    assert!(q.is_empty());
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

// pop_timeout on an empty queue waits at least its timeout, then reports Timeout.
#[test]
fn timeout_waits_and_expires() {
    let q = DualQueue::<u8>::new();
    for ms in [1, 10, 50] {
        let d = Duration::from_millis(ms);
        let start = Instant::now();
        assert_eq!(q.pop_timeout(d), Err(PopTimeoutError::Timeout));
        let took = start.elapsed();
        assert!(
            took >= d,
            "returned after {took:?}, before its {d:?} timeout"
        );
        assert!(took < d + PATIENCE, "took {took:?} for a {d:?} timeout");

        let deadline = Instant::now() + d;
        assert_eq!(q.pop_deadline(deadline), Err(PopTimeoutError::Timeout));
        assert!(Instant::now() >= deadline);
    }
    assert_eq!(q.waiting_consumers(), 0);
}

// Zero, huge and Duration::MAX timeouts and past/far deadlines never panic and behave sensibly.
#[test]
fn timeout_edge_durations() {
    let q = DualQueue::new();

    // Zero and past: a non-waiting attempt.
    assert_eq!(q.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Timeout));
    assert_eq!(q.pop_deadline(past()), Err(PopTimeoutError::Timeout));
    assert_eq!(
        q.pop_deadline(Instant::now()),
        Err(PopTimeoutError::Timeout)
    );
    assert_eq!(q.waiting_consumers(), 0);
    q.push(1).unwrap();
    assert_eq!(q.pop_timeout(Duration::ZERO), Ok(1));
    q.push(2).unwrap();
    assert_eq!(q.pop_deadline(past()), Ok(2));

    // Huge: with a value available they return it at once.
    let huge = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(1 << 40),
        Duration::new(u64::MAX, 999_999_999),
    ];
    for (i, d) in huge.iter().enumerate() {
        q.push(i).unwrap();
        assert_eq!(q.pop_timeout(*d), Ok(i));
    }
    if let Some(far) = Instant::now().checked_add(Duration::from_secs(100 * 365 * 24 * 3600)) {
        q.push(9).unwrap();
        assert_eq!(q.pop_deadline(far), Ok(9));
    }

    // Huge: with no value they wait (for ever) until a push arrives.
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let q = &q;
        for d in huge {
            let c = s.spawn(move || q.pop_timeout(d));
            wait_for_waiters(q, 1);
            thread::sleep(Duration::from_millis(5));
            assert!(!c.is_finished(), "pop_timeout({d:?}) gave up");
            q.push(77).unwrap();
            assert_eq!(c.join().unwrap(), Ok(77));
        }
    });

    // After close they report Closed instead.
    q.close();
    assert_eq!(q.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Closed));
    assert_eq!(q.pop_timeout(Duration::MAX), Err(PopTimeoutError::Closed));
    assert_eq!(q.pop_deadline(past()), Err(PopTimeoutError::Closed));
}

/// Spins (yielding now and then) until `flag` holds `value`; fails the test
/// after [`PATIENCE`]. Used instead of a `Barrier` where both threads must
/// start at nearly the same instant (a parked thread wakes far too late).
fn spin_until(flag: &AtomicUsize, value: usize) {
    let start = Instant::now();
    let mut spins = 0u32;
    while flag.load(Ordering::Acquire) != value {
        spins += 1;
        if spins % 64 == 0 {
            assert!(start.elapsed() < PATIENCE, "the other thread never arrived");
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

// A pop_timeout racing a push: each round the value is either received or still stored, never lost or doubled.
#[test]
fn timeout_racing_push_loses_nothing() {
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 3_000 };
    let q = DualQueue::new();
    // Round r starts when `go` becomes r + 1 and its push is done when
    // `pushed` becomes r + 1.
    let go = AtomicUsize::new(0);
    let pushed = AtomicUsize::new(0);
    let (mut received, mut stored) = (0, 0);
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        s.spawn(|| {
            let mut rng = Rng::new(7);
            for round in 0..ROUNDS {
                let delay = Duration::from_nanos(rng.below(200_000) as u64);
                spin_until(&go, round + 1);
                // Wait by yielding, not spinning: a spinning producer starves
                // the consumer's yield-based spin phase on 2 cores, so it
                // would always receive and the race would be one-sided.
                let t0 = Instant::now();
                while t0.elapsed() < delay {
                    thread::yield_now();
                }
                q.push(round).unwrap();
                pushed.store(round + 1, Ordering::Release);
            }
        });
        let mut rng = Rng::new(11);
        for round in 0..ROUNDS {
            let timeout = Duration::from_nanos(rng.below(50_000) as u64);
            go.store(round + 1, Ordering::Release);
            let got = q.pop_timeout(timeout);
            spin_until(&pushed, round + 1);
            // The push has returned: the value is in exactly one place.
            match got {
                Ok(v) => {
                    assert_eq!(v, round);
                    assert_eq!(
                        q.try_pop(),
                        Err(TryPopError::Empty),
                        "round {round}: value duplicated"
                    );
                    received += 1;
                }
                Err(PopTimeoutError::Timeout) => {
                    assert_eq!(q.try_pop(), Ok(round), "round {round}: value lost");
                    stored += 1;
                }
                Err(PopTimeoutError::Closed) => panic!("round {round}: queue reported closed"),
            }
            assert_eq!(q.waiting_consumers(), 0);
        }
    });
    assert_eq!(received + stored, ROUNDS);
    eprintln!("timeout race: {received} received, {stored} left stored");
}

// A waiter whose deadline passes just as a producer fulfils it returns the value (and then it is not stored).
#[test]
fn timed_out_waiter_fulfilled_at_deadline_returns_value() {
    const ROUNDS: usize = if cfg!(miri) { 10 } else { 500 };
    let q = DualQueue::new();
    let (tx, rx) = mpsc::channel::<Instant>();
    let end = Barrier::new(2);
    let mut late_ok = 0;
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let (q, end) = (&q, &end);
        s.spawn(move || {
            for round in 0..ROUNDS {
                let deadline = rx.recv().unwrap();
                // Push only once the consumer's deadline has passed (waiting
                // by yielding, so the consumer is not starved of a CPU).
                while Instant::now() < deadline {
                    thread::yield_now();
                }
                q.push(round).unwrap();
                end.wait();
            }
        });
        for round in 0..ROUNDS {
            let deadline = Instant::now() + Duration::from_micros(300);
            tx.send(deadline).unwrap();
            let got = q.pop_deadline(deadline);
            end.wait();
            match got {
                Ok(v) => {
                    assert_eq!(v, round);
                    assert_eq!(
                        q.try_pop(),
                        Err(TryPopError::Empty),
                        "round {round}: value duplicated"
                    );
                    late_ok += 1;
                }
                Err(PopTimeoutError::Timeout) => {
                    assert_eq!(q.try_pop(), Ok(round), "round {round}: value lost");
                }
                Err(PopTimeoutError::Closed) => panic!("round {round}: queue reported closed"),
            }
        }
    });
    eprintln!("fulfilled at/after the deadline and returned: {late_ok} of {ROUNDS}");
    // The producer pushed after the deadline every round; a waiter that
    // (legitimately) lost its cancel to it must have returned the value, and
    // the push, watching the clock, usually beats the parked waiter's
    // (timer-slack delayed) wake-up.
    if !cfg!(miri) {
        assert!(
            late_ok > 0,
            "no round delivered a value to a waiter past its deadline"
        );
    }
}

// ---------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------

// close() wakes every blocked consumer, of every flavour, with Err.
#[test]
fn close_wakes_waiters() {
    // Plain threads (not scoped): if close fails to wake one, the test fails
    // instead of hanging.
    let q = Arc::new(DualQueue::<u32>::new());
    let far = Duration::from_secs(3600);
    let mut pops = Vec::new();
    let mut timed = Vec::new();
    for i in 0..8 {
        let q2 = Arc::clone(&q);
        match i % 4 {
            0 => pops.push(thread::spawn(move || q2.pop())),
            1 => timed.push(thread::spawn(move || q2.pop_timeout(far))),
            2 => timed.push(thread::spawn(move || q2.pop_deadline(Instant::now() + far))),
            _ => timed.push(thread::spawn(move || q2.pop_timeout(Duration::MAX))),
        }
        wait_for_waiters(&q, i + 1);
    }
    assert!(q.close());
    for h in pops {
        assert_eq!(join(h), Err(PopError));
    }
    for h in timed {
        assert_eq!(join(h), Err(PopTimeoutError::Closed));
    }
    assert_eq!(q.waiting_consumers(), 0);
    assert!(q.is_closed());
}

// Oversubscribed: 40 blocked consumers all wake with Err when the queue closes.
#[test]
fn close_wakes_many_waiters() {
    const WAITERS: usize = if cfg!(miri) { 4 } else { 40 };
    let q = Arc::new(DualQueue::<u32>::new());
    let handles: Vec<_> = (0..WAITERS)
        .map(|_| {
            let q = Arc::clone(&q);
            thread::spawn(move || q.pop())
        })
        .collect();
    wait_for_waiters(&q, WAITERS);
    assert!(q.close());
    for h in handles {
        assert_eq!(join(h), Err(PopError));
    }
}

// Consumers starting to wait while close() runs all return (none is left blocked).
#[test]
fn close_racing_new_waiters() {
    const ROUNDS: usize = if cfg!(miri) { 5 } else { 300 };
    for _ in 0..ROUNDS {
        let q = Arc::new(DualQueue::<u32>::new());
        let go = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (q, go) = (Arc::clone(&q), Arc::clone(&go));
                thread::spawn(move || {
                    go.wait();
                    match i {
                        0 => q.pop().is_err(),
                        1 => {
                            q.pop_timeout(Duration::from_secs(3600)) == Err(PopTimeoutError::Closed)
                        }
                        _ => q.pop_timeout(Duration::from_micros(5)).is_err(),
                    }
                })
            })
            .collect();
        go.wait();
        q.close();
        for h in handles {
            assert!(
                join(h),
                "a consumer got a value from a queue nobody pushed to"
            );
        }
        assert_eq!(q.waiting_consumers(), 0);
    }
}

// A push racing close() while a consumer waits: the value is delivered, stored, or handed back — exactly one.
#[test]
fn close_racing_push_to_waiter() {
    const ROUNDS: usize = if cfg!(miri) { 5 } else { 500 };
    for round in 0..ROUNDS {
        let q = Arc::new(DualQueue::new());
        let go = Arc::new(Barrier::new(2));
        let c = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.pop())
        };
        wait_for_waiters(&q, 1);
        let p = {
            let (q, go) = (Arc::clone(&q), Arc::clone(&go));
            thread::spawn(move || {
                go.wait();
                q.push(round)
            })
        };
        go.wait();
        q.close();
        let (popped, pushed) = (join(c), join(p));
        let stored = q.try_pop().ok();
        assert_eq!(q.try_pop(), Err(TryPopError::Closed));
        match (popped, pushed) {
            (Ok(v), Ok(())) => assert!(v == round && stored.is_none(), "round {round}: duplicated"),
            (Err(PopError), Err(PushError(v))) => {
                assert!(v == round && stored.is_none(), "round {round}: duplicated")
            }
            (Err(PopError), Ok(())) => {
                assert_eq!(
                    stored,
                    Some(round),
                    "round {round}: push succeeded but the value is gone"
                )
            }
            (Ok(_), Err(_)) => panic!("round {round}: value both delivered and handed back"),
        }
    }
}

// Values pushed before close() are still popped (in order, by every flavour) after it; then each flavour reports closed.
#[test]
fn drain_after_close() {
    let q = DualQueue::new();
    for i in 0..8 {
        q.push(i).unwrap();
    }
    assert!(q.close());
    assert!(q.is_closed());
    assert_eq!(q.len(), 8);
    assert_eq!(q.pop(), Ok(0));
    assert_eq!(q.try_pop(), Ok(1));
    assert_eq!(q.pop_timeout(Duration::ZERO), Ok(2));
    assert_eq!(q.pop_timeout(Duration::MAX), Ok(3));
    assert_eq!(q.pop_deadline(past()), Ok(4));
    assert_eq!(q.pop_timeout(Duration::from_secs(1)), Ok(5));
    assert_eq!(q.pop(), Ok(6));
    assert_eq!(q.pop(), Ok(7));
    assert!(q.is_empty());

    assert_eq!(q.pop(), Err(PopError));
    assert_eq!(q.try_pop(), Err(TryPopError::Closed));
    assert_eq!(q.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Closed));
    assert_eq!(
        q.pop_timeout(Duration::from_secs(3600)),
        Err(PopTimeoutError::Closed)
    );
    assert_eq!(q.pop_deadline(past()), Err(PopTimeoutError::Closed));
    assert_eq!(q.waiting_consumers(), 0);
}

// Concurrent consumers drain a closed queue: every stored value popped once, then all see closed.
#[test]
fn concurrent_drain_after_close() {
    let n = COUNT / 10;
    let q = DualQueue::new();
    for i in 0..n {
        q.push(i).unwrap();
    }
    q.close();
    let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        for _ in 0..THREADS {
            s.spawn(|| {
                while let Ok(v) = q.pop() {
                    seen[v].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    assert_eq!(q.pop(), Err(PopError));
}

// push after close() fails with the value; close() is idempotent and reports who closed.
#[test]
fn push_after_close_returns_value() {
    let q = DualQueue::new();
    q.push(1).unwrap();
    assert!(q.close());
    assert!(!q.close(), "second close claims to have closed");
    assert!(q.is_closed());
    assert_eq!(q.push(2), Err(PushError(2)));
    assert_eq!(q.push(3).unwrap_err().into_inner(), 3);
    assert_eq!(q.len(), 1, "a rejected push stored its value");
    assert_eq!(q.pop(), Ok(1));
    assert_eq!(q.push(4), Err(PushError(4)));
    assert_eq!(q.try_pop(), Err(TryPopError::Closed));
}

// Exactly one of several concurrent close() calls reports that it closed the queue.
#[test]
fn concurrent_close_exactly_one_wins() {
    const ROUNDS: usize = if cfg!(miri) { 5 } else { 200 };
    for _ in 0..ROUNDS {
        let q = DualQueue::<u8>::new();
        let wins = AtomicUsize::new(0);
        thread::scope(|s| {
            let _close = CloseOnUnwind(&q);
            for _ in 0..4 {
                s.spawn(|| {
                    if q.close() {
                        wins.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::Relaxed), 1);
        assert!(q.is_closed());
        assert_eq!(q.push(1), Err(PushError(1)));
    }
}
