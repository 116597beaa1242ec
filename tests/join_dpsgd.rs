//! Issue 7: the participant with the real DP-SGD trainer (tch) takes part in a secure round
//! over HTTPS: the model architecture travels in the task, Δ comes from local DP-SGD.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cohort_client::data::Dataset;
use cohort_client::ledger::LocalLedger;
use cohort_client::model::{self, ModelSpec};
use cohort_client::participant::https::{HttpsTransport, enrol};
use cohort_client::participant::{DpSgdTrainer, Participant, Poll, RoundOutcome};
use cohort_client::weights;
use cohort_privacy::EpsDelta;
use common::*;
use tch::{Device, Kind, Tensor};

fn synthetic(seed: i64) -> Dataset {
    tch::manual_seed(seed);
    let features = Tensor::randn([64, 4], (Kind::Float, Device::Cpu));
    let direction = Tensor::from_slice(&[1.0f32, -1.0, 0.5, 0.0]).reshape([4, 1]);
    let labels = features
        .matmul(&direction)
        .gt(0.0)
        .to_kind(Kind::Int64)
        .squeeze_dim(1);
    Dataset {
        features,
        labels,
        num_classes: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dp_sgd_participants_complete_a_secure_round() {
    let world = World::new("dpsgd");
    let server = world.start().await;
    let spec = ModelSpec::mlp(4, &[], 2);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _net = model::build(&vs.root(), &spec).unwrap();
    let initial = weights::to_safetensors(&vs).unwrap();
    let before = read_weights(&initial);
    let model_spec = serde_json::to_value(&spec).unwrap();
    create_federation_with(
        &world,
        &server.url,
        "dp",
        initial,
        model_spec,
        secure_config(3, 1000.0),
    )
    .await;
    let mut ps = Vec::new();
    for i in 0..3 {
        let name = format!("hospital-{i}");
        let created = create_client(&world, &server.url, "dp", &name).await;
        let token = created["enrolment_token"].as_str().unwrap();
        let id = enrol(&server.url, "dp", token, &world.ca_pem, Some(64))
            .await
            .unwrap();
        let dir = world.root.0.join(&name);
        id.save(&dir).unwrap();
        let ledger =
            LocalLedger::open(dir.join("ledger.jsonl"), EpsDelta::new(50.0, 1e-5).unwrap())
                .unwrap();
        let trainer = DpSgdTrainer::new(synthetic(i), None, Device::Cpu, 0.1);
        let mut p = Participant::new(
            HttpsTransport::new(&server.url, &id).unwrap(),
            trainer,
            ledger,
            "dp",
        );
        assert!(matches!(p.poll_once().await.unwrap(), Poll::Wait(_)));
        ps.push(p);
    }
    let round = open_round(&world, &server.url, "dp").await["id"]
        .as_u64()
        .unwrap();
    let handles: Vec<_> = ps
        .into_iter()
        .map(|mut p| tokio::spawn(async move { (p.poll_once().await.unwrap(), p) }))
        .collect();
    for h in handles {
        let (poll, p) = h.await.unwrap();
        match poll {
            Poll::Round(r) => {
                assert_eq!(r.outcome, RoundOutcome::Contributed, "{r}");
                assert!(r.epsilon_spent > 0.0 && r.epsilon_spent < 50.0, "{r}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.ledger().entries().len(), 1);
    }
    let done = wait_round(&world, &server.url, "dp", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let after = latest_model(&world, &server.url, "dp").await;
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|v| v.is_finite()));
    assert_ne!(after, before, "the global model did not move");
    server.stop().await;
}
