//! Subscriber controls through the real binary: rate limits, pause and resume, secret rotation
//! and `disable_after` over the v1 API and the command line, their errors at each edge, and
//! what a restart keeps.

mod common;

use std::time::Duration;

use common::{call, cli, cli_code, eventually, serving, sink};
use http::{Method, StatusCode};
use serde_json::json;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2Vjb25kIHNlY3JldCwgYWZ0ZXIgcm90YXRpb24=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_controls_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (sink_url, got) = sink().await;
    assert_eq!(
        call(Method::PUT, &u("/v1/queues/c"), &[], "").await.status,
        StatusCode::CREATED
    );
    let subs = u("/v1/queues/c/subscribers");
    // A rate limit at its edges.
    for (limit, status) in [
        (json!({"per_second": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"per_second": 100_001}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"per_second": 5, "burst": 9}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let body = json!({"endpoint": sink_url, "rate_limit": limit}).to_string();
        let r = call(Method::POST, &subs, &[], body).await;
        assert_eq!(r.status, status, "{limit}: {}", r.json());
    }
    let body =
        json!({"endpoint": sink_url, "secret": SECRET, "rate_limit": {"per_second": 100_000}});
    let r = call(Method::POST, &subs, &[], body.to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let s = r.json();
    assert_eq!(s["state"], "active");
    assert_eq!(s["rate_limit"]["per_second"], 100_000);
    assert_eq!(s["health"]["in_flight"], 0);
    assert!(s["previous_secret_until"].is_null());
    let id = s["id"].as_u64().unwrap();
    let one = u(&format!("/v1/queues/c/subscribers/{id}"));
    // Read one; change its rate limit; a patch of nothing changes nothing.
    assert_eq!(call(Method::GET, &one, &[], "").await.json()["id"], id);
    for (path, status) in [
        ("/v1/queues/c/subscribers/999", StatusCode::NOT_FOUND),
        ("/v1/queues/c/subscribers/x", StatusCode::BAD_REQUEST),
        ("/v1/queues/nope/subscribers/1", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(
            call(Method::GET, &u(path), &[], "").await.status,
            status,
            "{path}"
        );
    }
    let patched = call(
        Method::PATCH,
        &one,
        &[],
        r#"{"rate_limit": {"per_second": 9}}"#,
    )
    .await;
    assert_eq!(patched.json()["rate_limit"]["per_second"], 9);
    let patched = call(Method::PATCH, &one, &[], "{}").await;
    assert_eq!(patched.json()["rate_limit"]["per_second"], 9);
    let patched = call(Method::PATCH, &one, &[], r#"{"rate_limit": null}"#).await;
    assert_eq!(patched.status, StatusCode::OK);
    assert!(patched.json()["rate_limit"].is_null());
    for (body, status) in [
        (r#"{"colour": 1}"#, StatusCode::BAD_REQUEST),
        (
            r#"{"rate_limit": {"per_second": 0}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        assert_eq!(
            call(Method::PATCH, &one, &[], body).await.status,
            status,
            "{body}"
        );
    }

    // Paused: nothing is sent, nothing is given up on; the explanation says why.
    let paused = call(Method::POST, &format!("{one}/pause"), &[], "").await;
    assert_eq!(paused.status, StatusCode::OK);
    assert_eq!(paused.json()["state"], "paused");
    let m = call(Method::POST, &u("/v1/queues/c/messages"), &[], "held").await;
    let mid = m.json()["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(got.lock().unwrap().is_empty());
    let why = call(
        Method::GET,
        &u(&format!("/v1/queues/c/messages/{mid}/explain")),
        &[],
        "",
    )
    .await;
    assert_eq!(why.json()["verdict"], "subscriber_paused", "{}", why.json());
    assert_eq!(why.json()["subscribers"][0]["state"], "paused");
    let metrics = call(Method::GET, &u("/metrics"), &[], "").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(
        text.contains("syncbrok_queue_subscribers_by_state{queue=\"c\",state=\"paused\"} 1"),
        "{text}"
    );

    // Kept over a restart, then resumed: the message goes.
    assert!(b.terminate().success());
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let one = u(&format!("/v1/queues/c/subscribers/{id}"));
    assert_eq!(
        call(Method::GET, &one, &[], "").await.json()["state"],
        "paused"
    );
    let resumed = call(Method::POST, &format!("{one}/resume"), &[], "").await;
    assert_eq!(resumed.json()["state"], "active");
    eventually("the held message arrived", || {
        got.lock().unwrap().len() == 1
    })
    .await;

    // Secret rotation and its errors.
    let secret = format!("{one}/secret");
    for (body, status) in [
        (json!({"grace": "1h"}), StatusCode::BAD_REQUEST),
        (json!({"secret": "nope"}), StatusCode::BAD_REQUEST),
        (
            json!({"secret": NEW_SECRET, "grace": "soon"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"secret": NEW_SECRET, "grace": "31d"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"secret": SECRET}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = call(Method::POST, &secret, &[], body.to_string()).await;
        assert_eq!(r.status, status, "{body}: {}", r.json());
    }
    let r = call(
        Method::POST,
        &secret,
        &[],
        json!({"secret": NEW_SECRET}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["previous_secret_until"].is_string());
    assert!(!r.body.windows(5).any(|w| w == b"whsec"), "no secret shown");
    let missing = u("/v1/queues/c/subscribers/999/pause");
    assert_eq!(
        call(Method::POST, &missing, &[], "").await.status,
        StatusCode::NOT_FOUND
    );

    // `disable_after` is a queue setting, bounded.
    let q = call(
        Method::PUT,
        &u("/v1/queues/c"),
        &[],
        r#"{"disable_after": "0s"}"#,
    )
    .await;
    assert_eq!(q.json()["settings"]["disable_after"], "0ms");
    let q = call(
        Method::PUT,
        &u("/v1/queues/c"),
        &[],
        r#"{"disable_after": "366d"}"#,
    )
    .await;
    assert_eq!(q.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_controls_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let (sink_url, _) = sink().await;
    assert!(cli(&b.url, &["queue", "create", "c"], "").0);
    let (ok, out, err) = cli(
        &b.url,
        &[
            "subscribe",
            "c",
            &sink_url,
            "--rate-limit",
            "50",
            "--secret",
            SECRET,
        ],
        "",
    );
    assert!(ok, "{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_u64()
        .unwrap()
        .to_string();
    let run = |args: &[&str]| {
        let (ok, out, err) = cli(&b.url, args, "");
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(run(&["subscribers", "pause", "c", &id])["state"], "paused");
    assert_eq!(run(&["subscribers", "resume", "c", &id])["state"], "active");
    let limited = run(&["subscribers", "rate-limit", "c", &id, "7"]);
    assert_eq!(limited["rate_limit"]["per_second"], 7);
    let unlimited = run(&["subscribers", "rate-limit", "c", &id, "none"]);
    assert!(unlimited["rate_limit"].is_null());
    let rotated = run(&[
        "subscribers",
        "rotate-secret",
        "c",
        &id,
        "--secret",
        NEW_SECRET,
        "--grace",
        "2h",
    ]);
    assert!(rotated["previous_secret_until"].is_string());
    assert_eq!(
        run(&["subscribers", "show", "c", &id])["id"].to_string(),
        id
    );
    // Errors keep their exit codes: refused (4), not found (3).
    let (code, _, err) = cli_code(&b.url, &["subscribers", "rate-limit", "c", &id, "0"], "");
    assert_eq!(code, 4, "{err}");
    let (code, _, _) = cli_code(&b.url, &["subscribers", "pause", "c", "999"], "");
    assert_eq!(code, 3);
    assert!(b.terminate().success());
}

/// A subscriber's rate limit and types follow the configuration file across restarts, as its
/// queue's `disable_after` does; its other settings stay as they were first made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_file_sets_rate_limits_and_disable_after() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("syncbrok.yml");
    let config = |limit: &str| {
        format!(
            "queues:\n  c:\n    disable_after: 1h\n    subscribers:\n      - endpoint: \"http://127.0.0.1:9/hook\"\n{limit}"
        )
    };
    let shown = |limit: &str| {
        std::fs::write(&file, config(limit)).unwrap();
        let b = serving(
            &dir.path().join("data"),
            &["--config", file.to_str().unwrap()],
        );
        let url = b.url.clone();
        (b, url)
    };
    for (limit, want) in [
        (
            "        rate_limit: {per_second: 5}\n",
            json!({"per_second": 5}),
        ),
        (
            "        rate_limit: {per_second: 9}\n        types: [\"order.*\"]\n",
            json!({"per_second": 9}),
        ),
        ("", serde_json::Value::Null),
    ] {
        let (b, url) = shown(limit);
        let q = call(Method::GET, &format!("{url}/v1/queues/c"), &[], "")
            .await
            .json();
        assert_eq!(q["settings"]["disable_after"], "1h");
        assert_eq!(q["subscribers"].as_array().unwrap().len(), 1);
        let types = q["subscribers"][0]["types"].clone();
        assert_eq!(
            types.is_null(),
            !limit.contains("types"),
            "{limit}: {types}"
        );
        assert_eq!(q["subscribers"][0]["rate_limit"], want, "{limit}");
        assert!(b.terminate().success());
    }
    // Out of bounds: the start stops, naming the file.
    std::fs::write(&file, config("        rate_limit: {per_second: 0}\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ])
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rate_limit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_and_filters_over_the_api_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (orders_url, orders) = sink().await;
    let (all_url, all) = sink().await;
    call(Method::PUT, &u("/v1/queues/t"), &[], "").await;
    let subs = u("/v1/queues/t/subscribers");
    for (types, status) in [
        (json!([]), StatusCode::BAD_REQUEST),
        (json!(["order created"]), StatusCode::BAD_REQUEST),
        (json!(["a*b"]), StatusCode::BAD_REQUEST),
        (json!("order.*"), StatusCode::BAD_REQUEST),
    ] {
        let body = json!({"endpoint": orders_url, "types": types}).to_string();
        let r = call(Method::POST, &subs, &[], body).await;
        assert_eq!(r.status, status, "{types}: {}", r.json());
    }
    let body = json!({"endpoint": orders_url, "types": ["order.*", "payment.settled"]});
    let r = call(Method::POST, &subs, &[], body.to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["types"], json!(["order.*", "payment.settled"]));
    let (ok, _, err) = cli(&b.url, &["subscribe", "t", &all_url], "");
    assert!(ok, "{err}");

    let publish = |t: Option<&'static str>, body: &'static str| {
        let url = u("/v1/queues/t/messages");
        async move {
            let headers: Vec<(&str, &str)> = t.map(|t| ("syncbrok-type", t)).into_iter().collect();
            call(Method::POST, &url, &headers, body).await
        }
    };
    let created = publish(Some("order.created"), "o1").await;
    assert_eq!(created.status, StatusCode::CREATED);
    publish(Some("audit.logged"), "a1").await;
    publish(None, "plain").await;
    for bad in ["order created", "", "caf\u{e9}"] {
        let r = call(
            Method::POST,
            &u("/v1/queues/t/messages"),
            &[("syncbrok-type", bad)],
            "x",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    // A batch entry's "type"; the CLI's --type.
    let batch = json!({"messages": [{"body": "p1", "type": "payment.settled"}, {"body": "p2", "type": "payment.failed"}]});
    let r = call(
        Method::POST,
        &u("/v1/queues/t/messages/batch"),
        &[],
        batch.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let (ok, _, err) = cli(&b.url, &["publish", "t", "--type", "order.paid"], "o2");
    assert!(ok, "{err}");
    eventually("the unfiltered subscriber has all six", || {
        all.lock().unwrap().len() == 6
    })
    .await;
    eventually("the orders subscriber has its three", || {
        orders.lock().unwrap().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got: Vec<String> = orders
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| String::from_utf8(body.to_vec()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["o1", "o2", "p1"]);
    // The type is shown on the message.
    call(
        Method::PUT,
        &u("/v1/queues/t"),
        &[],
        r#"{"retention": {"delivered": "1h"}}"#,
    )
    .await;
    for (t, shown_as) in [
        (Some("order.shipped"), "order.shipped"),
        (None, "syncbrok.message"),
    ] {
        let m = publish(t, "kept").await.json();
        let path = format!("/v1/queues/t/messages/{}", m["id"].as_str().unwrap());
        let shown = call(Method::GET, &u(&path), &[], "").await;
        assert_eq!(shown.json()["type"], shown_as);
    }
    // Types through the CLI: set, then lifted (the orders subscriber is the first: id 1).
    let id = "1";
    let (ok, out, err) = cli(&b.url, &["subscribers", "types", "t", id, "audit.*"], "");
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["types"],
        json!(["audit.*"])
    );
    let (ok, out, _) = cli(&b.url, &["subscribers", "types", "t", id], "");
    assert!(ok);
    assert!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["types"].is_null());
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_over_the_api_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let u = |path: &str| format!("{}{path}", b.url);
    let (sink_url, got) = sink().await;
    call(
        Method::PUT,
        &u("/v1/queues/d"),
        &[],
        r#"{"retention": {"delivered": "1h"}}"#,
    )
    .await;
    let body = json!({"endpoint": sink_url}).to_string();
    call(Method::POST, &u("/v1/queues/d/subscribers"), &[], body).await;
    let messages = u("/v1/queues/d/messages");
    for (headers, status) in [
        (vec![("syncbrok-delay", "soon")], StatusCode::BAD_REQUEST),
        (vec![("syncbrok-delay", "31d")], StatusCode::BAD_REQUEST),
        (
            vec![("syncbrok-deliver-at", "tomorrow")],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("syncbrok-delay", "1s"),
                ("syncbrok-deliver-at", "2030-01-01T00:00:00Z"),
            ],
            StatusCode::BAD_REQUEST,
        ),
        (vec![("syncbrok-delay", "30d")], StatusCode::CREATED),
        // A time already past delivers at once.
        (
            vec![("syncbrok-deliver-at", "2020-01-01T00:00:00Z")],
            StatusCode::CREATED,
        ),
    ] {
        let r = call(Method::POST, &messages, &headers, "x").await;
        assert_eq!(r.status, status, "{headers:?}: {}", r.json());
    }
    let delayed = call(
        Method::POST,
        &messages,
        &[("syncbrok-delay", "1500ms")],
        "later",
    )
    .await;
    let id = delayed.json()["id"].as_str().unwrap().to_owned();
    let shown = call(
        Method::GET,
        &u(&format!("/v1/queues/d/messages/{id}")),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(shown["state"], "scheduled");
    assert!(shown["deliver_at"].is_string());
    let listed = call(
        Method::GET,
        &u("/v1/queues/d/messages?state=scheduled"),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(listed["messages"].as_array().unwrap().len(), 2, "{listed}");
    let q = call(Method::GET, &u("/v1/queues/d"), &[], "").await.json();
    assert_eq!(q["counts"]["scheduled"], 2);
    let why = call(
        Method::GET,
        &u(&format!("/v1/queues/d/messages/{id}/explain")),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(why["verdict"], "scheduled");
    // A batch entry's delay, and the CLI's.
    let batch = json!({"messages": [{"body": "b", "delay": "1s"}, {"body": "bad", "delay": "x"}]});
    let r = call(
        Method::POST,
        &u("/v1/queues/d/messages/batch"),
        &[],
        batch.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let batch = json!({"messages": [{"body": "b", "delay": "1s"}]});
    let r = call(
        Method::POST,
        &u("/v1/queues/d/messages/batch"),
        &[],
        batch.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let (ok, _, err) = cli(&b.url, &["publish", "d", "--delay", "1s"], "cli");
    assert!(ok, "{err}");
    let (ok, _, _) = cli(
        &b.url,
        &[
            "publish",
            "d",
            "--delay",
            "1s",
            "--deliver-at",
            "2030-01-01T00:00:00Z",
        ],
        "x",
    );
    assert!(!ok, "both at once are refused");
    // kill -9 before they are due: after the restart they still go, once, when due.
    let before_kill = got.lock().unwrap().len();
    b.kill9();
    let b = serving(dir.path(), &[]);
    eventually("the delayed ones arrived", || {
        let bodies: Vec<_> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
        ["later", "b", "cli"]
            .iter()
            .all(|w| bodies.iter().any(|b| b == w.as_bytes()))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies: Vec<_> = got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(
        bodies.iter().filter(|b| *b == "later".as_bytes()).count(),
        1,
        "{before_kill} before the kill"
    );
    let q = call(Method::GET, &format!("{}/v1/queues/d", b.url), &[], "")
        .await
        .json();
    assert_eq!(q["counts"]["scheduled"], 1, "the 30-day one still waits");
    assert!(b.terminate().success());
}
