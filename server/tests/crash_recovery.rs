//! The ledger survives `kill -9` of the server in the middle of a round: after a restart every
//! ledger entry is still there, the in-flight round is recorded as aborted, and the next round
//! starts from the last committed model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use cohort_protocol::frame::encode_f32;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;

struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn spawn(world: &World) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort-server"))
            .args(["--listen", "127.0.0.1:0", "--round-interval-s", "0"])
            .arg("--data-dir")
            .arg(world.data_dir())
            .arg("--pki-dir")
            .arg(world.pki.root())
            .env("COHORT_RATE_LIMIT_PER_S", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect(&line)
            .to_owned();
        Self { child, url }
    }

    /// SIGKILL: no destructor, no flush, no graceful shutdown.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_survives_kill_9_mid_round() {
    let world = World::new("crash");
    let server = ServerProcess::spawn(&world);
    let url = server.url.clone();
    let c = world.client(None);
    let w0 = [1.0f32, 2.0, 3.0];
    let resp = create_federation(&c, &url, &world.admin, "fed", &w0, training_config(2)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (ca, ka) = enrol(&world, &url, "fed", "a", 4).await;
    let (cb, kb) = enrol(&world, &url, "fed", "b", 4).await;
    let a = world.client(Some((&ca, &ka)));
    let b = world.client(Some((&cb, &kb)));
    for client in [&a, &b] {
        client
            .get(format!("{url}/v1/federations/fed/task"))
            .send()
            .await
            .unwrap();
    }
    let open = c
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    // One of two updates arrives, then the server dies.
    let up = a
        .put(format!(
            "{url}/v1/federations/fed/rounds/1/update?num_examples=4"
        ))
        .header("content-type", "application/vnd.cohort.vector")
        .body(encode_f32(&[9.0, 9.0, 9.0]))
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), StatusCode::OK);
    let before = get_json(&c, &url, "/v1/federations/fed/budgets", &world.viewer).await;
    for client in before["clients"].as_array().unwrap() {
        assert_eq!(client["rounds"], 1);
    }
    server.kill_9();

    let server = ServerProcess::spawn(&world);
    let url = server.url.clone();
    let after = get_json(&c, &url, "/v1/federations/fed/budgets", &world.viewer).await;
    assert_eq!(after, before, "every ledger entry survives");
    let round = get_json(&c, &url, "/v1/federations/fed/rounds/1", &world.viewer).await;
    assert_eq!(round["state"], "aborted");
    assert!(
        round["abort_reason"].as_str().unwrap().contains("restart"),
        "{round}"
    );
    // The update that arrived before the crash is never used, and cannot be resent.
    let resent = a
        .put(format!(
            "{url}/v1/federations/fed/rounds/1/update?num_examples=4"
        ))
        .header("content-type", "application/vnd.cohort.vector")
        .body(encode_f32(&[9.0, 9.0, 9.0]))
        .send()
        .await
        .unwrap();
    problem(resent, 409).await;
    // The next round starts from the last committed model (version 0).
    for client in [&a, &b] {
        client
            .get(format!("{url}/v1/federations/fed/task"))
            .send()
            .await
            .unwrap();
    }
    let open = c
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        open.status(),
        StatusCode::CREATED,
        "{:?}",
        open.text().await
    );
    let r2: Value = get_json(&c, &url, "/v1/federations/fed/rounds/2", &world.viewer).await;
    assert_eq!(r2["base_model_version"], 0);
    let latest = c
        .get(format!("{url}/v1/federations/fed/models/latest"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read_f32_safetensors(&latest.bytes().await.unwrap()),
        w0.to_vec()
    );
    let budgets = get_json(&c, &url, "/v1/federations/fed/budgets", &world.viewer).await;
    for client in budgets["clients"].as_array().unwrap() {
        assert_eq!(
            client["rounds"], 2,
            "round 2 was charged on top of the aborted round 1"
        );
    }
    drop(server);
}
