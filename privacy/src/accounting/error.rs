//! The one error type of the accounting module.

/// Why an accounting request was refused.
///
/// Each variant names the offending input and says what would be accepted, so the CLI can print
/// it as is. Callers should not branch on variants beyond "invalid input" versus "state cannot
/// be trusted": new variants may be added.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AccountingError {
    /// The sampling rate q was NaN or outside (0, 1].
    InvalidSampleRate(f64),
    /// The noise multiplier σ was NaN, infinite or not positive.
    InvalidNoiseMultiplier(f64),
    /// δ was NaN or outside (0, 1).
    InvalidDelta(f64),
    /// ε was NaN, infinite or negative (or zero where a positive target is needed).
    InvalidEpsilon(f64),
    /// A number of steps or rounds was zero where at least one is needed.
    ZeroSteps,
    /// A set of RDP orders was empty or held an order that is not a finite number > 1.
    InvalidOrders(String),
    /// Serialised state belongs to another accountant (`expected` versus `found`).
    MechanismMismatch {
        /// The mechanism the loader expected.
        expected: &'static str,
        /// The mechanism named in the state.
        found: String,
    },
    /// Two RDP states (or a state and its configuration) use different orders.
    OrdersMismatch,
    /// Serialised state is internally inconsistent (for example a negative or NaN RDP value).
    CorruptState(String),
    /// The spend is infinite, so it cannot be expressed as a finite (ε, δ).
    Unbounded,
    /// No noise multiplier up to the search limit meets the target.
    TargetUnreachable {
        /// The ε that was asked for.
        epsilon: f64,
        /// The δ that was asked for.
        delta: f64,
        /// The largest σ tried.
        max_sigma: f64,
    },
    /// An accountant name other than `rdp` or `pld`.
    UnknownAccountant(String),
}

impl std::fmt::Display for AccountingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidSampleRate(q) => {
                write!(f, "sample rate q must be a number in (0, 1], got {q}")
            }
            Self::InvalidNoiseMultiplier(s) => {
                write!(
                    f,
                    "noise multiplier sigma must be a finite number > 0, got {s}"
                )
            }
            Self::InvalidDelta(d) => {
                write!(
                    f,
                    "delta must be a number strictly between 0 and 1, got {d}"
                )
            }
            Self::InvalidEpsilon(e) => write!(f, "epsilon must be a finite number > 0, got {e}"),
            Self::ZeroSteps => f.write_str("the number of steps must be at least 1, got 0"),
            Self::InvalidOrders(why) => write!(f, "invalid RDP orders: {why}"),
            Self::MechanismMismatch { expected, found } => write!(
                f,
                "accountant state is for mechanism '{found}', cannot load it as '{expected}'"
            ),
            Self::OrdersMismatch => {
                f.write_str("RDP states use different orders and cannot be combined")
            }
            Self::CorruptState(why) => write!(f, "accountant state is corrupt: {why}"),
            Self::Unbounded => f.write_str("the privacy spend is unbounded (epsilon is infinite)"),
            Self::TargetUnreachable {
                epsilon,
                delta,
                max_sigma,
            } => write!(
                f,
                "no noise multiplier up to {max_sigma} reaches epsilon {epsilon} at delta {delta}; \
                 raise epsilon or lower the sample rate or steps"
            ),
            Self::UnknownAccountant(name) => {
                write!(f, "unknown accountant '{name}', expected 'rdp' or 'pld'")
            }
        }
    }
}

impl std::error::Error for AccountingError {}
