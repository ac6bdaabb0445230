//! A structure's element slot: the state word, the value cell and (for a
//! reservation) the waiting thread, with the spin-then-park protocol that every
//! dual structure in the crate shares.
//!
//! # State table
//!
//! A slot is either a *datum* (a stored value) or a *reservation* (a consumer
//! waiting for one). The kind is fixed at construction: `DATA` never changes,
//! and a reservation never becomes `DATA`.
//!
//! | state       | value cell                   | who moves it on, and how                                   |
//! |-------------|------------------------------|------------------------------------------------------------|
//! | `DATA`      | initialised until taken      | nobody: the structure decides (by its own CAS) who takes it |
//! | `WAITING`   | uninitialised                | a producer: CAS to `BUSY` (fulfil); the waiter: CAS to `CANCELLED` (timeout); `close`: CAS to `CLOSED` |
//! | `BUSY`      | being written by the claimer | the producer that won `WAITING -> BUSY` only: store `FULFILLED` (or `CLOSED` if it was given the structure's closed flag and found it set) |
//! | `FULFILLED` | initialised, owned by waiter | terminal; the waiter moves the value out exactly once      |
//! | `CANCELLED` | uninitialised                | terminal                                                   |
//! | `CLOSED`    | uninitialised                | terminal                                                   |
//!
//! `WAITING -> BUSY` is the fulfilment's linearization point (the push's, and
//! the pop's second); `WAITING -> CANCELLED` is a timed-out pop's. Exactly one
//! of the three CASes out of `WAITING` wins, so a value is never both delivered
//! and handed back, and a waiter whose cancel loses always gets the value.
//!
//! # Synchronization
//!
//! * The producer writes the value, then stores `FULFILLED` with `Release`;
//!   the waiter loads the state with `Acquire` before reading the value.
//! * Closing against fulfilling is a store-buffering (Dekker) pattern: `close`
//!   stores the structure's `closed` flag, then `fence(SeqCst)`, then CASes
//!   `WAITING -> CLOSED`; a producer CASes `WAITING -> BUSY`, then
//!   `fence(SeqCst)`, then loads `closed`. At least one sees the other, so a
//!   producer that reads `closed == false` fulfilled before the close took
//!   effect, and one that reads `true` hands its value back.
//! * A structure whose producers can only claim a reservation before its close
//!   takes effect needs no such check: the dual stack claims only under a
//!   fulfilling node on its (unsealed) top, and `close` cannot seal the top
//!   until that node is gone (see `stack.rs`). It calls
//!   [`fulfil_with`](Slot::fulfil_with) without a closed flag, so for it `BUSY`
//!   always ends in `FULFILLED`.
//! * The waiter's thread handle is read by the producer after the `FULFILLED`
//!   store. The slot must therefore outlive the producer's access even if the
//!   waiter returns at once: the structures keep the slot's memory alive by
//!   reference counting plus the producer's epoch guard (see each structure).

use std::mem::MaybeUninit;
use std::ptr;
use std::time::Instant;

use crate::sync::{
    current, fence, park_until, AtomicBool, AtomicUsize, Ordering, Spin, Thread, UnsafeCell,
};

const DATA: usize = 0;
const WAITING: usize = 1;
const BUSY: usize = 2;
const FULFILLED: usize = 3;
const CANCELLED: usize = 4;
const CLOSED: usize = 5;

/// What a producer's attempt to fulfil a reservation did. `V` is what the
/// producer offered: the value itself ([`Slot::fulfil`]) or the closure that
/// would have produced it ([`Slot::fulfil_with`]).
pub(crate) enum Fulfil<V> {
    /// The value is the waiter's now.
    Delivered,
    /// The slot was no longer waiting (fulfilled, cancelled or closed by
    /// someone else); the offer comes back to try elsewhere.
    NotWaiting(V),
    /// The producer claimed the slot but found the structure closed: it closed
    /// the slot instead, and the offer comes back.
    Closed(V),
}

/// How a reservation's wait ended.
pub(crate) enum WaitOutcome<T> {
    /// A producer delivered this value.
    Value(T),
    /// The structure was closed while waiting.
    Closed,
    /// The deadline passed and the waiter's cancel CAS won: no value exists.
    Cancelled,
}

/// One element of a dual structure: a datum or a reservation.
pub(crate) struct Slot<T> {
    state: AtomicUsize,
    /// Initialised in `DATA` (until taken) and `FULFILLED` (until the waiter
    /// takes it); see the state table.
    value: UnsafeCell<MaybeUninit<T>>,
    /// The waiting thread; `Some` exactly for reservations.
    waiter: Option<Thread>,
}

impl<T> Slot<T> {
    /// A datum holding `value`.
    pub(crate) fn data(value: T) -> Self {
        Slot {
            state: AtomicUsize::new(DATA),
            value: UnsafeCell::new(MaybeUninit::new(value)),
            waiter: None,
        }
    }

    /// A datum whose value is already gone (a queue's initial dummy).
    pub(crate) fn taken() -> Self {
        Slot {
            state: AtomicUsize::new(DATA),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            waiter: None,
        }
    }

    /// A reservation for the calling thread.
    pub(crate) fn reservation() -> Self {
        Slot {
            state: AtomicUsize::new(WAITING),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            waiter: Some(current()),
        }
    }

    /// Whether this is a reservation (fixed at construction).
    pub(crate) fn is_reservation(&self) -> bool {
        self.waiter.is_some()
    }

    /// Whether this reservation still waits for a value. `Acquire`: a caller
    /// that sees a final state may act on it (pairs with the CASes and stores
    /// out of `WAITING`/`BUSY`).
    pub(crate) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Whether this reservation timed out.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Moves a datum's value out.
    ///
    /// # Safety
    ///
    /// The slot is a datum whose value is still there, and the caller has won
    /// the structure's CAS that makes it the only taker (so this runs at most
    /// once per value). The slot's construction happens-before this call.
    pub(crate) unsafe fn take_data(&self) -> T {
        debug_assert!(!self.is_reservation());
        // SAFETY: by the caller's contract the value is initialised and we are
        // its only reader; the state table's `DATA` row.
        self.value.with(|p| unsafe { ptr::read(p).assume_init() })
    }

    /// Whether a producer has claimed this reservation (`BUSY` or
    /// `FULFILLED`). `Acquire`: pairs with the claim and the `FULFILLED`
    /// store, like [`is_waiting`](Self::is_waiting).
    pub(crate) fn is_claimed(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), BUSY | FULFILLED)
    }

    /// A producer's attempt to hand `value` to this reservation.
    ///
    /// `closed` is the structure's closed flag (see the module docs on the
    /// close/fulfil race).
    pub(crate) fn fulfil(&self, value: T, closed: &AtomicBool) -> Fulfil<T> {
        match self.fulfil_with(move || value, Some(closed)) {
            Fulfil::Delivered => Fulfil::Delivered,
            Fulfil::NotWaiting(take) => Fulfil::NotWaiting(take()),
            Fulfil::Closed(take) => Fulfil::Closed(take()),
        }
    }

    /// A producer's attempt to fulfil this reservation with a value it does
    /// not hold yet: `take` produces the value and runs only after this call
    /// has won `WAITING -> BUSY` (and, given a `closed` flag, found it unset),
    /// so a value parked elsewhere (a dual stack's fulfilling node) moves out
    /// of its old place at most once, and only into this slot. Otherwise
    /// `take` comes back unrun.
    ///
    /// `closed`: the structure's closed flag, for structures whose producers
    /// can claim a reservation after the close took effect (the queue; see the
    /// module docs). `None` for a structure that rules that out itself (the
    /// stack); then a won claim always ends in `FULFILLED`.
    pub(crate) fn fulfil_with<F: FnOnce() -> T>(
        &self,
        take: F,
        closed: Option<&AtomicBool>,
    ) -> Fulfil<F> {
        debug_assert!(self.is_reservation());
        // Acquire on failure is not needed: we do not read the value then.
        // Success needs no Acquire either: the waiter wrote nothing we read.
        if self
            .state
            .compare_exchange(WAITING, BUSY, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Fulfil::NotWaiting(take);
        }
        if let Some(closed) = closed {
            // SeqCst: Dekker with `close_reservation`'s caller (see module
            // docs): pairs with the fence after the structure stores `closed`.
            fence(Ordering::SeqCst);
            // Relaxed: the fences above order it (module docs).
            if closed.load(Ordering::Relaxed) {
                // Release: pairs with the waiter's Acquire load of the state.
                self.state.store(CLOSED, Ordering::Release);
                self.unpark();
                return Fulfil::Closed(take);
            }
        }
        let value = take();
        // SAFETY: we won WAITING -> BUSY, so we are the only writer, and the
        // waiter reads only after it sees FULFILLED (state table, `BUSY`).
        self.value
            .with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
        // Release: publishes the value; pairs with the Acquire load in `wait`.
        self.state.store(FULFILLED, Ordering::Release);
        self.unpark();
        Fulfil::Delivered
    }

    /// Closes a waiting reservation and wakes its waiter. Returns whether this
    /// call closed it. The caller has stored the closed flag and issued
    /// `fence(SeqCst)` first.
    pub(crate) fn close_reservation(&self) -> bool {
        if !self.is_reservation() {
            return false;
        }
        // Release: pairs with the waiter's Acquire load. It publishes the
        // caller's earlier store of the structure's `closed` flag, so a waiter
        // that returns "closed" is guaranteed to see `is_closed()` true.
        let closed = self
            .state
            .compare_exchange(WAITING, CLOSED, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if closed {
            self.unpark();
        }
        closed
    }

    fn unpark(&self) {
        if let Some(thread) = &self.waiter {
            thread.unpark();
        }
    }

    /// The waiter's side: spin (if `spin`), then park until the reservation
    /// is fulfilled, closed, or the deadline passes and the cancel CAS wins.
    ///
    /// No epoch guard may be held across this call: it can block for ever.
    /// Must be called only by the thread that created the reservation, once.
    pub(crate) fn wait(&self, deadline: Option<Instant>, spin: bool) -> WaitOutcome<T> {
        debug_assert!(self.is_reservation());
        let spinner = Spin::new();
        let mut deadline_passed = false;
        loop {
            // Acquire: pairs with the Release store of FULFILLED (or CLOSED).
            match self.state.load(Ordering::Acquire) {
                FULFILLED => {
                    // SAFETY: FULFILLED means the value is initialised and is
                    // ours; the Acquire above makes the write visible; we
                    // return now, so we read it once (state table).
                    let value = self.value.with(|p| unsafe { ptr::read(p).assume_init() });
                    return WaitOutcome::Value(value);
                }
                CLOSED => return WaitOutcome::Closed,
                // A producer is between its claim and its store: a few
                // instructions, unless it was preempted. Yield-spin.
                BUSY => spinner.snooze(),
                WAITING => {
                    if deadline_passed {
                        // Acquire on failure: if a producer won, we go round
                        // and read its value.
                        if self
                            .state
                            .compare_exchange(
                                WAITING,
                                CANCELLED,
                                Ordering::Relaxed,
                                Ordering::Acquire,
                            )
                            .is_ok()
                        {
                            return WaitOutcome::Cancelled;
                        }
                    } else if spin && !spinner.is_completed() {
                        spinner.snooze();
                        // A yield can take milliseconds on a loaded machine:
                        // honour the deadline during the spin phase too.
                        deadline_passed = deadline.is_some_and(|d| Instant::now() >= d);
                    } else {
                        deadline_passed = park_until(deadline);
                    }
                }
                state => unreachable!("reservation in state {state}"),
            }
        }
    }
}
