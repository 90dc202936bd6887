//! The contract between the replay actor and a remote.

use crate::layout;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sparkwing_outbox::ErrorClass;

/// What one delivery asks a target to do. Built by the actor from outbox
/// entries (consecutive `state.event` entries become one segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Events `first_seq..` of a run, one JSON object per line.
    StateEvents {
        run: String,
        first_seq: i64,
        body: Bytes,
    },
    /// The run summary, rewritten by the run's one owner.
    RunSummary { run: String, body: Bytes },
    /// One immutable chunk of a job's log.
    LogChunk {
        run: String,
        job: String,
        seq: i64,
        body: Bytes,
    },
    /// A content-addressed cache blob; `sha256` is the hex digest of `body`.
    CacheBlob { sha256: String, body: Bytes },
    /// The manifest of a cache key (names blobs already delivered).
    CacheManifest { key: String, body: Bytes },
}

impl Op {
    /// The object key of this op in the remote layout (DESIGN "The remote
    /// layouts"), relative to the surface's prefix.
    pub fn key(&self) -> String {
        match self {
            Op::StateEvents { run, first_seq, .. } => layout::event_segment(run, *first_seq),
            Op::RunSummary { run, .. } => layout::run_document(run),
            Op::LogChunk { run, job, seq, .. } => layout::log_chunk(run, job, *seq),
            Op::CacheBlob { sha256, .. } => layout::blob(sha256),
            Op::CacheManifest { key, .. } => layout::manifest(key),
        }
    }

    /// The object's `Content-Type`, so a bucket console shows a log or a
    /// document instead of downloading it.
    pub fn content_type(&self) -> &'static str {
        match self {
            Op::StateEvents { .. } => "application/x-ndjson",
            Op::RunSummary { .. } | Op::CacheManifest { .. } => "application/json",
            Op::LogChunk { .. } => "text/plain; charset=utf-8",
            Op::CacheBlob { .. } => "application/octet-stream",
        }
    }

    pub fn body(&self) -> &Bytes {
        match self {
            Op::StateEvents { body, .. }
            | Op::RunSummary { body, .. }
            | Op::LogChunk { body, .. }
            | Op::CacheBlob { body, .. }
            | Op::CacheManifest { body, .. } => body,
        }
    }
}

/// `cas/<sha[..2]>/<sha>`.
pub fn blob_key(sha256: &str) -> String {
    layout::blob(sha256)
}

/// What a successful apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The object was written.
    Written,
    /// A content-addressed blob was already present: no body was sent.
    AlreadyPresent,
    /// The target keeps nothing (Mode 1).
    Discarded,
}

/// The most bytes a reader accepts for each kind of object. Objects are
/// written by other machines, possibly hostile ones; each bound is far above
/// what sparkwing itself writes.
pub mod read_limits {
    /// A run document (`runs/<run>/run.json`).
    pub const RUN_DOCUMENT: u64 = 4 << 20;
    /// An event segment (`runs/<run>/events/<seq>.ndjson`).
    pub const EVENT_SEGMENT: u64 = 16 << 20;
    /// A log chunk (`<run>/<job>/<seq>.log`); sparkwing writes at most 1 MiB.
    pub const LOG_CHUNK: u64 = 2 << 20;
    /// A cache manifest (`keys/<key>.json`).
    pub const MANIFEST: u64 = 64 << 20;
}

/// The error for an object over a reader's bound.
pub fn too_large(key: &str, size: u64, max: u64) -> TargetError {
    TargetError::permanent(format!(
        "object {key} is {size} bytes, more than the {max} bytes accepted for it; it was not read (written by another tool, or damaged)"
    ))
}

/// A classified failure of a target or a view, by meaning ([`ErrorClass`]).
///
/// The underlying error (object_store's, an I/O error) is kept as a
/// message, redacted when it is made ([`crate::object::classify`]), not as
/// a `source`: those errors carry request URLs, and a signed URL's query
/// string is a credential. What callers act on is the class (retry, stop
/// the target, quarantine; the CLI's exit code), which is kept whole.
/// Built with the constructors ([`TargetError::transient`] and its
/// siblings); other crates cannot spell a new one field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetError {
    pub class: ErrorClass,
    pub message: String,
    /// A server's `Retry-After`, honoured as the minimum wait.
    pub retry_after: Option<Duration>,
}

impl TargetError {
    pub fn transient(message: impl Into<String>) -> Self {
        TargetError {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn auth(message: impl Into<String>) -> Self {
        TargetError {
            class: ErrorClass::Auth,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        TargetError {
            class: ErrorClass::Config,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        TargetError {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.class.as_str())
    }
}

impl std::error::Error for TargetError {}

/// A remote that outbox entries are delivered to.
///
/// Contract, for every implementation (checked by [`crate::conformance`]):
/// - `id` is stable and carries no secret; it is the outbox address of the
///   entries meant for this target, and nothing else is ever delivered here.
/// - `apply` is **idempotent**: applying an op twice has the effect of once.
///   Objects keyed by `(run, stream, seq)` are immutable, so a repeat writes
///   the same bytes; the run summary and manifests are rewritten whole.
/// - `apply` is **atomic per object**: no reader sees a partial object.
/// - A `CacheBlob` whose key is already present is not uploaded again
///   ([`Applied::AlreadyPresent`]), and one whose body does not hash to its
///   key is refused as [`ErrorClass::Permanent`] (never stored).
/// - Failures are classified: unreachable, timeouts, 5xx (but 501) and 429
///   are `Transient` (with `retry_after` when the server gave one); refused
///   credentials are `Auth`; a target set up wrong (no such bucket, 400,
///   501) is `Config`; a request the remote will never accept is
///   `Permanent`.
///
/// A target only writes: reading a remote is [`crate::view::RemoteView`]'s
/// contract, so a backend that is not an object keyspace (Postgres, the
/// controller) implements both in its own terms.
#[async_trait]
pub trait Target: Send + Sync + fmt::Debug {
    /// `kind:fingerprint`, e.g. `filesystem:/mnt/team/sparkwing`.
    fn id(&self) -> &str;

    /// Delivers one op.
    async fn apply(&self, op: &Op) -> Result<Applied, TargetError>;

    /// Delivers `ops` in order, stopping at the first failure: returns how
    /// many were applied and that failure. Each op keeps `apply`'s contract,
    /// and op `k` is applied only after ops `..k` succeeded. The default
    /// applies them one by one; a backend may batch them (the `filesystem`
    /// surface writes a claim's objects from one blocking thread).
    async fn apply_all(&self, ops: &[Op]) -> (usize, Option<TargetError>) {
        apply_each(self, ops).await
    }
}

/// Applies `ops` one by one with [`Target::apply`] (the default of
/// [`Target::apply_all`]).
pub async fn apply_each<T: Target + ?Sized>(t: &T, ops: &[Op]) -> (usize, Option<TargetError>) {
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = t.apply(op).await {
            return (i, Some(e));
        }
    }
    (ops.len(), None)
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The kinds of outbox entry (an entry's `op`): one spelling, shared by the
/// replicator that enqueues them and the targets that apply them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A closed segment of a run's events ([`Op::StateEvents`]).
    StateEvents,
    /// A run's document, `run.json` ([`Op::RunSummary`]).
    RunSummary,
    /// A chunk of a job's log ([`Op::LogChunk`]).
    LogChunk,
    /// A cache blob ([`Op::CacheBlob`]).
    CacheBlob,
    /// A cache key's manifest ([`Op::CacheManifest`]).
    CacheManifest,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::StateEvents,
        OpKind::RunSummary,
        OpKind::LogChunk,
        OpKind::CacheBlob,
        OpKind::CacheManifest,
    ];

    /// As stored in `outbox.db` (and shown by `sync status`).
    pub const fn as_str(self) -> &'static str {
        match self {
            OpKind::StateEvents => "state.event",
            OpKind::RunSummary => "state.run",
            OpKind::LogChunk => "log.chunk",
            OpKind::CacheBlob => "cache.blob",
            OpKind::CacheManifest => "cache.manifest",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Outbox stream names: entries of one stream replay in order, streams in
/// parallel (DESIGN invariant 4).
pub mod stream {
    /// A run's event segments.
    pub fn state(run: &str) -> String {
        format!("state/{run}")
    }
    /// A run's document versions.
    pub fn summary(run: &str) -> String {
        format!("summary/{run}")
    }
    /// A job's log chunks.
    pub fn log(run: &str, job: &str) -> String {
        format!("log/{run}/{job}")
    }
    /// The prefix of the log streams of every job of a run.
    pub fn logs_prefix(run: &str) -> String {
        format!("log/{run}/")
    }
    /// One cache entry's manifest; its packs are on streams below it
    /// ([`cache_pack`]), which the outbox delivers first.
    pub fn cache(key: &str, run: &str) -> String {
        format!("{}{run}", cache_prefix(key))
    }
    /// One pack of a cache entry: a stream below the entry's ([`cache`]).
    pub fn cache_pack(entry_stream: &str, pack: &str) -> String {
        format!("{entry_stream}/{pack}")
    }
    /// The prefix of every stream of a cache key (one per run that saved it).
    pub fn cache_prefix(key: &str) -> String {
        format!("cache/{key}/")
    }
    /// The subject of a log chunk entry: `run/job`.
    pub fn log_subject(run: &str, job: &str) -> String {
        format!("{run}/{job}")
    }
}

impl Op {
    /// Builds the op an outbox entry asks for. A malformed entry is a
    /// permanent error: retrying cannot fix it.
    pub fn from_entry(op: &str, subject: &str, seq: i64, body: Bytes) -> Result<Op, TargetError> {
        let bad = |why: &str| {
            TargetError::permanent(format!("malformed outbox entry ({op} {subject:?}): {why}"))
        };
        let Some(kind) = OpKind::parse(op) else {
            return Err(bad("unknown operation"));
        };
        match kind {
            OpKind::StateEvents => {
                if !crate::doc::is_run_id(subject) {
                    return Err(bad("run id"));
                }
                Ok(Op::StateEvents {
                    run: subject.into(),
                    first_seq: seq,
                    body,
                })
            }
            OpKind::RunSummary => {
                if !crate::doc::is_run_id(subject) {
                    return Err(bad("run id"));
                }
                Ok(Op::RunSummary {
                    run: subject.into(),
                    body,
                })
            }
            OpKind::LogChunk => {
                let (run, job) = subject.split_once('/').ok_or_else(|| bad("want run/job"))?;
                if !crate::doc::is_run_id(run) || !crate::doc::valid_name(job) {
                    return Err(bad("run or job name"));
                }
                Ok(Op::LogChunk {
                    run: run.into(),
                    job: job.into(),
                    seq,
                    body,
                })
            }
            OpKind::CacheBlob => {
                if !crate::doc::is_sha256(subject) {
                    return Err(bad("sha256"));
                }
                Ok(Op::CacheBlob {
                    sha256: subject.into(),
                    body,
                })
            }
            OpKind::CacheManifest => {
                if !crate::doc::is_sha256(subject) {
                    return Err(bad("cache key"));
                }
                Ok(Op::CacheManifest {
                    key: subject.into(),
                    body,
                })
            }
        }
    }
}
