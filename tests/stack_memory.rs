//! Memory stays flat under timed-out waits on a `DualStack`: every cancelled
//! reservation is popped off the top or unspliced from below, also when a
//! permanent waiter sits under them. A counting global allocator measures
//! live heap bytes; its own binary, so other tests' allocations do not
//! interfere, and one `#[test]` running the cases in turn.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use dualq::{DualStack, PopTimeoutError};

/// Forwards to the system allocator, counting live bytes and allocations.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting on the side does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as i64, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Timed-out waits per case: a million in release builds; a quarter of that
/// in debug builds (so a million over the four cases), to keep `cargo test`
/// quick.
const WAITS: usize = if cfg!(debug_assertions) {
    250_000
} else {
    1_000_000
};

/// Live-heap growth allowed over a case: a few of crossbeam-epoch's garbage
/// bags and thread-local structures, far below what a leak of even 1% of the
/// reservations (each over 40 bytes) would add.
const SLACK: i64 = 256 * 1024;

/// Runs `threads` threads doing `WAITS` timed-out waits in all, after a
/// warm-up, and checks that live heap bytes did not grow by more than
/// [`SLACK`], and that the waits really pushed reservations (allocations).
fn flat_after_timeouts(s: &DualStack<u64>, threads: usize, what: &str) {
    let timed_waits = |n: usize| {
        thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| {
                    for _ in 0..n / threads {
                        // 1 µs: long enough that the pop pushes a reservation
                        // before its deadline passes, short enough that it
                        // times out right after its spin phase.
                        assert_eq!(
                            s.pop_timeout(Duration::from_micros(1)),
                            Err(PopTimeoutError::Timeout)
                        );
                    }
                });
            }
        });
    };
    timed_waits(WAITS / 20); // warm-up: thread-locals, epoch bags
    let live_before = LIVE.load(Relaxed);
    let allocs_before = ALLOCS.load(Relaxed);
    let start = Instant::now();
    timed_waits(WAITS);
    let took = start.elapsed();
    let grown = LIVE.load(Relaxed) - live_before;
    let allocs = ALLOCS.load(Relaxed) - allocs_before;
    eprintln!(
        "{what}: {WAITS} timed-out waits on {threads} thread(s) in {took:?}: live heap {grown:+} bytes, {allocs} allocations"
    );
    assert!(
        allocs as usize >= WAITS / 2,
        "{what}: only {allocs} allocations: the waits did not push reservations"
    );
    assert!(
        grown < SLACK,
        "{what}: live heap grew by {grown} bytes over {WAITS} timed-out waits"
    );
}

// A million timed-out waits (alone, concurrent, and over a permanent waiter) leave the live heap flat.
#[test]
fn timed_out_waits_leave_memory_flat() {
    let s = DualStack::<u64>::new();
    flat_after_timeouts(&s, 1, "alone");
    flat_after_timeouts(&s, 4, "4 threads");
    assert_eq!(s.waiting_consumers(), 0);

    thread::scope(|sc| {
        let permanent = sc.spawn(|| s.pop());
        let start = Instant::now();
        while s.waiting_consumers() != 1 {
            assert!(start.elapsed() < Duration::from_secs(60));
            thread::sleep(Duration::from_micros(50));
        }
        flat_after_timeouts(&s, 1, "over a permanent waiter");
        flat_after_timeouts(&s, 4, "4 threads over a permanent waiter");
        assert_eq!(s.waiting_consumers(), 1);
        s.push(7).unwrap();
        assert_eq!(permanent.join().unwrap(), Ok(7));
    });
    assert!(s.is_empty());
}
