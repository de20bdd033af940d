//! Changes users make to messages: discard and redrive. Each holds its queue's order lock
//! exclusively from its append to its effect in memory: neither commutes with the outcomes of
//! deliveries (a redrive undoes a dead letter; a discard releases children).

use storage::Record;

use super::{Space, wake_all};
use crate::error::MessageError;
use crate::model::MessageId;
use crate::scheduler::ScheduleError;

/// Redriven records appended at once by a bulk redrive (each names at most 64 subscribers).
const REDRIVES_PER_APPEND: usize = 1000;

/// What a redrive of one message takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedriveScope {
    /// The message alone.
    Message,
    /// The message and every dead message below it.
    Subtree,
}

/// What a redrive names.
#[derive(Debug, Clone, Copy)]
enum Redrive {
    One {
        id: MessageId,
        scope: RedriveScope,
        dry_run: bool,
    },
    /// Every dead message of the queue.
    All,
}

impl Redrive {
    /// One message alone: an error about it is the caller's.
    fn single(self) -> bool {
        matches!(
            self,
            Redrive::One {
                scope: RedriveScope::Message,
                ..
            }
        )
    }

    fn dry_run(self) -> bool {
        matches!(self, Redrive::One { dry_run: true, .. })
    }
}

fn message_error(id: MessageId) -> impl Fn(ScheduleError) -> MessageError {
    move |e| match e {
        ScheduleError::NotDead(_) => MessageError::NotDead(id),
        _ => MessageError::MessageNotFound(id),
    }
}

impl Space {
    /// Discards a message: it is no longer delivered, and its waiting children go on.
    pub async fn discard(&self, queue: &str, id: MessageId) -> Result<(), MessageError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.discard_now(&queue, id).await }).await
    }

    async fn discard_now(&self, queue: &str, id: MessageId) -> Result<(), MessageError> {
        let q = self.inner.registry.get(queue)?;
        let change = self.inner.journal.change().await;
        let _order = q.order.write().await;
        {
            let st = q.lock();
            if st.is_deleted() {
                return Err(MessageError::QueueNotFound(queue.to_owned()));
            }
            if !st.contains(id) {
                return Err(MessageError::MessageNotFound(id));
            }
        }
        let now = self.now_ms();
        change
            .append_freeing(&[Record::Discarded {
                message: id,
                discarded_at_ms: now,
            }])
            .await?;
        let mut wake = Vec::new();
        q.lock()
            .apply_discarded(id, now, &mut wake)
            .map_err(message_error(id))?;
        wake_all(wake);
        Ok(())
    }

    /// Sends a dead message again to the subscribers that did not acknowledge it, attempts
    /// starting over.
    pub async fn redrive(&self, queue: &str, id: MessageId) -> Result<(), MessageError> {
        self.redrive_scoped(queue, id, RedriveScope::Message, false)
            .await
            .map(|_| ())
    }

    /// Redrives a message, or (`Subtree`) it and every dead message below it, parents before
    /// their children: children dead with their parent (`parent_dead`) come back waiting for
    /// it. Returns how many messages were (with `dry_run`, would be) redriven; a dry run
    /// changes nothing. Nothing dead in scope is `NotDead`.
    pub async fn redrive_scoped(
        &self,
        queue: &str,
        id: MessageId,
        scope: RedriveScope,
        dry_run: bool,
    ) -> Result<u64, MessageError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        let what = Redrive::One { id, scope, dry_run };
        Self::complete(async move { this.redrive_now(&queue, what).await }).await
    }

    /// Redrives every dead message of a queue; returns how many.
    pub async fn redrive_all(&self, queue: &str) -> Result<u64, MessageError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.redrive_now(&queue, Redrive::All).await }).await
    }

    /// Redrives what `what` names as one change.
    async fn redrive_now(&self, queue: &str, what: Redrive) -> Result<u64, MessageError> {
        let q = self.inner.registry.get(queue)?;
        let change = self.inner.journal.change().await;
        let _order = q.order.write().await;
        let now = self.now_ms();
        let records: Vec<Record> = {
            let st = q.lock();
            if st.is_deleted() {
                return Err(MessageError::QueueNotFound(queue.to_owned()));
            }
            let ids = match what {
                Redrive::One {
                    id,
                    scope: RedriveScope::Message,
                    ..
                } => vec![id],
                Redrive::One {
                    id,
                    scope: RedriveScope::Subtree,
                    ..
                } => st.subtree(id).ok_or(MessageError::MessageNotFound(id))?,
                Redrive::All => st.dead_message_ids(),
            };
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                match st.redrive_targets(id) {
                    Ok(subscribers) => records.push(Record::Redriven {
                        message: id,
                        subscribers,
                        redriven_at_ms: now,
                    }),
                    Err(e) if what.single() => return Err(message_error(id)(e)),
                    Err(_) => {}
                }
            }
            if let Redrive::One { id, .. } = what
                && records.is_empty()
            {
                return Err(MessageError::NotDead(id));
            }
            records
        };
        if what.dry_run() {
            return Ok(records.len() as u64);
        }
        for chunk in records.chunks(REDRIVES_PER_APPEND) {
            change.append(chunk).await?;
            let mut wake = Vec::new();
            {
                let mut st = q.lock();
                for r in chunk {
                    if let Record::Redriven { message, .. } = r {
                        let _ = st.apply_redriven(*message, now, &mut wake);
                    }
                }
            }
            wake_all(wake);
        }
        Ok(records.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::delivery::{Attempt, Deliverer, Outcome};
    use crate::settings::SettingsPatch;
    use crate::{HandlerKind, Space, SubscriberSpec};

    fn message() -> crate::NewMessage {
        crate::NewMessage {
            body: bytes::Bytes::from_static(b"x"),
            content_type: None,
            idempotency_key: None,
            ..Default::default()
        }
    }

    struct Refuse;

    impl Deliverer for Refuse {
        fn deliver(
            &self,
            _: Attempt,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> {
            Box::pin(async {
                Outcome::Failed {
                    error: "HTTP 500".into(),
                    retry_after: None,
                }
            })
        }
    }

    /// A redrive undoes dead letters, so it must not interleave with outcomes of the same
    /// queue: it waits for those under way (they hold the queue's order lock shared).
    #[tokio::test]
    async fn a_redrive_waits_for_the_outcomes_under_way() {
        let disk = storage::sim::SimDisk::new(12);
        let config = crate::SpaceConfig::new(storage::Config::default());
        let space = Space::open(Arc::new(disk), config, Arc::new(Refuse))
            .unwrap()
            .0;
        let patch: SettingsPatch =
            serde_json::from_value(serde_json::json!({"retry": {"max_attempts": 1}})).unwrap();
        space.put_queue("q", &patch).await.unwrap();
        space
            .add_subscriber(
                "q",
                SubscriberSpec {
                    endpoint: "http://127.0.0.1:1/".into(),
                    handler: HandlerKind::Webhook,
                    secret: None,
                    max_in_flight: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let m = space.publish("q", message()).await.unwrap();
        for _ in 0..200 {
            if space.message("q", m.id).map(|i| i.state).ok() == Some(crate::MessageState::Dead) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let q = space.inner.registry.get("q").unwrap();
        let outcome_under_way = q.order.read().await;
        let s = space.clone();
        let redriving = tokio::spawn(async move { s.redrive("q", m.id).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!redriving.is_finished(), "redriven under an outcome");
        drop(outcome_under_way);
        redriving.await.unwrap().unwrap();
    }

    /// A queue deleted while a discard or redrive waits for its order lock: the change is
    /// refused as for a queue that is gone, and nothing is appended for it.
    #[tokio::test]
    async fn changes_that_waited_out_a_deletion_find_no_queue() {
        let disk = storage::sim::SimDisk::new(13);
        let config = crate::SpaceConfig::new(storage::Config::default());
        let space = Space::open(Arc::new(disk), config, Arc::new(Refuse))
            .unwrap()
            .0;
        space
            .put_queue("q", &SettingsPatch::default())
            .await
            .unwrap();
        let m = space.publish("q", message()).await.unwrap();
        let q = space.inner.registry.get("q").unwrap();
        let under_way = q.order.read().await;
        let s = space.clone();
        let discarding = tokio::spawn(async move { s.discard("q", m.id).await });
        let s = space.clone();
        let redriving = tokio::spawn(async move { s.redrive_all("q").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.lock().apply_deleted();
        drop(under_way);
        let gone = |r: Result<_, crate::MessageError>| matches!(r, Err(crate::MessageError::QueueNotFound(name)) if name == "q");
        assert!(gone(discarding.await.unwrap()));
        assert!(gone(redriving.await.unwrap().map(|_| ())));
    }
}
