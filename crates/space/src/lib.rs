//! syncbrok's Space: queues, messages and subscribers on top of Storage.
//!
//! So far: the [`scheduler`], the pure state machine of one queue under parented mode. The
//! Space that persists it through Storage and the dispatchers that deliver come next.

pub mod scheduler;

pub use scheduler::{
    Counts, DeadCause, DeliveryState, Event, Lineage, MessageId, MessageState, OnParentDead,
    SUBSCRIBERS_PER_QUEUE_MAX, ScheduleError, Scheduler, Slot, Slots, SubscriberId,
};
