//! Cross-runner cache reads: on a local miss, a job's key is looked up on
//! the profile's cache target (`keys/<key>.json`), and every blob it names
//! that the local CAS lacks is downloaded and verified by SHA-256 before the
//! entry is used. A missing, corrupt or truncated blob makes the lookup a
//! miss (with the reason), never a partial restore.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sparkwing_sync::target::blob_key;
use sparkwing_sync::Target;

use crate::cache::{Cas, Manifest};
use crate::store::CacheEntry;
use crate::util::now_ms;

/// Fetches the remote entry for `key` into the local CAS. `Ok(None)` when
/// the remote has no live entry.
pub async fn fetch(target: &dyn Target, home: &Path, key: &str) -> Result<Option<CacheEntry>> {
    let Some(body) = target
        .read(&format!("keys/{key}.json"))
        .await
        .map_err(|e| anyhow!("{e}"))?
    else {
        return Ok(None);
    };
    let doc: Value = serde_json::from_slice(&body).context("reading the remote cache manifest")?;
    let expires_at = doc["expires_at"].as_i64();
    if expires_at.is_some_and(|t| t <= now_ms()) {
        return Ok(None);
    }
    let manifest: Manifest = serde_json::from_value(doc["manifest"].clone())
        .context("reading the remote cache manifest")?;
    let cas = Cas::new(home);
    for f in manifest.files.iter().filter(|f| f.symlink.is_none()) {
        if cas.blob_path(&f.sha256).exists() {
            continue;
        }
        let Some(bytes) = target
            .read(&blob_key(&f.sha256))
            .await
            .map_err(|e| anyhow!("{e}"))?
        else {
            bail!(
                "the remote manifest names blob {}, which the remote does not have",
                f.sha256
            );
        };
        let (home, sha) = (home.to_path_buf(), f.sha256.clone());
        tokio::task::spawn_blocking(move || Cas::new(&home).put_bytes(&sha, &bytes)).await??;
    }
    let field = |k: &str| {
        doc[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("remote cache manifest lacks `{k}`"))
    };
    Ok(Some(CacheEntry {
        key: key.to_string(),
        job: field("job")?,
        pipeline: field("pipeline")?,
        run_id: field("run_id")?,
        created_at: doc["created_at"].as_i64().unwrap_or_else(now_ms),
        expires_at,
        manifest: serde_json::to_string(&manifest)?,
    }))
}
