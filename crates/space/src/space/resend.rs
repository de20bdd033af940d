//! Replays: delivered messages sent to their subscribers again — the same messages (same ids:
//! receivers that deduplicate on `webhook-id` ignore them), or copies published anew (new
//! ids, each naming the message it copies as `replay_of`). One message, or a subtree: it and
//! every delivered message below it, parents before children, so that the children of a replay
//! wait for their replayed parents as they did the first time.

use storage::Record;

use super::{Space, wake_all};
use crate::error::MessageError;
use crate::limits::{BATCH_MESSAGES_MAX, REPLAYED_PER_RECORD_MAX};
use crate::model::MessageId;
use crate::space::RedriveScope;
use crate::types::{BatchEntry, BatchParent, NewMessage};

/// What a replay takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    pub scope: RedriveScope,
    /// Publish copies (new ids, `replay_of`) instead of sending the messages again.
    pub as_new: bool,
    /// Count what would be replayed; change nothing.
    pub dry_run: bool,
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replayed {
    /// Messages sent again, or copied.
    pub replayed: u64,
    /// Parents the replayed messages name in their queue that retention already removed:
    /// those are not replayed (a subtree cut where they were).
    pub missing: Vec<MessageId>,
    /// The ids of the copies, in the order of the messages they copy (`as_new`).
    pub copies: Vec<MessageId>,
}

impl Space {
    /// Replays a delivered message, or (`Subtree`) it and every delivered message below it.
    /// Nothing delivered in scope is `NotDelivered`: only messages the queue still holds can be
    /// replayed (keep delivered ones with `retention.delivered`).
    pub async fn replay(
        &self,
        queue: &str,
        id: MessageId,
        options: ReplayOptions,
    ) -> Result<Replayed, MessageError> {
        let (this, queue) = (self.clone(), queue.to_owned());
        Self::complete(async move {
            if options.as_new {
                this.replay_as_new(&queue, id, options).await
            } else {
                this.replay_now(&queue, id, options).await
            }
        })
        .await
    }

    /// The delivered messages in scope, parents first, and the parents they name that are gone.
    fn replay_scope(
        &self,
        queue: &str,
        id: MessageId,
        scope: RedriveScope,
    ) -> Result<(Vec<MessageId>, Vec<MessageId>), MessageError> {
        let q = self.inner.registry.get(queue)?;
        let st = q.lock();
        if st.is_deleted() {
            return Err(MessageError::QueueNotFound(queue.to_owned()));
        }
        let all = match scope {
            RedriveScope::Message if st.contains(id) => vec![id],
            RedriveScope::Message => return Err(MessageError::MessageNotFound(id)),
            RedriveScope::Subtree => st.subtree(id).ok_or(MessageError::MessageNotFound(id))?,
        };
        let delivered: Vec<MessageId> = all
            .iter()
            .copied()
            .filter(|m| st.is_delivered(*m))
            .collect();
        if delivered.is_empty() {
            return Err(MessageError::NotDelivered(id));
        }
        let mut missing = Vec::new();
        for m in all.iter().filter(|m| **m != id) {
            for p in st.parents_of(*m).unwrap_or_default().iter() {
                let own = crate::ids::parts(p).is_some_and(|(n, _)| n == st.number());
                if own && !st.contains(p) && !missing.contains(&p) {
                    missing.push(p);
                }
            }
        }
        Ok((delivered, missing))
    }

    /// Sends the delivered messages in scope again, as `Replayed` records of at most
    /// [`REPLAYED_PER_RECORD_MAX`] messages, each applied whole.
    async fn replay_now(
        &self,
        queue: &str,
        id: MessageId,
        options: ReplayOptions,
    ) -> Result<Replayed, MessageError> {
        let q = self.inner.registry.get(queue)?;
        let change = self.inner.journal.change().await;
        // Reopening a message decides what a child published meanwhile sees of it.
        let _order = q.order.write().await;
        let (ids, missing) = self.replay_scope(queue, id, options.scope)?;
        let done = Replayed {
            replayed: ids.len() as u64,
            missing,
            copies: Vec::new(),
        };
        if options.dry_run {
            return Ok(done);
        }
        let number = q.lock().number();
        let now = self.now_ms();
        for chunk in ids.chunks(REPLAYED_PER_RECORD_MAX) {
            change
                .append(&[Record::Replayed {
                    queue: number,
                    messages: chunk.to_vec(),
                    replayed_at_ms: now,
                }])
                .await?;
            let mut wake = Vec::new();
            q.lock().apply_replayed(chunk, now, &mut wake);
            wake_all(wake);
        }
        Ok(done)
    }

    /// Publishes copies of the delivered messages in scope, as one atomic batch: each copy
    /// names the copies of its parents that are copied too (and keeps its other parents).
    async fn replay_as_new(
        &self,
        queue: &str,
        id: MessageId,
        options: ReplayOptions,
    ) -> Result<Replayed, MessageError> {
        let (ids, missing) = self.replay_scope(queue, id, options.scope)?;
        if ids.len() > BATCH_MESSAGES_MAX {
            return Err(MessageError::ReplayTooLarge {
                found: ids.len(),
                max: BATCH_MESSAGES_MAX,
            });
        }
        if options.dry_run {
            return Ok(Replayed {
                replayed: ids.len() as u64,
                missing,
                copies: Vec::new(),
            });
        }
        let q = self.inner.registry.get(queue)?;
        let mut entries = Vec::with_capacity(ids.len());
        for m in &ids {
            let Some(p) = self
                .read_published(&q, *m)
                .map_err(|source| MessageError::Unreadable { id: *m, source })?
            else {
                return Err(MessageError::MessageNotFound(*m));
            };
            let parents = p
                .parents
                .iter()
                .map(|parent| match ids.iter().position(|c| c == parent) {
                    Some(i) => BatchParent::Index(i),
                    None => BatchParent::Id(*parent),
                })
                .collect();
            entries.push(BatchEntry {
                message: NewMessage {
                    body: p.body,
                    content_type: Some(p.content_type),
                    event_type: p.attributes.event_type,
                    replay_of: Some(*m),
                    ..NewMessage::default()
                },
                parents,
            });
        }
        let published = self
            .publish_batch(queue, entries)
            .await
            .map_err(|e| MessageError::Republish(Box::new(e)))?;
        Ok(Replayed {
            replayed: ids.len() as u64,
            missing,
            copies: published.into_iter().map(|p| p.id).collect(),
        })
    }
}
