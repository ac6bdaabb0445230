//! A connection-pool-style object pool on a `DualStack`: worker threads check
//! a connection out with `pop` (waiting when none is free) and give it back
//! with `push`. A returned connection goes straight to a waiting worker if
//! there is one (the one that started waiting last, whose cache is warmest),
//! otherwise on top of the stack, so the most recently used connection is the
//! next one handed out.
//!
//! ```text
//! cargo run --release --example pool
//! ```

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dualq::{DualStack, PopTimeoutError};

/// A pooled resource: stands in for a database connection.
struct Conn {
    id: usize,
    /// Requests served over this connection.
    served: u64,
}

impl Conn {
    /// "Runs a query": a little CPU work whose result we can check.
    fn query(&mut self, n: u64) -> u64 {
        self.served += 1;
        (0..1_000).fold(n, |acc, i| acc.rotate_left(5) ^ acc.wrapping_add(i))
    }
}

const WORKERS: usize = 8;
const CONNS: usize = 2;
const REQUESTS: usize = 2_000;

/// What one worker did.
#[derive(Default)]
struct Report {
    served: u64,
    waited: u64,
    gave_up: u64,
    checksum: u64,
}

fn main() {
    let pool = Arc::new(DualStack::new());
    for id in 0..CONNS {
        pool.push(Conn { id, served: 0 }).expect("pool is open");
    }

    let go = Arc::new(Barrier::new(WORKERS + 1));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (pool, go) = (Arc::clone(&pool), Arc::clone(&go));
            thread::spawn(move || {
                let mut report = Report::default();
                go.wait();
                for r in 0..REQUESTS {
                    let n = (w * REQUESTS + r) as u64;
                    // Most requests wait as long as it takes; every tenth has
                    // a deadline and gives up if no connection frees up in
                    // time (it never loses one: a connection handed over as
                    // the deadline passes is returned by `pop_timeout`).
                    let conn = match pool.try_pop() {
                        Ok(conn) => conn,
                        Err(_) if r % 10 == 0 => {
                            report.waited += 1;
                            match pool.pop_timeout(Duration::from_micros(50)) {
                                Ok(conn) => conn,
                                Err(PopTimeoutError::Timeout) => {
                                    report.gave_up += 1;
                                    continue;
                                }
                                Err(PopTimeoutError::Closed) => unreachable!("pool is open"),
                            }
                        }
                        Err(_) => {
                            report.waited += 1;
                            pool.pop().expect("pool is open")
                        }
                    };
                    let mut conn = conn;
                    report.checksum ^= conn.query(n);
                    report.served += 1;
                    pool.push(conn).expect("pool is open");
                }
                report
            })
        })
        .collect();
    go.wait();
    let start = Instant::now();
    let reports: Vec<Report> = workers
        .into_iter()
        .map(|w| w.join().expect("worker panicked"))
        .collect();
    let elapsed = start.elapsed();

    // Every connection came back: close the pool and drain it.
    pool.close();
    let mut conns = Vec::new();
    while let Ok(conn) = pool.pop() {
        conns.push(conn);
    }
    conns.sort_by_key(|c| c.id);
    assert_eq!(conns.len(), CONNS, "a connection went missing");

    let served: u64 = reports.iter().map(|r| r.served).sum();
    let waited: u64 = reports.iter().map(|r| r.waited).sum();
    let gave_up: u64 = reports.iter().map(|r| r.gave_up).sum();
    let by_conn: u64 = conns.iter().map(|c| c.served).sum();
    assert_eq!(served, by_conn, "requests and connection uses disagree");
    assert_eq!(served + gave_up, (WORKERS * REQUESTS) as u64);
    let checksum = reports.iter().fold(0, |acc, r| acc ^ r.checksum);

    println!(
        "{WORKERS} workers sharing {CONNS} connections: {served} requests served in {elapsed:.2?} \
         ({:.0} ns per request, query included)",
        elapsed.as_nanos() as f64 / served as f64
    );
    println!(
        "{waited} checkouts found the pool empty and waited; {gave_up} of the deadline-bound ones gave up"
    );
    for conn in &conns {
        println!("connection {}: served {} requests", conn.id, conn.served);
    }
    for (w, r) in reports.iter().enumerate() {
        println!(
            "worker {w}: {} served, {} waited, {} gave up",
            r.served, r.waited, r.gave_up
        );
    }
    println!("checksum {checksum:#018x}; pool closed and drained: all {CONNS} connections back");
}
