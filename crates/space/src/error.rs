//! Errors of the Space, one enum per family of operations. Each variant says what went wrong
//! in words a user can act on, and has an [`ErrorKind`] that frontends turn into a status code.

use crate::limits::{
    BATCH_BYTES_MAX, BATCH_MESSAGES_MAX, CONTENT_TYPE_BYTES_MAX, EVENT_TYPE_BYTES_MAX,
    IDEMPOTENCY_KEY_BYTES_MAX, MAX_IN_FLIGHT_MAX, PARENTS_MAX, RATE_LIMIT_PER_SECOND_MAX,
    SUBSCRIBERS_PER_QUEUE_MAX,
};
use crate::model::{MessageId, SubscriberId};
use crate::settings::SettingsError;

/// What kind of failure an error is: the one thing frontends need to pick a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The queue, subscriber or message does not exist.
    NotFound,
    /// The input is malformed.
    Invalid,
    /// The input is well-formed but cannot be accepted (an unknown parent, a setting out of
    /// bounds, an endpoint not allowed, too many subscribers).
    Unprocessable,
    /// The state does not allow it (not dead, an idempotency key reused or still in progress).
    Conflict,
    /// A queue limit is reached; retry later.
    Full,
    /// Over a size limit.
    TooLarge,
    /// The disk is full; nothing was stored.
    DiskFull,
    /// The broker cannot take changes now (shutting down, or the log refuses writes).
    Unavailable,
    /// A fault of the broker or its disk.
    Internal,
}

/// Tells what kind of failure an error is.
pub trait Classify: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

/// A change could not be recorded in the log: nothing of it took effect.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("disk full: {0}")]
    DiskFull(#[source] std::io::Error),
    /// After a failed fsync the log refuses writes until the broker restarts.
    #[error("the log refuses writes: {0}")]
    Poisoned(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("writing the log failed: {0}")]
    Io(#[source] std::io::Error),
    #[error(transparent)]
    TooLarge(storage::TooLarge),
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    /// A record the replicated log committed cannot be applied (data of another build).
    #[error("a committed record cannot be applied: {0}")]
    Apply(String),
}

impl From<storage::AppendError> for JournalError {
    fn from(e: storage::AppendError) -> JournalError {
        use storage::AppendError as A;
        match e {
            A::NoSpace(e) => JournalError::DiskFull(e),
            A::Io(e) => JournalError::Io(e),
            A::Poisoned(why) => JournalError::Poisoned(why),
            A::Closed => JournalError::ShuttingDown,
            A::TooLarge(t) => JournalError::TooLarge(t),
        }
    }
}

impl Classify for JournalError {
    fn kind(&self) -> ErrorKind {
        match self {
            JournalError::DiskFull(_) => ErrorKind::DiskFull,
            JournalError::Poisoned(_) | JournalError::ShuttingDown => ErrorKind::Unavailable,
            JournalError::Io(_) => ErrorKind::Internal,
            JournalError::TooLarge(_) => ErrorKind::TooLarge,
            JournalError::Replication(_) => ErrorKind::Unavailable,
            JournalError::Apply(_) => ErrorKind::Internal,
        }
    }
}

/// The Space could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] storage::OpenError),
    #[error("cannot restore the checkpoint: {0}")]
    Snapshot(#[from] SnapshotError),
    /// A record read back from the log cannot be applied (a bug, or data of another build).
    #[error("cannot replay the log at {at:?}: {reason}")]
    Replay {
        at: storage::Location,
        reason: String,
    },
    #[error("cannot start the Space: {0}")]
    Start(#[source] std::io::Error),
}

/// A publish was refused; nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error(
        "parent {0} was never published by any queue of this broker (or its queue was deleted)"
    )]
    UnknownParent(MessageId),
    #[error("a message has at most {PARENTS_MAX} parents; {0} were named")]
    TooManyParents(usize),
    #[error("parent {0} is named twice")]
    RepeatedParent(MessageId),
    #[error("the queue is full ({limit})")]
    QueueFull { limit: &'static str },
    #[error("a publish with idempotency key {0:?} is still in progress; retry shortly")]
    IdempotencyInProgress(String),
    #[error("idempotency key {0:?} was used with a different body")]
    IdempotencyConflict(String),
    #[error(
        "a content type is at most {CONTENT_TYPE_BYTES_MAX} bytes of what an HTTP header may hold (visible ASCII, spaces, tabs)"
    )]
    InvalidContentType,
    #[error("an event type is 1 to {EVENT_TYPE_BYTES_MAX} of A-Z a-z 0-9 . _ - : /")]
    InvalidEventType,
    /// Why, in words.
    #[error("invalid due time: {0}")]
    InvalidDelay(String),
    #[error(
        "a traceparent is version-traceid-parentid-flags in lowercase hex (e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01), and a tracestate at most 512 bytes of what a header may hold"
    )]
    InvalidTraceContext,
    #[error("idempotency keys are 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes")]
    InvalidIdempotencyKey,
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error(
        "batch too large: {messages} messages, {bytes} bytes of bodies; a batch holds at most {BATCH_MESSAGES_MAX} messages and {BATCH_BYTES_MAX} bytes"
    )]
    BatchTooLarge { messages: usize, bytes: usize },
    #[error("the message is too large for the log")]
    BodyTooLarge,
    #[error("the queue has issued every message id it can; create a new queue")]
    SequenceExhausted,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Classify for PublishError {
    fn kind(&self) -> ErrorKind {
        use PublishError::*;
        match self {
            QueueNotFound(_) => ErrorKind::NotFound,
            UnknownParent(_) => ErrorKind::Unprocessable,
            QueueFull { .. } => ErrorKind::Full,
            IdempotencyInProgress(_) | IdempotencyConflict(_) => ErrorKind::Conflict,
            InvalidContentType
            | InvalidEventType
            | TooManyParents(_)
            | InvalidTraceContext
            | RepeatedParent(_)
            | InvalidDelay(_)
            | InvalidIdempotencyKey
            | InvalidBatch(_) => ErrorKind::Invalid,
            BatchTooLarge { .. } | BodyTooLarge => ErrorKind::TooLarge,
            SequenceExhausted => ErrorKind::Unprocessable,
            Journal(e) => e.kind(),
        }
    }
}

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot version {found} is not supported (this build reads up to {supported})")]
    Version { found: u32, supported: u32 },
    #[error("snapshot is malformed: {0}")]
    Decode(#[from] storage::DecodeError),
    #[error("snapshot has unreadable settings: {0}")]
    Settings(#[from] serde_json::Error),
    #[error("snapshot names an unknown handler {0:?}")]
    UnknownHandler(String),
    #[error("snapshot has a subscriber ({0}) that cannot be restored: {1}")]
    Subscriber(u64, String),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

/// Creating, updating or deleting a queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error("invalid queue name {0:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (not . or ..)")]
    InvalidQueueName(String),
    #[error("invalid settings: {0}")]
    Settings(#[from] SettingsError),
    #[error("every queue number has been used; no more queues can be created in this Space")]
    QueueNumbersExhausted,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Classify for QueueError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueueError::QueueNotFound(_) => ErrorKind::NotFound,
            QueueError::InvalidQueueName(_) => ErrorKind::Invalid,
            QueueError::Settings(_) | QueueError::QueueNumbersExhausted => ErrorKind::Unprocessable,
            QueueError::Journal(e) => e.kind(),
        }
    }
}

/// Adding or removing a subscriber failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error("subscriber {0} does not exist")]
    SubscriberNotFound(SubscriberId),
    #[error("the queue already has {SUBSCRIBERS_PER_QUEUE_MAX} subscribers")]
    TooManySubscribers,
    #[error("invalid endpoint {0}")]
    InvalidEndpoint(String),
    /// Why, in words.
    #[error("endpoint not allowed: {0}")]
    EndpointNotAllowed(String),
    #[error("a secret must be whsec_ followed by base64 (the Standard Webhooks format)")]
    InvalidSecret,
    #[error("max_in_flight {0} is outside 1..={MAX_IN_FLIGHT_MAX}")]
    InvalidMaxInFlight(u32),
    /// Why, in words.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Why, in words.
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// Why, in words.
    #[error("invalid types filter: {0}")]
    InvalidTypes(String),
    #[error("rate_limit.per_second {0} is outside 1..={RATE_LIMIT_PER_SECOND_MAX}")]
    InvalidRateLimit(u32),
    /// Why, in words.
    #[error("invalid secret rotation: {0}")]
    InvalidRotation(String),
    /// A subscriber record whose options this build cannot read.
    #[error("unreadable subscriber options: {0}")]
    InvalidOptions(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Classify for SubscriberError {
    fn kind(&self) -> ErrorKind {
        use SubscriberError::*;
        match self {
            QueueNotFound(_) | SubscriberNotFound(_) => ErrorKind::NotFound,
            InvalidEndpoint(_) | InvalidSecret => ErrorKind::Invalid,
            TooManySubscribers
            | EndpointNotAllowed(_)
            | InvalidMaxInFlight(_)
            | InvalidBatch(_)
            | InvalidRateLimit(_)
            | InvalidRotation(_) => ErrorKind::Unprocessable,
            InvalidOptions(_) | InvalidHeader(_) | InvalidTypes(_) => ErrorKind::Invalid,
            Journal(e) => e.kind(),
        }
    }
}

/// Reading, discarding or redriving a message failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error("message {0} does not exist")]
    MessageNotFound(MessageId),
    #[error("message {0} is not dead")]
    NotDead(MessageId),
    #[error(
        "nothing to replay: message {0} (and what is below it, for a subtree) is not delivered, or no longer held; keep delivered messages with retention.delivered"
    )]
    NotDelivered(MessageId),
    #[error(
        "a replay as new messages publishes at most {max} copies at once; the subtree holds {found}"
    )]
    ReplayTooLarge { found: usize, max: usize },
    /// The copies of a replay could not be published.
    #[error("the copies could not be published: {0}")]
    Republish(Box<PublishError>),
    /// The message's record could not be read back (its body, or its content type).
    #[error("cannot read message {id}: {source}")]
    Unreadable {
        id: MessageId,
        #[source]
        source: storage::ReadError,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Classify for MessageError {
    fn kind(&self) -> ErrorKind {
        match self {
            MessageError::QueueNotFound(_) | MessageError::MessageNotFound(_) => {
                ErrorKind::NotFound
            }
            MessageError::NotDead(_) | MessageError::NotDelivered(_) => ErrorKind::Conflict,
            MessageError::ReplayTooLarge { .. } => ErrorKind::TooLarge,
            MessageError::Republish(e) => e.kind(),
            MessageError::Unreadable { .. } => ErrorKind::Internal,
            MessageError::Journal(e) => e.kind(),
        }
    }
}

/// A queue asked for by name does not exist.
#[derive(Debug, Clone, thiserror::Error)]
#[error("queue {0:?} does not exist")]
pub struct QueueNotFound(pub String);

impl Classify for QueueNotFound {
    fn kind(&self) -> ErrorKind {
        ErrorKind::NotFound
    }
}

/// Taking a checkpoint or reclaiming segments failed.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Storage(#[from] storage::ReclaimError),
}

macro_rules! from_queue_not_found {
    ($($t:ident),*) => {$(
        impl From<QueueNotFound> for $t {
            fn from(e: QueueNotFound) -> $t {
                $t::QueueNotFound(e.0)
            }
        }
    )*};
}

from_queue_not_found!(PublishError, QueueError, SubscriberError, MessageError);
