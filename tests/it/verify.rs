//! `sparkwing sync verify` (issue 9, requirement 5) and the defensive
//! readers of requirement 2: each kind of damage to a remote is named, and
//! another runner reading a damaged log is told what is missing.

use std::path::{Path, PathBuf};

use crate::util::*;

const PIPELINE: &str = r#"
pipelines:
  - name: work
    jobs:
      talk:
        steps:
          - run: for i in $(seq 40); do echo "talk line $i"; done
          - run: echo second step
          - run: echo third step
      build:
        cache: { key: [seed.txt], outputs: [out] }
        steps:
          - run: mkdir -p out && cat seed.txt > out/a.bin && echo other > out/b.bin
"#;

fn profile_yaml(remote: &Path) -> String {
    format!(
        "profiles:\n  team:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache }}\n{PIPELINE}",
        r = remote.display()
    )
}

/// A runner with a filesystem remote and one finished, flushed run.
fn one_run() -> (Env, PathBuf, String) {
    let env = Env::new();
    let remote = env.home.path().join("remote");
    for s in ["state", "logs", "cache"] {
        std::fs::create_dir_all(remote.join(s)).unwrap();
    }
    env.write_project(&profile_yaml(&remote));
    std::fs::write(env.dir().join("seed.txt"), "seed").unwrap();
    expect_code(&env.run(&["run", "work", "--profile", "team"]), 0);
    expect_code(&env.run(&["sync", "flush", "--profile", "team"]), 0);
    let run = env.json(&["runs", "list", "-o", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (env, remote, run)
}

fn verify(env: &Env) -> (i32, String, serde_json::Value) {
    let out = env.run(&["sync", "verify", "--profile", "team"]);
    let json = env.run(&["sync", "verify", "--profile", "team", "-o", "json"]);
    assert_eq!(out.status.code(), json.status.code());
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&json.stdout)));
    (out.status.code().unwrap_or(-1), text(&out.stdout), doc)
}

fn problems(doc: &serde_json::Value) -> Vec<String> {
    doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["problems"].as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn verify_passes_on_an_equal_remote_and_names_every_kind_of_damage() {
    let (env, remote, run) = one_run();
    let (code, out, doc) = verify(&env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{run}  equal")), "{out}");
    assert_eq!(doc["equal"], true);
    assert_eq!(doc["discrepancies"], 0);
    assert_eq!(doc["runs"][0]["result"], "equal");

    let runs = remote.join("state/runs").join(&run);
    let segs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(runs.join("events"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let first = std::fs::read(&segs[0]).unwrap();
    let first_seq: i64 = segs[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();

    // 1. An event present twice (a second segment repeating the first one's
    //    first line, as the old engine's overlapping segments did).
    let line = first.split(|&b| b == b'\n').next().unwrap();
    let dup = runs.join("events").join(format!("{:020}.ndjson", 99_999));
    std::fs::write(&dup, [line, b"\n"].concat()).unwrap();
    let (code, _, doc) = verify(&env);
    assert_eq!(code, 1);
    let p = problems(&doc);
    assert!(
        p.iter()
            .any(|m| m.contains(&format!("event {first_seq} appears 2 times"))),
        "{p:?}"
    );
    std::fs::remove_file(&dup).unwrap();

    // 2. A segment lost: its events are missing.
    std::fs::rename(&segs[0], runs.join("moved-away")).unwrap();
    let (code, _, doc) = verify(&env);
    assert_eq!(code, 1);
    let p = problems(&doc);
    assert!(
        p.iter().any(|m| m.contains("events missing on the remote")),
        "{p:?}"
    );
    std::fs::rename(runs.join("moved-away"), &segs[0]).unwrap();

    // 3. run.json with another status.
    let doc_path = runs.join("run.json");
    let original = std::fs::read(&doc_path).unwrap();
    let mut d: serde_json::Value = serde_json::from_slice(&original).unwrap();
    d["status"] = "running".into();
    std::fs::write(&doc_path, d.to_string()).unwrap();
    let (code, _, doc) = verify(&env);
    assert_eq!(code, 1);
    let p = problems(&doc);
    assert!(
        p.iter()
            .any(|m| m.contains("run.json says status \"running\"; this machine says \"success\"")),
        "{p:?}"
    );
    std::fs::write(&doc_path, &original).unwrap();

    // 4. A log chunk missing, another one altered.
    let chunks_dir = remote.join("logs").join(&run).join("talk");
    let n = std::fs::read_dir(&chunks_dir).unwrap().count();
    assert!(n >= 2, "the talk job's log has {n} chunk(s)");
    let c0 = chunks_dir.join("0000000000.log");
    let c1 = chunks_dir.join("0000000001.log");
    let (b0, b1) = (std::fs::read(&c0).unwrap(), std::fs::read(&c1).unwrap());
    std::fs::remove_file(&c1).unwrap();
    std::fs::write(&c0, b"tampered\n").unwrap();
    let (code, _, doc) = verify(&env);
    assert_eq!(code, 1);
    let p = problems(&doc);
    assert!(
        p.iter()
            .any(|m| m == &format!("log of job talk: chunk 2 of {n} missing on the remote")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with(&format!("log of job talk: chunk 1 of {n} differs"))),
        "{p:?}"
    );

    // The reader on another runner: the log is never shown as whole.
    let other = Env::new();
    other.write_project(&profile_yaml(&remote));
    let out = other.run(&["runs", "logs", &run, "--job", "talk", "--profile", "team"]);
    expect_code(&out, 0);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!(
            "[sparkwing: chunk 2 of {n} of this log is missing on the remote]"
        )),
        "{shown}"
    );
    assert!(
        text(&out.stderr).contains(&format!(
            "log of job talk: chunk 2 of {n} missing on the remote"
        )),
        "{}",
        text(&out.stderr)
    );
    // The dashboard over the bucket alone (sparkwing-web): the raw log and
    // the log page mark the gap too.
    let web = crate::web::Server::web(
        &[
            "--state-spec",
            &remote.join("state").display().to_string(),
            "--logs-spec",
            &remote.join("logs").display().to_string(),
        ],
        &[],
    );
    let marker = format!("[sparkwing: chunk 2 of {n} of this log is missing on the remote]");
    let raw = web.get(&format!("/runs/{run}/jobs/talk/log.txt"));
    assert_eq!(raw.status, 200);
    assert!(text(&raw.body).contains(&marker), "{}", text(&raw.body));
    let page = web.get(&format!("/runs/{run}/jobs/talk/log"));
    assert_eq!(page.status, 200);
    assert!(text(&page.body).contains(&marker), "{}", text(&page.body));
    drop(web);
    std::fs::write(&c0, &b0).unwrap();
    std::fs::write(&c1, &b1).unwrap();
    // Whole again: the reader shows exactly the local bytes, no marker.
    let out = other.run(&["runs", "logs", &run, "--job", "talk", "--profile", "team"]);
    expect_code(&out, 0);
    let local = std::fs::read(env.sw_home().join("runs").join(&run).join("talk.log")).unwrap();
    assert!(out.stdout == local, "{}", text(&out.stdout));
    assert_eq!(text(&out.stderr), "");

    // 5. The cache's pack missing, then corrupted.
    let mut packs: Vec<PathBuf> = Vec::new();
    for d in std::fs::read_dir(remote.join("cache/cas")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            packs.push(f.unwrap().path());
        }
    }
    assert_eq!(packs.len(), 1, "both files in one pack: {packs:?}");
    let kept = std::fs::read(&packs[0]).unwrap();
    std::fs::remove_file(&packs[0]).unwrap();
    let (code, out, doc) = verify(&env);
    assert_eq!(code, 1);
    let p = problems(&doc);
    assert!(
        p.iter()
            .any(|m| m.contains("cache key") && m.contains("which the remote does not have")),
        "{p:?}"
    );
    assert_eq!(doc["discrepancies"], p.len());
    assert!(out.contains("1 discrepancy in 1 run(s)"), "{out}");
    let mut corrupt = kept.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x55;
    std::fs::write(&packs[0], &corrupt).unwrap();
    let (code, _, doc) = verify(&env);
    let p = problems(&doc);
    assert_eq!((code, doc["discrepancies"].as_u64()), (1, Some(1)), "{p:?}");
    assert!(p[0].contains("corrupt"), "{p:?}");
    std::fs::write(&packs[0], kept).unwrap();
    let (code, _, doc) = verify(&env);
    assert_eq!((code, doc["discrepancies"].as_u64()), (0, Some(0)));
}

#[test]
fn verify_explains_a_local_profile_and_an_unknown_run() {
    let (env, _remote, _run) = one_run();
    let out = env.run(&["sync", "verify"]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("keeps everything local (Mode 1)"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["sync", "verify", "--profile", "team", "--run", "NOSUCHRUN"]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("no run `NOSUCHRUN`"),
        "{}",
        text(&out.stderr)
    );
}

/// A remote that cannot be read is not a remote that lacks the data:
/// `sync verify` against a share that is away (or a bucket that does not
/// answer) exits 69 and says nothing was verified, instead of exiting 1
/// with every event, chunk and blob reported "missing on the remote".
#[test]
fn verify_of_a_remote_that_cannot_be_read_exits_69_and_claims_nothing_missing() {
    let (env, remote, _run) = one_run();
    let away = remote.with_extension("away");
    std::fs::rename(&remote, &away).unwrap();
    for args in [
        &["sync", "verify", "--profile", "team"][..],
        &["sync", "verify", "--profile", "team", "-o", "json"][..],
    ] {
        let out = env.run(args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(69), "{args:?}\n{stdout}{stderr}");
        assert!(!stdout.contains("missing"), "{stdout}");
        assert!(stderr.contains("nothing was verified"), "{stderr}");
    }
    std::fs::rename(&away, &remote).unwrap();
    let (code, out, _) = verify(&env);
    assert_eq!(code, 0, "{out}");
}
