//! The host-local concurrency gate, with real processes.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::util::*;

const GATED: &str = r#"
pipelines:
  - name: hold
    jobs:
      j:
        steps:
          - run: |
              echo "$SPARKWING_RUN_ID" > "started-$TAG"
              echo "$TAG" >> order.txt
              i=0; while [ ! -f "release-$TAG" ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 9; sleep 0.05; done
"#;

fn start(env: &Env, tag: &str) -> Child {
    env.cmd(&["run", "hold"])
        .env("SPARKWING_MAX_RUNS", "1")
        .env("TAG", tag)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn statuses(env: &Env) -> Vec<String> {
    let v = env.json(&["runs", "list", "-o", "json"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn extra_runs_wait_visibly_in_arrival_order() {
    let env = Env::with_pipelines(GATED);
    let a = start(&env, "a");
    wait_for("a to start", Duration::from_secs(30), || {
        env.dir().join("started-a").exists()
    });
    let b = start(&env, "b");
    wait_for("b to wait", Duration::from_secs(30), || {
        statuses(&env).iter().filter(|s| *s == "waiting").count() == 1
    });
    let c = start(&env, "c");
    wait_for("c to wait", Duration::from_secs(30), || {
        statuses(&env).iter().filter(|s| *s == "waiting").count() == 2
    });
    let waiting = env.json(&["runs", "list", "--status", "waiting", "-o", "json"]);
    assert_eq!(
        waiting.as_array().unwrap().len(),
        2,
        "waiting runs are visible"
    );
    assert!(!env.dir().join("started-b").exists() && !env.dir().join("started-c").exists());
    for tag in ["a", "b", "c"] {
        std::fs::write(env.dir().join(format!("release-{tag}")), "").unwrap();
    }
    let outs: Vec<_> = [a, b, c]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        expect_code(o, 0);
    }
    assert!(
        text(&outs[1].stderr).contains("waiting for a run slot"),
        "{}",
        text(&outs[1].stderr)
    );
    assert!(
        text(&outs[2].stderr).contains("1 run(s) ahead"),
        "{}",
        text(&outs[2].stderr)
    );
    assert_eq!(
        std::fs::read_to_string(env.dir().join("order.txt")).unwrap(),
        "a\nb\nc\n"
    );
}

#[test]
fn a_killed_holder_frees_its_slot_at_once() {
    let env = Env::with_pipelines(GATED);
    let mut a = start(&env, "a");
    wait_for("a to start", Duration::from_secs(30), || {
        env.dir().join("started-a").exists()
    });
    let b = start(&env, "b");
    wait_for("b to wait", Duration::from_secs(30), || {
        statuses(&env).contains(&"waiting".to_string())
    });
    unsafe { libc::kill(a.id() as i32, libc::SIGKILL) };
    a.wait().unwrap();
    wait_for("b to get the slot", Duration::from_secs(30), || {
        env.dir().join("started-b").exists()
    });
    std::fs::write(env.dir().join("release-b"), "").unwrap();
    expect_code(&b.wait_with_output().unwrap(), 0);
    let v = env.json(&["runs", "list", "-o", "json"]);
    let s: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(s, ["success", "interrupted"]);
}

#[test]
fn a_bad_limit_is_named() {
    let env = Env::with_pipelines(GATED);
    let out = env
        .cmd(&["run", "hold"])
        .env("SPARKWING_MAX_RUNS", "zero")
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("SPARKWING_MAX_RUNS"),
        "{}",
        text(&out.stderr)
    );
    env.write_user_profiles("max_runs: 0\n");
    let out = env.run(&["run", "hold"]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("max_runs must be at least 1"),
        "{}",
        text(&out.stderr)
    );
}
