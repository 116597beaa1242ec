use proptest::prelude::*;

use crate::figure::{Figure, Suppressed, Z95};
use crate::metrics::{Cell, ClassificationReport, Derivation, Report, binned_auroc};
use crate::shape::{ClassificationShape, RegressionShape, Shape};
use crate::stats::{ClassificationCounts, Plausibility, RegressionCounts, Released};

const EXACT: Derivation = Derivation {
    noise_variance: 0.0,
    min_count: 0,
};

fn report(shape: ClassificationShape, values: Vec<i64>, how: Derivation) -> ClassificationReport {
    let r = Released::parse(
        Shape::Classification(shape),
        values,
        Plausibility::Noisy { std: 1e6 },
    )
    .unwrap();
    match Report::derive(&r, how) {
        Report::Classification(c) => c,
        Report::Regression(_) => panic!("classification expected"),
    }
}

/// A binary shape's vector from a 2×2 confusion matrix `[[tn, fp], [fn, tp]]` in group 0.
fn binary_vector(shape: ClassificationShape, tn: i64, fp: i64, fneg: i64, tp: i64) -> Vec<i64> {
    let mut v = vec![0; shape.len()];
    v[shape.confusion_index(0, 0, 0)] = tn;
    v[shape.confusion_index(0, 0, 1)] = fp;
    v[shape.confusion_index(0, 1, 0)] = fneg;
    v[shape.confusion_index(0, 1, 1)] = tp;
    v[shape.count_index()] = tn + fp + fneg + tp;
    v
}

fn close(f: &Figure, want: f64) -> bool {
    f.estimate().is_some_and(|e| (e - want).abs() < 1e-9)
}

#[test]
fn binary_figures_match_their_definitions() {
    let shape = ClassificationShape::new(2, 1, 4, 1.0, 1).unwrap();
    let r = report(shape, binary_vector(shape, 50, 10, 5, 35), EXACT);
    assert!(close(&r.accuracy, 0.85));
    assert!(close(
        &r.balanced_accuracy,
        (50.0 / 60.0 + 35.0 / 40.0) / 2.0
    ));
    let f1_pos = 70.0 / (70.0 + 10.0 + 5.0);
    let f1_neg = 100.0 / (100.0 + 5.0 + 10.0);
    assert!(close(&r.macro_f1, (f1_pos + f1_neg) / 2.0));
    assert!(close(&r.records, 100.0));
    let rates = &r.groups[0].rates[0];
    assert_eq!(rates.class, 1);
    assert!(close(&rates.tpr, 35.0 / 40.0));
    assert!(close(&rates.fpr, 10.0 / 60.0));
    assert!(close(&rates.selection_rate, 45.0 / 100.0));
    assert_eq!(r.confusion[1][1], Cell::Count { value: 35 });
}

#[test]
fn intervals_add_the_known_noise_to_sampling() {
    let shape = ClassificationShape::new(2, 1, 4, 1.0, 1).unwrap();
    let v = binary_vector(shape, 50, 10, 5, 35);
    let exact = report(shape, v.clone(), EXACT);
    let Figure::Value {
        noise_std,
        sampling_std,
        low,
        high,
        ..
    } = exact.accuracy
    else {
        panic!("shown")
    };
    assert_eq!(noise_std, 0.0);
    // Binomial: sqrt(p(1-p)/n).
    assert!((sampling_std - (0.85_f64 * 0.15 / 100.0).sqrt()).abs() < 1e-9);
    assert!((high - low - 2.0 * Z95 * sampling_std).abs() < 1e-9);

    let noisy = report(
        shape,
        v,
        Derivation {
            noise_variance: 9.0,
            min_count: 0,
        },
    );
    let Figure::Value { noise_std, .. } = noisy.accuracy else {
        panic!("shown")
    };
    // r = a/(a+b): Var = (b² Var a + a² Var b)/n⁴ with 2 cells in each of a and b.
    let (a, b, n) = (85.0_f64, 15.0_f64, 100.0_f64);
    let want = ((b * b * 18.0 + a * a * 18.0) / n.powi(4)).sqrt();
    assert!((noise_std - want).abs() < 1e-9, "{noise_std} vs {want}");
}

#[test]
fn small_cells_and_figures_are_suppressed_never_shown() {
    let shape = ClassificationShape::new(2, 2, 4, 1.0, 1).unwrap();
    let mut v = binary_vector(shape, 50, 10, 5, 35);
    // Group 1 has three records.
    v[shape.confusion_index(1, 1, 1)] = 3;
    v[shape.count_index()] += 3;
    let r = report(
        shape,
        v,
        Derivation {
            noise_variance: 1.0,
            min_count: 8,
        },
    );
    assert_eq!(r.confusion[1][0], Cell::Suppressed, "5 < 8");
    assert_eq!(r.confusion[0][1], Cell::Count { value: 10 });
    assert_eq!(r.groups[1].records, Cell::Suppressed);
    assert_eq!(
        r.groups[1].rates[0].tpr,
        Figure::Suppressed {
            reason: Suppressed::BelowMinimum
        }
    );
    assert!(r.groups[0].rates[0].tpr.estimate().is_some());
    // With one group shown there is no gap to report.
    assert!(r.equalized_odds_gap.estimate().is_none());
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains("\"value\":5}"),
        "a suppressed cell leaks no number: {json}"
    );
}

#[test]
fn a_planted_bias_is_the_largest_equalized_odds_gap() {
    let shape = ClassificationShape::new(2, 3, 4, 1.0, 1).unwrap();
    let mut v = vec![0; shape.len()];
    let mut set = |g: usize, tn: i64, fp: i64, fneg: i64, tp: i64| {
        v[shape.confusion_index(g, 0, 0)] = tn;
        v[shape.confusion_index(g, 0, 1)] = fp;
        v[shape.confusion_index(g, 1, 0)] = fneg;
        v[shape.confusion_index(g, 1, 1)] = tp;
    };
    set(0, 90, 10, 10, 90);
    set(1, 88, 12, 9, 91);
    set(2, 90, 10, 60, 40); // TPR 0.4 instead of 0.9
    let r = report(shape, v, EXACT);
    assert!(close(&r.equalized_odds_gap, 0.91 - 0.4));
    assert!(close(
        &r.demographic_parity_difference,
        (91.0 + 12.0) / 200.0 - 50.0 / 200.0
    ));
}

#[test]
fn binned_auroc_handles_degenerate_histograms() {
    assert_eq!(binned_auroc(&[0.0, 0.0, 1.0, 1.0], 2), None, "no positives");
    assert_eq!(binned_auroc(&[0.0, 3.0, 3.0, 0.0], 2), Some(1.0));
    assert_eq!(
        binned_auroc(&[2.0, 0.0, 2.0, 0.0], 2),
        Some(0.5),
        "all tied"
    );
}

#[test]
fn regression_means_come_back_in_the_residuals_units() {
    let shape = RegressionShape::new(2.0, 100).unwrap();
    let mut c = RegressionCounts::new(shape);
    for r in [0.5, -1.0, 1.5] {
        c.add(r).unwrap();
    }
    let rel =
        Released::parse(Shape::Regression(shape), c.to_vector(), Plausibility::Exact).unwrap();
    let Report::Regression(r) = Report::derive(&rel, EXACT) else {
        panic!("regression")
    };
    assert!(close(&r.mae, 1.0));
    assert!((r.mse.estimate().unwrap() - (0.25 + 1.0 + 2.25) / 3.0).abs() < 0.02);
}

/// Exact AUROC by comparing every positive with every negative (ties count one half).
fn exact_auroc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Scores on bin centres lose nothing to binning: binned AUROC is the exact one.
    #[test]
    fn binned_auroc_is_exact_when_scores_sit_on_bin_centres(
        bins in 2_usize..40,
        labelled in prop::collection::vec((any::<bool>(), 0_usize..40), 2..80),
    ) {
        let shape = ClassificationShape::new(2, 1, bins as u32, 1.0, 1).unwrap();
        let mut c = ClassificationCounts::new(shape);
        let (mut pos, mut neg) = (vec![], vec![]);
        for (positive, bin) in &labelled {
            let p = ((bin % bins) as f64 + 0.5) / bins as f64;
            c.add(0, usize::from(*positive), &[1.0 - p, p], 0.0).unwrap();
            if *positive { pos.push(p) } else { neg.push(p) }
        }
        let r = report(shape, c.to_vector(), EXACT);
        if pos.is_empty() || neg.is_empty() {
            prop_assert!(r.auroc.estimate().is_none());
        } else {
            let got = r.auroc.estimate().unwrap();
            prop_assert!((got - exact_auroc(&pos, &neg)).abs() < 1e-12);
        }
    }

    /// Accuracy, balanced accuracy and every group's rates lie in [0, 1], intervals contain
    /// their estimate, and more noise never narrows an interval.
    #[test]
    fn figures_are_rates_and_noise_only_widens(
        cells in prop::collection::vec(0_i64..200, 18),
        variance in 0.0_f64..100.0,
    ) {
        let shape = ClassificationShape::new(3, 2, 2, 1.0, 1).unwrap();
        let mut v = vec![0; shape.len()];
        v[..18].copy_from_slice(&cells);
        let quiet = report(shape, v.clone(), EXACT);
        let loud = report(shape, v, Derivation { noise_variance: variance, min_count: 0 });
        for (q, l) in [(quiet.accuracy, loud.accuracy), (quiet.macro_f1, loud.macro_f1),
                       (quiet.balanced_accuracy, loud.balanced_accuracy)] {
            if let (Figure::Value { estimate, low, high, .. }, Some(ls)) = (q, l.std()) {
                prop_assert!((0.0..=1.0).contains(&estimate));
                prop_assert!(low <= estimate && estimate <= high);
                prop_assert!(ls + 1e-12 >= q.std().unwrap());
            }
        }
        let total: i64 = cells.iter().sum();
        let diag: i64 = (0..2).map(|g| (0..3).map(|t| cells[g * 9 + t * 3 + t]).sum::<i64>()).sum();
        if total > 0 {
            prop_assert!((quiet.accuracy.estimate().unwrap() - diag as f64 / total as f64).abs() < 1e-12);
        }
    }
}
