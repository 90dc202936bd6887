//! Timeouts and Ctrl-C stop whole process groups.

use std::time::Duration;

use crate::util::*;

#[test]
fn timeout_kills_the_jobs_whole_process_group() {
    let env = Env::with_pipelines(
        r#"
pipelines:
  - name: slow
    jobs:
      hang:
        timeout: 1s
        steps:
          - run: |
              sleep 120 &
              echo $! > bg.pid
              sleep 120
          - run: echo unreachable > unreachable.txt
"#,
    );
    let out = env.run(&["run", "slow"]);
    expect_code(&out, 1);
    let bg = read_pid(&env.dir().join("bg.pid"));
    wait_for(
        "the background sleep to die",
        Duration::from_secs(10),
        || !pid_alive(bg),
    );
    assert!(!env.dir().join("unreachable.txt").exists());
    let jobs = jobs_of(&env, "latest");
    assert_eq!(jobs["hang"]["status"], "failed");
    assert!(
        jobs["hang"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after"),
        "{}",
        jobs["hang"]
    );
}

#[test]
fn sigint_stops_every_step_and_records_the_run_cancelled() {
    let env = Env::with_pipelines(
        r#"
pipelines:
  - name: long
    jobs:
      one:
        steps:
          - run: |
              sleep 120 &
              echo $! > one.pid
              wait
      two:
        steps:
          - run: sleep 120 & echo $! > two.pid; wait
      three:
        needs: [one]
        steps:
          - run: touch three.txt
"#,
    );
    let child = env
        .cmd(&["run", "long", "--sw-workers", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("both steps to start", Duration::from_secs(30), || {
        env.dir().join("one.pid").exists() && env.dir().join("two.pid").exists()
    });
    let pids = [
        read_pid(&env.dir().join("one.pid")),
        read_pid(&env.dir().join("two.pid")),
    ];
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 130);
    for pid in pids {
        wait_for("step processes to die", Duration::from_secs(10), || {
            !pid_alive(pid)
        });
    }
    assert!(!env.dir().join("three.txt").exists());
    let runs = env.json(&["runs", "list", "-o", "json"]);
    assert_eq!(runs[0]["status"], "cancelled");
    let jobs = jobs_of(&env, "latest");
    assert_eq!(jobs["one"]["status"], "cancelled");
    assert_eq!(jobs["two"]["status"], "cancelled");
    assert_eq!(jobs["three"]["status"], "cancelled");
}

#[test]
fn sigterm_cancels_too() {
    let env = Env::with_pipelines("pipelines:\n  - name: l\n    jobs:\n      a:\n        steps:\n          - run: echo $$ > a.pid; exec sleep 120\n");
    let mut child = env
        .cmd(&["run", "l"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the step to start", Duration::from_secs(30), || {
        env.dir().join("a.pid").exists()
    });
    let pid = read_pid(&env.dir().join("a.pid"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    wait_for("the step to die", Duration::from_secs(10), || {
        !pid_alive(pid)
    });
}
