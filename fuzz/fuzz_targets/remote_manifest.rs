//! A remote cache manifest (`keys/<key>.json`, zstd-compressed or plain)
//! decompresses under its bound, parses, is checked against a job's
//! outputs, and its signature verified, or fails with a message; its files
//! read back from packs (here the same hostile bytes) are verified or
//! refused; never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = "k";
    let signing = sparkwing::remote::signing::SigningKey::new(b"fuzzing key, 16+ bytes", "env:K");
    let _ = sparkwing::remote::cache::read_entry(key, data, Some(&signing));
    if let Ok(entry) = sparkwing::remote::cache::parse_entry(key, data) {
        let outputs = ["out".to_string(), "dist/**".to_string()];
        let _ = sparkwing::run::cache::check_manifest(&entry.manifest.local(), &outputs);
        let _ = sparkwing::remote::pack::files_from(&entry.manifest, |_| Some(data));
    }
});
