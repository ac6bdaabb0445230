//! A quick race of `dualq` against its peers on the workloads of
//! BENCHMARKS.md, printed as one table. Run it with
//!
//! ```text
//! cargo run --release --example race
//! ```
//!
//! To finish in well under a minute on a 2-core machine it runs each workload
//! at 1/5 of its BENCHMARKS.md message count and takes the median of 3
//! rounds. Environment overrides:
//!
//! * `RACE_SCALE`: fraction of the BENCHMARKS.md counts, `0.2` or `1/5`.
//! * `RACE_ROUNDS`: rounds per cell (the median is reported).
//! * `RACE_THREADS`: replaces the 8 of mpmc-8x8, fanout-1x8 and pool-8t-2obj,
//!   e.g. `4` or `2,4,8,16`.
//! * `RACE_ONLY`: only the rows whose names contain one of these
//!   comma-separated parts, e.g. `pool` or `rendezvous-spsc,mem` (the later
//!   tables' rows are named `rendezvous-spsc`, `async-spsc`,
//!   `async-rendezvous-spsc`, ...).
//! * `RACE_TIMEOUT`: seconds one run may take before the race gives up and
//!   names it (a hang shows up as a message, not a silent stall).
//!
//! The `criterion` version of the same workloads is `benches/handoff.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

#[path = "../benches/common/mod.rs"]
mod common;

use common::{
    async_contenders, async_rendezvous_contenders, async_workloads, contenders,
    rendezvous_contenders, rendezvous_workloads, spin_floor, threads_from_env, workloads,
    Contender, Workload, OURS,
};

/// Counts live heap bytes, but only while `COUNTING` is set: an always-on
/// shared counter would be a contended cache line in every allocation and
/// tax the allocation-heavy structures in the timed workloads.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

fn note(delta: i64) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(delta, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting on the side does not allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn live_bytes() -> i64 {
    LIVE.load(Relaxed)
}

/// The run in progress, for the watchdog: (what, when it started).
static CURRENT: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// Runs `f` labelled `what` under the watchdog.
fn watched<R>(what: String, f: impl FnOnce() -> R) -> R {
    *CURRENT.lock().unwrap() = Some((what, Instant::now()));
    let result = f();
    *CURRENT.lock().unwrap() = None;
    result
}

/// Exits the process, naming the run, if one run takes longer than `limit`.
fn start_watchdog(limit: Duration) {
    thread::spawn(move || loop {
        thread::sleep(Duration::from_millis(200));
        if let Some((what, started)) = &*CURRENT.lock().unwrap() {
            if started.elapsed() > limit {
                eprintln!("race: {what} still running after {limit:?} (RACE_TIMEOUT); giving up");
                std::process::exit(2);
            }
        }
    });
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s}: not a valid value")),
        Err(_) => default,
    }
}

/// `RACE_SCALE` as a fraction: `0.2` or `1/5`.
fn scale_from_env() -> f64 {
    let Ok(s) = std::env::var("RACE_SCALE") else {
        return 0.2;
    };
    let parsed = match s.split_once('/') {
        Some((num, den)) => num
            .trim()
            .parse::<f64>()
            .ok()
            .zip(den.trim().parse::<f64>().ok())
            .map(|(n, d)| n / d),
        None => s.trim().parse().ok(),
    };
    match parsed {
        Some(x) if x > 0.0 && x.is_finite() => x,
        _ => panic!("RACE_SCALE={s}: expected a positive fraction like 0.2 or 1/5"),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

/// Values stored for the mem row, as in BENCHMARKS.md (not scaled: storing
/// them is quick).
const MEM_VALUES: u64 = 1_000_000;

/// Bytes resident in this process (Linux: `/proc/self/statm`), or `None`.
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The environment variable that makes this process a child measuring one
/// contender's resident memory (see [`resident_mem_row`]).
const RSS_CHILD: &str = "RACE_RSS_CHILD";

/// In a child started by [`resident_mem_row`]: stores `MEM_VALUES` in the
/// contender named by `RACE_RSS_CHILD` and prints how much the process's
/// resident memory grew, per value.
fn resident_mem_child(name: &str) {
    let contender = contenders()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{RSS_CHILD}={name}: no such contender"));
    let grown = (contender.mem)(MEM_VALUES, || resident_bytes().expect("statm"));
    println!("{}", grown as f64 / MEM_VALUES as f64);
}

/// Resident bytes per stored value, each contender measured in a fresh
/// process (this program, run again with `RACE_RSS_CHILD`), so that no
/// memory freed by an earlier run is reused. Unlike the heap-bytes row it
/// counts what the allocator really keeps: rounding, alignment, headers.
/// `None` where `/proc/self/statm` does not exist.
fn resident_mem_row(contenders: &[Contender]) -> Option<Vec<Option<f64>>> {
    resident_bytes()?;
    let exe = std::env::current_exe().ok()?;
    Some(
        contenders
            .iter()
            .map(|c| {
                let out = std::process::Command::new(&exe)
                    .env(RSS_CHILD, c.name)
                    .output()
                    .expect("run the resident-memory child");
                assert!(
                    out.status.success(),
                    "resident memory of {}: child failed",
                    c.name
                );
                let text = String::from_utf8_lossy(&out.stdout);
                Some(
                    text.trim()
                        .parse()
                        .expect("the child prints bytes per value"),
                )
            })
            .collect(),
    )
}

fn main() {
    if let Ok(name) = std::env::var(RSS_CHILD) {
        return resident_mem_child(&name);
    }
    let wall = Instant::now();
    let scale = scale_from_env();
    let rounds: usize = env_or("RACE_ROUNDS", 3).max(1);
    let threads = threads_from_env("RACE_THREADS");
    start_watchdog(Duration::from_secs(env_or("RACE_TIMEOUT", 30)));

    let contenders = contenders();
    let workloads: Vec<Workload> = workloads(&threads)
        .into_iter()
        .filter(|w| wanted(&w.name()))
        .collect();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!("dualq race: the workloads of BENCHMARKS.md, each at {scale} x its message count (RACE_SCALE),");
    println!(
        "median of {rounds} rounds (RACE_ROUNDS); every run checks the count and sum it received."
    );
    println!("machine: {cpus} CPUs, {}", cpu_model());
    println!(
        "cells: ns per message; pingpong: per round trip; pool: per pop+push; mem: heap bytes per"
    );
    println!("stored value with {MEM_VALUES} values stored (one run: it is deterministic); mem resident:");
    println!("the growth of resident memory for the same, one fresh process per structure. '-': not applicable.");
    println!();

    // mem first, while no other run has left epoch garbage behind whose
    // collection during the window would count as negative memory.
    let mem = wanted("mem").then(|| {
        COUNTING.store(true, Relaxed);
        let mem: Vec<Option<f64>> = contenders
            .iter()
            .map(|c| {
                let grown = watched(format!("mem on {}", c.name), || {
                    (c.mem)(MEM_VALUES, live_bytes)
                });
                Some(grown as f64 / MEM_VALUES as f64)
            })
            .collect();
        COUNTING.store(false, Relaxed);
        mem
    });

    let resident = wanted("mem")
        .then(|| resident_mem_row(&contenders))
        .flatten();

    // The spin floor runs in the same rounds as the pingpong's contenders,
    // as the last column, which comes off again before the table: it is a
    // yardstick, not a peer. Not on one CPU, where a spinning side holds
    // the only CPU its partner needs (each round trip then waits for the
    // floor's yields after 16k spins: ~0.8 ms, a yardstick of nothing).
    let floor_runs = cpus != 1;
    let mut timed = common::contenders();
    if floor_runs {
        timed.push(spin_floor());
    }
    let mut rows = measure(&workloads, &timed, rounds, scale);
    let floor: Vec<(f64, Vec<Option<f64>>)> = if floor_runs {
        rows.iter_mut()
            .filter_map(|(_, cells)| cells.pop().flatten().map(|f| (f, cells[..OURS].to_vec())))
            .collect()
    } else {
        Vec::new()
    };
    if let Some(mem) = mem {
        rows.push(("mem (bytes/value)".into(), mem));
    }
    if let Some(resident) = resident {
        rows.push(("mem resident (bytes/value)".into(), resident));
    }
    if !rows.is_empty() {
        print_table(&contenders, &rows);
    }
    for (floor, ours) in floor {
        let times_floor = |x: &Option<f64>| x.map_or("-".into(), |x| format!("{:.2}x", x / floor));
        println!(
            "pingpong spin floor (a spinning one-value slot each way, same rounds; not a peer): \
             {floor:.1} ns per round trip; queue {}, stack {} of it (issue 5's goal: at most 1.5x)",
            times_floor(&ours[0]),
            times_floor(&ours[1]),
        );
    }
    if !floor_runs && workloads.iter().any(|w| w.name() == "pingpong") {
        println!("pingpong spin floor: not run on one CPU (a spinning side holds the CPU its partner needs)");
    }
    if wanted("one-thread") {
        println!();
        println!(
            "one thread (nothing to contend with: batches of 1000 pushes, then 1000 pops): ns per"
        );
        println!("push and per pop, what an operation costs in instructions alone; the floor under each row.");
        println!();
        print_table(&contenders, &one_thread_rows(&contenders, rounds, scale));
    }

    table(
        "rendezvous (the sender waits until a receiver took the value): dualq's `transfer`\n\
         against the peers' zero-capacity channels; ns per message, pingpong per round trip.",
        "rendezvous-",
        &rendezvous_workloads(),
        &rendezvous_contenders(),
        rounds,
        scale,
    );
    table(
        "async consumers (each receive is a future: dualq's `pop_async`, flume's `recv_async`,\n\
         kanal's async `recv`) on buffered structures, producers send synchronously:",
        "async-",
        &async_workloads(),
        &async_contenders(),
        rounds,
        scale,
    );
    table(
        "async rendezvous (both sides futures: dualq's `transfer_async` + `pop_async` against\n\
         flume's and kanal's zero-capacity channels):",
        "async-rendezvous-",
        &async_workloads(),
        &async_rendezvous_contenders(),
        rounds,
        scale,
    );
    println!();
    println!(
        "below 1.0 in the last two columns: that dualq structure leads the row. total {:.1} s",
        wall.elapsed().as_secs_f64()
    );
}

/// Whether `RACE_ONLY` (a comma-separated list of substrings of row names,
/// e.g. `pool` or `async-rendezvous-spsc,mem`) selects the row `name`; every
/// row if it is unset.
fn wanted(name: &str) -> bool {
    match std::env::var("RACE_ONLY") {
        Ok(only) => only.split(',').any(|part| name.contains(part.trim())),
        Err(_) => true,
    }
}

/// One more table: `title`, then the rows of `workloads` (named with
/// `prefix` for `RACE_ONLY`) on `contenders`. Skipped if no row is wanted.
fn table(
    title: &str,
    prefix: &str,
    workloads: &[Workload],
    contenders: &[Contender],
    rounds: usize,
    scale: f64,
) {
    let workloads: Vec<Workload> = workloads
        .iter()
        .filter(|w| wanted(&format!("{prefix}{}", w.name())))
        .copied()
        .collect();
    if workloads.is_empty() {
        return;
    }
    println!();
    println!("{title}");
    println!();
    let rows = measure(&workloads, contenders, rounds, scale);
    print_table(contenders, &rows);
}

/// Runs every workload on every contender that supports it, `rounds` times,
/// and returns one row per workload: its label and each contender's median.
fn measure(
    workloads: &[Workload],
    contenders: &[Contender],
    rounds: usize,
    scale: f64,
) -> Vec<(String, Vec<Option<f64>>)> {
    // samples[workload][contender]: ns per op of each round. Rounds are the
    // outer loop so a burst of machine noise spreads over all cells.
    let mut samples = vec![vec![Vec::new(); contenders.len()]; workloads.len()];
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}...");
        for (w, workload) in workloads.iter().enumerate() {
            let ops = ((workload.full_ops() as f64 * scale).round() as u64).max(1);
            for (c, contender) in contenders.iter().enumerate() {
                if (contender.supports)(workload) {
                    let what = format!("{} on {} (round {round})", workload.name(), contender.name);
                    let elapsed = watched(what, || (contender.run)(workload, ops));
                    samples[w][c].push(elapsed.as_nanos() as f64 / ops as f64);
                }
            }
        }
    }
    workloads
        .iter()
        .zip(samples)
        .map(|(workload, cells)| {
            let label = match workload {
                Workload::PingPong => "pingpong (round trip)".to_owned(),
                _ => workload.name(),
            };
            let medians = cells
                .into_iter()
                .map(|s| (!s.is_empty()).then(|| median(s)))
                .collect();
            (label, medians)
        })
        .collect()
}

/// The one-thread rows: ns per push and per pop of every contender, the
/// median of `rounds` (each `5_000_000 * scale` values).
fn one_thread_rows(
    contenders: &[Contender],
    rounds: usize,
    scale: f64,
) -> Vec<(String, Vec<Option<f64>>)> {
    const BATCH: u64 = 1000;
    let batches = ((5_000_000.0 * scale / BATCH as f64).round() as u64).max(1);
    let (mut pushes, mut pops) = (
        vec![Vec::new(); contenders.len()],
        vec![Vec::new(); contenders.len()],
    );
    for _ in 0..rounds {
        for (c, contender) in contenders.iter().enumerate() {
            let (pushing, popping) = watched(format!("one thread on {}", contender.name), || {
                (contender.one_thread)(BATCH, batches)
            });
            let per_op = |d: Duration| d.as_nanos() as f64 / (BATCH * batches) as f64;
            pushes[c].push(per_op(pushing));
            pops[c].push(per_op(popping));
        }
    }
    let medians = |cells: Vec<Vec<f64>>| cells.into_iter().map(|s| Some(median(s))).collect();
    vec![
        ("push (one thread)".to_owned(), medians(pushes)),
        ("pop (one thread)".to_owned(), medians(pops)),
    ]
}

/// Prints the rows, with each dualq structure's ratio to the best peer.
fn print_table(contenders: &[Contender], rows: &[(String, Vec<Option<f64>>)]) {
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let col = |name: &str| name.len().max(9);
    print!("{:label_width$}", "workload");
    for c in contenders {
        print!("  {:>w$}", c.name, w = col(c.name));
    }
    println!("  {:>14}  {:>14}", "queue vs best", "stack vs best");
    for (label, cells) in rows {
        print!("{label:label_width$}");
        for (c, cell) in contenders.iter().zip(cells) {
            match cell {
                Some(x) => print!("  {x:>w$.1}", w = col(c.name)),
                None => print!("  {:>w$}", "-", w = col(c.name)),
            }
        }
        // The first OURS contenders are dualq's; the rest are its peers.
        let best_peer = cells[OURS..].iter().flatten().copied().reduce(f64::min);
        for ours in &cells[..OURS] {
            match (ours, best_peer) {
                (Some(ours), Some(best)) if best > 0.0 => print!("  {:>14.2}", ours / best),
                _ => print!("  {:>14}", "-"),
            }
        }
        println!();
    }
}
