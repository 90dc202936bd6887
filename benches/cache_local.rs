//! The local cache against what a user would otherwise do (issue 13): save
//! and restore of a directory of many small files (W1: 20,000 files of
//! 200 B-20 KiB, about 96 MB of text) by `sparkwing run`, against
//! `cp -a` (the local floor) and `tar | zstd -3 -T0` (one archive, as
//! actions/cache does), measured in one run.
//!
//! `cargo bench --bench cache_local` (BENCH_FILES=N for a smaller W1,
//! BENCH_ITERS=N for more rounds). The workload is generated here from a
//! fixed seed, so every run and machine caches the same bytes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fixed-seed generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// W1: `files` files of 200 B to 20 KiB of source-like text, in nested
/// directories (like `node_modules`), deterministic. Returns the bytes.
pub fn w1(root: &Path, files: usize) -> u64 {
    const WORDS: [&str; 16] = [
        "function",
        "return",
        "const",
        "module",
        "exports",
        "require",
        "value",
        "index",
        "string",
        "length",
        "object",
        "prototype",
        "undefined",
        "this",
        "callback",
        "error",
    ];
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut total = 0u64;
    for i in 0..files {
        let dir = root.join(format!("pkg{:03}/lib/sub{}", i % 400, i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let size = 200 + rng.below(20 * 1024 - 200) as usize;
        let mut text = String::with_capacity(size + 16);
        while text.len() < size {
            text.push_str(WORDS[rng.below(16) as usize]);
            text.push(if rng.below(8) == 0 { '\n' } else { ' ' });
        }
        text.truncate(size);
        std::fs::write(dir.join(format!("file{i}.js")), &text).unwrap();
        total += size as u64;
    }
    total
}

fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect("spawn");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn sh(dir: &Path, script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn s(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn main() {
    let files: usize = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::create_dir_all(p.join(".sparkwing")).unwrap();
    std::fs::write(
        p.join(".sparkwing/sparkwing.yaml"),
        "pipelines:\n  - name: w1\n    jobs:\n      deps:\n        cache: { key: [seed.txt], outputs: [w1] }\n        steps: [{ run: 'cp -a gen/. w1/' }]\n",
    )
    .unwrap();
    let bytes = w1(&p.join("gen"), files);
    let sparkwing = |seed: &str| {
        std::fs::write(p.join("seed.txt"), seed).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_sparkwing"));
        c.args(["run", "w1"])
            .current_dir(p)
            .env("HOME", home.path())
            .env_remove("SPARKWING_HOME")
            .env_remove("SPARKWING_PROFILES")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let mut rows: Vec<[Duration; 6]> = Vec::new();
    for round in 0..iters {
        let seed = format!("round {round}");
        // The copy the job makes is part of a save's run, and the floor's.
        let _ = std::fs::remove_dir_all(p.join("w1"));
        std::fs::create_dir_all(p.join("w1")).unwrap();
        let copy = time(&mut sh(p, "cp -a gen/. w1/"));
        let _ = std::fs::remove_dir_all(p.join("w1"));
        std::fs::create_dir_all(p.join("w1")).unwrap();
        let save = time(&mut sparkwing(&seed));
        // A local hit on a checkout without the outputs.
        std::fs::remove_dir_all(p.join("w1")).unwrap();
        let restore = time(&mut sparkwing(&seed));
        assert!(p.join("w1/pkg000/lib/sub0/file0.js").is_file());
        // The floor: cp -a of the outputs. The archive: tar | zstd.
        let _ = std::fs::remove_dir_all(p.join("floor"));
        let cp = time(&mut sh(p, "cp -a w1 floor"));
        let tar_save = time(&mut sh(p, "tar -cf - w1 | zstd -q -3 -T0 -f -o w1.tar.zst"));
        let _ = std::fs::remove_dir_all(p.join("untar"));
        std::fs::create_dir_all(p.join("untar")).unwrap();
        let tar_restore = time(&mut sh(p, "zstd -q -d -c w1.tar.zst | tar -xf - -C untar"));
        rows.push([save, copy, restore, cp, tar_save, tar_restore]);
    }
    let med = |i: usize| {
        let mut v: Vec<Duration> = rows.iter().map(|r| r[i]).collect();
        v.sort();
        v[v.len() / 2]
    };
    let archive = std::fs::metadata(p.join("w1.tar.zst")).map_or(0, |m| m.len());
    println!(
        "cache_local: W1 {files} files, {:.1} MB (tar.zst {:.1} MB), median of {iters} rounds, seconds",
        bytes as f64 / 1e6,
        archive as f64 / 1e6
    );
    println!("  {:<34} {:>8} {:>8}", "", "sparkwing", "baseline");
    println!(
        "  {:<34} {:>8} {:>8}   (baseline: the job's own cp -a, inside both)",
        "save (run computing, then storing)",
        s(med(0)),
        s(med(1))
    );
    println!(
        "  {:<34} {:>8} {:>8}   (baseline: cp -a of the outputs, the floor)",
        "restore (a local hit, whole run)",
        s(med(2)),
        s(med(3))
    );
    println!(
        "  {:<34} {:>8} {:>8}   (tar | zstd -3 -T0: save, restore)",
        "archive",
        s(med(4)),
        s(med(5))
    );
    println!(
        "  restore / cp -a = {:.2}x; restore / untar = {:.2}x",
        med(2).as_secs_f64() / med(3).as_secs_f64(),
        med(2).as_secs_f64() / med(5).as_secs_f64()
    );
}
