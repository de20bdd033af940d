//! Errors of the Space. Each variant is something a frontend maps to one status code; the
//! mapping lives with the frontends.

use crate::scheduler::{MessageId, SubscriberId};
use crate::settings::SettingsError;

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error("invalid queue name {0:?}: use 1 to 128 of A-Z a-z 0-9 . _ -")]
    InvalidQueueName(String),
    #[error("invalid settings: {0}")]
    Settings(#[from] SettingsError),
    #[error("subscriber {0} does not exist")]
    SubscriberNotFound(SubscriberId),
    #[error("the queue already has {max} subscribers", max = crate::SUBSCRIBERS_PER_QUEUE_MAX)]
    TooManySubscribers,
    #[error("invalid endpoint {0}")]
    InvalidEndpoint(String),
    #[error("endpoint {0:?} is not in endpoints.allow")]
    EndpointNotAllowed(String),
    #[error("a secret must be whsec_ followed by base64 (the Standard Webhooks format)")]
    InvalidSecret,
    #[error("max_in_flight {0} is outside 1..={max}", max = crate::limits::MAX_IN_FLIGHT_MAX)]
    InvalidMaxInFlight(u32),
    #[error("message {0} does not exist")]
    MessageNotFound(MessageId),
    #[error("parent {0} is not a message of this queue")]
    UnknownParent(MessageId),
    #[error("message {0} is not dead")]
    NotDead(MessageId),
    #[error("the queue is full ({limit})")]
    QueueFull { limit: &'static str },
    #[error("a publish with idempotency key {0:?} is still in progress; retry shortly")]
    IdempotencyInProgress(String),
    #[error("idempotency key {0:?} was used with a different body")]
    IdempotencyConflict(String),
    #[error("content type is longer than {max} bytes", max = crate::limits::CONTENT_TYPE_BYTES_MAX)]
    InvalidContentType,
    #[error("idempotency keys are 1 to {max} bytes", max = crate::limits::IDEMPOTENCY_KEY_BYTES_MAX)]
    InvalidIdempotencyKey,
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("batch too large: {0}")]
    BatchTooLarge(String),
    #[error("the message is too large for the log")]
    BodyTooLarge,
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("cannot open the log: {0}")]
    Open(#[from] storage::OpenError),
    #[error("cannot read the log: {0}")]
    Read(#[from] storage::ReadError),
    #[error("cannot restore the checkpoint: {0}")]
    Snapshot(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<storage::AppendError> for SpaceError {
    fn from(e: storage::AppendError) -> SpaceError {
        match e {
            storage::AppendError::NoSpace(e) => SpaceError::DiskFull(e.to_string()),
            storage::AppendError::TooLarge(_) => SpaceError::BodyTooLarge,
            storage::AppendError::Closed => SpaceError::ShuttingDown,
            other => SpaceError::Storage(other.to_string()),
        }
    }
}
