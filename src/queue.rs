//! [`DualQueue`]: the lock-free dual queue of Scherer & Scott, "Nonblocking
//! concurrent data structures with condition synchronization" (DISC 2004),
//! built on the Michael & Scott queue, with the timeouts and cancellation of
//! Scherer, Lea & Scott's synchronous queues (PPoPP 2006). Memory is reclaimed
//! with `crossbeam-epoch`.
//!
//! # Shape
//!
//! `head` points at a dummy node; the nodes after it are all data or all
//! reservations (live or dead), never a mix. `tail` points at the last node or
//! the one before it (it lags by at most one, as in Michael & Scott).
//!
//! A data node is a *segment* of up to 64 values ([`crate::segment`]: its
//! own counters and cell state table). Producers claim its cells with
//! `fetch_add`, consumers with a CAS, so a value costs no allocation and
//! ~14 B instead of a 72 B node; reservations and offers stay one node each.
//! A segment is *open to writers* until it is full or *sealed*, and:
//!
//! * **nothing is linked after a segment open to writers.** Whoever links
//!   after one seals it first (a pop that links a reservation, a transfer
//!   that links an offer, a push whose cell a consumer broke), and so does
//!   whatever seals the queue's last `next` for a close (`closed_at`). So no
//!   value can land in a segment behind a reservation, an offer or a later
//!   segment, and an open segment is always the last node;
//! * **a segment becomes the dummy only once exhausted**: closed to writers
//!   and every claimed cell claimed by a consumer too. Hence an open
//!   segment right after the dummy is the front of the queue for as long as
//!   it is open, which the pop's fast path relies on.
//!
//! The operations:
//!
//! * `push` on a queue of reservations hands its value to the oldest live one
//!   (`head.next`) by one CAS on that reservation's slot while it is still
//!   linked ([`Slot::fulfil`]), then helps move `head` onto it. Otherwise it
//!   stores the value in the last segment if that one is open (the fast path:
//!   read `tail`, claim a cell); if not, it appends a new segment that
//!   already holds the value in its first cell.
//! * `pop` on a queue of data takes the oldest value of the segment after the
//!   dummy; a drained, exhausted segment becomes the dummy. If no value is
//!   stored it appends a reservation (after sealing and draining the last
//!   segment), unpins, and waits on the reservation's slot. (A blocking `pop`
//!   first polls with `try_pop`s for one spin phase; `reserve` and
//!   `pop_async` do not.)
//! * `transfer` behaves like `push`, except that on a queue of data (or an
//!   empty one) it appends an *offer*: a data node whose producer waits on
//!   its slot until a consumer takes the value. A consumer that finds an
//!   offer first in line claims it in place, by one CAS `OFFERED -> TAKEN`
//!   on the producer's slot ([`Slot::take_offer`]), then helps move `head`
//!   onto it; a live offer is never passed by `head` nor unlinked, so it is
//!   always where consumers look. A dead offer (taken, withdrawn on timeout,
//!   closed) is passed by `head` or unlinked by a sweep like a cancelled
//!   reservation. Values and offers are one FIFO sequence to consumers.
//!
//! # A node's `next` word
//!
//! | `next`                 | meaning                                                    | set by |
//! |------------------------|------------------------------------------------------------|--------|
//! | null                   | last node, open                                            | construction |
//! | null + `SEAL`          | last node, queue closed: nothing can be appended           | `close` (CAS from null) |
//! | `n`                    | linked to `n`                                              | append (CAS from null); unlink (CAS from the removed node) |
//! | `n` + `MARK` (frozen)  | this node is leaving the list; `next` never changes again  | head advance onto a reservation, or a sweep removing this cancelled node (CAS from `n`) |
//!
//! A node leaves the list in exactly one of two ways, and whoever performs
//! that step retires it (exactly once):
//! 1. `head` moves past it (CAS on `head`; the winner retires the old dummy).
//!    `head` moves only onto an exhausted segment, a dead reservation (fulfilled,
//!    cancelled or closed) or a dead offer (taken, cancelled or closed), and
//!    only onto the very node the mover checked: a waiting reservation or a
//!    live offer never becomes the dummy, where no push (pop) would find it;
//! 2. a sweep unlinks a cancelled reservation or offer `c` from its
//!    predecessor `p` (CAS `p.next: c -> c.next`, the winner retires `c`).
//!    Nothing else is ever unlinked.
//!
//! Before either step the leaving node's `next` is frozen whenever its
//! successor is a reservation or an offer (stored data are never unlinked
//! from the middle, so a dummy followed by a segment needs no freeze). The CAS in (2) expects an
//! unmarked `p.next`, so it fails if `p` is itself leaving; hence a successful
//! unlink always removes `c` from the live list, and a removed node can never
//! be re-linked. A sweep never unlinks the last or second-to-last node, so
//! `tail` (which is one of those two) never points at a retired node; those
//! two are left to a later sweep or to `head`. Memory therefore stays flat
//! under any number of timeouts: at most two cancelled nodes linger.
//!
//! # Closing
//!
//! `close` seals the last node's `next` (so no node can be appended) and, if
//! it is a segment, its cells (so no value can land in it), stores
//! `closed`, issues `fence(SeqCst)`, and closes every waiting reservation. Its
//! linearization point is the first store of `closed`; every operation that
//! fails because it met the seal stores `closed` (and fences) itself before
//! returning, so none can report "closed" earlier. A push that is fulfilling
//! a reservation checks `closed` after its claim (see [`crate::slot`]).
//!
//! # Synchronization
//!
//! * A node's contents (slot, `next`) are written before the `Release` CAS
//!   that appends it; everyone reaches nodes through `Acquire` loads of
//!   `head`, `tail` and `next` words, and every CAS that installs a pointer
//!   in them is `Release` or `AcqRel`, so each node read was published to
//!   its reader (directly, or transitively through the helper that moved
//!   `head`/`tail` after acquiring the node).
//! * Freezes and unlinks are `AcqRel` CASes on the same `next` word, so of a
//!   freeze and an unlink racing there exactly one wins and the loser sees
//!   the winner's value.
//! * The fulfilment hand-off (value, then `FULFILLED` with `Release`, read
//!   with `Acquire`) and the close/fulfil Dekker pair of `fence(SeqCst)`s are
//!   in [`crate::slot`]; `closed` is stored `Release` and loaded `Acquire`,
//!   so whoever sees it set also sees the seal and every append before it.
//! * `refs` is decremented with `Release`; the last owner's `Acquire` fence
//!   orders every earlier access before the free.
//!
//! # Memory of a segment
//!
//! A segment node has only the list's reference. When `head` passes it
//! (exhausted), its deferred function resets it after the grace period and
//! keeps it in the queue's pool of spares (`crate::spares`, at most 64 KiB)
//! for the next append, instead of freeing it: no allocation per segment in
//! the steady state, and no contention between the allocating producer and
//! the consumer that frees (see `docs/scaling.md`).
//!
//! # Memory of a reservation (and of an offer)
//!
//! A reservation node has two references: the list's (released by a deferred
//! function when the node is retired) and the waiter's (released when the wait
//! ends; for a [`Reservation`] handle, when the handle finishes or drops). An
//! offer node likewise has the list's and its producer's. The waiter holds no epoch guard while it waits; its reference keeps
//! the slot alive. A producer touches the slot only while pinned, when the
//! list's reference is still held, so unparking after the `FULFILLED` store
//! is safe even if the waiter has already returned and let go.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::error::{
    PopError, PopTimeoutError, PushError, TransferTimeoutError, TryPopError, TryTransferError,
};
use crate::reservation::{poll_before_waiting, Line, PopFuture, Reservation};
use crate::segment::{Refused, Segment, Take};
use crate::slot::{Fulfil, Put, Slot};
use crate::spares::{Spare, Spares};
use crate::sync::epoch::{self, Atomic, Guard, Owned, Shared};
use crate::sync::{acquire_last_ref, fence, AtomicBool, AtomicUsize, Ordering, WaitSpin};
use crate::transfer::{self, Offered, TransferFuture};

/// Tag on a non-null `next`: the node is leaving the list (frozen).
const MARK: usize = 1;
/// Tag on a null `next`: the queue is closed; nothing can be appended.
const SEAL: usize = 2;

// `MARK | SEAL` live in the low bits of a node pointer: nodes must be
// aligned to at least 4 (their `AtomicUsize` fields make them 8 on every
// target with atomics); crossbeam-epoch would silently drop a tag that does
// not fit.
const _: () = assert!(std::mem::align_of::<Node<u8>>() > (MARK | SEAL));

/// Bytes of exhausted segments a queue keeps for reuse (`crate::spares`):
/// about a bag of 64 segments of `u64`s, which the epoch frees in one burst.
const SPARE_BYTES: usize = 64 * 1024;

struct Node<T> {
    next: Atomic<Node<T>>,
    /// 1 for data nodes (the list's), 2 for reservations and offers (list +
    /// waiting party).
    refs: AtomicUsize,
    /// A reservation's or an offer's slot; for a data node (a segment, or
    /// the initial dummy) an empty datum.
    slot: Slot<T>,
    /// A data node's values (`None` for the initial dummy, reservations and
    /// offers).
    cells: Option<Box<Segment<T>>>,
}

impl<T> Node<T> {
    /// A reservation, an offer, or (`Slot::taken`) the initial dummy.
    fn new(slot: Slot<T>) -> Owned<Self> {
        // Reservations and offers have a waiting party with its own reference.
        let refs = if slot.is_datum() { 1 } else { 2 };
        Owned::new(Node {
            next: Atomic::null(),
            refs: AtomicUsize::new(refs),
            slot,
            cells: None,
        })
    }

    /// A data node: a segment whose first cell holds `value`; a recycled
    /// one if `spares` has one.
    fn segment(value: T, spares: &Spares<Node<T>>, guard: &Guard) -> Owned<Self> {
        if let Some(node) = spares.take(guard) {
            // SAFETY: a spare is ours alone, from `Owned::new` (a `Box`),
            // and was reset (`reset_segment`) before it went to the pool.
            // Its fields are reached through the raw pointer (a stale
            // `Spares::take` may read `next`; see `crate::spares`).
            unsafe {
                match (*node).cells.as_mut() {
                    Some(cells) => cells.store_first(value),
                    None => unreachable!("only segments are recycled"),
                }
                return Owned::from_raw(node);
            }
        }
        Owned::new(Node {
            next: Atomic::null(),
            refs: AtomicUsize::new(1),
            slot: Slot::taken(),
            cells: Some(Box::new(Segment::with_first(value))),
        })
    }

    /// Roughly what a segment node occupies: the spares' budget unit.
    fn segment_bytes() -> usize {
        std::mem::size_of::<Node<T>>()
            + std::mem::size_of::<Segment<T>>()
            + Segment::<T>::capacity() * std::mem::size_of::<T>()
    }

    /// Resets a retired segment node and keeps it in `spares` for reuse (or
    /// frees it if the pool is full).
    ///
    /// # Safety
    ///
    /// `node` is a segment node from `Owned::new` (or a spare) that no
    /// thread can reach: it left the list and its grace period is over. It
    /// has one reference.
    unsafe fn recycle(node: *const Node<T>, spares: &Spares<Node<T>>) {
        let node = node as *mut Node<T>;
        // SAFETY: the caller's contract.
        unsafe {
            Node::reset_segment(node);
            spares.put(node);
        }
    }

    /// Makes a segment node that no thread can reach fresh again: unlinked,
    /// every cell `EMPTY`.
    ///
    /// # Safety
    ///
    /// As [`recycle`](Self::recycle), or the node was never published.
    unsafe fn reset_segment(node: *mut Node<T>) {
        // SAFETY: the caller's contract: ours alone (nothing points into a
        // segment node but the list, which it left or never joined). Field
        // by field through the raw pointer: a stale `Spares::take` may read
        // `next` (see `crate::spares`).
        unsafe {
            debug_assert_eq!(
                (*node).refs.load(Ordering::Relaxed),
                1,
                "a data node has one reference"
            );
            // Relaxed: ours alone; published again by `Spares::put`'s Release.
            (*node).next.store(Shared::null(), Ordering::Relaxed);
            debug_assert!((*node).slot.is_datum(), "a data node's slot never changes");
            match (*node).cells.as_mut() {
                Some(cells) => cells.reset(),
                None => unreachable!("only segments are recycled"),
            }
        }
    }

    /// Drops one reference; the last one frees the node. Never drops a value:
    /// whoever takes a value moves it out first.
    ///
    /// # Safety
    ///
    /// `node` came from `Node::new`, the caller owns one of its references,
    /// and no one will touch the node through that reference again.
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

    /// Whether this is a reservation or an offer that is over.
    fn is_dead(&self) -> bool {
        self.slot.is_dead()
    }

    /// How many values a consumer could take from this node now: the
    /// stored values of a segment, 1 for a live offer (a snapshot).
    fn values(&self) -> usize {
        match &self.cells {
            Some(cells) => cells.ready_values(),
            None => usize::from(self.slot.is_offer() && self.slot.is_offered()),
        }
    }
}

// SAFETY: a spare segment node is in no list, so nothing but the pool
// writes its `next` while it waits there, and `Spares::take` clears it before
// the node is published again. Owners of a spare reach its fields through the
// raw pointer (`Node::segment`, `reset_segment`, `Pending::into_value`).
unsafe impl<T> Spare for Node<T> {
    unsafe fn next_spare(this: *const Self) -> *mut Self {
        // SAFETY: the word is only read, never dereferenced, here.
        let guard = unsafe { epoch::unprotected() };
        // SAFETY: alive (the caller's contract); only `next` is read.
        unsafe { (*this).next.load(Ordering::Relaxed, guard) }.as_raw() as *mut Self
    }

    fn set_next_spare(&self, next: *mut Self) {
        self.next
            .store(Shared::from(next as *const Self), Ordering::Relaxed);
    }
}

/// Hands the list's reference of a node that just left the list to the epoch
/// collector; a segment goes to `spares` after its grace period.
///
/// # Safety
///
/// The caller won the CAS that removed `node` from the list (head advance or
/// unlink), so this runs once per node, and no new reference can be created.
unsafe fn retire<T>(guard: &Guard, node: Shared<'_, Node<T>>, spares: &Arc<Spares<Node<T>>>) {
    // The raw pointer itself, not an integer: `defer_unchecked` needs no
    // `Send`, and a pointer keeps its provenance (Miri checks it).
    let raw = node.as_raw();
    // SAFETY: the caller removed the node, which is still alive (we are
    // pinned); `cells` is fixed for a node's life in the list.
    if unsafe { node.deref() }.cells.is_some() {
        // The pool is shared with the deferred function, which may run
        // after the queue is gone (one `Arc` clone per segment, not per
        // value).
        let spares = Arc::clone(spares);
        // SAFETY: threads pinned now may still read the segment; the
        // deferred recycling runs only after they unpin, and then has the
        // node alone (a data node has only the list's reference). It drops
        // no `T`, so running it after the queue (and any borrow in `T`) is
        // gone is fine: a segment leaves only once exhausted, when each of
        // its cells that can still become READY has been claimed by a
        // consumer that pinned before its claim and takes the value before
        // it unpins (the producer of such a cell pinned before its claim
        // too). So the reset (and any `Segment::drop`) finds no value: no
        // READY cell at or above `deq` (a taken cell stays READY below it).
        unsafe { guard.defer_unchecked(move || Node::recycle(raw, &spares)) };
        return;
    }
    // SAFETY: threads pinned now may still read the node; the deferred
    // release runs only after they unpin. The closure drops no `T`, so
    // running it after the queue (and any borrow in `T`) is gone is fine:
    // values are moved out of reservations and offers before they leave.
    unsafe { guard.defer_unchecked(move || Node::release(raw)) }
}

/// A value that is either still in hand or already inside a node (a new
/// segment, or an offer) allocated for an append that has not succeeded yet.
enum Pending<T> {
    Value(T),
    Node(Owned<Node<T>>),
}

impl<T> Pending<T> {
    /// The value back in hand; a segment allocated for a lost append goes
    /// to `spares`.
    fn into_value(self, spares: &Arc<Spares<Node<T>>>, guard: &Guard) -> T {
        match self {
            Pending::Value(value) => value,
            Pending::Node(node) => {
                // Raw from here: the node may be a spare, whose `next` a stale
                // `Spares::take` may read, so no `&mut` to the whole node.
                let node = node.into_shared(guard).as_raw() as *mut Node<T>;
                // SAFETY: never published (its append lost), so ours alone.
                match unsafe { (*node).cells.as_mut() } {
                    Some(cells) => {
                        let value = cells.take_unpublished();
                        // SAFETY: as above; a segment node. It may have come
                        // from the pool, so it goes back after a grace period
                        // (`defer_put`).
                        unsafe {
                            Node::reset_segment(node);
                            Spares::defer_put(spares, node, guard);
                        }
                        value
                    }
                    None => {
                        // SAFETY: an offer never linked (never a spare): its
                        // value is still there and we own it alone; the node
                        // (from `Owned::new`) is then freed without it.
                        let node = unsafe { Owned::from_raw(node) };
                        // SAFETY: as above: the offer's value, taken once.
                        unsafe { node.slot.take_data() }
                    }
                }
            }
        }
    }

    /// The node to append: a new segment, or (`offer`) an offer whose producer
    /// will wait for a consumer.
    fn into_node(self, offer: bool, spares: &Spares<Node<T>>, guard: &Guard) -> Owned<Node<T>> {
        match self {
            Pending::Value(value) if offer => Node::new(Slot::offer(value)),
            Pending::Value(value) => Node::segment(value, spares, guard),
            Pending::Node(node) => node,
        }
    }
}

/// How a producer's attempt ended.
enum Placed<T> {
    /// Stored, or handed to a waiting consumer.
    Done,
    /// No consumer waits and the caller asked for `Put::OnlyToWaiter`.
    NoConsumer(T),
    /// The queue is closed.
    Closed(T),
    /// An offer is linked; the caller holds the producer's reference and
    /// waits on it. `first` if nothing was in line before it.
    Offered { node: *const Node<T>, first: bool },
}

/// The result of one attempt to take a value or link a reservation.
enum Step<T> {
    Taken(T),
    Empty,
    Closed,
    /// A reservation is linked; `first` if nothing was in line before it.
    Linked {
        node: *const Node<T>,
        first: bool,
    },
}

/// A lock-free, unbounded, multi-producer multi-consumer FIFO **dual** queue.
///
/// [`pop`](Self::pop) on an empty queue links a reservation and waits;
/// [`push`](Self::push) hands its value to the oldest waiting reservation
/// directly. Values come out in FIFO order, and waiting consumers are served
/// in the order they joined the line (a blocking pop polls briefly first).
///
/// # Examples
///
/// ```
/// use dualq::DualQueue;
/// use std::sync::Arc;
/// use std::thread;
///
/// let q = Arc::new(DualQueue::new());
/// let consumer = {
///     let q = Arc::clone(&q);
///     thread::spawn(move || q.pop().unwrap()) // waits: the queue is empty
/// };
/// q.push("hello").unwrap(); // handed straight to the waiting consumer
/// assert_eq!(consumer.join().unwrap(), "hello");
/// ```
pub struct DualQueue<T> {
    head: CachePadded<Atomic<Node<T>>>,
    tail: CachePadded<Atomic<Node<T>>>,
    /// Set (first) by the close's linearization point; see the module docs.
    closed: CachePadded<AtomicBool>,
    /// Exhausted segments kept for reuse (`crate::spares`).
    spares: Arc<Spares<Node<T>>>,
    _marker: PhantomData<T>,
}

// SAFETY: values of type `T` move between threads through the queue, which is
// all `T: Send` permits; every shared access goes through atomics or a slot
// protocol that gives each value one owner at a time.
unsafe impl<T: Send> Send for DualQueue<T> {}
// SAFETY: as above; `&DualQueue` only lets a thread push (send) or pop (take
// ownership of) values, never share a `&T`.
unsafe impl<T: Send> Sync for DualQueue<T> {}

impl<T> DualQueue<T> {
    /// Creates an empty, open queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::<u64>::new();
    /// assert!(q.is_empty());
    /// ```
    pub fn new() -> Self {
        let dummy = Node::new(Slot::taken());
        // SAFETY: the queue is not shared yet; the guard is only used to turn
        // the fresh node into a pointer.
        let dummy = dummy.into_shared(unsafe { epoch::unprotected() });
        DualQueue {
            head: CachePadded::new(Atomic::from(dummy)),
            tail: CachePadded::new(Atomic::from(dummy)),
            closed: CachePadded::new(AtomicBool::new(false)),
            spares: Arc::new(Spares::with_budget(SPARE_BYTES, Node::<T>::segment_bytes())),
            _marker: PhantomData,
        }
    }

    /// Pushes `value`: hands it to the oldest waiting consumer if there is
    /// one, otherwise stores it at the back. Never blocks.
    ///
    /// # Errors
    ///
    /// [`PushError`] with the value if the queue is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::new();
    /// q.push(1).unwrap();
    /// assert_eq!(q.try_pop(), Ok(1));
    /// ```
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        match self.put(value, Put::Store) {
            Placed::Done => Ok(()),
            Placed::Closed(value) => Err(PushError(value)),
            Placed::NoConsumer(_) | Placed::Offered { .. } => unreachable!("push stores"),
        }
    }

    /// The producers' common path: hands `value` to the oldest waiting
    /// consumer if there is one; otherwise does what `put` says.
    fn put(&self, value: T, put: Put) -> Placed<T> {
        // Acquire: pairs with the Release store in `note_closed`/`close`.
        if self.closed.load(Ordering::Acquire) {
            return Placed::Closed(value);
        }
        let guard = &epoch::pin();
        let mut value = value;
        // Set once a consumer broke our cell: from then on we only append a
        // segment that already holds the value, so a slow producer meets at
        // most one broken cell (see `crate::segment`).
        let mut was_broken = false;
        if put == Put::Store {
            // The common case, decided without `head`: a free cell in the
            // last segment. A segment open to writers has nothing linked
            // after it (it is sealed first), so no consumer waits.
            // SAFETY: `tail` never points at a retired node while we are
            // pinned.
            if let Some(cells) = &unsafe { self.tail.load(Ordering::Acquire, guard).deref() }.cells
            {
                match cells.try_push(value) {
                    Ok(()) => return Placed::Done,
                    Err(refused) => {
                        was_broken = matches!(refused, Refused::Broken(_));
                        value = refused.into_value();
                    }
                }
            }
        }
        let mut pending = Pending::Value(value);
        loop {
            let head = self.head.load(Ordering::Acquire, guard);
            let tail = self.tail.load(Ordering::Acquire, guard);
            // SAFETY: `head` and `tail` never point at a retired node while we
            // are pinned (a node is retired only after it leaves the list).
            let (head_ref, tail_ref) = unsafe { (head.deref(), tail.deref()) };

            if head == tail || !tail_ref.slot.is_reservation() {
                // No reservations: store the value in the last segment, or
                // append a new segment (or an offer) after `tail`.
                if put == Put::OnlyToWaiter {
                    return Placed::NoConsumer(pending.into_value(&self.spares, guard));
                }
                let next = tail_ref.next.load(Ordering::Acquire, guard);
                if tail != self.tail.load(Ordering::Acquire, guard) {
                    continue;
                }
                if !next.with_tag(0).is_null() {
                    self.advance_tail(tail, guard);
                    continue;
                }
                if next.tag() & SEAL != 0 {
                    self.closed_at(tail_ref);
                    return Placed::Closed(pending.into_value(&self.spares, guard));
                }
                if let Some(cells) = &tail_ref.cells {
                    if put == Put::Store && !was_broken && !cells.refuses_writers() {
                        // A free cell in the last segment, after all. (A
                        // node allocated by a lost append is given up.)
                        match cells.try_push(pending.into_value(&self.spares, guard)) {
                            Ok(()) => return Placed::Done,
                            Err(refused) => {
                                was_broken = matches!(refused, Refused::Broken(_));
                                pending = Pending::Value(refused.into_value());
                            }
                        }
                    }
                    // Whatever we link now (a new segment, or an offer) goes
                    // behind every value stored in this segment: nothing is
                    // linked after a segment open to writers. (Idempotent: a
                    // full or broken segment may be sealed already.)
                    cells.seal();
                }
                // Release: publishes the node's contents; pairs with the
                // Acquire loads of `next`.
                match tail_ref.next.compare_exchange(
                    Shared::null(),
                    pending.into_node(put == Put::Offer, &self.spares, guard),
                    Ordering::Release,
                    Ordering::Relaxed,
                    guard,
                ) {
                    Ok(node) => {
                        let _ = self.tail.compare_exchange(
                            tail,
                            node,
                            Ordering::Release,
                            Ordering::Relaxed,
                            guard,
                        );
                        return match put {
                            Put::Offer => Placed::Offered {
                                node: node.as_raw(),
                                first: Self::is_front(head, tail, guard),
                            },
                            _ => Placed::Done,
                        };
                    }
                    Err(e) => pending = Pending::Node(e.new),
                }
            } else {
                // Reservations are queued: fulfil the oldest one.
                let first = head_ref.next.load(Ordering::Acquire, guard).with_tag(0);
                if head != self.head.load(Ordering::Acquire, guard) || first.is_null() {
                    continue;
                }
                // SAFETY: reached from `head` while pinned.
                let first_ref = unsafe { first.deref() };
                if !first_ref.slot.is_reservation() {
                    continue; // stale snapshot: the queue changed mode
                }
                match first_ref
                    .slot
                    .fulfil(pending.into_value(&self.spares, guard), &self.closed)
                {
                    Fulfil::Delivered => {
                        self.advance_head(head, first, guard);
                        return Placed::Done;
                    }
                    Fulfil::Closed(value) => {
                        self.advance_head(head, first, guard);
                        return Placed::Closed(value);
                    }
                    Fulfil::NotWaiting(value) => {
                        // Dead at the front: help remove it, then retry.
                        pending = Pending::Value(value);
                        self.advance_head(head, first, guard);
                    }
                }
            }
        }
    }

    /// Takes the oldest value, waiting for one if the queue is empty.
    ///
    /// The thread first polls briefly (a spin phase of `try_pop`s); if that
    /// finds nothing, it joins the line of waiting consumers, which are served
    /// in the order they joined. It then spins briefly if it is first in line,
    /// and parks; it holds no epoch guard and uses no CPU while parked.
    /// [`reserve`](Self::reserve) joins the line at once.
    ///
    /// # Errors
    ///
    /// [`PopError`] if the queue is closed and no value is stored (values
    /// stored before the close are still drained first).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::new();
    /// q.push(1).unwrap();
    /// q.close();
    /// assert_eq!(q.pop(), Ok(1));
    /// assert!(q.pop().is_err());
    /// ```
    pub fn pop(&self) -> Result<T, PopError> {
        self.pop_until(None).map_err(|_| PopError)
    }

    /// Takes the oldest value if there is one. Never blocks and never leaves
    /// a reservation behind. (If a push has claimed the next cell but not
    /// yet written it, this waits one bounded spin phase for it, then gives
    /// up on that cell; the push then stores its value further back.)
    ///
    /// # Errors
    ///
    /// [`TryPopError::Empty`] if no value is stored, [`TryPopError::Closed`]
    /// if additionally the queue is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use dualq::{DualQueue, TryPopError};
    ///
    /// let q = DualQueue::new();
    /// assert_eq!(q.try_pop(), Err(TryPopError::Empty));
    /// q.push(5).unwrap();
    /// assert_eq!(q.try_pop(), Ok(5));
    /// ```
    pub fn try_pop(&self) -> Result<T, TryPopError> {
        let guard = &epoch::pin();
        match self.take_or_link(false, &mut None, guard) {
            Step::Taken(value) => Ok(value),
            Step::Empty => Err(TryPopError::Empty),
            Step::Closed => Err(TryPopError::Closed),
            Step::Linked { .. } => unreachable!("try_pop never links"),
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
    /// if one was linked, is cancelled and unlinked), [`PopTimeoutError::Closed`] if the queue is
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
    /// use dualq::{DualQueue, PopTimeoutError};
    /// use std::time::Duration;
    ///
    /// let q = DualQueue::<i32>::new();
    /// assert_eq!(q.pop_timeout(Duration::from_millis(5)), Err(PopTimeoutError::Timeout));
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
    /// use dualq::DualQueue;
    /// use std::time::{Duration, Instant};
    ///
    /// let q = DualQueue::new();
    /// q.push(3).unwrap();
    /// assert_eq!(q.pop_deadline(Instant::now() + Duration::from_secs(1)), Ok(3));
    /// ```
    pub fn pop_deadline(&self, deadline: Instant) -> Result<T, PopTimeoutError> {
        self.pop_until(Some(deadline))
    }

    /// Takes a place in line now and returns it as a [`Reservation`]: the
    /// request half of [`pop`](Self::pop), whose follow-up (collecting the
    /// value) can come later, elsewhere.
    ///
    /// If a value is stored, the reservation takes the oldest one at once;
    /// if the queue is closed and empty, it is closed. Otherwise it is
    /// linked behind every consumer already waiting, and pushes serve it in
    /// that order. Dropping it cancels it; a value it received but nobody
    /// collected is pushed back at the back of the queue (see
    /// [`Reservation`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::new();
    /// let r = q.reserve();
    /// assert_eq!(q.waiting_consumers(), 1);
    /// q.push(1).unwrap();
    /// assert_eq!(r.wait(), Ok(1));
    /// ```
    pub fn reserve(&self) -> Reservation<'_, T> {
        let mut reservation = None;
        let guard = &epoch::pin();
        match self.take_or_link(true, &mut reservation, guard) {
            Step::Taken(value) => Reservation::ready(self, value),
            Step::Closed => Reservation::closed(self),
            Step::Empty => unreachable!("take_or_link links instead"),
            Step::Linked { node, first } => {
                // SAFETY: a linked node is not null.
                let node = unsafe { NonNull::new_unchecked(node.cast_mut()) };
                // SAFETY: we hold the waiter's reference: the node is alive.
                let slot = NonNull::from(unsafe { &node.as_ref().slot });
                // SAFETY: a linked reservation node of this queue; the
                // waiter's reference is handed over.
                unsafe { Reservation::linked(self, node.cast(), slot, WaitSpin::fine_if(first)) }
            }
        }
    }

    /// Takes the oldest value, waiting for one asynchronously: the async
    /// [`pop`](Self::pop). Sync and async consumers wait in one line, in
    /// order.
    ///
    /// The future takes its place in line on its first poll. Dropping it
    /// cancels the wait; a value handed to it before the drop goes back into
    /// the queue (at the back), never lost. Runtime-agnostic.
    ///
    /// # Errors
    ///
    /// [`PopError`] if the queue is closed and no value is stored.
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
    /// let q = dualq::DualQueue::new();
    /// q.push(5).unwrap();
    /// assert_eq!(block_on(q.pop_async()), Ok(5));
    /// q.close();
    /// assert!(block_on(q.pop_async()).is_err());
    /// ```
    pub fn pop_async(&self) -> PopFuture<'_, T> {
        PopFuture::new(self)
    }

    /// Hands `value` to a consumer and waits until one has taken it: a
    /// rendezvous (Java's `SynchronousQueue` / `LinkedTransferQueue`
    /// `transfer`).
    ///
    /// If consumers wait, the oldest one gets the value at once. Otherwise
    /// the value is linked at the back of the queue as an *offer*, and the
    /// call returns once a consumer took it: consumers take stored values
    /// and offers alike in FIFO order, so waiting producers are served
    /// oldest first.
    ///
    /// "Taken" means a consumer's pop or reservation received it: a
    /// [`Reservation`] that receives it and is then dropped gives it back
    /// to the queue (see there), and the transfer has still succeeded.
    ///
    /// # Errors
    ///
    /// [`PushError`] with the value if the queue is closed, or is closed
    /// while the value waits (a consumer that takes it first wins).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::thread;
    ///
    /// let q = dualq::DualQueue::new();
    /// thread::scope(|s| {
    ///     s.spawn(|| q.transfer("ping").unwrap()); // waits for the pop
    ///     assert_eq!(q.pop(), Ok("ping"));
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
    /// let q = dualq::DualQueue::new();
    /// let err = q.transfer_timeout(5, Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(err.into_inner(), 5);
    /// assert!(q.is_empty()); // a timed-out transfer leaves nothing behind
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

    /// Hands `value` to the oldest waiting consumer, only if one waits now.
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
    /// let q = dualq::DualQueue::new();
    /// assert_eq!(q.try_transfer(1), Err(TryTransferError::NoConsumer(1)));
    /// let r = q.reserve();
    /// assert_eq!(q.try_transfer(2), Ok(()));
    /// assert_eq!(r.wait(), Ok(2));
    /// ```
    pub fn try_transfer(&self, value: T) -> Result<(), TryTransferError<T>> {
        match self.put(value, Put::OnlyToWaiter) {
            Placed::Done => Ok(()),
            Placed::NoConsumer(value) => Err(TryTransferError::NoConsumer(value)),
            Placed::Closed(value) => Err(TryTransferError::Closed(value)),
            Placed::Offered { .. } => unreachable!("try_transfer links nothing"),
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
    /// producers wait in one line (consumers take from the oldest producer first).
    /// Dropping a pending future withdraws the offer: the value is then
    /// either taken already or dropped with the future, never both;
    /// [`TransferFuture::withdraw`] gets it back instead. Runtime-agnostic.
    ///
    /// # Errors
    ///
    /// [`PushError`] with the value if the queue is closed before a
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
    /// let x = dualq::DualQueue::new();
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
    /// right now: a snapshot that walks the queue (O(n)).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::<u8>::new();
    /// assert_eq!(q.waiting_producers(), 0);
    /// ```
    pub fn waiting_producers(&self) -> usize {
        self.count(|node| usize::from(node.slot.is_offer() && node.slot.is_offered()))
    }

    /// Closes the queue: wakes every waiting consumer, makes later pushes
    /// fail (handing their values back), and lets pops drain what is stored
    /// before they report closed. Returns `true` if this call closed it.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::<u8>::new();
    /// assert!(q.close());
    /// assert!(!q.close());
    /// assert!(q.is_closed());
    /// ```
    pub fn close(&self) -> bool {
        let guard = &epoch::pin();
        let (sealed_here, last) = loop {
            let tail = self.tail.load(Ordering::Acquire, guard);
            // SAFETY: `tail` is never retired while we are pinned.
            let tail_ref = unsafe { tail.deref() };
            let next = tail_ref.next.load(Ordering::Acquire, guard);
            if next.tag() & SEAL != 0 {
                break (false, tail_ref);
            }
            if !next.with_tag(0).is_null() {
                self.advance_tail(tail, guard);
                continue;
            }
            // Relaxed: the seal publishes nothing; its effect is the CAS
            // failure it causes for appenders.
            if tail_ref
                .next
                .compare_exchange(
                    Shared::null(),
                    Shared::null().with_tag(SEAL),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    guard,
                )
                .is_ok()
            {
                break (true, tail_ref);
            }
        };
        self.closed_at(last);
        // Wake every reservation still waiting. All were linked before the
        // seal, so all are reachable from `head`.
        let mut node = self.head.load(Ordering::Acquire, guard);
        while !node.is_null() {
            // SAFETY: reached from `head` while pinned.
            let node_ref = unsafe { node.deref() };
            node_ref.slot.close_waiting();
            node = node_ref.next.load(Ordering::Acquire, guard).with_tag(0);
        }
        sealed_here
    }

    /// Whether the queue is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::<u8>::new();
    /// assert!(!q.is_closed());
    /// q.close();
    /// assert!(q.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release store in `note_closed`.
        self.closed.load(Ordering::Acquire)
    }

    /// Whether no value is stored or offered (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::new();
    /// assert!(q.is_empty());
    /// q.push(1).unwrap();
    /// assert!(!q.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        let guard = &epoch::pin();
        let head = self.head.load(Ordering::Acquire, guard);
        // SAFETY: `head` is never retired while we are pinned.
        let mut node = unsafe { head.deref() }
            .next
            .load(Ordering::Acquire, guard)
            .with_tag(0);
        // Dead offers and drained segments at the front do not count; the
        // first other node decides (O(1) unless transfers timed out there or
        // consumers drained a segment that `head` has not passed yet).
        // SAFETY: every node is reached from `head` while pinned.
        while let Some(node_ref) = unsafe { node.as_ref() } {
            if node_ref.values() > 0 {
                return false;
            }
            if node_ref.slot.is_reservation() {
                return true;
            }
            node = node_ref.next.load(Ordering::Acquire, guard).with_tag(0);
        }
        true
    }

    /// The number of values a pop could take now (stored values and the
    /// offers of waiting transfers): a snapshot that walks the queue, so it
    /// costs O(n) and may be stale when it returns under concurrent use.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::new();
    /// q.push('a').unwrap();
    /// q.push('b').unwrap();
    /// assert_eq!(q.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.count(Node::values)
    }

    /// The number of consumers waiting right now: a snapshot that walks the
    /// queue (O(waiters)). A blocking `pop` still in its brief poll is not
    /// in line yet and not counted.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = dualq::DualQueue::<u8>::new();
    /// assert_eq!(q.waiting_consumers(), 0);
    /// ```
    pub fn waiting_consumers(&self) -> usize {
        self.count(|node| usize::from(node.slot.is_reservation() && node.slot.is_waiting()))
    }

    fn count(&self, counts: impl Fn(&Node<T>) -> usize) -> usize {
        let guard = &epoch::pin();
        let head = self.head.load(Ordering::Acquire, guard);
        // SAFETY: `head` is never retired while we are pinned.
        let mut node = unsafe { head.deref() }
            .next
            .load(Ordering::Acquire, guard)
            .with_tag(0);
        let mut n = 0;
        // SAFETY: every node is reached from `head` while pinned.
        while let Some(node_ref) = unsafe { node.as_ref() } {
            n += counts(node_ref);
            node = node_ref.next.load(Ordering::Acquire, guard).with_tag(0);
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

    /// One pop attempt: takes the oldest value, or reports empty/closed, or
    /// (if `link`) links a reservation for the caller to wait on.
    fn take_or_link(
        &self,
        link: bool,
        reservation: &mut Option<Owned<Node<T>>>,
        guard: &Guard,
    ) -> Step<T> {
        let mut saw_closed = false;
        loop {
            let head = self.head.load(Ordering::Acquire, guard);
            // SAFETY: never retired while we are pinned.
            let head_ref = unsafe { head.deref() };
            let first = head_ref.next.load(Ordering::Acquire, guard).with_tag(0);

            // The common case, decided without `tail`: the first node is a
            // segment. If it is still open to writers `head` cannot have
            // passed it (it becomes the dummy only once exhausted), so it is
            // the front of the queue even if our `head` is stale.
            // SAFETY: reached from `head` while pinned.
            if let Some(cells) = unsafe { first.as_ref() }.and_then(|f| f.cells.as_deref()) {
                match cells.try_take() {
                    Take::Taken(value) => return Step::Taken(value),
                    Take::Broken => {}
                    // Every value of `first` is claimed and none can come:
                    // it becomes the dummy.
                    Take::Exhausted => {
                        self.advance_head(head, first, guard);
                    }
                    // `first` is open to writers, so nothing follows it: no
                    // value is stored.
                    Take::Empty if !link => {
                        if let Some(step) = self.empty_or_closed(&mut saw_closed) {
                            return step;
                        }
                    }
                    // To link a reservation after `first`, first stop values
                    // from landing in it: then it drains (every claimed cell
                    // is taken or broken), becomes the dummy, and the
                    // reservation is linked after it.
                    Take::Empty => cells.seal(),
                }
                continue;
            }

            let tail = self.tail.load(Ordering::Acquire, guard);
            // SAFETY: never retired while we are pinned.
            let tail_ref = unsafe { tail.deref() };

            if head == tail || tail_ref.slot.is_reservation() {
                // No data. Help remove a dead reservation at the front, so
                // that timed-out consumers alone cannot pile up nodes.
                // SAFETY: reached from `head` while pinned.
                if let Some(first_ref) = unsafe { first.as_ref() } {
                    if first_ref.is_dead() {
                        self.advance_head(head, first, guard);
                        continue;
                    }
                    if !first_ref.slot.is_reservation() {
                        // A datum behind a lagging `tail` (its push is between
                        // its link and its tail CAS), or a stale snapshot:
                        // help `tail` along and look again, so a linked value
                        // is never reported missing.
                        self.advance_tail(tail, guard);
                        continue;
                    }
                }
                if !link {
                    match self.empty_or_closed(&mut saw_closed) {
                        Some(step) => return step,
                        None => continue,
                    }
                }
                let next = tail_ref.next.load(Ordering::Acquire, guard);
                if tail != self.tail.load(Ordering::Acquire, guard) {
                    continue;
                }
                if !next.with_tag(0).is_null() {
                    self.advance_tail(tail, guard);
                    continue;
                }
                if next.tag() & SEAL != 0 {
                    self.closed_at(tail_ref);
                    return Step::Closed;
                }
                let node = reservation
                    .take()
                    .unwrap_or_else(|| Node::new(Slot::reservation()));
                // Release: publishes the node; pairs with Acquire loads of `next`.
                match tail_ref.next.compare_exchange(
                    Shared::null(),
                    node,
                    Ordering::Release,
                    Ordering::Relaxed,
                    guard,
                ) {
                    Ok(node) => {
                        let _ = self.tail.compare_exchange(
                            tail,
                            node,
                            Ordering::Release,
                            Ordering::Relaxed,
                            guard,
                        );
                        return Step::Linked {
                            node: node.as_raw(),
                            first: Self::is_front(head, tail, guard),
                        };
                    }
                    Err(e) => *reservation = Some(e.new),
                }
            } else {
                // Data, and `first` is not a segment (handled above): an
                // offer, unless the snapshot is stale.
                // SAFETY: reached from `head` while pinned.
                let Some(first_ref) = (unsafe { first.as_ref() }) else {
                    continue;
                };
                if !first_ref.slot.is_offer() || head != self.head.load(Ordering::Acquire, guard) {
                    continue; // stale snapshot
                }
                // Claim the offer in place (a live offer is never past `head`
                // nor unlinked), then help it out of the list; a dead one is
                // only helped out.
                // SAFETY: reached from `head` while pinned.
                let taken = unsafe { first_ref.slot.take_offer() };
                self.advance_head(head, first, guard);
                if let Some(value) = taken {
                    return Step::Taken(value);
                }
            }
        }
    }

    /// A `try_pop` found no value: reports it, or (`None`) asks the caller
    /// to look once more because the queue is closed.
    fn empty_or_closed(&self, saw_closed: &mut bool) -> Option<Step<T>> {
        if *saw_closed {
            return Some(Step::Closed); // empty after `closed` was set
        }
        // SeqCst: orders the emptiness we just saw before the `closed` load;
        // pairs with the fence in `note_closed`.
        fence(Ordering::SeqCst);
        // Acquire: pairs with the Release store in `note_closed`, so the look
        // once more sees every append and every claim of a cell that preceded
        // the seals.
        if self.closed.load(Ordering::Acquire) {
            *saw_closed = true; // look once more: it is final now
            return None;
        }
        Some(Step::Empty)
    }

    /// Whether a node just linked after `pred` (the `tail` it was appended
    /// to, `head` read in the same snapshot) is first in line, so that its
    /// waiter should spin: `pred` is the dummy, or `pred` is a dead
    /// reservation or offer right after the dummy that `head` has not yet
    /// passed. The second case is the common one in a handoff chain: the
    /// party that completed `pred` moves `head` only after its completing
    /// CAS, and the woken waiter often links its next node first. Only a
    /// spinning policy depends on the answer, never correctness.
    fn is_front<'g>(
        head: Shared<'g, Node<T>>,
        pred: Shared<'g, Node<T>>,
        guard: &'g Guard,
    ) -> bool {
        if head == pred {
            return true;
        }
        // SAFETY: both were loaded (from `head`/`tail`) under `guard`, which
        // is still pinned: even if retired since, neither is freed before it
        // unpins.
        let (head_ref, pred_ref) = unsafe { (head.deref(), pred.deref()) };
        pred_ref.is_dead() && head_ref.next.load(Ordering::Acquire, guard).with_tag(0) == pred
    }

    /// Helps move `tail` from `tail` to its successor.
    fn advance_tail(&self, tail: Shared<'_, Node<T>>, guard: &Guard) {
        // SAFETY: never retired while we are pinned.
        let next = unsafe { tail.deref() }
            .next
            .load(Ordering::Acquire, guard)
            .with_tag(0);
        if !next.is_null() {
            let _ =
                self.tail
                    .compare_exchange(tail, next, Ordering::Release, Ordering::Relaxed, guard);
        }
    }

    /// Moves `head` from the dummy `head` onto `next`, which the caller has
    /// seen to be `head`'s successor and dead (a reservation no longer
    /// waiting) or an exhausted segment; never onto a waiting reservation, which would
    /// drop its waiter out of line. Freezes the dummy's `next` first when
    /// `next` is a reservation (module docs). Returns `true` if this call
    /// moved `head` (and retired the old dummy); `false` if `head` moved or
    /// its successor is no longer `next`.
    fn advance_head(
        &self,
        head: Shared<'_, Node<T>>,
        next: Shared<'_, Node<T>>,
        guard: &Guard,
    ) -> bool {
        // SAFETY: `head` was loaded from `self.head` and `next` from its
        // `next`, both while pinned.
        let (head_ref, next_ref) = unsafe { (head.deref(), next.deref()) };
        let mut current = head_ref.next.load(Ordering::Acquire, guard);
        loop {
            // The successor can change only by a sweep unlinking a cancelled
            // `next`; then the caller must look again.
            if current.with_tag(0) != next {
                return false;
            }
            // Only reservations and offers are ever unlinked from the
            // middle; a dummy followed by a segment needs no freeze.
            if current.tag() & MARK != 0 || next_ref.slot.is_datum() {
                break;
            }
            // AcqRel: the freeze orders against sweeps' CAS on this word.
            match head_ref.next.compare_exchange(
                current,
                next.with_tag(MARK),
                Ordering::AcqRel,
                Ordering::Acquire,
                guard,
            ) {
                Ok(_) => break,
                Err(e) => current = e.current,
            }
        }
        // Never let `head` pass `tail`: move `tail` first.
        if self.tail.load(Ordering::Acquire, guard) == head {
            let _ =
                self.tail
                    .compare_exchange(head, next, Ordering::Release, Ordering::Relaxed, guard);
        }
        // AcqRel: Release keeps our prior accesses to the dummy before its
        // retirement; Acquire pairs with other movers.
        if self
            .head
            .compare_exchange(head, next, Ordering::AcqRel, Ordering::Relaxed, guard)
            .is_ok()
        {
            // SAFETY: we won the CAS that removed `head` from the list.
            unsafe { retire(guard, head, &self.spares) };
            true
        } else {
            false
        }
    }

    /// Removes cancelled reservations: those right after the dummy by moving
    /// `head`, the others by unlinking (module docs). Leaves the last two
    /// nodes in place.
    fn sweep(&self, guard: &Guard) {
        'restart: loop {
            let head = self.head.load(Ordering::Acquire, guard);
            // SAFETY: never retired while we are pinned.
            let first = unsafe { head.deref() }
                .next
                .load(Ordering::Acquire, guard)
                .with_tag(0);
            // SAFETY: reached from `head` while pinned.
            let Some(first_ref) = (unsafe { first.as_ref() }) else {
                return;
            };
            if first_ref.is_dead() {
                self.advance_head(head, first, guard);
                continue 'restart;
            }
            let mut pred = first;
            // SAFETY: reached from `head` while pinned (each step below too).
            let mut cur = first_ref.next.load(Ordering::Acquire, guard).with_tag(0);
            while let Some(cur_ref) = unsafe { cur.as_ref() } {
                let next = cur_ref.next.load(Ordering::Acquire, guard);
                // Only cancelled reservations are unlinked. A frozen node that
                // is not one is a dummy `head` has passed (our walk is stale):
                // walking on is harmless, since no CAS on its frozen `next`
                // can succeed.
                if !cur_ref.slot.is_cancelled() {
                    pred = cur;
                    cur = next.with_tag(0);
                    continue;
                }
                if next.with_tag(0).is_null() {
                    return; // `cur` is last: it stays until something follows it
                }
                // Freeze `cur.next` so nothing can be unlinked after it.
                if next.tag() & MARK == 0
                    && cur_ref
                        .next
                        .compare_exchange(
                            next,
                            next.with_tag(MARK),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                            guard,
                        )
                        .is_err()
                {
                    continue; // `cur.next` changed; look at `cur` again
                }
                let succ = next.with_tag(0);
                // SAFETY: reached from `head` while pinned.
                let succ_next = unsafe { succ.deref() }.next.load(Ordering::Acquire, guard);
                if succ_next.with_tag(0).is_null() {
                    return; // `cur` is second to last: `tail` may point at it
                }
                // AcqRel; expects an unmarked `pred.next`, so it fails if
                // `pred` is itself leaving (a passed dummy or a cancelled node
                // being unlinked): then `cur` may already be gone.
                // SAFETY: `pred` was reached from `head` while pinned.
                match unsafe { pred.deref() }.next.compare_exchange(
                    cur,
                    succ,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    guard,
                ) {
                    Ok(_) => {
                        // SAFETY: we won the CAS that unlinked `cur`.
                        unsafe { retire(guard, cur, &self.spares) };
                        cur = succ;
                    }
                    Err(_) => continue 'restart,
                }
            }
            return;
        }
    }

    /// Called with the last node, whose `next` is sealed: seals its cells
    /// too (so no value can land in it any more), then notes the close.
    /// Every store of `closed` comes after both seals, so whoever sees
    /// `closed` also sees that the last segment takes no more values.
    fn closed_at(&self, last: &Node<T>) {
        if let Some(cells) = &last.cells {
            cells.seal();
        }
        self.note_closed();
    }

    /// Stores `closed` after seeing the seal, before reporting "closed", so no
    /// operation reports it ahead of the close's linearization point.
    fn note_closed(&self) {
        // Release: pairs with the Acquire loads in `push` and `is_closed`.
        self.closed.store(true, Ordering::Release);
        // SeqCst: the Dekker fence against `Slot::fulfil` and `try_pop`.
        fence(Ordering::SeqCst);
    }
}

impl<T> Drop for DualQueue<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no other thread can touch the queue, and no
        // waiter remains (waiters borrow the queue).
        let guard = unsafe { epoch::unprotected() };
        let head = self.head.load(Ordering::Relaxed, guard);
        // SAFETY: as above; the dummy's value is already gone.
        let mut rest = Chain {
            next: unsafe { head.deref() }
                .next
                .load(Ordering::Relaxed, guard)
                .as_raw(),
        };
        // SAFETY: the list's reference to the dummy (a drained segment, or
        // the initial dummy: no values).
        unsafe { Node::release(head.as_raw()) };
        // Freeing a segment drops the values it still holds. If one's `drop`
        // panics, unwinding drops `rest`, which frees the remaining nodes and
        // values; a second panic aborts, as in `Vec`.
        while rest.free_next() {}
    }
}

/// The nodes after the dummy of a queue being dropped.
struct Chain<T> {
    next: *const Node<T>,
}

impl<T> Chain<T> {
    /// Frees the next node (and a segment's values); `false` at the end.
    fn free_next(&mut self) -> bool {
        let node = self.next; // `as_raw` already stripped the tag bits
        if node.is_null() {
            return false;
        }
        // SAFETY: the queue is being dropped; this is the list's reference
        // to a node still in the list, and no waiter holds the other one.
        unsafe {
            self.next = (*node)
                .next
                .load(Ordering::Relaxed, epoch::unprotected())
                .as_raw();
            // An offer's value went to a consumer or back to its producer
            // (who has returned: it borrows the queue).
            Node::release(node);
            true
        }
    }
}

impl<T> Drop for Chain<T> {
    fn drop(&mut self) {
        while self.free_next() {}
    }
}

impl<T> Line<T> for DualQueue<T> {
    fn reserve(&self) -> Reservation<'_, T> {
        DualQueue::reserve(self)
    }

    fn remove_cancelled(&self) {
        self.sweep(&epoch::pin());
    }

    unsafe fn release(&self, node: NonNull<()>) {
        // SAFETY: the caller's contract: a reservation node of this queue
        // and the owner's reference.
        unsafe { Node::release(node.as_ptr().cast::<Node<T>>()) }
    }

    fn give_back(&self, value: T) -> Result<(), T> {
        self.push(value).map_err(PushError::into_inner)
    }

    fn offer(&self, value: T) -> Offered<T> {
        let (node, first) = match self.put(value, Put::Offer) {
            Placed::Done => return Offered::Done,
            Placed::Closed(value) => return Offered::Closed(value),
            Placed::NoConsumer(_) => unreachable!("an offer is linked instead"),
            Placed::Offered { node, first } => (node, first),
        };
        // SAFETY: a linked node is not null.
        let node = unsafe { NonNull::new_unchecked(node.cast_mut()) };
        // SAFETY: we hold the producer's reference: the node is alive.
        let slot = NonNull::from(unsafe { &node.as_ref().slot });
        // Spin before parking only if first in line: taken next.
        Offered::Linked {
            node: node.cast(),
            slot,
            spin: WaitSpin::fine_if(first),
        }
    }
}

impl<T> Default for DualQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for DualQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("DualQueue { .. }")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    // Natively and under Miri (which checks the reuse for data races and
    // borrow violations): segments retired by one thread's pops, recycled,
    // then reused by another thread's pushes while this one pops.
    #[test]
    fn recycled_segments_carry_values_between_threads() {
        let q = std::sync::Arc::new(DualQueue::new());
        let n = 3 * Segment::<u64>::capacity() as u64;
        for v in 0..n {
            q.push(v).unwrap();
        }
        for v in 0..n {
            assert_eq!(q.try_pop(), Ok(v));
        }
        crate::spares::until_recycled(|| q.spares.held(), 1);
        let producer = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || (n..3 * n).for_each(|v| q.push(v).unwrap()))
        };
        for v in n..3 * n {
            assert_eq!(q.pop(), Ok(v), "FIFO through recycled segments");
        }
        producer.join().unwrap();
        assert!(
            q.spares.reused.load(Ordering::Relaxed) > 0,
            "no push took a spare"
        );
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    // The consumer whose pop retires a segment also runs its recycling
    // (it flushes the epoch), while the producer appends: if the push finds
    // the spare, the reset made on the consumer's thread must reach it
    // (`Spares::put`'s Release, `take`'s Acquire); a stale `deq` or cell
    // state would lose or repeat a value.
    #[test]
    fn segment_recycled_on_one_thread_reused_on_another() {
        crate::sync::loom_model_long(
            "queue::segment_recycled_on_one_thread_reused_on_another",
            20_000,
            || {
                let q = Arc::new(DualQueue::new());
                for v in 1..=5 {
                    q.push(v).unwrap();
                }
                for v in 1..=4 {
                    assert_eq!(q.try_pop(), Ok(v));
                }
                let consumer = {
                    let q = Arc::clone(&q);
                    thread::spawn(move || {
                        // [3 4] is drained: `head` moves onto it, retiring
                        // [1 2] (the dummy since the pop of 3).
                        assert_eq!(q.try_pop(), Ok(5));
                        for _ in 0..3 {
                            epoch::pin().flush();
                        }
                    })
                };
                q.push(6).unwrap();
                q.push(7).unwrap();
                consumer.join().unwrap();
                let mut got = Vec::new();
                while let Ok(v) = q.try_pop() {
                    got.push(v);
                }
                assert_eq!(got, [6, 7], "each value once, in order");
            },
        );
    }

    // A segment is retired (head passes it), recycled after its grace
    // period, then reused by a push that races a pop: every value comes out
    // once and in order, so the reuse's reset and first value reach the
    // consumer (through the pool's Release/Acquire and the append's CAS),
    // and nothing of the segment's first life shows through.
    /// An empty queue whose pool holds one segment, and whose last segment
    /// has one free cell. 2-cell segments under loom: [1 2] [3 4] [5 _];
    /// draining them moves `head` onto [3 4], which retires [1 2].
    fn with_one_spare_segment() -> Arc<DualQueue<u32>> {
        let q = Arc::new(DualQueue::new());
        for v in 1..=5 {
            q.push(v).unwrap();
        }
        for v in 1..=5 {
            assert_eq!(q.try_pop(), Ok(v));
        }
        crate::spares::until_recycled(|| q.spares.held(), 1);
        q
    }

    // Two pushes meet a full last segment and race to append one; one of
    // them took the pool's spare. The loser stores its value in the
    // winner's segment and hands its own (perhaps the spare) back through
    // the epoch (`Spares::defer_put`): every value arrives once, after the
    // older ones.
    #[test]
    fn appends_race_and_the_loser_hands_its_segment_back() {
        crate::sync::loom_model_long(
            "queue::appends_race_and_the_loser_hands_its_segment_back",
            20_000,
            || {
                let q = with_one_spare_segment();
                q.push(6).unwrap(); // [5 6] is full
                let pusher = {
                    let q = Arc::clone(&q);
                    thread::spawn(move || q.push(7).unwrap())
                };
                q.push(8).unwrap();
                pusher.join().unwrap();
                let mut got = Vec::new();
                while let Ok(v) = q.try_pop() {
                    got.push(v);
                }
                assert_eq!(got[0], 6, "the older value first");
                got.sort_unstable();
                assert_eq!(got, [6, 7, 8], "each value once");
            },
        );
    }

    #[test]
    fn recycled_segment_races_a_pop() {
        crate::sync::loom_model_long("queue::recycled_segment_races_a_pop", 20_000, || {
            let q = with_one_spare_segment();
            let popper = {
                let q = Arc::clone(&q);
                thread::spawn(move || q.try_pop().ok())
            };
            q.push(6).unwrap(); // the free cell of [5 _]
            q.push(7).unwrap(); // a new segment: the recycled one
            assert_eq!(q.spares.held(), 0, "the push took the spare");
            let mut got: Vec<u32> = popper.join().unwrap().into_iter().collect();
            while let Ok(v) = q.try_pop() {
                got.push(v);
            }
            assert_eq!(got, [6, 7], "each value once, in order");
        });
    }
}
