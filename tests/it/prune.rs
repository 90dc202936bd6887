//! `sparkwing runs prune` (issue 13): runs that ended long ago go with their
//! logs, locally and (with --profile) from the remote; recent runs, runs in
//! progress and runs still queued for the remote stay; cache entries stay.

use crate::util::*;

const PIPELINES: &str = r#"pipelines:
  - name: work
    jobs:
      talk:
        steps: [{ run: 'echo "hello from $SPARKWING_RUN_ID"' }]
      build:
        cache: { key: [seed.txt], outputs: [out] }
        steps: [{ run: 'mkdir -p out && cp seed.txt out/' }]
"#;

fn setup() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let r = env.dir().join("remote");
    for s in ["state", "logs", "cache"] {
        std::fs::create_dir_all(r.join(s)).unwrap();
    }
    let rd = r.display();
    env.write_project(&format!(
        "profiles:\n  team:\n    state: {{ type: filesystem, path: {rd}/state }}\n    logs: {{ type: filesystem, path: {rd}/logs }}\n    cache: {{ type: filesystem, path: {rd}/cache }}\n{PIPELINES}"
    ));
    (env, r)
}

fn run(env: &Env, seed: &str) -> String {
    std::fs::write(env.dir().join("seed.txt"), seed).unwrap();
    let out = env.run(&[
        "run",
        "work",
        "--profile",
        "team",
        "--sw-sync-timeout",
        "60s",
    ]);
    expect_code(&out, 0);
    env.json(&["runs", "list", "-o", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Makes a run look as if it ended two days ago, locally and in its
/// remote document.
fn age(env: &Env, remote: &std::path::Path, run: &str) {
    let two_days = 2 * 86_400_000i64;
    let db = rusqlite::Connection::open(env.sw_home().join("state.db")).unwrap();
    db.execute(
        "UPDATE runs SET finished_at = finished_at - ?2, started_at = started_at - ?2 WHERE id = ?1",
        rusqlite::params![run, two_days],
    )
    .unwrap();
    let doc_path = remote.join(format!("state/runs/{run}/run.json"));
    if let Ok(body) = std::fs::read(&doc_path) {
        let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let old = sparkwing::util::rfc3339_ms(sparkwing::util::now_ms() - two_days);
        doc["finished_at"] = old.into();
        std::fs::write(&doc_path, doc.to_string()).unwrap();
    }
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn old_runs_go_with_their_logs_locally_and_remotely_and_nothing_else_does() {
    let (env, remote) = setup();
    let old = run(&env, "one");
    let recent = run(&env, "two");
    assert!(remote.join(format!("logs/{old}/talk")).is_dir());

    // Nothing has ended a day ago yet.
    let none = env.json(&[
        "runs",
        "prune",
        "--older-than",
        "1d",
        "--profile",
        "team",
        "-o",
        "json",
    ]);
    assert!(
        ids(&none["local_removed"]).is_empty() && ids(&none["remote_removed"]).is_empty(),
        "{none}"
    );

    age(&env, &remote, &old);
    // A dry run removes nothing.
    let dry = env.json(&[
        "runs",
        "prune",
        "--older-than",
        "1d",
        "--profile",
        "team",
        "--dry-run",
        "-o",
        "json",
    ]);
    assert_eq!(ids(&dry["local_removed"]), vec![old.clone()], "{dry}");
    assert_eq!(ids(&dry["remote_removed"]), vec![old.clone()], "{dry}");
    assert!(env.sw_home().join("runs").join(&old).is_dir());
    assert!(remote.join(format!("state/runs/{old}/run.json")).is_file());

    let done = env.json(&[
        "runs",
        "prune",
        "--older-than",
        "1d",
        "--profile",
        "team",
        "-o",
        "json",
    ]);
    assert_eq!(ids(&done["local_removed"]), vec![old.clone()], "{done}");
    assert_eq!(ids(&done["remote_removed"]), vec![old.clone()], "{done}");
    assert!(
        done["remote_objects_deleted"].as_u64().unwrap() >= 3,
        "{done}"
    );
    // Gone: the local rows and logs, the remote document, events and logs.
    let list = env.json(&["runs", "list", "-o", "json"]);
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [recent.as_str()]);
    assert!(!env.sw_home().join("runs").join(&old).exists());
    assert!(
        !remote.join(format!("state/runs/{old}")).exists()
            || std::fs::read_dir(remote.join(format!("state/runs/{old}")))
                .unwrap()
                .all(|e| e.unwrap().file_type().unwrap().is_dir())
    );
    assert!(!remote.join(format!("state/runs/{old}/run.json")).exists());
    assert!(
        !remote.join(format!("logs/{old}/talk")).exists()
            || std::fs::read_dir(remote.join(format!("logs/{old}/talk")))
                .unwrap()
                .next()
                .is_none()
    );
    // Untouched: the recent run, here and there, and the cache entries.
    assert!(remote
        .join(format!("state/runs/{recent}/run.json"))
        .is_file());
    let out = env.run(&["runs", "logs", &recent, "--job", "talk"]);
    assert!(text(&out.stdout).contains(&format!("hello from {recent}")));
    assert_eq!(
        env.json(&["cache", "list", "-o", "json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The remote and the local store still agree on what is left.
    let merged = env.json(&["runs", "list", "--profile", "team", "-o", "json"]);
    assert_eq!(merged.as_array().unwrap().len(), 1, "{merged}");
}

#[test]
fn a_run_still_queued_for_the_remote_is_kept() {
    let (env, remote) = setup();
    // The remote is away while the run writes.
    std::fs::rename(remote.join("logs"), remote.join("logs-away")).unwrap();
    std::fs::write(env.dir().join("seed.txt"), "x").unwrap();
    let out = env.run(&[
        "run",
        "work",
        "--profile",
        "team",
        "--sw-sync-timeout",
        "1s",
    ]);
    expect_code(&out, 0);
    let run = env.json(&["runs", "list", "-o", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    age(&env, &remote, &run);
    let kept = env.json(&["runs", "prune", "--older-than", "1d", "-o", "json"]);
    assert_eq!(ids(&kept["local_undelivered"]), vec![run.clone()], "{kept}");
    assert!(ids(&kept["local_removed"]).is_empty());
    let text_out = env.run(&["runs", "prune", "--older-than", "1d"]);
    assert!(
        text(&text_out.stdout).contains("sparkwing sync flush"),
        "{}",
        text(&text_out.stdout)
    );
    // Delivered, it goes.
    std::fs::rename(remote.join("logs-away"), remote.join("logs")).unwrap();
    expect_code(&env.run(&["sync", "retry", "--profile", "team"]), 0);
    expect_code(
        &env.run(&["sync", "flush", "--profile", "team", "--timeout", "60s"]),
        0,
    );
    let gone = env.json(&["runs", "prune", "--older-than", "1d", "-o", "json"]);
    assert_eq!(ids(&gone["local_removed"]), vec![run], "{gone}");
}

#[test]
fn prune_explains_itself() {
    let (env, _remote) = setup();
    let help = env.run(&["runs", "prune", "--help"]);
    expect_code(&help, 0);
    let h = text(&help.stdout);
    assert!(
        h.contains("--older-than") && h.contains("Examples") && h.contains("in progress"),
        "{h}"
    );
    let missing = env.run(&["runs", "prune"]);
    expect_code(&missing, 2);
    assert!(
        text(&missing.stderr).contains("--older-than"),
        "{}",
        text(&missing.stderr)
    );
    let bad = env.run(&["runs", "prune", "--older-than", "soon"]);
    expect_code(&bad, 2);
    assert!(text(&bad.stderr).contains("soon"), "{}", text(&bad.stderr));
}
