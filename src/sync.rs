//! The std/loom switch: every primitive the algorithms touch comes from here,
//! so the code loom checks is the code users run.
//!
//! Under `--cfg loom` (with `--cfg crossbeam_loom`, so that crossbeam-epoch's
//! atomics are loom's too) the atomics, cells, threads and parking are loom's.
//! Loom has no timed park: a timed wait there behaves as if its deadline fires
//! right after the first check, which lets loom explore a cancel racing a
//! fulfilment at every point.

pub(crate) use crossbeam_epoch as epoch;

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering,
    };
    pub(crate) use loom::thread::{current, park, yield_now, Thread};

    use std::time::Instant;

    /// Parks until unparked or, for a timed wait, reports the deadline as
    /// passed at once (loom has no clock; see the module docs).
    ///
    /// Returns `true` when the caller should treat its deadline as passed.
    pub(crate) fn park_until(deadline: Option<Instant>) -> bool {
        match deadline {
            Some(_) => true,
            None => {
                park();
                false
            }
        }
    }

    /// A bounded spin phase. Under loom every step yields (loom's scheduler is
    /// unfair, so a spin without a yield never ends), and the phase is one step
    /// long so that models reach the park path.
    #[derive(Debug, Default)]
    pub(crate) struct Spin {
        done: std::cell::Cell<bool>,
    }

    impl Spin {
        pub(crate) fn new() -> Self {
            Self::default()
        }
        /// The same one step under loom.
        pub(crate) fn long() -> Self {
            Self::default()
        }
        /// The same one step under loom.
        pub(crate) fn long_fine() -> Self {
            Self::default()
        }
        pub(crate) fn snooze(&self) {
            self.done.set(true);
            yield_now();
        }
        pub(crate) fn is_completed(&self) -> bool {
            self.done.get()
        }
        pub(crate) fn is_checkpoint(&self) -> bool {
            true
        }
    }
}

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering,
    };
    pub(crate) use std::thread::{current, park, park_timeout, Thread};

    use std::time::Instant;

    /// `UnsafeCell` with loom's closure API, so the algorithm code is the same
    /// under both; it compiles to a plain pointer access.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Parks until unparked or until `deadline`. Spurious wake-ups are allowed;
    /// callers re-check their state in a loop.
    ///
    /// Returns `true` when `deadline` has passed.
    pub(crate) fn park_until(deadline: Option<Instant>) -> bool {
        match deadline {
            None => {
                park();
                false
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return true;
                }
                park_timeout(deadline - now);
                Instant::now() >= deadline
            }
        }
    }

    /// The three spin phases (see [`Spin`]).
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Shape {
        /// [`Spin::new`].
        Poll,
        /// [`Spin::long`].
        Long,
        /// [`Spin::long_fine`].
        LongFine,
    }

    /// Whether this process can run on more than one CPU, so that a thread
    /// spinning on a word can see another thread write it meanwhile. On
    /// one CPU (a one-CPU machine, affinity mask or cgroup quota) a spin
    /// only delays the thread it waits for, so the spin phases cut their
    /// `PAUSE`s to a few (7 or 8, ~0.2 µs) and go on to the yields, which
    /// hand the CPU over. Asked once per process, of
    /// `available_parallelism`; if it cannot tell, several (the old
    /// behaviour). kanal's spins make the same check.
    ///
    /// The answer can be wrong, hence a few `PAUSE`s rather than none: on
    /// Linux `available_parallelism` reads the affinity mask of the thread
    /// that asks first, so a program that pins each thread to its own core
    /// gets "one" although its threads run in parallel (its waiters then
    /// look after every `PAUSE` for ~0.2 µs, then after every yield, ~0.4
    /// µs); and a fractional quota (1.5 CPUs) rounds down to one.
    ///
    /// Measured with `taskset -c 0` (session 11, `race`): see
    /// `docs/scaling.md`, "One CPU".
    pub(super) fn several_cpus() -> bool {
        use std::sync::atomic::{AtomicU8, Ordering};
        const UNKNOWN: u8 = 0;
        const ONE: u8 = 1;
        const SEVERAL: u8 = 2;
        // Relaxed: a cached answer, the same whoever computes it.
        static CPUS: AtomicU8 = AtomicU8::new(UNKNOWN);
        match CPUS.load(Ordering::Relaxed) {
            UNKNOWN => {
                let several = std::thread::available_parallelism().map_or(true, |n| n.get() > 1);
                CPUS.store(if several { SEVERAL } else { ONE }, Ordering::Relaxed);
                several
            }
            cpus => cpus == SEVERAL,
        }
    }

    /// A spin phase before parking: 127 `PAUSE`s, then `yield_now`s: 4
    /// for a [`Spin::new`] (a consumer polling before it joins the line, a
    /// consumer waiting for a producer's write), 64 for a [`Spin::long`] or
    /// [`Spin::long_fine`] (the waiter served next: first in line, or an
    /// offer on top). The `PAUSE`s come in doubling runs (1, 2, ..., 64, as
    /// crossbeam's `Backoff`), or for `long_fine` one between looks.
    ///
    /// Why one `PAUSE` between looks for a waiter on its own slot (session
    /// 10): a `PAUSE` takes ~22 ns on this VM's AMD EPYC (65 cycles on Zen
    /// 2; it was ~10 cycles on the CPUs `Backoff` was tuned on), so the
    /// doubling runs reach 64 `PAUSE`s = 1.4 µs per look, and a waiter
    /// saw its fulfilment up to a whole run late. Looking at one's own slot
    /// costs others little (its line also holds the node's `next` and
    /// `refs`, written only when a node is linked after it or it leaves
    /// the list), so the waiter looks after every `PAUSE`. Measured in
    /// alternating runs: the queue's fanout-1x8 ~65 -> ~29 ns, rendezvous
    /// spsc and mpmc-2x2 10-35 % faster for both structures; rendezvous
    /// pingpong 0-8 % slower. The stack's reservations keep the doubling
    /// runs ([`WaitSpin::Coarse`]): with one `PAUSE` per look its
    /// fanout-1x8 was ~1.5x slower in one set of alternating runs (not
    /// explained; a guess: served consumers come back sooner to poll
    /// `top`, the producer's word). Pollers of shared words (`Spin::new`)
    /// keep the runs: each of their looks pulls a line the producer
    /// writes, and one `PAUSE` between polls made the queue's pool row
    /// 10-20 % slower.
    ///
    /// Why two lengths (measured in `race`, session 9): with 4 yields the
    /// rendezvous pingpong fell, in 2 runs of 6, into a mode where every
    /// round trip parks (~21 µs instead of ~0.4 µs): one late answer parks
    /// one side, its partner then waits a whole wake-up (~20 µs on this VM),
    /// longer than its own spin, and parks too, and so on. With 64 yields
    /// for the waiter served next, none of 12 runs fell into that mode (10
    /// at ~0.4 µs, 2 at ~1.3 µs). Giving
    /// every waiter 64 yields made fanout-1x8 ~3x slower in 2 runs of 3
    /// (eight polling consumers take the producer's core), so the pollers
    /// keep 4; with 64 for the waiter served next only, the queue's
    /// fanout-1x8 was 0-20 % slower than before in 4 alternating runs (a
    /// noisy phase; the stack's was not slower). kanal, for comparison,
    /// yields up to 256 times.
    ///
    /// On one CPU the `PAUSE`s are cut to a few ([`several_cpus`]).
    #[derive(Debug)]
    pub(crate) struct Spin {
        step: std::cell::Cell<u32>,
        pub(super) pause_steps: u32,
        max_pauses: u32,
        yields: u32,
    }

    impl Spin {
        /// Steps of `PAUSE`s, doubling each time.
        const PAUSE_STEPS: u32 = 7;

        /// A short spin phase: 4 yields.
        pub(crate) fn new() -> Self {
            Self::shaped(Shape::Poll, several_cpus())
        }

        /// A long spin phase, for the waiter served next: 64 yields.
        pub(crate) fn long() -> Self {
            Self::shaped(Shape::Long, several_cpus())
        }

        /// [`Spin::long`] with one `PAUSE` per step instead of doubling
        /// runs (as many `PAUSE`s in all): a waiter that watches only its
        /// own slot sees its partner's write sooner.
        pub(crate) fn long_fine() -> Self {
            Self::shaped(Shape::LongFine, several_cpus())
        }

        /// A phase of `shape`; with a few `PAUSE`s only, unless `pause`
        /// (see [`several_cpus`]).
        pub(super) fn shaped(shape: Shape, pause: bool) -> Self {
            // (steps of `PAUSE`s, the steps on one CPU: 1 + 2 + 4 or 8
            // single `PAUSE`s, `PAUSE`s per step at most, yields).
            let (pause_steps, one_cpu_steps, max_pauses, yields) = match shape {
                Shape::Poll => (Self::PAUSE_STEPS, 3, u32::MAX, 4),
                Shape::Long => (Self::PAUSE_STEPS, 3, u32::MAX, 64),
                Shape::LongFine => ((1 << Self::PAUSE_STEPS) - 1, 8, 1, 64),
            };
            Spin {
                step: std::cell::Cell::new(0),
                pause_steps: if pause { pause_steps } else { one_cpu_steps },
                max_pauses,
                yields,
            }
        }

        pub(crate) fn snooze(&self) {
            let step = self.step.get();
            if step < self.pause_steps {
                for _ in 0..self.pauses_at(step) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if step < self.pause_steps + self.yields {
                self.step.set(step + 1);
            }
        }

        pub(crate) fn is_completed(&self) -> bool {
            self.step.get() >= self.pause_steps + self.yields
        }

        /// Whether a waiter with a deadline should read the clock now,
        /// after the step just made: after each run of doubling `PAUSE`s
        /// and each yield; of single `PAUSE`s, after each of the first 8
        /// (a timeout of a few ns ends at once) and then after every 8th
        /// (a read of the clock costs about as much as a `PAUSE`, ~20 ns).
        pub(crate) fn is_checkpoint(&self) -> bool {
            let step = self.step.get();
            self.max_pauses > 1 || step >= self.pause_steps || step <= 8 || step % 8 == 0
        }

        /// The `PAUSE`s of step `step` (below `pause_steps`).
        pub(super) fn pauses_at(&self, step: u32) -> u32 {
            (1u32 << step.min(31)).min(self.max_pauses)
        }
    }
}

pub(crate) use imp::*;

/// How the waiter served next (first in line, or an offer on top) spins
/// before it parks; any other waiter parks at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitSpin {
    /// Not served next: park at once.
    Park,
    /// [`Spin::long`]: doubling runs of `PAUSE`s, then yields.
    Coarse,
    /// [`Spin::long_fine`]: one `PAUSE` between looks, then yields.
    Fine,
}

impl WaitSpin {
    /// `Fine` for the waiter served next, `Park` for any other.
    pub(crate) fn fine_if(served_next: bool) -> Self {
        if served_next {
            WaitSpin::Fine
        } else {
            WaitSpin::Park
        }
    }
}

/// Runs the loom model `f` at preemption bound 3 (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise) and prints how many interleavings
/// it explored: the unit-test models' common runner.
#[cfg(all(test, loom))]
pub(crate) fn loom_model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    loom_model_long(name, 1_000, f);
}

/// `loom_model` for models whose single-threaded setup takes more than
/// loom's default 1,000 branches (atomic operations) per execution.
#[cfg(all(test, loom))]
pub(crate) fn loom_model_long(
    name: &str,
    max_branches: usize,
    f: impl Fn() + Sync + Send + 'static,
) {
    loom_model_with(name, 3, max_branches, f);
}

/// `loom_model_long` with another default preemption bound: for models
/// whose every execution runs many epoch operations (pins, flushes), where
/// a bound of 3 costs minutes.
#[cfg(all(test, loom))]
pub(crate) fn loom_model_with(
    name: &str,
    preemptions: usize,
    max_branches: usize,
    f: impl Fn() + Sync + Send + 'static,
) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(preemptions);
    builder.max_branches = builder.max_branches.max(max_branches);
    builder.check(move || {
        counter.fetch_add(1, Relaxed);
        f();
    });
    println!("loom model {name}: {} interleavings", runs.load(Relaxed));
}

/// The `Acquire` half of dropping the last reference of a reference count
/// whose decrements are `Release` `fetch_sub`s: call it after the decrement
/// that returned 1, before freeing. Every other owner's accesses then
/// happen-before the free.
///
/// Normally `fence(Acquire)`, as in `Arc`. ThreadSanitizer does not model
/// standalone fences, so under it (`cfg(dualq_sanitize_thread)`, set by
/// `build.rs` for `-Zsanitizer=thread`) this is an `Acquire` load of the
/// counter instead, as std's `Arc` does under TSan. The two are equivalent
/// here: the load reads the value our own decrement wrote (nobody else holds
/// a reference, so nothing writes the counter again), and that decrement is
/// in the release sequence of every earlier `Release` decrement (a release
/// sequence continues through later read-modify-writes), so the load
/// synchronizes with each of them, exactly as the fence does.
#[inline]
pub(crate) fn acquire_last_ref(refs: &AtomicUsize) {
    #[cfg(not(dualq_sanitize_thread))]
    {
        let _ = refs;
        fence(Ordering::Acquire);
    }
    #[cfg(dualq_sanitize_thread)]
    {
        let _ = refs.load(Ordering::Acquire);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::imp::{several_cpus, Shape};
    use super::Spin;

    /// How many snoozes a spin phase lasts.
    fn length(spin: &Spin) -> usize {
        let mut snoozes = 0;
        while !spin.is_completed() {
            spin.snooze();
            snoozes += 1;
        }
        snoozes
    }

    /// How many of a spin phase's steps are clock checkpoints.
    fn checkpoints(spin: &Spin) -> usize {
        let mut checkpoints = 0;
        while !spin.is_completed() {
            spin.snooze();
            checkpoints += usize::from(spin.is_checkpoint());
        }
        checkpoints
    }

    /// The `PAUSE`s a spin phase makes in all, and the most in one step.
    fn pauses(spin: &Spin) -> (u32, u32) {
        let per_step = (0..spin.pause_steps).map(|step| spin.pauses_at(step));
        (per_step.clone().sum(), per_step.max().unwrap_or(0))
    }

    // 7 steps of doubling `PAUSE` runs (127 single `PAUSE`s for
    // `long_fine`), then the yields: 4 for a poller, 64 for the waiter
    // served next (see `Spin`).
    #[test]
    fn spin_phases_are_pauses_then_4_or_64_yields() {
        let [poll, long, fine] =
            [Shape::Poll, Shape::Long, Shape::LongFine].map(|s| Spin::shaped(s, true));
        assert_eq!(length(&poll), 7 + 4);
        assert_eq!(length(&Spin::shaped(Shape::Long, true)), 7 + 64);
        assert_eq!(length(&Spin::shaped(Shape::LongFine, true)), 127 + 64);
        assert_eq!(pauses(&poll), (127, 64));
        assert_eq!(pauses(&long), (127, 64));
        assert_eq!(pauses(&fine), (127, 1));
        // A waiter with a deadline reads the clock after every step of
        // doubling runs and every yield, and after the first 8 single
        // `PAUSE`s and every 8th after them (`Slot::block`).
        assert_eq!(checkpoints(&long), 7 + 64);
        // Steps 1-8, 16, 24, ..., 120, and 127 (the last `PAUSE`).
        assert_eq!(checkpoints(&fine), 8 + 14 + 1 + 64);
        let spin = Spin::new();
        length(&spin);
        spin.snooze();
        assert!(spin.is_completed(), "a completed phase stays completed");
    }

    // On one CPU the phases keep a few `PAUSE`s (1 + 2 + 4, or 8 single
    // ones, each a checkpoint), then the same yields.
    #[test]
    fn on_one_cpu_spin_phases_pause_briefly_then_yield() {
        for (shape, steps, pauses_in_all, most, yields) in [
            (Shape::Poll, 3, 7, 4, 4),
            (Shape::Long, 3, 7, 4, 64),
            (Shape::LongFine, 8, 8, 1, 64),
        ] {
            let spin = Spin::shaped(shape, false);
            assert_eq!(pauses(&spin), (pauses_in_all, most), "{shape:?}");
            assert_eq!(length(&spin), (steps + yields) as usize, "{shape:?}");
            let spin = Spin::shaped(shape, false);
            assert_eq!(checkpoints(&spin), (steps + yields) as usize, "{shape:?}");
        }
    }

    // The public constructors are the three shapes, with or without the
    // full `PAUSE` phase as the process's CPUs say.
    #[test]
    fn spin_phases_follow_the_cpus_available() {
        let several = std::thread::available_parallelism().map_or(true, |n| n.get() > 1);
        assert_eq!(several_cpus(), several);
        let shape = |spin: Spin| {
            let pauses = pauses(&spin);
            (pauses, spin.pause_steps, checkpoints(&spin))
        };
        assert_eq!(
            shape(Spin::new()),
            shape(Spin::shaped(Shape::Poll, several))
        );
        assert_eq!(
            shape(Spin::long()),
            shape(Spin::shaped(Shape::Long, several))
        );
        assert_eq!(
            shape(Spin::long_fine()),
            shape(Spin::shaped(Shape::LongFine, several))
        );
    }
}
