//! The dual stack's stored values: *data cells*, bump-allocated from shared
//! blocks, instead of one heap node per value.
//!
//! A stored value sits in a [`DataCell`]: the value, the link to the item
//! below it in the stack (`next`), and a pointer to the block the cell came
//! from. The stack links cells exactly as Treiber's stack links nodes (a
//! push writes `next` and publishes the cell with a CAS on `top`; a pop
//! removes it with a CAS on `top`); this module only hands cells out and
//! takes them back. Per value that is one `fetch_add` instead of a `malloc`,
//! and one `fetch_add` instead of an epoch-deferred `free`: the block is
//! retired once, when its last cell dies.
//!
//! # A cell's life
//!
//! Cells are used once: no cell is ever handed out twice, so the stack sees
//! no ABA on a cell while a thread that read it is pinned (the block is
//! retired through the epoch).
//!
//! | state     | value           | who holds it, and how it moves on |
//! |-----------|-----------------|-----------------------------------|
//! | spare     | uninitialised   | nobody: its index is at or above `allocated` |
//! | claimed   | the pusher's    | the pusher that won the index by `fetch_add` on `allocated` ([`Cells::claim`]); it publishes the cell (the stack's `top` CAS), or takes the value back ([`DataCell::take`]: the stack was closed, or a consumer waits) |
//! | stored    | the stack's     | the pop whose `top` CAS removed the cell: it takes the value ([`DataCell::take`]) |
//! | dead      | gone            | nobody: counted in its block's `dead` |
//!
//! Every claimed cell dies exactly once (one owner at a time: its pusher,
//! then at most one popper), and so do the spare cells of the last block
//! when the stack is dropped.
//!
//! # A block's life
//!
//! A block is retired when `dead` reaches `capacity + 1`: every cell died,
//! *and* the block stopped being `current`. The `+ 1` is the reference
//! `current` holds: whoever replaces the block in `current` adds it. Without
//! it, a block whose cells all died while it was still current would be
//! retired while pushes can still load it from `current` and claim (past
//! the end) in it.
//!
//! A push that finds the current block exhausted (its `fetch_add` returned
//! an index past the end) installs a fresh block whose first cell is
//! already its own, by one CAS on `current`. The CAS fails only if another
//! push installed a block first, so claims are lock-free: a failed
//! `fetch_add` or CAS means another push got a cell.
//!
//! # Memory
//!
//! A cell is the value plus two words. A block holds about 4 KiB of cells
//! (at least 4 and at most 256 cells; 2 under loom or `--cfg
//! dualq_small_segments`, so tests cross block boundaries all the time).
//! A block lives as long as any of its cells holds a value: a value that
//! stays in the stack while thousands pass over it keeps its block (one
//! block, never more, per such value).
//!
//! A retired block is not freed: after its grace period it is reset and
//! kept for reuse in the stack's pool of spares (`crate::spares`, at most
//! 64 KiB), from which the next install takes it. Its cells keep their
//! `block` pointer (the same block), and a pinned reader can still not see
//! a cell reused: reuse waits for the same grace period a free would.

use std::mem::MaybeUninit;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::spares::Spares;
use crate::sync::epoch::{Atomic, Guard, Owned, Shared};
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

/// Bytes of retired blocks a stack keeps for reuse (`crate::spares`).
const SPARE_BYTES: usize = 64 * 1024;

/// Bytes of cells a block aims at.
const BLOCK_BYTES: usize = 4096;

/// Cells per block, whatever the value's size.
#[cfg(not(any(loom, dualq_small_segments)))]
const CELLS_RANGE: (usize, usize) = (4, 256);
/// The same for loom and for native runs with `--cfg dualq_small_segments`:
/// two cells, so nearly every other push installs a block.
#[cfg(any(loom, dualq_small_segments))]
const CELLS_RANGE: (usize, usize) = (2, 2);

/// One stored value and its link in the stack. `N` is the type of the
/// stack's items (the link is the stack's own tagged pointer). Aligned to
/// 8 on every target, so item pointers have three tag bits.
#[repr(align(8))]
pub(crate) struct DataCell<N, T> {
    /// The item below this one: written by the pusher while the cell is
    /// claimed, fixed once the cell is published.
    pub(crate) next: Atomic<N>,
    /// Initialised from the claim until the value is taken (state table).
    value: UnsafeCell<MaybeUninit<T>>,
    /// The block this cell belongs to (fixed).
    block: *const Block<N, T>,
}

struct Block<N, T> {
    /// Indices handed out. Grows past the capacity when pushes find the
    /// block exhausted; only indices below it name cells.
    allocated: CachePadded<AtomicUsize>,
    /// Cells dead, plus one once the block is no longer `current` (module
    /// docs). Separate line: producers claim, consumers kill.
    dead: CachePadded<AtomicUsize>,
    cells: Box<[DataCell<N, T>]>,
    /// Debug and loom builds check that no push claims in a retired block
    /// (a plain `std` atomic, so that loom does not explore it).
    #[cfg(any(debug_assertions, loom))]
    retired: std::sync::atomic::AtomicBool,
}

/// The allocator: the block pushes claim cells from.
pub(crate) struct Cells<N, T> {
    current: CachePadded<Atomic<Block<N, T>>>,
    /// Retired blocks kept for reuse, shared with the deferred functions
    /// that put them there (they may run after the stack is gone).
    spares: Arc<Spares<Block<N, T>>>,
}

impl<N, T> Block<N, T> {
    /// Cells per block for values of type `T`.
    fn capacity() -> usize {
        let cell = std::mem::size_of::<DataCell<N, T>>();
        (BLOCK_BYTES / cell).clamp(CELLS_RANGE.0, CELLS_RANGE.1)
    }

    /// A fresh block whose cell 0 is already claimed (by its creator).
    fn with_first_claimed() -> Owned<Self> {
        // Through a raw pointer: the cells keep it as their `block`, so the
        // block is not written through any other path after they get it
        // (Miri's borrow checks reject a back-pointer taken before a write).
        let home = Box::into_raw(Box::new(Block {
            allocated: CachePadded::new(AtomicUsize::new(1)),
            dead: CachePadded::new(AtomicUsize::new(0)),
            cells: Box::new([]),
            #[cfg(any(debug_assertions, loom))]
            retired: std::sync::atomic::AtomicBool::new(false),
        }));
        let cells = (0..Self::capacity())
            .map(|_| DataCell {
                next: Atomic::null(),
                value: UnsafeCell::new(MaybeUninit::uninit()),
                block: home,
            })
            .collect();
        // SAFETY: `home` was just allocated and is ours alone; from here on
        // the block's plain fields are only read (its counters are atomics).
        unsafe {
            (*home).cells = cells;
            Owned::from_raw(home)
        }
    }

    /// Roughly what a block occupies: the spares' budget unit.
    fn bytes() -> usize {
        std::mem::size_of::<Self>() + Self::capacity() * std::mem::size_of::<DataCell<N, T>>()
    }

    /// Makes a dead block fresh (no cell handed out, none dead) and keeps
    /// it in `spares`, or frees it if the pool is full. The cells need no
    /// reset: a claimant writes `next` and the value before it publishes a
    /// cell, and their `block` is this block still.
    ///
    /// # Safety
    ///
    /// `block` came from [`Block::with_first_claimed`], is no longer
    /// `current`, and every cell of it is dead and unreachable: no thread
    /// can touch it (its grace period is over, or the stack is being
    /// dropped).
    unsafe fn recycle(block: *mut Self, spares: &Spares<Self>) {
        // Relaxed: ours alone; `Spares::put` publishes the reset (Release).
        // SAFETY: ours alone (the contract); through the raw pointer, as the
        // cells' back-pointers are (see `with_first_claimed`).
        unsafe {
            (*block).allocated.store(0, Ordering::Relaxed);
            (*block).dead.store(0, Ordering::Relaxed);
            #[cfg(any(debug_assertions, loom))]
            (*block)
                .retired
                .store(false, std::sync::atomic::Ordering::Relaxed);
            spares.put(block);
        }
    }

    /// Counts `n` deaths (cells, or the end of the block's time as
    /// `current`); the one that completes the count retires the block (to
    /// `spares` after its grace period).
    ///
    /// A raw pointer, not `&self`: with an unprotected guard (the stack's
    /// `Drop`) the block is recycled or freed before this returns.
    ///
    /// # Safety
    ///
    /// `block` is alive; the caller's `n` deaths have not been counted
    /// before (each cell dies once, the `current` reference ends once) and it
    /// holds no reference into the block across this call.
    unsafe fn count_dead(block: *const Self, n: usize, guard: &Guard, spares: &Arc<Spares<Self>>) {
        // SAFETY: alive (the caller's contract); each borrow ends before the
        // free below can run.
        let (counter, cells) = unsafe { (&(*block).dead, &(*block).cells) };
        let capacity = cells.len();
        // AcqRel: Release orders our last use of the dying cells before the
        // free; Acquire, for the death that completes the count, makes every
        // other death's Release (hence every other use of the cells)
        // happen-before the free it schedules.
        let dead = counter.fetch_add(n, Ordering::AcqRel) + n;
        // Checked under loom too (its models run in release builds).
        #[cfg(any(debug_assertions, loom))]
        assert!(
            dead <= capacity + 1,
            "a cell died twice, or a block was reused uncounted"
        );
        if dead == capacity + 1 {
            #[cfg(any(debug_assertions, loom))]
            // SAFETY: as above.
            unsafe { &(*block).retired }.store(true, std::sync::atomic::Ordering::Relaxed);
            let raw = block as *mut Self;
            let spares = Arc::clone(spares);
            // SAFETY: every cell is dead and no push can reach the block any
            // more (it left `current`), but threads pinned now may still read
            // cells they reached from the stack before the cells were
            // removed: the reuse (or free) waits for them. The closure drops
            // no `T` (every value was moved out), so it may run after the
            // stack (and any borrow in `T`) is gone; the pool lives as long
            // as the closure's `Arc`.
            unsafe {
                guard.defer_unchecked(move || Self::recycle(raw, &spares));
            }
            // A thread's bag of deferred frees goes to the collector only
            // when 64 entries fill it: 64 blocks of 4 KiB would sit there
            // for as long as the thread does nothing else. Hand the bag over
            // now (once per block, not per value).
            guard.flush();
        }
    }
}

impl<N, T> Cells<N, T> {
    /// Moves the value out of `cell`; the cell dies. A raw pointer, not a
    /// reference: the cell's block may be freed before this returns (see
    /// `count_dead`).
    ///
    /// # Safety
    ///
    /// The caller owns the cell (state table), which came from this
    /// allocator: it claimed it and never
    /// published it, or it won the `top` CAS that removed it from the
    /// stack, which synchronized with the push that published it. Called
    /// once per cell; the caller does not touch the cell afterwards.
    pub(crate) unsafe fn take(&self, cell: *const DataCell<N, T>, guard: &Guard) -> T {
        // SAFETY: the caller owns the cell, whose value is initialised from
        // the claim until now; the block outlives the cell's death.
        let (value, block) = unsafe {
            (
                (*cell).value.with(|v| (*v).assume_init_read()),
                (*cell).block,
            )
        };
        // SAFETY: this is the cell's one death (the caller's contract), and
        // no borrow of it is left.
        unsafe { Block::count_dead(block, 1, guard, &self.spares) };
        value
    }

    pub(crate) fn new() -> Self {
        Cells {
            current: CachePadded::new(Atomic::null()),
            spares: Arc::new(Spares::with_budget(SPARE_BYTES, Block::<N, T>::bytes())),
        }
    }

    /// How many retired blocks the pool holds (for tests).
    #[cfg(test)]
    pub(crate) fn spares_held(&self) -> usize {
        self.spares.held()
    }

    /// How many recycled blocks were reused (for tests).
    #[cfg(test)]
    pub(crate) fn spares_reused(&self) -> usize {
        self.spares
            .reused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A block whose cell 0 is already claimed: a recycled one if the pool
    /// has one, else a new one.
    fn fresh_block(&self) -> Owned<Block<N, T>> {
        match self.spares.take() {
            // SAFETY: a spare is ours alone, reset by `Block::recycle`, from
            // `with_first_claimed` (`Box::into_raw`). Relaxed: published
            // with the block (the Release CAS on `current`).
            Some(block) => unsafe {
                (*block).allocated.store(1, Ordering::Relaxed);
                Owned::from_raw(block)
            },
            None => Block::with_first_claimed(),
        }
    }

    /// Claims a fresh cell and moves `value` into it: the cell is the
    /// caller's until it publishes it or takes the value back (state
    /// table). Lock-free: a retry means another push claimed a cell.
    pub(crate) fn claim<'g>(&self, value: T, guard: &'g Guard) -> &'g DataCell<N, T> {
        let mut spare: Option<Owned<Block<N, T>>> = None;
        let cell = loop {
            // Acquire: we touch the block's cells; pairs with the Release
            // CAS that installed it.
            let current = self.current.load(Ordering::Acquire, guard);
            // SAFETY: a block loaded from `current` while pinned is retired
            // only after it leaves `current` (its `+ 1`), so not freed
            // before we unpin.
            if let Some(block) = unsafe { current.as_ref() } {
                // Relaxed: only atomicity matters (each index is handed out
                // once); the cell's contents are published by the stack's
                // Release CAS on `top`.
                let index = block.allocated.fetch_add(1, Ordering::Relaxed);
                if let Some(cell) = block.cells.get(index) {
                    // A block may be retired after we loaded it (every
                    // cell dead, replaced in `current`): then our index is
                    // past its end. A cell claimed in it is a bug.
                    #[cfg(any(debug_assertions, loom))]
                    assert!(
                        !block.retired.load(std::sync::atomic::Ordering::Relaxed),
                        "a push claimed a cell in a retired block"
                    );
                    break cell;
                }
            }
            // Exhausted (or no block yet): install one whose cell 0 is ours,
            // unless another push already did (then claim there instead of
            // allocating a block that would lose the CAS). Relaxed: only
            // compared; the loop's Acquire load is the one we use.
            if spare.is_none() && self.current.load(Ordering::Relaxed, guard) != current {
                continue;
            }
            let fresh = spare.take().unwrap_or_else(|| self.fresh_block());
            // Release: publishes the fresh block's initialised cells; pairs
            // with the Acquire load above. Acquire on failure: we then use
            // the winner's block.
            match self.current.compare_exchange(
                current,
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
                guard,
            ) {
                Ok(fresh) => {
                    if !current.is_null() {
                        // SAFETY: we replaced it in `current`, once; its
                        // `current` reference ends here.
                        unsafe { Block::count_dead(current.as_raw(), 1, guard, &self.spares) };
                    }
                    // SAFETY: just installed, not freed while we are pinned
                    // (its cell 0 is ours and alive).
                    break unsafe { &fresh.deref().cells[0] };
                }
                Err(e) => spare = Some(e.new),
            }
        };
        if let Some(unused) = spare {
            // A block made for an install we lost, never shared: reset it.
            // SAFETY: ours alone, from `fresh_block`; its cells never lived.
            unsafe { Block::recycle(unused.into_shared(guard).as_raw() as *mut _, &self.spares) };
        }
        // SAFETY: we claimed the cell (its index, or cell 0 of our block):
        // no one else touches its value.
        cell.value.with_mut(|v| unsafe { (*v).write(value) });
        cell
    }
}

impl<N, T> Drop for Cells<N, T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no claim is in flight; the stack's `Drop` has
        // taken every stored value, so only the current block is left, with
        // its spare cells and `current` reference still uncounted.
        let guard = unsafe { crate::sync::epoch::unprotected() };
        let current: Shared<'_, Block<N, T>> = self.current.load(Ordering::Relaxed, guard);
        // SAFETY: as above.
        if let Some(block) = unsafe { current.as_ref() } {
            let capacity = block.cells.len();
            let spare = capacity - block.allocated.load(Ordering::Relaxed).min(capacity);
            // SAFETY: the spare cells never lived; with the `current`
            // reference, the count reaches its end and the block is freed
            // at once (unprotected guard). `block` is not used after.
            unsafe { Block::count_dead(current.as_raw(), spare + 1, guard, &self.spares) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::epoch;

    struct Item;

    /// A claim and a take on one thread, with the value checked.
    fn claim_and_take(cells: &Cells<Item, u32>, value: u32) {
        let guard = &epoch::pin();
        let cell = cells.claim(value, guard);
        // SAFETY: claimed here, never published, taken once.
        assert_eq!(unsafe { cells.take(cell, guard) }, value);
    }

    /// `claim_and_take` of `theirs` on a new loom thread, racing ours of
    /// `mine`.
    #[cfg(loom)]
    fn claim_and_take_racing(cells: Cells<Item, u32>, mine: u32, theirs: u32) {
        let cells = loom::sync::Arc::new(cells);
        let other = {
            let cells = loom::sync::Arc::clone(&cells);
            loom::thread::spawn(move || claim_and_take(&cells, theirs))
        };
        claim_and_take(&cells, mine);
        other.join().unwrap();
    }

    // Two pushes race for the last cell of a block: one gets it, the other
    // installs a fresh block (ending the old one's `current` reference);
    // the cells die on both threads. Each value comes back once, the old
    // block's count completes at most once (`count_dead`'s assertion), and
    // no claim lands in a retired block (the `retired` assertion; it fails
    // if a block is retired while still `current`).
    #[test]
    #[cfg(loom)]
    fn claims_race_at_a_block_boundary() {
        crate::sync::loom_model("claims_race_at_a_block_boundary", || {
            let cells = Cells::new();
            // Cell 0 of the first block, so one cell is left in it.
            claim_and_take(&cells, 1);
            claim_and_take_racing(cells, 3, 2);
        });
    }

    #[test]
    fn capacity_aims_at_4_kib_within_bounds() {
        let small = Block::<Item, u64>::capacity();
        let big = Block::<Item, [u8; 4096]>::capacity();
        if CELLS_RANGE == (2, 2) {
            assert_eq!((small, big), (2, 2));
        } else {
            // A cell is the value, `next` and the block pointer, aligned to 8.
            let cell = (8 + 2 * std::mem::size_of::<usize>() + 7) / 8 * 8;
            assert_eq!(small, 4096 / cell);
            assert_eq!(big, 4);
        }
    }

    // Both pushes find the block exhausted, with every cell of it dead:
    // whichever installs the next block retires the old one, possibly
    // while the other has loaded it from `current` and not yet tried to
    // claim in it. That is legal (the other's claim then fails and it
    // retries); only a claim that *succeeds* in a retired block is a bug.
    #[test]
    #[cfg(loom)]
    fn claims_race_past_a_dead_exhausted_block() {
        crate::sync::loom_model("claims_race_past_a_dead_exhausted_block", || {
            let cells = Cells::new();
            // Fill the first block (2 cells under loom) and let every cell
            // die; both claims of the race then find it exhausted.
            {
                let guard = &epoch::pin();
                let first = [cells.claim(1, guard), cells.claim(2, guard)];
                for cell in first {
                    // SAFETY: claimed here, never published, taken once.
                    unsafe { cells.take(cell, guard) };
                }
            }
            claim_and_take_racing(cells, 4, 3);
        });
    }

    // Claims across several blocks, then every cell dies: each value comes
    // back once, and a fresh block is installed per `capacity` claims.
    // (That the blocks are then freed is checked natively by scenario (e)
    // of `tests/memory.rs`: Miri runs with leak checks off.)
    #[test]
    #[cfg(not(loom))]
    fn every_cell_dies_once_and_blocks_go() {
        claim_and_take(&Cells::new(), 7);
        let cells = Cells::<Item, String>::new();
        let n = 3 * Block::<Item, String>::capacity() + 1;
        let guard = &epoch::pin();
        let claimed: Vec<_> = (0..n).map(|i| cells.claim(i.to_string(), guard)).collect();
        let blocks: std::collections::HashSet<_> = claimed.iter().map(|c| c.block).collect();
        assert_eq!(blocks.len(), 4, "a fresh block per capacity claims");
        for (i, cell) in claimed.into_iter().enumerate().rev() {
            // SAFETY: claimed above, never published, taken once.
            assert_eq!(unsafe { cells.take(cell, guard) }, i.to_string());
        }
        drop(cells);
    }
}
