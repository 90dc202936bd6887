//! [`ObjectStoreTarget`]: the remote layout on any `object_store` backend,
//! and the `filesystem` surface (a shared or network-mounted directory).

use std::path::PathBuf;
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
    /// The directory, the store once opened, and when the directory was
    /// last seen to exist.
    Directory(
        PathBuf,
        OnceCell<(Arc<LocalFileSystem>, Arc<dyn ObjectStore>)>,
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
        }
    }

    /// Attaches the `Retry-After` a [`RetryAfterConnector`] records to this
    /// target's transient errors.
    pub fn with_retry_after(mut self, seen: RetryAfter) -> Self {
        self.retry_after = Some(seen);
        self
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
    async fn local(&self) -> Result<&(Arc<LocalFileSystem>, Arc<dyn ObjectStore>), TargetError> {
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
                    LocalFileSystem::new_with_prefix(dir)
                        .map(|s| {
                            let s = Arc::new(s);
                            (Arc::clone(&s), s as Arc<dyn ObjectStore>)
                        })
                        .map_err(|e| classify(&e))
                })
                .await
            }
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

/// Writes one op's object at `path` as `LocalFileSystem::put` does: the
/// bytes go to a new `<path>#N` file, which is then renamed over `path`
/// (atomic for readers), or, for a cache blob, hard-linked to `path` so a
/// blob already there is never replaced.
fn write_local(path: &std::path::Path, op: &Op) -> Result<(), TargetError> {
    use std::io::Write;
    let io_err = |what: &str, p: &std::path::Path, e: std::io::Error| {
        let msg = format!("{what} {}: {e}", p.display());
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => TargetError::auth(msg),
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidFilename => {
                TargetError::permanent(msg)
            }
            _ => TargetError::transient(msg),
        }
    };
    let blob = matches!(op, Op::CacheBlob { .. });
    if let Op::CacheBlob { sha256, body } = op {
        let got = sha256_hex(body);
        if &got != sha256 {
            return Err(TargetError::permanent(format!(
                "cache blob {sha256} hashes to {got} locally; refusing to upload a corrupt blob"
            )));
        }
        if path.exists() {
            return Ok(());
        }
    }
    let (mut file, staged) = {
        let mut n = 1u32;
        loop {
            let mut staged = path.as_os_str().to_owned();
            staged.push(format!("#{n}"));
            let staged = PathBuf::from(staged);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staged)
            {
                Ok(f) => break (f, staged),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let parent = path.parent().unwrap_or(path);
                    std::fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
                }
                Err(e) => return Err(io_err("creating", &staged, e)),
            }
        }
    };
    let done = file
        .write_all(op.body())
        .map_err(|e| io_err("writing", &staged, e))
        .and_then(|_| {
            if blob {
                match std::fs::hard_link(&staged, path) {
                    // Another writer stored the same bytes first.
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        Err(io_err("linking", path, e))
                    }
                    _ => Ok(()),
                }
            } else {
                std::fs::rename(&staged, path).map_err(|e| io_err("renaming to", path, e))
            }
        });
    if blob || done.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    done
}

/// Sorts an `object_store` error into transient, auth or permanent.
pub fn classify(e: &object_store::Error) -> TargetError {
    use object_store::Error as E;
    let msg = e.to_string();
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => TargetError::auth(msg),
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::Precondition { .. } => TargetError::permanent(msg),
        _ => {
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
            TargetError::transient(msg)
        }
    }
}

#[async_trait]
impl Target for ObjectStoreTarget {
    fn id(&self) -> &str {
        &self.id
    }

    async fn apply(&self, op: &Op) -> Result<Applied, TargetError> {
        let store = self.store().await?;
        let path = self.path(&op.key());
        if let Op::CacheBlob { sha256, body } = op {
            let got = sha256_hex(body);
            if &got != sha256 {
                return Err(TargetError::permanent(format!(
                    "cache blob {sha256} hashes to {got} locally; refusing to upload a corrupt blob"
                )));
            }
            match store.head(&path).await {
                Ok(_) => return Ok(Applied::AlreadyPresent),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.fail(&e)),
            }
            let opts = PutOptions::from(PutMode::Create);
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
        store
            .put(&path, PutPayload::from(op.body().clone()))
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
        let fs = match self.local().await {
            Ok((fs, _)) => Arc::clone(fs),
            Err(e) => return (0, Some(e)),
        };
        let mut items = Vec::with_capacity(ops.len());
        let mut stop = None;
        for (i, op) in ops.iter().enumerate() {
            match fs.path_to_filesystem(&self.path(&op.key())) {
                Ok(p) => items.push((p, op.clone())),
                Err(e) => {
                    stop = Some((i, classify(&e)));
                    break;
                }
            }
        }
        let written = tokio::task::spawn_blocking(move || {
            for (i, (path, op)) in items.iter().enumerate() {
                if let Err(e) = write_local(path, op) {
                    return (i, Some(e));
                }
            }
            (items.len(), None)
        })
        .await;
        match written {
            Ok((n, Some(e))) => (n, Some(e)),
            Ok((n, None)) => match stop {
                Some((i, e)) => (i, Some(e)),
                None => (n, None),
            },
            Err(e) => (
                0,
                Some(TargetError::transient(format!(
                    "a write thread failed: {e}"
                ))),
            ),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Bytes>, TargetError> {
        let store = self.store().await?;
        match store.get(&self.path(key)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| self.fail(&e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(&e)),
        }
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
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

    async fn list(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
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
        let mut keys: Vec<String> = metas
            .into_iter()
            .map(|m| m.location.to_string())
            .map(|k| k.strip_prefix(&strip).map(str::to_string).unwrap_or(k))
            .collect();
        keys.sort();
        Ok(keys)
    }
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
pub fn client_options(allow_http: bool) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(std::time::Duration::from_secs(60))
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
