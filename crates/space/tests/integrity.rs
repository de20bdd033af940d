//! The ways an acknowledged message could be lost, or a child could overtake its parent, that
//! were found in the broker, each pinned by a test that failed before its fix: replay by queue
//! number, a subscriber that gave up being removed, retention of a dead parent, snapshot
//! restore after a policy change, attempt counts, unreadable bodies, and retries holding
//! delivery slots.

mod common;

use common::*;
use space::{DeadReason, ManualClock, Outcome, QueueSettings};
use storage::{Log, Published, Record};

const T0: u64 = 1_800_000_000_000;

fn open_with_clock(disk: &SimDisk, d: &Arc<Recorder>, clock: &Arc<ManualClock>) -> Space {
    let config = SpaceConfig {
        clock: clock.clone(),
        ..config()
    };
    Space::open(Arc::new(disk.clone()), config, d.clone())
        .unwrap()
        .0
}

fn by_body(bad: &'static str) -> impl Fn(&Attempt) -> Outcome + Send + Sync {
    move |a: &Attempt| {
        if a.body == bad.as_bytes() {
            fail(a)
        } else {
            ack(a)
        }
    }
}

fn settings(json: serde_json::Value) -> SettingsPatch {
    serde_json::from_value(json).unwrap()
}

/// A publish recorded for a queue that was deleted, and a queue of the same name created after
/// it: replay finds queues by number, so the publish does not land in the new queue (where it
/// would be a ghost, "delivered" to subscribers that never saw it, its idempotency key taken).
#[tokio::test]
async fn a_record_of_a_deleted_queue_never_lands_in_a_new_queue_of_its_name() {
    let disk = SimDisk::new(41);
    let settings = bytes::Bytes::from(serde_json::to_vec(&QueueSettings::default()).unwrap());
    let mut recovery = Log::open(Arc::new(disk.clone()), storage::Config::default()).unwrap();
    for r in recovery.by_ref() {
        r.unwrap();
    }
    let (log, _) = recovery.finish().unwrap();
    let ghost = space::ids::message_id(T0, 1, 0);
    for record in [
        Record::QueueCreated {
            queue: 1,
            name: "q".into(),
            settings: settings.clone(),
        },
        Record::QueueDeleted { queue: 1 },
        Record::QueueCreated {
            queue: 2,
            name: "q".into(),
            settings,
        },
        // Appended after the deletion: a publish that raced it.
        Record::Published(Published {
            queue: 1,
            id: ghost,
            parents: Vec::new(),
            content_type: "text/plain".into(),
            published_at_ms: T0,
            idempotency_key: Some("k".into()),
            fanout: vec![],
            attributes: Default::default(),
            body: bytes::Bytes::from_static(b"ghost"),
        }),
    ] {
        log.append(&[record]).await.unwrap();
    }
    log.close();
    let d = Recorder::new(ack);
    let space = open(Arc::new(disk), &d);
    let q = space.queue_info("q").unwrap();
    assert_eq!(q.counts.total(), 0, "{:?}", q.counts);
    assert!(space.message("q", ghost).is_err());
    let keyed = NewMessage {
        idempotency_key: Some("k".into()),
        ..msg("ghost")
    };
    let again = space.publish("q", keyed).await.unwrap();
    assert!(again.created, "the key belongs to the deleted queue");
    assert_ne!(again.id, ghost);
    space.shutdown(Duration::from_secs(1)).await;
}

/// A parent dead only because one subscriber gave up: removing that subscriber makes it
/// delivered (the other acknowledged it), and its waiting child goes on at once.
#[tokio::test]
async fn removing_the_subscriber_that_gave_up_releases_the_waiting_children() {
    let disk = SimDisk::new(42);
    let d = Recorder::new(
        |a: &Attempt| {
            if &*a.endpoint == B { fail(a) } else { ack(a) }
        },
    );
    let space = open(Arc::new(disk), &d);
    space.put_queue("q", &fast_retries(1)).await.unwrap();
    subscribe(&space, "q", A).await;
    let b = subscribe(&space, "q", B).await;
    let p = space.publish("q", msg("parent")).await.unwrap();
    let c = space.publish("q", child("child", p.id)).await.unwrap();
    eventually("the parent dead", || {
        space.message("q", p.id).map(|m| m.state).ok() == Some(MessageState::Dead)
    })
    .await;
    assert_eq!(
        space.message("q", c.id).unwrap().state,
        MessageState::Waiting
    );
    space.remove_subscriber("q", b).await.unwrap();
    eventually("the child delivered to A", || d.to(A).contains(&c.id)).await;
    assert_eq!(d.to(A), vec![p.id, c.id], "parent, then child");
    space.shutdown(Duration::from_secs(1)).await;
}

/// Under `wait`, a dead parent that retention removes can never arrive: its waiting children
/// go dead (`parent_dead`), listed in dead letters, never delivered as if it had. A child
/// published later naming it is dead at once; a redrive of such a child delivers it.
#[tokio::test]
async fn retention_of_a_dead_parent_kills_its_waiting_children_under_wait() {
    let disk = SimDisk::new(43);
    let clock = Arc::new(ManualClock::new(T0));
    let d = Recorder::new(by_body("parent"));
    let space = open_with_clock(&disk, &d, &clock);
    let patch = settings(serde_json::json!({
        "retry": {"max_attempts": 1},
        "retention": {"dead": "1m"},
        "on_parent_dead": "wait"
    }));
    space.put_queue("q", &patch).await.unwrap();
    subscribe(&space, "q", A).await;
    let p = space.publish("q", msg("parent")).await.unwrap();
    let c1 = space.publish("q", child("first", p.id)).await.unwrap();
    eventually("the parent dead", || {
        space.message("q", p.id).map(|m| m.state).ok() == Some(MessageState::Dead)
    })
    .await;
    clock.advance_ms(2 * 60_000);
    space.sweep().await;
    assert!(space.message("q", p.id).is_err(), "retention removed it");
    assert_eq!(space.message("q", c1.id).unwrap().state, MessageState::Dead);
    let (dead, _) = space.dead_letters("q", None, 100).unwrap();
    assert!(
        dead.iter()
            .any(|l| l.id == c1.id && l.reason == DeadReason::ParentDead && l.subscriber.is_none()),
        "{dead:?}"
    );
    let c2 = space.publish("q", child("second", p.id)).await.unwrap();
    assert_eq!(space.message("q", c2.id).unwrap().state, MessageState::Dead);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        d.to(A),
        vec![p.id],
        "no child went as if the parent had arrived"
    );
    // The same after a restart.
    let before = space.state_image();
    space.shutdown(Duration::from_secs(1)).await;
    let space = open_with_clock(&disk, &d, &clock);
    assert_eq!(space.state_image(), before);
    space.redrive("q", c1.id).await.unwrap();
    eventually("the redriven child delivered", || d.to(A).contains(&c1.id)).await;
    space.shutdown(Duration::from_secs(1)).await;
}

/// A child dead with its parent under `dead_letter`, then the policy changed to `wait`: a
/// restart from a checkpoint shows it as it was (dead), not as the new policy would have made it.
#[tokio::test]
async fn a_snapshot_keeps_what_the_policy_of_its_time_decided() {
    let disk = SimDisk::new(44);
    let clock = Arc::new(ManualClock::new(T0));
    let d = Recorder::new(by_body("parent"));
    let space = open_with_clock(&disk, &d, &clock);
    let patch = settings(serde_json::json!({
        "retry": {"max_attempts": 1},
        "on_parent_dead": "dead_letter"
    }));
    space.put_queue("q", &patch).await.unwrap();
    subscribe(&space, "q", A).await;
    let p = space.publish("q", msg("parent")).await.unwrap();
    let c = space.publish("q", child("child", p.id)).await.unwrap();
    eventually("the child dead with its parent", || {
        space.message("q", c.id).map(|m| m.state).ok() == Some(MessageState::Dead)
    })
    .await;
    space
        .put_queue(
            "q",
            &settings(serde_json::json!({"on_parent_dead": "wait"})),
        )
        .await
        .unwrap();
    space.reclaim().await.unwrap();
    let before = space.state_image();
    space.shutdown(Duration::from_secs(1)).await;
    let space = open_with_clock(&disk, &d, &clock);
    assert!(
        space.checkpoint_location().is_some(),
        "restored from the snapshot"
    );
    assert_eq!(space.state_image(), before);
    assert_eq!(space.message("q", c.id).unwrap().state, MessageState::Dead);
    space.shutdown(Duration::from_secs(1)).await;
}

/// `attempts` counts every request, the acknowledged one included, and survives a restart.
#[tokio::test]
async fn a_delivery_acknowledged_at_the_first_try_shows_one_attempt() {
    let disk = SimDisk::new(45);
    let d = Recorder::new(ack);
    let space = open(Arc::new(disk.clone()), &d);
    let patch = settings(serde_json::json!({"retention": {"delivered": "1h"}}));
    space.put_queue("q", &patch).await.unwrap();
    subscribe(&space, "q", A).await;
    let m = space.publish("q", msg("x")).await.unwrap();
    eventually("delivered", || {
        space.message("q", m.id).map(|i| i.state).ok() == Some(MessageState::Delivered)
    })
    .await;
    assert_eq!(space.message("q", m.id).unwrap().deliveries[0].attempts, 1);
    space.shutdown(Duration::from_secs(1)).await;
    let space = open(Arc::new(disk), &d);
    assert_eq!(space.message("q", m.id).unwrap().deliveries[0].attempts, 1);
    space.shutdown(Duration::from_secs(1)).await;
}

/// A body that cannot be read back fails the attempt like a failed delivery: it is retried on
/// the queue's schedule, and dead only once `max_attempts` are spent.
#[tokio::test]
async fn an_unreadable_body_is_retried_like_a_failed_delivery() {
    let disk = SimDisk::new(46);
    // Too large to be kept among the recent bodies: every attempt reads it from the log.
    let body = "x".repeat(100 * 1024) + "end-of-a-unique-body";
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = first.clone();
    let d = Recorder::new(move |a: &Attempt| {
        if seen.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return fail(a);
        }
        ack(a)
    });
    let space = open(Arc::new(disk.clone()), &d);
    let patch = settings(serde_json::json!({
        "retry": {"max_attempts": 4, "initial_backoff": "100ms", "max_backoff": "100ms"}
    }));
    space.put_queue("q", &patch).await.unwrap();
    subscribe(&space, "q", A).await;
    let m = space.publish("q", msg(&body)).await.unwrap();
    eventually("the first attempt failed", || d.to(A).len() == 1).await;
    // The record is damaged while the message waits out its backoff.
    let name = disk
        .file_names()
        .into_iter()
        .find(|n| n.ends_with(".log"))
        .unwrap();
    let mut content = disk.read_file(&name).unwrap();
    let at = content
        .windows(20)
        .position(|w| w == b"end-of-a-unique-body")
        .unwrap();
    content[at] ^= 0x01;
    disk.overwrite_file(&name, content);
    eventually("dead after every attempt", || {
        space.message("q", m.id).map(|i| i.state).ok() == Some(MessageState::Dead)
    })
    .await;
    let info = space.message("q", m.id).unwrap();
    assert_eq!(
        info.deliveries[0].attempts, 4,
        "retried, not given up at once"
    );
    let error = info.deliveries[0].last_error.clone().unwrap();
    assert!(error.contains("body unreadable"), "{error}");
    assert_eq!(d.to(A).len(), 1, "nothing unreadable was sent");
    assert_eq!(space.totals().unreadable_bodies, 3);
    space.shutdown(Duration::from_secs(1)).await;
}

/// Messages waiting out a long backoff hold no delivery slot: with `max_in_flight: 2` and two
/// messages refused, the healthy ones published after them still go at once.
#[tokio::test]
async fn messages_waiting_for_a_retry_hold_no_delivery_slot() {
    let disk = SimDisk::new(47);
    let d = Recorder::new(by_body("refused"));
    let space = open(Arc::new(disk), &d);
    let patch = settings(serde_json::json!({
        "retry": {"max_attempts": 0, "initial_backoff": "1h", "max_backoff": "1h"}
    }));
    space.put_queue("q", &patch).await.unwrap();
    space
        .add_subscriber(
            "q",
            SubscriberSpec {
                endpoint: A.into(),
                handler: HandlerKind::Webhook,
                secret: None,
                max_in_flight: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for _ in 0..2 {
        space.publish("q", msg("refused")).await.unwrap();
    }
    eventually("both refused once", || d.to(A).len() == 2).await;
    let mut healthy = Vec::new();
    for i in 0..20 {
        healthy.push(
            space
                .publish("q", msg(&format!("ok {i}")))
                .await
                .unwrap()
                .id,
        );
    }
    eventually("every healthy message delivered", || {
        let got = d.to(A);
        healthy.iter().all(|m| got.contains(m))
    })
    .await;
    space.shutdown(Duration::from_secs(1)).await;
}

/// The other side of the rule above: a subscriber that is down does not get every message of a
/// backlog tried at once. After a run of failures its dispatcher sends only the retries it has
/// scheduled, each making room for one new message; the first ack resumes it, and the backlog
/// drains.
#[tokio::test]
async fn a_subscriber_that_is_down_is_not_tried_with_the_whole_backlog() {
    let disk = SimDisk::new(48);
    let d = Recorder::new(fail);
    let space = open(Arc::new(disk), &d);
    let patch = settings(serde_json::json!({
        "retry": {"max_attempts": 0, "initial_backoff": "200ms", "max_backoff": "200ms"}
    }));
    space.put_queue("q", &patch).await.unwrap();
    subscribe(&space, "q", A).await;
    let mut all = Vec::new();
    for i in 0..500 {
        all.push(space.publish("q", msg(&format!("m{i}"))).await.unwrap().id);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tried: std::collections::HashSet<MessageId> = d.to(A).into_iter().collect();
    // On its retry schedule, and on the wire.
    let bound = space::limits::FAILURES_TO_HOLD_NEW_MESSAGES as usize
        + space::limits::MAX_IN_FLIGHT_DEFAULT as usize;
    assert!(
        tried.len() <= bound,
        "{} messages tried while the subscriber was down (bound {bound})",
        tried.len()
    );
    d.set(ack);
    eventually("the backlog drained once the subscriber came back", || {
        let got: std::collections::HashSet<MessageId> = d.to(A).into_iter().collect();
        all.iter().all(|m| got.contains(m))
    })
    .await;
    space.shutdown(Duration::from_secs(1)).await;
}

/// Background maintenance first runs one interval after open, never at once: a Space just
/// rebuilt shows what its log made (a restart compared right away, as the model tests do,
/// found it already swept).
#[tokio::test]
async fn maintenance_waits_one_interval_after_open() {
    let disk = SimDisk::new(44);
    let clock = Arc::new(ManualClock::new(T0));
    let d = Recorder::new(fail);
    let open_swept_hourly = || {
        let config = SpaceConfig {
            clock: clock.clone(),
            sweep_interval: Duration::from_secs(3600),
            ..config()
        };
        Space::open(Arc::new(disk.clone()), config, d.clone())
            .unwrap()
            .0
    };
    let space = open_swept_hourly();
    let patch = settings(serde_json::json!({
        "retry": {"max_attempts": 1},
        "retention": {"dead": "1s"}
    }));
    space.put_queue("q", &patch).await.unwrap();
    subscribe(&space, "q", A).await;
    let m = space.publish("q", msg("m")).await.unwrap();
    eventually("the message dead", || {
        space.message("q", m.id).map(|m| m.state).ok() == Some(MessageState::Dead)
    })
    .await;
    space.shutdown(Duration::from_secs(1)).await;
    clock.advance_ms(2_000);

    let space = open_swept_hourly();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        space.message("q", m.id).map(|m| m.state).ok(),
        Some(MessageState::Dead),
        "swept right after open"
    );
    space.sweep().await;
    assert!(space.message("q", m.id).is_err(), "retention is over");
    space.shutdown(Duration::from_secs(1)).await;
}
