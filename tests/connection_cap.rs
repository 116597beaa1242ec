//! The server's connection cap over real HTTPS on 127.0.0.1: more clients than slots all get
//! served (none refused, none starved by clients that keep their connections busy), the cap
//! holds while they wait, an idle keep-alive connection is closed after the idle timeout so
//! its slot goes to a waiting client, and shutdown does not wait for idle connections.
//!
//! Slots are for authenticated callers (a client certificate, or a bearer token: the
//! connection takes a slot at its first request that carries one), so every request here
//! carries the viewer's token; unauthenticated connections are held apart
//! (server/tests/hostile_clients.rs, slow_clients.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::World;
use reqwest::StatusCode;

/// A metric's value from the exposition text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// `clients` clients, each with its own connection pool, each asking /healthz `requests`
/// times and expecting 200 every time.
fn spawn_health_checkers(
    world: &World,
    url: &str,
    clients: usize,
    requests: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (client, url, viewer) = (world.http(), url.to_owned(), world.viewer.clone());
            tokio::spawn(async move {
                for _ in 0..requests {
                    let resp = client
                        .get(format!("{url}/healthz"))
                        .bearer_auth(&viewer)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                }
            })
        })
        .collect()
}

/// Waits for every task, failing with `starved` if one is not done within `limit`.
async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, limit: Duration, starved: &str) {
    for task in tasks {
        tokio::time::timeout(limit, task)
            .await
            .expect(starved)
            .unwrap();
    }
}

async fn metrics(world: &World, url: &str) -> String {
    let resp = world
        .http()
        .get(format!("{url}/metrics"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_clients_through_two_slots_all_finish_while_two_keep_theirs_busy() {
    let world = World::new("conncap");
    let mut config = world.config("127.0.0.1:0".parse().unwrap());
    config.max_connections = 2;
    // Long enough never to fire here: only the cap's hand-over can let the others in.
    config.idle_timeout_s = 120;
    let server = world.start_with(config).await;
    let url = server.url.clone();

    // Two clients that never pause: each keeps one keep-alive connection busy. Without a
    // hand-over they would hold both slots for as long as they run.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut busy = Vec::new();
    for _ in 0..2 {
        let (client, url, stop, served) = (world.http(), url.clone(), stop.clone(), served.clone());
        let viewer = world.viewer.clone();
        busy.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let request = client.get(format!("{url}/healthz")).bearer_auth(&viewer);
                match request.send().await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
            }
            failures
        }));
    }
    let started = Instant::now();
    while served.load(Ordering::Relaxed) < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the busy clients never got in"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Four more clients, each with its own connection pool, three requests each.
    let late = spawn_health_checkers(&world, &url, 4, 3);
    join_within(
        late,
        Duration::from_secs(30),
        "a client waiting for a slot was starved by the busy ones",
    )
    .await;
    assert!(
        !busy.iter().any(|t| t.is_finished()),
        "the busy clients must still have been running"
    );
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        let failures = t.await.unwrap();
        assert!(
            failures.is_empty(),
            "a busy client saw its connection closed under a request: {failures:?}"
        );
    }

    let text = metrics(&world, &url).await;
    assert_eq!(metric(&text, "cohort_connections_max"), 2.0);
    assert!(metric(&text, "cohort_connections_open") <= 2.0, "{text}");
    assert!(
        metric(&text, "cohort_connections_waited_total") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "cohort_connections_closed_total{reason=\"crowded\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "cohort_connections_closed_total{reason=\"idle\"}"),
        0.0,
        "the idle timeout was not what made room"
    );

    // The busy clients' pools still hold idle connections; shutdown closes them at once.
    let stopping = Instant::now();
    server.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for idle connections",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_while_clients_wait_and_nothing_is_refused() {
    let world = World::new("conncap-hold");
    let mut config = world.config("127.0.0.1:0".parse().unwrap());
    config.max_connections = 3;
    config.idle_timeout_s = 120;
    let server = world.start_with(config).await;
    let url = server.url.clone();

    // One slot watches the gauge; twelve clients share the other two.
    let watcher = world.http();
    let (done, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let watching = {
        let (done, peak, url, viewer) = (
            done.clone(),
            peak.clone(),
            url.clone(),
            world.viewer.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let text = watcher
                    .get(format!("{url}/metrics"))
                    .bearer_auth(&viewer)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let open = metric(&text, "cohort_connections_open") as u64;
                peak.fetch_max(open, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let clients = spawn_health_checkers(&world, &url, 12, 5);
    join_within(
        clients,
        Duration::from_secs(60),
        "a client never got a slot",
    )
    .await;
    done.store(true, Ordering::Relaxed);
    watching.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 3, "{peak} connections open with a cap of 3");
    assert!(peak >= 2, "the gauge never saw the clients ({peak})");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_its_slot_handed_on() {
    let world = World::new("conncap-idle");
    let mut config = world.config("127.0.0.1:0".parse().unwrap());
    config.max_connections = 1;
    config.idle_timeout_s = 1;
    let server = world.start_with(config).await;
    let url = server.url.clone();

    // `a` keeps its connection in its pool (20 s) and sends nothing more: it holds the only
    // slot until the server's idle timeout closes it.
    let a = world.http();
    assert_eq!(
        a.get(format!("{url}/healthz"))
            .bearer_auth(&world.viewer)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let b = world.http();
    let asked = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        b.get(format!("{url}/healthz"))
            .bearer_auth(&world.viewer)
            .send(),
    )
    .await
    .expect("the idle connection kept the only slot")
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "b got in after {waited:?}: it should have waited for a's idle timeout"
    );
    // `a` comes back on a new connection; b's has gone idle and is closed in turn.
    assert_eq!(
        a.get(format!("{url}/healthz"))
            .bearer_auth(&world.viewer)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let text = metrics(&world, &url).await;
    assert!(
        metric(&text, "cohort_connections_closed_total{reason=\"idle\"}") >= 2.0,
        "{text}"
    );
    assert_eq!(metric(&text, "cohort_connections_max"), 1.0);
    server.stop().await;
}

/// An HTTP/2 client (prior knowledge over TLS: the server tells the protocols apart by the
/// connection preface).
fn http2_client(ca_pem: &str) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_hand_over_their_slot_too() {
    let world = World::new("conncap-h2");
    let mut config = world.config("127.0.0.1:0".parse().unwrap());
    config.max_connections = 1;
    config.idle_timeout_s = 1;
    let server = world.start_with(config).await;
    let url = server.url.clone();

    // Busy: an HTTP/2 client requesting without pause holds the only slot; a waiting client
    // makes the server send it a GOAWAY. It may see a refused request in the hand-over, so it
    // retries; what matters is that the other client gets in while it is still busy.
    let h2 = http2_client(&world.ca_pem);
    let resp = h2
        .get(format!("{url}/healthz"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (h2, url, stop) = (h2.clone(), url.clone(), stop.clone());
        let viewer = world.viewer.clone();
        tokio::spawn(async move {
            let mut ok = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = h2.get(format!("{url}/healthz")).bearer_auth(&viewer);
                if let Ok(r) = request.send().await {
                    ok += u64::from(r.status() == StatusCode::OK);
                }
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h1 = world.http();
    for _ in 0..3 {
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            h1.get(format!("{url}/healthz"))
                .bearer_auth(&world.viewer)
                .send(),
        )
        .await
        .expect("a busy HTTP/2 connection kept the only slot")
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert!(!busy.is_finished());
    stop.store(true, Ordering::Relaxed);
    assert!(busy.await.unwrap() > 0);

    // Idle: the HTTP/2 connection, quiet now, is closed after a second; h1's keep-alive
    // connection likewise, so a fresh client gets the slot.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = metrics(&world, &url).await;
    assert!(
        metric(&text, "cohort_connections_closed_total{reason=\"idle\"}") >= 1.0,
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secure_round_of_ten_clients_completes_through_three_slots() {
    use cohort_client::participant::{Poll, RoundOutcome};
    use cohort_privacy::EpsDelta;

    const DIM: usize = 8;
    fn delta(i: usize, _round: u64) -> Vec<f32> {
        (0..DIM).map(|j| 0.01 * (i + j) as f32).collect()
    }
    let world = World::new("conncap-secure");
    let mut config = world.config("127.0.0.1:0".parse().unwrap());
    config.max_connections = 3;
    // Short, so the check-ins' idle connections make room quickly.
    config.idle_timeout_s = 1;
    let server = world.start_with(config).await;
    let url = server.url.clone();
    // Stage deadlines below the server's 5 s long poll: three clients holding their stage
    // polls would keep the other seven out past every deadline, unless the polls answer
    // early once clients queue for a slot.
    let mut fed_config = common::secure_config(3, 1000.0);
    fed_config["deadlines"] = serde_json::json!(
        { "training_s": 4, "key_exchange_s": 4, "upload_s": 4, "unmask_s": 4 }
    );
    common::create_federation(&world, &url, "sec", &[0.0; DIM], fed_config).await;
    let budget = EpsDelta::new(1000.0, 1e-5).unwrap();
    let mut ps = common::participants(&world, &url, "sec", 10, delta, budget).await;
    common::check_in(&mut ps).await;

    let round = common::open_round(&world, &url, "sec").await["id"]
        .as_u64()
        .unwrap();
    let results = common::poll_all(ps).await;
    let contributed = results
        .iter()
        .filter(
            |(_, r)| matches!(r, Ok(Poll::Round(rep)) if rep.outcome == RoundOutcome::Contributed),
        )
        .count();
    assert_eq!(
        contributed,
        10,
        "{:?}",
        results.iter().map(|(_, r)| r).collect::<Vec<_>>()
    );
    let done = common::wait_round(&world, &url, "sec", round, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["accepted"], 10, "{done}");
    let text = metrics(&world, &url).await;
    assert!(
        metric(&text, "cohort_connections_waited_total") >= 1.0,
        "{text}"
    );
    server.stop().await;
}
