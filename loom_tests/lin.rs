//! The driver of the linearizability models (`lin_queue.rs`,
//! `lin_stack.rs`): runs a small scenario under loom, records its history
//! and checks it against the sequential specification
//! (`tests/lincheck/mod.rs`) at the end of every execution.
//!
//! The history's clock ([`Recorder`]) is a loom `AtomicU64`, not a std one:
//! a std counter would give loom's execution order, but not the
//! happens-before edges that the order of tickets implies on real threads,
//! and the checker then rejects executions that C11 allows (see
//! `Recorder`'s docs; `lin_push_try_pop` failed that way).

use super::lincheck::{check, Call, Dual, History, Op, Recorder};
use super::model;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::collections::BTreeSet;
use std::time::Duration;

/// A timeout for `pop_timeout` under loom. Loom has no clock: any timed wait
/// reports its deadline passed after its first check (`src/sync.rs`), so the
/// length does not matter to the model, but it must be long: a deadline
/// near `Instant::now()` would make the "expired on entry" check depend on
/// the real clock, which loom cannot replay.
pub const LONG: Duration = Duration::from_secs(3600);

/// One step of the main thread's script.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Start spawned thread `t` (1-based: thread 0 is the main thread).
    Spawn(usize),
    /// Run an operation on the main thread.
    Run(Op),
    /// Yield until exactly `n` consumers wait, then mark each listed
    /// operation (thread, index in its script) as seen waiting; or until a
    /// listed thread has finished its script (a timed pop may time out
    /// before it is seen), then mark nothing. Either way the main thread's
    /// next steps start after the listed pops have linked or finished, so a
    /// race of their cancel against the main thread's push needs only one
    /// preemption.
    AwaitWaiting(usize, &'static [(usize, usize)]),
    /// Join every spawned thread.
    Join,
}

/// A scenario: the main thread's script, and the scripts of the threads it
/// spawns (`threads[0]` is thread 1).
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub main: &'static [Step],
    pub threads: &'static [&'static [Op]],
}

/// Runs `scenario` on `D` under loom with preemption bound `bound` (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise), checking every execution's
/// history.
pub fn lin_model<D>(name: &'static str, bound: usize, scenario: Scenario)
where
    D: Dual + Default + Send + Sync + 'static,
{
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let seen = outcomes.clone();
    model(name, bound, move || {
        let outcome = run_once::<D>(name, scenario);
        seen.lock().unwrap().insert(outcome);
    });
    // What the executions returned, to show the model reaches each race's
    // outcomes (a timed pop that sometimes times out, and so on).
    let outcomes = outcomes.lock().unwrap();
    println!("  {} distinct outcomes:", outcomes.len());
    for o in outcomes.iter() {
        println!("    {o}");
    }
}

/// Runs the scenario once, checks the history, and returns the results of
/// the operations, thread by thread.
fn run_once<D>(name: &str, scenario: Scenario) -> String
where
    D: Dual + Default + Send + Sync + 'static,
{
    assert_main_never_waits(name, scenario);
    let target = Arc::new(D::default());
    let rec = std::sync::Arc::new(Recorder::new());
    let done: Vec<Arc<AtomicBool>> = scenario
        .threads
        .iter()
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let mut handles: Vec<Option<thread::JoinHandle<Vec<Call>>>> =
        scenario.threads.iter().map(|_| None).collect();
    let mut per_thread: Vec<Vec<Call>> = vec![Vec::new(); scenario.threads.len() + 1];
    // (thread, index in its script, ticket)
    let mut marks: Vec<(usize, usize, u64)> = Vec::new();

    let join_all = |handles: &mut Vec<Option<thread::JoinHandle<Vec<Call>>>>,
                    per_thread: &mut Vec<Vec<Call>>| {
        for (t, h) in handles.iter_mut().enumerate() {
            if let Some(h) = h.take() {
                per_thread[t + 1] = h.join().unwrap();
            }
        }
    };

    for step in scenario.main {
        match *step {
            Step::Spawn(t) => {
                let (target, rec) = (target.clone(), rec.clone());
                let ops = scenario.threads[t - 1];
                let done = done[t - 1].clone();
                handles[t - 1] = Some(thread::spawn(move || {
                    let calls = ops.iter().map(|&op| rec.run(&*target, t, op)).collect();
                    // Release: pairs with the Acquire load in `AwaitWaiting`.
                    done.store(true, Ordering::Release);
                    calls
                }));
            }
            Step::Run(op) => {
                let call = rec.run(&*target, 0, op);
                per_thread[0].push(call);
            }
            Step::AwaitWaiting(n, seen) => loop {
                if target.waiting() == n {
                    for &(t, j) in seen {
                        marks.push((t, j, rec.now()));
                    }
                    break;
                }
                if seen
                    .iter()
                    .any(|&(t, _)| done[t - 1].load(Ordering::Acquire))
                {
                    break;
                }
                thread::yield_now();
            },
            Step::Join => join_all(&mut handles, &mut per_thread),
        }
    }
    join_all(&mut handles, &mut per_thread);

    let outcome = per_thread
        .iter()
        .enumerate()
        .map(|(t, calls)| {
            let rets: Vec<String> = calls.iter().map(|c| format!("{:?}", c.ret)).collect();
            format!("t{t}: {}", rets.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut offsets = Vec::with_capacity(per_thread.len());
    let mut calls = Vec::new();
    for c in per_thread {
        offsets.push(calls.len());
        calls.extend(c);
    }
    let marks: Vec<(usize, u64)> = marks
        .into_iter()
        .map(|(t, j, at)| (offsets[t] + j, at))
        .collect();
    let history = History::from_calls(calls, &marks);
    if let Err(e) = check(D::KIND, &history) {
        panic!("loom model {name}: {e}");
    }
    outcome
}

/// The main thread joins the spawned threads, so it must never be a waiter
/// that another thread could wake: a producer may `unpark` a registered
/// waiter after the waiter took its value and moved on (harmless on real
/// threads, where `park` allows spurious wake-ups), and loom's `join` takes
/// such a stray token for a broken wake-up (`assert!(state.notified)` in
/// loom's `notify.rs`). That is how `lin_stack_push_push_pop` once failed
/// inside loom. So the main thread waits as a consumer (a timed pop
/// registers too) only if no spawned thread pushes, transfers or closes,
/// and as a producer only if none pops or closes; otherwise the operation
/// must run on a spawned thread, which never joins.
fn assert_main_never_waits(name: &str, scenario: Scenario) {
    let others = || scenario.threads.iter().flat_map(|ops| ops.iter());
    let wakes_consumers = |op: &Op| {
        matches!(
            op,
            Op::Push(_)
                | Op::Close
                | Op::Transfer(_)
                | Op::TransferTimeout(..)
                | Op::TransferAsync(..)
                | Op::TryTransfer(_)
        )
    };
    // Every consumer operation may take an offer (and wake its producer).
    let wakes_producers = |op: &Op| {
        matches!(
            op,
            Op::Pop
                | Op::PopTimeout(_)
                | Op::TryPop
                | Op::Close
                | Op::ReserveDrop(_)
                | Op::ReserveTryTake(_)
                | Op::PopAsync(_)
                | Op::ReserveWait
                | Op::ReserveWaitTimeout(_)
        )
    };
    for step in scenario.main {
        let Step::Run(op) = step else { continue };
        let woken = match op {
            Op::Pop | Op::PopTimeout(_) | Op::ReserveWait | Op::ReserveWaitTimeout(_) => {
                others().any(wakes_consumers)
            }
            Op::Transfer(_) | Op::TransferTimeout(..) => others().any(wakes_producers),
            _ => false,
        };
        assert!(
            !woken,
            "loom model {name}: the main thread (which joins) may be woken after {op:?}; spawn it"
        );
    }
}

// ---- the scenarios, shared by both structures ----

use Op::{Close, Pop, PopTimeout, Push, TryPop};
use Step::{AwaitWaiting, Join, Run, Spawn};

const PT: Op = PopTimeout(LONG);

/// push ‖ pop on an empty structure.
pub const PUSH_POP: Scenario = Scenario {
    main: &[Spawn(1), Run(Push(1)), Join, Run(TryPop)],
    threads: &[&[Pop]],
};

/// push ‖ try_pop.
pub const PUSH_TRY_POP: Scenario = Scenario {
    main: &[Spawn(1), Run(Push(1)), Join, Run(TryPop)],
    threads: &[&[TryPop]],
};

/// push ‖ pop_timeout: the cancel races the fulfilment.
pub const PUSH_POP_TIMEOUT: Scenario = Scenario {
    main: &[Spawn(1), Run(Push(1)), Join, Run(TryPop)],
    threads: &[&[PT]],
};

/// push ‖ push, then drain: the order of the values.
pub const PUSH_PUSH: Scenario = Scenario {
    main: &[Spawn(1), Run(Push(1)), Join, Run(TryPop), Run(TryPop)],
    threads: &[&[Push(2)]],
};

/// pop ‖ pop on two stored values.
pub const POP_POP_STORED: Scenario = Scenario {
    main: &[Run(Push(1)), Run(Push(2)), Spawn(1), Run(Pop), Join],
    threads: &[&[Pop]],
};

/// pop ‖ close on an empty structure, then a push that fails.
pub const POP_CLOSE: Scenario = Scenario {
    main: &[Spawn(1), Run(Close), Join, Run(Push(3)), Run(TryPop)],
    threads: &[&[Pop]],
};

/// pop_timeout ‖ close.
pub const POP_TIMEOUT_CLOSE: Scenario = Scenario {
    main: &[Spawn(1), Run(Close), Join],
    threads: &[&[PT]],
};

/// push ‖ close, then drain.
pub const PUSH_CLOSE: Scenario = Scenario {
    main: &[Spawn(1), Run(Close), Join, Run(TryPop), Run(TryPop)],
    threads: &[&[Push(1)]],
};

/// try_pop ‖ close with a value stored: closing keeps it.
pub const TRY_POP_CLOSE_STORED: Scenario = Scenario {
    main: &[Run(Push(1)), Spawn(1), Run(Close), Join, Run(TryPop)],
    threads: &[&[TryPop]],
};

/// pop_timeout ‖ pop_timeout: two cancels (and cleanups) at once.
pub const TWO_TIMEOUTS: Scenario = Scenario {
    main: &[Spawn(1), Run(PT), Join, Run(Push(1)), Run(TryPop)],
    threads: &[&[PT]],
};

/// Two waiters seen waiting in order (A = thread 1, then B = the main
/// thread's spawn of thread 2), then two pushes: the service order.
pub const TWO_WAITERS_MARKED: Scenario = Scenario {
    main: &[
        Spawn(1),
        AwaitWaiting(1, &[(1, 0)]),
        Spawn(2),
        AwaitWaiting(2, &[(2, 0)]),
        Run(Push(1)),
        Run(Push(2)),
        Join,
    ],
    threads: &[&[Pop], &[Pop]],
};

/// pop ‖ pop ‖ two pushes, no marks: each value delivered once.
pub const POP_POP_PUSHES: Scenario = Scenario {
    main: &[Spawn(1), Spawn(2), Run(Push(1)), Run(Push(2)), Join],
    threads: &[&[Pop], &[Pop]],
};

/// pop ‖ push ‖ close.
pub const POP_PUSH_CLOSE: Scenario = Scenario {
    main: &[Spawn(1), Spawn(2), Run(Close), Join, Run(TryPop)],
    threads: &[&[Pop], &[Push(1)]],
};

/// A waiter seen waiting, then push ‖ close.
pub const WAITER_PUSH_CLOSE: Scenario = Scenario {
    main: &[
        Spawn(1),
        AwaitWaiting(1, &[(1, 0)]),
        Spawn(2),
        Run(Close),
        Join,
        Run(TryPop),
    ],
    threads: &[&[Pop], &[Push(1)]],
};

/// A waiter seen waiting, then a timed pop seen waiting (or timed out),
/// then two pushes: the timed pop's cancel races the fulfilment that
/// serves it, among waiters (queue: the second push; stack: the first).
pub const WAITER_TIMEOUT_PUSHES: Scenario = Scenario {
    main: &[
        Spawn(1),
        AwaitWaiting(1, &[(1, 0)]),
        Spawn(2),
        AwaitWaiting(2, &[(2, 0)]),
        Run(Push(1)),
        Run(Push(2)),
        Join,
        Run(TryPop),
    ],
    threads: &[&[Pop], &[PT]],
};

/// push ‖ push ‖ pop: helping (the stack's fulfilling node). The pop runs
/// on a spawned thread: it may wait, and the main thread joins
/// (`assert_main_never_waits`).
pub const PUSH_PUSH_POP: Scenario = Scenario {
    main: &[Spawn(1), Spawn(2), Spawn(3), Join, Run(TryPop)],
    threads: &[&[Push(1)], &[Push(2)], &[Pop]],
};

/// A waiter seen waiting, then push ‖ push: the second push may meet the
/// first one's fulfilment in progress.
pub const WAITER_PUSH_PUSH: Scenario = Scenario {
    main: &[
        Spawn(1),
        AwaitWaiting(1, &[(1, 0)]),
        Spawn(2),
        Run(Push(1)),
        Join,
        Run(TryPop),
    ],
    threads: &[&[Pop], &[Push(2)]],
};

/// pop ‖ try_pop ‖ push.
pub const POP_TRY_POP_PUSH: Scenario = Scenario {
    main: &[Spawn(1), Spawn(2), Run(Push(1)), Run(Push(2)), Join],
    threads: &[&[Pop], &[TryPop]],
};

/// A waiter seen waiting, then try_pop ‖ push: the try_pop may meet the
/// fulfilment in progress.
pub const WAITER_TRY_POP_PUSH: Scenario = Scenario {
    main: &[
        Spawn(1),
        AwaitWaiting(1, &[(1, 0)]),
        Spawn(2),
        Run(Push(1)),
        Join,
    ],
    threads: &[&[Pop], &[TryPop]],
};

/// Two timed pops, each seen waiting (or timed out) in turn, then a push:
/// two cancels (and their cleanups) racing a fulfilment.
pub const TWO_TIMEOUTS_PUSH: Scenario = Scenario {
    main: &[
        Spawn(1),
        AwaitWaiting(1, &[(1, 0)]),
        Spawn(2),
        AwaitWaiting(2, &[(2, 0)]),
        Run(Push(1)),
        Join,
        Run(TryPop),
    ],
    threads: &[&[PT], &[PT]],
};

/// push ‖ try_pop ‖ close.
pub const PUSH_TRY_POP_CLOSE: Scenario = Scenario {
    main: &[Spawn(1), Spawn(2), Run(Close), Join, Run(TryPop)],
    threads: &[&[Push(1)], &[TryPop]],
};

/// A reservation dropped (`reserve`, a yield, drop) ‖ push, then drain: the
/// drop cancels, or gives back a value that reached the handle.
pub const RESERVE_DROP_PUSH: Scenario = Scenario {
    main: &[Spawn(1), Run(Push(1)), Join, Run(TryPop), Run(TryPop)],
    threads: &[&[Op::ReserveDrop(Duration::ZERO)]],
};

/// `reserve`, `try_take`, drop ‖ push, then drain.
pub const RESERVE_TRY_TAKE_PUSH: Scenario = Scenario {
    main: &[Spawn(1), Run(Push(1)), Join, Run(TryPop), Run(TryPop)],
    threads: &[&[Op::ReserveTryTake(Duration::ZERO)]],
};
