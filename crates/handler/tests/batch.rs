//! Batched delivery over real HTTP: a subscriber with `batch.max_messages` above 1 receives
//! CloudEvents batches, signed once over the body, and fails single messages of a batch with
//! a JSON answer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::{Reply, eventually, start};
use handler::HttpDeliverer;
use space::{Batching, HandlerKind, NewMessage, Space, SpaceConfig, SubscriberSpec};
use storage::io::FsBackend;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn open(dir: &tempfile::TempDir) -> Space {
    Space::open(
        Arc::new(FsBackend::open(dir.path()).unwrap()),
        SpaceConfig::new(storage::Config::default()),
        Arc::new(HttpDeliverer::new()),
    )
    .unwrap()
    .0
}

fn batched(endpoint: String) -> SubscriberSpec {
    SubscriberSpec {
        endpoint,
        handler: HandlerKind::Webhook,
        secret: Some(SECRET.into()),
        max_in_flight: 1,
        batch: Batching {
            max_messages: 100,
            max_bytes: 1 << 20,
        },
        headers: vec![("authorization".into(), "Bearer batch-token".into())],
        ..Default::default()
    }
}

/// A Space (in a directory of its own) with `queue`, retried fast, and one batching
/// subscriber at `endpoint`.
async fn batching(endpoint: &str, queue: &str) -> (tempfile::TempDir, Space) {
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space.put_queue(queue, &retries()).await.unwrap();
    space
        .add_subscriber(queue, batched(endpoint.to_owned()))
        .await
        .unwrap();
    (dir, space)
}

fn message(body: &str, content_type: &str, parent: Option<space::MessageId>) -> NewMessage {
    NewMessage {
        body: Bytes::copy_from_slice(body.as_bytes()),
        content_type: Some(content_type.into()),
        parents: parent.into_iter().collect(),
        idempotency_key: None,
        ..Default::default()
    }
}

fn events(body: &[u8]) -> Vec<serde_json::Value> {
    serde_json::from_slice::<Vec<serde_json::Value>>(body).expect("a JSON array of events")
}

fn retries() -> space::SettingsPatch {
    serde_json::from_value(serde_json::json!({
        "retry": {"initial_backoff": "1ms", "max_backoff": "10ms"}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_batch_is_signed_cloudevents_and_failed_items_come_back_alone() {
    // The first request is held a while so that the rest queue up behind it; the second
    // (the batch) fails one message by id; what follows acknowledges.
    let refused = Arc::new(std::sync::Mutex::new(String::new()));
    let to_refuse = refused.clone();
    let sink = start(move |n, _| match n {
        0 => Reply::Slow(Duration::from_millis(300), 204),
        1 => Reply::Body(
            200,
            format!(
                r#"{{"failed": [{{"id": "{}", "retry_after": 0}}]}}"#,
                to_refuse.lock().unwrap()
            ),
        ),
        _ => Reply::Status(200, ""),
    })
    .await;
    let (_dir, space) = batching(&sink.url(), "orders").await;
    let first = space
        .publish("orders", message(r#"{"n":0}"#, "application/json", None))
        .await
        .unwrap();
    eventually("the first request arrived", || sink.count() == 1).await;
    let mut ids = vec![first.id];
    for n in 1..5 {
        let parent = (n == 4).then_some(first.id);
        let (body, kind) = if n == 2 {
            ("plain \u{e9}", "text/plain")
        } else {
            (r#"{"n":1}"#, "application/json")
        };
        ids.push(
            space
                .publish("orders", message(body, kind, parent))
                .await
                .unwrap()
                .id,
        );
    }
    *refused.lock().unwrap() = ids[1].to_string();
    eventually("the refused message came again", || sink.count() == 3).await;
    let got = sink.received();

    // Each request is a batch, even of one message.
    let batch = &got[1];
    let h = &batch.headers;
    assert_eq!(h["content-type"], "application/cloudevents-batch+json");
    assert_eq!(h["syncbrok-queue"], "orders");
    assert_eq!(h["syncbrok-batch-size"], "4");
    assert_eq!(
        h["authorization"], "Bearer batch-token",
        "the subscriber's own header"
    );
    assert!(h.get("ce-id").is_none(), "structured mode: no ce- headers");
    let ts: u64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let id = h["webhook-id"].to_str().unwrap();
    assert_eq!(
        h["webhook-signature"],
        handler::sign(&key, id, ts, &batch.body).as_str()
    );
    let e = events(&batch.body);
    let sent: Vec<_> = e
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<_> = ids[1..].iter().map(ToString::to_string).collect();
    assert_eq!(sent, want);
    assert_eq!(e[0]["data"], serde_json::json!({"n": 1}));
    assert_eq!(e[0]["source"], "/queues/orders");
    assert_eq!(e[0]["syncbrokattempt"], 1);
    assert_eq!(
        e[1]["data_base64"],
        base64::engine::general_purpose::STANDARD.encode("plain \u{e9}")
    );
    assert_eq!(e[1]["datacontenttype"], "text/plain");
    // The child was released when its parent was acknowledged: never with it.
    assert_eq!(e[3]["syncbrokparent"], first.id.to_string().as_str());
    assert_eq!(events(&got[0].body).len(), 1);
    assert_ne!(got[0].headers["webhook-id"], batch.headers["webhook-id"]);

    // The refused message alone, at its second attempt; nothing else again.
    let again = events(&got[2].body);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["id"], ids[1].to_string().as_str());
    assert_eq!(again[0]["syncbrokattempt"], 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sink.count(),
        3,
        "the acknowledged messages are not sent again"
    );
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_batch_answered_with_an_error_status_fails_every_message() {
    let sink = start(|n, _| {
        if n == 0 {
            Reply::Status(503, "")
        } else {
            Reply::Status(204, "")
        }
    })
    .await;
    let (_dir, space) = batching(&sink.url(), "q").await;
    let first = space
        .publish("q", message("{}", "application/json", None))
        .await
        .unwrap();
    eventually("delivered after a retry", || sink.count() == 2).await;
    let got = sink.received();
    for r in &got {
        assert_eq!(events(&r.body)[0]["id"], first.id.to_string().as_str());
    }
    assert_eq!(events(&got[1].body)[0]["syncbrokattempt"], 2);
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_batch_answer_too_long_to_read_fails_the_batch() {
    // A 2xx whose body is over the bound: failures it may list cannot be read, so nothing in
    // it is taken as acknowledged.
    let long = format!(r#"{{"failed": [], "pad": "{}"}}"#, "x".repeat(300 * 1024));
    let sink = start(move |n, _| {
        if n == 0 {
            Reply::Body(200, long.clone())
        } else {
            Reply::Status(204, "")
        }
    })
    .await;
    let (_dir, space) = batching(&sink.url(), "q").await;
    let m = space
        .publish("q", message("{}", "application/json", None))
        .await
        .unwrap();
    eventually("sent again", || sink.count() == 2).await;
    let got = sink.received();
    assert_eq!(events(&got[1].body)[0]["id"], m.id.to_string().as_str());
    assert_eq!(events(&got[1].body)[0]["syncbrokattempt"], 2);
    space.shutdown(Duration::from_secs(1)).await;
}
