//! Issue 17: federated evaluation over real HTTPS on 127.0.0.1. Ten sites with the real tch
//! participant evaluate a model trained on breast-cancer data on their shards of the held-out
//! split; the server sums their statistics and derives the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cohort_client::data::{self, DataSpec, Dataset};
use cohort_client::ledger::LocalLedger;
use cohort_client::model::{self, ModelSpec};
use cohort_client::participant::evaluation::site_statistics;
use cohort_client::participant::https::{HttpsTransport, Identity, enrol, https_client};
use cohort_client::participant::transport::Call;
use cohort_client::participant::{
    DpSgdTrainer, EvaluationOutcome, HeldOut, Participant, Poll, Transport,
};
use cohort_client::weights;
use cohort_evaluation::{
    Cell, ClassificationShape, Derivation, Plausibility, Released, Report, Shape,
};
use cohort_privacy::EpsDelta;
use cohort_privacy::integer_release::{Placement, ReleasePlan};
use cohort_protocol::evaluation::StatisticsReceipt;
use cohort_protocol::evaluation::{EvaluationTask, StatisticsUpload, TaskNoise};
use cohort_protocol::messages::{TaskPoll, UploadReceipt};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};
use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind};

const SITES: usize = 10;
const BINS: u32 = 100;

type Site = Participant<Recording, DpSgdTrainer>;

/// HTTPS, keeping a copy of every statistics vector the site released.
struct Recording {
    inner: HttpsTransport,
    released: Arc<Mutex<Vec<Vec<i64>>>>,
}

impl Transport for Recording {
    fn poll_task(&self, sample_count: Option<u64>) -> Call<'_, TaskPoll> {
        self.inner.poll_task(sample_count)
    }
    fn download_model(&self, version: u64) -> Call<'_, Vec<u8>> {
        self.inner.download_model(version)
    }
    fn upload_plain(&self, round: u64, frame: Vec<u8>, n: u64) -> Call<'_, UploadReceipt> {
        self.inner.upload_plain(round, frame, n)
    }
    fn send_statistics(
        &self,
        evaluation: u64,
        upload: StatisticsUpload,
    ) -> Call<'_, StatisticsReceipt> {
        self.released.lock().unwrap().push(upload.values.clone());
        self.inner.send_statistics(evaluation, upload)
    }
    fn send_keys(&self, round: u64, keys: PublicKeys) -> Call<'_, StageReceipt> {
        self.inner.send_keys(round, keys)
    }
    fn poll_directory(&self, round: u64) -> Call<'_, StagePoll<Directory>> {
        self.inner.poll_directory(round)
    }
    fn send_shares(&self, round: u64, shares: SharesUpload) -> Call<'_, StageReceipt> {
        self.inner.send_shares(round, shares)
    }
    fn poll_routed(&self, round: u64) -> Call<'_, StagePoll<Routed>> {
        self.inner.poll_routed(round)
    }
    fn send_masked(&self, round: u64, frame: Vec<u8>) -> Call<'_, StageReceipt> {
        self.inner.send_masked(round, frame)
    }
    fn poll_unmask(&self, round: u64) -> Call<'_, StagePoll<UnmaskList>> {
        self.inner.poll_unmask(round)
    }
    fn send_unmask(&self, round: u64, shares: UnmaskShares) -> Call<'_, StageReceipt> {
        self.inner.send_unmask(round, shares)
    }
}

/// The breast-cancer split, and an MLP trained on its training side (plain full-batch Adam:
/// the model only has to be good enough for AUROC to mean something).
fn trained_model() -> (data::Split, ModelSpec, Vec<u8>) {
    let spec: DataSpec = "csv:client/data/breast_cancer.csv?label=diagnosis&seed=7"
        .parse()
        .unwrap();
    let split = data::load(&spec).unwrap();
    let inputs = split.train.features.size()[1];
    let model_spec = ModelSpec::mlp(inputs, &[8], 2);
    tch::manual_seed(17);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = model::build(&vs.root(), &model_spec).unwrap();
    let mut opt = tch::nn::Adam::default().build(&vs, 0.01).unwrap();
    let mut tape = model::Tape::off();
    for _ in 0..150 {
        let logits = net
            .forward_t(&split.train.features, true, &mut tape)
            .unwrap();
        let loss = logits.cross_entropy_for_logits(&split.train.labels);
        opt.backward_step(&loss);
    }
    let bytes = weights::to_safetensors(&vs).unwrap();
    (split, model_spec, bytes)
}

fn shard(data: &Dataset, site: usize) -> Dataset {
    let n = usize::try_from(data.len()).unwrap();
    let rows: Vec<usize> = (0..n).filter(|i| i % SITES == site).collect();
    data.select(&rows).unwrap()
}

fn shape() -> ClassificationShape {
    ClassificationShape::new(2, 1, BINS, 5.0, 8).unwrap()
}

fn evaluation_config(noise: Value, per_site: bool) -> Value {
    let mut c = secure_config(1, 1000.0);
    c["secure_aggregation"] = json!(false);
    c["evaluation"] = json!({
        "shape": {"task": "classification", "classes": 2, "groups": 1, "bins": BINS,
                  "loss_clip": 5.0, "loss_units": 8},
        "noise": noise,
        "per_site_release": per_site,
        "min_sites": SITES,
        "deadline_s": 60
    });
    c
}

/// Creates the federation and ten enrolled sites, each holding its shard of the held-out
/// split; every site has polled once (nothing to do yet).
async fn sites(
    world: &World,
    url: &str,
    fed: &str,
    split: &data::Split,
    spec: &ModelSpec,
    initial: Vec<u8>,
    config: Value,
) -> (Vec<Site>, Vec<Identity>) {
    create_federation_with(
        world,
        url,
        fed,
        initial,
        serde_json::to_value(spec).unwrap(),
        config,
    )
    .await;
    let (mut out, mut ids) = (Vec::new(), Vec::new());
    for i in 0..SITES {
        let name = format!("hospital-{i}");
        let created = create_client(world, url, fed, &name).await;
        let token = created["enrolment_token"].as_str().unwrap();
        let id = enrol(url, fed, token, &world.ca_pem, Some(40))
            .await
            .unwrap();
        let dir = world.root.0.join(&name);
        id.save(&dir).unwrap();
        let ledger = LocalLedger::open(
            dir.join("ledger.jsonl"),
            EpsDelta::new(1000.0, 1e-5).unwrap(),
        )
        .unwrap();
        let trainer = DpSgdTrainer::new(shard(&split.train, i), None, Device::Cpu, 0.1)
            .with_held_out(HeldOut {
                data: shard(&split.test, i),
                groups: None,
            });
        let transport = Recording {
            inner: HttpsTransport::new(url, &id).unwrap(),
            released: Arc::new(Mutex::new(Vec::new())),
        };
        let mut p = Participant::new(transport, trainer, ledger, fed);
        let poll = p.poll_once().await.unwrap();
        assert!(
            matches!(poll, Poll::Wait(_) | Poll::Ineligible { .. }),
            "{poll:?}"
        );
        out.push(p);
        ids.push(id);
    }
    (out, ids)
}

async fn open_evaluation(world: &World, url: &str, fed: &str) -> Value {
    let resp = world
        .http()
        .post(format!("{url}/v1/federations/{fed}/evaluations"))
        .bearer_auth(&world.admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status.as_u16(), 201, "{body}");
    body
}

/// Every site polls once, concurrently, and answers its evaluation task.
async fn answer_all(ps: Vec<Site>) -> Vec<Site> {
    let handles: Vec<_> = ps
        .into_iter()
        .map(|mut p| tokio::spawn(async move { (p.poll_once().await.unwrap(), p) }))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        let (poll, p) = h.await.unwrap();
        match poll {
            Poll::Evaluated(r) => assert_eq!(r.outcome, EvaluationOutcome::Released, "{r}"),
            other => panic!("expected an evaluation, got {other:?}"),
        }
        out.push(p);
    }
    out
}

async fn wait_evaluation(world: &World, url: &str, fed: &str, number: u64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let all = admin_get(world, url, &format!("/v1/federations/{fed}/evaluations")).await;
        let e = all
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["evaluation"] == number)
            .unwrap()
            .clone();
        if e["state"] != "open" {
            return e;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn task(noise: TaskNoise) -> EvaluationTask {
    EvaluationTask {
        federation: cohort_protocol::FederationId::parse("x").unwrap(),
        evaluation: 1,
        model_version: 0,
        shape: Shape::Classification(shape()),
        group_column: None,
        group_values: vec!["all".into()],
        noise,
        epsilon_after: None,
        upload_deadline_ms: 0,
        model_spec: None,
        config: Default::default(),
    }
}

/// The central computation: the statistics of the union of every site's held-out shard.
fn central(split: &data::Split, spec: &ModelSpec, w: &[u8]) -> Vec<i64> {
    let union = HeldOut {
        data: split
            .test
            .select(&(0..usize::try_from(split.test.len()).unwrap()).collect::<Vec<_>>())
            .unwrap(),
        groups: None,
    };
    site_statistics(spec, Device::Cpu, w, &union, &task(TaskNoise::Off)).unwrap()
}

/// Exact AUROC (ties count one half) of the model's positive-class probability.
fn exact_auroc(split: &data::Split, spec: &ModelSpec, w: &[u8]) -> f64 {
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let net = model::build(&vs.root(), spec).unwrap();
    weights::load_safetensors(&mut vs, w).unwrap();
    let probs = tch::no_grad(|| {
        net.forward_t(&split.test.features, false, &mut model::Tape::off())
            .unwrap()
            .softmax(-1, Kind::Double)
            .select(1, 1)
    });
    let p: Vec<f64> = Vec::try_from(probs).unwrap();
    let y: Vec<i64> = Vec::try_from(&split.test.labels).unwrap();
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (pi, yi) in p.iter().zip(&y) {
        for (pj, yj) in p.iter().zip(&y) {
            if *yi == 1 && *yj == 0 {
                pairs += 1.0;
                wins += if pi > pj {
                    1.0
                } else if pi == pj {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    wins / pairs
}

fn report(view: &Value) -> cohort_evaluation::ClassificationReport {
    match serde_json::from_value::<Report>(view["report"].clone()).unwrap() {
        Report::Classification(c) => c,
        Report::Regression(_) => panic!("classification expected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noise_off_the_federated_confusion_matrix_is_the_central_one_and_auroc_is_close() {
    let world = World::new("eval-exact");
    let server = world.start().await;
    let (split, spec, initial) = trained_model();
    let config = evaluation_config(json!({"placement": "off"}), false);
    let (ps, _) = sites(
        &world,
        &server.url,
        "ev",
        &split,
        &spec,
        initial.clone(),
        config,
    )
    .await;
    let opened = open_evaluation(&world, &server.url, "ev").await;
    assert_eq!(
        opened["noise"]["placement"], "off",
        "the opt-out is visible: {opened}"
    );
    assert_eq!(opened["participants"].as_array().unwrap().len(), SITES);
    let ps = answer_all(ps).await;
    let done = wait_evaluation(&world, &server.url, "ev", 1).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["accepted"], SITES);

    let central = central(&split, &spec, &initial);
    let released =
        Released::parse(Shape::Classification(shape()), central, Plausibility::Exact).unwrap();
    let Report::Classification(want) = Report::derive(
        &released,
        Derivation {
            noise_variance: 0.0,
            min_count: 0,
        },
    ) else {
        panic!()
    };
    let got = report(&done);
    assert_eq!(got.confusion, want.confusion, "cell for cell");
    for (g, w) in [
        (got.accuracy, want.accuracy),
        (got.balanced_accuracy, want.balanced_accuracy),
        (got.macro_f1, want.macro_f1),
        (got.auroc, want.auroc),
        (got.ece, want.ece),
    ] {
        assert!(
            (g.estimate().unwrap() - w.estimate().unwrap()).abs() < 1e-12,
            "{g:?} vs {w:?}"
        );
    }
    let n: i64 = got.confusion.iter().flatten().filter_map(Cell::value).sum();
    assert_eq!(n, split.test.len());

    let exact = exact_auroc(&split, &spec, &initial);
    let binned = got.auroc.estimate().unwrap();
    assert!(exact > 0.9, "the model is trained: exact AUROC {exact}");
    assert!(
        (binned - exact).abs() <= 0.01,
        "binned {binned} vs exact {exact}"
    );
    // Noise off charges nothing anywhere.
    for p in &ps {
        assert_eq!(p.ledger().spent_epsilon().unwrap(), 0.0);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noise_on_counts_carry_the_calibrated_spread_and_both_ledgers_charge_the_plan() {
    let world = World::new("eval-noise");
    let server = world.start().await;
    let (split, spec, initial) = trained_model();
    // The release's δ must leave the sites' own ledgers δ to convert their RDP at (their
    // budget's δ is 1e-5): a release of δ = 1e-5 would use all of it.
    let budget = EpsDelta::new(1.0, 1e-6).unwrap();
    let config = evaluation_config(
        json!({"placement": "local", "budget": {"epsilon": 1.0, "delta": 1e-6}}),
        true,
    );
    let (mut ps, _) = sites(
        &world,
        &server.url,
        "evn",
        &split,
        &spec,
        initial.clone(),
        config,
    )
    .await;
    let plan = ReleasePlan::calibrate(
        budget,
        Shape::Classification(shape()).sensitivity().unwrap(),
        Placement::Local,
    )
    .unwrap();
    let std = (2.0 * plan.per_site_mu()).sqrt();
    // Each site's exact confusion cells and count, to take the noise out of its release.
    let exact: Vec<Vec<i64>> = (0..SITES)
        .map(|i| {
            let held = HeldOut {
                data: shard(&split.test, i),
                groups: None,
            };
            site_statistics(&spec, Device::Cpu, &initial, &held, &task(TaskNoise::Off)).unwrap()
        })
        .collect();
    let opened = open_evaluation(&world, &server.url, "evn").await;
    assert_eq!(opened["noise"]["placement"], "local");
    ps = answer_all(ps).await;
    let done = wait_evaluation(&world, &server.url, "evn", 1).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        done["sites"].as_array().unwrap().len(),
        SITES,
        "per-site release is on"
    );
    // Fresh accounts: both ledgers hold exactly this one release's ε — the server's RDP
    // account at the site budget's δ, the site's ledger as (ε, δ) at the release's δ.
    let at_budget_delta = plan.charge().epsilon(1e-5).unwrap();
    let budgets = admin_get(&world, &server.url, "/v1/federations/evn/budgets").await;
    for c in budgets["clients"].as_array().unwrap() {
        let server_eps = c["spent"]["epsilon"].as_f64().unwrap();
        assert!(
            (server_eps - at_budget_delta).abs() < 1e-9,
            "{server_eps} vs {at_budget_delta}"
        );
    }
    for p in &ps {
        let local = p.ledger().spent_epsilon().unwrap();
        assert!(
            (local - plan.epsilon()).abs() < 1e-9,
            "{local} vs {}",
            plan.epsilon()
        );
    }
    assert!(
        plan.epsilon() <= 1.0 && plan.epsilon() > 0.99,
        "{}",
        plan.epsilon()
    );
    // Every coordinate each site released, minus its exact value: the noise it added.
    let mut noise = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        let released = p.transport().released.lock().unwrap().clone();
        assert_eq!(released.len(), 1);
        for (r, e) in released[0].iter().zip(&exact[i]) {
            noise.push((r - e) as f64);
        }
    }
    assert_eq!(noise.len(), SITES * shape().len());
    let n = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / n;
    let empirical = (noise.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // SE of a sample std ≈ σ/√(2(n−1)) (the Skellam's excess kurtosis at this μ is ~1/(2μ)).
    let se = std / (2.0 * (n - 1.0)).sqrt();
    assert!(
        (empirical - std).abs() <= 5.0 * se,
        "empirical std {empirical:.3} vs calibrated {std:.3} (SE {se:.3}, {n} draws)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_statistics_are_refused_with_a_problem_document_and_change_nothing() {
    let world = World::new("eval-bad");
    let server = world.start().await;
    let (split, spec, initial) = trained_model();
    let config = evaluation_config(json!({"placement": "off"}), false);
    let (ps, ids) = sites(&world, &server.url, "evb", &split, &spec, initial, config).await;
    open_evaluation(&world, &server.url, "evb").await;
    let transport = HttpsTransport::new(&server.url, &ids[0]).unwrap();
    let good = vec![0_i64; shape().len()];
    let mut negative = good.clone();
    negative[0] = -1;
    negative[1] = 1;
    for (values, why) in [(good[1..].to_vec(), "values"), (negative, "index 0")] {
        let err = transport
            .send_statistics(
                1,
                StatisticsUpload {
                    values,
                    charged: None,
                },
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("422") && text.contains(why), "{text}");
    }
    // A non-integer count is not even JSON of the right type.
    let raw = https_client(&world.ca_pem, Some((&ids[0].cert_pem, &ids[0].key_pem))).unwrap();
    let resp = raw
        .post(format!(
            "{}/v1/federations/evb/evaluations/1/statistics",
            server.url
        ))
        .header("content-type", "application/json")
        .body(r#"{"values": [1.5, 0, 0], "charged": null}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let view = admin_get(&world, &server.url, "/v1/federations/evb/evaluations").await;
    assert_eq!(view[0]["accepted"], 0, "nothing was added: {view}");
    // The refused site may still answer properly, and then the evaluation completes.
    answer_all(ps).await;
    let done = wait_evaluation(&world, &server.url, "evb", 1).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        report(&done).records.estimate(),
        Some(split.test.len() as f64)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_site_is_not_asked_and_the_api_says_why() {
    let world = World::new("eval-exhausted");
    let server = world.start().await;
    let (split, spec, initial) = trained_model();
    let mut config = evaluation_config(
        json!({"placement": "local", "budget": {"epsilon": 1.0, "delta": 1e-6}}),
        false,
    );
    config["evaluation"]["min_sites"] = json!(1);
    // The ten sites' record-level budget is below one evaluation's ε.
    config["client_budget"] = json!({"epsilon": 0.5, "delta": 1e-5});
    let (mut ps, _) = sites(&world, &server.url, "evx", &split, &spec, initial, config).await;
    let created: Value = world
        .http()
        .post(format!("{}/v1/federations/evx/clients", server.url))
        .bearer_auth(&world.admin)
        .json(&json!({"name": "rich", "budget": {"epsilon": 10.0, "delta": 1e-5}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["enrolment_token"].as_str().unwrap();
    enrol(&server.url, "evx", token, &world.ca_pem, Some(40))
        .await
        .unwrap();

    let opened = open_evaluation(&world, &server.url, "evx").await;
    assert_eq!(opened["participants"], json!(["rich"]), "{opened}");
    let skipped = opened["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), SITES, "{opened}");
    for s in skipped {
        assert!(
            s["reason"]
                .as_str()
                .unwrap()
                .contains("budget cannot afford"),
            "{s}"
        );
    }
    // An exhausted site is not asked: its poll finds nothing to evaluate, and nothing is charged.
    let poll = ps[0].poll_once().await.unwrap();
    assert!(
        matches!(poll, Poll::Wait(_) | Poll::Ineligible { .. }),
        "{poll:?}"
    );
    let budgets = admin_get(&world, &server.url, "/v1/federations/evx/budgets").await;
    for c in budgets["clients"].as_array().unwrap() {
        let spent = c["spent"]["epsilon"].as_f64().unwrap();
        if c["client"] == "rich" {
            assert!(
                spent > 0.0,
                "the asked site was charged before it learnt of the task"
            );
        } else {
            assert_eq!(spent, 0.0, "{c}");
        }
    }
    server.stop().await;
}
