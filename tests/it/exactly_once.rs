//! Exactly once, in order, whatever happens (issue 9, requirement 6): real
//! `sparkwing` processes against a `filesystem` remote and an S3 bucket
//! (moto), then `sync flush`, then the independent checker of
//! `tests/it/checker.rs` (which reads the remote with its own code).
//!
//! Randomised tests print their seed; `SPARKWING_TEST_SEED=<n>` replays one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::checker::{self, Checked, Scope, Snapshot};
use crate::util::*;

const PROFILE: &str = "team";

/// 8 parallel jobs of 10 `echo` steps each.
fn wide_jobs() -> String {
    let mut y = String::new();
    for j in 1..=8 {
        y.push_str(&format!("      j{j}:\n        steps:\n"));
        for k in 1..=10 {
            y.push_str(&format!(
                "          - run: echo \"j{j} step {k} of $SPARKWING_RUN_ID\"\n"
            ));
        }
    }
    y
}

/// Events of one run of [`wide_jobs`] with nothing else: run.started,
/// run.admitted, 8 x (job.started, job.finished), 80 x (step.started,
/// step.finished), run.finished.
const WIDE_EVENTS: usize = 1 + 1 + 8 * 2 + 80 * 2 + 1;

/// A small xorshift generator; its seed is printed so a failure replays.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("SPARKWING_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ std::process::id() as u64
            })
            | 1;
        eprintln!("{test}: SPARKWING_TEST_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

enum Remote {
    /// Surfaces `root/{state,logs,cache}`; `root` is moved to `away` while
    /// the share is "unmounted".
    Dir { root: PathBuf, away: PathBuf },
    /// A bucket with prefixes state, logs and cache, reached through a proxy
    /// that can cut the connection.
    S3 {
        proxy: Proxy,
        bucket: String,
        moto: Moto,
    },
}

/// A home and a project whose profile `team` replicates state, logs and
/// cache to one remote.
struct Rig {
    env: Env,
    remote: Remote,
}

impl Rig {
    fn fs(pipelines: &str) -> Rig {
        let env = Env::new();
        let root = env.home.path().join("share");
        let yaml = format!(
            "profiles:\n  {PROFILE}:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache }}\n{pipelines}",
            r = root.display()
        );
        env.write_project(&yaml);
        for s in ["state", "logs", "cache"] {
            std::fs::create_dir_all(root.join(s)).unwrap();
        }
        let away = env.home.path().join("share.away");
        Rig {
            env,
            remote: Remote::Dir { root, away },
        }
    }

    /// `None` (after saying why) when moto is not installed outside CI;
    /// under `CI=true` a missing moto fails (see `util::moto`).
    fn s3(pipelines: &str, bucket: &str) -> Option<Rig> {
        let moto = moto()?;
        moto.bucket(bucket);
        let proxy = Proxy::start(&moto.endpoint);
        let env = Env::new();
        let e = proxy.endpoint();
        let yaml = format!(
            "profiles:\n  {PROFILE}:\n    state: {{ type: s3, bucket: {bucket}, prefix: state, endpoint: \"{e}\" }}\n    logs: {{ type: s3, bucket: {bucket}, prefix: logs, endpoint: \"{e}\" }}\n    cache: {{ type: s3, bucket: {bucket}, prefix: cache, endpoint: \"{e}\" }}\n{pipelines}"
        );
        env.write_project(&yaml);
        Some(Rig {
            env,
            remote: Remote::S3 {
                proxy,
                bucket: bucket.to_string(),
                moto,
            },
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.env.cmd(args);
        if matches!(self.remote, Remote::S3 { .. }) {
            c.envs(S3_ENV);
        }
        c
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn spawn_run(&self, pipeline: &str) -> Child {
        self.spawn(&["run", pipeline, "--profile", PROFILE])
    }

    fn spawn_daemon(&self) -> Child {
        self.spawn(&["sync", "daemon", "--profile", PROFILE])
    }

    fn run_ok(&self, args: &[&str]) {
        let out = self.cmd(args).output().unwrap();
        expect_code(&out, 0);
    }

    /// The remote is reachable again (a share moved back into place).
    fn up(&self) {
        match &self.remote {
            Remote::Dir { root, away } => {
                if away.exists() {
                    assert!(!root.exists(), "{} was re-created", root.display());
                    std::fs::rename(away, root).unwrap();
                }
            }
            Remote::S3 { proxy, .. } => proxy.set_up(true),
        }
    }

    /// The remote is out of reach (its contents kept aside, not lost).
    fn down(&self) {
        match &self.remote {
            Remote::Dir { root, away } => {
                if root.exists() {
                    std::fs::rename(root, away).unwrap();
                }
            }
            Remote::S3 { proxy, .. } => proxy.set_up(false),
        }
    }

    fn snapshot(&self) -> Snapshot {
        match &self.remote {
            Remote::Dir { root, .. } => checker::dir_snapshot(root),
            Remote::S3 { moto, bucket, .. } => checker::s3_snapshot(&moto.endpoint, bucket),
        }
    }

    fn home(&self) -> PathBuf {
        self.env.sw_home()
    }

    /// `sync flush` (which settles dead runs first) must exit 0; then the
    /// independent checker compares the whole remote with the local store.
    fn flush_and_check(&self) -> Checked {
        self.up();
        let out = self
            .cmd(&["sync", "flush", "--profile", PROFILE, "--timeout", "180s"])
            .output()
            .unwrap();
        expect_code(&out, 0);
        let checked = checker::check(&self.home(), &self.snapshot(), Scope::Exclusive);
        // The product's own check must agree (it is not what grades the
        // test: the independent checker above is).
        let out = self
            .cmd(&["sync", "verify", "--profile", PROFILE])
            .output()
            .unwrap();
        expect_code(&out, 0);
        checked
    }

    fn db(&self) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(self.home().join("state.db")).unwrap();
        db.busy_timeout(Duration::from_secs(30)).unwrap();
        db
    }

    /// The run a process recorded (by its pid), if it got that far.
    fn run_of_pid(&self, pid: u32) -> Option<String> {
        if !self.home().join("state.db").exists() {
            return None;
        }
        use rusqlite::OptionalExtension;
        self.db()
            .query_row(
                "SELECT id FROM runs WHERE pid = ?1 ORDER BY id DESC LIMIT 1",
                [pid as i64],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    }

    /// Whether `pid` holds the lease of a cache stream whose head is a
    /// blob: it is uploading a cache blob right now.
    fn uploading_blob(&self, pid: u32) -> bool {
        let path = self.home().join("outbox.db");
        if !path.exists() {
            return false;
        }
        let Ok(db) = rusqlite::Connection::open(&path) else {
            return false;
        };
        let _ = db.busy_timeout(Duration::from_secs(5));
        db.query_row(
            "SELECT COUNT(*) FROM leases l JOIN entries e ON e.target = l.target AND e.stream = l.stream
             WHERE l.owner_pid = ?1 AND e.op = 'cache.blob' AND l.stream LIKE 'cache/%'",
            [pid as i64],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .unwrap_or(false)
    }
}

/// Whether process `pid` has a file whose path ends with `name` open.
fn has_open(pid: u32, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    rd.flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().ends_with(name)))
}

/// Polls `cond` every few milliseconds while `child` lives; true once it
/// holds, false when the child exits first or `limit` passes.
fn wait_while_alive(child: &mut Child, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    false
}

/// SIGKILL; true when the process died of it (it had not exited yet).
/// `Child::kill` sends SIGKILL and never signals a child already reaped
/// (whose pid may belong to another test's process by now).
fn kill9(child: &mut Child) -> bool {
    let _ = child.kill();
    child.wait().unwrap().code().is_none()
}

// ---------------------------------------------------------------- (a)

#[test]
fn thirty_two_runs_of_eight_parallel_jobs_replicate_every_event_and_byte_once() {
    let rig = Rig::fs(&format!(
        "pipelines:\n  - name: wide\n    jobs:\n{}",
        wide_jobs()
    ));
    const RUNS: usize = 32;
    for _ in 0..RUNS {
        rig.run_ok(&["run", "wide", "--profile", PROFILE]);
    }
    let c = rig.flush_and_check();
    assert_eq!(c.runs, RUNS);
    assert_eq!(c.events, RUNS * WIDE_EVENTS, "{c:?}");
    assert!(c.statuses.values().all(|s| s == "success"), "{c:?}");
    assert!(c.log_chunks >= RUNS * 8, "{c:?}");
    // Each job's log holds its ten lines (the checker compared the remote
    // with these files byte for byte).
    for run in c.statuses.keys() {
        for j in 1..=8 {
            let log =
                std::fs::read_to_string(rig.home().join(format!("runs/{run}/j{j}.log"))).unwrap();
            for k in 1..=10 {
                assert!(log.contains(&format!("j{j} step {k} of {run}\n")), "{log}");
            }
        }
    }
}

// ---------------------------------------------------------------- (b)

/// The wide jobs plus a cached job whose outputs depend only on the seed:
/// concurrent runs of one round compute the same key.
fn crowd_pipelines() -> String {
    format!(
        "pipelines:\n  - name: crowd\n    jobs:\n{}      build:\n        cache: {{ key: [seed.txt], outputs: [out] }}\n        steps:\n          - run: mkdir -p out && cat seed.txt seed.txt > out/a.bin && cp seed.txt out/b.txt\n",
        wide_jobs()
    )
}

fn eight_concurrent_runs_with_a_daemon(rig: &Rig, rounds: usize) {
    let mut daemon = rig.spawn_daemon();
    let mut flushes = 0;
    for round in 0..rounds {
        std::fs::write(
            rig.env.dir().join("seed.txt"),
            format!("seed of round {round}\n").repeat(500),
        )
        .unwrap();
        let runs: Vec<Child> = (0..8)
            .map(|_| {
                rig.cmd(&["run", "crowd", "--profile", PROFILE])
                    .env("SPARKWING_MAX_RUNS", "8")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Meanwhile, `sync flush` after `sync flush`: more processes that
        // reconcile (and publish run documents of) the live runs.
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let flusher = s.spawn(|| {
                let mut n = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let st = rig
                        .cmd(&["sync", "flush", "--profile", PROFILE, "--timeout", "5s"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(st.code().is_some(), "a flush died: {st:?}");
                    n += 1;
                }
                n
            });
            for r in runs {
                let out = r.wait_with_output().unwrap();
                if out.status.code() != Some(0) {
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                expect_code(&out, 0);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            flushes += flusher.join().unwrap();
        });
    }
    assert!(
        flushes >= rounds,
        "{flushes} flushes ran alongside the runs"
    );
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    let c = rig.flush_and_check();
    assert_eq!(c.runs, 8 * rounds);
    assert!(c.statuses.values().all(|s| s == "success"), "{c:?}");
    // Every run has the wide events plus at least the build job's start and
    // end (more when it computed rather than restored).
    assert!(c.events >= 8 * rounds * (WIDE_EVENTS + 2), "{c:?}");
    assert!(c.manifests >= rounds && c.blobs >= rounds, "{c:?}");
}

#[test]
fn eight_concurrent_runs_on_one_home_with_a_daemon_three_rounds_filesystem() {
    let rig = Rig::fs(&crowd_pipelines());
    eight_concurrent_runs_with_a_daemon(&rig, 3);
}

#[test]
fn eight_concurrent_runs_on_one_home_with_a_daemon_three_rounds_s3() {
    let Some(rig) = Rig::s3(&crowd_pipelines(), "crowd") else {
        return;
    };
    eight_concurrent_runs_with_a_daemon(&rig, 3);
}

// ---------------------------------------------------------------- (c)

/// Size of the cache-key input (sparse): hashing it takes about a
/// second (test builds compile SHA-256 optimized).
const BIG_KEY_BYTES: u64 = 512 << 20;
/// Size of the random cache output: its upload takes a while too.
const BLOB_BYTES: usize = 3 << 20;

fn kill_pipelines() -> String {
    format!(
        r#"pipelines:
  - name: work
    jobs:
      talk:
        steps:
          - run: |
              i=0
              while [ $i -lt 40 ]; do i=$((i+1)); echo "line $i of $SPARKWING_RUN_ID"; done
          - run: sleep 0.2; echo done talking
      build:
        cache: {{ key: [seed.txt], outputs: [out] }}
        steps:
          - run: mkdir -p out && cp seed.txt out/seed.txt && head -c {BLOB_BYTES} /dev/urandom > out/noise.bin
      hash:
        cache: {{ key: [big.bin], outputs: [hashed] }}
        steps:
          - run: mkdir -p hashed && echo hashed > hashed/marker
      after:
        needs: [build]
        steps:
          - run: ls out
"#
    )
}

#[derive(Default, Debug)]
struct KillStats {
    kills: usize,
    daemon_kills: usize,
    /// Runs killed while they had the big cache-key input open.
    while_hashing: Vec<String>,
    /// Processes killed while holding the lease of a blob upload.
    while_uploading: usize,
}

/// `iterations` processes (runs and daemons), each killed with SIGKILL at a
/// random instant or at an observed one: while a run hashes its cache key,
/// while a run or a daemon uploads a cache blob. The remote is out of reach
/// now and then, so backlogs build.
fn kill_at_random_instants(rig: &Rig, iterations: usize, rng: &mut Rng) -> KillStats {
    let big = std::fs::File::create(rig.env.dir().join("big.bin")).unwrap();
    big.set_len(BIG_KEY_BYTES).unwrap();
    drop(big);
    let mut st = KillStats::default();
    for i in 0..iterations {
        std::fs::write(rig.env.dir().join("seed.txt"), format!("seed {i}")).unwrap();
        match i % 7 {
            // A run, killed at a random instant; the remote away one time in three.
            0..=2 => {
                if rng.below(3) == 0 {
                    rig.down();
                } else {
                    rig.up();
                }
                let mut child = rig.spawn_run("work");
                std::thread::sleep(Duration::from_millis(rng.below(1300)));
                st.kills += kill9(&mut child) as usize;
            }
            // A run, killed while it hashes the big key input.
            3 => {
                rig.up();
                let mut child = rig.spawn_run("work");
                let pid = child.id();
                let seen = wait_while_alive(&mut child, Duration::from_secs(30), || {
                    has_open(pid, "/big.bin")
                });
                assert!(seen, "run {pid} never hashed big.bin");
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                let hashing = has_open(pid, "/big.bin");
                if kill9(&mut child) {
                    st.kills += 1;
                    if hashing {
                        st.while_hashing
                            .push(rig.run_of_pid(pid).expect("the run was recorded"));
                    }
                }
            }
            // A run, killed while it uploads its cache blob.
            4 => {
                rig.up();
                let mut child = rig.spawn_run("work");
                let pid = child.id();
                if wait_while_alive(&mut child, Duration::from_secs(30), || {
                    rig.uploading_blob(pid)
                }) {
                    std::thread::sleep(Duration::from_millis(rng.below(40)));
                    st.while_uploading += rig.uploading_blob(pid) as usize;
                }
                st.kills += kill9(&mut child) as usize;
            }
            // A daemon, killed at a random instant.
            5 => {
                if rng.below(3) == 0 {
                    rig.down();
                } else {
                    rig.up();
                }
                let mut child = rig.spawn_daemon();
                std::thread::sleep(Duration::from_millis(rng.below(900)));
                let killed = kill9(&mut child);
                st.kills += killed as usize;
                st.daemon_kills += killed as usize;
            }
            // A daemon replaying a backlog, killed while it uploads a blob.
            _ => {
                rig.down();
                rig.run_ok(&[
                    "run",
                    "work",
                    "--profile",
                    PROFILE,
                    "--sw-sync-timeout",
                    "0s",
                ]);
                rig.up();
                let mut child = rig.spawn_daemon();
                let pid = child.id();
                if wait_while_alive(&mut child, Duration::from_secs(30), || {
                    rig.uploading_blob(pid)
                }) {
                    std::thread::sleep(Duration::from_millis(rng.below(40)));
                    st.while_uploading += rig.uploading_blob(pid) as usize;
                }
                let killed = kill9(&mut child);
                st.kills += killed as usize;
                st.daemon_kills += killed as usize;
            }
        }
    }
    st
}

fn kill_test(rig: &Rig, iterations: usize, test: &str) {
    let mut rng = Rng::new(test);
    let st = kill_at_random_instants(rig, iterations, &mut rng);
    eprintln!("{test}: {st:?}");
    assert!(
        st.kills >= 50,
        "only {} processes were killed mid-flight: {st:?}",
        st.kills
    );
    assert!(st.daemon_kills >= 10, "{st:?}");
    assert!(st.while_hashing.len() >= 5, "{st:?}");
    assert!(st.while_uploading >= 5, "{st:?}");
    let c = rig.flush_and_check();
    assert!(c.runs >= 40, "{c:?}");
    // A run killed while hashing never finished: interrupted, locally and
    // (the checker compared them) on the remote.
    for run in &st.while_hashing {
        assert_eq!(c.statuses[run], "interrupted", "run {run}");
    }
    assert!(c.interrupted.len() >= st.while_hashing.len(), "{c:?}");
    assert!(c.blobs >= 5 && c.manifests >= 5, "{c:?}");
}

#[test]
fn kill_9_of_runs_and_daemons_at_random_instants_filesystem() {
    let rig = Rig::fs(&kill_pipelines());
    kill_test(&rig, 60, "kill_9_filesystem");
}

#[test]
fn kill_9_of_runs_and_daemons_at_random_instants_s3() {
    let Some(rig) = Rig::s3(&kill_pipelines(), "kills") else {
        return;
    };
    kill_test(&rig, 60, "kill_9_s3");
}

// ---------------------------------------------------------------- (d)

/// Objects other than `run.json` are immutable: whatever was on the remote
/// before is still there with the same bytes.
fn assert_immutable_objects_kept(before: &Snapshot, after: &Snapshot) {
    let mut n = 0;
    for (k, v) in before {
        if k.ends_with("/run.json") {
            continue;
        }
        n += 1;
        match after.get(k) {
            None => panic!("{k} disappeared from the remote"),
            Some(w) => assert!(w == v, "{k} was rewritten with other bytes"),
        }
    }
    assert!(n > 0);
}

fn delete_outbox(home: &Path) {
    for f in ["outbox.db", "outbox.db-wal", "outbox.db-shm"] {
        match std::fs::remove_file(home.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{f}: {e}"),
        }
    }
    assert!(!home.join("outbox.db").exists());
}

#[test]
fn a_deleted_outbox_between_runs_and_after_a_crash_doubles_nothing() {
    let rig = Rig::fs(&kill_pipelines());
    let big = std::fs::File::create(rig.env.dir().join("big.bin")).unwrap();
    big.set_len(1 << 20).unwrap();
    drop(big);
    let mut rng = Rng::new("deleted_outbox");
    let home = rig.home();
    let seed =
        |i: usize| std::fs::write(rig.env.dir().join("seed.txt"), format!("seed {i}")).unwrap();
    // Delivered runs, then the outbox is gone: a rebuilt one must write the
    // same objects with the same bytes, nothing twice.
    for i in 0..3 {
        seed(i);
        rig.run_ok(&["run", "work", "--profile", PROFILE]);
    }
    let c = rig.flush_and_check();
    assert_eq!(c.runs, 3);
    let before = rig.snapshot();
    delete_outbox(&home);
    seed(3);
    rig.run_ok(&["run", "work", "--profile", PROFILE]);
    delete_outbox(&home);
    let c = rig.flush_and_check();
    assert_eq!(c.runs, 4);
    assert_immutable_objects_kept(&before, &rig.snapshot());

    // A backlog (the remote away), then the outbox is gone.
    rig.down();
    seed(4);
    rig.run_ok(&[
        "run",
        "work",
        "--profile",
        PROFILE,
        "--sw-sync-timeout",
        "0s",
    ]);
    delete_outbox(&home);
    rig.up();
    let c = rig.flush_and_check();
    assert_eq!(c.runs, 5);

    // Crashes mid-run (some mid-delivery), then the outbox is gone.
    let mut crashed = Vec::new();
    for i in 5..8 {
        seed(i);
        let before = rig.snapshot();
        let mut child = rig.spawn_run("work");
        let pid = child.id();
        if i == 7 && crashed.is_empty() {
            // Both earlier runs ended before their kill landed (a loaded
            // machine): this one is killed as soon as it is recorded, so at
            // least one crash is certain.
            wait_for("the run to be recorded", Duration::from_secs(30), || {
                rig.run_of_pid(pid).is_some()
            });
        } else {
            // Killed once its logs have started to reach the remote.
            wait_for(
                "the run to deliver some log chunks",
                Duration::from_secs(30),
                || {
                    rig.run_of_pid(pid).is_some_and(|run| {
                    matches!(&rig.remote, Remote::Dir { root, .. } if root.join("logs").join(&run).is_dir())
                })
                },
            );
            std::thread::sleep(Duration::from_millis(rng.below(400)));
        }
        if kill9(&mut child) {
            crashed.push(rig.run_of_pid(pid).unwrap());
        }
        delete_outbox(&home);
        let c = rig.flush_and_check();
        assert_eq!(c.runs, i + 1);
        assert_immutable_objects_kept(&before, &rig.snapshot());
    }
    assert!(!crashed.is_empty(), "no run was killed mid-flight");
    let c = rig.flush_and_check();
    for run in &crashed {
        assert!(
            ["interrupted", "success"].contains(&c.statuses[run].as_str()),
            "{run}: {}",
            c.statuses[run]
        );
    }
}

// ---------------------------------------------------------------- (e)

#[test]
fn a_share_moved_away_mid_run_is_never_re_created_and_replays_when_back() {
    // `flood` ships a log chunk about every 0.1 s (each line is over the
    // 256 KiB shipping threshold), so writes keep coming while the share is
    // away, well inside the surface's 1 s directory re-check window.
    let pipelines = r#"pipelines:
  - name: slow
    jobs:
      flood:
        steps:
          - run: |
              i=0
              while [ $i -lt 14 ]; do i=$((i+1)); head -c 300000 /dev/zero | tr '\0' x; echo " chunk $i of $SPARKWING_RUN_ID"; sleep 0.1; done
      talk:
        steps:
          - run: |
              i=0
              while [ $i -lt 12 ]; do i=$((i+1)); echo "line $i of $SPARKWING_RUN_ID"; sleep 0.1; done
      build:
        cache: { key: [seed.txt], outputs: [out] }
        steps:
          - run: sleep 0.5 && mkdir -p out && cat seed.txt > out/a.bin && head -c 50000 /dev/urandom > out/b.bin
"#;
    let rig = Rig::fs(pipelines);
    let Remote::Dir { root, away } = &rig.remote else {
        unreachable!()
    };
    let runs_on_share = || -> Vec<String> {
        std::fs::read_dir(root.join("logs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for i in 0..3 {
        std::fs::write(rig.env.dir().join("seed.txt"), format!("seed {i}")).unwrap();
        let known = runs_on_share();
        let mut child = rig
            .cmd(&[
                "run",
                "slow",
                "--profile",
                PROFILE,
                "--sw-sync-timeout",
                "2s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if i == 0 {
            // 0.2 s into the run.
            std::thread::sleep(Duration::from_millis(200));
        } else {
            // Right after the share took this run's first log chunk: the
            // logs surface has just seen its directory.
            let first_chunk = wait_while_alive(&mut child, Duration::from_secs(30), || {
                runs_on_share().iter().any(|r| {
                    !known.contains(r)
                        && root
                            .join("logs")
                            .join(r)
                            .join("flood/0000000000.log")
                            .exists()
                })
            });
            assert!(
                first_chunk,
                "round {i}: the first log chunk never reached the share"
            );
        }
        rig.down();
        assert!(away.is_dir() && !root.exists());
        let out = child.wait_with_output().unwrap();
        expect_code(&out, 0);
        let e = text(&out.stderr);
        assert!(e.contains("not yet delivered"), "round {i}: {e}");
        // Right before the share comes back: nothing was created in its place.
        assert!(
            !root.exists(),
            "round {i}: {} was created while the share was away",
            root.display()
        );
        rig.up();
        let c = rig.flush_and_check();
        assert_eq!(c.runs, i + 1);
        assert!(c.statuses.values().all(|s| s == "success"), "{c:?}");
        // The flood job's log (14 lines of 300 KB) arrived whole.
        assert!(c.log_bytes >= (i as u64 + 1) * 14 * 300_000, "{c:?}");
    }
}
