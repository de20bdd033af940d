//! syncbrok's Space: queues, messages and subscribers on top of Storage.
//!
//! - [`scheduler`]: the pure state machine of one queue under parented mode.
//! - [`settings`]: queue settings as users write them, with defaults, patches and bounds.
//! - [`ids`]: message ids that tell which queue issued them, and in which order.

pub mod ids;
pub mod scheduler;
pub mod settings;

pub use scheduler::{
    Counts, DeadCause, DeliveryState, Event, Lineage, MessageId, MessageState, OnParentDead,
    SUBSCRIBERS_PER_QUEUE_MAX, ScheduleError, Scheduler, Slot, Slots, SubscriberId,
};
pub use settings::{QueueSettings, SettingsPatch, Span};
