//! `transfer`, `transfer_timeout`, `try_transfer` on both structures: the
//! producer waits until a consumer took its value (a rendezvous). Waiting
//! producers are served in the structure's order, a value that was not taken
//! always comes back, and a timed-out or closed transfer leaves nothing
//! behind.
//!
//! Each body runs against `DualQueue` and `DualStack` (`dual_tests!`).

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    block_on, join_scoped, poll_once, scaled, wait_until, CloseOnUnwind, CountingWaker, DropLog,
    Dual, Flavour, Rng, Structure, Tracked,
};
use dualq::{PopError, PushError, TransferTimeoutError, TryPopError, TryTransferError};
use std::task::Poll;

dual_tests! {
    transfer_to_a_waiting_consumer_returns_at_once,
    transfer_waits_until_taken,
    waiting_producers_are_served_in_order,
    offers_and_stored_values_share_one_order,
    try_transfer_only_to_a_waiting_consumer,
    transfer_timeout_gives_the_value_back,
    transfer_timeout_edge_durations,
    close_gives_waiting_transfers_their_values_back,
    transfer_after_close,
    transfer_timeout_racing_a_pop_loses_nothing,
    rendezvous_ping_pong,
    transfer_stress_every_value_once,
    transfer_async_unpolled_takes_no_place,
    transfer_async_waits_until_taken_and_is_woken,
    transfer_async_to_a_waiting_consumer_is_ready_at_once,
    dropped_pending_transfer_future_withdraws,
    withdraw_after_a_take_reports_the_transfer,
    close_completes_a_pending_transfer_future_with_its_value,
    async_and_blocking_producers_share_one_order,
    transfer_futures_dropped_at_random_points_lose_nothing,
    finished_transfer_futures_release_their_wakers,
}

/// With a consumer waiting, `transfer` hands over and returns at once.
fn transfer_to_a_waiting_consumer_returns_at_once<F: Flavour>() {
    let q = F::new::<u8>();
    let r = q.reserve();
    assert_eq!(q.transfer(1), Ok(()));
    assert_eq!(r.wait(), Ok(1));
    assert_eq!(q.waiting_producers(), 0);
}

/// With nobody waiting, `transfer` blocks until a pop takes its value; the
/// value counts as one a pop can take (`len`, `is_empty`).
fn transfer_waits_until_taken<F: Flavour>() {
    let q = F::new::<u32>();
    let returned = AtomicUsize::new(0);
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let producer = s.spawn(|| {
            let r = q.transfer(7);
            returned.store(1, Ordering::SeqCst);
            r
        });
        wait_until("the producer to wait", || q.waiting_producers() == 1);
        assert_eq!(q.len(), 1);
        assert!(!q.is_empty());
        thread::sleep(Duration::from_millis(5));
        assert_eq!(
            returned.load(Ordering::SeqCst),
            0,
            "transfer returned untaken"
        );
        assert_eq!(q.pop(), Ok(7));
        assert_eq!(join_scoped(producer), Ok(()));
    });
    assert_eq!(q.waiting_producers(), 0);
    assert!(q.is_empty());
}

/// Producers that start waiting one after another are served in the
/// structure's order (queue: oldest first; stack: newest first).
fn waiting_producers_are_served_in_order<F: Flavour>() {
    const N: usize = 4;
    let q = F::new::<usize>();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let mut producers = Vec::new();
        for i in 0..N {
            producers.push(s.spawn({
                let q = &q;
                move || q.transfer(i)
            }));
            wait_until("the producer to wait", || q.waiting_producers() == i + 1);
        }
        let popped: Vec<usize> = (0..N).map(|_| q.pop().unwrap()).collect();
        assert_eq!(popped, F::ORDER.served((0..N).collect()));
        for p in producers {
            assert_eq!(join_scoped(p), Ok(()));
        }
    });
}

/// Stored values and offers are one sequence to consumers.
fn offers_and_stored_values_share_one_order<F: Flavour>() {
    let q = F::new::<u8>();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        q.push(1).unwrap();
        let producer = s.spawn(|| q.transfer(2));
        wait_until("the producer to wait", || q.waiting_producers() == 1);
        q.push(3).unwrap();
        assert_eq!(q.len(), 3);
        let popped: Vec<u8> = (0..3).map(|_| q.try_pop().unwrap()).collect();
        assert_eq!(popped, F::ORDER.served(vec![1, 2, 3]));
        assert_eq!(join_scoped(producer), Ok(()));
    });
}

/// `try_transfer` succeeds only with a consumer waiting, and links nothing.
fn try_transfer_only_to_a_waiting_consumer<F: Flavour>() {
    let q = F::new::<u8>();
    assert_eq!(q.try_transfer(1), Err(TryTransferError::NoConsumer(1)));
    assert!(q.is_empty());
    q.push(2).unwrap();
    assert_eq!(q.try_transfer(3), Err(TryTransferError::NoConsumer(3)));
    assert_eq!(q.len(), 1);
    assert_eq!(q.try_pop(), Ok(2));
    let r = q.reserve();
    assert_eq!(q.try_transfer(4), Ok(()));
    assert_eq!(r.wait(), Ok(4));
    // A cancelled reservation is no consumer.
    drop(q.reserve());
    assert_eq!(q.try_transfer(5), Err(TryTransferError::NoConsumer(5)));
    q.close();
    assert_eq!(q.try_transfer(6), Err(TryTransferError::Closed(6)));
}

/// A timed-out transfer gets its value back and leaves nothing behind.
fn transfer_timeout_gives_the_value_back<F: Flavour>() {
    let log = DropLog::new(1);
    let q = F::new::<Tracked>();
    let start = Instant::now();
    let err = q
        .transfer_timeout(Tracked::new(0, &log), Duration::from_millis(20))
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(err.is_timeout());
    let value = err.into_inner();
    assert_eq!(value.id(), 0);
    assert_eq!(log.total(), 0);
    assert!(q.is_empty());
    assert_eq!(q.waiting_producers(), 0);
    drop(value);
    log.assert_each_dropped_once();
}

/// Zero, tiny and huge timeouts: no panic; zero only tries.
fn transfer_timeout_edge_durations<F: Flavour>() {
    let q = F::new::<u8>();
    assert_eq!(
        q.transfer_timeout(1, Duration::ZERO),
        Err(TransferTimeoutError::Timeout(1))
    );
    assert_eq!(
        q.transfer_timeout(2, Duration::from_nanos(1)),
        Err(TransferTimeoutError::Timeout(2))
    );
    assert_eq!(
        q.transfer_deadline(3, Instant::now()),
        Err(TransferTimeoutError::Timeout(3))
    );
    assert!(q.is_empty());
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let producer = s.spawn(|| q.transfer_timeout(4, Duration::MAX));
        wait_until("the producer to wait", || q.waiting_producers() == 1);
        assert_eq!(q.pop(), Ok(4));
        assert_eq!(join_scoped(producer), Ok(()));
    });
}

/// `close` wakes waiting producers, which get their values back.
fn close_gives_waiting_transfers_their_values_back<F: Flavour>() {
    let q = F::new::<u8>();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let a = s.spawn(|| q.transfer(1));
        let b = s.spawn(|| q.transfer_timeout(2, Duration::from_secs(600)));
        wait_until("both producers to wait", || q.waiting_producers() == 2);
        q.close();
        assert_eq!(join_scoped(a), Err(PushError(1)));
        assert_eq!(join_scoped(b), Err(TransferTimeoutError::Closed(2)));
    });
    assert_eq!(q.waiting_producers(), 0);
    assert_eq!(q.pop(), Err(PopError));
}

/// Every transfer flavour on a closed structure hands its value back.
fn transfer_after_close<F: Flavour>() {
    let q = F::new::<u8>();
    q.close();
    assert_eq!(q.transfer(1), Err(PushError(1)));
    assert_eq!(
        q.transfer_timeout(2, Duration::from_secs(1)),
        Err(TransferTimeoutError::Closed(2))
    );
    assert_eq!(
        q.transfer_timeout(3, Duration::ZERO),
        Err(TransferTimeoutError::Closed(3))
    );
    assert_eq!(q.try_transfer(4), Err(TryTransferError::Closed(4)));
}

/// A transfer timing out while a pop arrives: either the pop got the value
/// and the transfer succeeded, or the transfer got it back and the pop got
/// nothing. Never both, never neither.
fn transfer_timeout_racing_a_pop_loses_nothing<F: Flavour>() {
    let q = F::new::<usize>();
    let rounds = scaled(2_000);
    let start = Barrier::new(2);
    let (mut taken, mut returned) = (0, 0);
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let consumer = s.spawn(|| {
            let mut got = Vec::new();
            for i in 0..rounds {
                start.wait();
                let timeout = Duration::from_micros((i % 7) as u64 * 10);
                got.push(q.pop_timeout(timeout).ok());
                start.wait();
            }
            got
        });
        let mut sent = Vec::new();
        for i in 0..rounds {
            start.wait();
            let timeout = Duration::from_micros((i % 5) as u64 * 10);
            sent.push(q.transfer_timeout(i, timeout));
            start.wait();
        }
        let got = join_scoped(consumer);
        for (i, (sent, got)) in sent.into_iter().zip(got).enumerate() {
            match sent {
                Ok(()) => {
                    assert_eq!(
                        got,
                        Some(i),
                        "round {i}: transfer succeeded, pop got {got:?}"
                    );
                    taken += 1;
                }
                Err(TransferTimeoutError::Timeout(v)) => {
                    assert_eq!(v, i);
                    assert_eq!(got, None, "round {i}: value both returned and taken");
                    returned += 1;
                }
                Err(e) => panic!("round {i}: {e:?}"),
            }
        }
    });
    assert!(q.is_empty());
    assert_eq!(q.waiting_producers() + q.waiting_consumers(), 0);
    eprintln!("{}: {taken} taken, {returned} returned", F::NAME);
}

/// Two threads bounce a counter through one structure with `transfer` and
/// `pop`: a rendezvous ping-pong.
fn rendezvous_ping_pong<F: Flavour>() {
    let rounds = scaled(5_000);
    let (ping, pong) = (F::new::<usize>(), F::new::<usize>());
    thread::scope(|s| {
        let _close = (CloseOnUnwind(&ping), CloseOnUnwind(&pong));
        s.spawn(|| {
            while let Ok(n) = ping.pop() {
                pong.transfer(n + 1).unwrap();
            }
        });
        for i in 0..rounds {
            ping.transfer(2 * i).unwrap();
            assert_eq!(pong.pop(), Ok(2 * i + 1));
        }
        ping.close();
    });
}

/// Oversubscribed stress: producers transfer (blocking, timed, or try)
/// while consumers pop (blocking, timed, try, async-reserved), then close.
/// Each value is taken exactly when its transfer reports success, or comes
/// back to its producer otherwise; each is dropped exactly once.
fn transfer_stress_every_value_once<F: Flavour>() {
    const PRODUCERS: usize = if cfg!(miri) { 2 } else { 8 };
    const CONSUMERS: usize = if cfg!(miri) { 2 } else { 8 };
    let per_producer = scaled(2_000);
    let total = PRODUCERS * per_producer;
    let log = DropLog::new(total);
    let q = F::new::<Tracked>();
    let (transferred, returned, received) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let producers_done = AtomicUsize::new(0);
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        for p in 0..PRODUCERS {
            let (q, log) = (&q, &log);
            let (transferred, returned, done) = (&transferred, &returned, &producers_done);
            s.spawn(move || {
                let mut rng = Rng::new(p as u64 + 100);
                for i in 0..per_producer {
                    let value = Tracked::new(p * per_producer + i, log);
                    let back = match rng.below(4) {
                        0 => q
                            .try_transfer(value)
                            .err()
                            .map(TryTransferError::into_inner),
                        1 => q
                            .transfer_timeout(value, Duration::from_micros(rng.below(50) as u64))
                            .err()
                            .map(TransferTimeoutError::into_inner),
                        _ => q
                            .transfer_timeout(value, Duration::from_millis(20))
                            .err()
                            .map(TransferTimeoutError::into_inner),
                    };
                    match back {
                        None => transferred.fetch_add(1, Ordering::SeqCst),
                        Some(_) => returned.fetch_add(1, Ordering::SeqCst),
                    };
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for c in 0..CONSUMERS {
            let (q, received, done) = (&q, &received, &producers_done);
            s.spawn(move || {
                let mut rng = Rng::new(c as u64 + 200);
                while done.load(Ordering::SeqCst) < PRODUCERS {
                    let got = match rng.below(3) {
                        0 => q.try_pop().ok(),
                        1 => q
                            .pop_timeout(Duration::from_micros(rng.below(100) as u64))
                            .ok(),
                        _ => q.reserve().wait_timeout(Duration::from_millis(1)).ok(),
                    };
                    if got.is_some() {
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let (t, r, c) = (
        transferred.load(Ordering::SeqCst),
        returned.load(Ordering::SeqCst),
        received.load(Ordering::SeqCst),
    );
    eprintln!("{}: {t} transferred, {r} returned, {c} received", F::NAME);
    assert_eq!(t + r, total);
    assert_eq!(c, t, "values received differ from successful transfers");
    assert!(q.is_empty());
    assert_eq!(q.waiting_producers() + q.waiting_consumers(), 0);
    log.assert_each_dropped_once();
}

// ---- transfer_async ----

/// An unpolled transfer future has offered nothing; dropping it drops the
/// value (once), `withdraw` hands it back.
fn transfer_async_unpolled_takes_no_place<F: Flavour>() {
    let log = DropLog::new(2);
    let q = F::new::<Tracked>();
    let future = q.transfer_async(Tracked::new(0, &log));
    assert_eq!(q.waiting_producers(), 0);
    assert!(q.is_empty());
    drop(future);
    assert_eq!(log.count(0), 1);
    let back = q.transfer_async(Tracked::new(1, &log)).withdraw();
    assert_eq!(back.map_err(|t| t.id()), Err(1));
    assert!(q.is_empty());
    log.assert_each_dropped_once();
}

/// A pending transfer future is a waiting producer (its value counts in
/// `len`); a consumer's take wakes it, and it then completes with `Ok`.
fn transfer_async_waits_until_taken_and_is_woken<F: Flavour>() {
    let q = F::new::<u8>();
    let (waker, wakes) = CountingWaker::new();
    let mut future = q.transfer_async(7);
    assert!(poll_once(&mut future, &waker).is_pending());
    assert!(poll_once(&mut future, &waker).is_pending()); // polling again re-registers
    assert_eq!(q.waiting_producers(), 1);
    assert_eq!(q.len(), 1);
    assert_eq!(wakes.wakes(), 0);
    assert_eq!(q.try_pop(), Ok(7));
    assert_eq!(wakes.wakes(), 1, "the take must wake the producer's task");
    assert_eq!(poll_once(&mut future, &waker), Poll::Ready(Ok(())));
    assert_eq!(q.waiting_producers(), 0);
    assert!(q.is_empty());
    // And across threads, with the minimal executor.
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        s.spawn(|| {
            wait_until("the producer to wait", || q.waiting_producers() == 1);
            assert_eq!(q.pop(), Ok(8));
        });
        assert_eq!(block_on(q.transfer_async(8)), Ok(()));
    });
}

/// With a consumer waiting, the first poll hands the value over.
fn transfer_async_to_a_waiting_consumer_is_ready_at_once<F: Flavour>() {
    let q = F::new::<u8>();
    let (waker, _) = CountingWaker::new();
    let r = q.reserve();
    let mut future = q.transfer_async(3);
    assert_eq!(poll_once(&mut future, &waker), Poll::Ready(Ok(())));
    assert_eq!(r.wait(), Ok(3));
    assert_eq!(q.waiting_producers(), 0);
}

/// Dropping a pending future withdraws its offer: nothing is left behind,
/// no consumer gets the value afterwards, and it is dropped exactly once.
fn dropped_pending_transfer_future_withdraws<F: Flavour>() {
    let log = DropLog::new(3);
    let q = F::new::<Tracked>();
    let (waker, _) = CountingWaker::new();
    q.push(Tracked::new(0, &log)).unwrap();
    let mut future = q.transfer_async(Tracked::new(1, &log));
    assert!(poll_once(&mut future, &waker).is_pending());
    q.push(Tracked::new(2, &log)).unwrap();
    assert_eq!(q.len(), 3);
    drop(future);
    assert_eq!(log.count(1), 1);
    assert_eq!(q.waiting_producers(), 0);
    assert_eq!(q.len(), 2);
    let rest: Vec<usize> = std::iter::from_fn(|| q.try_pop().ok().map(|t| t.id())).collect();
    assert_eq!(rest, F::ORDER.served(vec![0, 2]));
    assert!(matches!(q.try_pop(), Err(TryPopError::Empty)));
    log.assert_each_dropped_once();
}

/// `withdraw` after a consumer took the value reports the transfer; before,
/// it hands the value back.
fn withdraw_after_a_take_reports_the_transfer<F: Flavour>() {
    let q = F::new::<u8>();
    let (waker, _) = CountingWaker::new();
    let mut taken = q.transfer_async(1);
    assert!(poll_once(&mut taken, &waker).is_pending());
    assert_eq!(q.pop(), Ok(1));
    assert_eq!(taken.withdraw(), Ok(()));
    let mut pending = q.transfer_async(2);
    assert!(poll_once(&mut pending, &waker).is_pending());
    assert_eq!(pending.withdraw(), Err(2));
    assert!(q.is_empty());
    assert_eq!(q.waiting_producers(), 0);
}

/// `close` completes a pending transfer future with its value and wakes
/// it; a future first polled after the close fails at once.
fn close_completes_a_pending_transfer_future_with_its_value<F: Flavour>() {
    let q = F::new::<u8>();
    let (waker, wakes) = CountingWaker::new();
    let mut future = q.transfer_async(4);
    assert!(poll_once(&mut future, &waker).is_pending());
    assert!(q.close());
    assert_eq!(wakes.wakes(), 1, "close must wake a waiting producer task");
    assert_eq!(
        poll_once(&mut future, &waker),
        Poll::Ready(Err(PushError(4)))
    );
    let mut late = q.transfer_async(5);
    assert_eq!(poll_once(&mut late, &waker), Poll::Ready(Err(PushError(5))));
    assert_eq!(q.waiting_producers(), 0);
}

/// Async and blocking producers wait in one line, served in the
/// structure's order.
fn async_and_blocking_producers_share_one_order<F: Flavour>() {
    let q = F::new::<usize>();
    let (waker, _) = CountingWaker::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let mut first = q.transfer_async(0);
        assert!(poll_once(&mut first, &waker).is_pending());
        let blocking = s.spawn(|| q.transfer(1));
        wait_until("the blocking producer to wait", || {
            q.waiting_producers() == 2
        });
        let mut third = q.transfer_async(2);
        assert!(poll_once(&mut third, &waker).is_pending());
        let popped: Vec<usize> = (0..3).map(|_| q.pop().unwrap()).collect();
        assert_eq!(popped, F::ORDER.served(vec![0, 1, 2]));
        assert_eq!(poll_once(&mut first, &waker), Poll::Ready(Ok(())));
        assert_eq!(poll_once(&mut third, &waker), Poll::Ready(Ok(())));
        assert_eq!(join_scoped(blocking), Ok(()));
    });
}

/// Oversubscribed stress: producers poll transfer futures a random number
/// of times, then drop them, withdraw them, or wait them out, while
/// consumers pop in every way. A value is received iff its future said
/// `Ok` (or was dropped while pending after a take: the drop log catches
/// a value both dropped with its future and received), and each value is
/// dropped exactly once.
fn transfer_futures_dropped_at_random_points_lose_nothing<F: Flavour>() {
    const PRODUCERS: usize = if cfg!(miri) { 2 } else { 8 };
    const CONSUMERS: usize = if cfg!(miri) { 2 } else { 8 };
    let per_producer = scaled(2_000);
    let total = PRODUCERS * per_producer;
    let log = DropLog::new(total);
    let q = F::new::<Tracked>();
    let (ok, back, dropped, received) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let producers_done = AtomicUsize::new(0);
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        for p in 0..PRODUCERS {
            let (q, log) = (&q, &log);
            let (ok, back, dropped, done) = (&ok, &back, &dropped, &producers_done);
            s.spawn(move || {
                let mut rng = Rng::new(p as u64 + 300);
                let (waker, _) = CountingWaker::new();
                for i in 0..per_producer {
                    let mut future = q.transfer_async(Tracked::new(p * per_producer + i, log));
                    let mut ready = None;
                    for _ in 0..rng.below(4) {
                        if let Poll::Ready(r) = poll_once(&mut future, &waker) {
                            ready = Some(r);
                            break;
                        }
                        thread::yield_now();
                    }
                    let counter = match ready {
                        Some(Ok(())) => ok,
                        Some(Err(_)) => panic!("not closed yet"),
                        None => match rng.below(3) {
                            0 => {
                                drop(future);
                                dropped
                            }
                            1 => match future.withdraw() {
                                Ok(()) => ok,
                                Err(_) => back,
                            },
                            _ => match block_on(future) {
                                Ok(()) => ok,
                                Err(_) => panic!("not closed yet"),
                            },
                        },
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for c in 0..CONSUMERS {
            let (q, received, done) = (&q, &received, &producers_done);
            s.spawn(move || {
                let mut rng = Rng::new(c as u64 + 400);
                // (Closed early only if a producer panicked.)
                while done.load(Ordering::SeqCst) < PRODUCERS && !q.is_closed() {
                    let got = match rng.below(3) {
                        0 => q.try_pop().ok(),
                        1 => q
                            .pop_timeout(Duration::from_micros(rng.below(100) as u64))
                            .ok(),
                        _ => block_on(async {
                            // Gives up (drops the pending pop) on close.
                            q.pop_async().await.ok()
                        }),
                    };
                    if got.is_some() {
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        // Consumers blocked in `pop_async` when the producers finish: close.
        wait_until("the producers to finish", || {
            producers_done.load(Ordering::SeqCst) == PRODUCERS
        });
        q.close();
    });
    let (o, b, d, r) = (
        ok.load(Ordering::SeqCst),
        back.load(Ordering::SeqCst),
        dropped.load(Ordering::SeqCst),
        received.load(Ordering::SeqCst),
    );
    eprintln!(
        "{}: {o} ok, {b} withdrawn, {d} dropped pending, {r} received",
        F::NAME
    );
    assert_eq!(o + b + d, total);
    // A future dropped while pending may have been taken just before.
    assert!(r >= o && r <= o + d, "received {r}, ok {o}, dropped {d}");
    assert!(q.is_empty());
    assert_eq!(q.waiting_producers() + q.waiting_consumers(), 0);
    log.assert_each_dropped_once();
}

/// A transfer future that is withdrawn, dropped or completes drops the
/// waker it registered at once, even when its node lingers (the stack's
/// dead offer stays buried under a later push until it surfaces).
fn finished_transfer_futures_release_their_wakers<F: Flavour>() {
    struct Count;
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let q = F::new::<u8>();
    let count = std::sync::Arc::new(Count);
    let waker = std::task::Waker::from(std::sync::Arc::clone(&count));
    // References held by the structure: all but ours and `waker`'s.
    let held = || std::sync::Arc::strong_count(&count) - 2;
    // Withdrawn.
    let mut future = q.transfer_async(1);
    assert!(poll_once(&mut future, &waker).is_pending());
    assert_eq!(held(), 1, "registered");
    q.push(2).unwrap(); // buries the offer (stack)
    assert_eq!(future.withdraw(), Err(1));
    assert_eq!(held(), 0, "a withdrawn future kept its waker");
    // Dropped.
    let mut future = q.transfer_async(3);
    assert!(poll_once(&mut future, &waker).is_pending());
    q.push(4).unwrap();
    drop(future);
    assert_eq!(held(), 0, "a dropped future kept its waker");
    // Completed.
    let mut future = q.transfer_async(5);
    assert!(poll_once(&mut future, &waker).is_pending());
    let mut taken = Vec::new();
    while let Ok(v) = q.try_pop() {
        taken.push(v);
    }
    taken.sort_unstable();
    assert_eq!(taken, [2, 4, 5]);
    assert_eq!(poll_once(&mut future, &waker), Poll::Ready(Ok(())));
    assert_eq!(held(), 0, "a completed future kept its waker");
}
