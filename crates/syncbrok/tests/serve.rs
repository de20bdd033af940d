//! Black-box tests of `syncbrok serve`: the real binary on port 0 with a temporary data
//! directory, driven over HTTP, delivering to real subscriber servers on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, Reply, call, cli, closed_port, eventually, serving, sink};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A request that must fail: method, URL, headers, body, expected status.
type ErrorCase<'a> = (Method, String, Vec<(&'a str, &'a str)>, Bytes, StatusCode);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_api_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &["--max-body", "1024"]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (sink_url, got) = sink().await;

    // Queues: created, then updated with merged settings.
    let r = call(
        Method::PUT,
        &u("/v1/queues/orders"),
        &[],
        r#"{"retention": {"delivered": "1h"}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(
        Method::PUT,
        &u("/v1/queues/orders"),
        &[],
        r#"{"retry": {"max_attempts": 3}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let q = r.json();
    assert_eq!(q["settings"]["retry"]["max_attempts"], 3);
    assert_eq!(q["settings"]["retention"]["delivered"], "1h");
    assert_eq!(q["counts"]["ready"], 0);

    // Subscribers: the same endpoint twice is the same subscriber.
    let body = json!({"endpoint": sink_url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
        .to_string();
    let r = call(
        Method::POST,
        &u("/v1/queues/orders/subscribers"),
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sub = r.json();
    assert_eq!(sub["has_secret"], true);
    assert!(sub.get("secret").is_none(), "secrets are never shown");
    let r = call(Method::POST, &u("/v1/queues/orders/subscribers"), &[], body).await;
    assert_eq!(
        (r.status, r.json()["id"].clone()),
        (StatusCode::OK, sub["id"].clone())
    );

    // Parented publish.
    let r = call(
        Method::POST,
        &u("/v1/queues/orders/messages"),
        &[("content-type", "application/json")],
        r#"{"step":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let parent = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["parent"], Value::Null);
    let r = call(
        Method::POST,
        &u("/v1/queues/orders/messages"),
        &[("syncbrok-parent", &parent)],
        r#"{"step":2}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let child = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["parent"], parent.as_str());
    eventually("both delivered", || got.lock().unwrap().len() == 2).await;
    let order: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(order, vec![parent.clone(), child.clone()]);
    let m = call(
        Method::GET,
        &u(&format!("/v1/queues/orders/messages/{child}")),
        &[],
        "",
    )
    .await;
    assert_eq!(m.status, StatusCode::OK);
    let m = m.json();
    assert_eq!(m["parent"], parent.as_str());
    assert_eq!(m["size"], 10);
    assert!(m["published_at"].as_str().unwrap().ends_with('Z'));
    let p = call(
        Method::GET,
        &u(&format!("/v1/queues/orders/messages/{parent}")),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(p["children"], json!([child]));
    assert_eq!(p["content_type"], "application/json");
    let body = call(
        Method::GET,
        &u(&format!("/v1/queues/orders/messages/{parent}/body")),
        &[],
        "",
    )
    .await;
    assert_eq!(body.body, r#"{"step":1}"#);
    assert_eq!(body.headers["content-type"], "application/json");

    // Errors, as problem+json with the right status.
    let cases: Vec<ErrorCase> = vec![
        (
            Method::POST,
            u("/v1/queues/nope/messages"),
            vec![],
            Bytes::from("x"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            u("/v1/queues/orders/messages"),
            vec![("syncbrok-parent", "abc")],
            Bytes::from("x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            u("/v1/queues/orders/messages"),
            vec![("syncbrok-parent", "01a211f8-afb9-7000-8000-080000000000")],
            Bytes::from("x"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            u("/v1/queues/orders/messages"),
            vec![],
            Bytes::from(vec![b'x'; 1025]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PUT,
            u("/v1/queues/bad%20name"),
            vec![],
            Bytes::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            u("/v1/queues/orders"),
            vec![],
            Bytes::from("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            u("/v1/queues/orders"),
            vec![],
            Bytes::from(r#"{"delivery_timeout": "1h"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            u("/v1/queues/orders/subscribers"),
            vec![],
            Bytes::from(r#"{"endpoint": "ftp://x"}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            u("/v1/queues/orders/subscribers"),
            vec![],
            Bytes::from(json!({"endpoint": sink_url, "secret": "nope"}).to_string()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            u("/v1/queues/orders/messages?limit=1001"),
            vec![],
            Bytes::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            u("/v1/nothing"),
            vec![],
            Bytes::new(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, url, headers, body, want) in cases {
        let r = call(method.clone(), &url, &headers, body).await;
        assert_eq!(r.status, want, "{method} {url}: {:?}", r.body);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{url}"
        );
        assert_eq!(r.json()["status"], want.as_u16());
    }
    // Just under the body limit is fine.
    let r = call(
        Method::POST,
        &u("/v1/queues/orders/messages"),
        &[],
        vec![b'x'; 1024],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // Idempotency keys.
    let key = [("idempotency-key", "order-42")];
    let first = call(Method::POST, &u("/v1/queues/orders/messages"), &key, "a").await;
    let again = call(Method::POST, &u("/v1/queues/orders/messages"), &key, "a").await;
    assert_eq!(
        (first.status, again.status),
        (StatusCode::CREATED, StatusCode::OK)
    );
    assert_eq!(first.json()["id"], again.json()["id"]);
    let other = call(Method::POST, &u("/v1/queues/orders/messages"), &key, "b").await;
    assert_eq!(other.status, StatusCode::CONFLICT);

    // Limits: 429 with Retry-After, nothing accepted is dropped.
    call(
        Method::PUT,
        &u("/v1/queues/full"),
        &[],
        r#"{"limits": {"max_messages": 1}}"#,
    )
    .await;
    call(
        Method::POST,
        &u("/v1/queues/full/subscribers"),
        &[],
        json!({"endpoint": closed_port()}).to_string(),
    )
    .await;
    assert_eq!(
        call(Method::POST, &u("/v1/queues/full/messages"), &[], "1")
            .await
            .status,
        StatusCode::CREATED
    );
    let r = call(Method::POST, &u("/v1/queues/full/messages"), &[], "2").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "1");

    // Dead letters and redrive.
    call(
        Method::PUT,
        &u("/v1/queues/dl"),
        &[],
        r#"{"retry": {"max_attempts": 1}}"#,
    )
    .await;
    call(
        Method::POST,
        &u("/v1/queues/dl/subscribers"),
        &[],
        json!({"endpoint": closed_port()}).to_string(),
    )
    .await;
    let dead = call(Method::POST, &u("/v1/queues/dl/messages"), &[], "x")
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dl_url = u("/v1/queues/dl/dead-letters");
    let mut letters = Value::Null;
    for _ in 0..500 {
        letters = call(Method::GET, &dl_url, &[], "").await.json();
        if letters["dead_letters"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(letters["dead_letters"][0]["id"], dead.as_str());
    assert_eq!(letters["dead_letters"][0]["reason"], "max_attempts");
    assert_eq!(letters["dead_letters"][0]["attempts"], 1);
    assert_eq!(letters["next"], Value::Null);
    let r = call(
        Method::POST,
        &u(&format!("/v1/queues/dl/messages/{dead}/redrive")),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["redriven"].clone()),
        (StatusCode::ACCEPTED, json!(1))
    );

    // Discard, then gone.
    let r = call(
        Method::DELETE,
        &u(&format!("/v1/queues/dl/messages/{dead}")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(
        Method::GET,
        &u(&format!("/v1/queues/dl/messages/{dead}")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Listing, paging.
    let page = call(
        Method::GET,
        &u("/v1/queues/orders/messages?limit=1"),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap().to_owned();
    let page2 = call(
        Method::GET,
        &u(&format!("/v1/queues/orders/messages?limit=1&after={next}")),
        &[],
        "",
    )
    .await
    .json();
    assert_ne!(page2["messages"][0]["id"], page["messages"][0]["id"]);
    let all = call(Method::GET, &u("/v1/queues"), &[], "").await.json();
    assert_eq!(all["queues"].as_array().unwrap().len(), 3);

    // A graceful stop exits 0; a restart finds everything.
    assert!(b.terminate().success());
    let b = serving(dir.path(), &[]);
    let r = call(
        Method::GET,
        &format!("{}/v1/queues/orders/messages/{parent}", b.url),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["state"], "delivered");
    let r = call(
        Method::DELETE,
        &format!("{}/v1/queues/full", b.url),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_restart_delivers_what_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let down = closed_port();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    call(Method::PUT, &u("/v1/queues/q"), &[], "").await;
    call(
        Method::POST,
        &u("/v1/queues/q/subscribers"),
        &[],
        json!({"endpoint": down}).to_string(),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = call(
            Method::POST,
            &u("/v1/queues/q/messages"),
            &[],
            format!("m{i}"),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    b.kill9();

    // Back up, with the subscriber now pointing at a live sink.
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (sink_url, got) = sink().await;
    let subs = call(Method::GET, &u("/v1/queues/q/subscribers"), &[], "")
        .await
        .json();
    let old = subs["subscribers"][0]["id"].as_u64().unwrap();
    call(
        Method::POST,
        &u("/v1/queues/q/subscribers"),
        &[],
        json!({"endpoint": sink_url}).to_string(),
    )
    .await;
    // The new subscriber only gets new messages; the old ones are owed to the old subscriber
    // (still down), and the restarted broker is at it again.
    let r = call(
        Method::GET,
        &u(&format!("/v1/queues/q/messages/{}", ids[0])),
        &[],
        "",
    )
    .await;
    let state = r.json()["state"].as_str().unwrap().to_owned();
    assert!(state == "ready" || state == "delivering", "{state}");
    assert_eq!(r.json()["deliveries"].as_array().unwrap().len(), 1);
    let r = call(
        Method::DELETE,
        &u(&format!("/v1/queues/q/subscribers/{old}")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // With its only subscriber gone, every accepted message is delivered (to no one).
    for id in &ids {
        let r = call(
            Method::GET,
            &u(&format!("/v1/queues/q/messages/{id}")),
            &[],
            "",
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{id} should be finished and removed"
        );
    }
    let r = call(Method::POST, &u("/v1/queues/q/messages"), &[], "after").await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    eventually("the new message arrives", || {
        got.lock().unwrap().iter().any(|(m, _)| *m == id)
    })
    .await;
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_prints_what_it_receives_in_parent_order() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut sink = Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args(["sink", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let lines = lines.clone();
        let out = sink.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
    }
    eventually("the sink is up", || !lines.lock().unwrap().is_empty()).await;
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    call(Method::PUT, &u("/v1/queues/orders"), &[], "").await;
    let sub = json!({"endpoint": format!("http://127.0.0.1:{port}/")}).to_string();
    call(Method::POST, &u("/v1/queues/orders/subscribers"), &[], sub).await;
    let p = call(
        Method::POST,
        &u("/v1/queues/orders/messages"),
        &[],
        "created",
    )
    .await
    .json();
    let parent = p["id"].as_str().unwrap().to_owned();
    call(
        Method::POST,
        &u("/v1/queues/orders/messages"),
        &[("syncbrok-parent", &parent)],
        "paid",
    )
    .await;
    eventually("both printed", || lines.lock().unwrap().len() >= 3).await;
    let printed = lines.lock().unwrap().clone();
    assert!(
        printed[1].contains(&format!("id={parent} parent=- attempt=1 body=created")),
        "{printed:?}"
    );
    assert!(
        printed[2].contains(&format!("parent={parent}")) && printed[2].ends_with("body=paid"),
        "{printed:?}"
    );

    // A subscriber that takes batches: the API shows its setting and checks its bounds; the
    // sink prints each message of a batch and acknowledges them all.
    call(Method::PUT, &u("/v1/queues/audit"), &[], "").await;
    let subs = u("/v1/queues/audit/subscribers");
    let endpoint = format!("http://127.0.0.1:{port}/batched");
    for (batch, status) in [
        (json!({"max_messages": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"max_messages": 1001}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"max_bytes": 16 * 1024 * 1024 + 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"max_messages": 5, "size": 3}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let sub = json!({"endpoint": endpoint, "batch": batch}).to_string();
        let r = call(Method::POST, &subs, &[], sub).await;
        assert_eq!(r.status, status, "{batch}: {:?}", r.body);
    }
    let legacy = json!({"endpoint": endpoint, "handler": "legacy", "batch": {"max_messages": 2}});
    let r = call(Method::POST, &subs, &[], legacy.to_string()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let sub = json!({"endpoint": endpoint, "batch": {"max_messages": 50}}).to_string();
    let r = call(Method::POST, &subs, &[], sub).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.json()["batch"],
        json!({"max_messages": 50, "max_bytes": 1024 * 1024})
    );
    let listed = call(Method::GET, &subs, &[], "").await.json();
    assert_eq!(listed["subscribers"][0]["batch"]["max_messages"], 50);
    // Its own headers: reserved names refused, values never shown back.
    let own = format!("http://127.0.0.1:{port}/own");
    let reserved = json!({"endpoint": own, "headers": {"Webhook-Id": "x"}}).to_string();
    let r = call(Method::POST, &subs, &[], reserved).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let with = json!({"endpoint": own, "headers": {"Authorization": "Bearer s3cret"}}).to_string();
    let r = call(Method::POST, &subs, &[], with).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.json()["headers"], json!(["authorization"]));
    let listed = call(Method::GET, &subs, &[], "").await;
    assert!(!String::from_utf8_lossy(&listed.body).contains("s3cret"));
    let mut ids = Vec::new();
    for body in ["one", "two", "three"] {
        let p = call(Method::POST, &u("/v1/queues/audit/messages"), &[], body).await;
        ids.push(p.json()["id"].as_str().unwrap().to_owned());
    }
    // Each is printed twice: for the batching subscriber and for the one with its own headers.
    let wanted: Vec<String> = ids
        .iter()
        .zip(["one", "two", "three"])
        .map(|(id, body)| format!("queue=audit id={id} parent=- attempt=1 body={body}"))
        .collect();
    eventually("the batched messages printed", || {
        let printed = lines.lock().unwrap();
        wanted
            .iter()
            .all(|w| printed.iter().filter(|l| *l == w).count() == 2)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let audit = call(Method::GET, &u("/v1/queues/audit"), &[], "")
            .await
            .json();
        let counts = &audit["counts"];
        if counts["ready"] == 0 && counts["delivering"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never acknowledged: {counts}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.terminate().success());
    sink.kill().unwrap();
    sink.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_publish_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (sink_url, got) = sink().await;
    call(Method::PUT, &u("/v1/queues/q"), &[], "").await;
    call(
        Method::POST,
        &u("/v1/queues/q/subscribers"),
        &[],
        json!({"endpoint": sink_url}).to_string(),
    )
    .await;
    let batch = json!({"messages": [
        {"body": "first", "content_type": "text/plain"},
        {"body_base64": "c2Vjb25k", "parent_index": 0},
        {"body": "third", "parent_index": 1, "idempotency_key": "k3"}
    ]});
    let r = call(
        Method::POST,
        &u("/v1/queues/q/messages/batch"),
        &[],
        batch.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let ids: Vec<String> = r.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    eventually("all three arrived", || got.lock().unwrap().len() == 3).await;
    let arrived: Vec<(String, Bytes)> = got.lock().unwrap().clone();
    assert_eq!(
        arrived.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert_eq!(arrived[1].1, "second");
    for (body, want) in [
        (json!({"messages": []}), StatusCode::BAD_REQUEST),
        (
            json!({"messages": [{"body": "x", "parent_index": 0}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"messages": [{"body_base64": "%%%"}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"messages": [{"body": "x", "body_base64": "eA=="}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"messages": [{"body": "x", "parent": "nope"}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"messages": (0..1001).map(|_| json!({"body": "x"})).collect::<Vec<_>>()}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            json!({"messages": [{"body": "x", "idempotency_key": "k3"}]}),
            StatusCode::CONFLICT,
        ),
    ] {
        let r = call(
            Method::POST,
            &u("/v1/queues/q/messages/batch"),
            &[],
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, want, "{body}: {:?}", r.body);
    }
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_brokers_api_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (sink_url, got) = sink().await;
    let text = |r: &Reply| String::from_utf8(r.body.to_vec()).unwrap();

    let r = call(Method::POST, &u("/queue"), &[("queue", "Simple")], "").await;
    assert_eq!(
        (r.status, text(&r)),
        (
            StatusCode::OK,
            "You posted new queue with name : Simple".to_owned()
        )
    );
    let r = call(Method::POST, &u("/queue"), &[("queue", "Simple")], "").await;
    assert_eq!(
        (r.status, text(&r)),
        (
            StatusCode::OK,
            "You posted new queue with name : Simple".to_owned()
        )
    );
    let r = call(
        Method::POST,
        &u("/subscrib"),
        &[("queue", "Simple"), ("endpoint", &sink_url)],
        "",
    )
    .await;
    assert_eq!(
        (r.status, text(&r)),
        (
            StatusCode::OK,
            "You posted new subscriber for queue  : Simple".to_owned()
        )
    );
    let r = call(Method::POST, &u("/msg"), &[("queue", "Simple")], "hello").await;
    assert_eq!(r.status, StatusCode::OK);
    let parent = text(&r);
    assert_eq!(parent.len(), 36, "{parent:?}");
    let r = call(
        Method::POST,
        &u("/msg"),
        &[("queue", "Simple"), ("ParentId", &parent)],
        "world",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let child = text(&r);
    eventually("both delivered", || got.lock().unwrap().len() == 2).await;
    let arrived = got.lock().unwrap().clone();
    assert_eq!(arrived[0].0, parent);
    assert_eq!(arrived[1].0, child);
    let v: Value = serde_json::from_slice(&arrived[0].1).unwrap();
    assert_eq!(v["content"], "aGVsbG8=");
    // Queue names are kept as written: the original lowercased them.
    let r = call(Method::GET, &u("/v1/queues/Simple"), &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["subscribers"][0]["handler"], "legacy");

    // Where the original dropped silently or crashed: a reason, nothing stored.
    let unknown = "01a211f8-afb9-7000-8000-080000000000";
    for (path, headers, want) in [
        ("/queue", vec![], StatusCode::BAD_REQUEST),
        ("/queue", vec![("queue", "")], StatusCode::BAD_REQUEST),
        (
            "/queue",
            vec![("queue", "bad/name")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/subscrib",
            vec![("queue", "nope"), ("endpoint", "http://127.0.0.1:1/")],
            StatusCode::NOT_FOUND,
        ),
        (
            "/subscrib",
            vec![("queue", "Simple")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/subscrib",
            vec![("queue", "Simple"), ("endpoint", "not a url")],
            StatusCode::BAD_REQUEST,
        ),
        ("/msg", vec![], StatusCode::BAD_REQUEST),
        ("/msg", vec![("queue", "nope")], StatusCode::NOT_FOUND),
        (
            "/msg",
            vec![("queue", "Simple"), ("ParentId", "12")],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/msg",
            vec![("queue", "Simple"), ("ParentId", unknown)],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let r = call(Method::POST, &u(path), &headers, "x").await;
        assert_eq!(r.status, want, "{path} {headers:?}: {:?}", r.body);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        if want == StatusCode::UNPROCESSABLE_ENTITY {
            assert!(text(&r).contains(unknown), "names the unknown id");
        }
    }
    let q = call(Method::GET, &u("/v1/queues/Simple"), &[], "")
        .await
        .json();
    assert_eq!(q["subscribers"].as_array().unwrap().len(), 1);
    assert_eq!(
        q["counts"]["ready"].as_u64().unwrap() + q["counts"]["delivering"].as_u64().unwrap(),
        0
    );
    assert!(b.terminate().success());
}

/// Starts the broker with `cwd` as working directory and no `--data` (the file decides).
fn start_in(cwd: &std::path::Path) -> Broker {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncbrok"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .stderr(Stdio::null());
    common::start(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_config_file_loads_unchanged_and_bootstrap_is_idempotent() {
    let cwd = tempfile::tempdir().unwrap();
    let (sink_url, got) = sink().await;
    std::fs::write(
        cwd.path().join("config.yml"),
        format!("Storage:\n  path: \"./broker-data/\"\nQueues:\n  simple:\n    urls:\n      - \"{sink_url}\"\n"),
    )
    .unwrap();
    let b = start_in(cwd.path());
    assert!(
        cwd.path().join("broker-data").is_dir(),
        "Storage.path is the data directory"
    );
    let r = call(
        Method::POST,
        &format!("{}/msg", b.url),
        &[("queue", "simple")],
        "hi",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    eventually("delivered to the legacy subscriber", || {
        got.lock().unwrap().len() == 1
    })
    .await;
    assert!(b.terminate().success());

    // Same file again: nothing changes.
    let b = start_in(cwd.path());
    let q = call(Method::GET, &format!("{}/v1/queues/simple", b.url), &[], "")
        .await
        .json();
    assert_eq!(q["subscribers"].as_array().unwrap().len(), 1);
    assert_eq!(q["subscribers"][0]["handler"], "legacy");
    assert!(b.terminate().success());

    // A bad file stops the start, naming file, line and column.
    std::fs::write(
        cwd.path().join("syncbrok.yml"),
        "queues:\n  orders:\n    retry: {max_attempts: lots}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("syncbrok.yml:3:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_with_roles_and_the_endpoint_allow_list() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("syncbrok.yml"),
        r#"
# The --listen flag given by start_in wins over this (flags > environment > file).
listen: "127.0.0.1:9"
auth:
  tokens:
    - {token: admin-token-0123456789, role: admin}
    - {token: publish-token-0123456789, role: publish}
    - {token: read-token-0123456789, role: read}
endpoints:
  allow: ["127.0.0.1"]
"#,
    )
    .unwrap();
    let b = start_in(cwd.path());
    let u = |path: &str| format!("{}{path}", b.url);
    let bearer = |t: &str| format!("Bearer {t}-token-0123456789");
    let (admin, publish, read) = (bearer("admin"), bearer("publish"), bearer("read"));
    let auth = |v: &str| vec![("authorization", v.to_owned())];
    async fn call_as(method: Method, url: &str, headers: Vec<(&str, String)>, body: &str) -> Reply {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        call(method, url, &h, body.to_owned()).await
    }

    assert!(!b.url.ends_with(":9"), "the flag won over the file");
    for (path, want) in [
        ("/healthz", StatusCode::OK),
        ("/readyz", StatusCode::OK),
        ("/openapi.json", StatusCode::OK),
        ("/metrics", StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(
            call(Method::GET, &u(path), &[], "").await.status,
            want,
            "{path}"
        );
    }
    let r = call_as(Method::GET, &u("/metrics"), auth(&publish), "").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "any valid token reads the metrics"
    );
    let r = call(Method::GET, &u("/v1/queues"), &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let r = call_as(
        Method::GET,
        &u("/v1/queues"),
        vec![("authorization", "Bearer nope-nope-nope-nope".into())],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Each role against each kind of call, in order (the queue is created first).
    let batch = r#"{"messages": [{"body": "x"}]}"#;
    for (method, path, token, body, want) in [
        (Method::PUT, "/v1/queues/q", &admin, "", StatusCode::CREATED),
        (
            Method::PUT,
            "/v1/queues/q",
            &read,
            "",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::PUT,
            "/v1/queues/q",
            &publish,
            "",
            StatusCode::FORBIDDEN,
        ),
        (Method::GET, "/v1/queues/q", &read, "", StatusCode::OK),
        (
            Method::GET,
            "/v1/queues/q",
            &publish,
            "",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/v1/queues/q/messages",
            &publish,
            "x",
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/v1/queues/q/messages",
            &read,
            "x",
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/v1/queues/q/messages/batch",
            &publish,
            batch,
            StatusCode::CREATED,
        ),
    ] {
        let r = call_as(method.clone(), &u(path), auth(token), body).await;
        assert_eq!(r.status, want, "{method} {path} as {token}");
    }

    // The original broker's API: /msg takes publish, /queue and /subscrib admin.
    let mut h = auth(&publish);
    h.push(("queue", "q".into()));
    assert_eq!(
        call_as(Method::POST, &u("/msg"), h.clone(), "x")
            .await
            .status,
        StatusCode::OK
    );
    let r = call_as(Method::POST, &u("/queue"), h, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    // Subscribers may point only at allowed hosts.
    let sub = |endpoint: &str| json!({"endpoint": endpoint}).to_string();
    let r = call_as(
        Method::POST,
        &u("/v1/queues/q/subscribers"),
        auth(&admin),
        &sub("http://10.9.9.9:9/"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let r = call_as(
        Method::POST,
        &u("/v1/queues/q/subscribers"),
        auth(&admin),
        &sub("http://127.0.0.1:9/"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Tokens never come back.
    let all = call_as(Method::GET, &u("/v1/queues"), auth(&admin), "").await;
    assert!(!String::from_utf8_lossy(&all.body).contains("token-0123456789"));
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (sink_url, got) = sink().await;
    call(Method::PUT, &u("/v1/queues/m"), &[], "").await;
    call(
        Method::POST,
        &u("/v1/queues/m/subscribers"),
        &[],
        json!({"endpoint": sink_url}).to_string(),
    )
    .await;
    for _ in 0..3 {
        call(Method::POST, &u("/v1/queues/m/messages"), &[], "x").await;
    }
    eventually("delivered", || got.lock().unwrap().len() == 3).await;
    let mut text = String::new();
    for _ in 0..200 {
        let r = call(Method::GET, &u("/metrics"), &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        text = String::from_utf8(r.body.to_vec()).unwrap();
        if text.contains("syncbrok_deliveries_acked_total 3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for line in [
        "syncbrok_messages_published_total 3",
        "syncbrok_deliveries_acked_total 3",
        "syncbrok_queue_messages{queue=\"m\",state=\"ready\"} 0",
        "syncbrok_queue_subscribers{queue=\"m\"} 1",
        "# TYPE syncbrok_log_fsyncs_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(b.terminate().success());
}

/// Runs a client command of the binary against `url`, with `stdin` as standard input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let b = serving(
        &data,
        &[
            "--tls-cert",
            dir.path().join("cert.pem").to_str().unwrap(),
            "--tls-key",
            dir.path().join("key.pem").to_str().unwrap(),
        ],
    );
    assert!(b.url.starts_with("https://"), "{}", b.url);
    let port = b.url.rsplit(':').next().unwrap().to_owned();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("https://localhost:{port}/v1/queues/secure"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client.request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Plain HTTP to the TLS port gets nowhere.
    let plain = call_plain_fails(&format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain, "plain HTTP was answered on the TLS port");

    // The CLI over https: refused without trusting the certificate, fine with --cacert or
    // --insecure.
    let url = format!("https://localhost:{port}");
    let cacert = dir.path().join("cert.pem");
    let cacert = cacert.to_str().unwrap().to_owned();
    let (ok, _, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || cli(&url, &["queue", "list"], "")
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("certificate"), "{err}");
    for extra in [vec!["--cacert", cacert.as_str()], vec!["--insecure"]] {
        let url = url.clone();
        let args: Vec<String> = extra
            .iter()
            .map(|s| s.to_string())
            .chain(["queue".into(), "list".into()])
            .collect();
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&url, &args, "")
        })
        .await
        .unwrap();
        assert!(ok, "{extra:?}: {err}");
        assert!(out.contains("\"secure\""), "{out}");
    }
    assert!(b.terminate().success());
}

/// A broker that takes the connection and never answers: `--timeout` ends the wait, with a
/// message that names it.
async fn call_plain_fails(url: &str) -> bool {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = Request::builder()
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(r)) => r.status() != StatusCode::OK,
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_v1_call() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let r = call(Method::GET, &format!("{}/openapi.json", b.url), &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/v1/queues", "get"),
        ("/v1/queues/{queue}", "put"),
        ("/v1/queues/{queue}", "get"),
        ("/v1/queues/{queue}", "delete"),
        ("/v1/queues/{queue}/subscribers", "post"),
        ("/v1/queues/{queue}/subscribers", "get"),
        ("/v1/queues/{queue}/subscribers/{id}", "get"),
        ("/v1/queues/{queue}/subscribers/{id}", "patch"),
        ("/v1/queues/{queue}/subscribers/{id}", "delete"),
        ("/v1/queues/{queue}/subscribers/{id}/pause", "post"),
        ("/v1/queues/{queue}/subscribers/{id}/resume", "post"),
        ("/v1/queues/{queue}/subscribers/{id}/secret", "post"),
        ("/v1/queues/{queue}/messages", "post"),
        ("/v1/queues/{queue}/messages", "get"),
        ("/v1/queues/{queue}/messages/batch", "post"),
        ("/v1/queues/{queue}/messages/{id}", "get"),
        ("/v1/queues/{queue}/messages/{id}", "delete"),
        ("/v1/queues/{queue}/messages/{id}/body", "get"),
        ("/v1/queues/{queue}/messages/{id}/redrive", "post"),
        ("/v1/queues/{queue}/dead-letters", "get"),
        ("/v1/queues/{queue}/dead-letters/redrive", "post"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    // The resources carry the field names of docs/api.md ("Shapes").
    let message = &doc["components"]["schemas"]["Message"]["properties"];
    for field in [
        "id",
        "queue",
        "parent",
        "children",
        "state",
        "content_type",
        "size",
        "published_at",
        "deliveries",
    ] {
        assert!(message[field].is_object(), "Message.{field}");
    }
    let delivery = &doc["components"]["schemas"]["Delivery"]["properties"];
    for field in [
        "subscriber",
        "endpoint",
        "state",
        "attempts",
        "last_error",
        "next_attempt_at",
        "acked_at",
    ] {
        assert!(delivery[field].is_object(), "Delivery.{field}");
    }
    assert!(b.terminate().success());
}

/// One byte flipped inside an acknowledged message that later (synced) records follow: the
/// start stops, naming the file and offset and `--repair`; `serve --repair` then drops only that
/// record, says which message it was, and keeps every other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_stops_the_start_and_repair_keeps_every_intact_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = serving(dir.path(), &[]);
    let base = broker.url.clone();
    call(Method::PUT, &format!("{base}/v1/queues/q"), &[], "").await;
    let sub = json!({"endpoint": closed_port()}).to_string();
    call(
        Method::POST,
        &format!("{base}/v1/queues/q/subscribers"),
        &[],
        sub,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = call(
            Method::POST,
            &format!("{base}/v1/queues/q/messages"),
            &[],
            format!("message number {i:03} of the repair test"),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    broker.kill9();

    let segment = dir.path().join("0000000001.log");
    let mut content = std::fs::read(&segment).unwrap();
    let marker = b"message number 020 of";
    let at = content
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    content[at + 3] ^= 0x20;
    std::fs::write(&segment, content).unwrap();

    let refused = Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started on a corrupted log");
    assert!(
        stderr.contains("corrupted at byte") && stderr.contains("--repair"),
        "{stderr}"
    );

    let repaired = common::spawn(dir.path(), &["--repair".as_ref()], Stdio::piped());
    let url = repaired.url.clone();
    let q = call(Method::GET, &format!("{url}/v1/queues/q"), &[], "").await;
    let counts = &q.json()["counts"];
    let held: u64 = ["waiting", "ready", "delivering"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap())
        .sum();
    assert_eq!(held, 49, "every intact message kept: {counts}");
    let lost = call(
        Method::GET,
        &format!("{url}/v1/queues/q/messages/{}", ids[20]),
        &[],
        "",
    )
    .await;
    assert_eq!(lost.status, StatusCode::NOT_FOUND);
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != 20) {
        let m = call(
            Method::GET,
            &format!("{url}/v1/queues/q/messages/{id}"),
            &[],
            "",
        )
        .await;
        assert_eq!(m.status, StatusCode::OK, "message {i}");
    }
    let stderr = repaired.kill9();
    assert!(
        stderr.contains("repair:") && stderr.contains(&ids[20]),
        "the repair report names the message lost: {stderr}"
    );
}
