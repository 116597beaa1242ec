//! Criterion benchmarks for the accounting targets of issue 3:
//! RDP ε for 100,000 steps < 1 ms; PLD ε for 10,000 steps at q = 0.004, σ = 1.1 < 250 ms;
//! `would_exceed` on a ledger of 10,000 entries < 100 µs.
// Benchmarks are test code: fixed, valid inputs, where a panic is the right failure.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use cohort_privacy::EpsDelta;
use cohort_privacy::accounting::{Accountant, PldAccountant, RdpAccountant, SubsampledGaussian};
use criterion::{Criterion, criterion_group, criterion_main};

fn event(q: f64, sigma: f64) -> SubsampledGaussian {
    SubsampledGaussian::new(q, sigma).unwrap()
}

/// From nothing: one step's RDP at all 156 orders, ×100,000, converted to ε.
fn rdp_100k_steps(c: &mut Criterion) {
    c.bench_function("rdp_epsilon_100k_steps", |b| {
        b.iter(|| {
            let mut acc = RdpAccountant::new();
            acc.step(black_box(event(0.004, 1.1)), 100_000);
            acc.epsilon(1e-5).unwrap()
        })
    });
}

/// From nothing: build the PLD of one step, self-compose 10,000 times, read ε.
fn pld_10k_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("pld");
    group.sample_size(10);
    group.bench_function("pld_epsilon_10k_steps_q0.004_sigma1.1", |b| {
        b.iter(|| {
            let mut acc = PldAccountant::new();
            acc.step(black_box(event(0.004, 1.1)), 10_000);
            acc.epsilon(1e-5).unwrap()
        })
    });
    group.finish();
}

/// A ledger of 10,000 entries with 100 distinct (q, σ) settings, then the admission question
/// for the next round. "warm": the next round repeats the last setting (cached RDP vector);
/// "cold": a setting never seen, so its RDP vector is computed inside the timed call.
fn would_exceed_ledger(c: &mut Criterion) {
    let mut acc = RdpAccountant::new();
    for i in 0..10_000u32 {
        let setting = f64::from(i % 100);
        acc.step(event(0.001 + 0.0001 * setting, 1.0 + 0.01 * setting), 1);
    }
    let budget = EpsDelta::new(1e6, 1e-5).unwrap();
    let warm = [(event(0.001 + 0.0001 * 99.0, 1.0 + 0.01 * 99.0), 1)];
    c.bench_function("rdp_would_exceed_10k_ledger_warm", |b| {
        b.iter(|| acc.would_exceed(budget, black_box(&warm)).unwrap())
    });
    let mut sigma = 5.0;
    c.bench_function("rdp_would_exceed_10k_ledger_cold", |b| {
        b.iter(|| {
            // A fresh accountant clone has the history but not this σ in its cache.
            sigma += 1e-9;
            let cold = [(event(0.02, sigma), 1)];
            acc.would_exceed(budget, black_box(&cold)).unwrap()
        })
    });
}

criterion_group!(benches, rdp_100k_steps, pld_10k_steps, would_exceed_ledger);
criterion_main!(benches);
