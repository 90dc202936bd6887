//! The local cache's bounds (issue 13): a size limit with
//! least-recently-used eviction, pruning by age, and collection of the CAS
//! blobs no entry names. `sparkwing cache list|stats|prune` and the limit a
//! save enforces (`cache: { max_size: 10GiB }` in the user profile file).
//!
//! Safety, against the processes that use the cache meanwhile:
//! - **A running restore or save keeps its entry.** Both hold the cache
//!   key's host-wide lock ([`crate::run::cache::try_hold_key`]) while they
//!   read or write it; an entry is removed only while this process holds
//!   that lock, so one in use is skipped (and counted as busy).
//! - **A save in flight keeps its blobs.** A save writes its blobs before it
//!   commits the manifest that names them, so a blob no entry names may be
//!   one of those: a blob is collected only when no remaining entry names
//!   it and it is older than [`GRACE`], or when it belonged to an entry this
//!   prune removed, nothing has stored it again since the prune began (a
//!   save that finds a blob present touches it,
//!   [`crate::run::cache::Cas`]) and no save or remote import is in flight
//!   ([`crate::run::cache::SaveHold`]: one that found the blob present
//!   before the prune began commits its manifest after). A save slower than
//!   the grace period could still name a missing blob, which every restore
//!   checks: a miss (the job runs), never a wrong or partial restore.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::local::store::{CacheEntry, Store};
use crate::run::cache::{try_hold_key, Cas, Manifest};
use crate::util::now_ms;

/// The local cache's size limit when the user profile file sets none.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;

/// Blobs no entry names are kept this long: a save in flight has written
/// them and not yet committed its manifest.
pub const GRACE: Duration = Duration::from_secs(3600);

/// One cache entry with what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub key: String,
    pub job: String,
    pub pipeline: String,
    pub run_id: String,
    pub origin: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: Option<i64>,
    pub files: usize,
    /// The bytes of its distinct blobs (shared ones counted in each entry).
    pub bytes: u64,
    /// `None` when its manifest could not be read (it restores nothing).
    #[serde(skip)]
    blobs: Option<Vec<(String, u64)>>,
}

impl EntryInfo {
    fn of(entry: CacheEntry, last_used_at: i64) -> EntryInfo {
        let manifest = serde_json::from_str::<Manifest>(&entry.manifest).ok();
        let mut blobs: Option<Vec<(String, u64)>> = manifest.as_ref().map(|m| {
            m.files
                .iter()
                .filter(|f| f.symlink.is_none())
                .map(|f| (f.sha256.clone(), f.size))
                .collect()
        });
        if let Some(b) = &mut blobs {
            b.sort();
            b.dedup();
        }
        EntryInfo {
            files: manifest.map_or(0, |m| m.files.len()),
            bytes: blobs.iter().flatten().map(|(_, n)| *n).sum(),
            blobs,
            key: entry.key,
            job: entry.job,
            pipeline: entry.pipeline,
            run_id: entry.run_id,
            origin: entry.origin,
            created_at: entry.created_at,
            last_used_at,
            expires_at: entry.expires_at,
        }
    }

    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Every entry, least recently used first.
pub fn entries(store: &Store) -> Result<Vec<EntryInfo>> {
    Ok(store
        .cache_index()?
        .into_iter()
        .map(|(e, used)| EntryInfo::of(e, used))
        .collect())
}

/// The distinct blobs `entries` name, and their bytes.
pub fn named(entries: &[EntryInfo]) -> (usize, u64) {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for e in entries {
        for (sha, size) in e.blobs.iter().flatten() {
            seen.insert(sha, *size);
        }
    }
    (seen.len(), seen.values().sum())
}

/// What the CAS holds on disk.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Disk {
    pub blobs: u64,
    pub bytes: u64,
}

/// A regular file in one of the CAS's folders.
struct CasFile {
    name: String,
    size: u64,
    modified: SystemTime,
    path: std::path::PathBuf,
}

impl CasFile {
    /// A staged write (`.tmp-*`): a save or fetch in progress, or one a
    /// crash left behind.
    fn staged(&self) -> bool {
        self.name.starts_with('.')
    }
}

/// Every regular file in the CAS's folders, blobs and staged writes alike
/// (one walk for both).
fn cas_files(cas: &Cas) -> Result<Vec<CasFile>> {
    let mut out = Vec::new();
    let root = cas.root();
    let dirs = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    for dir in dirs {
        let dir = dir?;
        if !dir.file_type()?.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(dir.path())? {
            let f = f?;
            // A staged write may be renamed or removed under us.
            let meta = match f.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if meta.is_file() {
                out.push(CasFile {
                    name: f.file_name().to_string_lossy().into_owned(),
                    size: meta.len(),
                    modified: meta.modified()?,
                    path: f.path(),
                });
            }
        }
    }
    Ok(out)
}

/// The CAS's blobs and bytes on disk.
pub fn disk(cas: &Cas) -> Result<Disk> {
    let blobs: Vec<CasFile> = cas_files(cas)?
        .into_iter()
        .filter(|f| !f.staged())
        .collect();
    Ok(Disk {
        blobs: blobs.len() as u64,
        bytes: blobs.iter().map(|b| b.size).sum(),
    })
}

/// What [`prune`] did (or, dry, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Pruned {
    pub removed_entries: Vec<String>,
    /// Entries that were to go but were in use (a restore or save held
    /// their key): kept.
    pub busy: Vec<String>,
    /// Entries that were to go but are still on their way to the remote
    /// (their upload reads the blobs): kept until delivered.
    pub undelivered: Vec<String>,
    pub removed_blobs: u64,
    /// Packs (and manifest documents) staged for upload that no outbox
    /// entry needs any more.
    pub removed_staged: u64,
    pub freed_bytes: u64,
    pub entries_left: usize,
    /// The bytes the remaining entries' blobs hold.
    pub bytes_left: u64,
}

/// Why an entry goes.
fn goes(e: &EntryInfo, now: i64, older_than: Option<Duration>) -> bool {
    let old = older_than.is_some_and(|d| {
        now.saturating_sub(e.last_used_at) >= i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    });
    e.expired(now) || old || e.blobs.is_none()
}

/// Removes expired entries, entries unused for `older_than`, then the least
/// recently used until the rest fits in `max_size`; then collects the blobs
/// no remaining entry names (see the module's safety notes). `dry_run`
/// reports without removing anything.
pub fn prune(
    home: &Path,
    store: &Store,
    older_than: Option<Duration>,
    max_size: Option<u64>,
    dry_run: bool,
) -> Result<Pruned> {
    let began = SystemTime::now();
    let now = now_ms();
    let all = entries(store)?;
    // How many remaining entries name each blob, and its size.
    let mut refs: HashMap<String, (u64, usize)> = HashMap::new();
    for e in &all {
        for (sha, size) in e.blobs.iter().flatten() {
            refs.entry(sha.clone()).or_insert((*size, 0)).1 += 1;
        }
    }
    let mut total: u64 = refs.values().map(|(n, _)| n).sum();
    let mut out = Pruned::default();
    let mut freed_from: Vec<String> = Vec::new();
    // Opened only where one exists: Mode 1 homes have none.
    let outbox = if home.join(sparkwing_outbox::OUTBOX_FILE).exists() {
        Some(sparkwing_outbox::Outbox::open(home)?)
    } else {
        None
    };
    let mut drop_entry = |e: &EntryInfo, out: &mut Pruned, total: &mut u64| -> Result<()> {
        // An entry still queued for the remote keeps its blobs: the upload
        // reads them (evicting it would leave an entry nothing can send).
        if let Some(ob) = &outbox {
            let prefix = sparkwing_sync::target::stream::cache_prefix(&e.key);
            if ob.pending_on_streams(&prefix)? > 0 {
                out.undelivered.push(e.key.clone());
                return Ok(());
            }
        }
        // Only while holding the key: a restore or save in progress keeps it.
        let hold = match try_hold_key(home, &e.key, "prune") {
            Ok(Ok(h)) => Some(h),
            Ok(Err(_)) => {
                out.busy.push(e.key.clone());
                return Ok(());
            }
            // A key no run could hold (not a digest): nothing can be using it.
            Err(_) => None,
        };
        if !dry_run {
            store.cache_remove(&e.key)?;
        }
        drop(hold);
        out.removed_entries.push(e.key.clone());
        for (sha, _) in e.blobs.iter().flatten() {
            if let Some(r) = refs.get_mut(sha) {
                r.1 -= 1;
                if r.1 == 0 {
                    *total = total.saturating_sub(r.0);
                    freed_from.push(sha.clone());
                }
            }
        }
        Ok(())
    };
    let mut kept: Vec<&EntryInfo> = Vec::new();
    for e in &all {
        if goes(e, now, older_than) {
            drop_entry(e, &mut out, &mut total)?;
        } else {
            kept.push(e);
        }
    }
    if let Some(max) = max_size {
        // Least recently used first (`all` is in that order).
        for e in kept {
            if total <= max {
                break;
            }
            drop_entry(e, &mut out, &mut total)?;
        }
    }
    // Collect what no remaining entry names. The blobs this prune freed go
    // at once only while no save or import is in flight (one may have found
    // such a blob present and not yet committed the manifest naming it);
    // otherwise they wait out the grace period like any unnamed blob.
    let exclusive = if dry_run {
        None
    } else {
        crate::run::cache::collect_lock(home)?
    };
    let freed: std::collections::HashSet<String> = if exclusive.is_some() || dry_run {
        freed_from.into_iter().collect()
    } else {
        Default::default()
    };
    let grace_ago = began.checked_sub(GRACE).unwrap_or(SystemTime::UNIX_EPOCH);
    let (staged, blobs): (Vec<CasFile>, Vec<CasFile>) = cas_files(&Cas::new(home))?
        .into_iter()
        .partition(CasFile::staged);
    for f in blobs {
        let named = refs.get(&f.name).is_some_and(|r| r.1 > 0);
        let collectable = f.modified < grace_ago || (freed.contains(&f.name) && f.modified < began);
        if named || !collectable {
            continue;
        }
        if !dry_run {
            match std::fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("removing {}", f.path.display())),
            }
        }
        out.removed_blobs += 1;
        out.freed_bytes += f.size;
    }
    // Packs already delivered (or whose entry is gone) wait no more; only
    // while no save is building packs it has not queued yet. Staged writes
    // a crash left in the CAS go too.
    if exclusive.is_some() {
        let (n, bytes) = sweep_staging(home, STAGING_GRACE, |subject| match &outbox {
            Some(ob) => Ok(ob.has_subject(None, subject)?),
            None => Ok(false),
        })?;
        out.removed_staged += n;
        out.freed_bytes += bytes;
        // Staged writes older than the grace: left by a process killed
        // while it stored or fetched a blob.
        for f in staged.iter().filter(|f| f.modified < grace_ago) {
            if std::fs::remove_file(&f.path).is_ok() {
                out.removed_staged += 1;
                out.freed_bytes += f.size;
            }
        }
    }
    drop(exclusive);
    out.entries_left = all.len() - out.removed_entries.len();
    out.bytes_left = total;
    Ok(out)
}

/// The folder where packs (and large manifest documents) wait for upload:
/// `SPARKWING_HOME/packs` ([`crate::remote::pack`]). A file there is
/// removed once no outbox entry needs it ([`sweep_staging`]).
pub fn staging_dir(home: &Path) -> std::path::PathBuf {
    home.join("packs")
}

/// Staged files younger than this are kept: a save may be about to queue
/// them.
pub const STAGING_GRACE: Duration = Duration::from_secs(600);

/// Removes files of the staging folder no outbox entry needs any more:
/// `needed(subject)` says whether an entry still has that subject (a pack,
/// `<sha>.pack`; a manifest, by its key: `<key>.<sha>.manifest`). Files
/// younger than `min_age`, and anything not named so, are kept. Returns
/// how many files and bytes were removed.
pub fn sweep_staging(
    home: &Path,
    min_age: Duration,
    needed: impl Fn(&str) -> Result<bool>,
) -> Result<(u64, u64)> {
    let dir = staging_dir(home);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut removed = (0, 0);
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().to_string();
        let Ok(meta) = ent.metadata() else { continue };
        let young = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < min_age);
        let staged = name.ends_with(".pack") || name.ends_with(".manifest");
        // A pack or manifest document a crash left half written.
        let torn = name.starts_with('.') && name.contains(".tmp-");
        if young || !meta.is_file() || !(staged || torn) {
            continue;
        }
        let subject = name.split('.').next().unwrap_or("");
        if staged && needed(subject)? {
            continue;
        }
        if std::fs::remove_file(ent.path()).is_ok() {
            removed.0 += 1;
            removed.1 += meta.len();
        }
    }
    Ok(removed)
}

/// After a save: the local cache back under its limit, least recently used
/// entries first. Returns what went, if anything did.
pub fn enforce(home: &Path, store: &Store, max_size: u64) -> Result<Option<Pruned>> {
    if named(&entries(store)?).1 <= max_size {
        return Ok(None);
    }
    prune(home, store, None, Some(max_size), false).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(home: &Path, store: &Store, name: &str) -> String {
        let cas = Cas::new(home);
        let src = home.join(format!("{name}.out"));
        std::fs::write(&src, name.repeat(100)).unwrap();
        let (sha, size) = cas.put_file(&src).unwrap();
        let key = crate::run::cache::hex(name.as_bytes()).repeat(64 / (2 * name.len()));
        let manifest = Manifest {
            version: 1,
            files: vec![crate::run::cache::FileEntry {
                path: "out/f".into(),
                sha256: sha,
                size,
                mode: 0o644,
                symlink: None,
            }],
        };
        store
            .cache_import(&CacheEntry {
                key: key.clone(),
                job: name.into(),
                pipeline: "p".into(),
                run_id: "R".into(),
                created_at: now_ms(),
                expires_at: None,
                manifest: serde_json::to_string(&manifest).unwrap(),
                origin: "local".into(),
            })
            .unwrap();
        key
    }

    /// An entry whose key a running job holds (a restore or a save in
    /// progress) is never removed, nor its blob; the others go.
    #[test]
    fn an_entry_in_use_is_kept_and_named_busy() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let store = Store::open(home).unwrap();
        let busy = entry(home, &store, "ab");
        let idle = entry(home, &store, "cd");
        let hold = try_hold_key(home, &busy, "R-running").unwrap().unwrap();
        let p = prune(home, &store, Some(Duration::ZERO), None, false).unwrap();
        assert_eq!(p.busy, vec![busy.clone()]);
        assert_eq!(p.removed_entries, vec![idle]);
        assert_eq!((p.removed_blobs, p.freed_bytes), (1, 200));
        assert_eq!(p.entries_left, 1);
        assert_eq!(disk(&Cas::new(home)).unwrap().blobs, 1);
        assert!(store.cache_get(&busy).unwrap().is_some());
        drop(hold);
        let p = prune(home, &store, Some(Duration::ZERO), None, false).unwrap();
        assert_eq!(p.removed_entries, vec![busy]);
        assert_eq!(disk(&Cas::new(home)).unwrap().blobs, 0);
    }

    /// A save in flight that found a blob present (it stored an output
    /// some other entry also holds) before a prune removed that other
    /// entry, and commits its manifest after the prune: the blob it names
    /// is still there.
    #[test]
    fn a_blob_a_save_in_flight_found_present_survives_the_prune_that_freed_it() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let store = Store::open(home).unwrap();
        let old = entry(home, &store, "ab");
        // The save: its outputs go to the CAS (the blob is present)...
        let src = home.join("same.out");
        std::fs::write(&src, "ab".repeat(100)).unwrap();
        let saving = crate::run::cache::begin_save(home).unwrap();
        let (sha, size) = Cas::new(home).put_file(&src).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // ...a prune removes the old entry meanwhile...
        let p = prune(home, &store, Some(Duration::ZERO), None, false).unwrap();
        assert_eq!(p.removed_entries, vec![old]);
        // ...and the save commits its manifest.
        let manifest = Manifest {
            version: 1,
            files: vec![crate::run::cache::FileEntry {
                path: "out/f".into(),
                sha256: sha.clone(),
                size,
                mode: 0o644,
                symlink: None,
            }],
        };
        store
            .cache_import(&CacheEntry {
                key: "ef".repeat(32),
                job: "new".into(),
                pipeline: "p".into(),
                run_id: "R2".into(),
                created_at: now_ms(),
                expires_at: None,
                manifest: serde_json::to_string(&manifest).unwrap(),
                origin: "local".into(),
            })
            .unwrap();
        drop(saving);
        assert!(
            Cas::new(home).blob_path(&sha).exists(),
            "the new entry names a blob the prune deleted"
        );
    }

    /// A blob no entry names and younger than the grace period (a save in
    /// flight wrote it and has not committed its manifest) is kept.
    #[test]
    fn an_unnamed_fresh_blob_is_kept_for_the_grace_period() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let store = Store::open(home).unwrap();
        let src = home.join("in-flight");
        std::fs::write(&src, "a save in progress").unwrap();
        Cas::new(home).put_file(&src).unwrap();
        let p = prune(home, &store, Some(Duration::ZERO), Some(0), false).unwrap();
        assert_eq!(p.removed_blobs, 0);
        assert_eq!(disk(&Cas::new(home)).unwrap().blobs, 1);
    }
}
