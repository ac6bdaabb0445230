//! A small worker pool on a `DualQueue`: idle workers are waiting consumers,
//! so a submitted job goes straight to the worker that has been idle longest.
//!
//! ```text
//! cargo run --example workers
//! ```

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dualq::DualQueue;

/// A unit of work: an id to report back with and a closure computing a value.
struct Job {
    id: usize,
    work: Box<dyn FnOnce() -> u64 + Send>,
}

/// What a worker hands back for each job.
struct Done {
    job: usize,
    worker: usize,
    value: u64,
}

const WORKERS: usize = 4;
const JOBS: usize = 1_000;

/// Steps for `n` to reach 1 in the Collatz iteration: cheap, uneven work.
fn collatz_steps(mut n: u64) -> u64 {
    let mut steps = 0;
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

/// Waits (briefly) until `q` has `n` waiting consumers.
fn await_waiters<T>(q: &DualQueue<T>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while q.waiting_consumers() < n {
        assert!(Instant::now() < deadline, "workers did not start waiting");
        thread::yield_now();
    }
}

fn main() {
    let jobs = Arc::new(DualQueue::<Job>::new());
    let results = Arc::new(DualQueue::<Done>::new());

    // Start the workers one at a time, each parked in `pop` before the next
    // starts, so the line of waiters is worker 0, 1, 2, ...
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (queue, results) = (Arc::clone(&jobs), Arc::clone(&results));
            let handle = thread::spawn(move || {
                let mut ran = 0;
                // `pop` fails only once the queue is closed and drained.
                while let Ok(job) = queue.pop() {
                    let value = (job.work)();
                    results
                        .push(Done {
                            job: job.id,
                            worker,
                            value,
                        })
                        .expect("results stay open");
                    ran += 1;
                }
                ran
            });
            await_waiters(&jobs, worker + 1);
            handle
        })
        .collect();
    println!("{WORKERS} workers waiting for jobs");

    for id in 0..JOBS {
        let n = id as u64 + 1;
        jobs.push(Job {
            id,
            work: Box::new(move || collatz_steps(n)),
        })
        .expect("jobs stay open until we close");
    }

    let mut by_job = vec![None; JOBS];
    for _ in 0..JOBS {
        let done = results.pop().expect("results stay open");
        assert!(
            by_job[done.job]
                .replace((done.worker, done.value))
                .is_none(),
            "job {} ran twice",
            done.job
        );
    }
    jobs.close();
    let ran: Vec<usize> = workers
        .into_iter()
        .map(|w| w.join().expect("worker panicked"))
        .collect();

    // Each push hands its job to the oldest waiter. A worker that finishes
    // job 0 queues up again behind the others, so the first jobs go to the
    // workers in the order they started waiting, whatever the timing.
    let first: Vec<usize> = by_job[..WORKERS].iter().map(|r| r.unwrap().0).collect();
    assert_eq!(
        first,
        (0..WORKERS).collect::<Vec<_>>(),
        "waiters were not served oldest first"
    );
    println!("first {WORKERS} jobs went to workers {first:?}: the longest-waiting worker first");

    let per_worker: Vec<String> = ran
        .iter()
        .enumerate()
        .map(|(w, n)| format!("worker {w}: {n}"))
        .collect();
    println!("jobs run per worker: {}", per_worker.join(", "));
    assert_eq!(ran.iter().sum::<usize>(), JOBS);

    let total: u64 = by_job.iter().map(|r| r.unwrap().1).sum();
    let expected: u64 = (1..=JOBS as u64).map(collatz_steps).sum();
    assert_eq!(total, expected);
    println!("total Collatz steps for 1..={JOBS}: {total} (matches a sequential run)");
    println!("job queue closed: all {WORKERS} workers saw pop() fail and exited");
}
