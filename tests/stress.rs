//! Oversubscribed stress of both structures: many more threads than cores
//! mixing every operation (on the stack, fulfilling nodes are pushed, helped
//! and popped all the time; on both, reservations time out under pushes),
//! with a close racing the tail end, checked by conservation of values.
//! Each test runs as `queue::name` and `stack::name`.
//!
//! The small versions always run (a few seconds on 2 cores). The large ones
//! are ignored by default; run them with
//! `cargo test --release --test stress -- --ignored`.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{join_all_within, Dual, Flavour, Rng, Structure};

use dualq::{PopError, PopTimeoutError, PushError, TryPopError};

#[derive(Clone, Copy)]
struct Config {
    producers: usize,
    consumers: usize,
    per_producer: usize,
    /// Out of 100: how often a consumer pushes a value it got back in
    /// (instead of keeping it), so consumers push too and some of those
    /// pushes race the close.
    repush_percent: usize,
}

/// Where each value ended up. Every value must end up in exactly one place.
#[derive(Default)]
struct Tally {
    count: AtomicUsize,
    sum: AtomicUsize,
}

impl Tally {
    fn add(&self, v: usize) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }
    fn get(&self) -> (usize, usize) {
        (
            self.count.load(Ordering::Relaxed),
            self.sum.load(Ordering::Relaxed),
        )
    }
}

/// What the threads of one [`stress`] run share.
struct Shared<S> {
    q: S,
    /// How many times each value has come out for good (must end at 1).
    fate: Vec<AtomicU8>,
    kept: Tally,
    rejected: Tally,
    drained: Tally,
    pushed_ok: AtomicUsize,
    timeouts: AtomicUsize,
}

impl<S> Shared<S> {
    fn settle(&self, v: usize, tally: &Tally) {
        let prev = self.fate[v].fetch_add(1, Ordering::Relaxed);
        assert_eq!(prev, 0, "value {v} came out twice");
        tally.add(v);
    }
}

/// How long consumers get to return once the structure is closed (runnable
/// threads need milliseconds; this is generous for 2 oversubscribed cores).
const PATIENCE: Duration = Duration::from_secs(30);

/// Producers push unique values; consumers take them with a random mix of
/// pop, pop_timeout (tiny to long timeouts), pop_deadline and try_pop and
/// sometimes push them back. When 90% of the values are in, the structure
/// is closed while producers and consumers are still busy (a producer stops at
/// its first rejected push); the rest is drained. Then: every consumer
/// returned (close woke every waiter), and every value created was kept by a
/// consumer, handed back by a failed push, or drained, exactly once, with
/// counts and sums adding up.
fn stress<F: Flavour>(cfg: Config) {
    let total = cfg.producers * cfg.per_producer;
    let sh = Arc::new(Shared {
        q: F::new::<usize>(),
        fate: (0..total).map(|_| AtomicU8::new(0)).collect(),
        kept: Tally::default(),
        rejected: Tally::default(),
        drained: Tally::default(),
        pushed_ok: AtomicUsize::new(0),
        timeouts: AtomicUsize::new(0),
    });

    // Plain (not scoped) threads, so that a consumer stuck for ever fails
    // the test instead of hanging it.
    let consumers: Vec<_> = (0..cfg.consumers)
        .map(|c| {
            let sh = Arc::clone(&sh);
            thread::spawn(move || {
                let q = &sh.q;
                let mut rng = Rng::new(1000 + c as u64);
                loop {
                    let got = match rng.below(10) {
                        0..=3 => q.pop().map_err(|PopError| true),
                        4..=5 => q
                            .pop_timeout(Duration::from_nanos(rng.below(20_000) as u64))
                            .map_err(|e| e.is_closed()),
                        6 => q
                            .pop_timeout(Duration::from_millis(rng.below(20) as u64))
                            .map_err(|e| e.is_closed()),
                        7 => q.pop_timeout(Duration::ZERO).map_err(|e| e.is_closed()),
                        8 => {
                            let deadline =
                                Instant::now() + Duration::from_micros(rng.below(500) as u64);
                            q.pop_deadline(deadline)
                                .map_err(|e| e == PopTimeoutError::Closed)
                        }
                        _ => q.try_pop().map_err(|e| e == TryPopError::Closed),
                    };
                    match got {
                        Ok(v) => {
                            if rng.below(100) < cfg.repush_percent {
                                match q.push(v) {
                                    Ok(()) => {}
                                    Err(PushError(v)) => sh.settle(v, &sh.rejected),
                                }
                            } else {
                                sh.settle(v, &sh.kept);
                            }
                        }
                        Err(true) => break, // closed and empty
                        Err(false) => {
                            sh.timeouts.fetch_add(1, Ordering::Relaxed);
                            thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();

    let producers: Vec<_> = (0..cfg.producers)
        .map(|p| {
            let sh = Arc::clone(&sh);
            thread::spawn(move || {
                let mut rng = Rng::new(p as u64);
                // Returns how many values this producer created.
                for i in 0..cfg.per_producer {
                    match sh.q.push(p * cfg.per_producer + i) {
                        Ok(()) => {
                            sh.pushed_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(PushError(v)) => {
                            assert_eq!(v, p * cfg.per_producer + i, "handed back the wrong value");
                            sh.settle(v, &sh.rejected);
                            return i + 1;
                        }
                    }
                    if rng.below(64) == 0 {
                        thread::yield_now();
                    }
                }
                cfg.per_producer
            })
        })
        .collect();
    // Close while producers may still push and consumers pop and re-push.
    let start = Instant::now();
    while sh.pushed_ok.load(Ordering::Relaxed) < total * 9 / 10 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "producers stalled"
        );
        thread::sleep(Duration::from_micros(100));
    }
    assert!(sh.q.close());
    // push never blocks, so the producers finish however slowly they run.
    let created: Vec<usize> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    join_all_within(
        consumers,
        PATIENCE,
        "consumers still blocked after close (close did not wake them: was a waiting reservation lost?)",
    );

    let q = &sh.q;
    assert_eq!(q.waiting_consumers(), 0);
    while let Ok(v) = q.try_pop() {
        sh.settle(v, &sh.drained);
    }
    assert_eq!(q.try_pop(), Err(TryPopError::Closed));
    assert_eq!(q.pop(), Err(PopError));

    // Exactly the created values came out, each once.
    let (mut count, mut sum) = (0, 0);
    for (p, &n) in created.iter().enumerate() {
        for i in 0..cfg.per_producer {
            let v = p * cfg.per_producer + i;
            let expected = u8::from(i < n);
            assert_eq!(
                sh.fate[v].load(Ordering::Relaxed),
                expected,
                "value {v} lost or invented"
            );
            if i < n {
                count += 1;
                sum += v;
            }
        }
    }
    assert!(sh.pushed_ok.load(Ordering::Relaxed) >= total * 9 / 10);
    let (kc, ks) = sh.kept.get();
    let (rc, rs) = sh.rejected.get();
    let (dc, ds) = sh.drained.get();
    assert_eq!(kc + rc + dc, count, "count not conserved");
    assert_eq!(ks + rs + ds, sum, "sum not conserved");
    eprintln!(
        "stress {}x{}x{}: {count} created, kept {kc}, handed back {rc}, drained {dc}, {} timeouts",
        cfg.producers,
        cfg.consumers,
        cfg.per_producer,
        sh.timeouts.load(Ordering::Relaxed)
    );
}

/// Threads doing nothing but timed-out waits, interleaved with a slow trickle
/// of pushes and permanent waiters in front: cancelled reservations pile up
/// behind live ones and must be skipped and unlinked without losing a value
/// or a waiter.
fn timeout_storm<F: Flavour>(permanent: usize, waiters: usize, values: usize) {
    let q = Arc::new(F::new::<usize>());
    let got: Arc<Vec<AtomicU8>> = Arc::new((0..values).map(|_| AtomicU8::new(0)).collect());
    let received = Arc::new(AtomicUsize::new(0));
    let take = {
        let (got, received) = (Arc::clone(&got), Arc::clone(&received));
        move |v: usize| {
            assert_eq!(got[v].fetch_add(1, Ordering::Relaxed), 0, "value {v} twice");
            received.fetch_add(1, Ordering::Relaxed);
        }
    };
    // Permanent waiters: they take values as they come, and stop at the close.
    let mut handles: Vec<_> = (0..permanent)
        .map(|_| {
            let (q, take) = (Arc::clone(&q), take.clone());
            thread::spawn(move || {
                while let Ok(v) = q.pop() {
                    take(v);
                }
            })
        })
        .collect();
    handles.extend((0..waiters).map(|w| {
        let (q, take) = (Arc::clone(&q), take.clone());
        thread::spawn(move || {
            let mut rng = Rng::new(w as u64 + 77);
            loop {
                match q.pop_timeout(Duration::from_nanos(rng.below(50_000) as u64)) {
                    Ok(v) => take(v),
                    Err(PopTimeoutError::Timeout) => {}
                    Err(PopTimeoutError::Closed) => break,
                }
            }
        })
    }));
    let mut rng = Rng::new(5);
    for v in 0..values {
        q.push(v).unwrap();
        if rng.below(8) == 0 {
            thread::sleep(Duration::from_micros(rng.below(100) as u64));
        }
    }
    // Wait until every value has been taken, then release everybody.
    let start = Instant::now();
    while received.load(Ordering::Relaxed) < values {
        assert!(start.elapsed() < PATIENCE, "values stuck in the structure");
        thread::sleep(Duration::from_millis(1));
    }
    q.close();
    join_all_within(
        handles,
        PATIENCE,
        "consumers still blocked after close (a waiting reservation was lost?)",
    );
    assert!(got.iter().all(|g| g.load(Ordering::Relaxed) == 1));
    assert_eq!(q.try_pop(), Err(TryPopError::Closed));
}

dual_tests! {
    stress_small,
    stress_small_circulating,
    stress_small_unbalanced,
    timeout_storm_small,
    #[ignore = "long; run with: cargo test --release --test stress -- --ignored"]
    stress_large,
    #[ignore = "long; run with: cargo test --release --test stress -- --ignored"]
    timeout_storm_large,
    no_waiter_lost_under_timeout_churn,
}

// 48 threads on 2 cores mixing every op, close racing re-pushes: every value accounted for exactly once.
fn stress_small<F: Flavour>() {
    let per_producer = if cfg!(miri) { 20 } else { 5_000 };
    stress::<F>(Config {
        producers: 24,
        consumers: 24,
        per_producer,
        repush_percent: 10,
    });
}

// Values circulate (consumers push 90% of what they get back) so the close races many re-pushes:
// some values are handed back by failed pushes, some drained, none lost.
fn stress_small_circulating<F: Flavour>() {
    let per_producer = if cfg!(miri) { 20 } else { 2_000 };
    stress::<F>(Config {
        producers: 16,
        consumers: 32,
        per_producer,
        repush_percent: 90,
    });
}

// Few producers, many consumers (most time spent waiting and timing out), and the reverse.
fn stress_small_unbalanced<F: Flavour>() {
    let per_producer = if cfg!(miri) { 20 } else { 5_000 };
    stress::<F>(Config {
        producers: 4,
        consumers: 40,
        per_producer,
        repush_percent: 5,
    });
    stress::<F>(Config {
        producers: 40,
        consumers: 4,
        per_producer: per_producer / 10,
        repush_percent: 5,
    });
}

// 32 threads timing out constantly next to permanent waiters while values trickle in: none lost or doubled.
fn timeout_storm_small<F: Flavour>() {
    timeout_storm::<F>(2, 32, if cfg!(miri) { 20 } else { 3_000 });
}

// Large version of stress_small.
fn stress_large<F: Flavour>() {
    stress::<F>(Config {
        producers: 32,
        consumers: 32,
        per_producer: 100_000,
        repush_percent: 10,
    });
    stress::<F>(Config {
        producers: 4,
        consumers: 60,
        per_producer: 200_000,
        repush_percent: 5,
    });
    stress::<F>(Config {
        producers: 60,
        consumers: 4,
        per_producer: 20_000,
        repush_percent: 5,
    });
}

// Large version of timeout_storm_small.
fn timeout_storm_large<F: Flavour>() {
    timeout_storm::<F>(4, 64, 100_000);
}

// Rounds of 1 blocking waiter + 4 threads timing out + a pusher, then close: the blocking waiter
// must never drop out of the structure.
fn no_waiter_lost_under_timeout_churn<F: Flavour>() {
    // Shape that exposes a lost waiter quickly (it did, in the queue's first
    // sweep): one live reservation, cancelled ones next to it being unlinked
    // while pushes fulfil the live one. A lost waiter is never woken, not
    // even by close().
    let budget = Duration::from_secs(if cfg!(miri) { 0 } else { 2 });
    let start = Instant::now();
    let mut rounds = 0;
    while rounds == 0 || start.elapsed() < budget {
        timeout_storm::<F>(1, 4, if cfg!(miri) { 20 } else { 500 });
        rounds += 1;
    }
    eprintln!("{rounds} rounds without losing a waiter");
}
