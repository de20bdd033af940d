//! Batched delivery: a subscriber whose `batch` takes more than one message gets whatever is
//! ready for it in one request, up to its bounds, never waiting for a batch to fill; each
//! message of a batch has its own outcome; a child never shares a batch with its parent; the
//! setting survives restarts, from the log and from a checkpoint.

mod common;

use std::future::Future;
use std::pin::Pin;

use common::*;
use space::{Batching, Channel, Deliverer};
use tokio::sync::Semaphore;

/// Which messages a subscriber refuses.
type Refuses = dyn Fn(&Attempt) -> bool + Send;

/// Records every request (the ids it carried) and answers each message by `fails`; each
/// request first waits for a permit of `gate` (open by default).
struct Batches {
    requests: Mutex<Vec<Vec<MessageId>>>,
    fails: Mutex<Box<Refuses>>,
    gate: Arc<Semaphore>,
}

impl Batches {
    fn new() -> Arc<Batches> {
        Arc::new(Batches {
            requests: Mutex::default(),
            fails: Mutex::new(Box::new(|_| false)),
            gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        })
    }

    fn requests(&self) -> Vec<Vec<MessageId>> {
        self.requests.lock().unwrap().clone()
    }

    fn sizes(&self) -> Vec<usize> {
        self.requests().iter().map(Vec::len).collect()
    }

    fn delivered(&self) -> Vec<MessageId> {
        self.requests().concat()
    }
}

impl Deliverer for Batches {
    fn deliver(&self, _: Attempt) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        panic!("a batching subscriber gets batches");
    }

    fn deliver_batch_on<'a>(
        &'a self,
        batch: Vec<Attempt>,
        _: &'a mut Channel,
    ) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'a>> {
        Box::pin(async move {
            self.gate.acquire().await.unwrap().forget();
            self.requests
                .lock()
                .unwrap()
                .push(batch.iter().map(|a| a.message).collect());
            let fails = self.fails.lock().unwrap();
            batch
                .iter()
                .map(|a| {
                    if fails(a) {
                        Outcome::Failed {
                            error: "listed as failed".into(),
                            retry_after: None,
                        }
                    } else {
                        Outcome::Acked
                    }
                })
                .collect()
        })
    }
}

fn spec(max_messages: u32, max_bytes: u32, max_in_flight: u32) -> SubscriberSpec {
    SubscriberSpec {
        endpoint: A.into(),
        handler: HandlerKind::Webhook,
        secret: None,
        max_in_flight,
        batch: Batching {
            max_messages,
            max_bytes,
        },
        ..Default::default()
    }
}

fn open_with(backend: Arc<dyn Backend>, d: &Arc<Batches>) -> Space {
    Space::open(backend, config(), d.clone()).unwrap().0
}

/// A subscriber with one request in flight, held at the gate while `n` messages are
/// published behind it: they then go out in batches of what is ready.
async fn held_then_released(max_messages: u32, max_bytes: u32, bodies: &[usize]) -> Vec<usize> {
    let d = Batches::new();
    let space = open_with(Arc::new(SimDisk::new(60)), &d);
    space.put_queue("q", &fast_retries(3)).await.unwrap();
    space
        .add_subscriber("q", spec(max_messages, max_bytes, 1))
        .await
        .unwrap();
    d.gate.forget_permits(Semaphore::MAX_PERMITS);
    let mut ids = Vec::new();
    for (n, len) in bodies.iter().enumerate() {
        let body = format!("{n:>len$}");
        ids.push(space.publish("q", msg(&body)).await.unwrap().id);
        if n == 0 {
            // The first goes out alone at once: nothing waits for a batch to fill.
            eventually("the first request is held", || {
                d.gate.available_permits() == 0
                    && space.queue_info("q").unwrap().counts.delivering == 1
            })
            .await;
        }
    }
    d.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    eventually("all delivered", || d.delivered().len() == bodies.len()).await;
    assert_eq!(d.delivered(), ids, "in publish order, each once");
    space.shutdown(Duration::from_secs(1)).await;
    d.sizes()
}

#[tokio::test]
async fn a_batch_takes_what_is_ready_up_to_max_messages() {
    assert_eq!(held_then_released(50, 1 << 20, &[10; 10]).await, vec![1, 9]);
    assert_eq!(
        held_then_released(4, 1 << 20, &[10; 10]).await,
        vec![1, 4, 4, 1]
    );
}

#[tokio::test]
async fn a_batch_stays_within_max_bytes_and_a_larger_message_goes_alone() {
    // Bodies of 100 bytes under a bound of 250: two per batch.
    assert_eq!(
        held_then_released(50, 250, &[100; 7]).await,
        vec![1, 2, 2, 2]
    );
    // A message over the bound on its own; the bound is never crossed around it.
    assert_eq!(
        held_then_released(50, 250, &[10, 100, 100, 400, 100]).await,
        vec![1, 2, 1, 1]
    );
    // Exactly at the bound: one batch.
    assert_eq!(
        held_then_released(50, 200, &[10, 100, 100]).await,
        vec![1, 2]
    );
}

#[tokio::test]
async fn a_message_failed_in_a_batch_is_retried_and_the_rest_are_acknowledged_once() {
    let d = Batches::new();
    let space = open_with(Arc::new(SimDisk::new(60)), &d);
    space.put_queue("q", &fast_retries(5)).await.unwrap();
    space
        .add_subscriber("q", spec(100, 1 << 20, 1))
        .await
        .unwrap();
    d.gate.forget_permits(Semaphore::MAX_PERMITS);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(space.publish("q", msg(&format!("m{n}"))).await.unwrap().id);
    }
    let refused = ids[3];
    let tries = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = tries.clone();
    *d.fails.lock().unwrap() = Box::new(move |a: &Attempt| {
        a.message == refused && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
    });
    d.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    eventually("every message delivered", || {
        let c = space.queue_info("q").unwrap().counts;
        d.delivered().len() == 8 && c.ready + c.delivering == 0
    })
    .await;
    let sent = d.delivered();
    for id in &ids {
        let times = sent.iter().filter(|m| *m == id).count();
        assert_eq!(times, if *id == refused { 3 } else { 1 }, "{id}");
    }
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_child_never_shares_a_batch_with_its_parent() {
    let d = Batches::new();
    let space = open_with(Arc::new(SimDisk::new(60)), &d);
    space.put_queue("q", &fast_retries(3)).await.unwrap();
    space
        .add_subscriber("q", spec(100, 1 << 20, 4))
        .await
        .unwrap();
    d.gate.forget_permits(Semaphore::MAX_PERMITS);
    // Four chains of five, published while every request is held.
    let mut chains = vec![Vec::new(); 4];
    for link in 0..5 {
        for chain in chains.iter_mut() {
            let m = match chain.last() {
                None => msg("root"),
                Some(parent) => child("link", *parent),
            };
            chain.push(space.publish("q", m).await.unwrap().id);
        }
        let _ = link;
    }
    d.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    eventually("all delivered", || d.delivered().len() == 20).await;
    let requests = d.requests();
    for chain in &chains {
        let batch_of = |id: &MessageId| requests.iter().position(|r| r.contains(id)).unwrap();
        for pair in chain.windows(2) {
            assert!(
                batch_of(&pair[0]) < batch_of(&pair[1]),
                "a child in the batch of its parent or before it: {requests:?}"
            );
        }
    }
    // Released children of different chains share batches.
    assert!(requests.iter().any(|r| r.len() > 1), "{requests:?}");
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_batch_setting_survives_restarts_from_the_log_and_a_checkpoint() {
    let disk = Arc::new(SimDisk::new(60));
    let d = Batches::new();
    let space = open_with(disk.clone(), &d);
    space.put_queue("q", &fast_retries(3)).await.unwrap();
    space.add_subscriber("q", spec(64, 4096, 2)).await.unwrap();
    let batch = |space: &Space| space.queue_info("q").unwrap().subscribers[0].batch;
    let want = Batching {
        max_messages: 64,
        max_bytes: 4096,
    };
    assert_eq!(batch(&space), want);
    disk.crash();
    drop(space);
    disk.restart();
    let space = open_with(disk.clone(), &d);
    assert_eq!(batch(&space), want, "replayed from the log");
    space.reclaim().await.unwrap();
    space.shutdown(Duration::from_secs(1)).await;
    let space = open_with(disk.clone(), &d);
    assert!(space.checkpoint_location().is_some());
    assert_eq!(batch(&space), want, "restored from a checkpoint");
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn batch_bounds_are_checked_at_their_edges() {
    let d = Batches::new();
    let space = open_with(Arc::new(SimDisk::new(60)), &d);
    space.put_queue("q", &fast_retries(3)).await.unwrap();
    let mut n = 0;
    let mut add = |max_messages, max_bytes, handler| {
        n += 1;
        let spec = SubscriberSpec {
            endpoint: format!("http://127.0.0.1:1/{n}"),
            handler,
            ..spec(max_messages, max_bytes, 1)
        };
        let space = space.clone();
        async move { space.add_subscriber("q", spec).await.map(|_| ()) }
    };
    let web = HandlerKind::Webhook;
    assert!(add(1, 1, web).await.is_ok());
    assert!(add(1000, 16 << 20, web).await.is_ok());
    for (m, b) in [(0, 1024), (1001, 1024), (10, 0), (10, (16 << 20) + 1)] {
        let e = add(m, b, web).await.unwrap_err();
        assert!(e.to_string().contains("batch"), "{e}");
    }
    assert!(add(1, 1024, HandlerKind::Legacy).await.is_ok());
    let e = add(2, 1024, HandlerKind::Legacy).await.unwrap_err();
    assert!(e.to_string().contains("legacy"), "{e}");
    space.shutdown(Duration::from_secs(1)).await;
}
