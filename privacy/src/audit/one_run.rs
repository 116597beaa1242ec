//! The one-run lower bound of Steinke, Nasr and Jagielski 2023 ("Privacy Auditing with One (1)
//! Training Run", arXiv 2305.08846), implemented from the paper's statement.
//!
//! # The statement
//! `m` canaries are each included independently with probability ½; the auditor makes `r`
//! guesses (the rest are abstentions) of which `v` are correct. If the training run is
//! (ε, δ)-DP, their Theorem 5.2 in the ternary-guess form they use in all experiments
//! (Corollary 5.4, with the pseudocode of their Appendix D) bounds the chance of `v` or more
//! correct guesses by
//!
//! ```text
//! p(ε) = β + 2mδ·α,   β = P[Bin(r, q) ≥ v],   α = max_{1≤i≤v} P[v−i ≤ Bin(r, q) < v] / i,
//! q = e^ε / (1 + e^ε)
//! ```
//!
//! (`q` is the accuracy of ε-DP randomised response). Every ε with `p(ε)` below the
//! significance `1 − confidence` is rejected; the lower bound is the smallest ε that is *not*
//! rejected, `ε_LB = inf{ε ≥ 0 : p(ε) ≥ 1 − confidence}`. Taking the first crossing rather
//! than the last keeps the bound valid even where `p` is not monotone in ε.
//!
//! # Choosing how many to guess
//! Picking `k₊`, `k₋` after seeing the scores and keeping the best bound would overstate the
//! confidence. [`audit`] takes a fixed [`GuessPlan`] and splits the significance evenly over
//! its candidates (Bonferroni), so the reported bound holds at the stated confidence.

use super::{AuditError, check_confidence, check_delta};

/// Counts of a one-run audit: `correct ≤ guesses ≤ canaries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuessCounts {
    canaries: u64,
    guesses: u64,
    correct: u64,
}

impl GuessCounts {
    /// `m` canaries planted, `r` guesses made, `v` of them correct.
    pub fn new(canaries: u64, guesses: u64, correct: u64) -> Result<Self, AuditError> {
        if correct > guesses || guesses > canaries {
            return Err(AuditError::InvalidCounts {
                canaries,
                guesses,
                correct,
            });
        }
        Ok(Self {
            canaries,
            guesses,
            correct,
        })
    }

    /// m: canaries planted (each included with probability ½).
    pub fn canaries(&self) -> u64 {
        self.canaries
    }

    /// r: guesses made (canaries not abstained on).
    pub fn guesses(&self) -> u64 {
        self.guesses
    }

    /// v: correct guesses.
    pub fn correct(&self) -> u64 {
        self.correct
    }
}

/// The probability mass function of Bin(r, q) at every k in 0..=r, with q = e^ε/(1+e^ε)
/// taken in log space so that large ε does not round 1 − q to zero.
fn binomial_pmf(r: u64, epsilon: f64) -> Vec<f64> {
    // ln q = −ln(1 + e^−ε), ln(1 − q) = −ε − ln(1 + e^−ε).
    let soft = (-epsilon).exp().ln_1p();
    let ln_q = -soft;
    let ln_not_q = -epsilon - soft;
    let ln_r_fact = libm::lgamma(r as f64 + 1.0);
    (0..=r)
        .map(|k| {
            let k = k as f64;
            let n = r as f64;
            let ln_choose = ln_r_fact - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0);
            (ln_choose + k * ln_q + (n - k) * ln_not_q).exp()
        })
        .collect()
}

/// `p(ε)`: an upper bound on the probability of `counts.correct()` or more correct guesses if
/// the run were (ε, δ)-DP (see the module docs). Clamped to 1.
pub fn p_value(counts: GuessCounts, epsilon: f64, delta: f64) -> Result<f64, AuditError> {
    check_delta(delta)?;
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(AuditError::InvalidScores(format!(
            "epsilon must be a finite number >= 0, got {epsilon}"
        )));
    }
    Ok(p_value_unchecked(counts, epsilon, delta))
}

fn p_value_unchecked(counts: GuessCounts, epsilon: f64, delta: f64) -> f64 {
    let (m, r, v) = (counts.canaries, counts.guesses, counts.correct);
    if v == 0 {
        return 1.0;
    }
    let pmf = binomial_pmf(r, epsilon);
    // Summed from the small end of the tail up, so the small terms are not lost.
    let beta: f64 = pmf[v as usize..].iter().rev().sum();
    let mut alpha = 0.0f64;
    if delta > 0.0 {
        let mut window = 0.0;
        for i in 1..=v {
            window += pmf[(v - i) as usize];
            alpha = alpha.max(window / i as f64);
        }
    }
    (beta + 2.0 * m as f64 * delta * alpha).min(1.0)
}

/// Grid steps of the search for the first ε that is not rejected: fine where audits land,
/// coarser beyond (the bisection that follows is exact either way).
const FINE_STEP: f64 = 0.05;
const FINE_UNTIL: f64 = 5.0;
const COARSE_STEP: f64 = 0.25;
/// No count of guesses a training run can make rejects ε this large at any useful confidence
/// (all of 10^9 guesses correct reject only ε ≈ 20 at 95 %).
const MAX_EPSILON: f64 = 100.0;

/// `ε_LB`: the largest ε that `counts` reject at `confidence` (e.g. 0.95) for the given δ,
/// i.e. the run is not (ε, δ)-DP for any smaller ε, except with probability `1 − confidence`.
///
/// Returns 0 when nothing is rejected (for instance `v ≤ r/2`). The result is a value that was
/// itself checked to be rejected (the bisection keeps its lower end), so rounding never
/// overstates it.
pub fn epsilon_lower_bound(
    counts: GuessCounts,
    delta: f64,
    confidence: f64,
) -> Result<f64, AuditError> {
    check_delta(delta)?;
    check_confidence(confidence)?;
    let significance = 1.0 - confidence;
    let rejected = |eps: f64| p_value_unchecked(counts, eps, delta) < significance;
    if !rejected(0.0) {
        return Ok(0.0);
    }
    let mut lo = 0.0;
    let hi = loop {
        let step = if lo < FINE_UNTIL {
            FINE_STEP
        } else {
            COARSE_STEP
        };
        let next = lo + step;
        if next > MAX_EPSILON {
            return Ok(lo);
        }
        if !rejected(next) {
            break next;
        }
        lo = next;
    };
    let mut hi = hi;
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if rejected(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// One guessing rule: "in" for the `k_in` highest scores, "out" for the `k_out` lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guess {
    /// k₊: the most confident "in" guesses.
    pub k_in: usize,
    /// k₋: the most confident "out" guesses.
    pub k_out: usize,
}

/// The guessing rules an audit tries; the significance is split evenly among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuessPlan(Vec<Guess>);

/// Fractions of the canaries guessed by [`GuessPlan::default_for`]: an audit of a leaky run
/// is most confident on its extreme scores, one of a tight run needs many guesses.
const DEFAULT_FRACTIONS: [f64; 5] = [0.01, 0.03, 0.1, 0.3, 1.0];

impl GuessPlan {
    /// A plan of explicit rules; each must guess at least once and at most `m` times.
    pub fn new(guesses: Vec<Guess>) -> Result<Self, AuditError> {
        if guesses.is_empty() {
            return Err(AuditError::InvalidPlan("no guessing rule given".into()));
        }
        let mut unique = Vec::with_capacity(guesses.len());
        for g in guesses {
            if g.k_in + g.k_out == 0 {
                return Err(AuditError::InvalidPlan(
                    "a rule must guess at least one canary".into(),
                ));
            }
            if !unique.contains(&g) {
                unique.push(g);
            }
        }
        Ok(Self(unique))
    }

    /// One rule: `k` "in" and `k` "out" guesses.
    pub fn symmetric(k: usize) -> Result<Self, AuditError> {
        Self::new(vec![Guess { k_in: k, k_out: k }])
    }

    /// The default for `m` canaries: for each fraction f of 1 %, 3 %, 10 %, 30 % and 100 %,
    /// `k = ⌈f·m/2⌉` both ways (so f = 100 % guesses every canary) and `k` "in" only (a
    /// leak shows first in the highest scores).
    pub fn default_for(m: usize) -> Result<Self, AuditError> {
        let mut rules = Vec::new();
        for f in DEFAULT_FRACTIONS {
            let k = ((f * m as f64 / 2.0).ceil() as usize).max(1);
            if 2 * k <= m {
                rules.push(Guess { k_in: k, k_out: k });
            }
            if k <= m {
                rules.push(Guess { k_in: k, k_out: 0 });
            }
        }
        Self::new(rules)
    }

    /// The rules.
    pub fn guesses(&self) -> &[Guess] {
        &self.0
    }
}

/// Counts correct guesses of `guess` given each canary's score and whether it was included.
/// Ties are broken by canary index, which is independent of inclusion, so they cannot favour
/// either side.
pub fn count_guesses(
    scores: &[f64],
    included: &[bool],
    guess: Guess,
) -> Result<GuessCounts, AuditError> {
    let order = rank(scores, included)?;
    let m = order.len();
    if guess.k_in + guess.k_out > m {
        return Err(AuditError::InvalidPlan(format!(
            "{} in and {} out guesses exceed the {m} canaries",
            guess.k_in, guess.k_out
        )));
    }
    let correct_in = order[..guess.k_in].iter().filter(|&&i| included[i]).count();
    let correct_out = order[m - guess.k_out..]
        .iter()
        .filter(|&&i| !included[i])
        .count();
    GuessCounts::new(
        m as u64,
        (guess.k_in + guess.k_out) as u64,
        (correct_in + correct_out) as u64,
    )
}

/// Canary indices from the highest score to the lowest.
fn rank(scores: &[f64], included: &[bool]) -> Result<Vec<usize>, AuditError> {
    if scores.len() != included.len() {
        return Err(AuditError::InvalidScores(format!(
            "{} scores but {} inclusion bits",
            scores.len(),
            included.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(AuditError::InvalidScores(format!(
            "canary {i} has the score {}",
            scores[i]
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    Ok(order)
}

/// One rule of a plan and what it gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuessResult {
    /// The rule.
    pub guess: Guess,
    /// Its counts.
    pub counts: GuessCounts,
    /// Its lower bound at the plan's per-rule confidence.
    pub epsilon_lower_bound: f64,
}

/// The outcome of a one-run audit: the best rule's bound, valid at `confidence` for the whole
/// plan.
#[derive(Debug, Clone, PartialEq)]
pub struct OneRunAudit {
    /// The audit's lower bound on ε (the best rule's).
    pub epsilon_lower_bound: f64,
    /// The rule that gave it.
    pub best: GuessResult,
    /// Every rule tried.
    pub rules: Vec<GuessResult>,
    /// The confidence of the whole audit.
    pub confidence: f64,
    /// The confidence each rule was tested at (Bonferroni over the plan).
    pub per_rule_confidence: f64,
    /// The δ at which ε is bounded.
    pub delta: f64,
}

/// Runs every rule of `plan` on the scores and returns the best bound, each rule tested at
/// confidence `1 − (1 − confidence)/rules` so that the best one holds at `confidence`.
pub fn audit(
    scores: &[f64],
    included: &[bool],
    delta: f64,
    confidence: f64,
    plan: &GuessPlan,
) -> Result<OneRunAudit, AuditError> {
    check_delta(delta)?;
    check_confidence(confidence)?;
    let per_rule = 1.0 - (1.0 - confidence) / plan.guesses().len() as f64;
    let mut rules = Vec::with_capacity(plan.guesses().len());
    for &guess in plan.guesses() {
        let counts = count_guesses(scores, included, guess)?;
        let bound = epsilon_lower_bound(counts, delta, per_rule)?;
        rules.push(GuessResult {
            guess,
            counts,
            epsilon_lower_bound: bound,
        });
    }
    let best = rules
        .iter()
        .copied()
        .reduce(|a, b| {
            if b.epsilon_lower_bound > a.epsilon_lower_bound {
                b
            } else {
                a
            }
        })
        .ok_or_else(|| AuditError::InvalidPlan("no guessing rule given".into()))?;
    Ok(OneRunAudit {
        epsilon_lower_bound: best.epsilon_lower_bound,
        best,
        rules,
        confidence,
        per_rule_confidence: per_rule,
        delta,
    })
}

#[cfg(test)]
#[path = "one_run_tests.rs"]
mod tests;
