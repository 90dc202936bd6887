//! The shared cache against one archive (issue 13): W1 (many small files)
//! and W2 (fewer, some large) saved by one runner and restored by a fresh
//! one through a directory remote and through S3 (moto). The cached job's
//! key is a small seed file, so the figures are the cache's own (not the
//! hashing of key inputs). Against what
//! actions/cache does: `tar | zstd -3 -T0` and one PUT, one GET and
//! `zstd -d | tar -x`. Also, per workload and medium: the requests of a
//! save and a restore (S3, from moto's log), the bytes stored for the first
//! key against the tar.zst, and a re-save after 1% of the files changed
//! (bytes sent against the archive's).
//!
//! `bash scripts/test.sh` provisions moto; then `cargo bench --bench
//! cache_remote` (BENCH_W1_FILES=N, BENCH_W2_MB=N to scale the workloads;
//! BENCH_MEDIA=directory,s3 to choose). The workloads are generated here
//! from fixed seeds (W1 by `cache_local.rs`'s generator).

mod common;

#[allow(dead_code)]
#[path = "cache_local.rs"]
mod local;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use object_store::{ObjectStoreExt, PutPayload};

/// A fixed-seed generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// W2: 2,000 files and `mb` MB in all: ten large ones hold 70% of the
/// bytes; a quarter random bytes, the rest repetitive text, so it
/// compresses to about a quarter, as build outputs do.
fn w2(root: &Path, mb: u64) -> u64 {
    let mut rng = Rng(0x5EED_CAFE_F00D_0002);
    let total = mb * 1_000_000;
    let large_share = total * 7 / 10;
    let mut written = 0u64;
    let fill = |len: u64, rng: &mut Rng| -> Vec<u8> {
        let mut v = Vec::with_capacity(len as usize);
        while (v.len() as u64) < len {
            let r = rng.next();
            if r.is_multiple_of(4) {
                v.extend_from_slice(&r.to_le_bytes());
            } else {
                v.extend_from_slice(b"obj_file section .text 0x0040 ");
            }
        }
        v.truncate(len as usize);
        v
    };
    for i in 0..2_000u64 {
        let dir = root.join(format!("target/debug/deps/d{:02}", i % 50));
        std::fs::create_dir_all(&dir).unwrap();
        let len = if i < 10 {
            large_share / 10
        } else {
            (total - large_share) / 1_990
        };
        std::fs::write(dir.join(format!("f{i}.o")), fill(len, &mut rng)).unwrap();
        written += len;
    }
    written
}

/// Changes 1% of the files under `root` (every 100th, in path order): a
/// few bytes appended.
fn change_one_percent(root: &Path, round: u32) {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    for f in files.iter().step_by(100) {
        let mut body = std::fs::read(f).unwrap();
        body.extend_from_slice(format!("\nchanged in round {round}\n").as_bytes());
        std::fs::write(f, body).unwrap();
    }
}

fn sh(dir: &Path, script: &str) -> Duration {
    let start = Instant::now();
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

/// The bytes and objects under a directory, recursively.
fn dir_usage(root: &Path) -> (u64, u64) {
    let mut n = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                n.0 += 1;
                n.1 += m.len();
            }
        }
    }
    n
}

enum Medium<'a> {
    Directory(PathBuf),
    S3(&'a common::Moto, String),
}

impl Medium<'_> {
    fn name(&self) -> &'static str {
        match self {
            Medium::Directory(_) => "directory",
            Medium::S3(..) => "S3 (moto)",
        }
    }

    fn profile(&self) -> String {
        let mut y = String::from("profiles:\n  team:\n");
        for s in ["state", "logs", "cache"] {
            match self {
                Medium::Directory(root) => {
                    std::fs::create_dir_all(root.join(s)).unwrap();
                    y.push_str(&format!(
                        "    {s}: {{ type: filesystem, path: {} }}\n",
                        root.join(s).display()
                    ));
                }
                Medium::S3(m, bucket) => y.push_str(&format!(
                    "    {s}: {{ type: s3, bucket: {bucket}, prefix: {s}, endpoint: \"{}\" }}\n",
                    m.endpoint
                )),
            }
        }
        y
    }

    /// The cache surface's objects and bytes.
    fn cache_usage(&self, rt: &tokio::runtime::Runtime) -> (u64, u64) {
        match self {
            Medium::Directory(root) => dir_usage(&root.join("cache")),
            Medium::S3(m, bucket) => {
                use futures_util::TryStreamExt;
                let store = common::store(&m.endpoint, bucket);
                let prefix = object_store::path::Path::from("cache");
                let metas: Vec<_> = rt
                    .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
                    .unwrap();
                (metas.len() as u64, metas.iter().map(|m| m.size).sum())
            }
        }
    }

    fn requests(&self, method: &str) -> usize {
        match self {
            Medium::Directory(_) => 0,
            Medium::S3(m, _) => m.requests_of(method),
        }
    }

    /// The archive baseline's upload and download: one PUT, one GET (a
    /// copy into and out of the directory).
    fn put(&self, rt: &tokio::runtime::Runtime, file: &Path) -> Duration {
        let start = Instant::now();
        match self {
            Medium::Directory(root) => {
                std::fs::copy(file, root.join("archive.tar.zst")).unwrap();
            }
            Medium::S3(m, bucket) => {
                let body = std::fs::read(file).unwrap();
                let store = common::store(&m.endpoint, bucket);
                rt.block_on(store.put(
                    &object_store::path::Path::from("archive.tar.zst"),
                    PutPayload::from(body),
                ))
                .unwrap();
            }
        }
        start.elapsed()
    }

    fn get(&self, rt: &tokio::runtime::Runtime, file: &Path) -> Duration {
        let start = Instant::now();
        match self {
            Medium::Directory(root) => {
                std::fs::copy(root.join("archive.tar.zst"), file).unwrap();
            }
            Medium::S3(m, bucket) => {
                let store = common::store(&m.endpoint, bucket);
                let body = rt
                    .block_on(async {
                        store
                            .get(&object_store::path::Path::from("archive.tar.zst"))
                            .await?
                            .bytes()
                            .await
                    })
                    .unwrap();
                std::fs::write(file, body).unwrap();
            }
        }
        start.elapsed()
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Medium::Directory(_) => Vec::new(),
            Medium::S3(..) => vec![
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ],
        }
    }
}

/// One runner: a home and a checkout holding the generated workload.
struct Runner {
    home: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Runner {
    fn new(yaml: &str, gen: &Path) -> Runner {
        let r = Runner {
            home: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
        };
        let p = r.project.path();
        std::fs::create_dir_all(p.join(".sparkwing")).unwrap();
        std::fs::write(p.join(".sparkwing/sparkwing.yaml"), yaml).unwrap();
        std::fs::write(p.join("seed.txt"), "first").unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(gen)
            .arg(p.join("gen"))
            .status()
            .unwrap();
        assert!(status.success());
        r
    }

    /// `sparkwing run w --profile team`, waiting for the upload.
    fn run(&self, medium: &Medium) -> (Duration, String) {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_sparkwing"))
            .args([
                "run",
                "w",
                "--profile",
                "team",
                "--sw-sync-timeout",
                "1200s",
            ])
            .current_dir(self.project.path())
            .env("HOME", self.home.path())
            .env_remove("SPARKWING_HOME")
            .env_remove("SPARKWING_PROFILES")
            .envs(medium.env())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let took = start.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        // moto writes its request log a moment after answering.
        std::thread::sleep(Duration::from_millis(500));
        (took, err)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn bench(name: &str, gen: &Path, plain: u64, medium: &Medium, rt: &tokio::runtime::Runtime) {
    let yaml = format!(
        "{}pipelines:\n  - name: w\n    jobs:\n      deps:\n        cache: {{ key: [seed.txt], outputs: [out] }}\n        steps: [{{ run: 'rm -rf out && cp -a gen out' }}]\n",
        medium.profile()
    );
    let a = Runner::new(&yaml, gen);
    let (puts0, gets0) = (medium.requests("PUT"), medium.requests("GET"));
    let before = medium.cache_usage(rt);
    let (save, _) = a.run(medium);
    let after = medium.cache_usage(rt);
    let save_puts = medium.requests("PUT") - puts0;
    let stored = after.1 - before.1;
    let cache_objects = after.0 - before.0;

    // The archive of the same outputs: the job's cp -a, tar | zstd, 1 PUT.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let copy = sh(w, &format!("cp -a {} out", gen.display()));
    let tar = sh(w, "tar -cf - out | zstd -q -3 -T0 -f -o out.tar.zst");
    let archive = std::fs::metadata(w.join("out.tar.zst")).unwrap().len();
    let put = medium.put(rt, &w.join("out.tar.zst"));
    let tar_save = copy + tar + put;

    // A fresh runner restores.
    let b = Runner::new(&yaml, gen);
    let (puts1, gets1) = (medium.requests("PUT"), medium.requests("GET"));
    let (restore, err) = b.run(medium);
    assert!(err.contains("restored from run"), "not a hit: {err}");
    let restore_gets = medium.requests("GET") - gets1;
    let _ = (puts1, gets0);
    let fresh = tempfile::tempdir().unwrap();
    let get = medium.get(rt, &fresh.path().join("out.tar.zst"));
    let untar = sh(fresh.path(), "zstd -q -d -c out.tar.zst | tar -xf -");
    let tar_restore = get + untar;

    // 1% of the files change: a new key, re-saved.
    change_one_percent(&a.project.path().join("gen"), 1);
    std::fs::write(a.project.path().join("seed.txt"), "second").unwrap();
    let before = medium.cache_usage(rt);
    let puts2 = medium.requests("PUT");
    let (resave, _) = a.run(medium);
    let resave_puts = medium.requests("PUT") - puts2;
    let sent = medium.cache_usage(rt).1 - before.1;

    println!(
        "  {name} on {}: {} plain, tar.zst {} (median of 1 round, seconds)",
        medium.name(),
        mb(plain),
        mb(archive)
    );
    println!(
        "    {:<44} {:>9} {:>9} {:>7}",
        "", "sparkwing", "archive", "ratio"
    );
    let row = |what: &str, ours: Duration, theirs: Duration| {
        println!(
            "    {what:<44} {:>9} {:>9} {:>6.2}x",
            secs(ours),
            secs(theirs),
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    };
    row("save (the job's cp -a + store + upload)", save, tar_save);
    row(
        "restore on a fresh runner (whole run)",
        restore,
        tar_restore,
    );
    row("re-save after a 1% change", resave, tar_save);
    println!(
        "    bytes stored for the first key: {} ({} objects incl. the manifest) = {:.2}x the tar.zst",
        mb(stored),
        cache_objects,
        stored as f64 / archive as f64
    );
    println!(
        "    bytes sent by the 1% re-save: {} = {:.1}% of the archive's {}",
        mb(sent),
        100.0 * sent as f64 / archive as f64,
        mb(archive)
    );
    if let Medium::S3(..) = medium {
        println!(
            "    requests: save {save_puts} PUTs (every surface: state, logs, cache), restore {restore_gets} GETs, 1% re-save {resave_puts} PUTs; archive: 1 PUT, 1 GET"
        );
    }
}

fn main() {
    let w1_files: usize = std::env::var("BENCH_W1_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let w2_mb: u64 = std::env::var("BENCH_W2_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(421);
    let media = std::env::var("BENCH_MEDIA").unwrap_or_else(|_| "directory,s3".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gens = tempfile::tempdir().unwrap();
    let w1_dir = gens.path().join("w1");
    let w1_bytes = local::w1(&w1_dir, w1_files);
    let w2_dir = gens.path().join("w2");
    let w2_bytes = w2(&w2_dir, w2_mb);
    let moto = media.contains("s3").then(common::moto);
    println!(
        "cache_remote: a fresh runner's restore and a save, against tar | zstd -3 -T0 + 1 PUT/GET"
    );
    for (name, dir, bytes) in [("W1", &w1_dir, w1_bytes), ("W2", &w2_dir, w2_bytes)] {
        if media.contains("directory") {
            let remote = tempfile::tempdir().unwrap();
            bench(
                name,
                dir,
                bytes,
                &Medium::Directory(remote.path().to_path_buf()),
                &rt,
            );
        }
        if let Some(m) = &moto {
            let bucket = format!("bench-{}", name.to_lowercase());
            m.bucket(&bucket);
            bench(name, dir, bytes, &Medium::S3(m, bucket), &rt);
        }
    }
}
