//! Disk full: a publish gets 507 and nothing is stored; reads go on; publishing works again
//! once space is back. The API runs in-process on an ephemeral port over a simulated disk that
//! fails the next write with ENOSPC.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use space::{Space, SpaceConfig};
use storage::sim::SimDisk;

async fn call(method: Method, url: &str, body: &'static str) -> (StatusCode, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let r = client
        .request(
            Request::builder()
                .method(method)
                .uri(url)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    (status, r.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_507_and_publishing_resumes_when_space_is_back() {
    let disk = SimDisk::new(1);
    let (space, _) = Space::open(
        Arc::new(disk.clone()),
        SpaceConfig::new(storage::Config {
            segment_bytes: 64 * 1024,
            ..storage::Config::default()
        }),
        Arc::new(handler::HttpDeliverer::new()),
    )
    .unwrap();
    let router = frontend::router(space, &frontend::ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    assert_eq!(
        call(Method::PUT, &format!("{base}/v1/queues/q"), "")
            .await
            .0,
        StatusCode::CREATED
    );
    // A subscriber that accepts connections and never answers: messages stay in the queue, and
    // no failure record is written meanwhile (the injected fault must hit the publish).
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in l.incoming() {
                held.push(stream);
            }
        });
        format!("http://{addr}/")
    };
    let sub = Box::leak(
        serde_json::json!({ "endpoint": down })
            .to_string()
            .into_boxed_str(),
    );
    let (status, _) = call(
        Method::POST,
        &format!("{base}/v1/queues/q/subscribers"),
        sub,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(
        Method::POST,
        &format!("{base}/v1/queues/q/messages"),
        "kept",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let kept: serde_json::Value = serde_json::from_slice(&body).unwrap();

    disk.fail_next_write();
    let (status, body) = call(
        Method::POST,
        &format!("{base}/v1/queues/q/messages"),
        "lost",
    )
    .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body:?}");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 507);

    // Reads go on, nothing of the refused publish was stored, and publishing works again.
    let (status, q) = call(Method::GET, &format!("{base}/v1/queues/q"), "").await;
    assert_eq!(status, StatusCode::OK);
    let q: serde_json::Value = serde_json::from_slice(&q).unwrap();
    let held = q["counts"]["ready"].as_u64().unwrap() + q["counts"]["delivering"].as_u64().unwrap();
    assert_eq!(held, 1, "only the message accepted before the disk filled");
    let id = kept["id"].as_str().unwrap();
    let (status, body) = call(
        Method::GET,
        &format!("{base}/v1/queues/q/messages/{id}/body"),
        "",
    )
    .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"kept"[..]));
    let (status, _) = call(
        Method::POST,
        &format!("{base}/v1/queues/q/messages"),
        "again",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}
