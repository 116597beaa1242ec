//! Issue 7: participants release their training metrics through `cohort_privacy::release`
//! (opendp), paying the charge to their local ledger first; the server keeps the noised
//! values with the round; a client whose budget cannot afford the release sends nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cohort_client::participant::{LocalMetrics, MetricsOutcome, Poll, RoundOutcome};
use cohort_privacy::EpsDelta;
use common::*;

const DIM: usize = 8;

fn delta(i: usize, _r: u64) -> Vec<f32> {
    vec![0.01 * (i as f32 + 1.0); DIM]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_charged_locally_before_release_and_refused_releases_send_nothing() {
    let world = World::new("metrics");
    let (server, ps) = federation(
        &world,
        "met",
        3,
        &[0.0; DIM],
        secure_config(3, 1000.0),
        delta,
    )
    .await;
    let per_round = EpsDelta::new(0.5, 1e-7).unwrap();
    // Clients 0 and 1 spend 0.5 per round on metrics; client 2 asks for more than its whole
    // local budget of 1000, which its ledger must refuse.
    let too_much = EpsDelta::new(2000.0, 1e-7).unwrap();
    let ps: Vec<_> = ps
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            p.trainer_mut().metrics = Some(LocalMetrics {
                mean_loss: 0.7,
                accuracy: 0.8,
                examples: 500,
            });
            p.with_metrics_release(if i < 2 { per_round } else { too_much })
        })
        .collect();
    let round = open_round(&world, &server.url, "met").await["id"]
        .as_u64()
        .unwrap();
    let results = poll_all(ps).await;
    for (i, (p, r)) in results.iter().enumerate() {
        let Ok(Poll::Round(rep)) = r else {
            panic!("client {i}: {r:?}")
        };
        assert_eq!(rep.outcome, RoundOutcome::Contributed, "client {i}");
        let releases = p.ledger().releases();
        if i < 2 {
            // The charge opendp's map gave is in the ledger, within the asked budget.
            let MetricsOutcome::Released(charged) = rep.metrics else {
                panic!("client {i}: {:?}", rep.metrics)
            };
            assert!(charged.fits_within(&per_round), "{charged:?}");
            assert!(charged.epsilon() > 0.4, "{charged:?}");
            assert_eq!(releases.len(), 1);
            assert_eq!(releases[0].epsilon, charged.epsilon());
            assert_eq!(releases[0].delta, charged.delta());
            assert!(
                releases[0]
                    .label
                    .ends_with(&format!("round-{round}/metrics"))
            );
            // ... and counted in the spend.
            assert!(p.ledger().spent_epsilon().unwrap() > charged.epsilon());
        } else {
            assert!(
                matches!(&rep.metrics, MetricsOutcome::Refused(why) if why.contains("budget")),
                "client {i}: {:?}",
                rep.metrics
            );
            assert!(releases.is_empty());
        }
    }
    let done = wait_round(&world, &server.url, "met", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let m = &done["metrics"];
    // Only the two releases that were paid for reached the server.
    for name in ["loss", "accuracy", "examples"] {
        assert_eq!(m[format!("released_{name}_clients")], 2.0, "{done}");
        assert!(
            m[format!("released_{name}_mean")]
                .as_f64()
                .unwrap()
                .is_finite()
        );
    }
    server.stop().await;
}
