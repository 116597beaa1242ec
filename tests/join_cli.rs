//! Issue 7: `cohort join` as operators run it — three child processes enrol with one-time
//! tokens, take part in a secure round over HTTPS with DP-SGD on a CSV, print one line per
//! round and stop cleanly on Ctrl-C (SIGINT).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cohort_client::model::{self, ModelSpec};
use cohort_client::weights;
use common::*;
use serde_json::json;

/// One line of a child's stdout, by child index.
type Line = (usize, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_cohort_join_processes_complete_a_secure_round_and_stop_on_ctrl_c() {
    let world = World::new("joincli");
    let server = world.start().await;
    let spec = ModelSpec::mlp(30, &[], 2);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = model::build(&vs.root(), &spec).unwrap();
    let mut config = secure_config(3, 1000.0);
    config["deadlines"]["training_s"] = json!(60);
    create_federation_with(
        &world,
        &server.url,
        "cli",
        weights::to_safetensors(&vs).unwrap(),
        serde_json::to_value(&spec).unwrap(),
        config,
    )
    .await;
    let data = format!(
        "csv:{}/client/data/breast_cancer.csv?label=diagnosis",
        env!("CARGO_MANIFEST_DIR")
    );
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut children = Vec::new();
    for i in 0..3 {
        let created = create_client(&world, &server.url, "cli", &format!("h{i}")).await;
        let dir = world.root.0.join(format!("id{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), &world.ca_pem).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["join", "--server", &server.url, "--identity"])
            .arg(&dir)
            .args(["--data", &data, "--federation", "cli", "--token"])
            .arg(created["enrolment_token"].as_str().unwrap())
            .args(["--budget-epsilon", "100", "--budget-delta", "1e-5"])
            .args(if i == 0 {
                &["--metrics-epsilon", "0.5"][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send((i, line));
            }
        });
        children.push(child);
    }
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&[Line]) -> bool, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !pred(&lines) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("timed out waiting for {what}: {lines:?}"),
            }
        }
    };
    wait_for(
        &|ls| {
            (0..3).all(|i| {
                ls.iter()
                    .any(|(c, l)| *c == i && l.starts_with("joined federation"))
            })
        },
        "every client to join",
    );
    let round = open_round(&world, &server.url, "cli").await["id"]
        .as_u64()
        .unwrap();
    wait_for(
        &|ls| {
            (0..3).all(|i| {
                ls.iter()
                    .any(|(c, l)| *c == i && l.starts_with(&format!("round {round}: contributed")))
            })
        },
        "one line per client for the round",
    );
    let done = wait_round(&world, &server.url, "cli", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    // Client 0 released its metrics (charged first), the others were not asked to.
    let released: Vec<_> = lines
        .iter()
        .filter(|(_, l)| l.contains("metrics released (epsilon"))
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(released, vec![0], "{lines:?}");
    assert_eq!(done["metrics"]["released_loss_clients"], 1.0, "{done}");
    for child in &children {
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
    let stopped = rx
        .try_iter()
        .chain(lines)
        .filter(|(_, l)| l.starts_with("stopping (Ctrl-C)"))
        .count();
    assert_eq!(stopped, 3);
    server.stop().await;
}
