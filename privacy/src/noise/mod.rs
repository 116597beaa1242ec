/*!
Distributed differential privacy for secure aggregation.

# Brief overview
Under secure aggregation the server only ever sees the *sum* of the clients' quantised updates,
so no single party can add the central noise that client-level DP needs. Instead every client
adds a small share of integer noise to its own quantised update, chosen so that the sum over
the clients that survive the round carries at least the central noise the federation's
accountant asked for. Integer noise matters: the secure sum is computed in ℤ_{2^b}, and a sum of
independent Skellam variables is again Skellam, so the privacy analysis of the aggregate is
exactly that of one Skellam mechanism.

The pieces, in the order a round uses them:
- [`quantisation`]: the L2 and L1 sensitivity of a clipped update *after* scaling and stochastic
  rounding to integers (Kairouz, Liu & Steinke 2021), which is what the noise must hide.
- [`calibration`]: the minimum number of survivors for a dropout tolerance, and the per-client
  Skellam parameter μ so that `n_min` clients' noise has variance ≥ σ_central².
- [`skellam`]: the CSPRNG-driven sampler each client runs over its update.
- [`skellam_rdp`]: per-order Rényi-DP of the aggregate Skellam mechanism (Agarwal, Kairouz &
  Liu 2021), on any order grid, for the RDP accountant to compose.

Where one party adds all the noise (the server's central noise on a plain round's sum),
[`lattice::LatticeGaussian`] rounds the value to a lattice and adds exact discrete Gaussian
noise ([`discrete_gaussian`]), so no floating-point sampler touches it.

```
use cohort_privacy::noise::{calibration, quantisation, skellam_rdp, SkellamSampler};

// Update clipped to L2 norm 1.0, scaled by 2^10 before rounding, 1,000 coordinates.
let l2 = quantisation::rounded_l2_norm_bound(1.0 * 1024.0, 1e-9, 1_000)?;
let l1 = quantisation::rounded_l1_norm_bound(l2, 1_000)?;
// Central noise of 1.2 × the (rounded) clip, 100 sampled clients, up to 20% may drop.
let n_min = calibration::min_survivors(100, 0.2)?;
let plan = calibration::SkellamPlan::for_central_std(1.2 * l2, n_min)?;
let mut sampler = SkellamSampler::from_os_entropy(plan.per_client_mu())?;
let mut update = vec![0_i64; 1_000];
sampler.add_to(&mut update)?;
let rdp = skellam_rdp::skellam_rdp(&[2.0, 8.0, 32.0], l1, l2, plan.guaranteed_central_variance())?;
assert!(rdp[0] > 0.0);
# Ok::<(), cohort_privacy::noise::NoiseError>(())
```
*/

pub mod calibration;
pub mod discrete_gaussian;
pub mod gaussian;
pub mod lattice;
pub mod quantisation;
pub mod skellam;
pub mod skellam_rdp;

pub use discrete_gaussian::DiscreteGaussianSampler;
pub use lattice::LatticeGaussian;
pub use skellam::SkellamSampler;

/// Why a noise computation refused to run.
///
/// Every variant is a caller mistake or an environment failure; none is recoverable by retrying
/// with the same input, and none may be ignored: refusing is how this module fails closed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NoiseError {
    /// A parameter was NaN, infinite, out of its documented range, or zero where a positive
    /// value is needed.
    InvalidParameter {
        /// The parameter's name as it appears in the function signature.
        name: &'static str,
        /// The offending value, as text so that integers and floats fit one variant.
        value: String,
        /// What the parameter must satisfy.
        requirement: &'static str,
    },
    /// The operating system could not provide entropy to seed the CSPRNG. Noise from a weak
    /// seed would void the privacy claim, so there is no fallback.
    Entropy(String),
    /// Adding noise would overflow the integer type holding the update.
    Overflow {
        /// Index of the coordinate that would overflow.
        index: usize,
    },
}

impl NoiseError {
    pub(crate) fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        requirement: &'static str,
    ) -> Self {
        Self::InvalidParameter {
            name,
            value: value.to_string(),
            requirement,
        }
    }
}

impl std::fmt::Display for NoiseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidParameter {
                name,
                value,
                requirement,
            } => write!(f, "invalid {name} = {value}: it must be {requirement}"),
            Self::Entropy(e) => write!(f, "the OS could not seed the noise CSPRNG: {e}"),
            Self::Overflow { index } => {
                write!(f, "adding noise overflows the update at coordinate {index}")
            }
        }
    }
}

impl std::error::Error for NoiseError {}

/// Rejects NaN, infinities and values ≤ 0 in one place so every public function fails alike.
pub(crate) fn require_positive_finite(name: &'static str, value: f64) -> Result<f64, NoiseError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(NoiseError::invalid(name, value, "a finite number > 0"))
    }
}
