//! Queues, subscribers, discard and redrive.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use storage::Record;
use tokio::sync::{Notify, Semaphore, watch};

use crate::error::SpaceError;
use crate::ids;
use crate::queue::{QueueState, Subscriber, SubscriberSpec, Wake};
use crate::scheduler::{MessageId, MessageState, SUBSCRIBERS_PER_QUEUE_MAX, SubscriberId};
use crate::settings::{QueueSettings, SettingsPatch};

use super::*;

/// Checks a queue name against SPEC §4.
pub fn validate_queue_name(name: &str) -> Result<(), SpaceError> {
    let ok = !name.is_empty()
        && name.len() <= limits::QUEUE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpaceError::InvalidQueueName(name.to_owned()))
    }
}

pub(super) fn validate_endpoint(endpoint: &str) -> Result<(), SpaceError> {
    let bad = |why: &str| SpaceError::InvalidEndpoint(format!("{endpoint:?}: {why}"));
    if endpoint.len() > limits::ENDPOINT_BYTES_MAX {
        return Err(bad("longer than 2048 bytes"));
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

/// Decodes a `whsec_<base64>` secret into its HMAC key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SpaceError> {
    use base64::Engine;
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or(SpaceError::InvalidSecret)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SpaceError::InvalidSecret)?;
    if key.is_empty() {
        return Err(SpaceError::InvalidSecret);
    }
    Ok(key)
}

impl Space {
    /// The body of [`Space::put_queue`], run on its own task by it.
    pub(super) async fn put_queue_now(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(QueueInfo, bool), SpaceError> {
        validate_queue_name(name)?;
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let existing = self.queue(name).ok();
        let (number, settings) = match &existing {
            Some(q) => {
                let st = q.lock();
                (st.number, st.settings.merged(patch)?)
            }
            None => {
                let number = self.inner.next_queue_number.load(Ordering::Relaxed);
                if number > ids::QUEUE_NUMBER_MAX {
                    return Err(SpaceError::Internal("queue numbers exhausted".into()));
                }
                (number, QueueSettings::default().merged(patch)?)
            }
        };
        let json = Bytes::from(
            serde_json::to_vec(&StoredQueue { number, settings })
                .map_err(|e| SpaceError::Internal(e.to_string()))?,
        );
        let created = existing.is_none();
        let record = if created {
            Record::QueueCreated {
                queue: name.to_owned(),
                settings: json,
            }
        } else {
            Record::QueueUpdated {
                queue: name.to_owned(),
                settings: json,
            }
        };
        self.inner.log.append(std::slice::from_ref(&record)).await?;
        let stored = match &record {
            Record::QueueCreated { settings, .. } | Record::QueueUpdated { settings, .. } => {
                serde_json::from_slice::<StoredQueue>(settings)
                    .map_err(|e| SpaceError::Internal(e.to_string()))?
            }
            _ => unreachable!("built above"),
        };
        match existing {
            Some(q) => q.lock().set_settings(stored.settings),
            None => {
                self.inner
                    .next_queue_number
                    .store(stored.number + 1, Ordering::Relaxed);
                let q = Arc::new(Queue {
                    state: Mutex::new(QueueState::new(name, stored.number, stored.settings)),
                });
                self.inner
                    .queues
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned(), q.clone());
                self.inner
                    .by_number
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(stored.number, q);
            }
        }
        Ok((self.queue_info(name)?, created))
    }

    /// The body of [`Space::delete_queue`], run on its own task by it.
    pub(super) async fn delete_queue_now(&self, name: &str) -> Result<(), SpaceError> {
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let q = self.queue(name)?;
        self.inner
            .log
            .append(&[Record::QueueDeleted {
                queue: name.to_owned(),
            }])
            .await?;
        let number = {
            let mut st = q.lock();
            st.deleted = true;
            for s in st.subscribers.values() {
                let _ = s.stop.send(true);
            }
            st.number
        };
        self.inner
            .queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.inner
            .by_number
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&number);
        Ok(())
    }

    pub fn queue_names(&self) -> Vec<String> {
        self.inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn queue_info(&self, name: &str) -> Result<QueueInfo, SpaceError> {
        let q = self.queue(name)?;
        let st = q.lock();
        Ok(QueueInfo {
            name: name.to_owned(),
            settings: st.settings,
            subscribers: st
                .subscribers
                .iter()
                .map(|(id, s)| subscriber_info(*id, s))
                .collect(),
            counts: st.sched.counts(),
            bytes: st.undelivered_bytes,
            oldest_undelivered_age_ms: st
                .oldest_undelivered_age(now_ms())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// The body of [`Space::add_subscriber`], run on its own task by it.
    pub(super) async fn add_subscriber_now(
        &self,
        queue: &str,
        spec: SubscriberSpec,
    ) -> Result<(SubscriberInfo, bool), SpaceError> {
        validate_endpoint(&spec.endpoint)?;
        if let Some(allow) = &self.inner.endpoint_allow
            && !allow.allows(&spec.endpoint)
        {
            return Err(SpaceError::EndpointNotAllowed(spec.endpoint));
        }
        if spec.max_in_flight == 0 || spec.max_in_flight > limits::MAX_IN_FLIGHT_MAX {
            return Err(SpaceError::InvalidMaxInFlight(spec.max_in_flight));
        }
        if let Some(secret) = &spec.secret {
            decode_secret(secret)?;
        }
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        {
            let st = q.lock();
            if let Some((id, s)) = st
                .subscribers
                .iter()
                .find(|(_, s)| s.spec.endpoint == spec.endpoint)
            {
                return Ok((subscriber_info(*id, s), false));
            }
            if st.subscribers.len() >= SUBSCRIBERS_PER_QUEUE_MAX {
                return Err(SpaceError::TooManySubscribers);
            }
        }
        let id = self.inner.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.inner
            .log
            .append(&[Record::SubscriberAdded {
                queue: queue.to_owned(),
                subscriber: id,
                endpoint: spec.endpoint.clone(),
                handler: spec.handler.name().to_owned(),
                secret: spec.secret.clone(),
                max_in_flight: spec.max_in_flight,
            }])
            .await?;
        let info = {
            let mut st = q.lock();
            add_subscriber_state(&mut st, id, spec)?;
            subscriber_info(id, &st.subscribers[&id])
        };
        self.spawn_dispatcher(q, id);
        Ok((info, true))
    }

    pub fn subscribers(&self, queue: &str) -> Result<Vec<SubscriberInfo>, SpaceError> {
        Ok(self.queue_info(queue)?.subscribers)
    }

    /// The body of [`Space::remove_subscriber`], run on its own task by it.
    pub(super) async fn remove_subscriber_now(
        &self,
        queue: &str,
        id: SubscriberId,
    ) -> Result<(), SpaceError> {
        let _admin = self.inner.admin.lock().await;
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        if !q.lock().subscribers.contains_key(&id) {
            return Err(SpaceError::SubscriberNotFound(id));
        }
        self.inner
            .log
            .append(&[Record::SubscriberRemoved {
                queue: queue.to_owned(),
                subscriber: id,
            }])
            .await?;
        let mut wake = Vec::new();
        remove_subscriber_state(&mut q.lock(), id, now_ms(), &mut wake);
        wake_all(wake);
        Ok(())
    }

    /// The body of [`Space::discard`], run on its own task by it.
    pub(super) async fn discard_now(&self, queue: &str, id: MessageId) -> Result<(), SpaceError> {
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        if !q.lock().sched.contains(id) {
            return Err(SpaceError::MessageNotFound(id));
        }
        let now = now_ms();
        self.inner
            .log
            .append(&[Record::Discarded {
                message: id,
                discarded_at_ms: now,
            }])
            .await?;
        let mut wake = Vec::new();
        q.lock()
            .remove(id, now, &mut wake)
            .map_err(|_| SpaceError::MessageNotFound(id))?;
        wake_all(wake);
        Ok(())
    }

    /// The body of [`Space::redrive`], run on its own task by it.
    pub(super) async fn redrive_now(&self, queue: &str, id: MessageId) -> Result<(), SpaceError> {
        let _gate = self.inner.gate.read().await;
        let q = self.queue(queue)?;
        let subscribers = {
            let st = q.lock();
            if !st.sched.contains(id) {
                return Err(SpaceError::MessageNotFound(id));
            }
            let has_dead = st
                .deliveries
                .iter()
                .any(|((m, _), i)| *m == id && i.dead.is_some())
                || st.sched.state(id) == Some(MessageState::Dead);
            if !has_dead {
                return Err(SpaceError::NotDead(id));
            }
            st.subscribers.keys().copied().collect::<Vec<_>>()
        };
        let now = now_ms();
        self.inner
            .log
            .append(&[Record::Redriven {
                message: id,
                subscribers,
                redriven_at_ms: now,
            }])
            .await?;
        let mut wake = Vec::new();
        q.lock().redrive(id, now, &mut wake).map_err(|e| match e {
            crate::ScheduleError::NotDead(_) => SpaceError::NotDead(id),
            _ => SpaceError::MessageNotFound(id),
        })?;
        wake_all(wake);
        Ok(())
    }

    /// Redrives every dead message of a queue; returns how many.
    pub async fn redrive_all(&self, queue: &str) -> Result<u64, SpaceError> {
        let ids: Vec<MessageId> = {
            let q = self.queue(queue)?;
            let st = q.lock();
            let mut ids: Vec<_> = st
                .deliveries
                .iter()
                .filter(|(_, i)| i.dead.is_some())
                .map(|((m, _), _)| *m)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut n = 0;
        for id in ids {
            match self.redrive(queue, id).await {
                Ok(()) => n += 1,
                Err(SpaceError::NotDead(_) | SpaceError::MessageNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

pub(super) fn subscriber_info(id: SubscriberId, s: &Subscriber) -> SubscriberInfo {
    SubscriberInfo {
        id,
        endpoint: s.spec.endpoint.clone(),
        handler: s.spec.handler,
        max_in_flight: s.spec.max_in_flight,
        has_secret: s.spec.secret.is_some(),
    }
}

pub(crate) fn add_subscriber_state(
    st: &mut QueueState,
    id: SubscriberId,
    spec: SubscriberSpec,
) -> Result<(), SpaceError> {
    let key = match &spec.secret {
        Some(s) => Some(Arc::<[u8]>::from(decode_secret(s)?)),
        None => None,
    };
    let slot = st
        .sched
        .add_subscriber(id)
        .map_err(|_| SpaceError::TooManySubscribers)?;
    let (stop, _) = watch::channel(false);
    st.subscribers.insert(
        id,
        Subscriber {
            slot,
            limit: Arc::new(Semaphore::new(spec.max_in_flight as usize)),
            endpoint: Arc::from(spec.endpoint.as_str()),
            spec,
            key,
            notify: Arc::new(Notify::new()),
            stop,
        },
    );
    Ok(())
}

pub(super) fn remove_subscriber_state(
    st: &mut QueueState,
    id: SubscriberId,
    now: u64,
    wake: &mut Wake,
) {
    if let Some(s) = st.subscribers.remove(&id) {
        let _ = s.stop.send(true);
        st.deliveries.retain(|(_, sub), _| *sub != Some(id));
        if let Ok(events) = st.sched.remove_subscriber(s.slot) {
            st.handle(events, now, wake);
        }
    }
}
