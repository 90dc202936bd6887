//! [`LocalView`]: this machine's store read through the same
//! [`RemoteView`] contract as a remote, so one conformance body
//! (`sparkwing_sync::conformance::view_suite`) holds every implementation
//! to the same answers, and a view of this machine can stand where a view
//! of a remote does.
//!
//! It serves what the replicator would deliver, from the rows that decide
//! it: the run document as a remote holds it ([`remote_document`]), events
//! in the segments `state.db` recorded (plus the events not yet in a
//! segment, as one more), log chunks at the offsets `state.db` recorded,
//! cache manifests unsigned (they have not left this machine) and blobs
//! from the local CAS.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};
use sparkwing_sync::doc::{self, Event};
use sparkwing_sync::view::{LogChunks, RemoteView, RunEvents, RunRead, Segment};
use sparkwing_sync::TargetError;

use crate::local::store::{RunRow, Store};
use crate::report;

/// The run document as a remote holds it (`run.json`): the local document
/// without local paths, with `events_through` (its last event) and, per
/// job, the log chunks and bytes the remote should hold, so a reader can
/// tell a missing chunk from a log that ends there.
pub fn remote_document(store: &Store, row: &RunRow) -> Result<Value> {
    let seq = store.last_event_seq(&row.id)?;
    let chunks = store.log_chunk_totals(&row.id)?;
    let mut doc = report::run_document(store, row, None)?;
    doc["events_through"] = json!(seq);
    if let Some(jobs) = doc["jobs"].as_array_mut() {
        for j in jobs {
            let name = j["name"].as_str().unwrap_or_default().to_string();
            let (n, bytes) = chunks.get(&name).copied().unwrap_or((0, 0));
            j["log_chunks"] = json!(n);
            j["log_bytes"] = json!(bytes);
        }
    }
    Ok(doc)
}

/// This machine's store as a [`RemoteView`].
#[derive(Clone)]
pub struct LocalView {
    store: Arc<Store>,
    home: PathBuf,
}

impl std::fmt::Debug for LocalView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalView")
            .field("home", &self.home)
            .finish()
    }
}

impl LocalView {
    pub fn new(store: Arc<Store>, home: impl Into<PathBuf>) -> Self {
        LocalView {
            store,
            home: home.into(),
        }
    }

    /// Runs `f` on a blocking thread (SQLite and files stay off the async
    /// executor, DESIGN invariant 9). A failure of this machine's own store
    /// is transient: it is no answer about what exists.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &std::path::Path) -> Result<T> + Send + 'static,
    ) -> Result<T, TargetError> {
        let (store, home) = (Arc::clone(&self.store), self.home.clone());
        tokio::task::spawn_blocking(move || f(&store, &home))
            .await
            .map_err(|e| TargetError::transient(format!("reading this machine's store: {e}")))?
            .map_err(|e| TargetError::transient(format!("reading this machine's store: {e:#}")))
    }
}

/// `len` bytes of `f` from `offset` (a recorded log chunk).
pub fn read_range(f: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

#[async_trait]
impl RemoteView for LocalView {
    fn id(&self) -> &str {
        "local:"
    }

    async fn probe(&self) -> Result<(), TargetError> {
        self.blocking(|s, _| s.run_ids().map(|_| ())).await
    }

    async fn run_ids(&self) -> Result<Vec<String>, TargetError> {
        self.blocking(|s, _| s.run_ids()).await
    }

    async fn run(&self, run: &str) -> Result<Option<RunRead>, TargetError> {
        let id = run.to_string();
        let doc = self
            .blocking(move |s, _| match s.run_by_id(&id)? {
                Some(row) => Ok(Some(remote_document(s, &row)?)),
                None => Ok(None),
            })
            .await?;
        // Through the same typed parse as a remote's document: the two
        // views answer with the same values.
        Ok(
            doc.map(|d| match doc::parse_run(run, d.to_string().as_bytes()) {
                Ok(d) => RunRead::Doc(Box::new(d)),
                Err(why) => RunRead::Unreadable(why),
            }),
        )
    }

    async fn events(&self, run: &str) -> Result<RunEvents, TargetError> {
        let run = run.to_string();
        self.blocking(move |s, _| {
            let mut segments = Vec::new();
            let mut through = 0;
            for (first, last) in s.segments_after(&run, 0)? {
                let events: Vec<Event> = s.events_between(&run, first, last)?;
                through = last;
                segments.push(Segment {
                    first_seq: first,
                    events: Ok(events),
                });
            }
            let rest = s.events_after(&run, through)?;
            if let Some(first) = rest.first().map(|e| e.seq) {
                segments.push(Segment {
                    first_seq: first,
                    events: Ok(rest),
                });
            }
            Ok(RunEvents {
                segments,
                strays: Vec::new(),
            })
        })
        .await
    }

    async fn log_chunks(&self, run: &str, job: &str) -> Result<LogChunks, TargetError> {
        let (run, job) = (run.to_string(), job.to_string());
        self.blocking(move |s, _| {
            let seqs = s
                .log_chunks_after(&run, &job, -1)?
                .into_iter()
                .filter_map(|(seq, _, _)| u64::try_from(seq).ok())
                .collect();
            Ok(LogChunks {
                seqs,
                strays: Vec::new(),
            })
        })
        .await
    }

    async fn log_chunk(
        &self,
        run: &str,
        job: &str,
        seq: u64,
    ) -> Result<Option<Bytes>, TargetError> {
        if !doc::is_run_id(run) || !doc::valid_name(job) {
            return Ok(None);
        }
        let (run, job) = (run.to_string(), job.to_string());
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        self.blocking(move |s, home| {
            let Some((_, offset, len)) = s
                .log_chunks_after(&run, &job, seq - 1)?
                .into_iter()
                .next()
                .filter(|c| c.0 == seq)
            else {
                return Ok(None);
            };
            let path = crate::run::logs::log_path(home, &run, &job);
            Ok(Some(Bytes::from(read_range(
                &std::fs::File::open(&path)?,
                offset,
                len,
            )?)))
        })
        .await
    }

    async fn manifest(&self, key: &str) -> Result<Option<Bytes>, TargetError> {
        let key = key.to_string();
        self.blocking(move |s, _| {
            let Some(entry) = s.cache_get(&key)? else {
                return Ok(None);
            };
            let manifest: crate::run::cache::Manifest = serde_json::from_str(&entry.manifest)?;
            let doc = crate::run::cache::manifest_document(&entry, &manifest);
            Ok(Some(Bytes::from(serde_json::to_vec(&doc)?)))
        })
        .await
    }

    async fn blob(&self, sha256: &str, max: u64) -> Result<Option<Bytes>, TargetError> {
        if !doc::is_sha256(sha256) {
            return Err(TargetError::permanent(format!(
                "blob {:?} is not a SHA-256",
                doc::clip(sha256, 70)
            )));
        }
        let sha = sha256.to_string();
        let got = self
            .blocking(move |_, home| {
                let path = crate::run::cache::Cas::new(home).blob_path(&sha);
                let f = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let size = f.metadata()?.len();
                if size > max {
                    return Ok(Some(Err(size)));
                }
                let mut buf = Vec::with_capacity(size as usize);
                f.take(max).read_to_end(&mut buf)?;
                Ok(Some(Ok(Bytes::from(buf))))
            })
            .await?;
        match got {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(size)) => Err(sparkwing_sync::target::too_large(
                &format!("blob {sha256}"),
                size,
                max,
            )),
        }
    }

    async fn blob_range(
        &self,
        sha256: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, TargetError> {
        if !doc::is_sha256(sha256) {
            return Err(TargetError::permanent(format!(
                "blob {:?} is not a SHA-256",
                doc::clip(sha256, 70)
            )));
        }
        let sha = sha256.to_string();
        self.blocking(move |_, home| {
            let path = crate::run::cache::Cas::new(home).blob_path(&sha);
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let size = f.metadata()?.len();
            let len = len.min(size.saturating_sub(start));
            Ok(Some(Bytes::from(read_range(&f, start, len)?)))
        })
        .await
    }
}
