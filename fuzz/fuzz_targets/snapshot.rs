//! A checkpoint's snapshot from arbitrary bytes: restored or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    space::fuzzing::decode_snapshot(data);
});
