//! What can change of a subscriber while it keeps its messages and its place: pausing and
//! resuming it, rotating its secret, its rate limit, and disabling it after `disable_after` of
//! nothing but failures. Each change is one path: the admin lock, the gate, the queue's order
//! lock (exclusive), a `SubscriberUpdated` record with the whole new spec, then its effect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use storage::Record;

use super::{Queue, Space};
use crate::error::SubscriberError;
use crate::limits::SECRET_GRACE_MAX;
use crate::model::SubscriberId;
use crate::queue::{PreviousSecret, RateLimit, SubscriberSpec, SubscriberState, decode_secret};
use crate::types::SubscriberInfo;

/// A change to a subscriber that keeps it, its messages and its place in them.
#[derive(Clone)]
pub enum SubscriberUpdate {
    /// It receives nothing until resumed; its messages wait (neither sent nor dead-lettered).
    Pause,
    /// A paused or disabled subscriber takes its messages again, in order.
    Resume,
    /// A new `whsec_` secret. For `grace` (at most [`SECRET_GRACE_MAX`]) every request is
    /// signed with both the new and the current secret, so a receiver can switch at any
    /// moment of it; a rotation during a grace period drops the oldest secret.
    RotateSecret { secret: String, grace: Duration },
    /// At most this many messages a second (`None`: no limit).
    RateLimit(Option<RateLimit>),
    /// The event types it takes from now on (`None`: every message). Messages already
    /// accepted keep their fan-out sets.
    Types(Option<Vec<String>>),
}

impl std::fmt::Debug for SubscriberUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubscriberUpdate::Pause => f.write_str("Pause"),
            SubscriberUpdate::Resume => f.write_str("Resume"),
            SubscriberUpdate::RotateSecret { grace, .. } => f
                .debug_struct("RotateSecret")
                .field("grace", grace)
                .finish_non_exhaustive(),
            SubscriberUpdate::RateLimit(r) => f.debug_tuple("RateLimit").field(r).finish(),
            SubscriberUpdate::Types(t) => f.debug_tuple("Types").field(t).finish(),
        }
    }
}

/// What a change makes of a spec.
enum Change {
    /// Changes asked for together, applied in order.
    User(Vec<SubscriberUpdate>),
    /// Disabled by the broker, if it is still active and still failing.
    Disable,
}

impl Change {
    /// The new spec, or `None` if nothing changes. A replaced secret whose grace is over
    /// is dropped on the way.
    fn apply(
        &self,
        old: &SubscriberSpec,
        now_ms: u64,
    ) -> Result<Option<SubscriberSpec>, SubscriberError> {
        let mut new = old.clone();
        if new
            .previous_secret
            .as_ref()
            .is_some_and(|p| p.until_ms <= now_ms)
        {
            new.previous_secret = None;
        }
        let updates = match self {
            Change::Disable => {
                if old.state != SubscriberState::Active {
                    return Ok(None);
                }
                new.state = SubscriberState::Disabled;
                &[][..]
            }
            Change::User(updates) => updates.as_slice(),
        };
        for update in updates {
            update.apply(&mut new, now_ms)?;
        }
        new.validate()?;
        Ok((new != *old).then_some(new))
    }
}

impl SubscriberUpdate {
    /// Makes this change to `spec` (checked as a whole afterwards).
    fn apply(&self, new: &mut SubscriberSpec, now_ms: u64) -> Result<(), SubscriberError> {
        match self {
            SubscriberUpdate::Pause => new.state = SubscriberState::Paused,
            SubscriberUpdate::Resume => new.state = SubscriberState::Active,
            SubscriberUpdate::RateLimit(r) => {
                if let Some(r) = r {
                    r.validate()?;
                }
                new.rate_limit = *r;
            }
            SubscriberUpdate::Types(t) => new.types = t.clone(),
            SubscriberUpdate::RotateSecret { secret, grace } => {
                decode_secret(secret)?;
                if *grace > SECRET_GRACE_MAX {
                    return Err(SubscriberError::InvalidRotation(format!(
                        "a grace period of at most {} days",
                        SECRET_GRACE_MAX.as_secs() / 86_400
                    )));
                }
                if new.secret.as_deref() == Some(secret.as_str()) {
                    return Err(SubscriberError::InvalidRotation(
                        "the new secret is the current one".into(),
                    ));
                }
                let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
                new.previous_secret = match new.secret.take() {
                    Some(secret) if grace_ms > 0 => Some(PreviousSecret {
                        secret,
                        until_ms: now_ms.saturating_add(grace_ms),
                    }),
                    _ => None,
                };
                new.secret = Some(secret.clone());
            }
        }
        Ok(())
    }
}

/// An endpoint for a log line: without credentials (`user:pass@`) or query string, which may
/// carry tokens.
fn redacted(endpoint: &str) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

impl Space {
    /// Changes a subscriber while it keeps its messages and its place in them. A change that
    /// changes nothing (pausing a paused subscriber) appends nothing.
    pub async fn update_subscriber(
        &self,
        queue: &str,
        id: SubscriberId,
        update: SubscriberUpdate,
    ) -> Result<SubscriberInfo, SubscriberError> {
        self.update_subscriber_with(queue, id, vec![update]).await
    }

    /// Several changes to a subscriber as one: applied in order, recorded together, or none
    /// of them if one is refused.
    pub async fn update_subscriber_with(
        &self,
        queue: &str,
        id: SubscriberId,
        updates: Vec<SubscriberUpdate>,
    ) -> Result<SubscriberInfo, SubscriberError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move {
            let q = this.inner.registry.get(&queue)?;
            this.change_subscriber(&q, id, Change::User(updates))
                .await?;
            let st = q.lock();
            let s = st
                .subscriber(id)
                .ok_or(SubscriberError::SubscriberNotFound(id))?;
            Ok(super::admin::subscriber_info(id, s, this.now_ms()))
        })
        .await
    }

    /// Disables `id` of `queue` (in the background): its every attempt has failed for the
    /// queue's `disable_after`. Checked again under the locks: an ack or a resume meanwhile
    /// keeps it active.
    pub(super) fn disable_subscriber(&self, queue: Arc<Queue>, id: SubscriberId) {
        let this = self.clone();
        tokio::spawn(async move {
            match this.change_subscriber(&queue, id, Change::Disable).await {
                Ok(true) => {
                    this.inner
                        .totals
                        .subscribers_disabled
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => queue.lock().disable_not_done(id),
                Err(e) => {
                    queue.lock().disable_not_done(id);
                    tracing::warn!(subscriber = id, error = %e, "could not disable a failing subscriber");
                }
            }
        });
    }

    /// Appends and applies a change to a subscriber; whether anything changed.
    async fn change_subscriber(
        &self,
        q: &Queue,
        id: SubscriberId,
        change: Change,
    ) -> Result<bool, SubscriberError> {
        let _admin = self.inner.admin.lock().await;
        let journal = self.inner.journal.change().await;
        let _order = q.order.write().await;
        let now = self.now_ms();
        let (number, spec, name) = {
            let st = q.lock();
            if st.is_deleted() {
                return Err(SubscriberError::QueueNotFound(st.name().to_string()));
            }
            let s = st
                .subscriber(id)
                .ok_or(SubscriberError::SubscriberNotFound(id))?;
            if matches!(change, Change::Disable) && !self.still_failing(&st, id, now) {
                return Ok(false);
            }
            let Some(spec) = change.apply(&s.spec, now)? else {
                return Ok(false);
            };
            (st.number(), spec, st.name().clone())
        };
        journal
            .append(&[Record::SubscriberUpdated {
                queue: number,
                subscriber: id,
                secret: spec.secret.clone(),
                options: spec.options(),
            }])
            .await?;
        if matches!(change, Change::Disable) {
            let settings = q.lock().settings();
            tracing::warn!(
                queue = %name,
                subscriber = id,
                endpoint = %redacted(&spec.endpoint),
                disable_after = %settings.disable_after,
                "subscriber disabled: every attempt failed for disable_after; it receives nothing until resumed"
            );
        }
        q.lock().apply_subscriber_updated(id, spec)?;
        Ok(true)
    }

    /// Whether `id` has failed every attempt for its queue's `disable_after` (not 0) at `now`.
    fn still_failing(&self, st: &crate::queue::QueueState, id: SubscriberId, now: u64) -> bool {
        let after = st.settings().disable_after;
        after.as_millis() > 0
            && st
                .subscriber(id)
                .and_then(|s| s.failing_for_ms(now))
                .is_some_and(|f| f >= after.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SubscriberSpec {
        SubscriberSpec {
            endpoint: "http://a/".into(),
            secret: Some("whsec_MTExMQ==".into()),
            ..SubscriberSpec::default()
        }
    }

    fn rotate(secret: &str, grace_s: u64) -> Change {
        Change::User(vec![SubscriberUpdate::RotateSecret {
            secret: secret.into(),
            grace: Duration::from_secs(grace_s),
        }])
    }

    #[test]
    fn endpoints_are_logged_without_credentials_or_query() {
        assert_eq!(
            redacted("https://user:pw@hooks.example:8443/in/x?token=s3cret#f"),
            "https://hooks.example:8443/in/x"
        );
        assert_eq!(redacted("http://a/b"), "http://a/b");
        assert_eq!(redacted("http://a?x=1"), "http://a");
    }

    #[test]
    fn a_rotation_keeps_the_replaced_secret_for_its_grace_only() {
        let now = 1_000_000;
        let new = rotate("whsec_MjIyMg==", 60)
            .apply(&spec(), now)
            .unwrap()
            .unwrap();
        assert_eq!(new.secret.as_deref(), Some("whsec_MjIyMg=="));
        let previous = new.previous_secret.clone().unwrap();
        assert_eq!(previous.secret, "whsec_MTExMQ==");
        assert_eq!(previous.until_ms, now + 60_000);
        // Rotating again during the grace drops the oldest secret.
        let third = rotate("whsec_MzMzMw==", 60)
            .apply(&new, now + 1)
            .unwrap()
            .unwrap();
        assert_eq!(third.previous_secret.unwrap().secret, "whsec_MjIyMg==");
        // Without grace, or from no secret, there is nothing to keep.
        let at_once = rotate("whsec_MjIyMg==", 0)
            .apply(&spec(), now)
            .unwrap()
            .unwrap();
        assert!(at_once.previous_secret.is_none());
        let first = SubscriberSpec {
            secret: None,
            ..spec()
        };
        let first = rotate("whsec_MjIyMg==", 60)
            .apply(&first, now)
            .unwrap()
            .unwrap();
        assert!(first.previous_secret.is_none());
        // Any later change drops a previous secret whose grace is over.
        let paused = Change::User(vec![SubscriberUpdate::Pause])
            .apply(&new, now + 60_000)
            .unwrap()
            .unwrap();
        assert!(paused.previous_secret.is_none());
    }

    #[test]
    fn bad_rotations_are_refused_at_their_edges() {
        let max = SECRET_GRACE_MAX.as_secs();
        assert!(rotate("whsec_MjIyMg==", max).apply(&spec(), 0).is_ok());
        for (change, why) in [
            (rotate("whsec_MjIyMg==", max + 1), "grace"),
            (rotate("MjIyMg==", 1), "secret format"),
            (rotate("whsec_MTExMQ==", 1), "the same secret"),
        ] {
            assert!(change.apply(&spec(), 0).is_err(), "{why}");
        }
    }

    #[test]
    fn what_changes_nothing_is_not_a_change() {
        let paused = Change::User(vec![SubscriberUpdate::Pause])
            .apply(&spec(), 0)
            .unwrap()
            .unwrap();
        assert_eq!(paused.state, SubscriberState::Paused);
        assert!(
            Change::User(vec![SubscriberUpdate::Pause])
                .apply(&paused, 0)
                .unwrap()
                .is_none()
        );
        assert!(
            Change::Disable.apply(&paused, 0).unwrap().is_none(),
            "paused stays paused"
        );
        let disabled = Change::Disable.apply(&spec(), 0).unwrap().unwrap();
        let resumed = Change::User(vec![SubscriberUpdate::Resume])
            .apply(&disabled, 0)
            .unwrap()
            .unwrap();
        assert_eq!(resumed, spec());
        let limit = |n| {
            Change::User(vec![SubscriberUpdate::RateLimit(Some(RateLimit {
                per_second: n,
            }))])
        };
        // Several at once: all or nothing.
        let both = Change::User(vec![
            SubscriberUpdate::Types(Some(vec!["order.*".into()])),
            SubscriberUpdate::RateLimit(Some(RateLimit { per_second: 0 })),
        ]);
        assert!(both.apply(&spec(), 0).is_err());
        let types = Change::User(vec![
            SubscriberUpdate::Types(Some(vec!["order.*".into()])),
            SubscriberUpdate::Pause,
        ]);
        let changed = types.apply(&spec(), 0).unwrap().unwrap();
        assert_eq!(changed.types, Some(vec!["order.*".to_owned()]));
        assert_eq!(changed.state, SubscriberState::Paused);
        let bad_types = Change::User(vec![SubscriberUpdate::Types(Some(vec!["a b".into()]))]);
        assert!(bad_types.apply(&spec(), 0).is_err());
        let max = crate::limits::RATE_LIMIT_PER_SECOND_MAX;
        assert!(limit(max).apply(&spec(), 0).is_ok());
        assert!(limit(max + 1).apply(&spec(), 0).is_err());
        assert!(limit(0).apply(&spec(), 0).is_err());
    }
}
