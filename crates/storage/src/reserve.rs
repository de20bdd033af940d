//! Space kept back for freeing space. A full disk must not stop the broker from recording what
//! frees space (deletions, discards, expiries, dead letters, acks), from writing the checkpoint
//! that reclaiming needs, or from compacting. So the writer keeps a zero-filled file,
//! `RESERVE`, of [`crate::Config::reserve_bytes`]. Once a write fails for want of space the log
//! is *full*: ordinary appends are refused at once (the broker answers 507), and the first
//! append that frees space, or a checkpoint, deletes the reserve and goes ahead in the room it
//! leaves. Ordinary appends resume once the reserve could be made again: when reclaiming (or
//! the operator) has freed space.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::io::Backend;
use crate::limits::RESERVE_RETRY_MS;

/// Name of the reserve file in the data directory.
pub(crate) const RESERVE_FILE: &str = "RESERVE";

pub(crate) struct Reserve {
    backend: Arc<dyn Backend>,
    bytes: u64,
    held: bool,
    /// When making the reserve last failed: the next try waits [`RESERVE_RETRY_MS`].
    last_failure: Option<Instant>,
}

impl Reserve {
    /// Keeps an existing reserve of the right size, or makes one. Err if there is no room.
    pub fn open(backend: Arc<dyn Backend>, bytes: u64) -> Reserve {
        let mut r = Reserve {
            backend,
            bytes,
            held: false,
            last_failure: None,
        };
        if bytes == 0 {
            r.held = true;
            return r;
        }
        let existing = r
            .backend
            .open(RESERVE_FILE)
            .and_then(|f| f.len())
            .is_ok_and(|len| len == bytes);
        r.held = existing || r.make().is_ok();
        r
    }

    pub fn held(&self) -> bool {
        self.held
    }

    /// Gives the reserve's room back to the file system, durably.
    pub fn release(&mut self) {
        if !self.held || self.bytes == 0 {
            return;
        }
        let released = match self.backend.remove(RESERVE_FILE) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => self.backend.sync_dir(),
        };
        match released {
            Ok(()) => {
                self.held = false;
                tracing::warn!(
                    bytes = self.bytes,
                    "disk full: the reserve is released for what frees space"
                );
            }
            Err(e) => tracing::error!(error = %e, "could not release the disk reserve"),
        }
    }

    /// Makes the reserve again (after a failed try, not before [`RESERVE_RETRY_MS`] has
    /// passed); whether it is held.
    pub fn restore(&mut self) -> bool {
        if self.held {
            return true;
        }
        let now = Instant::now();
        if self
            .last_failure
            .is_some_and(|t| now < t + Duration::from_millis(RESERVE_RETRY_MS))
        {
            return false;
        }
        match self.make() {
            Ok(()) => {
                self.held = true;
                self.last_failure = None;
                tracing::info!("disk space is back: the reserve is made again, appends resume");
                true
            }
            Err(_) => {
                self.last_failure = Some(now);
                false
            }
        }
    }

    fn make(&mut self) -> io::Result<()> {
        let made = crate::segment::preallocate(&*self.backend, RESERVE_FILE, self.bytes)
            .and_then(|_| self.backend.sync_dir());
        if made.is_err() {
            let _ = self.backend.remove(RESERVE_FILE);
        }
        made
    }
}
