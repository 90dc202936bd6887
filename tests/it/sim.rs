//! A deterministic simulation of the sync engine (issue 9, requirement 6):
//! one process drives the replicator, the outbox and the actor's `deliver`
//! through seeded random interleavings and crash points against an
//! in-memory object store that injects faults, then checks the remote
//! against the local store with a checker of its own (no product
//! verification code). The FoundationDB/TigerBeetle way, scaled down.
//!
//! Each schedule (one seed) gets a fresh `SPARKWING_HOME`, one to three
//! runs and up to three simulated processes, each with its own `outbox.db`
//! and `state.db` connections, and takes 20-60 steps chosen by the seed's
//! PRNG: state changes, log appends, cache entries, `Replicator::{events,
//! summary, log, cache, reconcile}`, another writer recording segment and
//! chunk boundaries with small limits, claims, deliveries and settles (each
//! its own step, so a process can crash between claim and deliver or
//! between deliver and settle), process crashes (the kernel noticing is
//! simulated by ageing the dead owner's leases), a live process stalling
//! past the lease of a claim it has not delivered yet (a laptop asleep:
//! the lease is aged in `outbox.db` and the claim's `lease_until` is in the
//! past, while the process keeps the claim, so others may take the stream
//! over before it resumes, delivers and settles it), a run killed with
//! `kill -9` (its recorded pid made dead), a deleted `outbox.db`. The
//! target refuses some applies and, worse, applies some and loses the
//! answer. At the end every run finishes, one process reconciles and
//! drains the outbox with faults off, and then:
//!
//! - every local event is in exactly one `runs/<run>/events/*.ndjson`
//!   object, equal to its row, and each object is a recorded segment;
//! - `run.json` has the local status, `events_through` and log totals;
//! - each job's chunks are 0.. contiguous, the recorded ranges, and
//!   concatenate to the local log file;
//! - each cache entry's manifest and blobs are there, byte-identical;
//! - no key outside the layout; every object written twice was written with
//!   the same bytes (only `run.json` is rewritten); a manifest only after
//!   its blobs; a `run.json` never older than one written before it,
//!   unless a process died between delivering it and settling (at-least-once
//!   replay then starts again from the stream's head). A process that
//!   stalled past its lease gets no such exception: `deliver` must refuse
//!   its stale claim.
//!
//! What it cannot see: races inside one `Replicator` call (its steps are
//! whole calls, so the outbox's high-water check in `enqueue`, which guards
//! a caller that read the store before another process enqueued and
//! delivered, is never the only guard here), and a lease running out in
//! the middle of a delivery (a stall is a step of its own, between claim
//! and deliver; one between deliver and settle would be the at-least-once
//! replay a crash there already models). A process may claim a stream
//! again before it has settled its stale claim of it (as `sync_once` may,
//! claiming ahead while a stale claim is queued): `Outbox::settle` once
//! released the lease by owner, so settling the stale claim released the
//! newer claim's lease too and a third claim could then be overwritten by
//! an older `run.json`; the sim found that, and leases now carry a token
//! per claim (`Claim::lease`).
//!
//! - `SPARKWING_SIM_SEED=N` replays one seed and prints its schedule.
//! - `SPARKWING_SIM_SCHEDULES=N` sets how many seeds run (default
//!   [`DEFAULT_SCHEDULES`]); `SPARKWING_SIM_BASE=N` shifts which seeds, to
//!   explore beyond the default set.
//!
//! Not deterministic to the bit: event timestamps and the segment linger
//! read the wall clock. The schedule of each seed is.

use sparkwing::status::{JobStatus, RunStatus, StepStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use rusqlite::{params, Connection};
use serde_json::Value;
use sparkwing::local::store::{CacheEntry, JobEnd, NewRun, RunRow, RunTargets, Store};
use sparkwing::remote::replicate::Replicator;
use sparkwing::run::cache::{Cas, FileEntry, Manifest};
use sparkwing::run::logs::log_path;
use sparkwing_outbox::backoff::DecorrelatedJitterBuilder;
use sparkwing_outbox::clock::SystemClock;
use sparkwing_outbox::{Claim, Outbox};
use sparkwing_sync::target::sha256_hex;
use sparkwing_sync::{Applied, ObjectStoreTarget, Op, Target, TargetError};
use tokio::runtime::Runtime;

/// Seeds run by default: about 70 s of a debug build on an idle two-core
/// machine (some 45 ms of CPU per schedule, most of it SQLite).
const DEFAULT_SCHEDULES: u64 = 1500;

/// The one remote every surface of every simulated run points at.
const TARGET: &str = "memory:sim";

const JOBS: [&str; 2] = ["build", "test"];

/// Simulated processes (slots); each may be open or crashed.
const PROCS: usize = 3;

// ---------------------------------------------------------------- PRNG

/// SplitMix64: small, fast, and the whole state is the seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------- target

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Refused before anything is written.
    Before,
    /// Written, but the answer never came back.
    AnswerLost,
    /// Credentials refused (nothing written).
    Auth,
}

#[derive(Debug)]
struct Remote {
    rng: Rng,
    faults: bool,
    /// Every object written, in order (answer lost or not).
    journal: Vec<(String, Bytes)>,
}

/// The in-memory object store behind a wrapper that journals every write
/// and injects seeded faults.
#[derive(Debug)]
struct SimTarget {
    inner: ObjectStoreTarget,
    remote: Mutex<Remote>,
}

impl SimTarget {
    fn remote(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_faults(&self, on: bool) {
        self.remote().faults = on;
    }

    fn journal(&self) -> Vec<(String, Bytes)> {
        self.remote().journal.clone()
    }
}

// `Target` is declared with `async_trait`; this is its expansion, written
// out so the test needs no extra crate.
impl Target for SimTarget {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn apply<'s, 'o, 'f>(&'s self, op: &'o Op) -> BoxFut<'f, Result<Applied, TargetError>>
    where
        's: 'f,
        'o: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let fault = {
                let mut r = self.remote();
                if !r.faults {
                    Fault::None
                } else {
                    match r.rng.below(100) {
                        0..=9 => Fault::Before,
                        10..=21 => Fault::AnswerLost,
                        22..=23 => Fault::Auth,
                        _ => Fault::None,
                    }
                }
            };
            match fault {
                Fault::Before => return Err(TargetError::transient("injected: refused")),
                Fault::Auth => return Err(TargetError::auth("injected: 403 Forbidden")),
                Fault::None | Fault::AnswerLost => {}
            }
            let applied = self.inner.apply(op).await?;
            self.remote().journal.push((op.key(), op.body().clone()));
            if fault == Fault::AnswerLost {
                return Err(TargetError::transient("injected: applied, answer lost"));
            }
            Ok(applied)
        })
    }
}

// ---------------------------------------------------------------- world

type R<T> = Result<T, String>;

/// What the schedules exercised, summed (printed at the end).
#[derive(Debug, Default)]
struct Stats {
    steps: u64,
    claims: u64,
    deliveries: u64,
    delivery_errors: u64,
    settles: u64,
    crashes_holding_claims: u64,
    /// Claims whose process stalled past their lease before delivering.
    stalls: u64,
    /// Stale claims their process resumed and delivered (settling them in
    /// a later step).
    stale_deliveries: u64,
    /// ... of a run document's stream, after another claim with newer
    /// versions of it had written since the stall: the case where writing
    /// would put an older `run.json` over a newer one.
    stale_summaries_overtaken: u64,
    outbox_deletions: u64,
    runs_killed: u64,
    runs_finished_early: u64,
    drained_entries: u64,
}

/// `?` for product results: the error, with what was being done.
trait OrFail<T> {
    fn or_fail(self, what: &str) -> R<T>;
}

impl<T, E: Into<anyhow::Error>> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {:#}", e.into()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Done,
}

struct SimJob {
    name: &'static str,
    steps: usize,
    /// The next step to start (or the one running when `step_open`).
    next: usize,
    step_open: bool,
    phase: Phase,
    cached: bool,
}

struct SimRun {
    id: String,
    jobs: Vec<SimJob>,
    finished: bool,
    /// Its process was killed: it writes nothing more.
    killed: bool,
}

impl SimRun {
    fn live(&self) -> bool {
        !self.finished && !self.killed
    }
}

/// A claim a process holds, and what delivering it gave (once delivered).
struct Held {
    claim: Claim,
    delivered: Option<(usize, Option<TargetError>)>,
    /// Its process stalled past the lease before delivering it.
    stale: bool,
    /// Since the stall, another claim of its stream with a later entry
    /// wrote to the target.
    overtaken: bool,
}

/// One simulated sparkwing process: its own connections.
struct Open {
    outbox: Arc<Outbox>,
    repl: Replicator,
    store: Store,
}

#[derive(Default)]
struct Proc {
    open: Option<Open>,
    /// Its lease owner id in outbox.db, learned from its first claim.
    owner: Option<String>,
    held: Vec<Held>,
}

struct World<'a> {
    rng: Rng,
    home: PathBuf,
    target: Arc<SimTarget>,
    mem: Arc<InMemory>,
    /// The runs' own connection (state changes).
    store: Store,
    runs: Vec<SimRun>,
    procs: Vec<Proc>,
    log: &'a mut Vec<String>,
    stats: &'a mut Stats,
    rt: &'a Runtime,
    /// Runs whose run document was delivered by a process that died before
    /// settling: at-least-once replay may write older versions again.
    redelivered: BTreeSet<String>,
    seed: u64,
}

fn targets() -> RunTargets {
    RunTargets {
        state: Some(TARGET.into()),
        logs: Some(TARGET.into()),
        cache: Some(TARGET.into()),
    }
}

/// Retries are due at once: the simulation has no clock to wait on.
fn no_backoff() -> DecorrelatedJitterBuilder {
    DecorrelatedJitterBuilder {
        base: Duration::ZERO,
        cap: Duration::ZERO,
        max_times: None,
        seed: None,
    }
}

fn remove_if_present(p: &Path) -> R<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", p.display())),
    }
}

impl World<'_> {
    fn note(&mut self, s: String) {
        self.log.push(s);
    }

    fn open_proc(&mut self, p: usize) -> R<()> {
        let outbox =
            Arc::new(Outbox::open_with(&self.home, no_backoff()).or_fail("opening outbox.db")?);
        let store = Store::open(&self.home).or_fail("opening state.db")?;
        let repl = Replicator::new(Arc::clone(&outbox), self.home.clone(), targets(), None);
        self.procs[p] = Proc {
            open: Some(Open {
                outbox,
                repl,
                store,
            }),
            owner: None,
            held: Vec::new(),
        };
        self.note(format!("P{p} starts"));
        Ok(())
    }

    /// A random open process that is not stalled, starting one when none
    /// is (while a slot is free).
    fn some_proc(&mut self) -> R<usize> {
        let open: Vec<usize> = (0..PROCS)
            .filter(|&p| self.procs[p].open.is_some())
            .collect();
        let awake: Vec<usize> = open.iter().copied().filter(|&p| !self.stalled(p)).collect();
        if !awake.is_empty() {
            return Ok(awake[self.rng.below(awake.len())]);
        }
        let free: Vec<usize> = (0..PROCS)
            .filter(|&p| self.procs[p].open.is_none())
            .collect();
        if free.is_empty() {
            return Ok(open[self.rng.below(open.len())]);
        }
        let p = free[self.rng.below(free.len())];
        self.open_proc(p)?;
        Ok(p)
    }

    /// Whether process `p` holds a claim it stalled on (and has yet to
    /// settle).
    fn stalled(&self, p: usize) -> bool {
        self.procs[p].held.iter().any(|h| h.stale)
    }

    fn open(&self, p: usize) -> R<&Open> {
        self.procs[p]
            .open
            .as_ref()
            .ok_or_else(|| format!("sim bug: P{p} is not open"))
    }

    /// `kill -9` of a process: its handles and claims vanish; the kernel
    /// noticing the dead pid is simulated by ageing its leases.
    fn crash(&mut self, p: usize) -> R<()> {
        let proc = std::mem::take(&mut self.procs[p]);
        let held = proc.held.len();
        drop(proc.open);
        if held > 0 {
            self.stats.crashes_holding_claims += 1;
        }
        for h in &proc.held {
            if h.delivered.is_some() {
                if let Some(run) = h.claim.stream.strip_prefix("summary/") {
                    self.redelivered.insert(run.to_string());
                }
            }
        }
        if let Some(owner) = proc.owner {
            let c = self.outbox_sql()?;
            // Its claims' lease tokens are `<owner>#<n>`.
            c.execute(
                "UPDATE leases SET until = 0 WHERE substr(owner, 1, length(?1) + 1) = ?1 || '#'",
                [&owner],
            )
            .or_fail("ageing a dead process's leases")?;
        }
        self.note(format!("P{p} crashes holding {held} claim(s)"));
        Ok(())
    }

    fn outbox_sql(&self) -> R<Connection> {
        let c = Connection::open(self.home.join("outbox.db")).or_fail("opening outbox.db")?;
        c.busy_timeout(Duration::from_secs(30))
            .or_fail("configuring outbox.db")?;
        Ok(c)
    }

    fn state_sql(&self) -> R<Connection> {
        let c = Connection::open(self.home.join("state.db")).or_fail("opening state.db")?;
        c.busy_timeout(Duration::from_secs(30))
            .or_fail("configuring state.db")?;
        Ok(c)
    }

    fn create_run(&mut self) -> R<()> {
        let i = self.runs.len();
        let id = format!("SIM{:016X}R{i}", self.seed);
        let mut jobs = Vec::new();
        let mut steps = Vec::new();
        for name in JOBS {
            let n = if self.rng.chance(70) { 1 } else { 2 };
            for s in 0..n {
                steps.push((name.to_string(), s, format!("step {s}")));
            }
            jobs.push(SimJob {
                name,
                steps: n,
                next: 0,
                step_open: false,
                phase: Phase::Pending,
                cached: false,
            });
        }
        let row = RunRow {
            id: id.clone(),
            pipeline: "sim".into(),
            status: "running".into(),
            profile: "sim".into(),
            project_dir: "/sim".into(),
            host: sparkwing::util::hostname(),
            pid: std::process::id() as i64,
            started_at: sparkwing::util::now_ms(),
            finished_at: None,
            error: None,
        };
        self.store
            .create_run(&NewRun {
                run: &row,
                targets: targets(),
                jobs: JOBS.iter().map(|j| (j.to_string(), Vec::new())).collect(),
                steps,
            })
            .or_fail("create_run")?;
        self.runs.push(SimRun {
            id: id.clone(),
            jobs,
            finished: false,
            killed: false,
        });
        self.note(format!("run {i} created"));
        // A run reconciles and publishes its summary as it starts.
        if self.rng.chance(60) {
            let p = self.some_proc()?;
            let o = self.open(p)?;
            o.repl.reconcile(&o.store).or_fail("reconcile")?;
            o.repl.summary(&o.store, &id).or_fail("summary")?;
            self.note(format!("  P{p} reconciles, summary of run {i}"));
        }
        Ok(())
    }

    fn live_runs(&self) -> Vec<usize> {
        (0..self.runs.len())
            .filter(|&r| self.runs[r].live())
            .collect()
    }

    /// The run's next state change, then (usually) its events enqueued by
    /// the process that wrote it, as `exec` does.
    fn advance(&mut self, r: usize) -> R<()> {
        let id = self.runs[r].id.clone();
        let open: Vec<usize> = (0..JOBS.len())
            .filter(|&j| self.runs[r].jobs[j].phase != Phase::Done)
            .collect();
        let what;
        if open.is_empty() {
            let status = if self.rng.chance(70) {
                RunStatus::Success
            } else {
                RunStatus::Failed
            };
            self.store
                .run_finished(&id, status, None)
                .or_fail("run_finished")?;
            self.runs[r].finished = true;
            self.stats.runs_finished_early += 1;
            what = format!("run {r} finished {status}");
        } else {
            let j = open[self.rng.below(open.len())];
            let ok = self.rng.chance(80);
            let job = &mut self.runs[r].jobs[j];
            let name = job.name;
            match job.phase {
                Phase::Pending => {
                    job.phase = Phase::Running;
                    self.store
                        .job_started(&id, name, None)
                        .or_fail("job_started")?;
                    what = format!("run {r} {name} started");
                }
                Phase::Running if job.step_open => {
                    let idx = job.next;
                    job.step_open = false;
                    job.next += 1;
                    let (status, code) = if ok {
                        (StepStatus::Success, 0)
                    } else {
                        (StepStatus::Failed, 1)
                    };
                    self.store
                        .step_finished(&id, name, idx, status, Some(code))
                        .or_fail("step_finished")?;
                    what = format!("run {r} {name} step {idx} finished");
                }
                Phase::Running if job.next < job.steps => {
                    let idx = job.next;
                    job.step_open = true;
                    self.store
                        .step_started(&id, name, idx)
                        .or_fail("step_started")?;
                    what = format!("run {r} {name} step {idx} started");
                }
                Phase::Running | Phase::Done => {
                    job.phase = Phase::Done;
                    let end = JobEnd {
                        status: if ok {
                            JobStatus::Success
                        } else {
                            JobStatus::Failed
                        },
                        rest_status: StepStatus::Skipped,
                        cache_key: None,
                        cached_from_run: None,
                        error: (!ok).then_some("a step failed"),
                    };
                    self.store
                        .job_finished(&id, name, &end)
                        .or_fail("job_finished")?;
                    what = format!("run {r} {name} finished");
                }
            }
        }
        self.note(what);
        if self.rng.chance(70) {
            let p = self.some_proc()?;
            let o = self.open(p)?;
            o.repl.events(&o.store, &id, false).or_fail("events")?;
            let mut s = format!("  P{p} events(run {r})");
            if self.runs[r].finished && self.rng.chance(85) {
                let o = self.open(p)?;
                o.repl.events(&o.store, &id, true).or_fail("events")?;
                o.repl.summary(&o.store, &id).or_fail("summary")?;
                s.push_str(", events(force), summary");
            }
            self.note(s);
        }
        Ok(())
    }

    /// Appends to a job's log file; usually the writer ships it, else a
    /// crash left it for reconcile. Sometimes with a stale length.
    fn append_log(&mut self, r: usize) -> R<()> {
        let j = self.rng.below(JOBS.len());
        let (id, job) = (self.runs[r].id.clone(), JOBS[j]);
        let path = log_path(&self.home, &id, job);
        let most = if self.rng.chance(10) { 3000 } else { 200 };
        let n = 1 + self.rng.below(most);
        let bytes = self.rng.bytes(n);
        let before = std::fs::metadata(&path).map_or(0, |m| m.len());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating the log dir: {e}"))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("opening a log: {e}"))?;
        f.write_all(&bytes)
            .map_err(|e| format!("appending to a log: {e}"))?;
        drop(f);
        let len = before + n as u64;
        let mut s = format!("run {r} {job} log +{n} bytes (now {len})");
        if self.rng.chance(75) {
            let p = self.some_proc()?;
            let ship = if self.rng.chance(10) { before } else { len };
            let o = self.open(p)?;
            o.repl.log(&o.store, &id, job, ship).or_fail("log")?;
            s.push_str(&format!(", P{p} log(len {ship})"));
        }
        self.note(s);
        Ok(())
    }

    /// A job stores a cache entry: a blob in the CAS, its manifest in
    /// state.db (with its `cache.stored` event), then (usually) enqueued.
    fn cache(&mut self, r: usize) -> R<()> {
        let j = self.rng.below(JOBS.len());
        if self.runs[r].jobs[j].cached {
            return Ok(());
        }
        self.runs[r].jobs[j].cached = true;
        let (id, job) = (self.runs[r].id.clone(), JOBS[j]);
        let n = 1 + self.rng.below(3000);
        // Sometimes the same bytes as another job's blob (shared blobs).
        let body = if self.rng.chance(30) {
            b"a blob every job makes".to_vec()
        } else {
            self.rng.bytes(n)
        };
        let sha = sha256_hex(&body);
        Cas::new(&self.home)
            .put_fetched(&sha, &body)
            .or_fail("storing a blob")?;
        let manifest = Manifest {
            version: 1,
            files: vec![FileEntry {
                path: format!("out/{job}.bin"),
                sha256: sha.clone(),
                size: body.len() as u64,
                mode: 0o644,
                symlink: None,
            }],
        };
        let entry = CacheEntry {
            key: sha256_hex(format!("{id}/{job}").as_bytes()),
            job: job.into(),
            pipeline: "sim".into(),
            run_id: id.clone(),
            created_at: sparkwing::util::now_ms(),
            expires_at: None,
            manifest: serde_json::to_string(&manifest).or_fail("a manifest")?,
            origin: "local".into(),
        };
        self.store.cache_put(&entry).or_fail("cache_put")?;
        let mut s = format!("run {r} {job} cache entry ({} bytes)", body.len());
        if self.rng.chance(75) {
            let p = self.some_proc()?;
            let o = self.open(p)?;
            o.repl.cache(&self.store, &entry).or_fail("cache")?;
            s.push_str(&format!(", P{p} cache()"));
        }
        self.note(s);
        Ok(())
    }

    fn claim(&mut self, p: usize) -> R<()> {
        let streams = 1 + self.rng.below(3);
        let entries = 1 + self.rng.below(6);
        let bytes = if self.rng.chance(25) {
            1 + self.rng.below(400) as u64
        } else {
            u64::MAX
        };
        let claims = self
            .open(p)?
            .outbox
            .claim(
                &[TARGET.to_string()],
                streams,
                entries,
                bytes,
                Duration::ZERO,
            )
            .or_fail("claim")?;
        let what: Vec<String> = claims
            .iter()
            .map(|c| {
                let seqs: Vec<String> = c.entries.iter().map(|e| e.seq.to_string()).collect();
                format!("{}[{}]", c.stream, seqs.join(","))
            })
            .collect();
        if self.procs[p].owner.is_none() {
            // A claim's lease token is `<owner>#<n>`.
            if let Some((owner, _)) = claims.first().and_then(|c| c.lease.rsplit_once('#')) {
                self.procs[p].owner = Some(owner.to_string());
            }
        }
        self.stats.claims += claims.len() as u64;
        self.procs[p]
            .held
            .extend(claims.into_iter().map(|claim| Held {
                claim,
                delivered: None,
                stale: false,
                overtaken: false,
            }));
        self.note(format!("P{p} claims {}", what.join(" ")));
        Ok(())
    }

    fn deliver(&mut self, p: usize, h: usize) -> R<()> {
        let claim = self.procs[p].held[h].claim.clone();
        let (stale, overtaken) = {
            let held = &self.procs[p].held[h];
            (held.stale, held.overtaken)
        };
        let written_before = self.target.remote().journal.len();
        let target: &dyn Target = &*self.target;
        let (n, err) =
            self.rt
                .block_on(sparkwing_sync::actor::deliver(target, &claim, &SystemClock));
        let wrote = self.target.remote().journal.len() > written_before;
        self.note(format!(
            "P{p} delivers {}{} ({} entries): {n} ok{}",
            claim.stream,
            match (stale, overtaken) {
                (false, _) => "",
                (true, false) => " (stale lease)",
                (true, true) => " (stale lease, overtaken)",
            },
            claim.entries.len(),
            err.as_ref()
                .map(|e| format!(", then {e}"))
                .unwrap_or_default()
        ));
        self.stats.deliveries += 1;
        self.stats.delivery_errors += u64::from(err.is_some());
        if stale {
            self.stats.stale_deliveries += 1;
            if overtaken && claim.stream.starts_with("summary/") {
                self.stats.stale_summaries_overtaken += 1;
            }
        } else if wrote {
            // Stale claims of this stream have been overtaken by this one
            // when it carries a later entry than theirs.
            let last = claim.entries.last().map_or(i64::MIN, |e| e.seq);
            for proc in &mut self.procs {
                for other in &mut proc.held {
                    if other.stale
                        && other.delivered.is_none()
                        && other.claim.target == claim.target
                        && other.claim.stream == claim.stream
                        && other.claim.entries.last().is_some_and(|e| e.seq < last)
                    {
                        other.overtaken = true;
                    }
                }
            }
        }
        self.procs[p].held[h].delivered = Some((n, err));
        Ok(())
    }

    /// Process `p` stalls (a laptop asleep, a stopped process) holding the
    /// undelivered claim `h` until its lease has run out: the lease is aged
    /// in `outbox.db`, so another process may claim the stream, and the
    /// claim's `lease_until` is in the past, as time passed for everyone.
    /// The process keeps the claim and, in a later step, resumes delivering
    /// and settling it as if nothing happened.
    fn stall(&mut self, p: usize, h: usize) -> R<()> {
        let until = sparkwing::util::now_ms() - 1;
        let (target, stream, owner) = {
            let c = &self.procs[p].held[h].claim;
            (c.target.clone(), c.stream.clone(), c.lease.clone())
        };
        self.outbox_sql()?
            .execute(
                "UPDATE leases SET until = ?4 WHERE target = ?1 AND stream = ?2 AND owner = ?3",
                params![target, stream, owner, until],
            )
            .or_fail("ageing a stalled process's lease")?;
        let held = &mut self.procs[p].held[h];
        held.claim.lease_until = until;
        held.stale = true;
        self.stats.stalls += 1;
        self.note(format!("P{p} stalls past its lease on {stream}"));
        // Time passes for everyone: a run document's run moves on, and an
        // awake process enqueues its newer version.
        let Some(r) = (0..self.runs.len()).find(|&r| {
            stream
                .strip_prefix("summary/")
                .is_some_and(|run| run == self.runs[r].id)
        }) else {
            return Ok(());
        };
        if self.runs[r].live() {
            self.advance(r)?;
        }
        let q = self.some_proc()?;
        let o = self.open(q)?;
        let n = o
            .repl
            .summary(&o.store, &self.runs[r].id)
            .or_fail("summary")?;
        self.note(format!("  P{q} summary(run {r}): {n} new"));
        Ok(())
    }

    fn settle(&mut self, p: usize, h: usize) -> R<()> {
        let held = self.procs[p].held.remove(h);
        let Some((n, err)) = held.delivered else {
            return Err("sim bug: settling an undelivered claim".into());
        };
        self.open(p)?
            .outbox
            .settle(
                &held.claim,
                n,
                Duration::ZERO,
                err.as_ref()
                    .map(|e| (e.class, e.message.as_str(), e.retry_after)),
            )
            .or_fail("settle")?;
        self.stats.settles += 1;
        self.note(format!(
            "P{p} settles {} ({n} delivered)",
            held.claim.stream
        ));
        Ok(())
    }

    /// One random step. Returns false when the chosen step had nothing to
    /// act on (the caller picks again).
    fn step(&mut self) -> R<bool> {
        let live = self.live_runs();
        let any_run = (!self.runs.is_empty()).then(|| self.rng.below(self.runs.len()));
        let live_run = (!live.is_empty()).then(|| live[self.rng.below(live.len())]);
        let roll = self.rng.below(100);
        match roll {
            0..=2 => {
                if self.runs.len() >= 3 {
                    return Ok(false);
                }
                self.create_run()?;
            }
            3..=30 => {
                let Some(r) = live_run else { return Ok(false) };
                self.advance(r)?;
            }
            31..=40 => {
                let Some(r) = live_run else { return Ok(false) };
                self.append_log(r)?;
            }
            41..=42 => {
                let Some(r) = live_run else { return Ok(false) };
                self.cache(r)?;
            }
            43..=46 => {
                let Some(r) = any_run else { return Ok(false) };
                let force = self.rng.chance(50);
                let p = self.some_proc()?;
                let o = self.open(p)?;
                let id = &self.runs[r].id;
                let n = o.repl.events(&o.store, id, force).or_fail("events")?;
                self.note(format!("P{p} events(run {r}, force {force}): {n} new"));
            }
            47..=49 => {
                let Some(r) = any_run else { return Ok(false) };
                let p = self.some_proc()?;
                let o = self.open(p)?;
                let n = o
                    .repl
                    .summary(&o.store, &self.runs[r].id)
                    .or_fail("summary")?;
                self.note(format!("P{p} summary(run {r}): {n} new"));
            }
            50..=52 => {
                let p = self.some_proc()?;
                let o = self.open(p)?;
                let n = o.repl.reconcile(&o.store).or_fail("reconcile")?;
                self.note(format!("P{p} reconcile: {n} new"));
            }
            53..=54 => {
                // Another writer closes segments with other limits: the
                // boundaries are recorded, so who closes them is moot.
                let Some(r) = any_run else { return Ok(false) };
                let max = 1 + self.rng.below(4) as i64;
                let n = self
                    .store
                    .close_segments(&self.runs[r].id, false, 0, max)
                    .or_fail("close_segments")?;
                self.note(format!("run {r}: {n} segment(s) closed (max {max})"));
            }
            55..=56 => {
                // Likewise for log chunks, small ones.
                let Some(r) = any_run else { return Ok(false) };
                let job = JOBS[self.rng.below(JOBS.len())];
                let id = self.runs[r].id.clone();
                let len = std::fs::metadata(log_path(&self.home, &id, job)).map_or(0, |m| m.len());
                let max = 1 + self.rng.below(700) as u64;
                let n = self
                    .store
                    .record_log_chunks(&id, job, len, max)
                    .or_fail("record_log_chunks")?;
                self.note(format!("run {r} {job}: {n} chunk(s) recorded (max {max})"));
            }
            57..=66 => {
                let p = self.some_proc()?;
                // A stalled process may claim the stream of its stale claim
                // again before settling that one: each claim has its own
                // lease token, so the stale settle cannot release the new
                // claim's lease (see the module documentation).
                self.claim(p)?;
            }
            67..=80 => {
                let undelivered: Vec<(usize, usize)> = self.held(|h| h.delivered.is_none());
                if undelivered.is_empty() {
                    return Ok(false);
                }
                // Half the time, a stalled process resuming once its
                // stream was taken over, or else a claim taking over the
                // stream of a stalled one, when there is one.
                let resuming = self.held(|h| h.stale && h.overtaken && h.delivered.is_none());
                let rivals = self.rivals();
                let (p, h) = if !resuming.is_empty() && self.rng.chance(50) {
                    resuming[self.rng.below(resuming.len())]
                } else if !rivals.is_empty() && self.rng.chance(50) {
                    rivals[self.rng.below(rivals.len())]
                } else {
                    undelivered[self.rng.below(undelivered.len())]
                };
                // A stalled process mostly sleeps on until another has
                // taken its stream over and written newer versions.
                let held = &self.procs[p].held[h];
                if held.stale && !held.overtaken && self.rng.chance(80) {
                    return Ok(false);
                }
                self.deliver(p, h)?;
            }
            81..=91 => {
                let delivered: Vec<(usize, usize)> = self.held(|h| h.delivered.is_some());
                if delivered.is_empty() {
                    return Ok(false);
                }
                let (p, h) = delivered[self.rng.below(delivered.len())];
                self.settle(p, h)?;
            }
            92..=94 => {
                let fresh: Vec<(usize, usize)> = self.held(|h| h.delivered.is_none() && !h.stale);
                if fresh.is_empty() {
                    return Ok(false);
                }
                // Mostly a run document's claim: the stream where a stale
                // delivery would do harm.
                let summaries: Vec<(usize, usize)> = fresh
                    .iter()
                    .copied()
                    .filter(|&(p, h)| self.procs[p].held[h].claim.stream.starts_with("summary/"))
                    .collect();
                let (p, h) = if !summaries.is_empty() && self.rng.chance(75) {
                    summaries[self.rng.below(summaries.len())]
                } else {
                    fresh[self.rng.below(fresh.len())]
                };
                self.stall(p, h)?;
            }
            95..=97 => {
                let open: Vec<usize> = (0..PROCS)
                    .filter(|&p| self.procs[p].open.is_some())
                    .collect();
                if open.is_empty() {
                    return Ok(false);
                }
                let p = open[self.rng.below(open.len())];
                // A stalled process mostly lives to resume (a crash drops
                // its stale claim before it could do harm).
                if self.stalled(p) && self.rng.chance(75) {
                    return Ok(false);
                }
                self.crash(p)?;
            }
            98 => {
                let Some(r) = live_run else { return Ok(false) };
                // kill -9 of the run's process: its recorded pid is gone.
                self.state_sql()?
                    .execute("UPDATE runs SET pid = 0 WHERE id = ?1", [&self.runs[r].id])
                    .or_fail("killing a run")?;
                self.runs[r].killed = true;
                self.stats.runs_killed += 1;
                self.note(format!("run {r} killed"));
            }
            _ => {
                // The outbox is derived: every process dies, it is deleted,
                // and reconcile must rebuild what is still to deliver.
                for p in 0..PROCS {
                    if self.procs[p].open.is_some() {
                        self.crash(p)?;
                    }
                }
                for f in ["outbox.db", "outbox.db-wal", "outbox.db-shm"] {
                    remove_if_present(&self.home.join(f))?;
                }
                self.stats.outbox_deletions += 1;
                self.note("outbox.db deleted".into());
            }
        }
        Ok(true)
    }

    /// Undelivered claims that are not stale, of a stream a stale claim
    /// (not yet overtaken) is also of.
    fn rivals(&self) -> Vec<(usize, usize)> {
        let stale: BTreeSet<(&str, &str)> = self
            .procs
            .iter()
            .flat_map(|proc| &proc.held)
            .filter(|h| h.stale && !h.overtaken && h.delivered.is_none())
            .map(|h| (h.claim.target.as_str(), h.claim.stream.as_str()))
            .collect();
        self.held(|h| {
            !h.stale
                && h.delivered.is_none()
                && stale.contains(&(h.claim.target.as_str(), h.claim.stream.as_str()))
        })
    }

    fn held(&self, f: impl Fn(&Held) -> bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (p, proc) in self.procs.iter().enumerate() {
            for (h, held) in proc.held.iter().enumerate() {
                if f(held) {
                    out.push((p, h));
                }
            }
        }
        out
    }

    /// Every run ends, every process dies, one reconciles and drains the
    /// outbox with the faults off.
    fn finish(&mut self) -> R<()> {
        for r in 0..self.runs.len() {
            if self.runs[r].live() {
                self.store
                    .run_finished(&self.runs[r].id, RunStatus::Success, None)
                    .or_fail("run_finished")?;
                self.runs[r].finished = true;
            }
        }
        for p in 0..PROCS {
            if self.procs[p].open.is_some() {
                self.crash(p)?;
            }
        }
        self.target.set_faults(false);
        self.note("-- the end: runs finished, faults off, P0 reconciles and drains".into());
        self.open_proc(0)?;
        let o = self.open(0)?;
        o.repl.reconcile(&o.store).or_fail("reconcile")?;
        let all = [TARGET.to_string()];
        let mut drained = 0;
        for _ in 0..1000 {
            let claims = self
                .open(0)?
                .outbox
                .claim(&all, 16, 256, u64::MAX, Duration::ZERO)
                .or_fail("claim")?;
            if claims.is_empty() {
                break;
            }
            for c in &claims {
                let (n, err) = self.rt.block_on(sparkwing_sync::actor::deliver(
                    &*self.target,
                    c,
                    &SystemClock,
                ));
                self.open(0)?
                    .outbox
                    .settle(
                        c,
                        n,
                        Duration::ZERO,
                        err.as_ref()
                            .map(|e| (e.class, e.message.as_str(), e.retry_after)),
                    )
                    .or_fail("settle")?;
                if let Some(e) = err {
                    return Err(format!(
                        "delivering {} with faults off failed: {e}",
                        c.stream
                    ));
                }
                drained += n;
            }
        }
        self.stats.drained_entries += drained as u64;
        self.note(format!("P0 drained {drained} entries"));
        let (left, _) = self.open(0)?.outbox.pending(&all).or_fail("pending")?;
        if left > 0 {
            return Err(format!(
                "the outbox did not drain: {left} entries left (quarantined or leased)"
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- checker

/// What the local store holds, read with plain SQL.
struct LocalRun {
    id: String,
    status: String,
    /// seq -> the event as its columns.
    events: BTreeMap<i64, (i64, String, Option<String>, Value)>,
    segments: BTreeMap<i64, i64>,
    /// job -> (seq, offset, len) of its recorded chunks.
    chunks: BTreeMap<String, Vec<(i64, i64, i64)>>,
    /// cache key -> manifest JSON.
    cache: BTreeMap<String, Value>,
}

fn local_runs(c: &Connection) -> R<Vec<LocalRun>> {
    let q = |e: rusqlite::Error| format!("reading state.db: {e}");
    let runs: Vec<(String, String)> = c
        .prepare("SELECT id, status FROM runs ORDER BY id")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(q)?;
    let mut out = Vec::new();
    for (id, status) in runs {
        let events: BTreeMap<i64, (i64, String, Option<String>, Value)> = c
            .prepare("SELECT seq, ts, kind, job, data FROM events WHERE run_id = ?1")
            .and_then(|mut st| {
                st.query_map([&id], |r| {
                    let data: String = r.get(4)?;
                    Ok((
                        r.get::<_, i64>(0)?,
                        (
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            serde_json::from_str(&data).unwrap_or(Value::String(data)),
                        ),
                    ))
                })?
                .collect()
            })
            .map_err(q)?;
        let segments: BTreeMap<i64, i64> = c
            .prepare("SELECT first_seq, last_seq FROM event_segments WHERE run_id = ?1")
            .and_then(|mut st| {
                st.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(q)?;
        let mut chunks: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
        let rows: Vec<(String, i64, i64, i64)> = c
            .prepare(
                "SELECT job, seq, offset, len FROM log_chunks WHERE run_id = ?1 ORDER BY job, seq",
            )
            .and_then(|mut st| {
                st.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(q)?;
        for (job, seq, offset, len) in rows {
            chunks.entry(job).or_default().push((seq, offset, len));
        }
        let cache: Vec<(String, String)> = c
            .prepare("SELECT key, manifest FROM cache_entries WHERE run_id = ?1")
            .and_then(|mut st| {
                st.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(q)?;
        let cache = cache
            .into_iter()
            .map(|(k, m)| (k, serde_json::from_str(&m).unwrap_or(Value::String(m))))
            .collect();
        out.push(LocalRun {
            id,
            status,
            events,
            segments,
            chunks,
            cache,
        });
    }
    Ok(out)
}

fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The remote against the local store; every problem found, not just the
/// first.
fn check(
    home: &Path,
    mem: &InMemory,
    journal: &[(String, Bytes)],
    redelivered: &BTreeSet<String>,
    rt: &Runtime,
) -> R<()> {
    let mut bad: Vec<String> = Vec::new();
    let remote: BTreeMap<String, Bytes> = rt
        .block_on(async {
            let metas: Vec<object_store::ObjectMeta> = mem.list(None).try_collect().await?;
            let mut out = BTreeMap::new();
            for m in metas {
                let body = mem.get(&m.location).await?.bytes().await?;
                out.insert(m.location.to_string(), body);
            }
            Ok::<_, object_store::Error>(out)
        })
        .map_err(|e| format!("reading the remote: {e}"))?;
    let locals = local_runs(&Connection::open(home.join("state.db")).or_fail("opening state.db")?)?;
    let known: BTreeSet<&str> = locals.iter().map(|l| l.id.as_str()).collect();

    // Every key is one the layout defines, for a known run.
    let mut run_json: BTreeMap<&str, &Bytes> = BTreeMap::new();
    let mut segments: BTreeMap<&str, Vec<(i64, &Bytes)>> = BTreeMap::new();
    let mut chunks: BTreeMap<(&str, &str), Vec<(i64, &Bytes)>> = BTreeMap::new();
    let mut blobs: BTreeMap<&str, &Bytes> = BTreeMap::new();
    let mut manifests: BTreeMap<&str, &Bytes> = BTreeMap::new();
    for (key, body) in &remote {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["runs", run, "run.json"] if known.contains(run) => {
                run_json.insert(*run, body);
            }
            ["runs", run, "events", name] if known.contains(run) => {
                match name.strip_suffix(".ndjson").filter(|n| is_digits(n, 20)) {
                    Some(n) => segments
                        .entry(*run)
                        .or_default()
                        .push((n.parse().unwrap_or(-1), body)),
                    None => bad.push(format!("unexpected key {key}")),
                }
            }
            ["cas", pre, sha] if is_hex64(sha) && sha.starts_with(pre) && pre.len() == 2 => {
                blobs.insert(*sha, body);
            }
            ["keys", name] => match name.strip_suffix(".json").filter(|k| is_hex64(k)) {
                Some(k) => {
                    manifests.insert(k, body);
                }
                None => bad.push(format!("unexpected key {key}")),
            },
            [run, job, name] if known.contains(run) && JOBS.contains(job) => {
                match name.strip_suffix(".log").filter(|n| is_digits(n, 10)) {
                    Some(n) => chunks
                        .entry((*run, *job))
                        .or_default()
                        .push((n.parse().unwrap_or(-1), body)),
                    None => bad.push(format!("unexpected key {key}")),
                }
            }
            _ => bad.push(format!("unexpected key {key}")),
        }
    }

    let mut manifests_expected = BTreeSet::new();
    for l in &locals {
        let run = l.id.as_str();
        // Events: every local seq exactly once, as the local row, in
        // segments that are the recorded ones.
        let mut seen: BTreeMap<i64, String> = BTreeMap::new();
        for (first, body) in segments.get(run).into_iter().flatten() {
            let key = format!("runs/{run}/events/{first:020}.ndjson");
            let mut expect = *first;
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let Ok(v) = serde_json::from_slice::<Value>(line) else {
                    bad.push(format!("{key} line {}: not JSON", i + 1));
                    continue;
                };
                let Some(seq) = v.get("seq").and_then(Value::as_i64) else {
                    bad.push(format!("{key} line {}: no seq", i + 1));
                    continue;
                };
                if seq != expect {
                    bad.push(format!("{key}: seq {seq} where {expect} belongs"));
                }
                expect = seq + 1;
                if let Some(other) = seen.insert(seq, key.clone()) {
                    bad.push(format!(
                        "run {run}: event {seq} in {other} and again in {key}"
                    ));
                }
                match l.events.get(&seq) {
                    None => bad.push(format!("{key}: event {seq} does not exist locally")),
                    Some((ts, kind, job, data)) => {
                        let job_v = job
                            .as_deref()
                            .map_or(Value::Null, |j| Value::String(j.into()));
                        let same = v.get("run").and_then(Value::as_str) == Some(run)
                            && v.get("ts").and_then(Value::as_i64) == Some(*ts)
                            && v.get("kind").and_then(Value::as_str) == Some(kind.as_str())
                            && v.get("job").unwrap_or(&Value::Null) == &job_v
                            && v.get("data").unwrap_or(&Value::Null) == data;
                        if !same {
                            bad.push(format!(
                                "{key}: event {seq} differs from the local row: {v}"
                            ));
                        }
                    }
                }
            }
            match l.segments.get(first) {
                Some(last) if *last == expect - 1 => {}
                Some(last) => bad.push(format!(
                    "{key} ends at {} but the recorded segment ends at {last}",
                    expect - 1
                )),
                None => bad.push(format!("{key} is not a recorded segment")),
            }
        }
        let missing: Vec<&i64> = l.events.keys().filter(|s| !seen.contains_key(s)).collect();
        if !missing.is_empty() {
            bad.push(format!(
                "run {run}: events {missing:?} never reached the remote"
            ));
        }
        let last_seq = l.events.keys().next_back().copied().unwrap_or(0);

        // Logs: chunks 0.. contiguous, the recorded ranges, the file's bytes.
        let mut totals: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for job in JOBS {
            let file = std::fs::read(log_path(home, run, job)).unwrap_or_default();
            let mut remote_chunks = chunks.get(&(run, job)).cloned().unwrap_or_default();
            remote_chunks.sort_by_key(|c| c.0);
            let mut whole = Vec::new();
            for (i, (seq, body)) in remote_chunks.iter().enumerate() {
                if *seq != i as i64 {
                    bad.push(format!("{run}/{job}: chunk {seq} where {i} belongs"));
                }
                let recorded = l
                    .chunks
                    .get(job)
                    .and_then(|c| c.iter().find(|c| c.0 == *seq));
                match recorded {
                    Some((_, offset, len)) if *offset as usize == whole.len() && *len as usize == body.len() => {}
                    other => bad.push(format!(
                        "{run}/{job}: chunk {seq} ({} bytes at {}) is not the recorded one {other:?}",
                        body.len(),
                        whole.len()
                    )),
                }
                whole.extend_from_slice(body);
            }
            if whole != file {
                bad.push(format!(
                    "{run}/{job}: the remote chunks ({} bytes) are not the local log ({} bytes){}",
                    whole.len(),
                    file.len(),
                    if file.starts_with(&whole) {
                        ", a prefix"
                    } else {
                        ""
                    }
                ));
            }
            totals.insert(job, (remote_chunks.len(), file.len() as u64));
        }

        // The run document: the local status, every event, every chunk.
        match run_json
            .get(run)
            .map(|b| serde_json::from_slice::<Value>(b))
        {
            None => bad.push(format!("runs/{run}/run.json is missing")),
            Some(Err(e)) => bad.push(format!("runs/{run}/run.json: {e}")),
            Some(Ok(doc)) => {
                if doc["status"].as_str() != Some(l.status.as_str()) {
                    bad.push(format!(
                        "runs/{run}/run.json: status {} but {} locally",
                        doc["status"], l.status
                    ));
                }
                if doc["events_through"].as_i64() != Some(last_seq) {
                    bad.push(format!(
                        "runs/{run}/run.json: events_through {} but the last local event is {last_seq}",
                        doc["events_through"]
                    ));
                }
                for j in doc["jobs"].as_array().into_iter().flatten() {
                    let name = j["name"].as_str().unwrap_or_default();
                    let (n, bytes) = totals.get(name).copied().unwrap_or_default();
                    if j["log_chunks"].as_u64() != Some(n as u64)
                        || j["log_bytes"].as_u64() != Some(bytes)
                    {
                        bad.push(format!(
                            "runs/{run}/run.json: job {name} says {} chunks, {} bytes; the log is {n} chunks, {bytes} bytes",
                            j["log_chunks"], j["log_bytes"]
                        ));
                    }
                }
            }
        }

        // Cache: the manifest, and every blob it names, byte-identical.
        for (key, manifest) in &l.cache {
            manifests_expected.insert(key.clone());
            let entry = manifests
                .get(key.as_str())
                .map(|b| sparkwing::remote::cache::parse_entry(key, b));
            let m = match entry {
                Some(Ok(e))
                    if serde_json::to_value(e.manifest.local()).ok().as_ref() == Some(manifest)
                        && e.run_id.0 == *run =>
                {
                    e.manifest
                }
                other => {
                    bad.push(format!("keys/{key}.json is not the local entry: {other:?}"));
                    continue;
                }
            };
            // Every file read back from the packs, hashing to its name
            // (the local manifest's, compared above).
            match sparkwing::remote::pack::files_from(&m, |name| blobs.get(name).copied()) {
                Ok(files) => {
                    let want = m.files.iter().filter(|f| f.symlink.is_none()).count();
                    if files.len() != want {
                        bad.push(format!(
                            "keys/{key}.json: {} files read, {want} named",
                            files.len()
                        ));
                    }
                }
                Err(e) => bad.push(format!("keys/{key}.json: {e:#}")),
            }
        }
    }
    for k in manifests.keys() {
        if !manifests_expected.contains(*k) {
            bad.push(format!("keys/{k}.json has no local entry"));
        }
    }

    // The journal: an object written twice was written with the same
    // bytes (only a run document is rewritten); a manifest only after the
    // blobs it names; a run document never goes back in time (its stream
    // replays in order, and a retry never resends a version older than
    // one already written), unless a process died between delivering it
    // and settling: then at-least-once replay starts again from the head.
    let mut first: BTreeMap<&str, &Bytes> = BTreeMap::new();
    let mut summary_at: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
    let mut blob_written: BTreeSet<&str> = BTreeSet::new();
    for (key, body) in journal {
        let parts: Vec<&str> = key.split('/').collect();
        if let ["runs", run, "run.json"] = parts.as_slice() {
            let doc: Value = serde_json::from_slice(body).unwrap_or_default();
            let chunks: u64 = doc["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|j| j["log_chunks"].as_u64())
                .sum();
            let at = (doc["events_through"].as_i64().unwrap_or(-1), chunks);
            let top = summary_at.entry(*run).or_insert(at);
            if at < *top && !redelivered.contains(*run) {
                bad.push(format!(
                    "{key} went back in time: (events, chunks) {top:?} then {at:?}"
                ));
            }
            *top = at.max(*top);
            continue;
        }
        if let Some(prev) = first.insert(key, body) {
            if prev != body {
                bad.push(format!("{key} was written twice with different bytes"));
            }
        }
        if let ["cas", _, sha] = parts.as_slice() {
            blob_written.insert(*sha);
        }
        if let ["keys", name] = parts.as_slice() {
            let k = name.strip_suffix(".json").unwrap_or(name);
            match sparkwing::remote::cache::parse_entry(k, body) {
                Ok(e) => {
                    for sha in e.manifest.objects() {
                        if !blob_written.contains(sha.as_str()) {
                            bad.push(format!("{key} was published before its pack {sha}"));
                        }
                    }
                }
                Err(e) => bad.push(format!("{key}: {e:#}")),
            }
        }
    }

    if bad.is_empty() {
        return Ok(());
    }
    let n = bad.len();
    bad.truncate(20);
    Err(format!("{n} problem(s):\n  {}", bad.join("\n  ")))
}

// ---------------------------------------------------------------- driver

fn shm_tempdir() -> R<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("sparkwing-sim")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("sparkwing-sim").tempdir()
    };
    dir.map_err(|e| format!("creating a temporary SPARKWING_HOME: {e}"))
}

/// One schedule; its steps are appended to `log` as they happen.
fn run_schedule(seed: u64, rt: &Runtime, log: &mut Vec<String>, stats: &mut Stats) -> R<()> {
    let dir = shm_tempdir()?;
    let home = dir.path().join("home");
    let mut rng = Rng(seed);
    let mem = Arc::new(InMemory::new());
    let target = Arc::new(SimTarget {
        inner: ObjectStoreTarget::new(TARGET, Arc::clone(&mem) as Arc<dyn ObjectStore>, ""),
        remote: Mutex::new(Remote {
            rng: Rng(rng.next()),
            faults: true,
            journal: Vec::new(),
        }),
    });
    let store = Store::open(&home).or_fail("opening state.db")?;
    let steps = 20 + rng.below(41);
    let mut w = World {
        rng,
        home: home.clone(),
        target: Arc::clone(&target),
        mem: Arc::clone(&mem),
        store,
        runs: Vec::new(),
        procs: (0..PROCS).map(|_| Proc::default()).collect(),
        log,
        stats,
        rt,
        redelivered: BTreeSet::new(),
        seed,
    };
    let runs = 1 + w.rng.below(2);
    for _ in 0..runs {
        w.create_run()?;
    }
    let mut done = 0;
    let mut tries = 0;
    while done < steps && tries < steps * 20 {
        tries += 1;
        if w.step()? {
            done += 1;
            w.stats.steps += 1;
        }
    }
    w.finish()?;
    let journal = w.target.journal();
    let mem = Arc::clone(&w.mem);
    let redelivered = std::mem::take(&mut w.redelivered);
    drop(w);
    check(&home, &mem, &journal, &redelivered, rt)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seed of schedule `i`: spread out so neighbouring seeds differ.
fn seed_of(base: u64, i: u64) -> u64 {
    Rng(base.wrapping_add(i)).next() >> 1
}

#[test]
fn sim() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (seeds, verbose): (Vec<u64>, bool) = match env_u64("SPARKWING_SIM_SEED") {
        Some(seed) => (vec![seed], true),
        None => {
            let n = env_u64("SPARKWING_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
            let base = env_u64("SPARKWING_SIM_BASE").unwrap_or(0);
            ((0..n).map(|i| seed_of(base, i)).collect(), false)
        }
    };
    let started = Instant::now();
    let mut stats = Stats::default();
    for &seed in &seeds {
        let mut log = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_schedule(seed, &rt, &mut log, &mut stats)
        }));
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(p) => Some(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        if verbose {
            eprintln!("seed {seed}:\n  {}", log.join("\n  "));
        }
        if let Some(e) = failure {
            panic!(
                "sim: seed {seed} failed: {e}\n\
                 replay: SPARKWING_SIM_SEED={seed} cargo test --test it sim -- --nocapture\n\
                 schedule ({} steps):\n  {}",
                log.len(),
                log.join("\n  ")
            );
        }
    }
    eprintln!(
        "sim: {} schedule(s) consistent in {:.1}s; {stats:?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}
