//! Replication to a `filesystem` remote, with real processes: offline runs,
//! kill -9 at random points, several flushers, two profiles, failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::checker::{self, Scope};
use crate::util::*;

const PIPELINE: &str = r#"
pipelines:
  - name: work
    jobs:
      talk:
        steps:
          - run: |
              i=0
              while [ $i -lt 150 ]; do i=$((i+1)); echo "line $i of $SPARKWING_RUN_ID"; done
          - run: sleep 0.4; echo done talking
      build:
        cache: { key: [seed.txt], outputs: [out] }
        steps:
          - run: mkdir -p out && cat seed.txt seed.txt > out/artifact.bin && head -c 20000 /dev/urandom > out/noise.bin
      after:
        needs: [build]
        steps:
          - run: ls out
"#;

/// A project whose profile `team` keeps state, logs and cache under `remote`.
struct SyncEnv {
    env: Env,
    remote: PathBuf,
}

fn sync_env(profile_name: &str) -> SyncEnv {
    let env = Env::new();
    let remote = env.home.path().join("remote").join(profile_name);
    let yaml = format!(
        "profiles:\n  {p}:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache }}\n{PIPELINE}",
        p = profile_name,
        r = remote.display()
    );
    env.write_project(&yaml);
    std::fs::write(env.dir().join("seed.txt"), "seed 0").unwrap();
    SyncEnv { env, remote }
}

impl SyncEnv {
    /// The share is reachable (what it held while away comes back).
    fn mount(&self) {
        let away = self.away();
        if away.exists() {
            std::fs::rename(&away, &self.remote).unwrap();
        }
        for s in ["state", "logs", "cache"] {
            std::fs::create_dir_all(self.remote.join(s)).unwrap();
        }
    }
    /// The share is out of reach; its contents are kept aside, not lost.
    fn unmount(&self) {
        if self.remote.exists() {
            std::fs::rename(&self.remote, self.away()).unwrap();
        }
    }
    fn away(&self) -> PathBuf {
        self.remote.with_extension("away")
    }
}

/// Asserts that the remote holds exactly what the local store holds for
/// every run of this home, with the independent strict checker of
/// `checker.rs`: each event exactly once, run.json with the local status,
/// the log bytes in order, every cache blob byte-identical, every manifest.
/// The remote may hold other homes' runs too (a shared bucket); see
/// [`Scope`]. Returns the number of runs checked.
pub fn assert_remote_equals_local(home: &Path, remote: &Path) -> usize {
    checker::check(home, &checker::dir_snapshot(remote), Scope::Shared).runs
}

fn status_json(env: &Env, profile: &str) -> serde_json::Value {
    env.json(&["sync", "status", "--profile", profile, "-o", "json"])
}

#[test]
fn a_run_replicates_state_logs_and_cache_to_a_filesystem_remote() {
    let s = sync_env("team");
    s.mount();
    let out = s.env.run(&["run", "work", "--profile", "team"]);
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("sparkwing: synced to filesystem:"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(assert_remote_equals_local(&s.env.sw_home(), &s.remote), 1);
    let st = status_json(&s.env, "team");
    for t in st["targets"].as_array().unwrap() {
        assert_eq!(t["pending_entries"], 0);
        assert_eq!(t["connectivity"], "online");
    }
    // A second run hits the cache locally and replicates again.
    expect_code(&s.env.run(&["run", "work", "--profile", "team"]), 0);
    assert_eq!(assert_remote_equals_local(&s.env.sw_home(), &s.remote), 2);
}

#[test]
fn an_unreachable_remote_never_fails_a_run_and_the_backlog_replays() {
    let s = sync_env("team");
    // Not mounted: the remote directories do not exist.
    let out = s.env.run(&[
        "run",
        "work",
        "--profile",
        "team",
        "--sw-sync-timeout",
        "300ms",
    ]);
    expect_code(&out, 0);
    let e = text(&out.stderr);
    assert!(
        e.contains("not yet delivered")
            && e.contains("offline")
            && e.contains("sparkwing sync flush"),
        "{e}"
    );
    let st = status_json(&s.env, "team");
    let targets = st["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    for t in targets {
        assert_eq!(t["connectivity"], "offline", "{t}");
        assert!(t["pending_entries"].as_u64().unwrap() > 0);
        assert_eq!(t["last_error_class"], "transient");
        assert!(!t["pending_by_kind"].as_array().unwrap().is_empty());
    }
    let text_status = text(&s.env.run(&["sync", "status"]).stdout);
    assert!(
        text_status.contains("offline") && text_status.contains("pending"),
        "{text_status}"
    );
    // A flush while still offline gives up with exit 1 and says why.
    let out = s
        .env
        .run(&["sync", "flush", "--profile", "team", "--timeout", "500ms"]);
    expect_code(&out, 1);
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    let queued: u64 = status_json(&s.env, "team")["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pending_entries"].as_u64().unwrap())
        .sum();
    // The share comes back: the flush says what it delivered (issue 13),
    // exactly the backlog `sync status` counted.
    s.mount();
    let out = s
        .env
        .run(&["sync", "flush", "--profile", "team", "--timeout", "60s"]);
    expect_code(&out, 0);
    let e = text(&out.stderr);
    assert!(
        e.contains(&format!(
            "sparkwing: flushed: delivered {queued} write(s), "
        )),
        "{queued} queued: {e}"
    );
    assert_remote_equals_local(&s.env.sw_home(), &s.remote);
    // Nothing left: the next flush says so.
    let out = s.env.run(&["sync", "flush", "--profile", "team"]);
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("flushed: nothing queued"),
        "{}",
        text(&out.stderr)
    );
    let st = status_json(&s.env, "team");
    assert!(st["targets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["pending_entries"] == 0 && t["connectivity"] == "online"));
}

#[test]
fn the_daemon_replays_a_backlog_without_anyone_acting_and_drains_on_sigterm() {
    let s = sync_env("team");
    expect_code(
        &s.env.run(&[
            "run",
            "work",
            "--profile",
            "team",
            "--sw-sync-timeout",
            "0s",
        ]),
        0,
    );
    let mut daemon = s
        .env
        .cmd(&["sync", "daemon", "--profile", "team"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.mount();
    let home = s.env.sw_home();
    wait_for(
        "the daemon to replay the backlog",
        Duration::from_secs(60),
        || {
            s.remote.join("state/runs").is_dir()
                && std::panic::catch_unwind(|| assert_remote_equals_local(&home, &s.remote)).is_ok()
        },
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("nothing left queued"), "{err}");
}

#[test]
fn kill_9_of_runs_and_daemons_at_random_points_loses_and_doubles_nothing() {
    let s = sync_env("team");
    let mut rng = 0x2545F4914F6CDD1Du64 ^ std::process::id() as u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut kills = 0;
    for i in 0..60 {
        // A third of the time the remote is away, so a backlog builds.
        if i % 3 == 2 {
            s.unmount();
        } else {
            s.mount();
        }
        std::fs::write(s.env.dir().join("seed.txt"), format!("seed {i}")).unwrap();
        let daemon_turn = i % 4 == 3;
        let mut child = if daemon_turn {
            s.env
                .cmd(&["sync", "daemon", "--profile", "team"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        } else {
            s.env
                .cmd(&["run", "work", "--profile", "team"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        std::thread::sleep(Duration::from_millis(next() % 350));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if status.code().is_none() {
            kills += 1;
        }
    }
    assert!(kills >= 50, "only {kills} processes were killed mid-flight");
    s.mount();
    let out = s
        .env
        .run(&["sync", "flush", "--profile", "team", "--timeout", "120s"]);
    expect_code(&out, 0);
    // This home is the remote's only writer: nothing may be unaccounted for,
    // and every killed run is `interrupted` there as it is here.
    let c = checker::check(
        &s.env.sw_home(),
        &checker::dir_snapshot(&s.remote),
        Scope::Exclusive,
    );
    assert!(c.runs >= 30, "{} runs checked", c.runs);
    assert!(!c.interrupted.is_empty(), "no run was interrupted: {c:?}");
    // The product's own check agrees.
    expect_code(&s.env.run(&["sync", "verify", "--profile", "team"]), 0);
}

#[test]
fn two_profiles_on_one_host_never_deliver_to_each_others_target() {
    let s = sync_env("alpha");
    let beta = s.env.home.path().join("remote/beta");
    let yaml = std::fs::read_to_string(s.env.dir().join(".sparkwing/sparkwing.yaml")).unwrap();
    let beta_profile = format!(
        "  beta:\n    state: {{ type: filesystem, path: {b}/state }}\n    logs: {{ type: filesystem, path: {b}/logs }}\n    cache: {{ type: filesystem, path: {b}/cache }}\n",
        b = beta.display()
    );
    s.env
        .write_project(&yaml.replacen("profiles:\n", &format!("profiles:\n{beta_profile}"), 1));
    // Both offline: everything is queued in one outbox.
    expect_code(
        &s.env.run(&[
            "run",
            "work",
            "--profile",
            "alpha",
            "--sw-sync-timeout",
            "0s",
        ]),
        0,
    );
    expect_code(
        &s.env.run(&[
            "run",
            "work",
            "--profile",
            "beta",
            "--sw-sync-timeout",
            "0s",
        ]),
        0,
    );
    s.mount();
    for d in ["state", "logs", "cache"] {
        std::fs::create_dir_all(beta.join(d)).unwrap();
    }
    expect_code(&s.env.run(&["sync", "flush", "--profile", "alpha"]), 0);
    let alpha_runs: Vec<_> = std::fs::read_dir(s.remote.join("state/runs"))
        .unwrap()
        .collect();
    assert_eq!(alpha_runs.len(), 1, "alpha holds only its own run");
    assert!(
        std::fs::read_dir(beta.join("state"))
            .unwrap()
            .next()
            .is_none(),
        "nothing of beta's moved yet, nothing of alpha's went to beta"
    );
    let beta_pending = status_json(&s.env, "beta")["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pending_entries"].as_u64().unwrap())
        .sum::<u64>();
    assert!(beta_pending > 0);
    expect_code(&s.env.run(&["sync", "flush", "--profile", "beta"]), 0);
    assert_eq!(
        std::fs::read_dir(beta.join("state/runs")).unwrap().count(),
        1
    );
}

#[test]
fn four_flushers_on_one_outbox_never_double_apply_or_reorder_a_stream() {
    let s = sync_env("team");
    for i in 0..6 {
        std::fs::write(s.env.dir().join("seed.txt"), format!("seed {i}")).unwrap();
        expect_code(
            &s.env.run(&[
                "run",
                "work",
                "--profile",
                "team",
                "--sw-sync-timeout",
                "0s",
            ]),
            0,
        );
    }
    s.mount();
    let journal = s.env.home.path().join("journal.txt");
    let flushers: Vec<_> = (0..4)
        .map(|_| {
            s.env
                .cmd(&["sync", "flush", "--profile", "team"])
                .env("SPARKWING_SYNC_JOURNAL", &journal)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for f in flushers {
        let out = f.wait_with_output().unwrap();
        expect_code(&out, 0);
    }
    let lines = std::fs::read_to_string(&journal).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut last_chunk: BTreeMap<String, String> = BTreeMap::new();
    let mut pids = std::collections::HashSet::new();
    for line in lines.lines() {
        let mut parts = line.splitn(3, ' ');
        let (pid, target, key) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        pids.insert(pid.to_string());
        let full = format!("{target} {key}");
        // run.json is rewritten by design (one entry per summary); every
        // other object is immutable and must be applied exactly once.
        if !key.ends_with("/run.json") {
            assert!(seen.insert(full.clone()), "applied twice: {full}");
        }
        if key.ends_with(".log") {
            let (stream, chunk) = key.rsplit_once('/').unwrap();
            if let Some(prev) = last_chunk.insert(stream.to_string(), chunk.to_string()) {
                assert!(
                    prev.as_str() < chunk,
                    "stream {stream} replayed out of order: {prev} then {chunk}"
                );
            }
        }
    }
    assert!(seen.len() >= 30, "{} deliveries journaled", seen.len());
    assert_remote_equals_local(&s.env.sw_home(), &s.remote);
}

#[test]
fn a_permanent_failure_quarantines_one_entry_while_other_streams_flow() {
    let s = sync_env("team");
    expect_code(
        &s.env.run(&[
            "run",
            "work",
            "--profile",
            "team",
            "--sw-sync-timeout",
            "0s",
        ]),
        0,
    );
    // A cache pack waiting for upload vanishes before it could be sent.
    let packs: Vec<_> = std::fs::read_dir(s.env.sw_home().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    std::fs::remove_file(&packs[0]).unwrap();
    s.mount();
    let out = s
        .env
        .run(&["sync", "flush", "--profile", "team", "--timeout", "5s"]);
    expect_code(&out, 1);
    let e = text(&out.stderr);
    assert!(
        e.contains("quarantined") && e.contains("sparkwing sync retry"),
        "{e}"
    );
    let st = status_json(&s.env, "team");
    let cache = st["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"].as_str().unwrap().ends_with("/cache"))
        .unwrap();
    assert_eq!(cache["quarantined"], 1);
    assert_eq!(cache["last_error_class"], "permanent");
    // Everything else arrived: state and logs are complete.
    for t in st["targets"].as_array().unwrap() {
        if !t["target"].as_str().unwrap().ends_with("/cache") {
            assert_eq!(t["pending_entries"], 0, "{t}");
            assert_eq!(t["quarantined"], 0);
        }
    }
    let runs: Vec<_> = std::fs::read_dir(s.remote.join("state/runs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
}

#[test]
fn an_auth_failure_stops_its_target_and_keeps_its_entries() {
    let s = sync_env("team");
    s.mount();
    let out = s
        .env
        .cmd(&[
            "run",
            "work",
            "--profile",
            "team",
            "--sw-sync-timeout",
            "1s",
        ])
        .env("SPARKWING_SYNC_FAULTS", "auth")
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("credentials refused"),
        "{}",
        text(&out.stderr)
    );
    let st = status_json(&s.env, "team");
    for t in st["targets"].as_array().unwrap() {
        assert_eq!(t["connectivity"], "auth_failed", "{t}");
        assert!(
            t["pending_entries"].as_u64().unwrap() > 0,
            "entries are kept"
        );
        assert_eq!(t["quarantined"], 0, "an auth failure quarantines nothing");
    }
    assert!(
        std::fs::read_dir(s.remote.join("state"))
            .unwrap()
            .next()
            .is_none(),
        "nothing delivered"
    );
    // Fixed credentials: lift the stop and flush.
    s.env.run(&["sync", "retry", "--profile", "team"]);
    expect_code(&s.env.run(&["sync", "flush", "--profile", "team"]), 0);
    assert_remote_equals_local(&s.env.sw_home(), &s.remote);
}

/// Issue 12: the daemon logs through `tracing`: human lines by default,
/// one JSON object per line with `--log-format json`, levels from -v/-q and
/// RUST_LOG, and no secret in any field.
#[test]
fn the_daemon_logs_levels_and_fields_as_text_or_json_without_secrets() {
    let s = sync_env("team");
    s.mount();
    expect_code(
        &s.env.run(&[
            "run",
            "work",
            "--profile",
            "team",
            "--sw-sync-timeout",
            "0s",
        ]),
        0,
    );
    let daemon = |args: &[&str], envs: &[(&str, &str)]| -> String {
        let mut all = vec!["sync", "daemon", "--profile", "team"];
        all.extend_from_slice(args);
        let mut d = s
            .env
            .cmd(&all)
            .envs(envs.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let home = s.env.sw_home();
        wait_for("the daemon to deliver", Duration::from_secs(60), || {
            std::panic::catch_unwind(|| assert_remote_equals_local(&home, &s.remote)).is_ok()
        });
        std::thread::sleep(Duration::from_millis(200));
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        assert!(d.wait().unwrap().success());
        let mut err = String::new();
        std::io::Read::read_to_string(d.stderr.as_mut().unwrap(), &mut err).unwrap();
        err
    };
    let text = daemon(&[], &[]);
    let stopped = text
        .lines()
        .find(|l| l.contains("sync daemon stopped; nothing left queued"));
    assert!(stopped.is_some_and(|l| l.contains(" INFO ")), "{text}");
    assert!(text.contains("profile=team"), "fields: {text}");
    assert!(
        !text.contains("delivery pass"),
        "debug lines only with -v: {text}"
    );

    let json = daemon(&["--log-format", "json", "-v"], &[]);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["timestamp"].is_string()),
        "{json}"
    );
    assert!(
        events.iter().any(
            |e| e["message"] == "sync daemon stopped; nothing left queued" && e["level"] == "INFO"
        ),
        "{json}"
    );
    assert!(
        events.iter().any(|e| e["profile"] == "team"),
        "fields are keys: {json}"
    );

    let quiet = daemon(&["-q"], &[]);
    assert!(!quiet.contains(" INFO "), "-q: warnings only: {quiet}");
    // Something to deliver while tracing: a run made while the share is away.
    s.unmount();
    std::fs::write(s.env.dir().join("seed.txt"), "seed 1").unwrap();
    expect_code(
        &s.env.run(&[
            "run",
            "work",
            "--profile",
            "team",
            "--sw-sync-timeout",
            "0s",
        ]),
        0,
    );
    s.mount();
    let traced = daemon(&[], &[("RUST_LOG", "sparkwing_sync=trace,sparkwing=info")]);
    assert!(traced.contains("TRACE"), "RUST_LOG wins: {traced}");
}

/// Issue 12: what the daemon logs about a target it cannot reach names it
/// without its secrets.
#[test]
fn the_daemons_log_carries_no_secret() {
    let env = Env::new();
    env.write_project(
        "profiles:\n  leaky:\n    logs: { type: s3, bucket: bkt, endpoint: 'http://127.0.0.1:9/?X-Amz-Security-Token=SECRETTOKEN123' }\npipelines:\n  - name: work\n    jobs: {a: {steps: [{run: 'echo hi'}]}}\n",
    );
    let creds = [
        ("AWS_ACCESS_KEY_ID", "AKIDSECRETID42"),
        ("AWS_SECRET_ACCESS_KEY", "SECRETKEY4242"),
        ("AWS_REGION", "us-east-1"),
    ];
    let out = env
        .cmd(&[
            "run",
            "work",
            "--profile",
            "leaky",
            "--sw-sync-timeout",
            "0s",
        ])
        .envs(creds)
        .output()
        .unwrap();
    expect_code(&out, 0);
    // Our own events at -vv, and every crate's (object_store logs the URLs
    // it retries, query strings included) under RUST_LOG.
    for (args, rust_log) in [
        (vec!["-vv", "--log-format", "json"], None),
        (vec![], Some("trace")),
    ] {
        let mut all = vec!["sync", "daemon", "--profile", "leaky"];
        all.extend(args.iter().copied());
        let mut cmd = env.cmd(&all);
        if let Some(l) = rust_log {
            cmd.env("RUST_LOG", l);
        }
        let mut d = cmd.envs(creds).stderr(Stdio::piped()).spawn().unwrap();
        // Read stderr as it comes; stop the daemon once it has logged a
        // failed delivery (or after a minute, and the check below fails).
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let (seen, mut pipe) = (seen.clone(), d.stderr.take().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !seen.lock().unwrap().contains("delivery failed")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        d.wait().unwrap();
        reader.join().unwrap();
        let err = seen.lock().unwrap().clone();
        assert!(
            err.contains("delivery failed"),
            "the failure is logged: {err}"
        );
        if rust_log.is_some() {
            assert!(
                err.contains("127.0.0.1:9"),
                "other crates' events are in: {err}"
            );
        }
        for secret in ["SECRETTOKEN123", "AKIDSECRETID42", "SECRETKEY4242"] {
            assert!(
                !err.contains(secret),
                "{secret} in the log ({args:?} {rust_log:?}): {err}"
            );
        }
    }
}

/// Issue 12: the first SIGTERM drains (up to --drain-timeout); a second one
/// ends the drain at once, everything still queued.
#[test]
fn a_second_signal_stops_the_daemons_drain_at_once() {
    let s = sync_env("team");
    s.unmount();
    expect_code(
        &s.env.run(&[
            "run",
            "work",
            "--profile",
            "team",
            "--sw-sync-timeout",
            "0s",
        ]),
        0,
    );
    let mut d = s
        .env
        .cmd(&[
            "sync",
            "daemon",
            "--profile",
            "team",
            "--drain-timeout",
            "1h",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.try_wait().unwrap().is_none(),
        "the first signal drains (the share is away)"
    );
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let mut exited = None;
    wait_for(
        "the daemon to exit on the second signal",
        Duration::from_secs(60),
        || {
            exited = d.try_wait().unwrap();
            exited.is_some()
        },
    );
    assert!(exited.unwrap().success());
    let mut err = String::new();
    std::io::Read::read_to_string(d.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("a second signal: stopping now"), "{err}");
    assert!(err.contains("still queued"), "{err}");
}
