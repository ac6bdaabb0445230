//! [`DualStack`]: the lock-free dual stack of Scherer & Scott, "Nonblocking
//! concurrent data structures with condition synchronization" (DISC 2004),
//! built on Treiber's stack ("Systems programming: coping with parallelism",
//! IBM RJ 5118, 1986), with the timeouts and the unsplicing of cancelled nodes
//! of the `TransferStack` in Scherer, Lea & Scott's synchronous queues
//! (PPoPP 2006). Memory is reclaimed with `crossbeam-epoch`.
//!
//! # Shape
//!
//! `top` points at the newest item. The stack holds data only (stored
//! values and offers), or reservations (live or dead) only, and while a push
//! is handing its value to a reservation, one *fulfilling* node sits on top
//! of the reservations.
//!
//! * `push` on data (or on nothing) pushes a *cell* holding its value. On reservations it
//!   pushes a fulfilling node `f` carrying its value over them; `f` is then
//!   completed by [`help`](DualStack::help), which anyone who meets `f` on top
//!   runs before doing its own work: fulfil `f.next` by one CAS on that
//!   reservation's own slot ([`Slot::fulfil_with`]), then pop both.
//! * `pop` on data pops the top item and takes its value. On reservations (or
//!   on nothing) it pushes a reservation, unpins, and waits on its slot. So
//!   values come out newest first, and a push serves the newest waiter. (A
//!   blocking `pop` first polls with `try_pop`s for one spin phase; `reserve`
//!   and `pop_async` do not.)
//! * `transfer` behaves like `push`, except that on data (or on nothing) it
//!   pushes an *offer*: a data node whose producer waits on its slot until a
//!   consumer takes the value (see "Offers" below).
//!
//! # Items: cells and nodes
//!
//! A stored value lives in a [`Cell`]: the value and its `next` link,
//! bump-allocated from blocks shared by all pushes ([`crate::cells`], which
//! has the cell's state table), so a push allocates nothing of its own and a
//! pop frees nothing of its own. Everything else is a [`Node`]: fulfilling
//! nodes, reservations and offers, which carry a slot (state word, value,
//! waiter) and are reclaimed one by one. A pointer to an item (`top`, a
//! cell's `next`, an offer's `next`) says which by its `CELL` tag
//! ([`Item::of`]); only data lies under a cell, so a cell's `next` is null,
//! a cell or an offer, and so is an offer's. Cells are pushed and popped
//! exactly like the data nodes of Treiber's stack (the `top` CAS publishes,
//! the `top` CAS removes and makes the winner the value's only taker) and
//! are never reused while anyone pinned may read them (a cell is reused
//! only when its block is recycled, after the epoch's grace period, once
//! its last cell died).
//!
//! # Node states
//!
//! A node's kind is fixed before it is published. Its slot's state (see
//! [`crate::slot`]) and its place in the stack determine who may touch it:
//!
//! | kind        | slot state             | value                         | where                                   | who moves it on |
//! |-------------|------------------------|-------------------------------|-----------------------------------------|-----------------|
//! | fulfilling  | `DATA`                 | there until a claim of `f.next` moves it out, or the owner takes it back | only on top (nothing is ever pushed over it) | helpers: claim `f.next` and pop both; unlink a dead `f.next`; pop `f` alone when `f.next` is null. The owner alone takes the value back, after `f` left with `f.next` null |
//! | reservation | `WAITING`              | none                          | anywhere in an all-reservation stack    | a helper of the fulfilling node over it (claim, `-> BUSY`); its waiter (cancel); `close` |
//! | reservation | `BUSY`, `FULFILLED`    | being written / the waiter's  | only as `f.next` of the fulfilling node on top, until both are popped | the claimer writes the value; the winner of the `top` CAS that pops `f` retires both |
//! | reservation | `CANCELLED`, `CLOSED`  | none                          | anywhere, until removed                 | popped off the top, unlinked from under `f`, or unspliced from its predecessor; the winner retires it. Under a sealed top they stay until the stack is dropped |
//! | offer       | `OFFERED`              | the producer's                | anywhere in an all-data stack           | a consumer that saw it on top: claim, `-> TAKEN`; its producer (withdraw, `-> CANCELLED`); `close` (`-> CLOSED`) |
//! | offer       | `TAKEN`, `CANCELLED`, `CLOSED` | moved out (to the consumer, or back to the producer) | anywhere, until it reaches the top | popped off the top (keeping a seal) by whoever meets it there; the winner retires it. Never unspliced from below |
//!
//! A reservation has two references (the stack's and its waiter's), an offer
//! too (the stack's and its producer's); fulfilling nodes have only the
//! stack's. (Fulfilling nodes are the only data nodes left: stored values
//! are cells.)
//!
//! # A reservation's `next` word
//!
//! | `next`                | meaning                                                   | set by |
//! |-----------------------|-----------------------------------------------------------|--------|
//! | null                  | bottom of the stack                                       | the push (never changes after) |
//! | `n`                   | linked to `n` (a reservation: nothing but reservations lies under one) | the push; an unsplice of a dead `n'` (CAS from `n'`) |
//! | `n` + `MARK` (frozen) | this node is leaving, or was dead and tried to; `next` never changes again | [`freeze`] |
//!
//! A cell's (and an offer's) `next` is fixed at its push (nothing is
//! ever removed from under a cell or an offer). A fulfilling node's `next` is never frozen; it changes
//! only by unlinking a dead reservation (CAS from the dead node) and is final
//! once the node is off the top (below).
//!
//! # Leaving the stack
//!
//! An item leaves the stack by exactly one successful CAS. The winner of a
//! cell's takes its value (the cell dies, see [`crate::cells`]); the winner
//! of a node's retires it (exactly once; debug and loom builds assert it):
//! 1. a `top` CAS popping it (a cell; a dead offer; a dead reservation; a fulfilling node
//!    together with the reservation it matched; a fulfilling node alone);
//! 2. a CAS `p.next: c -> c.next` unlinking a dead reservation `c` from its
//!    predecessor `p` (a reservation, or the fulfilling node on top).
//!
//! Before a reservation leaves (either way), its `next` is frozen if it is
//! not null. The unsplice CAS in (2) expects an unfrozen `p.next`, so:
//! *a reservation whose `next` is non-null and unfrozen is in the stack.* (It
//! is frozen before it leaves, a null `next` never changes, and frozen is
//! final.) Hence when (2) succeeds with `p` a reservation, `p` was in the
//! stack and `c` was its successor there, so the CAS removed `c` from the
//! live stack. Without the freeze, an unsplice through a `p` that had already
//! left would "remove" `c` while `c` is still linked from `p`'s old
//! predecessor, and `c` would be freed while reachable. For `p` the
//! fulfilling node, (2) expects a *dead* `c == f.next`, and `f` is never off
//! the top with a dead `f.next` (it leaves only with `f.next` null or
//! claimed, and both are final), so `f` is on top and the CAS removes `c`
//! from the live stack. A removed node is never linked again: nodes are
//! pushed once, and no CAS installs a pointer to a removed node (its
//! successor chain is frozen).
//!
//! The same facts keep epoch reads sound: a thread pinned at time `p` that
//! reads `x.next == y` from an item `x` it reached from `top` gets a `y` that
//! was in the stack after `p` (when `x` left, `y` was its frozen or final
//! successor, still in the stack), so `y` is not freed while it is pinned:
//! a node is retired after it leaves, a cell's block after its last cell
//! left.
//!
//! # Offers
//!
//! A consumer that finds a live offer `o` on top claims it with one CAS
//! `OFFERED -> TAKEN` on `o`'s slot ([`Slot::take_offer`]), then tries to pop
//! `o` (dead now either way). The claim may land after `o` stopped being the
//! top (a value pushed over it meanwhile); the pop then linearizes at its
//! load of `top` that showed `o` newest. That is sound because `o` stayed
//! live from that load to the claim (a dead offer never comes back), and no
//! other operation can observe `o` in between without either claiming it
//! first (then our claim fails and we retry) or taking values pushed above
//! it (which the order "our take, then those pushes" explains). A buried
//! offer that dies stays until it reaches the top (popped by whoever meets
//! it there: a push, a pop, or the producer's own clean-up after a
//! timeout), so dead offers are bounded by the live nodes above them; a
//! million timed-out transfers leave memory flat (`tests/memory.rs`).
//!
//! # Helping a fulfilling node
//!
//! Let `f` be a fulfilling node and `m = f.next`.
//!
//! * **Only `f` can match `m`.** Nothing is pushed over `f` (everyone helps
//!   it first), so while `f` is in the stack it is the top and `m` the
//!   topmost reservation; a reservation is claimed only by a helper of the
//!   fulfilling node right above it.
//! * **At most one claim per `f`.** A claim needs `f.next` in `WAITING`.
//!   `f.next` moves only off a *dead* reservation (terminal), so once a
//!   claim wins on `m`, `f.next == m` for good, and every reservation `f.next`
//!   pointed at before `m` was dead (never claimable) when it was unlinked.
//!   Hence `f`'s value moves out at most once, by the one claimer, inside
//!   [`Slot::fulfil_with`] after its claim won.
//! * **`f.next` is final once `f` is off the top.** `f` is popped only after
//!   a helper saw `f.next` null (never changes again: only a dead non-null
//!   `f.next` is ever replaced) or claimed (`BUSY`/`FULFILLED`: never dead
//!   again, so never unlinked).
//! * **The owner's outcome.** The owner helps until `f` is off the top, then
//!   reads the final `f.next`: non-null means a claim won, so the value is (or
//!   is being) delivered and the push succeeded, at that claim. Null means no
//!   claim ever happened or can happen, so the value is still in `f`; the
//!   owner, and only the owner, moves it out, and retries as a plain push.
//! * The reservation is fulfilled *while still in the stack* (`f` on top,
//!   `m` under it) and popped only afterwards: popping first and writing
//!   later would let other operations linearize ahead of a waiter that is
//!   already out of the stack (the design note's trap).
//!
//! # Closing
//!
//! `close` seals `top` (tag `SEAL`), stores `closed`, issues `fence(SeqCst)`,
//! and closes every waiting reservation. Its linearization point is the first
//! store of `closed`; every operation that fails because it met the seal
//! stores `closed` (and fences) itself first, so none reports "closed"
//! earlier. Every CAS on `top` expects an unsealed value except the pops of a
//! cell and of a dead offer, which keep the seal, so a closed stack still
//! drains. `close` helps
//! a fulfilling node off the top before it seals, and no fulfilling node can
//! be pushed over a seal, so a sealed stack never has one on top.
//!
//! That is also why a claim here needs no closed check (the queue's Dekker
//! handshake, see [`crate::slot`]): a claim of `m` wins only while `f` is on
//! top (above: `f` leaves only after a claim was seen), so it precedes the
//! seal, which precedes the close's linearization point. The push
//! linearizes at the claim, before the close, and the claimer always
//! delivers. (With the check, `BUSY` could end in `CLOSED` after `f` left,
//! and the owner would have to wait for a helper to learn its outcome.)
//!
//! `try_pop` reads "empty" and "open" from one word (`top`), so unlike the
//! queue it needs no re-check of `closed` after seeing the stack empty.
//!
//! # Synchronization
//!
//! * A node's contents (value, kind, `next`) are written before the `Release`
//!   CAS that pushes it; everyone reaches nodes through `Acquire` loads of
//!   `top` and of `next` words, and every CAS that installs a pointer is
//!   `Release` (`AcqRel`), so each node read was published to the reader.
//! * A claimer moves the value out of `f` (published by the owner's push)
//!   into the reservation's cell, then stores `FULFILLED` with `Release`; the
//!   waiter loads it with `Acquire` (see [`crate::slot`]).
//! * The owner learns its outcome from `f.next` after an `Acquire` load of
//!   `top` that no longer shows `f`, which synchronizes with the `top` CAS
//!   that popped `f` (all later writes to `top` are CASes, so that CAS's
//!   release sequence reaches the owner); the popper read the final
//!   `f.next` before it.
//!
//! # Memory of a reservation
//!
//! As in the queue: the waiter holds no epoch guard while it waits; its
//! reference keeps the slot alive. Claimers and `close` touch a slot only
//! while pinned, before the stack's reference is released by the deferred
//! function of its retirement, so unparking after the `FULFILLED` store is
//! safe even if the waiter has already returned. A cancelled waiter cleans:
//! it pops dead reservations off the top and unsplices those below, so any
//! number of timed-out waits leaves memory flat.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crossbeam_utils::{Backoff, CachePadded};

use crate::cells::{Cells, DataCell};
use crate::error::{
    PopError, PopTimeoutError, PushError, TransferTimeoutError, TryPopError, TryTransferError,
};
use crate::reservation::{poll_before_waiting, Line, PopFuture, Reservation};
use crate::slot::{Put, Slot};
use crate::sync::epoch::{self, Atomic, Guard, Owned, Shared};
use crate::sync::{acquire_last_ref, fence, AtomicBool, AtomicUsize, Ordering, WaitSpin};
use crate::transfer::{self, Offered, TransferFuture};

/// Tag on a reservation's non-null `next`: frozen (module docs).
const MARK: usize = 1;
/// Tag on `top`: the stack is closed; nothing can be pushed.
const SEAL: usize = 2;
/// Tag on a pointer to a stack item (in `top`, in a cell's `next`, in an
/// offer's `next`): the item is a [`Cell`], not a [`Node`].
const CELL: usize = 4;

// `MARK | SEAL | CELL` live in the low bits of item pointers: nodes and
// cells are aligned to 8 (`repr(align(8))` on both, for 32-bit targets too);
// crossbeam-epoch would silently drop a tag that does not fit.
const _: () = assert!(std::mem::align_of::<Node<u8>>() > (MARK | SEAL | CELL));
const _: () = assert!(std::mem::align_of::<Cell<u8>>() > (MARK | SEAL | CELL));

/// A stored value (module docs, "Items"): see [`crate::cells`].
type Cell<T> = DataCell<Node<T>, T>;

/// What a pointer loaded from `top` or from a `next` word names.
enum Item<'g, T> {
    Cell(&'g Cell<T>),
    Node(&'g Node<T>),
}

impl<'g, T> Item<'g, T> {
    /// The item a pointer names, by its `CELL` tag; `None` for null.
    ///
    /// # Safety
    ///
    /// `p` was loaded while pinned from `top`, or from a `next` word of an
    /// item reached that way (module docs: such items are not freed before
    /// the guard of `'g` unpins).
    unsafe fn of(p: Shared<'g, Node<T>>) -> Option<Self> {
        if p.is_null() {
            None
        } else if p.tag() & CELL != 0 {
            // SAFETY: a `CELL` pointer points at a cell (`cell_pointer`).
            Some(Item::Cell(unsafe { &*p.as_raw().cast::<Cell<T>>() }))
        } else {
            // SAFETY: the caller's contract.
            Some(Item::Node(unsafe { p.deref() }))
        }
    }

    /// The link to the item below.
    fn next(&self) -> &'g Atomic<Node<T>> {
        match *self {
            Item::Cell(cell) => &cell.next,
            Item::Node(node) => &node.next,
        }
    }

    /// A node, if this is one.
    fn node(&self) -> Option<&'g Node<T>> {
        match *self {
            Item::Cell(_) => None,
            Item::Node(node) => Some(node),
        }
    }
}

/// The pointer that links `cell` into the stack: tagged `CELL`.
fn cell_pointer<'g, T>(cell: &'g Cell<T>) -> Shared<'g, Node<T>> {
    Shared::from((cell as *const Cell<T>).cast::<Node<T>>()).with_tag(CELL)
}

/// `below` (a `next` word's value) as the new `top` after the item above it
/// leaves: keeps `below`'s own `CELL` tag and the old top's seal.
fn under_seal<'g, T>(
    below: Shared<'g, Node<T>>,
    old_top: Shared<'g, Node<T>>,
) -> Shared<'g, Node<T>> {
    below.with_tag(below.tag() & CELL | old_top.tag() & SEAL)
}

#[repr(align(8))]
struct Node<T> {
    /// The node below (module docs: a reservation's `next` word).
    next: Atomic<Node<T>>,
    /// 1 for data and fulfilling nodes (the stack's), 2 for reservations
    /// (the stack's and the waiter's).
    refs: AtomicUsize,
    /// Whether this datum is a fulfilling node. Written only while the node
    /// is unpublished (an `Owned`); fixed once it is pushed.
    fulfilling: bool,
    slot: Slot<T>,
    /// Debug and loom builds check that every node is retired exactly once
    /// (module docs, "Leaving the stack"). A plain `std` atomic, so that loom
    /// does not explore it.
    #[cfg(any(debug_assertions, loom))]
    retired: std::sync::atomic::AtomicBool,
}

impl<T> Node<T> {
    fn datum(value: T) -> Owned<Self> {
        Owned::new(Node {
            next: Atomic::null(),
            refs: AtomicUsize::new(1),
            fulfilling: false,
            slot: Slot::data(value),
            #[cfg(any(debug_assertions, loom))]
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// An offer of `value`: a datum whose producer waits for a consumer
    /// (`transfer`); the producer holds the second reference.
    fn offer(value: T) -> Owned<Self> {
        Owned::new(Node {
            next: Atomic::null(),
            refs: AtomicUsize::new(2),
            fulfilling: false,
            slot: Slot::offer(value),
            #[cfg(any(debug_assertions, loom))]
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn reservation() -> Owned<Self> {
        Owned::new(Node {
            next: Atomic::null(),
            refs: AtomicUsize::new(2),
            fulfilling: false,
            slot: Slot::reservation(),
            #[cfg(any(debug_assertions, loom))]
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A value a pop could take now: one offered by a waiting transfer
    /// (stored values are cells, not nodes).
    fn is_takeable(&self) -> bool {
        !self.fulfilling && self.slot.holds_value()
    }

    /// An offer whose transfer is over (taken, withdrawn or closed).
    fn is_dead_offer(&self) -> bool {
        self.slot.is_offer() && self.slot.is_dead()
    }

    /// Drops one reference; the last one frees the node. Never drops a value:
    /// whoever takes a value moves it out first.
    ///
    /// # Safety
    ///
    /// `node` came from `Node::datum`, `Node::offer` or `Node::reservation`, the caller owns
    /// one of its references, and no one will touch the node through that
    /// reference again.
    unsafe fn release(node: *const Node<T>) {
        // SAFETY: the caller's reference keeps the node alive until here.
        let refs = unsafe { &(*node).refs };
        // Release: our last accesses happen-before the free; pairs with the
        // `acquire_last_ref` below, run by whoever drops the last reference.
        if refs.fetch_sub(1, Ordering::Release) == 1 {
            acquire_last_ref(refs);
            // SAFETY: that was the last reference; the node came from `Owned::new`.
            drop(unsafe { Owned::from_raw(node as *mut Node<T>) });
        }
    }
}

/// Hands the stack's reference of a node that just left the stack to the
/// epoch collector.
///
/// # Safety
///
/// The caller won the CAS that removed `node` from the stack (module docs,
/// "Leaving the stack"), so this runs once per node, and no new reference
/// to it can be created.
unsafe fn retire<T>(guard: &Guard, node: Shared<'_, Node<T>>) {
    #[cfg(any(debug_assertions, loom))]
    {
        // SAFETY: the caller removed `node` while pinned; it is not freed yet.
        let retired = unsafe { &node.deref().retired };
        // Relaxed: only the swap's atomicity matters (two retirements of one
        // node cannot both see `false`).
        let twice = retired.swap(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!twice, "a stack node was retired twice");
    }
    // The raw pointer itself, not an integer: `defer_unchecked` needs no
    // `Send`, and a pointer keeps its provenance (Miri checks it).
    let raw = node.as_raw();
    // SAFETY: threads pinned now may still read the node; the deferred
    // release runs only after they unpin. The closure drops no `T` (values
    // are moved out before a node's memory is freed, and a slot never drops
    // its value), so running it after the stack (and any borrow in `T`) is
    // gone is fine.
    unsafe { guard.defer_unchecked(move || Node::release(raw)) }
}

/// Freezes a reservation's `next` (if it is not null) and returns the
/// successor, untagged. Called before every attempt to remove the node, and
/// only on nodes seen not `WAITING` (so a live waiter's `next` never freezes).
fn freeze<'g, T>(node: &Node<T>, guard: &'g Guard) -> Shared<'g, Node<T>> {
    debug_assert!(node.slot.is_reservation());
    // Acquire: we may follow the successor; pairs with the Release CASes
    // that installed it (push, unsplice).
    let mut next = node.next.load(Ordering::Acquire, guard);
    loop {
        if next.is_null() || next.tag() & MARK != 0 {
            return next.with_tag(0);
        }
        // AcqRel: the freeze must win or lose against unsplice CASes on this
        // word (atomicity does that); Acquire on both sides as for the load.
        match node.next.compare_exchange(
            next,
            next.with_tag(MARK),
            Ordering::AcqRel,
            Ordering::Acquire,
            guard,
        ) {
            Ok(_) => return next,
            Err(e) => next = e.current,
        }
    }
}

/// How a producer's attempt ended.
enum Placed<T> {
    /// Stored, or handed to a waiting consumer.
    Done,
    /// No consumer waits and the caller asked for `Put::OnlyToWaiter`.
    NoConsumer(T),
    /// The stack is closed.
    Closed(T),
    /// An offer is pushed; the caller holds the producer's reference and
    /// waits on it.
    Offered(*const Node<T>),
}

/// How [`DualStack::store_in_cell`] ended.
enum Stored<T> {
    Done,
    Closed(T),
    /// A live reservation is on top: the value goes to it instead.
    ConsumerWaits(T),
}

/// The result of one attempt to take a value or push a reservation.
enum Step<T> {
    Taken(T),
    Empty,
    Closed,
    /// A reservation is pushed; the caller holds the waiter's reference.
    Linked(*const Node<T>),
}

/// A lock-free, unbounded, multi-producer multi-consumer LIFO **dual** stack.
///
/// [`pop`](Self::pop) on an empty stack (after a brief poll) pushes a
/// reservation and waits; [`push`](Self::push) hands its value to the newest
/// waiting reservation directly. Values come out newest first, and waiting
/// consumers are served newest first too: the most recently active consumer gets the next value,
/// which is what object pools and caches want (its cache is warm).
///
/// # Examples
///
/// ```
/// use dualq::DualStack;
/// use std::sync::Arc;
/// use std::thread;
///
/// let s = Arc::new(DualStack::new());
/// let consumer = {
///     let s = Arc::clone(&s);
///     thread::spawn(move || s.pop().unwrap()) // waits: the stack is empty
/// };
/// s.push("hello").unwrap(); // handed straight to the waiting consumer
/// assert_eq!(consumer.join().unwrap(), "hello");
///
/// let s = DualStack::new();
/// s.push(1).unwrap();
/// s.push(2).unwrap();
/// assert_eq!(s.try_pop(), Ok(2)); // newest first
/// assert_eq!(s.try_pop(), Ok(1));
/// ```
pub struct DualStack<T> {
    top: CachePadded<Atomic<Node<T>>>,
    /// Set (first) by the close's linearization point; see the module docs.
    closed: CachePadded<AtomicBool>,
    /// Where stored values live (module docs, "Items").
    cells: Cells<Node<T>, T>,
    _marker: PhantomData<T>,
}

// SAFETY: values of type `T` move between threads through the stack, which is
// all `T: Send` permits; every shared access goes through atomics or a slot
// protocol that gives each value one owner at a time.
unsafe impl<T: Send> Send for DualStack<T> {}
// SAFETY: as above; `&DualStack` only lets a thread push (send) or pop (take
// ownership of) values, never share a `&T`.
unsafe impl<T: Send> Sync for DualStack<T> {}

impl<T> DualStack<T> {
    /// Creates an empty, open stack.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::<u64>::new();
    /// assert!(s.is_empty());
    /// ```
    pub fn new() -> Self {
        DualStack {
            top: CachePadded::new(Atomic::null()),
            closed: CachePadded::new(AtomicBool::new(false)),
            cells: Cells::new(),
            _marker: PhantomData,
        }
    }

    /// Pushes `value`: hands it to the newest waiting consumer if there is
    /// one, otherwise stores it on top. Never blocks.
    ///
    /// # Errors
    ///
    /// [`PushError`] with the value if the stack is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::new();
    /// s.push(1).unwrap();
    /// assert_eq!(s.try_pop(), Ok(1));
    /// ```
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        let mut value = value;
        loop {
            match self.store_in_cell(value) {
                Stored::Done => return Ok(()),
                Stored::Closed(value) => return Err(PushError(value)),
                Stored::ConsumerWaits(v) => value = v,
            }
            // A consumer waits: hand the value over with a fulfilling node.
            match self.put(value, Put::OnlyToWaiter) {
                Placed::Done => return Ok(()),
                Placed::Closed(value) => return Err(PushError(value)),
                // It left (served or timed out) before we reached it.
                Placed::NoConsumer(v) => value = v,
                Placed::Offered(_) => unreachable!("push pushes no offer"),
            }
        }
    }

    /// The push of a value onto data (or onto nothing): claims a cell, moves
    /// the value in, and publishes it on top (Treiber's push; the CAS is the
    /// linearization point). Gives the value back if a live reservation is
    /// on top, for [`put`](Self::put) to hand over.
    fn store_in_cell(&self, value: T) -> Stored<T> {
        // Acquire: pairs with the Release store in `note_closed`.
        if self.closed.load(Ordering::Acquire) {
            return Stored::Closed(value);
        }
        let guard = &epoch::pin();
        // The value, until it moves into a cell claimed on the first try.
        let mut value = Some(value);
        let mut claimed: Option<&Cell<T>> = None;
        // Treiber's `top` is one word for every push and pop: after a lost
        // CAS, back off a little before the retry (about half the CASes
        // failed without it in spsc on this machine; 4-6 % faster with it).
        let backoff = Backoff::new();
        // SAFETY (of both calls): the cell is claimed by us and was never
        // published (state table of `crate::cells`).
        let take_back = |value: Option<T>, cell: Option<&Cell<T>>| match cell {
            Some(cell) => unsafe { self.cells.take(cell, guard) },
            None => value.expect("the value is in hand or in the claimed cell"),
        };
        loop {
            let top = self.top.load(Ordering::Acquire, guard);
            if top.tag() & SEAL != 0 {
                self.note_closed();
                return Stored::Closed(take_back(value, claimed));
            }
            // SAFETY: loaded from `top` while pinned.
            match unsafe { Item::of(top) }.and_then(|t| t.node()) {
                Some(t) if t.fulfilling => {
                    self.help(top, guard);
                    continue;
                }
                Some(t) if t.slot.is_reservation() => {
                    if t.slot.is_waiting() {
                        return Stored::ConsumerWaits(take_back(value, claimed));
                    }
                    self.pop_dead_top(top, guard);
                    continue;
                }
                Some(t) if t.is_dead_offer() => {
                    self.pop_dead_datum(top, guard);
                    continue;
                }
                // Empty, a stored value or a live offer: store on top.
                _ => {}
            }
            let cell = match claimed {
                Some(cell) => cell,
                None => *claimed.insert(self.cells.claim(value.take().unwrap(), guard)),
            };
            // Relaxed: published by the Release CAS below.
            cell.next.store(top, Ordering::Relaxed);
            // Release: publishes the cell's value and `next`; pairs with the
            // Acquire loads of `top`. Relaxed on failure: we only retry.
            if self
                .top
                .compare_exchange(
                    top,
                    cell_pointer(cell),
                    Ordering::Release,
                    Ordering::Relaxed,
                    guard,
                )
                .is_ok()
            {
                return Stored::Done;
            }
            backoff.spin();
        }
    }

    /// The producers' path to a waiting consumer and the transfers' path:
    /// hands `value` to the newest waiting consumer if there is one;
    /// otherwise does what `put` says (`Put::Store` goes through
    /// [`store_in_cell`](Self::store_in_cell) instead).
    fn put(&self, value: T, put: Put) -> Placed<T> {
        // Acquire: pairs with the Release store in `note_closed`.
        if self.closed.load(Ordering::Acquire) {
            return Placed::Closed(value);
        }
        let guard = &epoch::pin();
        // The likely kind; rebuilt below if the mode says otherwise.
        let mut node = match put {
            Put::Offer => Node::offer(value),
            Put::OnlyToWaiter => Node::datum(value),
            // A datum pushed here would not be fulfilling, and `complete`
            // would then read the item under it as a reservation.
            Put::Store => unreachable!("stored values go into cells (`store_in_cell`)"),
        };
        loop {
            let top = self.top.load(Ordering::Acquire, guard);
            if top.tag() & SEAL != 0 {
                self.note_closed();
                // SAFETY: `node` was never published, so its value is still
                // there and we own it alone; the node is then freed without it.
                return Placed::Closed(unsafe { node.slot.take_data() });
            }
            // SAFETY: an item loaded from `top` while pinned is not freed
            // before we unpin (it is retired only after it leaves the stack).
            let fulfilling = match unsafe { Item::of(top) }.and_then(|t| t.node()) {
                Some(t) if t.fulfilling => {
                    self.help(top, guard);
                    continue;
                }
                Some(t) if t.slot.is_reservation() => {
                    if !t.slot.is_waiting() {
                        self.pop_dead_top(top, guard);
                        continue;
                    }
                    true
                }
                Some(t) if t.is_dead_offer() => {
                    self.pop_dead_datum(top, guard);
                    continue;
                }
                _ => false,
            };
            if !fulfilling && put == Put::OnlyToWaiter {
                // SAFETY: never published (as above).
                return Placed::NoConsumer(unsafe { node.slot.take_data() });
            }
            // The node's kind follows the mode: a fulfilling datum over a
            // reservation, else an offer (transfer; `push` stores in cells).
            let offer = !fulfilling && put == Put::Offer;
            if node.slot.is_offer() != offer {
                // SAFETY: never published (as above).
                let value = unsafe { node.slot.take_data() };
                node = if offer {
                    Node::offer(value)
                } else {
                    Node::datum(value)
                };
            }
            node.fulfilling = fulfilling;
            // Relaxed: published by the Release CAS below.
            node.next.store(top, Ordering::Relaxed);
            // Release: publishes the node's contents; pairs with the Acquire
            // loads of `top`. Relaxed on failure: we only retry.
            match self
                .top
                .compare_exchange(top, node, Ordering::Release, Ordering::Relaxed, guard)
            {
                Ok(n) if offer => return Placed::Offered(n.as_raw()),
                Ok(f) => match self.complete(f, guard) {
                    None => return Placed::Done,
                    Some(value) => node = Node::datum(value),
                },
                Err(e) => node = e.new,
            }
        }
    }

    /// Takes the newest value, waiting for one if the stack is empty.
    ///
    /// The thread first polls briefly (a spin phase of `try_pop`s); if that
    /// finds nothing, it joins the waiting consumers, which are served newest
    /// first. It then spins briefly (it is on top when it starts waiting), and
    /// parks; it holds no epoch guard and uses no CPU while parked.
    /// [`reserve`](Self::reserve) joins at once.
    ///
    /// # Errors
    ///
    /// [`PopError`] if the stack is closed and no value is stored (values
    /// stored before the close are still drained first).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::new();
    /// s.push(1).unwrap();
    /// s.close();
    /// assert_eq!(s.pop(), Ok(1));
    /// assert!(s.pop().is_err());
    /// ```
    pub fn pop(&self) -> Result<T, PopError> {
        self.pop_until(None).map_err(|_| PopError)
    }

    /// Takes the newest value if there is one. Never blocks and never leaves
    /// a reservation behind.
    ///
    /// # Errors
    ///
    /// [`TryPopError::Empty`] if no value is stored, [`TryPopError::Closed`]
    /// if additionally the stack is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use dualq::{DualStack, TryPopError};
    ///
    /// let s = DualStack::new();
    /// assert_eq!(s.try_pop(), Err(TryPopError::Empty));
    /// s.push(5).unwrap();
    /// assert_eq!(s.try_pop(), Ok(5));
    /// ```
    pub fn try_pop(&self) -> Result<T, TryPopError> {
        match self.take_or_link(false, &epoch::pin()) {
            Step::Taken(value) => Ok(value),
            Step::Empty => Err(TryPopError::Empty),
            Step::Closed => Err(TryPopError::Closed),
            Step::Linked(_) => unreachable!("try_pop never links"),
        }
    }

    /// Like [`pop`](Self::pop), but gives up after `timeout`.
    ///
    /// A zero timeout behaves like [`try_pop`](Self::try_pop); a timeout too
    /// large to represent as an [`Instant`] waits for ever. A consumer whose
    /// timeout races a push that already handed it a value returns the value.
    /// A timeout that runs out while the consumer still polls (before it
    /// would join the line: a few µs, or a few yields on one CPU) ends
    /// there, after one last look, leaving nothing behind.
    ///
    /// # Errors
    ///
    /// [`PopTimeoutError::Timeout`] if no value came in time (a reservation,
    /// if one was linked, is cancelled and removed), [`PopTimeoutError::Closed`] if the stack is
    /// closed and empty.
    ///
    /// A wait whose deadline passes while `close` runs may report either:
    /// `Timeout` when its cancel won the race for its reservation, `Closed`
    /// when the close reached it first. Both are linearizable (the timeout
    /// then takes effect just before the close); no value is lost either way.
    ///
    /// # Examples
    ///
    /// ```
    /// use dualq::{DualStack, PopTimeoutError};
    /// use std::time::Duration;
    ///
    /// let s = DualStack::<i32>::new();
    /// assert_eq!(s.pop_timeout(Duration::from_millis(5)), Err(PopTimeoutError::Timeout));
    /// ```
    pub fn pop_timeout(&self, timeout: Duration) -> Result<T, PopTimeoutError> {
        // `None` (overflow) means a deadline beyond any clock: wait for ever.
        self.pop_until(Instant::now().checked_add(timeout))
    }

    /// Like [`pop`](Self::pop), but gives up at `deadline`. A deadline in the
    /// past behaves like [`try_pop`](Self::try_pop).
    ///
    /// # Errors
    ///
    /// As [`pop_timeout`](Self::pop_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use dualq::DualStack;
    /// use std::time::{Duration, Instant};
    ///
    /// let s = DualStack::new();
    /// s.push(3).unwrap();
    /// assert_eq!(s.pop_deadline(Instant::now() + Duration::from_secs(1)), Ok(3));
    /// ```
    pub fn pop_deadline(&self, deadline: Instant) -> Result<T, PopTimeoutError> {
        self.pop_until(Some(deadline))
    }

    /// Takes a place in line now and returns it as a [`Reservation`]: the
    /// request half of [`pop`](Self::pop), whose follow-up (collecting the
    /// value) can come later, elsewhere.
    ///
    /// If a value is stored, the reservation takes the newest one at once;
    /// if the stack is closed and empty, it is closed. Otherwise it is
    /// pushed as the newest waiting consumer: the next push serves it unless
    /// another consumer starts waiting first. Dropping it cancels it; a
    /// value it received but nobody collected is pushed back on top (for a
    /// pool: the resource returns to the pool; see [`Reservation`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::new();
    /// let r = s.reserve();
    /// assert_eq!(s.waiting_consumers(), 1);
    /// s.push(1).unwrap();
    /// assert_eq!(r.wait(), Ok(1));
    /// ```
    pub fn reserve(&self) -> Reservation<'_, T> {
        match self.take_or_link(true, &epoch::pin()) {
            Step::Taken(value) => Reservation::ready(self, value),
            Step::Closed => Reservation::closed(self),
            Step::Empty => unreachable!("take_or_link links instead"),
            Step::Linked(node) => {
                // SAFETY: a pushed node is not null.
                let node = unsafe { NonNull::new_unchecked(node.cast_mut()) };
                // SAFETY: we hold the waiter's reference: the node is alive.
                let slot = NonNull::from(unsafe { &node.as_ref().slot });
                // SAFETY: a pushed reservation node of this stack; the
                // waiter's reference is handed over. Spin first: a new
                // reservation is the top, served next.
                unsafe { Reservation::linked(self, node.cast(), slot, WaitSpin::Coarse) }
            }
        }
    }

    /// Takes the newest value, waiting for one asynchronously: the async
    /// [`pop`](Self::pop). Sync and async consumers wait in one line (newest
    /// first).
    ///
    /// The future takes its place in line on its first poll. Dropping it
    /// cancels the wait; a value handed to it before the drop goes back on
    /// top of the stack, never lost. Runtime-agnostic.
    ///
    /// # Errors
    ///
    /// [`PopError`] if the stack is closed and no value is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     // a minimal executor for the example
    /// #     use std::task::{Context, Poll, Wake, Waker};
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// let s = dualq::DualStack::new();
    /// s.push(5).unwrap();
    /// assert_eq!(block_on(s.pop_async()), Ok(5));
    /// s.close();
    /// assert!(block_on(s.pop_async()).is_err());
    /// ```
    pub fn pop_async(&self) -> PopFuture<'_, T> {
        PopFuture::new(self)
    }

    /// Hands `value` to a consumer and waits until one has taken it: a
    /// rendezvous (the `TransferStack` of Java's `SynchronousQueue`).
    ///
    /// If consumers wait, the newest one gets the value at once. Otherwise
    /// the value is pushed as an *offer*, and the call returns once a
    /// consumer took it: consumers take stored values and offers alike,
    /// newest first, so waiting producers are served newest first.
    ///
    /// "Taken" means a consumer's pop or reservation received it: a
    /// [`Reservation`] that receives it and is then dropped gives it back
    /// to the stack (see there), and the transfer has still succeeded.
    ///
    /// # Errors
    ///
    /// [`PushError`] with the value if the stack is closed, or is closed
    /// while the value waits (a consumer that takes it first wins).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::thread;
    ///
    /// let s = dualq::DualStack::new();
    /// thread::scope(|scope| {
    ///     scope.spawn(|| s.transfer("ping").unwrap()); // waits for the pop
    ///     assert_eq!(s.pop(), Ok("ping"));
    /// });
    /// ```
    pub fn transfer(&self, value: T) -> Result<(), PushError<T>> {
        self.transfer_until(value, None)
            .map_err(|e| PushError(e.into_inner()))
    }

    /// Like [`transfer`](Self::transfer), but gives up after `timeout`: the
    /// offer is withdrawn and the value comes back. A zero timeout behaves
    /// like [`try_transfer`](Self::try_transfer); a timeout too large for an
    /// [`Instant`] waits for ever. A transfer whose value was taken in the
    /// same instant as its timeout reports success.
    ///
    /// # Errors
    ///
    /// [`TransferTimeoutError::Timeout`] or [`TransferTimeoutError::Closed`],
    /// each with the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let s = dualq::DualStack::new();
    /// let err = s.transfer_timeout(5, Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(err.into_inner(), 5);
    /// assert!(s.is_empty()); // a timed-out transfer leaves nothing behind
    /// ```
    pub fn transfer_timeout(
        &self,
        value: T,
        timeout: Duration,
    ) -> Result<(), TransferTimeoutError<T>> {
        self.transfer_until(value, Instant::now().checked_add(timeout))
    }

    /// Like [`transfer_timeout`](Self::transfer_timeout), with a deadline.
    ///
    /// # Errors
    ///
    /// As [`transfer_timeout`](Self::transfer_timeout).
    pub fn transfer_deadline(
        &self,
        value: T,
        deadline: Instant,
    ) -> Result<(), TransferTimeoutError<T>> {
        self.transfer_until(value, Some(deadline))
    }

    /// Hands `value` to the newest waiting consumer, only if one waits now.
    /// Never blocks and never leaves anything behind. A blocking `pop` that
    /// is still in its brief poll has not joined the line yet and does not
    /// count as waiting.
    ///
    /// # Errors
    ///
    /// [`TryTransferError::NoConsumer`] or [`TryTransferError::Closed`],
    /// each with the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use dualq::TryTransferError;
    ///
    /// let s = dualq::DualStack::new();
    /// assert_eq!(s.try_transfer(1), Err(TryTransferError::NoConsumer(1)));
    /// let r = s.reserve();
    /// assert_eq!(s.try_transfer(2), Ok(()));
    /// assert_eq!(r.wait(), Ok(2));
    /// ```
    pub fn try_transfer(&self, value: T) -> Result<(), TryTransferError<T>> {
        match self.put(value, Put::OnlyToWaiter) {
            Placed::Done => Ok(()),
            Placed::NoConsumer(value) => Err(TryTransferError::NoConsumer(value)),
            Placed::Closed(value) => Err(TryTransferError::Closed(value)),
            Placed::Offered(_) => unreachable!("try_transfer pushes no offer"),
        }
    }

    /// The blocking transfer with an optional deadline.
    fn transfer_until(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), TransferTimeoutError<T>> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return self
                .try_transfer(value)
                .map_err(TryTransferError::into_timeout);
        }
        transfer::transfer_until(self, value, deadline)
    }

    /// Hands `value` to a consumer, asynchronously: the future completes
    /// once a consumer has taken it (the async [`transfer`](Self::transfer)).
    ///
    /// The future offers the value on its first poll; async and blocking
    /// producers wait in one line (consumers take from the newest producer first).
    /// Dropping a pending future withdraws the offer: the value is then
    /// either taken already or dropped with the future, never both;
    /// [`TransferFuture::withdraw`] gets it back instead. Runtime-agnostic.
    ///
    /// # Errors
    ///
    /// [`PushError`] with the value if the stack is closed before a
    /// consumer takes it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     // a minimal executor for the example
    /// #     use std::task::{Context, Poll, Wake, Waker};
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// use std::thread;
    ///
    /// let x = dualq::DualStack::new();
    /// thread::scope(|s| {
    ///     s.spawn(|| assert_eq!(x.pop(), Ok("ping")));
    ///     block_on(x.transfer_async("ping")).unwrap(); // done once taken
    /// });
    /// x.close();
    /// assert_eq!(block_on(x.transfer_async("late")).unwrap_err().into_inner(), "late");
    /// ```
    pub fn transfer_async(&self, value: T) -> TransferFuture<'_, T> {
        TransferFuture::new(self, value)
    }

    /// The number of producers waiting in [`transfer`](Self::transfer)
    /// right now: a snapshot that walks the stack (O(n)).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::<u8>::new();
    /// assert_eq!(s.waiting_producers(), 0);
    /// ```
    pub fn waiting_producers(&self) -> usize {
        self.count(|item| {
            item.node()
                .is_some_and(|node| node.slot.is_offer() && node.slot.is_offered())
        })
    }

    /// Closes the stack: wakes every waiting consumer, makes later pushes
    /// fail (handing their values back), and lets pops drain what is stored
    /// (newest first) before they report closed. Returns `true` if this call
    /// closed it.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::<u8>::new();
    /// assert!(s.close());
    /// assert!(!s.close());
    /// assert!(s.is_closed());
    /// ```
    pub fn close(&self) -> bool {
        let guard = &epoch::pin();
        let sealed_here = loop {
            let top = self.top.load(Ordering::Acquire, guard);
            if top.tag() & SEAL != 0 {
                break false;
            }
            // SAFETY: loaded from `top` while pinned.
            if unsafe { Item::of(top) }
                .and_then(|t| t.node())
                .is_some_and(|t| t.fulfilling)
            {
                // Never seal over a fulfilling node (module docs, "Closing").
                self.help(top, guard);
                continue;
            }
            // Acquire: we walk the nodes below next; pairs with the Release
            // CASes that pushed them. Relaxed on failure: we only retry.
            if self
                .top
                .compare_exchange(
                    top,
                    top.with_tag(top.tag() | SEAL),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                    guard,
                )
                .is_ok()
            {
                break true;
            }
        };
        self.note_closed();
        // Wake every reservation and every offer still waiting. All were
        // pushed before the seal and none can leave the stack while waiting,
        // so all are reachable from `top`.
        let mut item = self.top.load(Ordering::Acquire, guard);
        // SAFETY: reached from `top` while pinned (module docs: every `next`
        // read leads to an item that was in the stack after we pinned).
        while let Some(item_ref) = unsafe { Item::of(item) } {
            if let Some(node) = item_ref.node() {
                node.slot.close_waiting();
            }
            item = item_ref.next().load(Ordering::Acquire, guard);
        }
        sealed_here
    }

    /// Whether the stack is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::<u8>::new();
    /// assert!(!s.is_closed());
    /// s.close();
    /// assert!(s.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release store in `note_closed`.
        self.closed.load(Ordering::Acquire)
    }

    /// Whether no value is stored (a snapshot; O(1)).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::new();
    /// assert!(s.is_empty());
    /// s.push(1).unwrap();
    /// assert!(!s.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        let guard = &epoch::pin();
        let mut item = self.top.load(Ordering::Acquire, guard);
        // Dead offers on top do not count; the first other item decides.
        // A fulfilling node's value is being handed over, not stored.
        // SAFETY: reached from `top` while pinned (module docs).
        while let Some(item_ref) = unsafe { Item::of(item) } {
            match item_ref {
                Item::Cell(_) => return false,
                Item::Node(node) if !node.is_dead_offer() => return !node.is_takeable(),
                Item::Node(node) => item = node.next.load(Ordering::Acquire, guard),
            }
        }
        true
    }

    /// The number of stored values: a snapshot that walks the stack, so it
    /// costs O(n) and may be stale when it returns under concurrent use.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::new();
    /// s.push('a').unwrap();
    /// s.push('b').unwrap();
    /// assert_eq!(s.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.count(|item| item.node().map_or(true, Node::is_takeable))
    }

    /// The number of consumers waiting right now: a snapshot that walks the
    /// stack (O(waiters)). A blocking `pop` still in its brief poll is not
    /// in line yet and not counted.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = dualq::DualStack::<u8>::new();
    /// assert_eq!(s.waiting_consumers(), 0);
    /// ```
    pub fn waiting_consumers(&self) -> usize {
        self.count(|item| {
            item.node()
                .is_some_and(|node| node.slot.is_reservation() && node.slot.is_waiting())
        })
    }

    fn count(&self, counts: impl Fn(&Item<'_, T>) -> bool) -> usize {
        let guard = &epoch::pin();
        let mut item = self.top.load(Ordering::Acquire, guard);
        let mut n = 0;
        // SAFETY: every item is reached from `top` while pinned (module docs).
        while let Some(item_ref) = unsafe { Item::of(item) } {
            n += usize::from(counts(&item_ref));
            item = item_ref.next().load(Ordering::Acquire, guard);
        }
        n
    }

    /// The blocking pop with an optional deadline.
    fn pop_until(&self, deadline: Option<Instant>) -> Result<T, PopTimeoutError> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return self.try_pop().map_err(TryPopError::into_timeout);
        }
        if let Some(result) = poll_before_waiting(|| self.try_pop(), deadline) {
            return result;
        }
        self.reserve().wait_until(deadline)
    }

    /// One pop attempt: takes the newest value, or reports empty/closed, or
    /// (if `link`) pushes a reservation for the caller to wait on.
    fn take_or_link(&self, link: bool, guard: &Guard) -> Step<T> {
        let mut reservation: Option<Owned<Node<T>>> = None;
        // As in `store_in_cell`: after a lost CAS on `top` popping a cell.
        let backoff = Backoff::new();
        loop {
            let top = self.top.load(Ordering::Acquire, guard);
            let sealed = top.tag() & SEAL != 0;
            // SAFETY: loaded from `top` while pinned.
            let t = unsafe { Item::of(top) };
            if let Some(Item::Cell(cell)) = t {
                // A stored value: pop it (Treiber's pop; the CAS is the
                // linearization point), keeping the seal if there is one.
                // Relaxed: a cell's `next` is fixed before its push, which
                // our Acquire load of `top` synchronized with.
                let below = cell.next.load(Ordering::Relaxed, guard);
                // AcqRel: Acquire keeps our read of the value after the pop;
                // Release orders our earlier accesses before the cell's
                // death for whoever frees its block. Relaxed on failure: we
                // only retry.
                if self
                    .top
                    .compare_exchange(
                        top,
                        under_seal(below, top),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                        guard,
                    )
                    .is_ok()
                {
                    // SAFETY: our CAS removed the cell, so we own it (state
                    // table of `crate::cells`), and its push (Release) and
                    // our Acquire load published the value.
                    return Step::Taken(unsafe { self.cells.take(cell, guard) });
                }
                backoff.spin();
                continue;
            }
            match t.and_then(|t| t.node()) {
                Some(t) if t.fulfilling => self.help(top, guard),
                Some(t) if t.slot.is_offer() => {
                    // A transfer's offer: claim it (the pop linearizes at
                    // our load of `top`, which showed it newest: module
                    // docs, "Offers"), then pop it, dead either way; keep
                    // the seal. If it was already dead, only pop it.
                    // SAFETY: loaded from `top` while pinned.
                    let taken = unsafe { t.slot.take_offer() };
                    self.pop_dead_datum(top, guard);
                    if let Some(value) = taken {
                        return Step::Taken(value);
                    }
                }
                // A dead reservation on an open stack: pop it, so timed-out
                // consumers alone cannot pile up nodes.
                Some(t) if !sealed && !t.slot.is_waiting() => self.pop_dead_top(top, guard),
                _ if sealed => {
                    self.note_closed();
                    return Step::Closed;
                }
                // Empty and open, seen in one load of `top`: no re-check of
                // `closed` needed (module docs, "Closing").
                _ if !link => return Step::Empty,
                _ => {
                    let node = reservation.take().unwrap_or_else(Node::reservation);
                    // Relaxed: published by the Release CAS below.
                    node.next.store(top, Ordering::Relaxed);
                    // Release: publishes the node; pairs with the Acquire
                    // loads of `top`. Relaxed on failure: we only retry.
                    match self.top.compare_exchange(
                        top,
                        node,
                        Ordering::Release,
                        Ordering::Relaxed,
                        guard,
                    ) {
                        Ok(node) => return Step::Linked(node.as_raw()),
                        Err(e) => reservation = Some(e.new),
                    }
                }
            }
        }
    }

    /// The owner's side of the fulfilling node `f` it has just pushed: helps
    /// until `f` is off the top, then returns `None` if a reservation claimed
    /// its value, or the value if every reservation under `f` vanished first
    /// (module docs, "Helping a fulfilling node").
    fn complete(&self, f: Shared<'_, Node<T>>, guard: &Guard) -> Option<T> {
        self.help(f, guard);
        // SAFETY: `f` was pushed by us while pinned; it is retired no earlier
        // than its pop, so it is not freed before we unpin.
        let f_ref = unsafe { f.deref() };
        // Acquire: `help` returned after an Acquire load of `top` without
        // `f`, so this reads the final `f.next` the popper saw (module docs).
        if f_ref.next.load(Ordering::Acquire, guard).is_null() {
            // SAFETY: (1) `f` is off the top with `f.next` null, which is
            // final and means no claim ever won for `f`, nor can one now, so
            // the value is still in `f`; (2) only the owner takes a value back
            // out of `f`, and it does so here, once.
            Some(unsafe { f_ref.slot.take_data() })
        } else {
            None
        }
    }

    /// Completes the fulfilling node `f` if it is still on top: claims the
    /// reservation under it and pops both, or unlinks a dead reservation
    /// from under it, or pops it alone if no reservation is left. Returns
    /// once `f` is off the top. Everyone who meets `f` on top runs this
    /// before doing its own work.
    fn help(&self, f: Shared<'_, Node<T>>, guard: &Guard) {
        // SAFETY: `f` was loaded from `top` while pinned (or pushed by us).
        let f_ref = unsafe { f.deref() };
        debug_assert!(f_ref.fulfilling && f.tag() == 0, "sealed fulfilling node");
        // Acquire: pairs with the Release CASes on `top`, so once `f` is gone
        // we see what its popper saw (see `complete`).
        while self.top.load(Ordering::Acquire, guard) == f {
            // Acquire: we follow it; pairs with the unlink CAS below and the
            // push that published `f`.
            let m = f_ref.next.load(Ordering::Acquire, guard);
            debug_assert_eq!(m.tag(), 0, "a fulfilling node's next is never frozen");
            // SAFETY: reached from `f` while pinned (module docs).
            let Some(m_ref) = (unsafe { m.as_ref() }) else {
                // Every reservation under `f` vanished: pop `f` alone; its
                // owner takes the value back. AcqRel: Release hands our read
                // of the (final, null) `f.next` to the owner; Acquire orders
                // the retirement after the pop. Relaxed on failure: we retry.
                if self
                    .top
                    .compare_exchange(
                        f,
                        Shared::null(),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                        guard,
                    )
                    .is_ok()
                {
                    // SAFETY: we won the CAS that popped `f`.
                    unsafe { retire(guard, f) };
                }
                continue;
            };
            if m_ref.slot.is_waiting() {
                // The fulfilment: one CAS on `m`'s own slot while `m` is in
                // the stack. The value leaves `f` only if the claim wins.
                // SAFETY (of the closure): it runs only after our claim of
                // `m == f.next` won; at most one claim ever wins for `f` and
                // the owner takes the value back only if none did (module
                // docs), so this is the value's one move out of `f`; `f` was
                // published to us by the Acquire load that found it on top.
                let _ = m_ref
                    .slot
                    .fulfil_with(|| unsafe { f_ref.slot.take_data() }, None);
            }
            let below = freeze(m_ref, guard);
            if m_ref.slot.is_claimed() {
                // Matched (by a helper of `f`: only `f` can match `m`): pop
                // both. AcqRel: as for the pop of `f` alone (our read of the
                // final `f.next == m` goes to the owner).
                if self
                    .top
                    .compare_exchange(f, below, Ordering::AcqRel, Ordering::Relaxed, guard)
                    .is_ok()
                {
                    // SAFETY: we won the CAS that popped `f` and `m`.
                    unsafe {
                        retire(guard, f);
                        retire(guard, m);
                    }
                }
            } else {
                // `m` is cancelled or closed (it is not waiting and not
                // claimed, and both are final): unlink it from under `f`.
                // AcqRel: Release publishes `below` to readers of `f.next`;
                // Acquire orders the retirement after the unlink. Relaxed on
                // failure: we retry.
                if f_ref
                    .next
                    .compare_exchange(m, below, Ordering::AcqRel, Ordering::Relaxed, guard)
                    .is_ok()
                {
                    // SAFETY: we won the CAS that removed `m` (module docs:
                    // `f` is on top while `f.next` is dead).
                    unsafe { retire(guard, m) };
                }
            }
        }
    }

    /// Pops the dead reservation `t` (loaded from `top`, unsealed) off the
    /// top, freezing its `next` first.
    fn pop_dead_top(&self, t: Shared<'_, Node<T>>, guard: &Guard) {
        // SAFETY: loaded from `top` while pinned.
        let below = freeze(unsafe { t.deref() }, guard);
        // AcqRel: Release keeps our accesses to `t` before its retirement and
        // publishes nothing new; Acquire pairs with other poppers. Relaxed on
        // failure: the caller retries.
        if self
            .top
            .compare_exchange(t, below, Ordering::AcqRel, Ordering::Relaxed, guard)
            .is_ok()
        {
            // SAFETY: we won the CAS that popped `t`.
            unsafe { retire(guard, t) };
        }
    }

    /// Pops the dead offer `t` (loaded from `top`, perhaps sealed) off the
    /// top, keeping the seal. An offer's `next` is fixed at its push, like a
    /// datum's: dead offers are popped when they reach the top, never
    /// unspliced from below.
    fn pop_dead_datum(&self, t: Shared<'_, Node<T>>, guard: &Guard) {
        // SAFETY: loaded from `top` while pinned.
        let t_ref = unsafe { t.deref() };
        debug_assert!(t_ref.slot.is_offer());
        // Relaxed: an offer's `next` is fixed before its push, which our
        // Acquire load of `top` synchronized with.
        let below = t_ref.next.load(Ordering::Relaxed, guard);
        // AcqRel, as in `pop_dead_top`. Fails if `t` is no longer the top
        // (popped by someone else, or buried under a newer value: then it
        // leaves when it resurfaces).
        if self
            .top
            .compare_exchange(
                t,
                under_seal(below, t),
                Ordering::AcqRel,
                Ordering::Relaxed,
                guard,
            )
            .is_ok()
        {
            // SAFETY: we won the CAS that popped `t`.
            unsafe { retire(guard, t) };
        }
    }

    /// After a cancel: removes dead reservations, popping them off the top
    /// and unsplicing those below (module docs, "Leaving the stack"). Returns
    /// once a walk from the top found none left (or the stack is sealed or
    /// holds data).
    fn clean(&self, guard: &Guard) {
        'restart: loop {
            let top = self.top.load(Ordering::Acquire, guard);
            if top.tag() & SEAL != 0 {
                // Closed: no reservation is pushed any more, the rest stay
                // until the stack is dropped.
                return;
            }
            // SAFETY: loaded from `top` while pinned.
            let t = match unsafe { Item::of(top) } {
                None => return,
                Some(Item::Cell(_)) => return, // data: no reservation in the stack
                Some(Item::Node(t)) => t,
            };
            if t.fulfilling {
                self.help(top, guard);
                continue;
            }
            if t.is_dead_offer() {
                self.pop_dead_datum(top, guard);
                continue;
            }
            if !t.slot.is_reservation() {
                return; // data: no reservation in the stack
            }
            if !t.slot.is_waiting() {
                self.pop_dead_top(top, guard);
                continue;
            }
            let mut pred = t;
            let mut cur = t.next.load(Ordering::Acquire, guard);
            loop {
                if cur.tag() & MARK != 0 {
                    continue 'restart; // `pred` died and is leaving
                }
                // SAFETY: reached from `top` while pinned (module docs).
                let Some(cur_ref) = (unsafe { cur.as_ref() }) else {
                    return;
                };
                if cur_ref.slot.is_waiting() {
                    pred = cur_ref;
                    // Acquire: we follow it; pairs with the Release CASes
                    // that installed it.
                    cur = cur_ref.next.load(Ordering::Acquire, guard);
                    continue;
                }
                let below = freeze(cur_ref, guard);
                // AcqRel: Release publishes `below` to readers of `pred.next`;
                // Acquire orders the retirement after the unsplice. Fails if
                // `pred` is leaving (its `next` frozen) or changed.
                match pred.next.compare_exchange(
                    cur,
                    below,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                    guard,
                ) {
                    Ok(_) => {
                        // SAFETY: we won the CAS that unspliced `cur` from the
                        // live stack (module docs).
                        unsafe { retire(guard, cur) };
                        cur = below;
                    }
                    Err(_) => continue 'restart,
                }
            }
        }
    }

    /// Stores `closed` after seeing the seal, before reporting "closed", so no
    /// operation reports it ahead of the close's linearization point.
    fn note_closed(&self) {
        // Release: pairs with the Acquire loads in `push` and `is_closed`.
        self.closed.store(true, Ordering::Release);
        // SeqCst: `Slot::close_reservation` expects its caller to have
        // fenced after storing `closed` (the queue's Dekker handshake). The
        // stack's claims do not rely on it (module docs, "Closing"); the
        // fence keeps one closing protocol for both structures.
        fence(Ordering::SeqCst);
    }
}

impl<T> Drop for DualStack<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no other thread can touch the stack, and no
        // waiter remains (waiters borrow the stack).
        let guard = unsafe { epoch::unprotected() };
        // If a value's `drop` panics, unwinding drops `rest`, which frees the
        // remaining nodes and values; a second panic aborts, as in `Vec`.
        let mut rest = Chain {
            next: self.top.load(Ordering::Relaxed, guard),
            guard,
            cells: &self.cells,
        };
        while let Some(value) = rest.pop() {
            drop(value);
        }
    }
}

/// The items of a stack being dropped.
struct Chain<'g, T> {
    next: Shared<'g, Node<T>>,
    /// `epoch::unprotected()`: the stack is being dropped.
    guard: &'g Guard,
    /// The stack's cell allocator, which takes the cells' values.
    cells: &'g Cells<Node<T>, T>,
}

impl<T> Chain<'_, T> {
    /// Frees the next item; returns its value, if it stores one.
    fn pop(&mut self) -> Option<Option<T>> {
        let guard = self.guard;
        // SAFETY: an item of the stack, still in it (`next` walks the
        // stack's own links).
        match unsafe { Item::of(self.next) }? {
            Item::Cell(cell) => {
                self.next = cell.next.load(Ordering::Relaxed, guard);
                // SAFETY: the stack is the cell's owner (stored state) and
                // drops it once; its block goes when its last cell does.
                Some(Some(unsafe { self.cells.take(cell, guard) }))
            }
            Item::Node(node) => {
                self.next = node.next.load(Ordering::Relaxed, guard);
                // A fulfilling node leaves the top before its owner's `push`
                // returns, and every `push` has returned (it borrows the
                // stack), so none is left here; an offer's value went back to
                // its producer or to a consumer before its `transfer`
                // returned. So no node holds a value.
                debug_assert!(!node.fulfilling, "fulfilling node left in a dropped stack");
                // SAFETY: the stack's reference to a node still in it; no
                // waiter holds the other one.
                unsafe { Node::release(node) };
                Some(None)
            }
        }
    }
}

impl<T> Drop for Chain<'_, T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

impl<T> Line<T> for DualStack<T> {
    fn reserve(&self) -> Reservation<'_, T> {
        DualStack::reserve(self)
    }

    fn remove_cancelled(&self) {
        self.clean(&epoch::pin());
    }

    unsafe fn release(&self, node: NonNull<()>) {
        // SAFETY: the caller's contract: a reservation node of this stack
        // and the owner's reference.
        unsafe { Node::release(node.as_ptr().cast::<Node<T>>()) }
    }

    fn give_back(&self, value: T) -> Result<(), T> {
        self.push(value).map_err(PushError::into_inner)
    }

    fn offer(&self, value: T) -> Offered<T> {
        let node = match self.put(value, Put::Offer) {
            Placed::Done => return Offered::Done,
            Placed::Closed(value) => return Offered::Closed(value),
            Placed::NoConsumer(_) => unreachable!("an offer is pushed instead"),
            Placed::Offered(node) => node,
        };
        // SAFETY: a pushed node is not null.
        let node = unsafe { NonNull::new_unchecked(node.cast_mut()) };
        // SAFETY: we hold the producer's reference: the node is alive.
        let slot = NonNull::from(unsafe { &node.as_ref().slot });
        // Spin before parking: a new offer is the top, taken next.
        Offered::Linked {
            node: node.cast(),
            slot,
            spin: WaitSpin::Fine,
        }
    }
}

impl<T> Default for DualStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for DualStack<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("DualStack { .. }")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    // Natively and under Miri (which checks the reuse for data races and
    // borrow violations): blocks killed by this thread's pops, recycled,
    // then reused by another thread's pushes while this one pops.
    #[test]
    fn recycled_blocks_carry_values_between_threads() {
        let s = std::sync::Arc::new(DualStack::new());
        let n = 3 * Cells::<Node<u64>, u64>::block_capacity() as u64;
        for v in 0..n {
            s.push(v).unwrap();
        }
        for v in (0..n).rev() {
            assert_eq!(s.try_pop(), Ok(v));
        }
        crate::spares::until_recycled(|| s.cells.spares_held(), 1);
        let producer = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || (n..3 * n).for_each(|v| s.push(v).unwrap()))
        };
        let mut got: Vec<u64> = (n..3 * n).map(|_| s.pop().unwrap()).collect();
        producer.join().unwrap();
        got.sort_unstable();
        assert!(got.iter().copied().eq(n..3 * n), "each value once");
        assert!(s.cells.spares_reused() > 0, "no push took a spare");
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    // The consumer whose pop kills a block also runs its recycling (it
    // flushes the epoch), while the producer installs a block: if the push
    // finds the spare, the reset made on the consumer's thread must reach
    // it (`Spares::put`'s Release, `take`'s Acquire); a stale counter would
    // hand out a cell twice or free the block under a live cell.
    #[test]
    fn block_recycled_on_one_thread_reused_on_another() {
        crate::sync::loom_model_long(
            "stack::block_recycled_on_one_thread_reused_on_another",
            20_000,
            || {
                let s = Arc::new(DualStack::new());
                // [1 2] fills the first block, 3 installs the second.
                for v in 1..=3 {
                    s.push(v).unwrap();
                }
                assert_eq!(s.try_pop(), Ok(3));
                assert_eq!(s.try_pop(), Ok(2));
                let consumer = {
                    let s = Arc::clone(&s);
                    thread::spawn(move || {
                        // The first block's last live cell, unless 4 came first.
                        let got = s.try_pop().unwrap();
                        for _ in 0..3 {
                            epoch::pin().flush();
                        }
                        got
                    })
                };
                s.push(4).unwrap(); // the second block's last cell
                s.push(5).unwrap(); // a fresh block: perhaps the recycled one
                let mut got = vec![consumer.join().unwrap()];
                while let Ok(v) = s.try_pop() {
                    got.push(v);
                }
                got.sort_unstable();
                assert_eq!(got, [1, 4, 5], "each value once");
            },
        );
    }

    /// An empty stack whose pool holds one block, and whose current block
    /// has one free cell. 2-cell blocks under loom: 1 and 2 fill the first
    /// block, 3 installs the second; popping all three kills the first,
    /// which is recycled.
    fn with_one_spare_block() -> Arc<DualStack<u32>> {
        let s = Arc::new(DualStack::new());
        for v in 1..=3 {
            s.push(v).unwrap();
        }
        for v in (1..=3).rev() {
            assert_eq!(s.try_pop(), Ok(v));
        }
        crate::spares::until_recycled(|| s.cells.spares_held(), 1);
        s
    }

    // Two pushes find the current block exhausted and race to install a
    // new one; one of them took the pool's spare. The loser claims a cell
    // in the winner's block and hands its own (perhaps the spare) back
    // through the epoch (`Spares::defer_put`): every value once.
    #[test]
    fn installs_race_and_the_loser_hands_its_block_back() {
        crate::sync::loom_model_long(
            "stack::installs_race_and_the_loser_hands_its_block_back",
            20_000,
            || {
                let s = with_one_spare_block();
                s.push(4).unwrap(); // the second block's last cell
                let pusher = {
                    let s = Arc::clone(&s);
                    thread::spawn(move || s.push(5).unwrap())
                };
                s.push(6).unwrap();
                pusher.join().unwrap();
                let mut got = Vec::new();
                while let Ok(v) = s.try_pop() {
                    got.push(v);
                }
                assert_eq!(got[2], 4, "the older value last");
                got.sort_unstable();
                assert_eq!(got, [4, 5, 6], "each value once");
            },
        );
    }

    // A block dies (every cell popped, replaced in `current`), is recycled
    // after its grace period, then reused by a push that races a pop:
    // every value comes out once and newest first, so the reset block's
    // counters and fresh cells reach the popper.
    #[test]
    fn recycled_block_races_a_pop() {
        crate::sync::loom_model_long("stack::recycled_block_races_a_pop", 20_000, || {
            let s = with_one_spare_block();
            let popper = {
                let s = Arc::clone(&s);
                thread::spawn(move || s.try_pop().ok())
            };
            s.push(4).unwrap(); // the second block's last cell
            s.push(5).unwrap(); // a fresh block: the recycled one
            assert_eq!(s.cells.spares_held(), 0, "the push took the spare");
            let theirs = popper.join().unwrap();
            let mut rest = Vec::new();
            while let Ok(v) = s.try_pop() {
                rest.push(v);
            }
            match theirs {
                None => assert_eq!(rest, [5, 4]),
                // Popped before 5 was pushed: 4; after: 5.
                Some(4) => assert_eq!(rest, [5]),
                Some(5) => assert_eq!(rest, [4]),
                Some(v) => panic!("popped {v}"),
            }
        });
    }
}
