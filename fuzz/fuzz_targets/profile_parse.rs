//! The user profile file parser never panics, and redaction never panics
//! on whatever URL a profile holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(profiles) = sparkwing::profile::parse_user_file(std::path::Path::new("fuzz.yaml"), text) {
        for def in profiles.values() {
            if let Some(c) = &def.controller {
                let _ = sparkwing::profile::redact_url(&c.url);
            }
        }
    }
    let _ = sparkwing::profile::redact_url(text);
});
