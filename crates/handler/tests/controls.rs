//! Subscriber controls over real HTTP to real subscriber servers on loopback: rate limits
//! measured at the receiver, pause and resume, automatic disabling, secret rotation; and that
//! each survives a restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::{Reply, eventually, start};
use handler::HttpDeliverer;
use space::{
    ManualClock, MessageState, NewMessage, RateLimit, SettingsPatch, Space, SpaceConfig,
    SubscriberSpec, SubscriberState, SubscriberUpdate, Verdict,
};
use storage::io::FsBackend;

async fn open_with(dir: &tempfile::TempDir, clock: Option<Arc<ManualClock>>) -> Space {
    let mut config = SpaceConfig::new(storage::Config::default());
    if let Some(clock) = clock {
        config.clock = clock;
    }
    // A Space shut down lets go of the directory once its last task has ended, which on this
    // test's runtime may be a moment after `shutdown` returns.
    let mut tries = 0;
    let backend = loop {
        match FsBackend::open(dir.path()) {
            Ok(b) => break b,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    Space::open(Arc::new(backend), config, Arc::new(HttpDeliverer::new()))
        .unwrap()
        .0
}

async fn open(dir: &tempfile::TempDir) -> Space {
    open_with(dir, None).await
}

fn msg(body: String, parent: Option<space::MessageId>) -> NewMessage {
    NewMessage {
        body: Bytes::from(body),
        content_type: Some("text/plain".into()),
        parents: parent.into_iter().collect(),
        idempotency_key: None,
        ..Default::default()
    }
}

fn patch(json: serde_json::Value) -> SettingsPatch {
    serde_json::from_value(json).unwrap()
}

/// Delivered to all (and so removed at once, under the default retention).
fn delivered(space: &Space, id: space::MessageId) -> bool {
    space
        .message("q", id)
        .map_or(true, |m| m.state == MessageState::Delivered)
}

fn webhook(endpoint: String) -> SubscriberSpec {
    SubscriberSpec {
        endpoint,
        max_in_flight: 8,
        ..SubscriberSpec::default()
    }
}

#[tokio::test]
async fn a_rate_limit_holds_at_the_receiver_while_another_subscriber_runs_free() {
    const LIMIT: usize = 20;
    const MESSAGES: usize = 50;
    let limited = start(|_, _| Reply::Status(204, "")).await;
    let free = start(|_, _| Reply::Status(204, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir).await;
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    let spec = SubscriberSpec {
        rate_limit: Some(RateLimit {
            per_second: LIMIT as u32,
        }),
        ..webhook(limited.url())
    };
    space.add_subscriber("q", spec).await.unwrap();
    space
        .add_subscriber("q", webhook(free.url()))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..MESSAGES {
        space.publish("q", msg(format!("{i}"), None)).await.unwrap();
    }
    eventually("the free subscriber has all", || free.count() == MESSAGES).await;
    assert!(
        limited.count() <= LIMIT,
        "the limited one is not carried along: {}",
        limited.count()
    );
    eventually("the limited subscriber has all", || {
        limited.count() == MESSAGES
    })
    .await;
    // 50 at 20 a second: the first 20 at once, the next 20 a second after their answers, the
    // rest a second after those.
    assert!(started.elapsed() >= Duration::from_secs(2));
    // By the receiver's clock, no second holds more than the limit.
    let at: Vec<_> = limited.received().iter().map(|r| r.at).collect();
    for w in at.windows(LIMIT + 1) {
        let spread = w[LIMIT].duration_since(w[0]);
        assert!(
            spread >= Duration::from_secs(1),
            "{} requests within {spread:?}",
            LIMIT + 1
        );
    }
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_paused_subscriber_gets_its_backlog_in_order_once_resumed() {
    let sink = start(|_, _| Reply::Status(204, "")).await;
    let other = start(|_, _| Reply::Status(204, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir).await;
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    let (sub, _) = space
        .add_subscriber("q", webhook(sink.url()))
        .await
        .unwrap();
    space
        .add_subscriber("q", webhook(other.url()))
        .await
        .unwrap();
    space.publish("q", msg("0".into(), None)).await.unwrap();
    eventually("the first arrived", || sink.count() == 1).await;
    let paused = space
        .update_subscriber("q", sub.id, SubscriberUpdate::Pause)
        .await
        .unwrap();
    assert_eq!(paused.state, SubscriberState::Paused);
    // A backlog, half of it a chain: the other subscriber takes all of it (children after
    // parents, the paused one is not in their way for independent messages)...
    let mut parent = None;
    let mut ids = Vec::new();
    for i in 1..=10 {
        let p = if i % 2 == 0 { parent } else { None };
        let m = space.publish("q", msg(format!("{i}"), p)).await.unwrap();
        if i % 2 == 1 {
            parent = Some(m.id);
        }
        ids.push(m.id);
    }
    eventually("the other subscriber has the unchained half", || {
        other.count() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... the paused one gets nothing, and nothing is dead-lettered.
    assert_eq!(sink.count(), 1);
    let info = space.queue_info("q").unwrap();
    assert_eq!(info.counts.dead, 0);
    let why = space.explain("q", ids[0]).unwrap();
    assert_eq!(why.verdict, Verdict::SubscriberPaused);
    // Pausing twice changes nothing.
    space
        .update_subscriber("q", sub.id, SubscriberUpdate::Pause)
        .await
        .unwrap();
    let resumed = space
        .update_subscriber("q", sub.id, SubscriberUpdate::Resume)
        .await
        .unwrap();
    assert_eq!(resumed.state, SubscriberState::Active);
    eventually("the backlog arrived", || sink.count() == 11).await;
    eventually("all delivered", || {
        ids.iter().all(|id| delivered(&space, *id))
    })
    .await;
    // Each child after its parent; the unchained in publish order.
    let got: Vec<u32> = sink
        .received()
        .iter()
        .map(|r| std::str::from_utf8(&r.body).unwrap().parse().unwrap())
        .collect();
    let pos = |n: u32| got.iter().position(|&g| g == n).unwrap();
    for child in [2, 4, 6, 8, 10] {
        assert!(pos(child - 1) < pos(child), "{got:?}");
    }
    let unchained: Vec<u32> = got.iter().copied().filter(|n| n % 2 == 1).collect();
    assert_eq!(unchained, vec![1, 3, 5, 7, 9], "{got:?}");
    space.shutdown(Duration::from_secs(1)).await;
}

/// A subscriber that answers 503 until `up` is set, then 204.
async fn down_until(up: &Arc<AtomicBool>) -> common::Sink {
    let up = up.clone();
    start(move |_, _| {
        if up.load(Ordering::SeqCst) {
            Reply::Status(204, "")
        } else {
            Reply::Status(503, "down")
        }
    })
    .await
}

#[tokio::test]
async fn a_subscriber_failing_for_disable_after_is_disabled_until_resumed() {
    let up = Arc::new(AtomicBool::new(false));
    let sink = down_until(&up).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir).await;
    let settings = serde_json::json!({
        "retry": {"max_attempts": 0, "initial_backoff": "10ms", "max_backoff": "20ms"},
        "disable_after": "300ms"
    });
    space.put_queue("q", &patch(settings)).await.unwrap();
    let (sub, _) = space
        .add_subscriber("q", webhook(sink.url()))
        .await
        .unwrap();
    let m = space.publish("q", msg("x".into(), None)).await.unwrap();
    eventually("disabled", || {
        space.subscribers("q").unwrap()[0].state == SubscriberState::Disabled
    })
    .await;
    assert_eq!(space.totals().subscribers_disabled, 1);
    assert!(sink.count() >= 2, "it failed more than once");
    // Disabled: nothing more is sent, and the message is not given up on.
    let tried = sink.count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sink.count() <= tried + 1, "an attempt on the wire may end");
    assert_eq!(
        space.message("q", m.id).unwrap().state,
        MessageState::Delivering
    );
    // A restart keeps it disabled.
    space.shutdown(Duration::from_secs(1)).await;

    let space = open(&dir).await;
    let info = space.subscribers("q").unwrap();
    assert_eq!(info[0].state, SubscriberState::Disabled);
    let before = sink.count();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.count(), before);
    up.store(true, Ordering::SeqCst);
    space
        .update_subscriber("q", sub.id, SubscriberUpdate::Resume)
        .await
        .unwrap();
    eventually("delivered after the resume", || delivered(&space, m.id)).await;
    assert_eq!(
        space.subscribers("q").unwrap()[0].state,
        SubscriberState::Active
    );
    space.shutdown(Duration::from_secs(1)).await;
}

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_c2Vjb25kIHNlY3JldCwgYWZ0ZXIgcm90YXRpb24=";

/// The signatures of a received request that verify with `secret`.
fn verified_by(r: &common::Received, secret: &str) -> usize {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let h = &r.headers;
    let id = h["webhook-id"].to_str().unwrap();
    let ts: u64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let want = handler::sign(&key, id, ts, &r.body);
    h["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .filter(|s| *s == want)
        .count()
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_after_its_grace_only_the_new() {
    let sink = start(|_, _| Reply::Status(204, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let space = open_with(&dir, Some(clock.clone())).await;
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    let spec = SubscriberSpec {
        secret: Some(OLD.into()),
        ..webhook(sink.url())
    };
    let (sub, _) = space.add_subscriber("q", spec).await.unwrap();
    let rotate = |secret: &str, grace_s| SubscriberUpdate::RotateSecret {
        secret: secret.into(),
        grace: Duration::from_secs(grace_s),
    };
    let rotated = space
        .update_subscriber("q", sub.id, rotate(NEW, 3600))
        .await
        .unwrap();
    assert_eq!(
        rotated.previous_secret_until_ms,
        Some(1_800_000_000_000 + 3_600_000)
    );
    space
        .publish("q", msg("during".into(), None))
        .await
        .unwrap();
    eventually("one arrived", || sink.count() == 1).await;
    let during = &sink.received()[0];
    assert_eq!(
        during.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    assert_eq!((verified_by(during, NEW), verified_by(during, OLD)), (1, 1));
    // The grace survives a restart.
    space.shutdown(Duration::from_secs(1)).await;

    let space = open_with(&dir, Some(clock.clone())).await;
    assert!(
        space.subscribers("q").unwrap()[0]
            .previous_secret_until_ms
            .is_some()
    );
    clock.advance_ms(3_600_000);
    assert_eq!(
        space.subscribers("q").unwrap()[0].previous_secret_until_ms,
        None
    );
    space.publish("q", msg("after".into(), None)).await.unwrap();
    eventually("two arrived", || sink.count() == 2).await;
    let after = &sink.received()[1];
    assert_eq!((verified_by(after, NEW), verified_by(after, OLD)), (1, 0));
    assert!(
        !after.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .contains(' ')
    );
    // Bad rotations are refused and change nothing.
    for bad in [
        rotate("not-a-secret", 60),
        rotate(NEW, 31 * 86_400),
        rotate(NEW, 60),
    ] {
        assert!(space.update_subscriber("q", sub.id, bad).await.is_err());
    }
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn controls_survive_a_checkpoint_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir).await;
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    let endpoint = "http://127.0.0.1:9/hook".to_owned();
    let (a, _) = space
        .add_subscriber("q", webhook(endpoint.clone()))
        .await
        .unwrap();
    let (b, _) = space
        .add_subscriber("q", webhook(format!("{endpoint}2")))
        .await
        .unwrap();
    let limit = Some(RateLimit { per_second: 7 });
    space
        .update_subscriber("q", a.id, SubscriberUpdate::RateLimit(limit))
        .await
        .unwrap();
    space
        .update_subscriber("q", a.id, SubscriberUpdate::Pause)
        .await
        .unwrap();
    // One change before the checkpoint (in its snapshot), one after (replayed from the log).
    space.reclaim().await.unwrap();
    space
        .update_subscriber("q", b.id, SubscriberUpdate::Pause)
        .await
        .unwrap();
    let before = space.state_image();
    space.shutdown(Duration::from_secs(1)).await;

    let space = open(&dir).await;
    assert_eq!(space.state_image(), before);
    let subs = space.subscribers("q").unwrap();
    assert_eq!(subs[0].rate_limit, limit);
    assert_eq!(subs[0].state, SubscriberState::Paused);
    assert_eq!(subs[1].state, SubscriberState::Paused);
    space.shutdown(Duration::from_secs(1)).await;
}

/// A subscriber that filters out a parent's type never gets the parent, but still gets its
/// child only once the parent is delivered to the parent's own fan-out set (here a subscriber
/// that refuses it at first).
#[tokio::test]
async fn a_child_waits_for_its_parents_own_fan_out_set_whatever_a_filter_drops() {
    let b_up = Arc::new(AtomicBool::new(false));
    let a = start(|_, _| Reply::Status(204, "")).await;
    let b = down_until(&b_up).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir).await;
    let fast_retries = serde_json::json!({
        "retry": {"max_attempts": 0, "initial_backoff": "10ms", "max_backoff": "20ms"}
    });
    space.put_queue("q", &patch(fast_retries)).await.unwrap();
    let orders_only = SubscriberSpec {
        types: Some(vec!["order.*".into()]),
        ..webhook(a.url())
    };
    space.add_subscriber("q", orders_only).await.unwrap();
    space.add_subscriber("q", webhook(b.url())).await.unwrap();
    let typed = |body: &str, t: &str, parent| NewMessage {
        event_type: Some(t.into()),
        ..msg(body.into(), parent)
    };
    let parent = space
        .publish("q", typed("audit", "audit.logged", None))
        .await
        .unwrap();
    let child = space
        .publish("q", typed("order", "order.created", Some(parent.id)))
        .await
        .unwrap();
    let untyped = space.publish("q", msg("plain".into(), None)).await.unwrap();
    // The parent's fan-out set is B alone; the child's is both; the untyped message (type
    // syncbrok.message) is not an order either.
    let fanout = |id| -> Vec<u64> {
        let mut subs: Vec<_> = space
            .message("q", id)
            .unwrap()
            .deliveries
            .iter()
            .map(|d| d.subscriber)
            .collect();
        subs.sort();
        subs
    };
    assert_eq!(fanout(parent.id), vec![2]);
    assert_eq!(fanout(child.id), vec![1, 2]);
    assert_eq!(fanout(untyped.id), vec![2]);
    eventually("B refused the parent twice", || b.count() >= 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.count(), 0, "A gets nothing while the parent is owed to B");
    b_up.store(true, Ordering::SeqCst);
    eventually("A got the child", || a.count() == 1).await;
    let got = &a.received()[0];
    assert_eq!(got.body, "order");
    assert_eq!(got.headers["ce-type"], "order.created");
    eventually("all delivered", || {
        [parent.id, child.id, untyped.id]
            .iter()
            .all(|id| delivered(&space, *id))
    })
    .await;
    let parent_at_b = b
        .received()
        .iter()
        .rev()
        .find(|r| r.body == "audit")
        .map(|r| r.at)
        .unwrap();
    assert!(
        got.at >= parent_at_b,
        "the child reached A before B took the parent"
    );
    assert!(
        b.received()
            .iter()
            .any(|r| r.headers["ce-type"] == "audit.logged")
    );
    assert!(
        b.received()
            .iter()
            .any(|r| r.headers["ce-type"] == "syncbrok.message")
    );
    // The filter survives a restart; a change applies to later messages only.
    space.shutdown(Duration::from_secs(1)).await;
    let space = open(&dir).await;
    assert_eq!(
        space.subscribers("q").unwrap()[0].types,
        Some(vec!["order.*".to_owned()])
    );
    space
        .update_subscriber("q", 1, SubscriberUpdate::Types(None))
        .await
        .unwrap();
    space.publish("q", msg("after".into(), None)).await.unwrap();
    eventually("A takes every type now", || a.count() == 2).await;
    space.shutdown(Duration::from_secs(1)).await;
}

fn later(body: &str, parent: Option<space::MessageId>, at: space::DeliverAt) -> NewMessage {
    NewMessage {
        deliver_at: Some(at),
        ..msg(body.into(), parent)
    }
}

#[tokio::test]
async fn a_delayed_parent_holds_its_child_until_it_is_due_and_delivered() {
    let sink = start(|_, _| Reply::Status(204, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir).await;
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    space
        .add_subscriber("q", webhook(sink.url()))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let delay = Duration::from_millis(400);
    let parent = space
        .publish("q", later("parent", None, space::DeliverAt::After(delay)))
        .await
        .unwrap();
    let child = space
        .publish("q", msg("child".into(), Some(parent.id)))
        .await
        .unwrap();
    let now = space.publish("q", msg("now".into(), None)).await.unwrap();
    let state = |id| space.message("q", id).map(|m| m.state).ok();
    assert_eq!(state(parent.id), Some(MessageState::Scheduled));
    assert!(
        space
            .message("q", parent.id)
            .unwrap()
            .deliver_at_ms
            .is_some()
    );
    assert_eq!(state(child.id), Some(MessageState::Waiting));
    let counts = space.queue_info("q").unwrap().counts;
    assert_eq!((counts.scheduled, counts.waiting), (1, 1));
    eventually("the undelayed one went at once", || {
        delivered(&space, now.id)
    })
    .await;
    eventually("parent and child arrived", || sink.count() == 3).await;
    let got = sink.received();
    let bodies: Vec<_> = got.iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies, ["now", "parent", "child"]);
    assert!(
        got[1].at.duration_since(started) >= delay,
        "sent before it was due"
    );
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn scheduled_messages_survive_a_checkpoint_and_a_restart() {
    let sink = start(|_, _| Reply::Status(204, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_800_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let space = open_with(&dir, Some(clock.clone())).await;
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    space
        .add_subscriber("q", webhook(sink.url()))
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    let a = space
        .publish("q", later("a", None, space::DeliverAt::After(hour)))
        .await
        .unwrap();
    let b = space
        .publish("q", later("b", None, space::DeliverAt::At(t0 + 7_200_000)))
        .await
        .unwrap();
    // One in the checkpoint's snapshot, one after it in the log.
    space.reclaim().await.unwrap();
    let c = space
        .publish("q", later("c", None, space::DeliverAt::After(hour / 2)))
        .await
        .unwrap();
    let before = space.state_image();
    space.shutdown(Duration::from_secs(1)).await;
    let space = open_with(&dir, Some(clock.clone())).await;
    assert_eq!(space.state_image(), before);
    assert_eq!(space.queue_info("q").unwrap().counts.scheduled, 3);
    clock.advance_ms(1_800_000);
    space.sweep().await;
    eventually("c fell due", || sink.count() == 1).await;
    assert_eq!(sink.received()[0].body, "c");
    assert!(delivered(&space, c.id));
    assert_eq!(
        space.message("q", a.id).unwrap().state,
        MessageState::Scheduled
    );
    clock.advance_ms(5_400_000);
    space.sweep().await;
    eventually("a and b fell due", || sink.count() == 3).await;
    assert!(delivered(&space, a.id) && delivered(&space, b.id));
    // Their releases are records: a restart does not send them again.
    space.shutdown(Duration::from_secs(1)).await;
    let space = open_with(&dir, Some(clock.clone())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.count(), 3);
    assert_eq!(space.queue_info("q").unwrap().counts.scheduled, 0);
    space.shutdown(Duration::from_secs(1)).await;
}
