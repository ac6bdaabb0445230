//! Error types shared by [`DualQueue`](crate::DualQueue) (and every later
//! structure): each error that fails while holding the caller's value gives it
//! back.

use std::error::Error;
use std::fmt;

/// `push` found the structure closed. The value is handed back, never lost.
///
/// # Examples
///
/// ```
/// use dualq::{DualQueue, PushError};
///
/// let q = DualQueue::new();
/// q.close();
/// assert_eq!(q.push(7), Err(PushError(7)));
/// assert_eq!(q.push(8).unwrap_err().into_inner(), 8);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PushError<T>(pub T);

impl<T> PushError<T> {
    /// Returns the value that could not be pushed.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("PushError(..)")
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("pushing into a closed structure")
    }
}

impl<T> Error for PushError<T> {}

/// A blocking `pop` found the structure closed with no value stored.
///
/// # Examples
///
/// ```
/// use dualq::{DualQueue, PopError};
///
/// let q = DualQueue::<u32>::new();
/// q.close();
/// assert_eq!(q.pop(), Err(PopError));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopError;

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("popping from a closed and empty structure")
    }
}

impl Error for PopError {}

/// `try_pop` found no value.
///
/// # Examples
///
/// ```
/// use dualq::{DualQueue, TryPopError};
///
/// let q = DualQueue::<u32>::new();
/// assert_eq!(q.try_pop(), Err(TryPopError::Empty));
/// q.close();
/// assert_eq!(q.try_pop(), Err(TryPopError::Closed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryPopError {
    /// No value is stored, but the structure is open.
    Empty,
    /// No value is stored and the structure is closed: none will come.
    Closed,
}

impl TryPopError {
    /// Returns `true` for [`TryPopError::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, TryPopError::Empty)
    }

    /// Returns `true` for [`TryPopError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, TryPopError::Closed)
    }

    /// What a timed pop whose deadline had already passed reports.
    pub(crate) fn into_timeout(self) -> PopTimeoutError {
        match self {
            TryPopError::Empty => PopTimeoutError::Timeout,
            TryPopError::Closed => PopTimeoutError::Closed,
        }
    }
}

impl fmt::Display for TryPopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPopError::Empty => f.pad("popping from an empty structure"),
            TryPopError::Closed => f.pad("popping from a closed and empty structure"),
        }
    }
}

impl Error for TryPopError {}

impl From<PopError> for TryPopError {
    fn from(_: PopError) -> Self {
        TryPopError::Closed
    }
}

/// `pop_timeout` or `pop_deadline` got no value in time.
///
/// # Examples
///
/// ```
/// use dualq::{DualQueue, PopTimeoutError};
/// use std::time::Duration;
///
/// let q = DualQueue::<u32>::new();
/// assert_eq!(q.pop_timeout(Duration::from_millis(1)), Err(PopTimeoutError::Timeout));
/// q.close();
/// assert_eq!(q.pop_timeout(Duration::from_millis(1)), Err(PopTimeoutError::Closed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopTimeoutError {
    /// The deadline passed with no value; the reservation was cancelled.
    Timeout,
    /// No value is stored and the structure is closed: none will come.
    Closed,
}

impl PopTimeoutError {
    /// Returns `true` for [`PopTimeoutError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, PopTimeoutError::Timeout)
    }

    /// Returns `true` for [`PopTimeoutError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, PopTimeoutError::Closed)
    }
}

impl fmt::Display for PopTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopTimeoutError::Timeout => f.pad("timed out waiting on pop"),
            PopTimeoutError::Closed => f.pad("popping from a closed and empty structure"),
        }
    }
}

impl Error for PopTimeoutError {}

impl From<PopError> for PopTimeoutError {
    fn from(_: PopError) -> Self {
        PopTimeoutError::Closed
    }
}

/// `transfer_timeout` or `transfer_deadline` did not hand its value over.
/// The value comes back, never lost.
///
/// # Examples
///
/// ```
/// use dualq::{DualQueue, TransferTimeoutError};
/// use std::time::Duration;
///
/// let q = DualQueue::new();
/// let err = q.transfer_timeout(1, Duration::from_millis(1)).unwrap_err();
/// assert!(err.is_timeout());
/// assert_eq!(err.into_inner(), 1);
/// q.close();
/// assert_eq!(q.transfer_timeout(2, Duration::from_secs(1)), Err(TransferTimeoutError::Closed(2)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TransferTimeoutError<T> {
    /// No consumer took the value in time; the offer was withdrawn.
    Timeout(T),
    /// The structure is closed (or was closed while waiting).
    Closed(T),
}

impl<T> TransferTimeoutError<T> {
    /// Returns the value that was not transferred.
    pub fn into_inner(self) -> T {
        match self {
            TransferTimeoutError::Timeout(value) | TransferTimeoutError::Closed(value) => value,
        }
    }

    /// Returns `true` for [`TransferTimeoutError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, TransferTimeoutError::Timeout(_))
    }

    /// Returns `true` for [`TransferTimeoutError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, TransferTimeoutError::Closed(_))
    }
}

impl<T> fmt::Debug for TransferTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferTimeoutError::Timeout(_) => f.pad("Timeout(..)"),
            TransferTimeoutError::Closed(_) => f.pad("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TransferTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferTimeoutError::Timeout(_) => f.pad("timed out waiting for a consumer"),
            TransferTimeoutError::Closed(_) => f.pad("transferring into a closed structure"),
        }
    }
}

impl<T> Error for TransferTimeoutError<T> {}

impl<T> From<PushError<T>> for TransferTimeoutError<T> {
    fn from(err: PushError<T>) -> Self {
        TransferTimeoutError::Closed(err.0)
    }
}

/// `try_transfer` found no consumer waiting. The value comes back.
///
/// # Examples
///
/// ```
/// use dualq::{DualQueue, TryTransferError};
///
/// let q = DualQueue::new();
/// assert_eq!(q.try_transfer(1), Err(TryTransferError::NoConsumer(1)));
/// assert!(q.is_empty()); // nothing was left behind
/// q.close();
/// assert_eq!(q.try_transfer(2), Err(TryTransferError::Closed(2)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TryTransferError<T> {
    /// No consumer was waiting.
    NoConsumer(T),
    /// The structure is closed.
    Closed(T),
}

impl<T> TryTransferError<T> {
    /// Returns the value that was not transferred.
    pub fn into_inner(self) -> T {
        match self {
            TryTransferError::NoConsumer(value) | TryTransferError::Closed(value) => value,
        }
    }

    /// Returns `true` for [`TryTransferError::NoConsumer`].
    pub fn is_no_consumer(&self) -> bool {
        matches!(self, TryTransferError::NoConsumer(_))
    }

    /// Returns `true` for [`TryTransferError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, TryTransferError::Closed(_))
    }

    /// What a timed transfer whose deadline had already passed reports.
    pub(crate) fn into_timeout(self) -> TransferTimeoutError<T> {
        match self {
            TryTransferError::NoConsumer(value) => TransferTimeoutError::Timeout(value),
            TryTransferError::Closed(value) => TransferTimeoutError::Closed(value),
        }
    }
}

impl<T> fmt::Debug for TryTransferError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryTransferError::NoConsumer(_) => f.pad("NoConsumer(..)"),
            TryTransferError::Closed(_) => f.pad("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TryTransferError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryTransferError::NoConsumer(_) => f.pad("no consumer is waiting"),
            TryTransferError::Closed(_) => f.pad("transferring into a closed structure"),
        }
    }
}

impl<T> Error for TryTransferError<T> {}
