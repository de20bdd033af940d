//! Causality made visible: why a message is not delivered (yet), and the graph of its
//! ancestors and descendants. Read-only and bounded: an explanation walks at most
//! [`EXPLAIN_DEPTH_MAX`](crate::limits::EXPLAIN_DEPTH_MAX) ancestors, a lineage at most the
//! levels and nodes it is asked for; both are cut (`truncated`) rather than made long.

use std::collections::VecDeque;

use super::QueueState;
use crate::idhash::IdSet;
use crate::limits::EXPLAIN_BLOCKERS_MAX;
use crate::model::{
    DeliveryState, MessageId, MessageState, OnParentDead, ParentState, SubscriberId,
};

/// Why a message (or one delivery of it) is where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every subscriber of its fan-out set acknowledged it.
    Delivered,
    /// An attempt is on the wire.
    InFlight,
    /// A failed attempt's retry is due later.
    RetryScheduled,
    /// Its turn has come, but every `max_in_flight` slot of the subscriber is taken.
    SubscriberSaturated,
    /// The subscriber is paused or disabled: nothing is sent to it until it is resumed.
    SubscriberPaused,
    /// Behind other messages of the same subscriber.
    Queued,
    /// Published for later: it goes when it is due.
    Scheduled,
    /// Its parent is not delivered yet.
    WaitingForParent,
    /// Dead because its parent died.
    ParentDead,
    /// A subscriber gave up on it.
    Dead,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::InFlight => "in_flight",
            Verdict::RetryScheduled => "retry_scheduled",
            Verdict::SubscriberSaturated => "subscriber_saturated",
            Verdict::SubscriberPaused => "subscriber_paused",
            Verdict::Queued => "queued",
            Verdict::Scheduled => "scheduled",
            Verdict::WaitingForParent => "waiting_for_parent",
            Verdict::ParentDead => "parent_dead",
            Verdict::Dead => "dead",
        }
    }
}

/// A delivery still owed: to whom, and why it has not happened yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub subscriber: SubscriberId,
    pub endpoint: String,
    pub verdict: Verdict,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: Option<u64>,
}

/// An ancestor that holds a message back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub id: MessageId,
    /// The queue it is in, when not the explained message's own (a parent in another queue).
    pub queue: Option<String>,
    /// 1 for the parent, 2 for the grandparent, …
    pub depth: u32,
    /// `None` when the queue no longer holds it (removed by retention or discarded).
    pub state: Option<MessageState>,
    pub verdict: Option<Verdict>,
    pub pending: Vec<PendingDelivery>,
}

impl Blocker {
    /// A blocker this queue does not hold: removed, or in another queue (the Space fills in
    /// how it stands there).
    fn unknown(id: MessageId, depth: u32) -> Blocker {
        Blocker {
            id,
            queue: None,
            depth,
            state: None,
            verdict: None,
            pending: Vec::new(),
        }
    }
}

/// A subscriber's health, as far as an explanation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberHealth {
    pub id: SubscriberId,
    pub endpoint: String,
    pub state: super::SubscriberState,
    pub in_flight: u32,
    pub max_in_flight: u32,
    pub consecutive_failures: u32,
    pub last_success_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// Why a message is not delivered (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub id: MessageId,
    pub state: MessageState,
    pub verdict: Verdict,
    /// Its own deliveries still owed.
    pub pending: Vec<PendingDelivery>,
    /// The ancestors holding it back, nearest first, up to the root blocker.
    pub blockers: Vec<Blocker>,
    /// The farthest ancestor holding it back: the one to look at.
    pub root_blocker: Option<MessageId>,
    pub subscribers: Vec<SubscriberHealth>,
    /// The earliest time something scheduled changes for it or its root blocker (a retry).
    pub next_change_at_ms: Option<u64>,
    /// The walk up its ancestors was cut at its bound.
    pub truncated: bool,
}

/// A message in a lineage; `state` is `None` for one the queue no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageNode {
    pub id: MessageId,
    /// The queue it is in, when not the message's own (a parent in another queue).
    pub queue: Option<String>,
    pub state: Option<MessageState>,
}

/// Ancestors and descendants of a message, as nodes and parent → child edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageGraph {
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<(MessageId, MessageId)>,
    pub truncated: bool,
}

/// The root blocker: the nearest ancestor that holds the others back for a reason of its own
/// (not a parent of its own).
fn root_of(blockers: &[Blocker]) -> Option<&Blocker> {
    blockers
        .iter()
        .find(|b| {
            !matches!(
                b.verdict,
                Some(Verdict::WaitingForParent | Verdict::ParentDead)
            )
        })
        .or(blockers.last())
}

impl Explanation {
    /// Fills in a blocker in another queue (its queue's name, and how it stands there), and
    /// finds the root blocker and the next change again.
    /// A blocker that no longer holds anything back (its queue delivered or dropped it, and
    /// this queue has not learned it yet) is dropped.
    pub(crate) fn fill_foreign(
        &mut self,
        id: MessageId,
        queue: String,
        found: Option<(MessageState, Verdict, Vec<PendingDelivery>)>,
        frees: bool,
    ) {
        if frees {
            self.blockers.retain(|b| b.id != id);
        }
        for b in self.blockers.iter_mut().filter(|b| b.id == id) {
            b.queue = Some(queue.clone());
            if let Some((state, verdict, pending)) = found.clone() {
                b.state = Some(state);
                b.verdict = Some(verdict);
                b.pending = pending;
            }
        }
        let root = root_of(&self.blockers);
        self.root_blocker = root.map(|b| b.id);
        self.next_change_at_ms = self
            .pending
            .iter()
            .chain(root.into_iter().flat_map(|b| &b.pending))
            .filter_map(|p| p.next_attempt_at_ms)
            .min();
    }
}

impl QueueState {
    /// Why `id` is where it is, walking at most `depth_max` ancestors.
    pub fn explain(&self, id: MessageId, depth_max: u32) -> Option<Explanation> {
        let (state, verdict, pending) = self.verdict_of(id)?;
        let (blockers, truncated) =
            if matches!(verdict, Verdict::WaitingForParent | Verdict::ParentDead) {
                self.blockers_of(id, verdict, depth_max)
            } else {
                (Vec::new(), false)
            };
        let root = root_of(&blockers);
        let next_change_at_ms = pending
            .iter()
            .chain(root.into_iter().flat_map(|b| &b.pending))
            .filter_map(|p| p.next_attempt_at_ms)
            .min();
        let root_blocker = root.map(|b| b.id);
        let subscribers = self
            .subscribers
            .iter()
            .map(|(sub, s)| {
                let h = s.health();
                SubscriberHealth {
                    id: *sub,
                    endpoint: s.spec.endpoint.clone(),
                    state: h.state,
                    in_flight: h.in_flight,
                    max_in_flight: s.spec.max_in_flight,
                    consecutive_failures: h.consecutive_failures,
                    last_success_at_ms: h.last_success_at_ms,
                    last_error: h.last_error,
                }
            })
            .collect();
        Some(Explanation {
            id,
            state,
            verdict,
            pending,
            root_blocker,
            blockers,
            subscribers,
            next_change_at_ms,
            truncated,
        })
    }

    /// The ancestors that hold `id` back, nearest first (breadth first over parents that are
    /// not delivered), each once: up through those that wait or died for parents of their
    /// own, at most `depth_max` levels and [`EXPLAIN_BLOCKERS_MAX`] in all (then `true`:
    /// truncated). A parent the queue no longer holds is listed only for a message dead with
    /// its parent: it is the dead parent that retention removed.
    fn blockers_of(&self, id: MessageId, verdict: Verdict, depth_max: u32) -> (Vec<Blocker>, bool) {
        let mut blockers = Vec::new();
        let mut seen = IdSet::default();
        let parents_of = |m: MessageId, v: Verdict, depth: u32| {
            let list = self.sched.parents(m).map(|p| p.as_slice().to_vec());
            list.unwrap_or_default()
                .into_iter()
                .map(move |p| (p, v, depth))
        };
        let mut todo: VecDeque<(MessageId, Verdict, u32)> = parents_of(id, verdict, 1).collect();
        while let Some((parent, child_verdict, depth)) = todo.pop_front() {
            if !seen.insert(parent) {
                continue;
            }
            if let Some(known) = self.sched.foreign_parent(parent) {
                // In another queue: listed if it holds the child back, as this queue knows it;
                // the Space says how it stands there.
                let frees = matches!(known, ParentState::Delivered | ParentState::Gone)
                    || (matches!(known, ParentState::Dead | ParentState::GoneDead)
                        && self.settings.on_parent_dead == OnParentDead::Deliver);
                if !frees {
                    blockers.push(Blocker::unknown(parent, depth));
                }
                continue;
            }
            let Some((state, verdict, pending)) = self.verdict_of(parent) else {
                if child_verdict == Verdict::ParentDead {
                    blockers.push(Blocker::unknown(parent, depth));
                }
                continue;
            };
            let frees = verdict == Verdict::Delivered
                || (state == MessageState::Dead
                    && self.settings.on_parent_dead == OnParentDead::Deliver);
            if frees {
                continue;
            }
            if depth > depth_max || blockers.len() >= EXPLAIN_BLOCKERS_MAX {
                return (blockers, true);
            }
            // Up through ancestors that wait, or died, for parents of their own.
            if matches!(verdict, Verdict::WaitingForParent | Verdict::ParentDead) {
                todo.extend(parents_of(parent, verdict, depth + 1));
            }
            blockers.push(Blocker {
                id: parent,
                queue: None,
                depth,
                state: Some(state),
                verdict: Some(verdict),
                pending,
            });
        }
        (blockers, false)
    }

    /// A held message's state, verdict and deliveries still owed.
    pub(crate) fn verdict_of(
        &self,
        id: MessageId,
    ) -> Option<(MessageState, Verdict, Vec<PendingDelivery>)> {
        let state = self.sched.state(id)?;
        let mut pending = Vec::new();
        let verdict = match state {
            MessageState::Delivered => Verdict::Delivered,
            MessageState::Scheduled => Verdict::Scheduled,
            MessageState::Waiting => Verdict::WaitingForParent,
            MessageState::Dead if self.sched.raw(id).is_some_and(|r| r.parent_dead) => {
                Verdict::ParentDead
            }
            MessageState::Dead => Verdict::Dead,
            MessageState::Ready | MessageState::Delivering => {
                for (sub, s) in &self.subscribers {
                    let sends = s.spec.state.sends();
                    let verdict = match self.sched.delivery_state(id, s.slot) {
                        Some(DeliveryState::InFlight) if s.retry_scheduled(id) && !sends => {
                            Verdict::SubscriberPaused
                        }
                        Some(DeliveryState::Pending) if !sends => Verdict::SubscriberPaused,
                        Some(DeliveryState::InFlight) if s.retry_scheduled(id) => {
                            Verdict::RetryScheduled
                        }
                        Some(DeliveryState::InFlight) => Verdict::InFlight,
                        Some(DeliveryState::Pending) if s.saturated() => {
                            Verdict::SubscriberSaturated
                        }
                        Some(DeliveryState::Pending) => Verdict::Queued,
                        _ => continue,
                    };
                    let info = self.deliveries.get(&(id, Some(*sub)));
                    pending.push(PendingDelivery {
                        subscriber: *sub,
                        endpoint: s.spec.endpoint.clone(),
                        verdict,
                        attempts: info.map_or(0, |i| i.attempts),
                        last_error: info.and_then(|i| i.last_error.clone()),
                        next_attempt_at_ms: info
                            .and_then(|i| i.next_attempt_at_ms)
                            .filter(|_| verdict == Verdict::RetryScheduled),
                    });
                }
                // What holds it back the longest among its deliveries.
                [
                    Verdict::SubscriberPaused,
                    Verdict::RetryScheduled,
                    Verdict::SubscriberSaturated,
                    Verdict::Queued,
                    Verdict::InFlight,
                ]
                .into_iter()
                .find(|v| pending.iter().any(|p| p.verdict == *v))
                .unwrap_or(Verdict::Queued)
            }
        };
        Some((state, verdict, pending))
    }

    /// The messages holding back the most waiting messages below them (see
    /// [`crate::Scheduler::blocking_roots`]).
    pub fn blocking_roots(
        &self,
        scan_max: usize,
        count_max: usize,
    ) -> crate::scheduler::BlockingRoots {
        self.sched.blocking_roots(scan_max, count_max)
    }

    /// `id` and every message below it that the queue holds, each once, parents before their
    /// children; `None` if it does not hold `id`. A parent is always published before its
    /// children, so the queue's sequence (in every id) is a topological order, joins included.
    pub fn subtree(&self, id: MessageId) -> Option<Vec<MessageId>> {
        if !self.sched.contains(id) {
            return None;
        }
        let mut seen = IdSet::default();
        seen.insert(id);
        let mut all = vec![id];
        let mut at = 0;
        while at < all.len() {
            for c in self.sched.children(all[at]) {
                if seen.insert(c) {
                    all.push(c);
                }
            }
            at += 1;
        }
        all.sort_unstable_by_key(|m| crate::ids::parts(*m).map(|(_, seq)| seq));
        Some(all)
    }

    /// The ancestors of `id` up to `up` levels and its descendants down to `down` levels,
    /// at most `limit` nodes in all (the message itself included). Descendants the queue no
    /// longer holds are not known; an ancestor it no longer holds is marked and ends the walk.
    pub fn lineage(&self, id: MessageId, up: u32, down: u32, limit: usize) -> Option<LineageGraph> {
        let limit = limit.max(1);
        let mut nodes = vec![LineageNode {
            id,
            queue: None,
            state: Some(self.sched.state(id)?),
        }];
        let mut edges = Vec::new();
        let mut truncated = false;
        let mut seen = IdSet::default();
        seen.insert(id);
        // Up: every parent of every ancestor reached, breadth first. One the queue no longer
        // holds is marked and not walked past.
        let mut todo = VecDeque::from([(id, 0u32)]);
        'up: while let Some((child, level)) = todo.pop_front() {
            let parents = self.sched.parents(child).cloned().unwrap_or_default();
            if level == up {
                truncated |= !parents.is_empty();
                continue;
            }
            for parent in parents.iter() {
                if seen.insert(parent) {
                    if nodes.len() >= limit {
                        truncated = true;
                        break 'up;
                    }
                    let state = self.sched.state(parent);
                    nodes.push(LineageNode {
                        id: parent,
                        queue: None,
                        state,
                    });
                    if state.is_some() {
                        todo.push_back((parent, level + 1));
                    }
                }
                edges.push((parent, child));
            }
        }
        // Down: every child of every descendant reached, breadth first.
        let mut todo = VecDeque::from([(id, 0u32)]);
        'down: while let Some((at, level)) = todo.pop_front() {
            let children = self.sched.children(at);
            if level == down {
                truncated |= !children.is_empty();
                continue;
            }
            for c in children {
                if seen.insert(c) {
                    if nodes.len() >= limit {
                        truncated = true;
                        break 'down;
                    }
                    nodes.push(LineageNode {
                        id: c,
                        queue: None,
                        state: self.sched.state(c),
                    });
                    todo.push_back((c, level + 1));
                }
                edges.push((at, c));
            }
        }
        Some(LineageGraph {
            nodes,
            edges,
            truncated,
        })
    }
}
