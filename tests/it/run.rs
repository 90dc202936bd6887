//! Running pipelines: hello, parallelism, failure propagation, environment.

use crate::util::*;

#[test]
fn hello_runs_with_no_configuration_at_all() {
    // The repository's own project file, a HOME with nothing in it.
    let env = Env::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = env.run(&["--project", repo, "run", "hello"]);
    expect_code(&out, 0);
    assert!(
        text(&out.stdout).contains("hello, sparkwing"),
        "{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("success"), "{stderr}");
    assert!(env.sw_home().join("state.db").is_file());
    let runs = env.json(&["runs", "list", "-o", "json"]);
    let id = runs[0]["id"].as_str().unwrap();
    assert_eq!(runs[0]["status"], "success");
    assert_eq!(runs[0]["profile"], "laptop");
    let log =
        std::fs::read_to_string(env.sw_home().join("runs").join(id).join("greet.log")).unwrap();
    assert_eq!(log, "hello, sparkwing\n");
}

#[test]
fn independent_jobs_run_at_the_same_time() {
    // Each job waits for the marker the other writes: only overlap passes.
    let env = Env::with_pipelines(
        r#"
pipelines:
  - name: both
    jobs:
      a:
        steps:
          - run: |
              touch a.mark
              i=0; while [ ! -f b.mark ]; do i=$((i+1)); [ $i -gt 600 ] && exit 7; sleep 0.05; done
              echo "a saw b"
      b:
        steps:
          - run: |
              touch b.mark
              i=0; while [ ! -f a.mark ]; do i=$((i+1)); [ $i -gt 600 ] && exit 7; sleep 0.05; done
              echo "b saw a"
"#,
    );
    let out = env.run(&["run", "both", "--sw-workers", "2"]);
    expect_code(&out, 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("[a] a saw b"),
        "output is prefixed by job: {stdout}"
    );
    assert!(stdout.contains("[b] b saw a"), "{stdout}");
}

#[test]
fn a_failed_step_fails_its_job_skips_dependents_and_lets_others_finish() {
    let env = Env::with_pipelines(
        r#"
pipelines:
  - name: mixed
    jobs:
      broken:
        steps:
          - run: echo before; exit 3
          - run: echo never > never.txt
      after:
        needs: [broken]
        steps:
          - run: echo after > after.txt
      later:
        needs: [after]
        steps:
          - run: echo later > later.txt
      independent:
        steps:
          - run: sleep 0.3; echo independent > independent.txt
"#,
    );
    let out = env.run(&["run", "mixed"]);
    expect_code(&out, 1);
    assert!(
        env.dir().join("independent.txt").exists(),
        "independent jobs finish"
    );
    for f in ["never.txt", "after.txt", "later.txt"] {
        assert!(!env.dir().join(f).exists(), "{f} must not exist");
    }
    let runs = env.json(&["runs", "list", "-o", "json"]);
    assert_eq!(runs[0]["status"], "failed");
    let jobs = jobs_of(&env, "latest");
    assert_eq!(jobs["broken"]["status"], "failed");
    assert!(jobs["broken"]["error"]
        .as_str()
        .unwrap()
        .contains("exited with code 3"));
    assert_eq!(jobs["broken"]["steps"][0]["exit_code"], 3);
    assert_eq!(jobs["broken"]["steps"][1]["status"], "skipped");
    assert_eq!(jobs["after"]["status"], "skipped");
    assert_eq!(jobs["later"]["status"], "skipped");
    assert_eq!(jobs["independent"]["status"], "success");
    let summary = text(&out.stderr);
    assert!(
        summary.contains("JOB") && summary.contains("skipped"),
        "{summary}"
    );
}

#[test]
fn steps_get_run_id_job_env_and_working_directory() {
    let env = Env::with_pipelines(
        r#"
pipelines:
  - name: envs
    jobs:
      show:
        working_directory: sub
        env: { LEVEL: job, PORT: 8080 }
        steps:
          - run: echo "$SPARKWING_RUN_ID $SPARKWING_JOB $LEVEL $PORT $STEPVAR $(basename "$PWD")" > ../env.txt
            env: { STEPVAR: yes }
"#,
    );
    std::fs::create_dir(env.dir().join("sub")).unwrap();
    let out = env.run(&["run", "envs"]);
    expect_code(&out, 0);
    let runs = env.json(&["runs", "list", "-o", "json"]);
    let id = runs[0]["id"].as_str().unwrap();
    let got = std::fs::read_to_string(env.dir().join("env.txt")).unwrap();
    assert_eq!(got.trim(), format!("{id} show job 8080 yes sub"));
}

#[test]
fn unknown_pipeline_names_the_known_ones() {
    let env =
        Env::with_pipelines("pipelines:\n  - name: one\n    jobs: {a: {steps: [{run: 'true'}]}}\n");
    let out = env.run(&["run", "two"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(e.contains("no pipeline `two`") && e.contains("one"), "{e}");
}

#[test]
fn no_project_file_says_how_to_create_one() {
    let env = Env::new();
    let out = env.run(&["run", "hello"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("no .sparkwing/sparkwing.yaml") && e.contains("sparkwing pipeline new"),
        "{e}"
    );
}
