//! The dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver by chromedriver. Screenshots land in target/screenshots/.

use serde_json::json;

use crate::util::{expect_code, moto, Env, S3_ENV};
use crate::web::{
    browser_available, dashboard_env, latest_run, start_run, Browser, EventStream, Server,
};

#[test]
fn browser_runs_list_opens_a_run_and_renders_log_markup_as_text() {
    if !browser_available() {
        return;
    }
    let gate = tempfile::tempdir().unwrap();
    let env = dashboard_env(&gate.path().join("go"));
    std::fs::write(env.dir().join("src.txt"), "v1").unwrap();
    expect_code(&env.run(&["run", "build"]), 0);
    expect_code(&env.run(&["run", "build"]), 0);
    let run = latest_run(&env);
    let srv = Server::dashboard(&env, &[], &[]);
    let b = Browser::start(1280, 900);

    b.goto(&format!("{}/", srv.base));
    b.wait_until(
        "the runs table",
        "return document.querySelectorAll('table.runs tbody tr').length === 2",
    );
    assert_eq!(
        b.eval("return document.querySelector('table.runs tbody tr .st').textContent"),
        json!("✓ success")
    );
    b.screenshot("runs-list");

    // Open the newest run by clicking it.
    b.click("table.runs tbody tr:first-child a");
    b.wait_until("the run page", "return !!document.querySelector('svg.dag')");
    assert!(b.url().ends_with(&format!("/runs/{run}")), "{}", b.url());
    assert_eq!(
        b.eval("return document.querySelectorAll('svg.dag g.node').length"),
        json!(2)
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('svg.dag path.edge').length"),
        json!(1)
    );
    let restored = b.eval("return document.querySelector('#job-compile .cache').textContent");
    assert!(
        restored.as_str().unwrap().contains("restored from run"),
        "{restored}"
    );
    b.screenshot("run-detail");

    // The step text and the log line hold markup: shown as text, never run.
    b.goto(&format!("{}/runs/{run}/jobs/test/log", srv.base));
    b.wait_until(
        "the log",
        "return document.getElementById('log').textContent.includes('& done')",
    );
    let shown = b.eval("return document.getElementById('log').textContent");
    assert!(
        shown.as_str().unwrap().contains(
            "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> & done"
        ),
        "{shown}"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('#log script, #log img').length"),
        json!(0)
    );
    assert_eq!(b.eval("return typeof window.__pwned"), json!("undefined"));
    // ANSI green is a class, rendered in colour.
    assert_eq!(
        b.eval("return document.querySelector('#log .f2').textContent"),
        json!("ok")
    );
    b.screenshot("log-escaped");
    b.goto(&format!("{}/runs/{run}", srv.base));
    b.wait_until("the run page", "return !!document.querySelector('svg.dag')");
    assert_eq!(b.eval("return typeof window.__pwned"), json!("undefined"));

    // Phone-sized: the page fits without sideways scrolling of the body.
    let phone = Browser::start(390, 844);
    phone.goto(&format!("{}/", srv.base));
    phone.wait_until(
        "the runs table",
        "return document.querySelectorAll('table.runs tbody tr').length === 2",
    );
    assert_eq!(
        phone.eval("return document.documentElement.scrollWidth <= window.innerWidth"),
        json!(true)
    );
    phone.screenshot("runs-list-phone");
}

#[test]
fn browser_watches_a_log_line_of_a_running_job_appear_live() {
    if !browser_available() {
        return;
    }
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let env = dashboard_env(&go);
    let (mut child, run) = start_run(&env, &["run", "live"]);
    let srv = Server::dashboard(&env, &[], &[]);
    let b = Browser::start(1280, 800);
    b.goto(&format!("{}/runs/{run}/jobs/tail/log", srv.base));
    b.wait_until(
        "the first line",
        "return document.getElementById('log').textContent.includes('first line')",
    );
    // A marker that a page reload would wipe.
    b.eval("window.__same_page = true; return true");
    assert_eq!(
        b.eval("return document.getElementById('log').textContent.includes('second line')"),
        json!(false)
    );
    std::fs::write(&go, "").unwrap();
    b.wait_until(
        "the second line, live",
        "return document.getElementById('log').textContent.includes('second line')",
    );
    b.wait_until(
        "the end notice",
        "return document.getElementById('log-state').textContent.includes('ended')",
    );
    assert_eq!(
        b.eval("return window.__same_page === true"),
        json!(true),
        "no reload"
    );
    b.screenshot("log-live");
    assert!(child.wait().unwrap().success());
}

#[test]
fn browser_log_tail_waits_out_a_busy_dashboard_then_goes_live() {
    if !browser_available() {
        return;
    }
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let env = dashboard_env(&go);
    let (mut child, run) = start_run(&env, &["run", "live"]);
    let srv = Server::dashboard(&env, &[], &[("SPARKWING_WEB_MAX_STREAMS", "1")]);
    // This test holds the one stream place, so the page's stream gets 503.
    let held = EventStream::open(&srv.addr, &format!("/runs/{run}/jobs/tail/log/stream"));
    assert_eq!(held.status, 200);
    let b = Browser::start(1280, 800);
    b.goto(&format!("{}/runs/{run}/jobs/tail/log", srv.base));
    b.wait_until(
        "the busy notice",
        "return document.getElementById('log-state').textContent.includes('busy')",
    );
    b.eval("window.__same_page = true; return true");
    drop(held);
    // The page retries after 10 s and picks up from where it stood.
    b.wait_until(
        "the tail to go live again",
        "return document.getElementById('log-state').textContent.includes('live:')",
    );
    std::fs::write(&go, "").unwrap();
    b.wait_until(
        "the second line, live",
        "return document.getElementById('log').textContent.includes('second line')",
    );
    b.wait_until(
        "the end notice",
        "return document.getElementById('log-state').textContent.includes('ended')",
    );
    let log = b.eval("return document.getElementById('log').textContent");
    assert_eq!(
        log.as_str().unwrap().matches("first line").count(),
        1,
        "nothing shown twice: {log}"
    );
    assert_eq!(b.eval("return window.__same_page === true"), json!(true));
    assert!(child.wait().unwrap().success());
}

#[test]
fn browser_reads_a_mode_2_bucket_through_sparkwing_web() {
    if !browser_available() {
        return;
    }
    let Some(moto) = moto() else { return };
    moto.bucket("browse");
    let env = Env::new();
    env.write_project(&format!(
        "profiles:\n  shared:\n    state: {{ type: s3, bucket: browse, prefix: state, endpoint: \"{e}\" }}\n    logs: {{ type: s3, bucket: browse, prefix: logs, endpoint: \"{e}\" }}\n    cache: {{ type: s3, bucket: browse, prefix: cache, endpoint: \"{e}\" }}\npipelines:\n  - name: ship\n    jobs:\n      build: {{ steps: [{{ run: 'echo built' }}] }}\n      publish:\n        needs: [build]\n        steps: [{{ run: 'printf \"\\\\033[1;34mpublished\\\\033[0m to <the bucket>\\\\n\"' }}]\n",
        e = moto.endpoint
    ));
    let out = env
        .cmd(&["run", "ship", "--profile", "shared"])
        .envs(S3_ENV)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let run = latest_run(&env);
    let mut envs = S3_ENV.to_vec();
    envs.push(("SPARKWING_S3_ENDPOINT", moto.endpoint.as_str()));
    let web = Server::web(
        &[
            "--state-spec",
            "s3://browse/state",
            "--logs-spec",
            "s3://browse/logs",
            "--artifacts-spec",
            "s3://browse/cache",
        ],
        &envs,
    );
    let b = Browser::start(1280, 800);
    b.goto(&format!("{}/", web.base));
    b.wait_until(
        "the remote run",
        "return document.querySelectorAll('table.runs tbody tr').length === 1",
    );
    assert_eq!(
        b.eval("return document.querySelector('table.runs tbody tr td:nth-child(7)').textContent"),
        json!("remote")
    );
    b.screenshot("mode2-runs-list");
    b.click("table.runs tbody tr a");
    b.wait_until(
        "the run page",
        "return document.querySelectorAll('svg.dag g.node').length === 2",
    );
    assert!(b.url().ends_with(&format!("/runs/{run}")));
    b.click("#job-publish h3 a");
    b.wait_until(
        "the remote log",
        "return document.getElementById('log').textContent.includes('published to <the bucket>')",
    );
    assert_eq!(
        b.eval("return document.querySelector('#log span.f4.bo').textContent"),
        json!("published")
    );
    b.screenshot("mode2-log");
}

#[test]
fn browser_sees_a_running_run_finish_without_reloading() {
    if !browser_available() {
        return;
    }
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let env = dashboard_env(&go);
    let (mut child, run) = start_run(&env, &["run", "live"]);
    let srv = Server::dashboard(&env, &[], &[]);
    let b = Browser::start(1280, 800);
    b.goto(&format!("{}/runs/{run}", srv.base));
    b.wait_until(
        "the running badge",
        "return document.querySelector('h1 .st').textContent.includes('running')",
    );
    b.eval("window.__same_page = true; return true");
    std::fs::write(&go, "").unwrap();
    b.wait_until(
        "the success badge",
        "return document.querySelector('h1 .st').textContent.includes('success')",
    );
    assert_eq!(
        b.eval("return document.querySelector('#job-tail .st').textContent"),
        json!("✓ success")
    );
    assert_eq!(
        b.eval("return window.__same_page === true"),
        json!(true),
        "no reload"
    );
    assert!(child.wait().unwrap().success());
}
