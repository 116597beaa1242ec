//! Uploads over real HTTPS on 127.0.0.1 against the transport's limits: a slow upload must
//! not hold back the others while they wait for an upload permit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cohort_protocol::frame::encode_f32;
use common::*;
use reqwest::StatusCode;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_does_not_hold_back_the_others() {
    // One upload permit. Client `slow` sends half its body and stalls. The permit used to be
    // taken before the body was read, so the others queued behind the stalled sender (with
    // 200 clients, long enough for their TCP connections to time out). Bodies are now
    // received before a permit is taken: the others finish while `slow` is still sending.
    const PARAMS: usize = 4096;
    let world = World::new("slowupload");
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
            training_config(3)
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let mut clients = Vec::new();
    for name in ["slow", "b", "c"] {
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

    let frame = encode_f32(&[1.0; PARAMS]);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(frame[..frame.len() / 2].to_vec()).await.unwrap();
    let slow = clients.remove(0);
    let slow_url = url.clone();
    let slow_upload = tokio::spawn(async move {
        slow.put(format!(
            "{slow_url}/v1/federations/fed/rounds/1/update?num_examples=1"
        ))
        .header("content-type", "application/vnd.cohort.vector")
        .body(reqwest::Body::wrap(Trickle(rx)))
        .send()
        .await
        .unwrap()
        .status()
    });
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
