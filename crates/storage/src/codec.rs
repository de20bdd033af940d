//! Explicit little-endian primitives for record payloads, public so that the broker encodes
//! its own blobs (checkpoint snapshots) the same way.
//!
//! Hand-written rather than derived so that the byte layout in `docs/format.md` is exactly what
//! the code does, and so decoding never allocates more than the input can back.

use bytes::Bytes;
use uuid::Uuid;

/// Why a payload could not be decoded. Any of these on disk means corruption (or a bug), never a
/// torn write: torn writes are caught by the frame checksum first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends early: needed {needed} more bytes at byte {at}")]
    Truncated { at: usize, needed: usize },
    #[error("{trailing} unexpected bytes after the payload")]
    TrailingBytes { trailing: usize },
    #[error("text field is not UTF-8")]
    InvalidUtf8,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("invalid value {value} for {field}")]
    InvalidValue { field: &'static str, value: u64 },
}

/// A count or length as `u32`, saturating (see [`Encoder::bytes`]).
pub fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Appends encoded fields to a buffer.
pub struct Encoder<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Encoder { buf }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn uuid(&mut self, v: &Uuid) {
        self.buf.extend_from_slice(v.as_bytes());
    }

    pub fn opt_uuid(&mut self, v: &Option<Uuid>) {
        match v {
            None => self.u8(0),
            Some(id) => {
                self.u8(1);
                self.uuid(id);
            }
        }
    }

    /// A length-prefixed (`u32`) byte string.
    ///
    /// A field over 4 GiB gets a wrong prefix instead of a panic: the record is then far over
    /// [`crate::limits::RECORD_PAYLOAD_BYTES_MAX`] and refused before anything is written.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(saturating_u32(v.len()));
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn opt_str(&mut self, v: &Option<String>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn opt_u64(&mut self, v: &Option<u64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.u64(*x);
            }
        }
    }

    pub fn u64s(&mut self, v: &[u64]) {
        self.u32(saturating_u32(v.len()));
        for x in v {
            self.u64(*x);
        }
    }

    pub fn uuids(&mut self, v: &[uuid::Uuid]) {
        self.u32(saturating_u32(v.len()));
        for x in v {
            self.uuid(x);
        }
    }
}

/// Reads fields from a payload. Byte strings are returned as slices of the input `Bytes`, so a
/// message body decoded from a read buffer is never copied.
pub struct Decoder {
    buf: Bytes,
    pos: usize,
}

impl Decoder {
    pub fn new(buf: Bytes) -> Self {
        Decoder { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let remaining = self.buf.len() - self.pos;
        if remaining < n {
            return Err(DecodeError::Truncated {
                at: self.pos,
                needed: n - remaining,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                field: "bool",
                value: u64::from(v),
            }),
        }
    }

    pub fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(Uuid::from_bytes(a))
    }

    fn tag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                field,
                value: u64::from(v),
            }),
        }
    }

    pub fn opt_uuid(&mut self) -> Result<Option<Uuid>, DecodeError> {
        Ok(if self.tag("optional id tag")? {
            Some(self.uuid()?)
        } else {
            None
        })
    }

    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }

    pub fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(if self.tag("optional text tag")? {
            Some(self.string()?)
        } else {
            None
        })
    }

    pub fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.tag("optional number tag")? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    /// A `u32` count of items of at least `item_bytes` each, checked against what is left of
    /// the input before anything is allocated for it.
    pub fn count(&mut self, item_bytes: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        let needed = n.saturating_mul(item_bytes);
        if self.remaining() < needed {
            return Err(DecodeError::Truncated {
                at,
                needed: needed - self.remaining(),
            });
        }
        Ok(n)
    }

    pub fn u64s(&mut self) -> Result<Vec<u64>, DecodeError> {
        let len = self.count(8)?;
        (0..len).map(|_| self.u64()).collect()
    }

    pub fn uuids(&mut self) -> Result<Vec<uuid::Uuid>, DecodeError> {
        let len = self.count(16)?;
        (0..len).map(|_| self.uuid()).collect()
    }

    /// Number of bytes not yet consumed; a decoder checks this is enough before allocating a
    /// collection whose length came from the input.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            trailing => Err(DecodeError::TrailingBytes { trailing }),
        }
    }
}
