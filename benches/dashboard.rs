//! The dashboard (`sparkwing-web`, the real binary) against raw reads of the
//! same data, side by side from one run:
//!
//! (a) the runs list (first page, 50 runs) over 1,000 runs in a local
//!     `state.db`, against a raw rusqlite query of the same 50 rows;
//! (b) the same over 1,000 runs in a bucket (moto), against a raw
//!     `object_store` LIST of `runs/` plus the 50 newest `run.json` GETs at
//!     the same concurrency (the fewest requests that page needs);
//! (c) the server's memory while it serves a 50 MiB log (raw download and
//!     the log page), against the log's size (what reading it whole costs).
//!
//! `bash scripts/test.sh` provisions moto in .venv; then
//! `cargo bench --bench dashboard` (BENCH_ROUNDS=N, default 15).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use sparkwing::local::store::{JobEnd, NewRun, RunRow, RunTargets, Store};

const WEB: &str = env!("CARGO_BIN_EXE_sparkwing-web");

struct Web {
    child: Child,
    addr: String,
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn web(args: &[&str], envs: &[(&str, &str)]) -> Web {
    let mut child = Command::new(WEB)
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("sparkwing-web printed {line:?}"))
        .to_string();
    Web { child, addr }
}

impl Web {
    /// GET, body read to the end; returns (status, body length).
    fn get(&self, path: &str) -> (u16, usize) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let status = std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
        (status, buf.len())
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

fn time_get(w: &Web, path: &str, rounds: usize) -> Duration {
    let mut t = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let (status, _) = w.get(path);
        t.push(start.elapsed());
        assert_eq!(status, 200, "{path}");
    }
    common::median(t)
}

fn row(label: &str, d: Duration) {
    println!("    {label:<52} {:>9.2} ms", d.as_secs_f64() * 1e3);
}

/// 1,000 finished runs of two jobs each in a fresh SPARKWING_HOME.
fn local_home(n: usize) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    for i in 0..n {
        let run = RunRow {
            id: format!("01M8F{i:021}"),
            pipeline: if i % 2 == 0 { "build" } else { "test" }.into(),
            status: "running".into(),
            profile: "laptop".into(),
            project_dir: "/src".into(),
            host: format!("ci-{}", i % 7),
            pid: 1,
            started_at: 1_700_000_000_000 + i as i64 * 1000,
            finished_at: None,
            error: None,
        };
        store
            .create_run(&NewRun {
                run: &run,
                targets: RunTargets::default(),
                jobs: vec![
                    ("compile".into(), vec![]),
                    ("test".into(), vec!["compile".into()]),
                ],
                steps: vec![
                    ("compile".into(), 0, "make".into()),
                    ("test".into(), 0, "make test".into()),
                ],
            })
            .unwrap();
        for j in ["compile", "test"] {
            store
                .job_finished(
                    &run.id,
                    j,
                    &JobEnd {
                        status: sparkwing::status::JobStatus::Success,
                        rest_status: sparkwing::status::StepStatus::Success,
                        cache_key: None,
                        cached_from_run: None,
                        error: None,
                    },
                )
                .unwrap();
        }
        store
            .run_finished(&run.id, sparkwing::status::RunStatus::Success, None)
            .unwrap();
    }
    home
}

fn bench_local(rounds: usize) {
    let home = local_home(1000);
    let db = home.path().join("state.db");
    let w = web(
        &["--state-spec", &format!("sqlite://{}", db.display())],
        &[],
    );
    w.get("/");
    let ours = time_get(&w, "/", rounds);
    let ours500 = time_get(&w, "/?limit=500", rounds);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let raw = |limit: i64| {
        let mut t = Vec::new();
        for _ in 0..rounds {
            let start = Instant::now();
            let mut st = conn
                .prepare_cached("SELECT id, pipeline, status, profile, project_dir, host, pid, started_at, finished_at, error FROM runs ORDER BY started_at DESC, id DESC LIMIT ?1")
                .unwrap();
            let n = st
                .query_map([limit], |r| r.get::<_, String>(0))
                .unwrap()
                .count();
            assert_eq!(n as i64, limit);
            t.push(start.elapsed());
        }
        common::median(t)
    };
    println!("(a) runs list over 1,000 runs in a local state.db, median of {rounds}");
    row("sparkwing-web GET / (50 runs, HTML over HTTP)", ours);
    row(
        "raw rusqlite SELECT of the same 50 rows (baseline)",
        raw(50),
    );
    row("sparkwing-web GET /?limit=500", ours500);
    row(
        "raw rusqlite SELECT of the same 500 rows (baseline)",
        raw(500),
    );
}

fn bench_bucket(rounds: usize) {
    let m = common::moto();
    m.bucket("dash");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = common::store(&m.endpoint, "dash");
    common::seed_remote_runs(&rt, &s, "state", 1000);
    let envs = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("SPARKWING_S3_ENDPOINT", m.endpoint.as_str()),
    ];
    let w = web(&["--state-spec", "s3://dash/state"], &envs);
    w.get("/");
    let before = m.requests();
    let ours = time_get(&w, "/", rounds);
    let per_page = (m.requests() - before) / rounds;
    // Raw: one LIST, then the newest 50 run.json, 16 at a time.
    let mut t = Vec::new();
    for _ in 0..rounds {
        let s = Arc::clone(&s);
        let start = Instant::now();
        rt.block_on(async move {
            let listed = s
                .list_with_delimiter(Some(&object_store::path::Path::from("state/runs")))
                .await
                .unwrap();
            let mut ids: Vec<String> = listed
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(String::from))
                .collect();
            ids.sort();
            ids.reverse();
            ids.truncate(50);
            for chunk in ids.chunks(16) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk {
                    let s = Arc::clone(&s);
                    let key = object_store::path::Path::from(format!("state/runs/{id}/run.json"));
                    set.spawn(
                        async move { s.get(&key).await.unwrap().bytes().await.unwrap().len() },
                    );
                }
                while set.join_next().await.is_some() {}
            }
        });
        t.push(start.elapsed());
    }
    let raw = common::median(t);
    println!("(b) runs list over 1,000 runs in a bucket (moto), median of {rounds}");
    row("sparkwing-web GET / (50 runs, HTML over HTTP)", ours);
    row("raw LIST + 50 run.json GETs (baseline)", raw);
    println!("    requests per page: {per_page} (1 LIST + 50 GETs = 51 is the floor)");
}

/// A 50 MiB log with colour, as lines; returns its bytes.
fn big_log() -> Vec<u8> {
    let line = b"\x1b[32mok\x1b[0m a line of a big build log, with some colour ..\n";
    let mut out = Vec::with_capacity((50 << 20) + line.len());
    while out.len() < 50 << 20 {
        out.extend_from_slice(line);
    }
    out
}

/// Peak RSS of `w` before and after serving `run`'s `compile` log.
fn measure_log(what: &str, w: &Web, run: &str, size: usize) {
    w.get("/");
    let base = w.status_kib("VmHWM:");
    let (_, n) = w.get(&format!("/runs/{run}/jobs/compile/log.txt"));
    assert!(n >= size, "the download holds the whole log");
    let after_raw = w.status_kib("VmHWM:");
    let (_, page) = w.get(&format!("/runs/{run}/jobs/compile/log"));
    let after_page = w.status_kib("VmHWM:");
    println!("  {what}:");
    println!("    peak RSS before                                  {base:>8} KiB");
    println!(
        "    after the raw download ({:.1} MiB sent)           {after_raw:>8} KiB (+{} KiB)",
        n as f64 / 1048576.0,
        after_raw - base
    );
    println!(
        "    after the log page ({:>4} KiB of HTML)             {after_page:>8} KiB (+{} KiB)",
        page / 1024,
        after_page - base
    );
}

fn bench_log_memory() {
    let log = big_log();
    println!(
        "(c) server memory while serving a {:.1} MiB log; baseline: reading it whole needs {} KiB",
        log.len() as f64 / 1048576.0,
        log.len() / 1024
    );
    // This machine's log file (dashboard start, or a sqlite:// spec).
    let home = local_home(1);
    let run = format!("01M8F{:021}", 0);
    let dir = home.path().join("runs").join(&run);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("compile.log"), &log).unwrap();
    let db = home.path().join("state.db");
    let w = web(
        &["--state-spec", &format!("sqlite://{}", db.display())],
        &[],
    );
    measure_log("a local log file (sqlite:// state)", &w, &run, log.len());
    drop(w);
    // Another runner's log on a shared remote: 1 MiB chunks.
    let remote = tempfile::tempdir().unwrap();
    let state = remote.path().join("state/runs").join(&run);
    std::fs::create_dir_all(&state).unwrap();
    let doc = serde_json::json!({"id": run, "pipeline": "build", "status": "success", "host": "ci-1",
        "started_at": "2026-11-27T00:00:00.000Z", "duration_ms": 1000,
        "jobs": [{"name": "compile", "status": "success", "needs": [], "steps": []}]});
    std::fs::write(state.join("run.json"), doc.to_string()).unwrap();
    let chunks = remote.path().join("logs").join(&run).join("compile");
    std::fs::create_dir_all(&chunks).unwrap();
    for (i, c) in log.chunks(1 << 20).enumerate() {
        std::fs::write(chunks.join(format!("{i:010}.log")), c).unwrap();
    }
    let w = web(
        &[
            "--state-spec",
            &remote.path().join("state").display().to_string(),
            "--logs-spec",
            &remote.path().join("logs").display().to_string(),
        ],
        &[],
    );
    measure_log(
        "a remote log in 1 MiB chunks (directory specs)",
        &w,
        &run,
        log.len(),
    );
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    bench_local(rounds);
    bench_bucket(rounds);
    bench_log_memory();
}
