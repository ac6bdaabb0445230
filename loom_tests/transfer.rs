//! Loom models of `transfer` (issue 6), for both structures: an offer's
//! take, withdrawal and close race at every point, and a value is always
//! either taken once (the transfer succeeds) or back with its producer.
//!
//! A party that may wait never joins: a wake-up that lands after its target
//! stopped waiting leaves an unpark token, which loom's `join` would misread
//! if the joiner received it. So either both parties are spawned and the
//! main thread only joins (three threads: bound 1 in CI), or the main thread
//! is a party that never waits (close, try_pop). At bound 2 (run by hand,
//! `LOOM_MAX_PREEMPTIONS=2`): transfer_races_pop 4,119,938 interleavings
//! (queue, 292 s) and 1,194,826 (stack, 84 s); waiting_transfer_pop_races_close
//! 2,678,641 (queue, 186 s) and 1,075,871 (stack, 75 s); all passed.

use super::model;
use super::reservation::block_on;
use dualq::{DualQueue, DualStack, PopTimeoutError, PushError, TransferTimeoutError, TryPopError};
use loom::sync::Arc;
use loom::thread;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A waker that does nothing: the model polls once and never waits.
struct Noop;

impl std::task::Wake for Noop {
    fn wake(self: std::sync::Arc<Self>) {}
}

macro_rules! transfer_models {
    ($module:ident, $ty:ident) => {
        mod $module {
            use super::*;

            /// transfer ‖ pop on an empty structure: the value goes from
            /// the producer to the consumer, whoever arrives first waits.
            #[test]
            fn transfer_races_pop() {
                model(
                    concat!(stringify!($module), "_transfer_races_pop"),
                    1,
                    || {
                        let q = Arc::new($ty::new());
                        let producer = {
                            let q = q.clone();
                            thread::spawn(move || q.transfer(1))
                        };
                        let consumer = {
                            let q = q.clone();
                            thread::spawn(move || q.pop())
                        };
                        assert_eq!(producer.join().unwrap(), Ok(()));
                        assert_eq!(consumer.join().unwrap(), Ok(1));
                        assert_eq!(q.try_pop(), Err(TryPopError::Empty));
                        assert_eq!(q.waiting_producers() + q.waiting_consumers(), 0);
                    },
                );
            }

            /// A timed transfer (its withdrawal) racing a timed pop (its
            /// cancel): either the pop got the value and the transfer
            /// succeeded, or the value came back and the pop got nothing.
            #[test]
            fn transfer_timeout_races_pop_timeout() {
                model(
                    concat!(stringify!($module), "_transfer_timeout_races_pop_timeout"),
                    1,
                    || {
                        let q = Arc::new($ty::new());
                        let producer = {
                            let q = q.clone();
                            thread::spawn(move || q.transfer_timeout(2, Duration::from_secs(60)))
                        };
                        let consumer = {
                            let q = q.clone();
                            thread::spawn(move || q.pop_timeout(Duration::from_secs(60)))
                        };
                        match (producer.join().unwrap(), consumer.join().unwrap()) {
                            (Ok(()), Ok(2)) => {}
                            (
                                Err(TransferTimeoutError::Timeout(2)),
                                Err(PopTimeoutError::Timeout),
                            ) => {}
                            other => panic!("value lost or duplicated: {other:?}"),
                        }
                        assert_eq!(q.try_pop(), Err(TryPopError::Empty));
                        assert_eq!(q.waiting_producers() + q.waiting_consumers(), 0);
                    },
                );
            }

            /// transfer ‖ close with no consumer: the value comes back.
            /// (The main thread closes: it never waits, so it can join.)
            #[test]
            fn transfer_races_close() {
                model(
                    concat!(stringify!($module), "_transfer_races_close"),
                    3,
                    || {
                        let q = Arc::new($ty::new());
                        let producer = {
                            let q = q.clone();
                            thread::spawn(move || q.transfer(3))
                        };
                        assert!(q.close());
                        assert_eq!(producer.join().unwrap(), Err(PushError(3)));
                        assert_eq!(q.try_pop(), Err(TryPopError::Closed));
                    },
                );
            }

            /// A pop racing close with a transfer waiting: the pop takes the
            /// value (and the transfer succeeds) or the close gives it back
            /// (and the pop reports closed).
            #[test]
            fn waiting_transfer_pop_races_close() {
                model(
                    concat!(stringify!($module), "_waiting_transfer_pop_races_close"),
                    1,
                    || {
                        let q = Arc::new($ty::new());
                        let producer = {
                            let q = q.clone();
                            thread::spawn(move || q.transfer(4))
                        };
                        while q.waiting_producers() == 0 {
                            thread::yield_now();
                        }
                        let closer = {
                            let q = q.clone();
                            thread::spawn(move || q.close())
                        };
                        // The main thread only tries: it never waits.
                        let got = q.try_pop();
                        let sent = producer.join().unwrap();
                        assert!(closer.join().unwrap());
                        match (sent, got) {
                            (Ok(()), Ok(4)) => {}
                            (Err(PushError(4)), Err(_)) => {}
                            other => panic!("value lost or duplicated: {other:?}"),
                        }
                    },
                );
            }

            /// transfer_async ‖ a consumer that only tries: the take (at
            /// any point of the future's offer, register and re-check)
            /// always wakes the producer's task, which then completes.
            #[test]
            fn transfer_async_races_try_pop() {
                model(
                    concat!(stringify!($module), "_transfer_async_races_try_pop"),
                    3,
                    || {
                        let q = Arc::new($ty::new());
                        let producer = {
                            let q = q.clone();
                            thread::spawn(move || block_on(q.transfer_async(5)))
                        };
                        // The main thread only tries: it never waits.
                        let got = loop {
                            match q.try_pop() {
                                Ok(v) => break v,
                                Err(_) => thread::yield_now(),
                            }
                        };
                        assert_eq!(got, 5);
                        assert_eq!(producer.join().unwrap(), Ok(()));
                        assert_eq!(q.waiting_producers(), 0);
                    },
                );
            }

            /// A pending transfer future withdrawn while a consumer tries to
            /// take its offer: the value is taken once or comes back, never
            /// both, never neither.
            #[test]
            fn transfer_future_withdraw_races_try_pop() {
                model(
                    concat!(
                        stringify!($module),
                        "_transfer_future_withdraw_races_try_pop"
                    ),
                    3,
                    || {
                        let q = Arc::new($ty::new());
                        let producer = {
                            let q = q.clone();
                            thread::spawn(move || {
                                let mut future = q.transfer_async(6);
                                let waker = Waker::from(std::sync::Arc::new(Noop));
                                let mut cx = Context::from_waker(&waker);
                                match Pin::new(&mut future).poll(&mut cx) {
                                    // Taken between the offer and its look.
                                    Poll::Ready(sent) => sent.map_err(PushError::into_inner),
                                    Poll::Pending => future.withdraw(),
                                }
                            })
                        };
                        let got = q.try_pop();
                        match (got, producer.join().unwrap()) {
                            (Ok(6), Ok(())) | (Err(TryPopError::Empty), Err(6)) => {}
                            other => panic!("value lost or duplicated: {other:?}"),
                        }
                        assert_eq!(q.try_pop(), Err(TryPopError::Empty));
                        assert_eq!(q.waiting_producers(), 0);
                    },
                );
            }

            /// close racing a transfer future: it is woken and gets its
            /// value back.
            #[test]
            fn transfer_async_races_close() {
                model(
                    concat!(stringify!($module), "_transfer_async_races_close"),
                    3,
                    || {
                        let q = Arc::new($ty::new());
                        let producer = {
                            let q = q.clone();
                            thread::spawn(move || block_on(q.transfer_async(7)))
                        };
                        assert!(q.close());
                        assert_eq!(producer.join().unwrap(), Err(PushError(7)));
                        assert_eq!(q.waiting_producers(), 0);
                    },
                );
            }
        }
    };
}

transfer_models!(queue_transfer, DualQueue);
transfer_models!(stack_transfer, DualStack);
