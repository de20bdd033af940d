//! Trace context through the real binary: a `traceparent` (and `tracestate`) given at publish is
//! kept in the message's record and sent with every attempt, also after a `kill -9` (when it
//! can only come from the log); a malformed one is refused.

mod common;

use std::sync::{Arc, Mutex};

use common::{call, eventually, hook_server, queue_with, serving};
use http::{Method, StatusCode};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_context_goes_with_every_attempt_across_a_kill9() {
    let dir = tempfile::tempdir().unwrap();
    // (traceparent, ce-traceparent, tracestate) of every request; the first two answered 503.
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let record = seen.clone();
    let hook = hook_server(move |req: hyper::Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let mut seen = record.lock().unwrap();
            seen.push((h("traceparent"), h("ce-traceparent"), h("tracestate")));
            let mut answer = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            if seen.len() <= 2 {
                *answer.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            answer
        }
    })
    .await;
    let b = serving(dir.path(), &[]);
    let settings = r#"{"retry": {"initial_backoff": "300ms", "max_backoff": "300ms"}, "retention": {"delivered": "1h"}}"#;
    queue_with(&b.url, "q", settings, &[&hook]).await;

    let bad = call(
        Method::POST,
        &format!("{}/v1/queues/q/messages", b.url),
        &[("traceparent", "00-nope-01")],
        "x",
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json()["detail"]
            .as_str()
            .unwrap()
            .contains("traceparent"),
        "{:?}",
        bad.body
    );

    let r = call(
        Method::POST,
        &format!("{}/v1/queues/q/messages", b.url),
        &[
            ("traceparent", TRACEPARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        "traced",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    eventually("a first attempt", || !seen.lock().unwrap().is_empty()).await;
    b.kill9();
    let b = serving(dir.path(), &[]);
    eventually("delivered after the restart", || {
        seen.lock().unwrap().len() >= 3
    })
    .await;
    for (traceparent, ce, state) in seen.lock().unwrap().iter() {
        assert_eq!(traceparent, TRACEPARENT);
        assert_eq!(ce, TRACEPARENT);
        assert_eq!(state, "congo=t61rcWkgMzE");
    }
    let m = call(
        Method::GET,
        &format!("{}/v1/queues/q/messages/{id}", b.url),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(m["traceparent"], TRACEPARENT);
    assert_eq!(m["tracestate"], "congo=t61rcWkgMzE");
    assert!(b.terminate().success());
}
