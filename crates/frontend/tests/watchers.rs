//! `GET /v1/queues/{queue}/events` at its edge: `WATCHERS_MAX` watchers at once, the next one
//! refused with 503 until one goes; a stream says `watching` first, and ends when the feed is
//! closed. In-process on an ephemeral port over a simulated disk.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use space::{Space, SpaceConfig};
use storage::sim::SimDisk;

type Response = hyper::Response<hyper::body::Incoming>;

async fn get(url: &str) -> Response {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    client
        .request(
            Request::builder()
                .method(Method::GET)
                .uri(url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap()
}

/// The text of the next frame of a stream.
async fn next_frame(r: &mut Response) -> Option<String> {
    let frame = r.body_mut().frame().await?.ok()?;
    Some(String::from_utf8_lossy(&frame.into_data().ok()?).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_bounded_and_their_streams_end_with_the_feed() {
    let (space, _) = Space::open(
        Arc::new(SimDisk::new(5)),
        SpaceConfig::new(storage::Config::default()),
        Arc::new(handler::HttpDeliverer::new()),
    )
    .unwrap();
    space
        .put_queue("q", &space::SettingsPatch::default())
        .await
        .unwrap();
    let router = frontend::router(space.clone(), &frontend::ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("{base}/v1/queues/q/events");

    let mut open = Vec::new();
    for _ in 0..frontend::limits::WATCHERS_MAX {
        let mut r = get(&url).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            next_frame(&mut r)
                .await
                .unwrap()
                .contains("event: watching")
        );
        open.push(r);
    }
    let refused = get(&url).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    // One goes: its place is given back.
    drop(open.pop());
    let mut again = None;
    for _ in 0..100 {
        let r = get(&url).await;
        if r.status() == StatusCode::OK {
            again = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut again = again.expect("a place given back is taken again");
    assert!(next_frame(&mut again).await.unwrap().contains("watching"));

    // What happens to the queue shows on the stream.
    let m = space
        .publish(
            "q",
            space::NewMessage {
                body: Bytes::from_static(b"x"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let frame = next_frame(&mut again).await.unwrap();
    assert!(frame.contains("event: published"), "{frame}");
    assert!(frame.contains(&m.id.to_string()), "{frame}");

    assert_eq!(
        get(&format!("{base}/v1/queues/nope/events")).await.status(),
        StatusCode::NOT_FOUND
    );
    space.close_feed();
    assert_eq!(
        next_frame(&mut again).await,
        None,
        "the stream ends with the feed"
    );
}
