//! Helpers: a throwaway HOME and project, and the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sparkwing");

pub struct Env {
    pub home: tempfile::TempDir,
    pub project: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
        }
    }

    /// An Env whose project holds `yaml` as its sparkwing.yaml.
    pub fn with_pipelines(yaml: &str) -> Env {
        let env = Env::new();
        env.write_project(yaml);
        env
    }

    pub fn write_project(&self, yaml: &str) {
        std::fs::create_dir_all(self.project.path().join(".sparkwing")).unwrap();
        std::fs::write(self.project.path().join(".sparkwing/sparkwing.yaml"), yaml).unwrap();
    }

    pub fn dir(&self) -> &Path {
        self.project.path()
    }

    /// `~/.sparkwing` of the temporary HOME.
    pub fn sw_home(&self) -> PathBuf {
        self.home.path().join(".sparkwing")
    }

    /// The user profile file's default location under the temporary HOME.
    pub fn write_user_profiles(&self, yaml: &str) -> PathBuf {
        let p = self.home.path().join(".config/sparkwing/profiles.yaml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, yaml).unwrap();
        p
    }

    /// The binary with a clean environment: only PATH and the temp HOME.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.project.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and parses stdout as JSON, failing loudly otherwise.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&out.stdout)))
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts an exit code, showing both streams when it differs.
#[track_caller]
pub fn expect_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("gave up waiting for {what} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); check /proc for its state too.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if stat.is_empty() {
        return false;
    }
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("");
    state != "Z" && state != "X"
}

pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The jobs of `runs show RUN -o json`, by name.
pub fn jobs_of(env: &Env, run: &str) -> serde_json::Map<String, serde_json::Value> {
    let v = env.json(&["runs", "show", run, "-o", "json"]);
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}
