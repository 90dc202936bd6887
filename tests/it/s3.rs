//! Mode 2 surfaces against a real S3-protocol server (moto): the target
//! conformance suite, replication of whole runs, outages through a proxy,
//! and configuration errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sparkwing_sync::object_store::aws::AmazonS3Builder;
use sparkwing_sync::ObjectStoreTarget;

use crate::sync::assert_remote_equals_local;
use crate::util::*;

fn s3_target(endpoint: &str, bucket: &str, prefix: &str) -> ObjectStoreTarget {
    sparkwing_sync::object::install_crypto_provider();
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .with_retry(sparkwing_sync::object::client_retry())
        .build()
        .unwrap();
    ObjectStoreTarget::new(format!("s3:{bucket}/{prefix}"), Arc::new(store), prefix)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Copies a bucket's objects into `dir`, keeping their keys as paths.
fn mirror(endpoint: &str, bucket: &str, dir: &Path) {
    let t = s3_target(endpoint, bucket, "");
    rt().block_on(async {
        for key in t.list("").await.unwrap() {
            let body = t.read(&key, u64::MAX).await.unwrap().unwrap();
            let path = dir.join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
    });
}

fn s3_project(env: &Env, endpoint: &str, bucket: &str) {
    let yaml = format!(
        "profiles:\n  shared:\n    state: {{ type: s3, bucket: {bucket}, prefix: state, endpoint: \"{endpoint}\" }}\n    logs: {{ type: s3, bucket: {bucket}, prefix: logs, endpoint: \"{endpoint}\" }}\n    cache: {{ type: s3, bucket: {bucket}, prefix: cache, endpoint: \"{endpoint}\" }}\npipelines:\n  - name: work\n    jobs:\n      talk: {{ steps: [{{ run: 'for i in 1 2 3 4 5; do echo line $i; done' }}] }}\n      build:\n        cache: {{ key: [seed.txt], outputs: [out] }}\n        steps: [{{ run: 'mkdir -p out && cat seed.txt > out/a.bin && head -c 5000 /dev/urandom > out/b.bin' }}]\n"
    );
    env.write_project(&yaml);
    std::fs::write(env.dir().join("seed.txt"), "seed").unwrap();
}

/// `sync status --profile shared -o json`, parsed.
fn s3_status(env: &Env) -> serde_json::Value {
    let out = s3_cmd(
        env,
        &["sync", "status", "--profile", "shared", "-o", "json"],
    )
    .output()
    .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn s3_cmd(env: &Env, args: &[&str]) -> std::process::Command {
    let mut c = env.cmd(args);
    c.envs(S3_ENV);
    c
}

#[test]
fn a_run_replicates_to_s3_exactly_what_it_holds_locally() {
    let Some(moto) = moto() else { return };
    moto.bucket("replicate");
    let env = Env::new();
    s3_project(&env, &moto.endpoint, "replicate");
    let out = s3_cmd(&env, &["run", "work", "--profile", "shared"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("sparkwing: synced to s3:replicate/state"),
        "{}",
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    mirror(&moto.endpoint, "replicate", dir.path());
    assert_eq!(assert_remote_equals_local(&env.sw_home(), dir.path()), 1);
}

#[test]
fn an_s3_outage_never_fails_a_run_and_the_backlog_replays_when_it_returns() {
    let Some(moto) = moto() else { return };
    moto.bucket("outage");
    let proxy = Proxy::start(&moto.endpoint);
    let env = Env::new();
    s3_project(&env, &proxy.endpoint(), "outage");
    proxy.set_up(false);
    let out = s3_cmd(
        &env,
        &[
            "run",
            "work",
            "--profile",
            "shared",
            "--sw-sync-timeout",
            "1s",
        ],
    )
    .output()
    .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("not yet delivered"),
        "{}",
        text(&out.stderr)
    );
    let st = s3_status(&env);
    for t in st["targets"].as_array().unwrap() {
        assert_eq!(t["connectivity"], "offline", "{t}");
        assert!(t["pending_entries"].as_u64().unwrap() > 0);
    }
    // The endpoint returns; a daemon replays everything without anyone acting.
    let mut daemon = s3_cmd(&env, &["sync", "daemon", "--profile", "shared"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    proxy.set_up(true);
    let dir = tempfile::tempdir().unwrap();
    wait_for(
        "the daemon to replay the backlog",
        Duration::from_secs(90),
        || {
            let out = s3_cmd(
                &env,
                &["sync", "status", "--profile", "shared", "-o", "json"],
            )
            .output()
            .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v["targets"]
                .as_array()
                .is_some_and(|ts| ts.iter().all(|t| t["pending_entries"] == 0))
        },
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    mirror(&moto.endpoint, "outage", dir.path());
    assert_remote_equals_local(&env.sw_home(), dir.path());
}

#[test]
fn missing_region_or_credentials_are_named_at_run_start() {
    let env = Env::new();
    s3_project(&env, "http://127.0.0.1:9", "bkt");
    let out = env
        .cmd(&["run", "work", "--profile", "shared"])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("needs a region") && text(&out.stderr).contains("AWS_REGION"),
        "{}",
        text(&out.stderr)
    );
    let out = env
        .cmd(&["run", "work", "--profile", "shared"])
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("no credentials") && e.contains("AWS_ACCESS_KEY_ID"),
        "{e}"
    );
    assert!(!env.dir().join("out").exists(), "nothing ran");
    // GCS and Azure name their own variables.
    env.write_project("profiles:\n  g: { cache: { type: gcs, bucket: bkt } }\n  a: { logs: { type: azure-blob, bucket: ctr } }\npipelines:\n  - name: work\n    jobs: {a: {steps: [{run: 'true'}]}}\n");
    let out = env.run(&["run", "work", "--profile", "g"]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["run", "work", "--profile", "a"]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("AZURE_STORAGE_ACCOUNT_NAME"),
        "{}",
        text(&out.stderr)
    );
}

/// A second runner (another home, another checkout of the project).
fn second_runner(endpoint: &str, bucket: &str) -> Env {
    let env = Env::new();
    s3_project(&env, endpoint, bucket);
    env
}

#[test]
fn a_second_runner_restores_what_the_first_produced_and_refuses_corrupt_blobs() {
    let Some(moto) = moto() else { return };
    moto.bucket("shared-cache");
    let first = Env::new();
    s3_project(&first, &moto.endpoint, "shared-cache");
    expect_code(
        &s3_cmd(&first, &["run", "work", "--profile", "shared"])
            .output()
            .unwrap(),
        0,
    );
    let producer = first.json(&["runs", "list", "-o", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let random = std::fs::read(first.dir().join("out/b.bin")).unwrap();

    let second = second_runner(&moto.endpoint, "shared-cache");
    let out = s3_cmd(&second, &["run", "work", "--profile", "shared"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains(&format!("restored from run {producer}")),
        "{}",
        text(&out.stderr)
    );
    // b.bin is random bytes: equal only if restored, not recomputed.
    assert_eq!(
        std::fs::read(second.dir().join("out/b.bin")).unwrap(),
        random
    );
    let jobs = jobs_of(&second, "latest");
    assert_eq!(jobs["build"]["status"], "cached");
    assert_eq!(jobs["build"]["cached_from_run"], producer.as_str());

    // Someone damages a blob in the bucket: a third runner must not restore it.
    let t = s3_target(&moto.endpoint, "shared-cache", "cache");
    let blob = rt()
        .block_on(t.list("cas/"))
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let store = AmazonS3Builder::new()
        .with_endpoint(&moto.endpoint)
        .with_bucket_name("shared-cache")
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()
        .unwrap();
    rt().block_on(async {
        use sparkwing_sync::object_store::ObjectStoreExt;
        let path = sparkwing_sync::object_store::path::Path::from(format!("cache/{blob}"));
        store
            .put(&path, bytes::Bytes::from_static(b"truncat").into())
            .await
            .unwrap();
    });
    let third = second_runner(&moto.endpoint, "shared-cache");
    let out = s3_cmd(&third, &["run", "work", "--profile", "shared"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let e = text(&out.stderr);
    assert!(e.contains("corrupt or truncated"), "{e}");
    assert_eq!(
        jobs_of(&third, "latest")["build"]["status"],
        "success",
        "a corrupt remote blob is a miss"
    );
}

#[test]
fn coordination_features_are_refused_under_a_mode_2_profile() {
    let env = Env::new();
    env.write_project("profiles:\n  shared: { cache: { type: s3, bucket: bkt, endpoint: 'http://127.0.0.1:9' } }\npipelines:\n  - name: ship\n    jobs:\n      build: { cache: { outputs: [o], on_limit: coalesce }, steps: [{ run: 'touch o' }] }\n");
    let out = s3_cmd(&env, &["run", "ship", "--profile", "shared"])
        .output()
        .unwrap();
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("Mode 2") && e.contains("shared object storage") && e.contains("Postgres"),
        "{e}"
    );
    assert!(!env.dir().join("o").exists());
}

#[test]
fn merged_reads_show_every_runners_runs_and_degrade_to_local_when_the_remote_is_down() {
    let Some(moto) = moto() else { return };
    moto.bucket("merged");
    let proxy = Proxy::start(&moto.endpoint);
    let a = Env::new();
    s3_project(&a, &proxy.endpoint(), "merged");
    let b = Env::new();
    s3_project(&b, &moto.endpoint, "merged");
    expect_code(
        &s3_cmd(&a, &["run", "work", "--profile", "shared"])
            .output()
            .unwrap(),
        0,
    );
    expect_code(
        &s3_cmd(&b, &["run", "work", "--profile", "shared"])
            .output()
            .unwrap(),
        0,
    );
    let b_run = b.json(&["runs", "list", "-o", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A runs again while its remote is out of reach.
    proxy.set_up(false);
    expect_code(
        &s3_cmd(
            &a,
            &[
                "run",
                "work",
                "--profile",
                "shared",
                "--sw-sync-timeout",
                "0s",
            ],
        )
        .output()
        .unwrap(),
        0,
    );
    let out = s3_cmd(&a, &["runs", "list", "--profile", "shared", "-o", "json"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("showing this machine's runs only"),
        "{}",
        text(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        2,
        "the local view: A's two runs"
    );
    // Back online (before A's backlog is flushed): all three, marked.
    proxy.set_up(true);
    let out = s3_cmd(&a, &["runs", "list", "--profile", "shared", "-o", "json"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sync: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["sync"].as_str().unwrap()))
        .collect();
    assert_eq!(sync.len(), 3, "{sync:?}");
    assert_eq!(
        sync[0].1, "local only",
        "the newest run has not been synced: {sync:?}"
    );
    assert!(sync.contains(&(b_run.as_str(), "remote")), "{sync:?}");
    assert!(sync.iter().any(|(_, s)| *s == "synced"), "{sync:?}");
    let table = text(
        &s3_cmd(&a, &["runs", "list", "--profile", "shared"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        table.contains("SYNC") && table.contains("local only") && table.contains("remote"),
        "{table}"
    );
    // Another runner's run can be shown and its logs read.
    let out = s3_cmd(&a, &["runs", "show", &b_run[..20], "--profile", "shared"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&b_run) && shown.contains("talk") && shown.contains("sync      remote"),
        "{shown}"
    );
    let out = s3_cmd(
        &a,
        &[
            "runs",
            "logs",
            &b_run,
            "--profile",
            "shared",
            "--job",
            "talk",
        ],
    )
    .output()
    .unwrap();
    expect_code(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "line 1\nline 2\nline 3\nline 4\nline 5\n"
    );
}

#[test]
fn transient_http_faults_are_retried_and_403_stops_the_target_loudly() {
    let Some(moto) = moto() else { return };
    moto.bucket("faults");
    let proxy = FaultProxy::start(&moto.endpoint);
    let env = Env::new();
    s3_project(&env, &proxy.endpoint(), "faults");
    let dir = tempfile::tempdir().unwrap();
    for fault in [
        Fault::SlowDown503,
        Fault::Internal500,
        Fault::TooMany429,
        Fault::ResetMidBody,
    ] {
        std::fs::write(env.dir().join("seed.txt"), format!("{fault:?}")).unwrap();
        let before = proxy.injected.load(std::sync::atomic::Ordering::SeqCst);
        proxy.fail_next(4, fault);
        let out = s3_cmd(
            &env,
            &[
                "run",
                "work",
                "--profile",
                "shared",
                "--sw-sync-timeout",
                "60s",
            ],
        )
        .output()
        .unwrap();
        expect_code(&out, 0);
        assert!(
            text(&out.stderr).contains("sparkwing: synced to"),
            "{fault:?}: {}",
            text(&out.stderr)
        );
        assert!(
            proxy.injected.load(std::sync::atomic::Ordering::SeqCst) > before,
            "{fault:?} was injected"
        );
    }
    mirror(&moto.endpoint, "faults", dir.path());
    assert_eq!(assert_remote_equals_local(&env.sw_home(), dir.path()), 4);
    // 403: the target stops, says so, and keeps everything queued.
    proxy.fail_always(Some(Fault::Forbidden403));
    let out = s3_cmd(
        &env,
        &[
            "run",
            "work",
            "--profile",
            "shared",
            "--sw-sync-timeout",
            "3s",
        ],
    )
    .output()
    .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("credentials refused"),
        "{}",
        text(&out.stderr)
    );
    let st = s3_status(&env);
    assert!(
        st["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["connectivity"] == "auth_failed"
                && t["pending_entries"].as_u64().unwrap() > 0),
        "{st}"
    );
    proxy.fail_always(None);
    s3_cmd(&env, &["sync", "retry", "--profile", "shared"])
        .output()
        .unwrap();
    expect_code(
        &s3_cmd(&env, &["sync", "flush", "--profile", "shared"])
            .output()
            .unwrap(),
        0,
    );
}

#[test]
fn two_runners_on_the_same_uncached_key_both_compute_and_the_bucket_ends_consistent() {
    let Some(moto) = moto() else { return };
    moto.bucket("race");
    let yaml = format!(
        "profiles:\n  shared:\n    state: {{ type: s3, bucket: race, prefix: state, endpoint: \"{e}\" }}\n    logs: {{ type: s3, bucket: race, prefix: logs, endpoint: \"{e}\" }}\n    cache: {{ type: s3, bucket: race, prefix: cache, endpoint: \"{e}\" }}\npipelines:\n  - name: build\n    jobs:\n      compile:\n        cache: {{ key: [src.txt], outputs: [out] }}\n        steps: [{{ run: 'mkdir -p out && sleep 0.3 && sha256sum src.txt > out/digest && cp src.txt out/copy' }}]\n",
        e = moto.endpoint
    );
    let runners: Vec<Env> = (0..2)
        .map(|_| {
            let env = Env::new();
            env.write_project(&yaml);
            std::fs::write(env.dir().join("src.txt"), "same input").unwrap();
            env
        })
        .collect();
    let children: Vec<_> = runners
        .iter()
        .map(|env| {
            s3_cmd(env, &["run", "build", "--profile", "shared"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        expect_code(&c.wait_with_output().unwrap(), 0);
    }
    for env in &runners {
        assert_eq!(
            jobs_of(env, "latest")["compile"]["status"],
            "success",
            "both computed"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    mirror(&moto.endpoint, "race", dir.path());
    // One manifest (last write wins); every blob it names is present and intact.
    let keys: Vec<_> = std::fs::read_dir(dir.path().join("cache/keys"))
        .unwrap()
        .collect();
    assert_eq!(keys.len(), 1);
    let path = keys[0].as_ref().unwrap().path();
    let key = path.file_stem().unwrap().to_string_lossy().to_string();
    let entry =
        sparkwing::remote::cache::parse_entry(&key, &std::fs::read(&path).unwrap()).unwrap();
    let files = sparkwing::remote::pack::files_from(&entry.manifest, |name| {
        std::fs::read(dir.path().join("cache/cas").join(&name[..2]).join(name)).ok()
    })
    .unwrap();
    assert_eq!(files.len(), entry.manifest.files.len());
    // Both runners' runs replicated completely.
    for env in &runners {
        assert_remote_equals_local(&env.sw_home(), dir.path());
    }
}

#[test]
fn a_429_retry_after_is_honoured_before_the_next_attempt() {
    let Some(moto) = moto() else { return };
    moto.bucket("retry-after");
    let proxy = FaultProxy::start(&moto.endpoint);
    let env = Env::new();
    s3_project(&env, &proxy.endpoint(), "retry-after");
    proxy.fail_always(Some(Fault::TooMany429Wait60));
    let out = s3_cmd(
        &env,
        &[
            "run",
            "work",
            "--profile",
            "shared",
            "--sw-sync-timeout",
            "2s",
        ],
    )
    .output()
    .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("not yet delivered"),
        "{}",
        text(&out.stderr)
    );
    let out = s3_cmd(
        &env,
        &["sync", "status", "--profile", "shared", "-o", "json"],
    )
    .output()
    .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let waits: Vec<i64> = st["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["next_attempt_in_ms"].as_i64())
        .collect();
    assert!(!waits.is_empty());
    assert!(
        waits.iter().all(|w| *w >= 45_000),
        "every target waits out Retry-After: 60 ({waits:?} ms): {st:#}"
    );
    proxy.fail_always(None);
}

#[test]
fn the_endpoint_can_come_from_sparkwing_s3_endpoint() {
    let Some(moto) = moto() else { return };
    moto.bucket("envendpoint");
    let env = Env::new();
    env.write_project("profiles:\n  shared:\n    state: { type: s3, bucket: envendpoint, prefix: state }\n    logs: { type: s3, bucket: envendpoint, prefix: logs }\n    cache: { type: s3, bucket: envendpoint, prefix: cache }\npipelines:\n  - name: work\n    jobs:\n      talk: { steps: [{ run: 'echo via env' }] }\n");
    let out = s3_cmd(&env, &["run", "work", "--profile", "shared"])
        .env("SPARKWING_S3_ENDPOINT", &moto.endpoint)
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("sparkwing: synced to s3:envendpoint/state@http://127.0.0.1"),
        "{}",
        text(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    mirror(&moto.endpoint, "envendpoint", dir.path());
    assert_remote_equals_local(&env.sw_home(), dir.path());
}

/// Issue 11: a bucket that does not exist, a 400 or a 501 is the setup's
/// fault, not an outage: the target stops as `misconfigured` (not
/// `offline`, not retried forever), keeps every entry (nothing
/// quarantined), and delivers everything once fixed and retried.
#[test]
fn a_missing_bucket_or_a_request_the_server_cannot_take_is_misconfigured_not_offline() {
    let Some(moto) = moto() else { return };
    let proxy = FaultProxy::start(&moto.endpoint);
    let env = Env::new();
    s3_project(&env, &proxy.endpoint(), "notyet");
    let stopped = |what: &str| {
        let out = s3_cmd(
            &env,
            &[
                "run",
                "work",
                "--profile",
                "shared",
                "--sw-sync-timeout",
                "3s",
            ],
        )
        .output()
        .unwrap();
        expect_code(&out, 0);
        let err = text(&out.stderr);
        assert!(err.contains("misconfigured"), "{what}: {err}");
        let st = s3_status(&env);
        let targets = st["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{what}: {st}");
        for t in targets {
            assert_eq!(t["connectivity"], "misconfigured", "{what}: {st}");
            assert_eq!(t["quarantined"], 0, "{what}: nothing quarantined: {st}");
        }
        assert!(
            targets
                .iter()
                .any(|t| t["pending_entries"].as_u64().unwrap() > 0),
            "{what}: entries kept: {st}"
        );
    };
    stopped("no such bucket");
    moto.bucket("notyet");
    proxy.fail_always(Some(Fault::BadRequest400));
    stopped("400");
    proxy.fail_always(Some(Fault::NotImplemented501));
    stopped("501");
    proxy.fail_always(None);
    expect_code(
        &s3_cmd(&env, &["sync", "retry", "--profile", "shared"])
            .output()
            .unwrap(),
        0,
    );
    expect_code(
        &s3_cmd(&env, &["sync", "flush", "--profile", "shared"])
            .output()
            .unwrap(),
        0,
    );
    let dir = tempfile::tempdir().unwrap();
    mirror(&moto.endpoint, "notyet", dir.path());
    assert_eq!(assert_remote_equals_local(&env.sw_home(), dir.path()), 3);
}

/// Issue 11: a target that a command has just read from is `online` in
/// `sync status`, even on a home that never delivered anything to it.
#[test]
fn a_target_just_read_from_shows_online() {
    let Some(moto) = moto() else { return };
    moto.bucket("readers");
    let first = Env::new();
    s3_project(&first, &moto.endpoint, "readers");
    expect_code(
        &s3_cmd(&first, &["run", "work", "--profile", "shared"])
            .output()
            .unwrap(),
        0,
    );
    let reader = second_runner(&moto.endpoint, "readers");
    let out = s3_cmd(
        &reader,
        &["runs", "list", "--profile", "shared", "-o", "json"],
    )
    .output()
    .unwrap();
    expect_code(&out, 0);
    let st = s3_status(&reader);
    let state = st["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"].as_str().unwrap().contains("/state"))
        .unwrap_or_else(|| panic!("the state target is listed: {st}"))
        .clone();
    assert_eq!(state["connectivity"], "online", "{st}");
}

/// Issue 11: GCS takes an endpoint and an anonymous mode for emulators, and
/// each credential variable is checked at run start, naming itself; Azure's
/// account defaults to the emulator's under AZURE_STORAGE_USE_EMULATOR.
#[test]
fn gcs_and_azure_settings_are_checked_at_run_start() {
    let env = Env::new();
    env.write_project(
        "profiles:\n  g: { cache: { type: gcs, bucket: bkt } }\n  anon: { cache: { type: gcs, bucket: bkt, endpoint: 'http://127.0.0.1:9', anonymous: true } }\n  a: { logs: { type: azure-blob, bucket: ctr } }\npipelines:\n  - name: work\n    jobs: {a: {steps: [{run: 'true'}]}}\n",
    );
    let run = |profile: &str, vars: &[(&str, &str)]| {
        env.cmd(&[
            "run",
            "work",
            "--profile",
            profile,
            "--sw-sync-timeout",
            "1s",
        ])
        .envs(vars.iter().copied())
        .output()
        .unwrap()
    };
    let garbage = env.dir().join("creds.json");
    std::fs::write(&garbage, "-----BEGIN nothing-----").unwrap();
    let g = garbage.to_str().unwrap();
    for (vars, says) in [
        (
            vec![("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")],
            "GOOGLE_APPLICATION_CREDENTIALS names /nonexistent/key.json, which cannot be read",
        ),
        (
            vec![("GOOGLE_APPLICATION_CREDENTIALS", g)],
            "is not a JSON credentials file; point GOOGLE_APPLICATION_CREDENTIALS at",
        ),
        (
            vec![("GOOGLE_SERVICE_ACCOUNT", g)],
            "is not a JSON credentials file; point GOOGLE_SERVICE_ACCOUNT at",
        ),
        (
            vec![
                ("SPARKWING_GCS_ANONYMOUS", "1"),
                ("SPARKWING_GCS_ENDPOINT", "ftp://x"),
            ],
            "SPARKWING_GCS_ENDPOINT \"ftp://x\" is not an http(s) URL",
        ),
        (
            vec![("SPARKWING_GCS_ANONYMOUS", "maybe")],
            "SPARKWING_GCS_ANONYMOUS=\"maybe\" is not understood",
        ),
    ] {
        let out = run("g", &vars);
        expect_code(&out, 2);
        assert!(
            text(&out.stderr).contains(says),
            "{vars:?}: {}",
            text(&out.stderr)
        );
    }
    // Reachable or not, these start: the network never fails a run.
    expect_code(&run("anon", &[]), 0);
    expect_code(
        &run(
            "g",
            &[
                ("SPARKWING_GCS_ANONYMOUS", "1"),
                ("SPARKWING_GCS_ENDPOINT", "http://127.0.0.1:9"),
            ],
        ),
        0,
    );
    let out = run(
        "a",
        &[
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9"),
        ],
    );
    expect_code(&out, 0);
    // A key the client cannot use is named at start.
    let out = run(
        "a",
        &[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "not base64!!"),
        ],
    );
    expect_code(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("the client could not be set up")
            && err.contains("check AZURE_STORAGE_ACCOUNT_KEY"),
        "{err}"
    );
    assert!(!err.contains("not base64!!"), "the key is not shown: {err}");
    let st = env
        .cmd(&["sync", "status", "--profile", "a", "-o", "json"])
        .envs([
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9"),
        ])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        st["targets"][0]["target"], "azure-blob:devstoreaccount1/ctr/@http://127.0.0.1:9",
        "the emulator's account: {st}"
    );
    env.write_project(
        "profiles:\n  bad: { cache: { type: s3, bucket: bkt, anonymous: true } }\npipelines:\n  - name: work\n    jobs: {a: {steps: [{run: 'true'}]}}\n",
    );
    let out = run("bad", &[]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("`anonymous` does not apply to type s3"),
        "{}",
        text(&out.stderr)
    );
}
