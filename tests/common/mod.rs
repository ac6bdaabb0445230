//! Helpers shared by the integration tests.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dualq::DualQueue;

/// How long a test waits for another thread to reach a state before it
/// declares the test hung. Generous: these machines have two cores and the
/// tests of one binary run in parallel.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A structure whose waiting consumers can be counted (both dualq types).
pub trait Waiters {
    fn waiting(&self) -> usize;
}

impl<T> Waiters for dualq::DualQueue<T> {
    fn waiting(&self) -> usize {
        self.waiting_consumers()
    }
}

impl<T> Waiters for dualq::DualStack<T> {
    fn waiting(&self) -> usize {
        self.waiting_consumers()
    }
}

impl<W: Waiters + ?Sized> Waiters for std::sync::Arc<W> {
    fn waiting(&self) -> usize {
        (**self).waiting()
    }
}

/// Polls until exactly `n` consumers wait on `q`; panics after [`PATIENCE`].
pub fn wait_for_waiters(q: &impl Waiters, n: usize) {
    let start = Instant::now();
    loop {
        let now = q.waiting();
        if now == n {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "expected {n} waiting consumers, still see {now} after {PATIENCE:?}"
        );
        thread::yield_now();
        thread::sleep(Duration::from_micros(50));
    }
}

/// Per-value drop counters: `counts[id]` is how many times the value with
/// that id was dropped.
#[derive(Debug)]
pub struct DropLog {
    counts: Vec<AtomicUsize>,
}

impl DropLog {
    /// A log for ids `0..n`.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(DropLog {
            counts: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// How many times value `id` was dropped.
    pub fn count(&self, id: usize) -> usize {
        self.counts[id].load(Ordering::SeqCst)
    }

    /// Total drops over all ids.
    pub fn total(&self) -> usize {
        self.counts.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Asserts every id was dropped exactly once.
    pub fn assert_each_dropped_once(&self) {
        for (id, c) in self.counts.iter().enumerate() {
            let c = c.load(Ordering::SeqCst);
            assert_eq!(c, 1, "value {id} dropped {c} times");
        }
    }
}

/// A value that records its drop in a [`DropLog`]. Deliberately not `Clone`,
/// `Copy` or `Debug`: the queue must not need any of them.
pub struct Tracked {
    id: usize,
    log: Arc<DropLog>,
}

impl Tracked {
    pub fn new(id: usize, log: &Arc<DropLog>) -> Self {
        Tracked {
            id,
            log: Arc::clone(log),
        }
    }

    pub fn id(&self) -> usize {
        self.id
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let prev = self.log.counts[self.id].fetch_add(1, Ordering::SeqCst);
        // Not a panic (this may run during unwinding): record and let the
        // exactly-once assertion report it.
        if prev != 0 {
            eprintln!("value {} dropped {} times", self.id, prev + 1);
        }
    }
}

/// Joins every thread, failing the test (instead of hanging it) if any is
/// still running after `patience`; `what` describes the stuck threads. The
/// stuck threads are left behind (the test binary exits regardless).
pub fn join_all_within<T>(
    handles: Vec<thread::JoinHandle<T>>,
    patience: Duration,
    what: &str,
) -> Vec<T> {
    let start = Instant::now();
    loop {
        let running = handles.iter().filter(|h| !h.is_finished()).count();
        if running == 0 {
            break;
        }
        assert!(
            start.elapsed() < patience,
            "{running} of {} {what} after {patience:?}",
            handles.len()
        );
        thread::sleep(Duration::from_millis(1));
    }
    handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .collect()
}

/// Closes the queue if the current thread unwinds past it. Put one at the
/// top of a `thread::scope` whose threads may block in `pop`: a failed
/// assertion then wakes them, so the scope can end and the test fails
/// instead of hanging.
pub struct CloseOnUnwind<'a, T>(pub &'a DualQueue<T>);

impl<T> Drop for CloseOnUnwind<'_, T> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.close();
        }
    }
}
