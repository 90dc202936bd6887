//! Issue 10, requirement 7: when sparkwing's own files fail (a full disk,
//! no permission, a damaged database) the message names the file and the
//! fix, the exit code is 74 ("sparkwing itself could not work"), a run that
//! had started is recorded as `failed` with the reason, and a damaged
//! `outbox.db` never blocks a run.

use std::path::Path;

use crate::util::*;
use crate::web::shared_remote;

/// Sparkwing itself could not work.
const COULD_NOT_WORK: i32 = 74;

const PIPELINES: &str = r#"pipelines:
  - name: flood
    jobs:
      out:
        steps:
          - run: "head -c 6000000 /dev/zero | tr '\\0' x | fold -w 99"
  # The step waits until its first line is in the log (so the log has a
  # page of its own) before it fills the disk: the next write to fail must
  # be state.db's, not the log's first one (a race CI lost once).
  - name: fill
    jobs:
      a:
        steps:
          - run: "echo filling; while ! grep -qs filling \"$SPARKWING_HOME/runs/$SPARKWING_RUN_ID/a.log\"; do sleep 0.05; done; head -c 8000000 /dev/zero > \"$SPARKWING_HOME/filler\"; echo full"
          - run: echo never
  - name: hello
    jobs:
      greet:
        steps:
          - run: "echo hi; touch ran"
"#;

/// `sparkwing run PIPELINE` with SPARKWING_HOME on a 4 MiB tmpfs; the home
/// (without the filler file) is copied to `copy` afterwards, where the
/// tests read it back (the tmpfs vanishes with its namespace). Returns the
/// run's exit code and stderr.
fn run_on_small_disk(env: &Env, pipeline: &str, copy: &Path) -> (i32, String) {
    let tmpfs = env.home.path().join("tmpfs");
    std::fs::create_dir_all(&tmpfs).unwrap();
    let rc = env.home.path().join("rc");
    let script = format!(
        "set -e; mount -t tmpfs -o size=4m tmpfs \"$SPARKWING_HOME\"; \
         set +e; \"$SW\" run {pipeline} > /dev/null; echo $? > '{rc}'; \
         rm -f \"$SPARKWING_HOME/filler\"; cp -a \"$SPARKWING_HOME/.\" '{copy}/'",
        rc = rc.display(),
        copy = copy.display()
    );
    std::fs::create_dir_all(copy).unwrap();
    let out = in_namespace(env, &tmpfs, &script);
    assert!(
        out.status.success(),
        "namespace script failed: {}",
        text(&out.stderr)
    );
    let code = std::fs::read_to_string(&rc)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (code, text(&out.stderr))
}

/// `runs show latest -o json` against the home at `home`.
fn show_latest(env: &Env, home: &Path) -> serde_json::Value {
    let out = env
        .cmd(&["runs", "show", "latest", "-o", "json"])
        .env("SPARKWING_HOME", home)
        .output()
        .unwrap();
    expect_code(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_full_disk_fails_the_run_naming_the_file_and_the_fix() {
    if !namespaces_available() {
        return;
    }
    let env = Env::with_pipelines(PIPELINES);

    // A step's output fills the disk: the log cannot be written.
    let copy = env.home.path().join("copy-log");
    let (code, err) = run_on_small_disk(&env, "flood", &copy);
    assert_eq!(code, COULD_NOT_WORK, "{err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("sparkwing: warning: ") && l.contains("out.log"))
        .unwrap_or_else(|| panic!("no warning naming the log: {err}"));
    assert!(
        warning.contains("the disk is full")
            && warning.contains("free space on the filesystem holding"),
        "{warning}"
    );
    let doc = show_latest(&env, &copy);
    assert_eq!(doc["status"], "failed", "not interrupted: {doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("out.log: the disk is full") && error.contains("free space"),
        "{error}"
    );
    assert_eq!(doc["jobs"][0]["status"], "failed", "{doc}");
    // The log is cut where the warning says, with no gap: whole lines of x
    // up to that byte.
    let at: u64 = warning
        .split("log ends at byte ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte offset: {warning}"));
    let run = doc["id"].as_str().unwrap();
    let log = std::fs::read(copy.join("runs").join(run).join("out.log")).unwrap();
    assert_eq!(log.len() as u64, at);
    assert!(
        at > 1_000_000,
        "most of the disk was used for the log ({at})"
    );
    assert!(log.iter().all(|&b| b == b'x' || b == b'\n'));

    // A step fills the disk itself: the next state.db write fails, and the
    // run's failure is still recorded (the space kept for that).
    let copy = env.home.path().join("copy-db");
    let (code, err) = run_on_small_disk(&env, "fill", &copy);
    assert_eq!(code, COULD_NOT_WORK, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("state.db: the disk is full")
            && last.contains("free space on the filesystem holding")
            && last.contains("recorded as failed"),
        "{err}"
    );
    assert!(!err.contains("Error code 13"), "no raw SQLite text: {err}");
    let doc = show_latest(&env, &copy);
    assert_eq!(doc["status"], "failed", "not interrupted: {doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("state.db: the disk is full"),
        "{doc}"
    );
    let statuses: Vec<_> = doc["jobs"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["failed", "skipped"], "{doc}");
}

#[test]
fn a_damaged_state_db_names_the_file_and_how_to_start_fresh() {
    let env = Env::with_pipelines(PIPELINES);
    expect_code(&env.run(&["run", "hello"]), 0);
    std::fs::remove_file(env.dir().join("ran")).unwrap();
    let db = env.sw_home().join("state.db");
    let garbage: Vec<u8> = (0..30_000u32).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    for args in [&["run", "hello"][..], &["runs", "list"][..]] {
        let out = env.run(args);
        expect_code(&out, COULD_NOT_WORK);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{} is damaged", db.display()))
                && err.contains("move it aside to start fresh"),
            "{args:?}: {err}"
        );
        assert!(!env.dir().join("ran").exists(), "nothing ran");
    }
    // The advice works.
    std::fs::rename(&db, env.sw_home().join("state.db.damaged")).unwrap();
    expect_code(&env.run(&["run", "hello"]), 0);
}

#[test]
fn a_damaged_outbox_db_is_set_aside_and_rebuilt_from_the_local_store() {
    let env = Env::with_pipelines(PIPELINES);
    let (remote, profiles) = shared_remote();
    env.write_user_profiles(&profiles);
    // Run 1's writes stay queued: the share is away.
    let away = remote.path().with_extension("away");
    std::fs::rename(remote.path(), &away).unwrap();
    let out = env.run(&[
        "run",
        "hello",
        "--profile",
        "team",
        "--sw-sync-timeout",
        "0s",
    ]);
    expect_code(&out, 0);
    std::fs::rename(&away, remote.path()).unwrap();
    // Then outbox.db is overwritten.
    let outbox = env.sw_home().join("outbox.db");
    let garbage: Vec<u8> = (0..30_000u32).map(|i| (i * 17 % 241) as u8).collect();
    std::fs::write(&outbox, &garbage).unwrap();

    let out = env.run(&["run", "hello", "--profile", "team"]);
    expect_code(&out, 0);
    let err = text(&out.stderr);
    let warning = err
        .lines()
        .find(|l| l.contains("was damaged"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    let aside: Vec<_> = std::fs::read_dir(env.sw_home())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("outbox.db.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage, "kept as it was");
    assert!(
        warning.contains(&outbox.display().to_string())
            && warning.contains(&aside[0].display().to_string()),
        "names both files: {warning}"
    );

    // Both runs reach the remote: run 1's writes were queued again from
    // state.db.
    expect_code(&env.run(&["sync", "flush", "--profile", "team"]), 0);
    let out = env.run(&["sync", "verify", "--profile", "team"]);
    expect_code(&out, 0);
    assert!(
        text(&out.stdout).contains("verified 2 run(s)"),
        "{}",
        text(&out.stdout)
    );
    let statuses: Vec<_> = env
        .json(&["runs", "list", "-o", "json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        ["success", "success"],
        "no orphan interrupted run"
    );
}

#[test]
fn an_unwritable_home_names_the_file_and_the_fix() {
    let env = Env::with_pipelines(PIPELINES);
    expect_code(&env.run(&["run", "hello"]), 0);
    std::fs::remove_file(env.dir().join("ran")).unwrap();
    let check = |out: &std::process::Output, path: &Path| {
        expect_code(out, COULD_NOT_WORK);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{}: cannot write it", path.display()))
                && err.contains("writable by the user running sparkwing"),
            "{err}"
        );
        assert!(!env.dir().join("ran").exists(), "nothing ran");
    };

    // A read-only filesystem (a read-only bind mount: works for root too).
    if namespaces_available() {
        let home = env.sw_home();
        let out = in_namespace(
            &env,
            &home,
            "mount --bind \"$SPARKWING_HOME\" \"$SPARKWING_HOME\" && \
             mount -o remount,bind,ro \"$SPARKWING_HOME\" && exec \"$SW\" run hello",
        );
        check(&out, &home.join("state.db"));
    }

    // Missing permissions. Root ignores them: run as nobody then.
    use std::os::unix::fs::PermissionsExt;
    let root = current_uid() == 0;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    for d in [dir.path(), env.home.path(), env.dir()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "run",
            "hello",
        ]);
        c
    } else {
        let mut c = std::process::Command::new(BIN);
        c.args(["run", "hello"]);
        c
    };
    let out = cmd
        .current_dir(env.dir())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.home.path())
        .env("SPARKWING_HOME", &home)
        .output()
        .unwrap();
    check(&out, &home.join("state.db"));
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

#[test]
fn help_documents_every_exit_code() {
    let out = Env::new().run(&["--help"]);
    expect_code(&out, 0);
    let help = text(&out.stdout);
    let section = help
        .split("Exit status:")
        .nth(1)
        .unwrap_or_else(|| panic!("{help}"));
    for code in ["0 ", "1 ", "2 ", "74 ", "130 "] {
        assert!(
            section.lines().any(|l| l.trim_start().starts_with(code)),
            "exit code {code}missing: {section}"
        );
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.contains("`74`"), "README documents 74");
}
