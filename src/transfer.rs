//! The producer side of a rendezvous, shared by both structures: linking an
//! *offer*, waiting for a consumer to take it (blocking or async), and
//! withdrawing it.
//!
//! A transfer that finds a waiting consumer hands its value over at once,
//! like a push. Otherwise the structure links an offer: a node whose slot
//! holds the producer's value in state `OFFERED` (see [`crate::slot`], state
//! table, offers). A consumer takes it with one CAS `OFFERED -> TAKEN`; the
//! producer withdraws it with one CAS `OFFERED -> CANCELLED` (timeout, or a
//! dropped [`TransferFuture`]); `close` moves it to `CLOSED`. Exactly one of
//! the three wins, so the value is either taken or comes back, never both.
//!
//! # States of a transfer future
//!
//! | state      | meaning                                      | `poll`                                   | drop / `withdraw`                    |
//! |------------|----------------------------------------------|------------------------------------------|--------------------------------------|
//! | `Unpolled` | holds the value; nothing linked yet          | offers it (may finish at once) -> `Linked` or done | drop: the value with the future; `withdraw`: `Err(value)` |
//! | `Linked`   | an offer is linked; the future is its producer | `Ready` once taken or closed; else registers the waker | withdraws: taken first -> `Ok`; else the value comes back |
//! | `Done`     | returned `Ready` (or withdrew)               | panics (polled after completion)          | nothing                              |
//!
//! The future owns the producer's reference to a linked offer node and is
//! the slot's owner; it leaves `Linked` as soon as an owner method returns a
//! final outcome, which is what their safety contract asks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::error::{PushError, TransferTimeoutError};
use crate::reservation::Line;
use crate::slot::{OfferOutcome, Slot};
use crate::sync::WaitSpin;

/// Where a structure put a transferred value ([`Line::offer`]).
pub(crate) enum Offered<T> {
    /// Handed to a waiting consumer at once.
    Done,
    /// The structure is closed: the value comes back.
    Closed(T),
    /// An offer is linked and waits for a consumer.
    Linked {
        /// The node; the caller now holds its producer's reference.
        node: NonNull<()>,
        /// The node's slot (inside `node`).
        slot: NonNull<Slot<T>>,
        /// How a blocking producer spins before parking (if its offer is
        /// the next one a consumer takes).
        spin: WaitSpin,
    },
}

/// The blocking transfer shared by both structures (after their
/// deadline-passed check): offer, then wait for a taker.
pub(crate) fn transfer_until<T>(
    line: &dyn Line<T>,
    value: T,
    deadline: Option<Instant>,
) -> Result<(), TransferTimeoutError<T>> {
    match line.offer(value) {
        Offered::Done => Ok(()),
        Offered::Closed(value) => Err(TransferTimeoutError::Closed(value)),
        // SAFETY: `offer` linked this node and handed us its producer's
        // reference, which `wait_for_taker` takes over.
        Offered::Linked { node, slot, spin } => unsafe {
            wait_for_taker(line, node, slot, deadline, spin)
        },
    }
}

/// A producer's blocking wait on the offer it linked: until a consumer
/// takes it, the structure closes, or `deadline` passes and the withdrawal
/// wins (then dead offers are removed). Releases the producer's reference.
///
/// # Safety
///
/// `node` is an offer node of `line` that the caller linked, whose
/// producer's reference is handed over; `slot` is its slot.
unsafe fn wait_for_taker<T>(
    line: &dyn Line<T>,
    node: NonNull<()>,
    slot: NonNull<Slot<T>>,
    deadline: Option<Instant>,
    spin: WaitSpin,
) -> Result<(), TransferTimeoutError<T>> {
    // SAFETY: the producer's reference keeps the slot alive; we are its
    // producer and wait on it once.
    let outcome = unsafe { slot.as_ref().wait_offer(deadline, spin) };
    // SAFETY: the outcome is final; this is the producer's reference.
    unsafe { finish(line, node, outcome) }.map_err(|(value, closed)| {
        if closed {
            TransferTimeoutError::Closed(value)
        } else {
            TransferTimeoutError::Timeout(value)
        }
    })
}

/// After an offer's final outcome: removes a withdrawn offer, releases the
/// producer's reference. `Err((value, closed))` when the value came back.
///
/// # Safety
///
/// `node` is an offer node of `line` whose producer's reference the caller
/// holds and never uses again; `outcome` is its final outcome.
unsafe fn finish<T>(
    line: &dyn Line<T>,
    node: NonNull<()>,
    outcome: OfferOutcome<T>,
) -> Result<(), (T, bool)> {
    let result = match outcome {
        OfferOutcome::Taken => Ok(()),
        OfferOutcome::Closed(value) => Err((value, true)),
        OfferOutcome::Cancelled(value) => {
            line.remove_cancelled();
            Err((value, false))
        }
    };
    // SAFETY: the caller's contract.
    unsafe { line.release(node) };
    result
}

enum State<T> {
    Unpolled(T),
    Linked {
        node: NonNull<()>,
        slot: NonNull<Slot<T>>,
    },
    Done,
}

/// The future of `transfer_async` on a [`DualQueue`](crate::DualQueue) or a
/// [`DualStack`](crate::DualStack): completes once a consumer has taken the
/// value.
///
/// It offers the value on its first poll (an unpolled future takes no place
/// in line and holds the value), then waits like a blocking
/// [`transfer`](crate::DualQueue::transfer): sync and async producers share
/// one line, in the structure's order. It resolves to `Err(PushError(value))`
/// if the structure is (or becomes) closed before a consumer takes it.
///
/// Dropping a pending future **withdraws** the offer: either a consumer took
/// the value before the drop (the transfer happened), or nobody ever will and
/// the value is dropped with the future. To get the value back instead, call
/// [`withdraw`](Self::withdraw).
///
/// The future is runtime-agnostic: it needs nothing but its waker.
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use std::pin::pin;
/// use std::task::{Context, Poll};
/// # struct Noop;
/// # impl std::task::Wake for Noop { fn wake(self: std::sync::Arc<Self>) {} }
/// # let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
///
/// let q = dualq::DualQueue::new();
/// let mut cx = Context::from_waker(&waker);
/// let mut send = pin!(q.transfer_async("hi"));
/// assert!(send.as_mut().poll(&mut cx).is_pending()); // offered, waiting
/// assert_eq!(q.try_pop(), Ok("hi")); // a consumer takes it...
/// assert_eq!(send.poll(&mut cx), Poll::Ready(Ok(()))); // ...and the transfer is done
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct TransferFuture<'a, T> {
    line: &'a dyn Line<T>,
    state: State<T>,
}

// SAFETY: the future holds a `T` (or the producer's claim on one in a slot)
// and a reference to a `DualQueue<T>` or `DualStack<T>` (the only `Line`
// implementors), which is `Sync` when `T: Send`. Moving the future moves the
// slot's ownership; the slot's waiter cell lets the new owner register.
unsafe impl<T: Send> Send for TransferFuture<'_, T> {}
// SAFETY: `&TransferFuture` allows nothing but `Debug`, which reads no value.
unsafe impl<T: Send> Sync for TransferFuture<'_, T> {}
// Nothing in the future is pinned: it never hands out `Pin<&mut T>`.
impl<T> Unpin for TransferFuture<'_, T> {}

impl<'a, T> TransferFuture<'a, T> {
    pub(crate) fn new(line: &'a dyn Line<T>, value: T) -> Self {
        TransferFuture {
            line,
            state: State::Unpolled(value),
        }
    }

    /// Gives up the transfer and returns the value, unless a consumer has
    /// taken it already.
    ///
    /// Returns `Err(value)` if the value was not taken: never offered (the
    /// future was not polled), or withdrawn now. Returns `Ok(())` if a
    /// consumer took it (the transfer happened, even if the future has not
    /// been polled since), or if the future had already completed (its
    /// output said how).
    ///
    /// # Errors
    ///
    /// `Err(value)`: the value was not taken, and comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::future::Future;
    /// use std::pin::Pin;
    /// use std::task::Context;
    /// # struct Noop;
    /// # impl std::task::Wake for Noop { fn wake(self: std::sync::Arc<Self>) {} }
    /// # let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    ///
    /// let s = dualq::DualStack::new();
    /// let mut cx = Context::from_waker(&waker);
    /// let mut send = s.transfer_async(5);
    /// assert!(Pin::new(&mut send).poll(&mut cx).is_pending());
    /// assert_eq!(s.waiting_producers(), 1);
    /// assert_eq!(send.withdraw(), Err(5)); // nobody took it: it comes back
    /// assert_eq!(s.waiting_producers(), 0);
    /// ```
    pub fn withdraw(mut self) -> Result<(), T> {
        self.withdraw_now()
    }

    /// `withdraw`, leaving the future `Done`.
    fn withdraw_now(&mut self) -> Result<(), T> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Unpolled(value) => Err(value),
            State::Done => Ok(()),
            State::Linked { node, slot } => {
                // SAFETY: the future is the offer's producer, in `Linked`
                // (module docs): no final outcome seen yet; it is `Done`
                // from here on.
                let outcome = unsafe { slot.as_ref().withdraw() };
                // SAFETY: our reference keeps the slot alive. A task may
                // have registered here: do not let a lingering node keep
                // its waker.
                unsafe { slot.as_ref() }.forget_waiter();
                // SAFETY: final outcome; the producer's reference, unused
                // after this.
                unsafe { finish(self.line, node, outcome) }.map_err(|(value, _)| value)
            }
        }
    }
}

impl<T> Future for TransferFuture<'_, T> {
    type Output = Result<(), PushError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (node, slot) = match std::mem::replace(&mut this.state, State::Done) {
            State::Unpolled(value) => match this.line.offer(value) {
                Offered::Done => return Poll::Ready(Ok(())),
                Offered::Closed(value) => return Poll::Ready(Err(PushError(value))),
                Offered::Linked { node, slot, .. } => (node, slot),
            },
            State::Linked { node, slot } => (node, slot),
            State::Done => panic!("TransferFuture polled after completion"),
        };
        // SAFETY: the producer of this offer, in `Linked`: no final outcome
        // seen yet (module docs).
        match unsafe { slot.as_ref().poll_offer(cx) } {
            Poll::Pending => {
                this.state = State::Linked { node, slot };
                Poll::Pending
            }
            Poll::Ready(outcome) => {
                // SAFETY: our reference keeps the slot alive; drop the
                // registered waker now (see `withdraw_now`).
                unsafe { slot.as_ref() }.forget_waiter();
                // SAFETY: final outcome; the producer's reference, unused
                // after this (the state is `Done`).
                let sent = unsafe { finish(this.line, node, outcome) };
                Poll::Ready(sent.map_err(|(value, _)| PushError(value)))
            }
        }
    }
}

impl<T> Drop for TransferFuture<'_, T> {
    fn drop(&mut self) {
        // A value that comes back (never offered, or withdrawn) is dropped
        // with the future (documented on the type).
        drop(self.withdraw_now());
    }
}

impl<T> fmt::Debug for TransferFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Unpolled(_) => "Unpolled",
            State::Linked { .. } => "Linked",
            State::Done => "Done",
        };
        f.debug_struct("TransferFuture")
            .field("state", &state)
            .finish()
    }
}
