//! The workloads of BENCHMARKS.md, written once and shared by
//! `benches/handoff.rs` (criterion) and `examples/race.rs` (a quick table).
//!
//! Every run checks what it received against what was sent and panics on a
//! mismatch, so a fast wrong answer cannot pass as a fast right one.
//!
//! Timing starts when every thread has been spawned and has reached a barrier,
//! and ends when the last one has been joined, so thread creation is not
//! measured (thread exit is, equally for every structure).

// Each including target uses a different subset of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dualq::{DualQueue, DualStack};

/// One structure under test, seen as a channel: producers hold `Tx`,
/// consumers hold `Rx`. Shared structures use an `Arc` for both.
pub trait Queue: 'static {
    const NAME: &'static str;
    /// Whether `Rx` may be shared by several consumers (false for std mpsc).
    const MULTI_CONSUMER: bool;
    type Tx: Clone + Send + 'static;
    type Rx: Send + 'static;

    fn channel() -> (Self::Tx, Self::Rx);
    fn send(tx: &Self::Tx, value: u64);
    /// Blocking receive; `None` once the structure is closed and drained.
    fn recv(rx: &Self::Rx) -> Option<u64>;
    /// Only called when `MULTI_CONSUMER` is true.
    fn clone_rx(rx: &Self::Rx) -> Self::Rx;
    /// Ends the stream. Called with the last sender handle once every other
    /// sender is gone, so channels disconnect by dropping it.
    fn close(tx: Self::Tx);
}

/// A dualq structure seen as a channel: both handles are the same `Arc`, and
/// the stream ends with `close()` (a shared structure does not notice its
/// handles going away). One macro for both, so they are measured alike.
macro_rules! dualq_contender {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $label:literal) => {
        dualq_contender!($(#[$doc])* $name, $ty, $label, push);
    };
    ($(#[$doc:meta])* $name:ident, $ty:ident, $label:literal, $send:ident) => {
        $(#[$doc])*
        pub struct $name;

        impl Queue for $name {
            const NAME: &'static str = $label;
            const MULTI_CONSUMER: bool = true;
            type Tx = Arc<$ty<u64>>;
            type Rx = Arc<$ty<u64>>;

            fn channel() -> (Self::Tx, Self::Rx) {
                let s = Arc::new($ty::new());
                (Arc::clone(&s), s)
            }
            fn send(tx: &Self::Tx, value: u64) {
                tx.$send(value).expect("send on an open structure");
            }
            fn recv(rx: &Self::Rx) -> Option<u64> {
                rx.pop().ok()
            }
            fn clone_rx(rx: &Self::Rx) -> Self::Rx {
                Arc::clone(rx)
            }
            fn close(tx: Self::Tx) {
                tx.close();
            }
        }
    };
}

dualq_contender!(
    /// The dual queue: FIFO values, oldest waiter first.
    Dual, DualQueue, "dualq"
);
dualq_contender!(
    /// The dual stack: LIFO values, newest waiter first. Runs every workload
    /// (the sums do not care about order); its home ground is the pool.
    DualStackQ, DualStack, "dualq-stack"
);

pub struct Crossbeam;

impl Queue for Crossbeam {
    const NAME: &'static str = "crossbeam";
    const MULTI_CONSUMER: bool = true;
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;

    fn channel() -> (Self::Tx, Self::Rx) {
        crossbeam_channel::unbounded()
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).expect("send on a connected channel");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
    fn close(tx: Self::Tx) {
        drop(tx);
    }
}

pub struct Flume;

impl Queue for Flume {
    const NAME: &'static str = "flume";
    const MULTI_CONSUMER: bool = true;
    type Tx = flume::Sender<u64>;
    type Rx = flume::Receiver<u64>;

    fn channel() -> (Self::Tx, Self::Rx) {
        flume::unbounded()
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).expect("send on a connected channel");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
    fn close(tx: Self::Tx) {
        drop(tx);
    }
}

pub struct Kanal;

impl Queue for Kanal {
    const NAME: &'static str = "kanal";
    const MULTI_CONSUMER: bool = true;
    type Tx = kanal::Sender<u64>;
    type Rx = kanal::Receiver<u64>;

    fn channel() -> (Self::Tx, Self::Rx) {
        kanal::unbounded()
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).expect("send on a connected channel");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
    fn close(tx: Self::Tx) {
        drop(tx);
    }
}

pub struct StdMpsc;

impl Queue for StdMpsc {
    const NAME: &'static str = "std-mpsc";
    const MULTI_CONSUMER: bool = false;
    type Tx = mpsc::Sender<u64>;
    type Rx = mpsc::Receiver<u64>;

    fn channel() -> (Self::Tx, Self::Rx) {
        mpsc::channel()
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.send(value).expect("send on a connected channel");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn clone_rx(_: &Self::Rx) -> Self::Rx {
        unreachable!("std mpsc has a single consumer; MULTI_CONSUMER is false")
    }
    fn close(tx: Self::Tx) {
        drop(tx);
    }
}

/// The obvious blocking queue: a `VecDeque` behind a mutex, a condition
/// variable for waiting consumers, and a flag for closing.
#[derive(Default)]
pub struct LockedQueue {
    state: Mutex<LockedState>,
    not_empty: Condvar,
}

#[derive(Default)]
struct LockedState {
    values: VecDeque<u64>,
    closed: bool,
}

impl LockedQueue {
    pub fn push(&self, value: u64) {
        self.state.lock().unwrap().values.push_back(value);
        // Notify after unlocking so the woken consumer does not block on the
        // mutex we still hold.
        self.not_empty.notify_one();
    }

    pub fn pop(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(value) = state.values.pop_front() {
                return Some(value);
            }
            if state.closed {
                return None;
            }
            state = self.not_empty.wait(state).unwrap();
        }
    }

    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.not_empty.notify_all();
    }
}

pub struct MutexCondvar;

impl Queue for MutexCondvar {
    const NAME: &'static str = "mutex+condvar";
    const MULTI_CONSUMER: bool = true;
    type Tx = Arc<LockedQueue>;
    type Rx = Arc<LockedQueue>;

    fn channel() -> (Self::Tx, Self::Rx) {
        let q = Arc::new(LockedQueue::default());
        (Arc::clone(&q), q)
    }
    fn send(tx: &Self::Tx, value: u64) {
        tx.push(value);
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.pop()
    }
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        Arc::clone(rx)
    }
    fn close(tx: Self::Tx) {
        tx.close();
    }
}

/// Not a peer: the floor of a handoff on this machine, for issue 5's
/// "pingpong within 1.5x of the spin floor". One `u64` slot per structure,
/// alone on its cache line; the receiver spins on it (`spin_loop` only: no
/// yield, no park) and empties it, the sender spins until it is empty and
/// fills it. A round trip is then two transfers of each slot's line
/// between the cores and nothing else, the least any handoff can cost.
/// It holds one value, so only the pingpong (one value in flight) runs on
/// it (`spin_floor`). A side that has spun [`SpinSlot::PATIENCE`] times
/// yields once, so a machine with one free core still finishes the run.
pub struct SpinFloor;

/// The slot of [`SpinFloor`]: `EMPTY`, or the value in flight.
pub struct SpinSlot {
    value: crossbeam_utils::CachePadded<AtomicU64>,
    closed: AtomicBool,
}

impl SpinSlot {
    const EMPTY: u64 = u64::MAX;
    /// Spins between yields: far more than a handoff takes when both
    /// sides run (a few hundred ns), so the floor is pure spinning then.
    const PATIENCE: u32 = 1 << 14;

    fn spin(spins: &mut u32) {
        *spins += 1;
        if *spins % Self::PATIENCE == 0 {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

impl Queue for SpinFloor {
    const NAME: &'static str = "spin-floor";
    const MULTI_CONSUMER: bool = false;
    type Tx = Arc<SpinSlot>;
    type Rx = Arc<SpinSlot>;

    fn channel() -> (Self::Tx, Self::Rx) {
        let slot = Arc::new(SpinSlot {
            value: crossbeam_utils::CachePadded::new(AtomicU64::new(SpinSlot::EMPTY)),
            closed: AtomicBool::new(false),
        });
        (Arc::clone(&slot), slot)
    }
    fn send(tx: &Self::Tx, value: u64) {
        assert_ne!(value, SpinSlot::EMPTY, "spin-floor: reserved value");
        let mut spins = 0;
        // Release: pairs with the receiver's Acquire swap (the value is
        // the whole message); Relaxed on failure: we only retry.
        while tx
            .value
            .compare_exchange_weak(SpinSlot::EMPTY, value, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            SpinSlot::spin(&mut spins);
        }
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        let mut spins = 0;
        loop {
            // Polls with the swap itself, not a load first: a load would
            // add a step (the line shared, then taken exclusive) when the
            // value arrives (floor 83-118 ns against 58-71 in alternating
            // runs). Acquire: pairs with the sender's Release CAS.
            let value = rx.value.swap(SpinSlot::EMPTY, Ordering::Acquire);
            if value != SpinSlot::EMPTY {
                return Some(value);
            }
            // Acquire: pairs with `close`'s Release store; a value sent
            // before the close is seen by the swap after this load.
            if rx.closed.load(Ordering::Acquire) {
                let value = rx.value.swap(SpinSlot::EMPTY, Ordering::Acquire);
                return (value != SpinSlot::EMPTY).then_some(value);
            }
            SpinSlot::spin(&mut spins);
        }
    }
    fn clone_rx(_: &Self::Rx) -> Self::Rx {
        unreachable!("spin-floor is single-consumer")
    }
    fn close(tx: Self::Tx) {
        // Release: pairs with the Acquire load of `closed` in `recv`.
        tx.closed.store(true, Ordering::Release);
    }
}

/// A workload of BENCHMARKS.md, with its thread counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `producers` push values 1..=n between them; `consumers` pop until the
    /// structure is closed. Covers spsc, mpsc, mpmc and fanout.
    Flow { producers: usize, consumers: usize },
    /// Two threads, two structures; each side pops then pushes. One op is a
    /// round trip.
    PingPong,
    /// `threads` threads share `tokens` tokens in one structure; one op is a
    /// pop of a token and a push of it back.
    Pool { threads: usize, tokens: usize },
}

impl Workload {
    pub fn name(&self) -> String {
        match *self {
            Workload::Flow {
                producers: 1,
                consumers: 1,
            } => "spsc".into(),
            Workload::Flow {
                producers: 1,
                consumers,
            } => format!("fanout-1x{consumers}"),
            Workload::Flow {
                producers,
                consumers: 1,
            } => format!("mpsc-{producers}x1"),
            Workload::Flow {
                producers,
                consumers,
            } => format!("mpmc-{producers}x{consumers}"),
            Workload::PingPong => "pingpong".into(),
            Workload::Pool { threads, tokens } => format!("pool-{threads}t-{tokens}obj"),
        }
    }

    /// Ops per run in BENCHMARKS.md (values, round trips, or pop+push pairs
    /// over all threads).
    pub fn full_ops(&self) -> u64 {
        match *self {
            Workload::Flow {
                producers: 1,
                consumers,
            } if consumers > 1 => 400_000,
            Workload::Flow { .. } => 1_000_000,
            Workload::PingPong => 100_000,
            Workload::Pool { threads, .. } => 50_000 * threads as u64,
        }
    }

    /// What one op is, for table headers.
    pub fn unit(&self) -> &'static str {
        match self {
            Workload::Flow { .. } => "ns/msg",
            Workload::PingPong => "ns/round trip",
            Workload::Pool { .. } => "ns/(pop+push)",
        }
    }

    fn needs_multi_consumer(&self) -> bool {
        match *self {
            Workload::Flow { consumers, .. } => consumers > 1,
            Workload::PingPong => false,
            // The pool threads and the final drain each hold a receiver.
            Workload::Pool { .. } => true,
        }
    }

    /// Whether `Q` can run this workload at all.
    pub fn supports<Q: Queue>(&self) -> bool {
        Q::MULTI_CONSUMER || !self.needs_multi_consumer()
    }

    /// Runs `ops` ops of this workload on `Q`, checks the result, and returns
    /// the measured time. Panics if the result is wrong or `Q` does not
    /// support the workload.
    pub fn run<Q: Queue>(&self, ops: u64) -> Duration {
        assert!(
            self.supports::<Q>(),
            "{} cannot run {}",
            Q::NAME,
            self.name()
        );
        match *self {
            Workload::Flow {
                producers,
                consumers,
            } => flow::<Q>(producers, consumers, ops),
            Workload::PingPong => pingpong::<Q>(ops),
            Workload::Pool { threads, tokens } => pool::<Q>(threads, tokens, ops),
        }
    }
}

/// The workloads of BENCHMARKS.md (without mem), with `threads` in place of
/// the 8 of mpmc-8x8, fanout-1x8 and pool-8t-2obj for each entry of
/// `threads` (the default is `[8]`).
pub fn workloads(threads: &[usize]) -> Vec<Workload> {
    let mut all = vec![
        Workload::Flow {
            producers: 1,
            consumers: 1,
        },
        Workload::Flow {
            producers: 4,
            consumers: 1,
        },
        Workload::Flow {
            producers: 2,
            consumers: 2,
        },
    ];
    for &t in threads {
        let t = t.max(1);
        all.push(Workload::Flow {
            producers: t,
            consumers: t,
        });
    }
    for &t in threads {
        all.push(Workload::Flow {
            producers: 1,
            consumers: t.max(2),
        });
    }
    all.push(Workload::PingPong);
    for &t in threads {
        all.push(Workload::Pool {
            threads: t.max(1),
            tokens: 2,
        });
    }
    // A thread count of 2 makes mpmc-TxT repeat mpmc-2x2.
    let mut seen = Vec::new();
    all.retain(|w| {
        let fresh = !seen.contains(w);
        seen.push(*w);
        fresh
    });
    all
}

/// Parses a thread-count list such as `8` or `2,4,8,16` from the environment
/// variable `var`; `[8]` (BENCHMARKS.md) if unset.
pub fn threads_from_env(var: &str) -> Vec<usize> {
    match std::env::var(var) {
        Ok(s) => {
            let list: Vec<usize> = s
                .split(',')
                .map(|t| {
                    t.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{var}={s}: expected a list like 2,4,8"))
                })
                .collect();
            assert!(
                list.iter().all(|&t| t > 0),
                "{var}={s}: thread counts must be positive"
            );
            list
        }
        Err(_) => vec![8],
    }
}

/// A function running one workload on one structure: the shape the criterion
/// bench and the race table iterate over.
pub type Runner = fn(&Workload, u64) -> Duration;

pub struct Contender {
    pub name: &'static str,
    pub supports: fn(&Workload) -> bool,
    pub run: Runner,
    /// The mem workload: see [`mem`].
    pub mem: fn(u64, fn() -> i64) -> i64,
    /// The one-thread rows: see [`one_thread`].
    pub one_thread: OneThread,
}

fn contender<Q: Queue>() -> Contender {
    Contender {
        name: Q::NAME,
        supports: |w| w.supports::<Q>(),
        run: |w, ops| w.run::<Q>(ops),
        mem: mem::<Q>,
        one_thread: one_thread::<Q>,
    }
}

/// Stores `1..=n` in a fresh structure and returns how much `live_bytes`
/// (a heap-usage counter the caller provides) grew, from before the
/// structure was created to when it holds all `n` values. Then drains it and
/// checks every value came back.
fn mem<Q: Queue>(n: u64, live_bytes: fn() -> i64) -> i64 {
    let before = live_bytes();
    let (tx, rx) = Q::channel();
    for v in 1..=n {
        Q::send(&tx, v);
    }
    let grown = live_bytes() - before;
    let left = drain::<Q>(tx, &rx);
    assert_eq!(
        left.len() as u64,
        n,
        "{}: mem got back {} values, {n} stored",
        Q::NAME,
        left.len()
    );
    assert_eq!(
        left.iter().sum::<u64>(),
        n * (n + 1) / 2,
        "{}: mem got back the wrong sum",
        Q::NAME
    );
    grown
}

/// How many of [`contenders`] are dualq's own structures (they come first).
pub const OURS: usize = 2;

/// dualq's structures first (queue, stack), then the peers of BENCHMARKS.md.
pub fn contenders() -> Vec<Contender> {
    vec![
        contender::<Dual>(),
        contender::<DualStackQ>(),
        contender::<Crossbeam>(),
        contender::<Flume>(),
        contender::<Kanal>(),
        contender::<StdMpsc>(),
        contender::<MutexCondvar>(),
    ]
}

/// One thread, nothing to contend with: pushes `batch` values, then pops
/// them back, `batches` times, checking the sum; returns the time spent in
/// pushes and in pops. What an operation costs in instructions alone (its
/// locked instructions, epoch pins, allocation), with no cache line moving
/// between cores: the floor under every row of the table.
pub fn one_thread<Q: Queue>(batch: u64, batches: u64) -> (Duration, Duration) {
    let (tx, rx) = Q::channel();
    let (mut pushing, mut popping) = (Duration::ZERO, Duration::ZERO);
    let mut sum = 0;
    for _ in 0..batches {
        let start = Instant::now();
        for v in 0..batch {
            Q::send(&tx, v);
        }
        pushing += start.elapsed();
        let start = Instant::now();
        for _ in 0..batch {
            sum += Q::recv(&rx).expect("a value was stored");
        }
        popping += start.elapsed();
    }
    assert_eq!(
        sum,
        batches * batch * batch.saturating_sub(1) / 2,
        "{}: one thread got back the wrong sum",
        Q::NAME
    );
    Q::close(tx);
    (pushing, popping)
}

/// [`one_thread`] for one structure: `(batch, batches)` to the time spent
/// pushing and popping.
pub type OneThread = fn(u64, u64) -> (Duration, Duration);

/// The pingpong floor ([`SpinFloor`]) as a contender that runs only the
/// pingpong. Not a peer: callers keep it out of the "best peer" ratios.
pub fn spin_floor() -> Contender {
    Contender {
        name: SpinFloor::NAME,
        supports: |w| *w == Workload::PingPong,
        run: |w, ops| w.run::<SpinFloor>(ops),
        mem: |_, _| unreachable!("spin-floor holds one value: no mem row"),
        one_thread: |_, _| unreachable!("spin-floor holds one value: no one-thread row"),
    }
}

/// Spawns one thread per job and releases them together; joins the first
/// `first` of them, calls `between` (still timed: closing a structure is part
/// of the work), joins the rest, and returns the time from release to the
/// last join with the jobs' results.
fn timed<R: Send + 'static>(
    jobs: Vec<Box<dyn FnOnce() -> R + Send>>,
    first: usize,
    between: impl FnOnce(),
) -> (Duration, Vec<R>) {
    let barrier = Arc::new(Barrier::new(jobs.len() + 1));
    let ready = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let (barrier, ready) = (Arc::clone(&barrier), Arc::clone(&ready));
            thread::spawn(move || {
                ready.fetch_add(1, Ordering::Relaxed);
                barrier.wait();
                job()
            })
        })
        .collect();
    // Start the clock only once every thread is at the barrier, so that
    // ours is the arrival that releases them. Reading the clock after our
    // own `wait` instead would miss work done while we were descheduled:
    // with more threads than cores, a whole short run can fit in that gap.
    while ready.load(Ordering::Relaxed) < handles.len() {
        thread::yield_now();
    }
    let start = Instant::now();
    barrier.wait();
    let mut handles = handles.into_iter();
    let mut results: Vec<R> = handles
        .by_ref()
        .take(first)
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    between();
    results.extend(handles.map(|h| h.join().expect("worker panicked")));
    (start.elapsed(), results)
}

/// Splits `1..=n` into `parts` contiguous ranges.
fn split(n: u64, parts: usize) -> impl Iterator<Item = std::ops::RangeInclusive<u64>> {
    let parts = parts as u64;
    (0..parts).map(move |i| (n * i / parts + 1)..=(n * (i + 1) / parts))
}

/// Producers push `1..=n`; once they are all done the structure is closed
/// and the consumers drain it. Every value must arrive exactly once.
fn flow<Q: Queue>(producers: usize, consumers: usize, n: u64) -> Duration {
    let (tx, rx) = Q::channel();
    // Each job returns the (count, sum) it received; producers return zeros.
    let mut jobs: Vec<Box<dyn FnOnce() -> (u64, u64) + Send>> = Vec::new();
    for range in split(n, producers) {
        let tx = tx.clone();
        jobs.push(Box::new(move || {
            for v in range {
                Q::send(&tx, v);
            }
            (0, 0)
        }));
    }
    let mut rx = Some(rx);
    for i in 0..consumers {
        // The last consumer takes the original handle: std mpsc cannot clone it.
        let rx = if i + 1 == consumers {
            rx.take().unwrap()
        } else {
            Q::clone_rx(rx.as_ref().unwrap())
        };
        jobs.push(Box::new(move || {
            let (mut count, mut sum) = (0, 0);
            while let Some(v) = Q::recv(&rx) {
                count += 1;
                sum += v;
            }
            (count, sum)
        }));
    }
    // The producers' clones are dropped when they finish, so closing with
    // the last sender handle after joining them ends the consumers' loops.
    let (elapsed, results) = timed(jobs, producers, || Q::close(tx));
    let (count, sum) = results
        .into_iter()
        .fold((0, 0), |(c, s), (c1, s1)| (c + c1, s + s1));
    let name = Workload::Flow {
        producers,
        consumers,
    }
    .name();
    assert_eq!(
        count,
        n,
        "{}: {name} received {count} values, {n} sent",
        Q::NAME
    );
    assert_eq!(
        sum,
        n * (n + 1) / 2,
        "{}: {name} received the wrong sum",
        Q::NAME
    );
    elapsed
}

/// Closes a structure whose other senders are gone and returns what is left.
fn drain<Q: Queue>(tx: Q::Tx, rx: &Q::Rx) -> Vec<u64> {
    Q::close(tx);
    std::iter::from_fn(|| Q::recv(rx)).collect()
}

/// A value bounces between two threads through structures `a` and `b`, each
/// side adding one, `n` round trips.
fn pingpong<Q: Queue>(n: u64) -> Duration {
    let (tx_a, rx_a) = Q::channel();
    let (tx_b, rx_b) = Q::channel();
    Q::send(&tx_a, 0);
    let (tx_a2, tx_b2) = (tx_a.clone(), tx_b.clone());
    let jobs: Vec<Box<dyn FnOnce() -> Q::Rx + Send>> = vec![
        Box::new(move || {
            for _ in 0..n {
                let v = Q::recv(&rx_a).expect("pingpong: a closed early");
                Q::send(&tx_b2, v + 1);
            }
            rx_a
        }),
        Box::new(move || {
            for _ in 0..n {
                let v = Q::recv(&rx_b).expect("pingpong: b closed early");
                Q::send(&tx_a2, v + 1);
            }
            rx_b
        }),
    ];
    let (elapsed, mut rxs) = timed(jobs, 2, || ());
    let (rx_b, rx_a) = (rxs.pop().unwrap(), rxs.pop().unwrap());
    assert_eq!(
        drain::<Q>(tx_a, &rx_a),
        [2 * n],
        "{}: pingpong lost or duplicated its value",
        Q::NAME
    );
    assert_eq!(
        drain::<Q>(tx_b, &rx_b),
        [0u64; 0],
        "{}: pingpong left a value in b",
        Q::NAME
    );
    elapsed
}

/// `threads` threads share `tokens` tokens: `ops` pop+push pairs in all.
fn pool<Q: Queue>(threads: usize, tokens: usize, ops: u64) -> Duration {
    let (tx, rx) = Q::channel();
    for token in 1..=tokens as u64 {
        Q::send(&tx, token);
    }
    let jobs: Vec<Box<dyn FnOnce() + Send>> = split(ops, threads)
        .map(|range| {
            let (tx, rx) = (tx.clone(), Q::clone_rx(&rx));
            Box::new(move || {
                for _ in range {
                    let token = Q::recv(&rx).expect("pool: closed early");
                    Q::send(&tx, token);
                }
            }) as Box<dyn FnOnce() + Send>
        })
        .collect();
    let (elapsed, _) = timed(jobs, threads, || ());
    let mut left = drain::<Q>(tx, &rx);
    left.sort_unstable();
    let expected: Vec<u64> = (1..=tokens as u64).collect();
    assert_eq!(
        left,
        expected,
        "{}: pool lost or duplicated tokens",
        Q::NAME
    );
    elapsed
}

// ---------------------------------------------------------------------------
// Rendezvous (issue 6): the sender waits until a receiver took the value.
// dualq's `transfer` against the peers' zero-capacity channels.
// ---------------------------------------------------------------------------

dualq_contender!(
    /// The dual queue as a rendezvous: `send` is `transfer`.
    DualRendezvous, DualQueue, "dualq", transfer
);
dualq_contender!(
    /// The dual stack as a rendezvous: `send` is `transfer`.
    DualStackRendezvous, DualStack, "dualq-stack", transfer
);

/// A peer's zero-capacity channel, by its constructor.
macro_rules! zero_capacity {
    ($name:ident, $label:literal, $tx:ty, $rx:ty, $make:expr, $multi:expr) => {
        pub struct $name;

        impl Queue for $name {
            const NAME: &'static str = $label;
            const MULTI_CONSUMER: bool = $multi;
            type Tx = $tx;
            type Rx = $rx;

            fn channel() -> (Self::Tx, Self::Rx) {
                $make
            }
            fn send(tx: &Self::Tx, value: u64) {
                tx.send(value).expect("send on a connected channel");
            }
            fn recv(rx: &Self::Rx) -> Option<u64> {
                rx.recv().ok()
            }
            fn clone_rx(rx: &Self::Rx) -> Self::Rx {
                clone_rx_of(rx)
            }
            fn close(tx: Self::Tx) {
                drop(tx);
            }
        }
    };
}

/// Cloning a receiver, where the channel allows it.
trait CloneRx {
    fn clone_rx(&self) -> Self;
}
impl<T> CloneRx for crossbeam_channel::Receiver<T> {
    fn clone_rx(&self) -> Self {
        self.clone()
    }
}
impl<T> CloneRx for flume::Receiver<T> {
    fn clone_rx(&self) -> Self {
        self.clone()
    }
}
impl<T> CloneRx for kanal::Receiver<T> {
    fn clone_rx(&self) -> Self {
        self.clone()
    }
}
impl<T> CloneRx for mpsc::Receiver<T> {
    fn clone_rx(&self) -> Self {
        unreachable!("std mpsc has a single consumer; MULTI_CONSUMER is false")
    }
}
fn clone_rx_of<R: CloneRx>(rx: &R) -> R {
    rx.clone_rx()
}

zero_capacity!(
    CrossbeamZero,
    "crossbeam(0)",
    crossbeam_channel::Sender<u64>,
    crossbeam_channel::Receiver<u64>,
    crossbeam_channel::bounded(0),
    true
);
zero_capacity!(
    FlumeZero,
    "flume(0)",
    flume::Sender<u64>,
    flume::Receiver<u64>,
    flume::bounded(0),
    true
);
zero_capacity!(
    KanalZero,
    "kanal(0)",
    kanal::Sender<u64>,
    kanal::Receiver<u64>,
    kanal::bounded(0),
    true
);
zero_capacity!(
    StdSyncZero,
    "std-sync(0)",
    mpsc::SyncSender<u64>,
    mpsc::Receiver<u64>,
    mpsc::sync_channel(0),
    false
);

/// The rendezvous workloads of issue 6: spsc, mpmc-2x2 and pingpong (run by
/// [`rendezvous_run`]).
pub fn rendezvous_workloads() -> Vec<Workload> {
    vec![
        Workload::Flow {
            producers: 1,
            consumers: 1,
        },
        Workload::Flow {
            producers: 2,
            consumers: 2,
        },
        Workload::PingPong,
    ]
}

/// Runs a rendezvous workload: the flows as usual (every send waits for its
/// receiver), pingpong as send-then-receive on each side (the buffered
/// pingpong's initial send would wait for ever on a rendezvous).
pub fn rendezvous_run<Q: Queue>(workload: &Workload, ops: u64) -> Duration {
    match *workload {
        Workload::PingPong => rendezvous_pingpong::<Q>(ops),
        _ => workload.run::<Q>(ops),
    }
}

/// `n` round trips: A sends `i` to B through `a`, B answers `i + 1` through
/// `b`; A checks every answer.
fn rendezvous_pingpong<Q: Queue>(n: u64) -> Duration {
    let (tx_a, rx_a) = Q::channel();
    let (tx_b, rx_b) = Q::channel();
    let jobs: Vec<Box<dyn FnOnce() -> u64 + Send>> = vec![
        Box::new(move || {
            let mut checked = 0;
            for i in 0..n {
                Q::send(&tx_a, i);
                let answer = Q::recv(&rx_b).expect("pingpong: b closed early");
                assert_eq!(answer, i + 1, "{}: pingpong got a wrong answer", Q::NAME);
                checked += 1;
            }
            checked
        }),
        Box::new(move || {
            for _ in 0..n {
                let v = Q::recv(&rx_a).expect("pingpong: a closed early");
                Q::send(&tx_b, v + 1);
            }
            0
        }),
    ];
    let (elapsed, results) = timed(jobs, 2, || ());
    assert_eq!(
        results.iter().sum::<u64>(),
        n,
        "{}: pingpong round trips",
        Q::NAME
    );
    elapsed
}

fn rendezvous_contender<Q: Queue>() -> Contender {
    Contender {
        name: Q::NAME,
        supports: |w| w.supports::<Q>(),
        run: |w, ops| rendezvous_run::<Q>(w, ops),
        mem: |_, _| unreachable!("a rendezvous stores nothing: no mem row"),
        one_thread: |_, _| unreachable!("a rendezvous stores nothing: no one-thread row"),
    }
}

/// dualq's structures first (the first [`OURS`]), then the peers'
/// zero-capacity channels.
pub fn rendezvous_contenders() -> Vec<Contender> {
    vec![
        rendezvous_contender::<DualRendezvous>(),
        rendezvous_contender::<DualStackRendezvous>(),
        rendezvous_contender::<CrossbeamZero>(),
        rendezvous_contender::<FlumeZero>(),
        rendezvous_contender::<KanalZero>(),
        rendezvous_contender::<StdSyncZero>(),
    ]
}

// ---------------------------------------------------------------------------
// Async (issue 6): consumers (and, for the rendezvous, producers) are futures.
// Each blocking call of the `Queue` shape is one future run to completion by
// `block_on` on the calling thread, for every contender alike, so the rows
// measure each structure's future (reserve/register/wake) and not an
// executor. crossbeam-channel and std have no async API: not in these rows.
// ---------------------------------------------------------------------------

struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// One waker per thread, made once: creating it is not what we measure.
    static WAKER: std::task::Waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
}

/// The benches' executor: polls `future` on this thread, parking between
/// polls (a wake unparks it; a spurious return just polls again).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    WAKER.with(|waker| {
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return value;
            }
            thread::park();
        }
    })
}

/// A contender given by its channel constructor and one expression per
/// operation.
macro_rules! async_contender {
    (
        $(#[$doc:meta])* $name:ident, $label:literal, $tx:ty, $rx:ty,
        make: $make:expr,
        send: |$t:ident, $v:ident| $send:expr,
        recv: |$r:ident| $recv:expr,
        clone_rx: |$c:ident| $clone:expr,
        close: |$x:ident| $close:expr $(,)?
    ) => {
        $(#[$doc])*
        pub struct $name;

        impl Queue for $name {
            const NAME: &'static str = $label;
            const MULTI_CONSUMER: bool = true;
            type Tx = $tx;
            type Rx = $rx;

            fn channel() -> (Self::Tx, Self::Rx) {
                $make
            }
            fn send($t: &Self::Tx, $v: u64) {
                $send
            }
            fn recv($r: &Self::Rx) -> Option<u64> {
                $recv
            }
            fn clone_rx($c: &Self::Rx) -> Self::Rx {
                $clone
            }
            fn close($x: Self::Tx) {
                $close
            }
        }
    };
}

/// A dualq structure with `pop_async` consumers; producers `push`, or
/// `transfer_async` for the rendezvous.
macro_rules! dualq_async {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $label:literal, $rendezvous:literal) => {
        async_contender!(
            $(#[$doc])* $name, $label, Arc<$ty<u64>>, Arc<$ty<u64>>,
            make: {
                let s = Arc::new($ty::new());
                (Arc::clone(&s), s)
            },
            send: |tx, v| if $rendezvous {
                block_on(tx.transfer_async(v)).expect("send on an open structure")
            } else {
                tx.push(v).expect("send on an open structure")
            },
            recv: |rx| block_on(rx.pop_async()).ok(),
            clone_rx: |rx| Arc::clone(rx),
            close: |tx| {
                tx.close();
            },
        );
    };
}

dualq_async!(
    /// `DualQueue`: `push`, `pop_async`.
    AsyncDual, DualQueue, "dualq", false
);
dualq_async!(
    /// `DualStack`: `push`, `pop_async`.
    AsyncDualStack, DualStack, "dualq-stack", false
);
async_contender!(
    /// flume unbounded: `send`, `recv_async`.
    AsyncFlume, "flume", flume::Sender<u64>, flume::Receiver<u64>,
    make: flume::unbounded(),
    send: |tx, v| tx.send(v).expect("send on a connected channel"),
    recv: |rx| block_on(rx.recv_async()).ok(),
    clone_rx: |rx| rx.clone(),
    close: |tx| drop(tx),
);
async_contender!(
    /// kanal unbounded: `send`, `as_async().recv()`.
    AsyncKanal, "kanal", kanal::Sender<u64>, kanal::Receiver<u64>,
    make: kanal::unbounded(),
    send: |tx, v| tx.send(v).expect("send on a connected channel"),
    recv: |rx| block_on(rx.as_async().recv()).ok(),
    clone_rx: |rx| rx.clone(),
    close: |tx| drop(tx),
);

dualq_async!(
    /// `DualQueue` as an async rendezvous: `transfer_async`, `pop_async`.
    AsyncDualRendezvous, DualQueue, "dualq", true
);
dualq_async!(
    /// `DualStack` as an async rendezvous: `transfer_async`, `pop_async`.
    AsyncDualStackRendezvous, DualStack, "dualq-stack", true
);
async_contender!(
    /// flume zero-capacity: `send_async`, `recv_async`.
    AsyncFlumeZero, "flume(0)", flume::Sender<u64>, flume::Receiver<u64>,
    make: flume::bounded(0),
    send: |tx, v| block_on(tx.send_async(v)).expect("send on a connected channel"),
    recv: |rx| block_on(rx.recv_async()).ok(),
    clone_rx: |rx| rx.clone(),
    close: |tx| drop(tx),
);
async_contender!(
    /// kanal zero-capacity: `as_async().send`, `as_async().recv()`.
    AsyncKanalZero, "kanal(0)", kanal::Sender<u64>, kanal::Receiver<u64>,
    make: kanal::bounded(0),
    send: |tx, v| block_on(tx.as_async().send(v)).expect("send on a connected channel"),
    recv: |rx| block_on(rx.as_async().recv()).ok(),
    clone_rx: |rx| rx.clone(),
    close: |tx| drop(tx),
);

/// The async rows: spsc, mpmc-2x2 and pingpong, as for the rendezvous.
pub fn async_workloads() -> Vec<Workload> {
    rendezvous_workloads()
}

/// Async consumers on buffered structures: dualq's first (the first
/// [`OURS`]), then flume's and kanal's unbounded channels.
pub fn async_contenders() -> Vec<Contender> {
    vec![
        contender::<AsyncDual>(),
        contender::<AsyncDualStack>(),
        contender::<AsyncFlume>(),
        contender::<AsyncKanal>(),
    ]
}

/// Async producers and consumers meeting in a rendezvous: dualq's
/// `transfer_async` first, then flume's and kanal's zero-capacity channels.
pub fn async_rendezvous_contenders() -> Vec<Contender> {
    vec![
        rendezvous_contender::<AsyncDualRendezvous>(),
        rendezvous_contender::<AsyncDualStackRendezvous>(),
        rendezvous_contender::<AsyncFlumeZero>(),
        rendezvous_contender::<AsyncKanalZero>(),
    ]
}
