//! `runs list`, `runs show`, `runs logs` (tail and follow).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use crate::util::*;

#[test]
fn runs_list_filters_and_limits() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: ok\n    jobs: {a: {steps: [{run: 'true'}]}}\n  - name: bad\n    jobs: {a: {steps: [{run: 'false'}]}}\n",
    );
    for p in ["ok", "bad", "ok", "ok"] {
        env.run(&["run", p]);
    }
    let all = env.json(&["runs", "list", "-o", "json"]);
    assert_eq!(all.as_array().unwrap().len(), 4);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    assert_eq!(
        env.json(&["runs", "list", "--pipeline", "ok", "-o", "json"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let failed = env.json(&["runs", "list", "--status", "failed", "-o", "json"]);
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["pipeline"], "bad");
    assert_eq!(
        env.json(&["runs", "list", "--limit", "2", "-o", "json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let table = text(&env.run(&["runs", "list"]).stdout);
    assert!(
        table.starts_with("RUN") && table.contains("failed"),
        "{table}"
    );
    // A run can be named by a unique prefix.
    let prefix = &ids[0][..20];
    assert_eq!(
        env.json(&["runs", "show", prefix, "-o", "json"])["id"],
        ids[0]
    );
    let out = env.run(&["runs", "show", "ZZZZ"]);
    expect_code(&out, 2);
    assert!(text(&out.stderr).contains("no run `ZZZZ`"));
}

#[test]
fn runs_show_has_jobs_steps_and_timings() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: p\n    jobs:\n      a: {steps: [{run: echo one, name: first}, {run: echo two}]}\n      b: {needs: [a], steps: [{run: 'true'}]}\n",
    );
    expect_code(&env.run(&["run", "p"]), 0);
    let v = env.json(&["runs", "show", "latest", "-o", "json"]);
    assert_eq!(v["status"], "success");
    assert!(v["duration_ms"].as_i64().unwrap() >= 0);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs[0]["name"], "a");
    assert_eq!(jobs[0]["steps"][0]["name"], "first");
    assert_eq!(jobs[0]["steps"][1]["name"], "echo two");
    assert_eq!(jobs[0]["steps"][1]["exit_code"], 0);
    assert_eq!(jobs[1]["needs"][0], "a");
    let t = text(&env.run(&["runs", "show", "latest"]).stdout);
    assert!(t.contains("1. first") && t.contains("2. echo two"), "{t}");
}

#[test]
fn logs_print_tail_and_select_a_job() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: p\n    jobs:\n      a: {steps: [{run: 'for i in 1 2 3 4 5; do echo a$i; done'}]}\n      b: {steps: [{run: 'echo b1 >&2; echo b2'}]}\n",
    );
    expect_code(&env.run(&["run", "p", "--sw-workers", "1"]), 0);
    let out = text(
        &env.run(&["runs", "logs", "latest", "--job", "a", "--tail", "2"])
            .stdout,
    );
    assert_eq!(out, "a4\na5\n");
    let out = text(&env.run(&["runs", "logs", "latest", "--job", "b"]).stdout);
    assert_eq!(
        out, "b1\nb2\n",
        "stderr and stdout are both captured, in order"
    );
    let out = text(&env.run(&["runs", "logs", "latest"]).stdout);
    assert!(
        out.contains("==> a <==\na1\n") && out.contains("==> b <==\nb1\nb2\n"),
        "{out}"
    );
    let out = env.run(&["runs", "logs", "latest", "--job", "zz"]);
    expect_code(&out, 2);
    assert!(text(&out.stderr).contains("has no job `zz`"));
}

#[test]
fn logs_follow_streams_a_run_in_progress_until_it_ends() {
    let env = Env::with_pipelines(
        r#"
pipelines:
  - name: slow
    jobs:
      talk:
        steps:
          - run: |
              echo first line
              i=0; while [ ! -f go ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 9; sleep 0.05; done
              echo second line
"#,
    );
    let run = env
        .cmd(&["run", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log_dir = env.sw_home().join("runs");
    wait_for("the run's log", Duration::from_secs(30), || {
        std::fs::read_dir(&log_dir)
            .ok()
            .and_then(|mut d| d.next())
            .is_some_and(|d| {
                std::fs::read_to_string(d.unwrap().path().join("talk.log"))
                    .is_ok_and(|s| s.contains("first"))
            })
    });
    let mut follow = env
        .cmd(&["runs", "logs", "latest", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first line");
    // The follower is still attached while the run waits; release it.
    std::fs::write(env.dir().join("go"), "").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "second line");
    assert!(lines.next().is_none(), "follow ends with the run");
    assert!(follow.wait().unwrap().success());
    let out = run.wait_with_output().unwrap();
    expect_code(&out, 0);
}

/// Issue 12: a remote that cannot be read keeps its class to the exit
/// code: `runs show --profile` of a run that is not on this machine exits
/// 69 when the share is not mounted (not 2: nothing about the input is
/// wrong), and `runs list --profile` still shows this machine's runs.
#[test]
fn a_remote_that_cannot_be_read_exits_69_and_lists_degrade() {
    let env = Env::new();
    let gone = env.dir().join("not-mounted");
    let r = gone.display();
    env.write_project(&format!(
        "profiles:\n  team:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache }}\n"
    ));
    let out = env
        .cmd(&[
            "runs",
            "show",
            "01KB4ZJ0Q1V6Y5N3G7T0M8D2XS",
            "--profile",
            "team",
        ])
        .output()
        .unwrap();
    expect_code(&out, 69);
    let err = text(&out.stderr);
    assert!(
        err.contains("is not on this machine") && err.contains("could not be read"),
        "{err}"
    );
    let out = env
        .cmd(&["runs", "list", "--profile", "team"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("could not read"),
        "{}",
        text(&out.stderr)
    );
    assert!(!gone.exists(), "a reader never creates the share");
}
