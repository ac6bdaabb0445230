//! A structure's element slot: the state word, the value cell and (for a
//! reservation) the registered waiter (a thread or an async task), with the
//! spin-then-park protocol that every dual structure in the crate shares.
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
//! * Waking: whoever moves a reservation out of `WAITING`/`BUSY` for good
//!   (`FULFILLED`, `CLOSED`) then calls [`WaiterCell::wake`]; the owner
//!   registers itself ([`WaiterCell::register`]) only when it is about to
//!   park (or return `Pending`), and re-checks the state after registering.
//!   The waiter cell's protocol (see [`crate::waiter`]) guarantees that
//!   either the wake sees the registration or the re-check sees the final
//!   state: no lost wake-up, and no wake-up at all for an owner that is
//!   still spinning.
//! * The waiter cell is touched by the completing side after its final
//!   store. The slot must therefore outlive that access even if the owner
//!   returns at once: the structures keep the slot's memory alive by
//!   reference counting plus the completer's epoch guard (see each
//!   structure).
//!
//! # The owner
//!
//! A reservation has one *owner* at a time: the consumer that linked it, or
//! whoever holds its [`Reservation`](crate::Reservation) handle (which may
//! move between threads and tasks). Only the owner reads the final state and
//! moves the value out; the `unsafe` methods below say so in their contract.

use std::mem::MaybeUninit;
use std::ptr;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::sync::{
    current, fence, park_until, AtomicBool, AtomicUsize, Ordering, Spin, UnsafeCell,
};
use crate::waiter::{Waiter, WaiterCell};

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

/// What the owner finds when it looks at its reservation once.
enum Look<T> {
    /// Final: the value (moved out now), or closed.
    Done(WaitOutcome<T>),
    /// A producer is between its claim and its final store.
    Busy,
    /// Still waiting.
    Waiting,
}

/// One element of a dual structure: a datum or a reservation.
pub(crate) struct Slot<T> {
    state: AtomicUsize,
    /// Initialised in `DATA` (until taken) and `FULFILLED` (until the waiter
    /// takes it); see the state table.
    value: UnsafeCell<MaybeUninit<T>>,
    /// Who to wake when a reservation completes (unused by data).
    waiter: WaiterCell,
    /// Whether this is a reservation (fixed at construction).
    reservation: bool,
}

impl<T> Slot<T> {
    /// A datum holding `value`.
    pub(crate) fn data(value: T) -> Self {
        Slot {
            state: AtomicUsize::new(DATA),
            value: UnsafeCell::new(MaybeUninit::new(value)),
            waiter: WaiterCell::new(),
            reservation: false,
        }
    }

    /// A datum whose value is already gone (a queue's initial dummy).
    pub(crate) fn taken() -> Self {
        Slot {
            state: AtomicUsize::new(DATA),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            waiter: WaiterCell::new(),
            reservation: false,
        }
    }

    /// A reservation, waiting. Its owner registers itself only when it is
    /// about to park (module docs).
    pub(crate) fn reservation() -> Self {
        Slot {
            state: AtomicUsize::new(WAITING),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            waiter: WaiterCell::new(),
            reservation: true,
        }
    }

    /// Whether this is a reservation (fixed at construction).
    pub(crate) fn is_reservation(&self) -> bool {
        self.reservation
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
                self.waiter.wake();
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
        self.waiter.wake();
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
            self.waiter.wake();
        }
        closed
    }

    /// Looks at the reservation once (the owner's side).
    ///
    /// # Safety
    ///
    /// The caller is the reservation's owner, and no earlier look (by any of
    /// the owner methods) returned a final outcome: a `FULFILLED` value is
    /// moved out here, so it must be read once.
    unsafe fn look(&self) -> Look<T> {
        debug_assert!(self.is_reservation());
        // Acquire: pairs with the Release store of FULFILLED (or CLOSED).
        match self.state.load(Ordering::Acquire) {
            FULFILLED => {
                // SAFETY: FULFILLED means the value is initialised and is
                // the owner's; the Acquire above makes the write visible;
                // by the caller's contract this is the one read (state
                // table).
                let value = self.value.with(|p| unsafe { ptr::read(p).assume_init() });
                Look::Done(WaitOutcome::Value(value))
            }
            CLOSED => Look::Done(WaitOutcome::Closed),
            BUSY => Look::Busy,
            WAITING => Look::Waiting,
            state => unreachable!("reservation in state {state}"),
        }
    }

    /// The owner's non-blocking look: `Some` once the reservation is final
    /// (its value, or closed). A claimed-but-unwritten slot (`BUSY`) counts
    /// as not final yet.
    ///
    /// # Safety
    ///
    /// As [`look`](Self::look): only the owner, and never again after `Some`.
    pub(crate) unsafe fn try_take(&self) -> Option<WaitOutcome<T>> {
        // SAFETY: the caller's contract is look's.
        match unsafe { self.look() } {
            Look::Done(outcome) => Some(outcome),
            Look::Busy | Look::Waiting => None,
        }
    }

    /// The owner's async look: ready once the reservation is final;
    /// otherwise registers the task's waker and re-checks (module docs).
    ///
    /// # Safety
    ///
    /// As [`look`](Self::look): only the owner, and never again after
    /// `Ready`.
    pub(crate) unsafe fn poll_take(&self, cx: &mut Context<'_>) -> Poll<WaitOutcome<T>> {
        // SAFETY (both looks): the caller's contract is look's; the first
        // look returned no outcome, so the second may.
        if let Some(outcome) = unsafe { self.try_take() } {
            return Poll::Ready(outcome);
        }
        self.waiter.register(Waiter::Task(cx.waker().clone()));
        // Re-check after registering: a completion before the registration
        // did not see it (module docs).
        match unsafe { self.try_take() } {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }

    /// The owner's cancel (a timeout, or a dropped handle): CAS `WAITING ->
    /// CANCELLED`. If a producer or `close` got there first, waits out a
    /// `BUSY` claim (a few instructions) and returns the final outcome, so a
    /// value that was delivered is never lost.
    ///
    /// # Safety
    ///
    /// As [`look`](Self::look): only the owner, once, and not after a final
    /// outcome.
    pub(crate) unsafe fn cancel(&self) -> WaitOutcome<T> {
        let spinner = Spin::new();
        loop {
            // Acquire on failure: if a producer won, we read its value next.
            match self.state.compare_exchange(
                WAITING,
                CANCELLED,
                Ordering::Relaxed,
                Ordering::Acquire,
            ) {
                Ok(_) => return WaitOutcome::Cancelled,
                // SAFETY: the caller's contract is look's.
                Err(_) => match unsafe { self.look() } {
                    Look::Done(outcome) => return outcome,
                    Look::Busy => spinner.snooze(),
                    Look::Waiting => {} // cannot happen after a failed CAS; retry
                },
            }
        }
    }

    /// The owner's blocking wait: spin (if `spin`), then park until the
    /// reservation is fulfilled, closed, or the deadline passes and the
    /// cancel CAS wins.
    ///
    /// No epoch guard may be held across this call: it can block for ever.
    ///
    /// # Safety
    ///
    /// As [`look`](Self::look): only the owner, once, and not after a final
    /// outcome.
    pub(crate) unsafe fn wait(&self, deadline: Option<Instant>, spin: bool) -> WaitOutcome<T> {
        let spinner = Spin::new();
        loop {
            // SAFETY (every look and the cancel): the caller's contract;
            // each returns at once on a final outcome.
            match unsafe { self.look() } {
                Look::Done(outcome) => return outcome,
                // A producer is between its claim and its store: a few
                // instructions, unless it was preempted. Yield-spin.
                Look::Busy => spinner.snooze(),
                Look::Waiting if spin && !spinner.is_completed() => {
                    spinner.snooze();
                    // A yield can take milliseconds on a loaded machine:
                    // honour the deadline during the spin phase too.
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return unsafe { self.cancel() };
                    }
                }
                Look::Waiting => {
                    self.waiter.register(Waiter::Thread(current()));
                    // Re-check after registering (module docs); then park.
                    // A wake-up that comes while we still run leaves a
                    // token, so the park returns at once.
                    if !self.is_waiting() {
                        continue;
                    }
                    if park_until(deadline) {
                        return unsafe { self.cancel() };
                    }
                }
            }
        }
    }
}
