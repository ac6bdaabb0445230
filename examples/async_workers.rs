//! An async worker pool: a thousand worker *tasks* wait on one `DualQueue`
//! with `pop_async`, all on a single executor thread, while plain threads
//! submit jobs with `push`. A waiting task is a reservation in the queue and
//! costs nothing until a job is handed to it: the oldest idle task gets the
//! next job, exactly as with blocking workers. `dualq` needs no runtime; the
//! tiny executor below (a ready queue and a `Waker` per task) stands in for
//! tokio, async-std or smol.
//!
//! At the end, pending `pop_async` futures are dropped mid-wait, and a job
//! handed to one of them just before is *given back* to the queue, not lost.
//!
//! ```text
//! cargo run --release --example async_workers
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::Instant;

use dualq::DualQueue;

const TASKS: usize = 1_000;
const SUBMITTERS: usize = 4;
const JOBS_PER_SUBMITTER: u64 = 25_000;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The smallest useful executor: tasks, a queue of ready task ids, and the
/// executor thread to unpark when a task becomes ready.
struct Executor {
    ready: Mutex<VecDeque<usize>>,
    thread: thread::Thread,
}

struct TaskWaker {
    id: usize,
    executor: Arc<Executor>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.executor.ready.lock().unwrap().push_back(self.id);
        self.executor.thread.unpark();
    }
}

/// Runs `tasks` on this thread until every one has finished.
fn run(tasks: Vec<Task>) {
    let executor = Arc::new(Executor {
        ready: Mutex::new((0..tasks.len()).collect()),
        thread: thread::current(),
    });
    let wakers: Vec<Waker> = (0..tasks.len())
        .map(|id| {
            Waker::from(Arc::new(TaskWaker {
                id,
                executor: executor.clone(),
            }))
        })
        .collect();
    let mut tasks: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
    let mut live = tasks.len();
    while live > 0 {
        let next = executor.ready.lock().unwrap().pop_front();
        let Some(id) = next else {
            thread::park(); // a wake pushes an id and unparks us
            continue;
        };
        // A task may be woken again after it finished: skip it.
        let Some(task) = tasks[id].as_mut() else {
            continue;
        };
        if task
            .as_mut()
            .poll(&mut Context::from_waker(&wakers[id]))
            .is_ready()
        {
            tasks[id] = None;
            live -= 1;
        }
    }
}

fn main() {
    let jobs = Arc::new(DualQueue::<u64>::new());
    let sum = Arc::new(AtomicU64::new(0));
    let per_task: Arc<Vec<AtomicUsize>> =
        Arc::new((0..TASKS).map(|_| AtomicUsize::new(0)).collect());

    // The workers: async tasks that pop until the queue is closed.
    let tasks: Vec<Task> = (0..TASKS)
        .map(|id| {
            let (jobs, sum, per_task) = (jobs.clone(), sum.clone(), per_task.clone());
            Box::pin(async move {
                while let Ok(job) = jobs.pop_async().await {
                    sum.fetch_add(job, Ordering::Relaxed);
                    per_task[id].fetch_add(1, Ordering::Relaxed);
                }
            }) as Task
        })
        .collect();

    let start = Instant::now();
    let executor = thread::spawn(move || run(tasks));
    // Give the tasks a moment to line up (not needed for correctness).
    while jobs.waiting_consumers() < TASKS && !executor.is_finished() {
        thread::yield_now();
    }
    println!(
        "{} async workers waiting on one executor thread",
        jobs.waiting_consumers()
    );

    let submitters: Vec<_> = (0..SUBMITTERS as u64)
        .map(|s| {
            let jobs = jobs.clone();
            thread::spawn(move || {
                for j in 0..JOBS_PER_SUBMITTER {
                    jobs.push(s * JOBS_PER_SUBMITTER + j + 1).unwrap();
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    jobs.close(); // the tasks drain what is left, then see `Closed`
    executor.join().unwrap();

    let total = SUBMITTERS as u64 * JOBS_PER_SUBMITTER;
    assert_eq!(
        sum.load(Ordering::Relaxed),
        total * (total + 1) / 2,
        "a job was lost or run twice"
    );
    let busy = per_task
        .iter()
        .filter(|n| n.load(Ordering::Relaxed) > 0)
        .count();
    println!(
        "{total} jobs done in {:?} by {busy} of {TASKS} tasks; every job exactly once",
        start.elapsed()
    );

    // Cancel-safety: a job handed to a pending future that is then dropped
    // goes back into the queue.
    let q = DualQueue::new();
    let mut waiting = Box::pin(q.pop_async());
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let noop = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&noop);
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    q.push("job handed to a future that is dropped").unwrap(); // goes to the future...
    assert!(q.is_empty());
    drop(waiting); // ...which is dropped before it is polled again
    println!("after the drop, the queue holds: {:?}", q.try_pop());
}
