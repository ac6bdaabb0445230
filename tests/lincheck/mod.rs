//! A linearizability checker for the dual structures, with their sequential
//! specification written as code.
//!
//! Shared by the integration tests (`mod lincheck;`) and the loom models
//! (`#[path = "../tests/lincheck/mod.rs"] mod lincheck;`), so it uses std
//! only (no dev-dependency is available under `--cfg loom`).
//!
//! # The specification
//!
//! The abstract state is a sequence of stored values, a sequence of waiting
//! *requests* (reservations, in the order they were made) and a `closed`
//! flag. Following Scherer & Scott ("Nonblocking concurrent data structures
//! with condition synchronization", DISC 2004), an operation is made of one
//! or two atomic *steps*:
//!
//! * `push(v)` is one step. Open, no waiter: `v` is stored (at the back).
//!   Open, with waiters: `v` goes to the oldest waiter ([`Kind::Queue`]) or
//!   the newest ([`Kind::Stack`]) instead of being stored; that is the
//!   waiter's *fulfilment*, and it is this push's step. Closed: the push
//!   fails and hands `v` back.
//! * `try_pop` is one step: the front value (queue) or the top value (stack);
//!   else `Empty` while open, `Closed` once closed. Waiters do not matter.
//! * `pop` and `pop_timeout` that find a value, or find the structure closed
//!   and empty, are one step, as `try_pop`. On an open empty structure they
//!   make a *request* step (the caller joins the waiters), and finish later
//!   by one of: a push's fulfilment (result: the value), a `close` (result:
//!   `Closed`), or, for `pop_timeout` only, a *cancel* step of their own that
//!   removes the still-unfulfilled request (result: `Timeout`). A zero
//!   timeout that returns `Timeout` at once is a request and a cancel back to
//!   back.
//! * `close` is one step: it sets `closed` (returning whether it was open)
//!   and finishes every waiting request with `Closed`.
//! * `transfer(v)` (and `transfer_timeout`) linearizes like a pop, mirrored:
//!   open with waiters, it is one step, exactly a push's; open with none, it
//!   makes an *offer* step (`v` joins the stored values, marked as this
//!   transfer's offer), and finishes later by one of: a consumer's step
//!   taking `v` (result: `Ok`), its own *withdraw* step (timed only; result:
//!   `Timeout(v)`), or its own *closed* step, enabled once `closed` is set
//!   (result: `Closed(v)`: `close` does not finish offers at once; a
//!   consumer may still take a waiting offer after the close, until its
//!   producer learns of the close). Closed from the start: one step,
//!   `Closed(v)`.
//! * `try_transfer(v)` is one step: a push's if a waiter exists (`Ok`),
//!   else `NoConsumer(v)` while open, `Closed(v)` once closed.
//! * Reservation handles (`reserve()` and a follow-up on the returned
//!   `Reservation`) are recorded as one *composite* operation each, from the
//!   invocation of `reserve` to the moment the handle is consumed (dropped,
//!   or spent by `wait*`); [`Op`] has one per follow-up. Their first step is
//!   `reserve`'s: it *takes* the front (queue) or top (stack) value
//!   (exactly a `try_pop`'s step; the handle is `Ready`), or, open and
//!   empty, makes a *request* (exactly a blocking pop's: the caller joins
//!   the waiters; `Linked`), or, closed and empty, does nothing (`Closed`).
//!   A request then ends as a pop's does: fulfilled by a push, finished by
//!   `close`, or withdrawn by a *cancel* step of the operation's own. A
//!   handle that *holds* a value (taken at once, or fulfilled) and does not
//!   return it makes a *give-back* step when it is dropped: a push of that
//!   value by this operation, with a push's three outcomes (stored at the
//!   back / on top; handed to the oldest / newest waiter, which may be
//!   another reservation; refused once closed, the value then dropped).
//!   - `reserve_drop` ([`Op::ReserveDrop`], result [`Ret::Dropped`] with
//!     the handle's state right after `reserve`): take then give back;
//!     request then cancel, or be closed, or be fulfilled then give back;
//!     or nothing (closed and empty).
//!   - `reserve_try_take` ([`Op::ReserveTryTake`]: one `try_take`, then
//!     the drop): `Value(v)` if it took `v` at once or was fulfilled with
//!     `v` before the `try_take`; else [`Ret::NotYet`] with the handle's
//!     state after the `try_take`: `Linked` (it was still waiting; the drop
//!     then cancels, or finds it closed, or finds a value that arrived in
//!     between and gives it back) or `Closed` (closed and empty at
//!     `reserve`, or its request was finished by `close`). The `try_take`
//!     itself changes nothing, so it is not a step of its own: its
//!     observation is linearized together with the step it follows (the
//!     fulfilment for `Value`, the request or the `close` for `NotYet`),
//!     which is always a valid place for it (see "The search").
//!   - `reserve_wait` and `reserve_wait_timeout` are `pop` and
//!     `pop_timeout`, step for step.
//!
//! Values (stored or offered) and requests are both FIFO in the queue and
//! both LIFO in the stack. The structure never holds values and requests at
//! once.
//!
//! # Histories
//!
//! A [`History`] is the real-time order of *events*: each operation's
//! invocation and response (with its result). Real threads take a ticket
//! from one `SeqCst` counter just before calling and just after returning
//! ([`Recorder`]; under loom the counter is a loom atomic, so that the
//! ticket order implies happens-before there too). A history may also hold [`Event::Waiting`] marks: "this
//! pop had made its request by now" (a test that saw it in
//! `waiting_consumers()` knows that). Without marks a request is never
//! observable except through its fulfilment, so the order of two waiters is
//! only checked when a mark proves it (see `waiter_order_needs_a_mark` in
//! `tests/lincheck_checker.rs`).
//!
//! # The search
//!
//! The history is linearizable if its operations' steps can be ordered so
//! that each step lies inside its operation's interval (between its
//! invocation and its response; a fulfilment is the pushing operation's
//! step, so it also lies inside the waiter's interval, and after its
//! request), every mark follows the marked request, and the results are
//! those of the specification run on that order. That is exactly the
//! definition: the request point of a blocking pop is searched for anywhere
//! in its interval, the fulfilment or cancel anywhere after it.
//!
//! [`check`] walks the events in order, a depth-first search with Lowe's
//! *just-in-time* linearization ("Testing for linearizability", 2017): it
//! linearizes steps only when the next event needs them (the response of an
//! operation that is not finished in the spec, or a mark whose request has
//! not happened), trying at each point every enabled step of every invoked,
//! unfinished operation, and it memoises the configurations it has visited:
//! (event position, progress of each operation, spec state). Wing & Gong's
//! search with the memo of Lowe.
//!
//! Why it is complete: take any valid order of steps, interleaved with the
//! events. A step can be moved later past an event without leaving its
//! operation's interval unless that event is its own operation's response
//! or a mark that needs it. So move every step as late as possible: each
//! run of steps then sits just before an event that needs the run's last
//! step, and the run stops as soon as that event's need is met (the rest can
//! move on). The search tries every run of enabled steps until the need is
//! met, so it finds this order. The memo only prunes configurations already
//! explored, whose futures are identical.
//!
//! The composite reservation operations keep this: each of their steps
//! (take, request, cancel, give-back) is a step of that operation alone, or,
//! for a fulfilment, of the pushing operation and the fulfilled one (a
//! give-back that hands its value to a waiter is such a push), and an
//! operation holding a value is not finished until its give-back, so its
//! response needs that step. A `try_take` observation is no step: in any
//! valid order it can be moved back to just after the step it is merged
//! with (it changes no state, and nothing but its own operation's interval
//! and order constrains it; `NotYet(Linked)` needs only that no fulfilment
//! or close of this request precedes it, `Value` only that the fulfilment
//! does), so merging it loses no order.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::{self, Write as _};
// Under loom the clock is a loom atomic: see [`Recorder`].
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dualq::{
    DualQueue, DualStack, PopTimeoutError, Reservation, TransferFuture, TransferTimeoutError,
    TryPopError, TryTransferError,
};

/// Which discipline the specification follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// FIFO values, oldest waiter served first.
    Queue,
    /// LIFO values, newest waiter served first.
    Stack,
}

/// An operation, with its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Push(u64),
    Pop,
    TryPop,
    PopTimeout(Duration),
    Close,
    Transfer(u64),
    TransferTimeout(u64, Duration),
    TryTransfer(u64),
    /// `reserve()`, hold the handle for the duration, drop it.
    ReserveDrop(Duration),
    /// `reserve()`, hold the handle for the duration, `try_take()` once,
    /// hold it again if that returned `None`, drop it.
    ReserveTryTake(Duration),
    /// `reserve().wait()`: a `pop`.
    ReserveWait,
    /// `reserve().wait_timeout(d)`: a `pop_timeout(d)`.
    ReserveWaitTimeout(Duration),
    /// `transfer_async(v)`: poll the future, hold for the duration, poll
    /// again, then `withdraw()` it if still pending. The specification
    /// treats it as `transfer_timeout(v, d)` (the withdrawal is the
    /// timeout).
    TransferAsync(u64, Duration),
    /// `pop_async()`: poll the future, hold for the duration, poll again,
    /// then drop it if still pending (its reservation is cancelled, or a
    /// value that reached it is given back). The specification treats it
    /// as `reserve_try_take(d)`: the same request, follow-up and drop.
    /// Results: `Value(v)`; `NotYet(Closed)` for `Err(PopError)`;
    /// `NotYet(Linked)` when dropped pending.
    PopAsync(Duration),
}

/// The state of a `Reservation` handle, as its `Debug` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handle {
    /// `reserve` took a stored value.
    Ready,
    /// A reservation is in line (fulfilled or not).
    Linked,
    /// Closed and empty, or the reservation was finished by `close`.
    Closed,
}

/// An operation's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `push` succeeded.
    Pushed,
    /// `push` failed (closed), handing back this value.
    Rejected(u64),
    /// A pop got this value.
    Value(u64),
    /// `try_pop`: nothing stored, open.
    Empty,
    /// `pop_timeout`: timed out.
    Timeout,
    /// A pop found the structure closed and empty.
    Closed,
    /// `close` returned this (whether this call closed it).
    CloseReturned(bool),
    /// `transfer_timeout` timed out, handing back this value.
    Withdrawn(u64),
    /// `try_transfer` found no consumer, handing back this value.
    NoConsumer(u64),
    /// `reserve_drop`: the handle was dropped; its state right after
    /// `reserve`.
    Dropped(Handle),
    /// `reserve_try_take`: `try_take` returned `None`; the handle's state
    /// right after it (`Linked` or `Closed`).
    NotYet(Handle),
}

/// One completed operation as recorded: `invoked` and `returned` are tickets
/// of one clock, unique across the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub thread: usize,
    pub op: Op,
    pub ret: Ret,
    pub invoked: u64,
    pub returned: u64,
}

/// A history event; the `usize` is the operation's index in
/// [`History::calls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Invoke(usize),
    Return(usize),
    /// The operation (a `pop`, `pop_timeout` or `reserve_*`) had made its
    /// request before this point: it was seen waiting.
    Waiting(usize),
}

/// Operations in real-time order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub calls: Vec<Call>,
    pub events: Vec<Event>,
}

impl History {
    /// Builds the history of `calls` (in any order), ordering events by
    /// ticket. `waiting` holds marks: (index in `calls`, ticket taken after
    /// the pop was seen waiting).
    ///
    /// # Panics
    ///
    /// If two events share a ticket, or a call returns before it is invoked.
    pub fn from_calls(calls: Vec<Call>, waiting: &[(usize, u64)]) -> Self {
        let mut timed: Vec<(u64, Event)> = Vec::with_capacity(2 * calls.len());
        for (i, c) in calls.iter().enumerate() {
            assert!(c.invoked < c.returned, "call {i} returns before it starts");
            timed.push((c.invoked, Event::Invoke(i)));
            timed.push((c.returned, Event::Return(i)));
        }
        for &(i, t) in waiting {
            timed.push((t, Event::Waiting(i)));
        }
        timed.sort_by_key(|&(t, _)| t);
        assert!(
            timed.windows(2).all(|w| w[0].0 != w[1].0),
            "two events share a ticket"
        );
        History {
            calls,
            events: timed.into_iter().map(|(_, e)| e).collect(),
        }
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One column per thread, one line per event.
        let threads = self.calls.iter().map(|c| c.thread + 1).max().unwrap_or(0);
        for (pos, e) in self.events.iter().enumerate() {
            let (i, text) = match *e {
                Event::Invoke(i) => (i, format!("{} ...", op_name(&self.calls[i].op))),
                Event::Return(i) => (i, format!("... -> {}", ret_name(&self.calls[i].ret))),
                Event::Waiting(i) => (i, "(seen waiting)".to_string()),
            };
            let col = self.calls[i].thread.min(threads.saturating_sub(1));
            writeln!(
                f,
                "{pos:>4}  {:indent$}#{i:<3}{text}",
                "",
                indent = 24 * col
            )?;
        }
        Ok(())
    }
}

fn op_name(op: &Op) -> String {
    match op {
        Op::Push(v) => format!("push({v})"),
        Op::Pop => "pop()".to_string(),
        Op::TryPop => "try_pop()".to_string(),
        Op::PopTimeout(d) => format!("pop_timeout({d:?})"),
        Op::Close => "close()".to_string(),
        Op::Transfer(v) => format!("transfer({v})"),
        Op::TransferTimeout(v, d) => format!("transfer_timeout({v}, {d:?})"),
        Op::TryTransfer(v) => format!("try_transfer({v})"),
        Op::ReserveDrop(d) => format!("reserve_drop({d:?})"),
        Op::ReserveTryTake(d) => format!("reserve_try_take({d:?})"),
        Op::ReserveWait => "reserve_wait()".to_string(),
        Op::ReserveWaitTimeout(d) => format!("reserve_wait_timeout({d:?})"),
        Op::TransferAsync(v, d) => format!("transfer_async({v}, {d:?})"),
        Op::PopAsync(d) => format!("pop_async({d:?})"),
    }
}

fn ret_name(ret: &Ret) -> String {
    match ret {
        Ret::Pushed => "Ok".to_string(),
        Ret::Rejected(v) => format!("Err(PushError({v}))"),
        Ret::Value(v) => format!("Ok({v})"),
        Ret::Empty => "Err(Empty)".to_string(),
        Ret::Timeout => "Err(Timeout)".to_string(),
        Ret::Closed => "Err(Closed)".to_string(),
        Ret::CloseReturned(b) => format!("{b}"),
        Ret::Withdrawn(v) => format!("Err(Timeout({v}))"),
        Ret::NoConsumer(v) => format!("Err(NoConsumer({v}))"),
        Ret::Dropped(h) => format!("Dropped({h:?})"),
        Ret::NotYet(h) => format!("None({h:?})"),
    }
}

/// Builds a history by hand, one event at a time (for tests of the checker).
#[derive(Debug, Default)]
pub struct Builder {
    calls: Vec<Call>,
    returned: Vec<bool>,
    marks: Vec<(usize, u64)>,
    clock: u64,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// `thread` invokes `op`; returns the operation's index.
    pub fn invoke(&mut self, thread: usize, op: Op) -> usize {
        let t = self.tick();
        self.calls.push(Call {
            thread,
            op,
            ret: Ret::Empty,
            invoked: t,
            returned: 0,
        });
        self.returned.push(false);
        self.calls.len() - 1
    }

    /// Operation `i` returns `ret`.
    pub fn ret(&mut self, i: usize, ret: Ret) -> &mut Self {
        assert!(!self.returned[i], "#{i} returns twice");
        let t = self.tick();
        self.calls[i].ret = ret;
        self.calls[i].returned = t;
        self.returned[i] = true;
        self
    }

    /// `thread` runs `op` returning `ret` with nothing in between.
    pub fn call(&mut self, thread: usize, op: Op, ret: Ret) -> usize {
        let i = self.invoke(thread, op);
        self.ret(i, ret);
        i
    }

    /// Operation `i` is seen waiting now.
    pub fn waiting(&mut self, i: usize) -> &mut Self {
        let t = self.tick();
        self.marks.push((i, t));
        self
    }

    /// The history.
    ///
    /// # Panics
    ///
    /// If an operation has not returned (the checker wants complete
    /// histories).
    pub fn build(&self) -> History {
        assert!(
            self.returned.iter().all(|&r| r),
            "an operation never returned"
        );
        History::from_calls(self.calls.clone(), &self.marks)
    }
}

/// The clock of a recorded history: tickets from one counter, taken with
/// `SeqCst` read-modify-writes.
///
/// The ticket order must be one the operations' memory effects respect, or
/// the checker would demand that an operation see the effects of one that
/// merely ran earlier. On real threads each ticket RMW reads the previous
/// one, so a response's ticket happens-before every later invocation's
/// ticket: "returned before the other was invoked" implies happens-before,
/// as for any client that observed the order. Under loom the counter is a
/// loom atomic for the same reason. A plain std counter would give loom's
/// execution order without the happens-before edges, and loom's weak memory
/// model then lets an operation read values older than those of an
/// operation that ran to completion before it in that order (a push returns,
/// then a `try_pop` on another thread, unsynchronized with it, still reads
/// the old, empty list): C11 allows that, so the checker must not demand
/// otherwise. The loom atomic costs some extra interleavings.
#[derive(Debug)]
pub struct Recorder {
    clock: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            clock: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh ticket.
    pub fn now(&self) -> u64 {
        // SeqCst (AcqRel under loom, which models SeqCst RMWs as AcqRel):
        // each ticket acquires every earlier one, see the type's docs.
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs `op` on `target` between two tickets and returns the call.
    pub fn run<D: Dual + ?Sized>(&self, target: &D, thread: usize, op: Op) -> Call {
        let invoked = self.now();
        let ret = target.apply(op);
        let returned = self.now();
        Call {
            thread,
            op,
            ret,
            invoked,
            returned,
        }
    }
}

/// A dual structure of `u64` the recorder can drive.
pub trait Dual {
    const KIND: Kind;
    fn apply(&self, op: Op) -> Ret;
    /// `waiting_consumers()`: how many reservations are waiting.
    fn waiting(&self) -> usize;
}

fn ret_of_push(r: Result<(), dualq::PushError<u64>>) -> Ret {
    match r {
        Ok(()) => Ret::Pushed,
        Err(e) => Ret::Rejected(e.into_inner()),
    }
}

fn ret_of_pop(r: Result<u64, dualq::PopError>) -> Ret {
    r.map_or(Ret::Closed, Ret::Value)
}

fn ret_of_try(r: Result<u64, TryPopError>) -> Ret {
    match r {
        Ok(v) => Ret::Value(v),
        Err(TryPopError::Empty) => Ret::Empty,
        Err(TryPopError::Closed) => Ret::Closed,
    }
}

fn ret_of_transfer_timeout(r: Result<(), TransferTimeoutError<u64>>) -> Ret {
    match r {
        Ok(()) => Ret::Pushed,
        Err(TransferTimeoutError::Timeout(v)) => Ret::Withdrawn(v),
        Err(TransferTimeoutError::Closed(v)) => Ret::Rejected(v),
    }
}

fn ret_of_try_transfer(r: Result<(), TryTransferError<u64>>) -> Ret {
    match r {
        Ok(()) => Ret::Pushed,
        Err(TryTransferError::NoConsumer(v)) => Ret::NoConsumer(v),
        Err(TryTransferError::Closed(v)) => Ret::Rejected(v),
    }
}

fn ret_of_timeout(r: Result<u64, PopTimeoutError>) -> Ret {
    match r {
        Ok(v) => Ret::Value(v),
        Err(PopTimeoutError::Timeout) => Ret::Timeout,
        Err(PopTimeoutError::Closed) => Ret::Closed,
    }
}

/// A handle's state, read from its `Debug` (the only place it shows).
///
/// # Panics
///
/// If the `Debug` output names none of the states.
fn handle_of(r: &Reservation<'_, u64>) -> Handle {
    let shown = format!("{r:?}");
    for (name, h) in [
        ("\"Ready\"", Handle::Ready),
        ("\"Linked\"", Handle::Linked),
        ("\"Closed\"", Handle::Closed),
    ] {
        if shown.contains(name) {
            return h;
        }
    }
    panic!("unexpected Reservation Debug output: {shown}");
}

/// Holds a reservation handle for `d` before its next follow-up: spins
/// with yields (a sleep would last tens of microseconds at least). Under
/// loom, which has no clock, a non-zero hold is one yield.
fn hold(d: Duration) {
    if d.is_zero() {
        return;
    }
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    {
        let start = std::time::Instant::now();
        while start.elapsed() < d {
            std::thread::yield_now();
        }
    }
}

/// `reserve_drop`: the state `reserve` returned; then the handle is held
/// and dropped.
fn reserve_drop(r: Reservation<'_, u64>, d: Duration) -> Ret {
    let h = handle_of(&r);
    hold(d);
    drop(r);
    Ret::Dropped(h)
}

/// `reserve_try_take`: one `try_take` after a hold, then another hold and
/// the drop.
fn reserve_try_take(mut r: Reservation<'_, u64>, d: Duration) -> Ret {
    hold(d);
    let ret = match r.try_take() {
        Some(v) => Ret::Value(v),
        None => Ret::NotYet(handle_of(&r)),
    };
    if matches!(ret, Ret::NotYet(_)) {
        hold(d);
    }
    drop(r);
    ret
}

/// The follow-up of both async operations: a poll, a hold, another poll
/// (never parks: the waker does nothing). `None` if still pending.
fn poll_hold_poll<F: std::future::Future + Unpin>(
    future: &mut F,
    d: Duration,
) -> Option<F::Output> {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    for round in 0..2 {
        if round == 1 {
            hold(d);
        }
        if let std::task::Poll::Ready(out) = std::pin::Pin::new(&mut *future).poll(&mut cx) {
            return Some(out);
        }
    }
    None
}

/// `transfer_async`: [`poll_hold_poll`], then the withdrawal of a still
/// pending future.
fn transfer_async(mut future: TransferFuture<'_, u64>, d: Duration) -> Ret {
    match poll_hold_poll(&mut future, d) {
        Some(sent) => ret_of_push(sent),
        None => match future.withdraw() {
            Ok(()) => Ret::Pushed,
            Err(v) => Ret::Withdrawn(v),
        },
    }
}

/// `pop_async`: [`poll_hold_poll`], then the drop of a still pending
/// future.
fn pop_async(mut future: dualq::PopFuture<'_, u64>, d: Duration) -> Ret {
    match poll_hold_poll(&mut future, d) {
        Some(Ok(v)) => Ret::Value(v),
        Some(Err(_)) => Ret::NotYet(Handle::Closed),
        None => Ret::NotYet(Handle::Linked), // dropped here, pending
    }
}

/// `Dual` for one structure: the same forwarding for both.
macro_rules! impl_dual {
    ($ty:ident, $kind:expr) => {
        impl Dual for $ty<u64> {
            const KIND: Kind = $kind;
            fn apply(&self, op: Op) -> Ret {
                match op {
                    Op::Push(v) => ret_of_push(self.push(v)),
                    Op::Pop => ret_of_pop(self.pop()),
                    Op::TryPop => ret_of_try(self.try_pop()),
                    Op::PopTimeout(d) => ret_of_timeout(self.pop_timeout(d)),
                    Op::Close => Ret::CloseReturned(self.close()),
                    Op::Transfer(v) => ret_of_push(self.transfer(v)),
                    Op::TransferTimeout(v, d) => {
                        ret_of_transfer_timeout(self.transfer_timeout(v, d))
                    }
                    Op::TryTransfer(v) => ret_of_try_transfer(self.try_transfer(v)),
                    Op::ReserveDrop(d) => reserve_drop(self.reserve(), d),
                    Op::TransferAsync(v, d) => transfer_async(self.transfer_async(v), d),
                    Op::PopAsync(d) => pop_async(self.pop_async(), d),
                    Op::ReserveTryTake(d) => reserve_try_take(self.reserve(), d),
                    Op::ReserveWait => ret_of_pop(self.reserve().wait()),
                    Op::ReserveWaitTimeout(d) => ret_of_timeout(self.reserve().wait_timeout(d)),
                }
            }
            fn waiting(&self) -> usize {
                self.waiting_consumers()
            }
        }
    };
}

impl_dual!(DualQueue, Kind::Queue);
impl_dual!(DualStack, Kind::Stack);

/// Where an operation is in the specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Progress {
    /// No step linearized yet.
    Idle,
    /// Its request is among the waiters.
    Waiting,
    /// A reservation handle holds `value` (taken at once, or fulfilled) and
    /// gives it back when dropped: the give-back step is next. `requested`
    /// if it made a request.
    Holding { value: u64, requested: bool },
    /// All its steps are linearized; `requested` if one was a request.
    Done { requested: bool },
}

/// The abstract state of a dual structure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Spec {
    /// Stored values and offers, oldest first.
    values: Vec<Entry>,
    /// Waiting requests (operation indices), oldest first.
    waiters: Vec<usize>,
    closed: bool,
}

/// A value a consumer can take: stored, or offered by a waiting transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Entry {
    value: u64,
    /// The transfer (operation index) waiting for this value to be taken.
    offer: Option<usize>,
}

/// One configuration of the search.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config {
    pos: usize,
    progress: Vec<Progress>,
    spec: Spec,
}

/// Upper bound on configurations explored before the checker gives up
/// (never reached by histories of the sizes the tests use).
const BUDGET: usize = 5_000_000;

/// A successful check: how many configurations the search visited.
#[derive(Clone, Copy, Debug)]
pub struct Linearized {
    pub configurations: usize,
}

/// Checks `history` against the specification of `kind`. On failure the
/// error shows the history and how far the search got.
pub fn check(kind: Kind, history: &History) -> Result<Linearized, String> {
    // `pop_async` is specified as `reserve_try_take` (see `Op::PopAsync`).
    let normalized;
    let history = if history
        .calls
        .iter()
        .any(|c| matches!(c.op, Op::PopAsync(_)))
    {
        let mut h = history.clone();
        for c in &mut h.calls {
            if let Op::PopAsync(d) = c.op {
                c.op = Op::ReserveTryTake(d);
            }
        }
        normalized = h;
        &normalized
    } else {
        history
    };
    let mut invoked_at = vec![usize::MAX; history.calls.len()];
    for (pos, e) in history.events.iter().enumerate() {
        if let Event::Invoke(i) = *e {
            invoked_at[i] = pos;
        }
    }
    let mut search = Search {
        kind,
        h: history,
        invoked_at,
        seen: HashSet::new(),
        furthest: 0,
    };
    let start = Config {
        pos: 0,
        progress: vec![Progress::Idle; history.calls.len()],
        spec: Spec {
            values: Vec::new(),
            waiters: Vec::new(),
            closed: false,
        },
    };
    let found = search.dfs(start);
    if search.seen.len() > BUDGET {
        return Err(format!(
            "search budget of {BUDGET} configurations exhausted (inconclusive) on this {kind:?} history:\n{history}"
        ));
    }
    if found {
        return Ok(Linearized {
            configurations: search.seen.len(),
        });
    }
    let mut msg = format!(
        "not linearizable as a dual {}: no order of steps explains the history\n",
        match kind {
            Kind::Queue => "queue (FIFO values, oldest waiter first)",
            Kind::Stack => "stack (LIFO values, newest waiter first)",
        }
    );
    let stuck = search.furthest;
    let _ = match history.events.get(stuck) {
        Some(Event::Return(i)) => writeln!(
            msg,
            "every search got stuck by event {stuck} at the latest: #{i} cannot return {}",
            ret_name(&history.calls[*i].ret)
        ),
        Some(Event::Waiting(i)) => writeln!(
            msg,
            "every search got stuck by event {stuck} at the latest: #{i} cannot be waiting yet"
        ),
        _ => Ok(()),
    };
    let _ = write!(
        msg,
        "history (event, #operation, one column per thread):\n{history}"
    );
    Err(msg)
}

struct Search<'a> {
    kind: Kind,
    h: &'a History,
    /// Event position of each operation's invocation.
    invoked_at: Vec<usize>,
    seen: HashSet<Config>,
    furthest: usize,
}

impl Search<'_> {
    fn dfs(&mut self, mut c: Config) -> bool {
        loop {
            if self.seen.len() > BUDGET {
                return false;
            }
            self.furthest = self.furthest.max(c.pos);
            let Some(&event) = self.h.events.get(c.pos) else {
                return true;
            };
            let needs = match event {
                Event::Invoke(_) => false,
                Event::Return(i) => !matches!(c.progress[i], Progress::Done { .. }),
                Event::Waiting(i) => match c.progress[i] {
                    Progress::Idle => true,
                    Progress::Waiting
                    | Progress::Holding {
                        requested: true, ..
                    }
                    | Progress::Done { requested: true } => false,
                    // Marked waiting, but it never requested.
                    Progress::Holding {
                        requested: false, ..
                    }
                    | Progress::Done { requested: false } => return false,
                },
            };
            if needs {
                break;
            }
            c.pos += 1; // nothing to do: move on (just in time)
        }
        if !self.seen.insert(c.clone()) {
            return false;
        }
        // Try every enabled step of every invoked, unfinished operation.
        for i in 0..self.h.calls.len() {
            if self.invoked_at[i] >= c.pos {
                continue;
            }
            for next in self.steps(&c, i) {
                if self.dfs(next) {
                    return true;
                }
            }
        }
        false
    }

    /// Where in `waiters` a push serves: the oldest (queue), the newest
    /// (stack).
    fn served(&self, s: &Spec) -> usize {
        match self.kind {
            Kind::Queue => 0,
            Kind::Stack => s.waiters.len() - 1,
        }
    }

    /// The progress of waiter `w` once a push hands it `v`, or `None` if
    /// its result rules that out: a pop must return `v`, a reservation
    /// handle that does not return a value then holds `v`.
    fn delivered(&self, w: usize, v: u64) -> Option<Progress> {
        let call = &self.h.calls[w];
        match (call.op, call.ret) {
            (_, Ret::Value(got)) => (got == v).then_some(Progress::Done { requested: true }),
            (Op::ReserveDrop(_), Ret::Dropped(Handle::Linked))
            | (Op::ReserveTryTake(_), Ret::NotYet(Handle::Linked)) => Some(Progress::Holding {
                value: v,
                requested: true,
            }),
            _ => None,
        }
    }

    /// Whether `close` may finish waiter `w`'s request.
    fn closable(&self, w: usize) -> bool {
        let call = &self.h.calls[w];
        match (call.op, call.ret) {
            (_, Ret::Closed) => true,
            // Dropped while waiting: its cancel found the close.
            (Op::ReserveDrop(_), Ret::Dropped(Handle::Linked)) => true,
            // Closed before its `try_take`, or after (the drop's cancel found
            // the close).
            (Op::ReserveTryTake(_), Ret::NotYet(_)) => true,
            _ => false,
        }
    }

    /// What a consumer finds now: `Some(Some(e))`, the front (queue) or top
    /// (stack) value; `Some(None)`, no value; `None`, a waiting transfer's
    /// offer that no consumer may take (its transfer did not return `Ok`).
    fn front(&self, s: &Spec) -> Option<Option<Entry>> {
        let front = match self.kind {
            Kind::Queue => s.values.first(),
            Kind::Stack => s.values.last(),
        };
        match front {
            None => Some(None),
            Some(&e) if e.offer.map_or(true, |t| self.h.calls[t].ret == Ret::Pushed) => {
                Some(Some(e))
            }
            Some(_) => None,
        }
    }

    /// Removes `e`, the front (or top) value, from `n`.
    fn take(&self, n: &mut Config, e: Entry) {
        match self.kind {
            Kind::Queue => n.spec.values.remove(0),
            Kind::Stack => n.spec.values.pop().unwrap(),
        };
        // Taking an offer is its transfer's fulfilment.
        if let Some(t) = e.offer {
            n.progress[t] = Progress::Done { requested: true };
        }
    }

    /// The configurations reachable by one step of operation `i`.
    fn steps(&self, c: &Config, i: usize) -> Vec<Config> {
        let call = &self.h.calls[i];
        // The reserve-then-wait operations are pops, step for step.
        let op = match call.op {
            Op::ReserveWait => Op::Pop,
            Op::ReserveWaitTimeout(d) => Op::PopTimeout(d),
            // So is an async transfer withdrawn after a hold: a timed one.
            Op::TransferAsync(v, d) => Op::TransferTimeout(v, d),
            op => op,
        };
        let s = &c.spec;
        let mut out = Vec::new();
        let mut with = |f: &dyn Fn(&mut Config)| {
            let mut n = c.clone();
            f(&mut n);
            out.push(n);
        };
        match c.progress[i] {
            Progress::Done { .. } => {}
            Progress::Holding { value, requested } => {
                // The give-back: a push of `value` by this operation.
                let done = Progress::Done { requested };
                if s.closed {
                    // Refused: the value is dropped with the handle.
                    with(&|n| n.progress[i] = done);
                } else if s.waiters.is_empty() {
                    with(&|n| {
                        n.spec.values.push(Entry { value, offer: None });
                        n.progress[i] = done;
                    });
                } else {
                    let at = self.served(s);
                    let w = s.waiters[at];
                    if let Some(p) = self.delivered(w, value) {
                        with(&|n| {
                            n.spec.waiters.remove(at);
                            n.progress[w] = p;
                            n.progress[i] = done;
                        });
                    }
                }
            }
            Progress::Waiting => match (op, call.ret) {
                // A timed pop's cancel, or a dropped reservation's that
                // holds no value (it was still waiting at its `try_take`).
                (Op::PopTimeout(_), Ret::Timeout)
                | (Op::ReserveDrop(_), Ret::Dropped(Handle::Linked))
                | (Op::ReserveTryTake(_), Ret::NotYet(Handle::Linked)) => with(&|n| {
                    n.spec.waiters.retain(|&w| w != i);
                    n.progress[i] = Progress::Done { requested: true };
                }),
                // A timed transfer's withdrawal, or any transfer learning of
                // the close: its offer leaves, its value comes back.
                (Op::Transfer(v) | Op::TransferTimeout(v, _), ret)
                    if ret == Ret::Withdrawn(v) && matches!(op, Op::TransferTimeout(..))
                        || ret == Ret::Rejected(v) && s.closed =>
                {
                    with(&|n| {
                        n.spec.values.retain(|e| e.offer != Some(i));
                        n.progress[i] = Progress::Done { requested: true };
                    })
                }
                _ => {}
            },
            Progress::Idle => match (op, call.ret) {
                (
                    Op::Push(v) | Op::Transfer(v) | Op::TransferTimeout(v, _) | Op::TryTransfer(v),
                    ret,
                ) if !s.closed && !s.waiters.is_empty() && ret == Ret::Pushed => {
                    // A waiter exists: every producer hands over, one step.
                    let at = self.served(s);
                    let w = s.waiters[at];
                    if let Some(p) = self.delivered(w, v) {
                        with(&|n| {
                            n.spec.waiters.remove(at);
                            n.progress[w] = p;
                            n.progress[i] = Progress::Done { requested: false };
                        });
                    }
                }
                (Op::Transfer(v) | Op::TransferTimeout(v, _), ret)
                    if !s.closed
                        && s.waiters.is_empty()
                        && (ret == Ret::Pushed
                            || ret == Ret::Rejected(v)
                            || ret == Ret::Withdrawn(v)
                                && matches!(op, Op::TransferTimeout(..))) =>
                {
                    // The offer step: the value joins the stored ones.
                    with(&|n| {
                        n.spec.values.push(Entry {
                            value: v,
                            offer: Some(i),
                        });
                        n.progress[i] = Progress::Waiting;
                    });
                }
                (Op::TryTransfer(v), Ret::NoConsumer(back))
                    if !s.closed && s.waiters.is_empty() && v == back =>
                {
                    with(&|n| n.progress[i] = Progress::Done { requested: false });
                }
                (
                    Op::Push(v) | Op::Transfer(v) | Op::TransferTimeout(v, _) | Op::TryTransfer(v),
                    Ret::Rejected(back),
                ) if s.closed && v == back => {
                    with(&|n| n.progress[i] = Progress::Done { requested: false });
                }
                (Op::Push(v), Ret::Pushed) if !s.closed && s.waiters.is_empty() => {
                    with(&|n| {
                        n.spec.values.push(Entry {
                            value: v,
                            offer: None,
                        });
                        n.progress[i] = Progress::Done { requested: false };
                    });
                }
                (Op::Close, Ret::CloseReturned(opened))
                    if opened != s.closed && s.waiters.iter().all(|&w| self.closable(w)) =>
                {
                    with(&|n| {
                        for w in std::mem::take(&mut n.spec.waiters) {
                            n.progress[w] = Progress::Done { requested: true };
                        }
                        n.spec.closed = true;
                        n.progress[i] = Progress::Done { requested: false };
                    });
                }
                (Op::Pop | Op::TryPop | Op::PopTimeout(_), ret) => match (self.front(s), ret) {
                    (Some(Some(e)), Ret::Value(got)) if e.value == got => with(&|n| {
                        self.take(n, e);
                        n.progress[i] = Progress::Done { requested: false };
                    }),
                    (Some(None), Ret::Closed) if s.closed => {
                        with(&|n| n.progress[i] = Progress::Done { requested: false })
                    }
                    (Some(None), Ret::Empty) if !s.closed && op == Op::TryPop => {
                        with(&|n| n.progress[i] = Progress::Done { requested: false })
                    }
                    (Some(None), Ret::Value(_) | Ret::Closed | Ret::Timeout)
                        if !s.closed
                            && op != Op::TryPop
                            && (ret != Ret::Timeout || op != Op::Pop) =>
                    {
                        with(&|n| {
                            n.spec.waiters.push(i);
                            n.progress[i] = Progress::Waiting;
                        })
                    }
                    _ => {}
                },
                // `reserve`'s step: take, request, or find closed and empty.
                (Op::ReserveDrop(_) | Op::ReserveTryTake(_), ret) => match (self.front(s), ret) {
                    // Taken at once: the handle holds the value...
                    (Some(Some(e)), Ret::Dropped(Handle::Ready)) => with(&|n| {
                        self.take(n, e);
                        n.progress[i] = Progress::Holding {
                            value: e.value,
                            requested: false,
                        };
                    }),
                    // ...and `try_take` returns it.
                    (Some(Some(e)), Ret::Value(got)) if e.value == got => with(&|n| {
                        self.take(n, e);
                        n.progress[i] = Progress::Done { requested: false };
                    }),
                    (Some(None), Ret::Dropped(Handle::Closed) | Ret::NotYet(Handle::Closed))
                        if s.closed =>
                    {
                        with(&|n| n.progress[i] = Progress::Done { requested: false })
                    }
                    (
                        Some(None),
                        Ret::Dropped(Handle::Linked)
                        | Ret::NotYet(Handle::Linked | Handle::Closed)
                        | Ret::Value(_),
                    ) if !s.closed => with(&|n| {
                        n.spec.waiters.push(i);
                        n.progress[i] = Progress::Waiting;
                    }),
                    _ => {}
                },
                _ => {}
            },
        }
        out
    }
}
