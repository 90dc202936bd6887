//! The dashboard over HTTP: `sparkwing dashboard start/status/stop`, every
//! page and stream of the dashboard and of `sparkwing-web`, escaping, live
//! tails, big logs, and the Mode 2 merged view against a real S3 server.

use std::io::Write;
use std::time::Duration;

use crate::util::{expect_code, moto, text, wait_for, Env, S3_ENV};
use crate::web::{
    dashboard_env, latest_run, request, shared_remote, start_run, EventStream, Server,
};

fn gate() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("go");
    (d, p)
}

#[test]
fn dashboard_start_is_idempotent_and_status_and_stop_manage_it() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: a\n    jobs: { j: { steps: [{ run: 'true' }] } }\n",
    );
    let st = env.run(&["dashboard", "status"]);
    expect_code(&st, 3);
    assert!(
        text(&st.stdout).contains("not running"),
        "{}",
        text(&st.stdout)
    );

    let out = env.run(&["dashboard", "start", "--addr", "127.0.0.1:0"]);
    expect_code(&out, 0);
    assert!(
        text(&out.stdout).contains("dashboard running at http://127.0.0.1:"),
        "{}",
        text(&out.stdout)
    );
    let v = env.json(&["dashboard", "status", "-o", "json"]);
    assert_eq!(v["running"], true);
    assert_eq!(v["responding"], true);
    assert_eq!(v["profile"], "laptop");
    let pid = v["pid"].as_i64().unwrap();
    let url = v["url"].as_str().unwrap().to_string();
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    assert_eq!(request(addr, "GET", "/healthz", &[], None).status, 200);

    // Again: the same dashboard, not a second one.
    let again = env.run(&["dashboard", "start"]);
    expect_code(&again, 0);
    assert!(
        text(&again.stdout).contains("already running"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        env.json(&["dashboard", "status", "-o", "json"])["pid"].as_i64(),
        Some(pid)
    );
    // Asking for another address is refused with the way out.
    let other = env.run(&["dashboard", "start", "--addr", "127.0.0.1:1"]);
    expect_code(&other, 2);
    assert!(
        text(&other.stderr).contains("sparkwing dashboard stop"),
        "{}",
        text(&other.stderr)
    );

    let stop = env.run(&["dashboard", "stop"]);
    expect_code(&stop, 0);
    assert!(text(&stop.stdout).contains("stopped"));
    expect_code(&env.run(&["dashboard", "status"]), 3);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
    // Stopping again is harmless.
    expect_code(&env.run(&["dashboard", "stop"]), 0);
}

#[test]
fn dashboard_start_reports_a_bad_address_or_a_taken_port() {
    let env = Env::new();
    let bad = env.run(&["dashboard", "start", "--addr", "localhost"]);
    expect_code(&bad, 2);
    assert!(
        text(&bad.stderr).contains("--addr `localhost` is not IP:PORT"),
        "{}",
        text(&bad.stderr)
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = env.run(&["dashboard", "start", "--addr", &format!("127.0.0.1:{port}")]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("address is in use"),
        "{}",
        text(&out.stderr)
    );
    expect_code(&env.run(&["dashboard", "status"]), 3);
}

#[test]
fn every_page_and_route_answers_with_escaped_values_and_safe_headers() {
    let (_g, go) = gate();
    let env = dashboard_env(&go);
    std::fs::write(env.dir().join("src.txt"), "v1").unwrap();
    expect_code(&env.run(&["run", "build"]), 0);
    let first = latest_run(&env);
    expect_code(&env.run(&["run", "build"]), 0);
    let run = latest_run(&env);
    let srv = Server::dashboard(&env, &[], &[]);

    // Runs list: newest first, both runs, filters.
    let home = srv.get("/");
    assert_eq!(home.status, 200);
    let csp = home.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(home.header("x-content-type-options"), Some("nosniff"));
    let body = home.text();
    assert!(
        body.find(&run).unwrap() < body.find(&first).unwrap(),
        "newest first"
    );
    assert!(body.contains("✓ success"), "status by symbol and word");
    assert!(srv
        .get("/?pipeline=build&status=success")
        .text()
        .contains(&run));
    let none = srv.get("/?pipeline=nope").text();
    assert!(none.contains("No runs match") && !none.contains(&run));
    assert_eq!(srv.get("/?status=bogus").status, 400);
    // Paging: one per page, the next page holds the older run.
    let p1 = srv.get("/?limit=1").text();
    assert!(p1.contains(&run) && !p1.contains(&format!("/runs/{first}")));
    assert!(
        p1.contains(&format!("href=\"/?limit=1&before={run}\"")),
        "the next page keeps the page size: {p1}"
    );
    let older = srv.get(&format!("/?limit=1&before={run}")).text();
    assert!(older.contains(&format!("/runs/{first}")));

    // Run detail: DAG, steps, cache provenance, escaped step text.
    let detail = srv.get(&format!("/runs/{run}")).text();
    assert!(detail.contains("<svg class=\"dag\""), "{detail}");
    assert!(detail.contains("class=\"edge\""), "an edge compile -> test");
    assert!(
        detail.contains(&format!(
            "restored from run <a class=\"mono\" href=\"/runs/{first}\">"
        )),
        "{detail}"
    );
    assert!(detail.contains("cached outputs: 1 file(s)"), "{detail}");
    assert!(
        detail.contains("&lt;script&gt;window.__pwned = 1&lt;/script&gt;"),
        "{detail}"
    );
    assert!(!detail.contains("<script>window"), "raw markup from a step");
    let frag = srv.get(&format!("/runs/{run}?fragment=1")).text();
    assert!(frag.starts_with("<h1>") && !frag.contains("<html"));
    assert_eq!(srv.get("/runs/NOTAREALRUNID").status, 404);
    assert_eq!(srv.get("/runs/01ZZZZZZZZZZZZZZZZZZZZZZZZ").status, 404);

    // Logs: ANSI to classes, markup as text, raw and download.
    let log = srv.get(&format!("/runs/{run}/jobs/test/log")).text();
    assert!(
        log.contains("<span class=\"f2\">ok</span> 3 passed"),
        "{log}"
    );
    assert!(log.contains("&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x onerror=&quot;window.__pwned = 2&quot;&gt; &amp; done"), "{log}");
    assert!(!log.contains("<script>window") && !log.contains("<img src=x"));
    assert!(
        !log.contains("data-stream"),
        "a finished job is not streamed"
    );
    let raw = srv.get(&format!("/runs/{run}/jobs/test/log.txt"));
    assert_eq!(
        raw.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(raw.text().contains("\u{1b}[32mok\u{1b}[0m 3 passed"));
    let dl = srv.get(&format!("/runs/{run}/jobs/test/log.txt?download=1"));
    assert_eq!(
        dl.header("content-disposition"),
        Some(format!("attachment; filename=\"{run}-test.log\"").as_str())
    );
    assert_eq!(srv.get(&format!("/runs/{run}/jobs/nope/log")).status, 404);

    // The stream of a finished job: its output, then the end.
    let mut es = EventStream::open(
        &srv.addr,
        &format!("/runs/{run}/jobs/test/log/stream?from=b0"),
    );
    assert_eq!(es.status, 200);
    let ev = es.next().unwrap();
    assert_eq!(ev.event, "log");
    assert!(ev.data.contains("3 passed"), "{}", ev.data);
    let end = es.next().unwrap();
    assert_eq!(end.event, "end");
    assert!(end.data.contains("success"));
    assert_eq!(
        srv.get(&format!("/runs/{run}/jobs/test/log/stream?from=zz"))
            .status,
        400
    );

    // Pipelines, sync, JSON, assets, errors.
    let pipes = srv.get("/pipelines").text();
    assert!(
        pipes.contains("Compile and test") && pipes.contains("never run"),
        "{pipes}"
    );
    let sync = srv.get("/sync").text();
    assert!(sync.contains("Nothing queued"), "{sync}");
    let api = srv.get("/api/runs?limit=5").json();
    assert_eq!(api["runs"][0]["id"], run.as_str());
    assert_eq!(
        srv.get(&format!("/api/runs/{run}")).json()["jobs"][1]["name"],
        "test"
    );
    assert!(srv.get("/assets/app.js").text().contains("EventSource"));
    assert!(srv
        .get("/assets/app.css")
        .text()
        .contains("prefers-color-scheme"));
    let nf = srv.get("/nope");
    assert_eq!(nf.status, 404);
    assert!(nf.text().contains("Back to the runs"));
    // Read-only, loopback names only.
    assert_eq!(
        request(&srv.addr, "POST", "/", &[], Some(b"{}")).status,
        405
    );
    assert_eq!(
        request(&srv.addr, "DELETE", &format!("/api/runs/{run}"), &[], None).status,
        405
    );
    assert_eq!(
        request(&srv.addr, "GET", "/", &[("Host", "evil.example:80")], None).status,
        421
    );
}

#[test]
fn a_running_jobs_log_streams_live_and_ends_with_the_job() {
    let (_g, go) = gate();
    let env = dashboard_env(&go);
    let (mut child, run) = start_run(&env, &["run", "live"]);
    let srv = Server::dashboard(&env, &[], &[]);
    wait_for("the first line", Duration::from_secs(30), || {
        srv.get(&format!("/runs/{run}/jobs/tail/log"))
            .text()
            .contains("first line")
    });
    let page = srv.get(&format!("/runs/{run}/jobs/tail/log")).text();
    let from = page
        .split("log/stream?from=")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("a running job's page names its stream: {page}"))
        .to_string();
    assert!(
        srv.get(&format!("/runs/{run}"))
            .text()
            .contains("data-refresh"),
        "a running run refreshes in place"
    );
    let mut es = EventStream::open(
        &srv.addr,
        &format!("/runs/{run}/jobs/tail/log/stream?from={from}"),
    );
    assert!(es.header_is_event_stream());
    std::fs::write(&go, "").unwrap();
    let ev = es.next().unwrap();
    assert_eq!(ev.event, "log", "{ev:?}");
    assert!(
        ev.data.contains("second line") && !ev.data.contains("first line"),
        "{ev:?}"
    );
    assert!(ev.id.as_deref().is_some_and(|i| i.starts_with('b')));
    let end = es.next().unwrap();
    assert_eq!(end.event, "end");
    assert!(end.data.contains("success"), "{end:?}");
    assert!(child.wait().unwrap().success());
    // A reconnect with Last-Event-ID resumes after what was delivered.
    let resumed = request(
        &srv.addr,
        "GET",
        &format!("/runs/{run}/jobs/tail/log/stream"),
        &[("Last-Event-ID", ev.id.as_deref().unwrap())],
        None,
    )
    .text();
    assert!(
        !resumed.contains("second line") && resumed.contains("event: end"),
        "{resumed}"
    );
}

impl EventStream {
    fn header_is_event_stream(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "text/event-stream")
    }
}

#[test]
fn a_50_mb_log_is_served_whole_without_the_server_holding_it() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: big\n    jobs:\n      spew: { steps: [{ run: \"yes 'a line of a big log, 40 bytes long..' | head -c 52428800\" }] }\n",
    );
    expect_code(&env.run(&["run", "big"]), 0);
    let run = latest_run(&env);
    let srv = Server::dashboard(&env, &[], &[]);
    srv.get("/");
    let before = srv.peak_rss_kib();
    let page = srv.get(&format!("/runs/{run}/jobs/spew/log")).text();
    assert!(
        page.contains("Showing the end of the log"),
        "the page renders a tail"
    );
    assert!(page.len() < 2 << 20, "page is {} bytes", page.len());
    let raw = srv.get(&format!("/runs/{run}/jobs/spew/log.txt"));
    assert_eq!(raw.body.len(), 52428800);
    assert!(raw.body.starts_with(b"a line of a big log"));
    let grew = srv.peak_rss_kib().saturating_sub(before);
    // 50 MiB read whole would raise the peak by at least 50 MiB.
    assert!(
        grew < 16 * 1024,
        "peak RSS grew by {grew} KiB while serving a 50 MiB log"
    );
}

#[test]
fn sparkwing_web_serves_a_mode_1_state_db_and_names_bad_specs() {
    let (_g, go) = gate();
    let env = dashboard_env(&go);
    std::fs::write(env.dir().join("src.txt"), "v1").unwrap();
    expect_code(&env.run(&["run", "build"]), 0);
    let run = latest_run(&env);
    let db = env.sw_home().join("state.db");
    let srv = Server::web(
        &["--state-spec", &format!("sqlite://{}", db.display())],
        &[],
    );
    assert!(srv.get("/").text().contains(&run));
    assert!(srv
        .get(&format!("/runs/{run}"))
        .text()
        .contains("<svg class=\"dag\""));
    assert!(srv
        .get(&format!("/runs/{run}/jobs/test/log"))
        .text()
        .contains("3 passed"));
    let sync = srv.get("/sync");
    assert_eq!(sync.status, 404, "no outbox behind sparkwing-web");
    assert!(!srv.get("/").text().contains("href=\"/sync\""));

    let web = |args: &[&str], envs: &[(&str, &str)]| {
        std::process::Command::new(crate::web::WEB_BIN)
            .args(args)
            .env_clear()
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    };
    for (args, want) in [
        (
            vec!["--state-spec", "relative/state.db"],
            "--state-spec `relative/state.db` must be an absolute path",
        ),
        (
            vec!["--state-spec", "sqlite:///nonexistent/state.db"],
            "--state-spec: /nonexistent/state.db does not exist",
        ),
        (
            vec!["--state-spec", "/nonexistent/dir"],
            "--state-spec: directory /nonexistent/dir does not exist",
        ),
        (
            vec!["--state-spec", "ftp://x"],
            "--state-spec `ftp://x`: unknown scheme",
        ),
        (
            vec!["--state-spec", "/tmp", "--logs-spec", "sqlite:///x.db"],
            "--logs-spec `sqlite:///x.db`",
        ),
        (
            vec!["--state-spec", "s3://bkt/state"],
            "--state-spec: type s3 needs a region",
        ),
        // Issue 10: a spec's bucket is checked before anything is tried.
        (
            vec!["--state-spec", "/tmp", "--logs-spec", "s3://../../x"],
            "--logs-spec `s3://../../x`: the bucket is not a valid S3 bucket name",
        ),
        (
            vec!["--state-spec", "az://Runs/state"],
            "--state-spec `az://Runs/state`: the bucket is not a valid Azure container name",
        ),
    ] {
        let out = web(&args, &[]);
        expect_code(&out, 2);
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // An unreachable bucket is named at start, with no credential in sight.
    let mut envs = S3_ENV.to_vec();
    envs.push(("SPARKWING_S3_ENDPOINT", "http://127.0.0.1:9"));
    envs.push(("AWS_SECRET_ACCESS_KEY", "hunter2secret"));
    let out = web(
        &["--state-spec", "/tmp", "--logs-spec", "s3://bkt/logs"],
        &envs,
    );
    // Exit 69: a remote that could not be read (not input to fix).
    expect_code(&out, 69);
    let err = text(&out.stderr);
    assert!(
        err.contains("--logs-spec: s3:bkt/logs") && err.contains("cannot be read"),
        "{err}"
    );
    assert!(!err.contains("hunter2secret"));
}

fn shared_project(env: &Env, endpoint: &str, bucket: &str) {
    env.write_project(&format!(
        "profiles:\n  shared:\n    state: {{ type: s3, bucket: {bucket}, prefix: state, endpoint: \"{endpoint}\" }}\n    logs: {{ type: s3, bucket: {bucket}, prefix: logs, endpoint: \"{endpoint}\" }}\n    cache: {{ type: s3, bucket: {bucket}, prefix: cache, endpoint: \"{endpoint}\" }}\npipelines:\n  - name: work\n    jobs:\n      build:\n        cache: {{ key: [seed.txt], outputs: [out] }}\n        steps: [{{ run: 'mkdir -p out && cat seed.txt > out/a.bin' }}]\n      talk:\n        needs: [build]\n        steps: [{{ run: 'echo \"<b>remote</b> line\"' }}]\n"
    ));
    std::fs::write(env.dir().join("seed.txt"), "seed").unwrap();
}

#[test]
fn mode_2_the_dashboard_merges_every_runner_and_sparkwing_web_reads_the_bucket() {
    let Some(moto) = moto() else { return };
    moto.bucket("dash");
    // Runner A delivers; runner B's run stays local (its remote is down).
    let a = Env::new();
    shared_project(&a, &moto.endpoint, "dash");
    let out = a
        .cmd(&["run", "work", "--profile", "shared"])
        .envs(S3_ENV)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let run_a = latest_run(&a);
    let b = Env::new();
    shared_project(&b, &moto.endpoint, "dash");
    let out = b
        .cmd(&[
            "run",
            "work",
            "--profile",
            "shared",
            "--sw-sync-timeout",
            "1s",
        ])
        .envs(S3_ENV)
        .env("SPARKWING_SYNC_FAULTS", "down")
        .output()
        .unwrap();
    expect_code(&out, 0);
    let run_b = latest_run(&b);

    // B's dashboard: A's run from the bucket, B's own marked unsynced.
    let srv = Server::dashboard(&b, &["--profile", "shared"], &S3_ENV);
    let list = srv.get("/").text();
    assert!(list.contains(&run_a) && list.contains(&run_b), "{list}");
    assert!(list.contains("sync-ok\">remote</span>"), "{list}");
    assert!(list.contains("sync-warn\">local only</span>"), "{list}");
    assert!(srv
        .get(&format!("/runs/{run_a}"))
        .text()
        .contains("sync-ok\">remote"));
    let log = srv.get(&format!("/runs/{run_a}/jobs/talk/log")).text();
    assert!(log.contains("&lt;b&gt;remote&lt;/b&gt; line"), "{log}");
    let sync = srv.get("/sync").text();
    assert!(
        sync.contains("s3:dash/state") && sync.contains("Pending"),
        "{sync}"
    );
    drop(srv);

    // sparkwing-web over the bucket alone.
    let mut envs = S3_ENV.to_vec();
    envs.push(("SPARKWING_S3_ENDPOINT", moto.endpoint.as_str()));
    let web = Server::web(
        &[
            "--state-spec",
            "s3://dash/state",
            "--logs-spec",
            "s3://dash/logs",
            "--artifacts-spec",
            "s3://dash/cache",
        ],
        &envs,
    );
    let list = web.get("/").text();
    assert!(list.contains(&run_a) && !list.contains(&run_b), "{list}");
    let detail = web.get(&format!("/runs/{run_a}")).text();
    assert!(
        detail.contains("<svg class=\"dag\"") && detail.contains("cached outputs: 1 file(s)"),
        "{detail}"
    );
    assert!(
        detail.contains("s3:dash/cache"),
        "the manifest comes from the artifacts surface"
    );
    assert!(web
        .get(&format!("/runs/{run_a}/jobs/talk/log"))
        .text()
        .contains("&lt;b&gt;remote&lt;/b&gt; line"));
    let raw = web.get(&format!("/runs/{run_a}/jobs/talk/log.txt"));
    assert_eq!(raw.text(), "<b>remote</b> line\n");
    assert_eq!(
        web.get(&format!("/api/runs/{run_a}")).json()["id"],
        run_a.as_str()
    );
    let page = web.get("/pipelines").text();
    assert!(page.contains("work"), "{page}");
    for (_, secret) in S3_ENV {
        if secret != "us-east-1" {
            assert!(!list.contains(secret) && !detail.contains(secret));
        }
    }
}

#[test]
fn sparkwing_web_reads_a_shared_filesystem_remote_and_says_when_logs_are_missing() {
    let (remote, profiles) = shared_remote();
    let r = remote.path().display();
    let env = Env::with_pipelines(&format!(
        "{profiles}pipelines:\n  - name: hi\n    jobs:\n      say: {{ steps: [{{ run: 'echo shared dir' }}] }}\n"
    ));
    expect_code(&env.run(&["run", "hi", "--profile", "team"]), 0);
    let run = latest_run(&env);
    let state = format!("{r}/state");
    let logs = format!("file://{r}/logs");
    let srv = Server::web(&["--state-spec", &state, "--logs-spec", &logs], &[]);
    assert!(srv.get("/").text().contains(&run));
    assert!(srv
        .get(&format!("/runs/{run}/jobs/say/log"))
        .text()
        .contains("shared dir"));
    assert_eq!(
        srv.get(&format!("/runs/{run}/jobs/say/log.txt")).text(),
        "shared dir\n"
    );
    drop(srv);
    let no_logs = Server::web(&["--state-spec", &state], &[]);
    let page = no_logs.get(&format!("/runs/{run}/jobs/say/log"));
    assert_eq!(page.status, 404);
    assert!(page.text().contains("--logs-spec"), "{}", page.text());
}

#[test]
fn another_runners_running_job_tails_live_from_the_shared_remote() {
    let (_remote, profiles) = shared_remote();
    let (_g, go) = gate();
    let yaml = format!(
        "{profiles}pipelines:\n  - name: live\n    jobs:\n      tail:\n        steps:\n          - run: echo first line; while [ ! -f '{}' ]; do sleep 0.05; done; echo second line\n",
        go.display()
    );
    let a = Env::with_pipelines(&yaml);
    let b = Env::with_pipelines(&yaml);
    let (mut child, run) = start_run(&a, &["run", "live", "--profile", "team"]);
    // B sees A's running job through the remote, with its first line, and
    // a stream to follow (chunk cursor).
    let srv = Server::dashboard(&b, &["--profile", "team"], &[]);
    let page = std::cell::RefCell::new(String::new());
    wait_for(
        "A's first line on B's dashboard",
        Duration::from_secs(30),
        || {
            *page.borrow_mut() = srv.get(&format!("/runs/{run}/jobs/tail/log")).text();
            page.borrow().contains("first line") && page.borrow().contains("log/stream?from=c")
        },
    );
    let page = page.into_inner();
    let from = page
        .split("log/stream?from=")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let mut es = EventStream::open(
        &srv.addr,
        &format!("/runs/{run}/jobs/tail/log/stream?from={from}"),
    );
    std::fs::write(&go, "").unwrap();
    let ev = es.next().unwrap();
    assert_eq!(ev.event, "log", "{ev:?}");
    assert!(
        ev.data.contains("second line") && !ev.data.contains("first line"),
        "{ev:?}"
    );
    assert!(
        ev.id.as_deref().is_some_and(|i| i.starts_with('c')),
        "{ev:?}"
    );
    let end = es.next().unwrap();
    assert_eq!(end.event, "end", "{end:?}");
    assert!(end.data.contains("success"), "{end:?}");
    assert!(child.wait().unwrap().success());
}

/// The dashboard of `env` in the foreground with a 1,024 file limit.
fn dashboard_with_file_limit(env: &Env, nofile: libc::rlim_t) -> Server {
    use std::os::unix::process::CommandExt;
    let mut c = env.cmd(&[
        "dashboard",
        "start",
        "--foreground",
        "--addr",
        "127.0.0.1:0",
    ]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Server::spawn(c)
}

/// Raises this test process's soft file limit to its hard limit; panics if
/// that is below `need`.
fn ensure_own_file_limit(need: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < need && lim.rlim_max > lim.rlim_cur {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= need,
        "this test needs {need} open files; the hard limit is {} (raise it with `ulimit -Hn`)",
        lim.rlim_max
    );
}

/// How many descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until process `pid`'s descriptor count holds still for half a
/// second (the server has taken what it will from its accept queue).
fn wait_for_fds_to_settle(pid: u32) -> usize {
    let mut last = open_fds(pid);
    let mut still = 0;
    wait_for(
        "the server's open files to settle",
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_millis(100));
            let now = open_fds(pid);
            still = if now == last { still + 1 } else { 0 };
            last = now;
            still >= 5
        },
    );
    last
}

/// Issue 10, requirement 6: idle, half-sent requests used to hold every
/// descriptor the process had, and `/healthz` timed out until they closed.
/// The requirement names 1,000 connections; the dashboard itself holds
/// about 15 descriptors, so 1,000 alone leave a few free under 1,024 and
/// the old server answered. 1,100 (the number the issue was found with)
/// exhaust them: the old server then never answered.
#[test]
fn issue_10_healthz_answers_within_a_second_beside_1100_idle_connections_under_a_1024_file_limit() {
    const IDLE: usize = 1100;
    ensure_own_file_limit(IDLE as libc::rlim_t + 200);
    let env = Env::with_pipelines(
        "pipelines:\n  - name: a\n    jobs: { j: { steps: [{ run: 'true' }] } }\n",
    );
    expect_code(&env.run(&["run", "a"]), 0);
    let srv = dashboard_with_file_limit(&env, 1024);
    let half = format!("GET / HTTP/1.1\r\nHost: {}\r\n", srv.addr);
    let idle: Vec<std::net::TcpStream> = (0..IDLE)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
            s.write_all(half.as_bytes()).unwrap();
            s
        })
        .collect();
    let held = wait_for_fds_to_settle(srv.child.id());
    eprintln!("the server holds {held} descriptors beside {IDLE} idle connections");

    let (tx, rx) = std::sync::mpsc::channel();
    let addr = srv.addr.clone();
    let asked = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(request(&addr, "GET", "/healthz", &[], None));
    });
    let got = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_else(|_| {
        panic!(
            "/healthz did not answer within 1 s beside {IDLE} idle connections (the server holds {} descriptors)",
            open_fds(srv.child.id())
        )
    });
    assert_eq!((got.status, got.text().as_str()), (200, "ok\n"));
    eprintln!("/healthz answered in {:?}", asked.elapsed());
    drop(idle);
}

/// A project with one trivial pipeline, for the limits tests.
fn plain_env() -> Env {
    Env::with_pipelines("pipelines:\n  - name: a\n    jobs: { j: { steps: [{ run: 'true' }] } }\n")
}

/// Whether the server closes `s` (EOF or reset) within 30 s without
/// sending anything; panics if it sends bytes or holds the connection.
fn closed_by_server(s: &mut std::net::TcpStream) {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "expected the server to close, got {:?}",
            String::from_utf8_lossy(&b[..n])
        ),
        Err(e) => panic!("the server kept the connection open for 30 s: {e}"),
    }
}

/// One keep-alive `GET` on an open connection: the status and the body.
fn get_on(
    r: &mut std::io::BufReader<std::net::TcpStream>,
    addr: &str,
    path: &str,
) -> (u16, String) {
    use std::io::Read;
    write!(r.get_mut(), "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let (status, headers) = crate::web::read_head(r);
    let n: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .expect("a content-length");
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_half_sent_request_is_closed_after_the_header_timeout_and_a_quiet_one_after_the_idle_timeout() {
    let env = plain_env();
    // A short head timeout and a long idle one.
    let srv = Server::dashboard(
        &env,
        &[],
        &[
            ("SPARKWING_WEB_HEADER_TIMEOUT_MS", "300"),
            ("SPARKWING_WEB_IDLE_TIMEOUT_MS", "600000"),
        ],
    );
    let mut half = std::net::TcpStream::connect(&srv.addr).unwrap();
    write!(half, "GET / HTTP/1.1\r\nHost: {}\r\n", srv.addr).unwrap();
    closed_by_server(&mut half);
    // A keep-alive connection resting between requests is idle, not a slow
    // head: it outlives the head timeout.
    let mut ka = std::io::BufReader::new(std::net::TcpStream::connect(&srv.addr).unwrap());
    assert_eq!(get_on(&mut ka, &srv.addr, "/healthz"), (200, "ok\n".into()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(get_on(&mut ka, &srv.addr, "/healthz"), (200, "ok\n".into()));
    drop(srv);

    // A short idle timeout and a long head one.
    let srv = Server::dashboard(
        &env,
        &[],
        &[
            ("SPARKWING_WEB_HEADER_TIMEOUT_MS", "600000"),
            ("SPARKWING_WEB_IDLE_TIMEOUT_MS", "300"),
        ],
    );
    // A connection that never sends a byte.
    let mut quiet = std::net::TcpStream::connect(&srv.addr).unwrap();
    closed_by_server(&mut quiet);
    // A keep-alive connection after its response.
    let mut ka = std::io::BufReader::new(std::net::TcpStream::connect(&srv.addr).unwrap());
    assert_eq!(get_on(&mut ka, &srv.addr, "/healthz"), (200, "ok\n".into()));
    closed_by_server(ka.get_mut());
    assert_eq!(srv.get("/healthz").status, 200);
}

#[test]
fn at_the_caps_idle_connections_make_room_live_streams_stay_and_extra_streams_get_503() {
    let (_g, go) = gate();
    let env = dashboard_env(&go);
    let (mut child, run) = start_run(&env, &["run", "live"]);
    let srv = Server::dashboard(
        &env,
        &[],
        &[
            ("SPARKWING_WEB_MAX_CONNECTIONS", "4"),
            ("SPARKWING_WEB_MAX_STREAMS", "1"),
            // Only eviction closes an idle connection here.
            ("SPARKWING_WEB_IDLE_TIMEOUT_MS", "600000"),
        ],
    );
    wait_for("the first line", Duration::from_secs(30), || {
        srv.get(&format!("/runs/{run}/jobs/tail/log"))
            .text()
            .contains("first line")
    });
    let stream = format!("/runs/{run}/jobs/tail/log/stream");
    let first = EventStream::open(&srv.addr, &stream);
    assert_eq!(first.status, 200);

    // A second live stream is refused, with when to try again.
    let extra = srv.get(&stream);
    assert_eq!(extra.status, 503, "{}", extra.text());
    assert_eq!(extra.header("retry-after"), Some("10"));
    assert!(
        extra.text().contains("most live log streams (1)"),
        "{}",
        extra.text()
    );

    // A client that goes away gives its place back.
    drop(first);
    let mut es = None;
    wait_for(
        "the stream place to free up",
        Duration::from_secs(30),
        || {
            let e = EventStream::open(&srv.addr, &stream);
            let ok = e.status == 200;
            es = ok.then_some(e);
            ok
        },
    );
    let mut es = es.unwrap();

    // The stream and three idle sockets fill the four places; a fourth idle
    // socket and then /healthz each make the longest-idle one close.
    let mut idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(&srv.addr).unwrap())
        .collect();
    assert_eq!(srv.get("/healthz").text(), "ok\n");
    closed_by_server(&mut idle[0]);

    // The stream was never evicted: it still delivers, to the end.
    std::fs::write(&go, "").unwrap();
    let mut events = Vec::new();
    while let Some(ev) = es.next() {
        events.push((ev.event.clone(), ev.data.contains("second line")));
        if ev.event == "end" {
            break;
        }
    }
    assert!(
        events.contains(&("log".into(), true)) && events.last().is_some_and(|e| e.0 == "end"),
        "{events:?}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn oversized_requests_get_431_414_or_413_and_the_server_keeps_serving() {
    use std::io::Read;
    let env = plain_env();
    let srv = Server::dashboard(&env, &[], &[]);
    // A 40 KiB header, past the 32 KiB head limit. hyper answers 431 and
    // closes; when part of the head was still unread, the close may reach
    // this client as a reset before the answer.
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let big = "a".repeat(40 * 1024);
    let _ = write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
        srv.addr
    );
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {
            let head = String::from_utf8_lossy(&got);
            assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // A 9,000-byte target, past the 8 KiB limit.
    let long = format!("/?q={}", "b".repeat(9000));
    let r = srv.get(&long);
    assert_eq!(r.status, 414, "{}", r.text());
    assert!(r.text().contains("at most 8192"), "{}", r.text());
    // A body, on a server with only GET routes.
    let r = request(&srv.addr, "GET", "/healthz", &[], Some(b"{}"));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("takes no request bodies"), "{}", r.text());
    // Refusals carry the security headers too.
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.header("content-security-policy").is_some());
    assert_eq!(srv.get("/healthz").text(), "ok\n");
}

#[test]
fn shutdown_ends_live_streams_and_closes_idle_and_half_sent_connections() {
    let (_g, go) = gate();
    let env = dashboard_env(&go);
    let (mut child, run) = start_run(&env, &["run", "live"]);
    let mut srv = Server::dashboard(&env, &[], &[]);
    wait_for("the first line", Duration::from_secs(30), || {
        srv.get(&format!("/runs/{run}/jobs/tail/log"))
            .text()
            .contains("first line")
    });
    let mut es = EventStream::open(&srv.addr, &format!("/runs/{run}/jobs/tail/log/stream"));
    assert_eq!(es.status, 200);
    let mut half = std::net::TcpStream::connect(&srv.addr).unwrap();
    write!(half, "GET / HTTP/1.1\r\nHost: {}\r\n", srv.addr).unwrap();
    let mut quiet = std::net::TcpStream::connect(&srv.addr).unwrap();
    // SAFETY: a plain kill(2) on the server we spawned.
    unsafe { libc::kill(srv.child.id() as libc::pid_t, libc::SIGTERM) };
    // The stream ends without an end event (the job still runs).
    while let Some(ev) = es.next() {
        assert_ne!(ev.event, "end", "{ev:?}");
    }
    closed_by_server(&mut half);
    closed_by_server(&mut quiet);
    wait_for("the server to exit", Duration::from_secs(10), || {
        srv.child.try_wait().unwrap().is_some()
    });
    std::fs::write(&go, "").unwrap();
    assert!(child.wait().unwrap().success());
}
