use super::*;
use crate::accounting::SubsampledGaussian;
use crate::accounting::rdp::{default_orders, rdp_vector};
use crate::noise::discrete_gaussian::danger;
use proptest::prelude::*;

fn seeded_for(plan: &LatticeGaussian, tag: u8) -> DiscreteGaussianSampler {
    danger::seeded(plan.variance(), [tag; 32]).unwrap()
}

#[test]
fn the_plan_keeps_rounding_cheap_and_the_noise_at_least_z_times_the_sensitivity() {
    for (clip, z, d) in [
        (1.0, 1.0, 10usize),
        (0.5, 1.1, 100_000),
        (3.0, 0.3, 1_000_000),
        (1.0, 20.0, 5_000),
    ] {
        let plan = LatticeGaussian::plan(clip, z, d).unwrap();
        let root_d = (d as f64).sqrt();
        let scale = 2f64.powi(plan.bits());
        assert_eq!(plan.granularity(), clip / scale, "γ = clip / 2^p exactly");
        assert_eq!(plan.l2_sensitivity(), scale + root_d);
        assert!(
            root_d <= scale / 1024.0,
            "clip {clip} z {z} d {d}: p = {}",
            plan.bits()
        );
        let sigma = (plan.variance() as f64).sqrt();
        assert!(sigma >= z * plan.l2_sensitivity());
        assert!(plan.noise_multiplier() >= z);
        assert!(
            plan.noise_multiplier() <= z * (1.0 + 1e-6),
            "rounding σ² up costs little"
        );
        assert!((plan.std() - sigma * plan.granularity()).abs() <= 1e-12 * plan.std());
        // Against the query's units: std ≈ z·clip·(1 + √d/2^p).
        assert!(plan.std() >= z * clip && plan.std() <= z * clip * (1.0 + 1.0 / 512.0));
    }
}

#[test]
fn impossible_settings_are_refused() {
    assert!(LatticeGaussian::plan(1.0, 1e9, 1).is_err());
    assert!(
        LatticeGaussian::plan(1.0, 1e4, 100_000_000).is_err(),
        "z·√d > 2^24"
    );
    assert!(LatticeGaussian::plan(0.0, 1.0, 1).is_err());
    assert!(LatticeGaussian::plan(1.0, f64::NAN, 1).is_err());
    assert!(LatticeGaussian::plan(1.0, 1.0, 0).is_err());
    // A tiny z still gets σ ≥ 1 step, from a finer lattice.
    let tiny = LatticeGaussian::plan(1.0, 1e-3, 4).unwrap();
    assert!(tiny.variance() >= 1 && tiny.noise_multiplier() >= 1e-3);
}

#[test]
fn outputs_lie_on_the_lattice_and_carry_noise_of_the_planned_std() {
    let plan = LatticeGaussian::plan(2.0, 1.5, 50_000).unwrap();
    let original: Vec<f64> = (0..50_000).map(|i| (i as f64).sin() * 7.0).collect();
    let mut noised = original.clone();
    plan.apply(&mut noised, &mut seeded_for(&plan, 1)).unwrap();
    let gamma = plan.granularity();
    let n = noised.len() as f64;
    let mut sum = 0.0;
    let mut sum_sq = 0.0;
    for (x, y) in original.iter().zip(&noised) {
        let steps = y / gamma;
        assert_eq!(steps, steps.round(), "{y} is not on the lattice");
        let e = y - x;
        sum += e;
        sum_sq += e * e;
    }
    let mean = sum / n;
    let var = sum_sq / n - mean * mean;
    let std = plan.std();
    // Rounding adds at most γ/2 per coordinate, negligible against σγ; 5 standard errors.
    assert!(mean.abs() < 5.0 * std / n.sqrt() + gamma, "mean {mean}");
    let sd_tol = 5.0 * std * (2.0 / n).sqrt() * std;
    assert!(
        (var - std * std).abs() < sd_tol + gamma * std,
        "var {var} vs {}",
        std * std
    );
}

#[test]
fn nothing_changes_when_a_value_cannot_be_put_on_the_lattice() {
    let plan = LatticeGaussian::plan(1.0, 1.0, 3).unwrap();
    let mut values = vec![0.5, f64::INFINITY, 1.0];
    let err = plan
        .apply(&mut values, &mut seeded_for(&plan, 2))
        .unwrap_err();
    assert_eq!(err, NoiseError::Overflow { index: 1 });
    assert_eq!(values, vec![0.5, f64::INFINITY, 1.0]);
    let mut huge = vec![plan.granularity() * 1e17];
    assert!(plan.apply(&mut huge, &mut seeded_for(&plan, 2)).is_err());
    let other = LatticeGaussian::plan(1.0, 2.0, 3).unwrap();
    let mut fine = vec![0.25];
    assert!(
        plan.apply(&mut fine, &mut seeded_for(&other, 2)).is_err(),
        "a sampler of another variance is refused"
    );
}

#[test]
fn the_charge_is_the_gaussian_rdp_unsampled_and_never_below_it_sampled() {
    let plan = LatticeGaussian::plan(1.0, 1.2, 1_000).unwrap();
    let z = plan.noise_multiplier();
    let orders = default_orders();
    let unsampled = plan.rdp(1.0, orders);
    for (&alpha, &r) in orders.iter().zip(&unsampled) {
        if alpha.fract() == 0.0 {
            assert!((r - alpha / (2.0 * z * z)).abs() <= 1e-12 * r);
        }
    }
    let sampled = plan.rdp(0.05, orders);
    let gaussian = rdp_vector(SubsampledGaussian::new(0.05, z).unwrap(), orders);
    for ((&alpha, &s), &g) in orders.iter().zip(&sampled).zip(&gaussian) {
        assert!(
            s >= g * (1.0 - 1e-9),
            "α {alpha}: {s} below the Gaussian's {g}"
        );
        assert!(
            s <= alpha / (2.0 * z * z) * (1.0 + 1e-12),
            "never above unsampled"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The sensitivity argument itself: inputs at L2 distance ≤ clip round to lattice points
    /// at L2 distance ≤ 2^p + √d.
    #[test]
    fn rounding_moves_neighbours_apart_by_at_most_the_planned_sensitivity(
        base in prop::collection::vec(-50.0f64..50.0, 1..40),
        direction in prop::collection::vec(-1.0f64..1.0, 40),
        clip in 0.01f64..10.0,
        z in 0.5f64..5.0,
    ) {
        let d = base.len();
        let plan = LatticeGaussian::plan(clip, z, d).unwrap();
        let norm = direction[..d].iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        let gamma = plan.granularity();
        let distance: f64 = base
            .iter()
            .zip(&direction[..d])
            .map(|(x, v)| {
                let moved = x + v / norm * clip;
                let delta = (moved / gamma).round() - (x / gamma).round();
                delta * delta
            })
            .sum::<f64>()
            .sqrt();
        prop_assert!(distance <= plan.l2_sensitivity() * (1.0 + 1e-12));
    }
}
