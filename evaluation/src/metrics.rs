//! What a server derives from a released (summed, noisy) vector. Everything here is
//! post-processing of the release: it costs no privacy, and it never looks at anything else.

use serde::{Deserialize, Serialize};

use crate::figure::{Figure, Sampling, Suppressed, delta_method, share};
use crate::shape::{ClassificationShape, RegressionShape, Shape};
use crate::stats::Released;

/// How to derive: the noise each coordinate of the release carries, and the least noisy
/// count a figure or cell must describe to be shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Derivation {
    /// Per-coordinate noise variance of the released vector (0 with noise off).
    pub noise_variance: f64,
    /// Cells and figures describing fewer (noisy) records are suppressed.
    pub min_count: u64,
}

/// A count as tables show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cell {
    /// The noisy count.
    Count {
        /// Its value.
        value: i64,
    },
    /// Below the minimum: never shown as a number.
    Suppressed,
}

impl Cell {
    fn of(value: i64, min_count: u64) -> Self {
        if value >= 0 && value as u64 >= min_count {
            Self::Count { value }
        } else {
            Self::Suppressed
        }
    }

    /// The value, when shown.
    pub fn value(&self) -> Option<i64> {
        match self {
            Self::Count { value } => Some(*value),
            Self::Suppressed => None,
        }
    }
}

/// One class's rates within one group (one-vs-rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRates {
    /// The class treated as positive.
    pub class: usize,
    /// True-positive rate: P(predicted c | label c).
    pub tpr: Figure,
    /// False-positive rate: P(predicted c | label ≠ c).
    pub fpr: Figure,
    /// Selection rate: P(predicted c).
    pub selection_rate: Figure,
}

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The group's index in the federation's list of group values.
    pub group: usize,
    /// Its records.
    pub records: Cell,
    /// Accuracy within the group.
    pub accuracy: Figure,
    /// Rates per scored class (with two classes, the second only).
    pub rates: Vec<ClassRates>,
}

/// Everything derived from a classification release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Records evaluated.
    pub records: Figure,
    /// Share predicted correctly.
    pub accuracy: Figure,
    /// Mean recall over classes that have records.
    pub balanced_accuracy: Figure,
    /// Mean F1 over classes.
    pub macro_f1: Figure,
    /// Area under the ROC curve from the binned scores (one-vs-rest mean for K > 2).
    pub auroc: Figure,
    /// Class-wise expected calibration error over the score bins, each bin's confidence taken
    /// at its midpoint (so it is exact up to half a bin's width).
    pub ece: Figure,
    /// Mean loss (clipped, quantised).
    pub loss: Figure,
    /// The confusion matrix over all groups, `[true][predicted]`.
    pub confusion: Vec<Vec<Cell>>,
    /// Per group (one entry when no group column is set).
    pub groups: Vec<GroupReport>,
    /// The largest gap between two groups' TPR or FPR for any scored class.
    pub equalized_odds_gap: Figure,
    /// The largest gap between two groups' selection rates for any scored class.
    pub demographic_parity_difference: Figure,
}

/// Everything derived from a regression release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// Records evaluated.
    pub records: Figure,
    /// Mean absolute residual (clipped).
    pub mae: Figure,
    /// Mean squared residual (clipped).
    pub mse: Figure,
}

/// A report of either task.
// One report is built per evaluation and serialised at once: boxing the larger variant would
// save a few hundred bytes nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Report {
    /// Classification.
    Classification(ClassificationReport),
    /// Regression.
    Regression(RegressionReport),
}

impl Report {
    /// Derives every figure of `released`.
    pub fn derive(released: &Released, how: Derivation) -> Self {
        match released.shape() {
            Shape::Classification(shape) => {
                Self::Classification(classification(&shape, released.values(), how))
            }
            Shape::Regression(shape) => {
                Self::Regression(regression(&shape, released.values(), how))
            }
        }
    }
}

fn clamped(values: &[i64]) -> Vec<f64> {
    values.iter().map(|v| (*v).max(0) as f64).collect()
}

/// The record count as a figure: its only uncertainty is the noise.
fn count_figure(value: i64, how: Derivation) -> Figure {
    if value < 0 || (value as u64) < how.min_count || value == 0 {
        return Figure::suppressed(Suppressed::BelowMinimum);
    }
    Figure::with_std(
        value as f64,
        how.noise_variance.sqrt(),
        0.0,
        (0.0, f64::MAX),
    )
}

/// Accuracy of a K×K block.
fn accuracy_of(k: usize) -> impl Fn(&[f64]) -> Option<f64> {
    move |x: &[f64]| {
        let diag: f64 = (0..k).map(|i| x[i * k + i]).sum();
        let total: f64 = x.iter().sum();
        share(diag, total - diag)
    }
}

fn classification(
    s: &ClassificationShape,
    values: &[i64],
    how: Derivation,
) -> ClassificationReport {
    let k = s.classes();
    let g = s.groups();
    let x = clamped(values);
    let cells = k * k;
    let mut pooled = vec![0.0; cells];
    let mut pooled_raw = vec![0_i64; cells];
    for group in 0..g {
        for i in 0..cells {
            pooled[i] += x[group * cells + i];
            pooled_raw[i] = pooled_raw[i].saturating_add(values[group * cells + i]);
        }
    }
    let pooled_var = vec![how.noise_variance * g as f64; cells];
    let total: f64 = pooled.iter().sum();
    let multinomial = |f: &dyn Fn(&[f64]) -> Option<f64>| {
        delta_method(
            &pooled,
            &pooled_var,
            total,
            how.min_count,
            Sampling::Multinomial,
            (0.0, 1.0),
            f,
        )
    };
    let accuracy = multinomial(&accuracy_of(k));
    let balanced_accuracy = multinomial(&|x: &[f64]| {
        let recalls: Vec<f64> = (0..k)
            .filter_map(|t| {
                let row = &x[t * k..(t + 1) * k];
                share(row[t], row.iter().sum::<f64>() - row[t])
            })
            .collect();
        (!recalls.is_empty()).then(|| recalls.iter().sum::<f64>() / recalls.len() as f64)
    });
    let macro_f1 = multinomial(&|x: &[f64]| {
        let f1s: Vec<f64> = (0..k)
            .filter_map(|c| {
                let tp = x[c * k + c];
                let row: f64 = x[c * k..(c + 1) * k].iter().sum();
                let col: f64 = (0..k).map(|t| x[t * k + c]).sum();
                share(2.0 * tp, row + col - 2.0 * tp)
            })
            .collect();
        (!f1s.is_empty()).then(|| f1s.iter().sum::<f64>() / f1s.len() as f64)
    });

    let (auroc, ece) = score_figures(s, &x, how);
    let count = values[s.count_index()];
    let loss_block = [x[s.count_index()], x[s.loss_index()]];
    let per_unit = s.loss_clip() / f64::from(s.loss_units());
    let loss = delta_method(
        &loss_block,
        &[how.noise_variance; 2],
        loss_block[0],
        how.min_count,
        Sampling::NotModelled,
        (0.0, s.loss_clip()),
        |b| (b[0] > 0.0).then(|| b[1] * per_unit / b[0]),
    );
    let confusion = (0..k)
        .map(|t| {
            (0..k)
                .map(|p| Cell::of(pooled_raw[t * k + p], how.min_count))
                .collect()
        })
        .collect();
    let groups: Vec<GroupReport> = (0..g)
        .map(|group| {
            group_report(
                s,
                group,
                &x[group * cells..(group + 1) * cells],
                values,
                how,
            )
        })
        .collect();
    let (equalized_odds_gap, demographic_parity_difference) = gaps(&groups);
    ClassificationReport {
        records: count_figure(count, how),
        accuracy,
        balanced_accuracy,
        macro_f1,
        auroc,
        ece,
        loss,
        confusion,
        groups,
        equalized_odds_gap,
        demographic_parity_difference,
    }
}

/// AUROC and ECE from the score histograms of every scored class.
fn score_figures(s: &ClassificationShape, x: &[f64], how: Derivation) -> (Figure, Figure) {
    let b = s.bins();
    let scored = s.scored_classes().len();
    let start = s.histogram_index(0, true, 0);
    let block = &x[start..start + 2 * scored * b];
    let var = vec![how.noise_variance; block.len()];
    let support = (0..scored)
        .map(|n| {
            let pos: f64 = block[2 * n * b..(2 * n + 1) * b].iter().sum();
            let neg: f64 = block[(2 * n + 1) * b..(2 * n + 2) * b].iter().sum();
            pos.min(neg)
        })
        .fold(f64::INFINITY, f64::min);
    let auroc = delta_method(
        block,
        &var,
        support,
        how.min_count,
        Sampling::Multinomial,
        (0.0, 1.0),
        |h| mean_over(scored, |n| binned_auroc(&h[2 * n * b..(2 * n + 2) * b], b)),
    );
    let ece = delta_method(
        block,
        &var,
        support,
        how.min_count,
        Sampling::Multinomial,
        (0.0, 1.0),
        |h| mean_over(scored, |n| binned_ece(&h[2 * n * b..(2 * n + 2) * b], b)),
    );
    (auroc, ece)
}

fn mean_over(n: usize, f: impl Fn(usize) -> Option<f64>) -> Option<f64> {
    let mut sum = 0.0;
    for i in 0..n {
        sum += f(i)?;
    }
    Some(sum / n as f64)
}

/// AUROC of one class from its positive (first `b`) and negative (next `b`) histograms:
/// P(score⁺ > score⁻) + ½ P(same bin), the trapezoidal area under the binned ROC curve.
pub fn binned_auroc(h: &[f64], b: usize) -> Option<f64> {
    let (pos, neg) = h.split_at(b);
    let p: f64 = pos.iter().sum();
    let n: f64 = neg.iter().sum();
    if p <= 0.0 || n <= 0.0 {
        return None;
    }
    let mut below = 0.0;
    let mut area = 0.0;
    for bin in 0..b {
        area += pos[bin] * (below + 0.5 * neg[bin]);
        below += neg[bin];
    }
    Some(area / (p * n))
}

/// Class-wise ECE of one class: Σ_bins |positives − midpoint·records| / records.
pub fn binned_ece(h: &[f64], b: usize) -> Option<f64> {
    let (pos, neg) = h.split_at(b);
    let total: f64 = pos.iter().sum::<f64>() + neg.iter().sum::<f64>();
    if total <= 0.0 {
        return None;
    }
    let gap: f64 = (0..b)
        .map(|bin| {
            let mid = (bin as f64 + 0.5) / b as f64;
            (pos[bin] - mid * (pos[bin] + neg[bin])).abs()
        })
        .sum();
    Some(gap / total)
}

fn group_report(
    s: &ClassificationShape,
    group: usize,
    block: &[f64],
    values: &[i64],
    how: Derivation,
) -> GroupReport {
    let k = s.classes();
    let var = vec![how.noise_variance; block.len()];
    let raw_total = values[group * k * k..(group + 1) * k * k]
        .iter()
        .fold(0_i64, |a, v| a.saturating_add(*v));
    let total: f64 = block.iter().sum();
    let figure = |support: f64, f: &dyn Fn(&[f64]) -> Option<f64>| {
        delta_method(
            block,
            &var,
            support,
            how.min_count,
            Sampling::Multinomial,
            (0.0, 1.0),
            f,
        )
    };
    let rates = s
        .scored_classes()
        .map(|c| {
            let row = |x: &[f64]| -> (f64, f64) {
                let tp = x[c * k + c];
                (tp, x[c * k..(c + 1) * k].iter().sum::<f64>() - tp)
            };
            let column = |x: &[f64]| -> (f64, f64) {
                let fp: f64 = (0..k).filter(|t| *t != c).map(|t| x[t * k + c]).sum();
                let negatives = x.iter().sum::<f64>() - x[c * k..(c + 1) * k].iter().sum::<f64>();
                (fp, negatives - fp)
            };
            let (tp, fneg) = row(block);
            let (fp, tn) = column(block);
            ClassRates {
                class: c,
                tpr: figure(tp + fneg, &|x| {
                    let (a, b) = row(x);
                    share(a, b)
                }),
                fpr: figure(fp + tn, &|x| {
                    let (a, b) = column(x);
                    share(a, b)
                }),
                selection_rate: figure(total, &|x| {
                    let predicted: f64 = (0..k).map(|t| x[t * k + c]).sum();
                    share(predicted, x.iter().sum::<f64>() - predicted)
                }),
            }
        })
        .collect();
    GroupReport {
        group,
        records: Cell::of(raw_total, how.min_count),
        accuracy: figure(total, &accuracy_of(k)),
        rates,
    }
}

/// The largest difference between two shown groups' figure, with the two standard errors
/// combined (the groups' records, and so their noise, are disjoint).
fn largest_gap<'a>(figures: impl Iterator<Item = Vec<&'a Figure>>) -> Figure {
    let mut best: Option<(f64, &Figure, &Figure)> = None;
    for per_group in figures {
        let shown: Vec<&Figure> = per_group
            .into_iter()
            .filter(|f| f.estimate().is_some())
            .collect();
        let Some(hi) = shown.iter().copied().max_by(|a, b| {
            a.estimate()
                .partial_cmp(&b.estimate())
                .unwrap_or(std::cmp::Ordering::Equal)
        }) else {
            continue;
        };
        let Some(lo) = shown.iter().copied().min_by(|a, b| {
            a.estimate()
                .partial_cmp(&b.estimate())
                .unwrap_or(std::cmp::Ordering::Equal)
        }) else {
            continue;
        };
        if shown.len() < 2 {
            continue;
        }
        let gap = hi.estimate().unwrap_or(0.0) - lo.estimate().unwrap_or(0.0);
        if best.is_none_or(|(g, _, _)| gap > g) {
            best = Some((gap, hi, lo));
        }
    }
    let Some((gap, hi, lo)) = best else {
        return Figure::suppressed(Suppressed::Undefined);
    };
    let parts = |f: &Figure| match f {
        Figure::Value {
            noise_std,
            sampling_std,
            ..
        } => (*noise_std, *sampling_std),
        Figure::Suppressed { .. } => (0.0, 0.0),
    };
    let (hn, hs) = parts(hi);
    let (ln, ls) = parts(lo);
    Figure::with_std(gap, hn.hypot(ln), hs.hypot(ls), (0.0, 1.0))
}

fn gaps(groups: &[GroupReport]) -> (Figure, Figure) {
    let Some(first) = groups.first() else {
        return (
            Figure::suppressed(Suppressed::Undefined),
            Figure::suppressed(Suppressed::Undefined),
        );
    };
    let classes = first.rates.len();
    let per = |pick: fn(&ClassRates) -> &Figure| {
        (0..classes)
            .map(move |i| groups.iter().map(|g| pick(&g.rates[i])).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let mut odds = per(|r| &r.tpr);
    odds.extend(per(|r| &r.fpr));
    (
        largest_gap(odds.into_iter()),
        largest_gap(per(|r| &r.selection_rate).into_iter()),
    )
}

fn regression(s: &RegressionShape, values: &[i64], how: Derivation) -> RegressionReport {
    let x = clamped(values);
    let var = [how.noise_variance; RegressionShape::LEN];
    let clip = s.residual_clip();
    let units = f64::from(s.units());
    let mean = |index: usize, scale: f64| {
        delta_method(
            &x,
            &var,
            x[0],
            how.min_count,
            Sampling::NotModelled,
            (0.0, scale),
            move |b| (b[0] > 0.0).then(|| b[index] * scale / units / b[0]),
        )
    };
    RegressionReport {
        records: count_figure(values[0], how),
        mae: mean(1, clip),
        mse: mean(2, clip * clip),
    }
}
