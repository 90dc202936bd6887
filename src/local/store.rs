//! The local store facade over `SPARKWING_HOME/state.db`.
//!
//! Concurrency: many `sparkwing` processes share one `state.db`. It runs in
//! WAL mode (readers never block the writer), every write is one short
//! `BEGIN IMMEDIATE` transaction (the write lock is taken up front, so a
//! reader never has to upgrade and deadlock), and a generous busy timeout
//! makes writers queue instead of failing. `synchronous = FULL` makes each
//! commit durable before the step it records is reported done.
//!
//! The connection sits behind a std `Mutex`: the calls are short and
//! blocking, so async callers go through `tokio::task::spawn_blocking`
//! (see `exec`), never holding the lock across an `.await`.

use crate::status::{JobStatus, RunStatus, StepStatus};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use serde_json::{json, Value};

use crate::util::{hostname, now_ms, pid_alive};
use sparkwing_schema::{Problem, StorageFault};

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// The space kept next to `state.db` for recording a run's failure on a
/// full disk: a few transactions' worth of WAL frames (4 KiB pages).
pub const RESERVE_BYTES: u64 = 256 * 1024;

/// What moving a damaged `state.db` aside costs.
const DAMAGED_NOTE: &str = "this machine's run history then starts empty (logs stay in runs/, and runs already synced stay on their remote)";

/// A failed SQLite call on `state.db` at `path`: a [`StorageFault`] (the
/// file and the fix) when it is a storage problem, else the error with the
/// file named.
fn sqlite_fault(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    match StorageFault::from_sqlite(path, &e) {
        Some(f) if f.problem == Problem::Damaged => anyhow!(f.with_note(DAMAGED_NOTE)),
        Some(f) => anyhow!(f),
        None => anyhow!(e).context(path.display().to_string()),
    }
}

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub pipeline: String,
    pub status: String,
    pub profile: String,
    pub project_dir: String,
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

impl RunRow {
    /// The status to show: a `running` run whose process on this host is
    /// gone was interrupted (killed, or the machine went down).
    pub fn shown_status(&self) -> &str {
        if RunStatus::live(&self.status) && self.host == hostname() && !pid_alive(self.pid) {
            RunStatus::Interrupted.as_str()
        } else {
            &self.status
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub name: String,
    pub needs: Vec<String>,
    pub status: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub cache_key: Option<String>,
    pub cached_from_run: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub job: String,
    pub index: i64,
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Where a cache target holds one chunk of plain bytes: the pack, the
/// zstd frame in it (offset, length) and the chunk in the frame's plain
/// bytes (offset, size). See [`crate::remote::pack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack: String,
    pub at: u64,
    pub len: u64,
    pub skip: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub key: String,
    pub job: String,
    pub pipeline: String,
    pub run_id: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub manifest: String,
    /// `local`, `remote`, `signed:<key id>` or `unknown` (see migration
    /// `0004_cache_origin.sql`).
    pub origin: String,
}

/// The remote targets a run replicates to (`None`: that surface is local).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTargets {
    pub state: Option<String>,
    pub logs: Option<String>,
    pub cache: Option<String>,
}

/// One row of a run's event log (the type a remote's events read into).
pub use sparkwing_sync::doc::Event as EventRow;

/// A new run, with its jobs (name, needs) and steps (job, index, name).
pub struct NewRun<'a> {
    pub run: &'a RunRow,
    pub targets: RunTargets,
    pub jobs: Vec<(String, Vec<String>)>,
    pub steps: Vec<(String, usize, String)>,
}

impl Store {
    /// Opens (creating when missing) `home/state.db` and migrates it. A
    /// full disk, a damaged file or missing permissions are a
    /// [`StorageFault`] naming the file and the fix.
    pub fn open(home: &Path) -> Result<Store> {
        let path = home.join("state.db");
        crate::util::private_db_file(home, &path).map_err(|e| {
            // The directory when it could not be made, else the file.
            let at = if home.is_dir() { &path } else { home };
            anyhow!(StorageFault::from_io(at, &e))
        })?;
        let fault = |e: rusqlite::Error| sqlite_fault(&path, e);
        let mut conn = Connection::open(&path).map_err(fault)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fault)?;
        sparkwing_schema::enable_wal(&conn).map_err(fault)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(fault)?;
        match sparkwing_schema::migrate_sqlite(&mut conn) {
            Ok(_) => {}
            Err(e @ sparkwing_schema::SchemaError::Skew { .. }) => return Err(anyhow!(e)),
            Err(sparkwing_schema::SchemaError::Sql { source, .. })
                if StorageFault::from_sqlite(&path, &source).is_some() =>
            {
                return Err(fault(source))
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| format!("migrating {}", path.display()))
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Keeps [`RESERVE_BYTES`] allocated next to `state.db` (best effort),
    /// so that when the disk fills up during a run, the run's failure can
    /// still be recorded: [`Store::run_failed`] gives the space back to
    /// SQLite only then.
    pub fn reserve_space(&self) {
        let reserve = self.reserve_path();
        if std::fs::metadata(&reserve).is_ok_and(|m| m.len() >= RESERVE_BYTES) {
            return;
        }
        let made = (|| -> std::io::Result<()> {
            let f = std::os::unix::fs::OpenOptionsExt::mode(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false),
                0o600,
            )
            .open(&reserve)?;
            // Allocated, not sparse: a sparse file would free nothing.
            // SAFETY: plain syscall on a descriptor owned by `f`.
            let rc = unsafe {
                libc::posix_fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    0,
                    RESERVE_BYTES as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(())
        })();
        if made.is_err() {
            // A partial reserve would only take space: no reserve then.
            let _ = std::fs::remove_file(&reserve);
        }
    }

    fn reserve_path(&self) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push("-reserve");
        PathBuf::from(p)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_tx<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow!("state.db connection poisoned"))?;
        let fault = |e| sqlite_fault(&self.path, e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fault)?;
        let out = f(&tx).map_err(fault)?;
        tx.commit().map_err(fault)?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow!("state.db connection poisoned"))?;
        f(&conn).map_err(|e| sqlite_fault(&self.path, e))
    }

    /// Records a new run with its jobs and steps as pending.
    pub fn create_run(&self, new: &NewRun) -> Result<()> {
        let r = new.run;
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO runs (id, pipeline, status, profile, project_dir, host, pid, started_at,
                                   state_target, logs_target, cache_target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    r.id,
                    r.pipeline,
                    r.status,
                    r.profile,
                    r.project_dir,
                    r.host,
                    r.pid,
                    r.started_at,
                    new.targets.state,
                    new.targets.logs,
                    new.targets.cache
                ],
            )?;
            for (i, (name, needs)) in new.jobs.iter().enumerate() {
                tx.execute(
                    "INSERT INTO jobs (run_id, name, position, needs, status) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![r.id, name, i as i64, serde_json::to_string(needs).unwrap_or_default(), JobStatus::Pending],
                )?;
            }
            for (job, idx, name) in &new.steps {
                tx.execute(
                    "INSERT INTO steps (run_id, job, idx, name, status) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![r.id, job, *idx as i64, name, StepStatus::Pending],
                )?;
            }
            event(tx, &r.id, None, "run.started", json!({
                "pipeline": r.pipeline, "profile": r.profile, "host": r.host, "pid": r.pid,
            }))
        })
    }

    /// Live or dead, the runs on `host` waiting for a slot, oldest first:
    /// (id, pid).
    pub fn waiting_runs(&self, host: &str) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, pid FROM runs WHERE status = ?2 AND host = ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![host, RunStatus::Waiting], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        })
    }

    /// A waiting run got its slot.
    pub fn admit_run(&self, run: &str, slot: usize) -> Result<()> {
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE runs SET status = ?2 WHERE id = ?1",
                params![run, RunStatus::Running],
            )?;
            event(tx, run, None, "run.admitted", json!({"slot": slot}))
        })
    }

    pub fn job_started(&self, run: &str, job: &str, cache_key: Option<&str>) -> Result<()> {
        let ts = now_ms();
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE jobs SET status = ?5, started_at = ?3, cache_key = ?4 WHERE run_id = ?1 AND name = ?2",
                params![run, job, ts, cache_key, JobStatus::Running],
            )?;
            event(tx, run, Some(job), "job.started", json!({"cache_key": cache_key}))
        })
    }

    /// Records a job's end. Steps that never started take `rest_status`.
    pub fn job_finished(&self, run: &str, job: &str, end: &JobEnd) -> Result<()> {
        let ts = now_ms();
        // Stored errors are shown and replicated later: redacted once, here.
        let error = end.error.map(crate::profile::scrub);
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE jobs SET status = ?3, finished_at = ?4, started_at = COALESCE(started_at, ?4),
                        cache_key = COALESCE(?5, cache_key), cached_from_run = ?6, error = ?7
                 WHERE run_id = ?1 AND name = ?2",
                params![run, job, end.status, ts, end.cache_key, end.cached_from_run, error],
            )?;
            tx.execute(
                "UPDATE steps SET status = ?3 WHERE run_id = ?1 AND job = ?2 AND status = ?4",
                params![run, job, end.rest_status, StepStatus::Pending],
            )?;
            event(tx, run, Some(job), "job.finished", json!({
                "status": end.status, "cached_from_run": end.cached_from_run, "error": error,
            }))
        })
    }

    pub fn step_started(&self, run: &str, job: &str, idx: usize) -> Result<()> {
        let ts = now_ms();
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE steps SET status = ?5, started_at = ?4 WHERE run_id = ?1 AND job = ?2 AND idx = ?3",
                params![run, job, idx as i64, ts, StepStatus::Running],
            )?;
            event(tx, run, Some(job), "step.started", json!({"index": idx}))
        })
    }

    pub fn step_finished(
        &self,
        run: &str,
        job: &str,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
    ) -> Result<()> {
        let ts = now_ms();
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE steps SET status = ?4, exit_code = ?5, finished_at = ?6 WHERE run_id = ?1 AND job = ?2 AND idx = ?3",
                params![run, job, idx as i64, status, exit_code, ts],
            )?;
            event(tx, run, Some(job), "step.finished", json!({"index": idx, "status": status, "exit_code": exit_code}))
        })
    }

    pub fn run_finished(&self, run: &str, status: RunStatus, error: Option<&str>) -> Result<()> {
        let ts = now_ms();
        let error = error.map(crate::profile::scrub);
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
                params![run, status, ts, error],
            )?;
            event(
                tx,
                run,
                None,
                "run.finished",
                json!({"status": status, "error": error}),
            )
        })
    }

    /// Records that sparkwing itself failed during `run`: the run ends
    /// `failed` with `reason` as its error, its running jobs and steps
    /// `failed`, the ones not started `skipped`, with a `run.finished` event.
    /// On a full disk the space of [`Store::reserve_space`] is given back
    /// and the write tried once more.
    pub fn run_failed(&self, run: &str, reason: &str) -> Result<()> {
        let write = || {
            let ts = now_ms();
            self.with_tx(|tx| {
                let n = tx.execute(
                    "UPDATE runs SET status = ?4, finished_at = ?2, error = ?3
                     WHERE id = ?1 AND status IN (?5, ?6)",
                    params![run, ts, reason, RunStatus::Failed, RunStatus::Waiting, RunStatus::Running],
                )?;
                if n == 0 {
                    return Ok(());
                }
                tx.execute(
                    "UPDATE jobs SET status = ?4, finished_at = ?2, error = COALESCE(error, ?3)
                     WHERE run_id = ?1 AND status = ?5",
                    params![run, ts, reason, JobStatus::Failed, JobStatus::Running],
                )?;
                tx.execute(
                    "UPDATE steps SET status = ?3, finished_at = ?2 WHERE run_id = ?1 AND status = ?4",
                    params![run, ts, StepStatus::Failed, StepStatus::Running],
                )?;
                tx.execute(
                    "UPDATE jobs SET status = ?2 WHERE run_id = ?1 AND status = ?3",
                    params![run, JobStatus::Skipped, JobStatus::Pending],
                )?;
                tx.execute(
                    "UPDATE steps SET status = ?2 WHERE run_id = ?1 AND status = ?3",
                    params![run, StepStatus::Skipped, StepStatus::Pending],
                )?;
                event(tx, run, None, "run.finished", json!({"status": RunStatus::Failed, "error": reason}))
            })
        };
        match write() {
            Err(e) if is_disk_full(&e) => {
                if std::fs::remove_file(self.reserve_path()).is_err() {
                    return Err(e);
                }
                write()
            }
            r => r,
        }
    }

    /// Runs, newest first.
    pub fn list_runs(
        &self,
        pipeline: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRow>> {
        self.list_runs_before(pipeline, status, None, limit)
    }

    /// Runs older than the run `before` (a page cursor), newest first.
    pub fn list_runs_before(
        &self,
        pipeline: Option<&str>,
        status: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRow>> {
        // `interrupted` is derived, not stored: filter it after reading.
        let (db_status, derived) = match status {
            Some(s) if s == RunStatus::Interrupted.as_str() => (None, true),
            s => (s, false),
        };
        let mut rows = self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, pipeline, status, profile, project_dir, host, pid, started_at, finished_at, error
                 FROM runs
                 WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR status = ?2)
                   AND (?4 IS NULL OR id < ?4)
                 ORDER BY started_at DESC, id DESC
                 LIMIT ?3",
            )?;
            let rows = st.query_map(params![pipeline, db_status, if derived { -1 } else { limit as i64 }, before], run_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        if let Some(s) = status {
            rows.retain(|r| r.shown_status() == s);
            rows.truncate(limit);
        }
        Ok(rows)
    }

    /// Every run's ID, ascending (IDs sort by the time they were made).
    pub fn run_ids(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id FROM runs ORDER BY id")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// The run with exactly this ID, if there is one.
    /// Forgets a run: its jobs, steps, events and boundaries go with it
    /// (foreign keys cascade); its cache entries stay.
    pub fn delete_run(&self, id: &str) -> Result<bool> {
        self.with_tx(|tx| Ok(tx.execute("DELETE FROM runs WHERE id = ?1", [id])? > 0))
    }

    pub fn run_by_id(&self, id: &str) -> Result<Option<RunRow>> {
        self.read(|c| {
            c.query_row(
                "SELECT id, pipeline, status, profile, project_dir, host, pid, started_at, finished_at, error
                 FROM runs WHERE id = ?1",
                [id],
                run_row,
            )
            .optional()
        })
    }

    /// Finds a run by full ID, unique ID prefix, or `latest`.
    pub fn find_run(&self, id: &str) -> Result<RunRow> {
        if id == "latest" || id == "last" {
            return self
                .list_runs(None, None, 1)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no runs recorded in {} yet", self.path.display()));
        }
        let upper = id.to_ascii_uppercase();
        let rows = self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, pipeline, status, profile, project_dir, host, pid, started_at, finished_at, error
                 FROM runs WHERE id >= ?1 AND id < ?1 || 'ZZZZZZZZZZZZZZZZZZZZZZZZZZ' ORDER BY id LIMIT 6",
            )?;
            let rows = st.query_map([&upper], run_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let matches: Vec<RunRow> = rows
            .into_iter()
            .filter(|r| r.id.starts_with(&upper))
            .collect();
        match matches.len() {
            0 => bail!(
                "no run `{id}` in {}; see `sparkwing runs list`",
                self.path.display()
            ),
            1 => Ok(matches.into_iter().next().unwrap_or_else(|| unreachable!())),
            _ => bail!(
                "run ID prefix `{id}` is ambiguous ({}, …); give more characters",
                matches
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    pub fn jobs(&self, run: &str) -> Result<Vec<JobRow>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT name, needs, status, started_at, finished_at, cache_key, cached_from_run, error
                 FROM jobs WHERE run_id = ?1 ORDER BY position",
            )?;
            let rows = st.query_map([run], |r| {
                let needs: String = r.get(1)?;
                Ok(JobRow {
                    name: r.get(0)?,
                    needs: serde_json::from_str(&needs).unwrap_or_default(),
                    status: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    cache_key: r.get(5)?,
                    cached_from_run: r.get(6)?,
                    error: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn steps(&self, run: &str) -> Result<Vec<StepRow>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT s.job, s.idx, s.name, s.status, s.exit_code, s.started_at, s.finished_at
                 FROM steps s JOIN jobs j ON j.run_id = s.run_id AND j.name = s.job
                 WHERE s.run_id = ?1 ORDER BY j.position, s.idx",
            )?;
            let rows = st.query_map([run], |r| {
                Ok(StepRow {
                    job: r.get(0)?,
                    index: r.get(1)?,
                    name: r.get(2)?,
                    status: r.get(3)?,
                    exit_code: r.get(4)?,
                    started_at: r.get(5)?,
                    finished_at: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Events of a run after `after_seq`, in order.
    pub fn events_after(&self, run: &str, after_seq: i64) -> Result<Vec<EventRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, ts, kind, job, data FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = st.query_map(params![run, after_seq], |r| event_row(run, r))?;
            rows.collect()
        })
    }

    /// The sequence number of a run's latest event (0 when none).
    pub fn last_event_seq(&self, run: &str) -> Result<i64> {
        self.read(|c| {
            c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?1")?
                .query_row([run], |r| r.get(0))
        })
    }

    /// Closes the next event segment of a run (see `event_segments` in
    /// `schema/sqlite/0003_boundaries.sql`): every event not yet in a
    /// segment goes into new segments of at most `max` events, under the
    /// write lock, so concurrent callers never cover an event twice. Unless
    /// `force`, nothing is closed while fewer than `max` events wait and the
    /// oldest of them is younger than `linger_ms` (fewer, larger objects).
    /// Returns how many segments were closed.
    pub fn close_segments(
        &self,
        run: &str,
        force: bool,
        linger_ms: i64,
        max: i64,
    ) -> Result<usize> {
        let now = now_ms();
        let max = max.max(1);
        // A cheap read first: most calls find nothing due.
        let (_, waiting, oldest) = self.read(|c| pending_segment(c, run))?;
        if waiting == 0 || (!force && waiting < max && oldest.is_some_and(|t| t > now - linger_ms))
        {
            return Ok(0);
        }
        self.with_tx(|tx| {
            // Read again under the lock: another process may have closed them.
            let (after, waiting, _) = pending_segment(tx, run)?;
            if waiting == 0 {
                return Ok(0);
            }
            let seqs: Vec<i64> = {
                let mut st = tx.prepare_cached(
                    "SELECT seq FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
                )?;
                let rows = st.query_map(params![run, after], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut ins = tx.prepare_cached(
                "INSERT INTO event_segments (run_id, first_seq, last_seq) VALUES (?1, ?2, ?3)",
            )?;
            let mut n = 0;
            for part in seqs.chunks(max as usize) {
                if let (Some(first), Some(last)) = (part.first(), part.last()) {
                    ins.execute(params![run, first, last])?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// The closed event segments of a run after `after_first` (a segment's
    /// first seq), in order: `(first_seq, last_seq)`.
    pub fn segments_after(&self, run: &str, after_first: i64) -> Result<Vec<(i64, i64)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT first_seq, last_seq FROM event_segments WHERE run_id = ?1 AND first_seq > ?2 ORDER BY first_seq",
            )?;
            let rows = st.query_map(params![run, after_first], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Events `first..=last` of a run, in order.
    pub fn events_between(&self, run: &str, first: i64, last: i64) -> Result<Vec<EventRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, ts, kind, job, data FROM events WHERE run_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
            )?;
            let rows = st.query_map(params![run, first, last], |r| event_row(run, r))?;
            rows.collect()
        })
    }

    /// Records the log chunks of a job up to `len` bytes of its log file:
    /// the bytes after the last recorded chunk become new chunks of at most
    /// `max` bytes, under the write lock, so a chunk's range is decided once
    /// whoever records it. Returns how many chunks were added.
    pub fn record_log_chunks(&self, run: &str, job: &str, len: u64, max: u64) -> Result<usize> {
        let max = max.max(1) as i64;
        let len = len as i64;
        let end = |c: &Connection| -> rusqlite::Result<(i64, i64)> {
            c.prepare_cached(
                "SELECT COALESCE(MAX(seq) + 1, 0), COALESCE(MAX(offset + len), 0) FROM log_chunks WHERE run_id = ?1 AND job = ?2",
            )?
            .query_row(params![run, job], |r| Ok((r.get(0)?, r.get(1)?)))
        };
        if self.read(|c| end(c))?.1 >= len {
            return Ok(0);
        }
        self.with_tx(|tx| {
            let (mut seq, mut offset) = end(tx)?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO log_chunks (run_id, job, seq, offset, len) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut n = 0;
            while offset < len {
                let part = (len - offset).min(max);
                ins.execute(params![run, job, seq, offset, part])?;
                seq += 1;
                offset += part;
                n += 1;
            }
            Ok(n)
        })
    }

    /// The recorded log chunks of a job after chunk `after_seq`:
    /// `(seq, offset, len)`, in order.
    pub fn log_chunks_after(
        &self,
        run: &str,
        job: &str,
        after_seq: i64,
    ) -> Result<Vec<(i64, u64, u64)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, offset, len FROM log_chunks WHERE run_id = ?1 AND job = ?2 AND seq > ?3 ORDER BY seq",
            )?;
            let rows = st.query_map(params![run, job, after_seq], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
            })?;
            rows.collect()
        })
    }

    /// Per job of a run: how many log chunks are recorded and the bytes
    /// they cover.
    pub fn log_chunk_totals(
        &self,
        run: &str,
    ) -> Result<std::collections::HashMap<String, (i64, i64)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT job, COUNT(*), COALESCE(SUM(len), 0) FROM log_chunks WHERE run_id = ?1 GROUP BY job",
            )?;
            let rows = st.query_map([run], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            rows.collect()
        })
    }

    /// Records, for every run on this host whose process is gone while it
    /// was `waiting` or `running`, that it was interrupted: the status, its
    /// end time, its running jobs and steps, and a `run.interrupted` event
    /// (which replicates like any other, so every runner's view ends
    /// `interrupted`). Returns the IDs of the runs settled.
    pub fn settle_dead_runs(&self) -> Result<Vec<String>> {
        let host = hostname();
        let candidates: Vec<(String, i64)> = self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, pid FROM runs WHERE status IN (?2, ?3) AND host = ?1",
            )?;
            let rows = st.query_map(
                params![&host, RunStatus::Running, RunStatus::Waiting],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            rows.collect()
        })?;
        let dead: Vec<(String, i64)> = candidates
            .into_iter()
            .filter(|(_, pid)| !pid_alive(*pid))
            .collect();
        let mut settled = Vec::new();
        for (id, pid) in dead {
            let ts = now_ms();
            let changed = self.with_tx(|tx| {
                let msg = format!("interrupted: process {pid} on {host} is gone (killed, or the machine went down)");
                let n = tx.execute(
                    "UPDATE runs SET status = ?4, finished_at = ?2, error = COALESCE(error, ?3)
                     WHERE id = ?1 AND status IN (?5, ?6)",
                    params![id, ts, msg, RunStatus::Interrupted, RunStatus::Running, RunStatus::Waiting],
                )?;
                if n == 0 {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE jobs SET status = ?3, finished_at = ?2 WHERE run_id = ?1 AND status = ?4",
                    params![id, ts, JobStatus::Interrupted, JobStatus::Running],
                )?;
                tx.execute(
                    "UPDATE steps SET status = ?3, finished_at = ?2 WHERE run_id = ?1 AND status = ?4",
                    params![id, ts, StepStatus::Interrupted, StepStatus::Running],
                )?;
                event(tx, &id, None, "run.interrupted", json!({"status": RunStatus::Interrupted, "pid": pid, "host": host}))?;
                Ok(true)
            })?;
            if changed {
                settled.push(id);
            }
        }
        Ok(settled)
    }

    /// The targets a run replicates to.
    pub fn targets_of_run(&self, run: &str) -> Result<Option<RunTargets>> {
        self.read(|c| {
            c.query_row(
                "SELECT state_target, logs_target, cache_target FROM runs WHERE id = ?1",
                [run],
                |r| {
                    Ok(RunTargets {
                        state: r.get(0)?,
                        logs: r.get(1)?,
                        cache: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    /// The runs that replicate anything to `target`, oldest first, with
    /// their targets.
    pub fn runs_for_target(&self, target: &str) -> Result<Vec<(RunRow, RunTargets)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, pipeline, status, profile, project_dir, host, pid, started_at, finished_at, error,
                        state_target, logs_target, cache_target
                 FROM runs WHERE state_target = ?1 OR logs_target = ?1 OR cache_target = ?1
                 ORDER BY started_at, id",
            )?;
            let rows = st.query_map([target], |r| {
                Ok((
                    run_row(r)?,
                    RunTargets { state: r.get(10)?, logs: r.get(11)?, cache: r.get(12)? },
                ))
            })?;
            rows.collect()
        })
    }

    /// The cache entries a run produced (still current).
    pub fn cache_entries_of_run(&self, run: &str) -> Result<Vec<CacheEntry>> {
        self.read(|c| {
            let mut st = c.prepare(
                // Only what this machine produced is published again: an
                // imported entry naming a local run is not vouched for here.
                "SELECT key, job, pipeline, run_id, created_at, expires_at, manifest, origin FROM cache_entries
                 WHERE run_id = ?1 AND origin = 'local' ORDER BY created_at",
            )?;
            let rows = st.query_map([run], cache_row)?;
            rows.collect()
        })
    }

    /// The live cache entry for `key`, if any (expired entries are ignored).
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheEntry>> {
        let now = now_ms();
        self.read(|c| {
            c.query_row(
                "SELECT key, job, pipeline, run_id, created_at, expires_at, manifest, origin FROM cache_entries
                 WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![key, now],
                cache_row,
            )
            .optional()
        })
    }

    /// Marks a cache entry as used now (a hit restored it): the last to
    /// be evicted when the local cache is over its size limit.
    pub fn cache_touch(&self, key: &str) -> Result<()> {
        let now = now_ms();
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE cache_entries SET last_used_at = ?2 WHERE key = ?1",
                params![key, now],
            )?;
            Ok(())
        })
    }

    /// Every cache entry (expired ones too), least recently used first,
    /// with when it was last used.
    pub fn cache_index(&self) -> Result<Vec<(CacheEntry, i64)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT key, job, pipeline, run_id, created_at, expires_at, manifest, origin,
                        COALESCE(last_used_at, created_at)
                 FROM cache_entries ORDER BY COALESCE(last_used_at, created_at), key",
            )?;
            let rows = st.query_map([], |r| Ok((cache_row(r)?, r.get(8)?)))?;
            rows.collect()
        })
    }

    /// Forgets a cache entry (its blobs are collected separately).
    pub fn cache_remove(&self, key: &str) -> Result<bool> {
        self.with_tx(|tx| Ok(tx.execute("DELETE FROM cache_entries WHERE key = ?1", [key])? > 0))
    }

    /// Where cache target `target` holds each chunk this machine knows of
    /// (`cache_chunks`, issue 13), by the chunk's SHA-256, with the
    /// identity of the outbox that carries its pack (`None`: seen on the
    /// remote).
    pub fn cache_chunks(
        &self,
        target: &str,
    ) -> Result<std::collections::HashMap<String, (ChunkLoc, Option<String>)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT sha256, pack, frame_at, frame_len, skip, size, via FROM cache_chunks WHERE target = ?1",
            )?;
            let rows = st.query_map([target], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (
                        ChunkLoc {
                            pack: r.get(1)?,
                            at: r.get::<_, i64>(2)? as u64,
                            len: r.get::<_, i64>(3)? as u64,
                            skip: r.get::<_, i64>(4)? as u64,
                            size: r.get::<_, i64>(5)? as u64,
                        },
                        r.get(6)?,
                    ),
                ))
            })?;
            rows.collect()
        })
    }

    /// Records where `target` holds these chunks (replacing what was
    /// known): seen there (`via` `None`) or queued through the outbox
    /// whose identity `via` is.
    pub fn cache_chunks_put(
        &self,
        target: &str,
        chunks: &[(String, ChunkLoc)],
        via: Option<&str>,
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.with_tx(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO cache_chunks (target, sha256, pack, frame_at, frame_len, skip, size, via)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (sha, l) in chunks {
                st.execute(params![
                    target,
                    sha,
                    l.pack,
                    l.at as i64,
                    l.len as i64,
                    l.skip as i64,
                    l.size as i64,
                    via
                ])?;
            }
            Ok(())
        })
    }

    /// Forgets every chunk `target` was thought to hold in `pack` (a
    /// restore found the pack missing). Returns how many.
    pub fn cache_chunks_forget_pack(&self, target: &str, pack: &str) -> Result<usize> {
        self.with_tx(|tx| {
            tx.execute(
                "DELETE FROM cache_chunks WHERE target = ?1 AND pack = ?2",
                params![target, pack],
            )
        })
    }

    /// Records a cache entry another runner produced (fetched from the
    /// remote). No event: the run that produced it is not a local run.
    pub fn cache_import(&self, e: &CacheEntry) -> Result<()> {
        self.with_tx(|tx| upsert_cache_entry(tx, e))
    }

    /// Publishes a cache manifest (the blobs are already in the CAS).
    pub fn cache_put(&self, e: &CacheEntry) -> Result<()> {
        self.with_tx(|tx| {
            upsert_cache_entry(tx, e)?;
            event(
                tx,
                &e.run_id,
                Some(&e.job),
                "cache.stored",
                json!({"key": e.key}),
            )
        })
    }
}

/// How a job ended, for [`Store::job_finished`].
pub struct JobEnd<'a> {
    pub status: JobStatus,
    /// What its steps that never started become.
    pub rest_status: StepStatus,
    pub cache_key: Option<&'a str>,
    pub cached_from_run: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// One cache key, one manifest: the newest write wins.
fn upsert_cache_entry(tx: &rusqlite::Transaction, e: &CacheEntry) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO cache_entries (key, job, pipeline, run_id, created_at, expires_at, manifest, origin, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (key) DO UPDATE SET job = excluded.job, pipeline = excluded.pipeline,
           run_id = excluded.run_id, created_at = excluded.created_at,
           expires_at = excluded.expires_at, manifest = excluded.manifest, origin = excluded.origin,
           last_used_at = excluded.last_used_at",
        params![
            e.key,
            e.job,
            e.pipeline,
            e.run_id,
            e.created_at,
            e.expires_at,
            e.manifest,
            e.origin,
            now_ms()
        ],
    )?;
    Ok(())
}

/// Where a run's unsegmented events start: (last segmented seq, how many
/// events wait, the time of the oldest).
fn pending_segment(c: &Connection, run: &str) -> rusqlite::Result<(i64, i64, Option<i64>)> {
    let after: i64 = c
        .prepare_cached("SELECT COALESCE(MAX(last_seq), 0) FROM event_segments WHERE run_id = ?1")?
        .query_row([run], |r| r.get(0))?;
    let (n, oldest) = c
        .prepare_cached("SELECT COUNT(*), MIN(ts) FROM events WHERE run_id = ?1 AND seq > ?2")?
        .query_row(params![run, after], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((after, n, oldest))
}

fn event(
    tx: &rusqlite::Transaction,
    run: &str,
    job: Option<&str>,
    kind: &str,
    data: Value,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO events (run_id, seq, ts, kind, job, data)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1), ?2, ?3, ?4, ?5)",
        params![run, now_ms(), kind, job, data.to_string()],
    )?;
    Ok(())
}

fn event_row(run: &str, r: &rusqlite::Row) -> rusqlite::Result<EventRow> {
    let data: String = r.get(4)?;
    Ok(EventRow {
        run: run.to_string(),
        seq: r.get(0)?,
        ts: r.get(1)?,
        kind: r.get(2)?,
        job: r.get(3)?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    })
}

fn cache_row(r: &rusqlite::Row) -> rusqlite::Result<CacheEntry> {
    Ok(CacheEntry {
        key: r.get(0)?,
        job: r.get(1)?,
        pipeline: r.get(2)?,
        run_id: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        manifest: r.get(6)?,
        origin: r.get(7)?,
    })
}

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        status: r.get(2)?,
        profile: r.get(3)?,
        project_dir: r.get(4)?,
        host: r.get(5)?,
        pid: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        error: r.get(9)?,
    })
}

fn is_disk_full(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StorageFault>()
        .is_some_and(|f| f.problem == Problem::DiskFull)
}
