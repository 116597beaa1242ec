//! A federation's evaluation section: when its model is measured on the sites' held-out
//! records, what is counted, and what each measurement may cost a record.

use cohort_evaluation::Shape;
use cohort_privacy::EpsDelta;
use cohort_privacy::integer_release::{Placement, ReleasePlan};
use serde::{Deserialize, Serialize};

use super::ValidationError;

/// The data column whose values split the records into groups for the fairness figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupColumn {
    /// The column's name in the sites' data (for example `sex`).
    pub column: String,
    /// Its values, in the order the statistics index them. A site whose records hold another
    /// value refuses the task rather than guess.
    pub values: Vec<String>,
}

/// Where an evaluation's noise is added; see `cohort_privacy::integer_release` for the trust
/// each placement assumes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "placement", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvaluationNoise {
    /// Every site adds the full Skellam noise calibrated to `budget` on its own.
    Local {
        /// What one evaluation may cost a record at one site.
        #[schema(value_type = cohort_protocol::schema::EpsDeltaSchema)]
        budget: EpsDelta,
    },
    /// Only the SecAgg+ sum would carry the noise. Refused at creation: evaluation statistics
    /// travel as plain uploads today, so a distributed share would leave each site's vector
    /// under-noised in the server's view.
    Distributed {
        /// What one evaluation may cost a record.
        #[schema(value_type = cohort_protocol::schema::EpsDeltaSchema)]
        budget: EpsDelta,
    },
    /// No noise and no privacy claim: an explicit opt-out for tests, shown on every report.
    Off,
}

fn default_rate() -> f64 {
    1.0
}

fn default_min_sites() -> u32 {
    1
}

fn default_deadline_s() -> u64 {
    120
}

/// The evaluation section of a federation's config, as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Evaluate the model every this many training rounds (after rounds k, 2k, …); absent:
    /// only on demand.
    #[serde(default)]
    pub every_rounds: Option<u32>,
    /// The Poisson rate at which eligible sites are asked, in (0, 1].
    #[serde(default = "default_rate")]
    pub client_sampling_rate: f64,
    /// What each site counts (task, classes, groups, score bins, loss clip).
    #[schema(value_type = Object)]
    pub shape: Shape,
    /// The group column; its number of values must equal the shape's groups.
    #[serde(default)]
    pub group: Option<GroupColumn>,
    /// The noise.
    pub noise: EvaluationNoise,
    /// Whether each site's own figures may be shown (requires noise at every site).
    #[serde(default)]
    pub per_site_release: bool,
    /// An evaluation reports only when at least this many sites' statistics arrived.
    #[serde(default = "default_min_sites")]
    pub min_sites: u32,
    /// Cells and figures describing fewer (noisy) records are shown as suppressed.
    #[serde(default)]
    pub min_count: u64,
    /// Seconds a site has to answer.
    #[serde(default = "default_deadline_s")]
    pub deadline_s: u64,
}

impl EvaluationConfig {
    /// Checks every field against the others and against the client budget's δ.
    pub fn validate(&self, client_budget: EpsDelta) -> Result<(), ValidationError> {
        if self.every_rounds == Some(0) {
            return Err(ValidationError::new(
                "evaluation.every_rounds",
                "must be at least 1 (leave it out to evaluate only on demand)",
            ));
        }
        let q = self.client_sampling_rate;
        if !(q.is_finite() && q > 0.0 && q <= 1.0) {
            return Err(ValidationError::new(
                "evaluation.client_sampling_rate",
                format!("must be in (0, 1], got {q}"),
            ));
        }
        let groups = match self.shape {
            Shape::Classification(c) => c.groups(),
            Shape::Regression(_) => 1,
        };
        match &self.group {
            Some(g) => {
                let mut seen = std::collections::BTreeSet::new();
                if g.column.is_empty() || g.values.iter().any(String::is_empty) {
                    return Err(ValidationError::new(
                        "evaluation.group",
                        "the column and its values must be non-empty",
                    ));
                }
                if !g.values.iter().all(|v| seen.insert(v)) {
                    return Err(ValidationError::new(
                        "evaluation.group.values",
                        "values must be distinct",
                    ));
                }
                if g.values.len() != groups || matches!(self.shape, Shape::Regression(_)) {
                    return Err(ValidationError::new(
                        "evaluation.group.values",
                        format!(
                            "{} values for a classification shape with {groups} groups: they must match",
                            g.values.len()
                        ),
                    ));
                }
            }
            None if groups != 1 => {
                return Err(ValidationError::new(
                    "evaluation.shape.groups",
                    "set evaluation.group (the column and its values) for more than one group",
                ));
            }
            None => {}
        }
        if self.min_sites == 0 {
            return Err(ValidationError::new(
                "evaluation.min_sites",
                "must be at least 1",
            ));
        }
        if self.deadline_s == 0 {
            return Err(ValidationError::new(
                "evaluation.deadline_s",
                "must be at least 1",
            ));
        }
        if self.per_site_release && !matches!(self.noise, EvaluationNoise::Local { .. }) {
            return Err(ValidationError::new(
                "evaluation.per_site_release",
                "a site's own figures may be shown only when it adds the full noise itself: set \
                 noise.placement to \"local\"",
            ));
        }
        match self.noise {
            EvaluationNoise::Off => Ok(()),
            EvaluationNoise::Distributed { .. } => Err(ValidationError::new(
                "evaluation.noise.placement",
                "distributed noise relies on SecAgg+ hiding each site's statistics, and evaluation \
                 statistics travel as plain uploads: choose \"local\" (each site adds the full noise)",
            )),
            EvaluationNoise::Local { budget } => {
                // A site's ledger spends the release's δ out of its budget's δ and converts its
                // RDP at what is left, so a release at the whole budget δ could never be paid.
                if budget.delta() <= 0.0 || budget.delta() >= client_budget.delta() {
                    return Err(ValidationError::new(
                        "evaluation.noise.budget.delta",
                        format!(
                            "must be > 0 and below the client budget's delta {} (each site's \
                             ledger pays it out of that delta), e.g. a tenth of it",
                            client_budget.delta()
                        ),
                    ));
                }
                self.plan().map(|_| ())
            }
        }
    }

    /// The calibrated release plan (`None` with noise off). Deterministic, so server and
    /// sites derive the same plan from the config.
    pub fn plan(&self) -> Result<Option<ReleasePlan>, ValidationError> {
        let budget = match self.noise {
            EvaluationNoise::Off => return Ok(None),
            EvaluationNoise::Local { budget } | EvaluationNoise::Distributed { budget } => budget,
        };
        let sensitivity = self
            .shape
            .sensitivity()
            .map_err(|e| ValidationError::new("evaluation.shape", e.to_string()))?;
        ReleasePlan::calibrate(budget, sensitivity, Placement::Local)
            .map(Some)
            .map_err(|e| ValidationError::new("evaluation.noise.budget", e.to_string()))
    }

    /// Per-site release needs noise at every site.
    pub fn per_site_allowed(&self) -> bool {
        self.per_site_release && matches!(self.noise, EvaluationNoise::Local { .. })
    }
}

#[cfg(test)]
#[path = "evaluation_tests.rs"]
mod tests;
