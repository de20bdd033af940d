//! Black-box tests of joins (a message with several parents) and parents in other queues: the
//! real binary on port 0, a real subscriber on loopback, a real `kill -9` in between.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{call, eventually, hook_server, queue_with, serving};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// What the subscriber received: (message id, its `Syncbrok-Parent` header, body).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// A subscriber that records every request it acknowledges, and answers 503 to a message
/// whose body is `blocked` while `failing` holds, and to `never` always.
async fn subscriber(failing: Arc<AtomicBool>) -> (String, Received) {
    let got: Received = Arc::default();
    let record = got.clone();
    let url = hook_server(move |req: hyper::Request<hyper::body::Incoming>| {
        let (record, failing) = (record.clone(), failing.clone());
        async move {
            let header = |n: &str| {
                req.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let (id, parents) = (header("webhook-id"), header("syncbrok-parent"));
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            let mut answer = hyper::Response::new(http_body_util::Full::new(Bytes::new()));
            if (body == "blocked" && failing.load(Ordering::SeqCst)) || body == "never" {
                *answer.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            } else {
                record.lock().unwrap().push((id, parents, body));
            }
            answer
        }
    })
    .await;
    (url, got)
}

async fn publish(url: &str, body: &str, parents: &[&str]) -> (StatusCode, Value) {
    publish_to(url, "orders", body, parents).await
}

async fn publish_to(url: &str, queue: &str, body: &str, parents: &[&str]) -> (StatusCode, Value) {
    let list = parents.join(", ");
    let headers: Vec<(&str, &str)> = if parents.is_empty() {
        Vec::new()
    } else {
        vec![("syncbrok-parent", list.as_str())]
    };
    let r = call(
        Method::POST,
        &format!("{url}/v1/queues/{queue}/messages"),
        &headers,
        body.to_owned(),
    )
    .await;
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, v)
}

async fn get(url: &str, path: &str) -> Value {
    call(Method::GET, &format!("{url}{path}"), &[], "")
        .await
        .json()
}

fn position(got: &Received, id: &str) -> Option<usize> {
    got.lock().unwrap().iter().position(|(m, _, _)| m == id)
}

/// A join waits for every parent: not sent when one of two is delivered, sent once both are,
/// after both, carrying both ids; it is explained while it waits, keeps its parents across a
/// `kill -9`, and bad lists of parents are refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_waits_for_every_parent_across_a_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let (hook, got) = subscriber(failing.clone()).await;
    let b = serving(dir.path(), &[]);
    queue_with(&b.url, "orders", FAST_RETRIES, &[&hook]).await;

    let (_, order) = publish(&b.url, "order", &[]).await;
    let (_, check) = publish(&b.url, "blocked", &[]).await;
    let (order, check) = (
        order["id"].as_str().unwrap().to_owned(),
        check["id"].as_str().unwrap().to_owned(),
    );
    let (status, payment) = publish(&b.url, "payment", &[&order, &check]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(payment["parent"], order.as_str());
    assert_eq!(payment["parents"], json!([order, check]));
    let payment = payment["id"].as_str().unwrap().to_owned();

    // Bad lists: too many, a repeat, an unknown id, a malformed one.
    let many: Vec<String> = (0..17).map(|_| order.clone()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, why) = publish(&b.url, "x", &many).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        why["detail"].as_str().unwrap().contains("at most 16"),
        "{why}"
    );
    let (status, why) = publish(&b.url, "x", &[&order, &order]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(why["detail"].as_str().unwrap().contains("twice"), "{why}");
    let unknown = "0190b7a1-0000-7000-8000-000000000000";
    let (status, why) = publish(&b.url, "x", &[&order, unknown]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(why["detail"].as_str().unwrap().contains(unknown), "{why}");
    let (status, _) = publish(&b.url, "x", &[&order, "nope"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    eventually("the order is delivered", || {
        position(&got, &order).is_some()
    })
    .await;
    let m = get(&b.url, &format!("/v1/queues/orders/messages/{payment}")).await;
    assert_eq!(m["state"], "waiting");
    assert_eq!(m["parents"], json!([order, check]));
    let why = get(
        &b.url,
        &format!("/v1/queues/orders/messages/{payment}/explain"),
    )
    .await;
    assert_eq!(why["verdict"], "waiting_for_parent");
    assert_eq!(why["root_blocker"], check.as_str(), "{why}");
    let blockers: Vec<&str> = why["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        blockers,
        [check.as_str()],
        "a delivered parent blocks nothing"
    );
    let lineage = get(
        &b.url,
        &format!("/v1/queues/orders/messages/{payment}/lineage"),
    )
    .await;
    assert_eq!(lineage["edges"].as_array().unwrap().len(), 2, "{lineage}");

    b.kill9();
    let b = serving(dir.path(), &[]);
    let m = get(&b.url, &format!("/v1/queues/orders/messages/{payment}")).await;
    assert_eq!(m["state"], "waiting", "still waiting after kill -9: {m}");
    assert_eq!(m["parents"], json!([order, check]));
    assert_eq!(position(&got, &payment), None);

    failing.store(false, Ordering::SeqCst);
    eventually("the payment is delivered", || {
        position(&got, &payment).is_some()
    })
    .await;
    let (at_check, at_payment) = (position(&got, &check), position(&got, &payment));
    assert!(at_check < at_payment, "the join went before its parent");
    let sent = got.lock().unwrap()[at_payment.unwrap()].1.clone();
    assert_eq!(sent, format!("{order}, {check}"));
    assert!(b.terminate().success());
}

/// In a batch, `parents` and `parent_indexes` make a join of existing messages and earlier
/// entries; mixing them with `parent` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_names_joins_by_id_and_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    // A subscriber that is down keeps every message held, to be looked at.
    queue_with(&b.url, "orders", "{}", &[&common::closed_port()]).await;
    let (_, first) = publish(&b.url, "first", &[]).await;
    let first = first["id"].as_str().unwrap().to_owned();
    let batch = json!({"messages": [
        {"body": "a"},
        {"body": "b", "parent": first},
        {"body": "joined", "parents": [first], "parent_indexes": [0, 1]}
    ]});
    let r = call(
        Method::POST,
        &format!("{}/v1/queues/orders/messages/batch", b.url),
        &[],
        batch.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let ids = r.json()["ids"].clone();
    let joined = ids[2].as_str().unwrap();
    let m = get(&b.url, &format!("/v1/queues/orders/messages/{joined}")).await;
    assert_eq!(m["parents"], json!([first, ids[0], ids[1]]));

    let mixed = json!({"messages": [{"body": "x", "parent": first, "parents": [first]}]});
    let r = call(
        Method::POST,
        &format!("{}/v1/queues/orders/messages/batch", b.url),
        &[],
        mixed.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(b.terminate().success());
}

/// Retries fast and for long: a failing subscriber holds its messages, not loses them.
const FAST_RETRIES: &str =
    r#"{"retry": {"max_attempts": 1000, "initial_backoff": "20ms", "max_backoff": "50ms"}}"#;

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The order saga of the README: a payment in queue `payments` waits for an order and a fraud
/// check in queue `orders`. It goes only after both, is explained with its blocker in the other
/// queue, keeps waiting across a `kill -9`, and a child of a message in a deleted queue goes as
/// if its parent were discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_saga_across_two_queues() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let (hook, got) = subscriber(failing.clone()).await;
    let b = serving(dir.path(), &[]);
    queue_with(&b.url, "orders", FAST_RETRIES, &[&hook]).await;
    queue_with(&b.url, "payments", FAST_RETRIES, &[&hook]).await;

    let order = id_of(&publish_to(&b.url, "orders", "order", &[]).await.1);
    let check = id_of(&publish_to(&b.url, "orders", "blocked", &[]).await.1);
    let (status, payment) = publish_to(&b.url, "payments", "payment", &[&order, &check]).await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["parents"], json!([order, check]));
    let payment = id_of(&payment);
    // An id of another queue that was never issued is refused, naming it.
    let never = order.replace(&order[order.len() - 4..], "ffff");
    let (status, why) = publish_to(&b.url, "payments", "x", &[&never]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(why["detail"].as_str().unwrap().contains(&never), "{why}");

    eventually("the order is delivered", || {
        position(&got, &order).is_some()
    })
    .await;
    let m = get(&b.url, &format!("/v1/queues/payments/messages/{payment}")).await;
    assert_eq!(m["state"], "waiting");
    let why = get(
        &b.url,
        &format!("/v1/queues/payments/messages/{payment}/explain"),
    )
    .await;
    assert_eq!(why["root_blocker"], check.as_str(), "{why}");
    let blocker = &why["blockers"][0];
    assert_eq!(blocker["queue"], "orders", "{why}");
    let reason = blocker["reason"].as_str().unwrap();
    assert!(["retry_scheduled", "in_flight"].contains(&reason), "{why}");
    let lineage = get(
        &b.url,
        &format!("/v1/queues/payments/messages/{payment}/lineage"),
    )
    .await;
    let queues: Vec<&str> = lineage["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["payments", "orders", "orders"], "{lineage}");

    b.kill9();
    let b = serving(dir.path(), &[]);
    let m = get(&b.url, &format!("/v1/queues/payments/messages/{payment}")).await;
    assert_eq!(m["state"], "waiting", "still waiting after kill -9: {m}");
    failing.store(false, Ordering::SeqCst);
    eventually("the payment is delivered", || {
        position(&got, &payment).is_some()
    })
    .await;
    assert!(position(&got, &check) < position(&got, &payment));

    // A parent whose queue is deleted counts as discarded: its child goes.
    let stuck = id_of(&publish_to(&b.url, "orders", "never", &[]).await.1);
    let refund = id_of(&publish_to(&b.url, "payments", "refund", &[&stuck]).await.1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(position(&got, &refund), None, "sent before its parent");
    let r = call(
        Method::DELETE,
        &format!("{}/v1/queues/orders", b.url),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    eventually("the refund goes once its parent's queue is deleted", || {
        position(&got, &refund).is_some()
    })
    .await;
    assert!(b.terminate().success());
}

/// `syncbrok replay`: a delivered chain sent again in its order, counted first by a dry run,
/// then copied as new messages that name what they copy; a message not delivered is refused
/// (exit code 4, the broker's 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_replays_a_delivered_subtree() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let (hook, got) = subscriber(failing.clone()).await;
    let b = serving(dir.path(), &[]);
    let settings = r#"{"retention": {"delivered": "1h"}, "retry": {"initial_backoff": "20ms"}}"#;
    queue_with(&b.url, "q", settings, &[&hook]).await;
    let root = id_of(&publish_to(&b.url, "q", "root", &[]).await.1);
    let kid = id_of(&publish_to(&b.url, "q", "kid", &[&root]).await.1);
    eventually("both delivered", || got.lock().unwrap().len() == 2).await;
    let m = get(&b.url, &format!("/v1/queues/q/messages/{kid}")).await;
    assert_eq!(m["state"], "delivered");

    let run = |args: &[&str]| {
        let (code, out, err) = common::cli_code(&b.url, args, "");
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let dry = run(&["replay", "q", &root, "--subtree", "--dry-run"]);
    assert_eq!(dry["replayed"], 2);
    let done = run(&["replay", "q", &root, "--subtree"]);
    assert_eq!(done["replayed"], 2);
    eventually("both sent again", || got.lock().unwrap().len() == 4).await;
    let order: Vec<String> = got.lock().unwrap().iter().map(|g| g.2.clone()).collect();
    assert_eq!(order, ["root", "kid", "root", "kid"]);

    let copies = run(&["replay", "q", &root, "--subtree", "--as-new"]);
    let copy = copies["copies"][1].as_str().unwrap().to_owned();
    let m = get(&b.url, &format!("/v1/queues/q/messages/{copy}")).await;
    assert_eq!(m["replay_of"], kid.as_str());
    assert_eq!(m["parent"], copies["copies"][0]);
    eventually("the copies are delivered", || {
        got.lock().unwrap().len() == 6
    })
    .await;

    failing.store(true, Ordering::SeqCst);
    let blocked = id_of(&publish_to(&b.url, "q", "blocked", &[]).await.1);
    let (code, _, err) = common::cli_code(&b.url, &["replay", "q", &blocked], "");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not delivered"), "{err}");
    assert!(b.terminate().success());
}

/// `"causality": "per_subscriber"` over the real binary: with one subscriber failing the
/// parent, the other gets the parent and then the child; the failing one gets the child only
/// after it has the parent, and the setting survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_subscriber_causality_lets_each_subscriber_go_at_its_own_pace() {
    let dir = tempfile::tempdir().unwrap();
    let (fast, fast_got) = subscriber(Arc::new(AtomicBool::new(false))).await;
    let failing = Arc::new(AtomicBool::new(true));
    let (slow, slow_got) = subscriber(failing.clone()).await;
    let b = serving(dir.path(), &[]);
    let settings = r#"{"causality": "per_subscriber", "retry": {"max_attempts": 1000, "initial_backoff": "20ms", "max_backoff": "50ms"}}"#;
    queue_with(&b.url, "q", settings, &[&fast, &slow]).await;
    let q = get(&b.url, "/v1/queues/q").await;
    assert_eq!(q["settings"]["causality"], "per_subscriber");
    let parent = id_of(&publish_to(&b.url, "q", "blocked", &[]).await.1);
    let kid = id_of(&publish_to(&b.url, "q", "kid", &[&parent]).await.1);
    eventually("the fast subscriber has the child", || {
        position(&fast_got, &kid).is_some()
    })
    .await;
    assert!(position(&fast_got, &parent) < position(&fast_got, &kid));
    assert_eq!(
        position(&slow_got, &kid),
        None,
        "the slow one has no parent yet"
    );
    let m = get(&b.url, &format!("/v1/queues/q/messages/{kid}")).await;
    assert_eq!(m["state"], "waiting", "a copy is still held back: {m}");

    b.kill9();
    let b = serving(dir.path(), &[]);
    let q = get(&b.url, "/v1/queues/q").await;
    assert_eq!(q["settings"]["causality"], "per_subscriber");
    failing.store(false, Ordering::SeqCst);
    eventually("the slow subscriber has the child", || {
        position(&slow_got, &kid).is_some()
    })
    .await;
    assert!(position(&slow_got, &parent) < position(&slow_got, &kid));
    assert!(b.terminate().success());
}
