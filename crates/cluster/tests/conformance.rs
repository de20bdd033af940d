//! openraft's own storage conformance suite against a node's replicated log on real files.
//!
//! The suite checks a log store and a state machine together; the state machine here is the
//! tests' small one (`common`), because the subject is the log.

mod common;

use std::sync::Arc;

use common::Kept;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;

use cluster::{LogStore, TypeConfig};
use storage::raft::RaftLog;

type C = TypeConfig;

/// A fresh log in a temporary directory for each test of the suite; 512-byte segments (the
/// default is 64 MiB), so that the suite's logs span several files.
struct OnDisk;

impl StoreBuilder<C, LogStore, Kept, tempfile::TempDir> for OnDisk {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Kept), StorageError<C>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(C::err_from_error(&e)))?;
        let backend = storage::io::FsBackend::open(dir.path())
            .map_err(|e| StorageError::read(C::err_from_error(&e)))?;
        let log = RaftLog::open(Arc::new(backend), 512)
            .map_err(|e| StorageError::read(C::err_from_error(&e)))?;
        Ok((dir, LogStore::new(log), Kept::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicated_log_passes_openrafts_storage_suite() {
    Suite::test_all(OnDisk).await.unwrap();
}
