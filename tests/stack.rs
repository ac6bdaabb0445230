//! The canonical `DualStack` tests (in the style of crossbeam-queue's
//! `tests/seg_queue.rs`) plus the dual cases, with the stack's orders: values
//! come out newest first, and a push serves the newest waiting consumer.
//!
//! The proptest model is `tests/stack_model.rs`, the oversubscribed stress
//! `tests/stack_stress.rs`, and the flat-memory check
//! `tests/stack_memory.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_for_waiters, DropLog, Tracked, PATIENCE};
use dualq::{DualStack, PopError, PopTimeoutError, PushError, TryPopError};

/// Values moved through the stack by the spsc tests.
const COUNT: usize = if cfg!(miri) { 100 } else { 100_000 };
/// Producer and consumer threads of the (non-oversubscribed) mpmc test.
const THREADS: usize = 4;
/// Threads per side of the oversubscribed tests (these machines have 2 cores).
const MANY: usize = if cfg!(miri) { 4 } else { 32 };

/// A small deterministic PRNG (xorshift64*), so the tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
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

/// Waits for `is_finished`, failing the test (instead of hanging it) after
/// [`PATIENCE`].
fn await_finish(is_finished: impl Fn() -> bool) {
    let start = Instant::now();
    while !is_finished() {
        assert!(
            start.elapsed() < PATIENCE,
            "thread did not finish within {PATIENCE:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Joins a thread; fails the test instead of hanging it.
fn join<T>(handle: thread::JoinHandle<T>) -> T {
    await_finish(|| handle.is_finished());
    handle.join().expect("thread panicked")
}

/// Joins a scoped thread; fails the test instead of hanging it.
fn join_scoped<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    await_finish(|| handle.is_finished());
    handle.join().expect("thread panicked")
}

/// An instant well in the past (or now, if the clock cannot go that far back).
fn past() -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
}

/// Checks one consumer's pops against one producer that pushed 0, 1, 2, ...
/// in that order. On a stack each pop returns the largest value stored at
/// that moment; from the consumer's side that means: a value above the
/// largest seen so far leaves everything between stored ("pending"), and a
/// value below it must be the largest pending one.
#[derive(Default)]
struct LifoCheck {
    /// One past the largest value popped so far.
    next_new: usize,
    /// Pending values as half-open ranges, increasing.
    pending: Vec<(usize, usize)>,
}

impl LifoCheck {
    fn popped(&mut self, v: usize) {
        if v >= self.next_new {
            if v > self.next_new {
                self.pending.push((self.next_new, v));
            }
            self.next_new = v + 1;
        } else {
            let (lo, hi) = self
                .pending
                .last_mut()
                .unwrap_or_else(|| panic!("popped {v} twice"));
            assert_eq!(
                v,
                *hi - 1,
                "popped {v} while {} was stored above it",
                *hi - 1
            );
            *hi -= 1;
            if *hi == *lo {
                self.pending.pop();
            }
        }
    }

    /// All of `0..count` popped.
    fn finish(&self, count: usize) {
        assert!(self.pending.is_empty(), "never popped: {:?}", self.pending);
        assert_eq!(self.next_new, count);
    }
}

// The checker itself: accepts stack orders, rejects queue-like and duplicate ones.
#[test]
fn lifo_check_bites() {
    let mut c = LifoCheck::default();
    for v in [0, 3, 2, 5, 4, 1, 6] {
        c.popped(v);
    }
    c.finish(7);
    let fifo = std::panic::catch_unwind(|| {
        let mut c = LifoCheck::default();
        for v in [2, 0, 1] {
            c.popped(v); // 0 popped while 1 was stored above it
        }
    });
    assert!(fifo.is_err());
    let twice = std::panic::catch_unwind(|| {
        let mut c = LifoCheck::default();
        for v in [0, 0] {
            c.popped(v);
        }
    });
    assert!(twice.is_err());
}

// ---------------------------------------------------------------------------
// Single-threaded basics
// ---------------------------------------------------------------------------

// Push and every pop flavour on one thread: LIFO order, Empty when empty.
#[test]
fn smoke() {
    let s = DualStack::new();
    s.push(7).unwrap();
    assert_eq!(s.try_pop(), Ok(7));
    assert_eq!(s.try_pop(), Err(TryPopError::Empty));

    s.push(8).unwrap();
    assert_eq!(s.pop(), Ok(8));
    s.push(9).unwrap();
    assert_eq!(s.pop_timeout(Duration::from_secs(1)), Ok(9));
    s.push(10).unwrap();
    assert_eq!(
        s.pop_deadline(Instant::now() + Duration::from_secs(1)),
        Ok(10)
    );

    for i in 0..10 {
        s.push(i).unwrap();
    }
    for i in (0..10).rev() {
        assert_eq!(s.try_pop(), Ok(i));
    }
    assert_eq!(s.try_pop(), Err(TryPopError::Empty));
    assert_eq!(s.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Timeout));

    // Interleaved pushes and pops: always the newest.
    s.push(1).unwrap();
    s.push(2).unwrap();
    assert_eq!(s.pop(), Ok(2));
    s.push(3).unwrap();
    assert_eq!(s.pop(), Ok(3));
    assert_eq!(s.pop(), Ok(1));
    assert!(s.is_empty());
    assert!(!s.is_closed());
}

// len, is_empty and waiting_consumers track stored values and waiters.
#[test]
fn len_empty_waiting_snapshots() {
    let s = DualStack::new();
    assert_eq!(s.len(), 0);
    assert!(s.is_empty());
    assert_eq!(s.waiting_consumers(), 0);

    for i in 0..5 {
        s.push(i).unwrap();
        assert_eq!(s.len(), i + 1);
        assert!(!s.is_empty());
        assert_eq!(s.waiting_consumers(), 0);
    }
    for i in (0..5).rev() {
        assert_eq!(s.try_pop(), Ok(i));
        assert_eq!(s.len(), i);
    }
    assert!(s.is_empty());

    thread::scope(|sc| {
        let a = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 1);
        let b = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 2);
        // Reservations are neither values nor make the stack non-empty.
        assert_eq!(s.len(), 0);
        assert!(s.is_empty());

        s.push(100).unwrap();
        assert_eq!(join_scoped(b), Ok(100), "the newest waiter is served first");
        assert_eq!(s.waiting_consumers(), 1);
        assert_eq!(s.len(), 0, "a value handed to a waiter is not stored");
        s.push(200).unwrap();
        assert_eq!(join_scoped(a), Ok(200));
    });
    assert_eq!(s.waiting_consumers(), 0);
    assert_eq!(s.len(), 0);
    assert!(s.is_empty());

    // A timed-out waiter leaves no waiting reservation behind.
    assert_eq!(
        s.pop_timeout(Duration::from_millis(2)),
        Err(PopTimeoutError::Timeout)
    );
    assert_eq!(s.waiting_consumers(), 0);
    s.push(1).unwrap();
    assert_eq!(s.len(), 1, "a push after a timeout must store its value");
    assert!(!s.is_empty());
}

// Debug does not need T: Debug and names the type; Default is an open, empty stack.
#[test]
fn debug_and_default() {
    struct NotDebug;
    let s: DualStack<NotDebug> = DualStack::default();
    assert_eq!(format!("{s:?}"), "DualStack { .. }");
    assert!(s.is_empty());
    assert!(!s.is_closed());
    assert!(s.push(NotDebug).is_ok());
    assert_eq!(s.len(), 1);
}

// The stack is Send + Sync for Send values.
#[test]
fn send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DualStack<u8>>();
    assert_send_sync::<DualStack<Box<dyn FnOnce() + Send>>>();
    assert_send_sync::<DualStack<std::cell::Cell<u8>>>();
}

// ---------------------------------------------------------------------------
// Throughput and conservation
// ---------------------------------------------------------------------------

// One producer, one blocking consumer: every pop is the newest value stored (LifoCheck).
#[test]
fn spsc() {
    let s = DualStack::new();
    thread::scope(|sc| {
        sc.spawn(|| {
            let mut check = LifoCheck::default();
            for _ in 0..COUNT {
                check.popped(s.pop().unwrap());
            }
            check.finish(COUNT);
            assert_eq!(s.try_pop(), Err(TryPopError::Empty));
        });
        sc.spawn(|| {
            for i in 0..COUNT {
                s.push(i).unwrap();
            }
        });
    });
    assert!(s.is_empty());
}

// One producer, one consumer mixing try_pop and pop_timeout: LIFO order still holds.
#[test]
fn spsc_nonblocking_consumer() {
    let s = DualStack::new();
    thread::scope(|sc| {
        sc.spawn(|| {
            let mut check = LifoCheck::default();
            let mut got = 0;
            while got < COUNT {
                let v = if got % 2 == 0 {
                    s.try_pop().ok()
                } else {
                    s.pop_timeout(Duration::from_micros(10)).ok()
                };
                if let Some(v) = v {
                    check.popped(v);
                    got += 1;
                }
            }
            check.finish(COUNT);
        });
        sc.spawn(|| {
            for i in 0..COUNT {
                s.push(i).unwrap();
            }
        });
    });
    assert_eq!(s.try_pop(), Err(TryPopError::Empty));
}

/// Runs `producers` producers of `per_producer` values each against
/// `consumers` consumers (which pick pop / pop_timeout / try_pop by `mix`),
/// then closes the stack. Checks that every value arrives exactly once.
fn mpmc_run(producers: usize, consumers: usize, per_producer: usize, mix: bool) {
    let total = producers * per_producer;
    let s = DualStack::<usize>::new();
    let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
    let done = AtomicUsize::new(0);

    thread::scope(|sc| {
        for c in 0..consumers {
            let (s, seen, done) = (&s, &seen, &done);
            sc.spawn(move || {
                let mut rng = Rng::new(c as u64 + 1);
                loop {
                    let v = match if mix { rng.below(3) } else { 0 } {
                        0 => match s.pop() {
                            Ok(v) => v,
                            Err(PopError) => break,
                        },
                        1 => match s.pop_timeout(Duration::from_micros(rng.below(200) as u64)) {
                            Ok(v) => v,
                            Err(PopTimeoutError::Timeout) => continue,
                            Err(PopTimeoutError::Closed) => break,
                        },
                        _ => match s.try_pop() {
                            Ok(v) => v,
                            Err(TryPopError::Empty) => {
                                thread::yield_now();
                                continue;
                            }
                            Err(TryPopError::Closed) => break,
                        },
                    };
                    seen[v].fetch_add(1, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let producers: Vec<_> = (0..producers)
            .map(|p| {
                let s = &s;
                sc.spawn(move || {
                    for seq in 0..per_producer {
                        s.push(p * per_producer + seq).unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        // Every value was pushed; closing lets the consumers drain and stop.
        assert!(s.close());
    });

    assert_eq!(done.load(Ordering::Relaxed), total);
    for (v, n) in seen.iter().enumerate() {
        assert_eq!(
            n.load(Ordering::Relaxed),
            1,
            "value {v} received the wrong number of times"
        );
    }
    assert_eq!(s.try_pop(), Err(TryPopError::Closed));
    assert_eq!(s.waiting_consumers(), 0);
}

// Several producers and blocking consumers: each value received exactly once.
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

// Values popped by a waiting consumer and values left in the dropped stack are each dropped exactly once.
#[test]
fn drops() {
    const RUNS: usize = if cfg!(miri) { 3 } else { 100 };
    const STEPS: usize = if cfg!(miri) { 50 } else { 2_000 };
    let mut rng = Rng::new(0x5eed);

    for _ in 0..RUNS {
        let steps = rng.below(STEPS);
        let additional = rng.below(50);
        let log = DropLog::new(steps + additional);
        let s = DualStack::new();

        thread::scope(|sc| {
            sc.spawn(|| {
                for _ in 0..steps {
                    // Blocking pop: some of these wait and are handed values.
                    drop(s.pop().expect("stack closed"));
                }
            });
            sc.spawn(|| {
                for i in 0..steps {
                    assert!(s.push(Tracked::new(i, &log)).is_ok());
                }
            });
        });
        assert_eq!(
            log.total(),
            steps,
            "every popped value is dropped once, by its popper"
        );

        for i in steps..steps + additional {
            assert!(s.push(Tracked::new(i, &log)).is_ok());
        }
        assert_eq!(log.total(), steps, "stored values are not dropped");
        assert_eq!(s.len(), additional);
        drop(s);
        log.assert_each_dropped_once();
    }
}

// Dropping a stack that still holds cancelled reservations under a live one, or values, drops each value once.
#[test]
fn drops_with_cancelled_reservations() {
    const N: usize = 20;
    let log = DropLog::new(N);
    let s = DualStack::new();
    thread::scope(|sc| {
        let waiter = sc.spawn(|| s.pop().ok().map(|t: Tracked| t.id()));
        wait_for_waiters(&s, 1);
        // Timed-out reservations on top of the waiter: removed as they time out.
        for _ in 0..5 {
            assert!(matches!(
                s.pop_timeout(Duration::from_micros(100)),
                Err(PopTimeoutError::Timeout)
            ));
        }
        assert_eq!(s.waiting_consumers(), 1);
        assert!(s.push(Tracked::new(0, &log)).is_ok());
        assert_eq!(join_scoped(waiter), Some(0));
    });
    assert_eq!(log.total(), 1);
    for i in 1..N {
        assert!(s.push(Tracked::new(i, &log)).is_ok());
    }
    assert_eq!(
        s.len(),
        N - 1,
        "cancelled reservations must not swallow values"
    );
    // Take a few out (newest first), leave the rest to the stack's drop.
    for i in (N - 4..N).rev() {
        assert_eq!(s.try_pop().ok().map(|t| t.id()), Some(i));
    }
    drop(s);
    log.assert_each_dropped_once();
}

// Dropping a closed stack whose (closed) reservations are still in it frees them and drops the stored values once.
#[test]
fn drop_after_close_with_waiters() {
    let log = DropLog::new(1);
    let s = DualStack::<Tracked>::new();
    thread::scope(|sc| {
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let h = sc.spawn(|| s.pop().is_err());
                wait_for_waiters(&s, i + 1);
                h
            })
            .collect();
        s.close();
        for w in waiters {
            assert!(join_scoped(w));
        }
    });
    assert!(s.push(Tracked::new(0, &log)).is_err()); // dropped here, once
    assert_eq!(log.total(), 1);
    drop(s);
    log.assert_each_dropped_once();
}

// A rejected push hands back the very same value, undropped.
#[test]
fn push_error_keeps_value() {
    let log = DropLog::new(1);
    let s = DualStack::new();
    s.close();
    let err = s
        .push(Tracked::new(0, &log))
        .expect_err("push into closed stack succeeded");
    assert!(!format!("{err:?}").is_empty());
    assert_eq!(log.total(), 0);
    let value = err.into_inner();
    assert_eq!(value.id(), 0);
    assert_eq!(log.total(), 0);
    drop(value);
    drop(s);
    log.assert_each_dropped_once();
}

/// A 16 KiB value moved by value through the stack (and its waiters).
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

    // By value, on normal thread stacks: stored (and popped newest first),
    // then handed to a waiter one at a time.
    let s = DualStack::<Big>::new();
    for n in 0..N {
        s.push(big(n)).unwrap();
    }
    for n in (0..N).rev() {
        assert!(s.try_pop().unwrap() == big(n));
    }
    thread::scope(|sc| {
        let c = sc.spawn(|| {
            let mut check = LifoCheck::default();
            for _ in 0..N {
                let b = s.pop().unwrap();
                let n = (0..N).find(|&n| b == big(n)).expect("corrupted value");
                check.popped(n as usize);
            }
            check.finish(N as usize);
        });
        for n in 0..N {
            s.push(big(n)).unwrap();
        }
        join_scoped(c);
    });

    // Boxed 64 KiB arrays, some left inside at drop.
    let s = DualStack::<Box<[u8; 64 * 1024]>>::new();
    thread::scope(|sc| {
        let c = sc.spawn(|| {
            for _ in 0..N {
                let b = s.pop().unwrap();
                assert!(b.iter().all(|&x| x == b[0]), "a large value was corrupted");
            }
        });
        for n in 0..N {
            s.push(Box::new([n as u8; 64 * 1024])).unwrap();
        }
        join_scoped(c);
    });
    for n in 0..8 {
        s.push(Box::new([n; 64 * 1024])).unwrap();
    }
    assert_eq!(s.len(), 8);
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
    let s = DualStack::<()>::new();
    for _ in 0..1000 {
        s.push(()).unwrap();
    }
    assert_eq!(s.len(), 1000);
    for _ in 0..1000 {
        assert_eq!(s.pop(), Ok(()));
    }
    assert_eq!(s.try_pop(), Err(TryPopError::Empty));
    thread::scope(|sc| {
        let c = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 1);
        s.push(()).unwrap();
        assert_eq!(join_scoped(c), Ok(()));
    });

    let s = DualStack::<ZstDrop>::new();
    for _ in 0..100 {
        assert!(s.push(ZstDrop).is_ok());
    }
    for _ in 0..40 {
        drop(s.try_pop().ok().unwrap());
    }
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 40);
    drop(s);
    assert_eq!(ZST_DROPS.load(Ordering::SeqCst), 100);
}

// ---------------------------------------------------------------------------
// Dual behaviour: waiting consumers
// ---------------------------------------------------------------------------

// A pop on an empty stack really waits (a reservation is pushed) until a push hands it the value.
#[test]
fn pop_blocks_until_push() {
    let s = DualStack::new();
    thread::scope(|sc| {
        let c = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 1);
        thread::sleep(Duration::from_millis(20));
        assert!(!c.is_finished(), "pop returned with nothing pushed");
        assert_eq!(s.waiting_consumers(), 1);
        s.push(42).unwrap();
        assert_eq!(join_scoped(c), Ok(42));
    });
    assert!(s.is_empty());
    assert_eq!(s.waiting_consumers(), 0);
    assert_eq!(
        s.try_pop(),
        Err(TryPopError::Empty),
        "a handed-off value must not also be stored"
    );
}

// Waiters A, B, C (started in that order); 1, 2, 3 pushed one at a time, each after the previous
// waiter returned: C gets 1, B gets 2, A gets 3 (newest waiter first).
#[test]
fn waiter_order_newest_first() {
    let s = DualStack::new();
    thread::scope(|sc| {
        let a = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 1);
        let b = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 2);
        let c = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 3);
        s.push(1).unwrap();
        assert_eq!(join_scoped(c), Ok(1));
        s.push(2).unwrap();
        assert_eq!(join_scoped(b), Ok(2));
        s.push(3).unwrap();
        assert_eq!(join_scoped(a), Ok(3));
    });
    assert!(s.is_empty());
}

// The same with the three pushes back to back: a served reservation leaves the stack with its push,
// so the next push serves the next-newest waiter even before the first one has woken up.
#[test]
fn waiter_order_newest_first_back_to_back() {
    let s = DualStack::new();
    thread::scope(|sc| {
        let a = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 1);
        let b = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 2);
        let c = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 3);
        s.push(1).unwrap();
        s.push(2).unwrap();
        s.push(3).unwrap();
        assert_eq!(join_scoped(c), Ok(1));
        assert_eq!(join_scoped(b), Ok(2));
        assert_eq!(join_scoped(a), Ok(3));
    });
}

// Waiters of every flavour (pop, pop_timeout, pop_deadline) are served newest first.
#[test]
fn waiter_order_mixed_flavours() {
    let s = DualStack::new();
    let far = Duration::from_secs(3600);
    thread::scope(|sc| {
        let a = sc.spawn(|| s.pop_timeout(far).ok());
        wait_for_waiters(&s, 1);
        let b = sc.spawn(|| s.pop().ok());
        wait_for_waiters(&s, 2);
        let c = sc.spawn(|| s.pop_deadline(Instant::now() + far).ok());
        wait_for_waiters(&s, 3);
        let d = sc.spawn(|| s.pop_timeout(Duration::MAX).ok());
        wait_for_waiters(&s, 4);
        for v in 1..=4 {
            s.push(v).unwrap();
        }
        assert_eq!(join_scoped(d), Some(1));
        assert_eq!(join_scoped(c), Some(2));
        assert_eq!(join_scoped(b), Some(3));
        assert_eq!(join_scoped(a), Some(4));
    });
}

// A waiter that timed out in the middle, or on top, is skipped: the value goes to the newest live waiter.
#[test]
fn cancelled_waiter_is_skipped() {
    let s = DualStack::new();
    thread::scope(|sc| {
        // In the middle: A, B (times out), C.
        let a = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 1);
        let b = sc.spawn(|| s.pop_timeout(Duration::from_millis(100)));
        wait_for_waiters(&s, 2);
        let c = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 3);
        assert_eq!(join_scoped(b), Err(PopTimeoutError::Timeout));
        wait_for_waiters(&s, 2);
        s.push(1).unwrap();
        assert_eq!(join_scoped(c), Ok(1));
        // On top: D times out above A.
        let d = sc.spawn(|| s.pop_timeout(Duration::from_millis(100)));
        wait_for_waiters(&s, 2);
        assert_eq!(join_scoped(d), Err(PopTimeoutError::Timeout));
        s.push(2).unwrap();
        assert_eq!(join_scoped(a), Ok(2));
    });
    assert!(s.is_empty());
    assert_eq!(s.waiting_consumers(), 0);
}

// Oversubscribed: 40 waiters started one after another; 0..40 pushed at once from another thread:
// waiter i gets 39 - i (newest waiter first, whatever the wake-up order).
#[test]
fn waiter_order_oversubscribed() {
    const WAITERS: usize = if cfg!(miri) { 4 } else { 40 };
    let s = DualStack::new();
    thread::scope(|sc| {
        let mut handles = Vec::new();
        for i in 0..WAITERS {
            handles.push(sc.spawn(|| s.pop()));
            wait_for_waiters(&s, i + 1);
        }
        sc.spawn(|| {
            for v in 0..WAITERS {
                s.push(v).unwrap();
            }
        });
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(
                join_scoped(h),
                Ok(WAITERS - 1 - i),
                "waiter {i} served out of order"
            );
        }
    });
    assert!(s.is_empty());
    assert_eq!(s.waiting_consumers(), 0);
}

// Many waiters and concurrent pushers (fulfilling nodes helped by other pushers): each waiter gets one distinct value.
#[test]
fn waiters_served_by_concurrent_pushers() {
    const WAITERS: usize = if cfg!(miri) { 4 } else { 48 };
    for _ in 0..if cfg!(miri) { 1 } else { 20 } {
        let s = DualStack::new();
        let mut got: Vec<usize> = thread::scope(|sc| {
            let handles: Vec<_> = (0..WAITERS)
                .map(|_| sc.spawn(|| s.pop().unwrap()))
                .collect();
            wait_for_waiters(&s, WAITERS);
            for p in 0..4 {
                let s = &s;
                sc.spawn(move || {
                    for v in (p..WAITERS).step_by(4) {
                        s.push(v).unwrap();
                    }
                });
            }
            handles.into_iter().map(join_scoped).collect()
        });
        got.sort_unstable();
        assert_eq!(got, (0..WAITERS).collect::<Vec<_>>());
        assert!(s.is_empty());
        assert_eq!(s.waiting_consumers(), 0);
    }
}

// Pushes racing waiters that time out right under them: the fulfilling node skips the dead ones,
// or comes back empty-handed and stores its value; every value ends up received or stored, once.
#[test]
fn pushes_over_timing_out_waiters_lose_nothing() {
    const ROUNDS: usize = if cfg!(miri) { 5 } else { 300 };
    let mut rng = Rng::new(99);
    for round in 0..ROUNDS {
        let s = DualStack::new();
        let timeouts: Vec<Duration> = (0..4)
            .map(|_| Duration::from_micros(rng.below(300) as u64))
            .collect();
        let received: Vec<Option<usize>> = thread::scope(|sc| {
            let s = &s;
            let waiters: Vec<_> = timeouts
                .iter()
                .map(|&t| sc.spawn(move || s.pop_timeout(t).ok()))
                .collect();
            let pushers: Vec<_> = (0..2)
                .map(|p| {
                    sc.spawn(move || {
                        s.push(2 * round + p).unwrap();
                    })
                })
                .collect();
            for p in pushers {
                join_scoped(p);
            }
            waiters.into_iter().map(join_scoped).collect()
        });
        let mut all: Vec<usize> = received.into_iter().flatten().collect();
        all.extend(std::iter::from_fn(|| s.try_pop().ok()));
        all.sort_unstable();
        assert_eq!(all, vec![2 * round, 2 * round + 1], "round {round}");
        assert_eq!(s.waiting_consumers(), 0);
    }
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

// pop_timeout on an empty stack waits at least its timeout, then reports Timeout.
#[test]
fn timeout_waits_and_expires() {
    let s = DualStack::<u8>::new();
    for ms in [1, 10, 50] {
        let d = Duration::from_millis(ms);
        let start = Instant::now();
        assert_eq!(s.pop_timeout(d), Err(PopTimeoutError::Timeout));
        let took = start.elapsed();
        assert!(
            took >= d,
            "returned after {took:?}, before its {d:?} timeout"
        );
        assert!(took < d + PATIENCE, "took {took:?} for a {d:?} timeout");

        let deadline = Instant::now() + d;
        assert_eq!(s.pop_deadline(deadline), Err(PopTimeoutError::Timeout));
        assert!(Instant::now() >= deadline);
    }
    assert_eq!(s.waiting_consumers(), 0);
}

// Zero, huge and Duration::MAX timeouts and past/far deadlines never panic and behave sensibly.
#[test]
fn timeout_edge_durations() {
    let s = DualStack::new();

    // Zero and past: a non-waiting attempt.
    assert_eq!(s.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Timeout));
    assert_eq!(s.pop_deadline(past()), Err(PopTimeoutError::Timeout));
    assert_eq!(
        s.pop_deadline(Instant::now()),
        Err(PopTimeoutError::Timeout)
    );
    assert_eq!(s.waiting_consumers(), 0);
    s.push(1).unwrap();
    assert_eq!(s.pop_timeout(Duration::ZERO), Ok(1));
    s.push(2).unwrap();
    assert_eq!(s.pop_deadline(past()), Ok(2));

    // Huge: with a value available they return it at once.
    let huge = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(1 << 40),
        Duration::new(u64::MAX, 999_999_999),
    ];
    for (i, d) in huge.iter().enumerate() {
        s.push(i).unwrap();
        assert_eq!(s.pop_timeout(*d), Ok(i));
    }
    if let Some(far) = Instant::now().checked_add(Duration::from_secs(100 * 365 * 24 * 3600)) {
        s.push(9).unwrap();
        assert_eq!(s.pop_deadline(far), Ok(9));
    }

    // Huge: with no value they wait (for ever) until a push arrives.
    thread::scope(|sc| {
        let s = &s;
        for d in huge {
            let c = sc.spawn(move || s.pop_timeout(d));
            wait_for_waiters(s, 1);
            thread::sleep(Duration::from_millis(5));
            assert!(!c.is_finished(), "pop_timeout({d:?}) gave up");
            s.push(77).unwrap();
            assert_eq!(join_scoped(c), Ok(77));
        }
    });

    // After close they report Closed instead.
    s.close();
    assert_eq!(s.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Closed));
    assert_eq!(s.pop_timeout(Duration::MAX), Err(PopTimeoutError::Closed));
    assert_eq!(s.pop_deadline(past()), Err(PopTimeoutError::Closed));
}

/// Spins (yielding now and then) until `flag` holds `value`; fails the test
/// after [`PATIENCE`].
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
    let s = DualStack::new();
    let go = AtomicUsize::new(0);
    let pushed = AtomicUsize::new(0);
    let (mut received, mut stored) = (0, 0);
    thread::scope(|sc| {
        sc.spawn(|| {
            let mut rng = Rng::new(7);
            for round in 0..ROUNDS {
                let delay = Duration::from_nanos(rng.below(200_000) as u64);
                spin_until(&go, round + 1);
                // Yield rather than spin, so the consumer's spin phase is not
                // starved on 2 cores (else the race would be one-sided).
                let t0 = Instant::now();
                while t0.elapsed() < delay {
                    thread::yield_now();
                }
                s.push(round).unwrap();
                pushed.store(round + 1, Ordering::Release);
            }
        });
        let mut rng = Rng::new(11);
        for round in 0..ROUNDS {
            let timeout = Duration::from_nanos(rng.below(50_000) as u64);
            go.store(round + 1, Ordering::Release);
            let got = s.pop_timeout(timeout);
            spin_until(&pushed, round + 1);
            match got {
                Ok(v) => {
                    assert_eq!(v, round);
                    assert_eq!(
                        s.try_pop(),
                        Err(TryPopError::Empty),
                        "round {round}: value duplicated"
                    );
                    received += 1;
                }
                Err(PopTimeoutError::Timeout) => {
                    assert_eq!(s.try_pop(), Ok(round), "round {round}: value lost");
                    stored += 1;
                }
                Err(PopTimeoutError::Closed) => panic!("round {round}: stack reported closed"),
            }
            assert_eq!(s.waiting_consumers(), 0);
        }
    });
    assert_eq!(received + stored, ROUNDS);
    eprintln!("timeout race: {received} received, {stored} left stored");
}

// A waiter whose deadline passes just as a producer fulfils it returns the value (and then it is not stored).
#[test]
fn timed_out_waiter_fulfilled_at_deadline_returns_value() {
    const ROUNDS: usize = if cfg!(miri) { 10 } else { 500 };
    let s = DualStack::new();
    let (tx, rx) = mpsc::channel::<Instant>();
    let end = Barrier::new(2);
    let mut late_ok = 0;
    thread::scope(|sc| {
        let (s, end) = (&s, &end);
        sc.spawn(move || {
            for round in 0..ROUNDS {
                let deadline = rx.recv().unwrap();
                while Instant::now() < deadline {
                    thread::yield_now();
                }
                s.push(round).unwrap();
                end.wait();
            }
        });
        for round in 0..ROUNDS {
            let deadline = Instant::now() + Duration::from_micros(300);
            tx.send(deadline).unwrap();
            let got = s.pop_deadline(deadline);
            end.wait();
            match got {
                Ok(v) => {
                    assert_eq!(v, round);
                    assert_eq!(
                        s.try_pop(),
                        Err(TryPopError::Empty),
                        "round {round}: value duplicated"
                    );
                    late_ok += 1;
                }
                Err(PopTimeoutError::Timeout) => {
                    assert_eq!(s.try_pop(), Ok(round), "round {round}: value lost");
                }
                Err(PopTimeoutError::Closed) => panic!("round {round}: stack reported closed"),
            }
        }
    });
    eprintln!("fulfilled at/after the deadline and returned: {late_ok} of {ROUNDS}");
    if !cfg!(miri) {
        assert!(
            late_ok > 0,
            "no round delivered a value to a waiter past its deadline"
        );
    }
}

// Thousands of timeouts on top of a permanent waiter: it stays the only waiter and gets the next value.
#[test]
fn timeouts_over_permanent_waiter() {
    const WAITS: usize = if cfg!(miri) { 10 } else { 2_000 };
    let s = DualStack::new();
    thread::scope(|sc| {
        let permanent = sc.spawn(|| s.pop());
        wait_for_waiters(&s, 1);
        let timers: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    for _ in 0..WAITS / 4 {
                        assert_eq!(
                            s.pop_timeout(Duration::from_micros(1)),
                            Err(PopTimeoutError::Timeout)
                        );
                    }
                })
            })
            .collect();
        for t in timers {
            join_scoped(t);
        }
        assert_eq!(s.waiting_consumers(), 1);
        s.push(5).unwrap();
        assert_eq!(join_scoped(permanent), Ok(5));
    });
    assert_eq!(s.waiting_consumers(), 0);
    assert!(s.is_empty());
}

// ---------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------

// close() wakes every blocked consumer, of every flavour, with Err.
#[test]
fn close_wakes_waiters() {
    let s = DualStack::<u32>::new();
    let far = Duration::from_secs(3600);
    thread::scope(|sc| {
        let mut pops = Vec::new();
        let mut timed = Vec::new();
        for i in 0..8 {
            match i % 4 {
                0 => pops.push(sc.spawn(|| s.pop())),
                1 => timed.push(sc.spawn(|| s.pop_timeout(far))),
                2 => timed.push(sc.spawn(|| s.pop_deadline(Instant::now() + far))),
                _ => timed.push(sc.spawn(|| s.pop_timeout(Duration::MAX))),
            }
            wait_for_waiters(&s, i + 1);
        }
        assert!(s.close());
        for h in pops {
            assert_eq!(join_scoped(h), Err(PopError));
        }
        for h in timed {
            assert_eq!(join_scoped(h), Err(PopTimeoutError::Closed));
        }
    });
    assert_eq!(s.waiting_consumers(), 0);
    assert!(s.is_closed());
}

// Oversubscribed: 40 blocked consumers all wake with Err when the stack closes.
#[test]
fn close_wakes_many_waiters() {
    const WAITERS: usize = if cfg!(miri) { 4 } else { 40 };
    let s = DualStack::<u32>::new();
    thread::scope(|sc| {
        let handles: Vec<_> = (0..WAITERS).map(|_| sc.spawn(|| s.pop())).collect();
        wait_for_waiters(&s, WAITERS);
        assert!(s.close());
        for h in handles {
            assert_eq!(join_scoped(h), Err(PopError));
        }
    });
}

// Consumers starting to wait while close() runs all return (none is left blocked).
#[test]
fn close_racing_new_waiters() {
    const ROUNDS: usize = if cfg!(miri) { 5 } else { 300 };
    for _ in 0..ROUNDS {
        let s = Arc::new(DualStack::<u32>::new());
        let go = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (s, go) = (Arc::clone(&s), Arc::clone(&go));
                thread::spawn(move || {
                    go.wait();
                    match i {
                        0 => s.pop().is_err(),
                        1 => {
                            s.pop_timeout(Duration::from_secs(3600)) == Err(PopTimeoutError::Closed)
                        }
                        _ => s.pop_timeout(Duration::from_micros(5)).is_err(),
                    }
                })
            })
            .collect();
        go.wait();
        s.close();
        for h in handles {
            assert!(
                join(h),
                "a consumer got a value from a stack nobody pushed to"
            );
        }
        assert_eq!(s.waiting_consumers(), 0);
    }
}

// A push racing close() while a consumer waits: the value is delivered, stored, or handed back — exactly one.
#[test]
fn close_racing_push_to_waiter() {
    const ROUNDS: usize = if cfg!(miri) { 5 } else { 500 };
    for round in 0..ROUNDS {
        let s = DualStack::new();
        let go = Barrier::new(2);
        let (popped, pushed) = thread::scope(|sc| {
            let c = sc.spawn(|| s.pop());
            wait_for_waiters(&s, 1);
            let p = sc.spawn(|| {
                go.wait();
                s.push(round)
            });
            go.wait();
            s.close();
            (join_scoped(c), join_scoped(p))
        });
        let stored = s.try_pop().ok();
        assert_eq!(s.try_pop(), Err(TryPopError::Closed));
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

// Values pushed before close() are still popped (newest first, by every flavour) after it; then each flavour reports closed.
#[test]
fn drain_after_close() {
    let s = DualStack::new();
    for i in 0..8 {
        s.push(i).unwrap();
    }
    assert!(s.close());
    assert!(s.is_closed());
    assert_eq!(s.len(), 8);
    assert_eq!(s.pop(), Ok(7));
    assert_eq!(s.try_pop(), Ok(6));
    assert_eq!(s.pop_timeout(Duration::ZERO), Ok(5));
    assert_eq!(s.pop_timeout(Duration::MAX), Ok(4));
    assert_eq!(s.pop_deadline(past()), Ok(3));
    assert_eq!(s.pop_timeout(Duration::from_secs(1)), Ok(2));
    assert_eq!(s.pop(), Ok(1));
    assert_eq!(s.pop(), Ok(0));
    assert!(s.is_empty());

    assert_eq!(s.pop(), Err(PopError));
    assert_eq!(s.try_pop(), Err(TryPopError::Closed));
    assert_eq!(s.pop_timeout(Duration::ZERO), Err(PopTimeoutError::Closed));
    assert_eq!(
        s.pop_timeout(Duration::from_secs(3600)),
        Err(PopTimeoutError::Closed)
    );
    assert_eq!(s.pop_deadline(past()), Err(PopTimeoutError::Closed));
    assert_eq!(s.waiting_consumers(), 0);
}

// Concurrent consumers drain a closed stack: every stored value popped once, then all see closed.
#[test]
fn concurrent_drain_after_close() {
    let n = COUNT / 10;
    let s = DualStack::new();
    for i in 0..n {
        s.push(i).unwrap();
    }
    s.close();
    let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    thread::scope(|sc| {
        for _ in 0..THREADS {
            sc.spawn(|| {
                let mut last = usize::MAX;
                while let Ok(v) = s.pop() {
                    // Nothing is pushed any more: each consumer sees a
                    // decreasing sequence.
                    assert!(v < last, "popped {v} after {last}");
                    last = v;
                    seen[v].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    assert_eq!(s.pop(), Err(PopError));
}

// push after close() fails with the value; close() is idempotent and reports who closed.
#[test]
fn push_after_close_returns_value() {
    let s = DualStack::new();
    s.push(1).unwrap();
    assert!(s.close());
    assert!(!s.close(), "second close claims to have closed");
    assert!(s.is_closed());
    assert_eq!(s.push(2), Err(PushError(2)));
    assert_eq!(s.push(3).unwrap_err().into_inner(), 3);
    assert_eq!(s.len(), 1, "a rejected push stored its value");
    assert_eq!(s.pop(), Ok(1));
    assert_eq!(s.push(4), Err(PushError(4)));
    assert_eq!(s.try_pop(), Err(TryPopError::Closed));
}

// Exactly one of several concurrent close() calls reports that it closed the stack.
#[test]
fn concurrent_close_exactly_one_wins() {
    const ROUNDS: usize = if cfg!(miri) { 5 } else { 200 };
    for _ in 0..ROUNDS {
        let s = DualStack::<u8>::new();
        let wins = AtomicUsize::new(0);
        thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    if s.close() {
                        wins.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::Relaxed), 1);
        assert!(s.is_closed());
        assert_eq!(s.push(1), Err(PushError(1)));
    }
}
