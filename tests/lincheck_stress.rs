//! Real-thread linearizability stress: many short random histories on fresh
//! structures, each recorded with a shared `SeqCst` ticket clock and checked
//! against the dual queue / dual stack specification (`tests/lincheck/`).
//!
//! Each history: three worker threads run two to four random operations
//! each (push, try_pop, pop_timeout with zero, tiny and short timeouts,
//! blocking pop, close, try_transfer, transfer_timeout with tiny and short
//! timeouts, blocking transfer, and reservation handles: `reserve` then a
//! drop, or one `try_take` and a drop, each with the handle held for 0 or
//! 20 µs before its follow-ups, or `wait_timeout(0)`, or `wait`), starting
//! together at a barrier. A blocking `pop`, `transfer` or `reserve().wait()`
//! appears only in histories with a `close` that no blocking call precedes
//! in its own thread, so nothing waits for ever. Workers also *watch* now
//! and then: when the waiting reservations they count match the pops and
//! reservation handles in flight, those are marked as seen waiting, which
//! lets the checker check the order waiters are served in (without marks a
//! request is not observable; see `waiter_order_needs_a_mark` in
//! `lincheck_checker.rs`).
//! The threads are reused from history to history; the main thread checks
//! one history while the workers run the next.
//!
//! `cargo test --test lincheck_stress -- --nocapture` runs 100,000 histories
//! per structure and prints how many it checked; set
//! `DUALQ_LIN_HISTORIES=<n>` for another count per structure (e.g. a
//! million, with `--release`), and `DUALQ_LIN_SEED=<n>` to change the seed.

mod lincheck;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dualq::{DualQueue, DualStack};
use lincheck::{check, Call, Dual, Event, Handle, History, Op, Recorder, Ret};

/// Histories per structure unless `DUALQ_LIN_HISTORIES` says otherwise.
const HISTORIES: u64 = if cfg!(miri) { 10 } else { 100_000 };
const WORKERS: usize = 3;
/// How long a reservation handle is held before its follow-ups (when held).
const HOLD: Duration = Duration::from_micros(20);
/// How long a history may run before the test declares it hung.
const PATIENCE: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a worker does next.
#[derive(Clone, Copy, Debug)]
enum Action {
    Op(Op),
    /// Look for pops that are provably waiting and mark them (see `watch`).
    Watch,
}

/// The scripts of one history, one per worker; a function of (seed, round).
fn scripts(seed: u64, round: u64) -> Vec<Vec<Action>> {
    let mut rng = Rng::new(seed ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d));
    // A third of the histories close: one worker (the closer) closes after
    // non-blocking operations only, so blocking pops are allowed there.
    let closer = (rng.below(3) == 0).then(|| rng.below(WORKERS as u64) as usize);
    let mut out = Vec::with_capacity(WORKERS);
    for w in 0..WORKERS {
        let n = 2 + rng.below(3) as usize;
        let close_at = (closer == Some(w)).then(|| rng.below(n as u64) as usize);
        let mut script = Vec::with_capacity(n);
        for j in 0..n {
            if rng.below(4) == 0 {
                script.push(Action::Watch);
            }
            if close_at == Some(j) {
                script.push(Action::Op(Op::Close));
                continue;
            }
            let blocking_ok = closer.is_some() && close_at.map_or(true, |c| j > c);
            let value = (w as u64 + 1) * 100 + j as u64;
            let op = match rng.below(36) {
                0..=9 => Op::Push(value),
                10..=12 => Op::TryPop,
                13..=14 => Op::PopTimeout(Duration::ZERO),
                15..=16 => Op::PopTimeout(Duration::from_micros(1)),
                17 => Op::PopTimeout(Duration::from_micros(50)),
                18 if closer.is_some() => Op::Close,
                19 => Op::TryTransfer(value),
                20 => Op::TransferTimeout(value, Duration::from_micros(1)),
                21 => Op::TransferTimeout(value, Duration::from_micros(50)),
                22 if blocking_ok => Op::Transfer(value),
                23 => Op::ReserveDrop(Duration::ZERO),
                24 => Op::ReserveDrop(HOLD),
                25 => Op::ReserveTryTake(Duration::ZERO),
                26 => Op::ReserveTryTake(HOLD),
                27 => Op::ReserveWaitTimeout(Duration::ZERO),
                28 if blocking_ok => Op::ReserveWait,
                29 => Op::TransferAsync(value, Duration::ZERO),
                30 => Op::TransferAsync(value, HOLD),
                31 => Op::PopAsync(Duration::ZERO),
                32 => Op::PopAsync(HOLD),
                _ if blocking_ok => Op::Pop,
                _ => Op::PopTimeout(Duration::from_micros(20)),
            };
            script.push(Action::Op(op));
        }
        out.push(script);
    }
    out
}

/// One history's shared state, handed to every worker.
struct Round<D> {
    target: D,
    rec: Recorder,
    ops: Vec<Vec<Action>>,
    /// Per worker: 1 + the invocation ticket of its `pop`, non-zero
    /// `pop_timeout` or `reserve_*` in progress (the operations that can
    /// wait), or 0.
    in_flight: Vec<AtomicU64>,
    /// Workers past the barrier: each spins until all are, so they start
    /// closer together than a barrier's staggered wake-ups alone allow.
    arrived: AtomicUsize,
}

/// Runs the histories on `D` and checks each; returns how many it checked.
fn stress<D>(name: &str)
where
    D: Dual + Default + Send + Sync + 'static,
{
    let histories = env_u64("DUALQ_LIN_HISTORIES", HISTORIES);
    let seed = env_u64("DUALQ_LIN_SEED", 0x5eed_d0a1);
    let start = Instant::now();
    let barrier = Arc::new(Barrier::new(WORKERS));
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let mut job_txs = Vec::new();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (job_tx, job_rx) = mpsc::channel::<Arc<Round<D>>>();
        job_txs.push(job_tx);
        let (barrier, done_tx) = (barrier.clone(), done_tx.clone());
        workers.push(thread::spawn(move || {
            while let Ok(round) = job_rx.recv() {
                barrier.wait();
                round.arrived.fetch_add(1, Ordering::SeqCst);
                while round.arrived.load(Ordering::SeqCst) < WORKERS {
                    thread::yield_now();
                }
                if done_tx.send(run_script(&round, w)).is_err() {
                    return;
                }
            }
        }));
    }

    let launch = |r: u64| {
        let round = Arc::new(Round {
            target: D::default(),
            rec: Recorder::new(),
            ops: scripts(seed, r),
            arrived: AtomicUsize::new(0),
            in_flight: (0..WORKERS).map(|_| AtomicU64::new(0)).collect(),
        });
        for tx in &job_txs {
            tx.send(round.clone()).unwrap();
        }
    };
    let collect = |r: u64| {
        let (mut calls, mut marks) = (Vec::new(), Vec::new());
        for _ in 0..WORKERS {
            match done_rx.recv_timeout(PATIENCE) {
                Ok((c, m)) => {
                    calls.extend(c);
                    marks.extend(m);
                }
                Err(_) => panic!(
                    "{name}: history {r} (seed {seed}) hung for {PATIENCE:?}: {:?}",
                    scripts(seed, r)
                ),
            }
        }
        // Marks name operations by invocation ticket; the history wants
        // their index.
        let index: HashMap<u64, usize> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| (c.invoked, i))
            .collect();
        let marks: Vec<(usize, u64)> = marks.iter().map(|&(inv, at)| (index[&inv], at)).collect();
        History::from_calls(calls, &marks)
    };

    let mut results: BTreeMap<String, u64> = BTreeMap::new();
    let mut configurations = 0usize;
    let mut overlapping = 0u64;
    let mut marked = 0u64;
    let mut pending = None;
    for r in 0..=histories {
        if r < histories {
            launch(r);
        }
        if let Some((prev, history)) = pending.take() {
            match check(D::KIND, &history) {
                Ok(l) => configurations += l.configurations,
                Err(e) => panic!("{name}: history {prev} (seed {seed}, DUALQ_LIN_SEED={seed}) {e}"),
            }
            overlapping += u64::from(overlaps(&history));
            marked += history
                .events
                .iter()
                .filter(|e| matches!(e, Event::Waiting(_)))
                .count() as u64;
            for c in &history.calls {
                let key = format!("{:?} -> {:?}", op_kind(&c.op), ret_kind(&c.ret));
                *results.entry(key).or_default() += 1;
            }
        }
        if r < histories {
            pending = Some((r, collect(r)));
        }
    }
    drop(job_txs);
    for w in workers {
        w.join().unwrap();
    }
    println!(
        "{name}: {histories} histories checked in {:.1?}, {overlapping} with operations \
         of different threads overlapping, {marked} waiters marked as seen waiting \
         ({configurations} search configurations)",
        start.elapsed()
    );
    for (k, n) in &results {
        println!("  {k:<44} {n}");
    }
}

/// A worker's calls, and its marks: (invocation ticket of a pop seen
/// waiting, ticket taken after it was seen).
type Done = (Vec<Call>, Vec<(u64, u64)>);

/// Runs worker `w`'s script of `round`.
fn run_script<D: Dual>(round: &Round<D>, w: usize) -> Done {
    let (rec, target) = (&round.rec, &round.target);
    let (mut calls, mut marks) = (Vec::new(), Vec::new());
    for &action in &round.ops[w] {
        match action {
            Action::Op(op) if can_wait(op) => {
                let invoked = rec.now();
                // SeqCst: before the call, so before its reservation is
                // linked; see `watch`.
                round.in_flight[w].store(invoked + 1, Ordering::SeqCst);
                let ret = target.apply(op);
                let returned = rec.now();
                round.in_flight[w].store(0, Ordering::SeqCst);
                calls.push(Call {
                    thread: w,
                    op,
                    ret,
                    invoked,
                    returned,
                });
            }
            Action::Op(op) => calls.push(rec.run(target, w, op)),
            Action::Watch => watch(round, &mut marks),
        }
    }
    (calls, marks)
}

/// Whether `op` can link a reservation: the operations `watch` counts.
/// (`pop_timeout(0)` never links: it is a `try_pop`.)
fn can_wait(op: Op) -> bool {
    match op {
        Op::Pop
        | Op::ReserveDrop(_)
        | Op::ReserveTryTake(_)
        | Op::PopAsync(_)
        | Op::ReserveWait
        | Op::ReserveWaitTimeout(_) => true,
        Op::PopTimeout(d) => !d.is_zero(),
        Op::Push(_)
        | Op::TryPop
        | Op::Close
        | Op::Transfer(_)
        | Op::TransferTimeout(..)
        | Op::TransferAsync(..)
        | Op::TryTransfer(_) => false,
    }
}

/// Marks the pops and reservation handles that provably wait now. Reads
/// the set S of operations that can wait and are in flight, counts the
/// waiting reservations (n), and reads S again. A waiting reservation
/// belongs to an operation in flight (a handle cancels its reservation
/// when dropped, before its operation returns) whose `in_flight` entry was
/// stored before it linked the reservation, so before the count saw it, so
/// the second read of S includes it; if S did not change, each reservation
/// counted is one operation of S. So n == |S| means every operation in S
/// had linked its reservation (made its request) before any ticket taken
/// now.
fn watch<D: Dual>(round: &Round<D>, marks: &mut Vec<(u64, u64)>) {
    let read = || -> Vec<u64> {
        round
            .in_flight
            .iter()
            .map(|t| t.load(Ordering::SeqCst))
            .filter(|&t| t != 0)
            .collect()
    };
    let before = read();
    let n = round.target.waiting();
    if n > 0 && n == before.len() && read() == before {
        // Any ticket taken after the count will do: one per mark.
        marks.extend(before.iter().map(|&t| (t - 1, round.rec.now())));
    }
}

/// Whether two threads' operations overlap in time.
fn overlaps(h: &History) -> bool {
    h.calls.iter().any(|a| {
        h.calls
            .iter()
            .any(|b| a.thread != b.thread && a.invoked < b.invoked && b.invoked < a.returned)
    })
}

fn op_kind(op: &Op) -> &'static str {
    match op {
        Op::Push(_) => "push",
        Op::Pop => "pop",
        Op::TryPop => "try_pop",
        Op::PopTimeout(d) if d.is_zero() => "pop_timeout(0)",
        Op::PopTimeout(_) => "pop_timeout",
        Op::Close => "close",
        Op::Transfer(_) => "transfer",
        Op::TransferTimeout(..) => "transfer_timeout",
        Op::TryTransfer(_) => "try_transfer",
        Op::ReserveDrop(d) if d.is_zero() => "reserve_drop",
        Op::ReserveDrop(_) => "reserve_drop(hold)",
        Op::ReserveTryTake(d) if d.is_zero() => "reserve_try_take",
        Op::ReserveTryTake(_) => "reserve_try_take(hold)",
        Op::ReserveWait => "reserve_wait",
        Op::ReserveWaitTimeout(d) if d.is_zero() => "reserve_wait_timeout(0)",
        Op::ReserveWaitTimeout(_) => "reserve_wait_timeout",
        Op::TransferAsync(_, d) if d.is_zero() => "transfer_async",
        Op::TransferAsync(..) => "transfer_async(hold)",
        Op::PopAsync(d) if d.is_zero() => "pop_async",
        Op::PopAsync(_) => "pop_async(hold)",
    }
}

fn ret_kind(ret: &Ret) -> &'static str {
    match ret {
        Ret::Pushed => "Ok",
        Ret::Rejected(_) => "Rejected",
        Ret::Value(_) => "Value",
        Ret::Empty => "Empty",
        Ret::Timeout => "Timeout",
        Ret::Closed => "Closed",
        Ret::CloseReturned(true) => "true",
        Ret::CloseReturned(false) => "false",
        Ret::Withdrawn(_) => "Withdrawn",
        Ret::NoConsumer(_) => "NoConsumer",
        Ret::Dropped(Handle::Ready) => "Dropped(Ready)",
        Ret::Dropped(Handle::Linked) => "Dropped(Linked)",
        Ret::Dropped(Handle::Closed) => "Dropped(Closed)",
        Ret::NotYet(Handle::Ready) => "NotYet(Ready)",
        Ret::NotYet(Handle::Linked) => "NotYet(Linked)",
        Ret::NotYet(Handle::Closed) => "NotYet(Closed)",
    }
}

#[test]
fn queue_histories_linearize() {
    stress::<DualQueue<u64>>("DualQueue");
}

#[test]
fn stack_histories_linearize() {
    stress::<DualStack<u64>>("DualStack");
}
