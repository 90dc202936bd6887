//! A remote cache manifest (`keys/<key>.json`) parses, is checked against
//! a job's outputs, and its signature verified, or fails with a message;
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = "k";
    let signing = sparkwing::remote::signing::SigningKey::new(b"fuzzing key, 16+ bytes", "env:K");
    let _ = sparkwing::remote::cache::verify_signature(key, data, &signing);
    if let Ok(entry) = sparkwing::remote::cache::parse_entry(key, data) {
        let outputs = ["out".to_string(), "dist/**".to_string()];
        let _ = sparkwing::run::cache::check_manifest(&entry.manifest, &outputs);
    }
});
