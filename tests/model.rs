//! Model-based tests: random single-threaded operation sequences applied to a
//! `DualQueue` and to a `VecDeque` + closed-flag model, compared step by step.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dualq::{DualQueue, PopError, PopTimeoutError, PushError, TryPopError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Push(u32),
    TryPop,
    PopTimeoutZero,
    /// A short real timeout: on an empty open queue this links a
    /// reservation, times out and cancels it (it must leave no trace).
    PopTimeoutShort,
    PopDeadlinePast,
    /// Only applied when the model says it cannot block (non-empty or closed).
    Pop,
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
        1 => Just(Op::Close),
        1 => Just(Op::Len),
        1 => Just(Op::IsEmpty),
        1 => Just(Op::IsClosed),
        1 => Just(Op::Waiting),
    ]
}

/// The reference model: a FIFO of values and a closed flag.
#[derive(Default)]
struct Model {
    values: VecDeque<u32>,
    closed: bool,
}

impl Model {
    fn push(&mut self, v: u32) -> Result<(), PushError<u32>> {
        if self.closed {
            Err(PushError(v))
        } else {
            self.values.push_back(v);
            Ok(())
        }
    }

    fn try_pop(&mut self) -> Result<u32, TryPopError> {
        match self.values.pop_front() {
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

/// Applies `ops` to a fresh queue and model, comparing every result.
fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let q = DualQueue::new();
    let mut m = Model::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Push(v) => prop_assert_eq!(q.push(*v), m.push(*v), "step {}: {:?}", i, op),
            Op::TryPop => prop_assert_eq!(q.try_pop(), m.try_pop(), "step {}: {:?}", i, op),
            Op::PopTimeoutZero => {
                prop_assert_eq!(
                    q.pop_timeout(Duration::ZERO),
                    m.pop_timeout(),
                    "step {}: {:?}",
                    i,
                    op
                )
            }
            Op::PopTimeoutShort => {
                prop_assert_eq!(
                    q.pop_timeout(Duration::from_micros(20)),
                    m.pop_timeout(),
                    "step {}: {:?}",
                    i,
                    op
                )
            }
            Op::PopDeadlinePast => {
                let now = Instant::now();
                let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
                prop_assert_eq!(
                    q.pop_deadline(past),
                    m.pop_timeout(),
                    "step {}: {:?}",
                    i,
                    op
                )
            }
            Op::Pop => {
                if m.can_block() {
                    // Would wait for ever on one thread: fall back to try_pop.
                    prop_assert_eq!(
                        q.try_pop(),
                        m.try_pop(),
                        "step {}: {:?} (as try_pop)",
                        i,
                        op
                    );
                } else {
                    let expected = m.try_pop().map_err(|_| PopError);
                    prop_assert_eq!(q.pop(), expected, "step {}: {:?}", i, op);
                }
            }
            Op::Close => {
                let first = !m.closed;
                m.closed = true;
                prop_assert_eq!(q.close(), first, "step {}: {:?}", i, op);
            }
            Op::Len => prop_assert_eq!(q.len(), m.values.len(), "step {}: {:?}", i, op),
            Op::IsEmpty => {
                prop_assert_eq!(q.is_empty(), m.values.is_empty(), "step {}: {:?}", i, op)
            }
            Op::IsClosed => prop_assert_eq!(q.is_closed(), m.closed, "step {}: {:?}", i, op),
            Op::Waiting => prop_assert_eq!(q.waiting_consumers(), 0, "step {}: {:?}", i, op),
        }
    }
    // Final state: the queue holds exactly the model's values, in order.
    prop_assert_eq!(q.len(), m.values.len());
    prop_assert_eq!(q.is_closed(), m.closed);
    let rest: Vec<u32> = std::iter::from_fn(|| q.try_pop().ok()).collect();
    prop_assert_eq!(rest, Vec::from(m.values));
    Ok(())
}

proptest! {
    // Random op sequences: every result of the queue matches the VecDeque model.
    #[test]
    fn matches_vecdeque_model(ops in proptest::collection::vec(op(), 0..200)) {
        check(&ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    // Long push-heavy runs interleaved with pops: FIFO order over many nodes.
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
        Close,
        Push(4),
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
