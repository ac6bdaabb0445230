//! The dual stack's stored values: *data cells*, bump-allocated from shared
//! blocks, instead of one heap node per value.
//!
//! A stored value sits in a [`DataCell`]: the value and the link to the
//! item below it in the stack (`next`). The stack links cells exactly as
//! Treiber's stack links nodes (a push writes `next` and publishes the cell
//! with a CAS on `top`; a pop removes it with a CAS on `top`); this module
//! only hands cells out and takes them back. Per value that is one
//! `fetch_add` instead of a `malloc`, and one `fetch_add` instead of an
//! epoch-deferred `free`: the block is retired once, when its last cell
//! dies.
//!
//! # A cell's life
//!
//! A cell is handed out once per life of its block: it is reused only when
//! its block is recycled, after the epoch's grace period, so the stack sees
//! no ABA on a cell while a thread that read it is pinned.
//!
//! | state     | value           | who holds it, and how it moves on |
//! |-----------|-----------------|-----------------------------------|
//! | spare     | uninitialised   | nobody: its index is at or above `allocated` |
//! | claimed   | the pusher's    | the pusher that won the index by `fetch_add` on `allocated` ([`Cells::claim`]); it publishes the cell (the stack's `top` CAS), or takes the value back ([`Cells::take`]: the stack was closed, or a consumer waits) |
//! | stored    | the stack's     | the pop whose `top` CAS removed the cell: it takes the value ([`Cells::take`]) |
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
//! # Finding a cell's block
//!
//! A pop must find the block of the cell it removed, to count the death.
//! A pointer in every cell would cost a word per value (24 instead of 16
//! bytes per `u64`: 26.3 B per stored value with the block's header). So
//! a block's cells come in *groups*: each group starts with the one word
//! that points at the block, and the cells follow it.
//!
//! * **Aligned groups** (when at least four cells fit in [`GROUP_BYTES`]
//!   after the head word: cells of up to 254 bytes on 64-bit): a
//!   group is `GROUP_BYTES` long and the group array is allocated aligned
//!   to it, so a cell's group starts at the cell's address rounded down to
//!   a multiple of `GROUP_BYTES`. A `u64` costs 16 bytes plus 1/63 of a
//!   group's word and tail: 16.25 B.
//! * **One-cell groups** (bigger cells): the word sits right before the
//!   cell; a word per value is little next to such a value, and aligning
//!   groups to a power of two could waste up to half of each.
//!
//! Under loom and `--cfg dualq_small_segments` every block has two aligned
//! one-cell groups, so the models and tests cross groups and blocks all
//! the time.
//!
//! # Memory
//!
//! A block holds about [`BLOCK_BYTES`] of groups (at least 4 cells, except
//! under loom and small segments), plus
//! its header (the two padded counters) in an allocation of its own.
//! A block lives as long as any of its cells holds a value: a value that
//! stays in the stack while thousands pass over it keeps its block (one
//! block, never more, per such value).
//!
//! A retired block is not freed: after its grace period it is reset and
//! kept for reuse in the stack's pool of spares (`crate::spares`, at most
//! 64 KiB), from which the next install takes it. Its groups keep their
//! block pointer (the same block), and a pinned reader can still not see
//! a cell reused: reuse waits for the same grace period a free would.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::spares::{Spare, Spares};
use crate::sync::epoch::{Atomic, Guard, Owned, Shared};
use crate::sync::{AtomicPtr, AtomicUsize, Ordering, UnsafeCell};

/// Bytes of retired blocks a stack keeps for reuse (`crate::spares`).
const SPARE_BYTES: usize = 64 * 1024;

/// Bytes of groups a block aims at.
#[cfg(not(any(loom, dualq_small_segments, miri)))]
const BLOCK_BYTES: usize = 16 * 1024;
/// Under Miri, two groups: its tests must kill blocks to recycle them, and
/// a thousand cells a block made that take minutes there.
#[cfg(all(miri, not(any(loom, dualq_small_segments))))]
const BLOCK_BYTES: usize = 2 * 1024;
/// Under loom and `--cfg dualq_small_segments`: two one-cell groups.
#[cfg(any(loom, dualq_small_segments))]
const BLOCK_BYTES: usize = 0;

/// Bytes of an aligned group (a power of two): 1008 of 1024 bytes hold
/// `u64` cells. Bigger groups would waste less per group but more to
/// alignment per block (up to a group's size, in the allocator).
#[cfg(not(any(loom, dualq_small_segments)))]
const GROUP_BYTES: usize = 1024;
/// Under loom and `--cfg dualq_small_segments`: the smallest aligned group
/// that holds one cell.
#[cfg(any(loom, dualq_small_segments))]
const GROUP_BYTES: usize = 0;

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
}

/// A block's header; its cells are in `groups`.
struct Block<N, T> {
    /// Indices handed out. Grows past the capacity when pushes find the
    /// block exhausted; only indices below it name cells.
    allocated: CachePadded<AtomicUsize>,
    /// Cells dead, plus one once the block is no longer `current` (module
    /// docs). Separate line: producers claim, consumers kill.
    dead: CachePadded<AtomicUsize>,
    /// The group array ([`Shape`]): each group's first word points back
    /// here, and its cells follow. Fixed; the allocation is the block's.
    groups: *mut u8,
    /// The next spare while the block waits in the pool (`crate::spares`).
    next_spare: AtomicPtr<Block<N, T>>,
    /// Debug and loom builds check that no push claims in a retired block
    /// (a plain `std` atomic, so that loom does not explore it).
    #[cfg(any(debug_assertions, loom))]
    retired: std::sync::atomic::AtomicBool,
    _cells: PhantomData<DataCell<N, T>>,
}

/// How a block's cells lie in its group array, for cells of type `C`
/// (constants, computed once per type).
struct Shape<C>(PhantomData<C>);

impl<C> Shape<C> {
    const CELL: usize = size_of::<C>();
    /// Offset of a group's first cell: after the block pointer, aligned.
    const HEAD: usize = round_up(size_of::<*const ()>(), align_of::<C>());
    /// The aligned group that holds at least one cell.
    const ALIGNED_GROUP: usize = max(GROUP_BYTES, (Self::HEAD + Self::CELL).next_power_of_two());
    /// Whether groups are aligned (module docs): cells small enough for 4
    /// to a group, or (loom, small segments) always.
    const ALIGNED: bool = GROUP_BYTES == 0 || (Self::ALIGNED_GROUP - Self::HEAD) / Self::CELL >= 4;
    /// Bytes from one group to the next.
    const GROUP: usize = if Self::ALIGNED {
        Self::ALIGNED_GROUP
    } else {
        Self::HEAD + Self::CELL
    };
    const PER_GROUP: usize = (Self::GROUP - Self::HEAD) / Self::CELL;
    const GROUPS: usize = if BLOCK_BYTES == 0 {
        2
    } else {
        max(BLOCK_BYTES / Self::GROUP, div_ceil(4, Self::PER_GROUP))
    };
    /// Cells per block.
    const CAPACITY: usize = Self::GROUPS * Self::PER_GROUP;
    /// The group array's allocation.
    const ARRAY: (usize, usize) = (
        Self::GROUPS * Self::GROUP,
        if Self::ALIGNED {
            Self::GROUP
        } else {
            max(align_of::<C>(), align_of::<*const ()>())
        },
    );

    fn layout() -> Layout {
        Layout::from_size_align(Self::ARRAY.0, Self::ARRAY.1).expect("a block's layout")
    }

    /// Offset of cell `index` in the group array.
    fn offset(index: usize) -> usize {
        (index / Self::PER_GROUP) * Self::GROUP
            + Self::HEAD
            + (index % Self::PER_GROUP) * Self::CELL
    }

    /// Address of the block pointer of the group that holds the cell at
    /// `cell` (an address inside a group array of this shape).
    fn group_head(cell: usize) -> usize {
        if Self::ALIGNED {
            cell & !(Self::GROUP - 1)
        } else {
            cell - Self::HEAD
        }
    }
}

const fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) / to * to
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

const fn div_ceil(n: usize, d: usize) -> usize {
    (n + d - 1) / d
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
        Shape::<DataCell<N, T>>::CAPACITY
    }

    /// Cell `index` (below the capacity) of `block`: a raw pointer with the
    /// group array's provenance.
    ///
    /// # Safety
    ///
    /// `block` is alive.
    unsafe fn cell(block: *const Self, index: usize) -> *const DataCell<N, T> {
        debug_assert!(index < Self::capacity());
        // SAFETY: alive; the offset is inside the group array.
        unsafe { (*block).groups.add(Shape::<DataCell<N, T>>::offset(index)) }.cast()
    }

    /// The block that `cell` belongs to: read from its group's head.
    ///
    /// # Safety
    ///
    /// `cell` is a live cell of a live block of this type.
    unsafe fn of(cell: *const DataCell<N, T>) -> *const Self {
        let head = Shape::<DataCell<N, T>>::group_head(cell as usize);
        // SAFETY: the group's head word was written when the block was
        // made and never changes (a recycled block keeps its groups), and
        // the block is alive (the caller's contract), so the read is of
        // initialised, unchanging memory. The pointer is built from the
        // integer address: the group array's provenance was exposed when
        // the block was made (`with_first_claimed`), and a cell's pointer
        // may come from the stack's tagged words, which are integers too.
        unsafe { *(head as *const *const Self) }
    }

    /// A fresh block whose cell 0 is already claimed (by its creator).
    fn with_first_claimed() -> Owned<Self> {
        type S<N, T> = Shape<DataCell<N, T>>;
        // Through raw pointers: the groups keep `home` as their block, so
        // the header is not written through any other path after they get
        // it (Miri's borrow checks reject a back-pointer taken before a
        // write).
        let home = Box::into_raw(Box::new(Block {
            allocated: CachePadded::new(AtomicUsize::new(1)),
            dead: CachePadded::new(AtomicUsize::new(0)),
            groups: std::ptr::null_mut(),
            next_spare: AtomicPtr::new(std::ptr::null_mut()),
            #[cfg(any(debug_assertions, loom))]
            retired: std::sync::atomic::AtomicBool::new(false),
            _cells: PhantomData,
        }));
        let layout = S::<N, T>::layout();
        // SAFETY: the layout's size is not zero (at least one group).
        let groups = unsafe { std::alloc::alloc(layout) };
        if groups.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // Exposes the array's provenance for `of` (see there).
        let _ = groups as usize;
        for group in 0..S::<N, T>::GROUPS {
            // SAFETY: inside the fresh array, aligned for a pointer (the
            // group stride and the array are).
            unsafe {
                groups
                    .add(group * S::<N, T>::GROUP)
                    .cast::<*const Self>()
                    .write(home)
            };
        }
        // SAFETY: `home` was just allocated and is ours alone; from here on
        // its plain fields are only read (its counters are atomics).
        unsafe { (*home).groups = groups };
        for index in 0..Self::capacity() {
            // SAFETY: each cell's place in the fresh array, aligned (module
            // docs), written once.
            unsafe {
                (Self::cell(home, index) as *mut DataCell<N, T>).write(DataCell {
                    next: Atomic::null(),
                    value: UnsafeCell::new(MaybeUninit::uninit()),
                })
            };
        }
        // SAFETY: from `Box::into_raw`.
        unsafe { Owned::from_raw(home) }
    }

    /// Roughly what a block occupies: the spares' budget unit.
    fn bytes() -> usize {
        size_of::<Self>() + Shape::<DataCell<N, T>>::ARRAY.0
    }

    /// Makes a dead block fresh (no cell handed out, none dead) and keeps
    /// it in `spares`, or frees it if the pool is full. The cells need no
    /// reset: a claimant writes `next` and the value before it publishes a
    /// cell, and the groups' head words point at this block still.
    ///
    /// # Safety
    ///
    /// `block` came from [`Block::with_first_claimed`], is no longer
    /// `current`, and every cell of it is dead and unreachable: no thread
    /// can touch it (its grace period is over, or the stack is being
    /// dropped).
    unsafe fn recycle(block: *mut Self, spares: &Spares<Self>) {
        // SAFETY: the caller's contract.
        unsafe {
            Self::reset(block);
            spares.put(block);
        }
    }

    /// Makes a block fresh: no cell handed out, none dead.
    ///
    /// # Safety
    ///
    /// As [`recycle`](Self::recycle), or the block was never installed.
    unsafe fn reset(block: *mut Self) {
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
        let counter = unsafe { &(*block).dead };
        let capacity = Self::capacity();
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
            // when 64 entries fill it: 64 blocks of 16 KiB would sit there
            // for as long as the thread does nothing else. Hand the bag over
            // now (once per block, not per value).
            guard.flush();
        }
    }
}

// SAFETY: `next_spare` is the pool's alone.
unsafe impl<N, T> Spare for Block<N, T> {
    unsafe fn next_spare(this: *const Self) -> *mut Self {
        // SAFETY: alive (the caller's contract); only the link is read.
        unsafe { (*this).next_spare.load(Ordering::Relaxed) }
    }

    fn set_next_spare(&self, next: *mut Self) {
        self.next_spare.store(next, Ordering::Relaxed)
    }
}

impl<N, T> Drop for Block<N, T> {
    fn drop(&mut self) {
        let block: *const Self = self;
        for index in 0..Self::capacity() {
            // SAFETY: each cell was written when the block was made; no
            // value is left in any (every cell died before the block was
            // retired), so this drops no `T`, only the cells' own parts.
            unsafe { std::ptr::drop_in_place(Self::cell(block, index) as *mut DataCell<N, T>) };
        }
        // SAFETY: allocated with this layout in `with_first_claimed`, and
        // the block's last user is gone.
        unsafe { std::alloc::dealloc(self.groups, Shape::<DataCell<N, T>>::layout()) };
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
                Block::of(cell),
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

    /// Cells per block (for the native tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn block_capacity() -> usize {
        Block::<N, T>::capacity()
    }

    /// How many retired blocks the pool holds (for tests).
    #[cfg(test)]
    pub(crate) fn spares_held(&self) -> usize {
        self.spares.held()
    }

    /// How many recycled blocks were reused (for the native tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn spares_reused(&self) -> usize {
        self.spares
            .reused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A block whose cell 0 is already claimed: a recycled one if the pool
    /// has one, else a new one.
    fn fresh_block(&self, guard: &Guard) -> Owned<Block<N, T>> {
        match self.spares.take(guard) {
            // SAFETY: a spare is ours alone, reset (`Block::reset`) before
            // it went to the pool, from `with_first_claimed`
            // (`Box::into_raw`). Relaxed: published with the block (the
            // Release CAS on `current`).
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
                if index < Block::<N, T>::capacity() {
                    // SAFETY: below the capacity; the block is alive (above).
                    let cell = unsafe { &*Block::cell(block, index) };
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
            let fresh = spare.take().unwrap_or_else(|| self.fresh_block(guard));
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
                    break unsafe { &*Block::cell(fresh.as_raw(), 0) };
                }
                Err(e) => spare = Some(e.new),
            }
        };
        if let Some(unused) = spare {
            // A block made for an install we lost, never shared: reset it.
            // It may have come from the pool, so it goes back after a grace
            // period (`defer_put`, see `crate::spares`).
            let unused = unused.into_shared(guard).as_raw() as *mut Block<N, T>;
            // SAFETY: ours alone, from `fresh_block`; its cells never lived.
            unsafe {
                Block::reset(unused);
                Spares::defer_put(&self.spares, unused, guard);
            }
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
            let capacity = Block::<N, T>::capacity();
            let spare = capacity - block.allocated.load(Ordering::Relaxed).min(capacity);
            // SAFETY: the spare cells never lived; with the `current`
            // reference, the count reaches its end and the block is
            // recycled into the pool at once (unprotected guard; the pool
            // frees it when its last owner goes). `block` is not used after.
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
    fn shapes_of_small_middling_and_big_cells() {
        type Of<T> = Shape<DataCell<Item, T>>;
        /// Aligned groups?, group stride, cells per group, cells per block.
        fn shape<T>() -> (bool, usize, usize, usize) {
            (
                Of::<T>::ALIGNED,
                Of::<T>::GROUP,
                Of::<T>::PER_GROUP,
                Of::<T>::CAPACITY,
            )
        }
        let (u64s, mid, big) = (shape::<u64>(), shape::<[u8; 200]>(), shape::<[u8; 4096]>());
        if GROUP_BYTES == 0 {
            // Two aligned one-cell groups, whatever the value.
            assert_eq!(u64s, (true, 32, 1, 2));
            assert_eq!(mid, (true, 256, 1, 2));
            assert_eq!(big, (true, 8192, 1, 2));
        } else {
            // A `u64` cell is 16 bytes: 63 of them after the 8-byte head of
            // a 1 KiB group, 16 groups to a block.
            let groups = BLOCK_BYTES / 1024; // 16 (2 under Miri)
            assert_eq!(u64s, (true, 1024, 63, 63 * groups));
            assert_eq!(mid, (true, 1024, 4, 4 * groups));
            // 4104-byte cells: one per group, the head right before it;
            // at least 4 cells per block.
            assert_eq!(big, (false, 4112, 1, 4));
        }
        assert_eq!(Of::<u64>::ARRAY.1 % align_of::<DataCell<Item, u64>>(), 0);
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

    // Values of every shape (aligned groups of many cells, aligned groups
    // of four, one-cell groups) go in and out across several blocks: each
    // cell finds its block (a wrong head would miscount deaths: the
    // assertion in `count_dead` or a leak).
    #[test]
    #[cfg(not(loom))]
    fn cells_of_every_shape_find_their_block() {
        fn round_trip<T: PartialEq + std::fmt::Debug>(make: impl Fn(usize) -> T) {
            let cells = Cells::<Item, T>::new();
            let n = 2 * Block::<Item, T>::capacity() + 3;
            let guard = &epoch::pin();
            let claimed: Vec<_> = (0..n).map(|i| cells.claim(make(i), guard)).collect();
            for (i, &cell) in claimed.iter().enumerate() {
                // SAFETY: a live cell of a live block.
                let block = unsafe { Block::of(cell) };
                let index = i % Block::<Item, T>::capacity();
                // SAFETY: alive (its cells are).
                assert_eq!(unsafe { Block::cell(block, index) }, cell as *const _);
            }
            for (i, cell) in claimed.into_iter().enumerate() {
                // SAFETY: claimed above, never published, taken once.
                assert_eq!(unsafe { cells.take(cell, guard) }, make(i));
            }
        }
        round_trip(|i| i as u64);
        round_trip(|i| [i as u8; 200]);
        round_trip(|i| [i as u8; 4096]);
        round_trip(|i| i.to_string());
    }

    // Claims across several blocks, then every cell dies: each value comes
    // back once, and a fresh block is installed per `capacity` claims.
    // (That the blocks are then recycled or freed is checked natively by
    // scenario (e) of `tests/memory.rs`: Miri runs with leak checks off.)
    #[test]
    #[cfg(not(loom))]
    fn every_cell_dies_once_and_blocks_go() {
        claim_and_take(&Cells::new(), 7);
        let cells = Cells::<Item, String>::new();
        let n = 3 * Block::<Item, String>::capacity() + 1;
        let guard = &epoch::pin();
        let claimed: Vec<_> = (0..n).map(|i| cells.claim(i.to_string(), guard)).collect();
        // SAFETY: live cells of live blocks.
        let blocks: std::collections::HashSet<_> =
            claimed.iter().map(|&c| unsafe { Block::of(c) }).collect();
        assert_eq!(blocks.len(), 4, "a fresh block per capacity claims");
        for (i, cell) in claimed.into_iter().enumerate().rev() {
            // SAFETY: claimed above, never published, taken once.
            assert_eq!(unsafe { cells.take(cell, guard) }, i.to_string());
        }
        drop(cells);
    }
}
