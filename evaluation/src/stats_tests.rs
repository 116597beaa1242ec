use proptest::prelude::*;

use crate::shape::{ClassificationShape, RegressionShape, Shape};
use crate::stats::{ClassificationCounts, Plausibility, RegressionCounts, Released, StatsError};

fn binary() -> ClassificationShape {
    ClassificationShape::new(2, 2, 4, 4.0, 4).unwrap()
}

#[test]
fn a_record_lands_in_its_cells() {
    let s = binary();
    let mut c = ClassificationCounts::new(s);
    c.add(1, 1, &[0.3, 0.7], 1.0).unwrap();
    let v = c.to_vector();
    assert_eq!(v.len(), 2 * 4 + 2 * 4 + 2);
    assert_eq!(v[s.confusion_index(1, 1, 1)], 1);
    assert_eq!(
        v[s.histogram_index(0, true, 2)],
        1,
        "0.7 of 4 bins is bin 2"
    );
    assert_eq!(v[s.count_index()], 1);
    assert_eq!(v[s.loss_index()], 1, "loss 1.0 of clip 4.0 in 4 units");
    assert_eq!(v.iter().sum::<i64>(), 4);
}

#[test]
fn bad_records_are_refused_and_count_nothing() {
    let mut c = ClassificationCounts::new(binary());
    let before = c.to_vector();
    for (group, label, scores, loss) in [
        (2, 0, vec![0.5, 0.5], 0.1),
        (0, 2, vec![0.5, 0.5], 0.1),
        (0, 0, vec![0.5], 0.1),
        (0, 0, vec![1.5, 0.5], 0.1),
        (0, 0, vec![f64::NAN, 0.5], 0.1),
        (0, 0, vec![0.5, 0.5], -1.0),
        (0, 0, vec![0.5, 0.5], f64::NAN),
    ] {
        assert!(c.add(group, label, &scores, loss).is_err());
    }
    assert_eq!(c.to_vector(), before);
}

#[test]
fn ties_predict_the_lowest_class_and_losses_are_clipped() {
    let s = binary();
    let mut c = ClassificationCounts::new(s);
    c.add(0, 1, &[0.5, 0.5], 1e9).unwrap();
    let v = c.to_vector();
    assert_eq!(v[s.confusion_index(0, 1, 0)], 1);
    assert_eq!(
        v[s.loss_index()],
        4,
        "clipped at loss_clip = loss_units units"
    );
}

#[test]
fn parse_refuses_impossible_vectors() {
    let shape = Shape::Classification(binary());
    let mut c = ClassificationCounts::new(binary());
    c.add(0, 1, &[0.3, 0.7], 1.0).unwrap();
    let good = c.to_vector();
    assert!(Released::parse(shape, good.clone(), Plausibility::Exact).is_ok());

    let short = good[1..].to_vec();
    assert!(matches!(
        Released::parse(shape, short, Plausibility::Exact),
        Err(StatsError::WrongLength {
            expected: 18,
            got: 17
        })
    ));
    let mut negative = good.clone();
    negative[0] = -1;
    negative[1] = 1;
    assert!(matches!(
        Released::parse(shape, negative, Plausibility::Exact),
        Err(StatsError::Impossible { index: 0, .. })
    ));
    let mut inflated = good.clone();
    inflated[0] += 5;
    assert!(Released::parse(shape, inflated, Plausibility::Exact).is_err());
    let mut lossy = good.clone();
    lossy[binary().loss_index()] = 5;
    assert!(Released::parse(shape, lossy, Plausibility::Exact).is_err());

    // With noise of std 2, -24 is the floor: -20 is plausible, -25 is not.
    let mut noisy = good.clone();
    noisy[0] = -20;
    assert!(Released::parse(shape, noisy.clone(), Plausibility::Noisy { std: 2.0 }).is_ok());
    noisy[0] = -25;
    assert!(Released::parse(shape, noisy, Plausibility::Noisy { std: 2.0 }).is_err());
    assert!(Released::parse(shape, good, Plausibility::Noisy { std: f64::NAN }).is_err());
}

#[test]
fn sums_refuse_other_shapes_and_overflow() {
    let shape = Shape::Classification(binary());
    let mut a = Released::zero(shape);
    let other = Released::zero(Shape::Regression(RegressionShape::new(1.0, 2).unwrap()));
    assert!(a.add(&other).is_err());
    let mut big = vec![0; shape.len()];
    big[0] = i64::MAX;
    let big = Released::parse(shape, big, Plausibility::Noisy { std: 0.0 }).unwrap();
    a.add(&big).unwrap();
    let before = a.clone();
    assert_eq!(a.add(&big), Err(StatsError::Overflow));
    assert_eq!(a, before, "a refused sum changes nothing");
}

#[test]
fn regression_sums_clip_and_quantise() {
    let shape = RegressionShape::new(2.0, 10).unwrap();
    let mut r = RegressionCounts::new(shape);
    r.add(1.0).unwrap();
    r.add(-5.0).unwrap();
    assert!(r.add(f64::INFINITY).is_err());
    // |1| = 5 units of 0.2, clipped |-5| = 2 → 10 units; 1² = 1 of 4 → 2.5 → 3 (rounded), 4 → 10.
    assert_eq!(r.to_vector(), vec![2, 15, 13]);
}

#[test]
fn shapes_refuse_degenerate_dimensions_on_construction_and_deserialisation() {
    assert!(ClassificationShape::new(1, 1, 10, 1.0, 1).is_err());
    assert!(ClassificationShape::new(2, 0, 10, 1.0, 1).is_err());
    assert!(ClassificationShape::new(2, 1, 1, 1.0, 1).is_err());
    assert!(ClassificationShape::new(2, 1, 10, f64::INFINITY, 1).is_err());
    assert!(ClassificationShape::new(2, 1, 10, 1.0, 0).is_err());
    assert!(ClassificationShape::new(2, 1, 5000, 1.0, 1).is_err());
    let json = r#"{"task":"classification","classes":1,"groups":1,"bins":10,"loss_clip":1.0,"loss_units":1}"#;
    assert!(serde_json::from_str::<Shape>(json).is_err());
    let shape = Shape::Classification(binary());
    let back: Shape = serde_json::from_str(&serde_json::to_string(&shape).unwrap()).unwrap();
    assert_eq!(back, shape);
}

fn record(k: usize, g: usize) -> impl Strategy<Value = (usize, usize, Vec<f64>, f64)> {
    (
        0..g,
        0..k,
        prop::collection::vec(0.0_f64..=1.0, k),
        0.0_f64..10.0,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The sensitivity the noise is calibrated to is exact: no record moves the vector by
    /// more, and the worst record moves it by exactly that much.
    #[test]
    fn one_record_moves_the_vector_by_at_most_the_sensitivity(
        k in 2_usize..6, g in 1_usize..4, b in 2_usize..12, units in 1_u32..16,
        records in prop::collection::vec(record(5, 3), 0..20),
        extra in record(5, 3),
    ) {
        let shape = ClassificationShape::new(k as u32, g as u32, b as u32, 2.0, units).unwrap();
        let sens = Shape::Classification(shape).sensitivity().unwrap();
        let mut site = ClassificationCounts::new(shape);
        for (group, label, scores, loss) in &records {
            site.add(group % g, label % k, &scores[..k], *loss).unwrap();
        }
        let before = site.to_vector();
        let (group, label, scores, loss) = extra;
        site.add(group % g, label % k, &scores[..k], loss).unwrap();
        let after = site.to_vector();
        let l1: i64 = before.iter().zip(&after).map(|(a, b)| (b - a).abs()).sum();
        let l2: f64 = before.iter().zip(&after).map(|(a, b)| ((b - a) as f64).powi(2)).sum::<f64>().sqrt();
        prop_assert!(l1 as f64 <= sens.l1() + 1e-9);
        prop_assert!(l2 <= sens.l2() + 1e-9);
        if loss >= 2.0 {
            prop_assert!((l1 as f64 - sens.l1()).abs() < 1e-9, "a record at the clip reaches Δ₁");
        }
    }

    /// Per-site vectors sum to the vector of the union of their records, cell for cell: what
    /// makes a federated confusion matrix equal the central one.
    #[test]
    fn site_vectors_sum_to_the_union(
        records in prop::collection::vec((record(3, 2), 0_usize..4), 0..60),
    ) {
        let shape = ClassificationShape::new(3, 2, 5, 3.0, 6).unwrap();
        let mut union = ClassificationCounts::new(shape);
        let mut sites = vec![ClassificationCounts::new(shape); 4];
        for ((group, label, scores, loss), site) in &records {
            union.add(*group, *label, scores, *loss).unwrap();
            sites[*site].add(*group, *label, scores, *loss).unwrap();
        }
        let mut sum = Released::zero(Shape::Classification(shape));
        for site in &sites {
            let r = Released::parse(Shape::Classification(shape), site.to_vector(), Plausibility::Exact).unwrap();
            sum.add(&r).unwrap();
        }
        prop_assert_eq!(sum.values(), &union.to_vector()[..]);
    }
}
