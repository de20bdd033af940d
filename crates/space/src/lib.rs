//! syncbrok's Space: queues, messages and subscribers on top of Storage.
//!
//! - [`Space`]: the durable broker state and its delivery loop (one dispatcher per subscriber).
//! - [`scheduler`]: the pure state machine of one queue under parented mode.
//! - [`delivery`]: what the Space asks of a Handler, and the retry schedule.
//! - [`settings`]: queue settings as users write them, with defaults, patches and bounds.
//! - [`ids`]: message ids that tell which queue issued them, and in which order.
//! - [`time`]: RFC 3339 timestamps for headers and the API.
//!
//! The Space knows nothing of HTTP frontends: they call it through [`Space`].

pub mod delivery;
pub mod endpoints;
mod error;
pub mod ids;
pub mod limits;
mod queue;
mod recent;
pub mod scheduler;
pub mod settings;
mod snapshot;
mod space;
pub mod time;

pub use delivery::{Attempt, Deliverer, HandlerKind, Outcome};
pub use error::SpaceError;
pub use queue::{DeliveryView, SubscriberSpec};
pub use scheduler::{
    Counts, DeadCause, DeliveryState, Event, Lineage, MessageId, MessageState, OnParentDead,
    SUBSCRIBERS_PER_QUEUE_MAX, ScheduleError, Scheduler, Slot, Slots, SubscriberId,
};
pub use settings::{QueueSettings, SettingsPatch, Span};
pub use space::{
    BatchEntry, BatchParent, DeadLetter, MessageInfo, NewMessage, PublishedMessage, QueueInfo,
    ReclaimReport, Space, SpaceConfig, SpaceTotals, SubscriberInfo, decode_secret,
    validate_queue_name,
};
