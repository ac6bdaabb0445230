//! [`Reservation`]: a consumer's place in line, as a value; and
//! [`PopFuture`], the async consumer built on it. (The producer's side of a
//! rendezvous is in [`crate::transfer`].)
//!
//! A dual structure's blocking pop is two steps (Scherer & Scott): the
//! *request* (a reservation is linked: its place among the waiters is fixed)
//! and the *follow-up* (the consumer collects what a producer handed it).
//! `reserve` performs the request and returns this handle; the handle is the
//! follow-up, which can happen later, on another thread, or in a task.
//!
//! # States of a handle
//!
//! | state    | meaning                                             | `try_take`                        | `wait*`              | drop |
//! |----------|-----------------------------------------------------|-----------------------------------|----------------------|------|
//! | `Ready`  | `reserve` found a stored value and took it at once  | the value; then `Spent`           | the value            | gives the value back (a push) |
//! | `Linked` | a reservation is in line; the handle is its owner   | the value if fulfilled (`Spent`); `None` if closed (`Closed`) or still waiting | the slot's wait | cancels; a value delivered first is given back |
//! | `Closed` | closed and empty: no value will come                | `None`                            | `Closed`             | nothing |
//! | `Spent`  | `try_take` returned the value                       | `None`                            | `Closed` (documented) | nothing |
//!
//! The handle owns the waiter's reference to a linked node (see the
//! structures' "Memory of a reservation") and is the slot's *owner* (see
//! [`crate::slot`]): every owner method of the slot is called from here, and
//! the handle leaves `Linked` as soon as one returns a final outcome, which
//! is what their safety contract asks.
//!
//! # Where a value that was not collected goes
//!
//! A handle dropped while it holds a value (`Ready`, or `Linked` and
//! fulfilled before the cancel) *gives it back* with an ordinary push by the
//! dropping thread: the queue stores it at the back (or hands it to the
//! oldest waiter), the stack on top (or to the newest waiter). If the
//! structure was closed in between, that push is refused and the value is
//! dropped with the handle: it had been delivered to this handle, whose
//! owner dropped it; nothing else could have received it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{PopError, PopTimeoutError, TryPopError};
use crate::slot::{Slot, WaitOutcome};
use crate::sync::{Spin, WaitSpin};
use crate::transfer::Offered;

/// What a structure does for the reservations it hands out.
pub(crate) trait Line<T> {
    /// Takes a stored value, or links a reservation, or reports closed.
    fn reserve(&self) -> Reservation<'_, T>;

    /// Removes dead reservations and offers after an owner's cancel won
    /// (the queue's sweep, the stack's clean), so timed-out and dropped
    /// handles and timed-out transfers leave memory flat.
    fn remove_cancelled(&self);

    /// Drops the owner's reference to a reservation (or offer) node.
    ///
    /// # Safety
    ///
    /// `node` is a reservation node of this structure, the caller holds its
    /// owner's reference, and nobody uses that reference again.
    unsafe fn release(&self, node: NonNull<()>);

    /// Gives back a value that was delivered to a dropped handle: a push.
    /// A closed structure refuses it (`Err(value)`).
    fn give_back(&self, value: T) -> Result<(), T>;

    /// A transfer's first step: hands `value` to a waiting consumer, or
    /// links an offer (the caller then holds its producer's reference), or
    /// reports closed.
    fn offer(&self, value: T) -> Offered<T>;
}

/// A blocking pop's first phase, shared by both structures: polls with
/// `try_pop` through one spin phase (exponential `PAUSE`s, then a few
/// yields) before the caller takes its place in line. `None` if the phase
/// ended empty: the caller then reserves. If `deadline` passes first, the
/// pop looks once more and then times out here, with nothing linked (and
/// so nothing to cancel).
///
/// Leave its shape alone unless a two-thread run says otherwise (session
/// 11): a version that tried once before setting up the spin, shared as
/// one generic `pop_until`, made a blocking `pop` in one thread 20 %
/// faster (25.2 -> 20.2 ns) and the contended rows 2-3x slower (spsc
/// 37-40 -> 74-135 ns, fanout-1x8 41-54 -> 108-136, alternating runs of
/// the same hour); so did a consumer that looked at its claimed cell
/// before setting up its spin (`Segment::take_claimed`). A consumer that
/// comes back sooner pulls the producer's lines away sooner.
///
/// Why: a consumer that links a reservation the moment it finds the
/// structure empty turns every later push into a hand-off to it, and with
/// more consumers than cores most of those hand-offs go to a parked thread
/// (an unpark per value). Polling first lets a consumer that is still
/// running take the next stored value itself. The service order is
/// unchanged: a push hands its value to the linked reservations first
/// (oldest or newest, as the structure says); a polling consumer is not
/// in line yet and only takes what no waiter was given, as `try_pop`
/// does, so it never overtakes a waiting consumer.
pub(crate) fn poll_before_waiting<T>(
    mut try_pop: impl FnMut() -> Result<T, TryPopError>,
    deadline: Option<Instant>,
) -> Option<Result<T, PopTimeoutError>> {
    let spin = Spin::new();
    while !spin.is_completed() {
        match try_pop() {
            Ok(value) => return Some(Ok(value)),
            Err(TryPopError::Closed) => return Some(Err(PopTimeoutError::Closed)),
            Err(TryPopError::Empty) => spin.snooze(),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Out of time before joining the line: one last look (a value
            // may have come during the snooze, before the deadline), then
            // give up with nothing linked, so nothing to cancel.
            return Some(try_pop().map_err(TryPopError::into_timeout));
        }
    }
    None
}

enum State<T> {
    Ready(T),
    Linked {
        /// The node; the handle holds its owner's reference.
        node: NonNull<()>,
        /// The node's slot (inside `node`).
        slot: NonNull<Slot<T>>,
        /// How to spin before parking (first in line: served next).
        spin: WaitSpin,
    },
    Closed,
    Spent,
}

/// A consumer's place in line: the result of `reserve` on a
/// [`DualQueue`](crate::DualQueue) or a [`DualStack`](crate::DualStack).
///
/// The reservation took its place among the waiting consumers when it was
/// created, so pushes serve it in that order (queue: oldest first; stack:
/// newest first) whether or not anyone is waiting on the handle yet. Collect
/// the value with [`try_take`](Self::try_take) (never parks),
/// [`wait`](Self::wait) or [`wait_timeout`](Self::wait_timeout). The handle
/// may move to another thread (`Send` when `T: Send`).
///
/// Dropping the handle cancels the reservation. If a producer handed it a
/// value first, the value is **given back** with a push by the dropping
/// thread (queue: at the back; stack: on top), never lost; only if the
/// structure was closed meanwhile is the value dropped with the handle.
///
/// # Examples
///
/// ```
/// use dualq::DualQueue;
///
/// let q = DualQueue::new();
/// let mut first = q.reserve(); // in line now: the queue is empty
/// let second = q.reserve();
/// assert_eq!(first.try_take(), None);
/// q.push("a").unwrap(); // goes to `first`: it reserved first
/// q.push("b").unwrap();
/// assert_eq!(second.wait(), Ok("b"));
/// assert_eq!(first.try_take(), Some("a"));
/// ```
#[must_use = "dropping a reservation cancels it"]
pub struct Reservation<'a, T> {
    line: &'a dyn Line<T>,
    state: State<T>,
}

// SAFETY: the handle holds a `T` (or the right to take one out of a slot)
// and a reference to a `DualQueue<T>` or `DualStack<T>` (the only `Line`
// implementors), which is `Sync` when `T: Send`. Moving the handle moves the
// slot's ownership; the slot's waiter cell lets the new owner register.
unsafe impl<T: Send> Send for Reservation<'_, T> {}
// SAFETY: `&Reservation` allows nothing but `Debug`, which reads no value.
unsafe impl<T: Send> Sync for Reservation<'_, T> {}

impl<'a, T> Reservation<'a, T> {
    /// A handle holding a value `reserve` took at once.
    pub(crate) fn ready(line: &'a dyn Line<T>, value: T) -> Self {
        Reservation {
            line,
            state: State::Ready(value),
        }
    }

    /// A handle for a structure found closed and empty.
    pub(crate) fn closed(line: &'a dyn Line<T>) -> Self {
        Reservation {
            line,
            state: State::Closed,
        }
    }

    /// A handle owning a linked reservation.
    ///
    /// # Safety
    ///
    /// `node` is a reservation node of `line`, linked, whose owner's
    /// reference is handed to the handle; `slot` is its slot.
    pub(crate) unsafe fn linked(
        line: &'a dyn Line<T>,
        node: NonNull<()>,
        slot: NonNull<Slot<T>>,
        spin: WaitSpin,
    ) -> Self {
        Reservation {
            line,
            state: State::Linked { node, slot, spin },
        }
    }

    /// Takes the value if it has arrived. Never parks: if a producer is in
    /// the middle of handing the value over (it has claimed this reservation
    /// but not yet written the value), waits out those few instructions and
    /// returns the value, since the handover already happened.
    ///
    /// Returns `None` while the reservation waits, once the structure is
    /// closed without a value for it, and after a value was taken (the
    /// handle is then spent).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::new();
    /// let mut r = s.reserve();
    /// assert_eq!(r.try_take(), None);
    /// s.push(1).unwrap();
    /// assert_eq!(r.try_take(), Some(1));
    /// assert_eq!(r.try_take(), None); // spent
    /// ```
    pub fn try_take(&mut self) -> Option<T> {
        match std::mem::replace(&mut self.state, State::Spent) {
            State::Ready(value) => Some(value),
            State::Linked { node, slot, spin } => {
                // SAFETY: the handle is the slot's owner and, being in
                // `Linked`, has not seen a final outcome (module docs).
                match unsafe { slot.as_ref().try_take() } {
                    None => {
                        self.state = State::Linked { node, slot, spin };
                        None
                    }
                    Some(outcome) => {
                        // SAFETY: final outcome: the owner's reference is
                        // no longer needed.
                        unsafe { self.line.release(node) };
                        match outcome {
                            WaitOutcome::Value(value) => Some(value),
                            WaitOutcome::Closed => {
                                self.state = State::Closed;
                                None
                            }
                            WaitOutcome::Cancelled => unreachable!("only the owner cancels"),
                        }
                    }
                }
            }
            State::Closed => {
                self.state = State::Closed;
                None
            }
            State::Spent => None,
        }
    }

    /// Waits for the value.
    ///
    /// # Errors
    ///
    /// [`PopError`] if the structure was closed with no value for this
    /// reservation, or if [`try_take`](Self::try_take) already took it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::thread;
    ///
    /// let q = dualq::DualQueue::new();
    /// let r = q.reserve();
    /// thread::scope(|s| {
    ///     s.spawn(|| q.push(7).unwrap());
    ///     assert_eq!(r.wait(), Ok(7));
    /// });
    /// ```
    pub fn wait(self) -> Result<T, PopError> {
        self.wait_until(None).map_err(|_| PopError)
    }

    /// Waits for the value at most `timeout`; a timeout too large for an
    /// [`Instant`] waits for ever, a zero one only looks. On `Timeout` the
    /// reservation is cancelled; a value that arrived in the same instant is
    /// returned instead.
    ///
    /// # Errors
    ///
    /// [`PopTimeoutError::Timeout`] if no value came in time,
    /// [`PopTimeoutError::Closed`] as for [`wait`](Self::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use dualq::PopTimeoutError;
    /// use std::time::Duration;
    ///
    /// let q = dualq::DualQueue::<u8>::new();
    /// let r = q.reserve();
    /// assert_eq!(r.wait_timeout(Duration::from_millis(1)), Err(PopTimeoutError::Timeout));
    /// assert_eq!(q.waiting_consumers(), 0); // cancelled
    /// ```
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, PopTimeoutError> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Waits for the value until `deadline`; as
    /// [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_deadline(self, deadline: Instant) -> Result<T, PopTimeoutError> {
        self.wait_until(Some(deadline))
    }

    /// The blocking follow-up with an optional deadline.
    pub(crate) fn wait_until(mut self, deadline: Option<Instant>) -> Result<T, PopTimeoutError> {
        match std::mem::replace(&mut self.state, State::Spent) {
            State::Ready(value) => Ok(value),
            State::Closed | State::Spent => Err(PopTimeoutError::Closed),
            State::Linked { node, slot, spin } => {
                // SAFETY: the owner, in `Linked` (module docs); the handle
                // is `Spent` from here on, so no owner method runs again.
                let outcome = unsafe { slot.as_ref().wait(deadline, spin) };
                let result = self.finish(node, outcome);
                result.map_err(|closed| closed.unwrap_or(PopTimeoutError::Timeout))
            }
        }
    }

    /// Polls for the value (the async follow-up): registers the task's waker
    /// while the reservation waits.
    pub(crate) fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, PopError>> {
        match std::mem::replace(&mut self.state, State::Spent) {
            State::Ready(value) => Poll::Ready(Ok(value)),
            State::Closed | State::Spent => Poll::Ready(Err(PopError)),
            State::Linked { node, slot, spin } => {
                // SAFETY: the owner, in `Linked` (module docs).
                match unsafe { slot.as_ref().poll_take(cx) } {
                    Poll::Pending => {
                        self.state = State::Linked { node, slot, spin };
                        Poll::Pending
                    }
                    Poll::Ready(outcome) => {
                        // SAFETY: our reference keeps the slot alive. Drop
                        // the task's waker now, not when the node is freed.
                        unsafe { slot.as_ref() }.forget_waiter();
                        Poll::Ready(self.finish(node, outcome).map_err(|_| PopError))
                    }
                }
            }
        }
    }

    /// After a final outcome: cleans up a cancel, releases the node.
    /// `Err(Some(Closed))` for closed, `Err(None)` for cancelled.
    fn finish(
        &self,
        node: NonNull<()>,
        outcome: WaitOutcome<T>,
    ) -> Result<T, Option<PopTimeoutError>> {
        let result = match outcome {
            WaitOutcome::Value(value) => Ok(value),
            WaitOutcome::Closed => Err(Some(PopTimeoutError::Closed)),
            WaitOutcome::Cancelled => {
                self.line.remove_cancelled();
                Err(None)
            }
        };
        // SAFETY: final outcome: the owner's reference is no longer needed.
        unsafe { self.line.release(node) };
        result
    }
}

impl<T> Drop for Reservation<'_, T> {
    fn drop(&mut self) {
        let value = match std::mem::replace(&mut self.state, State::Spent) {
            State::Ready(value) => value,
            State::Closed | State::Spent => return,
            State::Linked { node, slot, .. } => {
                // SAFETY: the owner, in `Linked` (module docs); cancel runs
                // once and returns the final outcome.
                let outcome = unsafe { slot.as_ref().cancel() };
                // SAFETY: our reference keeps the slot alive. A dropped
                // `PopFuture` may have left its task's waker here.
                unsafe { slot.as_ref() }.forget_waiter();
                match self.finish(node, outcome) {
                    Ok(value) => value,
                    Err(_) => return,
                }
            }
        };
        // Delivered to us but not collected: give it back (module docs). A
        // refusal means the structure closed; the value is dropped here.
        drop(self.line.give_back(value));
    }
}

impl<T> fmt::Debug for Reservation<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(_) => "Ready",
            State::Linked { .. } => "Linked",
            State::Closed => "Closed",
            State::Spent => "Spent",
        };
        f.debug_struct("Reservation")
            .field("state", &state)
            .finish()
    }
}

/// The future of `pop_async` on a [`DualQueue`](crate::DualQueue) or a
/// [`DualStack`](crate::DualStack).
///
/// It reserves its place in line on its first poll (an unpolled future
/// takes no place; unlike a blocking `pop`, it does not poll the structure
/// first), then waits in the line that blocking consumers share. Dropping it cancels the
/// reservation; a value handed to it before the drop is given back to the
/// structure ([`Reservation`]'s drop): cancel-safe, nothing lost.
///
/// The future is runtime-agnostic: it needs nothing but its waker.
#[must_use = "futures do nothing unless polled"]
pub struct PopFuture<'a, T> {
    line: &'a dyn Line<T>,
    reservation: Option<Reservation<'a, T>>,
}

// SAFETY: as for `Reservation`: `line` is a `DualQueue<T>` or `DualStack<T>`,
// `Sync` when `T: Send`.
unsafe impl<T: Send> Send for PopFuture<'_, T> {}
// SAFETY: `&PopFuture` allows nothing but `Debug`.
unsafe impl<T: Send> Sync for PopFuture<'_, T> {}
// Nothing in the future is pinned: it never hands out `Pin<&mut T>`.
impl<T> Unpin for PopFuture<'_, T> {}

impl<'a, T> PopFuture<'a, T> {
    pub(crate) fn new(line: &'a dyn Line<T>) -> Self {
        PopFuture {
            line,
            reservation: None,
        }
    }
}

impl<T> Future for PopFuture<'_, T> {
    type Output = Result<T, PopError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let line = this.line;
        this.reservation
            .get_or_insert_with(|| line.reserve())
            .poll_take(cx)
    }
}

impl<T> fmt::Debug for PopFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PopFuture")
            .field("reservation", &self.reservation)
            .finish()
    }
}
