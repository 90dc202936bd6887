//! The executor: runs one pipeline's job DAG.
//!
//! Jobs start in definition order as soon as their `needs` have passed (or
//! were restored from cache), at most `workers` at a time. Each step is
//! `sh -c RUN` in its own process group, so a timeout or Ctrl-C can stop
//! everything the step started. Output is read from one pipe per step
//! (stdout and stderr share it, keeping their order) by a plain thread that
//! appends each line to the job's log file as it arrives and echoes it to
//! the terminal. Every state change is committed to `state.db` through
//! `spawn_blocking` before the runner moves on.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use indexmap::IndexMap;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::local::store::{CacheEntry, JobEnd, NewRun, RunRow, Store};
use crate::remote::replicate::Replicator;
use crate::remote::Remote;
use crate::run::cache::{self, Cas, Manifest};
use crate::run::pipeline::{Job, Pipeline, Project};
pub use crate::status::JobStatus;
use crate::status::{RunStatus, StepStatus};
use crate::util::{self, human_duration, now_ms};
use sparkwing_schema::StorageFault;
use sparkwing_sync::{SyncActor, SyncConfig};

/// How long a step gets to exit after SIGTERM before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for a step's output pipe to close after the step's
/// shell exited (longer only when it left background processes behind).
const PIPE_LINGER: Duration = Duration::from_millis(200);

pub struct RunOptions {
    pub home: PathBuf,
    /// The profile's remote surfaces (all local in Mode 1).
    pub remote: Remote,
    /// How long the run waits at exit for its writes to reach the remote.
    pub sync_timeout: Duration,
    /// At most this many runs at once on this machine (the gate).
    pub max_runs: usize,
    pub workers: usize,
    pub no_cache: bool,
    pub profile: String,
    /// The local cache's size limit ([`crate::run::evict`]); `None`: the
    /// default.
    pub cache_max_size: Option<u64>,
    /// A shutdown signal besides SIGINT/SIGTERM: when it turns `true` the
    /// run is cancelled as by a first Ctrl-C (tests, and an embedding
    /// agent that stops a run).
    pub stop: Option<watch::Receiver<bool>>,
}

struct JobResult {
    status: JobStatus,
    duration: Duration,
    cache_note: String,
}

/// Everything the job tasks share.
struct Ctx {
    store: Arc<Store>,
    run_id: String,
    pipeline: String,
    project_dir: PathBuf,
    run_dir: PathBuf,
    home: PathBuf,
    no_cache: bool,
    prefix: bool,
    cancel: watch::Receiver<bool>,
    /// Process groups of steps still alive, for a second Ctrl-C.
    groups: Arc<Mutex<HashSet<i32>>>,
    /// Set when the profile has remote surfaces.
    repl: Option<Arc<Replicator>>,
    /// The cache target, read on a local miss (Mode 2+).
    remote_cache: Option<Arc<dyn sparkwing_sync::RemoteView>>,
    signing: Option<Arc<crate::remote::signing::SigningKey>>,
    cache_max_size: u64,
}

/// Runs a `state.db` call off the executor; when the run replicates, the
/// events it wrote are enqueued right after (same blocking task).
async fn db<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (store, repl, run) = (Arc::clone(&ctx.store), ctx.repl.clone(), ctx.run_id.clone());
    tokio::task::spawn_blocking(move || {
        let out = f(&store)?;
        if let Some(r) = repl {
            sync_warn(r.events(&store, &run, false));
        }
        Ok(out)
    })
    .await
    .map_err(|e| anyhow!("state.db task failed: {e}"))?
}

/// Enqueues something for the remote (no-op in Mode 1), off the executor.
async fn replicate(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Replicator, &Store) -> Result<usize> + Send + 'static,
) {
    let Some(repl) = ctx.repl.clone() else { return };
    let store = Arc::clone(&ctx.store);
    let r = tokio::task::spawn_blocking(move || f(&repl, &store)).await;
    match r {
        Ok(r) => sync_warn(r),
        Err(e) => sync_warn::<usize>(Err(anyhow::Error::new(e))),
    }
}

/// Queueing for sync is best effort during a run: the local write already
/// happened, and `sparkwing sync flush` re-derives anything missing. Say so
/// once.
fn sync_warn<T>(r: Result<T>) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = r {
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::say!("sparkwing: could not queue this run's writes for sync ({e:#}); they are safe locally and `sparkwing sync flush` will queue them");
        }
    }
}

/// Runs `pipeline` and returns the process exit code: 0 when every job
/// passed or was restored from cache, 1 when a job failed, 130 when the
/// run was cancelled.
///
/// Once the run is recorded, an error that stops it (sparkwing's own I/O:
/// `state.db`, a log file, the cache) records it as `failed` with the
/// reason, and comes back as a [`crate::fault::RunAborted`] error.
pub fn run_pipeline(project: &Project, pipeline: &Pipeline, opts: RunOptions) -> Result<i32> {
    let store = Arc::new(Store::open(&opts.home)?);
    // The room to record a failure in if the disk fills up during the run.
    store.reserve_space();
    let run_id = util::new_run_id();
    let run_dir = opts.home.join("runs").join(&run_id);
    std::fs::create_dir_all(&run_dir).map_err(|e| anyhow!(StorageFault::from_io(&run_dir, &e)))?;
    let row = RunRow {
        id: run_id.clone(),
        pipeline: pipeline.name.clone(),
        status: RunStatus::Waiting.as_str().into(),
        profile: opts.profile.clone(),
        project_dir: project.dir.to_string_lossy().into_owned(),
        host: util::hostname(),
        pid: std::process::id() as i64,
        started_at: now_ms(),
        finished_at: None,
        error: None,
    };
    let new = NewRun {
        run: &row,
        targets: opts.remote.run_targets(),
        jobs: pipeline
            .jobs
            .iter()
            .map(|(n, j)| (n.clone(), j.needs.clone()))
            .collect(),
        steps: pipeline
            .jobs
            .iter()
            .flat_map(|(n, j)| {
                j.steps
                    .iter()
                    .enumerate()
                    .map(move |(i, s)| (n.clone(), i, s.label()))
            })
            .collect(),
    };
    // Earlier runs on this host whose process died are recorded as
    // interrupted (and replicate as such).
    match store.settle_dead_runs() {
        Err(e) if crate::fault::is_damaged(&e) => return Err(e),
        Err(e) => crate::say!("sparkwing: could not record interrupted runs ({e:#}); continuing"),
        Ok(_) => {}
    }
    store.create_run(&new)?;
    run_recorded(&store, project, pipeline, &opts, &run_id, run_dir)
        .map_err(|e| crate::fault::abort_run(&store, &run_id, e))
}

/// The part of [`run_pipeline`] after the run is recorded: any error here
/// is recorded as the run's failure by the caller.
fn run_recorded(
    store: &Arc<Store>,
    project: &Project,
    pipeline: &Pipeline,
    opts: &RunOptions,
    run_id: &str,
    run_dir: PathBuf,
) -> Result<i32> {
    let run_id = run_id.to_string();
    // Wait for a slot of the host-local gate (kernel-held: a crash frees it).
    let slot = crate::run::gate::acquire(&opts.home, store, &run_id, opts.max_runs)?;
    store.admit_run(&run_id, slot.index)?;
    // Mode 2+: open the outbox, the actor that drains it, and the replicator
    // that feeds it. Earlier runs' leftovers (a crash) are queued first.
    let outbox = if opts.remote.is_local() {
        None
    } else {
        // The outbox is derived: a run never fails because it cannot be
        // opened. The run's targets are recorded in state.db, so the next
        // run, daemon or flush queues what this one wrote.
        match crate::remote::replicate::open_outbox(&opts.home) {
            Ok(o) => Some(Arc::new(o)),
            Err(e) => {
                crate::say!(
                    "sparkwing: cannot open the sync outbox ({e}); this run is kept locally and `sparkwing sync flush --profile {}` will send it",
                    opts.profile
                );
                None
            }
        }
    };
    let sync = outbox.map(|outbox| {
        let session = crate::remote::session::SyncSession::over(
            outbox,
            Arc::clone(store),
            &opts.home,
            &opts.remote,
            SyncConfig::default(),
        );
        sync_warn(session.reconcile_once());
        (session.actor, session.repl)
    });
    crate::say!(
        "sparkwing: run {run_id} · pipeline {} · profile {} · logs {}",
        pipeline.name,
        opts.profile,
        run_dir.display()
    );

    let rt = crate::util::runtime()?;
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let groups = Arc::new(Mutex::new(HashSet::new()));
    let ctx = Arc::new(Ctx {
        store: Arc::clone(store),
        run_id: run_id.clone(),
        pipeline: pipeline.name.clone(),
        project_dir: project.dir.clone(),
        run_dir,
        home: opts.home.clone(),
        no_cache: opts.no_cache,
        prefix: opts.workers > 1 && pipeline.has_parallel_jobs(),
        cancel: cancel_rx,
        groups: Arc::clone(&groups),
        repl: sync.as_ref().map(|(_, r)| Arc::clone(r)),
        remote_cache: opts.remote.cache.as_ref().map(|e| Arc::clone(&e.view)),
        signing: opts.remote.signing.clone(),
        cache_max_size: opts
            .cache_max_size
            .unwrap_or(crate::run::evict::DEFAULT_MAX_SIZE),
    });
    let started = Instant::now();
    let (stop_actor, stopped) = tokio::sync::oneshot::channel::<()>();
    let signalled = Arc::new(tokio::sync::Notify::new());
    let (result, actor_task) = rt.block_on(async {
        let cancel_tx = Arc::new(cancel_tx);
        tokio::spawn(watch_signals(
            Arc::clone(&cancel_tx),
            groups,
            Arc::clone(&signalled),
        ));
        if let Some(mut stop) = opts.stop.clone() {
            tokio::spawn(async move {
                if stop.wait_for(|s| *s).await.is_ok() {
                    let _ = cancel_tx.send(true);
                }
            });
        }
        let actor_task = sync.as_ref().map(|(actor, _)| {
            let actor = Arc::clone(actor);
            tokio::spawn(async move {
                actor
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            })
        });
        let run = run_id.clone();
        replicate(&ctx, move |r, s| r.summary(s, &run)).await;
        // Events that arrive and then go quiet are published within about
        // a second (a segment closes once its oldest event has lingered).
        let segmenter = ctx.repl.is_some().then(|| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                let every =
                    Duration::from_millis(crate::remote::replicate::SEGMENT_LINGER_MS as u64);
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let run = ctx.run_id.clone();
                    replicate(&ctx, move |r, s| r.events(s, &run, false)).await;
                }
            })
        });
        let _stop_segmenter = AbortOnDrop(segmenter);
        (
            schedule(Arc::clone(&ctx), pipeline, opts.workers.max(1)).await,
            actor_task,
        )
    });
    // An error here is sparkwing's own (state.db, a log, the cache): the
    // caller records the run as failed with it.
    let results = result?;
    let cancelled = *ctx.cancel.borrow();
    let all_passed = results.values().all(|r| r.status.passed());
    let status = if cancelled {
        RunStatus::Cancelled
    } else if all_passed {
        RunStatus::Success
    } else {
        RunStatus::Failed
    };
    store.run_finished(&run_id, status, None)?;
    print_summary(&run_id, status.as_str(), started.elapsed(), &results);
    if let Some((actor, repl)) = &sync {
        sync_warn(
            repl.events(store, &run_id, true)
                .and_then(|_| repl.summary(store, &run_id)),
        );
        rt.block_on(async {
            // The final drain runs beside the run's actor, which is
            // stopped only afterwards: stopping it first would cancel the
            // deliveries it has under way, only for the drain to redo them.
            // Both respect each other's leases.
            finish_sync(actor, opts.sync_timeout, &signalled).await;
            let _ = stop_actor.send(());
            if let Some(t) = actor_task {
                let _ = t.await;
            }
        });
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(match status {
        RunStatus::Success => 0,
        RunStatus::Cancelled => 130,
        _ => 1,
    })
}

fn print_summary(
    run_id: &str,
    status: &str,
    elapsed: Duration,
    results: &IndexMap<String, JobResult>,
) {
    let mut rows = vec![vec![
        "  JOB".to_string(),
        "STATUS".into(),
        "DURATION".into(),
        "CACHE".into(),
    ]];
    for (name, r) in results {
        rows.push(vec![
            format!("  {name}"),
            r.status.as_str().to_string(),
            human_duration(r.duration),
            r.cache_note.clone(),
        ]);
    }
    let out = format!(
        "sparkwing: run {run_id} {status} in {}\n{}",
        human_duration(elapsed),
        util::table(&rows)
    );
    let _ = std::io::stderr().write_all(out.as_bytes());
}

/// First SIGINT/SIGTERM: cancel (steps get SIGTERM, then SIGKILL after a
/// grace period). Second: SIGKILL every step's process group at once.
async fn watch_signals(
    cancel: Arc<watch::Sender<bool>>,
    groups: Arc<Mutex<HashSet<i32>>>,
    signalled: Arc<tokio::sync::Notify>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut count = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        count += 1;
        // Whoever waits (the final sync) stops waiting on any signal.
        signalled.notify_waiters();
        if count == 1 {
            crate::say!("sparkwing: stopping the run (signal received); send it again to kill every step at once");
            let _ = cancel.send(true);
        } else {
            if let Ok(g) = groups.lock() {
                for &pgid in g.iter() {
                    kill_group(pgid, libc::SIGKILL);
                }
            }
        }
    }
}

fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall; a negative pid addresses the process group.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

async fn schedule(
    ctx: Arc<Ctx>,
    pipeline: &Pipeline,
    workers: usize,
) -> Result<IndexMap<String, JobResult>> {
    let mut status: IndexMap<String, JobStatus> = pipeline
        .jobs
        .keys()
        .map(|k| (k.clone(), JobStatus::Pending))
        .collect();
    let mut results: IndexMap<String, JobResult> = IndexMap::new();
    let mut running: JoinSet<(String, Result<JobResult>)> = JoinSet::new();
    let mut cancel = ctx.cancel.clone();
    let mut first_error: Option<anyhow::Error> = None;
    loop {
        let cancelled = *cancel.borrow();
        // Skip the dependents of failed jobs, repeatedly, until stable.
        let mut changed = true;
        while changed && !cancelled {
            changed = false;
            for (name, job) in pipeline.jobs.iter() {
                if status[name] != JobStatus::Pending {
                    continue;
                }
                if let Some(dep) = job
                    .needs
                    .iter()
                    .find(|n| status[n.as_str()].blocks_dependents())
                {
                    let why = format!(
                        "skipped: needs `{dep}`, which {}",
                        status[dep.as_str()].as_str()
                    );
                    finish_unstarted(&ctx, name, JobStatus::Skipped, &why).await?;
                    status[name] = JobStatus::Skipped;
                    results.insert(
                        name.clone(),
                        JobResult {
                            status: JobStatus::Skipped,
                            duration: Duration::ZERO,
                            cache_note: "-".into(),
                        },
                    );
                    changed = true;
                }
            }
        }
        if !cancelled && first_error.is_none() {
            for (name, job) in pipeline.jobs.iter() {
                if running.len() >= workers {
                    break;
                }
                if status[name] == JobStatus::Pending
                    && job.needs.iter().all(|n| status[n.as_str()].passed())
                {
                    status[name] = JobStatus::Running;
                    let (ctx, name, job) = (Arc::clone(&ctx), name.clone(), job.clone());
                    running.spawn(async move {
                        let r = run_job(&ctx, &name, &job).await;
                        (name, r)
                    });
                }
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (name, r) = joined.map_err(|e| anyhow!("a job task failed: {e}"))?;
                match r {
                    Ok(r) => {
                        status[&name] = r.status;
                        results.insert(name, r);
                    }
                    Err(e) => {
                        status[&name] = JobStatus::Failed;
                        results.insert(name, JobResult { status: JobStatus::Failed, duration: Duration::ZERO, cache_note: "-".into() });
                        first_error.get_or_insert(e);
                    }
                }
            }
            _ = cancel.changed(), if !cancelled => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    // Whatever never started was cancelled.
    for name in pipeline.jobs.keys() {
        if status[name] == JobStatus::Pending {
            finish_unstarted(
                &ctx,
                name,
                JobStatus::Cancelled,
                "cancelled before it started",
            )
            .await?;
            results.insert(
                name.clone(),
                JobResult {
                    status: JobStatus::Cancelled,
                    duration: Duration::ZERO,
                    cache_note: "-".into(),
                },
            );
        }
    }
    // Report in definition order.
    let mut ordered = IndexMap::new();
    for name in pipeline.jobs.keys() {
        if let Some(r) = results.shift_remove(name) {
            ordered.insert(name.clone(), r);
        }
    }
    Ok(ordered)
}

async fn finish_unstarted(ctx: &Arc<Ctx>, job: &str, status: JobStatus, why: &str) -> Result<()> {
    let (run, job, why) = (ctx.run_id.clone(), job.to_string(), why.to_string());
    db(ctx, move |s| {
        s.job_finished(
            &run,
            &job,
            &JobEnd {
                status,
                rest_status: status.rest(),
                cache_key: None,
                cached_from_run: None,
                error: Some(&why),
            },
        )
    })
    .await
}

/// How often, at most, log output is queued for the remote while a step runs.
const SHIP_EVERY: Duration = Duration::from_secs(1);
const SHIP_BYTES: u64 = 256 * 1024;

/// A job's log file and how much of it has been queued for the remote.
struct LogFile {
    file: File,
    written: u64,
    shipped: u64,
    shipped_at: Instant,
    /// Set by the first failed write or fsync: the log ends there (later
    /// lines are not written, so it has no gap), and the job fails with it.
    failed: Option<StorageFault>,
}

/// Aborts a background task when dropped (every way out of a job).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Job output: the log file, the terminal, and (Mode 2+) the outbox.
struct Sink {
    log: Mutex<LogFile>,
    path: PathBuf,
    job: String,
    prefix: Option<String>,
    ship: Option<(Arc<Replicator>, Arc<Store>, String, String)>,
}

impl Sink {
    /// Queues the log bytes written so far when `force`, or when enough
    /// bytes or time have gone by. Called with the log lock held, so chunks
    /// are queued in file order.
    fn ship_locked(&self, log: &mut LogFile, force: bool) {
        let Some((repl, store, run, job)) = &self.ship else {
            return;
        };
        let due = log.written - log.shipped >= SHIP_BYTES || log.shipped_at.elapsed() >= SHIP_EVERY;
        if log.written > log.shipped && (force || due) {
            // Durable before it is referenced from the outbox.
            if let Err(e) = log.file.sync_data() {
                self.log_failed(log, &e);
            }
            sync_warn(repl.log(store, run, job, log.written));
            log.shipped = log.written;
            log.shipped_at = Instant::now();
        }
    }

    /// Ships what is due (by size or age), if anything.
    fn ship_due(&self) {
        if let Ok(mut log) = self.log.lock() {
            self.ship_locked(&mut log, false);
        }
    }

    fn ship_now(&self) {
        if let Ok(mut log) = self.log.lock() {
            if let Err(e) = log.file.sync_data() {
                self.log_failed(&mut log, &e);
            }
            self.ship_locked(&mut log, true);
        }
    }

    /// The first failure to write the log: said at once, naming the file
    /// and the fix; the job then fails with it.
    fn log_failed(&self, log: &mut LogFile, e: &std::io::Error) {
        if log.failed.is_some() {
            return;
        }
        let fault = StorageFault::from_io(&self.path, e).with_note(format!(
            "job {}'s log ends at byte {} and the rest of its output is only shown here",
            self.job, log.written
        ));
        crate::say!("sparkwing: warning: {fault}");
        log.failed = Some(fault);
    }

    /// The failure that cut the log short, if any.
    fn failed(&self) -> Option<StorageFault> {
        self.log.lock().ok().and_then(|l| l.failed.clone())
    }

    fn line(&self, line: &[u8]) {
        if let Ok(mut log) = self.log.lock() {
            // A full disk does not stop the step (its output still reaches
            // the terminal), but the log stops at the first failed write and
            // the job fails with it. After a failed (possibly partial)
            // write, the file's real length is what was written: chunks
            // must cover exactly the file.
            if log.failed.is_none() {
                match log.file.write_all(line) {
                    Ok(()) => log.written += line.len() as u64,
                    Err(e) => {
                        if let Ok(m) = log.file.metadata() {
                            log.written = m.len();
                        }
                        self.log_failed(&mut log, &e);
                    }
                }
            }
            self.ship_locked(&mut log, false);
        }
        let mut out = std::io::stdout().lock();
        if let Some(p) = &self.prefix {
            let _ = out.write_all(p.as_bytes());
        }
        let _ = out.write_all(line);
        if !line.ends_with(b"\n") {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
}

enum StepEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
}

/// Waits for this host's hold on cache key `key` (see `cache::KeyHold`).
/// `None` if the run is cancelled meanwhile; `Some(None)` if the hold
/// cannot be taken at all (the job then runs without it, with a warning).
async fn hold_cache_key(ctx: &Arc<Ctx>, name: &str, key: &str) -> Option<Option<cache::KeyHold>> {
    let mut cancel = ctx.cancel.clone();
    let since = Instant::now();
    let mut said = false;
    loop {
        let (home, k, run) = (ctx.home.clone(), key.to_string(), ctx.run_id.clone());
        let tried = tokio::task::spawn_blocking(move || cache::try_hold_key(&home, &k, &run)).await;
        match tried {
            Ok(Ok(Ok(hold))) => {
                if said {
                    crate::say!(
                        "sparkwing: job {name}: the other run is done after {}",
                        human_duration(since.elapsed())
                    );
                }
                return Some(Some(hold));
            }
            Ok(Ok(Err(holder))) => {
                if !said && since.elapsed() >= Duration::from_secs(1) {
                    let who = if holder.is_empty() {
                        "another run".to_string()
                    } else {
                        format!("run {holder}")
                    };
                    crate::say!(
                        "sparkwing: job {name}: waiting for {who} of the same job on this host to finish with its outputs"
                    );
                    said = true;
                }
            }
            Ok(Err(e)) => {
                crate::say!(
                    "sparkwing: job {name}: could not take this host's lock on its cache key ({e:#}); running without it"
                );
                return Some(None);
            }
            Err(e) => {
                crate::say!("sparkwing: job {name}: could not take this host's lock on its cache key ({e}); running without it");
                return Some(None);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            Ok(_) = cancel.wait_for(|c| *c) => return None,
        }
    }
}

/// The cache-hit phase: the job's outputs restored from the local cache or,
/// on a local miss, from another runner's (verified, then imported). Returns
/// the producing run and the number of files, or `None` to run the job.
async fn cache_hit(
    ctx: &Arc<Ctx>,
    name: &str,
    job: &Job,
    k: &str,
) -> Result<Option<(String, usize)>> {
    let outputs = job
        .cache
        .as_ref()
        .map(|c| c.outputs.clone())
        .unwrap_or_default();
    let k2 = k.to_string();
    let mut found = db(ctx, move |s| s.cache_get(&k2)).await?;
    // With a signing key, an entry imported without that key's signature
    // is not trusted for a hit (it is checked on the remote again, and
    // imported afresh if it verifies).
    if let (Some(key), Some(e)) = (&ctx.signing, &found) {
        // Entries from before origins were recorded ('unknown') are not
        // vouched for either: the job runs once more.
        let vouched = e.origin == "local" || e.origin == key.origin();
        if !vouched {
            found = None;
        }
    }
    // A local miss may be another runner's hit.
    if let (None, Some(view)) = (&found, &ctx.remote_cache) {
        let signing = ctx.signing.as_deref();
        // Blobs found present are relied on until the import commits.
        let home = ctx.home.clone();
        let _importing = tokio::task::spawn_blocking(move || cache::begin_save(&home)).await??;
        let target = view.id().to_string();
        match crate::remote::cache::fetch(view.as_ref(), &ctx.home, k, &outputs, signing).await {
            Ok(Some(fetched)) => {
                let entry = fetched.entry;
                let e2 = entry.clone();
                db(ctx, move |s| {
                    s.cache_import(&e2)?;
                    // Where the remote holds these chunks: a later save
                    // names them instead of sending them again.
                    s.cache_chunks_put(&target, &fetched.chunks, None)
                })
                .await?;
                found = Some(entry);
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(gone) = e.downcast_ref::<crate::remote::pack::MissingPack>() {
                    // Never name that pack again in a save.
                    let pack = gone.0.clone();
                    let _ = db(ctx, move |s| s.cache_chunks_forget_pack(&target, &pack)).await;
                }
                crate::say!(
                    "sparkwing: job {name}: could not use the remote cache ({}); running the job",
                    crate::util::one_line(&format!("{e:#}"), 1000)
                )
            }
        }
    }
    let Some(entry) = found else {
        return Ok(None);
    };
    let dir = ctx.project_dir.clone();
    let cas_home = ctx.home.clone();
    let manifest = entry.manifest.clone();
    let restored = tokio::task::spawn_blocking(move || -> Result<usize> {
        let m: Manifest = serde_json::from_str(&manifest).context("reading the cache manifest")?;
        cache::restore(&Cas::new(&cas_home), &dir, &m, &outputs)
    })
    .await?;
    match restored {
        Ok(n) => {
            // The most recently used: the last to be evicted.
            let key = entry.key.clone();
            if let Err(e) = db(ctx, move |s| s.cache_touch(&key)).await {
                crate::say!("sparkwing: job {name}: could not record the cache hit ({e:#})");
            }
            Ok(Some((entry.run_id, n)))
        }
        Err(e) => {
            crate::say!("sparkwing: job {name}: cache entry unusable ({e:#}); running the job");
            Ok(None)
        }
    }
}

/// The outputs phase of a job that passed: its declared outputs stored in
/// the CAS, indexed under its key and queued for the remote. `Ok(Err(why))`
/// fails the job (an output missing); `Err` is sparkwing's own failure (the
/// cache's files, a full disk).
async fn store_outputs(
    ctx: &Arc<Ctx>,
    name: &str,
    k: &str,
    spec: &crate::run::pipeline::CacheSpec,
) -> Result<std::result::Result<usize, String>> {
    let (dir, cas_home, outputs) = (
        ctx.project_dir.clone(),
        ctx.home.clone(),
        spec.outputs.clone(),
    );
    // Held until the manifest is committed (see `cache::SaveHold`).
    let snap = tokio::task::spawn_blocking(move || {
        let hold = cache::begin_save(&cas_home)?;
        Ok::<_, anyhow::Error>((hold, cache::snapshot(&Cas::new(&cas_home), &dir, &outputs)))
    })
    .await??;
    let (saving, snap) = snap;
    let m = match snap {
        Ok(m) => m,
        Err(e) if crate::fault::is_storage(&e) => return Err(e),
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    let now = now_ms();
    let entry = CacheEntry {
        key: k.to_string(),
        job: name.to_string(),
        pipeline: ctx.pipeline.clone(),
        run_id: ctx.run_id.clone(),
        created_at: now,
        expires_at: spec.ttl.map(|t| now.saturating_add(t.as_millis() as i64)),
        manifest: serde_json::to_string(&m)?,
        origin: "local".into(),
    };
    let queued = entry.clone();
    db(ctx, move |s| s.cache_put(&entry)).await?;
    drop(saving);
    replicate(ctx, move |r, s| r.cache(s, &queued)).await;
    // Back under the size limit, least recently used first (this entry is
    // held, so it stays). A failure here never fails the job.
    let (home, max) = (ctx.home.clone(), ctx.cache_max_size);
    match db(ctx, move |s| crate::run::evict::enforce(&home, s, max)).await {
        Ok(Some(p)) if !p.removed_entries.is_empty() => crate::say!(
            "sparkwing: job {name}: the local cache was over its {} limit; evicted {} least recently used entr{} ({} freed)",
            crate::util::human_bytes(max),
            p.removed_entries.len(),
            if p.removed_entries.len() == 1 { "y" } else { "ies" },
            crate::util::human_bytes(p.freed_bytes)
        ),
        Ok(_) => {}
        Err(e) => crate::say!("sparkwing: job {name}: could not trim the local cache ({e:#})"),
    }
    Ok(Ok(m.files.len()))
}

/// Records how a job ended and what the scheduler learns from it.
/// Steps that never started end `cancelled` with a cancelled job, else
/// `skipped`.
async fn end_job(
    ctx: &Arc<Ctx>,
    name: &str,
    started: Instant,
    status: JobStatus,
    cached_from_run: Option<String>,
    error: Option<String>,
    cache_note: String,
) -> Result<JobResult> {
    let (run, jn) = (ctx.run_id.clone(), name.to_string());
    db(ctx, move |s| {
        s.job_finished(
            &run,
            &jn,
            &JobEnd {
                status,
                rest_status: status.rest(),
                cache_key: None,
                cached_from_run: cached_from_run.as_deref(),
                error: error.as_deref(),
            },
        )
    })
    .await?;
    Ok(JobResult {
        status,
        duration: started.elapsed(),
        cache_note,
    })
}

/// The job's log file, opened for appending, and what ships it.
fn open_sink(ctx: &Arc<Ctx>, name: &str) -> Result<Arc<Sink>> {
    let log_path = ctx.run_dir.join(format!("{name}.log"));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| anyhow!(StorageFault::from_io(&log_path, &e)))?;
    let written = log.metadata().map(|m| m.len()).unwrap_or(0);
    let sink = Arc::new(Sink {
        log: Mutex::new(LogFile {
            file: log,
            written,
            shipped: written,
            shipped_at: Instant::now(),
            failed: None,
        }),
        path: log_path,
        job: name.to_string(),
        prefix: ctx.prefix.then(|| format!("[{name}] ")),
        ship: ctx.repl.clone().map(|r| {
            (
                r,
                Arc::clone(&ctx.store),
                ctx.run_id.clone(),
                name.to_string(),
            )
        }),
    });
    Ok(sink)
}

/// A step's environment: the job's, the step's, then sparkwing's own.
fn step_env(
    ctx: &Arc<Ctx>,
    name: &str,
    job: &Job,
    step: &crate::run::pipeline::Step,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = job
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.0.clone())));
    env.push(("SPARKWING_RUN_ID".into(), ctx.run_id.clone()));
    env.push(("SPARKWING_JOB".into(), name.to_string()));
    env.push(("SPARKWING_PIPELINE".into(), ctx.pipeline.clone()));
    env.push((
        "SPARKWING_PROJECT_DIR".into(),
        ctx.project_dir.to_string_lossy().into_owned(),
    ));
    env
}

/// How step `i` ended, as its status, exit code and (when it failed or
/// was cancelled) the job's status and reason.
fn step_outcome(
    end: Result<StepEnd>,
    i: usize,
    step: &crate::run::pipeline::Step,
    job: &Job,
) -> (StepStatus, Option<i32>, Option<(JobStatus, String)>) {
    match end {
        Ok(StepEnd::Exited(0)) => (StepStatus::Success, Some(0), None),
        Ok(StepEnd::Exited(c)) => (
            StepStatus::Failed,
            Some(c),
            Some((
                JobStatus::Failed,
                format!("step {} (`{}`) exited with code {c}", i + 1, step.label()),
            )),
        ),
        Ok(StepEnd::Signalled(sig)) => (
            StepStatus::Failed,
            None,
            Some((
                JobStatus::Failed,
                format!(
                    "step {} (`{}`) was killed by signal {sig}",
                    i + 1,
                    step.label()
                ),
            )),
        ),
        Ok(StepEnd::TimedOut) => (
            StepStatus::Failed,
            None,
            Some((
                JobStatus::Failed,
                format!(
                    "timed out after {}",
                    human_duration(job.timeout.unwrap_or_default())
                ),
            )),
        ),
        Ok(StepEnd::Cancelled) => (
            StepStatus::Cancelled,
            None,
            Some((JobStatus::Cancelled, "cancelled".to_string())),
        ),
        Err(e) => (
            StepStatus::Failed,
            None,
            Some((
                JobStatus::Failed,
                format!("step {} could not start: {e:#}", i + 1),
            )),
        ),
    }
}

/// A job runs in phases: its cache key; this host's hold on the key; a
/// cache hit (local, or another runner's), which ends it; its steps; its
/// outputs stored.
async fn run_job(ctx: &Arc<Ctx>, name: &str, job: &Job) -> Result<JobResult> {
    let started = Instant::now();
    let (run, jname) = (ctx.run_id.clone(), name.to_string());

    // The cache key, computed before anything runs.
    let key = match &job.cache {
        Some(_) => {
            let (dir, j) = (ctx.project_dir.clone(), job.clone());
            match tokio::task::spawn_blocking(move || cache::cache_key(&dir, &j)).await? {
                Ok(k) => Some(k),
                Err(e) => {
                    let why = format!("computing the cache key: {e:#}");
                    crate::say!("sparkwing: job {name}: {why}");
                    let f = JobStatus::Failed;
                    return end_job(ctx, name, started, f, None, Some(why), "-".into()).await;
                }
            }
        }
        None => None,
    };
    {
        let (run, jn, k) = (run.clone(), jname.clone(), key.clone());
        db(ctx, move |s| s.job_started(&run, &jn, k.as_deref())).await?;
    }

    // Another run of this job on this host finishes with its outputs first
    // (see `cache::KeyHold`); held until this job's outputs are restored or
    // stored, that is, until this function returns.
    let hold = match &key {
        Some(k) => match hold_cache_key(ctx, name, k).await {
            Some(h) => h,
            None => {
                let why = "cancelled while waiting for another run of this job".to_string();
                let c = JobStatus::Cancelled;
                return end_job(ctx, name, started, c, None, Some(why), "-".into()).await;
            }
        },
        None => None,
    };

    // A cache hit restores the outputs and skips the steps.
    if let (Some(k), false) = (&key, ctx.no_cache) {
        if let Some((from, n)) = cache_hit(ctx, name, job, k).await? {
            let note = format!("restored from run {from}");
            crate::say!("sparkwing: job {name}: cache hit, {n} file(s) {note}");
            let c = JobStatus::Cached;
            return end_job(ctx, name, started, c, Some(from), None, note).await;
        }
    }

    let sink = open_sink(ctx, name)?;
    if !ctx.prefix {
        crate::say!("sparkwing: ▶ {name}");
    }
    // Output that arrives and then goes quiet is still shipped within
    // SHIP_EVERY, so other runners' dashboards tail it live.
    let shipper = sink.ship.is_some().then(|| {
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SHIP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = Arc::clone(&sink);
                let _ = tokio::task::spawn_blocking(move || s.ship_due()).await;
            }
        })
    });
    let _stop_shipper = AbortOnDrop(shipper);
    let deadline = job.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut lingering: Vec<(i32, oneshot::Receiver<()>)> = Vec::new();
    let mut failure: Option<(JobStatus, String)> = None;
    // Sparkwing's own failure (state.db, the log): ends the job, after its
    // background processes are stopped below, and then the run.
    let mut broken: Option<anyhow::Error> = None;
    for (i, step) in job.steps.iter().enumerate() {
        {
            let (run, jn) = (run.clone(), jname.clone());
            if let Err(e) = db(ctx, move |s| s.step_started(&run, &jn, i)).await {
                broken = Some(e);
                break;
            }
        }
        let wd = match &job.working_directory {
            Some(w) => ctx.project_dir.join(w),
            None => ctx.project_dir.clone(),
        };
        let env = step_env(ctx, name, job, step);
        let end = run_step(
            ctx,
            &step.run,
            &wd,
            &env,
            StepScope {
                deadline,
                hold: hold.as_ref(),
            },
            &sink,
            &mut lingering,
        )
        .await;
        // The step's output is durable (and queued) before the step is
        // recorded as done.
        let s2 = Arc::clone(&sink);
        let _ = tokio::task::spawn_blocking(move || s2.ship_now()).await;
        let (st, code, fail) = step_outcome(end, i, step, job);
        let recorded = {
            let (run, jn) = (run.clone(), jname.clone());
            db(ctx, move |s| s.step_finished(&run, &jn, i, st, code)).await
        };
        // A log cut short fails the job even when the step passed: the
        // run's record is incomplete.
        if let Some(cut) = sink.failed() {
            broken = Some(anyhow!(cut));
            break;
        }
        if let Err(e) = recorded {
            broken = Some(e);
            break;
        }
        if fail.is_some() {
            failure = fail;
            break;
        }
    }
    // Background processes a step left behind end with their job.
    for (pgid, done) in lingering {
        kill_group(pgid, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        ctx.groups.lock().map(|mut g| g.remove(&pgid)).ok();
    }
    let s2 = Arc::clone(&sink);
    let _ = tokio::task::spawn_blocking(move || s2.ship_now()).await;
    if let Some(e) = broken.or_else(|| sink.failed().map(|cut| anyhow!(cut))) {
        return Err(e);
    }

    let mut cache_note = "-".to_string();
    if let (None, Some(k), Some(spec)) = (&failure, &key, &job.cache) {
        match store_outputs(ctx, name, k, spec).await? {
            Ok(files) => cache_note = format!("stored ({files} file(s))"),
            Err(why) => failure = Some((JobStatus::Failed, why)),
        }
    }
    let (status, error) = match failure {
        None => (JobStatus::Success, None),
        Some((s, why)) => {
            crate::say!("sparkwing: job {name} {}: {why}", s.as_str());
            (s, Some(why))
        }
    };
    end_job(ctx, name, started, status, None, error, cache_note).await
}

/// What a step inherits from its job: the job's deadline, and its hold on
/// its cache key (see `run_step`).
struct StepScope<'a> {
    deadline: Option<tokio::time::Instant>,
    hold: Option<&'a cache::KeyHold>,
}

async fn run_step(
    ctx: &Arc<Ctx>,
    script: &str,
    wd: &Path,
    env: &[(String, String)],
    scope: StepScope<'_>,
    sink: &Arc<Sink>,
    lingering: &mut Vec<(i32, oneshot::Receiver<()>)>,
) -> Result<StepEnd> {
    let StepScope { deadline, hold } = scope;
    let (reader, writer) = std::io::pipe().context("creating the output pipe")?;
    let mut cmd = tokio::process::Command::new("sh");
    if let Some(fd) = hold.map(cache::KeyHold::fd) {
        // The step's processes share the job's hold on its cache key, so a
        // run killed with -9 keeps it until the steps it left running end:
        // no other run starts writing the same outputs under them.
        // SAFETY: between fork and exec only fcntl runs, which is
        // async-signal-safe, on a descriptor this process owns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.arg("-c")
        .arg(script)
        .current_dir(wd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("duplicating the output pipe")?)
        .stderr(writer)
        .process_group(0);
    let spawned = cmd.spawn();
    // The Command holds the pipe's write ends: drop it so EOF can arrive.
    drop(cmd);
    let mut child = spawned.with_context(|| format!("running sh in {}", wd.display()))?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    ctx.groups.lock().map(|mut g| g.insert(pgid)).ok();

    let (done_tx, mut done_rx) = oneshot::channel();
    let sink2 = Arc::clone(sink);
    std::thread::spawn(move || {
        pump(reader, &sink2);
        let _ = done_tx.send(());
    });

    let mut cancel = ctx.cancel.clone();
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        status = child.wait() => Ok(status.context("waiting for the step")?),
        _ = sleep => Err(StepEnd::TimedOut),
        _ = cancel.wait_for(|c| *c) => Err(StepEnd::Cancelled),
    };
    let end = match stop {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => StepEnd::Exited(c),
                (None, Some(sig)) => StepEnd::Signalled(sig),
                (None, None) => StepEnd::Exited(-1),
            }
        }
        Err(why) => {
            // Stop the whole process group: SIGTERM, a grace period, SIGKILL.
            kill_group(pgid, libc::SIGTERM);
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                kill_group(pgid, libc::SIGKILL);
                let _ = child.wait().await;
            }
            kill_group(pgid, libc::SIGKILL);
            why
        }
    };
    // Normally the pipe closes with the shell. If it stays open, the step
    // left background processes behind: they live until the job ends.
    if tokio::time::timeout(PIPE_LINGER, &mut done_rx)
        .await
        .is_ok()
    {
        ctx.groups.lock().map(|mut g| g.remove(&pgid)).ok();
    } else {
        lingering.push((pgid, done_rx));
    }
    Ok(end)
}

/// Reads a step's output pipe to EOF, line by line, into the sink.
fn pump(mut reader: std::io::PipeReader, sink: &Sink) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            sink.line(&pending[start..start + pos + 1]);
            start += pos + 1;
        }
        pending.drain(..start);
        // Very long lines are passed on in pieces.
        if pending.len() > 64 * 1024 {
            sink.line(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        sink.line(&pending);
    }
}

/// Waits up to `timeout` for the run's writes to reach the remote, then
/// says in one line what is left and how it will be delivered.
async fn finish_sync(actor: &SyncActor, timeout: Duration, signalled: &tokio::sync::Notify) {
    let deadline = tokio::time::Instant::now() + timeout;
    // Ctrl-C while waiting: stop waiting (everything stays queued).
    let drained = tokio::select! {
        r = actor.drain(deadline) => r.map(|_| ()),
        _ = signalled.notified() => Ok(()),
    };
    let line = match (drained, actor.pending().await) {
        (Ok(_), Ok((0, _))) => format!("sparkwing: synced to {}", actor.target_ids().join(", ")),
        (_, Ok((n, bytes))) => {
            let why = crate::remote::session::clause(
                &crate::remote::session::blocking_reason(actor).await,
            );
            format!(
                "sparkwing: {n} write(s) ({}) not yet delivered to {}{why}; they are safe in {} and go out with the next run, `sparkwing sync daemon` or `sparkwing sync flush`",
                crate::util::human_bytes(bytes),
                actor.target_ids().join(", "),
                actor.outbox().path().display()
            )
        }
        (_, Err(e)) => format!("sparkwing: could not read the outbox: {e}"),
    };
    crate::say!("{line}");
}

#[cfg(test)]
mod tests {
    //! The scheduler, in process: real `sh` steps, a real `state.db` in a
    //! temporary home, Mode 1.
    use super::*;
    use crate::run::pipeline::{parse_project, Project};

    struct Fixture {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        project: Project,
    }

    fn fixture(yaml: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("project");
        std::fs::create_dir_all(dir.join(".sparkwing")).unwrap();
        let file = dir.join(".sparkwing/sparkwing.yaml");
        std::fs::write(&file, yaml).unwrap();
        let config = parse_project(&file, yaml).unwrap();
        Fixture {
            home: tmp.path().join("home"),
            _tmp: tmp,
            project: Project { dir, file, config },
        }
    }

    fn run(f: &Fixture, workers: usize) -> (i32, IndexMap<String, crate::local::store::JobRow>) {
        run_until(f, workers, None)
    }

    fn run_until(
        f: &Fixture,
        workers: usize,
        stop: Option<watch::Receiver<bool>>,
    ) -> (i32, IndexMap<String, crate::local::store::JobRow>) {
        let pipeline = f.project.pipeline("p").unwrap();
        let code = run_pipeline(
            &f.project,
            pipeline,
            RunOptions {
                home: f.home.clone(),
                remote: Remote::default(),
                sync_timeout: Duration::ZERO,
                max_runs: 4,
                workers,
                no_cache: false,
                profile: "laptop".into(),
                cache_max_size: None,
                stop,
            },
        )
        .unwrap();
        let store = Store::open(&f.home).unwrap();
        let run = store.list_runs(None, None, 1).unwrap().remove(0);
        let jobs = store
            .jobs(&run.id)
            .unwrap()
            .into_iter()
            .map(|j| (j.name.clone(), j))
            .collect();
        (code, jobs)
    }

    #[test]
    fn a_steps_end_maps_to_its_status_and_the_jobs_reason() {
        let f = fixture(
            "pipelines:\n  - name: p\n    jobs:\n      j: { timeout: 90s, steps: [{ run: 'make it' }] }\n",
        );
        let job = &f.project.pipeline("p").unwrap().jobs["j"];
        let step = &job.steps[0];
        let o = |end| step_outcome(end, 0, step, job);
        assert_eq!(
            o(Ok(StepEnd::Exited(0))),
            (StepStatus::Success, Some(0), None)
        );
        let (st, code, fail) = o(Ok(StepEnd::Exited(3)));
        assert_eq!((st, code), (StepStatus::Failed, Some(3)));
        assert_eq!(
            fail,
            Some((
                JobStatus::Failed,
                "step 1 (`make it`) exited with code 3".into()
            ))
        );
        let (st, _, fail) = o(Ok(StepEnd::TimedOut));
        assert_eq!(st, StepStatus::Failed);
        assert!(fail
            .is_some_and(|(s, why)| s == JobStatus::Failed && why.starts_with("timed out after")));
        assert_eq!(
            o(Ok(StepEnd::Cancelled)),
            (
                StepStatus::Cancelled,
                None,
                Some((JobStatus::Cancelled, "cancelled".into()))
            )
        );
        let (st, _, fail) = o(Err(anyhow!("no sh")));
        assert_eq!(st, StepStatus::Failed);
        assert_eq!(fail.unwrap().1, "step 1 could not start: no sh");
    }

    #[test]
    fn a_failure_skips_its_dependents_and_nothing_else() {
        let f = fixture(
            "pipelines:\n  - name: p\n    jobs:\n      a: { steps: [{ run: 'exit 3' }] }\n      b: { needs: [a], steps: [{ run: 'true' }] }\n      c: { needs: [b], steps: [{ run: 'true' }] }\n      d: { steps: [{ run: 'true' }] }\n",
        );
        let (code, jobs) = run(&f, 2);
        assert_eq!(code, 1);
        let status = |j: &str| jobs[j].status.as_str();
        assert_eq!(status("a"), "failed");
        assert_eq!(status("b"), "skipped");
        assert_eq!(status("c"), "skipped", "transitively");
        assert_eq!(status("d"), "success", "an independent job still runs");
        assert!(jobs["b"]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("needs `a`")));
        // It never ran: it is recorded as starting when it ended.
        assert_eq!(jobs["b"].started_at, jobs["b"].finished_at);
    }

    #[test]
    fn needs_order_the_jobs_and_one_worker_runs_one_job_at_a_time() {
        let f = fixture(
            "pipelines:\n  - name: p\n    jobs:\n      first: { steps: [{ run: 'sleep 0.05' }] }\n      second: { steps: [{ run: 'sleep 0.05' }] }\n      last: { needs: [first, second], steps: [{ run: 'true' }] }\n",
        );
        let (code, jobs) = run(&f, 1);
        assert_eq!(code, 0);
        assert!(
            jobs.values().all(|j| j.status == "success"),
            "{:?}",
            jobs.keys()
        );
        let s = |j: &str| jobs[j].started_at.unwrap();
        let e = |j: &str| jobs[j].finished_at.unwrap();
        // One worker: the two roots do not overlap.
        assert!(s("second") >= e("first") || s("first") >= e("second"));
        // `needs`: the last starts after both have finished.
        assert!(s("last") >= e("first") && s("last") >= e("second"));
    }

    #[test]
    fn a_timed_out_job_fails_and_skips_its_rest_and_its_dependents() {
        let f = fixture(
            "pipelines:\n  - name: p\n    jobs:\n      slow: { timeout: 1s, steps: [{ run: 'sleep 30' }, { run: 'true' }] }\n      after: { needs: [slow], steps: [{ run: 'true' }] }\n      other: { steps: [{ run: 'true' }] }\n",
        );
        let (code, jobs) = run(&f, 2);
        assert_eq!(code, 1);
        let status = |j: &str| jobs[j].status.as_str();
        assert_eq!(status("slow"), "failed");
        assert!(
            jobs["slow"]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("timed out after 1")),
            "{:?}",
            jobs["slow"].error
        );
        assert_eq!(status("after"), "skipped");
        assert_eq!(status("other"), "success");
        let store = Store::open(&f.home).unwrap();
        let run = store.list_runs(None, None, 1).unwrap().remove(0);
        assert_eq!(run.status, "failed");
        let steps: Vec<(i64, String)> = store
            .steps(&run.id)
            .unwrap()
            .into_iter()
            .filter(|s| s.job == "slow")
            .map(|s| (s.index, s.status))
            .collect();
        assert_eq!(
            steps,
            vec![(0, "failed".to_string()), (1, "skipped".to_string())]
        );
    }

    /// A stop (as a first Ctrl-C) while a job runs: the running step is
    /// stopped, its job and the jobs that never started end `cancelled`,
    /// a job that already passed keeps its status, and the run exits 130.
    #[test]
    fn a_stop_cancels_the_running_job_and_what_never_started() {
        let f = fixture(
            "pipelines:\n  - name: p\n    jobs:\n      quick: { steps: [{ run: 'true' }] }\n      long: { needs: [quick], steps: [{ run: 'sleep 30' }, { run: 'true' }] }\n      next: { needs: [long], steps: [{ run: 'true' }] }\n",
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let home = f.home.clone();
        // Stop once `long`'s first step is running.
        let watcher = std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(20));
            let Ok(store) = Store::open(&home) else {
                continue;
            };
            let Ok(runs) = store.list_runs(None, None, 1) else {
                continue;
            };
            let Some(run) = runs.first() else { continue };
            let running = store.steps(&run.id).is_ok_and(|steps| {
                steps
                    .iter()
                    .any(|s| s.job == "long" && s.index == 0 && s.status == "running")
            });
            if running {
                let _ = stop_tx.send(true);
                return;
            }
        });
        let (code, jobs) = run_until(&f, 2, Some(stop_rx));
        watcher.join().unwrap();
        assert_eq!(code, 130);
        let status = |j: &str| jobs[j].status.as_str();
        assert_eq!(status("quick"), "success");
        assert_eq!(status("long"), "cancelled");
        assert_eq!(status("next"), "cancelled");
        let store = Store::open(&f.home).unwrap();
        let run = store.list_runs(None, None, 1).unwrap().remove(0);
        assert_eq!(run.status, "cancelled");
        let long: Vec<(i64, String)> = store
            .steps(&run.id)
            .unwrap()
            .into_iter()
            .filter(|s| s.job == "long")
            .map(|s| (s.index, s.status))
            .collect();
        assert_eq!(
            long,
            vec![(0, "cancelled".to_string()), (1, "cancelled".to_string())]
        );
    }
}
