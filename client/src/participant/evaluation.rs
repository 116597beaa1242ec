//! Answering an evaluation task: the global model measured on this site's held-out split,
//! released as noised integer statistics after the local ledger accepted their cost.
//!
//! Order, as for training: recalibrate the server's plan from the task (refuse a task whose
//! noise differs from what this site computes), compute the exact counts, charge the local
//! ledger (fsynced), draw the Skellam noise from the OS, send. A crash after the charge leaves
//! the spend recorded and nothing released; a second poll of the same evaluation is not
//! answered twice.

use cohort_evaluation::{ClassificationCounts, Shape};
use cohort_privacy::EpsDelta;
use cohort_privacy::integer_release::{Placement, ReleaseError, ReleasePlan};
use cohort_protocol::evaluation::{EvaluationTask, StatisticsUpload, TaskNoise};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, TchError, Tensor};

use super::transport::{Transport, TransportError};
use super::{LocalTrainer, Participant, ParticipantError, secure};
use crate::data::Dataset;
use crate::model::{self, ModelSpec, ModelTask, Tape};
use crate::weights;

/// The held-out records a site evaluates on, with each record's group value when the data
/// has a group column.
#[derive(Debug)]
pub struct HeldOut {
    /// The records.
    pub data: Dataset,
    /// The group column's name and each record's value.
    pub groups: Option<(String, Vec<String>)>,
}

/// How an evaluation task ended for this site.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EvaluationOutcome {
    /// Charged (if noised) and sent.
    Released,
    /// Already answered (or charged) before: not answered again.
    AlreadyAnswered,
    /// The local ledger refused the charge: nothing was computed into a release or sent.
    BudgetRefused(String),
    /// Charged, but the server did not take the statistics (the charge stands: fail closed).
    NotSent(String),
}

/// One evaluation task's report.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationReport {
    /// The evaluation.
    pub evaluation: u64,
    /// The model version evaluated.
    pub model_version: u64,
    /// How it ended.
    pub outcome: EvaluationOutcome,
    /// Local ε after it (at the budget's δ).
    pub epsilon_spent: f64,
}

impl std::fmt::Display for EvaluationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.outcome {
            EvaluationOutcome::Released => "statistics released".to_owned(),
            EvaluationOutcome::AlreadyAnswered => "already answered".to_owned(),
            EvaluationOutcome::BudgetRefused(why) => format!("refused by the local budget: {why}"),
            EvaluationOutcome::NotSent(why) => format!("charged but not sent: {why}"),
        };
        write!(
            f,
            "evaluation {} of model version {}: {what}; local epsilon spent {:.3}",
            self.evaluation, self.model_version, self.epsilon_spent
        )
    }
}

/// The exact statistics of the model in `weights` on `held_out`, in the task shape's layout.
pub fn site_statistics(
    spec: &ModelSpec,
    device: Device,
    weights_bytes: &[u8],
    held_out: &HeldOut,
    task: &EvaluationTask,
) -> Result<Vec<i64>, String> {
    let Shape::Classification(shape) = task.shape else {
        return Err("this client evaluates classification models only; the task asks for regression statistics".into());
    };
    let group_index = group_indices(held_out, task)?;
    let mut vs = VarStore::new(device);
    let network = model::build(&vs.root(), spec).map_err(|e| e.to_string())?;
    weights::load_safetensors(&mut vs, weights_bytes).map_err(|e| e.to_string())?;
    let binary = matches!(spec.task, ModelTask::Binary { .. });
    if !binary && !matches!(spec.task, ModelTask::Classification { .. }) {
        return Err("only classification and binary models can be evaluated".into());
    }
    let data = &held_out.data;
    let n = data.len();
    let mut counts = ClassificationCounts::new(shape);
    let mut at = 0_usize;
    let mut record = |scores: &[f64], label: i64, loss: f64| -> Result<(), String> {
        let label = usize::try_from(label).map_err(|_| format!("label {label} is negative"))?;
        counts
            .add(group_index[at], label, scores, loss)
            .map_err(|e| format!("held-out record {at}: {e}"))?;
        at += 1;
        Ok(())
    };
    tch::no_grad(|| -> Result<Result<(), String>, TchError> {
        let mut tape = Tape::off();
        for start in (0..n).step_by(1024) {
            let len = (n - start).min(1024);
            let x = data.features.f_narrow(0, start, len)?.f_to_device(device)?;
            let y = data.labels.f_narrow(0, start, len)?.f_to_device(device)?;
            let logits = network.forward_t(&x, false, &mut tape)?;
            let (probs, losses) = if binary {
                let logit = logits.f_reshape([-1])?;
                let p = logit.f_sigmoid()?;
                let target = y.f_to_kind(Kind::Float)?;
                let loss = logit.f_binary_cross_entropy_with_logits::<Tensor>(
                    &target,
                    None,
                    None,
                    Reduction::None,
                )?;
                let probs = Tensor::f_stack(&[p.f_neg()?.f_add_scalar(1.0)?, p], 1)?;
                (probs, loss)
            } else {
                let probs = logits.f_softmax(-1, Kind::Float)?;
                let loss =
                    logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::None, -100, 0.0)?;
                (probs, loss)
            };
            let k = probs.size().get(1).copied().unwrap_or(0);
            let probs: Vec<f64> =
                Vec::<f64>::try_from(probs.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
            let losses: Vec<f64> = Vec::<f64>::try_from(losses.f_to_kind(Kind::Double)?)?;
            let labels: Vec<i64> = Vec::<i64>::try_from(y.f_to_kind(Kind::Int64)?)?;
            let k = usize::try_from(k).unwrap_or(0);
            for (i, label) in labels.iter().enumerate() {
                // Softmax in f32 can land a hair outside [0, 1]; the statistics need
                // probabilities, and the clamp moves a score by at most one ulp.
                let scores: Vec<f64> = probs[i * k..(i + 1) * k]
                    .iter()
                    .map(|p| p.clamp(0.0, 1.0))
                    .collect();
                if let Err(e) = record(&scores, *label, losses[i]) {
                    return Ok(Err(e));
                }
            }
        }
        Ok(Ok(()))
    })
    .map_err(|e| e.to_string())??;
    Ok(counts.to_vector())
}

/// Each held-out record's group index in the task's group values.
fn group_indices(held_out: &HeldOut, task: &EvaluationTask) -> Result<Vec<usize>, String> {
    let n = usize::try_from(held_out.data.len()).unwrap_or(0);
    match (&task.group_column, &held_out.groups) {
        (None, _) => Ok(vec![0; n]),
        (Some(column), None) => Err(format!(
            "the evaluation groups records by column {column:?}, which this site's data does not name (add group={column} to --data)"
        )),
        (Some(column), Some((name, _))) if column != name => Err(format!(
            "the evaluation groups records by column {column:?}, this site's data by {name:?}"
        )),
        (Some(_), Some((_, values))) => values
            .iter()
            .map(|v| {
                task.group_values.iter().position(|g| g == v).ok_or_else(|| {
                    format!(
                        "a held-out record's group value {v:?} is not one of the evaluation's {:?}",
                        task.group_values
                    )
                })
            })
            .collect(),
    }
}

/// The plan this site calibrates from the task; a task whose noise differs is refused.
fn local_plan(task: &EvaluationTask) -> Result<Option<ReleasePlan>, ParticipantError> {
    let TaskNoise::Local {
        target,
        per_site_mu,
    } = task.noise
    else {
        return match task.noise {
            TaskNoise::Off => Ok(None),
            _ => Err(ParticipantError::BadTask("unknown noise placement".into())),
        };
    };
    let sensitivity = task
        .shape
        .sensitivity()
        .map_err(|e| ParticipantError::BadTask(e.to_string()))?;
    let plan = ReleasePlan::calibrate(target, sensitivity, Placement::Local)
        .map_err(|e| ParticipantError::BadTask(e.to_string()))?;
    if plan.per_site_mu() != per_site_mu {
        return Err(ParticipantError::BadTask(format!(
            "the task's noise (mu = {per_site_mu}) is not what its budget calibrates to here (mu = {}); refusing",
            plan.per_site_mu()
        )));
    }
    Ok(Some(plan))
}

impl<T: Transport, L: LocalTrainer> Participant<T, L> {
    fn evaluation_label(&self, evaluation: u64) -> String {
        format!("{}/evaluation-{evaluation}", self.federation)
    }

    /// Answers an evaluation task (see the module docs).
    pub async fn run_evaluation(
        &mut self,
        task: EvaluationTask,
    ) -> Result<EvaluationReport, ParticipantError> {
        let label = self.evaluation_label(task.evaluation);
        let mut report = EvaluationReport {
            evaluation: task.evaluation,
            model_version: task.model_version,
            outcome: EvaluationOutcome::Released,
            epsilon_spent: 0.0,
        };
        if self.answered.contains(&task.evaluation)
            || self.ledger.releases().iter().any(|r| r.label == label)
        {
            report.outcome = EvaluationOutcome::AlreadyAnswered;
            report.epsilon_spent = self.ledger.spent_epsilon()?;
            return Ok(report);
        }
        let plan = local_plan(&task)?;
        let version = task.model_version;
        let global =
            secure::with_retries(&self.retry, || self.transport.download_model(version)).await?;
        let mut values = self
            .trainer
            .held_out_statistics(&global, &task)
            .map_err(ParticipantError::Training)?;
        drop(global);
        let charged = match plan {
            None => None,
            Some(plan) => {
                let cost = EpsDelta::new(plan.epsilon(), plan.target().delta())
                    .map_err(|e| ParticipantError::BadTask(e.to_string()))?;
                let mut sampler = plan
                    .sampler()
                    .map_err(|e| ParticipantError::Randomness(e.to_string()))?;
                let ledger = &mut self.ledger;
                match plan.release_after_charging(&mut values, &mut sampler, |_| {
                    ledger.record_release(&label, cost).map(|_| ())
                }) {
                    Ok(()) => Some(cost),
                    Err(ReleaseError::ChargeRefused(why)) => {
                        report.outcome = EvaluationOutcome::BudgetRefused(why.to_string());
                        report.epsilon_spent = self.ledger.spent_epsilon()?;
                        return Ok(report);
                    }
                    Err(e) => return Err(ParticipantError::Randomness(e.to_string())),
                }
            }
        };
        self.answered.insert(task.evaluation);
        let upload = StatisticsUpload { values, charged };
        let evaluation = task.evaluation;
        let sent = secure::with_retries(&self.retry, || {
            self.transport.send_statistics(evaluation, upload.clone())
        })
        .await;
        match sent {
            Ok(_) => {}
            Err(e @ TransportError::Status { .. }) | Err(e @ TransportError::Decode(_)) => {
                report.outcome = EvaluationOutcome::NotSent(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
        report.epsilon_spent = self.ledger.spent_epsilon()?;
        Ok(report)
    }
}

#[cfg(test)]
#[path = "evaluation_tests.rs"]
mod tests;
