//! Delivery lanes: a subscriber's attempts go through long-lived lanes that keep a channel
//! for the deliverer between attempts, and an idle lane ends (its channel dropped) after
//! `lane_idle`.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use space::{Attempt, Channel, Deliverer, Outcome, Space, SpaceConfig, SubscriberSpec};
use storage::sim::SimDisk;

/// What a lane keeps: a numbered "connection" that counts its drops.
struct Conn {
    id: usize,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Acknowledges everything and records which connection each attempt went over.
#[derive(Default)]
struct Connections {
    made: AtomicUsize,
    dropped: Arc<AtomicUsize>,
    used: Mutex<Vec<usize>>,
}

impl Deliverer for Connections {
    fn deliver(&self, _: Attempt) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        panic!("the Space delivers through lanes");
    }

    fn deliver_on<'a>(
        &'a self,
        _: Attempt,
        channel: &'a mut Channel,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(async move {
            let conn = match channel.take::<Conn>() {
                Some(conn) => *conn,
                None => Conn {
                    id: self.made.fetch_add(1, Ordering::SeqCst),
                    dropped: self.dropped.clone(),
                },
            };
            self.used.lock().unwrap().push(conn.id);
            channel.put(conn);
            Outcome::Acked
        })
    }
}

fn open(d: &Arc<Connections>, lane_idle: Duration) -> Space {
    let config = SpaceConfig {
        lane_idle,
        ..config()
    };
    Space::open(Arc::new(SimDisk::new(60)), config, d.clone())
        .unwrap()
        .0
}

async fn subscribe_one_at_a_time(space: &Space) {
    space
        .add_subscriber(
            "q",
            SubscriberSpec {
                endpoint: A.into(),
                handler: space::HandlerKind::Webhook,
                secret: None,
                max_in_flight: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lane_keeps_its_channel_between_attempts() {
    let d = Arc::new(Connections::default());
    let space = open(&d, Duration::from_secs(60));
    space.put_queue("q", &fast_retries(3)).await.unwrap();
    subscribe_one_at_a_time(&space).await;
    for n in 0..5 {
        space.publish("q", msg(&format!("m{n}"))).await.unwrap();
        eventually("delivered", || d.used.lock().unwrap().len() == n + 1).await;
    }
    assert_eq!(
        *d.used.lock().unwrap(),
        vec![0; 5],
        "one connection for all"
    );
    assert_eq!(d.dropped.load(Ordering::SeqCst), 0);
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_idle_lane_ends_and_a_new_one_takes_the_next_message() {
    let d = Arc::new(Connections::default());
    let space = open(&d, Duration::from_millis(100));
    space.put_queue("q", &fast_retries(3)).await.unwrap();
    subscribe_one_at_a_time(&space).await;
    space.publish("q", msg("first")).await.unwrap();
    eventually("delivered", || d.used.lock().unwrap().len() == 1).await;
    eventually("the idle lane ended, its connection dropped", || {
        d.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    space.publish("q", msg("second")).await.unwrap();
    eventually("delivered", || d.used.lock().unwrap().len() == 2).await;
    assert_eq!(
        *d.used.lock().unwrap(),
        vec![0, 1],
        "a new lane, a new connection"
    );
    space.shutdown(Duration::from_secs(1)).await;
}
