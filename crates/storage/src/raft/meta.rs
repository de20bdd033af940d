//! What the replicated log keeps beside its entries: the vote and how far it was purged, in one
//! small file replaced atomically (written aside, synced, renamed, the directory synced), and
//! the committed position, a hint written in place without a sync (a torn one reads as none).
//!
//! ```text
//! raft-meta, raft-committed: [magic 8][salt u32][len u32][crc32c u32][body: len bytes]
//! raft-meta body:      [vote: opt bytes][purged: opt (index u64, log id bytes)]
//! raft-committed body: [committed: opt bytes]
//! ```

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{Decoder, Encoder};
use crate::io::Backend;

pub const META: &str = "raft-meta";
pub const META_ASIDE: &str = "raft-meta.new";
pub const COMMITTED: &str = "raft-committed";
const META_MAGIC: &[u8; 8] = b"SBRAFTMT";
const COMMITTED_MAGIC: &[u8; 8] = b"SBRAFTCM";
const HEADER_BYTES: usize = 20;

/// The vote and how far the log was purged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub vote: Option<Bytes>,
    /// The last purged index and its log id, as the caller encoded it.
    pub purged: Option<(u64, Bytes)>,
}

fn opt_bytes(e: &mut Encoder<'_>, v: &Option<Bytes>) {
    match v {
        None => e.u8(0),
        Some(b) => {
            e.u8(1);
            e.bytes(b);
        }
    }
}

fn read_opt_bytes(d: &mut Decoder) -> Result<Option<Bytes>, String> {
    match d.u8().map_err(|e| e.to_string())? {
        0 => Ok(None),
        1 => d.bytes().map(Some).map_err(|e| e.to_string()),
        other => Err(format!("invalid presence byte {other}")),
    }
}

fn frame(magic: &[u8; 8], salt: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), body);
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The salt and body of a file written by [`frame`], or why it is not one.
fn unframe(magic: &[u8; 8], bytes: &[u8]) -> Result<(u32, Bytes), String> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != magic {
        return Err("not a file of the replicated log".into());
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (salt, len, crc) = (word(8), word(12) as usize, word(16));
    let body = bytes
        .get(HEADER_BYTES..HEADER_BYTES.saturating_add(len))
        .ok_or("shorter than its header says")?;
    if crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok((salt, Bytes::copy_from_slice(body)))
}

fn read_file(backend: &Arc<dyn Backend>, name: &str) -> std::io::Result<Vec<u8>> {
    let f = backend.open(name)?;
    let mut buf = vec![0u8; usize::try_from(f.len()?).unwrap_or(usize::MAX)];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut e = Encoder::new(&mut body);
        opt_bytes(&mut e, &self.vote);
        match &self.purged {
            None => e.u8(0),
            Some((index, id)) => {
                e.u8(1);
                e.u64(*index);
                e.bytes(id);
            }
        }
        body
    }

    fn decode(body: Bytes) -> Result<Meta, String> {
        let mut d = Decoder::new(body);
        let vote = read_opt_bytes(&mut d)?;
        let purged = match d.u8().map_err(|e| e.to_string())? {
            0 => None,
            1 => Some((
                d.u64().map_err(|e| e.to_string())?,
                d.bytes().map_err(|e| e.to_string())?,
            )),
            other => return Err(format!("invalid presence byte {other}")),
        };
        d.finish().map_err(|e| e.to_string())?;
        Ok(Meta { vote, purged })
    }

    /// Reads the meta file: `None` if there is none (a new log), its salt and content, or why
    /// it is damaged. A file written aside and not renamed is an unfinished replacement: the
    /// old file stands.
    pub fn read(backend: &Arc<dyn Backend>) -> Result<Option<(u32, Meta)>, String> {
        let names = backend.list().map_err(|e| e.to_string())?;
        if !names.iter().any(|n| n == META) {
            return Ok(None);
        }
        let bytes = read_file(backend, META).map_err(|e| e.to_string())?;
        let (salt, body) = unframe(META_MAGIC, &bytes)?;
        Ok(Some((salt, Meta::decode(body)?)))
    }

    /// Replaces the meta file, durably: once this returns, a crash keeps `self`.
    pub fn write(&self, backend: &Arc<dyn Backend>, salt: u32) -> std::io::Result<()> {
        let bytes = frame(META_MAGIC, salt, &self.encode());
        let f = backend.create(META_ASIDE)?;
        f.write_all_at(&bytes, 0)?;
        f.sync_data()?;
        backend.rename(META_ASIDE, META)?;
        backend.sync_dir()
    }
}

/// Writes the committed position in place, without a sync: it is a hint (a crash may lose it,
/// or tear it, which reads as none).
pub fn write_committed(
    backend: &Arc<dyn Backend>,
    salt: u32,
    committed: &Option<Bytes>,
) -> std::io::Result<()> {
    let mut body = Vec::new();
    opt_bytes(&mut Encoder::new(&mut body), committed);
    let bytes = frame(COMMITTED_MAGIC, salt, &body);
    let f = match backend.open(COMMITTED) {
        Ok(f) => f,
        Err(_) => backend.create(COMMITTED)?,
    };
    f.write_all_at(&bytes, 0)?;
    f.set_len(bytes.len() as u64)
}

/// The committed position last written, if it reads whole.
pub fn read_committed(backend: &Arc<dyn Backend>, salt: u32) -> Option<Bytes> {
    let bytes = read_file(backend, COMMITTED).ok()?;
    let (s, body) = unframe(COMMITTED_MAGIC, &bytes).ok()?;
    if s != salt {
        return None;
    }
    let mut d = Decoder::new(body);
    read_opt_bytes(&mut d).ok().flatten()
}
