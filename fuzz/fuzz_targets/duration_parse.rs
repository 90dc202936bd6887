//! Durations (`timeout:`, `ttl:`) parse without panicking or overflowing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sparkwing::util::parse_duration(text);
    }
});
