//! Unit tests of the scheduler's causality beyond one parent: joins, parents in other queues,
//! per-subscriber scope, and the search for the messages holding back the most.

use super::*;

fn held(ids: &[u128]) -> Vec<ParentLink> {
    ids.iter().map(|n| ParentLink::Held(id(*n))).collect()
}

/// A diamond: 4 waits for 2 and 3, which wait for 1. It goes only after both are delivered,
/// whichever finishes last; the one finished first does not release it.
#[test]
fn a_join_waits_for_every_parent() {
    for last in [2, 3] {
        let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
        let all = s.all_slots();
        s.publish(id(1), &[], all, (), false).unwrap();
        s.publish(id(2), &held(&[1]), all, (), false).unwrap();
        s.publish(id(3), &held(&[1]), all, (), false).unwrap();
        s.publish(id(4), &held(&[2, 3]), all, (), false).unwrap();
        assert_eq!(s.parents(id(4)).unwrap().as_slice(), &[id(2), id(3)]);
        assert_eq!(s.children(id(2)), vec![id(4)]);
        assert_eq!(s.children(id(3)), vec![id(4)]);
        assert_eq!(s.next(sl[0]), Some(id(1)));
        s.ack(id(1), sl[0]);
        let first = 5 - last;
        assert_eq!(s.next(sl[0]), Some(id(2)));
        assert_eq!(s.next(sl[0]), Some(id(3)));
        let events = s.ack(id(first), sl[0]);
        assert!(delivered(&events, id(first)));
        assert_eq!(s.state(id(4)), Some(MessageState::Waiting));
        assert_eq!(s.next(sl[0]), None, "one parent of two is not enough");
        let events = s.ack(id(last), sl[0]);
        assert!(events.contains(&Event::Released {
            message: id(4),
            slots: all
        }));
        assert_eq!(s.next(sl[0]), Some(id(4)));
    }
}

/// Under `dead_letter` a join dies as soon as any parent dies, while the other is still open;
/// under `wait` it waits for the dead one; under `deliver` the dead one holds nothing back, the
/// other still does.
#[test]
fn a_dead_parent_of_a_join_applies_the_policy_at_once() {
    for policy in [
        OnParentDead::DeadLetter,
        OnParentDead::Wait,
        OnParentDead::Deliver,
    ] {
        let (mut s, sl) = with_subscribers(policy, 1);
        let all = s.all_slots();
        s.publish(id(1), &[], all, (), false).unwrap();
        s.publish(id(2), &[], all, (), false).unwrap();
        s.publish(id(3), &held(&[1, 2]), all, (), false).unwrap();
        assert_eq!(s.next(sl[0]), Some(id(1)));
        let events = s.give_up(id(1), sl[0]);
        let want = match policy {
            OnParentDead::DeadLetter => MessageState::Dead,
            _ => MessageState::Waiting,
        };
        assert_eq!(s.state(id(3)), Some(want), "{policy:?}");
        if policy == OnParentDead::DeadLetter {
            assert!(events.contains(&Event::Dead {
                message: id(3),
                reason: DeadReason::ParentDead
            }));
        }
        assert_eq!(s.next(sl[0]), Some(id(2)));
        s.ack(id(2), sl[0]);
        let want = match policy {
            OnParentDead::DeadLetter => MessageState::Dead,
            OnParentDead::Wait => MessageState::Waiting,
            OnParentDead::Deliver => MessageState::Ready,
        };
        assert_eq!(s.state(id(3)), Some(want), "{policy:?}");
        // A redrive of the dead join sends it back to waiting while the dead parent holds.
        if policy == OnParentDead::DeadLetter {
            s.redrive(id(3)).unwrap();
            assert_eq!(s.state(id(3)), Some(MessageState::Waiting));
            s.redrive(id(1)).unwrap();
            assert_eq!(s.next(sl[0]), Some(id(1)));
            s.ack(id(1), sl[0]);
            assert_eq!(s.next(sl[0]), Some(id(3)));
        }
    }
}

/// Removing one parent of a join (discarded) releases it only if the others are delivered;
/// a dead parent removed by retention kills it.
#[test]
fn removing_a_parent_of_a_join_releases_it_only_when_the_others_are_done() {
    let (mut s, sl) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(id(2), &[], all, (), false).unwrap();
    s.publish(id(3), &held(&[1, 2]), all, (), false).unwrap();
    s.remove(id(1), Removal::Discarded).unwrap();
    assert_eq!(s.state(id(3)), Some(MessageState::Waiting));
    assert_eq!(s.children(id(2)), vec![id(3)]);
    assert_eq!(s.next(sl[0]), Some(id(2)));
    s.ack(id(2), sl[0]);
    assert_eq!(s.next(sl[0]), Some(id(3)));

    s.publish(id(4), &[], all, (), false).unwrap();
    s.publish(id(5), &[], all, (), false).unwrap();
    s.publish(id(6), &held(&[4, 5]), all, (), false).unwrap();
    assert_eq!(s.next(sl[0]), Some(id(4)));
    s.give_up(id(4), sl[0]);
    s.remove(id(4), Removal::Expired).unwrap();
    assert_eq!(s.state(id(6)), Some(MessageState::Dead));
}

/// A join naming removed parents: gone ones hold nothing back, a dead one kills it; a parent
/// named twice is refused.
#[test]
fn a_join_of_removed_parents_and_repeats() {
    let (mut s, _) = with_subscribers(OnParentDead::DeadLetter, 1);
    let all = s.all_slots();
    s.publish(id(1), &[], all, (), false).unwrap();
    s.publish(
        id(2),
        &[ParentLink::Removed(id(90)), ParentLink::Held(id(1))],
        all,
        (),
        false,
    )
    .unwrap();
    assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
    s.publish(
        id(3),
        &[ParentLink::Held(id(1)), ParentLink::RemovedDead(id(91))],
        all,
        (),
        false,
    )
    .unwrap();
    assert_eq!(s.state(id(3)), Some(MessageState::Dead));
    assert_eq!(
        s.publish(id(4), &held(&[1, 1]), all, (), false),
        Err(ScheduleError::RepeatedParent(id(1)))
    );
    assert!(!s.contains(id(4)));
    // A refused publish leaves no trace, not even of a parent in another queue it named.
    let far = ParentLink::Foreign(id(900));
    assert_eq!(
        s.publish(id(5), &[far, ParentLink::Held(id(77))], all, (), false),
        Err(ScheduleError::UnknownParent(id(77)))
    );
    assert_eq!(
        s.publish(id(5), &[far, far], all, (), false),
        Err(ScheduleError::RepeatedParent(id(900)))
    );
    assert_eq!(s.foreign_parent(id(900)), None);
}

/// Parents cost a message without a join nothing more than the single parent did: the list
/// of a join is boxed, and an entry (with a 20-byte meta, as the Space's) stays 80 bytes.
#[test]
fn an_entry_with_parents_is_no_larger_than_with_one() {
    assert_eq!(std::mem::size_of::<Parents>(), 24);
    assert_eq!(std::mem::size_of::<Entry<[u32; 5]>>(), 80);
}

/// A parent in another queue holds a child back as this queue last learned it: released when
/// it is delivered or gone, killed when it is dead under `dead_letter` or gone dead, and the
/// entry goes once no child names it.
#[test]
fn a_foreign_parent_holds_its_children_as_last_learned() {
    for policy in [
        OnParentDead::Wait,
        OnParentDead::DeadLetter,
        OnParentDead::Deliver,
    ] {
        let (mut s, sl) = with_subscribers(policy, 1);
        let all = s.all_slots();
        let far = id(900);
        s.publish(id(1), &[ParentLink::Foreign(far)], all, (), false)
            .unwrap();
        s.publish(id(2), &[], all, (), false).unwrap();
        s.publish(
            id(3),
            &[ParentLink::Foreign(far), ParentLink::Held(id(2))],
            all,
            (),
            false,
        )
        .unwrap();
        assert_eq!(s.foreign_parent(far), Some(ParentState::Open));
        assert_eq!(s.state(id(1)), Some(MessageState::Waiting));
        assert_eq!(s.next(sl[0]), Some(id(2)), "{policy:?}");
        s.ack(id(2), sl[0]);
        assert_eq!(
            s.state(id(3)),
            Some(MessageState::Waiting),
            "the far one holds"
        );
        s.settle_foreign(far, ParentState::Dead);
        let want = match policy {
            OnParentDead::Wait => MessageState::Waiting,
            OnParentDead::DeadLetter => MessageState::Dead,
            OnParentDead::Deliver => MessageState::Ready,
        };
        assert_eq!(s.state(id(1)), Some(want), "{policy:?}");
        assert_eq!(s.state(id(3)), Some(want), "{policy:?}");
        s.settle_foreign(far, ParentState::Delivered);
        if policy != OnParentDead::DeadLetter {
            assert_eq!(s.state(id(1)), Some(MessageState::Ready), "{policy:?}");
        }
        // Settling a parent no child names changes nothing; the entry goes with its children.
        assert!(s.settle_foreign(id(901), ParentState::Delivered).is_empty());
        assert_eq!(s.foreign_parent(id(901)), None);
        s.remove(id(1), Removal::Discarded).unwrap();
        assert!(s.foreign_parent(far).is_some());
        s.remove(id(3), Removal::Discarded).unwrap();
        assert_eq!(s.foreign_parent(far), None);
    }
    // Gone dead (removed by retention) kills, unless `deliver`.
    let (mut s, _) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    s.publish(id(1), &[ParentLink::Foreign(id(900))], all, (), false)
        .unwrap();
    s.settle_foreign(id(900), ParentState::GoneDead);
    assert_eq!(s.state(id(1)), Some(MessageState::Dead));
}

/// Per subscriber: a child's copy goes to a subscriber as soon as that one has the parent, the
/// other copy waits for the other subscriber; a parent dead for one subscriber kills only that
/// copy under `dead_letter`, and a subscriber that does not take the parent gets the child at
/// once.
#[test]
fn per_subscriber_a_copy_waits_only_for_its_own_subscriber() {
    let (mut s, sl) = with_subscribers(OnParentDead::DeadLetter, 3);
    assert!(s.set_causality(Causality::PerSubscriber).is_empty());
    let (a, b, c) = (sl[0], sl[1], sl[2]);
    let ab = Slots(a.bit() | b.bit());
    s.publish(id(1), &[], ab, (), false).unwrap();
    let events = s
        .publish(id(2), &[ParentLink::Held(id(1))], s.all_slots(), (), false)
        .unwrap();
    // C does not take the parent: its copy goes at once.
    assert!(events.contains(&Event::Released {
        message: id(2),
        slots: Slots(c.bit())
    }));
    assert_eq!(s.state(id(2)), Some(MessageState::Waiting));
    assert_eq!(s.next(c), Some(id(2)));
    assert_eq!(s.next(a), Some(id(1)));
    assert_eq!(s.next(a), None, "A has not acknowledged the parent yet");
    let events = s.ack(id(1), a);
    assert!(events.contains(&Event::Released {
        message: id(2),
        slots: Slots(a.bit())
    }));
    assert_eq!(s.next(a), Some(id(2)), "A has the parent: its copy goes");
    assert_eq!(s.next(b), Some(id(1)));
    let events = s.give_up(id(1), b);
    assert!(events.contains(&Event::CopyDead {
        message: id(2),
        slot: b
    }));
    assert_eq!(s.next(b), None, "B's copy died with the parent");
    s.ack(id(2), a);
    s.ack(id(2), c);
    assert_eq!(s.state(id(2)), Some(MessageState::Dead));
    assert_eq!(s.delivery_state(id(2), a), Some(DeliveryState::Acked));
    assert_eq!(s.delivery_state(id(2), b), Some(DeliveryState::Dead));
}

#[test]
fn blocking_roots_are_the_unwaiting_parents_with_the_most_below_them() {
    let (mut s, _) = with_subscribers(OnParentDead::Wait, 1);
    let all = s.all_slots();
    let publish = |s: &mut Scheduler, n: u128, parent: Option<u128>| {
        let parents: Vec<ParentLink> = parent
            .map(|p| ParentLink::Held(id(p)))
            .into_iter()
            .collect();
        s.publish(id(n), &parents, all, (), false).unwrap();
    };
    // 1 → 2 → 3 and 1 → 4: three wait behind 1. 10 → 11: one waits behind 10. 20 alone.
    publish(&mut s, 1, None);
    publish(&mut s, 2, Some(1));
    publish(&mut s, 3, Some(2));
    publish(&mut s, 4, Some(1));
    publish(&mut s, 10, None);
    publish(&mut s, 11, Some(10));
    publish(&mut s, 20, None);
    let found = s.blocking_roots(100, 100);
    assert_eq!(
        found.roots,
        vec![(id(1), 3), (id(10), 1)],
        "2 waits itself: not a root"
    );
    assert!(!found.cut);
    // Bounded: counting stops at the budget and says so.
    let found = s.blocking_roots(100, 2);
    assert!(found.cut);
    assert!(found.roots.iter().map(|r| r.1).sum::<usize>() <= 2);
    let found = s.blocking_roots(1, 100);
    assert!(found.cut && found.roots.len() <= 1);
}
