/*!
Privacy accountants: from DP-SGD and DP-FedAvg settings to an (ε, δ) guarantee.

# Brief overview
Every private step Cohort takes is a *Poisson-subsampled Gaussian mechanism*: each record (or,
for client-level DP, each client) joins a step independently with probability `q`, and the sum
of the clipped contributions gets Gaussian noise with standard deviation `σ × clip`. A
[`SubsampledGaussian`] names one such step; it is validated when built, so an accountant never
sees NaN or an out-of-range rate.

Two accountants implement the small [`Accountant`] trait (shaped after Opacus' `IAccountant`):

- [`RdpAccountant`] keeps one Rényi-DP value per order (Mironov, Talwar & Zhang 2019) and
  converts to (ε, δ) with the improved bound of Balle et al. 2020. Each update is O(orders), its
  state is a fixed-size vector, and it matches Opacus and dp_accounting digit for digit.
- [`PldAccountant`] composes privacy-loss distributions by FFT. It is tighter (often 10–30 %
  smaller ε) and still a valid upper bound, at the cost of milliseconds per query.

Both are `Serialize + Deserialize` so a ledger can store them, both compose steps with different
`(q, σ)` in any order, and both answer [`Accountant::would_exceed`] without replaying history.
[`noise_multiplier_for`] finds the smallest σ meeting a target, and [`client_level`] names the
same mathematics in DP-FedAvg terms.

```
use cohort_privacy::accounting::{Accountant, RdpAccountant, SubsampledGaussian};

let mut accountant = RdpAccountant::new();
accountant.step(SubsampledGaussian::new(0.01, 1.1)?, 1000);
let epsilon = accountant.epsilon(1e-5)?;
assert!((epsilon - 1.7118).abs() < 1e-3);
# Ok::<(), cohort_privacy::accounting::AccountingError>(())
```

Every number here errs upwards: a reported ε below the truth would be a privacy breach, so
where a computation cannot be finished exactly it reports a larger ε (or +∞), never a smaller one.
*/

mod analytic;
pub mod calibration;
pub mod client_level;
pub mod conversion;
mod error;
mod event;
pub mod pld;
pub mod rdp;
pub(crate) mod special;
pub mod subsampling;

pub use analytic::{gaussian_delta, gaussian_epsilon};
pub use calibration::noise_multiplier_for;
pub use error::AccountingError;
pub use event::SubsampledGaussian;
pub use pld::PldAccountant;
pub use rdp::RdpAccountant;

use crate::budget::EpsDelta;

/// A privacy accountant: composes [`SubsampledGaussian`] steps and reports the spend.
///
/// Implementors provide [`step`](Accountant::step), [`epsilon`](Accountant::epsilon),
/// [`projected_epsilon`](Accountant::projected_epsilon), [`steps`](Accountant::steps) and
/// [`mechanism`](Accountant::mechanism); budget checks come for free. All methods treat an
/// accountant that has taken no step as having spent ε = 0.
pub trait Accountant {
    /// Records `count` runs of `event` (a count of 0 records nothing).
    ///
    /// Infallible because `event` was validated when it was built.
    fn step(&mut self, event: SubsampledGaussian, count: u64);

    /// The smallest ε this accountant can prove at `delta` for everything recorded so far.
    ///
    /// Returns `Ok(f64::INFINITY)` when no finite ε can be proven (for example after a step
    /// with so little noise that every bound diverges), and an error for `delta` outside (0, 1).
    fn epsilon(&self, delta: f64) -> Result<f64, AccountingError>;

    /// The ε after everything recorded so far *and* `next`, without changing `self`.
    ///
    /// This is the admission-control question ("what will this round cost?") and must not
    /// replay history: implementors fold `next` into their stored summary.
    fn projected_epsilon(
        &self,
        delta: f64,
        next: &[(SubsampledGaussian, u64)],
    ) -> Result<f64, AccountingError>;

    /// How many steps have been recorded (the sum of all counts).
    fn steps(&self) -> u64;

    /// A short, stable name of the accounting method (`"rdp"` or `"pld"`), stored with the
    /// serialised state so that a ledger never resumes one kind of state as another.
    fn mechanism(&self) -> &'static str;

    /// Whether running `next` on top of what is recorded would spend more than `budget`.
    ///
    /// The ε is evaluated at the budget's δ. A budget with δ = 0 cannot be met by either
    /// accountant and is reported as an error rather than "fits", so callers fail closed.
    fn would_exceed(
        &self,
        budget: EpsDelta,
        next: &[(SubsampledGaussian, u64)],
    ) -> Result<bool, AccountingError> {
        let projected = self.projected_epsilon(budget.delta(), next)?;
        Ok(projected.is_nan() || projected > budget.epsilon())
    }

    /// The spend so far as an [`EpsDelta`] at `delta`.
    ///
    /// Fails with [`AccountingError::Unbounded`] when ε is infinite, since an infinite spend
    /// cannot be written into a ledger entry.
    fn spent(&self, delta: f64) -> Result<EpsDelta, AccountingError> {
        let epsilon = self.epsilon(delta)?;
        EpsDelta::new(epsilon, delta).map_err(|_| AccountingError::Unbounded)
    }
}

/// Which accountant to use; names match the CLI's `--accountant rdp|pld`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AccountantKind {
    /// Rényi DP over [`rdp::DEFAULT_ORDERS`]: fast, the figure Opacus and dp_accounting report.
    Rdp,
    /// Privacy-loss distributions: tighter, slower.
    Pld,
}

impl AccountantKind {
    /// The name used on the command line and in serialised state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::Pld => "pld",
        }
    }

    /// A fresh accountant of this kind behind the trait, for callers that pick at run time.
    pub fn new_accountant(self) -> Box<dyn Accountant + Send + Sync> {
        match self {
            Self::Rdp => Box::new(RdpAccountant::new()),
            Self::Pld => Box::new(PldAccountant::new()),
        }
    }
}

impl std::fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AccountantKind {
    type Err = AccountingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rdp" => Ok(Self::Rdp),
            "pld" => Ok(Self::Pld),
            other => Err(AccountingError::UnknownAccountant(other.to_owned())),
        }
    }
}

/// Checks that δ is usable for an (ε, δ) query: finite and strictly inside (0, 1).
pub(crate) fn check_delta(delta: f64) -> Result<(), AccountingError> {
    if delta.is_finite() && delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(AccountingError::InvalidDelta(delta))
    }
}

#[cfg(test)]
mod tests;
