//! Helpers shared by the integration tests.

// Each test binary uses a different subset of these helpers (memory.rs runs
// its scenarios in one #[test], without `dual_tests!`).
#![allow(dead_code, unused_macros)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dualq::{
    DualQueue, DualStack, PopError, PopFuture, PopTimeoutError, PushError, Reservation,
    TransferFuture, TransferTimeoutError, TryPopError, TryTransferError,
};

/// How long a test waits for another thread to reach a state before it
/// declares the test hung. Generous: these machines have two cores and the
/// tests of one binary run in parallel.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A test size, scaled down under Miri (which interprets every instruction,
/// some thousand times slower): `n / 100` there, at least 1; `n` elsewhere.
/// The one knob for sizes that have no `if cfg!(miri)` constant of their own.
pub const fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        if n >= 100 {
            n / 100
        } else {
            1
        }
    } else {
        n
    }
}

/// What both dualq structures have in common whatever their element type:
/// counting, closing. Implemented for `DualQueue`, `DualStack` and `Arc`s of
/// them, so the helpers below take either.
pub trait Structure: Send + Sync {
    fn waiting_consumers(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool;
    fn close(&self) -> bool;
    fn is_closed(&self) -> bool;
}

/// The whole public API of both structures, so that one test body runs
/// against each (see [`Flavour`]).
pub trait Dual<T>: Structure + Default + std::fmt::Debug {
    fn push(&self, value: T) -> Result<(), PushError<T>>;
    fn pop(&self) -> Result<T, PopError>;
    fn try_pop(&self) -> Result<T, TryPopError>;
    fn pop_timeout(&self, timeout: Duration) -> Result<T, PopTimeoutError>;
    fn pop_deadline(&self, deadline: Instant) -> Result<T, PopTimeoutError>;
    fn reserve(&self) -> Reservation<'_, T>;
    fn pop_async(&self) -> PopFuture<'_, T>;
    fn transfer(&self, value: T) -> Result<(), PushError<T>>;
    fn transfer_timeout(&self, value: T, timeout: Duration) -> Result<(), TransferTimeoutError<T>>;
    fn transfer_deadline(&self, value: T, deadline: Instant)
        -> Result<(), TransferTimeoutError<T>>;
    fn try_transfer(&self, value: T) -> Result<(), TryTransferError<T>>;
    fn waiting_producers(&self) -> usize;
    fn transfer_async(&self, value: T) -> TransferFuture<'_, T>;
}

macro_rules! forward_api {
    ($ty:ident) => {
        impl<T: Send> Structure for $ty<T> {
            fn waiting_consumers(&self) -> usize {
                $ty::waiting_consumers(self)
            }
            fn len(&self) -> usize {
                $ty::len(self)
            }
            fn is_empty(&self) -> bool {
                $ty::is_empty(self)
            }
            fn close(&self) -> bool {
                $ty::close(self)
            }
            fn is_closed(&self) -> bool {
                $ty::is_closed(self)
            }
        }

        impl<T: Send> Dual<T> for $ty<T> {
            fn push(&self, value: T) -> Result<(), PushError<T>> {
                $ty::push(self, value)
            }
            fn pop(&self) -> Result<T, PopError> {
                $ty::pop(self)
            }
            fn try_pop(&self) -> Result<T, TryPopError> {
                $ty::try_pop(self)
            }
            fn pop_timeout(&self, timeout: Duration) -> Result<T, PopTimeoutError> {
                $ty::pop_timeout(self, timeout)
            }
            fn pop_deadline(&self, deadline: Instant) -> Result<T, PopTimeoutError> {
                $ty::pop_deadline(self, deadline)
            }
            fn reserve(&self) -> Reservation<'_, T> {
                $ty::reserve(self)
            }
            fn pop_async(&self) -> PopFuture<'_, T> {
                $ty::pop_async(self)
            }
            fn transfer(&self, value: T) -> Result<(), PushError<T>> {
                $ty::transfer(self, value)
            }
            fn transfer_timeout(
                &self,
                value: T,
                timeout: Duration,
            ) -> Result<(), TransferTimeoutError<T>> {
                $ty::transfer_timeout(self, value, timeout)
            }
            fn transfer_deadline(
                &self,
                value: T,
                deadline: Instant,
            ) -> Result<(), TransferTimeoutError<T>> {
                $ty::transfer_deadline(self, value, deadline)
            }
            fn try_transfer(&self, value: T) -> Result<(), TryTransferError<T>> {
                $ty::try_transfer(self, value)
            }
            fn waiting_producers(&self) -> usize {
                $ty::waiting_producers(self)
            }
            fn transfer_async(&self, value: T) -> TransferFuture<'_, T> {
                $ty::transfer_async(self, value)
            }
        }
    };
}

forward_api!(DualQueue);
forward_api!(DualStack);

impl<W: Structure + ?Sized> Structure for Arc<W> {
    fn waiting_consumers(&self) -> usize {
        (**self).waiting_consumers()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
    fn close(&self) -> bool {
        (**self).close()
    }
    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }
}

/// The order a structure hands out its values and serves its waiting
/// consumers in: the one thing the shared tests expect differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// `DualQueue`: oldest value first, oldest waiter first.
    Fifo,
    /// `DualStack`: newest value first, newest waiter first.
    Lifo,
}

impl Order {
    /// `items`, given in arrival order, rearranged into the order the
    /// structure serves them: values stored one after another, or consumers
    /// that started waiting one after another.
    pub fn served<X>(self, mut items: Vec<X>) -> Vec<X> {
        if self == Order::Lifo {
            items.reverse();
        }
        items
    }
}

/// One of the two structures, generic over the element type, so a test body
/// written once (`fn body<F: Flavour>()`) runs against both.
pub trait Flavour: 'static {
    type Of<T: Send + 'static>: Dual<T> + 'static;
    const ORDER: Order;
    /// The type's name, as `Debug` prints it.
    const NAME: &'static str;

    fn new<T: Send + 'static>() -> Self::Of<T> {
        Self::Of::<T>::default()
    }
}

/// [`DualQueue`].
pub struct Queue;
/// [`DualStack`].
pub struct Stack;

impl Flavour for Queue {
    type Of<T: Send + 'static> = DualQueue<T>;
    const ORDER: Order = Order::Fifo;
    const NAME: &'static str = "DualQueue";
}

impl Flavour for Stack {
    type Of<T: Send + 'static> = DualStack<T>;
    const ORDER: Order = Order::Lifo;
    const NAME: &'static str = "DualStack";
}

/// Generates `mod queue` and `mod stack`, each with one `#[test]` per named
/// generic test body `fn name<F: Flavour>()` of the including file (which
/// declares `#[macro_use] mod common;`). Attributes
/// written before a name (`#[ignore]`, `#[cfg_attr(miri, ignore)]`) go on both.
macro_rules! dual_tests {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod queue {
            $( #[test] $(#[$attr])* fn $name() { super::$name::<crate::common::Queue>() } )*
        }
        mod stack {
            $( #[test] $(#[$attr])* fn $name() { super::$name::<crate::common::Stack>() } )*
        }
    };
}

/// Checks one consumer's pops against one producer that pushed `0, 1, 2, ...`
/// in that order, for either [`Order`].
///
/// FIFO: the pops are exactly `0, 1, 2, ...`. LIFO: each pop returns the
/// largest value stored at that moment; from the consumer's side that means a
/// value above the largest seen so far leaves everything between stored
/// ("pending"), and a value below it must be the largest pending one.
#[derive(Debug)]
pub struct PopCheck {
    order: Order,
    /// One past the largest value popped so far.
    next_new: usize,
    /// LIFO: values skipped over and still stored, as half-open ranges, increasing.
    pending: Vec<(usize, usize)>,
}

impl PopCheck {
    pub fn new(order: Order) -> Self {
        PopCheck {
            order,
            next_new: 0,
            pending: Vec::new(),
        }
    }

    pub fn popped(&mut self, v: usize) {
        if self.order == Order::Fifo {
            assert_eq!(v, self.next_new, "popped out of FIFO order");
            self.next_new += 1;
        } else if v >= self.next_new {
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
    pub fn finish(&self, count: usize) {
        assert!(self.pending.is_empty(), "never popped: {:?}", self.pending);
        assert_eq!(self.next_new, count, "values never popped");
    }
}

/// A small deterministic PRNG (xorshift64*), so the tests need no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Polls `cond` until it holds; fails the test after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::sleep(Duration::from_micros(50));
    }
}

/// Joins a thread, failing the test (instead of hanging it) if it has not
/// finished after [`PATIENCE`].
pub fn join<T>(handle: thread::JoinHandle<T>) -> T {
    wait_until("a thread to finish", || handle.is_finished());
    handle.join().expect("thread panicked")
}

/// [`join`] for a scoped thread.
pub fn join_scoped<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    wait_until("a thread to finish", || handle.is_finished());
    handle.join().expect("thread panicked")
}

/// Spins (yielding now and then) until `flag` holds `value`; fails the test
/// after [`PATIENCE`]. Used instead of a `Barrier` where both threads must
/// start at nearly the same instant (a parked thread wakes far too late).
pub fn spin_until(flag: &AtomicUsize, value: usize) {
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

/// An instant well in the past (or now, if the clock cannot go that far back).
pub fn past() -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
}

/// Polls until exactly `n` consumers wait on `q`; panics after [`PATIENCE`].
pub fn wait_for_waiters(q: &impl Structure, n: usize) {
    let start = Instant::now();
    loop {
        let now = q.waiting_consumers();
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

/// Closes the structure if the current thread unwinds past it. Put one at the
/// top of a `thread::scope` whose threads may block in `pop`: a failed
/// assertion then wakes them, so the scope can end and the test fails
/// instead of hanging.
pub struct CloseOnUnwind<'a, S: Structure + ?Sized>(pub &'a S);

impl<S: Structure + ?Sized> Drop for CloseOnUnwind<'_, S> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.close();
        }
    }
}

/// A waker that counts its wake-ups and unparks the thread that made it.
#[derive(Debug)]
pub struct CountingWaker {
    wakes: AtomicUsize,
    thread: thread::Thread,
}

impl CountingWaker {
    /// A waker for the current thread, and its counter.
    pub fn new() -> (std::task::Waker, Arc<CountingWaker>) {
        let count = Arc::new(CountingWaker {
            wakes: AtomicUsize::new(0),
            thread: thread::current(),
        });
        (std::task::Waker::from(Arc::clone(&count)), count)
    }

    pub fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `future` once with `waker`.
pub fn poll_once<F: std::future::Future + Unpin>(
    future: &mut F,
    waker: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut std::task::Context::from_waker(waker))
}

/// The minimal executor: polls `future` on this thread, parking between
/// polls until its waker is woken. Fails the test after [`PATIENCE`] without
/// progress (a lost wake-up would otherwise hang it).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let (waker, count) = CountingWaker::new();
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        let seen = count.wakes();
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        let start = Instant::now();
        while count.wakes() == seen {
            assert!(
                start.elapsed() < PATIENCE,
                "a pending future was never woken"
            );
            thread::park_timeout(PATIENCE);
        }
    }
}
