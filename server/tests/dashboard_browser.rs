//! The dashboard end to end in headless Chromium: a real HTTPS server on 127.0.0.1 runs a
//! small federation (plain updates, secure_aggregation=false, central noise on so there is a
//! client-level ε to chart), then a browser signs in, reads the client table and checks every
//! ε against the SQLite ledger, finds the charts, sorts, watches a live update, changes a
//! budget through the page, and saves screenshots under
//! `target/tmp/dashboard-e2e/` (laptop and phone widths).
//!
//! Chromium and chromedriver come from `scripts/setup-chromium.sh`, which installs the Debian
//! packages when missing; if it cannot, the test fails with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod webdriver;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cohort_protocol::frame::encode_f32;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const W0: [f32; 4] = [0.5, -1.0, 2.0, 0.25];

fn config() -> Value {
    json!({
        "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.1 },
        "update_clip": 1.0,
        "central_noise_multiplier": 1.0,
        "client_budget": { "epsilon": 50.0, "delta": 1e-5 },
        "federation_budget": { "epsilon": 100.0, "delta": 1e-5 },
        "client_sampling_rate": 1.0,
        "min_clients": 2,
        "deadlines": { "training_s": 60, "key_exchange_s": 60, "upload_s": 60, "unmask_s": 60 },
        "strategy": { "name": "fed_avg", "weighting": "uniform" },
        "secure_aggregation": false
    })
}

fn artefact_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e")
}

async fn get_json(c: &reqwest::Client, url: &str, token: &str) -> Value {
    let resp = c.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    resp.json().await.unwrap()
}

/// Opens a round, has every participant train (a zero update) and waits for completion.
async fn run_round(world: &World, url: &str, clients: &HashMap<String, reqwest::Client>) {
    let admin = world.client(None);
    let resp = admin
        .post(format!("{url}/v1/federations/demo/rounds"))
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
    let id = round["id"].as_u64().unwrap();
    for p in round["participants"].as_array().unwrap() {
        let c = &clients[p.as_str().unwrap()];
        let task: Value = c
            .get(format!("{url}/v1/federations/demo/task"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(task["kind"], "train", "{task}");
        let resp = c
            .put(format!(
                "{url}/v1/federations/demo/rounds/{id}/update?num_examples=10"
            ))
            .header("content-type", "application/vnd.cohort.vector")
            .body(encode_f32(&[0.0; 4]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
    }
    for _ in 0..200 {
        let r = get_json(
            &admin,
            &format!("{url}/v1/federations/demo/rounds/{id}"),
            &world.viewer,
        )
        .await;
        if r["state"] == "completed" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("round {id} did not complete");
}

/// Each client's latest record-level ε as the SQLite ledger holds it (and the federation's),
/// checked against the accounts table.
fn ledger_epsilons(data_dir: &Path) -> (HashMap<String, f64>, f64) {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("cohort.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut latest = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT client, epsilon_after FROM ledger_entries WHERE federation = 'demo' AND client IS NOT NULL ORDER BY id")
        .unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))
        .unwrap()
    {
        let (c, e) = row.unwrap();
        latest.insert(c, e);
    }
    let mut stmt = conn
        .prepare("SELECT client, epsilon FROM client_accounts WHERE federation = 'demo'")
        .unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))
        .unwrap()
    {
        let (c, e) = row.unwrap();
        assert_eq!(latest[&c], e, "ledger and account of {c} disagree");
    }
    let fed: f64 = conn
        .query_row(
            "SELECT epsilon FROM federation_accounts WHERE federation = 'demo'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (latest, fed)
}

const ROWS_SCRIPT: &str =
    "return [...document.querySelectorAll('#clients-table tr.client-row')].map(r => ({
    client: r.dataset.client, status: r.dataset.status,
    value: r.querySelector('[data-col=spent]').dataset.value,
    text: r.querySelector('[data-col=spent]').textContent,
    budget: r.querySelector('[data-col=budget]').textContent,
    rounds: r.querySelector('[data-col=rounds]').textContent }));";

/// Checks every row of the page's client table against the ledger, exactly.
async fn assert_table_matches_ledger(
    s: &webdriver::Session,
    ledger: &HashMap<String, f64>,
    rounds: &HashMap<&str, &str>,
) {
    let rows = s.script(ROWS_SCRIPT).await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), ledger.len(), "{rows:?}");
    for r in rows {
        let client = r["client"].as_str().unwrap();
        let want = ledger[client];
        let shown: f64 = r["value"].as_str().unwrap().parse().unwrap();
        assert_eq!(shown, want, "ε of {client}: page {shown} vs ledger {want}");
        assert_eq!(r["text"], format!("{want:.3}"), "{client}");
        assert_eq!(r["rounds"], rounds[client], "{client}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_exactly_the_ledgers_epsilon_in_headless_chromium() {
    let browsers = webdriver::setup_browsers();
    let world = World::new("dashboard");
    let server = Running::start(&world.config()).await;
    let url = server.url.clone();
    let http = world.client(None);

    // The /admin page is served with a strict policy and no data.
    let page = http.get(format!("{url}/admin")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page.headers().get("set-cookie").is_none());

    let resp = create_federation(&http, &url, &world.admin, "demo", &W0, config()).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    let mut clients = HashMap::new();
    for (name, n) in [("hospital-a", 100), ("hospital-b", 300), ("clinic-c", 50)] {
        let (cert, key) = enrol(&world, &url, "demo", name, n).await;
        let c = world.client(Some((&cert, &key)));
        let poll = c
            .get(format!("{url}/v1/federations/demo/task"))
            .send()
            .await
            .unwrap();
        assert_eq!(poll.status(), StatusCode::OK);
        clients.insert(name.to_owned(), c);
    }
    run_round(&world, &url, &clients).await;
    run_round(&world, &url, &clients).await;
    // Lower hospital-b's budget below its spend: it becomes exhausted, its spend stays.
    let resp = http
        .post(format!(
            "{url}/v1/federations/demo/clients/hospital-b/budget"
        ))
        .bearer_auth(&world.admin)
        .json(&json!({ "set_epsilon": 0.1, "reason": "paused by the privacy officer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
    let (ledger, fed_eps) = ledger_epsilons(&world.data_dir());
    assert_eq!(ledger.len(), 3);
    assert!(ledger.values().all(|e| *e > 0.1), "{ledger:?}");

    let driver = webdriver::Driver::start(&browsers.chromedriver).await;
    let s = driver.session(&browsers.chromium).await;
    s.goto(&format!("{url}/admin")).await;
    s.wait_for("return document.readyState === 'complete'", "the page")
        .await;
    // Nothing is shown without a token.
    assert_eq!(
        s.script("return document.getElementById('app').hidden")
            .await,
        true
    );
    assert_eq!(
        s.script("return document.body.innerText.includes('hospital')")
            .await,
        false
    );
    // A forged token is refused with the server's reason.
    let forged = cohort_server::auth::TokenSigner::new(&[7u8; 32])
        .unwrap()
        .issue("mallory", cohort_server::auth::Role::Admin, 3600);
    s.type_text(&s.find("#token").await, &forged).await;
    s.click(&s.find("#signin-button").await).await;
    s.wait_for(
        "return document.getElementById('signin-error').textContent.includes('not signed by this server')",
        "the refusal of a forged token",
    )
    .await;

    // A viewer sees the table but no budget controls.
    s.clear(&s.find("#token").await).await;
    s.type_text(&s.find("#token").await, &world.viewer).await;
    s.click(&s.find("#signin-button").await).await;
    s.wait_for(
        "return document.querySelectorAll('#clients-table tr.client-row').length === 3",
        "the client table",
    )
    .await;
    s.click(&s.find("#clients-table tr[data-client=hospital-a]").await)
        .await;
    s.wait_for(
        "return !document.getElementById('client-panel').hidden && document.getElementById('client-ops').textContent.includes('read-only') && !document.getElementById('budget-form')",
        "the read-only client panel",
    )
    .await;
    s.click(&s.find("#sign-out").await).await;
    assert_eq!(s.script("return sessionStorage.length").await, 0);

    // An admin.
    s.type_text(&s.find("#token").await, &world.admin).await;
    s.click(&s.find("#signin-button").await).await;
    s.wait_for(
        "return document.querySelectorAll('#clients-table tr.client-row').length === 3",
        "the client table",
    )
    .await;
    let two = HashMap::from([("hospital-a", "2"), ("hospital-b", "2"), ("clinic-c", "2")]);
    assert_table_matches_ledger(&s, &ledger, &two).await;
    let rows = s.find_all("#clients-table tr.client-row").await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let name = s.attribute(row, "data-client").await.unwrap();
        let text = s.text(row).await;
        assert!(
            text.contains(&format!("{:.3}", ledger[&name])),
            "{name}: {text}"
        );
        let status = s.attribute(row, "data-status").await.unwrap();
        let want = if name == "hospital-b" {
            "exhausted"
        } else {
            "eligible"
        };
        assert_eq!(status, want, "{name}");
    }
    // The client-level chart: two rounds against the budget line; a sparkline per client.
    let chart = s.find("#fed-chart").await;
    assert_eq!(
        s.attribute(&chart, "data-points").await.as_deref(),
        Some("2")
    );
    assert_eq!(
        s.script("return document.querySelectorAll('#fed-chart path.series').length === 1 && document.querySelectorAll('#fed-chart line.budget').length === 1").await,
        true
    );
    assert_eq!(
        s.script("return [...document.querySelectorAll('#clients-table svg.spark')].map(x => x.dataset.points).join()").await,
        "2,2,2"
    );
    let fed_stat = s.text(&s.find("#stat-fed-eps").await).await;
    assert!(
        fed_stat.contains(&format!("{fed_eps:.3} / 100.000")),
        "{fed_stat}"
    );
    let secagg = s.find("#secure-aggregation").await;
    assert_eq!(
        s.attribute(&secagg, "data-secure-aggregation")
            .await
            .as_deref(),
        Some("false")
    );
    assert!(s.text(&secagg).await.contains("Secure aggregation: off"));
    let rounds_shown = s.find_all("#rounds-table tbody tr[data-round]").await;
    assert_eq!(rounds_shown.len(), 2);
    s.screenshot(&artefact_dir().join("dashboard.png")).await;

    // Sorting by ε spent, both ways.
    let order = "return [...document.querySelectorAll('#clients-table tr.client-row')].map(r => Number(r.querySelector('[data-col=spent]').dataset.value))";
    s.click(&s.find("th[data-sort-key=spent] button").await)
        .await;
    let asc: Vec<f64> = serde_json::from_value(s.script(order).await).unwrap();
    assert!(asc.windows(2).all(|w| w[0] <= w[1]), "{asc:?}");
    s.click(&s.find("th[data-sort-key=spent] button").await)
        .await;
    let desc: Vec<f64> = serde_json::from_value(s.script(order).await).unwrap();
    assert!(desc.windows(2).all(|w| w[0] >= w[1]), "{desc:?}");

    // Live: a third round (hospital-b is exhausted, so it sits out) shows up by polling.
    run_round(&world, &url, &clients).await;
    s.wait_for(
        "return document.getElementById('fed-chart').dataset.points === '3'",
        "the live update",
    )
    .await;
    let (ledger, _) = ledger_epsilons(&world.data_dir());
    let three = HashMap::from([("hospital-a", "3"), ("hospital-b", "2"), ("clinic-c", "3")]);
    assert_table_matches_ledger(&s, &ledger, &three).await;

    // Raise hospital-b's budget from the page; the audit log shows it and the spend stays.
    s.click(&s.find("#clients-table tr[data-client=hospital-b]").await)
        .await;
    s.wait_for(
        "return !!document.getElementById('budget-form')",
        "the budget form",
    )
    .await;
    assert!(
        s.text(&s.find("#client-title").await)
            .await
            .contains("hospital-b")
    );
    assert_eq!(
        s.attribute(&s.find("#client-chart").await, "data-points")
            .await
            .as_deref(),
        Some("2")
    );
    s.click(&s.find("#budget-op option[value=raise]").await)
        .await;
    s.type_text(&s.find("#budget-amount").await, "100").await;
    s.type_text(
        &s.find("#budget-reason").await,
        "ethics board approved more",
    )
    .await;
    s.click(&s.find("#budget-form button[type=submit]").await)
        .await;
    s.wait_for(
        "return document.getElementById('audit-table').textContent.includes('ethics board approved more') && document.querySelector('#clients-table tr[data-client=hospital-b]').dataset.status === 'eligible'",
        "the audited raise",
    )
    .await;
    let budgets = get_json(
        &http,
        &format!("{url}/v1/federations/demo/budgets"),
        &world.viewer,
    )
    .await;
    let b = budgets["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == "hospital-b")
        .unwrap();
    assert_eq!(b["budget"]["epsilon"].as_f64().unwrap(), 0.1 + 100.0);
    assert_eq!(
        b["spent"]["epsilon"].as_f64().unwrap(),
        ledger["hospital-b"]
    );
    let audit = get_json(
        &http,
        &format!("{url}/v1/federations/demo/audit"),
        &world.viewer,
    )
    .await;
    let last = audit.as_array().unwrap().last().unwrap();
    assert_eq!(last["actor"], "alice");
    assert_eq!(last["action"], "raise_budget");

    // A phone: nothing wider than the screen (tables scroll inside their cards).
    s.resize(390, 844).await;
    s.wait_for(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1",
        "a layout that fits a phone",
    )
    .await;
    s.screenshot(&artefact_dir().join("dashboard-phone.png"))
        .await;
    println!("screenshots in {}", artefact_dir().display());

    s.close().await;
    drop(driver);
    server.stop().await;
}
