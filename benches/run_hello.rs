//! Whole-process cost of `sparkwing run hello` against the baseline
//! `sh -c 'echo hello'`, measured interleaved in one run.
//!
//! `cargo bench --bench run_hello` (BENCH_ITERS=N to change the count).
//! Prints both medians side by side and the overhead; the target is at
//! most 25 ms of overhead on the 2-core reference machine.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn time(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd.status().expect("spawn");
    let took = start.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    took
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join(".sparkwing")).unwrap();
    std::fs::write(
        project.path().join(".sparkwing/sparkwing.yaml"),
        "pipelines:\n  - name: hello\n    jobs:\n      greet:\n        steps:\n          - run: echo \"hello, sparkwing\"\n",
    )
    .unwrap();
    let sparkwing = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sparkwing"));
        c.args(["run", "hello"])
            .current_dir(project.path())
            .env("HOME", home.path())
            .env_remove("SPARKWING_HOME")
            .env_remove("SPARKWING_PROFILES")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let baseline = || {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    // Warm up: create state.db, page in both binaries.
    for _ in 0..3 {
        time(&mut sparkwing());
        time(&mut baseline());
    }
    let mut ours = Vec::with_capacity(iters);
    let mut base = Vec::with_capacity(iters);
    for _ in 0..iters {
        ours.push(time(&mut sparkwing()));
        base.push(time(&mut baseline()));
    }
    ours.sort();
    base.sort();
    let overhead = ms(pct(&ours, 0.5)) - ms(pct(&base, 0.5));
    println!(
        "run_hello: {iters} interleaved iterations, whole process, state.db with synchronous=FULL"
    );
    println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "p10", "p90");
    println!(
        "{:<34} {:>8.2}ms {:>8.2}ms {:>8.2}ms",
        "sparkwing run hello",
        ms(pct(&ours, 0.5)),
        ms(pct(&ours, 0.1)),
        ms(pct(&ours, 0.9))
    );
    println!(
        "{:<34} {:>8.2}ms {:>8.2}ms {:>8.2}ms",
        "sh -c 'echo hello' (baseline)",
        ms(pct(&base, 0.5)),
        ms(pct(&base, 0.1)),
        ms(pct(&base, 0.9))
    );
    println!(
        "overhead (median - median): {overhead:.2}ms; target <= 25ms: {}",
        if overhead <= 25.0 { "met" } else { "NOT met" }
    );
}
