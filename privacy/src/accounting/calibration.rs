//! Calibration: the smallest noise multiplier that meets a target (ε, δ).

use super::{
    Accountant, AccountantKind, AccountingError, PldAccountant, RdpAccountant, SubsampledGaussian,
    check_delta,
};
use crate::budget::EpsDelta;

/// The search gives up above this σ (no useful training happens there anyway).
pub const MAX_NOISE_MULTIPLIER: f64 = 1e4;
/// ... and below this one: the returned σ is then this floor, which already meets the target.
const MIN_NOISE_MULTIPLIER: f64 = 1e-3;

/// The smallest σ (to a relative 1e-9 for RDP, 1e-5 for PLD) such that `steps` steps at
/// sampling rate `sample_rate` spend at most `target.epsilon()` at `target.delta()`.
///
/// The search is a bisection that only ever returns a σ it has *checked* to meet the target,
/// so the result never overshoots ε, even where discretisation makes ε(σ) slightly uneven.
pub fn noise_multiplier_for(
    target: EpsDelta,
    sample_rate: f64,
    steps: u64,
    kind: AccountantKind,
) -> Result<f64, AccountingError> {
    let (epsilon, delta) = (target.epsilon(), target.delta());
    if epsilon.is_nan() || epsilon <= 0.0 {
        return Err(AccountingError::InvalidEpsilon(epsilon));
    }
    check_delta(delta)?;
    if steps == 0 {
        return Err(AccountingError::ZeroSteps);
    }
    // Validates q early, with σ = 1 as a placeholder.
    SubsampledGaussian::new(sample_rate, 1.0)?;
    let spend = |sigma: f64| -> Result<f64, AccountingError> {
        let event = SubsampledGaussian::new(sample_rate, sigma)?;
        match kind {
            AccountantKind::Rdp => {
                let mut accountant = RdpAccountant::new();
                accountant.step(event, steps);
                accountant.epsilon(delta)
            }
            AccountantKind::Pld => {
                let mut accountant = PldAccountant::new();
                accountant.step(event, steps);
                accountant.epsilon(delta)
            }
        }
    };
    let meets = |sigma: f64| spend(sigma).map(|e| e <= epsilon);

    // Bracket: `hi` meets the target, `lo` does not. PLD's ε is below RDP's, so the RDP
    // answer is an upper bracket and PLD's σ is rarely more than 30 % below it.
    let mut hi = 1.0;
    let mut lo;
    if kind == AccountantKind::Pld {
        let rdp_sigma = noise_multiplier_for(target, sample_rate, steps, AccountantKind::Rdp)?;
        if meets(rdp_sigma)? {
            hi = rdp_sigma;
            let mut lower = rdp_sigma * 0.7;
            while meets(lower)? {
                hi = lower;
                if lower < MIN_NOISE_MULTIPLIER {
                    return Ok(hi);
                }
                lower *= 0.7;
            }
            lo = lower;
            return bisect(lo, hi, 1e-5, meets);
        }
    }
    if meets(hi)? {
        lo = hi;
        loop {
            let lower = lo / 2.0;
            if lower < MIN_NOISE_MULTIPLIER {
                return Ok(hi);
            }
            if meets(lower)? {
                hi = lower;
                lo = lower;
            } else {
                lo = lower;
                break;
            }
        }
    } else {
        loop {
            lo = hi;
            hi *= 2.0;
            if hi > MAX_NOISE_MULTIPLIER {
                return Err(AccountingError::TargetUnreachable {
                    epsilon,
                    delta,
                    max_sigma: MAX_NOISE_MULTIPLIER,
                });
            }
            if meets(hi)? {
                break;
            }
        }
    }
    let tolerance = match kind {
        AccountantKind::Rdp => 1e-9,
        _ => 1e-5,
    };
    bisect(lo, hi, tolerance, meets)
}

/// Narrows `[lo, hi]` (where `hi` meets the target and `lo` does not) to a relative
/// `tolerance`, returning the upper end, which always meets it.
fn bisect(
    mut lo: f64,
    mut hi: f64,
    tolerance: f64,
    meets: impl Fn(f64) -> Result<bool, AccountingError>,
) -> Result<f64, AccountingError> {
    while (hi - lo) > tolerance * hi {
        let mid = 0.5 * (lo + hi);
        if meets(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdp_round_trip_meets_and_is_tight() {
        let target = EpsDelta::new(1.7118, 1e-5).unwrap();
        let sigma = noise_multiplier_for(target, 0.01, 1000, AccountantKind::Rdp).unwrap();
        assert!((sigma - 1.1).abs() < 1e-3, "{sigma}");
        let mut acc = RdpAccountant::new();
        acc.step(SubsampledGaussian::new(0.01, sigma).unwrap(), 1000);
        assert!(acc.epsilon(1e-5).unwrap() <= 1.7118);
        let mut below = RdpAccountant::new();
        below.step(SubsampledGaussian::new(0.01, sigma * 0.999).unwrap(), 1000);
        assert!(below.epsilon(1e-5).unwrap() > 1.7118);
    }

    #[test]
    fn rejects_bad_targets() {
        let zero = EpsDelta::new(0.0, 1e-5).unwrap();
        assert!(noise_multiplier_for(zero, 0.01, 10, AccountantKind::Rdp).is_err());
        let no_delta = EpsDelta::new(1.0, 0.0).unwrap();
        assert!(noise_multiplier_for(no_delta, 0.01, 10, AccountantKind::Rdp).is_err());
        let ok = EpsDelta::new(1.0, 1e-5).unwrap();
        assert_eq!(
            noise_multiplier_for(ok, 0.01, 0, AccountantKind::Rdp),
            Err(AccountingError::ZeroSteps)
        );
        assert!(noise_multiplier_for(ok, 1.5, 10, AccountantKind::Rdp).is_err());
        let tiny = EpsDelta::new(1e-9, 1e-5).unwrap();
        assert!(matches!(
            noise_multiplier_for(tiny, 1.0, 1000, AccountantKind::Rdp),
            Err(AccountingError::TargetUnreachable { .. })
        ));
    }
}
