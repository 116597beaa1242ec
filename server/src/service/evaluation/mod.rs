//! Federated evaluation: the federation's model measured on the sites' held-out records.
//!
//! An evaluation of one model version opens on demand (admin API, `cohort evaluate`) or every
//! `every_rounds` committed versions. Opening is admission control and a write-ahead charge,
//! exactly as for a training round: each eligible site is checked against its record-level
//! budget for the evaluation's Skellam release, sampled at the evaluation's rate, and charged
//! in the transaction that opens the evaluation, before it can learn of its task. Sites whose
//! budget cannot afford it are not asked, and the evaluation's view lists them with the reason.
//!
//! Asked sites receive the task with their poll, release noised integer statistics, and the
//! server checks each vector ([`cohort_evaluation::Released::parse`]) before it joins the
//! running sum; a refused vector changes nothing. At the deadline (or when every asked site
//! answered) the strategy's [`aggregate_evaluate`](crate::strategy::Strategy::aggregate_evaluate)
//! derives the report, which is stored with the model version it measured.

mod live;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cohort_evaluation::{Derivation, Report};
use cohort_privacy::integer_release::ReleasePlan;
use cohort_protocol::evaluation::{
    EvaluationState, EvaluationTask, EvaluationView, NoiseView, OpenEvaluation, SiteReport,
    Skipped, StatisticsReceipt, StatisticsUpload, TaskNoise,
};
use serde::{Deserialize, Serialize};

use super::{Service, lock, wire_client};
use crate::domain::{
    ClientId, EnrolmentState, EvaluationConfig, EvaluationNoise, FederationId, FederationState,
    Timestamp, VersionNumber,
};
use crate::http::error::ApiError;
use crate::ledger::{DefaultAccountant, SkellamCharge, admit_release};
use crate::storage::evaluation::{
    EvaluationCharge, EvaluationOpening, StoredEvaluation, StoredEvaluationState,
};
use crate::strategy::{self, EvaluateResults, FitFailure};
use live::{LiveEvaluation, Refusal};

/// The open evaluation of each federation, and the last version the scheduler considered.
#[derive(Debug, Default)]
pub struct Evaluations {
    live: Mutex<HashMap<FederationId, Arc<tokio::sync::Mutex<LiveEvaluation>>>>,
    scheduled: Mutex<HashMap<FederationId, VersionNumber>>,
}

/// What the store keeps of an opening (the `opening` column).
#[derive(Debug, Serialize, Deserialize)]
struct OpeningRecord {
    participants: Vec<cohort_protocol::ClientId>,
    skipped: Vec<Skipped>,
    group_values: Vec<String>,
    noise: NoiseView,
}

/// What the store keeps of an end (the `result` column).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ResultRecord {
    #[serde(default)]
    accepted: u32,
    #[serde(default)]
    sum_variance: f64,
    #[serde(default)]
    report: Option<Report>,
    #[serde(default)]
    sites: Vec<SiteReport>,
    #[serde(default)]
    abort_reason: Option<String>,
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(ApiError::internal)
}

fn group_values(cfg: &EvaluationConfig) -> Vec<String> {
    match &cfg.group {
        Some(g) => g.values.clone(),
        None => vec!["all".to_owned()],
    }
}

fn wire_fed(fed: &FederationId) -> Result<cohort_protocol::FederationId, ApiError> {
    cohort_protocol::FederationId::parse(fed.as_str()).map_err(ApiError::internal)
}

fn refusal_error(refusal: Refusal, client: &ClientId, number: u64) -> ApiError {
    match refusal {
        Refusal::NotAsked => ApiError::Forbidden(format!(
            "client {client} was not asked in evaluation {number}"
        )),
        Refusal::Duplicate => ApiError::Conflict {
            slug: "duplicate-statistics",
            detail: format!("client {client} already sent statistics for evaluation {number}"),
        },
        Refusal::Late => ApiError::Conflict {
            slug: "late-statistics",
            detail: format!("evaluation {number} is past its deadline"),
        },
        Refusal::Invalid(e) => ApiError::InvalidInput(format!("statistics refused: {e}")),
    }
}

impl Service {
    fn live_evaluation(
        &self,
        fed: &FederationId,
    ) -> Option<Arc<tokio::sync::Mutex<LiveEvaluation>>> {
        lock(&self.evaluations.live).get(fed).cloned()
    }

    /// Opens an evaluation of `req.model_version` (the latest when absent): admission, the
    /// write-ahead charge of every asked site, then the live state.
    pub async fn open_evaluation(
        &self,
        fed: &FederationId,
        req: &OpenEvaluation,
    ) -> Result<EvaluationView, ApiError> {
        let federation = self.federation(fed).await?;
        let Some(cfg) = federation.config.evaluation().cloned() else {
            return Err(ApiError::Conflict {
                slug: "evaluation-not-configured",
                detail: format!(
                    "federation {fed} has no evaluation section in its config; create it with one"
                ),
            });
        };
        if federation.state != FederationState::Active {
            return Err(ApiError::Conflict {
                slug: "federation-stopped",
                detail: format!("federation {fed} is stopped"),
            });
        }
        if self.live_evaluation(fed).is_some() {
            return Err(ApiError::Conflict {
                slug: "evaluation-in-progress",
                detail: format!("federation {fed} is already evaluating; wait for it to close"),
            });
        }
        let f = fed.clone();
        let wanted = req.model_version;
        let (version, clients, accounts) = self
            .blocking(move |s| {
                let version = match wanted {
                    Some(v) => s.model_version(&f, VersionNumber::new(v)?)?.version,
                    None => s.latest_model(&f)?.version,
                };
                let accounts: HashMap<_, _> = s.client_accounts(&f)?.into_iter().collect();
                Ok((version, s.clients(&f)?, accounts))
            })
            .await?;
        let plan = cfg.plan().map_err(ApiError::internal)?;
        let charge = plan
            .map(|p| {
                let c = p.charge();
                SkellamCharge::new(c.l1_sensitivity(), c.l2_sensitivity(), c.variance())
            })
            .transpose()
            .map_err(ApiError::internal)?;

        let mut skipped = Vec::new();
        let mut admitted = Vec::new();
        for client in clients {
            if client.revoked || client.enrolment != EnrolmentState::Enrolled {
                continue;
            }
            match &charge {
                None => admitted.push((client, None)),
                Some(charge) => {
                    let account = accounts.get(&client.id);
                    match admit_release::<DefaultAccountant>(account, client.budget, charge) {
                        Ok(a) => admitted.push((client, Some(a))),
                        Err(refusal) => skipped.push(Skipped {
                            client: wire_client(&client.id)?,
                            reason: format!(
                                "not asked: its record-level budget cannot afford the evaluation ({refusal})"
                            ),
                        }),
                    }
                }
            }
        }
        let asked = self
            .round_sampler()?
            .poisson(admitted, cfg.client_sampling_rate);
        if asked.len() < cfg.min_sites as usize {
            return Err(ApiError::Conflict {
                slug: "too-few-sites",
                detail: format!(
                    "{} site(s) can be asked, the evaluation needs at least {} (min_sites); nothing was charged",
                    asked.len(),
                    cfg.min_sites
                ),
            });
        }

        let mut participants = BTreeMap::new();
        let mut charges = Vec::new();
        for (client, admitted) in asked {
            participants.insert(
                client.id.clone(),
                admitted.as_ref().map(|a| a.update.epsilon),
            );
            if let (Some(a), Some(p)) = (admitted, plan) {
                charges.push(EvaluationCharge {
                    client: client.id,
                    charge: p.charge(),
                    update: a.update,
                });
            }
        }
        let noise = noise_view(&cfg, plan.as_ref(), participants.len());
        let opening = OpeningRecord {
            participants: participants
                .keys()
                .map(wire_client)
                .collect::<Result<_, _>>()?,
            skipped,
            group_values: group_values(&cfg),
            noise,
        };
        let now = Timestamp::now();
        let store_opening = EvaluationOpening {
            federation: fed.clone(),
            model_version: version,
            opening: to_json(&opening)?,
            charges,
            opened_at: now,
        };
        let stored = self
            .blocking(move |s| s.open_evaluation(&store_opening))
            .await?;
        let deadline = now.plus(std::time::Duration::from_secs(cfg.deadline_s));
        let strategy = strategy::build(
            federation.config.strategy(),
            federation.config.secure_aggregation(),
        )
        .map_err(ApiError::internal)?;
        let template = EvaluationTask {
            federation: wire_fed(fed)?,
            evaluation: stored.number,
            model_version: version.get(),
            shape: cfg.shape,
            group_column: cfg.group.as_ref().map(|g| g.column.clone()),
            group_values: group_values(&cfg),
            noise: match (&cfg.noise, plan) {
                (EvaluationNoise::Local { budget }, Some(p)) => TaskNoise::Local {
                    target: *budget,
                    per_site_mu: p.per_site_mu(),
                },
                _ => TaskNoise::Off,
            },
            epsilon_after: None,
            upload_deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(0),
            model_spec: Some(federation.model_spec.clone()),
            config: strategy.configure_evaluate(stored.number),
        };
        let live = LiveEvaluation::new(
            stored.number,
            template,
            cfg.shape,
            participants,
            plan,
            cfg.per_site_allowed(),
            deadline,
        );
        lock(&self.evaluations.live).insert(fed.clone(), Arc::new(tokio::sync::Mutex::new(live)));
        tracing::info!(federation = %fed, evaluation = stored.number, version = version.get(), "evaluation opened");
        self.evaluation_view(fed, &stored).await
    }

    /// The evaluation task for `client`, if it was asked in the open evaluation and has not
    /// answered yet.
    pub(super) async fn evaluation_task(
        &self,
        fed: &FederationId,
        client: &ClientId,
    ) -> Result<Option<EvaluationTask>, ApiError> {
        let Some(live) = self.live_evaluation(fed) else {
            return Ok(None);
        };
        let g = live.lock().await;
        let Some(eps) = g.participants.get(client) else {
            return Ok(None);
        };
        if g.contributed.contains(client) || Timestamp::now() >= g.deadline {
            return Ok(None);
        }
        let mut task = g.template.clone();
        task.epsilon_after = eps
            .map(cohort_protocol::Epsilon::new)
            .transpose()
            .map_err(ApiError::internal)?;
        Ok(Some(task))
    }

    /// Adds a site's statistics to evaluation `number`, or refuses them (problem document)
    /// and changes nothing.
    pub async fn upload_statistics(
        &self,
        fed: &FederationId,
        number: u64,
        fingerprint: &str,
        upload: StatisticsUpload,
    ) -> Result<StatisticsReceipt, ApiError> {
        let client = self.client_for_cert(fed, fingerprint).await?;
        let live = match self.live_evaluation(fed) {
            Some(l) if l.lock().await.number == number => l,
            _ => {
                let f = fed.clone();
                let known = self
                    .blocking(move |s| s.evaluations(&f))
                    .await?
                    .iter()
                    .any(|e| e.number == number);
                return Err(if known {
                    ApiError::Conflict {
                        slug: "evaluation-closed",
                        detail: format!(
                            "evaluation {number} has closed; statistics are never mixed into another"
                        ),
                    }
                } else {
                    ApiError::NotFound(format!(
                        "evaluation {number} of federation {fed} does not exist"
                    ))
                });
            }
        };
        let mut g = live.lock().await;
        if upload.charged.is_some() != g.plan.is_some() {
            return Err(ApiError::InvalidInput(match g.plan {
                Some(_) => "statistics refused: this evaluation is noised, so the upload must state the (epsilon, delta) its site charged".to_owned(),
                None => "statistics refused: this evaluation has noise off, so nothing may be stated as charged".to_owned(),
            }));
        }
        let accepted = g
            .accept(&client.id, upload.values, Timestamp::now())
            .map_err(|r| refusal_error(r, &client.id, number))?;
        if g.is_due(Timestamp::now()) {
            self.wake.notify_one();
        }
        Ok(StatisticsReceipt {
            evaluation: number,
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        })
    }

    /// Every evaluation of `fed`, oldest first.
    pub async fn evaluations(&self, fed: &FederationId) -> Result<Vec<EvaluationView>, ApiError> {
        let f = fed.clone();
        let stored = self.blocking(move |s| s.evaluations(&f)).await?;
        let mut views = Vec::with_capacity(stored.len());
        for e in &stored {
            views.push(self.evaluation_view(fed, e).await?);
        }
        Ok(views)
    }

    async fn evaluation_view(
        &self,
        fed: &FederationId,
        e: &StoredEvaluation,
    ) -> Result<EvaluationView, ApiError> {
        let opening: OpeningRecord =
            serde_json::from_str(&e.opening).map_err(ApiError::internal)?;
        let result: ResultRecord = match &e.result {
            Some(r) => serde_json::from_str(r).map_err(ApiError::internal)?,
            None => ResultRecord::default(),
        };
        let (state, accepted) = match e.state {
            StoredEvaluationState::Completed => (EvaluationState::Completed, result.accepted),
            StoredEvaluationState::Aborted => (EvaluationState::Aborted, result.accepted),
            StoredEvaluationState::InProgress => {
                let accepted = match self.live_evaluation(fed) {
                    Some(l) => l.lock().await.contributed.len(),
                    None => 0,
                };
                (
                    EvaluationState::Open,
                    u32::try_from(accepted).unwrap_or(u32::MAX),
                )
            }
        };
        let mut noise = opening.noise;
        if state == EvaluationState::Completed {
            noise.sum_variance = result.sum_variance;
        }
        Ok(EvaluationView {
            evaluation: e.number,
            model_version: e.model_version.get(),
            state,
            participants: opening.participants,
            accepted,
            skipped: opening.skipped,
            group_values: opening.group_values,
            noise,
            report: result.report,
            sites: result.sites,
            abort_reason: result.abort_reason,
            opened_at_ms: u64::try_from(e.opened_at.as_millis()).unwrap_or(0),
            closed_at_ms: e
                .closed_at
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(0)),
        })
    }

    /// Scheduler step: closes due evaluations, opens the scheduled ones.
    pub(super) async fn tick_evaluations(&self) {
        let now = Timestamp::now();
        let live: Vec<_> = lock(&self.evaluations.live)
            .iter()
            .map(|(f, l)| (f.clone(), l.clone()))
            .collect();
        for (fed, l) in live {
            if l.lock().await.is_due(now)
                && let Err(e) = self.finish_evaluation(&fed).await
            {
                tracing::error!(federation = %fed, error = %e, "closing the evaluation failed");
            }
        }
        let Ok(feds) = self.federations().await else {
            return;
        };
        for fed in feds {
            let Some(every) = fed.config.evaluation().and_then(|c| c.every_rounds) else {
                continue;
            };
            if fed.state != FederationState::Active || self.live_evaluation(&fed.id).is_some() {
                continue;
            }
            let f = fed.id.clone();
            let Ok(latest) = self.blocking(move |s| s.latest_model(&f)).await else {
                continue;
            };
            let v = latest.version;
            let seen = lock(&self.evaluations.scheduled).insert(fed.id.clone(), v);
            if seen == Some(v) || v.get() == 0 || v.get() % u64::from(every) != 0 {
                continue;
            }
            let f = fed.id.clone();
            let done = self
                .blocking(move |s| s.evaluations(&f))
                .await
                .map(|list| list.iter().any(|e| e.model_version == v))
                .unwrap_or(true);
            if done {
                continue;
            }
            let req = OpenEvaluation {
                model_version: Some(v.get()),
            };
            if let Err(e) = self.open_evaluation(&fed.id, &req).await {
                tracing::info!(federation = %fed.id, version = v.get(), error = %e, "scheduled evaluation not opened");
            }
        }
    }

    /// Closes `fed`'s open evaluation: the report if enough sites answered, else the reason.
    async fn finish_evaluation(&self, fed: &FederationId) -> Result<(), ApiError> {
        let Some(live) = lock(&self.evaluations.live).remove(fed) else {
            return Ok(());
        };
        let g = live.lock().await;
        let federation = self.federation(fed).await?;
        let cfg =
            federation.config.evaluation().cloned().ok_or_else(|| {
                ApiError::internal("an open evaluation without an evaluation config")
            })?;
        let accepted = g.contributed.len();
        let mut result = ResultRecord {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
            ..ResultRecord::default()
        };
        let variance = g.sum_variance();
        let state = match variance {
            _ if accepted < cfg.min_sites as usize => {
                result.abort_reason = Some(format!(
                    "{accepted} site(s) answered, the evaluation needs at least {}",
                    cfg.min_sites
                ));
                StoredEvaluationState::Aborted
            }
            None => {
                result.abort_reason =
                    Some("the release plan does not cover a sum of this many sites".to_owned());
                StoredEvaluationState::Aborted
            }
            Some(noise_variance) => {
                let strategy = strategy::build(
                    federation.config.strategy(),
                    federation.config.secure_aggregation(),
                )
                .map_err(ApiError::internal)?;
                let failures: Vec<FitFailure> = g
                    .participants
                    .keys()
                    .filter(|c| !g.contributed.contains(*c))
                    .map(|c| FitFailure {
                        client: c.clone(),
                        reason: "no statistics before the deadline".into(),
                    })
                    .collect();
                let derivation = Derivation {
                    noise_variance,
                    min_count: cfg.min_count,
                };
                let results = EvaluateResults {
                    summed: &g.sum,
                    derivation,
                    sites: accepted,
                };
                result.sum_variance = noise_variance;
                result.report = strategy.aggregate_evaluate(g.number, &results, &failures);
                let site_variance = g.plan.map_or(0.0, |p| 2.0 * p.per_site_mu());
                for (client, released) in g.sites.iter().flatten() {
                    result.sites.push(SiteReport {
                        client: wire_client(client)?,
                        report: Report::derive(
                            released,
                            Derivation {
                                noise_variance: site_variance,
                                min_count: cfg.min_count,
                            },
                        ),
                    });
                }
                StoredEvaluationState::Completed
            }
        };
        let json = to_json(&result)?;
        let (f, number) = (fed.clone(), g.number);
        self.blocking(move |s| s.close_evaluation(&f, number, state, &json, Timestamp::now()))
            .await?;
        tracing::info!(federation = %fed, evaluation = number, accepted, ?state, "evaluation closed");
        Ok(())
    }
}

fn noise_view(cfg: &EvaluationConfig, plan: Option<&ReleasePlan>, sites: usize) -> NoiseView {
    match plan {
        None => NoiseView {
            placement: "off".to_owned(),
            sum_variance: 0.0,
            per_site: None,
        },
        Some(p) => NoiseView {
            placement: "local".to_owned(),
            sum_variance: p.sum_variance(sites as u64).unwrap_or(0.0),
            per_site: match cfg.noise {
                EvaluationNoise::Local { .. } => {
                    cohort_privacy::EpsDelta::new(p.epsilon(), p.target().delta()).ok()
                }
                _ => None,
            },
        },
    }
}
