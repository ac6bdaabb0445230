//! `reserve` / `Reservation` and `pop_async` on both structures: the request
//! and follow-up halves of a pop, their place in the one line of waiting
//! consumers, cancellation by drop, and the give-back rule (a value
//! delivered to a handle or future that is dropped goes back into the
//! structure; nothing is lost, every value is dropped exactly once).
//!
//! Each body runs against `DualQueue` and `DualStack` (`dual_tests!`).

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::Duration;

use common::{
    block_on, join, join_scoped, poll_once, scaled, wait_for_waiters, CloseOnUnwind, CountingWaker,
    DropLog, Dual, Flavour, Order, Rng, Structure, Tracked,
};
use dualq::{PopError, PopTimeoutError};

dual_tests! {
    finished_pop_futures_release_their_wakers,
    reserve_takes_a_stored_value,
    reserve_holds_its_place_in_line,
    try_take_never_blocks_and_spends,
    dropped_waiting_reservation_cancels,
    dropped_fulfilled_reservation_gives_the_value_back,
    dropped_ready_reservation_gives_the_value_back,
    given_back_value_serves_the_next_waiter,
    reservation_after_close,
    close_while_reserved,
    value_delivered_then_closed_is_dropped_once,
    reservation_moves_to_another_thread,
    reservation_timeouts,
    pop_async_takes_stored_and_waits,
    unpolled_future_takes_no_place,
    sync_and_async_consumers_share_one_line,
    dropped_pending_future_cancels,
    dropped_fulfilled_future_gives_the_value_back,
    pop_async_after_close,
    futures_dropped_at_random_points_lose_nothing,
    reservations_dropped_at_random_points_lose_nothing,
}

/// `reserve` on a structure holding values takes one at once (in the
/// structure's order), links nothing, and the handle yields it.
fn reserve_takes_a_stored_value<F: Flavour>() {
    let q = F::new::<u32>();
    q.push(1).unwrap();
    q.push(2).unwrap();
    let first = F::ORDER.served(vec![1, 2])[0];
    let mut r = q.reserve();
    assert_eq!(q.waiting_consumers(), 0);
    assert_eq!(q.len(), 1);
    assert_eq!(r.try_take(), Some(first));
    assert_eq!(q.reserve().wait(), Ok(3 - first));
}

/// Two reservations made one after the other are served in the
/// structure's waiter order, though nobody waits on them yet.
fn reserve_holds_its_place_in_line<F: Flavour>() {
    let q = F::new::<&str>();
    let mut a = q.reserve();
    let mut b = q.reserve();
    assert_eq!(q.waiting_consumers(), 2);
    q.push("x").unwrap();
    let x_goes_to_a = F::ORDER == Order::Fifo;
    if x_goes_to_a {
        assert_eq!(a.try_take(), Some("x"));
        assert_eq!(b.try_take(), None);
    } else {
        assert_eq!(b.try_take(), Some("x"));
        assert_eq!(a.try_take(), None);
    }
    assert_eq!(q.waiting_consumers(), 1);
    q.push("y").unwrap();
    let last = if x_goes_to_a { b } else { a };
    assert_eq!(last.wait(), Ok("y"));
    assert_eq!(q.waiting_consumers(), 0);
    assert!(q.is_empty());
}

/// `try_take` answers `None` while waiting, the value once, then `None`
/// again; a spent handle's `wait` reports `PopError` and takes nothing.
fn try_take_never_blocks_and_spends<F: Flavour>() {
    let q = F::new::<u8>();
    let mut r = q.reserve();
    for _ in 0..3 {
        assert_eq!(r.try_take(), None);
    }
    q.push(9).unwrap();
    assert_eq!(r.try_take(), Some(9));
    assert_eq!(r.try_take(), None);
    q.push(10).unwrap();
    assert_eq!(r.wait(), Err(PopError), "a spent handle takes nothing more");
    assert_eq!(q.try_pop(), Ok(10));
}

/// Dropping a waiting reservation cancels it: it leaves the line, and the
/// next push stores its value.
fn dropped_waiting_reservation_cancels<F: Flavour>() {
    let q = F::new::<u8>();
    let r = q.reserve();
    assert_eq!(q.waiting_consumers(), 1);
    drop(r);
    assert_eq!(q.waiting_consumers(), 0);
    q.push(4).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q.try_pop(), Ok(4));
}

/// A value handed to a reservation that is then dropped uncollected goes
/// back into the structure.
fn dropped_fulfilled_reservation_gives_the_value_back<F: Flavour>() {
    let log = DropLog::new(1);
    let q = F::new::<Tracked>();
    let r = q.reserve();
    assert!(q.push(Tracked::new(0, &log)).is_ok());
    assert_eq!(q.len(), 0, "the value went to the reservation");
    drop(r);
    assert_eq!(log.total(), 0, "the value must not be dropped");
    assert_eq!(q.len(), 1, "the value is back");
    let back = q.try_pop().expect("the value is back");
    assert_eq!(back.id(), 0);
    drop(back);
    log.assert_each_dropped_once();
}

/// A reservation that took a stored value at once and is dropped gives the
/// value back too.
fn dropped_ready_reservation_gives_the_value_back<F: Flavour>() {
    let q = F::new::<u8>();
    q.push(1).unwrap();
    drop(q.reserve());
    assert_eq!(q.try_pop(), Ok(1));
}

/// The given-back value is an ordinary push: if another consumer waits, it
/// gets it.
fn given_back_value_serves_the_next_waiter<F: Flavour>() {
    let q = F::new::<u8>();
    let (a, b) = (q.reserve(), q.reserve());
    q.push(5).unwrap();
    // The reservation that got 5 is dropped uncollected.
    let (holder, mut other) = match F::ORDER {
        Order::Fifo => (a, b),
        Order::Lifo => (b, a),
    };
    drop(holder);
    assert_eq!(other.try_take(), Some(5), "given back to the other waiter");
    assert_eq!(q.waiting_consumers(), 0);
    assert!(q.is_empty());
}

/// On a closed, empty structure a reservation is closed at once.
fn reservation_after_close<F: Flavour>() {
    let q = F::new::<u8>();
    q.close();
    let mut r = q.reserve();
    assert_eq!(r.try_take(), None);
    assert_eq!(r.wait(), Err(PopError));
    assert_eq!(
        q.reserve().wait_timeout(Duration::from_secs(1)),
        Err(PopTimeoutError::Closed)
    );
    // Stored values are still drained first.
    let q = F::new::<u8>();
    q.push(3).unwrap();
    q.close();
    assert_eq!(q.reserve().wait(), Ok(3));
    assert_eq!(q.reserve().wait(), Err(PopError));
}

/// `close` finishes a linked reservation: `try_take` says `None` and `wait`
/// reports closed, without blocking.
fn close_while_reserved<F: Flavour>() {
    let q = F::new::<u8>();
    let mut r = q.reserve();
    let r2 = q.reserve();
    q.close();
    assert_eq!(r.try_take(), None);
    assert_eq!(r.wait(), Err(PopError));
    assert_eq!(r2.wait_timeout(Duration::MAX), Err(PopTimeoutError::Closed));
    assert_eq!(q.waiting_consumers(), 0);
}

/// A value delivered to a handle, then the structure closed, then the
/// handle dropped: the give-back push is refused, and the value is dropped
/// once, with the handle (documented).
fn value_delivered_then_closed_is_dropped_once<F: Flavour>() {
    let log = DropLog::new(1);
    let q = F::new::<Tracked>();
    let r = q.reserve();
    assert!(q.push(Tracked::new(0, &log)).is_ok());
    q.close();
    assert_eq!(log.total(), 0);
    drop(r);
    log.assert_each_dropped_once();
    assert!(q.is_empty());
}

/// A handle reserved on one thread is waited on by another (its waiter
/// registration moves with it).
fn reservation_moves_to_another_thread<F: Flavour>() {
    let q = Arc::new(F::new::<u32>());
    for round in 0..scaled(200) {
        let r = q.reserve();
        thread::scope(|s| {
            let _close = CloseOnUnwind(&*q);
            let waiter = s.spawn(move || r.wait());
            if round % 2 == 0 {
                wait_for_waiters(&*q, 1);
                thread::sleep(Duration::from_micros(100)); // let it park
            }
            q.push(round as u32).unwrap();
            assert_eq!(join_scoped(waiter), Ok(round as u32));
        });
    }
}

/// Zero, short and huge timeouts on a handle: no panic; a timeout cancels;
/// a value that arrives first is returned.
fn reservation_timeouts<F: Flavour>() {
    let q = Arc::new(F::new::<u8>());
    assert_eq!(
        q.reserve().wait_timeout(Duration::ZERO),
        Err(PopTimeoutError::Timeout)
    );
    assert_eq!(
        q.reserve().wait_timeout(Duration::from_millis(2)),
        Err(PopTimeoutError::Timeout)
    );
    assert_eq!(q.waiting_consumers(), 0);
    let r = q.reserve();
    q.push(1).unwrap();
    assert_eq!(
        r.wait_timeout(Duration::ZERO),
        Ok(1),
        "delivered before the timeout"
    );
    let r = q.reserve();
    let pusher = {
        let q = Arc::clone(&q);
        thread::spawn(move || {
            wait_for_waiters(&*q, 1);
            q.push(2).unwrap();
        })
    };
    assert_eq!(r.wait_timeout(Duration::MAX), Ok(2));
    join(pusher);
}

/// `pop_async` takes a stored value at once, waits for a push, and the
/// waiter is woken (the executor fails on a lost wake-up).
fn pop_async_takes_stored_and_waits<F: Flavour>() {
    let q = Arc::new(F::new::<usize>());
    q.push(1).unwrap();
    assert_eq!(block_on(q.pop_async()), Ok(1));
    for round in 0..scaled(200) {
        let pusher = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                wait_for_waiters(&*q, 1);
                q.push(round).unwrap();
            })
        };
        assert_eq!(block_on(q.pop_async()), Ok(round));
        join(pusher);
    }
}

/// A future that was never polled has no reservation: a push stores its
/// value.
fn unpolled_future_takes_no_place<F: Flavour>() {
    let q = F::new::<u8>();
    let future = q.pop_async();
    assert_eq!(q.waiting_consumers(), 0);
    q.push(1).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(block_on(future), Ok(1));
}

/// A blocked thread and a pending future wait in one line, served in the
/// structure's waiter order.
fn sync_and_async_consumers_share_one_line<F: Flavour>() {
    let q = F::new::<&str>();
    let (waker, woken) = CountingWaker::new();
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        let sync = s.spawn(|| q.pop());
        wait_for_waiters(&q, 1);
        let mut future = q.pop_async();
        assert_eq!(poll_once(&mut future, &waker), Poll::Pending);
        assert_eq!(q.waiting_consumers(), 2);
        q.push("first").unwrap();
        q.push("second").unwrap();
        let served = F::ORDER.served(vec!["sync", "async"]);
        let (to_sync, to_async) = if served[0] == "sync" {
            ("first", "second")
        } else {
            ("second", "first")
        };
        assert_eq!(join_scoped(sync), Ok(to_sync));
        assert!(woken.wakes() >= 1, "the future's waker was not woken");
        assert_eq!(poll_once(&mut future, &waker), Poll::Ready(Ok(to_async)));
    });
}

/// Dropping a pending future cancels its reservation.
fn dropped_pending_future_cancels<F: Flavour>() {
    let q = F::new::<u8>();
    let (waker, _) = CountingWaker::new();
    let mut future = q.pop_async();
    assert_eq!(poll_once(&mut future, &waker), Poll::Pending);
    assert_eq!(q.waiting_consumers(), 1);
    drop(future);
    assert_eq!(q.waiting_consumers(), 0);
    q.push(1).unwrap();
    assert_eq!(q.try_pop(), Ok(1));
}

/// The cancel-safety promise: a value handed to a future that is dropped
/// before it is polled again goes back into the structure (kanal and others
/// lose it here).
fn dropped_fulfilled_future_gives_the_value_back<F: Flavour>() {
    let log = DropLog::new(1);
    let q = F::new::<Tracked>();
    let (waker, woken) = CountingWaker::new();
    let mut future = q.pop_async();
    assert!(poll_once(&mut future, &waker).is_pending());
    assert!(q.push(Tracked::new(0, &log)).is_ok());
    assert_eq!(woken.wakes(), 1);
    drop(future);
    assert_eq!(log.total(), 0);
    let back = q.try_pop().expect("the value went back");
    assert_eq!(back.id(), 0);
    drop(back);
    log.assert_each_dropped_once();
}

/// `close` wakes a pending future, which then reports closed.
fn pop_async_after_close<F: Flavour>() {
    let q = F::new::<u8>();
    let (waker, woken) = CountingWaker::new();
    let mut future = q.pop_async();
    assert!(poll_once(&mut future, &waker).is_pending());
    q.close();
    assert_eq!(woken.wakes(), 1);
    assert_eq!(poll_once(&mut future, &waker), Poll::Ready(Err(PopError)));
    assert_eq!(block_on(q.pop_async()), Err(PopError));
}

/// Stress: consumers poll futures a random number of times and drop many of
/// them at random points while producers push; then the structure is closed
/// and drained. Every value is received or drained exactly once.
fn futures_dropped_at_random_points_lose_nothing<F: Flavour>() {
    dropped_at_random_points::<F>(true);
}

/// The same with `Reservation` handles: `try_take` a few times, then drop or
/// wait with a short timeout.
fn reservations_dropped_at_random_points_lose_nothing<F: Flavour>() {
    dropped_at_random_points::<F>(false);
}

fn dropped_at_random_points<F: Flavour>(futures: bool) {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = if cfg!(miri) { 2 } else { 12 };
    let per_producer = scaled(5_000);
    let total = PRODUCERS * per_producer;
    let log = DropLog::new(total);
    let q = F::new::<Tracked>();
    let received = AtomicUsize::new(0);
    let producers_done = AtomicUsize::new(0);
    thread::scope(|s| {
        let _close = CloseOnUnwind(&q);
        for p in 0..PRODUCERS {
            let (q, log, done) = (&q, &log, &producers_done);
            s.spawn(move || {
                for i in 0..per_producer {
                    assert!(q.push(Tracked::new(p * per_producer + i, log)).is_ok());
                    if i % 64 == 0 {
                        thread::yield_now();
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for c in 0..CONSUMERS {
            let (q, received, done) = (&q, &received, &producers_done);
            s.spawn(move || {
                let mut rng = Rng::new(c as u64 + 1);
                let (waker, _) = CountingWaker::new();
                while done.load(Ordering::SeqCst) < PRODUCERS {
                    let polls = rng.below(4);
                    let got = if futures {
                        let mut future = q.pop_async();
                        let mut got = None;
                        for _ in 0..polls {
                            if let Poll::Ready(r) = poll_once(&mut future, &waker) {
                                got = Some(r.expect("not closed yet"));
                                break;
                            }
                            thread::yield_now();
                        }
                        got // dropped here if still pending
                    } else {
                        let mut r = q.reserve();
                        let mut got = None;
                        for _ in 0..polls {
                            got = r.try_take();
                            if got.is_some() {
                                break;
                            }
                            thread::yield_now();
                        }
                        if got.is_none() && rng.below(4) == 0 {
                            got = r.wait_timeout(Duration::from_micros(50)).ok();
                        }
                        got
                    };
                    if got.is_some() {
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    q.close();
    let mut drained = 0;
    while q.try_pop().is_ok() {
        drained += 1;
    }
    assert_eq!(q.waiting_consumers(), 0);
    assert_eq!(
        received.load(Ordering::SeqCst) + drained,
        total,
        "values lost or duplicated"
    );
    log.assert_each_dropped_once();
}

/// A pop future that completes or is dropped drops the waker it registered
/// at once, not when its reservation's node is freed.
fn finished_pop_futures_release_their_wakers<F: Flavour>() {
    struct Count;
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {}
    }
    let q = F::new::<u8>();
    let count = Arc::new(Count);
    let waker = std::task::Waker::from(Arc::clone(&count));
    // References held by the structure: all but ours and `waker`'s.
    let held = || Arc::strong_count(&count) - 2;
    let mut future = q.pop_async();
    assert!(poll_once(&mut future, &waker).is_pending());
    assert_eq!(held(), 1, "registered");
    drop(future);
    assert_eq!(held(), 0, "a dropped pop future kept its waker");
    let mut future = q.pop_async();
    assert!(poll_once(&mut future, &waker).is_pending());
    q.push(1).unwrap();
    // The push's wake took the waker; either way none is left after Ready.
    assert_eq!(poll_once(&mut future, &waker), Poll::Ready(Ok(1)));
    assert_eq!(held(), 0, "a completed pop future kept its waker");
}
