//! The log's salt, read from its segment headers (see `frame::Salt`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::io_err;
use crate::error::OpenError;
use crate::frame::{
    FRAME_HEADER_BYTES, HeaderError, SEGMENT_HEADER_BYTES, Salt, check_segment_header,
};
use crate::io::{Backend, BackendFile};
use crate::segment::segment_name;

/// The salt of the log in `files`: the one every valid segment header carries (a new one for
/// a new log, or one whose only segment's header was torn). A header of another format version
/// stops the open; so do two different salts.
pub(super) fn log_salt(
    backend: &dyn Backend,
    files: &BTreeMap<u32, Arc<dyn BackendFile>>,
) -> Result<Salt, OpenError> {
    let mut found: Option<Salt> = None;
    // When no header is valid: the salt under which a segment's first frame checks out.
    let mut guessed: Option<Salt> = None;
    for (&id, file) in files {
        let name = segment_name(id);
        let len = file.len().map_err(io_err(backend, &name))?;
        let mut header = vec![0u8; SEGMENT_HEADER_BYTES.min(len as usize)];
        file.read_exact_at(&mut header, 0)
            .map_err(io_err(backend, &name))?;
        match check_segment_header(&header, id) {
            Ok(salt) => match found {
                None => found = Some(salt),
                Some(f) if f != salt => {
                    return Err(OpenError::Unrecognised {
                        file: backend.describe(&name),
                        reason: "this segment belongs to another log (its salt differs)".into(),
                    });
                }
                Some(_) => {}
            },
            Err(e @ HeaderError::UnsupportedVersion(_)) => {
                return Err(OpenError::Unrecognised {
                    file: backend.describe(&name),
                    reason: format!(
                        "{e}; this data directory was written by another version of syncbrok"
                    ),
                });
            }
            // A damaged header: recovery decides about it when it scans that segment.
            Err(_) => {
                if guessed.is_none() && header.len() == SEGMENT_HEADER_BYTES {
                    guessed = guess_salt(&**file, &header, len).map_err(io_err(backend, &name))?;
                }
            }
        }
    }
    Ok(found.or(guessed).unwrap_or_else(Salt::random))
}

/// The salt of a segment whose header is damaged: its salt field, or that field with one bit
/// flipped, whichever makes the segment's first frame check out.
fn guess_salt(file: &dyn BackendFile, header: &[u8], len: u64) -> std::io::Result<Option<Salt>> {
    use crate::frame::{announced_len, parse_frame};
    let first = SEGMENT_HEADER_BYTES as u64;
    if len < first + FRAME_HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut head = [0u8; FRAME_HEADER_BYTES];
    file.read_exact_at(&mut head, first)?;
    let Some(total) = announced_len(&head).filter(|t| first + *t as u64 <= len) else {
        return Ok(None);
    };
    let mut frame = vec![0u8; total];
    file.read_exact_at(&mut frame, first)?;
    let frame = Bytes::from(frame);
    let field = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    let candidates = std::iter::once(field).chain((0..32).map(|bit| field ^ (1 << bit)));
    Ok(candidates
        .map(Salt::new)
        .find(|salt| parse_frame(&frame, *salt).is_ok()))
}
