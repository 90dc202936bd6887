//! Helpers shared by the bench binaries.
#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sparkwing_outbox::{NewEntry, Payload};
use sparkwing_sync::target::OpKind;

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A fixed-seed shuffle (xorshift), so runs are comparable.
pub fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// A backlog like an offline laptop's: 20 runs, each a state stream and
/// five log streams of 4 KiB chunks. As the replicator does, log chunks
/// refer to byte ranges of log files (in `logs`); events are inline.
pub fn backlog_entries(backlog: usize, logs: &std::path::Path) -> Vec<NewEntry> {
    let per_run = backlog / 20;
    let log_file = logs.join("job.log");
    std::fs::write(&log_file, vec![b'x'; 4096 * per_run]).unwrap();
    let mut all = Vec::new();
    for r in 0..20 {
        let run = format!("RUN{r:04}");
        for i in 0..per_run {
            all.push(if i % 10 == 0 {
                NewEntry {
                    stream: format!("state/{run}"),
                    seq: i as i64,
                    op: OpKind::StateEvents.as_str().into(),
                    subject: run.clone(),
                    payload: Payload::Inline(format!("{{\"seq\":{i}}}\n").into_bytes()),
                }
            } else {
                let job = format!("job{}", i % 5);
                NewEntry {
                    stream: format!("log/{run}/{job}"),
                    seq: i as i64,
                    op: OpKind::LogChunk.as_str().into(),
                    subject: format!("{run}/{job}"),
                    payload: Payload::File {
                        path: log_file.clone(),
                        offset: 4096 * i as u64,
                        len: 4096,
                    },
                }
            });
        }
    }
    all
}

/// moto_server on a free port, with its request log; killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto from .venv (or SPARKWING_TEST_MOTO).
pub fn moto() -> Moto {
    let bin = std::env::var_os("SPARKWING_TEST_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"));
    assert!(
        bin.exists(),
        "moto_server not found at {}: run `bash scripts/test.sh` once to provision .venv",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("moto.log");
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    }
}

impl Moto {
    pub fn bucket(&self, name: &str) {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
    }
    /// Requests moto has logged so far.
    pub fn requests(&self) -> usize {
        self.requests_of("")
    }

    /// Requests of one method (`"PUT"`; `""` for all) moto has logged so far.
    /// The server colours the request of an answer other than 200 (a 206
    /// to a ranged read, a 4xx) with terminal escapes, removed first.
    pub fn requests_of(&self, method: &str) -> usize {
        let f = std::fs::File::open(&self.log).unwrap();
        let want = format!("\"{method}");
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .map(|l| strip_escapes(&l))
            .filter(|l| l.contains(" HTTP/1.1\"") && l.contains(&want))
            .count()
    }
}

/// An S3 client of moto's bucket.
pub fn store(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    sparkwing_sync::object::install_crypto_provider();
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_allow_http(true)
            .with_retry(sparkwing_sync::object::client_retry())
            .build()
            .unwrap(),
    )
}

/// Writes `n` finished runs' `run.json` under `prefix/runs/`, as other
/// runners would have (16 PUTs at once).
pub fn seed_remote_runs(
    rt: &tokio::runtime::Runtime,
    s: &Arc<dyn ObjectStore>,
    prefix: &str,
    n: u64,
) {
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let s = s.clone();
            let key = format!("{prefix}/runs/01M8F{i:021}/run.json");
            set.spawn(async move {
                let id = format!("01M8F{:021}", i);
                let doc = serde_json::json!({"id": id, "pipeline": if i % 2 == 0 { "build" } else { "test" }, "status": "success",
                    "profile": "shared", "host": format!("ci-{}", i % 7), "pid": 1, "project_dir": "/src", "started_at": "2026-11-27T00:00:00.000Z",
                    "finished_at": "2026-11-27T00:00:01.000Z", "duration_ms": 1000, "error": null, "jobs": []});
                s.put(&object_store::path::Path::from(key), PutPayload::from(serde_json::to_vec(&doc).unwrap())).await.unwrap();
            });
            if set.len() >= 16 {
                set.join_next().await;
            }
        }
        while set.join_next().await.is_some() {}
    });
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
