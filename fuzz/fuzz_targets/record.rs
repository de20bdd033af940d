//! Record payloads and frames from arbitrary bytes: decoded or refused, never a panic, never an
//! allocation beyond what the bytes announce within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, rest)) = data.split_first() {
        storage::fuzzing::decode_record(kind, rest);
    }
    if data.len() >= 4 {
        let salt = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        storage::fuzzing::parse_frame(salt, &data[4..]);
    }
});
