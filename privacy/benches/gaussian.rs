//! Throughput of DP-SGD's Gaussian noise: one N(0, σ²) value per parameter of a 535,818-
//! parameter model (the `mlp` of `cohort bench dp-sgd`).
//!
//! Run: `cargo bench -p cohort-privacy --bench gaussian`. Side by side on the same AES-256-CTR
//! keystream: the single-precision ziggurat DP-SGD uses (one 32-bit word a value) and
//! rand_distr's double-precision `StandardNormal` rounded to `f32` (one 64-bit word a value),
//! which DP-SGD used before; plus the keystream alone, the floor of both.

use cohort_privacy::noise::gaussian::fill_normal_f32;
use cohort_privacy::rng::AesCtrRng;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand_distr::{Distribution, StandardNormal};
use std::hint::black_box;

const VALUES: usize = 535_818;

fn gaussian(c: &mut Criterion) {
    let mut group = c.benchmark_group("gaussian_535818_f32");
    group.throughput(Throughput::Elements(VALUES as u64));
    group.sample_size(20);
    group.bench_function("ziggurat_f32_cohort", |b| {
        let mut rng = AesCtrRng::from_key([7; 32]);
        let mut out = vec![0f32; VALUES];
        b.iter(|| fill_normal_f32(&mut rng, black_box(0.01), &mut out));
    });
    group.bench_function("rand_distr_standard_normal_f64", |b| {
        let mut rng = AesCtrRng::from_key([7; 32]);
        let mut out = vec![0f32; VALUES];
        b.iter(|| {
            for x in out.iter_mut() {
                let z: f64 = StandardNormal.sample(&mut rng);
                *x = (z * black_box(0.01)) as f32;
            }
        });
    });
    group.bench_function("aes_ctr_keystream_u32", |b| {
        let mut rng = AesCtrRng::from_key([7; 32]);
        let mut words = vec![0u32; VALUES];
        b.iter(|| rng.fill_u32(black_box(&mut words)));
    });
    group.finish();
}

criterion_group!(benches, gaussian);
criterion_main!(benches);
