//! `cohort budgets` against a real HTTPS server on 127.0.0.1: the table, JSON and CSV carry the
//! numbers `GET /v1/federations/{fed}/budgets` serves; bad input is one line and exit 2;
//! connection and token errors are one clear line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use cohort_server::auth::Role;
use cohort_server::config::ServerConfig;
use cohort_server::pki::{PkiDir, generate_csr};
use cohort_server::serve::Server;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

fn https(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

async fn cohort(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cohort"))
            .arg("budgets")
            .args(args)
            .env_remove("COHORT_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn training_config() -> Value {
    json!({
        "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.1 },
        "client_budget": { "epsilon": 25.0, "delta": 1e-5 },
        "client_sampling_rate": 1.0,
        "min_clients": 1,
        "strategy": { "name": "fed_avg" },
        "secure_aggregation": false,
        "update_clip": 10.0
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_prints_the_servers_numbers_and_fails_clearly() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("cohort-budgets-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let pki = PkiDir::new(root.join("pki"));
    pki.init("Test CA").unwrap();
    pki.issue_server(&["127.0.0.1".into()], 1).unwrap();
    let ca_pem = std::fs::read_to_string(pki.ca_cert()).unwrap();
    let signer = pki.token_signer().unwrap();
    let (admin, viewer) = (
        signer.issue("alice", Role::Admin, 3600),
        signer.issue("victor", Role::Viewer, 3600),
    );
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: root.join("data"),
        pki_dir: pki.root().to_owned(),
        round_interval_s: 0,
        rate_limit_per_s: 0.0,
        ..ServerConfig::default()
    };
    let server = Server::build(&config).await.unwrap();
    let url = server.url();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    // A federation whose clients have spent something: two enrolled, one round opened.
    let c = https(&ca_pem, None);
    let spec = json!({ "name": "fed", "model_spec": {}, "config": training_config() });
    let form = reqwest::multipart::Form::new()
        .part(
            "federation",
            reqwest::multipart::Part::text(spec.to_string())
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "weights",
            reqwest::multipart::Part::bytes(cohort_server::model::single_tensor(&[1.0, 2.0]))
                .mime_str("application/vnd.safetensors")
                .unwrap(),
        );
    let resp = c
        .post(format!("{url}/v1/federations"))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    for name in ["site-a", "site-b"] {
        let created: Value = c
            .post(format!("{url}/v1/federations/fed/clients"))
            .bearer_auth(&admin)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (csr, key) = generate_csr(name).unwrap();
        let enrolled: Value = c
            .post(format!("{url}/v1/federations/fed/enrol"))
            .json(
                &json!({ "token": created["enrolment_token"], "csr_pem": csr, "sample_count": 50 }),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let me = https(
            &ca_pem,
            Some((enrolled["certificate_pem"].as_str().unwrap(), &key)),
        );
        let poll = me
            .get(format!("{url}/v1/federations/fed/task"))
            .send()
            .await
            .unwrap();
        assert_eq!(poll.status(), 200);
    }
    let open = c
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 201);
    let served: Value = c
        .get(format!("{url}/v1/federations/fed/budgets"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let ca_path = pki.ca_cert().to_string_lossy().into_owned();
    let base = |extra: &[&str]| {
        let mut v = vec![
            "--server".to_owned(),
            url.clone(),
            "--token".to_owned(),
            viewer.clone(),
            "--ca".to_owned(),
            ca_path.clone(),
        ];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };

    // The table: one aligned line per client with the dashboard's formatting.
    let out = cohort(base(&[])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("federation fed: no client-level budget"),
        "{table}"
    );
    let header = table.lines().find(|l| l.starts_with("FEDERATION")).unwrap();
    for client in served["clients"].as_array().unwrap() {
        let name = client["client"].as_str().unwrap();
        let eps = client["spent"]["epsilon"].as_f64().unwrap();
        assert!(eps > 0.0);
        let line = table.lines().find(|l| l.contains(name)).unwrap();
        let cell = format!("{eps:.3}");
        assert!(line.contains(&cell), "{line}");
        assert!(
            line.contains("25.000") && line.contains("1e-5") && line.contains("eligible"),
            "{line}"
        );
        // Right-aligned under its header.
        assert_eq!(
            header.find("EPS_SPENT").unwrap() + "EPS_SPENT".len(),
            line.find(&cell).unwrap() + cell.len(),
            "{table}"
        );
    }

    // JSON: exactly what the server served.
    let out = cohort(base(&["--federation", "fed", "--json"])).await;
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["federation"], "fed");
    assert_eq!(json[0]["clients"], served["clients"]);

    // CSV: full precision.
    let out = cohort(base(&["--csv"])).await;
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    for (line, client) in csv
        .lines()
        .skip(1)
        .zip(served["clients"].as_array().unwrap())
    {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[1], client["client"]);
        assert_eq!(
            cells[3].parse::<f64>().unwrap(),
            client["spent"]["epsilon"].as_f64().unwrap()
        );
    }

    // Bad input: one line, exit 2.
    for args in [
        base(&["--json", "--csv"]),
        base(&["--federation", "Bad Name"]),
        vec!["--token".into(), viewer.clone()],
    ] {
        let out = cohort(args).await;
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    // A forged token, an unknown federation, a server that is not there: one line, exit 1.
    let forged = vec![
        "--server".to_owned(),
        url.clone(),
        "--token".to_owned(),
        "cohort1.e30.AAAA".to_owned(),
        "--ca".to_owned(),
        ca_path.clone(),
    ];
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        vec![
            "--server".to_owned(),
            format!("https://127.0.0.1:{port}"),
            "--token".to_owned(),
            viewer.clone(),
            "--ca".to_owned(),
            ca_path.clone(),
        ]
    };
    for (args, want) in [
        (forged, "refused the token (401)"),
        (base(&["--federation", "nope"]), "not found (404)"),
        (closed, "cannot reach"),
    ] {
        let out = cohort(args).await;
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }

    let _ = stop_tx.send(());
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
