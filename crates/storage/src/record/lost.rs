//! What a damaged stretch of the log still tells of the records it held, for a repair's
//! report: best guesses from bytes that failed their checksums, bounded by what they can back.

use bytes::Bytes;
use uuid::Uuid;

use super::{QueueNumber, kind, kind_name};
use crate::codec::Decoder;

/// What damaged bytes still tell of a record they held: its kind, and the queue and message
/// ids its first fields name, as far as they can be read. A best guess: the bytes failed their
/// checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRecord {
    pub kind: &'static str,
    pub queue: Option<QueueNumber>,
    pub messages: Vec<Uuid>,
}

/// Reads what it can of the frames in `bytes` (damaged: checksums are not checked), for a
/// repair report. Never panics and never allocates more than `bytes` can back.
pub fn describe_damaged(bytes: &[u8]) -> Vec<LostRecord> {
    let mut out = Vec::new();
    describe_frames(bytes, 0, &mut out);
    if out.is_empty() {
        out.push(LostRecord {
            kind: "unrecognisable bytes",
            queue: None,
            messages: Vec::new(),
        });
    }
    out
}

fn describe_frames(bytes: &[u8], depth: u8, out: &mut Vec<LostRecord>) {
    let mut at = 0usize;
    while bytes.len() - at >= 9 && out.len() < 64 {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let k = bytes[at + 8];
        let end = (at + 9).saturating_add(len as usize).min(bytes.len());
        let payload = &bytes[at + 9..end];
        match k {
            kind::BATCH if depth == 0 => describe_frames(payload, 1, out),
            kind::RELOCATED if depth == 0 && payload.len() > 12 => {
                describe_frames(&payload[12..], 1, out);
            }
            kind::QUEUE_CREATED..=kind::LAST_RECORD => out.push(describe_payload(k, payload)),
            _ => return,
        }
        at = end;
        if depth == 0 {
            // Past the first top-level frame the stretch is only guesswork.
            return;
        }
    }
}

/// The queue and message ids at the start of a record payload of kind `k`.
fn describe_payload(k: u8, payload: &[u8]) -> LostRecord {
    let mut d = Decoder::new(Bytes::copy_from_slice(payload));
    let mut messages = Vec::new();
    let queue = match k {
        kind::QUEUE_CREATED
        | kind::QUEUE_UPDATED
        | kind::QUEUE_DELETED
        | kind::SUBSCRIBER_ADDED
        | kind::SUBSCRIBER_ADDED_WITH_OPTIONS
        | kind::SUBSCRIBER_UPDATED
        | kind::SUBSCRIBER_REMOVED => d.u32().ok(),
        kind::PUBLISHED
        | kind::PUBLISHED_WITH_ATTRIBUTES
        | kind::PUBLISHED_EXTENDED
        | kind::PARENT_SETTLED => {
            let q = d.u32().ok();
            messages.extend(d.uuid().ok());
            q
        }
        kind::EXPIRED | kind::RELEASED | kind::REPLAYED => {
            let q = d.u32().ok();
            let n = d.u32().unwrap_or(0).min(64);
            messages.extend((0..n).map_while(|_| d.uuid().ok()));
            q
        }
        kind::ACKED => {
            let n = d.u32().unwrap_or(0).min(64);
            for _ in 0..n {
                let Ok(m) = d.uuid() else { break };
                messages.push(m);
                if d.u64().and(d.u32()).and(d.u64()).is_err() {
                    break;
                }
            }
            None
        }
        // Names no queue or message.
        kind::CHECKPOINT | kind::CLUSTER_APPLIED => None,
        _ => {
            messages.extend(d.uuid().ok());
            None
        }
    };
    LostRecord {
        kind: kind_name(k),
        queue,
        messages,
    }
}
