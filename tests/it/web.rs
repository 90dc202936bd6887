//! Helpers for the dashboard tests: the real server processes, a plain
//! HTTP/1.1 client over TCP, and a small WebDriver client for Debian's
//! chromedriver + headless chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{free_port, wait_for, Env};

pub const WEB_BIN: &str = env!("CARGO_BIN_EXE_sparkwing-web");

/// A server process (dashboard --foreground or sparkwing-web), killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
}

impl Server {
    /// Spawns `cmd` (which listens on 127.0.0.1:0) and reads its URL from
    /// the first line of its stdout.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let Some(start) = line.find("http://") else {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the server did not print its URL: {line:?} / {err}");
        };
        let base = line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        let addr = base.trim_start_matches("http://").to_string();
        Server { child, base, addr }
    }

    /// The dashboard of `env` in the foreground on a free port.
    pub fn dashboard(env: &Env, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut args = vec![
            "dashboard",
            "start",
            "--foreground",
            "--addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut c = env.cmd(&args);
        c.envs(envs.iter().copied());
        Server::spawn(c)
    }

    pub fn web(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut c = Command::new(WEB_BIN);
        c.args(args)
            .args(["--addr", "127.0.0.1:0"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(envs.iter().copied())
            .stdin(Stdio::null());
        Server::spawn(c)
    }

    pub fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[], None)
    }

    /// The server's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

/// One HTTP/1.1 request with `Connection: close`; handles chunked bodies.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: application/json\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        s.write_all(b).unwrap();
    }
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..]).unwrap();
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).unwrap();
        }
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body).unwrap();
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Response {
        status,
        headers,
        body,
    }
}

/// A server-sent-events connection, read event by event.
pub struct EventStream {
    r: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone)]
pub struct Event {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl EventStream {
    pub fn open(addr: &str, path: &str) -> EventStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        EventStream { r, status, headers }
    }

    /// The next event (skipping comments), or `None` at the end of the body.
    /// The body is chunked: chunk-size lines are recognised and skipped.
    pub fn next(&mut self) -> Option<Event> {
        let mut ev = Event::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            // Chunk framing: a hex size line (or the terminating 0).
            if !line.is_empty()
                && !line.contains(':')
                && line.bytes().all(|b| b.is_ascii_hexdigit())
            {
                if line == "0" {
                    return None;
                }
                continue;
            }
            if line.is_empty() {
                if any {
                    return Some(ev);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            any = true;
            match line.split_once(": ") {
                Some(("event", v)) => ev.event = v.to_string(),
                Some(("id", v)) => ev.id = Some(v.to_string()),
                Some(("data", v)) => ev.data.push_str(v),
                _ => {}
            }
        }
    }
}

/// A sparkwing project with the pipelines the dashboard tests use. `gate`
/// is a file the `live` pipeline waits for between its two lines.
pub fn dashboard_env(gate: &Path) -> Env {
    Env::with_pipelines(&format!(
        "pipelines:
  - name: build
    description: Compile and test
    jobs:
      compile:
        cache: {{ key: [src.txt], outputs: [out] }}
        steps:
          - run: mkdir -p out && cp src.txt out/app
      test:
        needs: [compile]
        steps:
          - run: printf '\\033[32mok\\033[0m 3 passed\\n'
          - run: echo '<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> & done'
  - name: live
    jobs:
      tail:
        steps:
          - run: echo first line; while [ ! -f '{}' ]; do sleep 0.05; done; echo second line
",
        gate.display()
    ))
}

/// Starts `args` (a run) in the background and waits until its run is
/// recorded; returns the process and the run ID.
pub fn start_run(env: &Env, args: &[&str]) -> (Child, String) {
    let child = env.cmd(args).spawn().unwrap();
    wait_for("the run to be recorded", Duration::from_secs(30), || {
        env.run(&["runs", "list", "-o", "json"]).stdout.len() > 10
    });
    let run = latest_run(env);
    (child, run)
}

/// A shared directory remote, mounted (its state, logs and cache exist),
/// and the profiles block of a profile `team` that writes there.
pub fn shared_remote() -> (tempfile::TempDir, String) {
    let remote = tempfile::tempdir().unwrap();
    for d in ["state", "logs", "cache"] {
        std::fs::create_dir(remote.path().join(d)).unwrap();
    }
    let r = remote.path().display();
    let profiles = format!(
        "profiles:\n  team:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache }}\n"
    );
    (remote, profiles)
}

/// The ID of the newest run of `env`.
pub fn latest_run(env: &Env) -> String {
    let v = env.json(&["runs", "list", "-o", "json", "--limit", "1"]);
    v[0]["id"].as_str().unwrap().to_string()
}

/// Whether the browser tests can run: chromium and chromedriver installed.
/// Under CI=true their absence fails (the test command installs them).
pub fn browser_available() -> bool {
    let ok = Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium and chromedriver are not installed; `bash scripts/test.sh` installs them (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "skipped: chromium/chromedriver not installed (`bash scripts/test.sh` installs them)"
        );
    }
    ok
}

/// Where screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A headless Chromium session through chromedriver (W3C WebDriver).
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let addr = format!("127.0.0.1:{port}");
        wait_for("chromedriver to listen", Duration::from_secs(30), || {
            TcpStream::connect(&addr).is_ok()
        });
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", profile.path().display())],
            }
        }}});
        let r = request(
            &addr,
            "POST",
            "/session",
            &[],
            Some(caps.to_string().as_bytes()),
        );
        let v = r.json();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        let b = body.map(|b| b.to_string());
        let r = request(&self.addr, method, &p, &[], b.as_deref().map(str::as_bytes));
        let v = r.json();
        if r.status != 200 {
            panic!("WebDriver {method} {path}: {}", v);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_string()
    }

    /// Runs a script in the page and returns its result.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Clicks the first element matching a CSS selector.
    pub fn click(&self, css: &str) {
        let el = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Waits until `script` returns true in the page.
    pub fn wait_until(&self, what: &str, script: &str) {
        let start = Instant::now();
        while self.eval(script) != json!(true) {
            if start.elapsed() > Duration::from_secs(30) {
                panic!("browser: gave up waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG screenshot under target/screenshots/NAME.png.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let p = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        p
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
