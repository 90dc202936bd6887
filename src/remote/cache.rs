//! Cross-runner cache reads: on a local miss, a job's key is looked up on
//! the profile's cache target (`keys/<key>.json`), and every file it names
//! that the local CAS lacks is downloaded and verified by SHA-256 before the
//! entry is used: from packs for a version 2 manifest
//! ([`crate::remote::pack`]), blob by blob for a version 1 manifest (written
//! before packs; still restored). A missing, corrupt or truncated pack or
//! blob makes the lookup a miss (with the reason), never a partial restore.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sparkwing_sync::RemoteView;

use crate::local::store::CacheEntry;
use crate::profile::scrub;
use crate::remote::pack::{self, Loc, RemoteManifest};
use crate::remote::signing::SigningKey;
use crate::run::cache::Cas;
use crate::util::now_ms;
use sparkwing_sync::doc::{Bounded, PlainName, RunId, MAX_NAME};

/// Most files one remote manifest may name.
pub const MAX_FILES: usize = 1_000_000;

/// A remote cache manifest document (`keys/<key>.json`), parsed into
/// typed, bounded fields.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteEntry {
    pub key: Bounded<MAX_NAME>,
    pub job: PlainName,
    pub pipeline: PlainName,
    pub run_id: RunId,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    pub manifest: RemoteManifest,
}

/// Parses the manifest document published for `key` (as stored: zstd or
/// plain JSON): a JSON object with typed, bounded fields, naming that same
/// key, whose manifest is well formed ([`RemoteManifest::check`]).
/// Signatures are checked by [`read_entry`].
pub fn parse_entry(key: &str, body: &[u8]) -> Result<RemoteEntry> {
    let json = pack::manifest_json(body)?;
    parse_json(key, &json)
}

fn parse_json(key: &str, json: &[u8]) -> Result<RemoteEntry> {
    let e: RemoteEntry = serde_json::from_slice(json)
        .context("the remote cache manifest is not a manifest document")?;
    if e.key.0 != key {
        bail!(
            "the remote cache manifest for key {} names another key",
            crate::util::clip(key, 12)
        );
    }
    if e.manifest.files.len() > MAX_FILES {
        bail!(
            "the remote cache manifest names {} files, more than the {MAX_FILES} accepted",
            e.manifest.files.len()
        );
    }
    e.manifest
        .check()
        .context("the remote cache manifest is malformed")?;
    Ok(e)
}

/// Reads a stored manifest document: decompressed, its signature checked
/// when there is a `signing` key, then parsed ([`parse_entry`]).
pub fn read_entry(key: &str, body: &[u8], signing: Option<&SigningKey>) -> Result<RemoteEntry> {
    let json = pack::manifest_json(body)?;
    if let Some(signing) = signing {
        verify_signature(key, &json, signing)?;
    }
    parse_json(key, &json)
}

/// With a signing key, the document's JSON must carry a valid signature.
pub fn verify_signature(key: &str, json: &[u8], signing: &SigningKey) -> Result<()> {
    let short = crate::util::clip(key, 12);
    let doc: serde_json::Value = serde_json::from_slice(json)
        .with_context(|| format!("the remote cache manifest for key {short} is not JSON"))?;
    let map = doc
        .as_object()
        .ok_or_else(|| anyhow!("the remote cache manifest for key {short} is not a JSON object"))?;
    signing.verify(map).map_err(|why| {
        anyhow!(
            "the remote cache manifest for key {short} is refused: {why} (cache.signing_key_source {}); anyone who can write the bucket could have put it there",
            signing.source
        )
    })
}

/// A remote entry brought into the local CAS.
#[derive(Debug)]
pub struct Fetched {
    /// The entry, to record locally.
    pub entry: CacheEntry,
    /// Where the remote holds each chunk it names (version 2), for the
    /// local index (a later save names them instead of sending them).
    pub chunks: Vec<(String, Loc)>,
}

/// Fetches the remote entry for `key` into the local CAS. `Ok(None)` when
/// the remote has no live entry. With `signing`, the manifest must be signed
/// with that key ([`crate::remote::signing`]). The manifest must stay inside the
/// job's declared `outputs` ([`crate::run::cache::check_manifest`]) before any
/// byte is downloaded: anyone who can write the bucket can plant one. Every
/// file is verified by SHA-256 before it enters the CAS. A pack found
/// missing is a [`pack::MissingPack`] in the error's chain.
pub async fn fetch(
    view: &dyn RemoteView,
    home: &Path,
    key: &str,
    outputs: &[String],
    signing: Option<&SigningKey>,
) -> Result<Option<Fetched>> {
    let Some(body) = view
        .manifest(key)
        .await
        .map_err(|e| anyhow!("{}", scrub(&e.message)))?
    else {
        return Ok(None);
    };
    let entry = read_entry(key, &body, signing)?;
    if entry.expires_at.is_some_and(|t| t <= now_ms()) {
        return Ok(None);
    }
    let manifest = entry.manifest.local();
    crate::run::cache::check_manifest(&manifest, outputs)
        .context("refusing the remote cache manifest")?;
    let cas = Cas::new(home);
    // What would be downloaded must fit in SPARKWING_HOME, or nothing is.
    let mut missing = std::collections::HashSet::new();
    let want: u64 = manifest
        .files
        .iter()
        .filter(|f| f.symlink.is_none() && !cas.blob_path(&f.sha256).exists())
        .filter(|f| missing.insert(f.sha256.as_str()))
        .map(|f| f.size)
        .fold(0, u64::saturating_add);
    crate::run::cache::check_room(home, want, "downloading the remote entry's files")?;
    let chunks = if entry.manifest.version == 1 {
        fetch_blobs(view, &cas, &manifest).await?;
        Vec::new()
    } else {
        pack::download(view, &cas, &entry.manifest, |sha| {
            !cas.blob_path(sha).exists()
        })
        .await?
    };
    Ok(Some(Fetched {
        entry: CacheEntry {
            key: key.to_string(),
            job: entry.job.0,
            pipeline: entry.pipeline.0,
            run_id: entry.run_id.0,
            created_at: entry.created_at.unwrap_or_else(now_ms),
            expires_at: entry.expires_at,
            manifest: serde_json::to_string(&manifest)?,
            origin: match signing {
                Some(k) => k.origin(),
                None => "remote".into(),
            },
        },
        chunks,
    }))
}

/// A version 1 manifest's files, one blob each.
async fn fetch_blobs(
    view: &dyn RemoteView,
    cas: &Cas,
    manifest: &crate::run::cache::Manifest,
) -> Result<()> {
    for f in manifest.files.iter().filter(|f| f.symlink.is_none()) {
        if cas.blob_path(&f.sha256).exists() {
            continue;
        }
        // Read no more than the manifest says the blob holds: a larger
        // object is not this blob (a permanent failure to read it is the
        // same verdict as a hash mismatch).
        let got = view.blob(&f.sha256, f.size).await;
        let Some(bytes) = got.map_err(|e| match e.class {
            sparkwing_outbox::ErrorClass::Permanent => anyhow!(
                "blob {} is corrupt or truncated on the remote: {}",
                f.sha256,
                scrub(&e.message)
            ),
            _ => anyhow!("{}", scrub(&e.message)),
        })?
        else {
            bail!(
                "the remote manifest names blob {}, which the remote does not have",
                f.sha256
            );
        };
        let (root, sha) = (cas.root().to_path_buf(), f.sha256.clone());
        let len = bytes.len() as u64;
        // The hash decides first: bytes that do not hash to the name are a
        // corrupt or truncated blob; bytes that do, at another size than
        // the manifest gives, mean the manifest is wrong.
        tokio::task::spawn_blocking(move || Cas::at(&root).put_fetched(&sha, &bytes)).await??;
        if len != f.size {
            bail!(
                "the remote manifest says blob {} holds {} bytes; it holds {len} (the manifest is wrong)",
                f.sha256,
                f.size
            );
        }
    }
    // Not synced: nothing is committed here that a crash could make name
    // a missing blob (a blob torn by a crash fails the SHA-256 check every
    // restore makes, is removed and fetched again).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_sync::{layout, ObjectStoreTarget, ObjectView};

    fn view(dir: &Path) -> ObjectView {
        ObjectView::new(std::sync::Arc::new(ObjectStoreTarget::filesystem(dir)))
    }

    #[tokio::test]
    async fn a_hostile_remote_manifest_is_refused_not_followed() {
        let remote = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(remote.path().join("keys")).unwrap();
        let k1 = "1".repeat(64);
        let k2 = "2".repeat(64);
        for (key, sha) in [
            (
                k1.as_str(),
                "éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
            ),
            (k2.as_str(), "../../../../etc/passwd"),
        ] {
            let doc = serde_json::json!({"key": key, "job": "j", "pipeline": "p", "run_id": "R", "created_at": 0,
                "expires_at": null, "manifest": {"version": 1, "files": [{"path": "o", "sha256": sha, "size": 1, "mode": 420}]}});
            std::fs::write(remote.path().join(layout::manifest(key)), doc.to_string()).unwrap();
            let e = fetch(&view(remote.path()), home.path(), key, &["o".into()], None)
                .await
                .unwrap_err();
            assert!(format!("{e:#}").contains("invalid blob"), "{e:#}");
        }
        assert!(fetch(
            &view(remote.path()),
            home.path(),
            &"a".repeat(64),
            &[],
            None
        )
        .await
        .unwrap()
        .is_none());
    }

    #[test]
    fn hostile_manifest_documents_are_refused_with_a_reason() {
        let good = serde_json::json!({"key": "k", "job": "j", "pipeline": "p", "run_id": "R",
            "created_at": 0, "expires_at": null,
            "manifest": {"version": 1, "files": [{"path": "o", "sha256": "a".repeat(64), "size": 1, "mode": 420}]}});
        assert!(parse_entry("k", good.to_string().as_bytes()).is_ok());
        let long = "x".repeat(sparkwing_sync::doc::MAX_NAME + 1);
        let with = |k: &str, v: serde_json::Value| {
            let mut d = good.clone();
            d[k] = v;
            d.to_string().into_bytes()
        };
        for (body, want) in [
            (b"[1]".to_vec(), "not a manifest document"),
            (b"5".to_vec(), "not a manifest document"),
            (b"{".to_vec(), "not a manifest document"),
            (with("key", "other".into()), "names another key"),
            (with("job", long.clone().into()), "not a manifest document"),
            (with("run_id", 5.into()), "not a manifest document"),
            (
                with("manifest", serde_json::json!({"version": 1, "files": {}})),
                "not a manifest document",
            ),
            (
                with(
                    "manifest",
                    serde_json::json!({"version": 1, "files": [{"path": 1}]}),
                ),
                "not a manifest document",
            ),
        ] {
            let e = format!("{:#}", parse_entry("k", &body).unwrap_err());
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }
}
