//! A simulated disk for crash tests: it keeps the bytes each file was *written* apart from the
//! bytes that are *durable*, and on [`SimDisk::crash`] keeps only what a real disk could keep.
//!
//! The crash model (what `docs/format.md` assumes of a real disk):
//! - `sync_data` makes a file's written bytes and length durable;
//! - `sync_dir` makes creations, removals and renames durable;
//! - anything not synced may survive, vanish, or survive in part: each 512-byte sector that was
//!   written since the last sync independently holds its new or its old content (zeros past the
//!   old end), and the file's length lands anywhere between its durable and written lengths.
//!
//! Faults can also be injected into segment (`*.log`) files: the next write fails with `ENOSPC`
//! after writing part of its buffer, or the next `sync_data` fails.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::io::{Backend, BackendFile};

/// Sector size of the simulated disk: the unit of torn writes.
const SECTOR_BYTES: usize = 512;

#[derive(Default)]
struct FileData {
    written: Vec<u8>,
    durable: Vec<u8>,
}

type SharedFile = Arc<Mutex<FileData>>;

struct DiskState {
    /// The directory as processes see it.
    files: BTreeMap<String, SharedFile>,
    /// The directory as it would be after a crash.
    durable_dir: BTreeMap<String, SharedFile>,
    rng: u64,
    fail_next_write: bool,
    fail_next_sync: bool,
    /// After a crash, until [`SimDisk::restart`]: every operation fails, like a dead machine.
    down: bool,
}

/// A simulated disk holding one directory. Cheap to clone: clones share the disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

fn lock(state: &Mutex<DiskState>) -> MutexGuard<'_, DiskState> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_file(f: &SharedFile) -> MutexGuard<'_, FileData> {
    f.lock().unwrap_or_else(|e| e.into_inner())
}

fn down_error() -> io::Error {
    io::Error::other("simulated disk is down (crashed)")
}

impl DiskState {
    /// xorshift64*: deterministic from the seed, so a failing case replays exactly.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Injected faults hit segment files only, not the preallocation helper's file.
    fn is_segment(&self, data: &SharedFile) -> bool {
        self.files
            .iter()
            .any(|(name, f)| name.ends_with(".log") && Arc::ptr_eq(f, data))
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(DiskState {
                files: BTreeMap::new(),
                durable_dir: BTreeMap::new(),
                rng: seed | 1,
                fail_next_write: false,
                fail_next_sync: false,
                down: false,
            })),
        }
    }

    /// The next `write_all_at` of more than a sync mark writes part of its buffer, then fails
    /// with `ENOSPC`. A sync mark written alone after an fsync is not hit: its failure is
    /// harmless, and it would make the fault land at a moment the test cannot tell.
    pub fn fail_next_write(&self) {
        lock(&self.state).fail_next_write = true;
    }

    /// The next `sync_data` fails.
    pub fn fail_next_sync(&self) {
        lock(&self.state).fail_next_sync = true;
    }

    /// Disarms injected faults that have not fired.
    pub fn clear_faults(&self) {
        let mut s = lock(&self.state);
        s.fail_next_write = false;
        s.fail_next_sync = false;
    }

    /// Power loss: decides, sector by sector, what of the unsynced data survives, and takes the
    /// disk down until [`SimDisk::restart`]. Processes still holding files see errors.
    pub fn crash(&self) {
        let mut s = lock(&self.state);
        let survivors: Vec<(String, SharedFile)> = s
            .durable_dir
            .iter()
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect();
        let mut files = BTreeMap::new();
        for (name, file) in survivors {
            let data = lock_file(&file);
            let (w, d) = (&data.written, &data.durable);
            let (lo, hi) = (w.len().min(d.len()), w.len().max(d.len()));
            let len = lo + s.below(hi - lo + 1);
            let mut out = vec![0u8; len];
            for sector_start in (0..len).step_by(SECTOR_BYTES) {
                let end = (sector_start + SECTOR_BYTES).min(len);
                let take_new = s.next().is_multiple_of(2);
                for (i, b) in out[sector_start..end].iter_mut().enumerate() {
                    let at = sector_start + i;
                    let old = d.get(at).copied().unwrap_or(0);
                    let new = w.get(at).copied().unwrap_or(0);
                    *b = if take_new { new } else { old };
                }
            }
            drop(data);
            let fresh = Arc::new(Mutex::new(FileData {
                written: out.clone(),
                durable: out,
            }));
            files.insert(name, fresh);
        }
        // Old handles keep pointing at the old FileData, which nobody can see any more.
        s.durable_dir = files.clone();
        s.files = files;
        s.down = true;
        s.fail_next_write = false;
        s.fail_next_sync = false;
    }

    /// Brings the disk back after a crash, with what survived.
    pub fn restart(&self) {
        lock(&self.state).down = false;
    }

    /// The names of the files in the directory, sorted.
    pub fn file_names(&self) -> Vec<String> {
        lock(&self.state).files.keys().cloned().collect()
    }

    /// The written content of a file, for tests that inspect or damage the log.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        s.files.get(name).map(|f| lock_file(f).written.clone())
    }

    /// Replaces a file's content, durably (damage done "at rest").
    pub fn overwrite_file(&self, name: &str, content: Vec<u8>) {
        let s = lock(&self.state);
        if let Some(f) = s.files.get(name) {
            let mut data = lock_file(f);
            data.written = content.clone();
            data.durable = content;
        }
    }
}

struct SimFile {
    disk: Arc<Mutex<DiskState>>,
    data: SharedFile,
}

impl Backend for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        if s.down {
            return Err(down_error());
        }
        Ok(s.files.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let s = lock(&self.state);
        if s.down {
            return Err(down_error());
        }
        match s.files.get(name) {
            Some(f) => Ok(Arc::new(SimFile {
                disk: self.state.clone(),
                data: f.clone(),
            })),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_owned())),
        }
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let mut s = lock(&self.state);
        if s.down {
            return Err(down_error());
        }
        let f: SharedFile = Arc::default();
        s.files.insert(name.to_owned(), f.clone());
        Ok(Arc::new(SimFile {
            disk: self.state.clone(),
            data: f,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        if s.down {
            return Err(down_error());
        }
        s.files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        if s.down {
            return Err(down_error());
        }
        let f = s
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_owned()))?;
        s.files.insert(to.to_owned(), f);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        if s.down {
            return Err(down_error());
        }
        s.durable_dir = s.files.clone();
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

impl BackendFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if lock(&self.disk).down {
            return Err(down_error());
        }
        let data = lock_file(&self.data);
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + buf.len();
        if end > data.written.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data.written[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (fail, keep) = {
            let mut s = lock(&self.disk);
            if s.down {
                return Err(down_error());
            }
            let fail = s.is_segment(&self.data)
                && buf.len() > crate::frame::SYNC_MARK_BYTES
                && std::mem::take(&mut s.fail_next_write);
            let keep = if fail { s.below(buf.len()) } else { buf.len() };
            (fail, keep)
        };
        let mut data = lock_file(&self.data);
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + keep;
        if data.written.len() < end {
            data.written.resize(end, 0);
        }
        data.written[start..end].copy_from_slice(&buf[..keep]);
        if fail {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut s = lock(&self.disk);
            if s.down {
                return Err(down_error());
            }
            if s.is_segment(&self.data) && std::mem::take(&mut s.fail_next_sync) {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
        }
        let mut data = lock_file(&self.data);
        data.durable = data.written.clone();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        if lock(&self.disk).down {
            return Err(down_error());
        }
        Ok(lock_file(&self.data).written.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if lock(&self.disk).down {
            return Err(down_error());
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        lock_file(&self.data).written.resize(len, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_bytes_survive_a_crash_and_unsynced_files_vanish() {
        let disk = SimDisk::new(42);
        let f = disk.create("a").unwrap();
        disk.sync_dir().unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[7u8; 4096], 7).unwrap();
        let g = disk.create("b").unwrap();
        g.write_all_at(b"never synced dir", 0).unwrap();
        g.sync_data().unwrap();
        disk.crash();
        assert!(f.write_all_at(b"x", 0).is_err(), "a crashed disk is down");
        disk.restart();
        let a = disk.read_file("a").unwrap();
        assert_eq!(&a[..7], b"durable");
        assert!(a.len() <= 7 + 4096);
        assert!(a[7..].iter().all(|&b| b == 7 || b == 0));
        assert_eq!(disk.read_file("b"), None);
    }

    #[test]
    fn an_injected_write_failure_writes_a_prefix_and_reports_enospc() {
        let disk = SimDisk::new(1);
        let f = disk.create("a.log").unwrap();
        disk.fail_next_write();
        let err = f.write_all_at(&[1u8; 100], 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert!(f.len().unwrap() < 100);
        f.write_all_at(&[1u8; 100], 0).unwrap();
        assert_eq!(f.len().unwrap(), 100);
    }
}
