//! Signed cache manifests (`cache: { …, signing_key_source: env:VAR }`).
//!
//! Without signing, anyone who can write the cache bucket chooses what every
//! runner restores into its outputs (within the checks of
//! [`crate::run::cache::check_manifest`]). With a key, a runner signs each
//! manifest document it publishes with HMAC-SHA256 and treats a remote
//! manifest that is unsigned, signed with another key, or altered in any
//! byte as a miss (with a warning). Blobs need no signature of their own:
//! the signed manifest names them by SHA-256, and every blob is verified
//! against that hash before use.
//!
//! The MAC covers the document as serialized without its `signature` field
//! (the writer signs the bytes it is about to write; the reader re-serializes
//! what it parsed, which for our own output is the same bytes), so what is
//! verified is exactly what is used, including the cache key and expiry.

use anyhow::{bail, Result};
use ring::hmac;
use serde_json::{Map, Value};

use crate::run::cache::hex;

/// The field of a manifest document that carries its MAC.
pub const FIELD: &str = "signature";
const SCHEME: &str = "hmac-sha256:";
/// Shortest key accepted: 16 bytes (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

/// A cache signing key, read from the place its profile names.
pub struct SigningKey {
    key: hmac::Key,
    /// Where it came from (`env:VAR`), for messages; never the key itself.
    pub source: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.source)
    }
}

impl SigningKey {
    pub fn new(secret: &[u8], source: &str) -> SigningKey {
        SigningKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            source: source.to_string(),
        }
    }

    /// Reads the key named by `signing_key_source` (`env:VAR`). `at` names
    /// the profile field for messages.
    pub fn from_source(src: &str, at: &str) -> Result<SigningKey> {
        let Some(var) = src.strip_prefix("env:").filter(|v| !v.is_empty()) else {
            bail!("{at}: signing_key_source `{src}` is not understood; write `signing_key_source: env:VAR`");
        };
        let value = std::env::var_os(var).unwrap_or_default();
        if value.is_empty() {
            bail!(
                "{at}: signing_key_source env:{var} is unset; export {var} (a random secret of at least {MIN_KEY_BYTES} bytes, the same on every runner) or remove signing_key_source"
            );
        }
        let bytes = value.as_encoded_bytes();
        if bytes.len() < MIN_KEY_BYTES {
            bail!(
                "{at}: the key in {var} is {} bytes; use at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                bytes.len()
            );
        }
        Ok(SigningKey::new(bytes, src))
    }

    fn mac_of(&self, doc: &Map<String, Value>) -> Vec<u8> {
        let mut unsigned = doc.clone();
        unsigned.remove(FIELD);
        let bytes = serde_json::to_vec(&unsigned).unwrap_or_default();
        hmac::sign(&self.key, &bytes).as_ref().to_vec()
    }

    /// A short public name of the key (not the key, nor enough to find
    /// it): recorded with the cache entries it verified.
    pub fn id(&self) -> String {
        hex(&hmac::sign(&self.key, b"sparkwing cache signing key id").as_ref()[..8])
    }

    /// The origin a cache entry verified with this key records
    /// (`signed:<id>`; see migration `0004_cache_origin.sql`).
    pub fn origin(&self) -> String {
        format!("signed:{}", self.id())
    }

    /// Adds (or replaces) the document's signature.
    pub fn sign(&self, doc: &mut Map<String, Value>) {
        let mac = hex(&self.mac_of(doc));
        doc.insert(FIELD.into(), Value::String(format!("{SCHEME}{mac}")));
    }

    /// Checks the document's signature; the error says what is wrong.
    pub fn verify(&self, doc: &Map<String, Value>) -> Result<(), String> {
        let Some(sig) = doc.get(FIELD) else {
            return Err("it is not signed".into());
        };
        let Some(mac) = sig
            .as_str()
            .and_then(|s| s.strip_prefix(SCHEME))
            .and_then(unhex)
        else {
            return Err("its signature is not an hmac-sha256 signature".into());
        };
        let mut unsigned = doc.clone();
        unsigned.remove(FIELD);
        let bytes = serde_json::to_vec(&unsigned).unwrap_or_default();
        hmac::verify(&self.key, &bytes, &mac)
            .map_err(|_| "its signature does not match this profile's key".into())
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Map<String, Value> {
        json!({"key": "k", "run_id": "R", "expires_at": null, "manifest": {"version": 1, "files": []}})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_signed_document_verifies_after_a_round_trip_through_bytes() {
        let k = SigningKey::new(b"0123456789abcdef0123", "env:K");
        let mut d = doc();
        k.sign(&mut d);
        let bytes = serde_json::to_vec(&d).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(k.verify(back.as_object().unwrap()), Ok(()));
    }

    #[test]
    fn unsigned_altered_or_foreign_documents_are_refused() {
        let k = SigningKey::new(b"0123456789abcdef0123", "env:K");
        let other = SigningKey::new(b"another key, 16+ bytes", "env:K");
        assert_eq!(k.verify(&doc()).unwrap_err(), "it is not signed");
        let mut d = doc();
        other.sign(&mut d);
        assert!(k.verify(&d).unwrap_err().contains("does not match"));
        let mut d = doc();
        k.sign(&mut d);
        d.insert("key".into(), json!("k2"));
        assert!(k.verify(&d).unwrap_err().contains("does not match"));
        let mut d = doc();
        k.sign(&mut d);
        d.insert(FIELD.into(), json!("hmac-sha256:zz"));
        assert!(k.verify(&d).unwrap_err().contains("not an hmac"));
        d.insert(FIELD.into(), json!(5));
        assert!(k.verify(&d).unwrap_err().contains("not an hmac"));
    }

    #[test]
    fn keys_come_from_the_environment_and_must_be_long_enough() {
        std::env::set_var("SPARKWING_TEST_SIGNING_SHORT", "short");
        let e = SigningKey::from_source("env:SPARKWING_TEST_SIGNING_SHORT", "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16") && !e.contains("short\""), "{e}");
        let e = SigningKey::from_source("env:SPARKWING_TEST_SIGNING_UNSET", "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is unset; export"), "{e}");
        let e = SigningKey::from_source("file:/x", "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("env:VAR"), "{e}");
    }
}
