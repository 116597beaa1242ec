//! A federation's training configuration, validated as a whole at construction.
//!
//! The unvalidated shape ([`TrainingConfigSpec`], public fields) is what the API accepts; the
//! only way to get a [`TrainingConfig`] is [`TrainingConfig::new`], which checks every field and
//! every combination (robust aggregation with secure aggregation, sample-count weighting with
//! central noise, a client-level budget without noise). Deserialising a `TrainingConfig`
//! runs the same checks, so a corrupt row in the store cannot smuggle in an invalid config.

use std::time::Duration;

use cohort_privacy::EpsDelta;
use cohort_protocol::training::LocalTraining;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ValidationError;

/// DP-SGD settings every client trains with (record-level privacy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DpSgdConfig {
    /// σ: Gaussian noise standard deviation as a multiple of `clip_norm`. Must be > 0.
    pub noise_multiplier: f64,
    /// C: per-sample gradient L2 clip. Must be > 0.
    pub clip_norm: f64,
    /// E: local epochs per round. Must be ≥ 1.
    pub local_epochs: u32,
    /// q: Poisson batch sampling rate over the client's records, in (0, 1].
    pub batch_sample_rate: f64,
}

impl DpSgdConfig {
    fn validate(&self) -> Result<(), ValidationError> {
        positive("dp_sgd.noise_multiplier", self.noise_multiplier)?;
        positive("dp_sgd.clip_norm", self.clip_norm)?;
        if self.local_epochs == 0 {
            return Err(ValidationError::new(
                "dp_sgd.local_epochs",
                "must be at least 1",
            ));
        }
        rate("dp_sgd.batch_sample_rate", self.batch_sample_rate)
    }

    /// DP-SGD steps per round: ⌈E / q⌉, the number of Poisson batches that E epochs take
    /// in expectation. The accountant composes this many subsampled Gaussian steps.
    pub fn steps_per_round(&self) -> u64 {
        cohort_protocol::messages::dp_sgd_steps_per_round(self.local_epochs, self.batch_sample_rate)
    }
}

/// Deadlines per round stage, in seconds. Late work is refused, never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageDeadlines {
    /// From round open until updates (or SecAgg key advertisements) are due.
    pub training_s: u64,
    /// Each SecAgg key stage (advertise keys, share keys).
    pub key_exchange_s: u64,
    /// Masked (or plain) input upload.
    pub upload_s: u64,
    /// SecAgg unmasking.
    pub unmask_s: u64,
}

impl Default for StageDeadlines {
    fn default() -> Self {
        Self {
            training_s: 600,
            key_exchange_s: 60,
            upload_s: 120,
            unmask_s: 60,
        }
    }
}

impl StageDeadlines {
    fn validate(&self) -> Result<(), ValidationError> {
        for (field, v) in [
            ("deadlines.training_s", self.training_s),
            ("deadlines.key_exchange_s", self.key_exchange_s),
            ("deadlines.upload_s", self.upload_s),
            ("deadlines.unmask_s", self.unmask_s),
        ] {
            if v == 0 || v > 7 * 24 * 3600 {
                return Err(ValidationError::new(
                    field,
                    "must be between 1 s and 7 days",
                ));
            }
        }
        Ok(())
    }

    /// The training stage's deadline as a duration.
    pub fn training(&self) -> Duration {
        Duration::from_secs(self.training_s)
    }
    /// Each key-exchange stage's deadline as a duration.
    pub fn key_exchange(&self) -> Duration {
        Duration::from_secs(self.key_exchange_s)
    }
    /// The upload stage's deadline as a duration.
    pub fn upload(&self) -> Duration {
        Duration::from_secs(self.upload_s)
    }
    /// The unmasking stage's deadline as a duration.
    pub fn unmask(&self) -> Duration {
        Duration::from_secs(self.unmask_s)
    }
}

/// How FedAvg-family strategies weight each client's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Weight by the client's reported sample count (classic FedAvg).
    #[default]
    SampleCount,
    /// Every client counts once: the sensitivity of the sum is one clipped update, which
    /// client-level DP (central noise) needs.
    Uniform,
}

fn default_one() -> f64 {
    1.0
}
fn default_momentum() -> f64 {
    0.9
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.99
}
fn default_adaptive_lr() -> f64 {
    0.1
}
fn default_yogi_lr() -> f64 {
    0.01
}
fn default_tau() -> f64 {
    1e-9
}
fn default_yogi_tau() -> f64 {
    1e-3
}

/// Which strategy aggregates the federation's rounds, with its hyper-parameters.
///
/// Server learning rates and optimiser constants follow Flower's defaults (FedOpt,
/// Reddi et al. 2021) where the field is omitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum StrategyConfig {
    /// Federated averaging: w ← w + mean Δ.
    FedAvg {
        /// How updates are weighted.
        #[serde(default)]
        weighting: Weighting,
    },
    /// FedAvg with server momentum: v ← βv + Δ̄, w ← w + ηv.
    FedAvgM {
        /// How updates are weighted.
        #[serde(default)]
        weighting: Weighting,
        /// η.
        #[serde(default = "default_one")]
        server_lr: f64,
        /// β in [0, 1).
        #[serde(default = "default_momentum")]
        momentum: f64,
    },
    /// FedAdam (server-side Adam on the pseudo-gradient Δ̄).
    FedAdam {
        /// How updates are weighted.
        #[serde(default)]
        weighting: Weighting,
        /// η.
        #[serde(default = "default_adaptive_lr")]
        server_lr: f64,
        /// β₁ in [0, 1).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// β₂ in [0, 1).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// τ > 0, the adaptivity floor.
        #[serde(default = "default_tau")]
        tau: f64,
    },
    /// FedYogi (server-side Yogi).
    FedYogi {
        /// How updates are weighted.
        #[serde(default)]
        weighting: Weighting,
        /// η.
        #[serde(default = "default_yogi_lr")]
        server_lr: f64,
        /// β₁ in [0, 1).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// β₂ in [0, 1).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// τ > 0.
        #[serde(default = "default_yogi_tau")]
        tau: f64,
    },
    /// FedAdagrad (server-side Adagrad).
    FedAdagrad {
        /// How updates are weighted.
        #[serde(default)]
        weighting: Weighting,
        /// η.
        #[serde(default = "default_adaptive_lr")]
        server_lr: f64,
        /// τ > 0.
        #[serde(default = "default_tau")]
        tau: f64,
    },
    /// FedProx: FedAvg on the server; clients add (μ/2)‖w − w_global‖² to their loss.
    FedProx {
        /// How updates are weighted.
        #[serde(default)]
        weighting: Weighting,
        /// μ ≥ 0, sent to clients in their round config as `proximal_mu`.
        proximal_mu: f64,
    },
    /// Coordinate-wise median of the updates (robust; needs every update in the clear).
    CoordinateMedian,
    /// Coordinate-wise trimmed mean (robust; needs every update in the clear).
    TrimmedMean {
        /// Fraction cut from each end per coordinate, in [0, 0.5).
        trim_fraction: f64,
    },
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self::FedAvg {
            weighting: Weighting::SampleCount,
        }
    }
}

impl StrategyConfig {
    /// Whether this strategy needs each client's update individually (robust aggregators),
    /// which secure aggregation by design never reveals.
    pub fn needs_individual_updates(&self) -> bool {
        matches!(self, Self::CoordinateMedian | Self::TrimmedMean { .. })
    }

    /// The weighting a FedAvg-family strategy uses; robust aggregators weight uniformly.
    pub fn weighting(&self) -> Weighting {
        match *self {
            Self::FedAvg { weighting }
            | Self::FedAvgM { weighting, .. }
            | Self::FedAdam { weighting, .. }
            | Self::FedYogi { weighting, .. }
            | Self::FedAdagrad { weighting, .. }
            | Self::FedProx { weighting, .. } => weighting,
            Self::CoordinateMedian | Self::TrimmedMean { .. } => Weighting::Uniform,
        }
    }

    /// Checks each hyper-parameter's range.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match *self {
            Self::FedAvg { .. } | Self::CoordinateMedian => Ok(()),
            Self::FedAvgM {
                server_lr,
                momentum,
                ..
            } => {
                positive("strategy.server_lr", server_lr)?;
                unit_interval("strategy.momentum", momentum)
            }
            Self::FedAdam {
                server_lr,
                beta1,
                beta2,
                tau,
                ..
            }
            | Self::FedYogi {
                server_lr,
                beta1,
                beta2,
                tau,
                ..
            } => {
                positive("strategy.server_lr", server_lr)?;
                unit_interval("strategy.beta1", beta1)?;
                unit_interval("strategy.beta2", beta2)?;
                positive("strategy.tau", tau)
            }
            Self::FedAdagrad { server_lr, tau, .. } => {
                positive("strategy.server_lr", server_lr)?;
                positive("strategy.tau", tau)
            }
            Self::FedProx { proximal_mu, .. } => {
                if !(proximal_mu.is_finite() && proximal_mu >= 0.0) {
                    return Err(ValidationError::new(
                        "strategy.proximal_mu",
                        format!("must be a finite number >= 0, got {proximal_mu}"),
                    ));
                }
                Ok(())
            }
            Self::TrimmedMean { trim_fraction } => {
                if !(trim_fraction.is_finite() && (0.0..0.5).contains(&trim_fraction)) {
                    return Err(ValidationError::new(
                        "strategy.trim_fraction",
                        format!("must be in [0, 0.5), got {trim_fraction}"),
                    ));
                }
                Ok(())
            }
        }
    }
}

fn default_true() -> bool {
    true
}

/// The unvalidated training configuration, as an admin submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfigSpec {
    /// Record-level DP-SGD settings.
    pub dp_sgd: DpSgdConfig,
    /// L2 clip on each client's model update Δ; required when `central_noise_multiplier` > 0.
    #[serde(default)]
    pub update_clip: Option<f64>,
    /// z: noise on the sum of updates, with standard deviation z · `update_clip`
    /// (client-level DP-FedAvg). 0 means no client-level guarantee is claimed.
    #[serde(default)]
    pub central_noise_multiplier: f64,
    /// Each client's record-level budget unless a client has its own.
    #[schema(value_type = cohort_protocol::schema::BudgetSchema)]
    pub client_budget: EpsDelta,
    /// The federation's client-level budget; required exactly when central noise is on.
    #[serde(default)]
    #[schema(value_type = Option<cohort_protocol::schema::BudgetSchema>)]
    pub federation_budget: Option<EpsDelta>,
    /// q_c: the Poisson rate at which eligible clients are sampled each round, in (0, 1].
    pub client_sampling_rate: f64,
    /// A round completes with at least this many updates or aborts. At least 1.
    pub min_clients: u32,
    /// Stage deadlines.
    #[serde(default)]
    pub deadlines: StageDeadlines,
    /// The aggregation strategy.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// Whether updates travel masked under SecAgg+ (default: yes).
    #[serde(default = "default_true")]
    pub secure_aggregation: bool,
    /// An admin's explicit opt-out: accept plain updates with no bound at all (no
    /// `update_clip` and a mean-based strategy), so that one client can move the model
    /// anywhere. Refused unless it applies; the API and the dashboard show it.
    #[serde(default)]
    pub allow_unbounded_updates: bool,
    /// The participants' local optimiser, schedule and augmentation, carried in every task;
    /// absent, each participant runs plain SGD at its own learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_training: Option<LocalTraining>,
    /// Federated evaluation on the sites' held-out records; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<super::evaluation::EvaluationConfig>,
}

/// A validated training configuration. Fields are reachable through accessors only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TrainingConfigSpec", into = "TrainingConfigSpec")]
pub struct TrainingConfig(TrainingConfigSpec);

impl TryFrom<TrainingConfigSpec> for TrainingConfig {
    type Error = ValidationError;
    fn try_from(spec: TrainingConfigSpec) -> Result<Self, Self::Error> {
        Self::new(spec)
    }
}

impl From<TrainingConfig> for TrainingConfigSpec {
    fn from(value: TrainingConfig) -> Self {
        value.0
    }
}

impl TrainingConfig {
    /// Validates every field and combination of fields.
    pub fn new(spec: TrainingConfigSpec) -> Result<Self, ValidationError> {
        spec.dp_sgd.validate()?;
        spec.deadlines.validate()?;
        spec.strategy.validate()?;
        if let Some(local) = &spec.local_training {
            local
                .validate()
                .map_err(|e| ValidationError::new(e.field, e.reason))?;
        }
        rate("client_sampling_rate", spec.client_sampling_rate)?;
        if spec.min_clients == 0 {
            return Err(ValidationError::new("min_clients", "must be at least 1"));
        }
        super::validate_budget(
            super::BudgetFields {
                epsilon: "client_budget.epsilon",
                delta: "client_budget.delta",
            },
            spec.client_budget,
        )?;
        if let Some(budget) = spec.federation_budget {
            super::validate_budget(
                super::BudgetFields {
                    epsilon: "federation_budget.epsilon",
                    delta: "federation_budget.delta",
                },
                budget,
            )?;
        }
        if let Some(clip) = spec.update_clip {
            positive("update_clip", clip)?;
        }
        let z = spec.central_noise_multiplier;
        if !(z.is_finite() && z >= 0.0) {
            return Err(ValidationError::new(
                "central_noise_multiplier",
                format!("must be a finite number >= 0, got {z}"),
            ));
        }
        if z > 0.0 && spec.update_clip.is_none() {
            return Err(ValidationError::new(
                "update_clip",
                "central noise is calibrated to the update clip: set update_clip",
            ));
        }
        match (z > 0.0, spec.federation_budget.is_some()) {
            (true, false) => {
                return Err(ValidationError::new(
                    "federation_budget",
                    "central noise is on, so set the client-level budget it is charged against",
                ));
            }
            (false, true) => {
                return Err(ValidationError::new(
                    "central_noise_multiplier",
                    "a client-level budget needs central noise (> 0): without it every round \
                     spends infinite client-level epsilon",
                ));
            }
            _ => {}
        }
        if let Some(evaluation) = &spec.evaluation {
            evaluation.validate(spec.client_budget)?;
        }
        if spec.secure_aggregation && spec.strategy.needs_individual_updates() {
            return Err(ValidationError::new(
                "strategy",
                "robust aggregators (coordinate_median, trimmed_mean) need every update in the \
                 clear, which secure aggregation forbids: choose a FedAvg-family strategy or set \
                 secure_aggregation to false",
            ));
        }
        // A plain federation whose mean-based strategy sums updates unclipped lets one client
        // move the model anywhere (an update of f32::MAX values was taken into the model).
        let unbounded = !spec.secure_aggregation
            && spec.update_clip.is_none()
            && !spec.strategy.needs_individual_updates();
        match (unbounded, spec.allow_unbounded_updates) {
            (true, false) => {
                return Err(ValidationError::new(
                    "update_clip",
                    "a plain federation must bound each update: set update_clip, use a robust \
                     aggregator (coordinate_median, trimmed_mean), or opt out explicitly with \
                     \"allow_unbounded_updates\": true",
                ));
            }
            (false, true) => {
                return Err(ValidationError::new(
                    "allow_unbounded_updates",
                    "only applies to a plain federation with no update_clip and a mean-based \
                     strategy; this configuration bounds every update already",
                ));
            }
            _ => {}
        }
        if z > 0.0 && spec.strategy.weighting() == Weighting::SampleCount {
            return Err(ValidationError::new(
                "strategy.weighting",
                "client-level DP needs a fixed sensitivity: use \"weighting\": \"uniform\" when \
                 central noise is on",
            ));
        }
        Ok(Self(spec))
    }

    /// Whether an admin opted out of bounding plain updates (no clip, mean-based strategy).
    pub fn allows_unbounded_updates(&self) -> bool {
        self.0.allow_unbounded_updates
    }

    /// The participants' local training settings, if the federation fixes them.
    pub fn local_training(&self) -> Option<&LocalTraining> {
        self.0.local_training.as_ref()
    }

    /// The evaluation section, when the federation evaluates.
    pub fn evaluation(&self) -> Option<&super::evaluation::EvaluationConfig> {
        self.0.evaluation.as_ref()
    }

    /// The record-level DP-SGD settings.
    pub fn dp_sgd(&self) -> &DpSgdConfig {
        &self.0.dp_sgd
    }
    /// The L2 clip applied to each update, if any.
    pub fn update_clip(&self) -> Option<f64> {
        self.0.update_clip
    }
    /// z, the central noise multiplier (0 = none).
    pub fn central_noise_multiplier(&self) -> f64 {
        self.0.central_noise_multiplier
    }
    /// The default record-level budget of each client.
    pub fn client_budget(&self) -> EpsDelta {
        self.0.client_budget
    }
    /// The client-level budget; `Some` exactly when central noise is on.
    pub fn federation_budget(&self) -> Option<EpsDelta> {
        self.0.federation_budget
    }
    /// q_c.
    pub fn client_sampling_rate(&self) -> f64 {
        self.0.client_sampling_rate
    }
    /// The minimum number of updates a round needs.
    pub fn min_clients(&self) -> u32 {
        self.0.min_clients
    }
    /// Stage deadlines.
    pub fn deadlines(&self) -> &StageDeadlines {
        &self.0.deadlines
    }
    /// The strategy configuration.
    pub fn strategy(&self) -> &StrategyConfig {
        &self.0.strategy
    }
    /// Whether SecAgg+ is on.
    pub fn secure_aggregation(&self) -> bool {
        self.0.secure_aggregation
    }
    /// The unvalidated view (for serialisation and echoing back to admins).
    pub fn spec(&self) -> &TrainingConfigSpec {
        &self.0
    }
}

fn positive(field: &'static str, v: f64) -> Result<(), ValidationError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

fn rate(field: &'static str, v: f64) -> Result<(), ValidationError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be in (0, 1], got {v}"),
        ))
    }
}

fn unit_interval(field: &'static str, v: f64) -> Result<(), ValidationError> {
    if v.is_finite() && (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be in [0, 1), got {v}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> TrainingConfigSpec {
        serde_json::from_value(serde_json::json!({
            "dp_sgd": {"noise_multiplier": 1.1, "clip_norm": 1.0, "local_epochs": 1,
                       "batch_sample_rate": 0.01},
            "client_budget": {"epsilon": 8.0, "delta": 1e-5},
            "client_sampling_rate": 0.5,
            "min_clients": 2
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_secure_fedavg() {
        let cfg = TrainingConfig::new(spec()).unwrap();
        assert!(cfg.secure_aggregation());
        assert_eq!(*cfg.strategy(), StrategyConfig::default());
        assert_eq!(cfg.dp_sgd().steps_per_round(), 100);
    }

    #[test]
    fn plain_updates_are_bounded_unless_an_admin_opts_out() {
        let mut s = spec();
        s.secure_aggregation = false;
        assert_eq!(
            TrainingConfig::new(s.clone()).unwrap_err().field(),
            "update_clip"
        );
        s.allow_unbounded_updates = true;
        assert!(
            TrainingConfig::new(s.clone())
                .unwrap()
                .allows_unbounded_updates()
        );
        // The opt-out is refused where it would not apply, so it is shown only when true.
        s.update_clip = Some(1.0);
        assert_eq!(
            TrainingConfig::new(s.clone()).unwrap_err().field(),
            "allow_unbounded_updates"
        );
        s.allow_unbounded_updates = false;
        assert!(TrainingConfig::new(s.clone()).is_ok());
        s.update_clip = None;
        s.strategy = StrategyConfig::TrimmedMean { trim_fraction: 0.1 };
        assert!(TrainingConfig::new(s).is_ok(), "a robust aggregator bounds");
    }

    #[test]
    fn budgets_that_protect_nobody_are_refused() {
        let mut s = spec();
        s.client_budget = EpsDelta::new(1e300, 1e-5).unwrap();
        assert_eq!(
            TrainingConfig::new(s.clone()).unwrap_err().field(),
            "client_budget.epsilon"
        );
        s.client_budget = EpsDelta::new(8.0, 0.0).unwrap();
        assert_eq!(
            TrainingConfig::new(s).unwrap_err().field(),
            "client_budget.delta"
        );
    }

    #[test]
    fn local_training_is_validated_with_the_fields_name_and_round_trips() {
        let mut s = spec();
        s.local_training = Some(
            serde_json::from_value(serde_json::json!({
                "optimizer": {"name": "adam"}, "learning_rate": 0.01,
                "schedule": {"name": "cosine", "min_lr": 0.001}, "warmup_steps": 5,
                "augmentation": {"crop_padding": 2, "rotation_degrees": 10}
            }))
            .unwrap(),
        );
        let cfg = TrainingConfig::new(s.clone()).unwrap();
        let text = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<TrainingConfig>(&text).unwrap(), cfg);
        assert_eq!(cfg.local_training(), s.local_training.as_ref());
        if let Some(l) = s.local_training.as_mut() {
            l.learning_rate = -1.0;
        }
        let err = TrainingConfig::new(s).unwrap_err();
        assert_eq!(err.field(), "local_training.learning_rate");
        // A config without the key stores without it.
        let plain = serde_json::to_value(TrainingConfig::new(spec()).unwrap()).unwrap();
        assert!(plain.get("local_training").is_none());
    }

    #[test]
    fn robust_with_secure_aggregation_is_refused() {
        let mut s = spec();
        s.strategy = StrategyConfig::CoordinateMedian;
        let err = TrainingConfig::new(s.clone()).unwrap_err();
        assert_eq!(err.field(), "strategy");
        assert!(err.to_string().contains("secure aggregation"), "{err}");
        s.secure_aggregation = false;
        assert!(TrainingConfig::new(s).is_ok());
    }

    #[test]
    fn central_noise_needs_clip_budget_and_uniform_weights() {
        let mut s = spec();
        s.central_noise_multiplier = 1.0;
        assert_eq!(
            TrainingConfig::new(s.clone()).unwrap_err().field(),
            "update_clip"
        );
        s.update_clip = Some(0.5);
        assert_eq!(
            TrainingConfig::new(s.clone()).unwrap_err().field(),
            "federation_budget"
        );
        s.federation_budget = Some(EpsDelta::new(3.0, 1e-5).unwrap());
        assert_eq!(
            TrainingConfig::new(s.clone()).unwrap_err().field(),
            "strategy.weighting"
        );
        s.strategy = StrategyConfig::FedAvg {
            weighting: Weighting::Uniform,
        };
        assert!(TrainingConfig::new(s.clone()).is_ok());
        s.central_noise_multiplier = 0.0;
        assert_eq!(
            TrainingConfig::new(s).unwrap_err().field(),
            "central_noise_multiplier"
        );
    }

    #[test]
    fn bad_ranges_are_refused_on_deserialise() {
        let mut v = serde_json::to_value(TrainingConfig::new(spec()).unwrap()).unwrap();
        v["client_sampling_rate"] = serde_json::json!(1.5);
        assert!(serde_json::from_value::<TrainingConfig>(v.clone()).is_err());
        v["client_sampling_rate"] = serde_json::json!(0.5);
        v["dp_sgd"]["local_epochs"] = serde_json::json!(0);
        assert!(serde_json::from_value::<TrainingConfig>(v.clone()).is_err());
        v["dp_sgd"]["local_epochs"] = serde_json::json!(2);
        v["strategy"] = serde_json::json!({"name": "fed_adam", "beta1": 1.0});
        assert!(serde_json::from_value::<TrainingConfig>(v.clone()).is_err());
        v["strategy"] = serde_json::json!({"name": "fed_adam"});
        let cfg: TrainingConfig = serde_json::from_value(v).unwrap();
        assert!(
            matches!(cfg.strategy(), StrategyConfig::FedAdam { server_lr, .. } if *server_lr == 0.1)
        );
    }
}
