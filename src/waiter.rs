//! A one-shot wake-up cell for a reservation whose waiter may be a thread or
//! an async task, and may change between waits (the `AtomicWaker` protocol of
//! futures-util and tokio, written over the loom shim so loom checks it).
//!
//! Every reservation and offer slot has one (`crate::slot`). Its loom models
//! are at the bottom of this file (run with the lib tests under
//! `--cfg loom`, see `.ci/run`).
//!
//! # Protocol
//!
//! One side *registers* (the waiting side: one thread or task at a time), the
//! other *wakes* (whoever completes the reservation: a producer, or `close`).
//! The waiting side's pattern is always:
//!
//! ```text
//! loop {
//!     if done() { break }          // Acquire: the slot's state
//!     cell.register(me);
//!     if done() { break }          // re-check after registering
//!     park / return Pending;
//! }
//! ```
//!
//! and the completing side's is "make `done()` true (Release), then
//! [`WaiterCell::wake`]". No wake-up is lost: the two sides meet on `state`,
//! which both change by read-modify-writes, so they are totally ordered there.
//!
//! # State table of `state` (bit flags)
//!
//! | state                   | `waiter` cell                          | transitions |
//! |-------------------------|----------------------------------------|-------------|
//! | `IDLE`                  | `None`, or a registered waiter, owned by the cell | register: CAS `IDLE -> REGISTERING`; wake: `fetch_or(WAKING)` |
//! | `REGISTERING`           | written by the registering side only   | register: CAS `REGISTERING -> IDLE` (done), or, failing because a wake came in, swap to `IDLE`, take its own waiter back and wake it |
//! | `REGISTERING \| WAKING` | still the registering side's           | register's final CAS fails: as above |
//! | `WAKING`                | taken by the waking side only          | wake: took the waiter, `fetch_and(!WAKING)` back to `IDLE`, then wakes it. A register meanwhile fails its first CAS and wakes itself |
//!
//! The `waiter` cell is accessed only by the side that moved `state` out of
//! `IDLE` (to `REGISTERING` or to `WAKING`), so the two never touch it at
//! once.

use std::fmt;
use std::task::Waker;

use crate::sync::{AtomicUsize, Ordering, Thread, UnsafeCell};

const IDLE: usize = 0;
const REGISTERING: usize = 0b01;
const WAKING: usize = 0b10;

/// Who waits on a reservation.
pub(crate) enum Waiter {
    /// A blocked thread: woken by `unpark`.
    Thread(Thread),
    /// An async task: woken through its waker.
    Task(Waker),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Waiter::Thread(_) => "Waiter::Thread",
            Waiter::Task(_) => "Waiter::Task",
        })
    }
}

/// The registered waiter of one reservation (module docs).
pub(crate) struct WaiterCell {
    state: AtomicUsize,
    waiter: UnsafeCell<Option<Waiter>>,
}

// SAFETY: `waiter` is only accessed by the side that holds the cell's state
// out of `IDLE` (state table), and a `Waiter` (a `Thread` or a `Waker`) is
// `Send + Sync`.
unsafe impl Send for WaiterCell {}
// SAFETY: as above.
unsafe impl Sync for WaiterCell {}

impl WaiterCell {
    /// An empty cell.
    pub(crate) fn new() -> Self {
        WaiterCell {
            state: AtomicUsize::new(IDLE),
            waiter: UnsafeCell::new(None),
        }
    }

    /// Registers `waiter` to be woken by the next [`wake`](Self::wake),
    /// replacing any waiter registered before. If a wake is running right now
    /// (it may have missed this registration), wakes `waiter` itself at once;
    /// the caller re-checks its condition either way (module docs).
    ///
    /// Only one side may register at a time (the reservation's owner).
    pub(crate) fn register(&self, waiter: Waiter) {
        // Acquire: if a wake finished before, we see the waiter cell as it
        // left it (empty); pairs with its Release `fetch_and`.
        match self
            .state
            .compare_exchange(IDLE, REGISTERING, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: state is REGISTERING and we moved it there: the
                // waiter cell is ours (state table). A previous waiter is
                // dropped here, unwoken: it is being replaced.
                self.waiter.with_mut(|w| unsafe { *w = Some(waiter) });
                // AcqRel: Release publishes the waiter to the waking side's
                // Acquire `fetch_or`; Acquire (on failure too) makes the
                // completing side's earlier writes visible before we wake
                // ourselves.
                if let Err(actual) = self.state.compare_exchange(
                    REGISTERING,
                    IDLE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    // A wake came in while we registered and left the waiter
                    // to us.
                    debug_assert_eq!(actual, REGISTERING | WAKING);
                    // SAFETY: still ours: the waking side does not touch the
                    // cell when it finds REGISTERING set.
                    let mine = self.waiter.with_mut(|w| unsafe { (*w).take() });
                    // Release: the cell is empty again for the next register.
                    self.state.swap(IDLE, Ordering::AcqRel);
                    if let Some(mine) = mine {
                        mine.wake();
                    }
                }
            }
            Err(_) => {
                // WAKING: a wake is taking out the previous waiter right now
                // and will not see this one. Wake it ourselves: the caller's
                // re-check then sees the completion.
                waiter.wake();
            }
        }
    }

    /// Wakes the registered waiter, if any (and forgets it). Called once the
    /// condition the waiter checks has been made true (with `Release`).
    pub(crate) fn wake(&self) {
        if let Some(waiter) = self.take() {
            waiter.wake();
        }
    }

    /// Drops the registered waiter, if any, without waking it: the waiting
    /// side's clean-up once its wait is over for good, so that a task's
    /// waker is not kept alive by a node that lingers (a dead offer buried
    /// in a stack lingers until it surfaces). A wake racing it either takes
    /// the waiter first (a harmless late wake-up) or finds the cell held
    /// and does nothing.
    pub(crate) fn forget(&self) {
        drop(self.take());
    }

    /// Takes the registered waiter out, if the cell is idle; `None` if
    /// there is none, or a register or another take holds the cell (the
    /// register then wakes its own waiter; the other take has it).
    fn take(&self) -> Option<Waiter> {
        // AcqRel: Acquire pairs with the registering side's Release CAS (we
        // see its waiter); Release orders our caller's completion before it,
        // for a register that fails on our flag.
        if self.state.fetch_or(WAKING, Ordering::AcqRel) != IDLE {
            return None;
        }
        // SAFETY: we moved the state out of IDLE: the cell is ours.
        let waiter = self.waiter.with_mut(|w| unsafe { (*w).take() });
        // Release: pairs with the Acquire CAS of the next register.
        self.state.fetch_and(!WAKING, Ordering::Release);
        waiter
    }
}

impl fmt::Debug for WaiterCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaiterCell").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn woken(c: &Count) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn wake_wakes_the_registered_task_once() {
        let cell = WaiterCell::new();
        let count = Arc::new(Count::default());
        cell.register(Waiter::Task(Waker::from(Arc::clone(&count))));
        assert_eq!(woken(&count), 0);
        cell.wake();
        assert_eq!(woken(&count), 1);
        cell.wake(); // nobody registered: nothing to wake
        assert_eq!(woken(&count), 1);
    }

    #[test]
    fn register_replaces_the_previous_waiter() {
        let cell = WaiterCell::new();
        let (old, new) = (Arc::new(Count::default()), Arc::new(Count::default()));
        cell.register(Waiter::Task(Waker::from(Arc::clone(&old))));
        cell.register(Waiter::Task(Waker::from(Arc::clone(&new))));
        cell.wake();
        assert_eq!((woken(&old), woken(&new)), (0, 1));
    }

    #[test]
    fn wake_before_register_is_not_remembered() {
        // One-shot by design: the caller's re-check after registering is what
        // catches a completion that came first.
        let cell = WaiterCell::new();
        cell.wake();
        let count = Arc::new(Count::default());
        cell.register(Waiter::Task(Waker::from(Arc::clone(&count))));
        assert_eq!(woken(&count), 0);
    }

    // Threads: a waiter parked after register + re-check is always woken
    // (a lost wake-up parks it for good: the test then fails on its deadline).
    #[test]
    fn parked_thread_is_woken() {
        let patience = std::time::Duration::from_secs(60);
        for _ in 0..if cfg!(miri) { 20 } else { 2_000 } {
            let cell = Arc::new(WaiterCell::new());
            let done = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (cell, done) = (Arc::clone(&cell), Arc::clone(&done));
                std::thread::spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        cell.register(Waiter::Thread(std::thread::current()));
                        if done.load(std::sync::atomic::Ordering::Acquire) {
                            break;
                        }
                        std::thread::park();
                    }
                })
            };
            done.store(true, std::sync::atomic::Ordering::Release);
            cell.wake();
            let start = std::time::Instant::now();
            while !waiter.is_finished() {
                assert!(start.elapsed() < patience, "a wake-up was lost");
                std::thread::yield_now();
            }
            waiter.join().unwrap();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
        crate::sync::loom_model(&format!("waiter::{name}"), f);
    }

    /// The waiting side's loop of the module docs, on a thread.
    fn wait_for(cell: &WaiterCell, done: &AtomicBool) {
        while !done.load(Ordering::Acquire) {
            cell.register(Waiter::Thread(thread::current()));
            if done.load(Ordering::Acquire) {
                break;
            }
            // A lost wake-up parks for good: loom reports the deadlock.
            thread::park();
        }
    }

    /// The completing side of the module docs, on a thread: make the
    /// condition true (`Release`), then wake.
    fn complete_on_a_thread(
        cell: &Arc<WaiterCell>,
        done: &Arc<AtomicBool>,
    ) -> thread::JoinHandle<()> {
        let (cell, done) = (Arc::clone(cell), Arc::clone(done));
        thread::spawn(move || {
            done.store(true, Ordering::Release);
            cell.wake();
        })
    }

    // A completion racing a registration at every point: the waiter always
    // wakes.
    #[test]
    fn wake_races_register() {
        model("wake_races_register", || {
            let cell = Arc::new(WaiterCell::new());
            let done = Arc::new(AtomicBool::new(false));
            // Not joined: the waker's unpark may reach this thread after it
            // stopped waiting, and loom's `join` takes a stray unpark for
            // its own notification (std's does not care). Loom runs the
            // spawned thread to completion anyway.
            let _ = complete_on_a_thread(&cell, &done);
            wait_for(&cell, &done);
        });
    }

    // A reservation that changes hands: the thread that linked it registered
    // itself, then another thread waits on it (a `Reservation` sent away),
    // while the completion races the hand-over. The new waiter always wakes;
    // the old registration may be woken spuriously (harmless) or dropped.
    #[test]
    fn wake_races_handover() {
        model("wake_races_handover", || {
            let cell = Arc::new(WaiterCell::new());
            let done = Arc::new(AtomicBool::new(false));
            cell.register(Waiter::Thread(thread::current()));
            let new_owner = {
                let (cell, done) = (Arc::clone(&cell), Arc::clone(&done));
                thread::spawn(move || wait_for(&cell, &done))
            };
            done.store(true, Ordering::Release);
            cell.wake();
            new_owner.join().unwrap();
        });
    }

    // The owner forgetting its registration after its wait ended, racing the
    // completion's wake: the cell is never touched by both at once (loom
    // checks the `UnsafeCell`), and the waiter ends up dropped exactly once
    // (taken by one side, or never registered).
    #[test]
    fn forget_races_wake() {
        model("forget_races_wake", || {
            let cell = Arc::new(WaiterCell::new());
            let done = Arc::new(AtomicBool::new(false));
            let completer = complete_on_a_thread(&cell, &done);
            // The owner registers (a task's waker here: no park) and looks
            // again, as `poll_with` does, then gives up its wait: forget.
            let waker = std::task::Waker::from(std::sync::Arc::new(NoWake));
            cell.register(Waiter::Task(waker));
            let _ = done.load(Ordering::Acquire);
            cell.forget();
            completer.join().unwrap();
            assert!(
                cell.take().is_none(),
                "a waiter was left in the cell after forget and wake"
            );
        });
    }

    struct NoWake;

    impl std::task::Wake for NoWake {
        fn wake(self: std::sync::Arc<Self>) {}
    }
}
