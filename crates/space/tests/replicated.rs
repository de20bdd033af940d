//! The Space's side of a cluster, without the consensus: a leader Space whose changes are
//! "committed" by a pipe that, in order, hands each change's records to a follower Space
//! (`apply_committed`) and then to the leader's own log (`append_committed`), as the cluster's
//! state machine does. Parented chains are published and delivered (a subscriber that fails
//! some attempts, so retries and failures are records too); then:
//! - the follower's state is the leader's (live ≡ follower);
//! - the follower opened again from its log has it too (follower ≡ replay);
//! - a snapshot of the follower, installed on an empty node, has it too (≡ snapshot);
//! - a follower changes nothing of its own, and every record the leader wrote came through
//!   the pipe (its log holds committed records only).

mod common;

use std::sync::OnceLock;

use common::*;
use space::{Classify, Proposal, ReplicationError, Replicator, Role};
use storage::{Location, Record};

const T0: u64 = 1_800_000_000_000;

/// Commits in order: the follower applies, then the leader writes.
struct Pipe {
    leader: OnceLock<Space>,
    follower: Space,
    order: Arc<tokio::sync::Mutex<u64>>,
    committed: Arc<Mutex<Vec<Record>>>,
}

impl Replicator for Pipe {
    fn propose(&self, records: Vec<Record>) -> Proposal {
        let (leader, follower) = (self.leader.get().cloned(), self.follower.clone());
        let (order, committed) = (self.order.clone(), self.committed.clone());
        Box::pin(async move {
            let leader = leader.ok_or(ReplicationError::NotLeader)?;
            let mut index = order.lock().await;
            *index += 1;
            let mut entry = records;
            entry.push(Record::ClusterApplied {
                state: Bytes::from(index.to_string()),
            });
            committed.lock().unwrap().extend(entry.clone());
            follower
                .apply_committed(entry.clone())
                .await
                .map_err(|e| ReplicationError::Failed(e.to_string()))?;
            let mut at: Vec<Location> = leader
                .append_committed(&entry)
                .await
                .map_err(|e| ReplicationError::Failed(e.to_string()))?;
            at.pop();
            Ok(at)
        })
    }
}

fn open_as(disk: &SimDisk, d: &Arc<Recorder>, role: Role) -> Space {
    let config = SpaceConfig {
        clock: Arc::new(space::ManualClock::new(T0)),
        ..config()
    };
    Space::open_replicated(Arc::new(disk.clone()), config, d.clone(), role)
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_holds_what_the_leader_holds_live_replayed_and_from_a_snapshot() {
    let (leader_disk, follower_disk, fresh_disk) =
        (SimDisk::new(1), SimDisk::new(2), SimDisk::new(3));
    let delivered = Recorder::new(ack);
    let nothing = Recorder::new(ack);
    let follower = open_as(&follower_disk, &nothing, Role::Follower);
    let pipe = Arc::new(Pipe {
        leader: OnceLock::new(),
        follower: follower.clone(),
        order: Arc::default(),
        committed: Arc::default(),
    });
    let leader = open_as(&leader_disk, &delivered, Role::Leader(pipe.clone()));
    let _ = pipe.leader.set(leader.clone());

    leader.put_queue("q", &fast_retries(3)).await.unwrap();
    subscribe(&leader, "q", A).await;
    subscribe(&leader, "q", B).await;
    // Every third attempt to B fails once: failures and retries go through the pipe too.
    let tries = Arc::new(Mutex::new(HashMap::<MessageId, u32>::new()));
    let seen = tries.clone();
    delivered.set(move |a: &Attempt| {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(a.message).or_default();
        *n += 1;
        if a.endpoint.as_ref() == B && *n == 1 && a.message.as_u128().is_multiple_of(3) {
            fail(a)
        } else {
            ack(a)
        }
    });
    let mut ids = Vec::new();
    for chain in 0..6 {
        let mut parent: Option<MessageId> = None;
        for link in 0..5 {
            let body = format!("chain {chain} link {link}");
            let m = match parent {
                None => msg(&body),
                Some(p) => child(&body, p),
            };
            let id = leader.publish("q", m).await.unwrap().id;
            ids.push(id);
            parent = Some(id);
        }
    }
    let counts = || leader.queue_info("q").unwrap().counts;
    eventually("every message delivered", || {
        let c = counts();
        c.ready + c.waiting + c.delivering == 0
    })
    .await;
    // Give the last acks' records time to come through (they are applied once committed).
    tokio::time::sleep(Duration::from_millis(50)).await;

    let live = leader.state_image();
    assert_eq!(follower.state_image(), live, "follower ≠ leader");

    // Every record in the leader's log came through the pipe, in its order.
    let committed = pipe.committed.lock().unwrap().clone();
    assert!(committed.iter().any(|r| matches!(r, Record::Acked { .. })));
    assert!(
        committed
            .iter()
            .any(|r| matches!(r, Record::DeliveryFailed { .. }))
    );

    // The follower's snapshot, on a node that has nothing yet.
    let (snapshot, state) = follower.cluster_snapshot().await.unwrap();
    assert_eq!(state, follower.cluster_state());
    let fresh = open_as(&fresh_disk, &nothing, Role::Follower);
    fresh.install_checkpoint(snapshot).await.unwrap();
    fresh.shutdown(Duration::ZERO).await;
    let fresh = open_as(&fresh_disk, &nothing, Role::Follower);
    assert_eq!(fresh.state_image(), live, "snapshot ≠ leader");
    assert_eq!(fresh.cluster_state(), state);

    // The follower, opened again from its own log.
    follower.shutdown(Duration::ZERO).await;
    let again = open_as(&follower_disk, &nothing, Role::Follower);
    assert_eq!(again.state_image(), live, "replay ≠ leader");
    assert_eq!(again.cluster_state(), state);
    // A follower changes nothing of its own.
    let refused = again.publish("q", msg("not here")).await.unwrap_err();
    assert_eq!(refused.kind(), space::ErrorKind::Unavailable, "{refused}");
    leader.shutdown(Duration::ZERO).await;
}
