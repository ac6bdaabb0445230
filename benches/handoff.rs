//! Criterion benches for the workloads of BENCHMARKS.md (all but `mem`, which
//! `cargo run --release --example race` measures): one group per workload,
//! `dualq` and every peer that can run it in the same group (and, in the
//! pingpong group, the spin floor: a yardstick, not a peer).
//!
//! Times are per op: per message, per round trip for `pingpong`, per
//! pop+push pair for `pool`. Each iteration is one op; a sample runs the
//! workload in chunks of at most its BENCHMARKS.md size (so memory stays
//! bounded), and every chunk checks that what was received equals what was
//! sent. Thread spawning is outside the measured time.
//!
//! Defaults keep `cargo bench` to a few minutes: 10 samples, 1 s warm-up,
//! 3 s measurement per benchmark (criterion's command-line options such as
//! `--measurement-time` override them). Run one group with e.g.
//! `cargo bench --bench handoff -- pingpong`.
//!
//! `DUALQ_BENCH_THREADS` replaces the 8 of mpmc-8x8, fanout-1x8 and
//! pool-8t-2obj by a list of thread counts, for a scaling curve on a big
//! machine: `DUALQ_BENCH_THREADS=2,4,8,16,32 cargo bench --bench handoff`
//! runs mpmc-TxT, fanout-1xT and pool-Tt-2obj for each T.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

mod common;

use common::{
    async_contenders, async_rendezvous_contenders, async_workloads, contenders,
    rendezvous_contenders, rendezvous_workloads, spin_floor, threads_from_env, workloads,
    Contender, Workload,
};

fn handoff(c: &mut Criterion) {
    let threads = threads_from_env("DUALQ_BENCH_THREADS");
    for workload in workloads(&threads) {
        // The spin floor (not a peer) runs only in the pingpong group.
        let mut contenders = contenders();
        contenders.push(spin_floor());
        group(c, workload.name(), &workload, contenders);
    }
}

/// The rendezvous rows of issue 6: `transfer` against zero-capacity
/// channels (groups `rendezvous-spsc`, `rendezvous-mpmc-2x2`,
/// `rendezvous-pingpong`).
fn rendezvous(c: &mut Criterion) {
    for workload in rendezvous_workloads() {
        let name = format!("rendezvous-{}", workload.name());
        group(c, name, &workload, rendezvous_contenders());
    }
}

/// The async rows of issue 6: `pop_async` consumers on buffered structures
/// (groups `async-spsc`, ...) and `transfer_async` + `pop_async` against
/// zero-capacity channels (groups `async-rendezvous-spsc`, ...).
fn asynchronous(c: &mut Criterion) {
    for workload in async_workloads() {
        let name = format!("async-{}", workload.name());
        group(c, name, &workload, async_contenders());
    }
    for workload in async_workloads() {
        let name = format!("async-rendezvous-{}", workload.name());
        group(c, name, &workload, async_rendezvous_contenders());
    }
}

fn group(c: &mut Criterion, name: String, workload: &Workload, contenders: Vec<Contender>) {
    let mut group = c.benchmark_group(name);
    for contender in contenders {
        if !(contender.supports)(workload) {
            continue;
        }
        group.bench_function(contender.name, |b| {
            b.iter_custom(|ops| {
                let chunk = workload.full_ops();
                let mut left = ops;
                let mut total = Duration::ZERO;
                while left > 0 {
                    let n = left.min(chunk);
                    total += (contender.run)(workload, n);
                    left -= n;
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = handoff, rendezvous, asynchronous
}
criterion_main!(benches);
