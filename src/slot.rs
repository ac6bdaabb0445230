//! A structure's element slot: the state word, the value cell and (for a
//! reservation) the registered waiter (a thread or an async task), with the
//! spin-then-park protocol that every dual structure in the crate shares.
//!
//! # State table
//!
//! A slot is a *datum* (a stored value), a *reservation* (a consumer waiting
//! for one) or an *offer* (a value whose producer waits until a consumer
//! takes it: a `transfer`). The kind is fixed at construction: `DATA` never
//! changes, and the other two kinds never reach each other's states.
//!
//! Reservations:
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
//! Offers (the producer is the owner, the consumer the completer):
//!
//! | state       | value cell                          | who moves it on, and how |
//! |-------------|-------------------------------------|--------------------------|
//! | `OFFERED`   | initialised, the producer's value   | a consumer: CAS to `TAKEN` (take); the producer: CAS to `CANCELLED` (timeout); `close`: CAS to `CLOSED` |
//! | `TAKEN`     | moved out by the consumer that won  | terminal                 |
//! | `CANCELLED` | initialised; the producer moves it out (it gets its value back) | terminal |
//! | `CLOSED`    | initialised; the producer moves it out | terminal              |
//!
//! `OFFERED -> TAKEN` is the linearization point of the take and of the
//! transfer's fulfilment; exactly one of the three CASes out of `OFFERED`
//! wins, so a value is either taken once or comes back to its producer. A
//! consumer claims an offer *in place* (while it is linked where consumers
//! find it), never after unlinking it, so a live offer is always visible.
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
    current, fence, park_until, AtomicBool, AtomicUsize, Ordering, Spin, UnsafeCell, WaitSpin,
};
use crate::waiter::{Waiter, WaiterCell};

const DATA: usize = 0;
const WAITING: usize = 1;
const BUSY: usize = 2;
const FULFILLED: usize = 3;
const CANCELLED: usize = 4;
const CLOSED: usize = 5;
const OFFERED: usize = 6;
const TAKEN: usize = 7;

/// What a slot is; fixed at construction (state table).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Datum,
    Reservation,
    Offer,
}

/// What a producer does when no consumer waits (each structure's `put`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// Store the value (`push`).
    Store,
    /// Link an offer and let the caller wait for a consumer (`transfer`).
    Offer,
    /// Nothing: hand the value back (`try_transfer`).
    OnlyToWaiter,
}

/// How an offer's wait ended.
pub(crate) enum OfferOutcome<T> {
    /// A consumer took the value.
    Taken,
    /// The structure was closed first: the value comes back.
    Closed(T),
    /// The deadline passed and the producer's cancel won: the value comes
    /// back.
    Cancelled(T),
}

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

/// One element of a dual structure: a datum, a reservation or an offer.
pub(crate) struct Slot<T> {
    state: AtomicUsize,
    /// Initialised in `DATA` (until taken), `FULFILLED` (until the waiter
    /// takes it), and in an offer until a consumer or its producer moves it
    /// out; see the state tables.
    value: UnsafeCell<MaybeUninit<T>>,
    /// Who to wake when a reservation or an offer completes (unused by
    /// data).
    waiter: WaiterCell,
    kind: Kind,
}

impl<T> Slot<T> {
    /// A datum holding `value`.
    pub(crate) fn data(value: T) -> Self {
        Slot {
            state: AtomicUsize::new(DATA),
            value: UnsafeCell::new(MaybeUninit::new(value)),
            waiter: WaiterCell::new(),
            kind: Kind::Datum,
        }
    }

    /// A datum whose value is already gone (a queue's initial dummy).
    pub(crate) fn taken() -> Self {
        Slot {
            state: AtomicUsize::new(DATA),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            waiter: WaiterCell::new(),
            kind: Kind::Datum,
        }
    }

    /// A reservation, waiting. Its owner registers itself only when it is
    /// about to park (module docs).
    pub(crate) fn reservation() -> Self {
        Slot {
            state: AtomicUsize::new(WAITING),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            waiter: WaiterCell::new(),
            kind: Kind::Reservation,
        }
    }

    /// An offer of `value`, waiting for a consumer.
    pub(crate) fn offer(value: T) -> Self {
        Slot {
            state: AtomicUsize::new(OFFERED),
            value: UnsafeCell::new(MaybeUninit::new(value)),
            waiter: WaiterCell::new(),
            kind: Kind::Offer,
        }
    }

    /// Whether this is a reservation (fixed at construction).
    pub(crate) fn is_reservation(&self) -> bool {
        self.kind == Kind::Reservation
    }

    /// Whether this is a datum: a stored value, or a queue's dummy (fixed at
    /// construction).
    pub(crate) fn is_datum(&self) -> bool {
        self.kind == Kind::Datum
    }

    /// Whether this is an offer (fixed at construction).
    pub(crate) fn is_offer(&self) -> bool {
        self.kind == Kind::Offer
    }

    /// Whether this is an offer still waiting for a consumer. `Acquire`, as
    /// [`is_waiting`](Self::is_waiting).
    pub(crate) fn is_offered(&self) -> bool {
        self.state.load(Ordering::Acquire) == OFFERED
    }

    /// Whether this is a reservation or an offer that is over (its waiting
    /// party is done or leaving): such a node may be removed.
    pub(crate) fn is_dead(&self) -> bool {
        match self.kind {
            Kind::Datum => false,
            Kind::Reservation => !self.is_waiting(),
            Kind::Offer => !self.is_offered(),
        }
    }

    /// Whether a consumer may take this slot's value now: a datum (its
    /// value still there is the structure's business) or a live offer.
    pub(crate) fn holds_value(&self) -> bool {
        match self.kind {
            Kind::Datum => true,
            Kind::Reservation => false,
            Kind::Offer => self.is_offered(),
        }
    }

    /// Whether this reservation still waits for a value. `Acquire`: a caller
    /// that sees a final state may act on it (pairs with the CASes and stores
    /// out of `WAITING`/`BUSY`).
    pub(crate) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Whether this reservation or offer timed out.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Moves a datum's value out (or an offer's that was never published).
    ///
    /// # Safety
    ///
    /// The slot is a datum whose value is still there, and the caller has won
    /// the structure's CAS that makes it the only taker (so this runs at most
    /// once per value), or an offer nobody else has seen. The slot's
    /// construction happens-before this call.
    pub(crate) unsafe fn take_data(&self) -> T {
        // (An offer never published is taken back the same way.)
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

    /// A consumer's attempt to take an offer's value (state table, offers).
    /// `None` if the offer is no longer `OFFERED`.
    ///
    /// # Safety
    ///
    /// The slot is an offer reached through the structure (so its
    /// construction, value included, happens-before this call), and stays
    /// allocated until this call returns.
    pub(crate) unsafe fn take_offer(&self) -> Option<T> {
        debug_assert!(self.is_offer());
        // Relaxed: the value was written before the node was published, and
        // our path to the node (Acquire loads) already orders that write
        // before our read. Nothing of ours needs publishing to the producer:
        // on `TAKEN` it never touches the value again (the node's memory is
        // kept by the reference counts, with their own Release/Acquire).
        self.state
            .compare_exchange(OFFERED, TAKEN, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        // SAFETY: we won OFFERED -> TAKEN: the value is ours alone (state
        // table, offers); it was initialised at construction.
        let value = self.value.with(|p| unsafe { ptr::read(p).assume_init() });
        self.waiter.wake();
        Some(value)
    }

    /// Closes a waiting reservation or offer and wakes its waiting party.
    /// Returns whether this call closed it. The caller has stored the closed
    /// flag and issued `fence(SeqCst)` first.
    pub(crate) fn close_waiting(&self) -> bool {
        let live = match self.kind {
            Kind::Datum => return false,
            Kind::Reservation => WAITING,
            Kind::Offer => OFFERED,
        };
        // Release: pairs with the waiting party's Acquire load. It publishes
        // the caller's earlier store of the structure's `closed` flag, so a
        // waiter that returns "closed" is guaranteed to see `is_closed()`.
        let closed = self
            .state
            .compare_exchange(live, CLOSED, Ordering::Release, Ordering::Relaxed)
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
    /// (its value, or closed), `None` while it waits.
    ///
    /// A claimed-but-unwritten slot (`BUSY`) is waited out (a few of the
    /// producer's instructions, as in [`cancel`](Self::cancel)), never
    /// reported as waiting: the claim is the fulfilment's linearization
    /// point, so after it "no value yet" would be wrong. (A later push that
    /// saw this reservation claimed stores its value instead, and a `try_pop`
    /// may already have taken that; the lincheck specification of
    /// reservations found this.)
    ///
    /// # Safety
    ///
    /// As [`look`](Self::look): only the owner, and never again after `Some`.
    pub(crate) unsafe fn try_take(&self) -> Option<WaitOutcome<T>> {
        let spinner = Spin::new();
        loop {
            // SAFETY: the caller's contract is look's; we return on the
            // first final outcome.
            match unsafe { self.look() } {
                Look::Done(outcome) => return Some(outcome),
                Look::Waiting => return None,
                Look::Busy => spinner.snooze(),
            }
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
        // SAFETY: the caller's contract; `poll_with` stops calling the look
        // after its first final outcome.
        self.poll_with(cx, || unsafe { self.try_take() })
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

    /// The owner's blocking wait: spin (as `spin` says), then park until the
    /// reservation is fulfilled, closed, or the deadline passes and the
    /// cancel CAS wins.
    ///
    /// No epoch guard may be held across this call: it can block for ever.
    ///
    /// # Safety
    ///
    /// As [`look`](Self::look): only the owner, once, and not after a final
    /// outcome.
    pub(crate) unsafe fn wait(&self, deadline: Option<Instant>, spin: WaitSpin) -> WaitOutcome<T> {
        // SAFETY (both closures): the caller's contract; `block` stops
        // calling them after the first final outcome.
        self.block(
            deadline,
            spin,
            || unsafe { self.try_take() },
            || unsafe { self.cancel() },
        )
    }

    /// The producer's look at its offer: `Some` once it is final.
    ///
    /// # Safety
    ///
    /// The caller is the offer's producer (its owner), and no earlier look
    /// or withdrawal returned a final outcome: a value that comes back is
    /// moved out here.
    unsafe fn offer_outcome(&self) -> Option<OfferOutcome<T>> {
        debug_assert!(self.is_offer());
        // Acquire: pairs with `close_waiting`'s Release CAS, so a producer
        // told "closed" sees the structure's closed flag. (A consumer's take
        // is Relaxed and publishes nothing: see `take_offer`.)
        match self.state.load(Ordering::Acquire) {
            OFFERED => None,
            TAKEN => Some(OfferOutcome::Taken),
            // SAFETY: CLOSED: nobody took the value; it is the owner's
            // again, and by the caller's contract read once.
            CLOSED => Some(OfferOutcome::Closed(unsafe { self.value_back() })),
            state => unreachable!("offer in state {state}"),
        }
    }

    /// The producer's withdrawal (a timeout): CAS `OFFERED -> CANCELLED`,
    /// and the value comes back; or, if a consumer or `close` got there
    /// first, that outcome.
    ///
    /// # Safety
    ///
    /// As [`offer_outcome`](Self::offer_outcome).
    pub(crate) unsafe fn withdraw(&self) -> OfferOutcome<T> {
        // Acquire on failure: as in `offer_outcome`.
        match self
            .state
            .compare_exchange(OFFERED, CANCELLED, Ordering::Relaxed, Ordering::Acquire)
        {
            // SAFETY: we won: nobody can take the value any more.
            Ok(_) => OfferOutcome::Cancelled(unsafe { self.value_back() }),
            // SAFETY: the caller's contract; the offer is final now.
            Err(_) => unsafe { self.offer_outcome() }.expect("a failed withdrawal is final"),
        }
    }

    /// The producer's blocking wait for a consumer to take its offer: spin
    /// (as `spin` says), then park, until taken, closed, or the deadline passes
    /// and the withdrawal wins.
    ///
    /// # Safety
    ///
    /// As [`offer_outcome`](Self::offer_outcome).
    pub(crate) unsafe fn wait_offer(
        &self,
        deadline: Option<Instant>,
        spin: WaitSpin,
    ) -> OfferOutcome<T> {
        // SAFETY (both closures): the caller's contract; `block` stops
        // calling them after the first final outcome.
        self.block(
            deadline,
            spin,
            || unsafe { self.offer_outcome() },
            || unsafe { self.withdraw() },
        )
    }

    /// The producer's async look at its offer: ready once it is final;
    /// otherwise registers the task's waker and re-checks (module docs).
    ///
    /// # Safety
    ///
    /// As [`offer_outcome`](Self::offer_outcome): only the producer, and
    /// never again after `Ready`.
    pub(crate) unsafe fn poll_offer(&self, cx: &mut Context<'_>) -> Poll<OfferOutcome<T>> {
        // SAFETY: the caller's contract; `poll_with` stops calling the look
        // after its first final outcome.
        self.poll_with(cx, || unsafe { self.offer_outcome() })
    }

    /// Moves an offer's value back out to its producer.
    ///
    /// # Safety
    ///
    /// The offer is `CANCELLED` or `CLOSED` (its value untouched since
    /// construction), the caller is its producer, and does this once.
    unsafe fn value_back(&self) -> T {
        // SAFETY: the caller's contract (state table, offers).
        self.value.with(|p| unsafe { ptr::read(p).assume_init() })
    }

    /// The owner's clean-up after a final outcome: drops a waker or thread
    /// handle it registered, rather than leaving it to the node's free
    /// (see [`WaiterCell::forget`]).
    pub(crate) fn forget_waiter(&self) {
        self.waiter.forget();
    }

    /// The owner's async look, for reservations and offers alike: `look`
    /// (as in [`block`](Self::block)); if not final, registers the task's
    /// waker and looks again, since a completion before the registration did
    /// not see it (module docs).
    fn poll_with<R>(&self, cx: &mut Context<'_>, mut look: impl FnMut() -> Option<R>) -> Poll<R> {
        if let Some(outcome) = look() {
            return Poll::Ready(outcome);
        }
        self.waiter.register(Waiter::Task(cx.waker().clone()));
        match look() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }

    /// The owner's spin-then-park loop, for reservations and offers alike.
    ///
    /// `look` returns `Some` on a final outcome (it is not called again
    /// after that), `None` otherwise; `expire` runs (once) when the deadline
    /// passes and decides the outcome. Parking follows the waiter cell's
    /// protocol: register, look again, then park (module docs).
    fn block<R>(
        &self,
        deadline: Option<Instant>,
        spin: WaitSpin,
        mut look: impl FnMut() -> Option<R>,
        expire: impl FnOnce() -> R,
    ) -> R {
        // The waiter served next spins long (`Spin::long`, `long_fine`);
        // the caller picks how (`WaitSpin`).
        let spinner = match spin {
            WaitSpin::Park => None,
            WaitSpin::Coarse => Some(Spin::long()),
            WaitSpin::Fine => Some(Spin::long_fine()),
        };
        loop {
            if let Some(outcome) = look() {
                return outcome;
            }
            if let Some(spinner) = spinner.as_ref().filter(|s| !s.is_completed()) {
                spinner.snooze();
                // A yield can take milliseconds on a loaded machine:
                // honour the deadline during the spin phase too (but a
                // `Fine` spin reads the clock after every 8th `PAUSE` only).
                if spinner.is_checkpoint() && deadline.is_some_and(|d| Instant::now() >= d) {
                    return expire();
                }
                continue;
            }
            self.waiter.register(Waiter::Thread(current()));
            // Re-check after registering (module docs), then park. A wake-up
            // that comes while we still run leaves a token, so the park
            // returns at once.
            if let Some(outcome) = look() {
                return outcome;
            }
            if park_until(deadline) {
                return expire();
            }
        }
    }
}
