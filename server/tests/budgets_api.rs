//! Budget operations and access control over real HTTPS on 127.0.0.1: every mutating
//! endpoint against every kind of caller (admin, viewer, client certificate, nobody), the
//! audited budget operations, and `GET /v1/me/budget` for client certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cohort_protocol::frame::encode_f32;
use common::*;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const W0: [f32; 3] = [1.0, 2.0, 3.0];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Nobody,
    Viewer,
    Admin,
    Cert,
}

struct Fed {
    world: World,
    server: Running,
    url: String,
    plain: Client,
    a: Client,
    b: Client,
    b_identity: (String, String),
}

/// A plain update for round `round` of `fed` (three zeros, five records).
async fn upload_zeros(c: &Client, url: &str, round: u64) -> reqwest::Response {
    upload(c, url, "fed", round, 5, encode_f32(&[0.0; 3])).await
}

/// Federation `fed` with clients a and b enrolled, online, and charged by round 1 (open).
async fn federation(tag: &str) -> Fed {
    let world = World::new(tag);
    let server = Running::start(&world.config()).await;
    let url = server.url.clone();
    let plain = world.client(None);
    let resp = create_federation(&plain, &url, &world.admin, "fed", &W0, training_config(1)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (ca, ka) = enrol(&world, &url, "fed", "a", 10).await;
    let (cb, kb) = enrol(&world, &url, "fed", "b", 20).await;
    let a = world.client(Some((&ca, &ka)));
    let b = world.client(Some((&cb, &kb)));
    poll(&a, &url, "fed").await;
    poll(&b, &url, "fed").await;
    let open = plain
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    Fed {
        world,
        server,
        url,
        plain,
        a,
        b,
        b_identity: (cb, kb),
    }
}

impl Fed {
    fn as_caller(&self, caller: Caller, req: impl Fn(&Client) -> RequestBuilder) -> RequestBuilder {
        match caller {
            Caller::Nobody => req(&self.plain),
            Caller::Viewer => req(&self.plain).bearer_auth(&self.world.viewer),
            Caller::Admin => req(&self.plain).bearer_auth(&self.world.admin),
            Caller::Cert => req(&self.a),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .plain
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.world.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.json().await.unwrap()
    }

    /// Everything a refused request must leave as it was (without last-seen times, which a
    /// client's own polls move).
    async fn state(&self) -> Value {
        let mut v = json!({
            "federations": self.get("/v1/federations").await,
            "clients": self.get("/v1/federations/fed/clients").await,
            "rounds": self.get("/v1/federations/fed/rounds").await,
            "budgets": self.get("/v1/federations/fed/budgets").await,
            "audit": self.get("/v1/federations/fed/audit").await,
        });
        strip(&mut v);
        v
    }
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("last_seen");
            m.remove("last_seen_ms");
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

fn federation_form() -> reqwest::multipart::Form {
    let spec = json!({ "name": "fed2", "model_spec": {}, "config": training_config(1) });
    reqwest::multipart::Form::new()
        .part(
            "federation",
            reqwest::multipart::Part::text(spec.to_string())
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "weights",
            reqwest::multipart::Part::bytes(weights(&W0))
                .mime_str("application/vnd.safetensors")
                .unwrap(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_endpoint_refuses_every_caller_but_its_own() {
    let f = federation("authz").await;
    let url = f.url.clone();
    type Build = Box<dyn Fn(&Client) -> RequestBuilder>;
    let u = url.clone();
    // (name, request, the caller it is meant for)
    let endpoints: Vec<(&str, Build, Caller)> = vec![
        (
            "POST /v1/federations",
            Box::new({
                let u = u.clone();
                move |c: &Client| {
                    c.post(format!("{u}/v1/federations"))
                        .multipart(federation_form())
                }
            }) as Build,
            Caller::Admin,
        ),
        (
            "POST /v1/federations/fed/clients",
            Box::new({
                let u = u.clone();
                move |c: &Client| {
                    c.post(format!("{u}/v1/federations/fed/clients"))
                        .json(&json!({ "name": "newcomer" }))
                }
            }) as Build,
            Caller::Admin,
        ),
        (
            "POST /v1/federations/fed/clients/{client}/budget",
            Box::new({
                let u = u.clone();
                move |c: &Client| {
                    c.post(format!("{u}/v1/federations/fed/clients/a/budget"))
                        .json(&json!({ "raise_epsilon_by": 1.0, "reason": "authz test" }))
                }
            }) as Build,
            Caller::Admin,
        ),
        (
            "POST /v1/federations/fed/clients/{client}/revoke",
            Box::new({
                let u = u.clone();
                move |c: &Client| {
                    c.post(format!("{u}/v1/federations/fed/clients/b/revoke"))
                        .json(&json!({ "reason": "authz test" }))
                }
            }) as Build,
            Caller::Admin,
        ),
        (
            "POST /v1/federations/fed/rounds",
            Box::new({
                let u = u.clone();
                move |c: &Client| c.post(format!("{u}/v1/federations/fed/rounds"))
            }) as Build,
            Caller::Admin,
        ),
        (
            "PUT /v1/federations/fed/rounds/{round}/update",
            Box::new({
                let u = u.clone();
                move |c: &Client| {
                    c.put(format!(
                        "{u}/v1/federations/fed/rounds/1/update?num_examples=5"
                    ))
                    .header("content-type", "application/vnd.cohort.vector")
                    .body(encode_f32(&[0.0; 3]))
                }
            }) as Build,
            Caller::Cert,
        ),
    ];
    for (name, build, own) in &endpoints {
        for caller in [Caller::Nobody, Caller::Viewer, Caller::Admin, Caller::Cert] {
            if caller == *own {
                continue;
            }
            let before = f.state().await;
            let resp = f.as_caller(caller, build).send().await.unwrap();
            // A viewer token on an admin route is understood and refused (403); anything
            // else lacks the credential the route needs (401).
            let want = if caller == Caller::Viewer && *own == Caller::Admin {
                403
            } else {
                401
            };
            problem(resp, want).await;
            assert_eq!(
                f.state().await,
                before,
                "{name} by {caller:?} changed state"
            );
        }
        let resp = f.as_caller(*own, build).send().await.unwrap();
        let status = resp.status().as_u16();
        assert!(
            status != 401 && status != 403,
            "{name} by {own:?} was refused: {status} {:?}",
            resp.text().await
        );
    }
    // The admin's calls took effect (round 1 is still open, so opening another is a 409).
    let budgets = f.get("/v1/federations/fed/budgets").await;
    let a = &budgets["clients"][0];
    assert_eq!(
        (a["client"].as_str(), a["budget"]["epsilon"].as_f64()),
        (Some("a"), Some(1001.0))
    );
    let audit = f.get("/v1/federations/fed/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["raise_budget", "revoke"]);

    // Enrolment is authorised by its one-time token alone: no role makes a bad token good.
    let (csr, _key) = cohort_server::pki::generate_csr("a").unwrap();
    for caller in [Caller::Nobody, Caller::Viewer, Caller::Admin, Caller::Cert] {
        let resp = f
            .as_caller(caller, |c| {
                c.post(format!("{url}/v1/federations/fed/enrol"))
                    .json(&json!({ "token": "a.forged", "csr_pem": csr }))
            })
            .send()
            .await
            .unwrap();
        let p = problem(resp, 403).await;
        assert!(
            p["detail"].as_str().unwrap().contains("enrolment token"),
            "{caller:?}: {p}"
        );
    }
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_viewers_read_and_clients_read_only_their_own_budget() {
    let f = federation("reads").await;
    let url = f.url.clone();
    for path in ["/v1/federations/fed/budgets", "/v1/federations/fed/audit"] {
        for caller in [Caller::Viewer, Caller::Admin] {
            let resp = f
                .as_caller(caller, |c| c.get(format!("{url}{path}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path} {caller:?}");
        }
        for caller in [Caller::Nobody, Caller::Cert] {
            let resp = f
                .as_caller(caller, |c| c.get(format!("{url}{path}")))
                .send()
                .await
                .unwrap();
            problem(resp, 401).await;
        }
    }

    // A client certificate reads its own row, exactly as admins see it, and nothing else.
    let resp = f.a.get(format!("{url}/v1/me/budget")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let mine: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(mine["federation"], "fed");
    assert_eq!(mine["account"]["client"], "a");
    assert!(!text.contains("\"b\""), "{text}");
    let budgets = f.get("/v1/federations/fed/budgets").await;
    let mut admins_row = budgets["clients"][0].clone();
    let mut my_row = mine["account"].clone();
    strip(&mut admins_row);
    strip(&mut my_row);
    assert_eq!(my_row, admins_row);
    assert!(mine["account"]["spent"]["epsilon"].as_f64().unwrap() > 0.0);

    // People and strangers cannot use it.
    for caller in [Caller::Nobody, Caller::Viewer, Caller::Admin] {
        let resp = f
            .as_caller(caller, |c| c.get(format!("{url}/v1/me/budget")))
            .send()
            .await
            .unwrap();
        problem(resp, 401).await;
    }
    let (fc, fk) = foreign_identity("a");
    let foreign = f.world.client(Some((&fc, &fk)));
    problem(
        foreign
            .get(format!("{url}/v1/me/budget"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    let stray = f
        .world
        .ca()
        .issue_client("stray", cohort_server::pki::Validity::days(1))
        .unwrap();
    let stray = f.world.client(Some((&stray.cert_pem, &stray.key_pem)));
    problem(
        stray
            .get(format!("{url}/v1/me/budget"))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;

    // A revoked client is refused.
    let resp = f
        .plain
        .post(format!("{url}/v1/federations/fed/clients/b/revoke"))
        .bearer_auth(&f.world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (cb, kb) = &f.b_identity;
    let b_again = f.world.client(Some((cb, kb)));
    problem(
        b_again
            .get(format!("{url}/v1/me/budget"))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_operations_are_audited_durable_and_never_erase_spend() {
    let f = federation("budgetops").await;
    let url = f.url.clone();
    // Finish round 1 so both clients have spent something.
    assert_eq!(upload_zeros(&f.a, &url, 1).await.status(), StatusCode::OK);
    assert_eq!(upload_zeros(&f.b, &url, 1).await.status(), StatusCode::OK);
    for _ in 0..200 {
        if f.get("/v1/federations/fed/rounds/1").await["state"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = f.get("/v1/federations/fed/budgets").await;
    let spent_a = before["clients"][0]["spent"]["epsilon"].as_f64().unwrap();
    assert!(spent_a > 0.0);
    assert_eq!(before["clients"][0]["status"], "eligible");

    let change = |body: Value| {
        f.plain
            .post(format!("{url}/v1/federations/fed/clients/a/budget"))
            .bearer_auth(&f.world.admin)
            .json(&body)
            .send()
    };
    // Lower below the spend: exhausted, spend unchanged, audited.
    let resp = change(json!({ "set_epsilon": spent_a / 2.0, "reason": "pause" }))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["client"]["status"], "exhausted");
    assert_eq!(out["client"]["spent"]["epsilon"].as_f64().unwrap(), spent_a);
    assert_eq!(
        out["audit"]["old_budget"]["epsilon"].as_f64().unwrap(),
        1000.0
    );
    assert_eq!(
        out["audit"]["new_budget"]["epsilon"].as_f64().unwrap(),
        spent_a / 2.0
    );
    assert_eq!(out["audit"]["spent_epsilon"].as_f64().unwrap(), spent_a);
    assert_eq!(out["audit"]["actor"], "alice");
    assert_eq!(out["audit"]["reason"], "pause");

    // The exhausted client sits out the next round.
    poll(&f.a, &url, "fed").await;
    poll(&f.b, &url, "fed").await;
    let open = f
        .plain
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&f.world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    let round: Value = open.json().await.unwrap();
    assert_eq!(round["participants"], json!(["b"]));

    // Bad requests change nothing.
    for (body, status) in [
        (json!({ "set_epsilon": 5.0 }), 422),
        (json!({ "set_epsilon": 5.0, "reason": "  " }), 422),
        (
            json!({ "set_epsilon": 5.0, "raise_epsilon_by": 1.0, "reason": "x" }),
            422,
        ),
        (json!({ "reason": "x" }), 422),
        (json!({ "set_epsilon": -1.0, "reason": "x" }), 422),
        (json!({ "raise_epsilon_by": 0.0, "reason": "x" }), 422),
        (json!({ "set_epsilon": 1e9, "reason": "x" }), 422),
        (
            json!({ "set_epsilon": 5.0, "reason": "x", "delta": 0.5 }),
            422,
        ),
    ] {
        problem(change(body.clone()).await.unwrap(), status).await;
    }
    for path in ["fed/clients/ghost/budget", "nope/clients/a/budget"] {
        let resp = f
            .plain
            .post(format!("{url}/v1/federations/{path}"))
            .bearer_auth(&f.world.admin)
            .json(&json!({ "set_epsilon": 1.0, "reason": "x" }))
            .send()
            .await
            .unwrap();
        problem(resp, 404).await;
    }
    let resp = f
        .plain
        .post(format!("{url}/v1/federations/fed/clients/ghost/revoke"))
        .bearer_auth(&f.world.admin)
        .send()
        .await
        .unwrap();
    problem(resp, 404).await;

    // Raise: eligible again, the spend still there.
    let resp = change(json!({ "raise_epsilon_by": 10.0, "reason": "approved" }))
        .await
        .unwrap();
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["client"]["status"], "eligible");
    assert_eq!(
        out["client"]["budget"]["epsilon"].as_f64().unwrap(),
        spent_a / 2.0 + 10.0
    );
    assert_eq!(out["client"]["spent"]["epsilon"].as_f64().unwrap(), spent_a);
    assert_eq!(out["client"]["history"].as_array().unwrap().len(), 1);

    // Revoke twice: one audit line; the filter by client works.
    for _ in 0..2 {
        let resp = f
            .plain
            .post(format!("{url}/v1/federations/fed/clients/a/revoke"))
            .bearer_auth(&f.world.admin)
            .json(&json!({ "reason": "left the consortium" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.json::<Value>().await.unwrap()["state"], "revoked");
    }
    let audit = f.get("/v1/federations/fed/audit?client=a").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["set_budget", "raise_budget", "revoke"]);
    assert!(
        f.get("/v1/federations/fed/audit?client=b")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let budgets = f.get("/v1/federations/fed/budgets").await;
    assert_eq!(budgets["clients"][0]["status"], "revoked");
    assert_eq!(
        budgets["clients"][0]["spent"]["epsilon"].as_f64().unwrap(),
        spent_a
    );

    // Durable: a restart on the same data dir keeps the audit log and the budgets.
    let Fed { world, server, .. } = f;
    server.stop().await;
    let server = Running::start(&world.config()).await;
    let c = world.client(None);
    let again: Value = c
        .get(format!("{}/v1/federations/fed/audit", server.url))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, audit);
    server.stop().await;
}
