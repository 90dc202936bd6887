//! Issue 10, requirement 5: a secret planted in every place one can come
//! from — an endpoint's user info and query string, the environment, a
//! signing key, a DSN, a controller token — is searched for in every
//! output, every local file and every remote object after successful and
//! failing runs, `sync status/flush/daemon/verify`, `profile`, `runs
//! list/show/logs` and the dashboard's pages. It must appear nowhere.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::util::*;
use crate::web::Server;

const SECRETS: &[&str] = &[
    "PLANTEDPASS",
    "PLANTEDQTOKEN",
    "PLANTEDAWSSECRET",
    "PLANTEDSESSION",
    "PLANTEDSIGNINGKEY",
    "PLANTEDDSNPW",
    "PLANTEDDSNQUERY",
    "PLANTEDCTLTOKEN",
    "PLANTEDCTLQUERY",
];

fn find_secret(bytes: &[u8]) -> Option<&'static str> {
    SECRETS
        .iter()
        .copied()
        .find(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
}

/// Every file below `dir`, its bytes searched (SQLite keeps text as is, in
/// the database and its WAL).
fn scan_dir(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            scan_dir(&p, found);
        } else if let Ok(bytes) = std::fs::read(&p) {
            if let Some(s) = find_secret(&bytes) {
                found.push(format!("{s} in file {}", p.display()));
            }
        }
    }
}

#[test]
fn a_planted_secret_appears_in_no_output_file_or_remote_object() {
    let env = Env::new();
    let remote = tempfile::tempdir().unwrap();
    for d in ["state", "logs", "cache"] {
        std::fs::create_dir(remote.path().join(d)).unwrap();
    }
    let r = remote.path().display();
    // Nothing listens here: every request fails and its error is kept.
    let dead = free_port();
    let endpoint =
        format!("http://127.0.0.1:{dead}/a)b'c/?token=PLANTEDQTOKEN").replace('\'', "''");
    // User information is refused in an endpoint (the refusal must not
    // show it either): a password with `)`, `'` and `/`.
    let with_user = format!("http://u5er:PLANTEDPASS)x'y/z@127.0.0.1:{dead}/").replace('\'', "''");
    let profiles_dir = tempfile::tempdir().unwrap();
    let profiles = profiles_dir.path().join("profiles.yaml");
    std::fs::write(
        &profiles,
        format!(
            "profiles:
  bad:
    state: {{ type: s3, bucket: sw-state, prefix: state, region: us-east-1, endpoint: '{endpoint}' }}
    logs: {{ type: s3, bucket: sw-state, prefix: logs, region: us-east-1, endpoint: '{endpoint}' }}
    cache: {{ type: s3, bucket: sw-state, prefix: cache, region: us-east-1, endpoint: '{endpoint}' }}
  team:
    state: {{ type: filesystem, path: {r}/state }}
    logs: {{ type: filesystem, path: {r}/logs }}
    cache: {{ type: filesystem, path: {r}/cache, signing_key_source: 'env:SW_CACHE_KEY' }}
  db:
    state: {{ type: postgres, url: 'postgres://sw:PLANTEDDSNPW@127.0.0.1:1/sw?password=PLANTEDDSNQUERY' }}
  ctl:
    controller: {{ url: 'https://ctl.example/api?token=PLANTEDCTLQUERY', token: PLANTEDCTLTOKEN }}
"
        ),
    )
    .unwrap();
    env.write_project(
        "pipelines:
  - name: hello
    jobs:
      say: { steps: [{ run: 'echo hello' }] }
  - name: broken
    jobs:
      fail: { steps: [{ run: 'echo about to fail >&2; exit 3' }] }
  - name: build
    jobs:
      b:
        cache: { key: [seed.txt], outputs: [out] }
        steps:
          - run: mkdir -p out && cat seed.txt > out/artifact
",
    );
    std::fs::write(env.dir().join("seed.txt"), "seed").unwrap();
    let with_env = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("SPARKWING_PROFILES", &profiles)
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "PLANTEDAWSSECRET")
            .env("AWS_SESSION_TOKEN", "PLANTEDSESSION")
            .env("SW_CACHE_KEY", "PLANTEDSIGNINGKEY-0123456789");
        c
    };
    let mut outputs: Vec<(String, Output)> = Vec::new();
    let mut run = |args: &[&str]| {
        let out = with_env(args).output().unwrap();
        outputs.push((args.join(" "), out.clone()));
        out
    };

    // Runs: a success and a failure against the unreachable endpoint, a
    // cached job on the signed filesystem remote (twice: publish, restore).
    expect_code(
        &run(&[
            "run",
            "hello",
            "--profile",
            "bad",
            "--sw-sync-timeout",
            "2s",
        ]),
        0,
    );
    expect_code(
        &run(&[
            "run",
            "broken",
            "--profile",
            "bad",
            "--sw-sync-timeout",
            "1s",
        ]),
        1,
    );
    expect_code(&run(&["run", "build", "--profile", "team"]), 0);
    expect_code(
        &run(&["sync", "flush", "--profile", "team", "--timeout", "30s"]),
        0,
    );
    std::fs::remove_dir_all(env.dir().join("out")).unwrap();
    std::fs::remove_dir_all(env.sw_home().join("cas")).ok();
    run(&["run", "build", "--profile", "team"]);
    // Profiles that cannot run here still must not print their secrets.
    run(&["run", "hello", "--profile", "db"]);
    let mut refused = Vec::new();
    // A profile file with user information in an endpoint: refused at
    // load, without showing it.
    let userinfo = profiles_dir.path().join("userinfo.yaml");
    std::fs::write(
        &userinfo,
        format!("profiles:\n  u:\n    state: {{ type: s3, bucket: sw-state, prefix: state, region: us-east-1, endpoint: '{with_user}' }}\n"),
    )
    .unwrap();
    for args in [
        &["run", "hello", "--profile", "u"][..],
        &["profile", "--profile", "u"],
    ] {
        let out = with_env(args)
            .env("SPARKWING_PROFILES", &userinfo)
            .output()
            .unwrap();
        expect_code(&out, 2);
        assert!(
            text(&out.stderr).contains("user information"),
            "{}",
            text(&out.stderr)
        );
        refused.push((format!("{args:?} (user info)"), out));
    }
    run(&["run", "hello", "--profile", "ctl"]);
    for p in ["bad", "team", "db", "ctl"] {
        run(&["profile", "--profile", p]);
        run(&["profile", "--profile", p, "-o", "json"]);
    }
    // The sync engine's views of the failing target.
    run(&["sync", "status", "--profile", "bad"]);
    run(&["sync", "status", "--profile", "bad", "-o", "json"]);
    run(&["sync", "status"]);
    expect_code(
        &run(&["sync", "flush", "--profile", "bad", "--timeout", "2s"]),
        1,
    );
    run(&["sync", "verify", "--profile", "bad"]);
    run(&["sync", "verify", "--profile", "bad", "-o", "json"]);
    run(&["runs", "list", "--profile", "bad"]);
    run(&["runs", "list", "--profile", "bad", "-o", "json"]);
    run(&["runs", "show", "latest", "--profile", "bad"]);
    run(&["runs", "show", "latest", "--profile", "bad", "-o", "json"]);
    run(&["runs", "logs", "latest", "--profile", "bad"]);
    let mut daemon = with_env(&[
        "sync",
        "daemon",
        "--profile",
        "bad",
        "--drain-timeout",
        "1s",
    ]);
    let daemon = daemon
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    outputs.push(("sync daemon".into(), daemon.wait_with_output().unwrap()));

    // The dashboard over the failing profile: every page.
    let mut pages = Vec::new();
    {
        let mut c = with_env(&[
            "dashboard",
            "start",
            "--foreground",
            "--addr",
            "127.0.0.1:0",
            "--profile",
            "bad",
        ]);
        c.stdin(Stdio::null());
        let srv = Server::spawn(c);
        let run_id = {
            let v = srv.get("/api/runs").json();
            v["runs"][0]["id"].as_str().unwrap_or_default().to_string()
        };
        for p in [
            "/".to_string(),
            "/sync".into(),
            "/pipelines".into(),
            "/api/runs".into(),
            format!("/runs/{run_id}"),
            format!("/api/runs/{run_id}"),
            format!("/runs/{run_id}/jobs/fail/log"),
            format!("/runs/{run_id}/jobs/fail/log.txt"),
        ] {
            let resp = srv.get(&p);
            pages.push((p, resp.body));
        }
    }

    let mut found = Vec::new();
    outputs.extend(refused);
    for (what, out) in &outputs {
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if let Some(s) = find_secret(bytes) {
                found.push(format!("{s} in `{what}` {stream}: {}", text(bytes)));
            }
        }
    }
    for (p, body) in &pages {
        if let Some(s) = find_secret(body) {
            found.push(format!("{s} on dashboard page {p}"));
        }
    }
    scan_dir(env.home.path(), &mut found);
    scan_dir(env.dir(), &mut found);
    scan_dir(remote.path(), &mut found);
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));

    // The scan does find secrets where they are (the user's own profile
    // file holds every one), so an empty result above means something.
    let mut in_profiles = Vec::new();
    scan_dir(profiles_dir.path(), &mut in_profiles);
    assert_eq!(in_profiles.len(), 2, "{in_profiles:?}");
    // The failing target's errors were recorded (so there was something to
    // redact): sync status names the failure.
    let status = with_env(&["sync", "status", "--profile", "bad"])
        .output()
        .unwrap();
    let st = text(&status.stdout) + &text(&status.stderr);
    assert!(st.contains("127.0.0.1") && st.contains("***"), "{st}");
}
