//! Explain and lineage: why a message waits, named down to the root blocker with its pending
//! deliveries, and the graph around it, bounded.

mod common;

use std::future::Future;
use std::pin::Pin;

use common::*;
use space::{Channel, Deliverer, Verdict};
use tokio::sync::Semaphore;

fn slow_retries(policy: &str, max_attempts: u32) -> SettingsPatch {
    serde_json::from_value(serde_json::json!({
        "retry": {"max_attempts": max_attempts, "initial_backoff": "1h", "max_backoff": "1h"},
        "retention": {"delivered": "1h", "dead": "1h"},
        "on_parent_dead": policy,
    }))
    .unwrap()
}

/// A Space whose queue `q` has one subscriber that fails every attempt, retried an hour
/// apart, `max_attempts` in all, under the `on_parent_dead` policy named.
async fn failing_queue(policy: &str, max_attempts: u32) -> (Arc<Recorder>, Space, u64) {
    let d = Recorder::new(fail);
    let space = open(Arc::new(SimDisk::new(60)), &d);
    space
        .put_queue("q", &slow_retries(policy, max_attempts))
        .await
        .unwrap();
    let sub = subscribe(&space, "q", A).await;
    (d, space, sub)
}

/// A chain root → … of `n` messages.
async fn chain(space: &Space, n: usize) -> Vec<MessageId> {
    let mut ids: Vec<MessageId> = Vec::new();
    for i in 0..n {
        let m = match ids.last() {
            None => msg("root"),
            Some(p) => child(&format!("link {i}"), *p),
        };
        ids.push(space.publish("q", m).await.unwrap().id);
    }
    ids
}

#[tokio::test]
async fn a_waiting_message_names_its_root_blocker_and_why_it_waits() {
    let (d, space, sub) = failing_queue("wait", 0).await;
    let ids = chain(&space, 3).await;
    eventually("the root failed once", || !d.to(A).is_empty()).await;
    eventually("its retry is scheduled", || {
        space.explain("q", ids[0]).unwrap().verdict == Verdict::RetryScheduled
    })
    .await;

    let root = space.explain("q", ids[0]).unwrap();
    assert_eq!(root.pending.len(), 1);
    let p = &root.pending[0];
    assert_eq!(
        (p.subscriber, p.verdict, p.attempts),
        (sub, Verdict::RetryScheduled, 1)
    );
    assert_eq!(p.last_error.as_deref(), Some("HTTP 500"));
    let retry_at = p.next_attempt_at_ms.expect("a retry time");
    assert!(root.blockers.is_empty() && root.root_blocker.is_none());
    assert_eq!(root.next_change_at_ms, Some(retry_at));

    let last = space.explain("q", ids[2]).unwrap();
    assert_eq!(last.state, MessageState::Waiting);
    assert_eq!(last.verdict, Verdict::WaitingForParent);
    let chain: Vec<_> = last
        .blockers
        .iter()
        .map(|b| (b.id, b.depth, b.verdict))
        .collect();
    assert_eq!(
        chain,
        vec![
            (ids[1], 1, Some(Verdict::WaitingForParent)),
            (ids[0], 2, Some(Verdict::RetryScheduled)),
        ]
    );
    assert_eq!(last.root_blocker, Some(ids[0]));
    assert_eq!(last.blockers[1].pending[0].attempts, 1);
    assert_eq!(
        last.next_change_at_ms,
        Some(retry_at),
        "when the root is tried again"
    );
    let health = &last.subscribers[0];
    assert_eq!(health.id, sub);
    assert_eq!(health.consecutive_failures, 1);
    assert_eq!(health.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(health.last_success_at_ms, None);
    assert!(!last.truncated);
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_dead_root_is_named_and_its_children_say_so_under_each_policy() {
    for (policy, child_verdict) in [
        ("wait", Verdict::WaitingForParent),
        ("dead_letter", Verdict::ParentDead),
    ] {
        let (_d, space, _) = failing_queue(policy, 1).await;
        let ids = chain(&space, 3).await;
        eventually("the root is dead", || {
            space.explain("q", ids[0]).unwrap().verdict == Verdict::Dead
        })
        .await;
        let e = space.explain("q", ids[2]).unwrap();
        assert_eq!(e.verdict, child_verdict, "{policy}");
        assert_eq!(e.root_blocker, Some(ids[0]), "{policy}");
        let root = e.blockers.last().unwrap();
        assert_eq!(root.verdict, Some(Verdict::Dead), "{policy}");
        assert_eq!(root.state, Some(MessageState::Dead), "{policy}");
        space.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_delivered_message_says_so_and_unknown_ids_are_not_found() {
    let d = Recorder::new(ack);
    let space = open(Arc::new(SimDisk::new(60)), &d);
    space
        .put_queue("q", &slow_retries("wait", 3))
        .await
        .unwrap();
    let sub = subscribe(&space, "q", A).await;
    let m = space.publish("q", msg("x")).await.unwrap().id;
    eventually("delivered", || {
        space.explain("q", m).unwrap().verdict == Verdict::Delivered
    })
    .await;
    let e = space.explain("q", m).unwrap();
    assert!(e.pending.is_empty() && e.blockers.is_empty());
    let health = e.subscribers.iter().find(|s| s.id == sub).unwrap();
    assert!(health.last_success_at_ms.is_some());
    assert_eq!(health.consecutive_failures, 0);
    let unknown = space::ids::message_id(1, 1, 999);
    assert!(matches!(
        space.explain("q", unknown),
        Err(MessageError::MessageNotFound(_))
    ));
    assert!(matches!(
        space.lineage("q", unknown, 1, 1, 10),
        Err(MessageError::MessageNotFound(_))
    ));
    space.shutdown(Duration::from_secs(1)).await;
}

/// Holds every attempt until released.
struct Held {
    gate: Semaphore,
}

impl Deliverer for Held {
    fn deliver(&self, _: Attempt) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        panic!("lanes deliver");
    }

    fn deliver_on<'a>(
        &'a self,
        _: Attempt,
        _: &'a mut Channel,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(async move {
            self.gate.acquire().await.unwrap().forget();
            Outcome::Acked
        })
    }
}

#[tokio::test]
async fn an_attempt_on_the_wire_and_a_saturated_subscriber_are_told_apart() {
    let d = Arc::new(Held {
        gate: Semaphore::new(0),
    });
    let space = Space::open(Arc::new(SimDisk::new(60)), config(), d.clone())
        .unwrap()
        .0;
    space
        .put_queue("q", &slow_retries("wait", 3))
        .await
        .unwrap();
    let spec = SubscriberSpec {
        endpoint: A.into(),
        handler: HandlerKind::Webhook,
        secret: None,
        max_in_flight: 1,
        ..Default::default()
    };
    space.add_subscriber("q", spec).await.unwrap();
    let first = space.publish("q", msg("first")).await.unwrap().id;
    let second = space.publish("q", msg("second")).await.unwrap().id;
    eventually("the first is on the wire", || {
        space.explain("q", first).unwrap().verdict == Verdict::InFlight
    })
    .await;
    let e = space.explain("q", second).unwrap();
    assert_eq!(e.verdict, Verdict::SubscriberSaturated);
    assert_eq!(e.subscribers[0].in_flight, 1);
    assert_eq!(e.subscribers[0].max_in_flight, 1);
    d.gate.add_permits(2);
    eventually("both delivered", || {
        space.explain("q", second).unwrap().verdict == Verdict::Delivered
    })
    .await;
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_walk_up_is_bounded() {
    let (_d, space, _) = failing_queue("wait", 0).await;
    let depth = space::limits::EXPLAIN_DEPTH_MAX as usize;
    let ids = chain(&space, depth + 3).await;
    let e = space.explain("q", *ids.last().unwrap()).unwrap();
    assert!(e.truncated);
    assert_eq!(e.blockers.len(), depth);
    let e = space.explain("q", ids[depth]).unwrap();
    assert!(!e.truncated, "exactly at the bound: the root is reached");
    assert_eq!(e.root_blocker, Some(ids[0]));
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_lineage_holds_ancestors_and_descendants_within_its_bounds() {
    let (_d, space, _) = failing_queue("wait", 0).await;
    // root → a → (b, c); b → d.
    let root = space.publish("q", msg("root")).await.unwrap().id;
    let a = space.publish("q", child("a", root)).await.unwrap().id;
    let b = space.publish("q", child("b", a)).await.unwrap().id;
    let c = space.publish("q", child("c", a)).await.unwrap().id;
    let dd = space.publish("q", child("d", b)).await.unwrap().id;
    let g = space.lineage("q", a, 32, 32, 500).unwrap();
    let mut nodes: Vec<_> = g.nodes.iter().map(|n| n.id).collect();
    nodes.sort();
    assert_eq!(nodes, vec![root, a, b, c, dd]);
    let mut edges = g.edges.clone();
    edges.sort();
    let mut want = vec![(root, a), (a, b), (a, c), (b, dd)];
    want.sort();
    assert_eq!(edges, want);
    assert!(!g.truncated);
    assert!(g.nodes.iter().all(|n| n.state.is_some()));
    assert_eq!(g.nodes[0].id, a, "the message itself first");

    let g = space.lineage("q", a, 0, 1, 500).unwrap();
    let ids: Vec<_> = g.nodes.iter().map(|n| n.id).collect();
    assert_eq!(ids, vec![a, b, c]);
    assert!(g.truncated, "cut above and below");
    let g = space.lineage("q", a, 32, 32, 2).unwrap();
    assert_eq!(g.nodes.len(), 2);
    assert!(g.truncated, "cut at the limit");

    // Discarded, the root is no longer held: marked removed, the walk ends there.
    space.discard("q", root).await.unwrap();
    let g = space.lineage("q", b, 32, 0, 500).unwrap();
    let states: Vec<_> = g.nodes.iter().map(|n| (n.id, n.state.is_some())).collect();
    assert_eq!(states, vec![(b, true), (a, true), (root, false)]);
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_subtree_redrive_brings_back_children_dead_with_their_parent_in_order() {
    let (d, space, _) = failing_queue("dead_letter", 1).await;
    // root → a → b, and root → c; an unrelated dead message beside them.
    let root = space.publish("q", msg("root")).await.unwrap().id;
    let a = space.publish("q", child("a", root)).await.unwrap().id;
    let b = space.publish("q", child("b", a)).await.unwrap().id;
    let c = space.publish("q", child("c", root)).await.unwrap().id;
    let other = space.publish("q", msg("other")).await.unwrap().id;
    let dead = |id| space.message("q", id).unwrap().state == MessageState::Dead;
    eventually("all dead", || [root, a, b, c, other].into_iter().all(dead)).await;

    use space::RedriveScope::{Message, Subtree};
    // A dry run counts and changes nothing.
    assert_eq!(
        space
            .redrive_scoped("q", root, Subtree, true)
            .await
            .unwrap(),
        4
    );
    assert!([root, a, b, c].into_iter().all(dead));
    // Below the root only: a and b.
    assert_eq!(
        space.redrive_scoped("q", a, Subtree, true).await.unwrap(),
        2
    );

    d.set(ack);
    let sent_before = d.attempts().len();
    assert_eq!(
        space
            .redrive_scoped("q", root, Subtree, false)
            .await
            .unwrap(),
        4
    );
    eventually("the subtree delivered", || {
        [root, a, b, c]
            .into_iter()
            .all(|id| space.message("q", id).unwrap().state == MessageState::Delivered)
    })
    .await;
    assert!(dead(other), "outside the subtree: untouched");
    let order: Vec<MessageId> = d.attempts()[sent_before..]
        .iter()
        .map(|(_, m, _)| *m)
        .collect();
    let at = |id| order.iter().position(|m| *m == id).unwrap();
    assert!(
        at(root) < at(a) && at(a) < at(b) && at(root) < at(c),
        "{order:?}"
    );
    // Nothing dead left in scope: refused as with one message.
    assert!(matches!(
        space.redrive_scoped("q", root, Subtree, false).await,
        Err(MessageError::NotDead(_))
    ));
    assert!(matches!(
        space.redrive_scoped("q", root, Message, true).await,
        Err(MessageError::NotDead(_))
    ));
    space.shutdown(Duration::from_secs(1)).await;
}

/// Fails every attempt while `failing`, then leaves every attempt hanging.
struct FailThenHang {
    failing: std::sync::atomic::AtomicBool,
}

impl Deliverer for FailThenHang {
    fn deliver(&self, _: Attempt) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let failing = self.failing.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if failing {
                fail_now()
            } else {
                std::future::pending().await
            }
        })
    }
}

fn fail_now() -> Outcome {
    Outcome::Failed {
        error: "HTTP 500".into(),
        retry_after: None,
    }
}

#[tokio::test]
async fn a_subtree_redrive_survives_a_restart_as_it_was_applied() {
    let disk = Arc::new(SimDisk::new(60));
    let d = Arc::new(FailThenHang {
        failing: true.into(),
    });
    let open_with =
        |d: &Arc<FailThenHang>| Space::open(disk.clone(), config(), d.clone()).unwrap().0;
    let space = open_with(&d);
    space
        .put_queue("q", &slow_retries("dead_letter", 1))
        .await
        .unwrap();
    subscribe(&space, "q", A).await;
    let ids = chain(&space, 3).await;
    let state = |space: &Space, id| space.message("q", id).unwrap().state;
    eventually("all dead", || {
        ids.iter()
            .all(|id| state(&space, *id) == MessageState::Dead)
    })
    .await;
    d.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    space
        .redrive_scoped("q", ids[0], space::RedriveScope::Subtree, false)
        .await
        .unwrap();
    let waiting = |space: &Space| {
        ids[1..]
            .iter()
            .all(|id| state(space, *id) == MessageState::Waiting)
    };
    assert!(
        waiting(&space),
        "children redriven with their parent wait for it"
    );
    let before = space.state_image();
    disk.crash();
    drop(space);
    disk.restart();
    let space = open_with(&d);
    assert!(waiting(&space), "and still after a crash");
    assert_eq!(
        space.state_image().queues[0].messages,
        before.queues[0].messages
    );
    space.shutdown(Duration::from_millis(100)).await;
}

/// A replay sends a delivered subtree again in its order — a child only after its replayed
/// parents, a join after all of them — or, as new, publishes copies wired the same way, each
/// naming the message it copies; a dry run counts and changes nothing; what is not delivered
/// cannot be replayed; the copies keep `replay_of` across a restart.
#[tokio::test]
async fn a_replay_resends_a_delivered_subtree_in_order_or_copies_it() {
    let disk = Arc::new(SimDisk::new(61));
    let d = Recorder::with_jitter(ack);
    let space = open(disk.clone(), &d);
    space
        .put_queue("q", &slow_retries("wait", 5))
        .await
        .unwrap();
    subscribe(&space, "q", A).await;
    let root = space.publish("q", msg("root")).await.unwrap().id;
    let left = space.publish("q", child("left", root)).await.unwrap().id;
    let right = space.publish("q", child("right", root)).await.unwrap().id;
    let end = space
        .publish("q", join("end", &[left, right]))
        .await
        .unwrap()
        .id;
    let all = [root, left, right, end];
    let delivered = |space: &Space, ids: &[MessageId]| {
        ids.iter().all(|id| {
            space.message("q", *id).map(|m| m.state).ok() == Some(MessageState::Delivered)
        })
    };
    eventually("the subtree is delivered", || delivered(&space, &all)).await;

    let subtree = space::ReplayOptions {
        scope: space::RedriveScope::Subtree,
        as_new: false,
        dry_run: true,
    };
    let dry = space.replay("q", root, subtree).await.unwrap();
    assert_eq!((dry.replayed, dry.missing.len()), (4, 0));
    assert_eq!(d.to(A).len(), 4, "a dry run sends nothing");

    let done = space
        .replay(
            "q",
            root,
            space::ReplayOptions {
                dry_run: false,
                ..subtree
            },
        )
        .await
        .unwrap();
    assert_eq!(done.replayed, 4);
    eventually("sent again, all of it", || d.to(A).len() == 8).await;
    eventually("delivered again", || delivered(&space, &all)).await;
    // The second time round, each child is sent only after its parent's answer.
    let timeline = d.timeline.lock().unwrap().clone();
    let sent: Vec<MessageId> = timeline
        .iter()
        .filter(|e| e.0 == "sent")
        .map(|e| e.2)
        .collect();
    let answered: Vec<MessageId> = timeline
        .iter()
        .filter(|e| e.0 == "answered")
        .map(|e| e.2)
        .collect();
    let at = |kind: &str, id: MessageId| {
        timeline
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0 == kind && e.2 == id)
            .nth(1)
            .map(|(i, _)| i)
    };
    assert_eq!((sent.len(), answered.len()), (8, 8));
    for (parent, kid) in [(root, left), (root, right), (left, end), (right, end)] {
        assert!(
            at("answered", parent) < at("sent", kid),
            "a replayed child went before its replayed parent was answered"
        );
    }

    let copied = space
        .replay(
            "q",
            root,
            space::ReplayOptions {
                as_new: true,
                dry_run: false,
                ..subtree
            },
        )
        .await
        .unwrap();
    assert_eq!(copied.copies.len(), 4);
    for (copy, of) in copied.copies.iter().zip(all) {
        assert_eq!(space.message("q", *copy).unwrap().replay_of, Some(of));
    }
    let end_copy = space.message("q", copied.copies[3]).unwrap();
    assert_eq!(
        end_copy.parents.as_slice(),
        &copied.copies[1..3],
        "the copy of the join waits for the copies of its parents"
    );
    eventually("the copies are delivered", || {
        delivered(&space, &copied.copies)
    })
    .await;

    // Only what is delivered replays.
    d.set(fail);
    let pending = space.publish("q", msg("pending")).await.unwrap().id;
    assert!(matches!(
        space
            .replay("q", pending, space::ReplayOptions { dry_run: false, ..subtree })
            .await,
        Err(space::MessageError::NotDelivered(id)) if id == pending
    ));
    space.shutdown(Duration::from_millis(100)).await;
    let space = open(disk, &d);
    assert_eq!(
        space.message("q", copied.copies[0]).unwrap().replay_of,
        Some(root),
        "kept across a restart"
    );
    space.shutdown(Duration::from_millis(100)).await;
}
