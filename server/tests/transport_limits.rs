//! The transport's limits over real HTTPS on 127.0.0.1: which TLS versions are accepted
//! (1.3 by default, 1.2 only when configured), per-client rate limits (429 with a problem
//! document and Retry-After), and a slow upload that must not hold back the others while they
//! wait for an upload permit (plain updates and masked inputs alike).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cohort_protocol::frame::encode_f32;
use common::*;
use reqwest::StatusCode;

async fn healthz(c: &reqwest::Client, url: &str) -> Result<StatusCode, reqwest::Error> {
    c.get(format!("{url}/healthz"))
        .send()
        .await
        .map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_3_by_default_and_tls_1_2_only_when_configured() {
    let world = World::new("tlsversions");
    let tls13 = https_client_with_versions(&world.ca_pem, None, &[&rustls::version::TLS13]);
    let tls12 = https_client_with_versions(&world.ca_pem, None, &[&rustls::version::TLS12]);

    let server = Running::start(&world.config()).await;
    assert_eq!(healthz(&tls13, &server.url).await.unwrap(), StatusCode::OK);
    assert!(
        healthz(&tls12, &server.url).await.is_err(),
        "a TLS 1.2-only client must be refused by default"
    );
    server.stop().await;

    let mut config = world.config();
    config.tls12 = true;
    let server = Running::start(&config).await;
    assert_eq!(healthz(&tls12, &server.url).await.unwrap(), StatusCode::OK);
    assert_eq!(healthz(&tls13, &server.url).await.unwrap(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected() {
    let world = World::new("ratelimit");
    let mut config = world.config();
    // Enrolment goes through the limiter too (keyed by IP), so the burst covers the set-up.
    config.rate_limit_per_s = 0.01;
    config.rate_limit_burst = 8;
    let server = Running::start(&config).await;
    let url = server.url.clone();
    let admin = world.client(None);
    let w = [0.0f32; 3];
    assert_eq!(
        create_federation(&admin, &url, &world.admin, "fed", &w, training_config(2))
            .await
            .status(),
        StatusCode::CREATED
    );
    let (ca, ka) = enrol(&world, &url, "fed", "a", 5).await;
    let (cb, kb) = enrol(&world, &url, "fed", "b", 5).await;
    let a = world.client(Some((&ca, &ka)));
    let b = world.client(Some((&cb, &kb)));

    // Client a spends its burst; its next request is refused before any handler runs.
    let mut refused = None;
    for _ in 0..=config.rate_limit_burst {
        let resp = a
            .get(format!("{url}/v1/federations/fed/task"))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = refused.expect("the client was never limited");
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    let p = problem(resp, 429).await;
    assert_eq!(p["type"], "urn:cohort:problem:rate-limited");

    // An upload over the limit is refused too, and changes nothing.
    problem(
        upload(&a, &url, "fed", 1, 5, encode_f32(&[0.0; 3])).await,
        429,
    )
    .await;
    // The limit is per client: b (its own certificate, same IP) still gets through.
    let (_, task) = poll(&b, &url, "fed").await;
    assert_eq!(task["kind"], "wait", "{task}");
    server.stop().await;
}

/// A request body fed by the test, chunk by chunk.
struct Trickle(tokio::sync::mpsc::Receiver<Vec<u8>>);

impl hyper::body::Body for Trickle {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c.into()))))
    }
}

/// A server with one upload permit, a plain federation `fed` of `PARAMS` zeros whose round 1
/// is open, and one enrolled, polled client per name, in order.
async fn one_permit_round(
    tag: &str,
    names: &[&str],
) -> (World, Running, reqwest::Client, Vec<reqwest::Client>) {
    let world = World::new(tag);
    let mut config = world.config();
    config.upload_concurrency = 1;
    let server = Running::start(&config).await;
    let url = server.url.clone();
    let admin = world.client(None);
    assert_eq!(
        create_federation(
            &admin,
            &url,
            &world.admin,
            "fed",
            &[0.0; PARAMS],
            training_config(u32::try_from(names.len()).unwrap())
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let mut clients = Vec::new();
    for name in names {
        let (c, k) = enrol(&world, &url, "fed", name, 1).await;
        let client = world.client(Some((&c, &k)));
        poll(&client, &url, "fed").await;
        clients.push(client);
    }
    let open = admin
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    (world, server, admin, clients)
}

/// Starts a PUT of `frame` to `url` by `client` that sends the first half and stalls until the
/// returned sender gets the rest; the task yields the response status.
async fn stalled_put(
    client: reqwest::Client,
    url: String,
    frame: &[u8],
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<StatusCode>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(frame[..frame.len() / 2].to_vec()).await.unwrap();
    let task = tokio::spawn(async move {
        client
            .put(url)
            .header("content-type", "application/vnd.cohort.vector")
            .body(reqwest::Body::wrap(Trickle(rx)))
            .send()
            .await
            .unwrap()
            .status()
    });
    (tx, task)
}

/// Parameters of the slow-upload tests' model: a body big enough to stall half-way.
const PARAMS: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_does_not_hold_back_the_others() {
    // One upload permit. Client `slow` sends half its body and stalls. The permit used to be
    // taken before the body was read, so the others queued behind the stalled sender (with
    // 200 clients, long enough for their TCP connections to time out). Bodies are now
    // received before a permit is taken: the others finish while `slow` is still sending.
    let (world, server, admin, mut clients) =
        one_permit_round("slowupload", &["slow", "b", "c"]).await;
    let url = server.url.clone();
    let frame = encode_f32(&[1.0; PARAMS]);
    let (tx, slow_upload) = stalled_put(
        clients.remove(0),
        format!("{url}/v1/federations/fed/rounds/1/update?num_examples=1"),
        &frame,
    )
    .await;
    // Let the slow request reach its handler first.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for c in &clients {
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            upload(c, &url, "fed", 1, 1, frame.clone()),
        )
        .await
        .expect("an upload waited behind a client that had not finished sending");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let r = get_json(&admin, &url, "/v1/federations/fed/rounds/1", &world.viewer).await;
    assert_eq!(r["accepted"], 2, "{r}");
    tx.send(frame[frame.len() / 2..].to_vec()).await.unwrap();
    drop(tx);
    assert_eq!(slow_upload.await.unwrap(), StatusCode::OK);
    let r = get_json(&admin, &url, "/v1/federations/fed/rounds/1", &world.viewer).await;
    assert!(r["accepted"] == 3 || r["state"] == "completed", "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_masked_input_does_not_hold_an_upload_permit() {
    // Masked inputs share the upload permits with plain updates. `slow` sends half a masked
    // input and stalls; it used to take the only permit before reading its body, so `b`'s
    // plain upload waited behind it. (The federation is plain, so `slow`'s input is refused
    // once it arrives: what matters is that it held no permit while arriving.)
    let (_world, server, _admin, mut clients) =
        one_permit_round("slowmasked", &["slow", "b"]).await;
    let url = server.url.clone();
    let frame = encode_f32(&[1.0; PARAMS]);
    let (tx, slow_upload) = stalled_put(
        clients.remove(0),
        format!("{url}/v1/federations/fed/rounds/1/secagg/masked"),
        &frame,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        upload(&clients[0], &url, "fed", 1, 1, frame.clone()),
    )
    .await
    .expect("a plain upload waited behind a masked input that had not finished arriving");
    assert_eq!(resp.status(), StatusCode::OK);
    tx.send(frame[frame.len() / 2..].to_vec()).await.unwrap();
    drop(tx);
    assert_eq!(slow_upload.await.unwrap(), StatusCode::CONFLICT);
    server.stop().await;
}
