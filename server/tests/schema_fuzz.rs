//! Schema-driven fuzzing of the whole API (schemathesis, from PyPI) against a server over real
//! HTTPS on 127.0.0.1, with real credentials: an admin's bearer token and an enrolled
//! client's certificate on every request, a federation and an open round to aim at. Every
//! check schemathesis has runs (`--checks all`) over every phase, for a bounded time; any
//! failure fails this test, with schemathesis's report in the output.
//!
//! `scripts/schemathesis.sh` installs the pinned schemathesis into the CI cache once.
//! `server/tests/schemathesis.toml` says, per operation, what the schema cannot: why a
//! schema-valid body may still be refused (binary formats and one-time tokens).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{World, create_federation, enrol, path_str, training_config};
use reqwest::StatusCode;

/// How long schemathesis may run (its `--max-time`); a few minutes keeps `make test` short.
const MAX_TIME_S: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_with_every_check() {
    let world = World::new("schemathesis");
    let running = common::Running::start(&world.config()).await;
    let url = running.url.clone();
    let c = world.client(None);
    let mut config = training_config(1);
    config["update_clip"] = serde_json::json!(10.0);
    config["allow_unbounded_updates"] = serde_json::json!(false);
    let resp = create_federation(&c, &url, &world.admin, "fed", &[0.0; 4], config).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (cert, key) = enrol(&world, &url, "fed", "site-a", 100).await;
    let resp = c
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let dir = &world.root.0;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        path_str(&p)
    };
    let ca = write("ca.pem", &world.ca_pem);
    let cert = write("client.pem", &cert);
    let key = write("client.key", &key);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("scripts/schemathesis.sh");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let report = dir.join("report");
    let started = Instant::now();
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args(["--url", &url])
        .args(["--checks", "all"])
        .args(["--max-time", &MAX_TIME_S.to_string()])
        .args(["--tls-verify", &ca])
        .args(["--request-cert", &cert])
        .args(["--request-cert-key", &key])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", world.admin))
        .args(["--report", "json"])
        .arg("--report-dir")
        .arg(&report)
        .args(["--seed", "26"])
        .env("NO_COLOR", "1")
        // Its example database and caches go into the world's folder, not the source tree.
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .expect("bash runs scripts/schemathesis.sh");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("schemathesis ran {took:.0?}\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis reported failures (exit {:?}); its output is above",
        out.status.code()
    );
    assert!(
        took < Duration::from_secs(MAX_TIME_S + 120),
        "the run is bounded"
    );
    running.stop().await;
}
