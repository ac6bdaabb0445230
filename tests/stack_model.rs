//! Model-based tests for `DualStack`: random operation sequences applied to
//! the stack and to a `Vec` + closed-flag model, compared step by step.
//!
//! Besides the single-threaded operations, the model has *waiters*: a step
//! may start a blocking `pop` on a helper thread (it waits, since the model
//! says the stack is empty), and the model then predicts exactly which
//! waiter each later push serves (the newest) and that `close` wakes them all.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dualq::{DualStack, PopError, PopTimeoutError, PushError, TryPopError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Push(u32),
    TryPop,
    PopTimeoutZero,
    /// A short real timeout: on an empty open stack this pushes a
    /// reservation, times out and cancels it (it must leave no trace, also
    /// over waiters).
    PopTimeoutShort,
    PopDeadlinePast,
    /// Only applied when the model says it cannot block (non-empty or closed).
    Pop,
    /// A blocking `pop` on a new thread; applied as `Pop` when the model says
    /// it would not wait, skipped when four waiters already wait.
    Waiter,
    Close,
    Len,
    IsEmpty,
    IsClosed,
    Waiting,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => any::<u32>().prop_map(Op::Push),
        4 => Just(Op::TryPop),
        2 => Just(Op::PopTimeoutZero),
        1 => Just(Op::PopTimeoutShort),
        1 => Just(Op::PopDeadlinePast),
        3 => Just(Op::Pop),
        2 => Just(Op::Waiter),
        1 => Just(Op::Close),
        1 => Just(Op::Len),
        1 => Just(Op::IsEmpty),
        1 => Just(Op::IsClosed),
        1 => Just(Op::Waiting),
    ]
}

/// The reference model: a LIFO of values, the waiting consumers (oldest
/// first), and a closed flag.
#[derive(Default)]
struct Model {
    values: Vec<u32>,
    closed: bool,
}

impl Model {
    fn try_pop(&mut self) -> Result<u32, TryPopError> {
        match self.values.pop() {
            Some(v) => Ok(v),
            None if self.closed => Err(TryPopError::Closed),
            None => Err(TryPopError::Empty),
        }
    }

    fn pop_timeout(&mut self) -> Result<u32, PopTimeoutError> {
        self.try_pop().map_err(|e| match e {
            TryPopError::Empty => PopTimeoutError::Timeout,
            TryPopError::Closed => PopTimeoutError::Closed,
        })
    }

    fn can_block(&self) -> bool {
        self.values.is_empty() && !self.closed
    }
}

/// A consumer blocked in `pop` on its own thread.
type Waiter = thread::JoinHandle<Result<u32, PopError>>;

/// Closes the stack when a check ends (also on a failed assertion), so that
/// no waiter thread is left blocked.
struct CloseOnDrop(Arc<DualStack<u32>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Polls until `n` consumers wait on `s` (a started waiter has pushed its
/// reservation).
fn wait_for_waiters(s: &DualStack<u32>, n: usize) {
    let start = Instant::now();
    while s.waiting_consumers() != n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waiter never started"
        );
        thread::yield_now();
    }
}

/// Applies `ops` to a fresh stack and model, comparing every result.
fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let s = Arc::new(DualStack::new());
    let _closer = CloseOnDrop(Arc::clone(&s));
    let mut m = Model::default();
    // Waiting consumers, oldest first: the model serves from the back.
    let mut waiters: Vec<Waiter> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Push(v) => {
                let got = s.push(*v);
                if m.closed {
                    prop_assert_eq!(got, Err(PushError(*v)), "step {}: {:?}", i, op);
                } else if let Some(w) = waiters.pop() {
                    prop_assert_eq!(got, Ok(()), "step {}: {:?}", i, op);
                    let served = w.join().expect("waiter panicked");
                    prop_assert_eq!(
                        served,
                        Ok(*v),
                        "step {}: {:?} must serve the newest waiter",
                        i,
                        op
                    );
                } else {
                    prop_assert_eq!(got, Ok(()), "step {}: {:?}", i, op);
                    m.values.push(*v);
                }
            }
            Op::TryPop => prop_assert_eq!(s.try_pop(), m.try_pop(), "step {}: {:?}", i, op),
            Op::PopTimeoutZero => prop_assert_eq!(
                s.pop_timeout(Duration::ZERO),
                m.pop_timeout(),
                "step {}: {:?}",
                i,
                op
            ),
            Op::PopTimeoutShort => prop_assert_eq!(
                s.pop_timeout(Duration::from_micros(20)),
                m.pop_timeout(),
                "step {}: {:?}",
                i,
                op
            ),
            Op::PopDeadlinePast => {
                let now = Instant::now();
                let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
                prop_assert_eq!(
                    s.pop_deadline(past),
                    m.pop_timeout(),
                    "step {}: {:?}",
                    i,
                    op
                )
            }
            Op::Pop | Op::Waiter if !m.can_block() => {
                let expected = m.try_pop().map_err(|_| PopError);
                prop_assert_eq!(s.pop(), expected, "step {}: {:?} (as pop)", i, op);
            }
            Op::Pop => {
                // Would wait for ever on this thread: fall back to try_pop.
                prop_assert_eq!(
                    s.try_pop(),
                    m.try_pop(),
                    "step {}: {:?} (as try_pop)",
                    i,
                    op
                );
            }
            Op::Waiter => {
                if waiters.len() < 4 {
                    let s2 = Arc::clone(&s);
                    waiters.push(thread::spawn(move || s2.pop()));
                    wait_for_waiters(&s, waiters.len());
                }
            }
            Op::Close => {
                let first = !m.closed;
                m.closed = true;
                prop_assert_eq!(s.close(), first, "step {}: {:?}", i, op);
                for w in waiters.drain(..) {
                    prop_assert_eq!(w.join().expect("waiter panicked"), Err(PopError));
                }
            }
            Op::Len => prop_assert_eq!(s.len(), m.values.len(), "step {}: {:?}", i, op),
            Op::IsEmpty => {
                prop_assert_eq!(s.is_empty(), m.values.is_empty(), "step {}: {:?}", i, op)
            }
            Op::IsClosed => prop_assert_eq!(s.is_closed(), m.closed, "step {}: {:?}", i, op),
            Op::Waiting => {
                prop_assert_eq!(s.waiting_consumers(), waiters.len(), "step {}: {:?}", i, op)
            }
        }
    }
    // Final state: the stack holds exactly the model's values, newest on top,
    // and the waiters are still waiting.
    prop_assert_eq!(s.len(), m.values.len());
    prop_assert_eq!(s.is_closed(), m.closed);
    prop_assert_eq!(s.waiting_consumers(), waiters.len());
    let rest: Vec<u32> = std::iter::from_fn(|| s.try_pop().ok()).collect();
    m.values.reverse();
    prop_assert_eq!(rest, m.values);
    // Closing releases the remaining waiters.
    s.close();
    for w in waiters {
        prop_assert_eq!(w.join().expect("waiter panicked"), Err(PopError));
    }
    Ok(())
}

proptest! {
    // Random op sequences (with waiter threads): every result matches the Vec model.
    #[test]
    fn matches_vec_model(ops in proptest::collection::vec(op(), 0..200)) {
        check(&ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    // Long push-heavy runs interleaved with pops: LIFO order over many nodes.
    #[test]
    fn matches_model_long_runs(
        ops in proptest::collection::vec(
            prop_oneof![
                3 => any::<u32>().prop_map(Op::Push),
                2 => Just(Op::TryPop),
                1 => Just(Op::Pop),
                1 => Just(Op::Len),
            ],
            500..1500,
        )
    ) {
        check(&ops)?;
    }
}

// Regression/sanity: a hand-written sequence through every transition of the model.
#[test]
fn model_fixed_sequence() {
    use Op::*;
    let ops = [
        TryPop,
        PopTimeoutZero,
        PopTimeoutShort,
        Push(1),
        Push(2),
        Len,
        Pop,
        PopTimeoutShort,
        Waiting,
        Push(3),
        PopDeadlinePast,
        IsEmpty,
        Pop,
        Waiter,
        Waiter,
        PopTimeoutShort,
        Waiting,
        Push(4),
        Waiter,
        Waiting,
        Push(5),
        Push(6),
        Push(7),
        Waiter,
        Close,
        Push(8),
        IsClosed,
        Close,
        Pop,
        TryPop,
        PopTimeoutZero,
        Pop,
        Len,
    ];
    check(&ops).unwrap();
}
