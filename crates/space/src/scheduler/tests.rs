//! Unit tests of the scheduler; the property test against a model is in
//! `crates/space/tests/scheduler_model.rs`.

use super::*;
use crate::model::DeliveryState;
use uuid::Uuid;

fn id(n: u128) -> MessageId {
    Uuid::from_u128(n)
}

/// A scheduler with `n` subscribers, and their slots.
fn with_subscribers(policy: OnParentDead, n: u64) -> (Scheduler, Vec<Slot>) {
    let mut s = Scheduler::new(policy);
    let slots = (0..n).map(|i| s.add_subscriber(i + 1).unwrap()).collect();
    (s, slots)
}

fn delivered(events: &[Event], m: MessageId) -> bool {
    events.contains(&Event::Delivered { message: m })
}

#[test]
fn a_message_is_delivered_when_every_subscriber_acked() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    assert_eq!(s.state(id(1)), Some(MessageState::Ready));
    assert_eq!(s.next(sl[0]), Some(id(1)));
    assert_eq!(s.next(sl[0]), None, "not twice at once");
    assert_eq!(s.state(id(1)), Some(MessageState::Delivering));
    assert_eq!(
        s.delivery_state(id(1), sl[0]),
        Some(DeliveryState::InFlight)
    );
    assert!(!delivered(&s.ack(id(1), sl[0]), id(1)));
    assert_eq!(s.next(sl[1]), Some(id(1)));
    assert!(delivered(&s.ack(id(1), sl[1]), id(1)));
    assert_eq!(s.state(id(1)), Some(MessageState::Delivered));
}

#[test]
fn a_chain_goes_strictly_in_order_and_siblings_together() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.publish(id(3), &[ParentLink::Held(id(2))], all, (), false)
        .unwrap();
    s.publish(id(4), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
    assert_eq!(s.next(sl[0]), Some(id(1)));
    assert_eq!(s.next(sl[0]), None, "children wait for the parent");
    let events = s.ack(id(1), sl[0]);
    assert!(events.contains(&Event::Released {
        message: id(2),
        slots: all
    }));
    // Both children of 1 go together; the grandchild waits for 2.
    assert_eq!(s.next(sl[0]), Some(id(2)));
    assert_eq!(s.next(sl[0]), Some(id(4)));
    assert_eq!(s.next(sl[0]), None);
    s.ack(id(2), sl[0]);
    assert_eq!(s.next(sl[0]), Some(id(3)));
}

#[test]
fn unknown_parents_and_duplicates_are_refused() {
    let (mut s, _) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    assert_eq!(
        s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false),
        Err(ScheduleError::UnknownParent(id(1)))
    );
    assert!(
        !s.contains(id(2)),
        "a refused publish leaves nothing behind"
    );
    s.publish(id(1), &[], all, (), false).unwrap();
    assert_eq!(
        s.publish(id(1), &[], all, (), false),
        Err(ScheduleError::Duplicate(id(1)))
    );
}

#[test]
fn a_child_of_a_delivered_or_removed_parent_goes_at_once() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.next(sl[0]);
    s.ack(id(1), sl[0]);
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    assert_eq!(s.state(id(2)), Some(MessageState::Ready));
    s.publish(id(3), &[ParentLink::Removed(id(99))], all, (), false)
        .unwrap();
    assert_eq!(s.state(id(3)), Some(MessageState::Ready));
    assert_eq!(s.parents(id(3)).and_then(Parents::first), Some(id(99)));
}

#[test]
fn an_empty_fanout_is_delivered_at_once_and_releases_its_children() {
    let (mut s, _) = with_subscribers(OnParentDead::Wait, 0);
    let events = s
        .publish(id(1), &[], Slots::from_bits(0), (), false)
        .unwrap();
    assert!(delivered(&events, id(1)));
    let events = s
        .publish(
            id(2),
            &[ParentLink::Held(id(1))],
            Slots::from_bits(0),
            (),
            false,
        )
        .unwrap();
    assert!(delivered(&events, id(2)));
}

#[test]
fn a_long_chain_of_empty_fanouts_settles_without_recursion() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    s.publish(id(0), &[], s.all_slots(), (), false).unwrap();
    for n in 1..100_000 {
        s.publish(
            id(n),
            &[ParentLink::Held(id(n - 1))],
            Slots::from_bits(0),
            (),
            false,
        )
        .unwrap();
    }
    s.next(sl[0]);
    let events = s.ack(id(0), sl[0]);
    assert!(delivered(&events, id(99_999)));
}

#[test]
fn a_dead_parent_holds_its_children_under_wait_until_redriven() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    let events = s.give_up(id(1), sl[0]);
    assert!(events.contains(&Event::Dead {
        message: id(1),
        reason: DeadReason::MaxAttempts
    }));
    assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
    let (slots, _) = s.redrive(id(1)).unwrap();
    assert_eq!(slots, all);
    assert_eq!(s.next(sl[0]), Some(id(1)));
    s.ack(id(1), sl[0]);
    assert_eq!(s.next(sl[0]), Some(id(2)));
}

#[test]
fn dead_letter_policy_kills_the_whole_line() {
    let (mut s, sl) = with_subscribers(OnParentDead::DeadLetter, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.publish(id(3), &[ParentLink::Held(id(2))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    let events = s.give_up(id(1), sl[0]);
    for m in [2, 3] {
        assert!(events.contains(&Event::Dead {
            message: id(m),
            reason: DeadReason::ParentDead
        }));
        assert_eq!(s.state(id(m)), Some(MessageState::Dead));
    }
    // A child published after the parent died is dead at once.
    let events = s
        .publish(id(4), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    assert_eq!(
        events,
        vec![Event::Dead {
            message: id(4),
            reason: DeadReason::ParentDead
        }]
    );
    assert_eq!(s.next(sl[0]), None);
}

#[test]
fn redriving_a_child_dead_with_its_parent_waits_for_the_parent() {
    let (mut s, sl) = with_subscribers(OnParentDead::DeadLetter, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    s.give_up(id(1), sl[0]);
    assert_eq!(s.state(id(2)), Some(MessageState::Dead));
    // Redrive both, child first: the child must still wait for the parent.
    s.redrive(id(2)).unwrap();
    assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
    s.redrive(id(1)).unwrap();
    assert_eq!(s.next(sl[0]), Some(id(1)));
    assert_eq!(
        s.next(sl[0]),
        None,
        "the child waits for the redriven parent"
    );
    s.ack(id(1), sl[0]);
    assert_eq!(s.next(sl[0]), Some(id(2)));
}

#[test]
fn deliver_policy_lets_children_go_on() {
    let (mut s, sl) = with_subscribers(OnParentDead::Deliver, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    s.give_up(id(1), sl[0]);
    assert_eq!(s.next(sl[0]), Some(id(2)));
}

#[test]
fn removing_a_parent_releases_its_waiting_children() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    let (_, events) = s.remove(id(1), Removal::Discarded).unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Released { message, .. } if *message == id(2)))
    );
    assert_eq!(s.next(sl[0]), Some(id(2)));
    // The attempt of the removed parent finishes unheard.
    assert!(s.ack(id(1), sl[0]).is_empty());
    assert_eq!(
        s.remove(id(1), Removal::Discarded),
        Err(ScheduleError::UnknownMessage(id(1)))
    );
}

#[test]
fn removing_a_waiting_child_unlinks_it() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.remove(id(2), Removal::Discarded).unwrap();
    s.next(sl[0]);
    let events = s.ack(id(1), sl[0]);
    assert_eq!(events, vec![Event::Delivered { message: id(1) }]);
    assert_eq!(s.next(sl[0]), None);
}

#[test]
fn a_removed_subscriber_is_no_longer_waited_for() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.next(sl[0]);
    s.ack(id(1), sl[0]);
    let events = s.remove_subscriber(sl[1]).unwrap();
    assert!(delivered(&events, id(1)));
    assert_eq!(s.next(sl[1]), None);
    assert_eq!(
        s.remove_subscriber(sl[1]),
        Err(ScheduleError::UnknownSlot(sl[1]))
    );
}

#[test]
fn a_later_subscriber_gets_only_later_messages_and_slots_are_reused() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    s.publish(id(1), &[], s.all_slots(), (), false).unwrap();
    let late = s.add_subscriber(7).unwrap();
    assert_eq!(s.next(late), None);
    s.publish(id(2), &[], s.all_slots(), (), false).unwrap();
    assert_eq!(s.next(late), Some(id(2)));
    s.remove_subscriber(sl[0]).unwrap();
    assert_eq!(s.add_subscriber(8).unwrap(), sl[0]);
    assert_eq!(s.subscriber(sl[0]), Some(8));
}

#[test]
fn a_queue_holds_at_most_64_subscribers() {
    let (mut s, _) = with_subscribers(OnParentDead::Wait, 64);
    assert_eq!(
        s.add_subscriber(100),
        Err(ScheduleError::TooManySubscribers)
    );
    assert_eq!(s.all_slots(), Slots::from_bits(u64::MAX));
}

#[test]
fn redrive_goes_only_to_subscribers_that_gave_up() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    assert_eq!(s.redrive(id(1)), Err(ScheduleError::NotDead(id(1))));
    s.next(sl[0]);
    s.next(sl[1]);
    s.ack(id(1), sl[0]);
    s.give_up(id(1), sl[1]);
    assert_eq!(s.state(id(1)), Some(MessageState::Dead));
    let (slots, _) = s.redrive(id(1)).unwrap();
    assert_eq!(slots, Slots::from_bits(1 << sl[1].index()));
    assert_eq!(s.next(sl[0]), None);
    assert_eq!(s.next(sl[1]), Some(id(1)));
}

#[test]
fn replayed_acks_need_no_attempt_and_requeue_puts_back_in_front() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[], all, (), false).unwrap();
    s.publish(id(3), &[], all, (), false).unwrap();
    s.ack(id(1), sl[0]);
    assert_eq!(s.next(sl[0]), Some(id(2)), "the acked message is skipped");
    s.requeue(id(2), sl[0]);
    assert_eq!(s.next(sl[0]), Some(id(2)));
}

#[test]
fn an_entry_stays_small() {
    // The memory budget is 200 bytes per undelivered message for the whole broker.
    assert!(std::mem::size_of::<Entry<()>>() <= 64);
}

#[test]
fn removing_the_subscriber_that_gave_up_delivers_the_message_and_releases_its_children() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    s.next(sl[1]);
    s.ack(id(1), sl[0]);
    s.give_up(id(1), sl[1]);
    assert_eq!(s.state(id(1)), Some(MessageState::Dead));
    assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
    let events = s.remove_subscriber(sl[1]).unwrap();
    assert!(delivered(&events, id(1)), "{events:?}");
    assert_eq!(s.state(id(1)), Some(MessageState::Delivered));
    assert_eq!(s.next(sl[0]), Some(id(2)), "the child goes on");
}

#[test]
fn a_dead_parent_removed_by_retention_takes_its_waiting_children_along() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    s.give_up(id(1), sl[0]);
    let (_, events) = s.remove(id(1), Removal::Expired).unwrap();
    assert_eq!(
        events,
        vec![Event::Dead {
            message: id(2),
            reason: DeadReason::ParentDead
        }]
    );
    assert_eq!(s.next(sl[0]), None, "never as if the parent had arrived");
    // A later child of the removed dead parent is dead at once; a redrive delivers it.
    let events = s
        .publish(id(3), &[ParentLink::RemovedDead(id(1))], all, (), false)
        .unwrap();
    assert_eq!(
        events,
        vec![Event::Dead {
            message: id(3),
            reason: DeadReason::ParentDead
        }]
    );
    s.redrive(id(2)).unwrap();
    assert_eq!(s.next(sl[0]), Some(id(2)), "its parent is gone");
}

#[test]
fn a_discarded_parent_releases_its_children_even_when_dead() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    s.give_up(id(1), sl[0]);
    s.remove(id(1), Removal::Discarded).unwrap();
    assert_eq!(s.next(sl[0]), Some(id(2)));
}

#[test]
fn outcomes_are_reported_once_per_transition() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 2);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.next(sl[0]);
    s.next(sl[1]);
    let e1 = s.give_up(id(1), sl[0]);
    assert!(e1.is_empty(), "one subscriber still owes it: {e1:?}");
    let e2 = s.give_up(id(1), sl[1]);
    assert_eq!(
        e2,
        vec![Event::Dead {
            message: id(1),
            reason: DeadReason::MaxAttempts
        }]
    );
    // Removing one of two that gave up changes nothing: still dead, nothing reported.
    assert!(s.remove_subscriber(sl[1]).unwrap().is_empty());
    let (_, events) = s.redrive(id(1)).unwrap();
    assert!(events.contains(&Event::Reopened { message: id(1) }));
    s.next(sl[0]);
    assert!(delivered(&s.ack(id(1), sl[0]), id(1)));
}

#[test]
fn counts_and_undelivered_bytes_are_kept_as_messages_change() {
    struct Sized(u64);
    impl Weighed for Sized {
        fn weight(&self) -> u64 {
            self.0
        }
    }
    let mut s: Scheduler<Sized> = Scheduler::new(OnParentDead::Wait);
    let a = s.add_subscriber(1).unwrap();
    let all = s.all_slots();
    s.publish(id(1), &[], all, Sized(10), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, Sized(5), false)
        .unwrap();
    assert_eq!((s.counts().ready, s.counts().waiting), (1, 1));
    assert_eq!(s.undelivered_bytes(), 15);
    s.next(a);
    assert_eq!(s.counts().delivering, 1);
    s.ack(id(1), a);
    assert_eq!(
        (s.counts().delivered, s.counts().ready, s.counts().waiting),
        (1, 1, 0)
    );
    assert_eq!(s.undelivered_bytes(), 5);
    s.remove(id(1), Removal::Expired).unwrap();
    assert_eq!(s.counts().total(), 1);
}

#[test]
fn a_restored_scheduler_is_the_one_that_was_saved() {
    let (mut s, sl) = with_subscribers(OnParentDead::DeadLetter, 2);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[ParentLink::Held(id(1))], all, (), false)
        .unwrap();
    s.publish(id(3), &[ParentLink::Held(id(2))], all, (), false)
        .unwrap();
    s.next(sl[0]);
    s.next(sl[1]);
    s.ack(id(1), sl[0]);
    s.give_up(id(1), sl[1]);
    let mut r: Scheduler = Scheduler::new(OnParentDead::Wait);
    r.add_subscriber(1).unwrap();
    r.add_subscriber(2).unwrap();
    for n in 1..=3 {
        let raw = s.raw(id(n)).unwrap();
        r.restore(
            id(n),
            RawEntry {
                meta: (),
                parents: raw.parents,
                fanout: raw.fanout,
                acked: raw.acked,
                dead: raw.dead,
                waiting: raw.waiting,
                scheduled: raw.scheduled,
                parent_dead: raw.parent_dead,
            },
        )
        .unwrap();
    }
    r.finish_restore();
    for n in 1..=3 {
        assert_eq!(r.state(id(n)), s.state(id(n)), "message {n}");
    }
    assert_eq!(r.counts(), s.counts());
    assert_eq!(r.children(id(1)), vec![id(2)]);
    // Under the restored policy (wait), redriving the child puts it back to waiting.
    r.redrive(id(2)).unwrap();
    assert_eq!(r.state(id(2)), Some(MessageState::Waiting));
}

#[test]
fn slots_iterate_lowest_first() {
    let s = Slots::from_bits((1 << 63) | (1 << 5) | 1);
    assert_eq!(
        s.iter().map(Slot::index).collect::<Vec<_>>(),
        vec![0, 5, 63]
    );
    assert_eq!(Slots::from_bits(0).iter().count(), 0);
}

/// Joins, foreign parents, per-subscriber scope, blocking roots.
mod joins;
