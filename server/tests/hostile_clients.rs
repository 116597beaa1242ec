//! Inputs a hostile client sends, over real HTTPS on 127.0.0.1 against `cohort-server` in its
//! own process (issue 26): bodies declared or streamed past their route's limit, HTTP/2
//! streams that would pile bodies up in memory, budgets that protect nobody, probes for which
//! federations exist, unbounded plain updates, requests hyper itself refuses, and connections
//! that stall in every phase. The minutes-long soak of slow clients is `slow_clients.rs`.
//!
//! `COHORT_SERVER_BIN=/path/to/cohort-server cargo test --test hostile_clients` runs the same
//! checks against another build (how they were seen to fail before the fixes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cohort_protocol::frame::encode_f32;
use common::hostile::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const W0: [f32; 4] = [0.5, -1.0, 2.0, 0.25];

fn plain_clipped(min_clients: u32) -> Value {
    json!({
        "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.1 },
        "update_clip": 1.0,
        "client_budget": { "epsilon": 1000.0, "delta": 1e-5 },
        "client_sampling_rate": 1.0,
        "min_clients": min_clients,
        "deadlines": { "training_s": 60, "key_exchange_s": 60, "upload_s": 60, "unmask_s": 60 },
        "strategy": { "name": "fed_avg" },
        "secure_aggregation": false
    })
}

/// A server (configured by `toml`) with a plain federation `fed` and an enrolled client `site`
/// whose HTTPS client is returned.
async fn world_with_client(tag: &str, toml: &str) -> (World, ServerProcess, reqwest::Client) {
    let world = World::new(tag);
    let server = ServerProcess::spawn(&world, toml);
    let admin = world.client(None);
    let resp = create_federation(
        &admin,
        &server.url,
        &world.admin,
        "fed",
        &W0,
        plain_clipped(1),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (cert, key) = enrol(&world, &server.url, "fed", "site", 10).await;
    let client = world.client(Some((&cert, &key)));
    (world, server, client)
}

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_2gb_body_gets_413_at_once_and_a_streamed_one_is_cut_at_the_limit() {
    let (world, server, _) = world_with_client("hostile-413", "").await;
    // Enrolment is unauthenticated: nothing can be checked before its body, so its declared
    // size is, before a byte of it is read.
    let started = Instant::now();
    let answer = raw_exchange(
        &world,
        server.addr,
        b"POST /v1/federations/fed/enrol HTTP/1.1\r\nhost: cohort\r\ncontent-type: application/json\r\ncontent-length: 2000000000\r\n\r\n{\"token\":",
    )
    .await;
    let took = started.elapsed();
    let p = assert_problem(&answer, 413);
    assert_eq!(p["type"], "urn:cohort:problem:payload-too-large");
    // Reported in docs/benchmarks.md ("hostile clients").
    eprintln!("a declared 2 GB body got its 413 after {took:?}");
    assert!(took < Duration::from_secs(1), "413 after {took:?}");

    // An admin's JSON route: the same, after authentication.
    let request = format!(
        "POST /v1/federations/fed/clients HTTP/1.1\r\nhost: cohort\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 2000000000\r\n\r\n",
        world.admin
    );
    assert_problem(
        &raw_exchange(&world, server.addr, request.as_bytes()).await,
        413,
    );

    // Without a declared length the body is cut as it streams past the limit (64 KiB for
    // enrolment): 413, not a read of everything the client cares to send.
    let config = tls_config(&world, &[b"http/1.1"]);
    let mut tls = tls_from(&config, localhost(), server.addr).await.unwrap();
    tls.write_all(b"POST /v1/federations/fed/enrol HTTP/1.1\r\nhost: cohort\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    let writer = async {
        for _ in 0..64 {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            if tls.write_all(&framed).await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the server kept reading a body over its limit");
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut tls))
        .await
        .unwrap()
        .unwrap();
    assert_problem(&answer, 413);
}

/// A request body of ready frames, with no declared length.
struct Frames(std::collections::VecDeque<axum::body::Bytes>);

impl hyper::body::Body for Frames {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// `streams` HTTP/2 requests at once on one connection, each an enrolment body of `size`
/// bytes in 64 KiB frames with no declared length.
async fn http2_enrol_bodies(world: &World, server: &ServerProcess, streams: usize, size: usize) {
    let config = tls_config(world, &[b"h2"]);
    let tls = tls_from(&config, localhost(), server.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut sender = sender.clone();
        let frames = (0..size.div_ceil(chunk.len()))
            .map(|_| chunk.clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::post("https://127.0.0.1/v1/federations/fed/enrol")
                .header("content-type", "application/json")
                .body(Frames(frames))
                .unwrap();
            match sender.send_request(req).await {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0,
            }
        }));
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_http2_streams_of_1_mb_do_not_grow_the_server() {
    let (world, server, _) = world_with_client("hostile-h2", "").await;
    let before = server.peak_rss_mib();
    http2_enrol_bodies(&world, &server, 200, 1 << 20).await;
    let grew = server.peak_rss_mib() - before;
    eprintln!(
        "peak RSS {before:.1} MiB -> {:.1} MiB",
        server.peak_rss_mib()
    );
    assert!(
        grew < 32.0,
        "200 HTTP/2 streams of 1 MB grew the server's peak memory by {grew:.1} MiB"
    );
    // And the server still answers.
    let health = world
        .client(None)
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

async fn invite(c: &reqwest::Client, world: &World, url: &str, body: Value) -> reqwest::Response {
    c.post(format!("{url}/v1/federations/fed/clients"))
        .bearer_auth(&world.admin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_budget_that_enters_is_validated_the_same_way() {
    let (world, server, _) = world_with_client("hostile-budget", "").await;
    let url = &server.url;
    let admin = world.client(None);
    for (budget, field) in [
        (json!({ "epsilon": 1e300, "delta": 1e-5 }), "budget.epsilon"),
        (json!({ "epsilon": 8.0, "delta": 0.0 }), "budget.delta"),
    ] {
        let resp = invite(
            &admin,
            &world,
            url,
            json!({ "name": "greedy", "budget": budget }),
        )
        .await;
        let p = problem(resp, 422).await;
        assert_eq!(p["type"], "urn:cohort:problem:invalid-input");
        assert!(p["detail"].as_str().unwrap().contains(field), "{p}");
    }
    // Nothing was stored: the name is still free, and a sound budget is taken.
    let resp = invite(
        &admin,
        &world,
        url,
        json!({ "name": "greedy", "budget": { "epsilon": 8.0, "delta": 1e-5 } }),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The federation's default, and the budget endpoint, by the same rule.
    let mut config = plain_clipped(1);
    config["client_budget"]["epsilon"] = json!(1e300);
    let p = problem(
        create_federation(&admin, url, &world.admin, "lavish", &W0, config).await,
        422,
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("client_budget.epsilon"),
        "{p}"
    );
    let resp = admin
        .post(format!("{url}/v1/federations/fed/clients/greedy/budget"))
        .bearer_auth(&world.admin)
        .json(&json!({ "set_epsilon": 1e300, "reason": "x" }))
        .send()
        .await
        .unwrap();
    problem(resp, 422).await;
}

/// A request's media type and body.
type Body = Option<(&'static str, Vec<u8>)>;

/// Every route a client certificate may call, with a body that parses.
fn client_routes(fed: &str) -> Vec<(reqwest::Method, String, Body)> {
    use reqwest::Method;
    let json_body = |v: Value| Some(("application/json", v.to_string().into_bytes()));
    let key = "A".repeat(43) + "=";
    let r = format!("/v1/federations/{fed}/rounds/1");
    vec![
        (Method::GET, format!("/v1/federations/{fed}/task"), None),
        (
            Method::GET,
            format!("/v1/federations/{fed}/models/latest"),
            None,
        ),
        (
            Method::PUT,
            format!("{r}/update?num_examples=1"),
            Some(("application/vnd.cohort.vector", encode_f32(&[0.0; 4]))),
        ),
        (
            Method::POST,
            format!("{r}/metrics"),
            json_body(json!({ "values": [], "charged": { "epsilon": 0.0, "delta": 0.0 } })),
        ),
        (
            Method::POST,
            format!("{r}/secagg/keys"),
            json_body(json!({ "cipher_pk": key, "mask_pk": key })),
        ),
        (Method::GET, format!("{r}/secagg/keys"), None),
        (
            Method::POST,
            format!("{r}/secagg/shares"),
            json_body(json!({ "shares": [] })),
        ),
        (Method::GET, format!("{r}/secagg/shares"), None),
        (
            Method::PUT,
            format!("{r}/secagg/masked"),
            Some((
                "application/vnd.cohort.vector",
                cohort_protocol::frame::encode_u32(&[0; 4]),
            )),
        ),
        (Method::GET, format!("{r}/secagg/unmask"), None),
        (
            Method::POST,
            format!("{r}/secagg/unmask"),
            json_body(json!({ "self_mask_shares": [], "mask_key_shares": [] })),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_or_revoked_certificate_cannot_tell_which_federations_exist() {
    let (world, server, member) = world_with_client("hostile-probe", "").await;
    let url = &server.url;
    let admin = world.client(None);
    let resp = create_federation(&admin, url, &world.admin, "other", &W0, plain_clipped(1)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (cert, key) = enrol(&world, url, "fed", "gone", 10).await;
    let revoked = world.client(Some((&cert, &key)));
    let resp = admin
        .post(format!("{url}/v1/federations/fed/clients/gone/revoke"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let probes = [
        ("member of fed", &member, "other"),
        ("member of fed", &member, "ghost"),
        ("revoked in fed", &revoked, "fed"),
        ("revoked in fed", &revoked, "other"),
        ("revoked in fed", &revoked, "ghost"),
    ];
    for (who, client, fed) in probes {
        for (method, path, body) in client_routes(fed) {
            let mut req = client.request(method.clone(), format!("{url}{path}"));
            if let Some((ct, bytes)) = body {
                req = req.header("content-type", ct).body(bytes);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (status, body["type"].as_str()),
                (403, Some("urn:cohort:problem:forbidden")),
                "{who} probing {method} {path}: {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_updates_are_bounded_unless_an_admin_opts_out_visibly() {
    let (world, server, site) = world_with_client("hostile-unbounded", "").await;
    let url = &server.url;
    let admin = world.client(None);
    let mut unbounded = plain_clipped(1);
    unbounded.as_object_mut().unwrap().remove("update_clip");
    let p = problem(
        create_federation(&admin, url, &world.admin, "wild", &W0, unbounded.clone()).await,
        422,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("update_clip"), "{p}");
    unbounded["allow_unbounded_updates"] = json!(true);
    let resp = create_federation(&admin, url, &world.admin, "wild", &W0, unbounded).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let wild = get_json(&admin, url, "/v1/federations/wild", &world.viewer).await;
    assert_eq!(wild["config"]["allow_unbounded_updates"], true, "{wild}");
    let fed = get_json(&admin, url, "/v1/federations/fed", &world.viewer).await;
    assert_eq!(fed["config"]["allow_unbounded_updates"], false, "{fed}");

    // In the bounded federation an update of f32::MAX values, or a non-finite one, is refused
    // and the model moves by at most the clip.
    let open = admin
        .post(format!("{url}/v1/federations/fed/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    poll(&site, url, "fed").await;
    let nan = upload(
        &site,
        url,
        "fed",
        1,
        10,
        encode_f32(&[f32::NAN, 0.0, 0.0, 0.0]),
    )
    .await;
    problem(nan, 422).await;
    let huge = upload(&site, url, "fed", 1, 10, encode_f32(&[f32::MAX; 4])).await;
    let p = problem(huge, 422).await;
    assert!(p["detail"].as_str().unwrap().contains("update clip"), "{p}");
    let fine = upload(&site, url, "fed", 1, 10, encode_f32(&[0.5; 4])).await;
    assert_eq!(fine.status(), StatusCode::OK, "{:?}", fine.text().await);
    let mut model = Value::Null;
    for _ in 0..100 {
        model = get_json(&admin, url, "/v1/federations/fed/rounds/1", &world.viewer).await;
        if model["state"] != "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(model["state"], "completed", "{model}");
    let bytes = admin
        .get(format!("{url}/v1/federations/fed/models/latest"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let w1 = read_f32_safetensors(&bytes);
    let moved: f32 = w1
        .iter()
        .zip(W0)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    assert!(
        moved.is_finite() && moved <= 1.0 + 1e-4,
        "moved by {moved}: {w1:?}"
    );
}

/// Reads an answer's head only (a `HEAD` answer has a length but no body).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_own_answers_are_problem_documents() {
    let (world, server, _) = world_with_client("hostile-hyper", "").await;
    // A header line without a colon: hyper refuses it before the router sees a request.
    let answer = raw_exchange(
        &world,
        server.addr,
        b"GET /healthz HTTP/1.1\r\nhost: cohort\r\nthis is not a header\r\n\r\n",
    )
    .await;
    assert_eq!(
        assert_problem(&answer, 400)["type"],
        "urn:cohort:problem:malformed-request"
    );
    // A head over hyper's 64 KiB buffer.
    let mut big = b"GET /healthz HTTP/1.1\r\nhost: cohort\r\n".to_vec();
    big.extend_from_slice(format!("x-pad: {}\r\n\r\n", "a".repeat(70 * 1024)).as_bytes());
    let answer = raw_exchange(&world, server.addr, &big).await;
    assert_eq!(
        assert_problem(&answer, 431)["type"],
        "urn:cohort:problem:request-header-fields-too-large"
    );
    // After good answers on the same connection, one of them to HEAD (a length, no body):
    // the connection still finds where hyper's own answer starts.
    let config = tls_config(&world, &[b"http/1.1"]);
    let mut tls = tls_from(&config, localhost(), server.addr).await.unwrap();
    tls.write_all(b"HEAD /healthz HTTP/1.1\r\nhost: cohort\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: cohort\r\n\r\n")
        .await
        .unwrap();
    let ok = read_response(&mut tls).await.unwrap();
    assert_eq!(ok.0, 200);
    tls.write_all(b"GET / HTTP/9.9\r\n\r\n").await.unwrap();
    let answer = read_response(&mut tls).await.unwrap();
    assert_problem(&answer, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_half_a_request_is_closed_by_the_idle_timeout() {
    let (world, server, _) = world_with_client("hostile-partial", "idle_timeout_s = 2\n").await;
    let config = tls_config(&world, &[b"http/1.1"]);
    let mut tls = tls_from(&config, localhost(), server.addr).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let closed = closed_within(&mut tls, Duration::from_secs(10)).await;
    let took = closed.expect("a connection holding half a request stayed open");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?} with idle_timeout_s = 2"
    );
    // Over HTTP/2: the preface and then silence.
    let config = tls_config(&world, &[b"h2"]);
    let mut tls = tls_from(&config, localhost(), server.addr).await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert!(
        closed_within(&mut tls, Duration::from_secs(10))
            .await
            .is_some(),
        "a silent HTTP/2 connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let world = World::new("hostile-handshake");
    let server = ServerProcess::spawn(&world, "handshake_timeout_s = 1\n");
    let mut silent = tcp_from(localhost(), server.addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10))
        .await
        .expect("a connection that never sent a ClientHello stayed open");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_bounded_per_address_and_in_total() {
    let (world, server, site) = world_with_client(
        "hostile-admission",
        "max_unauthenticated_per_ip = 4\nmax_unauthenticated_connections = 8\n",
    )
    .await;
    let quick = Duration::from_millis(500);
    async fn silent(
        from: &str,
        server: std::net::SocketAddr,
        n: usize,
    ) -> Vec<tokio::net::TcpStream> {
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(tcp_from(from.parse().unwrap(), server).await.unwrap());
            // In arrival order, so which ones are evicted is determined.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        conns
    }
    // One address gets its share; the rest are closed at once, before a handshake.
    let mut a = silent("127.0.0.2", server.addr, 6).await;
    for (i, conn) in a.iter_mut().enumerate() {
        let closed = closed_within(conn, quick).await.is_some();
        assert_eq!(closed, i >= 4, "connection {i} from 127.0.0.2");
    }
    let mut b = silent("127.0.0.3", server.addr, 4).await;
    // The pool is full (8). A newcomer from elsewhere evicts the oldest connection of the
    // heaviest address (127.0.0.2 and .3 hold 4 each; .2's first is the oldest).
    let mut c = silent("127.0.0.4", server.addr, 1).await;
    assert!(
        closed_within(&mut a[0], quick).await.is_some(),
        "no eviction"
    );
    assert!(closed_within(&mut a[1], quick).await.is_none());
    assert!(closed_within(&mut b[0], quick).await.is_none());
    assert!(closed_within(&mut c[0], quick).await.is_none());
    // An admin and an enrolled client (new connections each) are served at once meanwhile.
    for _ in 0..3 {
        let started = Instant::now();
        let admin = world.client(None);
        get_json(&admin, &server.url, "/v1/federations", &world.admin).await;
        poll(&site, &server.url, "fed").await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_is_cut_after_the_send_timeout() {
    let world = World::new("hostile-send");
    let server = ServerProcess::spawn(&world, "send_timeout_s = 1\n");
    let admin = world.client(None);
    // 8 M parameters: 32 MB of weights, more than the socket buffers on both sides hold.
    let big = vec![0.5f32; 8 << 20];
    let mut config = plain_clipped(1);
    config["min_clients"] = json!(1);
    let resp = create_federation(&admin, &server.url, &world.admin, "big", &big, config).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let cfg = tls_config(&world, &[b"http/1.1"]);
    let mut tls = tls_from(&cfg, localhost(), server.addr).await.unwrap();
    tls.write_all(
        format!(
            "GET /v1/federations/big/models/latest HTTP/1.1\r\nhost: cohort\r\nauthorization: Bearer {}\r\n\r\n",
            world.viewer
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Read nothing for a while: the server's writes stall, and it gives up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    use tokio::io::AsyncReadExt;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection stayed open");
    assert!(
        got < 32 << 20,
        "the whole model ({got} bytes) was sent to a client that did not read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_below_the_minimum_rate_gets_a_408_problem() {
    let (world, server, _) = world_with_client("hostile-rate", "").await;
    let config = tls_config(&world, &[b"http/1.1"]);
    let mut tls = tls_from(&config, localhost(), server.addr).await.unwrap();
    tls.write_all(b"POST /v1/federations/fed/enrol HTTP/1.1\r\nhost: cohort\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n")
        .await
        .unwrap();
    // One byte a second: far below the default 1024 bytes/s once the 10 s grace is over.
    let started = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        while wr.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let answer = tokio::time::timeout(Duration::from_secs(20), read_response(&mut rd))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    let took = started.elapsed();
    trickle.abort();
    let p = assert_problem(&answer, 408);
    assert_eq!(p["type"], "urn:cohort:problem:request-timeout");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "408 after {took:?}"
    );
    assert!(answer.1.to_ascii_lowercase().contains("connection: close"));
}
