//! Streaming aggregation of one round's updates.
//!
//! [`StreamingSum`] adds each accepted update into a running `f64` sum and drops it, so a
//! round holds O(model) memory however many clients upload. It is keyed by round: an update
//! naming another round (late, replayed, or early) or coming twice from one client is
//! rejected and changes nothing. Products of an `f32` by an integer weight below 2²⁹ are exact
//! in `f64`, so a weighted mean of identical updates is that update exactly.
//!
//! Robust aggregators (median, trimmed mean) need every update and so use [`CollectedUpdates`],
//! which is O(clients × model) by nature; configuration forbids them under secure
//! aggregation, the only mode in which updates would otherwise stay hidden.

use std::collections::HashSet;
use std::fmt;

use crate::domain::{ClientId, FederationId, RoundNumber, Weighting};

/// Which round an aggregator collects for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoundKey {
    /// The federation.
    pub federation: FederationId,
    /// The round.
    pub round: RoundNumber,
}

/// Why an update was refused. Every variant leaves the aggregator unchanged.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AggregateError {
    /// The update is for another round than the one being aggregated (late or replayed): 409.
    WrongRound {
        /// The round being aggregated.
        expected: RoundKey,
        /// The round the update named.
        got: RoundKey,
    },
    /// The client is not a participant of this round: 409 (or 403).
    NotParticipant(ClientId),
    /// The client already contributed: 409.
    Duplicate(ClientId),
    /// Wrong vector length: 422.
    WrongLength {
        /// The model's parameter count.
        expected: usize,
        /// The update's.
        got: usize,
    },
    /// NaN or ±∞ at this index: 422.
    NonFinite(usize),
    /// The update's L2 norm exceeds the round's update clip: 422.
    NormTooLarge {
        /// Its norm.
        norm: f64,
        /// The clip.
        bound: f64,
    },
    /// A sample-count weight of zero (or one too large to be exact): 422.
    BadWeight(u64),
    /// A decoded sum was inconsistent (length, non-finite, counts).
    InvalidSum(String),
}

impl fmt::Display for AggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongRound { expected, got } => write!(
                f,
                "update is for round {} of federation {}, but round {} of {} is being aggregated",
                got.round, got.federation, expected.round, expected.federation
            ),
            Self::NotParticipant(c) => write!(f, "client {c} is not a participant of this round"),
            Self::Duplicate(c) => {
                write!(f, "client {c} already submitted an update for this round")
            }
            Self::WrongLength { expected, got } => {
                write!(f, "update has {got} values, the model has {expected}")
            }
            Self::NonFinite(i) => write!(f, "update value at index {i} is NaN or infinite"),
            Self::NormTooLarge { norm, bound } => {
                write!(
                    f,
                    "update L2 norm {norm:.6} exceeds the update clip {bound}"
                )
            }
            Self::BadWeight(w) => write!(f, "sample count {w} must be between 1 and 2^29"),
            Self::InvalidSum(m) => write!(f, "invalid decoded sum: {m}"),
        }
    }
}

impl std::error::Error for AggregateError {}

/// Weights above this would make `f32 × weight` inexact in `f64` (24 + 29 = 53 bits).
pub const MAX_EXACT_WEIGHT: u64 = 1 << 29;

/// What a finished round hands the strategy: the sum of (weighted) updates and how to
/// normalise it.
#[derive(Debug, Clone, PartialEq)]
pub struct SummedUpdates {
    /// Σ wᵢ Δᵢ, per coordinate.
    pub sum: Vec<f64>,
    /// How many clients contributed.
    pub contributors: usize,
    /// Σ wᵢ (equal to `contributors` under uniform weighting).
    pub total_weight: f64,
    /// What the mean divides by: `total_weight` by default; DP-FedAvg fixes it to the
    /// expected number of participants so one client's influence stays bounded.
    pub denominator: f64,
}

impl SummedUpdates {
    /// A sum decoded elsewhere (the SecAgg path: the privacy crate unmasks the modular sum and
    /// the orchestrator decodes it), checked for consistency.
    pub fn from_decoded(
        sum: Vec<f64>,
        contributors: usize,
        total_weight: f64,
    ) -> Result<Self, AggregateError> {
        if let Some(i) = sum.iter().position(|v| !v.is_finite()) {
            return Err(AggregateError::InvalidSum(format!(
                "value at index {i} is not finite"
            )));
        }
        if !(total_weight.is_finite() && total_weight >= 0.0)
            || (contributors > 0) != (total_weight > 0.0)
        {
            return Err(AggregateError::InvalidSum(format!(
                "total weight {total_weight} does not fit {contributors} contributors"
            )));
        }
        Ok(Self {
            sum,
            contributors,
            total_weight,
            denominator: total_weight,
        })
    }

    /// Divides by a fixed denominator instead of the realised weight (DP-FedAvg divides by
    /// the expected participant count q_c·N). Ignored unless finite and > 0.
    pub fn with_fixed_denominator(mut self, denominator: f64) -> Self {
        if denominator.is_finite() && denominator > 0.0 {
            self.denominator = denominator;
        }
        self
    }

    /// The mean update Σ wᵢ Δᵢ / denominator, or `None` if nobody contributed.
    pub fn mean(&self) -> Option<Vec<f64>> {
        if self.contributors == 0 || self.denominator <= 0.0 {
            return None;
        }
        Some(self.sum.iter().map(|s| s / self.denominator).collect())
    }
}

fn check_values(update: &[f32], expected_len: usize) -> Result<f64, AggregateError> {
    if update.len() != expected_len {
        return Err(AggregateError::WrongLength {
            expected: expected_len,
            got: update.len(),
        });
    }
    let mut norm2 = 0.0f64;
    for (i, v) in update.iter().enumerate() {
        if !v.is_finite() {
            return Err(AggregateError::NonFinite(i));
        }
        norm2 += f64::from(*v) * f64::from(*v);
    }
    Ok(norm2.sqrt())
}

/// Checks shared by both collectors: round, participant, duplicate, values, norm.
#[derive(Debug)]
struct Gate {
    key: RoundKey,
    participants: HashSet<ClientId>,
    contributed: HashSet<ClientId>,
    len: usize,
    norm_bound: Option<f64>,
}

impl Gate {
    fn admit(
        &self,
        key: &RoundKey,
        client: &ClientId,
        update: &[f32],
    ) -> Result<(), AggregateError> {
        if *key != self.key {
            return Err(AggregateError::WrongRound {
                expected: self.key.clone(),
                got: key.clone(),
            });
        }
        if !self.participants.contains(client) {
            return Err(AggregateError::NotParticipant(client.clone()));
        }
        if self.contributed.contains(client) {
            return Err(AggregateError::Duplicate(client.clone()));
        }
        let norm = check_values(update, self.len)?;
        if let Some(bound) = self.norm_bound {
            // A relative slack of 1e-6 absorbs the client's f32 rounding of a clipped vector.
            if norm > bound * (1.0 + 1e-6) {
                return Err(AggregateError::NormTooLarge { norm, bound });
            }
        }
        Ok(())
    }
}

/// The running sum of one round's updates.
#[derive(Debug)]
pub struct StreamingSum {
    gate: Gate,
    weighting: Weighting,
    sum: Vec<f64>,
    total_weight: f64,
}

impl StreamingSum {
    /// A sum for `key` over a model of `len` parameters, accepting one update from each of
    /// `participants`.
    pub fn new(
        key: RoundKey,
        len: usize,
        participants: impl IntoIterator<Item = ClientId>,
        weighting: Weighting,
    ) -> Self {
        Self {
            gate: Gate {
                key,
                participants: participants.into_iter().collect(),
                contributed: HashSet::new(),
                len,
                norm_bound: None,
            },
            weighting,
            sum: vec![0.0; len],
            total_weight: 0.0,
        }
    }

    /// Refuses updates whose L2 norm exceeds `bound` (the federation's update clip), so a
    /// client cannot exceed the sensitivity client-level DP assumes.
    pub fn with_norm_bound(mut self, bound: f64) -> Self {
        self.gate.norm_bound = Some(bound);
        self
    }

    /// The round this sum belongs to.
    pub fn key(&self) -> &RoundKey {
        &self.gate.key
    }

    /// Adds `client`'s update for round `key`, weighted by `sample_count` under
    /// [`Weighting::SampleCount`] (ignored under uniform weighting). On error nothing changes.
    pub fn add(
        &mut self,
        key: &RoundKey,
        client: &ClientId,
        update: &[f32],
        sample_count: u64,
    ) -> Result<(), AggregateError> {
        self.gate.admit(key, client, update)?;
        let weight = match self.weighting {
            Weighting::Uniform => 1.0,
            Weighting::SampleCount => {
                if sample_count == 0 || sample_count > MAX_EXACT_WEIGHT {
                    return Err(AggregateError::BadWeight(sample_count));
                }
                sample_count as f64
            }
        };
        for (s, v) in self.sum.iter_mut().zip(update) {
            *s += weight * f64::from(*v);
        }
        self.total_weight += weight;
        self.gate.contributed.insert(client.clone());
        Ok(())
    }

    /// How many updates were accepted.
    pub fn contributors(&self) -> usize {
        self.gate.contributed.len()
    }

    /// Whether `client` has contributed.
    pub fn has_contributed(&self, client: &ClientId) -> bool {
        self.gate.contributed.contains(client)
    }

    /// Ends the round's collection; the aggregator cannot take updates after this.
    pub fn finish(self) -> SummedUpdates {
        SummedUpdates {
            contributors: self.gate.contributed.len(),
            total_weight: self.total_weight,
            denominator: self.total_weight,
            sum: self.sum,
        }
    }
}

/// Every update of a round kept whole, for robust aggregators (no secure aggregation).
#[derive(Debug)]
pub struct CollectedUpdates {
    gate: Gate,
    updates: Vec<Vec<f32>>,
}

impl CollectedUpdates {
    /// A collector for `key` over `len` parameters.
    pub fn new(
        key: RoundKey,
        len: usize,
        participants: impl IntoIterator<Item = ClientId>,
    ) -> Self {
        Self {
            gate: Gate {
                key,
                participants: participants.into_iter().collect(),
                contributed: HashSet::new(),
                len,
                norm_bound: None,
            },
            updates: Vec::new(),
        }
    }

    /// Refuses updates whose L2 norm exceeds `bound`.
    pub fn with_norm_bound(mut self, bound: f64) -> Self {
        self.gate.norm_bound = Some(bound);
        self
    }

    /// Keeps `client`'s update for round `key`. On error nothing changes.
    pub fn add(
        &mut self,
        key: &RoundKey,
        client: &ClientId,
        update: &[f32],
    ) -> Result<(), AggregateError> {
        self.gate.admit(key, client, update)?;
        self.updates.push(update.to_vec());
        self.gate.contributed.insert(client.clone());
        Ok(())
    }

    /// How many updates were accepted.
    pub fn contributors(&self) -> usize {
        self.updates.len()
    }

    /// The updates, in arrival order.
    pub fn finish(self) -> Vec<Vec<f32>> {
        self.updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(round: u64) -> RoundKey {
        RoundKey {
            federation: FederationId::parse("fed").unwrap(),
            round: RoundNumber::new(round).unwrap(),
        }
    }
    fn id(name: &str) -> ClientId {
        ClientId::parse(name).unwrap()
    }

    #[test]
    fn weighted_mean_is_exact() {
        let mut agg = StreamingSum::new(
            key(1),
            2,
            [id("a"), id("b"), id("c")],
            Weighting::SampleCount,
        );
        agg.add(&key(1), &id("a"), &[1.0, 0.0], 10).unwrap();
        agg.add(&key(1), &id("b"), &[0.0, 2.0], 30).unwrap();
        agg.add(&key(1), &id("c"), &[4.0, -1.0], 60).unwrap();
        let mean = agg.finish().mean().unwrap();
        assert_eq!(mean, vec![(10.0 + 240.0) / 100.0, (60.0 - 60.0) / 100.0]);
    }

    #[test]
    fn rejections_change_nothing() {
        let mut agg = StreamingSum::new(key(2), 2, [id("a"), id("b")], Weighting::Uniform)
            .with_norm_bound(1.0);
        agg.add(&key(2), &id("a"), &[0.6, 0.8], 5).unwrap();
        let before = agg.sum.clone();
        assert!(matches!(
            agg.add(&key(1), &id("b"), &[0.1, 0.1], 1),
            Err(AggregateError::WrongRound { .. })
        ));
        assert_eq!(
            agg.add(&key(2), &id("a"), &[0.1, 0.1], 1),
            Err(AggregateError::Duplicate(id("a")))
        );
        assert_eq!(
            agg.add(&key(2), &id("z"), &[0.1, 0.1], 1),
            Err(AggregateError::NotParticipant(id("z")))
        );
        assert_eq!(
            agg.add(&key(2), &id("b"), &[0.1], 1),
            Err(AggregateError::WrongLength {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            agg.add(&key(2), &id("b"), &[0.1, f32::NAN], 1),
            Err(AggregateError::NonFinite(1))
        );
        assert!(matches!(
            agg.add(&key(2), &id("b"), &[1.0, 1.0], 1),
            Err(AggregateError::NormTooLarge { .. })
        ));
        assert_eq!(agg.sum, before);
        assert_eq!(agg.contributors(), 1);
        agg.add(&key(2), &id("b"), &[0.0, -0.5], 1).unwrap();
        let done = agg.finish();
        assert_eq!(done.total_weight, 2.0);
        let expected = [
            f64::from(0.6f32) / 2.0,
            (f64::from(0.8f32) + f64::from(-0.5f32)) / 2.0,
        ];
        assert_eq!(done.mean().unwrap(), expected);
    }

    #[test]
    fn zero_weight_refused_and_empty_round_has_no_mean() {
        let mut agg = StreamingSum::new(key(1), 1, [id("a")], Weighting::SampleCount);
        assert_eq!(
            agg.add(&key(1), &id("a"), &[1.0], 0),
            Err(AggregateError::BadWeight(0))
        );
        assert_eq!(agg.finish().mean(), None);
    }

    #[test]
    fn fixed_denominator_and_decoded_sums() {
        let s = SummedUpdates::from_decoded(vec![3.0, 6.0], 3, 3.0)
            .unwrap()
            .with_fixed_denominator(4.0);
        assert_eq!(s.mean().unwrap(), vec![0.75, 1.5]);
        assert!(SummedUpdates::from_decoded(vec![f64::NAN], 1, 1.0).is_err());
        assert!(SummedUpdates::from_decoded(vec![1.0], 0, 1.0).is_err());
    }

    #[test]
    fn collected_updates_share_the_gate() {
        let mut c = CollectedUpdates::new(key(1), 1, [id("a")]);
        c.add(&key(1), &id("a"), &[1.0]).unwrap();
        assert_eq!(
            c.add(&key(1), &id("a"), &[1.0]),
            Err(AggregateError::Duplicate(id("a")))
        );
        assert_eq!(c.finish(), vec![vec![1.0]]);
    }

    proptest! {
        #[test]
        fn mean_of_identical_updates_is_that_update(
            update in proptest::collection::vec(-1e6f32..1e6, 1..32),
            weights in proptest::collection::vec(1u64..1_000_000, 1..20),
        ) {
            let ids: Vec<ClientId> = (0..weights.len()).map(|i| id(&format!("c{i}"))).collect();
            let mut agg = StreamingSum::new(key(1), update.len(), ids.clone(), Weighting::SampleCount);
            for (c, w) in ids.iter().zip(&weights) {
                agg.add(&key(1), c, &update, *w).unwrap();
            }
            let mean = agg.finish().mean().unwrap();
            for (m, u) in mean.iter().zip(&update) {
                prop_assert_eq!(*m, f64::from(*u));
            }
        }
    }
}
