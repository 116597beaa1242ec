//! Throughput of the Skellam sampler over a model-sized vector.
//!
//! Run: `cargo bench -p cohort-privacy --bench skellam`. Each case adds noise to 1,000,000
//! coordinates; μ spans the Knuth branch of `rand_distr::Poisson` (μ < 12) and its rejection
//! branch, up to shares used for large federations.

#![allow(clippy::unwrap_used)] // a bench that cannot build its input should stop loudly

use cohort_privacy::noise::{SkellamSampler, skellam::danger};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const COORDS: usize = 1_000_000;

fn sampler(c: &mut Criterion) {
    let mut group = c.benchmark_group("skellam_add_to_1M");
    group.throughput(Throughput::Elements(COORDS as u64));
    group.sample_size(10);
    for mu in [1.0, 10.0, 100.0, 1.0e4, 1.0e8] {
        group.bench_with_input(BenchmarkId::from_parameter(mu), &mu, |b, &mu| {
            let mut s = danger::seeded(mu, [7; 32]).unwrap();
            let mut update = vec![0_i64; COORDS];
            b.iter(|| {
                s.add_to(black_box(&mut update)).unwrap();
            });
        });
    }
    group.finish();

    // What a client actually runs: an OS-seeded sampler, split over two threads with fork().
    let mut group = c.benchmark_group("skellam_add_to_1M_two_threads");
    group.throughput(Throughput::Elements(COORDS as u64));
    group.sample_size(10);
    group.bench_function("mu=1e4", |b| {
        let mut root = SkellamSampler::from_os_entropy(1.0e4).unwrap();
        let mut update = vec![0_i64; COORDS];
        b.iter(|| {
            let (left, right) = update.split_at_mut(COORDS / 2);
            let mut a = root.fork();
            let mut c = root.fork();
            std::thread::scope(|scope| {
                scope.spawn(|| a.add_to(left).unwrap());
                scope.spawn(|| c.add_to(right).unwrap());
            });
        });
    });
    group.finish();
}

criterion_group!(benches, sampler);
criterion_main!(benches);
