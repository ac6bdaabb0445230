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
//! # Why a linked stack, and not a few slots
//!
//! The first pool was an array of 64 slots, scanned on every put and take,
//! and ~512 B inside every structure. Retired allocations come back in
//! bursts larger than that: crossbeam-epoch runs deferred functions a bag
//! (64) at a time, up to eight bags per collection, and a thread preempted
//! while pinned holds every bag back until it runs again (queue mpmc-2x2,
//! four threads on two cores: 56,000 of 68,000 retired segments per 4 M
//! values overflowed 64 slots, and even 4 MiB of pool overflowed now and
//! then). So the pool is an intrusive Treiber stack, linked through a word
//! of the spare itself ([`Spare`]): O(1) put and take, three words (in an
//! `Arc`) per structure, and as many spares as its byte budget allows. What
//! overflows the budget is freed; the `futex` calls those frees cause on
//! glibc's arena lock did not cost measurable time (`docs/scaling.md`).
//!
//! # Who touches a spare
//!
//! | where it is | who owns it | how it moves on |
//! |-------------|-------------|-----------------|
//! | in use (linked in the structure) | the structure | it is retired through the epoch when its last value leaves |
//! | retired | the epoch collector | after the grace period (no pinned thread can still reach it) the deferred function resets it and [`put`](Spares::put)s it here, or frees it if the pool is at its budget |
//! | taken, but lost the race to be installed | the taker | it resets the spare and hands it to the epoch ([`defer_put`](Spares::defer_put)): back in the pool after a grace period |
//! | in the pool | the pool | a [`take`](Spares::take) pops it (CAS on `top`): the taker owns it alone |
//!
//! Each move is one CAS on `top`, so a spare has exactly one owner; a spare
//! enters the pool only after a grace period, so no thread still reads it
//! as a segment or block: reuse is as safe as a free. (One exception, the
//! structure's `Drop`: with `&mut` to the structure no `take` can run on
//! its pool any more, so its dead blocks go to the pool at once; only
//! deferred functions, which only put, still share the pool then.)
//!
//! # Why `take` is safe from ABA (the pin)
//!
//! A Treiber pop reads `top` = X and X's link = Y, then CASes `top` from X
//! to Y. If meanwhile X were popped, Y popped, and X pushed back, the CAS
//! would succeed and install Y, which another thread owns. Here it cannot
//! happen: `take` runs pinned (it takes the caller's `Guard`), and a spare
//! that left the pool comes back only through a deferred function, which
//! crossbeam-epoch runs after every thread pinned at the time of the
//! deferral (so the popper, pinned since before X left) has unpinned. So
//! while a `take` is pinned, X, once gone, does not come back, and `top`
//! still being X means X's link is still Y. For the same reason a spare
//! that left the pool is never freed while a `take` may still read its
//! link: a spare is freed only by a `put` over budget (after a grace
//! period), by the pool's own drop, or by the structure's `Drop`, and in
//! the last two no `take` can run any more. Every path that gives a spare
//! back while the structure is in use therefore goes through the epoch,
//! even for a spare that was never published (`defer_put`).
//!
//! A stale `take` may read the link of a spare that another thread has
//! taken and is using, so the link is an atomic word, and whoever owns a
//! spare reaches its other fields through raw pointers or references to
//! those fields, never through a `&mut` to the whole spare (which would
//! claim the link word too).
//!
//! # Memory
//!
//! The pool is shared (`Arc`) with the deferred functions, which may run
//! after the structure is dropped; the last owner frees what it still
//! holds. So a dropped structure's pool lives on until the last of its
//! pending deferred functions has run (they run when some thread's pins
//! collect them, as any deferred free does).
//!
//! A pool holds about [`Spares::with_budget`]'s bytes at most (concurrent
//! puts may overshoot by one spare each): that much stays
//! allocated for as long as the structure lives, even when it is empty (as
//! a `VecDeque` keeps its capacity). A structure whose one segment or block
//! is bigger than the budget keeps none.

use std::ptr;
use std::sync::Arc;

use crate::sync::epoch::Guard;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};

/// An allocation that can wait in a pool: it lends one word for the link
/// to the next spare while it is there.
///
/// # Safety
///
/// `next_spare` and `set_next_spare` read and write one atomic word of the
/// spare (`Relaxed`) that nothing else writes while the spare is in a pool,
/// and that may be read at any time while the spare is alive (a `take` that
/// lost its race reads it after the spare left the pool): owners must not
/// hold a `&mut` to the whole spare (module docs).
pub(crate) unsafe trait Spare: Sized {
    /// The link to the next spare (`Relaxed`). A raw pointer, not `&self`:
    /// a stale `take` reads the link of a spare that another thread owns
    /// and uses, so it must not claim the whole spare.
    ///
    /// # Safety
    ///
    /// `this` is alive.
    unsafe fn next_spare(this: *const Self) -> *mut Self;
    /// Sets the link to the next spare (`Relaxed`).
    fn set_next_spare(&self, next: *mut Self);
}

/// Up to `capacity` retired allocations of type `S`, for reuse.
pub(crate) struct Spares<S: Spare> {
    /// The last spare put; each links to the one put before it.
    top: AtomicPtr<S>,
    /// How many spares the pool holds (at least: a `put` counts before it
    /// pushes, a `take` after it pops).
    held: AtomicUsize,
    /// The most spares kept (from the byte budget; fixed).
    capacity: usize,
    /// How many spares `take` handed out (for tests).
    #[cfg(test)]
    pub(crate) reused: std::sync::atomic::AtomicUsize,
}

impl<S: Spare> Spares<S> {
    /// A pool that keeps at most `bytes` of spares of `bytes_each` each
    /// (none if one spare is bigger than `bytes`).
    pub(crate) fn with_budget(bytes: usize, bytes_each: usize) -> Self {
        Spares {
            top: AtomicPtr::new(ptr::null_mut()),
            held: AtomicUsize::new(0),
            capacity: bytes / bytes_each.max(1),
            #[cfg(test)]
            reused: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How many spares the pool holds now (for tests).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        // Relaxed: a snapshot.
        self.held.load(Ordering::Relaxed)
    }

    /// A spare, if the pool has one: the caller owns it alone, as if it
    /// came from `Box::into_raw`, with a null link. (Raw pointers, not
    /// `Box`es: a `Box` would claim unique access, which pointers stored
    /// inside a block, to the block itself, contradict; see `crate::cells`.)
    ///
    /// The guard is the pin that makes the pop safe from ABA (module docs).
    pub(crate) fn take(&self, pinned: &Guard) -> Option<*mut S> {
        // Checked under loom too (its models run in release builds).
        if cfg!(any(debug_assertions, loom)) {
            assert!(pinned.collector().is_some(), "take needs a pinned guard");
        }
        // Acquire: pairs with the Release CAS in `put`, so the reset the
        // putter made (and its link) happens-before our use.
        let mut top = self.top.load(Ordering::Acquire);
        while !top.is_null() {
            // SAFETY: `top` was in the pool after we pinned; a spare that
            // left it is freed or comes back only after our pin ends
            // (module docs), so it is alive, and its link is stable while
            // `top` still points at it.
            let next = unsafe { S::next_spare(top) };
            // Acquire on success: we own the spare (as above); on failure we
            // use the new top's link in turn.
            match self
                .top
                .compare_exchange_weak(top, next, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    // Relaxed: a count; our pop followed its `put`'s count.
                    self.held.fetch_sub(1, Ordering::Relaxed);
                    // SAFETY: ours alone now (our CAS popped it).
                    unsafe { (*top).set_next_spare(ptr::null_mut()) };
                    #[cfg(test)]
                    self.reused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Some(top);
                }
                Err(actual) => top = actual,
            }
        }
        None
    }

    /// Keeps `spare` for a later `take`, or frees it if the pool is at its
    /// budget.
    ///
    /// # Safety
    ///
    /// `spare` comes from `Box::into_raw` (or `Owned::new`, the same), the
    /// caller owns it alone and hands it over, has reset it (a `take`r uses
    /// it as it finds it), and no `take` that was pinned when the spare last
    /// left a pool is still pinned: this runs in a deferred function, or
    /// the spare never was in a pool, or no `take` can run on this pool any
    /// more (the structure is being dropped) (module docs, ABA).
    pub(crate) unsafe fn put(&self, spare: *mut S) {
        // Relaxed: a count; concurrent puts may overshoot the budget by
        // their number, no more.
        if self.held.load(Ordering::Relaxed) >= self.capacity {
            // SAFETY: from `Box::into_raw`, ours (the contract), never
            // reachable from the pool.
            drop(unsafe { Box::from_raw(spare) });
            return;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        // Relaxed: the CAS below decides, and publishes.
        let mut top = self.top.load(Ordering::Relaxed);
        loop {
            // SAFETY: ours alone until the CAS publishes it.
            unsafe { (*spare).set_next_spare(top) };
            // Release: publishes the reset spare and its link; pairs with
            // the Acquire load and CAS in `take`.
            match self
                .top
                .compare_exchange_weak(top, spare, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => top = actual,
            }
        }
    }

    /// Gives back a spare that never reached the structure (an append or an
    /// install that lost its race), after a grace period: it may have come
    /// from this pool, and a `take` pinned now may still hold it as `top`.
    ///
    /// # Safety
    ///
    /// As [`put`](Self::put), except the grace period, which this adds.
    pub(crate) unsafe fn defer_put(this: &Arc<Self>, spare: *mut S, guard: &Guard) {
        // An unprotected guard would run the put at once: the ABA again.
        #[cfg(any(debug_assertions, loom))]
        assert!(
            guard.collector().is_some(),
            "defer_put needs a pinned guard"
        );
        let pool = Arc::clone(this);
        // SAFETY: the spare is ours and reset (the contract); the closure
        // runs after every thread pinned now has unpinned, which is what
        // `put` needs. It drops no `T` (the spare holds no value).
        unsafe { guard.defer_unchecked(move || pool.put(spare)) };
    }
}

impl<S: Spare> Drop for Spares<S> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`, the last owner; the `Arc`'s drop
        // synchronized with every other owner's last use.
        let mut spare = self.top.load(Ordering::Relaxed);
        while !spare.is_null() {
            // SAFETY: in the pool, so from `Box::into_raw` and owned by it;
            // the pool is going, so its ownership ends here. The link is read
            // before the free.
            let next = unsafe { S::next_spare(spare) };
            drop(unsafe { Box::from_raw(spare) });
            spare = next;
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

/// A spare for the tests: `id` names it; drops are counted.
#[cfg(test)]
struct Thing {
    id: u64,
    link: AtomicPtr<Thing>,
}

#[cfg(test)]
static DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: `link` is used by the pool only.
#[cfg(test)]
unsafe impl Spare for Thing {
    unsafe fn next_spare(this: *const Self) -> *mut Self {
        // SAFETY: alive (the caller's contract); only the link is read.
        unsafe { (*this).link.load(Ordering::Relaxed) }
    }
    fn set_next_spare(&self, next: *mut Self) {
        self.link.store(next, Ordering::Relaxed)
    }
}

#[cfg(test)]
impl Drop for Thing {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
fn thing(id: u64) -> *mut Thing {
    Box::into_raw(Box::new(Thing {
        id,
        link: AtomicPtr::new(ptr::null_mut()),
    }))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn keeps_up_to_capacity_hands_each_spare_out_once_and_frees_the_rest() {
        let pool = Spares::with_budget(3 * 8, 8);
        let guard = &crate::sync::epoch::pin();
        assert!(pool.take(guard).is_none());
        for i in 0..5 {
            // SAFETY: fresh from `Box::into_raw`, never in a pool, handed over.
            unsafe { pool.put(thing(i)) };
        }
        assert_eq!(
            DROPPED.load(Relaxed),
            2,
            "a full pool frees what it cannot keep"
        );
        assert_eq!(pool.held(), 3);
        // SAFETY: each taken pointer is ours alone, from `Box::into_raw`.
        let taken: Vec<Box<Thing>> =
            std::iter::from_fn(|| pool.take(guard).map(|p| unsafe { Box::from_raw(p) })).collect();
        let got: Vec<u64> = taken.iter().map(|s| s.id).collect();
        assert_eq!(got, [2, 1, 0], "last put, first taken");
        assert!(
            taken.iter().all(|t| t.link.load(Relaxed).is_null()),
            "a taken spare's link is cleared"
        );
        assert_eq!(pool.held(), 0);
        drop(taken);
        assert_eq!(DROPPED.load(Relaxed), 5);
        // SAFETY: as above.
        unsafe {
            pool.put(thing(7));
            pool.put(thing(8));
        }
        drop(pool);
        assert_eq!(
            DROPPED.load(Relaxed),
            7,
            "the pool frees what it holds when dropped"
        );
    }

    #[test]
    fn budget_bounds() {
        assert_eq!(Spares::<Thing>::with_budget(1, 1000).capacity, 0);
        assert_eq!(Spares::<Thing>::with_budget(1 << 20, 1024).capacity, 1024);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::sync::epoch;
    use loom::thread;

    // The ABA of a Treiber pop (module docs): while one thread takes, the
    // other takes both spares and gives the first back. Given back through
    // the epoch (`defer_put`), it cannot return while the first thread is
    // pinned, so in the end each spare has exactly one owner: a thread, the
    // pool, or (the one given back, while its grace period lasts) the epoch.
    // Given back by a plain `put`, this model fails (a spare owned twice:
    // the first thread's CAS installs the spare the other still holds).
    // What it cannot tell apart: a deferred `put` that never happens, and
    // one still pending (here loom's epoch did not advance again after the
    // taker thread ended, so the model cannot wait for it).
    #[test]
    fn a_spare_given_back_while_another_thread_takes_is_owned_once() {
        // Preemption bound 2: about 200,000 interleavings (in most of them
        // the spare is back before the taker is joined); 3 took 4.6 million.
        crate::sync::loom_model_with("spares::given_back_while_another_takes", 2, 1_000, || {
            let pool = Arc::new(Spares::with_budget(4, 1));
            let (x, y) = (thing(1), thing(2));
            // SAFETY: fresh, never in a pool, handed over.
            unsafe {
                pool.put(y);
                pool.put(x);
            }
            let taker = {
                let pool = Arc::clone(&pool);
                thread::spawn(move || {
                    let guard = &epoch::pin();
                    pool.take(guard).map(|p| p as usize)
                })
            };
            let mut mine = Vec::new();
            {
                let guard = &epoch::pin();
                while let Some(p) = pool.take(guard) {
                    mine.push(p);
                }
            }
            // SAFETY (of the reads of `id` below): alive; every spare is
            // owned by this model or waits in the pool or the epoch.
            let id = |p: *mut Thing| unsafe { (*p).id };
            let mut given_back = None;
            if let Some(&first) = mine.first() {
                given_back = Some(id(first));
                let guard = &epoch::pin();
                // SAFETY: ours, taken from the pool; given back after a
                // grace period.
                unsafe { Spares::defer_put(&pool, first, guard) };
                mine.remove(0);
            }
            for _ in 0..3 {
                epoch::pin().flush();
            }
            let theirs = taker.join().unwrap();
            let mut owned: Vec<*mut Thing> = mine;
            owned.extend(theirs.map(|p| p as *mut Thing));
            {
                let guard = &epoch::pin();
                while let Some(p) = pool.take(guard) {
                    owned.push(p);
                }
            }
            let mut ids: Vec<u64> = owned.iter().map(|&p| id(p)).collect();
            ids.sort_unstable();
            // Each spare has exactly one owner: a thread, the pool, or (the
            // one given back, if its grace period has not ended) the epoch.
            match ids.as_slice() {
                [1, 2] => {}
                [one] => assert_eq!(
                    Some(3 - one),
                    given_back,
                    "a spare lost: only {one} is owned"
                ),
                _ => panic!("a spare owned twice, or lost: {ids:?}"),
            }
            for p in owned {
                // SAFETY: each is owned once (just checked), from `thing`.
                drop(unsafe { Box::from_raw(p) });
            }
        });
    }
}
