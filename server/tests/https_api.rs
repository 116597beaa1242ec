//! End-to-end over real HTTPS on 127.0.0.1: a FedAvg round with three clients, every class of
//! bad input answered by a 4xx problem document with no change of state, mutual TLS, and
//! roles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cohort_protocol::frame::{encode_f32, encode_f64};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const W0: [f32; 6] = [0.5, -1.0, 2.0, 0.0, 3.25, -0.75];

async fn wait_round_state(
    c: &reqwest::Client,
    url: &str,
    fed: &str,
    round: u64,
    token: &str,
    want: &str,
) -> Value {
    for _ in 0..100 {
        let r = get_json(
            c,
            url,
            &format!("/v1/federations/{fed}/rounds/{round}"),
            token,
        )
        .await;
        if r["state"] == want {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("round {round} never reached {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_client_fedavg_round_gives_the_weighted_mean() {
    let world = World::new("fedavg");
    let server = Running::start(&world.config()).await;
    let url = server.url.clone();
    let admin = world.client(None);
    let resp = create_federation(&admin, &url, &world.admin, "avg", &W0, training_config(3)).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );

    let counts = [10u64, 20, 70];
    let deltas: [[f32; 6]; 3] = [
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [-1.0, 0.0, 1.0, -2.0, 0.25, 0.125],
        [0.5, 0.5, -0.5, 1.5, -0.25, 2.0],
    ];
    let mut clients = Vec::new();
    for (i, n) in counts.iter().enumerate() {
        let (cert, key) = enrol(&world, &url, "avg", &format!("site-{i}"), *n).await;
        let c = world.client(Some((&cert, &key)));
        let (headers, body) = poll(&c, &url, "avg").await;
        assert_eq!(body["kind"], "wait");
        assert!(headers.contains_key("retry-after"));
        clients.push(c);
    }
    let resp = admin
        .post(format!("{url}/v1/federations/avg/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    let round: Value = resp.json().await.unwrap();
    assert_eq!(round["participants"].as_array().unwrap().len(), 3);

    // Each participant was charged in the ledger before it could see its task.
    let budgets = get_json(&admin, &url, "/v1/federations/avg/budgets", &world.viewer).await;
    for b in budgets["clients"].as_array().unwrap() {
        assert_eq!(b["rounds"], 1);
        assert!(b["spent"]["epsilon"].as_f64().unwrap() > 0.0);
    }

    for (i, c) in clients.iter().enumerate() {
        let (_, task) = poll(c, &url, "avg").await;
        assert_eq!(task["kind"], "train", "{task}");
        assert_eq!(task["round"], 1);
        assert_eq!(task["num_params"], 6);
        let model = c
            .get(format!(
                "{url}/v1/federations/avg/models/{}",
                task["model_version"]
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(model.status(), StatusCode::OK);
        let etag = model.headers()["etag"].clone();
        assert_eq!(
            read_f32_safetensors(&model.bytes().await.unwrap()),
            W0.to_vec()
        );
        let again = c
            .get(format!("{url}/v1/federations/avg/models/0"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let resp = upload(c, &url, "avg", 1, counts[i], encode_f32(&deltas[i])).await;
        assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
    }
    let done = wait_round_state(&admin, &url, "avg", 1, &world.viewer, "completed").await;
    assert_eq!(done["result_model_version"], 1);
    assert_eq!(done["accepted"], 3);

    let total: f64 = counts.iter().map(|&n| n as f64).sum();
    let expected: Vec<f32> = (0..6)
        .map(|j| {
            let s: f64 = (0..3)
                .map(|i| counts[i] as f64 * f64::from(deltas[i][j]))
                .sum();
            (f64::from(W0[j]) + s / total) as f32
        })
        .collect();
    let latest = admin
        .get(format!("{url}/v1/federations/avg/models/latest"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(latest.headers()["cohort-model-version"], "1");
    let got = read_f32_safetensors(&latest.bytes().await.unwrap());
    assert_eq!(
        got, expected,
        "FedAvg must be exactly the sample-weighted mean"
    );

    let metrics = admin
        .get(format!("{url}/metrics"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("cohort_rounds_total{outcome=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("cohort_uploads_total{result=\"accepted\"} 3"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_document_and_changes_nothing() {
    let world = World::new("badinput");
    let mut config = world.config();
    config.max_body_bytes = 4096;
    let server = Running::start(&config).await;
    let url = server.url.clone();
    let admin = world.client(None);
    assert_eq!(
        create_federation(&admin, &url, &world.admin, "fed", &W0, training_config(2))
            .await
            .status(),
        StatusCode::CREATED
    );
    let (cert_a, key_a) = enrol(&world, &url, "fed", "a", 5).await;
    let (cert_b, key_b) = enrol(&world, &url, "fed", "b", 5).await;
    let a = world.client(Some((&cert_a, &key_a)));
    let b = world.client(Some((&cert_b, &key_b)));
    poll(&a, &url, "fed").await;
    poll(&b, &url, "fed").await;

    // Round 1 takes both clients; the bad uploads below are all aimed at it.
    let open = admin
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    let good = encode_f32(&[0.0; 6]);

    // Malformed JSON.
    let resp = admin
        .post(format!("{url}/v1/federations/fed/clients"))
        .bearer_auth(&world.admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    problem(resp, 400).await;
    // Well-formed JSON with an invalid name.
    let resp = admin
        .post(format!("{url}/v1/federations/fed/clients"))
        .bearer_auth(&world.admin)
        .json(&json!({ "name": "../etc" }))
        .send()
        .await
        .unwrap();
    problem(resp, 422).await;
    // Wrong vector length.
    problem(
        upload(&a, &url, "fed", 1, 5, encode_f32(&[0.0; 5])).await,
        422,
    )
    .await;
    // Wrong dtype.
    problem(
        upload(&a, &url, "fed", 1, 5, encode_f64(&[0.0; 6])).await,
        422,
    )
    .await;
    // NaN and infinity.
    problem(
        upload(
            &a,
            &url,
            "fed",
            1,
            5,
            encode_f32(&[0.0, f32::NAN, 0.0, 0.0, 0.0, 0.0]),
        )
        .await,
        422,
    )
    .await;
    problem(
        upload(&a, &url, "fed", 1, 5, encode_f32(&[f32::INFINITY; 6])).await,
        422,
    )
    .await;
    // A corrupted frame.
    let mut corrupt = good.clone();
    corrupt[20] ^= 0xff;
    problem(upload(&a, &url, "fed", 1, 5, corrupt).await, 400).await;
    // A federation the certificate is not a member of: 403, whether or not it exists (a 404
    // would tell a foreign certificate which federations do). An unknown round of its own: 404.
    problem(upload(&a, &url, "nope", 1, 5, good.clone()).await, 403).await;
    problem(upload(&a, &url, "fed", 9, 5, good.clone()).await, 404).await;
    problem(
        admin
            .get(format!("{url}/v1/federations/nope"))
            .bearer_auth(&world.viewer)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    problem(
        admin
            .get(format!("{url}/v1/federations/fed/rounds/0"))
            .bearer_auth(&world.viewer)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    // Oversized body.
    problem(upload(&a, &url, "fed", 1, 5, vec![0u8; 8192]).await, 413).await;

    // Nothing above was accepted.
    let r = get_json(&admin, &url, "/v1/federations/fed/rounds/1", &world.viewer).await;
    assert_eq!(r["accepted"], 0);

    // A duplicate upload.
    assert_eq!(
        upload(&a, &url, "fed", 1, 5, good.clone()).await.status(),
        StatusCode::OK
    );
    let dup = problem(upload(&a, &url, "fed", 1, 5, good.clone()).await, 409).await;
    assert_eq!(dup["type"], "urn:cohort:problem:duplicate-upload");
    assert_eq!(
        upload(&b, &url, "fed", 1, 5, good.clone()).await.status(),
        StatusCode::OK
    );
    wait_round_state(&admin, &url, "fed", 1, &world.viewer, "completed").await;

    // Late: round 1 has closed.
    let late = problem(upload(&a, &url, "fed", 1, 5, good.clone()).await, 409).await;
    assert_eq!(late["type"], "urn:cohort:problem:late-upload");
    // Replayed from an earlier round once round 2 is open.
    poll(&a, &url, "fed").await;
    poll(&b, &url, "fed").await;
    let open = admin
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    let replay = problem(upload(&a, &url, "fed", 1, 5, good.clone()).await, 409).await;
    assert_eq!(replay["type"], "urn:cohort:problem:replayed-upload");
    let r2 = get_json(&admin, &url, "/v1/federations/fed/rounds/2", &world.viewer).await;
    assert_eq!(
        r2["accepted"], 0,
        "a replayed update must never enter another round"
    );

    // No certificate, a foreign CA's certificate, an expired certificate.
    let none = world.client(None);
    problem(upload(&none, &url, "fed", 2, 5, good.clone()).await, 401).await;
    let (fc, fk) = foreign_identity("a");
    let foreign = world.client(Some((&fc, &fk)));
    let p = problem(upload(&foreign, &url, "fed", 2, 5, good.clone()).await, 401).await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not issued by this federation's CA"),
        "{p}"
    );
    let now = std::time::SystemTime::now();
    let expired = world
        .ca()
        .issue_client(
            "a",
            cohort_server::pki::Validity {
                not_before: now - std::time::Duration::from_secs(7200),
                not_after: now - std::time::Duration::from_secs(3600),
            },
        )
        .unwrap();
    let old = world.client(Some((&expired.cert_pem, &expired.key_pem)));
    let p = problem(
        old.get(format!("{url}/v1/federations/fed/task"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    // A valid certificate of this CA that was never enrolled.
    let stray = world
        .ca()
        .issue_client("stray", cohort_server::pki::Validity::days(1))
        .unwrap();
    let stray = world.client(Some((&stray.cert_pem, &stray.key_pem)));
    problem(upload(&stray, &url, "fed", 2, 5, good.clone()).await, 403).await;
    let r2 = get_json(&admin, &url, "/v1/federations/fed/rounds/2", &world.viewer).await;
    assert_eq!(r2["accepted"], 0);

    // Tokens: none, forged, and the wrong role.
    problem(
        admin
            .get(format!("{url}/v1/federations"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    problem(
        admin
            .get(format!("{url}/v1/federations"))
            .bearer_auth("cohort1.e30.AAAA")
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    problem(
        none.get(format!("{url}/metrics")).send().await.unwrap(),
        401,
    )
    .await;

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_change_anything() {
    let world = World::new("viewer");
    let server = Running::start(&world.config()).await;
    let url = server.url.clone();
    let c = world.client(None);
    assert_eq!(
        create_federation(&c, &url, &world.admin, "fed", &W0, training_config(1))
            .await
            .status(),
        StatusCode::CREATED
    );
    enrol(&world, &url, "fed", "a", 5).await;
    let before_feds = get_json(&c, &url, "/v1/federations", &world.viewer).await;
    let before_clients = get_json(&c, &url, "/v1/federations/fed/clients", &world.viewer).await;

    let p = problem(
        create_federation(&c, &url, &world.viewer, "other", &W0, training_config(1)).await,
        403,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("admin"));
    problem(
        c.post(format!("{url}/v1/federations/fed/clients"))
            .bearer_auth(&world.viewer)
            .json(&json!({"name": "b"}))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    problem(
        c.post(format!("{url}/v1/federations/fed/clients/a/revoke"))
            .bearer_auth(&world.viewer)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    problem(
        c.post(format!("{url}/v1/federations/fed/rounds"))
            .bearer_auth(&world.viewer)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    problem(
        c.delete(format!("{url}/v1/federations/fed"))
            .bearer_auth(&world.viewer)
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;

    assert_eq!(
        get_json(&c, &url, "/v1/federations", &world.viewer).await,
        before_feds
    );
    assert_eq!(
        get_json(&c, &url, "/v1/federations/fed/clients", &world.viewer).await,
        before_clients
    );
    let rounds = get_json(&c, &url, "/v1/federations/fed/rounds", &world.viewer).await;
    assert!(rounds.as_array().unwrap().is_empty());

    // The admin can do what the viewer could not; a revoked client is refused.
    let resp = c
        .post(format!("{url}/v1/federations/fed/clients/a/revoke"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc = c
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/federations/{fed}/rounds/{round}/update"]["put"].is_object());
    let health = c.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop().await;
}
