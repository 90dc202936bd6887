//! Mode 2 against a real S3-protocol server (moto), figures side by side:
//!
//! (a) replaying a backlog with the `SyncActor` against a raw concurrent
//!     `object_store` put loop of the same objects (target >= 80%), on moto
//!     (S3), Azurite (Azure Blob) and fake-gcs-server (GCS, behind the
//!     tests' adapter, `tests/it/gcs_adapter.rs`);
//! (b) uploading an 8 MiB cache pack twice: bytes sent (a counting proxy)
//!     and requests (target, issue 13: one conditional create each, no
//!     HEAD);
//! (c) `sparkwing runs list --profile` over 1,000 remote runs: time and
//!     number of requests (from moto's request log);
//! (d) object PUTs for one run of 5 jobs printing 10,000 lines in all, once
//!     quickly and once spread over more than 10 s (issue 9: exactly-once
//!     delivery must not multiply requests).
//!
//! `bash scripts/test.sh` provisions the three emulators; then
//! `cargo bench --bench mode2_s3` (BENCH_BACKLOG=N to resize (a);
//! BENCH_PROVIDERS=s3,azure,gcs to choose; S3 runs (b)-(d) too).

mod common;

// The tests' emulator harness (issue 11): Azurite and fake-gcs-server (behind
// its adapter) for (a) on the other two providers.
#[allow(dead_code)]
#[path = "../tests/it/checker.rs"]
mod checker;
#[allow(dead_code)]
#[path = "../tests/it/gcs_adapter.rs"]
mod gcs_adapter;
#[allow(dead_code)]
#[path = "../tests/it/providers.rs"]
mod providers;
#[allow(dead_code)]
#[path = "../tests/it/util.rs"]
mod util;

use common::store;
use object_store::ObjectStore;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use sparkwing_outbox::Outbox;
use sparkwing_sync::target::sha256_hex;
use sparkwing_sync::{ObjectStoreTarget, Op, SyncActor, SyncConfig, Target};

/// Counts the bytes clients send upstream.
fn counting_proxy(upstream: &str) -> (u16, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let (up, counter) = (
        upstream.trim_start_matches("http://").to_string(),
        sent.clone(),
    );
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(client) = c else { continue };
            let Ok(server) = std::net::TcpStream::connect(&up) else {
                continue;
            };
            let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c2, mut s2) = (client, server);
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = c1.read(&mut buf) {
                    if n == 0 || s1.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, sent)
}

fn bench_replay(
    provider: &str,
    bucket: &dyn Fn(&str),
    store: &dyn Fn(&str) -> Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Runtime,
    backlog: usize,
    concurrency: usize,
) {
    bucket("ours");
    bucket("raw");
    let home = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let entries = common::backlog_entries(backlog, logs.path());
    let ob = Arc::new(Outbox::open(home.path()).unwrap());
    // As a run builds it: objects typed with their content type.
    let objects =
        Arc::new(ObjectStoreTarget::new("bench:ours/", store("ours"), "").with_content_types());
    let target: Arc<dyn Target> = Arc::clone(&objects) as Arc<dyn Target>;
    ob.enqueue(target.id(), &entries, &[]).unwrap();
    let actor = SyncActor::new(
        Arc::clone(&ob),
        vec![Arc::clone(&target)],
        SyncConfig {
            concurrency,
            linger: Duration::ZERO,
            ..Default::default()
        },
    );
    let start = Instant::now();
    let report = rt
        .block_on(actor.drain((Instant::now() + Duration::from_secs(3600)).into()))
        .unwrap();
    let ours = start.elapsed();
    assert_eq!(
        rt.block_on(actor.pending()).unwrap().0,
        0,
        "everything delivered"
    );
    // The same objects, read back, then put raw into another bucket.
    let keys = rt.block_on(objects.list("")).unwrap();
    let mut objects: Vec<(String, Bytes)> = keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                rt.block_on(objects.read(k, u64::MAX)).unwrap().unwrap(),
            )
        })
        .collect();
    common::shuffle(&mut objects);
    let raw_store = store("raw");
    let objects = Arc::new(objects);
    let start = Instant::now();
    rt.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (s, o, n) = (raw_store.clone(), objects.clone(), next.clone());
            set.spawn(async move {
                loop {
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    let Some((k, b)) = o.get(i) else { break };
                    s.put(
                        &object_store::path::Path::from(k.as_str()),
                        PutPayload::from(b.clone()),
                    )
                    .await
                    .unwrap();
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
    let raw = start.elapsed();
    let n = objects.len() as f64;
    println!(
        "(a) replay a backlog of {} entries ({} objects) to {provider}, concurrency {concurrency}",
        report.delivered,
        objects.len()
    );
    println!(
        "    {:<42} {:>9.1}s {:>9.0} objects/s",
        "SyncActor::drain",
        ours.as_secs_f64(),
        n / ours.as_secs_f64()
    );
    println!(
        "    {:<42} {:>9.1}s {:>9.0} objects/s",
        "raw object_store put loop (baseline)",
        raw.as_secs_f64(),
        n / raw.as_secs_f64()
    );
    let pct = 100.0 * raw.as_secs_f64() / ours.as_secs_f64();
    println!(
        "    ours / raw = {pct:.0}% of raw throughput; target >= 80%: {}",
        if pct >= 80.0 { "met" } else { "NOT met" }
    );
}

fn bench_blob(m: &common::Moto, rt: &tokio::runtime::Runtime) {
    m.bucket("blobs");
    let (port, sent) = counting_proxy(&m.endpoint);
    let target = ObjectStoreTarget::new(
        "s3:blobs/",
        store(&format!("http://127.0.0.1:{port}"), "blobs"),
        "cache",
    );
    // A full pack (issue 13): what a cache upload sends.
    let mut body = vec![0u8; sparkwing::remote::pack::PACK as usize];
    let mut x = 1u64;
    for b in body.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let body = Bytes::from(body);
    let op = Op::CacheBlob {
        sha256: sha256_hex(&body),
        body: body.clone(),
    };
    let requests = || m.requests_of("PUT") + m.requests_of("HEAD");
    let (before, r0) = (sent.load(Ordering::Relaxed), requests());
    let first = rt.block_on(target.apply(&op)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (first_bytes, first_requests) = (sent.load(Ordering::Relaxed) - before, requests() - r0);
    let (before, r0) = (sent.load(Ordering::Relaxed), requests());
    let start = Instant::now();
    let second = rt.block_on(target.apply(&op)).unwrap();
    let took = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (second_bytes, second_requests) = (sent.load(Ordering::Relaxed) - before, requests() - r0);
    println!("(b) an 8 MiB cache pack, uploaded, then uploaded again (bytes sent counted by a proxy, requests from moto's log)");
    println!("    first upload:  {first:?}, {first_bytes} bytes sent, {first_requests} request(s)");
    println!(
        "    second upload: {second:?}, {second_bytes} bytes sent, {second_requests} request(s), in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    println!(
        "    target (issue 13): one conditional create per upload, no HEAD: {}",
        if first_requests == 1 && second_requests == 1 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("    baseline (issue 4's blobs): a HEAD before every upload, 2 requests for a new blob, 504 bytes for one present");
}

fn bench_list(m: &common::Moto, rt: &tokio::runtime::Runtime) {
    m.bucket("runs");
    let s = store(&m.endpoint, "runs");
    // 1,000 runs from "other runners", written directly.
    common::seed_remote_runs(rt, &s, "state", 1000);
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join(".sparkwing")).unwrap();
    std::fs::write(
        project.path().join(".sparkwing/sparkwing.yaml"),
        format!("profiles:\n  shared:\n    state: {{ type: s3, bucket: runs, prefix: state, endpoint: \"{}\" }}\npipelines: []\n", m.endpoint),
    )
    .unwrap();
    println!("(c) sparkwing runs list --profile over 1,000 remote runs (whole process; requests from moto's log)");
    for limit in ["20", "1000"] {
        let before = m.requests();
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_sparkwing"))
            .args([
                "runs",
                "list",
                "--profile",
                "shared",
                "--limit",
                limit,
                "-o",
                "json",
            ])
            .current_dir(project.path())
            .env("HOME", home.path())
            .env_remove("SPARKWING_HOME")
            .envs([
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ])
            .output()
            .unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let requests = m.requests() - before;
        println!(
            "    --limit {limit:>4}: {:>4} runs listed in {:>7.1} ms with {requests} requests",
            rows.as_array().unwrap().len(),
            took.as_secs_f64() * 1e3
        );
    }
    println!("    baseline (naive: list every object, GET every run.json): 1,000 runs = at least 1,001 requests whatever the page size");
}

/// (d): PUTs for a 5-job, 10,000-line run, printed quickly and slowly.
fn bench_puts(m: &common::Moto) {
    m.bucket("puts");
    let project = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join(".sparkwing")).unwrap();
    let job = |name: &str, slow: bool| {
        let body = if slow {
            // 2,000 lines in 20 bursts over about 11 s.
            "for b in $(seq 20); do seq 100 | sed \"s/^/line $b./\"; sleep 0.55; done"
        } else {
            "seq 2000 | sed 's/^/line /'"
        };
        format!("      {name}:\n        steps:\n          - run: {body:?}\n")
    };
    let mut yaml = format!(
        "profiles:\n  shared:\n    state: {{ type: s3, bucket: puts, prefix: state, endpoint: \"{e}\" }}\n    logs: {{ type: s3, bucket: puts, prefix: logs, endpoint: \"{e}\" }}\n    cache: {{ type: s3, bucket: puts, prefix: cache, endpoint: \"{e}\" }}\npipelines:\n",
        e = m.endpoint
    );
    for (name, slow) in [("quick", false), ("slow", true)] {
        yaml.push_str(&format!("  - name: {name}\n    jobs:\n"));
        for j in 0..5 {
            yaml.push_str(&job(&format!("j{j}"), slow));
        }
    }
    std::fs::write(project.path().join(".sparkwing/sparkwing.yaml"), yaml).unwrap();
    println!("(d) object PUTs of one run: 5 jobs, 10,000 lines in all (requests from moto's log)");
    for (name, took_at_least) in [("quick", "prints at once"), ("slow", "prints over 11 s")] {
        let before = m.requests_of("PUT");
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_sparkwing"))
            .args(["run", name, "--profile", "shared"])
            .current_dir(project.path())
            .env("HOME", home.path())
            .env_remove("SPARKWING_HOME")
            .envs([
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
        let puts = m.requests_of("PUT") - before;
        println!(
            "    {name:<5} ({took_at_least}, {:.1} s): {puts} PUTs",
            start.elapsed().as_secs_f64()
        );
    }
    println!("    baseline (commit e0fb979, before exactly-once): 12 PUTs quick, 58 PUTs slow");
}

fn main() {
    let backlog: usize = std::env::var("BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let m = common::moto();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("BENCH_ONLY").as_deref() == Ok("puts") {
        bench_puts(&m);
        return;
    }
    let only = std::env::var("BENCH_PROVIDERS").unwrap_or_else(|_| "s3,azure,gcs".into());
    if only.split(',').any(|p| p == "s3") {
        bench_puts(&m);
        bench_list(&m, &rt);
        bench_blob(&m, &rt);
        bench_replay(
            "moto S3",
            &|b| m.bucket(b),
            &|b| store(&m.endpoint, b),
            &rt,
            backlog,
            8,
        );
    }
    for (name, p) in [
        ("azure", providers::Provider::Azure),
        ("gcs", providers::Provider::Gcs),
    ] {
        if !only.split(',').any(|x| x == name) {
            continue;
        }
        let server = p
            .start()
            .unwrap_or_else(|| panic!("{name}: `bash scripts/test.sh` provisions its emulator"));
        let label = match p {
            providers::Provider::Azure => "Azurite (Azure Blob)",
            _ => "fake-gcs-server (GCS, through the tests' adapter)",
        };
        bench_replay(
            label,
            &|b| server.bucket(b),
            &|b| server.store(b),
            &rt,
            backlog,
            8,
        );
    }
}
