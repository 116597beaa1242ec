/*!
Empirical privacy auditing: statistics that measure, from one training run, how much privacy
the run actually delivered, to set beside the ε an accountant claims.

# Brief overview
An accountant's ε is an *upper* bound proven from the mechanism's settings; a bug that drops
noise, skips a clip or under-charges a step leaves that number unchanged. An audit plants
*canaries* (gradients, examples or whole clients), includes each independently with
probability ½, trains once, scores every canary, and asks how well the scores reveal which
canaries were in. Two methods live here, both pure functions of the scores:

- [`one_run`]: the lower bound of Steinke, Nasr and Jagielski 2023 ("Privacy Auditing with One
  (1) Training Run"). The auditor guesses "in" for the `k₊` highest scores and "out" for the
  `k₋` lowest, abstains on the rest, and counts correct guesses `v` of `r`. If the run were
  (ε, δ)-DP, `v` could exceed a binomial-type tail only with small probability; the largest ε
  that the observed `v` rejects at confidence 1 − β is a statistically valid lower bound
  `ε_LB`. A run with `ε_LB` above its claimed ε contradicts its own accounting.
- [`one_shot`]: the estimate of Andrew et al. 2024 ("One-shot Empirical Privacy Estimation
  for Federated Learning"). Canary statistics (cosines of random canary directions with the
  model change) of included canaries and of never-included ones (the null) are each fitted by
  a Gaussian; the ε of the mechanism that tells those two Gaussians apart is the estimate. It
  is not a bound, but it tracks ε closely when the fits are good.

```
use cohort_privacy::audit::one_run::{GuessCounts, epsilon_lower_bound};

// 100 canaries, 100 guesses, 75 correct, pure DP, 95 % confidence: ε ≥ 0.702
// (what scipy gives for the paper's procedure, scripts/audit/one_run_reference.py).
let counts = GuessCounts::new(100, 100, 75)?;
let eps = epsilon_lower_bound(counts, 0.0, 0.95)?;
assert!((eps - 0.702).abs() < 1e-3);
# Ok::<(), cohort_privacy::audit::AuditError>(())
```
*/

pub mod one_run;
pub mod one_shot;

/// Why an audit statistic could not be computed.
///
/// Every variant names the offending input and what would be accepted, so a CLI can print it
/// as is. Callers should not branch on variants: new ones may be added.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AuditError {
    /// Guess counts that cannot happen: `correct ≤ guesses ≤ canaries` is required.
    InvalidCounts {
        /// Canaries planted (m).
        canaries: u64,
        /// Guesses made (r).
        guesses: u64,
        /// Correct guesses (v).
        correct: u64,
    },
    /// δ was NaN or outside [0, 1).
    InvalidDelta(f64),
    /// The confidence was NaN or outside (0, 1).
    InvalidConfidence(f64),
    /// Scores and inclusion bits of different lengths, or a score that is not finite.
    InvalidScores(String),
    /// A guess plan that guesses more canaries than there are, or guesses nothing.
    InvalidPlan(String),
    /// Too few samples, or a sample that is not finite, for a Gaussian fit.
    InvalidSample(String),
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidCounts {
                canaries,
                guesses,
                correct,
            } => write!(
                f,
                "guess counts must satisfy correct <= guesses <= canaries, got {correct} correct \
                 of {guesses} guesses on {canaries} canaries"
            ),
            Self::InvalidDelta(d) => write!(f, "delta must be in [0, 1), got {d}"),
            Self::InvalidConfidence(c) => {
                write!(f, "the confidence must be in (0, 1) (e.g. 0.95), got {c}")
            }
            Self::InvalidScores(why) => write!(f, "invalid canary scores: {why}"),
            Self::InvalidPlan(why) => write!(f, "invalid guess plan: {why}"),
            Self::InvalidSample(why) => write!(f, "cannot fit a Gaussian: {why}"),
        }
    }
}

impl std::error::Error for AuditError {}

pub(crate) fn check_delta(delta: f64) -> Result<(), AuditError> {
    if delta.is_finite() && (0.0..1.0).contains(&delta) {
        Ok(())
    } else {
        Err(AuditError::InvalidDelta(delta))
    }
}

pub(crate) fn check_confidence(confidence: f64) -> Result<(), AuditError> {
    if confidence.is_finite() && confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(AuditError::InvalidConfidence(confidence))
    }
}
