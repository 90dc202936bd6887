//! `sparkwing-outbox` owns the durable replay queue in
//! `SPARKWING_HOME/outbox.db`: enqueue, claim with a lease, ack, the retry
//! schedule (decorrelated jitter, see [`backoff`]), quarantine, connectivity
//! records and the statistics that `sparkwing sync status` prints; and
//! [`host`], the one copy of the clock, host name and process-liveness
//! check that leases (and the main crate) use; [`clock`], the [`Clock`]
//! the schedule and leases are read from (the wall clock, or a test's).
//!
//! It knows nothing about remotes, HTTP or pipelines: an entry is an opaque
//! `op` on a `subject` with a payload, addressed to a `target` string.
//!
//! # Model
//! - An entry belongs to one **target** (`kind:fingerprint`, never a secret)
//!   and one **stream**; `seq` orders it inside `(target, stream)`, and the
//!   pair is unique, so enqueueing the same entry twice is a no-op.
//! - Payloads up to [`INLINE_LIMIT`] are stored inline; larger ones are a
//!   reference to a byte range of an immutable local file (a CAS blob, a
//!   finished part of an append-only log), so `outbox.db` never holds big blobs.
//! - **Marks** are watermarks of how far a local source (a run's events, a
//!   job's log file) has been enqueued. They move in the same transaction as
//!   the entries they cover.
//! - A worker **claims** streams: the lease makes it the only one replaying
//!   them, and it gets a run of consecutive ready entries from each stream's
//!   head, so a stream is never replayed out of order. A lease whose owner
//!   process is gone (same host, dead pid) or has expired is free again.
//! - **Ack** deletes delivered entries (acked entries do not pile up);
//!   **fail** reschedules (transient, auth) or quarantines (permanent) the
//!   first undelivered entry. A quarantined head blocks its own stream only.
//!
//! # Crash between a local write and its enqueue
//! `state.db` and `outbox.db` are separate files, and SQLite in WAL mode does
//! not commit across files atomically. The local write always commits first.
//! The enqueue that mirrors it is derived from the local store and the marks
//! (events after the mark, log bytes after the mark), so whoever opens the
//! outbox next — the run itself, `sparkwing sync daemon` or `flush` — re-derives
//! whatever a crash left out, and the unique `(target, stream, seq)` makes a
//! repeated enqueue harmless.
//!
//! # A damaged outbox.db
//! For the same reason a damaged `outbox.db` is never fatal: [`Outbox::open`]
//! moves it aside and starts a new one ([`Outbox::set_aside`] says so), and
//! the caller's re-derivation fills it again. Storage failures (a full disk,
//! no permission) are [`StorageFault`]s naming the file and the fix.

pub mod backoff;
pub mod clock;
pub mod host;
pub mod wake;

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::backoff::{DecorrelatedJitter, DecorrelatedJitterBuilder};
use crate::clock::{Clock, SystemClock};
use crate::host::{hostname, now_ms, pid_alive};
use sparkwing_schema::{Problem, StorageFault};

/// The file name of the outbox database inside `SPARKWING_HOME`.
pub const OUTBOX_FILE: &str = "outbox.db";

/// Payloads larger than this are stored by reference, never inline.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// When the earliest stream head of a target is due: only a stream's head
/// can be attempted, so entries queued behind it do not count.
const HEADS_DUE: &str = "SELECT MIN(e.next_attempt_at) FROM streams s
     JOIN entries e ON e.id = (SELECT id FROM entries h WHERE h.target = s.target AND h.stream = s.stream
                               ORDER BY h.seq LIMIT 1)
     WHERE s.target = ?1 AND e.quarantined = 0 AND NOT EXISTS (SELECT 1 FROM streams c
       WHERE c.target = s.target AND c.stream > s.stream || '/' AND c.stream < s.stream || '0')";

/// Claims made by this process, for unique lease tokens.
static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a claim holds its streams unless renewed.
pub const LEASE: Duration = Duration::from_secs(120);

/// An outbox failure by meaning, each with what was being done.
#[derive(Debug)]
#[non_exhaustive]
pub enum OutboxError {
    /// One of the outbox's own files failed in a way its owner can act on:
    /// a full disk, a damaged database, a missing permission, a lock held
    /// too long. The fault names the file and the fix.
    Storage { what: String, fault: StorageFault },
    /// SQLite refused for another reason (a constraint, a bug).
    Sqlite {
        what: String,
        source: rusqlite::Error,
    },
    /// A migration of `outbox.db` failed.
    Migration {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxError::Storage { what, fault } => write!(f, "{what}: {fault}"),
            OutboxError::Sqlite { what, source } => write!(f, "{what}: {source}"),
            OutboxError::Migration { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for OutboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OutboxError::Storage { fault, .. } => Some(fault),
            OutboxError::Sqlite { source, .. } => Some(source),
            OutboxError::Migration { source, .. } => Some(source.as_ref()),
        }
    }
}

pub type Result<T> = std::result::Result<T, OutboxError>;

/// A failed SQLite call on the outbox at `path`: a storage problem (full
/// disk, damage, permissions) becomes a [`StorageFault`] naming the file and
/// the fix; anything else is kept as it is.
fn sql_ctx<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(rusqlite::Error) -> OutboxError + 'a {
    move |e| match StorageFault::from_sqlite(path, &e) {
        Some(fault) => OutboxError::Storage {
            what: what.to_string(),
            fault,
        },
        None => OutboxError::Sqlite {
            what: what.to_string(),
            source: e,
        },
    }
}

/// A failed file operation on the outbox's own files.
fn io_ctx<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(std::io::Error) -> OutboxError + 'a {
    move |e| OutboxError::Storage {
        what: what.to_string(),
        fault: StorageFault::from_io(path, &e),
    }
}

impl OutboxError {
    /// The storage fault behind it, if it is one.
    pub fn fault(&self) -> Option<&StorageFault> {
        match self {
            OutboxError::Storage { fault, .. } => Some(fault),
            _ => None,
        }
    }

    /// Whether the database file is damaged (not a busy or full one).
    pub fn is_damaged(&self) -> bool {
        self.fault().is_some_and(|f| f.problem == Problem::Damaged)
    }
}

/// A damaged `outbox.db` that [`Outbox::open`] moved aside (with its -wal
/// and -shm) before making a new one.
#[derive(Debug, Clone)]
pub struct SetAside {
    /// Where the damaged file is now.
    pub path: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

/// The bytes an entry delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Inline(Vec<u8>),
    /// `len` bytes at `offset` of an immutable local file.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::Inline(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the payload's bytes (blocking).
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Payload::Inline(b) => Ok(b.clone()),
            Payload::File { path, offset, len } => {
                let mut f = std::fs::File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                let mut buf = vec![0u8; *len as usize];
                f.read_exact(&mut buf)?;
                Ok(buf)
            }
        }
    }
}

/// An entry to enqueue.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub stream: String,
    pub seq: i64,
    pub op: String,
    pub subject: String,
    pub payload: Payload,
}

/// A watermark to move together with an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    pub seq: i64,
    pub offset: i64,
}

/// A queued entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub target: String,
    pub stream: String,
    pub seq: i64,
    pub op: String,
    pub subject: String,
    pub payload: Payload,
    pub attempts: i64,
}

/// Streams a worker holds, with the entries it may deliver in order.
#[derive(Debug, Clone)]
pub struct Claim {
    pub target: String,
    pub stream: String,
    pub entries: Vec<Entry>,
    /// When the lease on the stream runs out (Unix ms, wall clock, as every
    /// process judges it). A worker must not start delivering after that:
    /// another worker may have taken the stream and written newer data.
    pub lease_until: i64,
    /// This claim's lease token: renewing and releasing match it, so a
    /// stale claim of a stream can never release or extend a newer claim
    /// of the same stream, even one taken by the same worker.
    pub lease: String,
}

/// How a delivery failed (DESIGN invariant 6). Other crates match it with
/// a fallback arm: a new class (say, "throttled") may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Connect errors, timeouts, 5xx, 429: back off and retry.
    Transient,
    /// Credentials refused: stop the target, keep its entries.
    Auth,
    /// The target is set up wrong (no such bucket, a request the server
    /// cannot parse or does not implement): stop the target like `Auth`,
    /// keep its entries, probe it again now and then.
    Config,
    /// The remote rejects this entry for good: quarantine it.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Auth => "auth",
            ErrorClass::Config => "config",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// What the actors last learned about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    Online,
    Offline,
    AuthFailed,
    Misconfigured,
}

impl Connectivity {
    pub fn as_str(self) -> &'static str {
        match self {
            Connectivity::Online => "online",
            Connectivity::Offline => "offline",
            Connectivity::AuthFailed => "auth_failed",
            Connectivity::Misconfigured => "misconfigured",
        }
    }
    fn parse(s: &str) -> Connectivity {
        match s {
            "offline" => Connectivity::Offline,
            "auth_failed" => Connectivity::AuthFailed,
            "misconfigured" => Connectivity::Misconfigured,
            _ => Connectivity::Online,
        }
    }
}

/// Per-target numbers for `sparkwing sync status`.
#[derive(Debug, Clone, Default)]
pub struct TargetStats {
    pub target: String,
    pub connectivity: Option<Connectivity>,
    pub since: Option<i64>,
    /// (op, entries, bytes), pending and not quarantined.
    pub pending_by_op: Vec<(String, u64, u64)>,
    pub pending_entries: u64,
    pub pending_bytes: u64,
    pub oldest_pending_at: Option<i64>,
    /// When the next delivery attempt is due (Unix ms).
    pub next_attempt_at: Option<i64>,
    pub quarantined: u64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_class: Option<String>,
    pub delivered_entries: u64,
    pub delivered_bytes: u64,
    pub rate_bytes_per_s: Option<f64>,
    pub rate_entries_per_s: Option<f64>,
}

impl TargetStats {
    /// Seconds to drain the backlog at the observed delivery rate.
    pub fn drain_estimate_secs(&self) -> Option<f64> {
        if self.pending_entries == 0 {
            return Some(0.0);
        }
        let by_entries = self
            .rate_entries_per_s
            .filter(|r| *r > 0.0)
            .map(|r| self.pending_entries as f64 / r);
        let by_bytes = self
            .rate_bytes_per_s
            .filter(|r| *r > 0.0)
            .map(|r| self.pending_bytes as f64 / r);
        match (by_entries, by_bytes) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Who holds leases: this process.
#[derive(Debug, Clone)]
struct Owner {
    id: String,
    host: String,
    pid: i64,
}

/// The queue. One per process is enough; it is `Sync` and its calls are
/// short and blocking (callers in async code use `spawn_blocking`).
pub struct Outbox {
    conn: Mutex<Connection>,
    path: PathBuf,
    owner: Owner,
    policy: DecorrelatedJitterBuilder,
    clock: Arc<dyn Clock>,
    set_aside: Option<SetAside>,
}

/// Removes the -wal and -shm of `path` (a deleted outbox.db's orphans).
fn remove_companions(path: &Path) -> Result<()> {
    for suffix in ["-wal", "-shm"] {
        let mut orphan = path.as_os_str().to_owned();
        orphan.push(suffix);
        match std::fs::remove_file(&orphan) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_ctx(
                    Path::new(&orphan),
                    "removing the orphaned files of a deleted outbox.db",
                )(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates (private to the user: its -wal and -shm take its mode) and
/// opens the outbox at `path`, under `outbox.lock`.
fn connect(path: &Path) -> Result<Connection> {
    std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false),
        0o600,
    )
    .open(path)
    .map_err(io_ctx(path, "creating outbox.db"))?;
    Connection::open(path).map_err(sql_ctx(path, "opening outbox.db"))
}

/// Configures, migrates and checks a connection to the outbox at `path`,
/// under `outbox.lock`. A damaged file fails with
/// [`OutboxError::is_damaged`].
fn prepare(conn: &mut Connection, path: &Path) -> Result<()> {
    let sql = |what| sql_ctx(path, what);
    conn.busy_timeout(Duration::from_secs(120))
        .map_err(sql("configuring outbox.db"))?;
    // Only effective on a new file: lets a drained outbox give pages back.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .map_err(sql("configuring outbox.db"))?;
    sparkwing_schema::enable_wal(conn).map_err(sql("setting WAL mode on outbox.db"))?;
    // Checkpoints fsync the database; on ext4 (data=ordered) an fsync
    // also flushes every dirty page of other files, such as a remote
    // being written. Let the WAL grow during a drain (32 MiB) and
    // checkpoint when the queue is empty (`compact_if_empty`).
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 8192;")
        .map_err(sql("configuring outbox.db"))?;
    match sparkwing_schema::migrate_outbox(conn) {
        Ok(_) => {}
        Err(sparkwing_schema::SchemaError::Sql { source, .. }) => {
            return Err(sql("migrating outbox.db")(source))
        }
        Err(e) => {
            return Err(OutboxError::Migration {
                what: "migrating outbox.db".into(),
                source: Box::new(e),
            })
        }
    }
    // Damage past the header shows only when its pages are read: check
    // them now (the outbox is small: payloads above INLINE_LIMIT are
    // references, and delivered entries are deleted).
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(sql("checking outbox.db"))?;
    if check != "ok" {
        return Err(OutboxError::Storage {
            what: "checking outbox.db".into(),
            fault: StorageFault::new(Problem::Damaged, path, check),
        });
    }
    Ok(())
}

impl Outbox {
    /// Opens (creating when missing) `home/outbox.db` and migrates it.
    pub fn open(home: &Path) -> Result<Outbox> {
        Self::open_with(home, DecorrelatedJitterBuilder::default())
    }

    /// [`Outbox::open`] with an explicit retry policy (tests use short ones).
    ///
    /// A damaged `outbox.db` (not a database, or failing SQLite's
    /// `quick_check`) never blocks its users: it is derived, so it is moved
    /// aside to `outbox.db.damaged-<ms>` (with its -wal and -shm) and a new
    /// one is made, under `outbox.lock`; [`Outbox::set_aside`] says so, and
    /// the caller's reconcile queues again whatever was unfinished. A busy
    /// or full outbox is never taken for a damaged one.
    pub fn open_with(home: &Path, policy: DecorrelatedJitterBuilder) -> Result<Outbox> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(home)
            .map_err(io_ctx(home, "creating SPARKWING_HOME"))?;
        let path = home.join(OUTBOX_FILE);
        // outbox.db is derived and may be deleted by hand. Its -wal and -shm
        // files belong to the file they were made for: with outbox.db gone
        // they are orphans (another process may still hold the deleted file
        // open), and a new outbox.db opened over them would read another
        // database's pages. So a missing outbox.db takes them with it, under
        // an exclusive lock that every opener takes (a kernel lock: a crash
        // releases it).
        let lock_path = home.join("outbox.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_ctx(&lock_path, "opening outbox.lock"))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(io_ctx(&lock_path, "locking outbox.lock")(
                std::io::Error::last_os_error(),
            ));
        }
        if !path.exists() {
            remove_companions(&path)?;
        }
        let mut conn = connect(&path)?;
        let set_aside = match prepare(&mut conn, &path) {
            Ok(()) => None,
            Err(e) if e.is_damaged() => {
                // Moved while the damaged connection is still open: closing
                // it, SQLite then sees the file as moved and leaves its -wal
                // and -shm alone (it removes them by name otherwise, which
                // after the rename would be the new file's). A process
                // still holding the old file is protected the same way.
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".damaged-{}", now_ms()));
                let aside = PathBuf::from(aside);
                for suffix in ["", "-wal", "-shm"] {
                    let (mut from, mut to) =
                        (path.as_os_str().to_owned(), aside.as_os_str().to_owned());
                    from.push(suffix);
                    to.push(suffix);
                    match std::fs::rename(&from, &to) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io_ctx(
                                Path::new(&from),
                                "moving a damaged outbox.db aside",
                            )(e))
                        }
                        _ => {}
                    }
                }
                drop(conn);
                conn = connect(&path)?;
                prepare(&mut conn, &path)?;
                let reason = match e.fault() {
                    Some(f) => f.detail.clone(),
                    None => std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string()),
                };
                Some(SetAside {
                    path: aside,
                    reason,
                })
            }
            Err(e) => return Err(e),
        };
        drop(lock);
        let host = hostname();
        let pid = std::process::id() as i64;
        // Unique per Outbox value, even for several in one process.
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nonce = format!(
            "{}.{}",
            now_ms(),
            OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Ok(Outbox {
            conn: Mutex::new(conn),
            path,
            owner: Owner {
                id: format!("{host}:{pid}:{nonce}"),
                host,
                pid,
            },
            policy,
            clock: Arc::new(SystemClock),
            set_aside,
        })
    }

    /// This outbox scheduling by `clock` instead of the wall clock: retry
    /// times, leases and connectivity records are read from it. For tests
    /// (the default, [`SystemClock`], is the only sound choice when other
    /// processes share `outbox.db`: they judge leases by the wall clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock this outbox schedules by (the actor reads the same one).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The damaged outbox this open moved aside, if it did.
    pub fn set_aside(&self) -> Option<&SetAside> {
        self.set_aside.as_ref()
    }

    fn ctx<'a>(&'a self, what: &'a str) -> impl FnOnce(rusqlite::Error) -> OutboxError + 'a {
        sql_ctx(&self.path, what)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (the transaction rolls back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One write transaction. `durable` commits with `synchronous = FULL`
    /// (fsync before returning); otherwise `NORMAL`, which survives a crash
    /// of the process but may lose the last commits on power loss.
    ///
    /// Only enqueues must be durable: entries and marks are what recovery
    /// relies on (a mark that went back in time could re-chunk a log
    /// differently from what was already delivered). Claims, settles and
    /// connectivity records may be lost: a lost lease is claimed again and a
    /// lost ack means an idempotent redelivery. A later durable commit
    /// fsyncs the WAL, and with it every earlier commit.
    fn tx_with<T>(
        &self,
        what: &str,
        durable: bool,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        // The pragma is per connection: set it only when it changes.
        let want = if durable { 2 } else { 1 };
        let now: i64 = conn
            .prepare_cached("PRAGMA synchronous")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(self.ctx(what))?;
        if now != want {
            conn.execute_batch(if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            })
            .map_err(self.ctx(what))?;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.ctx(what))?;
        let out = f(&tx).map_err(self.ctx(what))?;
        tx.commit().map_err(self.ctx(what))?;
        Ok(out)
    }

    fn tx<T>(
        &self,
        what: &str,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.tx_with(what, false, f)
    }

    /// Enqueues `entries` for `target` and moves `marks`, in one transaction.
    ///
    /// Streams only move forward: an entry whose seq is at or below the
    /// highest seq ever enqueued on its stream (its **high-water mark**,
    /// kept after the entry is delivered and deleted) is dropped, and the
    /// mark moves to the highest seq enqueued, inside this transaction. So
    /// a caller that read the local store before another process enqueued
    /// (and the actor delivered) the same entries cannot queue them again,
    /// and an older run summary can never be queued after a newer one.
    /// Returns how many entries were new.
    pub fn enqueue(&self, target: &str, entries: &[NewEntry], marks: &[Mark]) -> Result<usize> {
        let now = self.clock.now_ms();
        self.tx_with("enqueueing into outbox.db", true, |tx| {
            let mut n = 0;
            let mut streams = tx.prepare_cached(
                "INSERT OR IGNORE INTO streams (target, stream) VALUES (?1, ?2)",
            )?;
            let mut high_of = tx.prepare_cached(
                "SELECT high FROM stream_high WHERE target = ?1 AND stream = ?2",
            )?;
            let mut set_high = tx.prepare_cached(
                "INSERT INTO stream_high (target, stream, high) VALUES (?1, ?2, ?3)
                 ON CONFLICT (target, stream) DO UPDATE SET high = MAX(high, excluded.high)",
            )?;
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO entries
                   (target, stream, seq, op, subject, payload, payload_path, payload_offset, size, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            )?;
            // The stream of the current run of entries, its high-water mark
            // and whether any entry of the run was accepted. A run's mark
            // (and its `streams` row) is written once, when the run ends.
            let mut current: Option<(&str, Option<i64>, bool)> = None;
            let mut finish = |cur: Option<(&str, Option<i64>, bool)>| -> rusqlite::Result<()> {
                if let Some((stream, Some(high), true)) = cur {
                    streams.execute(params![target, stream])?;
                    set_high.execute(params![target, stream, high])?;
                }
                Ok(())
            };
            // By stream, then seq: within one call, order does not matter.
            let mut order: Vec<&NewEntry> = entries.iter().collect();
            order.sort_by(|a, b| (a.stream.as_str(), a.seq).cmp(&(b.stream.as_str(), b.seq)));
            for e in order {
                if current.is_none_or(|(s, _, _)| s != e.stream.as_str()) {
                    finish(current.take())?;
                    let high: Option<i64> = high_of
                        .query_row(params![target, e.stream], |r| r.get(0))
                        .optional()?;
                    current = Some((e.stream.as_str(), high, false));
                }
                let Some((_, high, accepted)) = current.as_mut() else {
                    continue;
                };
                if high.is_some_and(|h| e.seq <= h) {
                    continue;
                }
                *high = Some(e.seq);
                *accepted = true;
                let (inline, path, offset) = match &e.payload {
                    Payload::Inline(b) => (Some(b.as_slice()), None, 0i64),
                    Payload::File { path, offset, .. } => {
                        (None, Some(path.to_string_lossy().into_owned()), *offset as i64)
                    }
                };
                n += st.execute(params![
                    target,
                    e.stream,
                    e.seq,
                    e.op,
                    e.subject,
                    inline,
                    path,
                    offset,
                    e.payload.len() as i64,
                    now
                ])?;
            }
            finish(current.take())?;
            let mut mk = tx.prepare_cached(
                "INSERT INTO marks (target, name, seq, offset) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (target, name) DO UPDATE SET
                   seq = MAX(seq, excluded.seq), offset = MAX(offset, excluded.offset)",
            )?;
            for m in marks {
                mk.execute(params![target, m.name, m.seq, m.offset])?;
            }
            Ok(n)
        })
        .inspect(|&n| {
            // Committed: daemons of this home may start on it at once.
            if n > 0 {
                self.wake_listeners();
            }
        })
    }

    /// `SPARKWING_HOME`: the directory of `outbox.db`.
    fn home(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Wakes every sync daemon listening on this home ([`wake`]).
    pub fn wake_listeners(&self) {
        wake::notify(self.home());
    }

    /// A push wake-up listener on this home, for a long-running actor.
    pub fn wake_listener(&self) -> std::io::Result<wake::WakeListener> {
        wake::WakeListener::bind(self.home())
    }

    /// The highest seq ever enqueued on a stream, or `None` when none was.
    pub fn stream_high(&self, target: &str, stream: &str) -> Result<Option<i64>> {
        self.lock()
            .query_row(
                "SELECT high FROM stream_high WHERE target = ?1 AND stream = ?2",
                params![target, stream],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.ctx("reading a stream's high-water mark"))
    }

    /// A watermark: `(seq, offset)`, or `None` when never set.
    pub fn mark(&self, target: &str, name: &str) -> Result<Option<(i64, i64)>> {
        self.lock()
            .query_row(
                "SELECT seq, offset FROM marks WHERE target = ?1 AND name = ?2",
                params![target, name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.ctx("reading a mark"))
    }

    /// The names of a target's marks that start with `prefix`, in one query.
    pub fn mark_names(
        &self,
        target: &str,
        prefix: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT name FROM marks WHERE target = ?1 AND substr(name, 1, length(?2)) = ?2",
            )
            .map_err(self.ctx("reading marks"))?;
        let rows = st
            .query_map(params![target, prefix], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.ctx("reading marks"))?;
        Ok(rows)
    }

    /// Claims up to `max_streams` ready streams of `targets`, each with up to
    /// `max_entries` consecutive ready entries from its head (stopping early
    /// once `max_bytes` of payload is reached). Streams whose head is
    /// quarantined or not yet due are skipped, as are targets whose
    /// credentials failed less than `auth_probe` ago.
    ///
    /// **A stream waits for the streams below it:** while any stream named
    /// `<stream>/…` has entries (quarantined ones too), `<stream>` is not
    /// claimed. Sub-streams go in parallel with each other; their parent
    /// goes after all of them (a cache entry's packs, then its manifest).
    pub fn claim(
        &self,
        targets: &[String],
        max_streams: usize,
        max_entries: usize,
        max_bytes: u64,
        auth_probe: Duration,
    ) -> Result<Vec<Claim>> {
        let now = self.clock.now_ms();
        let owner = self.owner.clone();
        self.tx("claiming outbox entries", |tx| {
            let mut claims = Vec::new();
            for target in targets {
                if claims.len() >= max_streams {
                    break;
                }
                let auth_blocked: bool = tx
                    .prepare_cached(
                        "SELECT state IN ('auth_failed', 'misconfigured') AND since > ?2 FROM targets WHERE target = ?1",
                    )?
                    .query_row(
                        params![target, now - auth_probe.as_millis() as i64],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(false);
                if auth_blocked {
                    continue;
                }
                // While credentials are being probed, one stream at a time.
                let auth_probing: bool = tx
                    .prepare_cached(
                        "SELECT state IN ('auth_failed', 'misconfigured') FROM targets WHERE target = ?1",
                    )?
                    .query_row([target], |r| r.get(0))
                    .optional()?
                    .unwrap_or(false);
                let room = if auth_probing { 1 } else { max_streams - claims.len() };
                // Heads of streams: the lowest seq of each stream.
                // One head lookup per stream (oldest stream first).
                let mut heads = tx.prepare_cached(
                    "SELECT s.stream, l.owner, l.owner_host, l.owner_pid, l.until
                     FROM streams s
                     JOIN entries e ON e.id = (SELECT id FROM entries h
                                               WHERE h.target = s.target AND h.stream = s.stream
                                               ORDER BY h.seq LIMIT 1)
                     LEFT JOIN leases l ON l.target = s.target AND l.stream = s.stream
                     WHERE s.target = ?1 AND e.quarantined = 0 AND e.next_attempt_at <= ?2
                       AND NOT EXISTS (SELECT 1 FROM streams c WHERE c.target = s.target
                                       AND c.stream > s.stream || '/' AND c.stream < s.stream || '0')
                     ORDER BY s.rowid",
                )?;
                let rows = heads.query_map(params![target, now], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                })?;
                let mut free = Vec::new();
                for row in rows {
                    let (stream, l_owner, l_host, l_pid, l_until) = row?;
                    // A live lease is respected even when it is ours: this
                    // worker may still be delivering that stream.
                    let taken = match (l_owner, l_host, l_pid, l_until) {
                        (Some(_), Some(h), Some(p), Some(u)) => {
                            u > now && (h != owner.host || pid_alive(p))
                        }
                        _ => false,
                    };
                    if !taken {
                        free.push(stream);
                    }
                    if free.len() >= room {
                        break;
                    }
                }
                for stream in free {
                    // A token per claim (see `Claim::lease`).
                    let token = format!(
                        "{}#{}",
                        owner.id,
                        CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    );
                    tx.prepare_cached(
                        "INSERT INTO leases (target, stream, owner, owner_host, owner_pid, until)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (target, stream) DO UPDATE SET owner = excluded.owner,
                           owner_host = excluded.owner_host, owner_pid = excluded.owner_pid, until = excluded.until",
                    )?
                    .execute(params![target, stream, token, owner.host, owner.pid, now + LEASE.as_millis() as i64])?;
                    let mut st = tx.prepare_cached(
                        "SELECT id, seq, op, subject, payload, payload_path, payload_offset, size, attempts,
                                quarantined, next_attempt_at
                         FROM entries WHERE target = ?1 AND stream = ?2 ORDER BY seq LIMIT ?3",
                    )?;
                    let rows = st.query_map(params![target, stream, max_entries as i64], |r| {
                        let inline: Option<Vec<u8>> = r.get(4)?;
                        let path: Option<String> = r.get(5)?;
                        let offset: i64 = r.get(6)?;
                        let size: i64 = r.get(7)?;
                        let payload = match (inline, path) {
                            (_, Some(p)) => Payload::File {
                                path: PathBuf::from(p),
                                offset: offset as u64,
                                len: size as u64,
                            },
                            (Some(b), None) => Payload::Inline(b),
                            (None, None) => Payload::Inline(Vec::new()),
                        };
                        Ok((
                            Entry {
                                id: r.get(0)?,
                                target: target.clone(),
                                stream: stream.clone(),
                                seq: r.get(1)?,
                                op: r.get(2)?,
                                subject: r.get(3)?,
                                payload,
                                attempts: r.get(8)?,
                            },
                            r.get::<_, bool>(9)?,
                            r.get::<_, i64>(10)?,
                        ))
                    })?;
                    let mut entries = Vec::new();
                    let mut bytes = 0u64;
                    for row in rows {
                        let (e, quarantined, due) = row?;
                        if quarantined || due > now {
                            break;
                        }
                        if !entries.is_empty() && bytes + e.payload.len() > max_bytes {
                            break;
                        }
                        bytes += e.payload.len();
                        entries.push(e);
                    }
                    if !entries.is_empty() {
                        claims.push(Claim {
                            target: target.clone(),
                            stream,
                            entries,
                            lease_until: now + LEASE.as_millis() as i64,
                            lease: token,
                        });
                    }
                }
            }
            Ok(claims)
        })
    }

    /// Extends the leases of streams still being delivered.
    pub fn renew(&self, claims: &[&Claim]) -> Result<()> {
        let until = self.clock.now_ms() + LEASE.as_millis() as i64;
        self.tx("renewing leases", |tx| {
            for c in claims {
                tx.prepare_cached(
                    "UPDATE leases SET until = ?4 WHERE target = ?1 AND stream = ?2 AND owner = ?3",
                )?
                .execute(params![c.target, c.stream, c.lease, until])?;
            }
            Ok(())
        })
    }

    /// Records that the first `delivered` entries of `claim` reached the
    /// target (deleting them) and, when `failure` is given, that the next one
    /// failed. Releases the claim's lease either way. `took` is the time the
    /// deliveries took, for the drain-time estimate.
    pub fn settle(
        &self,
        claim: &Claim,
        delivered: usize,
        took: Duration,
        failure: Option<(ErrorClass, &str, Option<Duration>)>,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let done = &claim.entries[..delivered.min(claim.entries.len())];
        let bytes: u64 = done.iter().map(|e| e.payload.len()).sum();
        self.tx("settling a delivery", |tx| {
            // A claim's entries are consecutive from the stream's head, so
            // the delivered ones are one range of the stream.
            if let Some(last) = done.last() {
                tx.prepare_cached(
                    "DELETE FROM entries WHERE target = ?1 AND stream = ?2 AND seq <= ?3",
                )?
                .execute(params![claim.target, claim.stream, last.seq])?;
            }
            if !done.is_empty() {
                let secs = took.as_secs_f64().max(0.001);
                let (b_rate, e_rate) = (bytes as f64 / secs, done.len() as f64 / secs);
                tx.prepare_cached(
                    "INSERT INTO targets (target, state, since, last_success_at, delivered_entries, delivered_bytes,
                                          rate_bytes_per_s, rate_entries_per_s)
                     VALUES (?1, 'online', ?2, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (target) DO UPDATE SET
                       since = CASE WHEN state = 'online' THEN since ELSE ?2 END,
                       state = 'online', last_success_at = ?2,
                       delivered_entries = delivered_entries + ?3, delivered_bytes = delivered_bytes + ?4,
                       rate_bytes_per_s = COALESCE(0.7 * rate_bytes_per_s + 0.3 * ?5, ?5),
                       rate_entries_per_s = COALESCE(0.7 * rate_entries_per_s + 0.3 * ?6, ?6)",
                )?
                .execute(params![claim.target, now, done.len() as i64, bytes as i64, b_rate, e_rate])?;
            }
            if let (Some((class, error, retry_after)), Some(failed)) =
                (failure, claim.entries.get(delivered))
            {
                let prev_ms: i64 = tx.query_row(
                    "SELECT backoff_ms FROM entries WHERE id = ?1",
                    [failed.id],
                    |r| r.get(0),
                ).optional()?.unwrap_or(0);
                let mut jitter = DecorrelatedJitter::resume(self.policy, Duration::from_millis(prev_ms as u64));
                let delay = jitter.next().unwrap_or(self.policy.cap);
                let wait = retry_after.map_or(delay, |r| r.max(delay));
                tx.prepare_cached(
                    "UPDATE entries SET attempts = attempts + 1, backoff_ms = ?2, next_attempt_at = ?3,
                       last_error = ?4, error_class = ?5, quarantined = ?6
                     WHERE id = ?1",
                )?
                .execute(params![
                        failed.id,
                        delay.as_millis() as i64,
                        now + wait.as_millis() as i64,
                        error,
                        class.as_str(),
                        class == ErrorClass::Permanent
                    ])?;
                let state = match class {
                    ErrorClass::Transient => "offline",
                    ErrorClass::Auth => "auth_failed",
                    ErrorClass::Config => "misconfigured",
                    // The target answered; it is reachable.
                    ErrorClass::Permanent => "online",
                };
                tx.prepare_cached(
                    "INSERT INTO targets (target, state, since, last_error, last_error_class)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (target) DO UPDATE SET
                       since = CASE WHEN state = ?2 AND ?2 NOT IN ('auth_failed', 'misconfigured') THEN since ELSE ?3 END,
                       state = ?2, last_error = ?4, last_error_class = ?5",
                )?
                .execute(params![claim.target, state, now, error, class.as_str()])?;
            }
            tx.prepare_cached(
                "DELETE FROM leases WHERE target = ?1 AND stream = ?2 AND owner = ?3",
            )?
            .execute(params![claim.target, claim.stream, claim.lease])?;
            tx.prepare_cached(
                "DELETE FROM streams WHERE target = ?1 AND stream = ?2
                   AND NOT EXISTS (SELECT 1 FROM entries WHERE target = ?1 AND stream = ?2)",
            )?
            .execute(params![claim.target, claim.stream])?;
            Ok(())
        })
    }

    /// This outbox's identity: random, made with the file (a deleted or
    /// set-aside outbox's successor has another).
    pub fn identity(&self) -> Result<String> {
        let conn = self.lock();
        conn.query_row("SELECT id FROM identity", [], |r| r.get(0))
            .map_err(self.ctx("reading the outbox's identity"))
    }

    /// Whether any entry (pending or quarantined) has this subject: of
    /// `target`, or of any target with `None`. A pack still on its way, or
    /// kept for `sync retry`.
    pub fn has_subject(&self, target: Option<&str>, subject: &str) -> Result<bool> {
        let conn = self.lock();
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM entries WHERE (?1 IS NULL OR target = ?1) AND subject = ?2)",
            params![target, subject],
            |r| r.get(0),
        )
        .map_err(self.ctx("looking up an outbox entry"))
    }

    /// Entries (pending or quarantined), of any target, on the streams
    /// whose name starts with `prefix`.
    pub fn queued_on_streams(&self, prefix: &str) -> Result<u64> {
        self.count_on_streams(prefix, true)
    }

    /// Pending (not quarantined) entries, of any target, on the streams
    /// whose name starts with `prefix` (a cache entry's: `cache/<key>/`).
    pub fn pending_on_streams(&self, prefix: &str) -> Result<u64> {
        self.count_on_streams(prefix, false)
    }

    fn count_on_streams(&self, prefix: &str, quarantined_too: bool) -> Result<u64> {
        let conn = self.lock();
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM entries WHERE substr(stream, 1, ?2) = ?1 AND (?3 OR quarantined = 0)",
                params![prefix, prefix.chars().count() as i64, quarantined_too],
                |r| r.get(0),
            )
            .map_err(self.ctx("counting outbox entries"))?;
        Ok(n as u64)
    }

    /// Pending (not quarantined) entries and bytes of `targets`.
    pub fn pending(&self, targets: &[String]) -> Result<(u64, u64)> {
        let conn = self.lock();
        let mut total = (0u64, 0u64);
        for t in targets {
            let (n, b): (i64, i64) = conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries WHERE target = ?1",
                    [t],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(self.ctx("counting outbox entries"))?;
            total.0 += n as u64;
            total.1 += b as u64;
        }
        Ok(total)
    }

    /// The earliest time any entry of `targets` becomes due (Unix ms).
    pub fn next_due(&self, targets: &[String]) -> Result<Option<i64>> {
        let conn = self.lock();
        let mut best: Option<i64> = None;
        for t in targets {
            let due: Option<i64> = conn
                .query_row(HEADS_DUE, [t], |r| r.get(0))
                .map_err(self.ctx("reading the retry schedule"))?;
            best = match (best, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(best)
    }

    /// Records what a read of `target` learned: it answered (`online`) or
    /// failed for a network reason (`offline`, with `error`). A target
    /// stopped as `auth_failed` or `misconfigured` keeps that state: only a
    /// delivery (or `sync retry`) clears it.
    pub fn observe_read(&self, target: &str, online: bool, error: Option<&str>) -> Result<()> {
        let now = self.clock.now_ms();
        let state = if online {
            Connectivity::Online
        } else {
            Connectivity::Offline
        };
        let class = error.map(|_| ErrorClass::Transient.as_str());
        self.tx("recording connectivity", |tx| {
            tx.execute(
                "INSERT INTO targets (target, state, since, last_error, last_error_class) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (target) DO UPDATE SET
                   since = CASE WHEN state = ?2 THEN since ELSE ?3 END, state = ?2,
                   last_error = COALESCE(?4, last_error), last_error_class = COALESCE(?5, last_error_class)
                 WHERE state NOT IN ('auth_failed', 'misconfigured')",
                params![target, state.as_str(), now, error, class],
            )?;
            Ok(())
        })
    }

    /// Statistics for every target that has entries or a record, or only `only`.
    pub fn stats(&self, only: Option<&[String]>) -> Result<Vec<TargetStats>> {
        let conn = self.lock();
        let q = |e| self.ctx("reading outbox statistics")(e);
        let mut names: Vec<String> = conn
            .prepare("SELECT target FROM entries UNION SELECT target FROM targets ORDER BY 1")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(q)?;
        if let Some(only) = only {
            for t in only {
                if !names.contains(t) {
                    names.push(t.clone());
                }
            }
            names.retain(|n| only.contains(n));
        }
        let mut out = Vec::new();
        for t in names {
            let mut s = TargetStats {
                target: t.clone(),
                ..Default::default()
            };
            let mut st = conn
                .prepare_cached(
                    "SELECT op, COUNT(*), SUM(size) FROM entries WHERE target = ?1 AND quarantined = 0 GROUP BY op ORDER BY op",
                )
                .map_err(q)?;
            s.pending_by_op = st
                .query_map([&t], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })
                .and_then(|rows| rows.collect())
                .map_err(q)?;
            s.pending_entries = s.pending_by_op.iter().map(|x| x.1).sum();
            s.pending_bytes = s.pending_by_op.iter().map(|x| x.2).sum();
            let (oldest, quarantined): (Option<i64>, i64) = conn
                .query_row(
                    "SELECT MIN(created_at), COALESCE(SUM(quarantined), 0) FROM entries WHERE target = ?1",
                    [&t],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(q)?;
            s.oldest_pending_at = oldest;
            s.next_attempt_at = conn.query_row(HEADS_DUE, [&t], |r| r.get(0)).map_err(q)?;
            s.quarantined = quarantined as u64;
            let rec = conn
                .query_row(
                    "SELECT state, since, last_success_at, last_error, last_error_class, delivered_entries,
                            delivered_bytes, rate_bytes_per_s, rate_entries_per_s
                     FROM targets WHERE target = ?1",
                    [&t],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, Option<f64>>(7)?,
                            r.get::<_, Option<f64>>(8)?,
                        ))
                    },
                )
                .optional()
                .map_err(q)?;
            if let Some((state, since, ok_at, err, class, de, db, rb, re)) = rec {
                s.connectivity = Some(Connectivity::parse(&state));
                s.since = Some(since);
                s.last_success_at = ok_at;
                s.last_error = err;
                s.last_error_class = class;
                s.delivered_entries = de as u64;
                s.delivered_bytes = db as u64;
                s.rate_bytes_per_s = rb;
                s.rate_entries_per_s = re;
            }
            out.push(s);
        }
        Ok(out)
    }

    /// Quarantined entries of one target (or all), with their errors.
    pub fn quarantined(&self, target: Option<&str>) -> Result<Vec<(Entry, String)>> {
        let conn = self.lock();
        let mut st = conn
            .prepare(
                "SELECT id, target, stream, seq, op, subject, size, attempts, COALESCE(last_error, '')
                 FROM entries WHERE quarantined = 1 AND (?1 IS NULL OR target = ?1) ORDER BY id",
            )
            .map_err(self.ctx("listing quarantined entries"))?;
        let rows = st
            .query_map([target], |r| {
                Ok((
                    Entry {
                        id: r.get(0)?,
                        target: r.get(1)?,
                        stream: r.get(2)?,
                        seq: r.get(3)?,
                        op: r.get(4)?,
                        subject: r.get(5)?,
                        payload: Payload::Inline(Vec::new()),
                        attempts: r.get(7)?,
                    },
                    r.get(8)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(self.ctx("listing quarantined entries"))?;
        Ok(rows)
    }

    /// Re-queues quarantined entries (and lifts an auth stop) for one target
    /// or all. Returns how many entries were re-queued.
    pub fn retry(&self, target: Option<&str>) -> Result<usize> {
        let now = self.clock.now_ms();
        self.tx("re-queueing quarantined entries", |tx| {
            let n = tx.execute(
                "UPDATE entries SET quarantined = 0, next_attempt_at = ?2, backoff_ms = 0
                 WHERE quarantined = 1 AND (?1 IS NULL OR target = ?1)",
                params![target, now],
            )?;
            tx.execute(
                "UPDATE entries SET next_attempt_at = ?2, backoff_ms = 0 WHERE (?1 IS NULL OR target = ?1)",
                params![target, now],
            )?;
            tx.execute(
                "UPDATE targets SET state = 'offline', since = ?2
                 WHERE state IN ('auth_failed', 'misconfigured') AND (?1 IS NULL OR target = ?1)",
                params![target, now],
            )?;
            Ok(n)
        })
        // Every entry is due now: a listening daemon starts on them at once.
        .inspect(|_| self.wake_listeners())
    }

    /// Changes whenever another connection (another process) commits to
    /// outbox.db: a cheap cross-process wake-up for idle actors.
    pub fn data_version(&self) -> Result<i64> {
        self.lock()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(self.ctx("reading outbox.db's data version"))
    }

    /// Gives freed pages back to the file system once the queue is empty.
    pub fn compact_if_empty(&self) -> Result<bool> {
        let conn = self.lock();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .map_err(self.ctx("compacting outbox.db"))?;
        if n > 0 {
            return Ok(false);
        }
        // incremental_vacuum frees one page per step: step it to the end.
        conn.prepare("PRAGMA incremental_vacuum")
            .and_then(|mut st| {
                let mut rows = st.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            })
            .map_err(self.ctx("compacting outbox.db"))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(self.ctx("compacting outbox.db"))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn entry(stream: &str, seq: i64, body: &str) -> NewEntry {
        NewEntry {
            stream: stream.into(),
            seq,
            op: "log.chunk".into(),
            subject: stream.into(),
            payload: Payload::Inline(body.as_bytes().to_vec()),
        }
    }

    fn fast() -> DecorrelatedJitterBuilder {
        DecorrelatedJitterBuilder {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            max_times: None,
            seed: None,
        }
    }

    /// An outbox in a fresh home scheduling by a clock the test moves.
    fn manual(policy: DecorrelatedJitterBuilder) -> (tempfile::TempDir, Outbox, Arc<ManualClock>) {
        let home = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let ob = Outbox::open_with(home.path(), policy)
            .unwrap()
            .with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
        (home, ob, clock)
    }

    fn claim_all(ob: &Outbox) -> Vec<Claim> {
        ob.claim(&all(), 10, 10, u64::MAX, Duration::ZERO).unwrap()
    }

    const T: &str = "filesystem:/remote";

    fn all() -> Vec<String> {
        vec![T.to_string()]
    }

    /// Issue 13: sub-streams are claimed together, their parent only once
    /// none of them has an entry left (a quarantined one keeps it waiting),
    /// and the parent's wait is not "due" (no busy loop).
    #[test]
    fn a_stream_waits_for_every_stream_below_it() {
        let (_home, ob, _clock) = manual(fast());
        ob.enqueue(
            T,
            &[
                entry("cache/k/r/p1", 0, "pack 1"),
                entry("cache/k/r/p2", 0, "pack 2"),
                entry("cache/k/r", 0, "manifest"),
                entry("cache/k/r0", 0, "a sibling, not below"),
            ],
            &[],
        )
        .unwrap();
        let names = |c: &[Claim]| -> Vec<String> {
            let mut v: Vec<String> = c.iter().map(|c| c.stream.clone()).collect();
            v.sort();
            v
        };
        let first = claim_all(&ob);
        assert_eq!(
            names(&first),
            ["cache/k/r/p1", "cache/k/r/p2", "cache/k/r0"],
            "the packs in parallel, not the manifest"
        );
        let by = |name: &str| first.iter().find(|c| c.stream == name).unwrap();
        let ms = Duration::from_millis(1);
        ob.settle(by("cache/k/r0"), 1, ms, None).unwrap();
        ob.settle(by("cache/k/r/p1"), 1, ms, None).unwrap();
        // One pack fails for good: the manifest keeps waiting.
        ob.settle(
            by("cache/k/r/p2"),
            0,
            ms,
            Some((ErrorClass::Permanent, "gone", None)),
        )
        .unwrap();
        assert!(claim_all(&ob).is_empty());
        assert_eq!(ob.next_due(&all()).unwrap(), None, "nothing is due");
        ob.retry(None).unwrap();
        let again = claim_all(&ob);
        assert_eq!(names(&again), ["cache/k/r/p2"]);
        ob.settle(&again[0], 1, ms, None).unwrap();
        let last = claim_all(&ob);
        assert_eq!(names(&last), ["cache/k/r"]);
        assert_eq!(last[0].entries[0].payload.read().unwrap(), b"manifest");
    }

    #[test]
    fn enqueue_is_idempotent_and_moves_marks_forward_only() {
        let home = tempfile::tempdir().unwrap();
        let ob = Outbox::open(home.path()).unwrap();
        let m = |seq| Mark {
            name: "log/r/j".into(),
            seq,
            offset: seq * 10,
        };
        assert_eq!(
            ob.enqueue(T, &[entry("s", 1, "a"), entry("s", 2, "b")], &[m(2)])
                .unwrap(),
            2
        );
        assert_eq!(
            ob.enqueue(T, &[entry("s", 2, "b"), entry("s", 3, "c")], &[m(1)])
                .unwrap(),
            1
        );
        assert_eq!(ob.mark(T, "log/r/j").unwrap(), Some((2, 20)));
        assert_eq!(ob.pending(&all()).unwrap(), (3, 3));
    }

    /// Issue 9: a process that read the local store before another one
    /// enqueued (and the actor delivered and deleted) the same entries must
    /// not queue them again; nor may an older entry follow a newer one.
    #[test]
    fn a_delivered_entry_is_never_queued_again_and_streams_only_move_forward() {
        let home = tempfile::tempdir().unwrap();
        let a = Outbox::open(home.path()).unwrap();
        let b = Outbox::open(home.path()).unwrap();
        assert_eq!(
            a.enqueue(T, &[entry("s", 1, "a"), entry("s", 2, "b")], &[])
                .unwrap(),
            2
        );
        let claims = a.claim(&all(), 8, 100, 1 << 20, Duration::ZERO).unwrap();
        assert_eq!(claims[0].entries.len(), 2);
        a.settle(&claims[0], 2, Duration::from_millis(1), None)
            .unwrap();
        assert_eq!(a.pending(&all()).unwrap(), (0, 0));
        // The slow process enqueues what it read: 1 and 2 are gone for good,
        // only 3 is new.
        assert_eq!(
            b.enqueue(
                T,
                &[entry("s", 1, "a"), entry("s", 2, "b"), entry("s", 3, "c")],
                &[]
            )
            .unwrap(),
            1
        );
        assert_eq!(b.stream_high(T, "s").unwrap(), Some(3));
        // An older version after a newer one is dropped too.
        assert_eq!(b.enqueue(T, &[entry("s", 2, "old")], &[]).unwrap(), 0);
        let claims = b.claim(&all(), 8, 100, 1 << 20, Duration::ZERO).unwrap();
        let seqs: Vec<i64> = claims[0].entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3]);
        // Another stream is independent.
        assert_eq!(b.enqueue(T, &[entry("t", 1, "x")], &[]).unwrap(), 1);
    }

    /// Issue 9: outbox.db is derived, so deleting it (and only it) while
    /// another process holds it open must not break the next opener.
    #[test]
    fn a_deleted_outbox_db_opens_anew_while_another_process_holds_the_old_one() {
        let home = tempfile::tempdir().unwrap();
        let old = Outbox::open(home.path()).unwrap();
        old.enqueue(T, &[entry("s", 1, "a"), entry("s", 2, "b")], &[])
            .unwrap();
        std::fs::remove_file(home.path().join(OUTBOX_FILE)).unwrap();
        assert!(home.path().join("outbox.db-wal").exists());
        let new = Outbox::open(home.path()).unwrap();
        assert_eq!(new.pending(&all()).unwrap(), (0, 0), "a new, empty queue");
        assert_eq!(new.enqueue(T, &[entry("s", 1, "a")], &[]).unwrap(), 1);
        assert_eq!(new.pending(&all()).unwrap(), (1, 1));
        // The holder of the deleted file goes on with its own queue.
        assert_eq!(old.pending(&all()).unwrap(), (2, 2));
        assert_eq!(old.enqueue(T, &[entry("s", 3, "c")], &[]).unwrap(), 1);
        drop(old);
        let again = Outbox::open(home.path()).unwrap();
        assert_eq!(again.pending(&all()).unwrap(), (1, 1));
    }

    /// Issue 10: a damaged outbox.db never blocks its users: it is moved
    /// aside (with its -wal) and a new, empty one is made.
    #[test]
    fn a_damaged_outbox_db_is_moved_aside_and_made_anew() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(OUTBOX_FILE);
        let healthy = Outbox::open(home.path()).unwrap();
        assert!(healthy.set_aside().is_none());
        healthy.enqueue(T, &[entry("s", 1, "a")], &[]).unwrap();
        drop(healthy);
        // Not a database at all.
        let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        std::fs::write(home.path().join("outbox.db-wal"), b"stale wal").unwrap();
        let ob = Outbox::open(home.path()).unwrap();
        let aside = ob.set_aside().expect("set aside").clone();
        assert_eq!(aside.reason, "file is not a database");
        assert!(aside
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("outbox.db.damaged-"));
        assert_eq!(
            std::fs::read(&aside.path).unwrap(),
            garbage,
            "kept as it was"
        );
        let mut wal = aside.path.as_os_str().to_owned();
        wal.push("-wal");
        assert_eq!(
            std::fs::read(&wal).unwrap(),
            b"stale wal",
            "its -wal went with it"
        );
        assert_eq!(ob.pending(&all()).unwrap(), (0, 0), "a new, empty queue");
        assert_eq!(ob.enqueue(T, &[entry("s", 1, "a")], &[]).unwrap(), 1);
        drop(ob);
        assert!(Outbox::open(home.path()).unwrap().set_aside().is_none());
    }

    /// Damage past the header (a valid header, pages overwritten) is found
    /// by the open's quick_check, not by a later call.
    #[test]
    fn an_outbox_db_with_damaged_pages_is_moved_aside() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(OUTBOX_FILE);
        let ob = Outbox::open(home.path()).unwrap();
        let many: Vec<_> = (1..=400).map(|i| entry("s", i, &"x".repeat(500))).collect();
        ob.enqueue(T, &many, &[]).unwrap();
        drop(ob);
        assert!(
            !home.path().join("outbox.db-wal").exists(),
            "checkpointed on close"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 40 * 4096);
        for b in &mut bytes[8 * 4096..20 * 4096] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let ob = Outbox::open(home.path()).unwrap();
        assert!(ob.set_aside().is_some(), "found at open");
        assert_eq!(ob.pending(&all()).unwrap(), (0, 0));
    }

    /// Found by the simulation: a stale claim of a stream, settled after
    /// the same worker claimed the stream again, must not release the new
    /// claim's lease (a third claim would then write over it).
    #[test]
    fn settling_a_stale_claim_leaves_a_newer_claim_of_the_stream_leased() {
        let home = tempfile::tempdir().unwrap();
        let ob = Outbox::open(home.path()).unwrap();
        let other = Outbox::open(home.path()).unwrap();
        ob.enqueue(T, &[entry("s", 1, "a")], &[]).unwrap();
        let stale = ob.claim(&all(), 8, 10, 1 << 20, Duration::ZERO).unwrap();
        // Its lease runs out (a stalled worker); the same worker claims again.
        let db = Connection::open(home.path().join(OUTBOX_FILE)).unwrap();
        db.execute("UPDATE leases SET until = 0", []).unwrap();
        let fresh = ob.claim(&all(), 8, 10, 1 << 20, Duration::ZERO).unwrap();
        assert_eq!(fresh.len(), 1);
        assert_ne!(fresh[0].lease, stale[0].lease);
        // The stale one settles with nothing delivered.
        ob.settle(&stale[0], 0, Duration::from_millis(1), None)
            .unwrap();
        ob.renew(&[&stale[0]]).unwrap();
        assert!(
            other
                .claim(&all(), 8, 10, 1 << 20, Duration::ZERO)
                .unwrap()
                .is_empty(),
            "the fresh claim's lease still holds the stream"
        );
        ob.settle(&fresh[0], 1, Duration::from_millis(1), None)
            .unwrap();
        assert_eq!(ob.pending(&all()).unwrap(), (0, 0));
    }

    #[test]
    fn a_new_outbox_is_private_to_the_user() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let ob = Outbox::open(&home).unwrap();
        ob.enqueue(T, &[entry("s", 1, "a")], &[]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&home.join(OUTBOX_FILE)), 0o600);
        assert_eq!(mode(&home.join("outbox.db-wal")), 0o600);
    }

    #[test]
    fn claims_are_ordered_exclusive_and_acks_delete() {
        let home = tempfile::tempdir().unwrap();
        let a = Outbox::open(home.path()).unwrap();
        let b = Outbox::open(home.path()).unwrap();
        a.enqueue(
            T,
            &[
                entry("s1", 2, "y"),
                entry("s1", 1, "x"),
                entry("s2", 1, "z"),
            ],
            &[],
        )
        .unwrap();
        let ca = a.claim(&all(), 1, 10, u64::MAX, Duration::ZERO).unwrap();
        assert_eq!(ca.len(), 1);
        assert_eq!(
            ca[0].entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        // The other worker sees only the other stream.
        let cb = b.claim(&all(), 10, 10, u64::MAX, Duration::ZERO).unwrap();
        assert_eq!(cb.len(), 1);
        assert_ne!(cb[0].stream, ca[0].stream);
        a.settle(&ca[0], 2, Duration::from_millis(5), None).unwrap();
        b.settle(&cb[0], 1, Duration::from_millis(5), None).unwrap();
        assert_eq!(a.pending(&all()).unwrap(), (0, 0));
        let stats = a.stats(None).unwrap();
        assert_eq!(stats[0].delivered_entries, 3);
        assert_eq!(stats[0].connectivity, Some(Connectivity::Online));
    }

    #[test]
    fn transient_failures_reschedule_and_permanent_ones_quarantine_one_stream() {
        let (_home, ob, clock) = manual(fast());
        ob.enqueue(
            T,
            &[
                entry("bad", 1, "x"),
                entry("bad", 2, "y"),
                entry("good", 1, "z"),
            ],
            &[],
        )
        .unwrap();
        let claims = ob.claim(&all(), 10, 10, u64::MAX, Duration::ZERO).unwrap();
        let bad = claims.iter().find(|c| c.stream == "bad").unwrap();
        ob.settle(
            bad,
            0,
            Duration::ZERO,
            Some((ErrorClass::Transient, "503 SlowDown", None)),
        )
        .unwrap();
        let st = &ob.stats(None).unwrap()[0];
        assert_eq!(st.connectivity, Some(Connectivity::Offline));
        assert_eq!(st.last_error_class.as_deref(), Some("transient"));
        // Past the policy's cap: the retry is due.
        clock.advance(fast().cap);
        let again = ob.claim(&all(), 10, 10, u64::MAX, Duration::ZERO).unwrap();
        let bad = again.iter().find(|c| c.stream == "bad").unwrap();
        assert_eq!(bad.entries[0].attempts, 1);
        ob.settle(
            bad,
            0,
            Duration::ZERO,
            Some((ErrorClass::Permanent, "400 invalid key", None)),
        )
        .unwrap();
        let good = claims.iter().find(|c| c.stream == "good").unwrap();
        ob.settle(good, 1, Duration::ZERO, None).unwrap();
        // The bad stream is blocked behind its quarantined head; nothing else is.
        assert!(ob
            .claim(&all(), 10, 10, u64::MAX, Duration::ZERO)
            .unwrap()
            .is_empty());
        let st = &ob.stats(None).unwrap()[0];
        assert_eq!(st.quarantined, 1);
        assert_eq!(st.pending_entries, 1, "the entry behind it still waits");
        assert_eq!(ob.quarantined(None).unwrap()[0].1, "400 invalid key");
        assert_eq!(ob.retry(Some(T)).unwrap(), 1);
        let c = ob.claim(&all(), 10, 10, u64::MAX, Duration::ZERO).unwrap();
        assert_eq!(c[0].entries.len(), 2);
    }

    #[test]
    fn auth_failure_stops_the_target_and_keeps_entries() {
        let (_home, ob, clock) = manual(fast());
        ob.enqueue(T, &[entry("a", 1, "x"), entry("b", 1, "y")], &[])
            .unwrap();
        let c = ob
            .claim(&all(), 1, 10, u64::MAX, Duration::from_secs(3600))
            .unwrap();
        ob.settle(
            &c[0],
            0,
            Duration::ZERO,
            Some((ErrorClass::Auth, "403 Forbidden", None)),
        )
        .unwrap();
        clock.advance(fast().cap);
        assert!(ob
            .claim(&all(), 10, 10, u64::MAX, Duration::from_secs(3600))
            .unwrap()
            .is_empty());
        assert_eq!(ob.pending(&all()).unwrap().0, 2);
        assert_eq!(
            ob.stats(None).unwrap()[0].connectivity,
            Some(Connectivity::AuthFailed)
        );
        // After the probe interval, one stream is tried to probe the credentials.
        assert_eq!(
            ob.claim(&all(), 10, 10, u64::MAX, Duration::ZERO)
                .unwrap()
                .len(),
            1
        );
    }

    /// A failed entry is due exactly its delay later, the delay resuming
    /// from the previous one (decorrelated jitter: within `[base, 3 x
    /// previous]`, capped); a `Retry-After` longer than the delay wins.
    #[test]
    fn a_retry_is_due_exactly_its_backoff_later_and_retry_after_wins() {
        let policy = DecorrelatedJitterBuilder {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_times: None,
            seed: Some(42),
        };
        let (home, ob, clock) = manual(policy);
        ob.enqueue(T, &[entry("s", 1, "x")], &[]).unwrap();
        let db = Connection::open(home.path().join(OUTBOX_FILE)).unwrap();
        let stored = || -> i64 {
            db.query_row("SELECT backoff_ms FROM entries", [], |r| r.get(0))
                .unwrap()
        };
        let mut prev = Duration::ZERO;
        for attempt in 1..=8 {
            let c = claim_all(&ob);
            assert_eq!(c.len(), 1, "attempt {attempt} is due");
            ob.settle(
                &c[0],
                0,
                Duration::ZERO,
                Some((ErrorClass::Transient, "503", None)),
            )
            .unwrap();
            let delay = Duration::from_millis(stored() as u64);
            let expected = DecorrelatedJitter::resume(policy, prev).next().unwrap();
            assert_eq!(delay, expected, "attempt {attempt} resumes from {prev:?}");
            let high = if prev.is_zero() {
                policy.base
            } else {
                prev * 3
            };
            assert!(delay >= policy.base && delay <= high.min(policy.cap));
            let now = clock.now_ms();
            assert_eq!(
                ob.next_due(&all()).unwrap(),
                Some(now + delay.as_millis() as i64)
            );
            clock.advance(delay - Duration::from_millis(1));
            assert!(claim_all(&ob).is_empty(), "attempt {attempt}: not yet due");
            clock.advance(Duration::from_millis(1));
            prev = delay;
        }
        assert!(prev > policy.base * 3, "the delays grew: {prev:?}");
        // The server asks for longer than the backoff: its wish is kept.
        let c = claim_all(&ob);
        let asked = Duration::from_secs(600);
        ob.settle(
            &c[0],
            0,
            Duration::ZERO,
            Some((ErrorClass::Transient, "429", Some(asked))),
        )
        .unwrap();
        let now = clock.now_ms();
        assert_eq!(
            ob.next_due(&all()).unwrap(),
            Some(now + asked.as_millis() as i64)
        );
        clock.advance(asked - Duration::from_millis(1));
        assert!(claim_all(&ob).is_empty(), "not before Retry-After");
        clock.advance(Duration::from_millis(1));
        assert_eq!(claim_all(&ob).len(), 1);
    }

    /// A live lease holds its stream for exactly [`LEASE`] from its claim
    /// or its last renewal, against every other worker.
    #[test]
    fn a_lease_holds_for_exactly_its_term_and_a_renewal_extends_it() {
        let (home, ob, clock) = manual(fast());
        let other = Outbox::open_with(home.path(), fast())
            .unwrap()
            .with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
        ob.enqueue(T, &[entry("s", 1, "x")], &[]).unwrap();
        let start = clock.now_ms();
        let c = claim_all(&ob);
        assert_eq!(c[0].lease_until, start + LEASE.as_millis() as i64);
        clock.advance(LEASE / 2);
        ob.renew(&[&c[0]]).unwrap();
        // The renewal counts from when it was made, not from the claim.
        clock.advance(LEASE - Duration::from_millis(1));
        assert!(claim_all(&other).is_empty(), "renewed: still held");
        clock.advance(Duration::from_millis(1));
        assert_eq!(claim_all(&other).len(), 1, "expired: free for others");
    }

    #[test]
    fn a_dead_owners_lease_is_free_at_once() {
        let home = tempfile::tempdir().unwrap();
        let ob = Outbox::open(home.path()).unwrap();
        ob.enqueue(T, &[entry("s", 1, "x")], &[]).unwrap();
        let conn = Connection::open(home.path().join(OUTBOX_FILE)).unwrap();
        conn.execute(
            "INSERT INTO leases VALUES (?1, 's', 'gone', ?2, 999999999, ?3)",
            params![T, hostname(), now_ms() + 3_600_000],
        )
        .unwrap();
        assert_eq!(
            ob.claim(&all(), 10, 10, u64::MAX, Duration::ZERO)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn large_payloads_are_references_and_a_drained_outbox_is_small() {
        let home = tempfile::tempdir().unwrap();
        let blob = home.path().join("blob");
        std::fs::write(&blob, vec![7u8; 1 << 20]).unwrap();
        let ob = Outbox::open(home.path()).unwrap();
        let entries: Vec<NewEntry> = (0..5000)
            .map(|i| NewEntry {
                stream: format!("s{}", i % 50),
                seq: i,
                op: "cache.blob".into(),
                subject: "x".into(),
                payload: Payload::File {
                    path: blob.clone(),
                    offset: 0,
                    len: 1 << 20,
                },
            })
            .collect();
        ob.enqueue(T, &entries, &[]).unwrap();
        assert!(
            std::fs::metadata(ob.path()).unwrap().len() < 4 << 20,
            "no blob bytes inline"
        );
        loop {
            let claims = ob
                .claim(&all(), 50, 1000, u64::MAX, Duration::ZERO)
                .unwrap();
            if claims.is_empty() {
                break;
            }
            for c in &claims {
                assert_eq!(c.entries[0].payload.read().unwrap().len(), 1 << 20);
                ob.settle(c, c.entries.len(), Duration::from_millis(1), None)
                    .unwrap();
            }
        }
        assert!(ob.compact_if_empty().unwrap());
        let size = std::fs::metadata(ob.path()).unwrap().len();
        assert!(size < 256 * 1024, "outbox.db is {size} bytes after a drain");
    }
}
