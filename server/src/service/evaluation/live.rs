//! An open evaluation in memory: who was asked, who answered, and the running sum. Plain
//! data with no I/O, so every acceptance rule is a unit test.
//!
//! Memory is O(K²·G + K·B) for the sum whatever the number of sites; per-site vectors are
//! kept only when the federation allows per-site release (then O(sites · len), the price of
//! the per-site table it asked for).

use std::collections::{BTreeMap, BTreeSet};

use cohort_evaluation::{Plausibility, Released, Shape, StatsError};
use cohort_privacy::integer_release::ReleasePlan;
use cohort_protocol::evaluation::EvaluationTask;

use crate::domain::{ClientId, Timestamp};

/// Why an upload was refused; the live state is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The client was not asked.
    NotAsked,
    /// Its statistics arrived already.
    Duplicate,
    /// The deadline passed.
    Late,
    /// The vector is not statistics of this evaluation's shape.
    Invalid(StatsError),
}

/// An evaluation waiting for statistics.
#[derive(Debug)]
pub struct LiveEvaluation {
    /// Its number.
    pub number: u64,
    /// The task every asked site receives (with its own ε filled in).
    pub template: EvaluationTask,
    /// Each asked site and its ε after the charge (`None` with noise off).
    pub participants: BTreeMap<ClientId, Option<f64>>,
    /// Sites whose statistics were added.
    pub contributed: BTreeSet<ClientId>,
    /// The running sum.
    pub sum: Released,
    /// Each site's own release, kept only when per-site release is allowed.
    pub sites: Option<Vec<(ClientId, Released)>>,
    /// The release plan (`None` with noise off).
    pub plan: Option<ReleasePlan>,
    /// Statistics after this are refused; the evaluation closes then.
    pub deadline: Timestamp,
}

impl LiveEvaluation {
    /// A fresh evaluation of `shape`.
    pub fn new(
        number: u64,
        template: EvaluationTask,
        shape: Shape,
        participants: BTreeMap<ClientId, Option<f64>>,
        plan: Option<ReleasePlan>,
        per_site: bool,
        deadline: Timestamp,
    ) -> Self {
        Self {
            number,
            template,
            participants,
            contributed: BTreeSet::new(),
            sum: Released::zero(shape),
            sites: per_site.then(Vec::new),
            plan,
            deadline,
        }
    }

    /// What one site's vector may look like: exact counts with noise off, else counts
    /// within the tail of the plan's per-site noise.
    fn plausibility(&self) -> Plausibility {
        match &self.plan {
            None => Plausibility::Exact,
            Some(plan) => Plausibility::Noisy {
                std: (2.0 * plan.per_site_mu()).sqrt(),
            },
        }
    }

    /// Adds `client`'s statistics to the sum, or refuses them and changes nothing. Returns
    /// how many sites have contributed.
    pub fn accept(
        &mut self,
        client: &ClientId,
        values: Vec<i64>,
        now: Timestamp,
    ) -> Result<usize, Refusal> {
        if !self.participants.contains_key(client) {
            return Err(Refusal::NotAsked);
        }
        if self.contributed.contains(client) {
            return Err(Refusal::Duplicate);
        }
        if now >= self.deadline {
            return Err(Refusal::Late);
        }
        let released = Released::parse(self.sum.shape(), values, self.plausibility())
            .map_err(Refusal::Invalid)?;
        let mut sum = self.sum.clone();
        sum.add(&released).map_err(Refusal::Invalid)?;
        self.sum = sum;
        if let Some(sites) = &mut self.sites {
            sites.push((client.clone(), released));
        }
        self.contributed.insert(client.clone());
        Ok(self.contributed.len())
    }

    /// Every asked site answered, or the deadline passed.
    pub fn is_due(&self, now: Timestamp) -> bool {
        now >= self.deadline || self.contributed.len() == self.participants.len()
    }

    /// The per-coordinate noise variance of the sum so far (0 with noise off); `None` when
    /// the plan's guarantee does not cover a sum of this many sites.
    pub fn sum_variance(&self) -> Option<f64> {
        match &self.plan {
            None => Some(0.0),
            Some(plan) => plan.sum_variance(self.contributed.len() as u64),
        }
    }
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
