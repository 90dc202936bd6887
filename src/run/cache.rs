//! The local job cache: cache keys, the content-addressed store under
//! `SPARKWING_HOME/cas/` and manifests that map a key to its outputs.
//!
//! A key is the SHA-256 of everything that decides a job's result: the
//! contents of the files matched by `cache.key`, the job's steps, env,
//! working directory and declared outputs. Blobs are stored once under
//! `cas/<sha[..2]>/<sha>` (read-only, deduplicated) before the manifest that
//! names them is published; a restore verifies every blob's SHA-256 and
//! writes nothing unless all of them are present and intact.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sparkwing_schema::StorageFault;

use crate::run::pipeline::Job;

/// One file of a job's outputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Relative to the project directory, `/`-separated.
    pub path: String,
    /// Empty for a symlink.
    pub sha256: String,
    pub size: u64,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub files: Vec<FileEntry>,
}

/// A cache entry's manifest document, as a remote holds it (unsigned;
/// the replicator signs it when the profile has a key): the entry's
/// provenance and its files.
pub fn manifest_document(
    entry: &crate::local::store::CacheEntry,
    manifest: &impl Serialize,
) -> serde_json::Value {
    serde_json::json!({
        "key": entry.key, "job": entry.job, "pipeline": entry.pipeline, "run_id": entry.run_id,
        "created_at": entry.created_at, "expires_at": entry.expires_at, "manifest": manifest,
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex(&h.finalize()), n_total))
}

fn has_glob_meta(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Lists files (and symlinks) under `path`, recursively, sorted.
fn walk(path: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        entries.sort();
        for e in entries {
            walk(&e, out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Expands one pattern (a path, a directory or a glob) relative to `root`.
/// Returns the matched files, sorted, or `None` when nothing matched.
fn expand(root: &Path, pattern: &str) -> Result<Option<Vec<PathBuf>>> {
    let mut files = Vec::new();
    if has_glob_meta(pattern) {
        // The `glob` crate matches nothing for a trailing `**`; users mean
        // "everything below", which is `**/*`.
        let pattern_full = if pattern.ends_with("**") {
            format!("{pattern}/*")
        } else {
            pattern.to_string()
        };
        let full = root.join(&pattern_full);
        let paths = glob::glob(&full.to_string_lossy())
            .with_context(|| format!("invalid glob `{pattern}`"))?;
        for p in paths {
            let p = p.with_context(|| format!("reading a match of `{pattern}`"))?;
            // A matched directory stands for everything in it (`src/**`).
            walk(&p, &mut files).with_context(|| format!("reading {}", p.display()))?;
        }
        files.sort();
        files.dedup();
    } else {
        let p = root.join(pattern);
        match fs::symlink_metadata(&p) {
            Ok(_) => walk(&p, &mut files).with_context(|| format!("reading {}", p.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
    Ok(if files.is_empty() { None } else { Some(files) })
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The cache key of a job: hex SHA-256 of its inputs (see the module doc).
pub fn cache_key(project_dir: &Path, job: &Job) -> Result<String> {
    let spec = match &job.cache {
        Some(c) => c,
        None => bail!("job has no cache"),
    };
    let mut h = Sha256::new();
    let mut field = |tag: &str, value: &str| {
        h.update((tag.len() as u64).to_le_bytes());
        h.update(tag.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value.as_bytes());
    };
    field("v", "sparkwing-cache-v1");
    field("wd", job.working_directory.as_deref().unwrap_or(""));
    let mut env: Vec<_> = job.env.iter().collect();
    env.sort();
    for (k, v) in env {
        field("env", &format!("{k}={}", v.0));
    }
    for s in &job.steps {
        field("step", &s.run);
        let mut env: Vec<_> = s.env.iter().collect();
        env.sort();
        for (k, v) in env {
            field("step.env", &format!("{k}={}", v.0));
        }
    }
    for o in &spec.outputs {
        field("output", o);
    }
    for pattern in &spec.key {
        field("key", pattern);
        match expand(project_dir, pattern)? {
            None => field("missing", pattern),
            Some(files) => {
                for f in files {
                    let meta = fs::symlink_metadata(&f)?;
                    field("file", &rel(project_dir, &f));
                    if meta.file_type().is_symlink() {
                        field("link", &fs::read_link(&f)?.to_string_lossy());
                    } else {
                        let (sha, _) =
                            sha256_file(&f).with_context(|| format!("hashing {}", f.display()))?;
                        field("sha", &sha);
                    }
                }
            }
        }
    }
    Ok(hex(&h.finalize()))
}

/// The content-addressed blob store under `SPARKWING_HOME/cas/`.
pub struct Cas {
    root: PathBuf,
}

impl Cas {
    /// `SPARKWING_HOME/cas`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn new(home: &Path) -> Cas {
        Cas {
            root: home.join("cas"),
        }
    }

    /// A CAS rooted elsewhere (a scratch one, for `sync verify`).
    pub fn at(root: &Path) -> Cas {
        Cas {
            root: root.to_path_buf(),
        }
    }

    pub fn blob_path(&self, sha: &str) -> PathBuf {
        self.root.join(&sha[..2.min(sha.len())]).join(sha)
    }

    /// Stores bytes fetched from elsewhere under their SHA-256, after
    /// checking that they hash to it (a corrupt or truncated download is an
    /// error, never stored). A blob already present is not written again.
    /// Not synced: they can be fetched again, and a blob torn by a crash is
    /// caught by the SHA-256 check every restore makes (removed, and a
    /// miss).
    pub fn put_fetched(&self, sha: &str, bytes: &[u8]) -> Result<()> {
        let got = hex(&Sha256::digest(bytes));
        if got != sha {
            bail!(
                "blob {sha} is corrupt or truncated ({} bytes hash to {got})",
                bytes.len()
            );
        }
        self.install(sha, |tmp| {
            let write = || -> io::Result<()> {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(tmp)?
                    .write_all(bytes)
            };
            write().map_err(|e| anyhow!(StorageFault::from_io(tmp, &e)))
        })
        .with_context(|| format!("storing blob {sha} in {}", self.root.display()))
        .map(|_| ())
    }

    /// Moves a file assembled elsewhere (`tmp`, in the blob's folder) into
    /// the CAS as blob `sha`, if it hashes to it; removes it if not.
    pub fn adopt(&self, sha: &str, tmp: &Path) -> Result<()> {
        let checked = sha256_file(tmp)
            .map_err(|e| anyhow!(StorageFault::from_io(tmp, &e)))
            .and_then(|(got, n)| {
                if got == sha {
                    Ok(())
                } else {
                    Err(anyhow!(
                        "blob {sha} is corrupt ({n} bytes assembled from its chunks hash to {got})"
                    ))
                }
            });
        let dest = self.blob_path(sha);
        let result = checked.and_then(|()| {
            if dest.exists() {
                return Ok(());
            }
            fs::set_permissions(tmp, fs::Permissions::from_mode(0o444))
                .and_then(|_| fs::rename(tmp, &dest))
                .map_err(|e| anyhow!(StorageFault::from_io(&dest, &e)))
        });
        let _ = fs::remove_file(tmp);
        result
    }

    /// Stores a file's contents; returns (sha256, size). A blob already
    /// present is not written again. Not synced one by one: the caller
    /// syncs the filesystem once before it commits anything naming the
    /// blobs ([`snapshot`] does).
    pub fn put_file(&self, src: &Path) -> Result<(String, u64)> {
        self.put_file_tracked(src).map(|(sha, size, _)| (sha, size))
    }

    /// [`Cas::put_file`], also saying whether the blob was written now
    /// (false: it was there already).
    pub fn put_file_tracked(&self, src: &Path) -> Result<(String, u64, bool)> {
        // The file is read twice (hashed, then copied if the CAS lacks it);
        // if something rewrites it in between (another run of the same job
        // in the same checkout), both reads are tried again a few times, and
        // only two reads that agree are stored.
        let mut attempt = 0;
        loop {
            let (sha, size) =
                sha256_file(src).with_context(|| format!("hashing {}", src.display()))?;
            let stored = self.install(&sha, |tmp| {
                let (got, _) = copy_hashing(src, tmp)?;
                if got != sha {
                    return Err(anyhow!(ChangedWhileStored(src.display().to_string())));
                }
                Ok(())
            });
            match stored {
                Ok(fresh) => return Ok((sha, size, fresh)),
                Err(e) if attempt < 4 && e.downcast_ref::<ChangedWhileStored>().is_some() => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("storing {} in {}", src.display(), self.root.display())
                    })
                }
            }
        }
    }

    /// Writes a blob through a temporary file (`write` fills and fsyncs it),
    /// makes it read-only and renames it into place, unless present. A
    /// failure to write the CAS itself is a [`StorageFault`].
    fn install(&self, sha: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<bool> {
        let dest = self.blob_path(sha);
        if dest.exists() {
            // Stored again: fresh for the collector's grace period
            // (`run::evict`), which may be deciding about it right now.
            // Best effort: a blob it then removes is a miss, never wrong.
            if let Ok(f) = fs::File::open(&dest) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(false);
        }
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| anyhow!(StorageFault::from_io(dir, &e)))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            crate::util::new_run_id()
        ));
        let result = write(&tmp).and_then(|_| {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))
                .and_then(|_| fs::rename(&tmp, &dest))
                .map_err(|e| anyhow!(StorageFault::from_io(&dest, &e)))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| true)
    }
}

/// Copies `src` to a new file `dest` (not synced: see [`snapshot`] and
/// [`restore`]), returns its SHA-256.
fn copy_hashing(src: &Path, dest: &Path) -> Result<(String, u64)> {
    let mut from = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    // Reading `src` fails as it is; writing `dest` (the CAS) is a
    // StorageFault.
    let fault = |e: io::Error| anyhow!(StorageFault::from_io(dest, &e));
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(fault)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = from
            .read(&mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(fault)?;
        total += n as u64;
    }
    Ok((hex(&h.finalize()), total))
}

/// A file that changed between its hashing and its copy into the CAS.
#[derive(Debug)]
struct ChangedWhileStored(String);

impl std::fmt::Display for ChangedWhileStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed while it was being stored (is something else writing it?); run the job again",
            self.0
        )
    }
}

impl std::error::Error for ChangedWhileStored {}

/// This host's hold on one cache key, from its lookup until its outputs are
/// restored or stored. Two runs of the same cached job on one host (in one
/// checkout, most often) would otherwise write the same output files at
/// once, and one could store or restore the other's half-written files. The
/// second run waits for the first and then, normally, has a local hit.
///
/// It is an exclusive `flock` on `SPARKWING_HOME/locks/cache-<key>.lock`:
/// released when dropped or when its process dies. The file names the
/// holder's run, for the waiting run's message. Lock files stay (removing one
/// while another process opens it would split the lock); each is a few bytes.
pub struct KeyHold {
    _file: fs::File,
}

impl KeyHold {
    /// The lock's descriptor (close-on-exec), for step processes that are
    /// to share the hold.
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self._file)
    }
}

/// Takes the hold on `key` for `run` if no other process has it; otherwise
/// returns the run id the holder wrote (empty if unknown).
pub fn try_hold_key(home: &Path, key: &str, run: &str) -> Result<Result<KeyHold, String>> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("cache key {key:?} is not a hex digest");
    }
    let dir = home.join("locks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("cache-{key}.lock"));
    match crate::util::try_flock(&path)? {
        Some(mut f) => {
            // Best effort: only a waiting run's message reads it.
            let _ = f.set_len(0).and_then(|_| f.write_all(run.as_bytes()));
            Ok(Ok(KeyHold { _file: f }))
        }
        None => {
            let mut holder = String::new();
            if let Ok(f) = fs::File::open(&path) {
                let _ = f.take(64).read_to_string(&mut holder);
            }
            Ok(Err(crate::util::one_line(holder.trim(), 64)))
        }
    }
}

/// A save's (or a remote import's) hold on the CAS, from before it looks
/// for or writes its first blob until the manifest naming them is
/// committed: a shared `flock` on `SPARKWING_HOME/locks/cas-writers.lock`.
/// A prune deletes the blobs it has just freed at once only while no such
/// hold exists ([`collect_lock`]); otherwise they wait out the grace period
/// like any unnamed blob, so a blob a save found present is never deleted
/// under it ([`crate::run::evict`]).
pub struct SaveHold {
    _file: fs::File,
}

fn writers_lock(home: &Path) -> Result<fs::File> {
    let dir = home.join("locks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("cas-writers.lock");
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes a [`SaveHold`], waiting while a prune deletes blobs (a moment).
pub fn begin_save(home: &Path) -> Result<SaveHold> {
    use std::os::fd::AsRawFd;
    let f = writers_lock(home)?;
    loop {
        // SAFETY: a valid open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } == 0 {
            return Ok(SaveHold { _file: f });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("locking locks/cas-writers.lock");
        }
    }
}

/// The prune's exclusive side of [`SaveHold`]: `None` while a save or an
/// import is in flight.
pub fn collect_lock(home: &Path) -> Result<Option<fs::File>> {
    use std::os::fd::AsRawFd;
    let f = writers_lock(home)?;
    // SAFETY: a valid open descriptor; LOCK_NB never blocks.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(f));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(err).context("locking locks/cas-writers.lock")
    }
}

/// The name prefix of the files a restore stages next to their destination.
pub const RESTORE_TMP_PREFIX: &str = ".sparkwing-restore-";

/// Stores a job's declared outputs in the CAS and returns their manifest.
/// Every output must exist. Files another run's restore is staging are not
/// outputs ([`RESTORE_TMP_PREFIX`]).
pub fn snapshot(cas: &Cas, project_dir: &Path, outputs: &[String]) -> Result<Manifest> {
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Blobs written by this snapshot (not there before).
    let mut fresh: Vec<PathBuf> = Vec::new();
    for o in outputs {
        let matched = expand(project_dir, o)?.with_context(|| {
            format!("cache output `{o}` was not produced (nothing at {}); fix the job's steps or its cache.outputs", project_dir.join(o).display())
        })?;
        for f in matched {
            // Another run restoring into the same outputs stages files
            // here; they are not this job's outputs (and may vanish).
            if f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(RESTORE_TMP_PREFIX))
            {
                continue;
            }
            let meta = match fs::symlink_metadata(&f) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let path = rel(project_dir, &f);
            if !seen.insert(path.clone()) {
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&f)?.to_string_lossy().into_owned();
                files.push(FileEntry {
                    path,
                    sha256: String::new(),
                    size: 0,
                    mode,
                    symlink: Some(target),
                });
            } else {
                let (sha256, size, written) = cas.put_file_tracked(&f)?;
                if written {
                    fresh.push(cas.blob_path(&sha256));
                }
                files.push(FileEntry {
                    path,
                    sha256,
                    size,
                    mode,
                    symlink: None,
                });
            }
        }
    }
    // The blobs written now are durable before the caller commits the
    // manifest naming them: after a crash, a committed manifest never
    // names a blob that was not on disk. A few are synced one by one; many
    // with one sync of the CAS's filesystem instead of one fsync each (it
    // also waits for other writes on that filesystem, which costs less
    // than thousands of fsyncs). A crash before it leaves blobs no
    // manifest names, which `cache prune` collects; every restore checks
    // every blob's SHA-256 anyway.
    let fault = |p: &Path, e: std::io::Error| anyhow!(StorageFault::from_io(p, &e));
    if fresh.len() > FSYNC_EACH_UP_TO {
        crate::util::sync_filesystem(cas.root()).map_err(|e| fault(cas.root(), e))?;
    } else {
        for blob in &fresh {
            fs::File::open(blob)
                .and_then(|f| f.sync_all())
                .map_err(|e| fault(blob, e))?;
        }
    }
    Ok(Manifest { version: 1, files })
}

/// Up to this many new blobs, a save fsyncs each; more, it syncs the
/// filesystem once.
const FSYNC_EACH_UP_TO: usize = 64;

/// Longest manifest path accepted (a manifest may come from a remote).
const MAX_PATH: usize = 4096;

/// One declared output as a matcher: a plain path (it and everything below
/// it) or a glob (a match and everything below a matched directory, as
/// [`snapshot`] records them).
enum OutputRule {
    Path(String),
    Glob(glob::Pattern),
}

impl OutputRule {
    fn new(o: &str) -> Result<OutputRule> {
        let o = o.trim_start_matches("./").trim_end_matches('/');
        if has_glob_meta(o) {
            let o = o.strip_suffix("/**").unwrap_or(o);
            Ok(OutputRule::Glob(
                glob::Pattern::new(o).with_context(|| format!("invalid glob `{o}`"))?,
            ))
        } else {
            Ok(OutputRule::Path(o.to_string()))
        }
    }

    fn covers(&self, path: &str) -> bool {
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        // The path itself or one of its ancestors is the output.
        let mut prefixes = path
            .match_indices('/')
            .map(|(i, _)| &path[..i])
            .chain(std::iter::once(path));
        match self {
            OutputRule::Path(o) => prefixes.any(|p| p == o),
            OutputRule::Glob(g) => prefixes.any(|p| g.matches_with(p, opts)),
        }
    }
}

/// Whether `path` is a relative, normalized path: no empty, `.` or `..`
/// component, no NUL, not too long.
fn normalized(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The path a relative symlink at `link` (a normalized project path) points
/// to, resolved lexically; `None` when it leaves the project or is absolute.
/// `None` when the target is absolute, empty, climbs above the project, or
/// passes through a path `is_link` says is a symlink: on disk `..` after a
/// link climbs from the link's target, not from its name, so text alone
/// cannot tell where such a path ends (`out/up -> .` then
/// `out/x -> up/up/../../../etc/passwd`).
fn link_target(link: &str, target: &str, is_link: impl Fn(&str) -> bool) -> Option<String> {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    let mut descended = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            // `..` only before any name: after one, the name may be a link
            // on disk (from another restore, or the job), and `..` would
            // climb from wherever that points.
            ".." if descended => return None,
            ".." => {
                parts.pop()?;
            }
            c => {
                descended = true;
                parts.push(c);
                if is_link(&parts.join("/")) {
                    return None;
                }
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Checks a manifest before anything is written (DESIGN invariant 10: a
/// manifest may have been planted in a shared bucket). Every path must be
/// relative, normalized and covered by the job's declared `outputs`; a
/// symlink must be relative and point inside those outputs; no entry may
/// lie below a symlink entry; every blob name must be a SHA-256.
pub fn check_manifest(manifest: &Manifest, outputs: &[String]) -> Result<()> {
    let rules = outputs
        .iter()
        .map(|o| OutputRule::new(o))
        .collect::<Result<Vec<_>>>()?;
    let covered = |p: &str| rules.iter().any(|r| r.covers(p));
    let shown = |p: &str| crate::util::sanitize(&crate::util::clip(p, 200));
    // A set, and each path's ancestors looked up in it: a hostile manifest
    // of many files and many links stays linear.
    let links: std::collections::HashSet<&str> = manifest
        .files
        .iter()
        .filter(|f| f.symlink.is_some())
        .map(|f| f.path.as_str())
        .collect();
    let all: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.path.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    for f in &manifest.files {
        if !normalized(&f.path) {
            bail!(
                "the manifest names a path that is not a plain relative path: {:?}",
                shown(&f.path)
            );
        }
        if !covered(&f.path) {
            bail!(
                "the manifest names {}, which is not among the job's outputs ({})",
                shown(&f.path),
                outputs.join(", ")
            );
        }
        if !seen.insert(f.path.as_str()) {
            bail!("the manifest names {} twice", shown(&f.path));
        }
        // Nothing below another entry: below a file it could never be
        // restored (a partial restore), below a link it would be written
        // through it.
        if let Some(a) = f
            .path
            .match_indices('/')
            .map(|(i, _)| &f.path[..i])
            .find(|a| all.contains(a))
        {
            let what = if links.contains(a) { "symlink" } else { "file" };
            bail!(
                "the manifest puts {} below its {what} {}",
                shown(&f.path),
                shown(a)
            );
        }
        match &f.symlink {
            Some(t) => {
                if !link_target(&f.path, t, |p| links.contains(p)).is_some_and(|p| covered(&p)) {
                    bail!(
                        "the manifest's symlink {} points outside the job's outputs ({})",
                        shown(&f.path),
                        shown(t)
                    );
                }
            }
            None => {
                if f.sha256.len() != 64
                    || !f
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    bail!(
                        "the manifest names an invalid blob {:?} for {}",
                        shown(&f.sha256),
                        shown(&f.path)
                    );
                }
            }
        }
    }
    Ok(())
}

/// Refuses to write below a symlink: every existing component of `rel`'s
/// parent directories inside `project_dir` must be a real directory.
fn no_symlink_between(project_dir: &Path, rel: &str) -> Result<()> {
    let mut at = project_dir.to_path_buf();
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    for c in parts {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                bail!(
                    "{} is a symlink; a restore never writes through one",
                    at.display()
                )
            }
            Ok(m) if !m.is_dir() => bail!("{} is in the way (not a directory)", at.display()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", at.display())),
        }
    }
    Ok(())
}

/// Bytes an unprivileged writer can still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out pointer.
    // A filesystem that reports no blocks (tmpfs with size=0) has no
    // limit we can read.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Refuses to go on when `bytes` would not fit on the filesystem of `dir`
/// with a tenth of its free space to spare (what a manifest asks for can be
/// anything: one blob named a million times). Unknown free space passes.
pub fn check_room(dir: &Path, bytes: u64, what: &str) -> Result<()> {
    if let Some(free) = free_bytes(dir) {
        if bytes > free.saturating_sub(free / 10) {
            bail!(
                "{what} would write {bytes} bytes into {}, which has {free} free; free space or the entry is not what it seems",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Restores a manifest's files under `project_dir`, byte-identical and with
/// their permission bits (never setuid, setgid or sticky). The manifest is
/// checked first against the job's declared `outputs` ([`check_manifest`])
/// and every blob is verified; on any failure it returns an error and
/// leaves the project untouched. Nothing is written through a symlink, and
/// only output paths are ever replaced.
///
/// Restored files are not fsynced one by one (issue 13: that was most of a
/// many-file restore's time). They are copies: the durable bytes are the
/// CAS blobs, synced before the manifest naming them was committed, and
/// every restore verifies them again. If the machine goes down before the
/// page cache reaches the disk, the outputs may be torn, exactly as a
/// compiler's outputs would be, and the next run restores (or computes)
/// them again; no record says they are intact.
pub fn restore(
    cas: &Cas,
    project_dir: &Path,
    manifest: &Manifest,
    outputs: &[String],
) -> Result<usize> {
    check_manifest(manifest, outputs)?;
    for f in &manifest.files {
        no_symlink_between(project_dir, &f.path)?;
    }
    // A manifest can name one blob many times: what it would write must
    // fit on the disk (with room to spare), or nothing is written.
    let total: u64 = manifest
        .files
        .iter()
        .filter(|f| f.symlink.is_none())
        .map(|f| f.size)
        .fold(0, u64::saturating_add);
    check_room(project_dir, total, "restoring")?;
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let cleanup = |staged: &[(PathBuf, PathBuf)]| {
        for (tmp, _) in staged {
            let _ = fs::remove_file(tmp);
        }
    };
    for (i, f) in manifest.files.iter().enumerate() {
        let dest = project_dir.join(&f.path);
        let dir = dest.parent().unwrap_or(project_dir).to_path_buf();
        if let Err(e) = fs::create_dir_all(&dir) {
            cleanup(&staged);
            return Err(e).with_context(|| format!("creating {}", dir.display()));
        }
        let tmp = dir.join(format!("{RESTORE_TMP_PREFIX}{}-{i}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let r = match &f.symlink {
            Some(target) => symlink(target, &tmp).map_err(anyhow::Error::from),
            None => {
                let blob = cas.blob_path(&f.sha256);
                copy_hashing(&blob, &tmp).and_then(|(sha, size)| {
                    if sha != f.sha256 || size != f.size {
                        // Damaged on disk: removed, so the job's next
                        // save stores it afresh.
                        if sha != f.sha256 {
                            let _ = fs::remove_file(&blob);
                        }
                        bail!(
                            "cache blob {} is corrupt (SHA-256 {sha}, expected {})",
                            blob.display(),
                            f.sha256
                        );
                    }
                    // Permission bits only: a manifest never makes a
                    // setuid, setgid or sticky file.
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(f.mode & 0o777))?;
                    Ok(())
                })
            }
        };
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            cleanup(&staged);
            return Err(e);
        }
        staged.push((tmp, dest));
    }
    for (tmp, dest) in &staged {
        if let Ok(m) = fs::symlink_metadata(dest) {
            if m.is_dir() {
                // `dest` is an output path (checked above): replacing it
                // whole is what restoring that output means.
                fs::remove_dir_all(dest)
                    .with_context(|| format!("replacing {}", dest.display()))?;
            }
        }
        fs::rename(tmp, dest).with_context(|| format!("restoring {}", dest.display()))?;
    }
    Ok(staged.len())
}

#[cfg(test)]
mod tests {
    /// Found by the eight-concurrent-runs test: a run storing `out/` while
    /// another restores into it recorded the other's staged files.
    #[test]
    fn a_snapshot_leaves_out_files_another_restore_is_staging() {
        let home = tempfile::tempdir().unwrap();
        let proj = tempfile::tempdir().unwrap();
        fs::create_dir_all(proj.path().join("out")).unwrap();
        fs::write(proj.path().join("out/a"), "a").unwrap();
        fs::write(
            proj.path().join(format!("out/{RESTORE_TMP_PREFIX}123-0")),
            "a",
        )
        .unwrap();
        let m = snapshot(&Cas::new(home.path()), proj.path(), &["out".into()]).unwrap();
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["out/a"]);
    }

    #[test]
    fn a_manifest_that_would_fill_the_disk_restores_nothing() {
        let home = tempfile::tempdir().unwrap();
        let proj = tempfile::tempdir().unwrap();
        let cas = Cas::new(home.path());
        fs::write(proj.path().join("seed"), vec![7u8; 4096]).unwrap();
        let (sha, size) = cas.put_file(&proj.path().join("seed")).unwrap();
        let free = free_bytes(proj.path()).unwrap();
        // One blob, named often enough (with a size that claims a share
        // of the disk each time) to fill it.
        let files = (0..1001)
            .map(|i| FileEntry {
                path: format!("out/f{i}"),
                sha256: sha.clone(),
                size: size.max(free / 1000 + 1),
                mode: 0o644,
                symlink: None,
            })
            .collect();
        let e = restore(
            &cas,
            proj.path(),
            &Manifest { version: 1, files },
            &["out".into()],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("free space"), "{e:#}");
        assert!(!proj.path().join("out").exists(), "nothing was written");
    }

    use super::*;

    #[test]
    fn snapshot_and_restore_round_trip_with_modes_and_dedup() {
        let home = tempfile::tempdir().unwrap();
        let proj = tempfile::tempdir().unwrap();
        let p = proj.path();
        fs::create_dir_all(p.join("out/sub")).unwrap();
        fs::write(p.join("out/a.bin"), [0u8, 1, 2, 255]).unwrap();
        fs::write(p.join("out/sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::write(p.join("out/same.bin"), [0u8, 1, 2, 255]).unwrap();
        fs::set_permissions(p.join("out/sub/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink("a.bin", p.join("out/link")).unwrap();
        let cas = Cas::new(home.path());
        let m = snapshot(&cas, p, &["out".into()]).unwrap();
        assert_eq!(m.files.len(), 4);
        let blobs: usize = fs::read_dir(home.path().join("cas"))
            .unwrap()
            .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum();
        assert_eq!(blobs, 2, "identical contents are stored once");
        fs::remove_dir_all(p.join("out")).unwrap();
        assert_eq!(restore(&cas, p, &m, &["out".into()]).unwrap(), 4);
        assert_eq!(fs::read(p.join("out/a.bin")).unwrap(), [0u8, 1, 2, 255]);
        assert_eq!(
            fs::metadata(p.join("out/sub/run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        assert_eq!(
            fs::read_link(p.join("out/link")).unwrap(),
            Path::new("a.bin")
        );
    }

    #[test]
    fn corrupt_blob_restores_nothing() {
        let home = tempfile::tempdir().unwrap();
        let proj = tempfile::tempdir().unwrap();
        let p = proj.path();
        fs::write(p.join("a"), "aaa").unwrap();
        fs::write(p.join("b"), "bbb").unwrap();
        let cas = Cas::new(home.path());
        let m = snapshot(&cas, p, &["a".into(), "b".into()]).unwrap();
        let blob = cas.blob_path(&m.files[1].sha256);
        fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&blob, "bbX").unwrap();
        fs::remove_file(p.join("a")).unwrap();
        let e = restore(&cas, p, &m, &["a".into(), "b".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("corrupt"), "{e:#}");
        assert!(!p.join("a").exists(), "nothing restored when a blob is bad");
        assert!(fs::read_dir(p).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".sparkwing")));
    }

    /// Issue 10: a manifest planted in a shared bucket chooses what every
    /// runner restores. Each hostile shape is refused before anything is
    /// written, and the project is left as it was.
    #[test]
    fn a_hostile_manifest_restores_nothing_outside_the_declared_outputs() {
        let home = tempfile::tempdir().unwrap();
        let proj = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let p = proj.path();
        let cas = Cas::new(home.path());
        fs::create_dir_all(p.join("src")).unwrap();
        fs::write(p.join("src/main.c"), "int main;").unwrap();
        fs::create_dir_all(p.join(".sparkwing")).unwrap();
        fs::write(p.join(".sparkwing/sparkwing.yaml"), "pipelines: []").unwrap();
        fs::write(p.join("payload"), "echo pwned").unwrap();
        let sha = cas.put_file(&p.join("payload")).unwrap().0;
        let file = |path: &str, mode: u32| FileEntry {
            path: path.into(),
            sha256: sha.clone(),
            size: 10,
            mode,
            symlink: None,
        };
        let link = |path: &str, to: &str| FileEntry {
            path: path.into(),
            sha256: String::new(),
            size: 0,
            mode: 0o777,
            symlink: Some(to.into()),
        };
        let outputs: Vec<String> = vec!["out".into(), "dist/*.js".into()];
        let cases: Vec<(&str, Vec<FileEntry>)> = vec![
            (
                "the project's pipeline file",
                vec![file(".sparkwing/sparkwing.yaml", 0o644)],
            ),
            ("a git hook", vec![file(".git/hooks/pre-commit", 0o755)]),
            ("a project directory", vec![file("src", 0o644)]),
            ("an absolute path", vec![file("/tmp/x", 0o644)]),
            ("a parent escape", vec![file("out/../../x", 0o644)]),
            ("a dot component", vec![file("out/./x", 0o644)]),
            ("an empty component", vec![file("out//x", 0o644)]),
            ("a glob overreach", vec![file("dist/sub/a.js", 0o644)]),
            ("an absolute symlink", vec![link("out/l", "/etc")]),
            (
                "a symlink out of the outputs",
                vec![link("out/l", "../src")],
            ),
            (
                "a symlink out of the project",
                vec![link("out/l", "../../..")],
            ),
            (
                "a file below a symlink",
                vec![link("out/l", "sub"), file("out/l/x", 0o644)],
            ),
            (
                "a symlink chain that climbs out through another link",
                vec![
                    link("out/up", "."),
                    link(
                        "out/notes.txt",
                        &format!("{}{}etc/shadow", "up/".repeat(15), "../".repeat(15)),
                    ),
                ],
            ),
            (
                "`..` after a name (which may be a link on disk already)",
                vec![link("out/notes.txt", "up/../../etc/shadow")],
            ),
            (
                "a file below a file (a restore that could only be partial)",
                vec![
                    file("out/a", 0o644),
                    file("out/d", 0o755),
                    file("out/d/x", 0o644),
                ],
            ),
            (
                "one path twice",
                vec![file("out/a", 0o644), link("out/a", "b")],
            ),
            (
                "a bad blob name",
                vec![FileEntry {
                    sha256: "../../etc/passwd".into(),
                    ..file("out/x", 0o644)
                }],
            ),
        ];
        for (what, files) in cases {
            let m = Manifest { version: 1, files };
            let e = restore(&cas, p, &m, &outputs).unwrap_err();
            assert!(
                !p.join("out").exists() && !p.join(".git").exists(),
                "{what}: {e:#}"
            );
            assert_eq!(
                fs::read_to_string(p.join("src/main.c")).unwrap(),
                "int main;",
                "{what}"
            );
            assert_eq!(
                fs::read_to_string(p.join(".sparkwing/sparkwing.yaml")).unwrap(),
                "pipelines: []",
                "{what}"
            );
        }
        // A symlink left in the project by an earlier restore (or anyone)
        // is never written through.
        symlink(outside.path(), p.join("out")).unwrap();
        let m = Manifest {
            version: 1,
            files: vec![file("out/pwned", 0o644)],
        };
        let e = restore(&cas, p, &m, &outputs).unwrap_err();
        assert!(format!("{e:#}").contains("symlink"), "{e:#}");
        assert!(!outside.path().join("pwned").exists());
        fs::remove_file(p.join("out")).unwrap();
        // What is allowed: files and links inside the outputs, with the
        // setuid, setgid and sticky bits dropped.
        let m = Manifest {
            version: 1,
            files: vec![
                file("out/tool", 0o6755),
                file("dist/app.js", 0o1644),
                link("out/alias", "tool"),
                link("out/app", "../dist/app.js"),
            ],
        };
        assert_eq!(restore(&cas, p, &m, &outputs).unwrap(), 4);
        let mode = |q: &str| fs::metadata(p.join(q)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("out/tool"), 0o755);
        assert_eq!(mode("dist/app.js"), 0o644);
        assert_eq!(
            fs::read_link(p.join("out/app")).unwrap(),
            Path::new("../dist/app.js")
        );
    }

    #[test]
    fn trailing_double_star_means_everything_below() {
        let proj = tempfile::tempdir().unwrap();
        let p = proj.path();
        fs::create_dir_all(p.join("src/deep")).unwrap();
        fs::write(p.join("src/a.c"), "a").unwrap();
        fs::write(p.join("src/deep/b.c"), "b").unwrap();
        let got = expand(p, "src/**").unwrap().unwrap();
        assert_eq!(got, vec![p.join("src/a.c"), p.join("src/deep/b.c")]);
        assert!(expand(p, "nothing/**").unwrap().is_none());
    }

    #[test]
    fn missing_output_is_a_clear_error() {
        let home = tempfile::tempdir().unwrap();
        let proj = tempfile::tempdir().unwrap();
        let e = snapshot(&Cas::new(home.path()), proj.path(), &["dist/app".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("cache output `dist/app` was not produced"));
    }
}
