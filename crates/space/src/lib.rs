//! syncbrok's Space: queues, messages and subscribers on top of Storage.
//!
//! - [`Space`]: the durable broker state and its delivery loop (one dispatcher per
//!   subscriber); its parts live in `space/` (journal, registry, publish, admin, messages,
//!   dispatch, replay, maintenance, views).
//! - `queue/`: one queue's state and the record-driven transitions shared by live operation,
//!   replay and snapshots.
//! - [`scheduler`]: the pure state machine of one queue under parented mode.
//! - [`delivery`]: what the Space asks of a Handler, and the retry schedule.
//! - [`event_type`]: event types and subscribers' filters of them.
//! - [`settings`]: queue settings as users write them, with defaults, patches and bounds.
//! - [`ids`]: message ids that tell which queue issued them, and in which order.
//! - [`model`]: the names every part shares; [`types`]: what callers pass in and get back;
//!   [`error`]: errors per operation; [`limits`]: every bound.
//! - [`clock`], [`time`]: the wall clock, and RFC 3339 timestamps.
//!
//! The Space knows nothing of HTTP frontends: they call it through [`Space`].

pub mod clock;
pub mod delivery;
pub mod endpoints;
pub mod error;
pub mod event_type;
mod feed_event;
#[doc(hidden)]
pub mod fuzzing;
mod idhash;
pub mod ids;
pub mod latency;
pub mod limits;
pub mod model;
mod queue;
mod recent;
pub mod replication;
pub mod scheduler;
pub mod settings;
mod snapshot;
mod space;
pub mod time;
pub mod trace;
pub mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use delivery::{Attempt, Batching, Channel, CustomHeaders, Deliverer, HandlerKind, Outcome};
pub use error::{
    Classify, ErrorKind, JournalError, MessageError, OpenError, PublishError, QueueError,
    QueueNotFound, ReclaimError, SnapshotError, SubscriberError,
};
pub use model::{Causality, ParentState, RateLimit, SubscriberState};
pub use model::{
    Counts, DeadReason, DeliveryState, MessageId, MessageState, OnParentDead, Parents, QueueNumber,
    SubscriberId,
};
pub use queue::SubscriberSpec;
pub use queue::explain::{
    Blocker, Explanation, LineageGraph, LineageNode, PendingDelivery, SubscriberHealth, Verdict,
};
pub use queue::image::{MessageImage, QueueImage};
pub use replication::{Proposal, ReplicationError, Replicator, Role};
pub use scheduler::{
    BlockingRoots, Event, ParentLink, Removal, ScheduleError, Scheduler, Slot, Slots,
};
pub use settings::{QueueSettings, SettingsPatch, Span};
pub use space::{
    FeedEvent, Happened, RedriveScope, ReplayOptions, Replayed, Space, SpaceImage,
    SubscriberUpdate, Watcher, decode_secret, validate_queue_name,
};
pub use types::{
    BatchEntry, BatchParent, DeadLetter, DeliverAt, DeliveryView, MessageInfo, NewMessage, Page,
    PublishedMessage, QueueInfo, ReclaimReport, SpaceConfig, SpaceTotals, SubscriberInfo,
};
