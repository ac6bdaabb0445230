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
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
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
        pub(crate) fn snooze(&self) {
            self.done.set(true);
            yield_now();
        }
        pub(crate) fn is_completed(&self) -> bool {
            self.done.get()
        }
    }
}

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
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

    /// The spin phase before parking: crossbeam's `Backoff` (exponential
    /// `PAUSE`s, then `yield_now`s).
    pub(crate) type Spin = crossbeam_utils::Backoff;
}

pub(crate) use imp::*;
