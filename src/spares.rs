//! Spares: allocations the structures recycle instead of freeing (the
//! queue's exhausted segments, the stack's dead blocks).
//!
//! A segment or block is retired through the epoch when its last value
//! leaves, and the next values need a fresh one. Allocating and freeing
//! them cost about a fifth of the buffered path's time (profiled on spsc,
//! before this pool): the producer allocates, the epoch frees on whichever
//! thread collects (usually a consumer), so with glibc's malloc the two
//! threads contend on the producer's arena lock (a `futex` call every few
//! hundred values, measured). A structure therefore keeps a few retired
//! allocations here and the producer takes one instead of allocating.
//!
//! # Who touches a spare
//!
//! | where it is | who owns it | how it moves on |
//! |-------------|-------------|-----------------|
//! | in use (linked in the structure) | the structure | it is retired through the epoch when its last value leaves |
//! | retired | the epoch collector | after the grace period (no pinned thread can still reach it) the deferred function resets it and [`put`](Spares::put)s it here, or frees it if every slot is taken |
//! | in a slot | the slot | a [`take`](Spares::take) swaps it out: the taker owns it alone |
//!
//! A slot hands its spare to exactly one owner (each move is one atomic
//! RMW on the slot), and a spare enters a slot only after its grace
//! period, so no thread still reads it: reuse is as safe as a free.
//!
//! # Memory
//!
//! The pool is shared (`Arc`) with the deferred functions, which may run
//! after the structure is dropped; the last owner frees what the slots
//! still hold. So a dropped structure's pool lives on until the last of its
//! pending deferred functions has run (they run when some thread's pins
//! collect them, as any deferred free does).
//!
//! A pool holds at most [`Spares::with_budget`]'s bytes (and at most
//! [`MAX_SLOTS`] spares): that much stays allocated for as long as the
//! structure lives, even when it is empty. A structure whose one segment or
//! block is bigger than the budget keeps none (its pool has no slot).

use std::ptr;

use crate::sync::{AtomicPtr, Ordering};

/// The most spares a pool keeps. Crossbeam-epoch runs deferred functions a
/// bag (64) at a time, so a pool that keeps fewer than a bag recycles only
/// part of each burst of retired segments.
pub(crate) const MAX_SLOTS: usize = 64;

/// Up to `capacity` retired allocations of type `S`, for reuse.
pub(crate) struct Spares<S> {
    slots: [AtomicPtr<S>; MAX_SLOTS],
    /// How many of `slots` are used (fixed).
    capacity: usize,
    /// How many spares `take` handed out (for tests).
    #[cfg(test)]
    pub(crate) reused: std::sync::atomic::AtomicUsize,
}

impl<S> Spares<S> {
    /// A pool that keeps at most `bytes` of spares of `bytes_each` each
    /// (at most [`MAX_SLOTS`]; none if one spare is bigger than `bytes`).
    pub(crate) fn with_budget(bytes: usize, bytes_each: usize) -> Self {
        Spares {
            slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            capacity: (bytes / bytes_each.max(1)).min(MAX_SLOTS),
            #[cfg(test)]
            reused: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn slots(&self) -> &[AtomicPtr<S>] {
        &self.slots[..self.capacity]
    }

    /// How many spares the pool holds now (for tests).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        // Relaxed: a snapshot.
        self.slots()
            .iter()
            .filter(|slot| !slot.load(Ordering::Relaxed).is_null())
            .count()
    }

    /// A spare, if the pool has one: the caller owns it alone, as if it
    /// came from `Box::into_raw`. (Raw pointers, not `Box`es: a `Box` would
    /// claim unique access, which pointers stored inside a block, to the
    /// block itself, contradict; see `crate::cells`.)
    pub(crate) fn take(&self) -> Option<*mut S> {
        for slot in self.slots() {
            // Relaxed: a look before the RMW, which is what decides.
            if slot.load(Ordering::Relaxed).is_null() {
                continue;
            }
            // Acquire: pairs with the Release CAS in `put`, so the reset
            // the putter made happens-before our use.
            let spare = slot.swap(ptr::null_mut(), Ordering::Acquire);
            if !spare.is_null() {
                // Our swap removed it from the slot: nobody else has it.
                #[cfg(test)]
                self.reused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Some(spare);
            }
        }
        None
    }

    /// Keeps `spare` for a later `take`, or frees it if every slot is used.
    ///
    /// # Safety
    ///
    /// `spare` comes from `Box::into_raw` (or `Owned::new`, the same), the
    /// caller owns it alone and hands it over, and has reset it: a `take`r
    /// uses it as it finds it.
    pub(crate) unsafe fn put(&self, spare: *mut S) {
        for slot in self.slots() {
            // Relaxed: a look before the RMW. Release on success: publishes
            // the reset spare; pairs with the Acquire swap in `take`.
            if slot.load(Ordering::Relaxed).is_null()
                && slot
                    .compare_exchange(ptr::null_mut(), spare, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // SAFETY: from `Box::into_raw`, ours (the contract), and no slot
        // took it.
        drop(unsafe { Box::from_raw(spare) });
    }
}

impl<S> Drop for Spares<S> {
    fn drop(&mut self) {
        for slot in self.slots() {
            // Relaxed: `&mut self`, the last owner; the `Arc`'s drop
            // synchronized with every other owner's last use.
            let spare = slot.load(Ordering::Relaxed);
            if !spare.is_null() {
                // SAFETY: from `Box::into_raw` in `put`; the pool is going,
                // so the slot's ownership ends here.
                drop(unsafe { Box::from_raw(spare) });
            }
        }
    }
}

/// Pins and flushes until a pool holds `n` spares (`held` counts them: the
/// deferred recycling has run); panics if it does not come. The epoch
/// advances only while no other thread stays pinned: under loom the caller
/// must be the only thread; natively, other tests' threads may hold it back
/// for a while, hence the many tries.
#[cfg(test)]
pub(crate) fn until_recycled(held: impl Fn() -> usize, n: usize) {
    let tries = if cfg!(loom) { 8 } else { 100_000 };
    for _ in 0..tries {
        if held() >= n {
            return;
        }
        crate::sync::epoch::pin().flush();
        #[cfg(not(loom))]
        std::thread::yield_now();
    }
    panic!("no segment or block was recycled");
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    struct Spare(u64);

    impl Drop for Spare {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn keeps_up_to_capacity_hands_each_spare_out_once_and_frees_the_rest() {
        let pool = Spares::with_budget(3 * 8, 8);
        assert!(pool.take().is_none());
        for i in 0..5 {
            // SAFETY: fresh from `Box::into_raw`, handed over.
            unsafe { pool.put(Box::into_raw(Box::new(Spare(i)))) };
        }
        assert_eq!(
            DROPPED.load(Relaxed),
            2,
            "a full pool frees what it cannot keep"
        );
        // SAFETY: each taken pointer is ours alone, from `Box::into_raw`.
        let taken: Vec<Box<Spare>> =
            std::iter::from_fn(|| pool.take().map(|p| unsafe { Box::from_raw(p) })).collect();
        let mut got: Vec<u64> = taken.iter().map(|s| s.0).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        drop(taken);
        assert_eq!(DROPPED.load(Relaxed), 5);
        // SAFETY: as above.
        unsafe { pool.put(Box::into_raw(Box::new(Spare(7)))) };
        drop(pool);
        assert_eq!(
            DROPPED.load(Relaxed),
            6,
            "the pool frees what it holds when dropped"
        );
    }

    #[test]
    fn budget_bounds() {
        assert_eq!(Spares::<u8>::with_budget(1, 1000).capacity, 0);
        assert_eq!(Spares::<u8>::with_budget(1 << 30, 1).capacity, MAX_SLOTS);
    }
}
