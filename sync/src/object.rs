//! [`ObjectStoreTarget`]: the remote layout on any `object_store` backend,
//! and the `filesystem` surface (a shared or network-mounted directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::OnceCell;

use crate::target::{sha256_hex, Applied, Op, Target, TargetError};

/// Where the store comes from: given, or a directory opened on first use
/// (a share that is not mounted yet is "offline", not an error at start).
#[derive(Debug)]
enum Source {
    Store(Arc<dyn ObjectStore>),
    /// The directory, the store once opened (with the directory's
    /// canonical path), and when the directory was last seen to exist.
    Directory(
        PathBuf,
        OnceCell<(Arc<LocalFileSystem>, Arc<dyn ObjectStore>, PathBuf)>,
        std::sync::Mutex<Option<std::time::Instant>>,
    ),
}

/// How long a directory seen to exist is trusted before looking again.
const DIR_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes the layout of DESIGN.md under `prefix` of an object store.
#[derive(Debug)]
pub struct ObjectStoreTarget {
    id: String,
    source: Source,
    prefix: String,
    retry_after: Option<RetryAfter>,
    /// Objects are written with their content type (cloud stores; a local
    /// file system has nowhere to keep one).
    typed: bool,
}

impl ObjectStoreTarget {
    /// A target over an existing store. `id` must identify the store and
    /// prefix without secrets (e.g. `s3:bucket/prefix@endpoint`).
    pub fn new(id: impl Into<String>, store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        ObjectStoreTarget {
            id: id.into(),
            source: Source::Store(store),
            prefix: prefix.trim_matches('/').to_string(),
            retry_after: None,
            typed: false,
        }
    }

    /// Writes every object with its content type ([`Op::content_type`]);
    /// for stores that keep one (S3, GCS, Azure), so a bucket console
    /// displays a log or a document instead of downloading it.
    pub fn with_content_types(mut self) -> Self {
        self.typed = true;
        self
    }

    /// Attaches the `Retry-After` a [`RetryAfterConnector`] records to this
    /// target's transient errors.
    pub fn with_retry_after(mut self, seen: RetryAfter) -> Self {
        self.retry_after = Some(seen);
        self
    }

    /// An object's attributes: its content type, where the store keeps one.
    fn attributes(&self, op: &Op) -> object_store::Attributes {
        let mut a = object_store::Attributes::new();
        if self.typed {
            a.insert(
                object_store::Attribute::ContentType,
                op.content_type().into(),
            );
        }
        a
    }

    fn fail(&self, e: &object_store::Error) -> TargetError {
        let mut err = classify(e);
        if err.class == sparkwing_outbox::ErrorClass::Transient {
            err.retry_after = self.retry_after.as_ref().and_then(RetryAfter::take_recent);
        }
        err
    }

    /// The `filesystem` surface: the layout inside `dir`, which must exist
    /// (it is never created, so an unmounted share is not silently
    /// replaced by a local directory). Its id is `filesystem:<dir>`.
    pub fn filesystem(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        ObjectStoreTarget {
            id: format!("filesystem:{}", dir.display()),
            source: Source::Directory(dir, OnceCell::new(), std::sync::Mutex::new(None)),
            prefix: String::new(),
            retry_after: None,
            typed: false,
        }
    }

    async fn store(&self) -> Result<&Arc<dyn ObjectStore>, TargetError> {
        match &self.source {
            Source::Store(s) => Ok(s),
            Source::Directory(..) => Ok(&self.local().await?.1),
        }
    }

    /// The directory's store, opened on first use, after checking the
    /// directory still exists (at most once per [`DIR_RECHECK`]).
    #[allow(clippy::type_complexity)]
    async fn local(
        &self,
    ) -> Result<&(Arc<LocalFileSystem>, Arc<dyn ObjectStore>, PathBuf), TargetError> {
        match &self.source {
            Source::Store(_) => Err(TargetError::permanent("not a directory target")),
            Source::Directory(dir, cell, seen) => {
                let fresh = seen
                    .lock()
                    .map(|s| s.is_some_and(|t| t.elapsed() < DIR_RECHECK))
                    .unwrap_or(false);
                if !fresh {
                    if !dir.is_dir() {
                        return Err(TargetError::transient(format!(
                            "directory {} does not exist (is the share mounted?); create or mount it",
                            dir.display()
                        )));
                    }
                    if let Ok(mut s) = seen.lock() {
                        *s = Some(std::time::Instant::now());
                    }
                }
                cell.get_or_try_init(|| async {
                    let root = std::fs::canonicalize(dir).map_err(|_| root_missing(dir))?;
                    // Leftovers of a crashed writer are removed once per
                    // process, when the surface is first used.
                    clean_staging(&root);
                    LocalFileSystem::new_with_prefix(&root)
                        .map(|s| {
                            let s = Arc::new(s);
                            (Arc::clone(&s), s as Arc<dyn ObjectStore>, root)
                        })
                        .map_err(|e| classify(&e))
                })
                .await
            }
        }
    }

    /// Writes ops to a directory surface in order from one blocking thread
    /// (see [`write_local`]); returns what each written op did and the
    /// failure that stopped the batch, if any.
    async fn write_dir(&self, ops: &[Op]) -> (Vec<Applied>, Option<TargetError>) {
        let (fs, root) = match self.local().await {
            Ok((fs, _, root)) => (Arc::clone(fs), root.clone()),
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut items = Vec::with_capacity(ops.len());
        let mut stop = None;
        for op in ops {
            match fs.path_to_filesystem(&self.path(&op.key())) {
                Ok(p) => items.push((p, op.clone())),
                Err(e) => {
                    stop = Some(classify(&e));
                    break;
                }
            }
        }
        // A blocking thread is not cancelled with the future awaiting it:
        // when the actor cancels a delivery (a shutdown, a drain's
        // deadline) and drops this future, the flag stops the batch before
        // its next object, so it does not go on writing a claim that has
        // been released; only the object being written then still lands.
        struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let cancelled = StopOnDrop(Arc::default());
        let stopped = Arc::clone(&cancelled.0);
        let written = tokio::task::spawn_blocking(move || {
            let mut done = Vec::with_capacity(items.len());
            for (path, op) in &items {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return (
                        done,
                        Some(TargetError::transient("the delivery was cancelled")),
                    );
                }
                match write_local(&root, path, op) {
                    Ok(a) => done.push(a),
                    Err(e) => return (done, Some(e)),
                }
            }
            (done, None)
        })
        .await;
        match written {
            Ok((done, Some(e))) => (done, Some(e)),
            Ok((done, None)) => (done, stop),
            Err(e) => (
                Vec::new(),
                Some(TargetError::transient(format!(
                    "a write thread failed: {e}"
                ))),
            ),
        }
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }
}

/// The directory inside a `filesystem` surface where objects are staged
/// before they are renamed into place. It is outside the layout's key space
/// (no layout prefix starts with a dot), so a file left there by a crash is
/// never listed or read as an object; [`clean_staging`] removes such files.
pub const STAGING_DIR: &str = ".sparkwing-staging";

/// Staged files older than this are leftovers whoever wrote them.
const STAGING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn io_error(what: &str, p: &std::path::Path, e: std::io::Error) -> TargetError {
    let msg = format!("{what} {}: {e}", p.display());
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => TargetError::auth(msg),
        // A directory where an object belongs (or the reverse) will not go
        // away by waiting: someone put it there.
        std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::InvalidFilename
        | std::io::ErrorKind::IsADirectory
        | std::io::ErrorKind::NotADirectory => TargetError::permanent(msg),
        _ => TargetError::transient(msg),
    }
}

fn root_missing(root: &std::path::Path) -> TargetError {
    TargetError::transient(format!(
        "directory {} does not exist (is the share mounted?); create or mount it",
        root.display()
    ))
}

/// Creates the directories between `root` and `dir` one level at a time,
/// never `root` itself: if the root has gone (an unmounted share), the first
/// `mkdir` fails with `NotFound` and nothing is created in its place.
fn create_below(root: &std::path::Path, dir: &std::path::Path) -> Result<(), TargetError> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        TargetError::permanent(format!("{} is outside {}", dir.display(), root.display()))
    })?;
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::create_dir(&at) {
            Ok(()) => {}
            // Only a real directory: a link planted in the share is never
            // followed (it could point anywhere on this machine).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => real_dir(&at)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(root_missing(root)),
            Err(e) => return Err(io_error("creating", &at, e)),
        }
    }
    Ok(())
}

/// Refuses `at` unless it is a directory itself, not a link to one.
fn real_dir(at: &std::path::Path) -> Result<(), TargetError> {
    match std::fs::symlink_metadata(at) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(TargetError::permanent(format!(
            "{} is a symbolic link; the filesystem surface never follows links inside the share (remove it: someone with write access to the share put it there)",
            at.display()
        ))),
        Ok(_) => Err(TargetError::permanent(format!(
            "{} is not a directory; remove it from the share",
            at.display()
        ))),
        Err(e) => Err(io_error("checking", at, e)),
    }
}

/// Checks that no directory between `root` (exclusive) and `path`
/// (exclusive) is a link; components that do not exist yet are fine.
fn no_links_below(root: &std::path::Path, path: &std::path::Path) -> Result<(), TargetError> {
    let Ok(rel) = path.strip_prefix(root) else {
        return Err(TargetError::permanent(format!(
            "{} is outside {}",
            path.display(),
            root.display()
        )));
    };
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            _ => real_dir(&at)?,
        }
    }
    Ok(())
}

/// Reads one object of a `filesystem` surface: only a regular file, never
/// through a link, never a FIFO or device (opened non-blocking, checked
/// with `fstat` before a byte is read), at most `max` bytes.
fn read_local(
    root: &std::path::Path,
    path: &std::path::Path,
    key: &str,
    max: u64,
) -> Result<Option<Bytes>, TargetError> {
    read_local_range(root, path, key, max, None)
}

/// [`read_local`], of `range` (start, length) only when given: bounded by
/// the length then, not by the object's size.
fn read_local_range(
    root: &std::path::Path,
    path: &std::path::Path,
    key: &str,
    max: u64,
    range: Option<(u64, u64)>,
) -> Result<Option<Bytes>, TargetError> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    no_links_below(root, path)?;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(TargetError::permanent(format!(
                "object {key} is a symbolic link; the filesystem surface never follows links inside the share"
            )))
        }
        Err(e) => return Err(io_error("reading", path, e)),
    };
    let meta = file.metadata().map_err(|e| io_error("reading", path, e))?;
    if !meta.is_file() {
        return Err(TargetError::permanent(format!(
            "object {key} is not a regular file; remove it from the share"
        )));
    }
    // Sparkwing writes every object but a blob by rename, so it has one
    // name; a second is a hard link someone made, perhaps to a file outside
    // the share. (A blob is checked against its SHA-256 by every reader.)
    if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 && !key.starts_with("cas/") {
        return Err(TargetError::permanent(format!(
            "object {key} has other hard links; sparkwing never makes them (remove it from the share)"
        )));
    }
    if let Some((start, len)) = range {
        let mut file = file;
        let mut body = Vec::with_capacity(len.min(meta.len().saturating_sub(start)) as usize);
        file.seek(std::io::SeekFrom::Start(start))
            .map_err(|e| io_error("reading", path, e))?;
        file.take(len)
            .read_to_end(&mut body)
            .map_err(|e| io_error("reading", path, e))?;
        return Ok(Some(Bytes::from(body)));
    }
    if meta.len() > max {
        return Err(crate::target::too_large(key, meta.len(), max));
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|e| io_error("reading", path, e))?;
    if body.len() as u64 > max {
        return Err(crate::target::too_large(key, body.len() as u64, max));
    }
    Ok(Some(Bytes::from(body)))
}

/// This process's staged-file name prefix: `<host>.<pid>.`.
fn staging_owner() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: valid buffer of the given length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let host = if rc == 0 {
        String::from_utf8_lossy(&buf[..end]).replace(['.', '/'], "_")
    } else {
        "unknown".into()
    };
    format!("{host}.{}.", std::process::id())
}

/// Whether `name` is one [`staging_owner`] gives: `<host>.<pid>.<n>`, the
/// host without dots, the pid and the counter in digits.
fn is_staged_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let ok = |p: Option<&str>, digits: bool| {
        p.is_some_and(|p| !p.is_empty() && (!digits || p.bytes().all(|b| b.is_ascii_digit())))
    };
    ok(parts.next(), false)
        && ok(parts.next(), true)
        && ok(parts.next(), true)
        && parts.next().is_none()
}

/// Removes staged files a crash left behind in a `filesystem` surface: this
/// host's files whose process is gone, and anyone's older than a day (the
/// share may be used by other machines, whose live writers are left alone).
pub fn clean_staging(root: &std::path::Path) -> usize {
    let dir = root.join(STAGING_DIR);
    // A link planted in its place is never followed (its target's files
    // would be deleted): only a real directory is cleaned.
    if real_dir(&dir).is_err() {
        return 0;
    }
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let me = staging_owner();
    let host = me.split('.').next().unwrap_or_default().to_string();
    let mut removed = 0;
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        // Only names of the form sparkwing stages under (`<host>.<pid>.<n>`):
        // if the directory is swapped for a link between the check above
        // and the removal below, nothing but such names can be removed
        // wherever it points.
        if !is_staged_name(&name) {
            continue;
        }
        let mut parts = name.split('.');
        let (h, pid) = (
            parts.next().unwrap_or_default(),
            parts.next().and_then(|p| p.parse::<i32>().ok()),
        );
        let dead_here = h == host
            && pid.is_some_and(|p| {
                // SAFETY: signal 0 only checks existence and permission.
                let rc = unsafe { libc::kill(p, 0) };
                p > 0
                    && rc != 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            });
        let old = ent
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STAGING_MAX_AGE);
        if (dead_here || old) && std::fs::remove_file(ent.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Writes one op's object at `path` (inside `root`): the bytes go to a new
/// file in [`STAGING_DIR`], which is then renamed over `path` (atomic for
/// readers) or, for a cache blob, hard-linked to `path` so a blob already
/// there is never replaced. `root` is never created: a missing root is an
/// outage ("offline"), whenever it is noticed.
fn write_local(
    root: &std::path::Path,
    path: &std::path::Path,
    op: &Op,
) -> Result<Applied, TargetError> {
    use std::io::Write;
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let blob = matches!(op, Op::CacheBlob { .. });
    if let Op::CacheBlob { sha256, body } = op {
        let got = sha256_hex(body);
        if &got != sha256 {
            return Err(TargetError::permanent(format!(
                "cache blob {sha256} hashes to {got} locally; refusing to upload a corrupt blob"
            )));
        }
        if path.exists() {
            return Ok(Applied::AlreadyPresent);
        }
    }
    let staging = root.join(STAGING_DIR);
    if std::fs::symlink_metadata(&staging).is_ok_and(|m| !m.is_dir()) {
        // A link or file planted where the staging directory goes: remove
        // the entry itself (never what it points to) and make a real one.
        let _ = std::fs::remove_file(&staging);
    }
    let (mut file, staged) = loop {
        let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staged = staging.join(format!("{}{n}", staging_owner()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)
        {
            Ok(f) => break (f, staged),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_below(root, &staging)?,
            Err(e) => return Err(io_error("creating", &staged, e)),
        }
    };
    let parent = path.parent().unwrap_or(root);
    let done = file
        .write_all(op.body())
        .map_err(|e| io_error("writing", &staged, e))
        .and_then(|_| create_below(root, parent))
        .and_then(|_| {
            if blob {
                match std::fs::hard_link(&staged, path) {
                    // Another writer stored the same bytes first.
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        Err(io_error("linking", path, e))
                    }
                    _ => Ok(()),
                }
            } else {
                std::fs::rename(&staged, path).map_err(|e| io_error("renaming to", path, e))
            }
        });
    if blob || done.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    done.map(|_| Applied::Written)
}

/// Sorts an `object_store` error into transient, auth or permanent.
pub fn classify(e: &object_store::Error) -> TargetError {
    use object_store::Error as E;
    // Client errors quote the URLs they used: credentials never go further.
    let msg = crate::redact::scrub(&e.to_string());
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => TargetError::auth(msg),
        // Reads handle a missing object themselves; a write or a listing
        // that finds nothing was sent to a bucket that does not exist.
        E::NotFound { .. } => TargetError::config(format!(
            "{msg} (the bucket or container was not found: create it or fix `bucket:`)"
        )),
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::Precondition { .. } => TargetError::permanent(msg),
        _ => {
            // S3 answers a wrong region with a redirect object_store cannot
            // follow; an http URL the client refuses fails to build every
            // request. Neither gets better by waiting.
            if msg.contains("Received redirect without LOCATION") || msg.contains("builder error") {
                return TargetError::config(msg);
            }
            if let Some(status) = http_status(e) {
                return match status {
                    408 | 429 => TargetError::transient(msg),
                    // S3's 400 for an upload socket left idle too long
                    // (its SDKs retry it).
                    400 if msg.contains("RequestTimeout") => TargetError::transient(msg),
                    400 | 404 | 405 | 501 | 505 => TargetError::config(msg),
                    401 | 403 => TargetError::auth(msg),
                    500..=599 => TargetError::transient(msg),
                    _ => TargetError::permanent(msg),
                };
            }
            // Local file systems report through io::Error in the chain.
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(s) = src {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    use std::io::ErrorKind as K;
                    return match io.kind() {
                        K::PermissionDenied => TargetError::auth(msg),
                        K::InvalidInput | K::InvalidFilename => TargetError::permanent(msg),
                        _ => TargetError::transient(msg),
                    };
                }
                src = s.source();
            }
            // Network-level failures (connect, timeout, a cut body) and
            // anything unrecognised: try again later.
            TargetError::transient(msg)
        }
    }
}

/// Whether a "not found" is about the bucket or container itself (S3's
/// `NoSuchBucket`, Azure's `ContainerNotFound`, GCS's "bucket does not
/// exist"), read from the error body object_store quotes.
fn bucket_missing(e: &object_store::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        let t = s.to_string();
        if t.contains("NoSuchBucket")
            || t.contains("ContainerNotFound")
            || t.contains("bucket does not exist")
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// The HTTP status of a failed request, if the server answered one.
///
/// object_store does not export its retry error type, so the status is
/// read from the text its request error renders ("Server returned non-2xx
/// status code: 400 Bad Request: …"), searched along the source chain;
/// `classifies_http_statuses` pins the wording for this object_store version.
fn http_status(e: &object_store::Error) -> Option<u16> {
    const MARK: &str = "non-2xx status code: ";
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        let text = s.to_string();
        if let Some(i) = text.find(MARK) {
            let digits = text.get(i + MARK.len()..i + MARK.len() + 3)?;
            return digits.parse().ok().filter(|c| (100..600).contains(c));
        }
        src = s.source();
    }
    None
}

#[async_trait]
impl Target for ObjectStoreTarget {
    fn id(&self) -> &str {
        &self.id
    }

    async fn apply(&self, op: &Op) -> Result<Applied, TargetError> {
        if matches!(self.source, Source::Directory(..)) {
            // One path for directory writes: it never creates the root.
            return match self.write_dir(std::slice::from_ref(op)).await {
                (_, Some(e)) => Err(e),
                (done, None) => done
                    .first()
                    .copied()
                    .ok_or_else(|| TargetError::permanent("nothing was written")),
            };
        }
        let store = self.store().await?;
        let path = self.path(&op.key());
        if let Op::CacheBlob { sha256, body } = op {
            let got = sha256_hex(body);
            if &got != sha256 {
                return Err(TargetError::permanent(format!(
                    "cache blob {sha256} hashes to {got} locally; refusing to upload a corrupt blob"
                )));
            }
            // No HEAD first: a conditional create is one request either
            // way, and a blob (a pack) is rarely present already.
            let opts = PutOptions {
                mode: PutMode::Create,
                attributes: self.attributes(op),
                ..PutOptions::default()
            };
            return match store
                .put_opts(&path, PutPayload::from(body.clone()), opts)
                .await
            {
                Ok(_) => Ok(Applied::Written),
                // Another runner stored the same bytes first.
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Applied::AlreadyPresent),
                Err(e) => Err(self.fail(&e)),
            };
        }
        let opts = PutOptions {
            attributes: self.attributes(op),
            ..PutOptions::default()
        };
        store
            .put_opts(&path, PutPayload::from(op.body().clone()), opts)
            .await
            .map(|_| Applied::Written)
            .map_err(|e| self.fail(&e))
    }

    /// On a directory, a claim's objects are written in order from one
    /// blocking thread, exactly as `LocalFileSystem::put` writes them (a
    /// staged `<path>#N` file, then a rename, or a hard link for a blob that
    /// must not be replaced), instead of one blocking-pool hop per object.
    /// Reads still go through `LocalFileSystem`, which maps keys to paths
    /// the same way ([`LocalFileSystem::path_to_filesystem`]).
    async fn apply_all(&self, ops: &[Op]) -> (usize, Option<TargetError>) {
        if matches!(self.source, Source::Store(_)) {
            return crate::target::apply_each(self, ops).await;
        }
        let (done, err) = self.write_dir(ops).await;
        (done.len(), err)
    }
}

/// Key-shaped reads of the object layout, for [`crate::view::ObjectView`]
/// (the only reader that spells keys) and for tests that look at objects.
impl ObjectStoreTarget {
    /// Reads one object, at most `max` bytes of it: an object larger than
    /// `max` is a permanent error naming its size, and is never read into
    /// memory (remote objects are outside input; see
    /// [`crate::target::read_limits`]). `Ok(None)` for an absent key.
    pub async fn read(&self, key: &str, max: u64) -> Result<Option<Bytes>, TargetError> {
        if let Source::Directory(..) = &self.source {
            let (fs, _, root) = self.local().await?;
            let path = fs
                .path_to_filesystem(&self.path(key))
                .map_err(|e| classify(&e))?;
            let (root, key) = (root.clone(), key.to_string());
            return blocking(move || read_local(&root, &path, &key, max)).await;
        }
        let store = self.store().await?;
        match store.get(&self.path(key)).await {
            Ok(r) if r.meta.size > max => Err(crate::target::too_large(key, r.meta.size, max)),
            Ok(r) => r.bytes().await.map(Some).map_err(|e| self.fail(&e)),
            // A missing object is an answer; a missing bucket is not.
            Err(e @ object_store::Error::NotFound { .. }) if !bucket_missing(&e) => Ok(None),
            Err(e) => Err(self.fail(&e)),
        }
    }

    /// `len` bytes of the object at `key` from `start` (one ranged read);
    /// fewer when the object ends first, `None` when it is absent.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, TargetError> {
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        if let Source::Directory(..) = &self.source {
            let (fs, _, root) = self.local().await?;
            let path = fs
                .path_to_filesystem(&self.path(key))
                .map_err(|e| classify(&e))?;
            let (root, key) = (root.clone(), key.to_string());
            return blocking(move || read_local_range(&root, &path, &key, len, Some((start, len))))
                .await;
        }
        let store = self.store().await?;
        let end = start.saturating_add(len);
        match store.get_range(&self.path(key), start..end).await {
            Ok(b) if b.len() as u64 > len => {
                Err(crate::target::too_large(key, b.len() as u64, len))
            }
            Ok(b) => Ok(Some(b)),
            Err(e @ object_store::Error::NotFound { .. }) if !bucket_missing(&e) => Ok(None),
            // A range past the object's end is an error here: the object
            // is not the pack the reader expects (truncated, or replaced).
            Err(e) => Err(self.fail(&e)),
        }
    }

    /// The distinct next path segments under `prefix` (`runs/` gives the
    /// run IDs), sorted; one request per page with delimiter listing.
    pub async fn list_children(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        if let Source::Directory(..) = &self.source {
            let root = self.local().await?.2.clone();
            let rel = prefix.trim_end_matches('/').to_string();
            return blocking(move || list_dir(&root, &rel, false)).await;
        }
        let store = self.store().await?;
        let full = self.path(prefix.trim_end_matches('/'));
        let r = store
            .list_with_delimiter(Some(&full))
            .await
            .map_err(|e| self.fail(&e))?;
        let mut out: Vec<String> = r
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every key under `prefix` with its size (for garbage collection).
    pub async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>, TargetError> {
        let store = self.store().await?;
        let full = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> = store
            .list(Some(&full))
            .try_collect()
            .await
            .map_err(|e| self.fail(&e))?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let k = m.location.to_string();
                (
                    k.strip_prefix(&strip).map(str::to_string).unwrap_or(k),
                    m.size,
                )
            })
            .collect())
    }

    /// Deletes one object (garbage collection only; an absent one is fine).
    pub async fn delete(&self, key: &str) -> Result<(), TargetError> {
        match self.store().await?.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(&e)),
        }
    }

    /// Writes one object outside the replayed layout (garbage collection's
    /// marks).
    pub async fn put_raw(&self, key: &str, body: Bytes) -> Result<(), TargetError> {
        self.store()
            .await?
            .put(&self.path(key), PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&e))
    }

    /// Every key under `prefix` (a layout prefix such as `runs/`), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        if let Source::Directory(..) = &self.source {
            let root = self.local().await?.2.clone();
            let rel = prefix.trim_end_matches('/').to_string();
            return blocking(move || list_dir(&root, &rel, true)).await;
        }
        let mut keys: Vec<String> = self
            .list_sized(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        Ok(keys)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TargetError> + Send + 'static,
) -> Result<T, TargetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TargetError::transient(format!("a listing thread failed: {e}")))?
}

/// Lists the `filesystem` surface with `std::fs`, sorted: the names below
/// `rel` (`all`: every object key below it, recursively; else the distinct
/// next segments). A name that could not be a key — not UTF-8, a control
/// character, `#` (an unfinished write), the staging directory — is
/// skipped, so one hostile name never fails the listing (object_store's own
/// walk stops at the first such entry).
fn list_dir(root: &Path, rel: &str, all: bool) -> Result<Vec<String>, TargetError> {
    if !rel.is_empty()
        && rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\\'))
    {
        return Err(TargetError::permanent(format!(
            "`{}` is not a key prefix of the layout",
            crate::redact::scrub(&rel.escape_debug().to_string())
        )));
    }
    let usable = |n: &str| {
        !n.is_empty() && n != STAGING_DIR && !n.contains('#') && !n.chars().any(char::is_control)
    };
    let read = |dir: &Path| -> Result<Vec<(String, bool)>, TargetError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(TargetError::transient(format!(
                    "listing {}: {e}",
                    dir.display()
                )))
            }
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if usable(&name) {
                out.push((name, e.file_type().is_ok_and(|t| t.is_dir())));
            }
        }
        Ok(out)
    };
    let base = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    if !rel.is_empty() {
        no_links_below(root, &base.join("x"))?;
    }
    let key = |sub: &str| {
        if rel.is_empty() {
            sub.to_string()
        } else {
            format!("{rel}/{sub}")
        }
    };
    let mut out = Vec::new();
    if !all {
        out = read(&base)?.into_iter().map(|(n, _)| n).collect();
    } else {
        let mut stack = vec![String::new()];
        while let Some(sub) = stack.pop() {
            for (name, is_dir) in read(&base.join(&sub))? {
                let path = if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                };
                if is_dir {
                    stack.push(path);
                } else {
                    out.push(key(&path));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Installs the TLS crypto provider (ring) once per process; the cloud
/// backends need it before their first HTTPS request.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Retries inside one request are kept short: the outbox retries with its
/// own backoff and records connectivity, which a long in-client retry would
/// hide (object_store's default hides outages of about a second).
pub fn client_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 1,
        retry_timeout: std::time::Duration::from_secs(5),
    }
}

/// Timeouts for cloud requests.
/// How long the client waits for one request before it gives up on it.
/// A stopped delivery of a run document keeps its lease longer than this
/// (see the actor's `rewrites`).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn client_options(allow_http: bool) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(REQUEST_TIMEOUT)
}

/// The `Retry-After` a server last sent with a 429 or 503, shared between
/// an HTTP connector (which sees responses) and its target (which
/// classifies the error object_store returns without the header).
#[derive(Debug, Default, Clone)]
pub struct RetryAfter(Arc<std::sync::Mutex<Option<(std::time::Instant, std::time::Duration)>>>);

impl RetryAfter {
    fn record(&self, d: std::time::Duration) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some((std::time::Instant::now(), d));
        }
    }

    /// The header of a response seen in the last few seconds, taken once.
    pub fn take_recent(&self) -> Option<std::time::Duration> {
        let mut g = self.0.lock().ok()?;
        match g.take() {
            Some((at, d)) if at.elapsed() < std::time::Duration::from_secs(30) => Some(d),
            _ => None,
        }
    }
}

/// object_store's reqwest connector, watching responses for `Retry-After`.
#[derive(Debug)]
pub struct RetryAfterConnector {
    seen: RetryAfter,
}

impl RetryAfterConnector {
    pub fn new(seen: RetryAfter) -> Self {
        RetryAfterConnector { seen }
    }
}

#[derive(Debug)]
struct WatchRetryAfter {
    client: object_store::client::HttpClient,
    seen: RetryAfter,
}

#[async_trait]
impl object_store::client::HttpService for WatchRetryAfter {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        let resp = self.client.execute(req).await?;
        if matches!(resp.status().as_u16(), 429 | 503) {
            let secs = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(secs) = secs {
                self.seen
                    .record(std::time::Duration::from_secs(secs.min(3600)));
            }
        }
        Ok(resp)
    }
}

impl object_store::client::HttpConnector for RetryAfterConnector {
    fn connect(
        &self,
        options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let client = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(object_store::client::HttpClient::new(WatchRetryAfter {
            client,
            seen: self.seen.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u32) -> Op {
        Op::LogChunk {
            run: "R".into(),
            job: "j".into(),
            seq: n as i64,
            body: Bytes::from(format!("chunk {n}\n")),
        }
    }

    /// A server that answers every request with `status` (and closes).
    fn answering(status: &'static str) -> String {
        answering_with(status, "<Error><Code>X</Code></Error>")
    }

    /// A server that answers every request with `status` and `body`.
    fn answering_with(status: &'static str, body: &'static str) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 65536];
                let _ = c.read(&mut buf);
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    /// An S3 target at `endpoint` that does not retry.
    fn s3_at(endpoint: String, allow_http: bool) -> ObjectStoreTarget {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: 0,
                retry_timeout: std::time::Duration::from_secs(1),
            })
            .with_client_options(client_options(allow_http))
            .build()
            .unwrap();
        ObjectStoreTarget::new("s3:b/", Arc::new(store), "")
    }

    /// Only network failures, 5xx and 429 are worth retrying; a bucket that
    /// is not there or a request the server cannot take is the setup's
    /// fault (issue 11). Real HTTP answers through object_store's client,
    /// which also pins the error wording `http_status` reads.
    #[tokio::test]
    async fn classifies_http_statuses() {
        use sparkwing_outbox::ErrorClass as C;
        install_crypto_provider();
        let cases = [
            ("400 Bad Request", C::Config),
            ("404 Not Found", C::Config),
            ("501 Not Implemented", C::Config),
            ("403 Forbidden", C::Auth),
            ("503 Service Unavailable", C::Transient),
            ("500 Internal Server Error", C::Transient),
            ("429 Too Many Requests", C::Transient),
            ("413 Payload Too Large", C::Permanent),
            // A wrong region: a redirect without a Location.
            ("301 Moved Permanently", C::Config),
        ];
        let timeout = ("400 Bad Request", "<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period.</Message></Error>");
        let cases = cases
            .into_iter()
            .map(|(s, c)| (answering(s), s, c))
            .chain([(
                answering_with(timeout.0, timeout.1),
                "400 RequestTimeout",
                C::Transient,
            )]);
        for (endpoint, status, want) in cases {
            let t = s3_at(endpoint, true);
            let e = t.apply(&op(0)).await.unwrap_err();
            assert_eq!(e.class, want, "{status} on a put: {e}");
            let e = t.list("R/").await.unwrap_err();
            assert_eq!(e.class, want, "{status} on a list: {e}");
        }
        // An http endpoint the client was not allowed to use: every request
        // fails to build, which waiting does not cure.
        let e = s3_at(answering("200 OK"), false)
            .apply(&op(0))
            .await
            .unwrap_err();
        assert_eq!(e.class, C::Config, "http refused: {e}");
        // Nothing listening: a network failure.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = s3_at(format!("http://127.0.0.1:{port}"), true);
        assert_eq!(t.apply(&op(0)).await.unwrap_err().class, C::Transient);
    }

    /// Issue 9: an unmounted share must never be re-created on the local
    /// disk, not even inside the window where the directory was last seen.
    #[tokio::test]
    async fn a_missing_root_is_offline_at_every_write_and_never_created() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        let t = ObjectStoreTarget::filesystem(&share);
        let e = t.apply(&op(0)).await.unwrap_err();
        assert_eq!(e.class, sparkwing_outbox::ErrorClass::Transient, "{e}");
        assert!(!share.exists());
        std::fs::create_dir(&share).unwrap();
        assert_eq!(t.apply(&op(0)).await.unwrap(), Applied::Written);
        // Moved away right after a successful write (the directory was
        // seen a moment ago): both write paths refuse, and create nothing.
        std::fs::rename(&share, tmp.path().join("away")).unwrap();
        let e = t.apply(&op(1)).await.unwrap_err();
        assert_eq!(e.class, sparkwing_outbox::ErrorClass::Transient, "{e}");
        let (n, e) = t.apply_all(&[op(2), op(3)]).await;
        assert_eq!(n, 0);
        assert!(e.is_some_and(|e| e.message.contains("is the share mounted")));
        assert!(!share.exists(), "the share was re-created locally");
        std::fs::rename(tmp.path().join("away"), &share).unwrap();
        assert_eq!(t.apply_all(&[op(1), op(2)]).await.1, None);
        assert_eq!(t.list("R/").await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn staged_files_are_outside_the_key_space_and_crash_leftovers_go() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        let staging = share.join(STAGING_DIR);
        std::fs::create_dir_all(&staging).unwrap();
        // A leftover of a process of this host that is gone (pid beyond
        // pid_max), and one of a live process (this one).
        let me = staging_owner();
        let host = me.split('.').next().unwrap();
        let dead = staging.join(format!("{host}.2147483646.7"));
        let live = staging.join(format!("{me}999999"));
        std::fs::write(&dead, b"partial").unwrap();
        std::fs::write(&live, b"in flight").unwrap();
        let t = ObjectStoreTarget::filesystem(&share);
        let blob = Bytes::from_static(b"blob");
        let ops = [
            op(0),
            Op::CacheBlob {
                sha256: sha256_hex(&blob),
                body: blob,
            },
        ];
        assert_eq!(t.apply_all(&ops).await, (2, None));
        assert!(!dead.exists(), "a dead writer's staged file is removed");
        assert!(live.exists(), "a live writer's staged file is left alone");
        for prefix in ["R/", "cas/", "runs/", "keys/"] {
            for k in t.list(prefix).await.unwrap() {
                assert!(!k.contains(STAGING_DIR) && !k.contains('#'), "{k}");
            }
        }
        // Nothing staged by the writes themselves is left behind.
        let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
        assert_eq!(left.len(), 1, "only the live writer's file: {left:?}");
    }

    /// Issue 10 (adversarial pass): links, FIFOs and `..` planted in a
    /// shared directory are never followed, read or walked.
    #[tokio::test]
    async fn links_fifos_and_dot_dots_planted_in_the_share_are_refused() {
        use std::os::unix::fs::symlink;
        let share = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("thesis.tex");
        std::fs::write(&victim, "years of work").unwrap();
        // Old enough to be "a leftover" if the link were followed.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86400);
        std::fs::File::options()
            .write(true)
            .open(&victim)
            .unwrap()
            .set_modified(old)
            .unwrap();
        symlink(outside.path(), share.path().join(STAGING_DIR)).unwrap();
        assert_eq!(clean_staging(share.path()), 0);
        assert!(
            victim.exists(),
            "a linked staging directory is never cleaned"
        );
        // Only names of the staged form are ever removed (were the link
        // swapped in after the check, `thesis.tex` could not go).
        assert!(is_staged_name("host_a.123.7"));
        for other in [
            "thesis.tex",
            "id_rsa",
            "a.b.c.d",
            "h.x.1",
            ".bashrc",
            "h.1.",
        ] {
            assert!(!is_staged_name(other), "{other}");
        }

        let t = ObjectStoreTarget::filesystem(share.path());
        // Writing replaces the planted link with a real staging directory
        // and writes nothing through it.
        t.apply(&op(0)).await.unwrap();
        assert!(std::fs::symlink_metadata(share.path().join(STAGING_DIR))
            .unwrap()
            .is_dir());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);

        // A link as an object, a link as a directory, a FIFO: refused.
        std::fs::create_dir_all(share.path().join("R/j")).unwrap();
        symlink(&victim, share.path().join("R/j/0000000001.log")).unwrap();
        let e = t.read("R/j/0000000001.log", 1 << 20).await.unwrap_err();
        assert!(e.message.contains("symbolic link"), "{e:?}");
        symlink(outside.path(), share.path().join("R/k")).unwrap();
        let e = t.read("R/k/thesis.tex", 1 << 20).await.unwrap_err();
        assert!(e.message.contains("symbolic link"), "{e:?}");
        assert!(
            t.list("R/k/").await.is_err(),
            "a linked directory is not listed"
        );
        let e = t
            .apply(&Op::LogChunk {
                run: "R".into(),
                job: "k".into(),
                seq: 0,
                body: Bytes::from_static(b"x"),
            })
            .await
            .unwrap_err();
        assert!(e.message.contains("symbolic link"), "{e:?}");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            1,
            "nothing written through it"
        );
        let fifo = share.path().join("R/j/0000000002.log");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            t.read("R/j/0000000002.log", 1 << 20),
        )
        .await
        .expect("a FIFO must not block the reader")
        .unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e:?}");
        // `..` in a listed prefix never walks out of the share.
        for bad in ["R/../..", "../x", "R/./j", "/etc"] {
            assert!(t.list(&format!("{bad}/")).await.is_err(), "{bad}");
        }
        // The honest object still reads.
        assert_eq!(
            t.read(&op(0).key(), 1 << 20).await.unwrap().unwrap(),
            op(0).body().clone()
        );
    }
}
