//! The API's JSON bodies from arbitrary bytes: a batch publish (parsed entry by entry, within
//! the limits) and a queue's settings (parsed, merged and checked), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    frontend::fuzzing::parse_batch(data, 1024);
    if let Ok(patch) = serde_json::from_slice::<space::SettingsPatch>(data) {
        let _ = space::settings::QueueSettings::default().merged(&patch);
    }
});
