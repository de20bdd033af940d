//! The file system under the log, behind a small trait so that tests can keep "written" and
//! "durable" bytes apart and crash at will ([`crate::sim`]). [`FsBackend`] is the real one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A flat directory of files.
pub trait Backend: Send + Sync + 'static {
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>>;
    /// Creates a file, emptying it if it exists. Not durable until [`Backend::sync_dir`].
    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>>;
    /// Removes a file. Not durable until [`Backend::sync_dir`].
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing `to` atomically. Not durable until [`Backend::sync_dir`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, removals and renames durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// How to name the file in errors and logs (a path for real files).
    fn describe(&self, name: &str) -> String;
}

/// One file, used with positional I/O only, so that readers need no shared cursor or lock.
pub trait BackendFile: Send + Sync {
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until [`BackendFile::sync_data`].
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every written byte, and the length, durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends the file. Not durable until [`BackendFile::sync_data`].
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// A directory on the real file system.
pub struct FsBackend {
    root: PathBuf,
    /// Held for the life of the backend: an exclusive advisory lock, so that two processes never
    /// append to the same log. The kernel releases it when the process dies, even by SIGKILL.
    _lock: File,
}

/// Name of the lock file in a data directory.
const LOCK_FILE: &str = "LOCK";

/// Messages are private: a data directory the broker creates is its owner's only (`0700`), and
/// so is every file it creates in it (`0600`), whatever the umask allows.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

fn owner_only(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, FILE_MODE);
    options
}

impl FsBackend {
    /// Opens (creating if missing, readable by its owner only) a data directory and locks it.
    pub fn open(root: impl AsRef<Path>) -> io::Result<FsBackend> {
        let root = root.as_ref().to_path_buf();
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, DIR_MODE);
        dir.create(&root)?;
        let lock = owner_only(OpenOptions::new().create(true).truncate(false).write(true))
            .open(root.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "data directory {} is in use by another process",
                        root.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(FsBackend { root, _lock: lock })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Backend for FsBackend {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.root.join(name))?;
        Ok(Arc::new(f))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let f = owner_only(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
        .open(self.root.join(name))?;
        Ok(Arc::new(f))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.root.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.root.join(from), self.root.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

impl BackendFile for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_locked_against_a_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        let first = FsBackend::open(dir.path()).unwrap();
        let second = FsBackend::open(dir.path());
        assert_eq!(second.err().unwrap().kind(), io::ErrorKind::WouldBlock);
        drop(first);
        FsBackend::open(dir.path()).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_data_directory_and_its_files_are_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("data");
        let backend = FsBackend::open(&root).unwrap();
        backend.create("00000001.log").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("00000001.log")), 0o600);
        assert_eq!(mode(&root.join(LOCK_FILE)), 0o600);
    }
}
