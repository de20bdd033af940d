//! The names every part of the Space shares: ids, and the states a message and each of its
//! deliveries can be in.

/// A message's id: a UUIDv7 the broker assigns, carrying its queue's number and a per-queue
/// sequence (see [`crate::ids`]).
pub type MessageId = uuid::Uuid;

/// The parents of a message: none, one (the common case, kept inline), or a join of up to
/// [`PARENTS_MAX`](crate::limits::PARENTS_MAX) it waits for all of. Never empty as a join,
/// never holding an id twice (see [`Parents::new`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Parents {
    #[default]
    None,
    One(MessageId),
    Join(Box<[MessageId]>),
}

impl Parents {
    /// The parents named, in the order given; the first id listed twice is refused.
    pub fn new(ids: &[MessageId]) -> Result<Parents, MessageId> {
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(*id);
            }
        }
        Ok(match ids {
            [] => Parents::None,
            [one] => Parents::One(*one),
            many => Parents::Join(many.into()),
        })
    }

    pub fn as_slice(&self) -> &[MessageId] {
        match self {
            Parents::None => &[],
            Parents::One(id) => std::slice::from_ref(id),
            Parents::Join(ids) => ids,
        }
    }

    /// The first parent named: what a single `parent` field shows.
    pub fn first(&self) -> Option<MessageId> {
        self.as_slice().first().copied()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Parents::None)
    }

    pub fn contains(&self, id: MessageId) -> bool {
        self.as_slice().contains(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.as_slice().iter().copied()
    }
}

impl From<Option<MessageId>> for Parents {
    fn from(p: Option<MessageId>) -> Parents {
        p.map_or(Parents::None, Parents::One)
    }
}

/// A subscriber's id, unique in the Space and never reused.
pub use storage::SubscriberId;

/// A queue's number, given when it is created and never reused: records name queues by it.
pub use storage::QueueNumber;

/// Why a message, or one of its deliveries, is dead.
pub use storage::DeadReason;

/// Where a parent in another queue stands, as the queue of its child last learned it.
pub use storage::ParentState;

/// What happens to the waiting children of a message that goes dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum OnParentDead {
    /// The children stay `waiting` until the parent is redriven and delivered, or discarded.
    /// If retention removes the dead parent, they go dead (reason `parent_dead`): the parent
    /// can never arrive.
    #[default]
    Wait,
    /// The children go dead too, reason `parent_dead`.
    DeadLetter,
    /// The children go on; order is given up.
    Deliver,
}

/// Whom a child waits for its parents' delivery to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Causality {
    /// A child goes to anyone only once each parent is delivered to every subscriber of its
    /// fan-out set.
    #[default]
    Global,
    /// A child goes to a subscriber as soon as that subscriber acknowledged each parent (at
    /// once for a parent it does not take); a parent dead for a subscriber holds back only that
    /// subscriber's copy.
    PerSubscriber,
}

/// A message's state as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageState {
    /// Published for later: nothing is sent before its due time.
    Scheduled,
    /// Its parent is not delivered yet.
    Waiting,
    /// Queued, not sent to anyone yet.
    Ready,
    /// At least one attempt is under way or scheduled, or some subscribers have it already.
    Delivering,
    /// Every subscriber of its fan-out set acknowledged it.
    Delivered,
    /// A subscriber gave up on it (the others acknowledged or gave up too), or its parent died.
    Dead,
}

impl MessageState {
    /// Scheduled, waiting, ready or delivering: what the queue's limits bound.
    pub fn is_undelivered(self) -> bool {
        matches!(
            self,
            MessageState::Scheduled
                | MessageState::Waiting
                | MessageState::Ready
                | MessageState::Delivering
        )
    }
}

/// One subscriber's view of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not yet sent.
    Pending,
    /// An attempt is under way, or the next one is scheduled.
    InFlight,
    Acked,
    Dead,
}

/// Counts of messages per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub scheduled: u64,
    pub waiting: u64,
    pub ready: u64,
    pub delivering: u64,
    pub delivered: u64,
    pub dead: u64,
}

impl Counts {
    fn slot(&mut self, state: MessageState) -> &mut u64 {
        match state {
            MessageState::Scheduled => &mut self.scheduled,
            MessageState::Waiting => &mut self.waiting,
            MessageState::Ready => &mut self.ready,
            MessageState::Delivering => &mut self.delivering,
            MessageState::Delivered => &mut self.delivered,
            MessageState::Dead => &mut self.dead,
        }
    }

    pub(crate) fn add(&mut self, state: MessageState) {
        *self.slot(state) += 1;
    }

    pub(crate) fn sub(&mut self, state: MessageState) {
        let n = self.slot(state);
        *n = n.saturating_sub(1);
    }

    /// Scheduled, waiting, ready and delivering messages.
    pub fn undelivered(&self) -> u64 {
        self.scheduled + self.waiting + self.ready + self.delivering
    }

    pub fn total(&self) -> u64 {
        self.undelivered() + self.delivered + self.dead
    }
}

/// Whether a subscriber receives messages. A paused or disabled one receives nothing: its
/// messages wait for it (they are neither sent nor dead-lettered), and go out in order once it
/// is resumed.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberState {
    #[default]
    Active,
    /// Paused by an operator.
    Paused,
    /// Disabled by the broker after `disable_after` of nothing but failed attempts.
    Disabled,
}

impl SubscriberState {
    pub fn name(self) -> &'static str {
        match self {
            SubscriberState::Active => "active",
            SubscriberState::Paused => "paused",
            SubscriberState::Disabled => "disabled",
        }
    }

    /// Whether its dispatcher sends anything.
    pub fn sends(self) -> bool {
        self == SubscriberState::Active
    }
}

/// At most `per_second` messages sent to a subscriber in any one-second window (a message of a
/// batch counts as one), however many `max_in_flight` allows: a window holds the messages
/// on the wire and those answered less than a second ago, so the receiver never sees more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// 1 to [`RATE_LIMIT_PER_SECOND_MAX`](crate::limits::RATE_LIMIT_PER_SECOND_MAX).
    pub per_second: u32,
}
