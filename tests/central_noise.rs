//! Issue 18, item 5: a plain DP-FedAvg round over real HTTPS on 127.0.0.1. The server's
//! central noise is the privacy crate's lattice Gaussian: the model carries noise of the
//! calibrated std, on the lattice, and the federation's ledger charges exactly that mechanism.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cohort_client::participant::{Poll, RoundOutcome};
use cohort_privacy::accounting::conversion::epsilon_from_rdp;
use cohort_privacy::noise::LatticeGaussian;
use cohort_privacy::noise::skellam_rdp::dp_accounting_orders;
use common::*;
use serde_json::{Value, json};

const DIM: usize = 4000;
const CLIENTS: usize = 5;
const Z: f64 = 0.8;
const CLIP: f64 = 1.0;
const ROUNDS: u64 = 3;

/// Client `i`'s update in round `r`: |x_j| ≤ 0.01, so the L2 norm (≤ 0.64) stays below the
/// clip and nothing is clipped.
fn delta(i: usize, r: u64) -> Vec<f32> {
    (0..DIM)
        .map(|j| 0.01 * ((i * 5 + j * 11 + r as usize * 3) % 21) as f32 / 10.0 - 0.01)
        .collect()
}

fn mean_delta(round: u64) -> Vec<f64> {
    let mut m = vec![0.0f64; DIM];
    for i in 0..CLIENTS {
        for (a, v) in m.iter_mut().zip(delta(i, round)) {
            *a += f64::from(v);
        }
    }
    m.iter().map(|v| v / CLIENTS as f64).collect()
}

fn plain_config() -> Value {
    let mut c = secure_config(CLIENTS as u32, 1000.0);
    c["secure_aggregation"] = json!(false);
    c["update_clip"] = json!(CLIP);
    c["central_noise_multiplier"] = json!(Z);
    c["federation_budget"] = json!({ "epsilon": 50.0, "delta": 1e-5 });
    c["strategy"] = json!({ "name": "fed_avg", "weighting": "uniform" });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_round_carries_lattice_gaussian_noise_of_the_calibrated_std_and_is_charged_for_it()
{
    let world = World::new("central");
    let (server, mut ps) =
        federation(&world, "plain", CLIENTS, &[0.0; DIM], plain_config(), delta).await;
    let plan = LatticeGaussian::plan(CLIP, Z, DIM).unwrap();
    assert!(plan.noise_multiplier() >= Z);
    // FedAvg divides the noised sum by the n updates it received.
    let mean_noise_std = plan.std() / CLIENTS as f64;

    let mut before = vec![0.0f64; DIM];
    let mut noise = Vec::with_capacity(ROUNDS as usize * DIM);
    for _ in 0..ROUNDS {
        let round = open_round(&world, &server.url, "plain").await["id"]
            .as_u64()
            .unwrap();
        let results = poll_all(ps).await;
        for (_, res) in &results {
            assert!(
                matches!(res, Ok(Poll::Round(rep)) if rep.outcome == RoundOutcome::Contributed),
                "{res:?}"
            );
        }
        ps = results.into_iter().map(|(p, _)| p).collect();
        let done = wait_round(&world, &server.url, "plain", round, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(done["accepted"], CLIENTS as u64);
        let after: Vec<f64> = latest_model(&world, &server.url, "plain")
            .await
            .into_iter()
            .map(f64::from)
            .collect();
        for ((a, b), m) in after.iter().zip(&before).zip(mean_delta(round)) {
            noise.push(a - b - m);
        }
        before = after;
    }

    // Centred, with the calibrated std: the sample std of N near-Gaussian values has relative
    // standard error 1/√(2N); allow five of them. Lattice rounding moves each sum by at most
    // γ/2 and the f32 model by its own rounding: both far below the tolerance.
    let n = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / n;
    let std = (noise.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let rel = 5.0 / (2.0 * n).sqrt();
    assert!(
        mean.abs() < 5.0 * mean_noise_std / n.sqrt(),
        "mean {mean} (std {mean_noise_std})"
    );
    assert!(
        (std - mean_noise_std).abs() <= rel * mean_noise_std,
        "empirical std {std}, calibrated {mean_noise_std} (±{rel} relative)"
    );

    // The ledger: ROUNDS runs of the lattice mechanism at q = 1, composed, at the budget's δ.
    let orders = dp_accounting_orders();
    let composed: Vec<f64> = plan
        .rdp(1.0, &orders)
        .iter()
        .map(|r| ROUNDS as f64 * r)
        .collect();
    let (expected, _) = epsilon_from_rdp(&orders, &composed, 1e-5).unwrap();
    let budgets = admin_get(&world, &server.url, "/v1/federations/plain/budgets").await;
    let charged = budgets["federation_spent"]["epsilon"].as_f64().unwrap();
    assert!(
        (charged - expected).abs() <= 1e-9 * expected,
        "ledger {charged} vs lattice Gaussian {expected}"
    );
    server.stop().await;
}
