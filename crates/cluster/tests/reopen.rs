//! What the log storage acknowledged is there after the node restarts: entries, the vote, the
//! purged position (openraft reads them back through the same calls at start).

use std::sync::Arc;

use openraft::entry::RaftEntry as _;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, LogId, RaftLogReader};

use cluster::{Command, LogStore, TypeConfig};
use storage::raft::RaftLog;

type C = TypeConfig;

fn open(dir: &std::path::Path) -> LogStore {
    let backend = storage::io::FsBackend::open(dir).unwrap();
    LogStore::new(RaftLog::open(Arc::new(backend), 256).unwrap())
}

fn log_id(term: u64, index: u64) -> LogId<openraft::alias::CommittedLeaderIdOf<C>> {
    LogId::new(
        openraft::alias::CommittedLeaderIdOf::<C>::new_committed(term, 1),
        index,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_vote_and_purge_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let entries: Vec<_> = (0..20)
        .map(|i| {
            openraft::Entry::<_, _>::new(
                log_id(1, i),
                EntryPayload::Normal(Command(vec![i as u8; 40])),
            )
        })
        .collect();
    let (tx, flushed) = C::oneshot();
    store
        .append(entries, IOFlushed::<C>::signal(tx))
        .await
        .unwrap();
    flushed.await.unwrap().unwrap();
    let vote = openraft::impls::Vote::<openraft::alias::LeaderIdOf<C>>::new(2, 1);
    store.save_vote(&vote).await.unwrap();
    store.purge(log_id(1, 4)).await.unwrap();
    store.truncate_after(Some(log_id(1, 15))).await.unwrap();
    drop(store);

    let mut store = open(dir.path());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 15)));
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    let back = store.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(back.first().map(|e| e.index()), Some(5));
    assert_eq!(back.len(), 11);
    assert!(matches!(&back[0].payload, EntryPayload::Normal(Command(b)) if b == &vec![5u8; 40]));
}
