//! The wall clock of the Space. Record times, retention deadlines and idempotency windows are
//! unix milliseconds from it; replay uses the times in the records instead, so that it reaches
//! the state live operation reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Where the Space reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: tests of retention and windows, and model tests that
/// compare states built at the same times.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}
