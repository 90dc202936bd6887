//! Helpers: a throwaway HOME and project, and the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sparkwing");

pub struct Env {
    pub home: tempfile::TempDir,
    pub project: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
        }
    }

    /// An Env whose project holds `yaml` as its sparkwing.yaml.
    pub fn with_pipelines(yaml: &str) -> Env {
        let env = Env::new();
        env.write_project(yaml);
        env
    }

    pub fn write_project(&self, yaml: &str) {
        std::fs::create_dir_all(self.project.path().join(".sparkwing")).unwrap();
        std::fs::write(self.project.path().join(".sparkwing/sparkwing.yaml"), yaml).unwrap();
    }

    pub fn dir(&self) -> &Path {
        self.project.path()
    }

    /// `~/.sparkwing` of the temporary HOME.
    pub fn sw_home(&self) -> PathBuf {
        self.home.path().join(".sparkwing")
    }

    /// The user profile file's default location under the temporary HOME.
    pub fn write_user_profiles(&self, yaml: &str) -> PathBuf {
        let p = self.home.path().join(".config/sparkwing/profiles.yaml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, yaml).unwrap();
        p
    }

    /// The binary with a clean environment: only PATH and the temp HOME.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.project.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and parses stdout as JSON, failing loudly otherwise.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&out.stdout)))
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts an exit code, showing both streams when it differs.
#[track_caller]
pub fn expect_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("gave up waiting for {what} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); check /proc for its state too.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if stat.is_empty() {
        return false;
    }
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("");
    state != "Z" && state != "X"
}

/// The PID a step wrote to `path`, once the write is complete: the shell
/// creates the file before it writes the number, so a file that merely
/// exists may still be empty.
pub fn read_pid(path: &Path) -> i32 {
    let mut pid = 0;
    wait_for(
        &format!("a PID in {}", path.display()),
        Duration::from_secs(30),
        || match std::fs::read_to_string(path) {
            Ok(text) if text.ends_with('\n') => {
                pid = text.trim().parse().expect("a PID file holds a number");
                true
            }
            _ => false,
        },
    );
    pid
}

/// The jobs of `runs show RUN -o json`, by name.
pub fn jobs_of(env: &Env, run: &str) -> serde_json::Map<String, serde_json::Value> {
    let v = env.json(&["runs", "show", run, "-o", "json"]);
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}

/// A real S3-protocol server (moto) for one test, on a free port, killed
/// on drop. `None` (after saying why) when moto is not installed and this
/// is not CI; under `CI=true` a missing moto is a failure.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SPARKWING_TEST_MOTO") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    local.exists().then_some(local)
}

pub fn moto() -> Option<Moto> {
    let Some(bin) = moto_binary() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("moto_server is not installed; `bash scripts/test.sh` provisions it (.venv)");
        }
        eprintln!("skipped: moto_server not found (run `bash scripts/test.sh` to provision it)");
        return None;
    };
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let m = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    wait_for("moto_server to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(m)
}

impl Moto {
    /// Creates a bucket with a plain `PUT /bucket`.
    pub fn bucket(&self, name: &str) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {resp}"
        );
    }
}

/// The environment a client of the test S3 server needs.
pub const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// A TCP proxy in front of a server, with an on/off switch: while off, it
/// accepts connections and drops them at once (a reset, like an outage).
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let flag = up.clone();
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let open2 = open.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                open2.lock().unwrap().push(client.try_clone().unwrap());
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy { port, up, open }
    }

    /// Off also cuts every connection already open (clients pool them).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for c in self.open.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// What the HTTP fault proxy does to the next requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    SlowDown503,
    Internal500,
    TooMany429,
    /// 429 with `Retry-After: 60`.
    TooMany429Wait60,
    Forbidden403,
    BadRequest400,
    NotImplemented501,
    /// S3's `400 RequestTimeout` (the socket was idle too long): a
    /// transient failure that S3 answers with a 400.
    RequestTimeout400,
    /// S3's answer to a bucket in another region: `301 PermanentRedirect`
    /// without a `Location` header.
    WrongRegion301,
    /// Forward the request, then cut the response in the middle of its body.
    ResetMidBody,
}

/// An HTTP/1.1 proxy in front of the S3 server that answers the next N
/// requests with an injected fault (every request while `always` is set).
pub struct FaultProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<(Option<Fault>, usize, bool)>>,
    pub injected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn read_request(c: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = c.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    // One request per upstream connection.
    let text = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut out: Vec<u8> = text
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect();
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&buf[header_end..]);
    Some(out)
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new((None, 0usize, false)));
        let injected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let (st, inj) = (state.clone(), injected.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let (st, inj, upstream) = (st.clone(), inj.clone(), upstream.clone());
                std::thread::spawn(move || {
                    // Keep-alive: serve requests on this connection until it closes.
                    while let Some(req) = read_request(&mut client) {
                        let fault = {
                            let mut s = st.lock().unwrap();
                            match s.0 {
                                Some(f) if s.2 || s.1 > 0 => {
                                    if !s.2 {
                                        s.1 -= 1;
                                    }
                                    Some(f)
                                }
                                _ => None,
                            }
                        };
                        if fault.is_some() {
                            inj.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        let canned = |status: &str, extra: &str, body: &str| {
                            format!("HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len())
                        };
                        let resp = match fault {
                            Some(Fault::SlowDown503) => canned("503 Service Unavailable", "", "<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"),
                            Some(Fault::Internal500) => canned("500 Internal Server Error", "", "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"),
                            Some(Fault::TooMany429) => canned("429 Too Many Requests", "Retry-After: 1\r\n", "<Error><Code>TooManyRequests</Code><Message>Slow down</Message></Error>"),
                            Some(Fault::TooMany429Wait60) => canned("429 Too Many Requests", "Retry-After: 60\r\n", "<Error><Code>TooManyRequests</Code><Message>Slow down</Message></Error>"),
                            Some(Fault::Forbidden403) => canned("403 Forbidden", "", "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"),
                            Some(Fault::BadRequest400) => canned("400 Bad Request", "", "<Error><Code>InvalidRequest</Code><Message>invalid uploadType</Message></Error>"),
                            Some(Fault::NotImplemented501) => canned("501 Not Implemented", "", "<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>"),
                            Some(Fault::RequestTimeout400) => canned("400 Bad Request", "", "<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.</Message></Error>"),
                            Some(Fault::WrongRegion301) => canned("301 Moved Permanently", "", "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>"),
                            Some(Fault::ResetMidBody) | None => {
                                let Ok(mut up) = std::net::TcpStream::connect(&upstream) else { return };
                                if up.write_all(&req).is_err() {
                                    return;
                                }
                                let mut resp = Vec::new();
                                let _ = std::io::Read::read_to_end(&mut up, &mut resp);
                                if fault == Some(Fault::ResetMidBody) {
                                    // Headers and half the body, then the connection drops.
                                    let cut = resp.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(0);
                                    let keep = cut + (resp.len() - cut) / 2;
                                    let _ = client.write_all(&resp[..keep.max(1)]);
                                    let _ = client.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                let _ = client.write_all(&resp);
                                // The upstream answered "Connection: close".
                                let _ = client.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                        };
                        if client.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FaultProxy {
            port,
            state,
            injected,
        }
    }

    /// The next `n` requests get `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        *self.state.lock().unwrap() = (Some(fault), n, false);
    }

    /// Every request gets `fault` until cleared.
    pub fn fail_always(&self, fault: Option<Fault>) {
        *self.state.lock().unwrap() = (fault, 0, fault.is_some());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Whether a user and mount namespace can be made (`unshare -rm`), for
/// tests that need a small filesystem (tmpfs) or a read-only mount without
/// root. `false` (after saying why) when not; under `CI=true` their absence
/// is a failure.
pub fn namespaces_available() -> bool {
    let ok = Command::new("unshare")
        .args(["-rm", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("`unshare -rm` (util-linux, unprivileged user namespaces) is unavailable; the disk-full and read-only tests need it");
        }
        eprintln!(
            "skipped: `unshare -rm` is unavailable (util-linux, unprivileged user namespaces)"
        );
    }
    ok
}

/// `script` run by `sh` in a new user and mount namespace (mounts made there
/// vanish with it), in the project, with the binary as `$SW`, the temporary
/// HOME, and `SPARKWING_HOME` set to `home`.
pub fn in_namespace(env: &Env, home: &Path, script: &str) -> Output {
    Command::new("unshare")
        .args(["-rm", "sh", "-c", script])
        .current_dir(env.dir())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.home.path())
        .env("SPARKWING_HOME", home)
        .env("SW", BIN)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A scaled-down mix of the cache workloads of issue 13 under `dir/data`:
/// W1's many small files (half compressible text, half random bytes, of
/// 200 B–9 KiB), W2's large file (6 MiB, cut into chunks), an empty file,
/// an executable and a symlink. Deterministic: `edit` > 0 changes 1% of
/// the small files (4 of 400) and nothing else.
pub fn write_workload(dir: &Path, edit: u64) {
    use std::os::unix::fs::PermissionsExt;
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("small")).unwrap();
    let gen = |seed: u64, n: usize, text: bool| -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if text {
                    b"fn main() { let x = 1; }\n"[(x % 25) as usize]
                } else {
                    x as u8
                }
            })
            .collect()
    };
    for i in 0..400u64 {
        let mut body = gen(i + 1, 200 + (i as usize * 211) % 9000, i % 2 == 0);
        if edit > 0 && i % 100 == 7 {
            body.extend_from_slice(format!("edit {edit}\n").as_bytes());
        }
        std::fs::write(data.join("small").join(format!("{i:03}.rs")), body).unwrap();
    }
    std::fs::write(data.join("big.bin"), gen(999, 6 << 20, false)).unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();
    let tool = data.join("tool");
    std::fs::write(&tool, b"#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o750)).unwrap();
    let _ = std::fs::remove_file(data.join("link"));
    std::os::unix::fs::symlink("big.bin", data.join("link")).unwrap();
}

/// The pipeline that caches the workload: `out` is a copy of `data`.
pub const WORKLOAD_PIPELINE: &str = r#"pipelines:
  - name: packs
    jobs:
      copy:
        cache: { key: ['data/**'], outputs: [out] }
        steps:
          - run: echo computed >> computed.txt && rm -rf out && cp -a data out
"#;

/// Every entry under `a` equals the one under `b`: the same relative
/// paths, kinds, bytes, permission bits and symlink targets.
pub fn assert_same_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String, Vec<u8>, u32)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let to = std::fs::read_link(&p).unwrap();
                out.push((
                    rel,
                    "link".into(),
                    to.to_string_lossy().as_bytes().to_vec(),
                    0,
                ));
            } else if meta.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((rel, "file".into(), std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    walk(a, a, &mut x);
    walk(b, b, &mut y);
    assert!(!x.is_empty(), "{} is empty", a.display());
    assert_eq!(x.len(), y.len(), "{} vs {}", a.display(), b.display());
    for (l, r) in x.iter().zip(&y) {
        assert!(
            l == r,
            "{} differs: {:?} {} bytes mode {:o} vs {:?} {} bytes mode {:o}",
            l.0,
            l.1,
            l.2.len(),
            l.3,
            r.1,
            r.2.len(),
            r.3
        );
    }
}
