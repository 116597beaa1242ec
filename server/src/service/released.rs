//! Training metrics that participants released with differential privacy.
//!
//! A participant noises its round's loss, accuracy and example count on its own machine
//! (`cohort_privacy::release`, charged to its local ledger first) and sends the noised values
//! while the round is open. The server keeps only per-metric running sums for the live round,
//! and a completed round records `released_<name>_mean` (the mean over the clients that
//! reported) and `released_<name>_clients` among its metrics, committed with the round.
//! Nothing here needs more privacy accounting: the values are already DP releases.

use std::collections::{BTreeMap, HashSet};

use cohort_protocol::messages::{MetricsUpload, UploadReceipt};

use super::Service;
use crate::domain::{ClientId, FederationId, RoundNumber};
use crate::http::error::ApiError;

/// Most statistics one report may carry.
const MAX_VALUES: usize = 16;
/// Longest metric name.
const MAX_NAME: usize = 32;

/// The running sums of one live round's released metrics.
#[derive(Debug, Default)]
pub struct ReleasedMetrics {
    reporters: HashSet<ClientId>,
    sums: BTreeMap<String, (u32, f64)>,
}

impl ReleasedMetrics {
    /// Adds `client`'s report; refuses a second one and malformed values, changing nothing.
    pub fn add(&mut self, client: &ClientId, upload: &MetricsUpload) -> Result<u32, ApiError> {
        if upload.values.is_empty() || upload.values.len() > MAX_VALUES {
            return Err(ApiError::InvalidInput(format!(
                "a metrics report carries 1 to {MAX_VALUES} values, got {}",
                upload.values.len()
            )));
        }
        let mut names = HashSet::new();
        for v in &upload.values {
            let valid_name = !v.name.is_empty()
                && v.name.len() <= MAX_NAME
                && v.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(ApiError::InvalidInput(format!(
                    "metric name {:?} must be 1 to {MAX_NAME} characters of [a-z0-9_]",
                    v.name
                )));
            }
            if !(v.value.is_finite() && v.noise_std.is_finite() && v.noise_std >= 0.0) {
                return Err(ApiError::InvalidInput(format!(
                    "metric {} must have a finite value and noise_std >= 0",
                    v.name
                )));
            }
            if !names.insert(v.name.as_str()) {
                return Err(ApiError::InvalidInput(format!(
                    "metric {} appears twice",
                    v.name
                )));
            }
        }
        if !self.reporters.insert(client.clone()) {
            return Err(ApiError::Conflict {
                slug: "duplicate-metrics",
                detail: format!("client {client} already reported this round's metrics"),
            });
        }
        for v in &upload.values {
            let entry = self.sums.entry(v.name.clone()).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += v.value;
        }
        Ok(u32::try_from(self.reporters.len()).unwrap_or(u32::MAX))
    }

    /// `released_<name>_mean` and `released_<name>_clients` for every metric reported.
    pub fn summary(&self) -> Vec<(String, f64)> {
        self.sums
            .iter()
            .flat_map(|(name, (count, sum))| {
                [
                    (format!("released_{name}_mean"), sum / f64::from(*count)),
                    (format!("released_{name}_clients"), f64::from(*count)),
                ]
            })
            .collect()
    }
}

impl Service {
    /// A participant's released metrics for the open round `round`.
    pub async fn report_metrics(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        upload: MetricsUpload,
    ) -> Result<UploadReceipt, ApiError> {
        let client = self.client_for_cert(fed, fingerprint).await?;
        let live = match self.live_round(fed) {
            Some(lr) if lr.lock().await.key.round == round => lr,
            _ => return Err(self.refuse_stale(fed, round).await),
        };
        let mut g = live.lock().await;
        if !g.is_participant(&client.id) {
            return Err(ApiError::Forbidden(format!(
                "client {} was not sampled for round {round}",
                client.id
            )));
        }
        let accepted = g.released_mut().add(&client.id, &upload)?;
        Ok(UploadReceipt {
            round: cohort_protocol::RoundId::new(round.get()).map_err(ApiError::internal)?,
            accepted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_privacy::EpsDelta;
    use cohort_protocol::messages::ReleasedMetric;

    fn upload(values: &[(&str, f64)]) -> MetricsUpload {
        MetricsUpload {
            values: values
                .iter()
                .map(|(n, v)| ReleasedMetric {
                    name: (*n).to_owned(),
                    value: *v,
                    noise_std: 0.1,
                })
                .collect(),
            charged: EpsDelta::new(0.5, 1e-7).unwrap(),
        }
    }

    #[test]
    fn reports_are_summed_once_per_client_and_bad_ones_change_nothing() {
        let mut r = ReleasedMetrics::default();
        let a = ClientId::parse("a").unwrap();
        let b = ClientId::parse("b").unwrap();
        assert_eq!(
            r.add(&a, &upload(&[("loss", 1.0), ("accuracy", 0.5)]))
                .unwrap(),
            1
        );
        assert!(r.add(&a, &upload(&[("loss", 9.0)])).is_err());
        assert!(r.add(&b, &upload(&[("Loss", 1.0)])).is_err());
        assert!(r.add(&b, &upload(&[("loss", f64::NAN)])).is_err());
        assert!(r.add(&b, &upload(&[("loss", 1.0), ("loss", 2.0)])).is_err());
        assert!(r.add(&b, &upload(&[])).is_err());
        assert_eq!(r.add(&b, &upload(&[("loss", 3.0)])).unwrap(), 2);
        let summary: BTreeMap<_, _> = r.summary().into_iter().collect();
        assert_eq!(summary["released_loss_mean"], 2.0);
        assert_eq!(summary["released_loss_clients"], 2.0);
        assert_eq!(summary["released_accuracy_mean"], 0.5);
        assert_eq!(summary["released_accuracy_clients"], 1.0);
    }
}
