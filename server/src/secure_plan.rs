//! How a secure round is shaped before anyone is told of it: SecAgg+'s `(k, t)`, the
//! quantiser, each client's Skellam share and the client-level charge that noise makes.
//!
//! Pure and deterministic in (participants, dimension, config), so the scheduler can decide
//! (and charge) a round with it before the round exists, and the service runs that same plan.

use cohort_privacy::noise::calibration::SkellamPlan;
use cohort_privacy::noise::quantisation::{rounded_l1_norm_bound, rounded_l2_norm_bound};
use cohort_privacy::secagg::params::{self, Requirements};
use cohort_protocol::secagg::{QuantizerSpec, SecAggTask};

use crate::domain::TrainingConfig;
use crate::ledger::SkellamCharge;

/// The dropout fraction SecAgg+'s `(k, t)` are chosen to survive (Bell et al.'s δ).
pub const TOLERATED_DROPOUT: f64 = 1.0 / 3.0;
/// The fraction of clients assumed to collude with the server (Bell et al.'s γ).
pub const TOLERATED_CORRUPTION: f64 = 0.05;
/// Highest quantisation precision tried (the clip maps to `2^16` steps).
const MAX_PRECISION_BITS: u32 = 16;
/// Lowest precision accepted before refusing the round.
const MIN_PRECISION_BITS: u32 = 6;
/// Summed noise beyond this many standard deviations would wrap the ring (probability far
/// below 2^-100 per coordinate).
const NOISE_HEADROOM_SIGMAS: f64 = 14.0;

/// The noise, quantiser and `(k, t)` of a round: what [`plan`] decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecurePlan {
    /// What each participant's task carries (with `client_index` 0).
    pub task: SecAggTask,
    /// The fewest survivors for which the noise was calibrated.
    pub min_survivors: u64,
    /// The central noise the calibrated shares add up to over `min_survivors` clients, as a
    /// multiple of the rounded update's L2 sensitivity (≥ the configured multiplier).
    pub noise_multiplier: f64,
    /// The mechanism those shares make, as the federation's ledger charges it (`None` without
    /// noise).
    pub client_level: Option<SkellamCharge>,
}

/// Chooses `(k, t)` (see [`TOLERATED_DROPOUT`]; rounds too small for Bell et al.'s bounds get
/// the complete graph and `t = ⌊n/2⌋ + 1`), the quantiser and the per-client Skellam share for `participants`
/// clients and a `dimension`-parameter model under `config`.
///
/// Noise (when `central_noise_multiplier` z > 0): in quantisation steps an update clipped to
/// C has L2 norm at most `Δ₂ = 2^p + √d` after stochastic rounding (Kairouz et al. 2021, the
/// unconditional bound), so the sum needs variance `(z·Δ₂)²`. Clients that drop out take their
/// share with them; a round completes only with at least `n_min = max(min_clients, t)`
/// survivors, so each client adds Skellam(μ) with `2μ·n_min ≥ (z·Δ₂)²`. More survivors only
/// add noise. The ledger charges the Skellam mechanism at the guaranteed variance `2μ·n_min`
/// with the rounded update's sensitivities Δ₂ and `Δ₁ = Δ₂·min(Δ₂, √d)`. The ring must hold `n·2^p` plus 14 standard deviations of everyone's noise in
/// 32 bits; the precision `p` is lowered until it does.
pub fn plan(
    participants: usize,
    dimension: usize,
    config: &TrainingConfig,
) -> Result<SecurePlan, String> {
    let n = participants;
    if n < 3 {
        return Err(format!(
            "secure aggregation needs at least 3 participants; {n} were sampled"
        ));
    }
    let clip = config.update_clip().ok_or_else(|| {
        "secure aggregation quantises updates to the update clip, and none is set".to_owned()
    })?;
    // Bell et al.'s sparse graph where it meets 2^-40 privacy and 2^-20 abort bounds; small
    // rounds cannot meet them at any (k, t), and take the complete graph with an honest-majority
    // threshold instead (no coalition of fewer than half the clients can unmask anyone).
    let (k, t) = match params::choose(&Requirements::new(
        n,
        TOLERATED_DROPOUT,
        TOLERATED_CORRUPTION,
    )) {
        Ok(chosen) => (chosen.neighbours, chosen.threshold),
        Err(_) => (n - 1, n / 2 + 1),
    };
    let n_min = (config.min_clients() as usize).max(t).min(n) as u64;
    let z = config.central_noise_multiplier();
    for precision in (MIN_PRECISION_BITS..=MAX_PRECISION_BITS).rev() {
        let steps = (1u64 << precision) as f64;
        let (mu, headroom, charge) = if z > 0.0 {
            let d = dimension as u64;
            let l2 = rounded_l2_norm_bound(steps, 0.0, d).map_err(|e| e.to_string())?;
            let l1 = rounded_l1_norm_bound(l2, d).map_err(|e| e.to_string())?;
            let plan = SkellamPlan::for_central_std(z * l2, n_min).map_err(|e| e.to_string())?;
            let mu = plan.per_client_mu();
            let total_std = (2.0 * n as f64 * mu).sqrt();
            let charge = SkellamCharge::new(l1, l2, plan.guaranteed_central_variance())
                .map_err(|e| e.to_string())?;
            (
                mu,
                (NOISE_HEADROOM_SIGMAS * total_std).ceil() as u64,
                Some(charge),
            )
        } else {
            (0.0, 0, None)
        };
        let spec = QuantizerSpec {
            clients: n as u32,
            clip: clip as f32,
            precision_bits: precision,
            noise_headroom: headroom,
        };
        let Ok(q) = spec.quantizer() else { continue };
        if q.bits() > 32 {
            continue;
        }
        return Ok(SecurePlan {
            task: SecAggTask {
                client_index: 0,
                participants: n as u32,
                dimension: dimension as u64,
                bits: q.bits(),
                neighbours: k as u32,
                threshold: t as u32,
                quantizer: spec,
                skellam_mu: mu,
            },
            min_survivors: n_min,
            noise_multiplier: charge.map_or(0.0, |c| c.noise_multiplier()),
            client_level: charge,
        });
    }
    Err(format!(
        "{n} participants with this noise do not fit 32-bit secure aggregation lanes even at \
         {MIN_PRECISION_BITS} precision bits: sample fewer clients or lower the noise"
    ))
}
