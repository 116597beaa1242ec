//! Server-side aggregation cost per upload and per round, at model sizes the issue names.
//!
//! Run: `cargo bench -p cohort-server --bench aggregate`.

// Inputs are fixed constants; any failure should abort the run loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use cohort_server::aggregate::{RoundKey, StreamingSum};
use cohort_server::domain::{ClientId, FederationId, RoundNumber, Weighting};
use cohort_server::strategy::{FedAdam, FitResults, Strategy};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const PARAMS: usize = 1_000_000;

fn key() -> RoundKey {
    RoundKey {
        federation: FederationId::parse("bench").unwrap(),
        round: RoundNumber::FIRST,
    }
}

fn streaming_add(c: &mut Criterion) {
    let update: Vec<f32> = (0..PARAMS).map(|i| (i % 97) as f32 * 1e-3).collect();
    let clients: Vec<ClientId> = (0..1024)
        .map(|i| ClientId::parse(&format!("c{i}")).unwrap())
        .collect();
    let mut group = c.benchmark_group("streaming_sum_add");
    group.throughput(Throughput::Bytes((PARAMS * 4) as u64));
    group.sample_size(20);
    group.bench_function(BenchmarkId::from_parameter(PARAMS), |b| {
        let mut next = 0usize;
        let mut sum = StreamingSum::new(key(), PARAMS, clients.clone(), Weighting::SampleCount);
        b.iter(|| {
            if next == clients.len() {
                sum = StreamingSum::new(key(), PARAMS, clients.clone(), Weighting::SampleCount);
                next = 0;
            }
            sum.add(&key(), &clients[next], black_box(&update), 100)
                .unwrap();
            next += 1;
        });
    });
    group.finish();
}

fn fedadam_step(c: &mut Criterion) {
    let current = vec![0.5f32; PARAMS];
    let delta: Vec<f32> = (0..PARAMS).map(|i| (i % 13) as f32 * 1e-4).collect();
    let client = ClientId::parse("c0").unwrap();
    let mut group = c.benchmark_group("fed_adam_aggregate_fit");
    group.sample_size(20);
    group.bench_function(BenchmarkId::from_parameter(PARAMS), |b| {
        let mut strategy = FedAdam::new(Weighting::Uniform, 0.1, 0.9, 0.99, 1e-9);
        b.iter_batched(
            || {
                let mut sum =
                    StreamingSum::new(key(), PARAMS, [client.clone()], Weighting::Uniform);
                sum.add(&key(), &client, &delta, 1).unwrap();
                FitResults::Summed(sum.finish())
            },
            |results| {
                strategy
                    .aggregate_fit(RoundNumber::FIRST, &current, results, &[])
                    .unwrap()
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, streaming_add, fedadam_step);
criterion_main!(benches);
