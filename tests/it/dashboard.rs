//! The dashboard over HTTP: `sparkwing dashboard start/status/stop`, every
//! page and stream of the dashboard and of `sparkwing-web`, escaping, live
//! tails, big logs, and the Mode 2 merged view against a real S3 server.

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
    expect_code(&out, 2);
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
