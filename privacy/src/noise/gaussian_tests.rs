// Test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

const SQRT_2PI: f64 = 2.506_628_274_631_000_5;

/// P(a < Z < b) for a standard normal Z: Simpson's rule inside [−3, 3] (error ~1e-13 at this
/// step) and the continued fraction beyond, which is accurate for |x| ≥ 3.
fn probability_between(a: f64, b: f64) -> f64 {
    let upper_tail = |x: f64| -> f64 {
        // P(Z > x)
        if x >= 3.0 {
            tail_area(x) / SQRT_2PI
        } else if x <= -3.0 {
            1.0 - tail_area(-x) / SQRT_2PI
        } else {
            let steps = 20_000;
            let h = (3.0 - x) / f64::from(steps);
            let mut sum = density(x) + density(3.0);
            for k in 1..steps {
                let weight = if k % 2 == 1 { 4.0 } else { 2.0 };
                sum += weight * density(x + f64::from(k) * h);
            }
            sum * h / 3.0 / SQRT_2PI + tail_area(3.0) / SQRT_2PI
        }
    };
    upper_tail(a) - upper_tail(b)
}

fn draw(key: u8, std: f64, n: usize) -> Vec<f32> {
    let mut rng = AesCtrRng::from_key([key; 32]);
    let mut out = vec![f32::NAN; n];
    fill_normal_f32(&mut rng, std, &mut out);
    out
}

#[test]
fn every_layer_has_the_same_area_and_the_top_closes() {
    let t = &*TABLES;
    let area = t.x[0] * density(R);
    assert!((R * density(R) + tail_area(R) - area).abs() < 1e-15);
    for i in 1..LAYERS {
        let layer = t.x[i] * (density(t.x[i + 1]) - t.f[i]);
        // Layer 255 is bounded above by f(0) = 1.
        assert!(
            (layer / area - 1.0).abs() < 1e-9,
            "layer {i}: area {layer} against {area}"
        );
        assert!(t.x[i + 1] < t.x[i], "edges must decrease at {i}");
    }
    assert_eq!(t.x[LAYERS], 0.0);
    assert_eq!(t.x[1], R);
}

#[test]
fn the_integer_test_is_the_inner_rectangle() {
    let t = &*TABLES;
    for layer in 0..LAYERS {
        let k = t.inner[layer];
        let inside = |m: u32| (f64::from(m) + 0.5) / MANTISSA_SCALE * t.x[layer] < t.x[layer + 1];
        // Only the top layer, whose inner rectangle has width x[256] = 0, has no fast path.
        assert_eq!(k == 0, layer == LAYERS - 1, "layer {layer}");
        assert!(
            k == 0 || inside(k - 1),
            "layer {layer}: m = {k} - 1 must pass"
        );
        assert!(!inside(k), "layer {layer}: m = {k} must fail");
    }
    // About 98.5 % of draws take the fast path.
    let fast: f64 =
        t.inner.iter().map(|&k| f64::from(k)).sum::<f64>() / (MANTISSA_SCALE * LAYERS as f64);
    assert!((0.984..0.986).contains(&fast), "fast path {fast}");
}

#[test]
fn values_follow_the_normal_distribution_bin_by_bin() {
    let n = 1 << 22;
    let values = draw(1, 1.0, n);
    let mut edges = vec![f64::NEG_INFINITY, -4.0, -R];
    edges.extend((0..=12).map(|k| -3.0 + 0.5 * f64::from(k)));
    edges.extend([R, 4.0, f64::INFINITY]);
    let mut counts = vec![0u64; edges.len() - 1];
    for &v in &values {
        let v = f64::from(v);
        let bin = edges.partition_point(|&e| e <= v) - 1;
        counts[bin] += 1;
    }
    let mut chi2 = 0.0;
    for (bin, &count) in counts.iter().enumerate() {
        let expected = probability_between(edges[bin], edges[bin + 1]) * n as f64;
        chi2 += (count as f64 - expected).powi(2) / expected;
    }
    // 18 bins, 17 degrees of freedom: P(χ² > 60) ≈ 1e-6.
    assert!(chi2 < 60.0, "χ² = {chi2}, counts {counts:?}");
}

#[test]
fn moments_match_the_requested_deviation() {
    let n = 1 << 21;
    let values = draw(2, 2.5, n);
    let nf = n as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / nf;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / nf;
    let kurtosis = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(4))
        .sum::<f64>()
        / nf
        / (var * var);
    assert!(mean.abs() < 5.0 * 2.5 / nf.sqrt(), "mean {mean}");
    // The sample deviation's own deviation is σ/√(2n) ≈ 0.05 %.
    assert!((var.sqrt() / 2.5 - 1.0).abs() < 0.003, "std {}", var.sqrt());
    assert!((kurtosis - 3.0).abs() < 0.03, "kurtosis {kurtosis}");
    // Neighbours are uncorrelated (accepted draws are written in order, without gaps).
    let lag1 = values
        .windows(2)
        .map(|w| f64::from(w[0]) * f64::from(w[1]))
        .sum::<f64>()
        / (nf - 1.0)
        / var;
    assert!(lag1.abs() < 5.0 / nf.sqrt(), "lag-1 correlation {lag1}");
}

#[test]
fn the_tail_beyond_r_is_exact_not_truncated() {
    let mut rng = AesCtrRng::from_key([3; 32]);
    let t = &*TABLES;
    let tries = 200_000;
    let mut beyond = [0u64; 3];
    let cuts = [R + 0.25, 4.5, 5.0];
    for _ in 0..tries {
        // A base-layer draw whose mantissa lies outside the inner rectangle.
        let x = outside_inner(&mut rng, t, 0, (1 << 23) - 1).unwrap();
        assert!(x > R);
        for (count, cut) in beyond.iter_mut().zip(cuts) {
            *count += u64::from(x > cut);
        }
    }
    for (count, cut) in beyond.iter().zip(cuts) {
        let expected = tries as f64 * tail_area(cut) / tail_area(R);
        assert!(
            (*count as f64 - expected).abs() < 5.0 * expected.sqrt() + 1.0,
            "beyond {cut}: {count}, expected {expected:.1}"
        );
    }
}

#[test]
fn zero_deviation_gives_zeros_and_keys_give_their_own_streams() {
    assert!(draw(4, 0.0, 100).iter().all(|&v| v == 0.0));
    assert_eq!(draw(5, 1.0, 1000), draw(5, 1.0, 1000));
    assert_ne!(draw(5, 1.0, 1000), draw(6, 1.0, 1000));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Every slot is written with a finite value, and the deviation only scales: draws are
    /// accepted or rejected from the keystream alone, so one key gives the same z at any σ.
    #[test]
    fn fills_every_slot_and_scales_with_the_deviation(
        key in any::<u8>(),
        n in 0usize..5000,
        std in 0.001f64..1000.0,
    ) {
        let unit = draw(key, 1.0, n);
        let scaled = draw(key, std, n);
        prop_assert_eq!(scaled.len(), n);
        for (z, v) in unit.iter().zip(&scaled) {
            prop_assert!(v.is_finite());
            let expected = f64::from(*z) * std;
            prop_assert!(
                (f64::from(*v) - expected).abs() <= 1e-6 * expected.abs() + 1e-30,
                "{} against {}", v, expected
            );
        }
    }
}
