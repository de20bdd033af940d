//! The latency histograms: each live acknowledgement counts once (an attempt's duration, a
//! message's first delivery, each child it releases), and a restart's replay counts nothing.

mod common;

use common::*;
use space::SubscriberUpdate;

#[tokio::test]
async fn live_deliveries_are_observed_once_and_replay_observes_nothing() {
    let disk = Arc::new(SimDisk::new(62));
    let d = Recorder::new(ack);
    let space = open(disk.clone(), &d);
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    let sub = subscribe(&space, "q", A).await;
    let second = subscribe(&space, "q", B).await;
    // Paused while both are published: the child surely waits for its parent.
    for s in [sub, second] {
        space
            .update_subscriber("q", s, SubscriberUpdate::Pause)
            .await
            .unwrap();
    }
    let parent = space.publish("q", msg("parent")).await.unwrap().id;
    space.publish("q", child("child", parent)).await.unwrap();
    for s in [sub, second] {
        space
            .update_subscriber("q", s, SubscriberUpdate::Resume)
            .await
            .unwrap();
    }
    eventually("four acknowledgements", || space.totals().acked == 4).await;

    let info = space.queue_info("q").unwrap();
    assert_eq!(info.first_delivery.count, 2, "the first of two acks counts");
    assert_eq!(info.release.count, 1, "one child released");
    for s in &info.subscribers {
        assert_eq!(s.attempt_duration.count, 2, "subscriber {}", s.id);
    }

    space.shutdown(Duration::from_millis(100)).await;
    let space = open(disk, &d);
    let info = space.queue_info("q").unwrap();
    assert_eq!(
        (info.first_delivery.count, info.release.count),
        (0, 0),
        "the replay of the acks observed nothing"
    );
    space.shutdown(Duration::from_millis(100)).await;
}
