//! Many processes on one SPARKWING_HOME; the schema version refusal.

use crate::util::*;

#[test]
fn eight_concurrent_runs_on_one_home_are_all_recorded() {
    let env = Env::with_pipelines(
        r#"
pipelines:
  - name: crowd
    jobs:
      a: {steps: [{run: echo a1}, {run: echo a2}, {run: echo a3}]}
      b: {steps: [{run: echo b1}, {run: echo b2}]}
      c: {needs: [a, b], steps: [{run: echo c1}]}
"#,
    );
    let children: Vec<_> = (0..8)
        .map(|_| {
            env.cmd(&["run", "crowd"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        expect_code(&out, 0);
        let e = text(&out.stderr).to_lowercase();
        assert!(!e.contains("locked") && !e.contains("busy"), "{e}");
    }
    let runs = env.json(&["runs", "list", "--limit", "100", "-o", "json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 8);
    let mut ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "run IDs are unique");
    for r in runs {
        assert_eq!(r["status"], "success");
        let jobs = jobs_of(&env, r["id"].as_str().unwrap());
        assert_eq!(jobs.len(), 3);
        assert!(jobs.values().all(|j| j["status"] == "success"));
        assert_eq!(jobs["a"]["steps"].as_array().unwrap().len(), 3);
    }
    // Every state change left its event: run start, admission + 3 x (job start, job
    // end) + 6 x (step start, step end) + run end = 21 per run.
    let db = rusqlite::Connection::open(env.sw_home().join("state.db")).unwrap();
    let per_run: Vec<i64> = db
        .prepare("SELECT COUNT(*) FROM events GROUP BY run_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(per_run, vec![21; 8]);
}

#[test]
fn a_newer_database_is_refused_with_the_spec_text() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: hello\n    jobs: {greet: {steps: [{run: echo hi}]}}\n",
    );
    expect_code(&env.run(&["run", "hello"]), 0);
    let db = rusqlite::Connection::open(env.sw_home().join("state.db")).unwrap();
    let current: i64 = db
        .query_row(
            "SELECT MAX(version) FROM sparkwing_schema_version",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "INSERT INTO sparkwing_schema_version (version, applied_at) VALUES (?1, 0)",
        [current + 41],
    )
    .unwrap();
    drop(db);
    let want = format!(
        "sparkwing: database is at schema version {}; this binary expects {}. Upgrade sparkwing or restore the database to a matching version.",
        current + 41,
        current
    );
    for args in [&["run", "hello"][..], &["runs", "list"][..]] {
        let out = env.run(args);
        expect_code(&out, 2);
        assert_eq!(text(&out.stderr).trim_end(), want, "{args:?}");
        assert!(!text(&out.stdout).contains("hi"));
    }
}
