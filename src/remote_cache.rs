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
/// the remote has no live entry. The manifest must stay inside the job's
/// declared `outputs` ([`crate::cache::check_manifest`]) before any blob is
/// downloaded: anyone who can write the bucket can plant one.
pub async fn fetch(
    target: &dyn Target,
    home: &Path,
    key: &str,
    outputs: &[String],
) -> Result<Option<CacheEntry>> {
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
    crate::cache::check_manifest(&manifest, outputs)
        .context("refusing the remote cache manifest")?;
    let cas = Cas::new(home);
    for f in manifest.files.iter().filter(|f| f.symlink.is_none()) {
        // Another runner's document: check a blob name before using it as a path.
        if f.sha256.len() != 64
            || !f
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!("the remote manifest names an invalid blob {:?}", f.sha256);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_sync::ObjectStoreTarget;

    #[tokio::test]
    async fn a_hostile_remote_manifest_is_refused_not_followed() {
        let remote = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(remote.path().join("keys")).unwrap();
        for (key, sha) in [
            (
                "k1",
                "éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
            ),
            ("k2", "../../../../etc/passwd"),
        ] {
            let doc = serde_json::json!({"key": key, "job": "j", "pipeline": "p", "run_id": "R", "created_at": 0,
                "expires_at": null, "manifest": {"version": 1, "files": [{"path": "o", "sha256": sha, "size": 1, "mode": 420}]}});
            std::fs::write(
                remote.path().join(format!("keys/{key}.json")),
                doc.to_string(),
            )
            .unwrap();
            let t = ObjectStoreTarget::filesystem(remote.path());
            let e = fetch(&t, home.path(), key, &["o".into()])
                .await
                .unwrap_err();
            assert!(format!("{e:#}").contains("invalid blob"), "{e:#}");
        }
        assert!(fetch(
            &ObjectStoreTarget::filesystem(remote.path()),
            home.path(),
            "absent",
            &[]
        )
        .await
        .unwrap()
        .is_none());
    }
}
