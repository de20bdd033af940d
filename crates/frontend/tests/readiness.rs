//! Readiness tells the truth: `/readyz` is 503 once the log refuses writes (after a failed
//! fsync), and while the broker recovers only `/healthz` answers 200. The API runs in-process
//! on an ephemeral port over a simulated disk.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use space::{Space, SpaceConfig};
use storage::sim::SimDisk;

async fn call(method: Method, url: &str) -> (StatusCode, http::HeaderMap, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let r = client
        .request(
            Request::builder()
                .method(method)
                .uri(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = r.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_once_the_log_refuses_writes() {
    let disk = SimDisk::new(3);
    let (space, _) = Space::open(
        Arc::new(disk.clone()),
        SpaceConfig::new(storage::Config::default()),
        Arc::new(handler::HttpDeliverer::new()),
    )
    .unwrap();
    let base = serve(frontend::router(space, &frontend::ApiConfig::default())).await;
    let (status, _, body) = call(Method::GET, &format!("{base}/readyz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
    disk.fail_next_sync();
    let (status, _, _) = call(Method::PUT, &format!("{base}/v1/queues/q")).await;
    assert!(status.is_server_error(), "{status}");
    let (status, _, body) = call(Method::GET, &format!("{base}/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("refuses writes"), "{body}");
    let (status, _, _) = call(Method::GET, &format!("{base}/healthz")).await;
    assert_eq!(status, StatusCode::OK, "still alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_recovering_only_healthz_answers_200() {
    let base = serve(frontend::recovering_router()).await;
    let (status, _, body) = call(Method::GET, &format!("{base}/healthz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    for (method, path) in [
        (Method::GET, "/readyz"),
        (Method::GET, "/v1/queues"),
        (Method::POST, "/v1/queues/q/messages"),
        (Method::POST, "/msg"),
    ] {
        let (status, headers, body) = call(method, &format!("{base}{path}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(headers.get("retry-after").unwrap(), "1", "{path}");
        assert!(body.contains("recovering"), "{path}: {body}");
    }
}
