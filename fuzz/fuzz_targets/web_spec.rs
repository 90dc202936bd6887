//! `sparkwing-web --*-spec` values parse or fail with a message; never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for flag in ["--state-spec", "--logs-spec", "--artifacts-spec"] {
            let _ = sparkwing::web::source::parse_spec(flag, text);
        }
    }
});
