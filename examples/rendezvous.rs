//! A rendezvous ping-pong: two threads pass a ball back and forth through
//! two `DualQueue`s with `transfer`, which returns only once the other side
//! has taken the ball. Nothing is ever buffered. Then a timed transfer that
//! nobody takes gets its value back, leaving the queue empty.
//!
//! ```text
//! cargo run --release --example rendezvous
//! ```

use std::thread;
use std::time::{Duration, Instant};

use dualq::{DualQueue, TransferTimeoutError};

const ROUNDS: usize = 20_000;

fn main() {
    let (to_b, to_a) = (DualQueue::new(), DualQueue::new());
    let start = Instant::now();
    thread::scope(|s| {
        s.spawn(|| {
            // Player B: takes the ball, hits it back, until A closes.
            while let Ok(ball) = to_b.pop() {
                to_a.transfer(ball + 1)
                    .expect("A closes only after the last round");
            }
        });
        // Player A.
        let mut ball = 0u64;
        for _ in 0..ROUNDS {
            to_b.transfer(ball).expect("B never closes");
            // `transfer` returned: B holds the ball, nothing waits in `to_b`
            // (a `push` would have returned at once, ball still queued).
            assert!(to_b.is_empty(), "transfer returned before the take");
            ball = to_a.pop().expect("B never closes") + 1;
        }
        to_b.close();
        assert_eq!(ball, 2 * ROUNDS as u64);
    });
    let per_round = start.elapsed() / ROUNDS as u32;
    println!("{ROUNDS} round trips by transfer, {per_round:?} per round trip");

    // Nobody takes it: the offer is withdrawn and the value comes back.
    let lonely = DualQueue::new();
    match lonely.transfer_timeout(String::from("hello?"), Duration::from_millis(20)) {
        Err(TransferTimeoutError::Timeout(back)) => {
            println!("not taken in 20 ms: got {back:?} back")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(lonely.is_empty() && lonely.waiting_producers() == 0);

    // A consumer that arrives later takes from the waiting producer.
    thread::scope(|s| {
        let producer = s.spawn(|| lonely.transfer(String::from("second try")));
        while lonely.waiting_producers() == 0 {
            thread::yield_now();
        }
        let got = lonely.pop().unwrap();
        producer.join().unwrap().unwrap();
        println!("a late consumer took {got:?} from the waiting producer");
    });
}
