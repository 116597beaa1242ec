//! Issue 7: secure rounds with distributed DP on, over real HTTPS on 127.0.0.1. The clients'
//! Skellam shares must add up to the calibrated central noise, and the federation's ledger
//! must charge exactly that noise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cohort_client::participant::{Poll, RoundOutcome};
use cohort_privacy::accounting::conversion::epsilon_from_rdp;
use cohort_privacy::accounting::{Accountant, RdpAccountant, SubsampledGaussian};
use cohort_privacy::noise::skellam_rdp::{dp_accounting_orders, skellam_rdp};
use common::*;
use serde_json::{Value, json};

const DIM: usize = 4000;
const CLIENTS: usize = 10;
const Z: f64 = 1.0;

/// Client `i`'s update in round `r`: |x_j| ≤ 0.01, so the L2 norm (≤ 0.64) stays below the
/// clip of 1 and nothing is clipped.
fn delta(i: usize, r: u64) -> Vec<f32> {
    (0..DIM)
        .map(|j| 0.01 * ((i * 7 + j * 13 + r as usize * 5) % 21) as f32 / 10.0 - 0.01)
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

fn noisy_config() -> Value {
    // min_clients = CLIENTS makes n_min = n: every sampled client must survive, so the noise
    // the round carries is exactly the calibrated central noise.
    let mut c = secure_config(CLIENTS as u32, 1000.0);
    c["central_noise_multiplier"] = json!(Z);
    c["federation_budget"] = json!({ "epsilon": 50.0, "delta": 1e-5 });
    c["strategy"] = json!({ "name": "fed_avg", "weighting": "uniform" });
    c["deadlines"]["training_s"] = json!(10);
    c
}

async fn model(world: &World, url: &str) -> Vec<f64> {
    latest_model(world, url, "noisy")
        .await
        .into_iter()
        .map(f64::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_noise_adds_up_to_the_calibrated_std_and_the_ledger_charges_its_skellam_rdp() {
    let world = World::new("noise");
    let config = noisy_config();
    let (server, mut ps) =
        federation(&world, "noisy", CLIENTS, &[0.0; DIM], config.clone(), delta).await;

    // What the round must look like, from the plan and the papers' formulas.
    let cfg: cohort_server::domain::TrainingConfig = serde_json::from_value(config).unwrap();
    let plan = cohort_server::secure_plan::plan(CLIENTS, DIM, &cfg).unwrap();
    assert_eq!(plan.min_survivors, CLIENTS as u64);
    let quantizer = plan.task.quantizer.quantizer().unwrap();
    let steps = f64::from(1u32 << plan.task.quantizer.precision_bits);
    let l2 = steps + (DIM as f64).sqrt();
    let l1 = l2 * l2.min((DIM as f64).sqrt());
    let central_variance = 2.0 * CLIENTS as f64 * plan.task.skellam_mu;
    assert!(central_variance >= (Z * l2).powi(2));
    // Std of the noise in the averaged update, in model units.
    let mean_noise_std = central_variance.sqrt() / quantizer.scale() / CLIENTS as f64;
    // Stochastic rounding adds at most a quarter step² per client.
    let rounding_var = CLIENTS as f64 * 0.25 / (quantizer.scale() * CLIENTS as f64).powi(2);

    let mut before = vec![0.0f64; DIM];
    let mut noise = Vec::with_capacity(2 * DIM);
    for _ in 0..2 {
        let round = open_round(&world, &server.url, "noisy").await["id"]
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
        let done = wait_round(&world, &server.url, "noisy", round, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(done["accepted"], CLIENTS as u64);
        let achieved = done["metrics"]["distributed_noise_multiplier"]
            .as_f64()
            .unwrap();
        let planned = central_variance.sqrt() / l2;
        assert!((achieved - planned).abs() <= 1e-12 * planned, "{done}");
        let after = model(&world, &server.url).await;
        for ((a, b), m) in after.iter().zip(&before).zip(mean_delta(round)) {
            noise.push(a - b - m);
        }
        before = after;
    }

    // The noise: centred, with the calibrated std. The sample std of N near-Gaussian values
    // has relative standard error 1/√(2N); allow five of them.
    let n = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / n;
    let std = (noise.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let rel = 5.0 / (2.0 * n).sqrt();
    assert!(
        mean.abs() < 5.0 * mean_noise_std / n.sqrt(),
        "mean {mean} (std {mean_noise_std})"
    );
    let low = mean_noise_std * (1.0 - rel);
    let high = (mean_noise_std.powi(2) + rounding_var).sqrt() * (1.0 + rel);
    assert!(
        low <= std && std <= high,
        "empirical std {std}, calibrated {mean_noise_std} (accepted {low}..{high})"
    );

    // The ledger: two rounds of the Skellam mechanism, composed, at the budget's δ.
    let orders = dp_accounting_orders();
    let one_round = skellam_rdp(&orders, l1, l2, central_variance).unwrap();
    let two_rounds: Vec<f64> = one_round.iter().map(|r| 2.0 * r).collect();
    let (expected, _) = epsilon_from_rdp(&orders, &two_rounds, 1e-5).unwrap();
    let budgets = admin_get(&world, &server.url, "/v1/federations/noisy/budgets").await;
    let charged = budgets["federation_spent"]["epsilon"].as_f64().unwrap();
    assert!(
        (charged - expected).abs() <= 1e-9 * expected,
        "ledger {charged} vs Skellam {expected}"
    );
    // Never below the Gaussian of the same variance.
    let mut gaussian = RdpAccountant::new();
    gaussian.step(
        SubsampledGaussian::new(1.0, central_variance.sqrt() / l2).unwrap(),
        2,
    );
    assert!(charged >= gaussian.epsilon(1e-5).unwrap());
    server.stop().await;
}
