//! Queues and subscribers: created, updated, removed. Each change holds the admin lock (they
//! reach the log in the order they apply), then the gate, then its queue's order lock
//! exclusively (no publish or outcome of the queue is between its append and its effect).
//! Append, then apply; a dispatcher is started only after its subscriber is applied.

use std::sync::Arc;

use storage::Record;

use super::{Queue, Space, wake_all};
use crate::error::{QueueError, SubscriberError};
use crate::limits::{ENDPOINT_BYTES_MAX, MAX_IN_FLIGHT_MAX, QUEUE_NAME_BYTES_MAX};
use crate::model::SubscriberId;
use crate::queue::{QueueState, Subscriber, SubscriberSpec};
use crate::settings::{QueueSettings, SettingsPatch};
use crate::types::{QueueInfo, SubscriberInfo};

/// Checks a queue name: 1 to 128 of `A-Z a-z 0-9 . _ -`, not `.` or `..` (which clients and
/// browsers resolve away as path segments).
pub fn validate_queue_name(name: &str) -> Result<(), QueueError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= QUEUE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidQueueName(name.to_owned()))
    }
}

fn validate_endpoint(endpoint: &str) -> Result<(), SubscriberError> {
    let bad = |why: &str| SubscriberError::InvalidEndpoint(format!("{endpoint:?}: {why}"));
    if endpoint.len() > ENDPOINT_BYTES_MAX {
        return Err(bad(&format!("longer than {ENDPOINT_BYTES_MAX} bytes")));
    }
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| bad("not an absolute http or https URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("no host"));
    }
    Ok(())
}

fn settings_bytes(settings: &QueueSettings) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(settings).unwrap_or_default())
}

pub(super) fn subscriber_info(id: SubscriberId, s: &Subscriber, now_ms: u64) -> SubscriberInfo {
    let spec = &s.spec;
    let health = s.health();
    SubscriberInfo {
        id,
        endpoint: spec.endpoint.clone(),
        handler: spec.handler,
        max_in_flight: spec.max_in_flight,
        has_secret: spec.secret.is_some(),
        batch: spec.batch,
        headers: spec.headers.iter().map(|(n, _)| n.clone()).collect(),
        state: spec.state,
        rate_limit: spec.rate_limit,
        types: spec.types.clone(),
        previous_secret_until_ms: spec
            .previous_secret
            .as_ref()
            .map(|p| p.until_ms)
            .filter(|until| *until > now_ms),
        in_flight: health.in_flight,
        consecutive_failures: health.consecutive_failures,
        last_success_at_ms: health.last_success_at_ms,
        last_error: health.last_error,
        attempt_duration: s.attempt_duration.snapshot(),
    }
}

impl Space {
    /// Creates a queue, or updates its settings if it exists (nested fields left out keep
    /// their values). Returns the queue and whether it was created.
    pub async fn put_queue(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(QueueInfo, bool), QueueError> {
        validate_queue_name(name)?;
        let (this, name, patch) = (self.clone(), name.to_owned(), patch.clone());
        Self::complete(async move { this.put_queue_now(&name, &patch).await }).await
    }

    async fn put_queue_now(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(QueueInfo, bool), QueueError> {
        let _admin = self.inner.admin.lock().await;
        let created = match self.inner.registry.get(name) {
            Ok(q) => {
                let change = self.inner.journal.change().await;
                let _order = q.order.write().await;
                let (number, settings) = {
                    let st = q.lock();
                    (st.number(), st.settings().merged(patch)?)
                };
                change
                    .append(&[Record::QueueUpdated {
                        queue: number,
                        settings: settings_bytes(&settings),
                    }])
                    .await?;
                let mut wake = Vec::new();
                q.lock().apply_settings(settings, &mut wake);
                wake_all(wake);
                false
            }
            Err(_) => {
                let settings = QueueSettings::default().merged(patch)?;
                let number = self.inner.registry.take_queue_number()?;
                let change = self.inner.journal.change().await;
                change
                    .append(&[Record::QueueCreated {
                        queue: number,
                        name: name.to_owned(),
                        settings: settings_bytes(&settings),
                    }])
                    .await?;
                let mut st = QueueState::new(name, number, settings);
                st.go_live(self.inner.settler.sender(), self.inner.feed.sender());
                self.inner.registry.insert(Arc::new(Queue::new(st)));
                true
            }
        };
        Ok((self.queue_info(name)?, created))
    }

    /// Deletes a queue and its messages; its subscribers' tasks stop. Publishes to it that
    /// were under way finish first (their records come before the deletion).
    pub async fn delete_queue(&self, name: &str) -> Result<(), QueueError> {
        let (this, name) = (self.clone(), name.to_owned());
        Self::complete(async move { this.delete_queue_now(&name).await }).await
    }

    async fn delete_queue_now(&self, name: &str) -> Result<(), QueueError> {
        let _admin = self.inner.admin.lock().await;
        let q = self.inner.registry.get(name)?;
        let change = self.inner.journal.change().await;
        let _order = q.order.write().await;
        let number = q.lock().number();
        change
            .append_freeing(&[Record::QueueDeleted { queue: number }])
            .await?;
        q.lock().apply_deleted();
        self.inner.registry.remove(name, number);
        Ok(())
    }

    /// Adds a subscriber; the same endpoint twice returns the existing one (`false`).
    pub async fn add_subscriber(
        &self,
        queue: &str,
        spec: SubscriberSpec,
    ) -> Result<(SubscriberInfo, bool), SubscriberError> {
        validate_endpoint(&spec.endpoint)?;
        if let Err(why) = self.inner.endpoint_policy.check_endpoint(&spec.endpoint) {
            return Err(SubscriberError::EndpointNotAllowed(why));
        }
        if spec.max_in_flight == 0 || spec.max_in_flight > MAX_IN_FLIGHT_MAX {
            return Err(SubscriberError::InvalidMaxInFlight(spec.max_in_flight));
        }
        spec.validate()?;
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.add_subscriber_now(&queue, spec).await }).await
    }

    async fn add_subscriber_now(
        &self,
        queue: &str,
        spec: SubscriberSpec,
    ) -> Result<(SubscriberInfo, bool), SubscriberError> {
        let _admin = self.inner.admin.lock().await;
        let q = self.inner.registry.get(queue)?;
        let change = self.inner.journal.change().await;
        let _order = q.order.write().await;
        let number = {
            let st = q.lock();
            if let Some((id, s)) = st
                .subscribers()
                .find(|(_, s)| s.spec.endpoint == spec.endpoint)
            {
                return Ok((subscriber_info(id, s, self.now_ms()), false));
            }
            if st.subscribers().count() >= crate::limits::SUBSCRIBERS_PER_QUEUE_MAX {
                return Err(SubscriberError::TooManySubscribers);
            }
            st.number()
        };
        let id = self.inner.registry.take_subscriber_id();
        change
            .append(&[Record::SubscriberAdded {
                queue: number,
                subscriber: id,
                endpoint: spec.endpoint.clone(),
                handler: spec.handler.name().to_owned(),
                secret: spec.secret.clone(),
                max_in_flight: spec.max_in_flight,
                options: spec.options(),
            }])
            .await?;
        let info = {
            let mut st = q.lock();
            st.apply_subscriber_added(id, spec)?;
            let s = st
                .subscriber(id)
                .ok_or(SubscriberError::SubscriberNotFound(id))?;
            subscriber_info(id, s, self.now_ms())
        };
        self.spawn_dispatcher(q.clone(), id);
        Ok((info, true))
    }

    /// Removes a subscriber: pending deliveries to it are dropped, and messages no longer wait
    /// for it (a message it gave up on is delivered if every other subscriber acknowledged it).
    pub async fn remove_subscriber(
        &self,
        queue: &str,
        id: SubscriberId,
    ) -> Result<(), SubscriberError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move { this.remove_subscriber_now(&queue, id).await }).await
    }

    async fn remove_subscriber_now(
        &self,
        queue: &str,
        id: SubscriberId,
    ) -> Result<(), SubscriberError> {
        let _admin = self.inner.admin.lock().await;
        let q = self.inner.registry.get(queue)?;
        let change = self.inner.journal.change().await;
        let _order = q.order.write().await;
        let number = {
            let st = q.lock();
            if st.subscriber(id).is_none() {
                return Err(SubscriberError::SubscriberNotFound(id));
            }
            st.number()
        };
        let now = self.now_ms();
        change
            .append_freeing(&[Record::SubscriberRemoved {
                queue: number,
                subscriber: id,
                removed_at_ms: now,
            }])
            .await?;
        let mut wake = Vec::new();
        q.lock().apply_subscriber_removed(id, now, &mut wake);
        wake_all(wake);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Attempt, Deliverer, Outcome};
    use std::pin::Pin;
    use std::time::Duration;

    struct Down;

    impl Deliverer for Down {
        fn deliver(
            &self,
            _: Attempt,
        ) -> Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> {
            Box::pin(async {
                Outcome::Failed {
                    error: "down".into(),
                    retry_after: None,
                }
            })
        }
    }

    fn open() -> Space {
        let disk = storage::sim::SimDisk::new(9);
        let config = crate::SpaceConfig::new(storage::Config::default());
        Space::open(Arc::new(disk), config, Arc::new(Down))
            .unwrap()
            .0
    }

    #[test]
    fn queue_names_are_bounded_and_never_a_dot_segment() {
        for ok in ["q", "a.b", "...", ".hidden", "x-y_z.9", &"n".repeat(128)] {
            assert!(validate_queue_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"n".repeat(129)] {
            assert!(validate_queue_name(bad).is_err(), "{bad}");
        }
    }

    /// A publish holds its queue's order lock (shared) from before its append until it is
    /// applied: a deletion waits for it, so no publish is appended after the deletion it raced.
    #[tokio::test]
    async fn deleting_a_queue_waits_for_the_publishes_under_way() {
        let space = open();
        space
            .put_queue("q", &SettingsPatch::default())
            .await
            .unwrap();
        let q = space.inner.registry.get("q").unwrap();
        let publishing = q.order.read().await;
        let s = space.clone();
        let deleting = tokio::spawn(async move { s.delete_queue("q").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!deleting.is_finished(), "deleted under a publish");
        assert!(space.queue_info("q").is_ok());
        drop(publishing);
        deleting.await.unwrap().unwrap();
        assert!(space.queue_info("q").is_err());
        // Created again, it is another queue: a new number.
        space
            .put_queue("q", &SettingsPatch::default())
            .await
            .unwrap();
        let again = space.inner.registry.get("q").unwrap();
        assert_ne!(again.lock().number(), q.lock().number());
    }
}
