//! Tests of the linearizability checker in `tests/lincheck/mod.rs`: hand-made
//! histories it must accept, and histories it must reject. Each rejected
//! history is checked to fail for the stated reason only: a variant fixed
//! in one detail is accepted (so the test does not pass by accident of an
//! unrelated flaw in the history).

mod lincheck;

use lincheck::{check, Builder, History, Kind, Op, Ret};
use std::time::Duration;

use Kind::{Queue, Stack};
use Op::{Close, Pop, PopTimeout, Push, TryPop};
use Ret::{CloseReturned, Closed, Empty, Pushed, Rejected, Timeout, Value};

const T0: Op = PopTimeout(Duration::ZERO);
const T1: Op = PopTimeout(Duration::from_millis(1));

#[track_caller]
fn accepts(kind: Kind, h: &History) {
    if let Err(e) = check(kind, h) {
        panic!("expected linearizable, got:\n{e}");
    }
}

#[track_caller]
fn rejects(kind: Kind, h: &History) {
    match check(kind, h) {
        Ok(_) => panic!("expected a rejection of this {kind:?} history:\n{h}"),
        Err(e) => {
            assert!(e.contains("not linearizable"), "{e}");
            println!("{e}");
        }
    }
}

/// Sequential histories: FIFO for the queue, LIFO for the stack, and the
/// close rules.
#[test]
fn sequential_queue_and_stack() {
    for (kind, first) in [(Queue, 1), (Stack, 2)] {
        let mut b = Builder::new();
        b.call(0, Push(1), Pushed);
        b.call(0, Push(2), Pushed);
        b.call(0, Pop, Value(first));
        b.call(0, TryPop, Value(3 - first));
        b.call(0, TryPop, Empty);
        b.call(0, T0, Timeout);
        b.call(0, T1, Timeout);
        b.call(0, Push(3), Pushed);
        b.call(0, Close, CloseReturned(true));
        b.call(0, Close, CloseReturned(false));
        b.call(0, Push(4), Rejected(4));
        b.call(0, T1, Value(3));
        b.call(0, Pop, Closed);
        b.call(0, TryPop, Closed);
        b.call(0, T0, Closed);
        accepts(kind, &b.build());
    }
}

/// Overlapping pushes may linearize either way round.
#[test]
fn overlapping_pushes_either_order() {
    for kind in [Queue, Stack] {
        for first in [1, 2] {
            let mut b = Builder::new();
            let p1 = b.invoke(0, Push(1));
            let p2 = b.invoke(1, Push(2));
            b.ret(p2, Pushed).ret(p1, Pushed);
            b.call(0, TryPop, Value(first));
            b.call(1, TryPop, Value(3 - first));
            accepts(kind, &b.build());
        }
    }
}

/// A pop that waits and is fulfilled by a push that runs inside its
/// interval, even after a third party saw the structure empty.
#[test]
fn waiter_fulfilled_by_concurrent_push() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let pop = b.invoke(0, Pop);
        b.call(1, TryPop, Empty);
        b.call(1, Push(7), Pushed);
        b.call(1, TryPop, Empty); // 7 went to the waiter
        b.ret(pop, Value(7));
        accepts(kind, &b.build());
    }
}

/// A timed pop that times out while a push runs: the cancel comes before
/// the push, so the value is stored.
#[test]
fn timed_pop_cancelled() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let t = b.invoke(0, T1);
        b.waiting(t);
        b.call(1, Push(5), Pushed);
        b.ret(t, Timeout);
        b.call(1, TryPop, Value(5));
        accepts(kind, &b.build());
    }
}

/// A timed pop cancelled among other waiters: the push skips it.
#[test]
fn cancelled_waiter_skipped() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let a = b.invoke(0, Pop);
        b.waiting(a);
        let t = b.invoke(1, T1);
        b.waiting(t);
        let c = b.invoke(2, Pop);
        b.waiting(c);
        let p = b.invoke(3, Push(1));
        b.ret(t, Timeout);
        b.ret(p, Pushed);
        b.call(3, Push(2), Pushed);
        let (first, second) = match kind {
            Queue => (a, c),
            Stack => (c, a),
        };
        b.ret(first, Value(1)).ret(second, Value(2));
        accepts(kind, &b.build());
    }
}

/// Two marked waiters served in order: oldest first (queue), newest first
/// (stack).
#[test]
fn waiters_served_in_order() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let a = b.invoke(0, Pop);
        b.waiting(a);
        let c = b.invoke(1, Pop);
        b.waiting(c);
        b.call(2, Push(1), Pushed);
        b.call(2, Push(2), Pushed);
        let (first, second) = match kind {
            Queue => (a, c),
            Stack => (c, a),
        };
        b.ret(second, Value(2)).ret(first, Value(1));
        accepts(kind, &b.build());
    }
}

/// close racing a push: the push may land before (and be drained) or fail.
#[test]
fn close_races_push() {
    for kind in [Queue, Stack] {
        for landed in [false, true] {
            let mut b = Builder::new();
            let p = b.invoke(0, Push(1));
            b.call(1, Close, CloseReturned(true));
            b.ret(p, if landed { Pushed } else { Rejected(1) });
            if landed {
                b.call(1, Pop, Value(1));
            }
            b.call(1, TryPop, Closed);
            accepts(kind, &b.build());
        }
    }
}

/// close racing waiting pops: the waiters get Closed, or a racing push
/// serves one first.
#[test]
fn close_races_pops() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let a = b.invoke(0, Pop);
        let t = b.invoke(1, T1);
        let p = b.invoke(2, Push(3));
        b.call(3, Close, CloseReturned(true));
        b.ret(p, Pushed).ret(t, Closed).ret(a, Value(3));
        accepts(kind, &b.build());
    }
}

/// Without a mark, two overlapping waiting pops may have requested in
/// either order: the checker cannot (and must not) reject a "wrong" service
/// order. The same history with marks that fix the order is rejected. This
/// is why the real-thread and loom tests record marks when they know a pop
/// is waiting.
#[test]
fn waiter_order_needs_a_mark() {
    for kind in [Queue, Stack] {
        let build = |marks: bool| {
            let mut b = Builder::new();
            let a = b.invoke(0, Pop);
            b.call(2, TryPop, Empty);
            if marks {
                b.waiting(a);
            }
            let c = b.invoke(1, Pop);
            b.call(2, TryPop, Empty);
            if marks {
                b.waiting(c);
            }
            b.call(2, Push(1), Pushed);
            b.call(2, Push(2), Pushed);
            // The wrong order: queue serves the newest, stack the oldest.
            let (first, second) = match kind {
                Queue => (c, a),
                Stack => (a, c),
            };
            b.ret(first, Value(1)).ret(second, Value(2));
            b.build()
        };
        accepts(kind, &build(false));
        rejects(kind, &build(true));
    }
}

// ---- rejections ----

/// Values out of FIFO order (queue) or LIFO order (stack).
#[test]
fn rejects_wrong_value_order() {
    for (kind, wrong) in [(Queue, 2), (Stack, 1)] {
        let build = |got: u64| {
            let mut b = Builder::new();
            b.call(0, Push(1), Pushed);
            b.call(1, Push(2), Pushed);
            b.call(2, Pop, Value(got));
            b.call(2, TryPop, Value(3 - got));
            b.build()
        };
        rejects(kind, &build(wrong));
        accepts(kind, &build(3 - wrong));
    }
}

/// The wrong order also when a pop overlaps the pushes but starts after the
/// first push returned (queue) / the second returned (stack).
#[test]
fn rejects_wrong_order_with_overlap() {
    let mut b = Builder::new();
    b.call(0, Push(1), Pushed);
    let pop = b.invoke(1, Pop);
    b.call(0, Push(2), Pushed);
    b.ret(pop, Value(2));
    b.call(1, TryPop, Value(1));
    rejects(Queue, &b.build());
    // For the stack, the pop may take 2 if it linearizes after push(2).
    accepts(Stack, &b.build());
}

/// A value delivered twice.
#[test]
fn rejects_value_delivered_twice() {
    for kind in [Queue, Stack] {
        for second in [Pop, TryPop, T1] {
            let build = |dup: bool| {
                let mut b = Builder::new();
                let a = b.invoke(0, Pop);
                let c = b.invoke(1, second);
                b.call(2, Push(1), Pushed);
                b.call(2, Push(2), Pushed);
                b.ret(a, Value(1)).ret(c, Value(if dup { 1 } else { 2 }));
                b.build()
            };
            rejects(kind, &build(true));
            accepts(kind, &build(false));
        }
    }
}

/// A value lost: pushed (the push returned), never popped, while a later
/// pop reports Empty, Closed, or Timeout.
#[test]
fn rejects_lost_value() {
    for kind in [Queue, Stack] {
        for (later, claim) in [(TryPop, Empty), (T0, Timeout), (T1, Timeout)] {
            let mut b = Builder::new();
            b.call(0, Push(1), Pushed);
            b.call(1, later, claim);
            rejects(kind, &b.build());
        }
        // Lost through a close: pop reports Closed with 1 still stored.
        let build = |pop_first: bool| {
            let mut b = Builder::new();
            b.call(0, Push(1), Pushed);
            if pop_first {
                b.call(1, TryPop, Value(1));
            }
            b.call(0, Close, CloseReturned(true));
            b.call(1, Pop, Closed);
            b.build()
        };
        rejects(kind, &build(false));
        accepts(kind, &build(true));
        // Lost to a waiter that timed out although the push had to serve it
        // (it was seen waiting before the push started, and nobody else got
        // the value).
        let build = |value_found: bool| {
            let mut b = Builder::new();
            let t = b.invoke(0, T1);
            b.waiting(t);
            b.call(1, Push(1), Pushed);
            b.ret(t, Timeout);
            b.call(1, TryPop, if value_found { Value(1) } else { Empty });
            b.build()
        };
        rejects(kind, &build(false));
        accepts(kind, &build(true));
    }
}

/// Two waiters seen waiting in order, then two pushes that serve them the
/// wrong way round.
#[test]
fn rejects_waiter_served_out_of_order() {
    for kind in [Queue, Stack] {
        let build = |right: bool| {
            let mut b = Builder::new();
            let a = b.invoke(0, Pop);
            b.waiting(a);
            let c = b.invoke(1, T1);
            b.waiting(c);
            b.call(2, Push(1), Pushed);
            b.call(2, Push(2), Pushed);
            let queue_order = (kind == Queue) == right;
            let (first, second) = if queue_order { (a, c) } else { (c, a) };
            b.ret(first, Value(1)).ret(second, Value(2));
            b.build()
        };
        rejects(kind, &build(false));
        accepts(kind, &build(true));
    }
}

/// A pop reports Closed while a value pushed before the close is stored,
/// also when the pop was already waiting... which it cannot be (the value
/// was stored, so no waiter).
#[test]
fn rejects_closed_with_value_stored() {
    for kind in [Queue, Stack] {
        for pop in [Pop, TryPop, T0, T1] {
            let mut b = Builder::new();
            b.call(0, Push(1), Pushed);
            let c = b.invoke(1, Close);
            let p = b.invoke(2, pop);
            b.ret(c, CloseReturned(true)).ret(p, Closed);
            rejects(kind, &b.build());
        }
    }
}

/// A push succeeded after a close had returned; or a close that returned
/// `true` twice; or a push rejected while open.
#[test]
fn rejects_close_violations() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        b.call(0, Close, CloseReturned(true));
        b.call(1, Push(1), Pushed);
        rejects(kind, &b.build());

        let mut b = Builder::new();
        let c = b.invoke(0, Close);
        b.call(1, Close, CloseReturned(true));
        b.ret(c, CloseReturned(true));
        rejects(kind, &b.build());

        let mut b = Builder::new();
        b.call(1, Push(1), Rejected(1));
        rejects(kind, &b.build());

        // A waiter woken with Closed although no close happened.
        let mut b = Builder::new();
        b.call(1, Pop, Closed);
        rejects(kind, &b.build());
    }
}

/// Results the specification never produces: a blocking pop timing out, a
/// value nobody pushed, try_pop waiting for a push that starts after it
/// returned, a push handing back another value.
#[test]
fn rejects_impossible_results() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        b.call(0, Pop, Timeout);
        rejects(kind, &b.build());

        let mut b = Builder::new();
        let p = b.invoke(0, Pop);
        b.call(1, Push(1), Pushed);
        b.ret(p, Value(2));
        rejects(kind, &b.build());

        let mut b = Builder::new();
        b.call(0, TryPop, Value(1));
        b.call(1, Push(1), Pushed);
        rejects(kind, &b.build());

        let mut b = Builder::new();
        b.call(0, Close, CloseReturned(true));
        b.call(1, Push(1), Rejected(2));
        rejects(kind, &b.build());
    }
}

/// A waiter that got Closed from a close although a push served it... no:
/// a waiter seen waiting, then a push that completes, then a close, and the
/// waiter reports Closed: the push had to serve it.
#[test]
fn rejects_waiter_closed_after_push_served_it() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let w = b.invoke(0, Pop);
        b.waiting(w);
        b.call(1, Push(1), Pushed);
        b.call(1, Close, CloseReturned(true));
        b.ret(w, Closed);
        rejects(kind, &b.build());
    }
}

/// The error names the history, one line per event.
#[test]
fn error_shows_the_history() {
    let mut b = Builder::new();
    b.call(0, Push(1), Pushed);
    b.call(1, Push(2), Pushed);
    b.call(0, Pop, Value(2));
    let e = check(Queue, &b.build()).unwrap_err();
    assert!(e.contains("push(1) ..."), "{e}");
    assert!(e.contains("... -> Ok(2)"), "{e}");
    assert!(e.contains("#2 cannot return Ok(2)"), "{e}");
}

// ---------------------------------------------------------------------------
// Transfers (issue 6): an offer is a request mirrored; its value joins the
// stored ones, and a consumer's take is the transfer's fulfilment.
// ---------------------------------------------------------------------------

use Op::{Transfer, TransferTimeout, TryTransfer};
use Ret::{NoConsumer, Withdrawn};

const X1: Op = TransferTimeout(7, Duration::from_millis(1));

/// A transfer that waits, taken by a pop inside its interval; a timed one
/// withdrawn; try_transfer with and without a consumer; close handing a
/// waiting transfer its value back.
#[test]
fn transfers_accepted() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let t = b.invoke(0, Transfer(1));
        b.call(1, TryPop, Empty); // before the offer step
        b.call(1, Pop, Value(1));
        b.ret(t, Pushed);
        b.call(0, X1, Withdrawn(7));
        b.call(0, TryTransfer(2), NoConsumer(2));
        let w = b.invoke(1, Pop);
        b.waiting(w);
        b.call(0, TryTransfer(3), Pushed);
        b.ret(w, Value(3));
        let t = b.invoke(0, Transfer(4));
        b.call(1, Close, CloseReturned(true));
        b.ret(t, Rejected(4));
        b.call(0, X1, Rejected(7));
        b.call(0, TryTransfer(5), Rejected(5));
        accepts(kind, &b.build());
    }
}

/// After the close, a waiting transfer may still be taken (until its
/// producer learns of the close): accepted.
#[test]
fn transfer_taken_after_close_accepted() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let t = b.invoke(0, Transfer(1));
        b.call(1, Push(9), Pushed);
        b.call(1, Close, CloseReturned(true));
        let first = if kind == Queue { 9 } else { 1 };
        b.call(1, TryPop, Value(first));
        b.call(1, TryPop, Value(10 - first));
        b.ret(t, Pushed);
        accepts(kind, &b.build());
    }
}

/// Offers and stored values are one FIFO sequence in the queue: push(1)
/// completes, then transfer(2) waits; pops get 1 then 2. Getting 2 first
/// would need the offer before the push, which completed first: rejected.
/// (The stack may serve either: the first pop can precede the offer.)
#[test]
fn rejects_offer_out_of_order() {
    for (kind, order, ok) in [
        (Queue, [1, 2], true),
        (Queue, [2, 1], false),
        (Stack, [1, 2], true),
        (Stack, [2, 1], true),
    ] {
        let mut b = Builder::new();
        b.call(0, Push(1), Pushed);
        let t = b.invoke(0, Transfer(2));
        b.call(1, Pop, Value(order[0]));
        b.call(1, Pop, Value(order[1]));
        b.ret(t, Pushed);
        if ok {
            accepts(kind, &b.build());
        } else {
            rejects(kind, &b.build());
        }
    }
}

/// A transfer that returns Ok with no consumer taking its value, or whose
/// value is taken only after it returned, is rejected.
#[test]
fn rejects_transfer_without_taker() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        b.call(0, Transfer(1), Pushed);
        b.call(0, TryPop, Empty);
        rejects(kind, &b.build());

        let mut b = Builder::new();
        b.call(0, Transfer(1), Pushed);
        b.call(1, TryPop, Value(1));
        rejects(kind, &b.build());
        // Fixed: the pop overlaps the transfer.
        let mut b = Builder::new();
        let t = b.invoke(0, Transfer(1));
        b.call(1, TryPop, Value(1));
        b.ret(t, Pushed);
        accepts(kind, &b.build());
    }
}

/// A value both withdrawn (timed out) and taken: rejected.
#[test]
fn rejects_transfer_value_withdrawn_and_taken() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let t = b.invoke(0, X1);
        b.call(1, TryPop, Value(7));
        b.ret(t, Withdrawn(7));
        rejects(kind, &b.build());
        // Fixed: the pop got nothing.
        let mut b = Builder::new();
        let t = b.invoke(0, X1);
        b.call(1, TryPop, Empty);
        b.ret(t, Withdrawn(7));
        accepts(kind, &b.build());
    }
}

/// try_transfer says NoConsumer while a consumer is provably waiting (marked
/// before, served after): rejected. Closed(v) from a transfer on an open
/// structure: rejected.
#[test]
fn rejects_transfer_false_failures() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let w = b.invoke(1, Pop);
        b.waiting(w);
        b.call(0, TryTransfer(1), NoConsumer(1));
        b.call(0, Push(2), Pushed);
        b.ret(w, Value(2));
        rejects(kind, &b.build());

        let mut b = Builder::new();
        b.call(0, Transfer(1), Rejected(1));
        rejects(kind, &b.build());
        let mut b = Builder::new();
        b.call(0, X1, Rejected(7));
        rejects(kind, &b.build());
    }
}

// ---------------------------------------------------------------------------
// Reservation handles: `reserve()` and its follow-up, recorded as one
// composite operation each. A handle that holds a value (taken at once, or
// fulfilled) when it is dropped gives it back with a push of its own.
// ---------------------------------------------------------------------------

use lincheck::Handle::{self, Linked, Ready};
use Op::{ReserveDrop, ReserveTryTake, ReserveWait, ReserveWaitTimeout};
use Ret::{Dropped, NotYet};

/// reserve, then drop at once.
const RD: Op = ReserveDrop(Duration::ZERO);
/// reserve, one try_take, then drop.
const RT: Op = ReserveTryTake(Duration::ZERO);
/// The handle state of a reservation finished by close (or closed at once).
const SHUT: Handle = Handle::Closed;

/// One thread: every outcome of `reserve` and its follow-ups. A value taken
/// at once and dropped goes back: at the back of the queue (behind 2), on
/// top of the stack; once closed, the give-back is refused and the value is
/// gone.
#[test]
fn reservations_sequential() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        b.call(0, RT, NotYet(Linked)); // waits, then cancelled by the drop
        b.call(0, RD, Dropped(Linked));
        b.call(0, Push(1), Pushed);
        b.call(0, RD, Dropped(Ready)); // takes 1, gives it back
        b.call(0, TryPop, Value(1));
        b.call(0, Push(1), Pushed);
        b.call(0, Push(2), Pushed);
        b.call(0, RD, Dropped(Ready)); // queue: [2, 1]; stack: [1, 2]
        b.call(0, TryPop, Value(2));
        b.call(0, RT, Value(1));
        b.call(0, ReserveWaitTimeout(Duration::ZERO), Timeout);
        b.call(0, ReserveWaitTimeout(Duration::from_millis(1)), Timeout);
        b.call(0, Push(3), Pushed);
        b.call(0, ReserveWait, Value(3));
        b.call(0, Push(4), Pushed);
        b.call(0, Close, CloseReturned(true));
        b.call(0, RD, Dropped(Ready)); // takes 4; the give-back is refused
        b.call(0, TryPop, Closed);
        b.call(0, RT, NotYet(SHUT));
        b.call(0, RD, Dropped(SHUT));
        b.call(0, ReserveWait, Closed);
        b.call(0, ReserveWaitTimeout(Duration::from_millis(1)), Closed);
        accepts(kind, &b.build());
    }
}

/// A reservation fulfilled while it is held (the try_pop in between proves
/// the push handed its value over), then dropped: the value is given back
/// and popped later by another thread. The same history where that later
/// try_pop sees Empty lost the value on the drop (the structure stayed
/// open): rejected.
#[test]
fn dropped_fulfilled_reservation_gives_back() {
    for kind in [Queue, Stack] {
        for dropping in [RD, RT] {
            let build = |found: bool| {
                let mut b = Builder::new();
                let r = b.invoke(0, dropping);
                b.waiting(r);
                b.call(1, Push(1), Pushed);
                b.call(1, TryPop, Empty); // 1 went to the reservation
                let ret = if dropping == RD {
                    Dropped(Linked)
                } else {
                    NotYet(Linked) // its try_take ran before the push
                };
                b.ret(r, ret);
                b.call(2, TryPop, if found { Value(1) } else { Empty });
                b.build()
            };
            accepts(kind, &build(true));
            rejects(kind, &build(false));
        }
    }
}

/// A value given back after a close is refused and dropped with the handle:
/// a later pop reports Closed. If the close comes only after the drop
/// returned, the value was stored again and a pop must get it.
#[test]
fn given_back_value_refused_after_close() {
    for kind in [Queue, Stack] {
        let build = |close_while_held: bool| {
            let mut b = Builder::new();
            let r = b.invoke(0, RD);
            b.waiting(r);
            b.call(1, Push(1), Pushed);
            b.call(1, TryPop, Empty);
            if close_while_held {
                b.call(1, Close, CloseReturned(true));
            }
            b.ret(r, Dropped(Linked));
            if !close_while_held {
                b.call(1, Close, CloseReturned(true));
            }
            b.call(2, TryPop, Closed);
            b.build()
        };
        accepts(kind, &build(true));
        rejects(kind, &build(false));
    }
}

/// try_take returns a value pushed while the reservation was held; the
/// push must overlap it.
#[test]
fn try_take_gets_concurrent_push() {
    for kind in [Queue, Stack] {
        let build = |overlap: bool| {
            let mut b = Builder::new();
            let r = b.invoke(0, RT);
            b.call(1, TryPop, Empty);
            if overlap {
                b.call(1, Push(5), Pushed);
            }
            b.ret(r, Value(5));
            if !overlap {
                b.call(1, Push(5), Pushed);
            }
            b.call(1, TryPop, if overlap { Empty } else { Value(5) });
            b.build()
        };
        accepts(kind, &build(true));
        rejects(kind, &build(false));
    }
}

/// try_take saw nothing yet, a push served the reservation before the drop,
/// and the value shows up stored afterwards. Getting the value at the front
/// (queue) / top (stack) matters: a value given back goes behind the ones
/// stored meanwhile in the queue, on top of them in the stack.
#[test]
fn not_yet_then_value_stored_after_drop() {
    for kind in [Queue, Stack] {
        let mut b = Builder::new();
        let r = b.invoke(0, RT);
        b.waiting(r);
        b.call(1, Push(6), Pushed);
        b.call(1, TryPop, Empty); // 6 went to the reservation
        b.call(1, Push(7), Pushed); // stored
        b.ret(r, NotYet(Linked)); // the drop gives 6 back
        let (first, second) = match kind {
            Queue => (7, 6),
            Stack => (6, 7),
        };
        b.call(2, TryPop, Value(first));
        b.call(2, TryPop, Value(second));
        accepts(kind, &b.build());
    }
}

/// A give-back is a push: it serves a consumer that waits by then (marked
/// before the drop returned) instead of being stored.
#[test]
fn give_back_serves_a_waiter() {
    for kind in [Queue, Stack] {
        for waiter in [Pop, RT] {
            let mut b = Builder::new();
            let r = b.invoke(0, RD);
            b.waiting(r);
            b.call(1, Push(1), Pushed);
            b.call(1, TryPop, Empty); // 1 went to r
            let p = b.invoke(2, waiter);
            b.waiting(p);
            b.ret(r, Dropped(Linked));
            b.ret(p, Value(1));
            b.call(1, TryPop, Empty);
            accepts(kind, &b.build());
        }
    }
}

/// A reservation takes a waiting transfer's value at once (`Ready`; the
/// transfer returns Ok) or, linked before the offer, is handed the value by
/// the transfer (`Linked`); either way the drop gives the value back, and it
/// is stored afterwards. Missing afterwards: rejected.
#[test]
fn reservation_takes_a_transfer_and_gives_it_back() {
    for kind in [Queue, Stack] {
        for handle in [Ready, Linked] {
            let build = |found: bool| {
                let mut b = Builder::new();
                let t = b.invoke(0, Transfer(1));
                b.call(1, TryPop, Empty);
                b.call(1, RD, Dropped(handle));
                b.ret(t, Pushed);
                b.call(1, TryPop, if found { Value(1) } else { Empty });
                b.build()
            };
            accepts(kind, &build(true));
            rejects(kind, &build(false));
        }
    }
}

/// Reservations and blocking pops wait in one line: served oldest first
/// (queue), newest first (stack). With marks that prove the request order,
/// the wrong service order is rejected.
#[test]
fn rejects_reservation_served_out_of_order() {
    for kind in [Queue, Stack] {
        for (first_op, second_op) in [(RT, RT), (RT, Pop), (Pop, RT)] {
            let build = |right: bool| {
                let mut b = Builder::new();
                let a = b.invoke(0, first_op);
                b.waiting(a);
                let c = b.invoke(1, second_op);
                b.waiting(c);
                b.call(2, Push(1), Pushed);
                b.call(2, Push(2), Pushed);
                let queue_order = (kind == Queue) == right;
                let (got_1, got_2) = if queue_order { (a, c) } else { (c, a) };
                b.ret(got_1, Value(1)).ret(got_2, Value(2));
                b.build()
            };
            rejects(kind, &build(false));
            accepts(kind, &build(true));
        }
    }
}

/// A value given back by a dropped handle, then popped twice.
#[test]
fn rejects_given_back_value_popped_twice() {
    for kind in [Queue, Stack] {
        for via_request in [false, true] {
            let build = |twice: bool| {
                let mut b = Builder::new();
                if via_request {
                    let r = b.invoke(0, RD);
                    b.waiting(r);
                    b.call(1, Push(1), Pushed);
                    b.call(1, TryPop, Empty);
                    b.ret(r, Dropped(Linked));
                } else {
                    b.call(1, Push(1), Pushed);
                    b.call(0, RD, Dropped(Ready));
                }
                let p = b.invoke(2, Pop);
                b.call(1, TryPop, Value(1));
                b.call(1, Push(2), Pushed);
                b.ret(p, Value(if twice { 1 } else { 2 }));
                b.build()
            };
            rejects(kind, &build(true));
            accepts(kind, &build(false));
        }
    }
}

/// A give-back lands at the back of the queue and on top of the stack. 1
/// and 2 are stored; a reservation takes one at once and is dropped while
/// 3 is pushed. Queue: it took 1, which comes back behind 2 (before or
/// after 3): pops 2, 1, 3 or 2, 3, 1; 1, 2, 3 would need it put back in
/// front. Stack: it took 2 (or 3, if it reserved after the push) and puts
/// it back on top: pops 2, 3, 1 or 3, 2, 1; 3, 1, 2 would need 2 put back
/// under 1. The wrong ends are rejected.
#[test]
fn rejects_give_back_at_the_wrong_end() {
    for kind in [Queue, Stack] {
        let (right, wrong): (&[[u64; 3]], [u64; 3]) = match kind {
            Queue => (&[[2, 1, 3], [2, 3, 1]], [1, 2, 3]),
            Stack => (&[[2, 3, 1], [3, 2, 1]], [3, 1, 2]),
        };
        let build = |order: [u64; 3]| {
            let mut b = Builder::new();
            b.call(1, Push(1), Pushed);
            b.call(1, Push(2), Pushed);
            let r = b.invoke(0, RD);
            b.call(1, Push(3), Pushed);
            b.ret(r, Dropped(Ready));
            for v in order {
                b.call(2, TryPop, Value(v));
            }
            b.build()
        };
        for &order in right {
            accepts(kind, &build(order));
        }
        rejects(kind, &build(wrong));
    }
}

/// The handle's state must match the structure: Ready only if a value was
/// there to take, Linked only if none was (and it is open), NotYet only if
/// nothing had arrived (a value stored before `reserve` is taken at once),
/// Closed only once closed.
#[test]
fn rejects_wrong_handle_state() {
    for kind in [Queue, Stack] {
        // (1 stored first, the operation, its result, the try_pop after it,
        // accepted)
        for (stored, op, ret, after, ok) in [
            (true, RD, Dropped(Ready), Value(1), true),
            (false, RD, Dropped(Ready), Empty, false),
            (false, RD, Dropped(Linked), Empty, true),
            (true, RD, Dropped(Linked), Value(1), false),
            (true, RT, Value(1), Empty, true),
            (true, RT, NotYet(Linked), Value(1), false),
            (false, RT, NotYet(Linked), Empty, true),
            (false, RD, Dropped(SHUT), Empty, false),
            (false, RT, NotYet(SHUT), Empty, false),
        ] {
            let mut b = Builder::new();
            if stored {
                b.call(1, Push(1), Pushed);
            }
            b.call(0, op, ret);
            b.call(1, TryPop, after);
            if ok {
                accepts(kind, &b.build());
            } else {
                rejects(kind, &b.build());
            }
        }
    }
}

/// A reservation that returned (its handle dropped while it waited) is
/// cancelled: a later push stores its value, which a pop then finds.
#[test]
fn rejects_value_delivered_to_a_dropped_reservation() {
    for kind in [Queue, Stack] {
        for (op, ret) in [(RD, Dropped(Linked)), (RT, NotYet(Linked))] {
            let build = |found: bool| {
                let mut b = Builder::new();
                b.call(0, op, ret);
                b.call(1, Push(1), Pushed);
                b.call(1, TryPop, if found { Value(1) } else { Empty });
                b.build()
            };
            rejects(kind, &build(false));
            accepts(kind, &build(true));
        }
    }
}

/// A reservation finished by close reports NotYet(Closed); a reservation
/// that waited while the structure stayed open cannot, and one whose
/// try_take saw a waiting reservation cannot have been finished by a close
/// that completed before it started.
#[test]
fn reservation_and_close() {
    for kind in [Queue, Stack] {
        let build = |closed: bool, ret: Ret| {
            let mut b = Builder::new();
            let r = b.invoke(0, RT);
            b.waiting(r);
            if closed {
                b.call(1, Close, CloseReturned(true));
            }
            b.ret(r, ret);
            b.build()
        };
        accepts(kind, &build(true, NotYet(SHUT)));
        accepts(kind, &build(true, NotYet(Linked))); // try_take before close
        accepts(kind, &build(false, NotYet(Linked)));
        rejects(kind, &build(false, NotYet(SHUT)));
        rejects(kind, &build(true, Value(1)));

        let mut b = Builder::new();
        b.call(1, Close, CloseReturned(true));
        b.call(0, RT, NotYet(Linked));
        rejects(kind, &b.build());
    }
}
