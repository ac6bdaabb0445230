//! A data segment: the cells of one [`DualQueue`](crate::DualQueue) data
//! node, which stores up to [`Segment::capacity`] values instead of one.
//!
//! One node and one allocation per value made the buffered path slow
//! (allocation, a deferred free and at least one cache-line transfer per
//! value) and memory-hungry (72 B per `u64`). A segment stores values in
//! an array: producers claim cells by `fetch_add` on `enq`, consumers by a
//! CAS on `deq`, and the two meet in the cell, as in the fetch-and-add
//! queues of Yang & Mellor-Crummey (PPoPP 2016) and Koval et al. (PLDI
//! 2023). The queue's linked list still holds everything that waits
//! (reservations, offers); see `docs/buffered-path.md`.
//!
//! # The counters
//!
//! * `enq` counts producer claims; its top bit is `SEALED`. `fetch_add`
//!   hands each producer a distinct index `i`: it may write cell `i` only
//!   if `i < capacity` and the returned word was not sealed. Once sealed
//!   (or full) the set of writable cells is fixed: the *claimed count*
//!   `min(enq & !SEALED, capacity)` may still grow through late claims
//!   (returned sealed), but each such producer breaks its own cell right
//!   after its claim (a consumer that reaches the cell first waits for that
//!   break, or breaks the cell itself after its spin phase). Producers that
//!   already saw the segment refuse writers make no claim.
//! * `deq` counts consumer claims. A consumer claims index `d` by CAS
//!   `d -> d + 1` only if `d` is below the claimed count, so `deq` never
//!   passes `enq`, and each index has at most one producer and at most one
//!   consumer.
//!
//! A segment is *sealed* before anything is linked after it (a
//! reservation, an offer, a new segment after a broken cell) or when the
//! queue closes: no value can then land in it behind a later node.
//!
//! # A cell's states
//!
//! | state    | value          | moved on by                                          | to       |
//! |----------|----------------|------------------------------------------------------|----------|
//! | `EMPTY`  | uninitialised  | its producer, after writing the value (CAS, `Release`) | `READY`  |
//! | `EMPTY`  | uninitialised  | its consumer, tired of waiting; or its producer whose claim came after the seal (CAS) | `BROKEN` |
//! | `READY`  | initialised (moved out once the index is below `deq`) | nobody while shared (see below) | terminal |
//! | `BROKEN` | uninitialised  | nobody; the producer (if any) keeps its value         | terminal |
//! | `TAKEN`  | moved out      | only with `&mut` (an unpublished cell 0, `Drop`)      | terminal |
//!
//! A consumer that moves a value out leaves its cell `READY`: the cell is
//! below `deq`, and a cell below `deq` is never read again (each index has
//! one consumer, and its operation returns only after taking or breaking the
//! cell). So `Drop` and `reset`, which run with `&mut`, treat only the
//! `READY` cells at or above `deq` as holding a value. Not storing `TAKEN`
//! spares the consumer a write to the line that producers write next (the
//! states share the `enq` block): fanout-1x8 and the pool row ~5 % faster
//! in alternating runs (session 11).
//!
//! The only race on a cell is `EMPTY -> READY` against `EMPTY -> BROKEN`,
//! and exactly one CAS wins: a value is either delivered to the cell's one
//! consumer or stays with its producer, never both. A producer whose cell
//! was broken seals the segment and from then on only appends a new segment
//! that already holds its value (written before it is published, so no
//! consumer can break it; see `DualQueue::put`): a push meets at most one
//! broken cell.
//!
//! # Synchronization
//!
//! * The value is published by the producer's `Release` CAS to `READY` and
//!   read after the consumer's `Acquire` load of `READY`.
//! * The counters publish nothing themselves (`Relaxed` RMWs); what a
//!   reader of them needs is coherence: each index is handed out once, and
//!   whoever sees the seal (through the queue's `closed` flag, stored
//!   `Release` after sealing) sees every claim before it.
//! * The segment is recycled (reset and reused, `crate::spares`) or freed
//!   through the queue's epoch collector, after the node holding it left
//!   the list; every cell access is made while pinned.

use std::mem::MaybeUninit;
use std::ptr;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU8, AtomicUsize, Ordering, Spin, UnsafeCell};

const EMPTY: u8 = 0;
const READY: u8 = 1;
const TAKEN: u8 = 2;
const BROKEN: u8 = 3;

/// Top bit of `enq`: no more cells can be claimed for writing.
const SEALED: usize = 1 << (usize::BITS - 1);

/// Bytes of values per segment that the capacity aims at (a segment of
/// `u64`s holds [`MAX_CELLS`] of them; a segment of 4 KiB values, one).
const VALUE_BYTES: usize = 4096;
/// The most cells in a segment.
#[cfg(not(any(loom, dualq_small_segments)))]
const MAX_CELLS: usize = 64;
/// Under loom, two cells: models cross segment boundaries with few values.
/// The same for native test runs built with `--cfg dualq_small_segments`
/// (CI runs the stress and linearizability tests so), where nearly every
/// push then meets a full or sealed segment and races its neighbours'
/// appends.
#[cfg(any(loom, dualq_small_segments))]
const MAX_CELLS: usize = 2;

/// Why a segment gave a producer its value back.
pub(crate) enum Refused<T> {
    /// Full or sealed: no cell can be claimed for writing.
    ClosedToWriters(T),
    /// The claimed cell was broken by its consumer (the producer was late);
    /// the segment is sealed now.
    Broken(T),
}

impl<T> Refused<T> {
    pub(crate) fn into_value(self) -> T {
        match self {
            Refused::ClosedToWriters(value) | Refused::Broken(value) => value,
        }
    }
}

/// What a consumer's attempt to take from a segment found.
pub(crate) enum Take<T> {
    /// The oldest value not yet claimed, moved out.
    Taken(T),
    /// The claimed cell was broken (its producer was late): try again.
    Broken,
    /// No value here and none can come: every writable cell is claimed by a
    /// consumer. The node may become the dummy.
    Exhausted,
    /// No value here now, but producers may still claim cells.
    Empty,
}

/// Up to `capacity()` values; see the module docs.
pub(crate) struct Segment<T> {
    /// Producer claims, beside the cell states and the values' pointer.
    back: CachePadded<Back<T>>,
    /// Consumer claims (CAS), never above the claimed count.
    deq: CachePadded<AtomicUsize>,
}

/// The producers' counter and the cells, in one padded block (128 B on
/// x86_64): every producer writes `enq` and a state, and every consumer
/// reads `enq`, the values' pointer and a state, so they share the block
/// anyway. The padding then rounds the segment to 2 blocks, not 3, and the
/// states need no allocation of their own: 16.3 -> 13.3 B per stored `u64`,
/// and 5-10 % faster spsc and fanout in one-process runs.
struct Back<T> {
    /// Producer claims (`fetch_add`), with [`SEALED`].
    enq: AtomicUsize,
    /// The cells' values; its length is the segment's capacity.
    values: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// The cells' states (only the first `values.len()` are used).
    states: [AtomicU8; MAX_CELLS],
}

impl<T> Segment<T> {
    /// How many cells a segment of `T`s has.
    pub(crate) fn capacity() -> usize {
        (VALUE_BYTES / std::mem::size_of::<T>().max(1)).clamp(1, MAX_CELLS)
    }

    /// A segment whose first cell already holds `value` (claimed and
    /// `READY`): it is published with it, so no consumer can break it.
    pub(crate) fn with_first(value: T) -> Self {
        let cells = Self::capacity();
        let values: Box<[UnsafeCell<MaybeUninit<T>>]> = (0..cells)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        let mut segment = Segment {
            back: CachePadded::new(Back {
                enq: AtomicUsize::new(0),
                states: std::array::from_fn(|_| AtomicU8::new(EMPTY)),
                values,
            }),
            deq: CachePadded::new(AtomicUsize::new(0)),
        };
        segment.store_first(value);
        segment
    }

    /// Makes an exhausted segment (every value taken) fresh again: no cell
    /// claimed, every cell `EMPTY`. For reuse (`crate::spares`).
    pub(crate) fn reset(&mut self) {
        // Relaxed stores: `&mut self`. Whoever uses the segment next gets it
        // through the spares' Release/Acquire pair, then publishes it with
        // the queue's Release CAS on `next`.
        debug_assert_eq!(
            self.stored_cells().count(),
            0,
            "a value left in a retired segment"
        );
        for state in self.back.states.iter() {
            state.store(EMPTY, Ordering::Relaxed);
        }
        self.back.enq.store(0, Ordering::Relaxed);
        self.deq.store(0, Ordering::Relaxed);
    }

    /// Stores `value` in cell 0 of a fresh (or reset) segment, claimed and
    /// `READY`, before the segment is published.
    pub(crate) fn store_first(&mut self, value: T) {
        debug_assert_eq!(
            self.back.enq.load(Ordering::Relaxed),
            0,
            "not a fresh segment"
        );
        // SAFETY: `&mut self`, and no cell is claimed: cell 0 is ours.
        self.back.values[0].with_mut(|p| unsafe { (*p).write(value) });
        // Relaxed: `&mut self`; published with the segment (as in `reset`).
        self.back.states[0].store(READY, Ordering::Relaxed);
        self.back.enq.store(1, Ordering::Relaxed);
    }

    /// A producer's attempt to store `value` in the next free cell. Gives
    /// the value back if the segment is full or sealed, or if a consumer
    /// broke the claimed cell; in the latter case the segment is sealed
    /// before returning (the caller then appends a new segment).
    pub(crate) fn try_push(&self, value: T) -> Result<(), Refused<T>> {
        // Relaxed: the index is a claim; the value is published by the cell
        // CAS below. Each index is handed out once (RMW on one word).
        let claim = self.back.enq.fetch_add(1, Ordering::Relaxed);
        let index = claim & !SEALED;
        if index >= self.back.values.len() {
            // Full: the claimed count is fixed.
            return Err(Refused::ClosedToWriters(value));
        }
        if claim & SEALED != 0 {
            // A claim after the seal: nobody may write here, and the cell's
            // consumer (if any) must not wait for it. Relaxed: BROKEN
            // publishes nothing; the CAS only races the consumer's own break.
            let _ = self.back.states[index].compare_exchange(
                EMPTY,
                BROKEN,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return Err(Refused::ClosedToWriters(value));
        }
        // SAFETY: index `index` is ours alone (the fetch_add above), and
        // the cell is EMPTY: nobody reads it until it is READY.
        self.back.values[index].with_mut(|p| unsafe { (*p).write(value) });
        // Release: publishes the value; pairs with the consumer's Acquire
        // load in `take_claimed`. Relaxed on failure: the cell was broken
        // and we read nothing the breaker wrote.
        match self.back.states[index].compare_exchange(
            EMPTY,
            READY,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(_) => {
                // BROKEN: no consumer will read the cell; the value is still
                // ours alone.
                // SAFETY: written above, never published.
                let value = self.back.values[index].with(|p| unsafe { ptr::read(p).assume_init() });
                self.seal();
                Err(Refused::Broken(value))
            }
        }
    }

    /// A consumer's attempt to take the oldest unclaimed value.
    pub(crate) fn try_take(&self) -> Take<T> {
        loop {
            // Relaxed: the counters publish nothing (the value comes through
            // the cell's state); coherence of each word is all we need, and
            // the seal reaches us through `closed` or `next` (module docs).
            let deq = self.deq.load(Ordering::Relaxed);
            let enq = self.back.enq.load(Ordering::Relaxed);
            let claimed = (enq & !SEALED).min(self.back.values.len());
            if deq < claimed {
                // Relaxed: a claim; the value comes through the cell's state.
                if self
                    .deq
                    .compare_exchange_weak(deq, deq + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    return match self.take_claimed(deq) {
                        Some(value) => Take::Taken(value),
                        None => Take::Broken,
                    };
                }
            } else if self.is_closed_to_writers(enq) {
                return Take::Exhausted;
            } else {
                return Take::Empty;
            }
        }
    }

    /// Waits briefly for the producer of the cell at `index`, which this
    /// consumer has claimed, then takes its value or breaks the cell.
    fn take_claimed(&self, index: usize) -> Option<T> {
        let state = &self.back.states[index];
        let spin = Spin::new();
        loop {
            // Acquire: pairs with the producer's Release CAS to READY.
            match state.load(Ordering::Acquire) {
                READY => {
                    // SAFETY: READY: the value is initialised and published;
                    // we are the cell's only consumer (our deq claim).
                    let value =
                        self.back.values[index].with(|p| unsafe { ptr::read(p).assume_init() });
                    // The cell stays READY: it is below `deq` now, which
                    // is what marks it taken (module docs).
                    return Some(value);
                }
                BROKEN => return None, // a late claim after the seal
                // Under loom, break at once: loom's yield lets the producer
                // finish before we look again, so a spin there would never
                // break a cell, and the models would miss every break.
                _ if cfg!(loom) || spin.is_completed() => {
                    // Acquire on failure: READY then publishes the value.
                    if state
                        .compare_exchange(EMPTY, BROKEN, Ordering::Relaxed, Ordering::Acquire)
                        .is_ok()
                    {
                        return None;
                    }
                }
                _ => spin.snooze(),
            }
        }
    }

    /// Seals the segment: no cell can be claimed for writing any more.
    pub(crate) fn seal(&self) {
        // Relaxed: the seal publishes nothing; writers learn of it from the
        // RMW order on `enq`.
        self.back.enq.fetch_or(SEALED, Ordering::Relaxed);
    }

    /// Whether the segment takes no more values (a snapshot that can only
    /// go from `false` to `true`). A producer that already knows it can
    /// skip its `fetch_add`, whose late claim a consumer would have to pass.
    pub(crate) fn refuses_writers(&self) -> bool {
        // Relaxed: a stale `false` only costs the caller a claim that the
        // `fetch_add` itself then refuses.
        self.is_closed_to_writers(self.back.enq.load(Ordering::Relaxed))
    }

    /// Whether no new value can land in the segment: sealed or full.
    fn is_closed_to_writers(&self, enq: usize) -> bool {
        enq & SEALED != 0 || enq >= self.back.values.len()
    }

    /// How many values are stored and not yet claimed by a consumer (a
    /// snapshot).
    pub(crate) fn ready_values(&self) -> usize {
        // A taken cell stays READY (module docs), so the cells are scanned
        // first and `deq` is loaded again after the scan: a cell counted was
        // READY before that load and not claimed at it, so it held a value
        // at that instant (with `deq` loaded before the scan, cells taken
        // meanwhile would count). Acquire on the states pairs with the
        // producers' Release CAS to READY, as in `take_claimed`, and keeps
        // the second `deq` load after the scan.
        let first = self.deq.load(Ordering::Acquire);
        let claimed = (self.back.enq.load(Ordering::Acquire) & !SEALED).min(self.back.values.len());
        let mut ready = [false; MAX_CELLS];
        for (i, ready) in ready.iter_mut().enumerate().take(claimed).skip(first) {
            *ready = self.back.states[i].load(Ordering::Acquire) == READY;
        }
        let deq = self.deq.load(Ordering::Acquire);
        ready.iter().take(claimed).skip(deq).filter(|&&r| r).count()
    }

    /// Moves the value out of cell 0 of a segment that was never published
    /// (an append that lost its CAS and is given up).
    pub(crate) fn take_unpublished(&mut self) -> T {
        debug_assert_eq!(self.back.states[0].load(Ordering::Relaxed), READY);
        self.back.states[0].store(TAKEN, Ordering::Relaxed);
        // SAFETY: `&mut self`: unpublished, and cell 0 is READY.
        self.back.values[0].with(|p| unsafe { ptr::read(p).assume_init() })
    }
}

impl<T> Drop for Segment<T> {
    fn drop(&mut self) {
        // Values never taken: a queue dropped with values in it. (A segment
        // that left the list is exhausted and holds none.) Moved into a
        // `Vec` first, so that a panicking `drop` of one still drops the
        // others, as a `Vec`'s does.
        let mut left = Vec::new();
        for index in self.stored_cells() {
            self.back.states[index].store(TAKEN, Ordering::Relaxed);
            // SAFETY: `&mut self`; READY at or above `deq`: initialised and
            // never claimed by a consumer, so never moved out.
            left.push(self.back.values[index].with(|p| unsafe { ptr::read(p).assume_init() }));
        }
        drop(left);
    }
}

impl<T> Segment<T> {
    /// The cells that hold a value, for callers with `&mut` (no operation
    /// in progress: `reset`, `Drop`): `READY` and at or above `deq` (a cell
    /// below it was taken or broken; module docs).
    fn stored_cells(&self) -> impl Iterator<Item = usize> + '_ {
        // Relaxed: every access of the operations that ended happens-before
        // the caller's `&mut` (the epoch's or the owner's synchronization).
        let deq = self.deq.load(Ordering::Relaxed);
        let states = &self.back.states[..self.back.values.len()];
        (deq..states.len()).filter(move |&i| states[i].load(Ordering::Relaxed) == READY)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as Count;

    fn take(segment: &Segment<u32>) -> Option<u32> {
        match segment.try_take() {
            Take::Taken(value) => Some(value),
            _ => None,
        }
    }

    // Values come out in the order their cells were claimed; a full segment
    // hands the value back; drained, it is exhausted.
    #[test]
    fn fills_in_order_then_refuses() {
        let cap = Segment::<u32>::capacity();
        assert_eq!(cap, MAX_CELLS);
        let segment = Segment::with_first(0);
        for i in 1..cap as u32 {
            assert!(segment.try_push(i).is_ok());
        }
        assert!(matches!(
            segment.try_push(99),
            Err(Refused::ClosedToWriters(99))
        ));
        assert!(segment.refuses_writers());
        assert_eq!(segment.ready_values(), cap);
        for i in 0..cap as u32 {
            assert_eq!(take(&segment), Some(i));
        }
        assert!(matches!(segment.try_take(), Take::Exhausted));
    }

    // Taken cells stay READY below `deq` (module docs) and do not count.
    #[test]
    fn ready_values_skips_taken_cells() {
        // 2 cells under `--cfg dualq_small_segments`, 64 otherwise.
        let stored = 5.min(Segment::<u32>::capacity() as u32);
        let segment = Segment::with_first(0);
        for i in 1..stored {
            assert!(segment.try_push(i).is_ok());
        }
        assert_eq!(segment.ready_values(), stored as usize);
        assert_eq!(take(&segment), Some(0));
        assert_eq!(segment.ready_values(), stored as usize - 1);
    }

    // An open segment with nothing stored is empty, not exhausted; sealed, it
    // takes no more values and (drained) is exhausted.
    #[test]
    fn seal_stops_writers() {
        let segment = Segment::with_first(7);
        assert_eq!(take(&segment), Some(7));
        assert!(matches!(segment.try_take(), Take::Empty));
        assert!(!segment.refuses_writers());
        segment.seal();
        assert!(segment.refuses_writers());
        assert!(matches!(
            segment.try_push(8),
            Err(Refused::ClosedToWriters(8))
        ));
        // The late claim broke its own cell; a consumer passes it at once.
        assert!(matches!(segment.try_take(), Take::Broken));
        assert!(matches!(segment.try_take(), Take::Exhausted));
    }

    // A cell broken by its consumer hands the producer its value back and
    // seals the segment.
    #[test]
    fn broken_cell_returns_the_value() {
        let segment = Segment::with_first(1);
        // Claim cell 1 for writing without writing it, as a slow producer.
        segment.back.enq.fetch_add(1, Ordering::Relaxed);
        assert_eq!(take(&segment), Some(1));
        // The consumer waits its spin phase for the producer, then breaks it.
        assert!(matches!(segment.try_take(), Take::Broken));
        // Nothing stored (with 2 cells the segment is also full).
        assert!(matches!(segment.try_take(), Take::Empty | Take::Exhausted));
        // The slow producer now writes cell 1 (as `try_push` would after
        // its claim) and finds it broken.
        let cell = 1;
        // SAFETY: we made the claim of cell 1 above; nobody else writes it.
        segment.back.values[cell].with_mut(|p| unsafe { (*p).write(5) });
        assert!(segment.back.states[cell]
            .compare_exchange(EMPTY, READY, Ordering::Release, Ordering::Relaxed)
            .is_err());
        segment.seal();
        assert!(matches!(segment.try_take(), Take::Exhausted));
    }

    // Every value still stored is dropped exactly once with the segment, and
    // taken ones are not dropped again.
    #[test]
    fn drop_drops_what_is_left() {
        static DROPS: Count = Count::new(0);
        struct D;
        impl Drop for D {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let segment = Segment::with_first(D);
        let stored = 5.min(Segment::<D>::capacity());
        for _ in 1..stored {
            assert!(segment.try_push(D).is_ok());
        }
        match segment.try_take() {
            Take::Taken(d) => drop(d),
            _ => panic!("stored value not taken"),
        }
        assert_eq!(DROPS.load(Ordering::Relaxed), 1);
        drop(segment);
        assert_eq!(DROPS.load(Ordering::Relaxed), stored);
    }

    // Large values get fewer cells (one for 4 KiB), zero-sized ones the most.
    #[test]
    fn capacity_follows_the_value_size() {
        assert_eq!(Segment::<[u8; 4096]>::capacity(), 1);
        assert_eq!(Segment::<[u8; 1024]>::capacity(), 4.min(MAX_CELLS));
        assert_eq!(Segment::<()>::capacity(), MAX_CELLS);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
        crate::sync::loom_model(&format!("segment::{name}"), f);
    }

    /// Takes until the segment reports something other than a broken cell.
    fn take_skipping_broken(segment: &Segment<u32>) -> Take<u32> {
        loop {
            match segment.try_take() {
                Take::Broken => continue,
                other => return other,
            }
        }
    }

    // A producer writing its cell races the consumer that claimed it and
    // breaks it: the value reaches exactly one of them, and a producer whose
    // cell was broken leaves the segment sealed.
    #[test]
    fn write_races_break() {
        model("write_races_break", || {
            let segment = Arc::new(Segment::with_first(1));
            let producer = {
                let segment = Arc::clone(&segment);
                thread::spawn(move || segment.try_push(2))
            };
            assert!(matches!(segment.try_take(), Take::Taken(1)));
            let consumer_got = match take_skipping_broken(&segment) {
                Take::Taken(v) => Some(v),
                Take::Empty | Take::Exhausted => None,
                Take::Broken => unreachable!(),
            };
            let pushed = producer.join().unwrap();
            match (pushed, consumer_got) {
                (Ok(()), Some(2)) => {}
                (Ok(()), None) => {
                    // Stored after our look: still there.
                    assert!(matches!(segment.try_take(), Take::Taken(2)));
                }
                (Err(Refused::Broken(2)), None) => {
                    assert!(segment.refuses_writers(), "not sealed");
                    assert!(matches!(segment.try_take(), Take::Exhausted));
                }
                (Ok(()), c) => panic!("pushed 2, the consumer took {c:?}"),
                (Err(r), c) => panic!("push refused ({}), the consumer took {c:?}", r.into_value()),
            }
        });
    }

    // A seal races a producer's claim: after the seal the segment drains to
    // exhausted, and the value was taken iff the push succeeded.
    #[test]
    fn seal_races_claim() {
        model("seal_races_claim", || {
            let segment = Arc::new(Segment::with_first(1));
            let producer = {
                let segment = Arc::clone(&segment);
                thread::spawn(move || segment.try_push(2))
            };
            segment.seal();
            let mut taken = Vec::new();
            loop {
                match take_skipping_broken(&segment) {
                    Take::Taken(v) => taken.push(v),
                    Take::Exhausted => break,
                    Take::Empty => panic!("a sealed segment reported empty"),
                    Take::Broken => unreachable!(),
                }
            }
            let pushed = producer.join().unwrap();
            match pushed {
                Ok(()) => assert_eq!(taken, [1, 2]),
                Err(refused) => {
                    assert_eq!(refused.into_value(), 2);
                    assert_eq!(taken, [1]);
                }
            }
        });
    }
}
