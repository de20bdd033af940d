//! What the Space's integration tests share: a scripted in-process deliverer that records
//! every attempt, and small helpers.
#![allow(dead_code, unused_imports)]

pub use std::collections::HashMap;
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use bytes::Bytes;
pub use space::{
    Attempt, Deliverer, HandlerKind, MessageError, MessageId, MessageState, NewMessage, Outcome,
    PublishError, QueueError, SettingsPatch, Space, SpaceConfig, SubscriberSpec,
};
pub use storage::io::{Backend, FsBackend};
pub use storage::sim::SimDisk;

pub type Script = dyn Fn(&Attempt) -> Outcome + Send + Sync;
/// ("sent" or "answered", endpoint, message).
pub type TimelineEntry = (&'static str, String, MessageId);

/// Records every attempt and answers as the test says.
pub struct Recorder {
    pub attempts: Mutex<Vec<(String, MessageId, u32)>>,
    pub script: Mutex<Arc<Script>>,
    /// Every send and every answer, in the order they happened: ("sent"|"answered", id).
    pub timeline: Arc<Mutex<Vec<TimelineEntry>>>,
    /// Answers take a pseudo-random 0–3 ms, so that concurrent deliveries overlap.
    pub jitter: bool,
}

impl Recorder {
    pub fn new(script: impl Fn(&Attempt) -> Outcome + Send + Sync + 'static) -> Arc<Recorder> {
        Arc::new(Recorder {
            attempts: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(script)),
            timeline: Arc::default(),
            jitter: false,
        })
    }

    pub fn with_jitter(
        script: impl Fn(&Attempt) -> Outcome + Send + Sync + 'static,
    ) -> Arc<Recorder> {
        Arc::new(Recorder {
            attempts: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(script)),
            timeline: Arc::default(),
            jitter: true,
        })
    }

    pub fn set(&self, script: impl Fn(&Attempt) -> Outcome + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    pub fn attempts(&self) -> Vec<(String, MessageId, u32)> {
        self.attempts.lock().unwrap().clone()
    }

    /// Messages acknowledged-or-attempted by an endpoint, in order.
    pub fn to(&self, endpoint: &str) -> Vec<MessageId> {
        self.attempts()
            .into_iter()
            .filter(|(e, _, _)| e == endpoint)
            .map(|(_, m, _)| m)
            .collect()
    }
}

impl Deliverer for Recorder {
    fn deliver(
        &self,
        a: Attempt,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> {
        self.attempts
            .lock()
            .unwrap()
            .push((a.endpoint.to_string(), a.message, a.number));
        let outcome = (self.script.lock().unwrap())(&a);
        let endpoint = a.endpoint.to_string();
        let timeline = self.timeline.clone();
        timeline
            .lock()
            .unwrap()
            .push(("sent", endpoint.clone(), a.message));
        let delay = if self.jitter {
            Duration::from_micros(fastrand::u64(0..3000))
        } else {
            Duration::ZERO
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            timeline
                .lock()
                .unwrap()
                .push(("answered", endpoint, a.message));
            outcome
        })
    }
}

pub fn ack(_: &Attempt) -> Outcome {
    Outcome::Acked
}

pub fn fail(_: &Attempt) -> Outcome {
    Outcome::Failed {
        error: "HTTP 500".into(),
        retry_after: None,
    }
}

pub fn config() -> SpaceConfig {
    SpaceConfig::new(storage::Config {
        segment_bytes: 256 * 1024,
        ..storage::Config::default()
    })
}

pub fn open(backend: Arc<dyn Backend>, d: &Arc<Recorder>) -> Space {
    Space::open(backend, config(), d.clone()).unwrap().0
}

pub fn fast_retries(max_attempts: u32) -> SettingsPatch {
    serde_json::from_value(serde_json::json!({
        "retry": {"max_attempts": max_attempts, "initial_backoff": "1ms", "max_backoff": "5ms"}
    }))
    .unwrap()
}

pub async fn subscribe(space: &Space, queue: &str, endpoint: &str) -> u64 {
    space
        .add_subscriber(
            queue,
            SubscriberSpec {
                endpoint: endpoint.into(),
                handler: HandlerKind::Webhook,
                secret: None,
                max_in_flight: 8,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .0
        .id
}

pub fn msg(body: &str) -> NewMessage {
    NewMessage {
        body: Bytes::copy_from_slice(body.as_bytes()),
        content_type: Some("text/plain".into()),
        idempotency_key: None,
        ..Default::default()
    }
}

pub fn child(body: &str, parent: MessageId) -> NewMessage {
    NewMessage {
        parents: vec![parent],
        ..msg(body)
    }
}

/// A message that waits for every one of `parents`.
pub fn join(body: &str, parents: &[MessageId]) -> NewMessage {
    NewMessage {
        parents: parents.to_vec(),
        ..msg(body)
    }
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

pub const A: &str = "http://127.0.0.1:1/a";
pub const B: &str = "http://127.0.0.1:1/b";
