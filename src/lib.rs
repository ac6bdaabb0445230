//! Lock-free **dual** data structures.
//!
//! In a dual structure a consumer that finds it empty does not fail: after a
//! brief poll it links a *reservation* and waits, and the next producer hands
//! its value straight to that reservation. Waiting consumers are served in a defined
//! order, a timeout never loses a value, and a parked waiter costs other
//! threads nothing.
//!
//! * [`DualQueue`]: FIFO values, oldest waiter served first (Scherer & Scott's
//!   dual queue on a Michael & Scott queue).
//! * [`DualStack`]: LIFO values, newest waiter served first (Scherer & Scott's
//!   dual stack on a Treiber stack), for pools and caches that want the most
//!   recently active consumer to get the next resource.
//!
//! # Hello, world
//!
//! ```
//! use dualq::DualQueue;
//! use std::sync::Arc;
//! use std::thread;
//!
//! let q = Arc::new(DualQueue::new());
//! let worker = {
//!     let q = Arc::clone(&q);
//!     thread::spawn(move || {
//!         let mut sum = 0;
//!         while let Ok(n) = q.pop() {
//!             sum += n; // `pop` waits while the queue is empty...
//!         }
//!         sum // ...and fails once it is closed and drained
//!     })
//! };
//! for n in 1..=10 {
//!     q.push(n).unwrap();
//! }
//! q.close();
//! assert_eq!(worker.join().unwrap(), 55);
//! ```
//!
//! # Dual semantics and fairness
//!
//! A [`pop`](DualQueue::pop) on an empty queue first polls for a moment
//! (one spin phase: exponential `PAUSE`s, then a few yields, as
//! crossbeam-channel does before it blocks), then *requests* a
//! value: its reservation takes a place in line. A later
//! [`push`](DualQueue::push) *fulfils* the oldest reservation with one CAS on
//! that reservation's own slot, so if consumers A then B are in line, the
//! first value pushed goes to A, whatever the scheduler does next. A retry
//! loop around a non-dual `try_pop` cannot promise that. A polling consumer
//! is not in line yet: it takes only values no waiter was given, as
//! `try_pop` would, so it never overtakes one that is. For a place in line at
//! once, without the poll, use [`reserve`](DualQueue::reserve).
//!
//! # Blocking, timeouts and closing
//!
//! Each consumer operation comes in the blocking ladder crossbeam users know:
//! [`try_pop`](DualQueue::try_pop) (never waits),
//! [`pop_timeout`](DualQueue::pop_timeout) /
//! [`pop_deadline`](DualQueue::pop_deadline), and [`pop`](DualQueue::pop).
//! A blocking pop polls briefly before it joins the line; a waiter spins
//! briefly when it is first in line, then parks. A timeout
//! cancels the reservation with a CAS on the same slot a producer would use;
//! if the producer won, the consumer returns the value instead of `Timeout`.
//!
//! [`close`](DualQueue::close) wakes every waiter and makes later pushes fail
//! with their value ([`PushError`]); pops drain stored values first, then
//! report closed.
//!
//! # Memory reclamation
//!
//! Nodes are reclaimed with `crossbeam-epoch`. No epoch guard is held while a
//! consumer waits (a parked consumer never delays reclamation); a
//! reservation's memory is kept alive by reference counting until both the
//! queue and its waiter are done with it. Cancelled reservations are unlinked,
//! so any number of timed-out waits leaves memory flat.
//!
//! # Alternatives
//!
//! `crossbeam-channel`, `flume` and `kanal` are channels: split sender and
//! receiver handles, and (for the bounded ones) back-pressure. Pick `dualq`
//! when you want one shared structure with a defined service order for
//! waiting consumers and direct handoff to them; pick a channel when you want
//! disconnect-on-drop handles or `select!`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod cells;
mod error;
mod queue;
mod reservation;
mod segment;
mod slot;
mod spares;
mod stack;
mod sync;
mod transfer;
mod waiter;

pub use crate::error::{
    PopError, PopTimeoutError, PushError, TransferTimeoutError, TryPopError, TryTransferError,
};
pub use crate::queue::DualQueue;
pub use crate::reservation::{PopFuture, Reservation};
pub use crate::stack::DualStack;
pub use crate::transfer::TransferFuture;

// The README's Rust examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
