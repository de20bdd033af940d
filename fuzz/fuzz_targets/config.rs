//! The YAML configuration file from arbitrary text: loaded or refused with a reason, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = frontend::config::parse(std::path::Path::new("fuzz.yml"), text);
    }
});
