//! Garbage collection of a cache surface (issue 13): manifests past their
//! `ttl` are deleted, then blobs no manifest names are deleted, two
//! collections apart.
//!
//! **Why a blob survives a save in flight.** A save uploads its blobs (or
//! finds them present) and only then writes the manifest that names them.
//! A collection cannot tell such a blob from garbage, so it only *marks* the
//! blobs no manifest names (`gc/candidates.json`, each with the time it was
//! first seen unnamed); a later collection deletes a blob only if it was
//! marked at least `grace` earlier and is still named by no manifest (a
//! blob named again loses its mark).
//! A save that *uploaded* the blob after the mark has written its manifest
//! by the time the mark is `grace` old (default 1 h; a save's uploads take
//! minutes at most), so that collection sees the blob named and keeps it.
//! Hazards remain, and each costs a miss (every restore checks every
//! chunk), never a wrong or partial restore: a save slower than `grace`; a
//! save that *found a pack present* (its conditional create answered
//! "exists") while its mark was already ripe, so that a collection during
//! the save deletes it before the manifest names it; and a save that names
//! chunks of a pack from its local index (packs are content-addressed, and
//! a save names what the remote already holds instead of sending it) after
//! every manifest naming that pack expired and a collection deleted it.
//! A runner that restores such a manifest finds the pack missing, forgets
//! it, recomputes the job and sends the bytes again; a runner that only
//! saves keeps naming the pack until it restores once. Closing these needs
//! the save to refresh what it relies on (a read of the marks, or a
//! conditional check of the packs it names before the manifest goes).
//!
//! **A manifest it cannot read** may name any blob: a read that fails for
//! now ends the collection, and while a manifest is refused or does not
//! parse no blob is deleted (marks keep their time).
//!
//! **Expired manifests.** A manifest whose `expires_at` has passed is read
//! again just before it is deleted and deleted only if it is still expired,
//! so a save that rewrote the key meanwhile keeps it (an object store
//! offers no conditional delete: a rewrite in the instant between is the
//! window left, and costs a miss).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::layout;
use crate::object::ObjectStoreTarget;
use crate::target::{read_limits, TargetError};

/// What a manifest says, as the caller's parser reads it.
#[derive(Debug, Clone, Default)]
pub struct ManifestFacts {
    /// The blobs it names.
    pub blobs: Vec<String>,
    /// When it expires (Unix ms), if it does.
    pub expires_at: Option<i64>,
}

/// Reads a manifest's bytes (cache key, body) into what collection needs.
pub type ParseManifest = dyn Fn(&str, &[u8]) -> Result<ManifestFacts, String> + Sync;

/// Options of one collection.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Now, in Unix ms.
    pub now_ms: i64,
    /// How long a blob stays marked before it can be deleted.
    pub grace: Duration,
    /// Report only: delete nothing, mark nothing.
    pub dry_run: bool,
}

/// What a collection found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    pub manifests: u64,
    /// Manifests that did not parse or were refused: while there is one,
    /// no blob is deleted (it may name any of them).
    pub unreadable_manifests: Vec<String>,
    pub expired_manifests_deleted: Vec<String>,
    pub blobs: u64,
    pub blobs_named: u64,
    /// Blobs no manifest names, marked by this collection.
    pub marked: u64,
    /// Marked blobs (now or before) waiting out the grace period.
    pub waiting: u64,
    pub deleted_blobs: u64,
    pub deleted_bytes: u64,
    pub dry_run: bool,
}

/// The marks collections leave for the next: each unnamed blob with when
/// it was first seen unnamed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Candidates {
    blobs: std::collections::BTreeMap<String, i64>,
}

/// Most bytes of the candidates object accepted (hostile or damaged: it
/// then counts as no marks, which deletes nothing).
const CANDIDATES_MAX: u64 = 256 << 20;

fn keyed(key: &str) -> Option<String> {
    let name = key.strip_prefix("keys/")?.strip_suffix(".json")?;
    crate::doc::is_sha256(name).then(|| name.to_string())
}

fn blob_name(key: &str) -> Option<String> {
    let rest = key.strip_prefix("cas/")?;
    let (dir, sha) = rest.split_once('/')?;
    let ok = crate::doc::is_sha256(sha) && sha.starts_with(dir) && dir.len() == 2;
    ok.then(|| sha.to_string())
}

/// One collection of `objects` (a cache surface). `parse` reads a
/// manifest's bytes (the caller's typed, bounded parser).
pub async fn collect(
    objects: &ObjectStoreTarget,
    parse: &ParseManifest,
    opts: GcOptions,
) -> Result<GcReport, TargetError> {
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    // The marks of the last collection, read first: a blob must have been
    // marked before this collection looked at the manifests.
    let previous: Candidates = match objects.read(layout::GC_CANDIDATES, CANDIDATES_MAX).await {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
        Ok(None) => Candidates::default(),
        Err(e) if e.class == sparkwing_outbox::ErrorClass::Permanent => Candidates::default(),
        Err(e) => return Err(e),
    };
    // Mark: every blob a live manifest names.
    let mut named: BTreeSet<String> = BTreeSet::new();
    for key in objects.list("keys/").await? {
        let Some(cache_key) = keyed(&key) else {
            continue;
        };
        report.manifests += 1;
        let facts = match objects.read(&key, read_limits::MANIFEST).await {
            Ok(Some(b)) => parse(&cache_key, &b),
            Ok(None) => continue,
            // A manifest refused for good (too large, ...) is reported
            // below; any other failure (a timeout) ends the collection: the
            // blobs it names are unknown.
            Err(e) if e.class == sparkwing_outbox::ErrorClass::Permanent => Err(e.message),
            Err(e) => return Err(e),
        };
        let facts = match facts {
            Ok(f) => f,
            Err(why) => {
                report
                    .unreadable_manifests
                    .push(format!("{cache_key}: {}", crate::doc::clip(&why, 200)));
                continue;
            }
        };
        if facts.expires_at.is_some_and(|t| t <= opts.now_ms) {
            if !opts.dry_run && still_expired(objects, &key, &cache_key, parse, opts.now_ms).await?
            {
                objects.delete(&key).await?;
            }
            report.expired_manifests_deleted.push(cache_key);
            continue;
        }
        named.extend(facts.blobs);
    }
    report.blobs_named = named.len() as u64;
    // A manifest that could not be read may name any blob (a newer
    // sparkwing's format, a damaged copy): this collection deletes none,
    // and marks keep their time for a collection that reads them all.
    let may_delete = report.unreadable_manifests.is_empty();
    // Sweep: delete what was marked at least `grace` ago and is still
    // unnamed; mark what is newly unnamed; forget marks of named blobs.
    let ripe_before = opts
        .now_ms
        .saturating_sub(i64::try_from(opts.grace.as_millis()).unwrap_or(i64::MAX));
    let mut marks = Candidates::default();
    let sizes: HashMap<String, u64> = objects.list_sized("cas/").await?.into_iter().collect();
    for (key, size) in &sizes {
        let Some(sha) = blob_name(key) else {
            continue;
        };
        report.blobs += 1;
        if named.contains(&sha) {
            continue;
        }
        match previous.blobs.get(&sha) {
            Some(&at) if at <= ripe_before && may_delete => {
                if !opts.dry_run {
                    objects.delete(key).await?;
                }
                report.deleted_blobs += 1;
                report.deleted_bytes += size;
            }
            Some(&at) => {
                marks.blobs.insert(sha, at);
            }
            None => {
                marks.blobs.insert(sha, opts.now_ms);
                report.marked += 1;
            }
        }
    }
    report.waiting = marks.blobs.len() as u64;
    if !opts.dry_run {
        let body = serde_json::to_vec(&marks)
            .map_err(|e| TargetError::permanent(format!("writing the gc marks: {e}")))?;
        objects.put_raw(layout::GC_CANDIDATES, body.into()).await?;
    }
    Ok(report)
}

async fn still_expired(
    objects: &ObjectStoreTarget,
    key: &str,
    cache_key: &str,
    parse: &ParseManifest,
    now_ms: i64,
) -> Result<bool, TargetError> {
    Ok(match objects.read(key, read_limits::MANIFEST).await? {
        Some(b) => parse(cache_key, &b)
            .ok()
            .and_then(|f| f.expires_at)
            .is_some_and(|t| t <= now_ms),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ab00000000000000000000000000000000000000000000000000000000000000";
    const KEY: &str = "cd00000000000000000000000000000000000000000000000000000000000000";

    fn parse_ok(_: &str, body: &[u8]) -> Result<ManifestFacts, String> {
        let blobs: Vec<String> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok(ManifestFacts {
            blobs,
            expires_at: None,
        })
    }

    /// A manifest this collection cannot read (a transient read error, a
    /// newer sparkwing's format) may name blobs marked by an earlier
    /// collection (a save in flight then): they are not deleted.
    #[tokio::test]
    async fn a_manifest_that_cannot_be_read_keeps_the_blobs_it_may_name() {
        let dir = tempfile::tempdir().unwrap();
        let objects = ObjectStoreTarget::filesystem(dir.path());
        let blob = format!("cas/ab/{SHA}");
        objects
            .put_raw(&blob, bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
        let grace = Duration::from_secs(3600);
        let opts = |now_ms| GcOptions {
            now_ms,
            grace,
            dry_run: false,
        };
        // A save in flight: its blob is uploaded, its manifest not yet.
        let r = collect(&objects, &parse_ok, opts(1_000)).await.unwrap();
        assert_eq!(r.marked, 1);
        objects
            .put_raw(
                &format!("keys/{KEY}.json"),
                serde_json::to_vec(&[SHA]).unwrap().into(),
            )
            .await
            .unwrap();
        // A grace later, the manifest that names it cannot be read once.
        let failing = |_: &str, _: &[u8]| -> Result<ManifestFacts, String> {
            Err("timed out reading the object".into())
        };
        let r = collect(&objects, &failing, opts(1_000 + 3_600_001))
            .await
            .unwrap();
        assert_eq!(r.unreadable_manifests.len(), 1);
        assert_eq!(r.deleted_blobs, 0, "{r:?}");
        assert!(objects.read(&blob, 10).await.unwrap().is_some());
        // Read again, it names the blob: it is kept and unmarked.
        let r = collect(&objects, &parse_ok, opts(1_000 + 7_200_002))
            .await
            .unwrap();
        assert_eq!((r.deleted_blobs, r.waiting), (0, 0), "{r:?}");
    }
}
