/*!
Federated evaluation's sufficient statistics and what a server derives from them.

# Brief overview
A site evaluates the federation's model on its held-out records and releases only counts:
[`ClassificationCounts`] (a K×K confusion matrix per group, per-class histograms of the predicted
score in B bins, the record count and the clipped loss sum) or [`RegressionCounts`] (the count
and clipped residual sums). [`Shape`] fixes the flat integer layout every site and the server
share, and the exact per-record sensitivity ([`Shape::sensitivity`]) that the release plan in
`cohort_privacy::integer_release` calibrates integer noise to. Integers sum exactly, so the
vectors travel through SecAgg+ or a plain upload alike and the server's sum is the union's
counts plus noise.

The server checks an arriving vector ([`Released::parse`]: length, and counts no records could
produce), sums, and derives a [`Report`]: accuracy, balanced accuracy, macro-F1, AUROC and
expected calibration error from the binned scores, loss; per group TPR, FPR, selection rate and
the equalized-odds and demographic-parity gaps. Every figure carries a delta-method 95 %
interval whose variance adds the known noise variance to the sampling of records
([`figure`]); figures and cells describing fewer than a minimum of (noisy) records are
[`Suppressed`], never shown as numbers.

```
use cohort_evaluation::{ClassificationCounts, ClassificationShape, Derivation, Plausibility,
    Released, Report, Shape};

let shape = ClassificationShape::new(2, 1, 10, 5.0, 8)?;
let mut site = ClassificationCounts::new(shape);
site.add(0, 1, &[0.2, 0.8], 0.22)?;
site.add(0, 0, &[0.9, 0.1], 0.11)?;
let released = Released::parse(Shape::Classification(shape), site.to_vector(), Plausibility::Exact)?;
let Report::Classification(report) =
    Report::derive(&released, Derivation { noise_variance: 0.0, min_count: 0 })
else { unreachable!() };
assert_eq!(report.accuracy.estimate(), Some(1.0));
assert_eq!(report.auroc.estimate(), Some(1.0));
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod figure;
pub mod metrics;
pub mod shape;
pub mod stats;

pub use figure::{Figure, Suppressed};
pub use metrics::{
    Cell, ClassRates, ClassificationReport, Derivation, GroupReport, RegressionReport, Report,
};
pub use shape::{ClassificationShape, RegressionShape, Shape, ShapeError};
pub use stats::{ClassificationCounts, Plausibility, RegressionCounts, Released, StatsError};

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod metrics_tests;
#[cfg(test)]
#[path = "stats_tests.rs"]
mod stats_tests;
