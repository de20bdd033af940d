//! The feed tells every death: a subscriber giving up on a message, and the children that die
//! with it — for every subscriber at once, or under per-subscriber causality for one.

mod common;

use common::*;
use space::{FeedEvent, Happened};

fn dead_letter_queue(causality: &str) -> SettingsPatch {
    serde_json::from_value(serde_json::json!({
        "retry": {"max_attempts": 1},
        "retention": {"dead": "1h"},
        "on_parent_dead": "dead_letter",
        "causality": causality,
    }))
    .unwrap()
}

/// The deaths told so far: (message, subscriber, reason).
fn deaths(seen: &[FeedEvent]) -> Vec<(MessageId, Option<u64>, storage::DeadReason)> {
    seen.iter()
        .filter_map(|e| match e.what {
            Happened::DeadLettered { subscriber, reason } => Some((e.message, subscriber, reason)),
            _ => None,
        })
        .collect()
}

async fn drain(
    w: &mut space::Watcher,
    seen: &mut Vec<FeedEvent>,
    until: impl Fn(&[FeedEvent]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(seen) {
        let got = tokio::time::timeout_at(deadline, w.events.recv()).await;
        seen.push(got.expect("the feed told everything in time").unwrap());
    }
}

#[tokio::test]
async fn children_dead_with_their_parent_are_told() {
    for causality in ["global", "per_subscriber"] {
        let d = Recorder::new(fail);
        let space = open(Arc::new(SimDisk::new(63)), &d);
        space
            .put_queue("q", &dead_letter_queue(causality))
            .await
            .unwrap();
        let sub = subscribe(&space, "q", A).await;
        let mut w = space.watch();
        let parent = space.publish("q", msg("parent")).await.unwrap().id;
        let child = space.publish("q", child("child", parent)).await.unwrap().id;
        let mut seen = Vec::new();
        drain(&mut w, &mut seen, |s| deaths(s).len() == 2).await;
        let told = deaths(&seen);
        assert!(
            told.contains(&(parent, Some(sub), storage::DeadReason::MaxAttempts)),
            "{causality}: {told:?}"
        );
        let child_for = if causality == "global" {
            None
        } else {
            Some(sub)
        };
        assert!(
            told.contains(&(child, child_for, storage::DeadReason::ParentDead)),
            "{causality}: {told:?}"
        );
        space.shutdown(Duration::from_millis(100)).await;
    }
}
