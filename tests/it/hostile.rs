//! Issue 10, requirement 3: a corpus of hostile remote documents fed to
//! every remote read path — `runs list/show/logs --profile`, every page and
//! API route of `sparkwing-web` and `dashboard --profile`. One bad document
//! is one `unreadable` run; it never panics, never answers 5xx, never ends
//! the others' listing, and nothing from it reaches a terminal or a page
//! unescaped.

use std::path::Path;

use serde_json::json;

use crate::util::*;
use crate::web::{latest_run, shared_remote, Server};

const ESC: u8 = 0x1b;

/// What a hostile writer can put in a run's directory.
fn plant(state: &Path, logs: &Path, cache: &Path, good: &serde_json::Value) -> Vec<String> {
    let doc = |id: &str| {
        let mut d = good.clone();
        d["id"] = id.into();
        d
    };
    let mut planted: Vec<(String, Vec<u8>)> = vec![
        ("01HOSTILEARRAY0000000000AA".into(), b"[1,2,3]".to_vec()),
        ("01HOSTILENUMBER000000000AA".into(), b"5".to_vec()),
        ("01HOSTILESTRING000000000AA".into(), b"\"str\"".to_vec()),
        ("01HOSTILEEMPTY0000000000AA".into(), b"{}".to_vec()),
        (
            "01HOSTILEBADUTF80000000AAA".into(),
            b"\xff\xfe{\"id\":1}".to_vec(),
        ),
        (
            "01HOSTILEDEEP00000000000AA".into(),
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        ("01HOSTILEHUGE00000000000AA".into(), {
            let mut d = doc("01HOSTILEHUGE00000000000AA");
            d["padding"] = "x".repeat(5 << 20).into();
            d.to_string().into_bytes()
        }),
        ("01HOSTILELONG00000000000AA".into(), {
            let mut d = doc("01HOSTILELONG00000000000AA");
            d["pipeline"] = "p".repeat(70_000).into();
            d.to_string().into_bytes()
        }),
        ("01HOSTILEJOBNAME0000000AAA".into(), {
            let mut d = doc("01HOSTILEJOBNAME0000000AAA");
            d["jobs"][0]["name"] = "j".repeat(70_000).into();
            d.to_string().into_bytes()
        }),
        ("01HOSTILENAMEESC0000000AAA".into(), {
            let mut d = doc("01HOSTILENAMEESC0000000AAA");
            d["pipeline"] = "\u{1b}]0;pwned\u{7}".into();
            d["host"] = "h\nsparkwing: forged line".into();
            d.to_string().into_bytes()
        }),
        ("01HOSTILEJOBPATH0000000AAA".into(), {
            let mut d = doc("01HOSTILEJOBPATH0000000AAA");
            d["jobs"][0]["name"] = "../../../../../../..".into();
            d.to_string().into_bytes()
        }),
        (
            "01HOSTILEOTHERID0000000AAA".into(),
            doc("01SOMEONEELSE000000000000A").to_string().into_bytes(),
        ),
        ("01HOSTILEJOBSOBJ0000000AAA".into(), {
            let mut d = doc("01HOSTILEJOBSOBJ0000000AAA");
            d["jobs"] = json!({"a": 1});
            d.to_string().into_bytes()
        }),
        ("01HOSTILETYPES00000000AAAA".into(), {
            let mut d = doc("01HOSTILETYPES00000000AAAA");
            d["pid"] = "1".into();
            d["jobs"][0]["steps"] = json!([null, 5]);
            d.to_string().into_bytes()
        }),
    ];
    // Readable, but every text field carries escape sequences (window
    // title, OSC 52 clipboard write, screen clear) and markup.
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}]52;c;cGF5bG9hZA==\u{7}\u{1b}[2J<script>alert(1)</script>";
    let mut esc = doc("01HOSTILEESCAPES0000000AAA");
    esc["error"] = evil.into();
    esc["jobs"][0]["error"] = evil.into();
    esc["jobs"][0]["cache_key"] = "a".repeat(64).into();
    esc["jobs"][0]["steps"][0]["name"] = evil.into();
    planted.push((
        "01HOSTILEESCAPES0000000AAA".into(),
        esc.to_string().into_bytes(),
    ));
    let mut ids = Vec::new();
    for (id, body) in planted {
        std::fs::create_dir_all(state.join(format!("runs/{id}"))).unwrap();
        std::fs::write(state.join(format!("runs/{id}/run.json")), body).unwrap();
        ids.push(id);
    }
    // Names that are not run IDs, as another tool could create them.
    for name in ["not a run", "esc\u{1b}[2Jname", "...."] {
        std::fs::create_dir_all(state.join(format!("runs/{name}"))).unwrap();
        std::fs::write(
            state.join(format!("runs/{name}/run.json")),
            good.to_string(),
        )
        .unwrap();
    }
    // The escape run's log: a chunk of escape bytes, a stray name, and a
    // chunk over the bound.
    let job = good["jobs"][0]["name"].as_str().unwrap();
    let dir = logs.join(format!("01HOSTILEESCAPES0000000AAA/{job}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0000000000.log"), evil).unwrap();
    std::fs::write(dir.join("stray.log"), "stray").unwrap();
    // A hostile manifest for the key the escape run names.
    std::fs::create_dir_all(cache.join("keys")).unwrap();
    std::fs::write(
        cache.join(format!("keys/{}.json", "a".repeat(64))),
        json!({"key": "a".repeat(64), "job": evil, "pipeline": evil, "run_id": evil,
               "manifest": {"version": 1, "files": [{"path": evil, "sha256": evil, "size": 1, "mode": 0o6755}]}})
        .to_string(),
    )
    .unwrap();
    ids
}

fn no_escape(what: &str, bytes: &[u8]) {
    assert!(
        !bytes.contains(&ESC),
        "{what}: an escape byte reached the output: {}",
        String::from_utf8_lossy(bytes)
    );
}

fn not_a_panic(what: &str, out: &std::process::Output) {
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(1) | Some(2)),
        "{what}: exit {code:?}\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{what}: {}",
        text(&out.stderr)
    );
}

#[test]
fn hostile_remote_documents_are_each_one_unreadable_run_everywhere() {
    let (remote, profiles) = shared_remote();
    let r = remote.path();
    let env = Env::with_pipelines(&format!(
        "{profiles}pipelines:\n  - name: hi\n    jobs:\n      say: {{ steps: [{{ run: 'echo good run' }}] }}\n"
    ));
    expect_code(&env.run(&["run", "hi", "--profile", "team"]), 0);
    expect_code(&env.run(&["sync", "flush", "--profile", "team"]), 0);
    let good_id = latest_run(&env);
    let good: serde_json::Value = serde_json::from_slice(
        &std::fs::read(r.join(format!("state/runs/{good_id}/run.json"))).unwrap(),
    )
    .unwrap();
    let ids = plant(&r.join("state"), &r.join("logs"), &r.join("cache"), &good);

    // Another runner (no local runs) lists the bucket: every planted run is
    // one row, the good one lists normally.
    let other = Env::with_pipelines(&format!("{profiles}pipelines: []\n"));
    let out = other.run(&["runs", "list", "--profile", "team", "--limit", "100"]);
    expect_code(&out, 0);
    no_escape("runs list", &out.stdout);
    no_escape("runs list (stderr)", &out.stderr);
    let listed = text(&out.stdout);
    assert!(listed.contains(&good_id), "{listed}");
    let rows = other.json(&[
        "runs",
        "list",
        "--profile",
        "team",
        "--limit",
        "100",
        "-o",
        "json",
    ]);
    let rows = rows.as_array().unwrap();
    let status_of = |id: &str| {
        rows.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed: {rows:?}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of(&good_id), "success");
    for id in &ids {
        let want = if id == "01HOSTILEESCAPES0000000AAA" {
            "success"
        } else {
            "unreadable"
        };
        assert_eq!(status_of(id), want, "{id}");
    }
    for name in ["not a run", "...."] {
        assert_eq!(status_of(name), "unreadable", "{name}");
    }

    // show and logs on each: an answer or a clear error, never a panic.
    for id in ids.iter().chain([&good_id]) {
        let out = other.run(&["runs", "show", id, "--profile", "team"]);
        not_a_panic(&format!("runs show {id}"), &out);
        no_escape(&format!("runs show {id}"), &out.stdout);
        no_escape(&format!("runs show {id} (stderr)"), &out.stderr);
        let out = other.run(&["runs", "show", id, "--profile", "team", "-o", "json"]);
        not_a_panic(&format!("runs show -o json {id}"), &out);
        let out = other.run(&["runs", "logs", id, "--profile", "team"]);
        not_a_panic(&format!("runs logs {id}"), &out);
        no_escape(&format!("runs logs {id} (stderr)"), &out.stderr);
    }
    // `runs logs` is byte-exact, like cat (README says so).
    let out = other.run(&[
        "runs",
        "logs",
        "01HOSTILEESCAPES0000000AAA",
        "--profile",
        "team",
    ]);
    expect_code(&out, 0);
    assert!(
        out.stdout.starts_with(b"\x1b]0;pwned"),
        "{}",
        text(&out.stdout)
    );
    // Every dashboard route, on sparkwing-web and on dashboard --profile.
    let state = r.join("state").display().to_string();
    let logs = format!("file://{}", r.join("logs").display());
    let cache = format!("file://{}", r.join("cache").display());
    let web = Server::web(
        &[
            "--state-spec",
            &state,
            "--logs-spec",
            &logs,
            "--artifacts-spec",
            &cache,
        ],
        &[],
    );
    let dash = Server::dashboard(&other, &["--profile", "team"], &[]);
    for srv in [&web, &dash] {
        let mut paths: Vec<String> = ["/", "/api/runs", "/pipelines", "/sync", "/healthz"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for id in ids.iter().chain([&good_id]) {
            for p in ["", "/jobs/say/log", "/jobs/say/log.txt"] {
                paths.push(format!("/runs/{id}{p}"));
            }
            paths.push(format!("/api/runs/{id}"));
        }
        paths.push("/runs/not%20a%20run".into());
        for p in &paths {
            let resp = srv.get(p);
            assert!(
                resp.status < 500,
                "{} {p}: {} {}",
                srv.base,
                resp.status,
                resp.text()
            );
            if !p.ends_with("log.txt") {
                no_escape(&format!("{} {p}", srv.base), &resp.body);
                if p.starts_with("/api/") {
                    // JSON carries the text as data, never as markup.
                    assert!(
                        resp.header("content-type")
                            .is_some_and(|c| c.starts_with("application/json")),
                        "{p}"
                    );
                    assert_eq!(
                        resp.header("x-content-type-options"),
                        Some("nosniff"),
                        "{p}"
                    );
                } else {
                    assert!(
                        !resp.text().contains("<script>alert"),
                        "{p}: markup reached the page"
                    );
                }
            }
        }
        let runs = srv.get("/api/runs?limit=100").json();
        let n = runs["runs"].as_array().map(Vec::len).unwrap_or(0);
        assert!(n > ids.len(), "every run listed, the good one too: {runs}");
        assert!(srv.get("/").text().contains(&good_id));
    }

    drop((web, dash));

    // Another runner's log, whole and its last line, byte for byte.
    let out = other.run(&["runs", "logs", &good_id, "--profile", "team"]);
    expect_code(&out, 0);
    assert_eq!(text(&out.stdout), "good run\n");
    let out = other.run(&["runs", "logs", &good_id, "--profile", "team", "--tail", "1"]);
    expect_code(&out, 0);
    assert_eq!(text(&out.stdout), "good run\n");

    // A log chunk over the bound is an error that names it, never a 3 MiB
    // read into memory.
    std::fs::write(
        r.join(format!("logs/{good_id}/say/0000000000.log")),
        vec![b'x'; 3 << 20],
    )
    .unwrap();
    let out = other.run(&["runs", "logs", &good_id, "--profile", "team"]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("0000000000.log is 3145728 bytes, more than the 2097152"),
        "{err}"
    );
}
