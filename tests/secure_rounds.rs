//! Issue 7: secure federated averaging end to end, over real HTTPS on 127.0.0.1, with the
//! server in-process and participants from `cohort_client::participant` (scripted updates).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cohort_client::participant::{Poll, RoundOutcome};
use cohort_privacy::EpsDelta;
use common::*;
use serde_json::Value;

const DIM: usize = 8;

/// Client `i`'s update in round `r`: L2 norm below the clip of 1, so nothing is clipped.
fn delta(i: usize, r: u64) -> Vec<f32> {
    (0..DIM)
        .map(|j| {
            let sign = if (i + j).is_multiple_of(2) { 1.0 } else { -1.0 };
            sign * 0.02 * (i as f32 + 1.0) + 0.003 * r as f32 - 0.001 * j as f32
        })
        .collect()
}

fn mean_delta(clients: &[usize], round: u64) -> Vec<f64> {
    let mut m = [0.0f64; DIM];
    for &i in clients {
        for (a, v) in m.iter_mut().zip(delta(i, round)) {
            *a += f64::from(v);
        }
    }
    m.iter().map(|v| v / clients.len() as f64).collect()
}

/// One quantisation step of the round's quantiser: the worst-case error of a decoded mean.
fn step(config: &Value, clients: usize) -> (f64, u32) {
    let cfg: cohort_server::domain::TrainingConfig =
        serde_json::from_value(config.clone()).unwrap();
    let plan = cohort_server::service::secagg::plan(clients, DIM, &cfg).unwrap();
    (
        1.0 / plan.task.quantizer.quantizer().unwrap().scale(),
        plan.task.threshold,
    )
}

fn round_id(view: &Value) -> u64 {
    view["id"].as_u64().unwrap()
}

fn contributed(results: &[(TestParticipant, Result<Poll, String>)]) -> usize {
    results
        .iter()
        .filter(
            |(_, r)| matches!(r, Ok(Poll::Round(rep)) if rep.outcome == RoundOutcome::Contributed),
        )
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_clients_three_secure_rounds_equal_the_plain_average_within_quantisation() {
    let world = World::new("avg");
    let config = secure_config(3, 1000.0);
    let (server, mut ps) = federation(&world, "avg", 10, &[0.0; DIM], config.clone(), delta).await;
    let fed = admin_get(&world, &server.url, "/v1/federations/avg").await;
    assert_eq!(fed["config"]["secure_aggregation"], true, "{fed}");
    let (q_step, _) = step(&config, 10);
    let everyone: Vec<usize> = (0..10).collect();
    let mut expected = vec![0.0f64; DIM];
    for r in 1..=3u64 {
        let round = round_id(&open_round(&world, &server.url, "avg").await);
        let results = poll_all(ps).await;
        assert_eq!(
            contributed(&results),
            10,
            "{:?}",
            results.iter().map(|(_, r)| r).collect::<Vec<_>>()
        );
        ps = results.into_iter().map(|(p, _)| p).collect();
        let done = wait_round(&world, &server.url, "avg", round, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(done["accepted"], 10);
        for (e, m) in expected.iter_mut().zip(mean_delta(&everyone, round)) {
            *e += m;
        }
        let model = latest_model(&world, &server.url, "avg").await;
        for (j, (&got, &want)) in model.iter().zip(&expected).enumerate() {
            // Each round's mean is off by at most one quantisation step (n steps / n).
            let bound = r as f64 * q_step + 1e-6;
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "round {r} coordinate {j}: {got} vs {want} (bound {bound})"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_killed_at_each_stage_leave_a_correct_round_or_an_aborted_one() {
    let world = World::new("kill");
    let config = secure_config(3, 1000.0);
    let (server, mut ps) = federation(&world, "kill", 12, &[0.0; DIM], config.clone(), delta).await;
    let (q_step, t) = step(&config, 12);
    // One client dies before each stage: 0 never advertises keys, 1 never shares, 2 never
    // sends its masked input and 3 never sends unmask shares. The 8 that answer everything
    // (4..=11) hold at least 7 shares of every secret the server must reconstruct.
    assert!(t <= 7, "threshold {t}");
    for (p, kill) in ps
        .iter_mut()
        .zip([Kill::Keys, Kill::Shares, Kill::Masked, Kill::Unmask])
    {
        p.transport_mut().kill = Some(kill);
    }
    let round = round_id(&open_round(&world, &server.url, "kill").await);
    let results = poll_all(ps).await;
    for (i, (_, r)) in results.iter().enumerate() {
        if i < 4 {
            assert!(
                r.as_ref().is_err_and(|e| e.contains("killed")),
                "client {i}: {r:?}"
            );
        } else {
            assert!(
                matches!(r, Ok(Poll::Round(rep)) if rep.outcome == RoundOutcome::Contributed),
                "client {i}: {r:?}"
            );
        }
    }
    ps = results.into_iter().map(|(p, _)| p).collect();
    let done = wait_round(&world, &server.url, "kill", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    // The sum holds the inputs of 3 (it masked, then died before unmasking) and 4..=11.
    assert_eq!(done["accepted"], 9, "{done}");
    let survivors: Vec<usize> = (3..12).collect();
    let model = latest_model(&world, &server.url, "kill").await;
    for (got, want) in model.iter().zip(mean_delta(&survivors, round)) {
        assert!(
            (f64::from(*got) - want).abs() <= q_step + 1e-6,
            "{got} vs {want}"
        );
    }

    // Now too many die at the share stage: t shared clients hold only t − 1 shares of each
    // other's secrets, so the round must abort and say why.
    let killed = 12 - t as usize;
    for (i, p) in ps.iter_mut().enumerate() {
        p.transport_mut().kill = (i < killed).then_some(Kill::Shares);
    }
    check_in(&mut ps).await;
    let round = round_id(&open_round(&world, &server.url, "kill").await);
    let results = poll_all(ps).await;
    assert_eq!(contributed(&results), 0);
    let done = wait_round(&world, &server.url, "kill", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "aborted", "{done}");
    let reason = done["abort_reason"].as_str().unwrap();
    assert!(
        reason.contains("secure aggregation aborted at stage share_keys"),
        "{reason}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_client_is_not_scheduled_and_both_sides_say_why() {
    // A budget that affords one round (2 DP-SGD steps at q = 0.5, σ = 1) but not two.
    let probe_dir = TempDir::new("probe");
    let probe = cohort_client::ledger::LocalLedger::open(
        probe_dir.0.join("l.jsonl"),
        EpsDelta::new(1000.0, 1e-5).unwrap(),
    )
    .unwrap();
    let one = probe.projected_epsilon(1.0, 0.5, 2).unwrap();
    let two = probe.projected_epsilon(1.0, 0.5, 4).unwrap();
    let budget = (one + two) / 2.0;
    let world = World::new("budget");
    let server = world.start().await;
    create_federation(
        &world,
        &server.url,
        "bud",
        &[0.0; DIM],
        secure_config(3, budget),
    )
    .await;
    let local = EpsDelta::new(budget, 1e-5).unwrap();
    let mut ps = participants(&world, &server.url, "bud", 3, delta, local).await;
    check_in(&mut ps).await;
    let round = round_id(&open_round(&world, &server.url, "bud").await);
    let results = poll_all(ps).await;
    assert_eq!(contributed(&results), 3);
    let mut ps: Vec<_> = results.into_iter().map(|(p, _)| p).collect();
    let done = wait_round(&world, &server.url, "bud", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");

    // The API: the poll says why the client gets no task; the next round samples nobody.
    for p in &mut ps {
        match p.poll_once().await.unwrap() {
            Poll::Ineligible { reason, .. } => {
                assert!(
                    reason.contains("budget cannot afford another round"),
                    "{reason}"
                );
                assert!(reason.contains("would exceed the budget"), "{reason}");
            }
            other => panic!("expected ineligible, got {other:?}"),
        }
        // The library (what `cohort join` prints) says why from the local ledger.
        let dp = cohort_protocol::messages::DpSgdConfig {
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            local_epochs: 1,
            batch_sample_rate: 0.5,
        };
        let why = p
            .local_refusal(&dp)
            .expect("the local ledger should refuse");
        assert!(why.contains("over the budget"), "{why}");
        assert_eq!(p.ledger().entries().len(), 1);
    }
    let skipped = open_round(&world, &server.url, "bud").await;
    assert_eq!(skipped["state"], "aborted", "{skipped}");
    assert!(skipped["participants"].as_array().unwrap().is_empty());
    let budgets = admin_get(&world, &server.url, "/v1/federations/bud/budgets").await;
    for c in budgets["clients"].as_array().unwrap() {
        assert_eq!(c["rounds"], 1, "{budgets}");
    }
    server.stop().await;
}

/// Polls the round view until `accepted` reaches `n` (every masked input summed).
async fn wait_accepted(world: &World, url: &str, fed: &str, round: u64, n: u64) {
    let started = std::time::Instant::now();
    loop {
        let r = admin_get(world, url, &format!("/v1/federations/{fed}/rounds/{round}")).await;
        if r["accepted"].as_u64() == Some(n) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_mid_round_aborts_it_and_the_next_round_completes() {
    let world = World::new("restart");
    let mut config = secure_config(3, 1000.0);
    config["deadlines"]["unmask_s"] = serde_json::json!(30);
    let (server, mut ps) = federation(&world, "rs", 4, &[0.0; DIM], config.clone(), delta).await;
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    for p in &mut ps {
        p.transport_mut().hold_unmask = Some(hold.clone());
    }
    let round = round_id(&open_round(&world, &server.url, "rs").await);
    let running = tokio::spawn(poll_all(ps));
    // Every masked input is in the running sum; the round waits for unmask shares.
    wait_accepted(&world, &server.url, "rs", round, 4).await;
    let addr = server.addr;
    server.stop().await;
    let server = world.start_at(addr).await;
    hold.add_permits(100);
    let results = running.await.unwrap();
    for (_, r) in &results {
        assert!(
            matches!(r, Ok(Poll::Round(rep)) if matches!(rep.outcome, RoundOutcome::Dropped(_))),
            "{r:?}"
        );
    }
    let view = admin_get(
        &world,
        &server.url,
        &format!("/v1/federations/rs/rounds/{round}"),
    )
    .await;
    assert_eq!(view["state"], "aborted", "{view}");
    assert!(
        view["abort_reason"]
            .as_str()
            .unwrap()
            .contains("server restarted"),
        "{view}"
    );

    let mut ps: Vec<_> = results.into_iter().map(|(p, _)| p).collect();
    for p in &mut ps {
        p.transport_mut().hold_unmask = None;
    }
    let next = round_id(&open_round(&world, &server.url, "rs").await);
    let results = poll_all(ps).await;
    assert_eq!(contributed(&results), 4);
    let done = wait_round(&world, &server.url, "rs", next, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    // The aborted round still counts, once; the completed one once.
    for (p, _) in &results {
        assert_eq!(p.ledger().entries().len(), 2);
    }
    server.stop().await;
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts no stored byte sequence holds any client's update or masked input.
fn assert_nothing_individual_stored(world: &World, masked: &[Vec<u8>], round: u64, clients: usize) {
    let stored: Vec<(std::path::PathBuf, Vec<u8>)> = files(&world.data_dir())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert!(!stored.is_empty());
    for frame in masked {
        // The payload of a u32 frame starts after its 16-byte header.
        let payload = &frame[16..frame.len() - 4];
        for (path, bytes) in &stored {
            assert!(
                !holds(bytes, payload),
                "{} holds a masked input",
                path.display()
            );
            assert!(
                !holds(bytes, &payload[..16]),
                "{} holds part of a masked input",
                path.display()
            );
        }
    }
    for i in 0..clients {
        let plain: Vec<u8> = delta(i, round)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for (path, bytes) in &stored {
            assert!(
                !holds(bytes, &plain[..16]),
                "{} holds client {i}'s update",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_stores_no_individual_update_during_or_after_a_round() {
    let world = World::new("store");
    let mut config = secure_config(3, 1000.0);
    config["deadlines"]["unmask_s"] = serde_json::json!(30);
    let (server, mut ps) = federation(&world, "st", 5, &[0.0; DIM], config.clone(), delta).await;
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let recorded: Vec<_> = ps
        .iter_mut()
        .map(|p| {
            p.transport_mut().hold_unmask = Some(hold.clone());
            p.transport().masked_sent.clone()
        })
        .collect();
    let round = round_id(&open_round(&world, &server.url, "st").await);
    let running = tokio::spawn(poll_all(ps));
    wait_accepted(&world, &server.url, "st", round, 5).await;
    let masked: Vec<Vec<u8>> = recorded
        .iter()
        .flat_map(|r| r.lock().unwrap().clone())
        .collect();
    assert_eq!(masked.len(), 5);
    // Mid-round: every masked input has been summed; nothing individual is on disk.
    assert_nothing_individual_stored(&world, &masked, round, 5);
    hold.add_permits(100);
    let results = running.await.unwrap();
    assert_eq!(contributed(&results), 5);
    let done = wait_round(&world, &server.url, "st", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_nothing_individual_stored(&world, &masked, round, 5);
    // The only blobs are model versions (the initial one and the round's result): each
    // parses as a whole model, none is an update.
    let blobs = files(&world.data_dir().join("blobs"));
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    for b in &blobs {
        let bytes = std::fs::read(b).unwrap();
        assert_eq!(read_weights(&bytes).len(), DIM);
    }
    server.stop().await;
}
