//! The read side of a remote: [`RemoteView`], typed reads of what a
//! profile's surfaces hold, and [`ObjectView`], its one implementation over
//! the object layout ([`crate::layout`]).
//!
//! [`crate::Target`] is the write contract (the replay actor applies
//! outbox ops through it); a view is the read contract (merged run lists,
//! `runs show/logs --profile`, the dashboard, remote cache hits, `sync
//! verify`). They are separate because the backends to come cannot fake an
//! object keyspace: Postgres reads run state from tables and the controller
//! over HTTP, so readers ask for *a run's document* or *a job's log chunk*,
//! never for a key. The local store implements the same trait in the main
//! crate, and one conformance body (`conformance::view_suite`) runs
//! against every implementation.
//!
//! Everything a view returns was written by other machines, possibly hostile
//! ones: documents arrive parsed and bounded ([`crate::doc`]), objects are
//! read up to the bound of their kind ([`read_limits`]) and never past it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::doc::{self, Event, RunDoc};
use crate::layout;
use crate::object::ObjectStoreTarget;
use crate::target::{read_limits, TargetError};

/// A run's document as a view found it.
#[derive(Debug, Clone)]
pub enum RunRead {
    /// Parsed, bounded, naming the run it was asked for.
    Doc(Box<RunDoc>),
    /// The remote holds something that is not a usable run document; the
    /// reason, for a row that lists beside the others.
    Unreadable(String),
}

/// A run's events as a remote holds them.
#[derive(Debug, Default)]
pub struct RunEvents {
    /// In order of their first event's seq. A remote that does not keep
    /// events in segments (the local store, a database) returns one.
    pub segments: Vec<Segment>,
    /// Names among the run's events that are not segments (left by another
    /// tool, or hostile), for `sync verify` to report.
    pub strays: Vec<String>,
}

impl RunEvents {
    /// Every event of every readable segment, in segment order.
    pub fn flatten(self) -> Vec<Event> {
        self.segments
            .into_iter()
            .filter_map(|s| s.events.ok())
            .flatten()
            .collect()
    }
}

/// One segment of a run's events.
#[derive(Debug)]
pub struct Segment {
    /// The seq its name gives for its first event.
    pub first_seq: i64,
    /// Its events, or why they could not be read (too large, not events,
    /// unreadable): one bad segment never hides the others.
    pub events: Result<Vec<Event>, String>,
}

/// The chunks of a job's log that a remote holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogChunks {
    /// Their seqs, ascending, each once.
    pub seqs: Vec<u64>,
    /// Names among the job's log that are not chunks.
    pub strays: Vec<String>,
}

/// Typed reads of a remote.
///
/// Contract, for every implementation (checked by
/// `conformance::view_suite`):
/// - `id` is the id of the same remote's [`crate::Target`]: the outbox
///   address of what is delivered there, with no secret in it.
/// - Absent things are `Ok(None)` (or empty), never an error; an error is a
///   remote that could not answer, classified like delivery failures.
/// - `run_ids` are ascending and distinct. Sparkwing's run IDs sort by
///   time, so the newest come last.
/// - `run` returns the document of exactly the run asked for: a document
///   naming another run, or one that does not parse, is
///   [`RunRead::Unreadable`] with the reason.
/// - `events` returns every stored event once per place it is stored (a
///   doubled event shows as doubled, for `sync verify` to see).
/// - `log_chunk` and `blob` return the exact bytes stored; `blob` refuses an
///   object over `max` bytes as a permanent error without reading it.
/// - `manifest` returns the exact bytes of a cache key's manifest: its
///   signature covers those bytes, so the reader checks it before parsing.
#[async_trait]
pub trait RemoteView: Send + Sync + fmt::Debug {
    fn id(&self) -> &str;

    /// One cheap request that proves the remote answers and the
    /// credentials may read (`sparkwing-web` checks its surfaces at start).
    async fn probe(&self) -> Result<(), TargetError>;

    /// The IDs of the runs the remote holds, ascending.
    async fn run_ids(&self) -> Result<Vec<String>, TargetError>;

    /// A run's document.
    async fn run(&self, run: &str) -> Result<Option<RunRead>, TargetError>;

    /// A run's events.
    async fn events(&self, run: &str) -> Result<RunEvents, TargetError>;

    /// Which chunks of a job's log the remote holds.
    async fn log_chunks(&self, run: &str, job: &str) -> Result<LogChunks, TargetError>;

    /// One chunk of a job's log.
    async fn log_chunk(&self, run: &str, job: &str, seq: u64)
        -> Result<Option<Bytes>, TargetError>;

    /// A cache key's manifest, as stored.
    async fn manifest(&self, key: &str) -> Result<Option<Bytes>, TargetError>;

    /// A cache blob by its SHA-256, at most `max` bytes.
    async fn blob(&self, sha256: &str, max: u64) -> Result<Option<Bytes>, TargetError>;

    /// `len` bytes of a cache blob (a pack) from `start`: one ranged read.
    /// Fewer bytes when the blob ends first; `None` when it is absent.
    async fn blob_range(
        &self,
        sha256: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, TargetError>;
}

/// [`RemoteView`] over an object store surface: the one place reads spell
/// the object layout.
#[derive(Debug, Clone)]
pub struct ObjectView {
    objects: Arc<ObjectStoreTarget>,
}

impl ObjectView {
    pub fn new(objects: Arc<ObjectStoreTarget>) -> Self {
        ObjectView { objects }
    }
}

/// Refuses a run or job name that could not have been written (it would
/// make a key outside the layout).
fn names(run: &str, job: Option<&str>) -> Result<(), TargetError> {
    if !doc::is_run_id(run) {
        return Err(TargetError::permanent(format!(
            "{:?} is not a run ID",
            doc::clip(run, 40)
        )));
    }
    match job {
        Some(j) if !doc::valid_name(j) => Err(TargetError::permanent(format!(
            "{:?} is not a job name",
            doc::clip(j, 40)
        ))),
        _ => Ok(()),
    }
}

/// Refuses a cache key or blob name that is not a lowercase SHA-256.
fn hex_name(what: &str, s: &str) -> Result<(), TargetError> {
    match doc::is_sha256(s) {
        true => Ok(()),
        false => Err(TargetError::permanent(format!(
            "{what} {:?} is not a SHA-256",
            doc::clip(s, 70)
        ))),
    }
}

/// The key that a probe reads: absent, so the answer is "not found".
const PROBE_KEY: &str = "sparkwing-probe";

#[async_trait]
impl RemoteView for ObjectView {
    fn id(&self) -> &str {
        crate::Target::id(&*self.objects)
    }

    async fn probe(&self) -> Result<(), TargetError> {
        self.objects.read(PROBE_KEY, 1).await.map(|_| ())
    }

    async fn run_ids(&self) -> Result<Vec<String>, TargetError> {
        let mut ids = self.objects.list_children(layout::RUNS).await?;
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn run(&self, run: &str) -> Result<Option<RunRead>, TargetError> {
        if !doc::is_run_id(run) {
            return Ok(Some(RunRead::Unreadable("not a run ID".into())));
        }
        let body = match self
            .objects
            .read(&layout::run_document(run), read_limits::RUN_DOCUMENT)
            .await
        {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            // A document over its bound is this run's problem, not the
            // remote's: it lists as unreadable beside the others.
            Err(e) if e.class == sparkwing_outbox::ErrorClass::Permanent => {
                return Ok(Some(RunRead::Unreadable(e.message)))
            }
            Err(e) => return Err(e),
        };
        Ok(Some(match doc::parse_run(run, &body) {
            Ok(d) => RunRead::Doc(Box::new(d)),
            Err(why) => RunRead::Unreadable(why),
        }))
    }

    async fn events(&self, run: &str) -> Result<RunEvents, TargetError> {
        names(run, None)?;
        let keys = self.objects.list(&layout::events_prefix(run)).await?;
        let mut out = RunEvents::default();
        let mut named: Vec<(i64, String)> = Vec::new();
        for key in keys {
            match layout::segment_seq(&key).and_then(|s| i64::try_from(s).ok()) {
                Some(first) => named.push((first, key)),
                None => out.strays.push(key),
            }
        }
        named.sort();
        for (first_seq, key) in named {
            let events = match self.objects.read(&key, read_limits::EVENT_SEGMENT).await {
                Ok(Some(body)) => doc::decode_events(&body).map_err(|e| format!("not events: {e}")),
                Ok(None) => Err("listed but gone when read".into()),
                Err(e) => Err(format!("could not be read: {}", e.message)),
            };
            out.segments.push(Segment { first_seq, events });
        }
        Ok(out)
    }

    async fn log_chunks(&self, run: &str, job: &str) -> Result<LogChunks, TargetError> {
        names(run, Some(job))?;
        let keys = self.objects.list(&layout::log_prefix(run, job)).await?;
        let mut out = LogChunks::default();
        for key in keys {
            match layout::chunk_seq(&key) {
                Some(s) => out.seqs.push(s),
                None => out.strays.push(key),
            }
        }
        out.seqs.sort_unstable();
        out.seqs.dedup();
        Ok(out)
    }

    async fn log_chunk(
        &self,
        run: &str,
        job: &str,
        seq: u64,
    ) -> Result<Option<Bytes>, TargetError> {
        names(run, Some(job))?;
        let seq = i64::try_from(seq)
            .map_err(|_| TargetError::permanent(format!("log chunk {seq} is out of range")))?;
        self.objects
            .read(&layout::log_chunk(run, job, seq), read_limits::LOG_CHUNK)
            .await
    }

    async fn manifest(&self, key: &str) -> Result<Option<Bytes>, TargetError> {
        hex_name("cache key", key)?;
        self.objects
            .read(&layout::manifest(key), read_limits::MANIFEST)
            .await
    }

    async fn blob(&self, sha256: &str, max: u64) -> Result<Option<Bytes>, TargetError> {
        hex_name("blob", sha256)?;
        self.objects.read(&layout::blob(sha256), max).await
    }

    async fn blob_range(
        &self,
        sha256: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, TargetError> {
        hex_name("blob", sha256)?;
        self.objects
            .read_range(&layout::blob(sha256), start, len)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Op, Target};

    /// What other tools or an attacker leave among a run's objects is named
    /// as stray, never read as events or chunks; a document naming another
    /// run is unreadable, not that run.
    #[tokio::test]
    async fn strays_and_hostile_documents_are_named_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(ObjectStoreTarget::filesystem(dir.path()));
        let view = ObjectView::new(Arc::clone(&t));
        let run = "RUNA";
        let other = crate::conformance::run_document("RUNB", "success").to_string();
        t.apply(&Op::RunSummary {
            run: run.into(),
            body: Bytes::from(other),
        })
        .await
        .unwrap();
        for stray in ["runs/RUNA/events/1.ndjson", "RUNA/build/notes.txt"] {
            let p = dir.path().join(stray);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"{}").unwrap();
        }
        match view.run(run).await.unwrap() {
            Some(RunRead::Unreadable(why)) => assert!(why.contains("another run"), "{why}"),
            other => panic!("{other:?}"),
        }
        let ev = view.events(run).await.unwrap();
        assert!(ev.segments.is_empty());
        assert_eq!(ev.strays, vec!["runs/RUNA/events/1.ndjson".to_string()]);
        let logs = view.log_chunks(run, "build").await.unwrap();
        assert!(logs.seqs.is_empty());
        assert_eq!(logs.strays, vec!["RUNA/build/notes.txt".to_string()]);
        match view.run("../etc").await.unwrap() {
            Some(RunRead::Unreadable(why)) => assert_eq!(why, "not a run ID"),
            other => panic!("{other:?}"),
        }
    }
}
