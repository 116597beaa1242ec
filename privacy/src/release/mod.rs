/*!
Differentially private release of scalar statistics that leave a client.

# Brief overview
A client's evaluation loss, accuracy and sample counts are computed on its private data; sending
them in the clear would leak what DP-SGD protects. [`MetricsRelease`] noises them with opendp's
measurements and reports, in the ledger's [`EpsDelta`] unit, exactly what opendp's privacy
maps say the release costs.

**Charge before release.** [`MetricsRelease::prepare`] computes the noise scales and the cost
without drawing any noise; [`PreparedRelease::release_after_charging`] hands that cost to the
caller's ledger first and only draws noise (and returns values) if the ledger accepted it. A
crash between the two leaves the spend recorded and nothing released, which is the safe side.

```
use cohort_privacy::{EpsDelta, release::{MetricsRelease, Statistic}};

let budget = EpsDelta::new(0.5, 1e-6).unwrap();
let prepared = MetricsRelease::gaussian(budget)
    .statistic(Statistic::accuracy(0.91, 2_000))
    .statistic(Statistic::mean_loss(0.34, 5.0, 2_000))
    .statistic(Statistic::count("examples", 2_000, 10_000))
    .prepare()?;
let mut spent = EpsDelta::ZERO;
let released = prepared.release_after_charging(|cost| {
    spent = spent.compose_basic(cost); // a real client writes its fsynced ledger here
    Ok::<(), std::convert::Infallible>(())
})?;
assert!(released.charged().fits_within(&budget));
assert_eq!(released.values().len(), 3);
# Ok::<(), cohort_privacy::release::ReleaseError>(())
```

# How the cost is computed
Each statistic i is declared with bounds `[lower, upper]` and a sensitivity Δᵢ: the most it can
change when one example is added to or removed from the client's data (for a mean of values in
`[lower, upper]` over n examples, `(upper − lower)/n`). Values are divided by Δᵢ, so that
between neighbouring datasets *every* normalised coordinate moves by at most 1 (an ℓ∞ distance
of 1). Statistic i is then `select(i) ▷ make_gaussian` (or `make_laplace`) at a common scale,
the k measurements are joined with opendp's `make_composition`, and the total is converted to
(ε, δ) with `make_zCDP_to_approxDP` and `make_fix_delta(δ)` (Gaussian) or `make_approximate`
(Laplace, δ = 0). The scale is the
smallest (found by bisection on opendp's own map) whose cost fits the budget, and the reported
charge is that map's output at d_in = 1.

The budget is split evenly over the statistics. opendp adds its noise from its own CSPRNG
(rand's `thread_rng`, ChaCha reseeded from the operating system, since we build it without
OpenSSL), and its floating-point mechanisms account for their rounding in their maps.
*/

use opendp::{
    combinators::{
        make_approximate, make_chain_mt, make_composition, make_fix_delta, make_zCDP_to_approxDP,
    },
    core::{Function, Measure, Measurement, StabilityMap, Transformation},
    domains::{AtomDomain, VectorDomain},
    measurements::{make_gaussian, make_laplace},
    measures::{MaxDivergence, ZeroConcentratedDivergence},
    metrics::{AbsoluteDistance, LInfDistance},
};

use crate::EpsDelta;

/// Which opendp noise measurement the release uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mechanism {
    /// Gaussian noise under zCDP, converted to (ε, δ): needs δ > 0, adds less noise for several
    /// statistics.
    Gaussian,
    /// Laplace noise under pure ε-DP: charges δ = 0.
    Laplace,
}

/// One statistic to release, with the declaration its privacy cost rests on.
///
/// Invariant (checked by [`MetricsRelease::prepare`]): `lower < upper`, all numbers finite,
/// `value ∈ [lower, upper]` and `0 < sensitivity`. The *caller* vouches that Δ is a true bound
/// under add/remove-one-example neighbours — for means, that each example's contribution was
/// clamped to `[lower, upper]` before averaging.
#[derive(Debug, Clone, PartialEq)]
pub struct Statistic {
    name: String,
    value: f64,
    lower: f64,
    upper: f64,
    sensitivity: f64,
}

impl Statistic {
    /// A statistic with explicit bounds and sensitivity.
    pub fn bounded(
        name: impl Into<String>,
        value: f64,
        lower: f64,
        upper: f64,
        sensitivity: f64,
    ) -> Self {
        Self {
            name: name.into(),
            value,
            lower,
            upper,
            sensitivity,
        }
    }

    /// A mean over `n` examples whose values lie in `[lower, upper]`.
    ///
    /// Adding or removing one example moves such a mean by at most `(upper − lower)/n` when `n`
    /// is this dataset's size (by `|x − mean|/(n+1)` on adding, by `|x − mean'|/n` on removing).
    /// `n = 0` yields an infinite sensitivity, which `prepare` rejects.
    pub fn mean(name: impl Into<String>, value: f64, lower: f64, upper: f64, n: u64) -> Self {
        Self::bounded(name, value, lower, upper, (upper - lower) / n as f64)
    }

    /// Accuracy (fraction correct, in [0, 1]) over `n` evaluation examples.
    pub fn accuracy(value: f64, n: u64) -> Self {
        Self::mean("accuracy", value, 0.0, 1.0, n)
    }

    /// Mean loss over `n` examples, each example's loss clamped to `[0, max_loss]` by the caller.
    pub fn mean_loss(value: f64, max_loss: f64, n: u64) -> Self {
        Self::mean("loss", value, 0.0, max_loss, n)
    }

    /// A count in `[0, max]`; one example changes it by 1.
    pub fn count(name: impl Into<String>, value: u64, max: u64) -> Self {
        Self::bounded(name, value as f64, 0.0, max as f64, 1.0)
    }

    /// The statistic's name, carried to the released value.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), ReleaseError> {
        let bad = |reason: &'static str| {
            Err(ReleaseError::InvalidStatistic {
                name: self.name.clone(),
                reason,
            })
        };
        if !(self.lower.is_finite() && self.upper.is_finite()) {
            return bad("bounds must be finite");
        }
        if self.lower >= self.upper {
            return bad("the lower bound must be below the upper bound");
        }
        if !(self.sensitivity.is_finite() && self.sensitivity > 0.0) {
            return bad("sensitivity must be a finite number > 0 (a mean needs n ≥ 1)");
        }
        if !self.value.is_finite() {
            return bad("the value must be finite");
        }
        if !(self.lower..=self.upper).contains(&self.value) {
            // Out of bounds proves the declared sensitivity wrong; noising it anyway would
            // under-charge, so fail closed rather than clamp.
            return bad("the value lies outside its declared bounds");
        }
        Ok(())
    }
}

/// Why a release was refused. Nothing was released and nothing should be charged for it, except
/// for [`ReleaseError::ChargeRefused`], where the ledger itself said no.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A statistic's declaration is unusable.
    InvalidStatistic {
        /// The statistic's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The budget cannot pay for this mechanism (for example δ = 0 with the Gaussian).
    InvalidBudget(&'static str),
    /// A release needs at least one statistic.
    NoStatistics,
    /// opendp refused to build or run a measurement; the text is opendp's.
    OpenDp(String),
    /// The caller's ledger refused the charge, so no noise was drawn and nothing released.
    ChargeRefused(String),
}

impl std::fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidStatistic { name, reason } => {
                write!(f, "statistic {name:?} cannot be released: {reason}")
            }
            Self::InvalidBudget(reason) => write!(f, "invalid release budget: {reason}"),
            Self::NoStatistics => write!(f, "a release needs at least one statistic"),
            Self::OpenDp(e) => write!(f, "opendp refused the release: {e}"),
            Self::ChargeRefused(e) => write!(f, "the ledger refused the charge: {e}"),
        }
    }
}

impl std::error::Error for ReleaseError {}

fn opendp_error(e: opendp::error::Error) -> ReleaseError {
    match e.message {
        Some(m) => ReleaseError::OpenDp(format!("{}: {m}", e.variant)),
        None => ReleaseError::OpenDp(e.variant.to_string()),
    }
}

/// Builder for one release of one or more statistics under one budget.
#[derive(Debug, Clone)]
pub struct MetricsRelease {
    mechanism: Mechanism,
    budget: EpsDelta,
    statistics: Vec<Statistic>,
}

impl MetricsRelease {
    /// A Gaussian release costing at most `budget` (ε > 0 and δ > 0 required).
    pub fn gaussian(budget: EpsDelta) -> Self {
        Self {
            mechanism: Mechanism::Gaussian,
            budget,
            statistics: Vec::new(),
        }
    }

    /// A Laplace release costing at most `(epsilon, 0)`.
    pub fn laplace(epsilon: EpsDelta) -> Self {
        Self {
            mechanism: Mechanism::Laplace,
            budget: epsilon,
            statistics: Vec::new(),
        }
    }

    /// Adds a statistic to the release.
    pub fn statistic(mut self, statistic: Statistic) -> Self {
        self.statistics.push(statistic);
        self
    }

    /// Validates the declarations, calibrates the noise to the budget and computes the exact
    /// charge, without drawing any noise.
    pub fn prepare(self) -> Result<PreparedRelease, ReleaseError> {
        if self.statistics.is_empty() {
            return Err(ReleaseError::NoStatistics);
        }
        for s in &self.statistics {
            s.validate()?;
        }
        let (epsilon, delta) = (self.budget.epsilon(), self.budget.delta());
        if epsilon <= 0.0 {
            return Err(ReleaseError::InvalidBudget("epsilon must be > 0"));
        }
        if self.mechanism == Mechanism::Gaussian && delta <= 0.0 {
            return Err(ReleaseError::InvalidBudget(
                "the Gaussian mechanism needs delta > 0; use the Laplace mechanism for delta = 0",
            ));
        }
        let k = self.statistics.len();
        let (scale, measurement, charged) = calibrate(self.mechanism, k, epsilon, delta)?;
        Ok(PreparedRelease {
            statistics: self.statistics,
            mechanism: self.mechanism,
            scale,
            measurement,
            charged,
        })
    }
}

/// The composed measurement over the normalised statistics vector.
type Composed = Measurement<VectorDomain<AtomDomain<f64>>, LInfDistance<f64>, Cost, Vec<f64>>;

/// The output measure after conversion, one type for both mechanisms: (ε, δ).
type Cost = opendp::measures::Approximate<MaxDivergence>;

/// The coordinate picker: a normalised vector in, one of its coordinates out.
type Select = Transformation<
    VectorDomain<AtomDomain<f64>>,
    LInfDistance<f64>,
    AtomDomain<f64>,
    AbsoluteDistance<f64>,
>;

/// Picks coordinate `i` of the normalised vector: 1-stable from ℓ∞ to the absolute distance,
/// since |u_i − u'_i| ≤ max_j |u_j − u'_j|.
fn select(i: usize, k: usize) -> opendp::error::Fallible<Select> {
    Transformation::new(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()).with_size(k),
        LInfDistance::default(),
        AtomDomain::<f64>::new_non_nan(),
        AbsoluteDistance::default(),
        Function::new_fallible(move |v: &Vec<f64>| {
            v.get(i).copied().ok_or_else(|| {
                opendp::error::Error::from(opendp::error::ErrorVariant::FailedFunction)
            })
        }),
        StabilityMap::new_from_constant(1.0),
    )
}

/// One coordinate's noise, in normalised units, under output measure `MO`.
type CoordinateNoise<MO> = Measurement<AtomDomain<f64>, AbsoluteDistance<f64>, MO, f64>;

/// That noise applied to one coordinate of the normalised vector.
type OnCoordinate<MO> = Measurement<VectorDomain<AtomDomain<f64>>, LInfDistance<f64>, MO, f64>;

/// The same noise measurement on each of the k coordinates, ready for `make_composition`.
fn on_each_coordinate<MO: 'static + Measure>(
    noise: &CoordinateNoise<MO>,
    k: usize,
) -> opendp::error::Fallible<Vec<OnCoordinate<MO>>> {
    (0..k)
        .map(|i| make_chain_mt(noise, &select(i, k)?))
        .collect()
}

/// k statistics, each noised at `scale` (normalised units), composed and expressed in (ε, δ).
fn build(mechanism: Mechanism, k: usize, scale: f64, delta: f64) -> Result<Composed, ReleaseError> {
    let build = || -> opendp::error::Fallible<Composed> {
        match mechanism {
            Mechanism::Gaussian => {
                let noise = make_gaussian::<_, _, ZeroConcentratedDivergence>(
                    AtomDomain::<f64>::new_non_nan(),
                    AbsoluteDistance::default(),
                    scale,
                    None,
                )?;
                let zcdp = make_composition(on_each_coordinate(&noise, k)?)?;
                make_fix_delta(&make_zCDP_to_approxDP(zcdp)?, delta)
            }
            Mechanism::Laplace => {
                let noise = make_laplace::<_, _, MaxDivergence>(
                    AtomDomain::<f64>::new_non_nan(),
                    AbsoluteDistance::default(),
                    scale,
                    None,
                )?;
                make_approximate(make_composition(on_each_coordinate(&noise, k)?)?)
            }
        }
    };
    build().map_err(opendp_error)
}

/// ε charged by the measurement at scale `scale`, or `None` where opendp cannot map it.
fn cost_at(mechanism: Mechanism, k: usize, scale: f64, delta: f64) -> Option<(Composed, EpsDelta)> {
    let m = build(mechanism, k, scale, delta).ok()?;
    let (eps, del) = m.map(&1.0).ok()?;
    let charged = EpsDelta::new(eps, del).ok()?;
    Some((m, charged))
}

/// Bisection (in log scale) for the smallest noise scale whose opendp cost fits the budget.
fn calibrate(
    mechanism: Mechanism,
    k: usize,
    epsilon: f64,
    delta: f64,
) -> Result<(f64, Composed, EpsDelta), ReleaseError> {
    let budget_delta = match mechanism {
        Mechanism::Gaussian => delta,
        Mechanism::Laplace => 0.0,
    };
    let fits = |scale: f64| {
        cost_at(mechanism, k, scale, budget_delta)
            .filter(|(_, c)| c.epsilon() <= epsilon && c.delta() <= budget_delta)
    };
    // The analytic scale for pure ε is k/ε; the Gaussian needs no more than ~k·√(2 ln(1.25/δ))/ε.
    let guess = k as f64 / epsilon;
    let mut high = guess;
    let mut tries = 0;
    while fits(high).is_none() {
        high *= 4.0;
        tries += 1;
        if tries > 40 || !high.is_finite() {
            return Err(ReleaseError::InvalidBudget(
                "no noise scale opendp supports fits this budget",
            ));
        }
    }
    let mut low = high / 1.0e6;
    for _ in 0..100 {
        let mid = (low * high).sqrt();
        if fits(mid).is_some() {
            high = mid;
        } else {
            low = mid;
        }
        if high / low < 1.0 + 1e-9 {
            break;
        }
    }
    let (measurement, charged) = fits(high).ok_or_else(|| {
        ReleaseError::OpenDp("calibrated measurement no longer maps into the budget".into())
    })?;
    Ok((high, measurement, charged))
}

/// A calibrated release whose cost is known and whose noise is not yet drawn.
pub struct PreparedRelease {
    statistics: Vec<Statistic>,
    mechanism: Mechanism,
    scale: f64,
    measurement: Composed,
    charged: EpsDelta,
}

impl std::fmt::Debug for PreparedRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values stay out of Debug output: they are private until noised.
        f.debug_struct("PreparedRelease")
            .field(
                "statistics",
                &self
                    .statistics
                    .iter()
                    .map(Statistic::name)
                    .collect::<Vec<_>>(),
            )
            .field("mechanism", &self.mechanism)
            .field("scale", &self.scale)
            .field("charged", &self.charged)
            .finish()
    }
}

impl PreparedRelease {
    /// What this release will cost, as opendp's privacy map computes it (≤ the budget).
    pub fn charge(&self) -> EpsDelta {
        self.charged
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The noise standard deviation of each statistic, in its own units.
    pub fn noise_std(&self) -> Vec<f64> {
        let per_unit = match self.mechanism {
            Mechanism::Gaussian => self.scale,
            Mechanism::Laplace => std::f64::consts::SQRT_2 * self.scale,
        };
        self.statistics
            .iter()
            .map(|s| per_unit * s.sensitivity)
            .collect()
    }

    /// Charges the cost through `charge` (the caller's ledger) and, only if it succeeds, draws
    /// the noise and returns the released values.
    pub fn release_after_charging<E: std::fmt::Display>(
        self,
        charge: impl FnOnce(EpsDelta) -> Result<(), E>,
    ) -> Result<Released, ReleaseError> {
        charge(self.charged).map_err(|e| ReleaseError::ChargeRefused(e.to_string()))?;
        let values = self.draw()?;
        Ok(Released {
            values,
            charged: self.charged,
        })
    }

    fn draw(&self) -> Result<Vec<ReleasedStatistic>, ReleaseError> {
        let normalised: Vec<f64> = self
            .statistics
            .iter()
            .map(|s| s.value / s.sensitivity)
            .collect();
        let noisy = self.measurement.invoke(&normalised).map_err(opendp_error)?;
        let stds = self.noise_std();
        Ok(self
            .statistics
            .iter()
            .zip(noisy)
            .zip(stds)
            .map(|((s, u), noise_std)| ReleasedStatistic {
                name: s.name.clone(),
                value: u * s.sensitivity,
                noise_std,
            })
            .collect())
    }
}

/// One released (noised) statistic.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedStatistic {
    /// The statistic's name.
    pub name: String,
    /// The noised value, unbiased and unclamped (clamping to the bounds is free post-processing
    /// but biases the estimate, so it is left to the consumer).
    pub value: f64,
    /// Standard deviation of the noise that was added, in the statistic's units.
    pub noise_std: f64,
}

/// The outcome of a release: the noised values and what they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Released {
    values: Vec<ReleasedStatistic>,
    charged: EpsDelta,
}

impl Released {
    /// The noised statistics, in the order they were added.
    pub fn values(&self) -> &[ReleasedStatistic] {
        &self.values
    }

    /// What the release cost (already charged to the ledger).
    pub fn charged(&self) -> EpsDelta {
        self.charged
    }
}

#[cfg(test)]
mod tests;
