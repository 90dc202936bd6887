//! `sparkwing dashboard start | status | stop`: the dashboard of
//! [`crate::web`] for this machine, run in the background.
//!
//! One dashboard per `SPARKWING_HOME`. The server process records itself in
//! `SPARKWING_HOME/dashboard.json` (pid, URL, profile) once it listens, and
//! removes the file when it stops; its output goes to `dashboard.log`.
//! `start` is idempotent: a live dashboard is reported, not doubled (a lock
//! file keeps two concurrent `start`s from racing).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::profile::{self, Request};
use crate::util::{now_ms, pid_alive, rfc3339_ms, write_atomic};
use crate::web::source::{LocalParts, Source};

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4343";
/// How long `start` waits for the background server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn state_file(home: &Path) -> PathBuf {
    home.join("dashboard.json")
}

fn log_file(home: &Path) -> PathBuf {
    home.join("dashboard.log")
}

/// What `start` was asked for.
#[derive(Debug, Clone)]
pub struct StartArgs {
    pub addr: Option<String>,
    pub profile: Option<String>,
    pub foreground: bool,
}

pub fn parse_addr(raw: &str) -> Result<SocketAddr> {
    raw.parse().map_err(|_| {
        anyhow!("--addr `{raw}` is not IP:PORT; e.g. 127.0.0.1:4343 (or 0.0.0.0:4343 to listen on every interface)")
    })
}

/// A running dashboard, as recorded in `dashboard.json`.
fn running(home: &Path) -> Option<Value> {
    let body = std::fs::read(state_file(home)).ok()?;
    let v: Value = serde_json::from_slice(&body).ok()?;
    let pid = v["pid"].as_i64()?;
    if pid_alive(pid) {
        Some(v)
    } else {
        // A dashboard that died without cleaning up.
        let _ = std::fs::remove_file(state_file(home));
        None
    }
}

/// `GET /healthz` over plain TCP (the server answers loopback by name).
fn healthy(addr: SocketAddr) -> bool {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.take(4096).read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

fn resolve(
    project_flag: Option<&Path>,
    name: Option<&str>,
) -> Result<(profile::Resolved, Option<crate::run::pipeline::Project>)> {
    let project = crate::run::pipeline::optional_project(project_flag)?;
    let resolved = crate::run::pipeline::resolve_profile(
        project.as_ref(),
        &Request {
            flag: name,
            pipeline: None,
            local_only_flag: false,
        },
    )?;
    Ok((resolved, project))
}

/// `sparkwing dashboard start`.
pub fn start(home: &Path, project_flag: Option<&Path>, args: &StartArgs) -> Result<u8> {
    let addr = parse_addr(args.addr.as_deref().unwrap_or(DEFAULT_ADDR))?;
    // Resolve now so a bad profile is reported here, not in a log file.
    let (resolved, project) = resolve(project_flag, args.profile.as_deref())?;
    if args.foreground {
        return foreground(home, addr, resolved, project);
    }
    std::fs::create_dir_all(home)
        .with_context(|| format!("creating SPARKWING_HOME {}", home.display()))?;
    let _lock = lock(home)?;
    if let Some(v) = running(home) {
        let url = v["url"].as_str().unwrap_or_default();
        let prof = v["profile"].as_str().unwrap_or_default();
        let addr_differs = args.addr.is_some() && v["addr"].as_str() != Some(&addr.to_string());
        if addr_differs || prof != resolved.name {
            bail!(
                "a dashboard is already running at {url} for profile \"{prof}\" (pid {}); stop it with `sparkwing dashboard stop` to start one at {addr} for profile \"{}\"",
                v["pid"], resolved.name
            );
        }
        println!(
            "dashboard already running at {url} (profile \"{prof}\", pid {})",
            v["pid"]
        );
        return Ok(0);
    }
    let exe = std::env::current_exe().context("finding the sparkwing binary")?;
    let log = std::fs::File::create(log_file(home))
        .with_context(|| format!("creating {}", log_file(home).display()))?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(p) = project_flag {
        cmd.arg("--project").arg(p);
    }
    cmd.args([
        "dashboard",
        "start",
        "--foreground",
        "--addr",
        &addr.to_string(),
    ]);
    if let Some(p) = &args.profile {
        cmd.args(["--profile", p]);
    }
    cmd.env("SPARKWING_HOME", home)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; the child leaves our session
        // so closing this terminal does not stop it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("starting the dashboard process")?;
    let pid = child.id() as i64;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(st) = child.try_wait()? {
            let log = std::fs::read_to_string(log_file(home)).unwrap_or_default();
            let last: Vec<&str> = log.lines().rev().take(5).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            bail!(
                "the dashboard exited at start ({st}):\n{}\n(full output in {})",
                last.join("\n"),
                log_file(home).display()
            );
        }
        if let Some(v) = running(home).filter(|v| v["pid"].as_i64() == Some(pid)) {
            let bound = v["addr"].as_str().and_then(|a| a.parse().ok());
            if bound.is_some_and(healthy) {
                println!(
                    "dashboard running at {} (profile \"{}\", pid {pid}); stop it with `sparkwing dashboard stop`",
                    v["url"].as_str().unwrap_or_default(),
                    resolved.name
                );
                return Ok(0);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the dashboard did not answer within {}s; see {}",
                START_TIMEOUT.as_secs(),
                log_file(home).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An exclusive lock on `dashboard.lock` for the duration of a start.
fn lock(home: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.join("dashboard.lock"))?;
    // SAFETY: a plain flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("locking {}", home.join("dashboard.lock").display());
    }
    Ok(f)
}

fn foreground(
    home: &Path,
    addr: SocketAddr,
    resolved: profile::Resolved,
    project: Option<crate::run::pipeline::Project>,
) -> Result<u8> {
    let remote = crate::remote::remote_of(&resolved)?;
    let limits = crate::web::Limits::from_env()?;
    let rt = crate::util::runtime()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!("cannot listen on {addr}: the address is in use (another dashboard? see `sparkwing dashboard status`); pass --addr 127.0.0.1:PORT for another port")
        } else {
            anyhow!("cannot listen on {addr}: {e}")
        }
    })?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        crate::say!("sparkwing: warning: listening on {bound}, reachable from other machines; the dashboard is read-only and has no login");
    }
    let src = Source::local(
        LocalParts {
            home: home.to_path_buf(),
            profile: resolved.name.clone(),
            remote,
            project,
        },
        rt.handle().clone(),
    )?;
    let url = crate::web::url_of(if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    });
    let me = std::process::id() as i64;
    let state = json!({
        "pid": me, "url": url, "addr": bound.to_string(), "profile": resolved.name,
        "started_at": rfc3339_ms(now_ms()),
    });
    write_atomic(&state_file(home), format!("{state:#}\n").as_bytes())
        .with_context(|| format!("writing {}", state_file(home).display()))?;
    println!(
        "sparkwing dashboard: {url} (profile \"{}\"); Ctrl-C to stop",
        resolved.name
    );
    let _ = std::io::stdout().flush();
    tracing::info!(url = %url, profile = %resolved.name, pid = me, "dashboard serving");
    let result = rt.block_on(async move {
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        crate::web::serve(listener, Arc::new(src), limits, shutdown).await
    });
    // Remove the record only if it is still ours.
    if running(home).is_some_and(|v| v["pid"].as_i64() == Some(me)) {
        let _ = std::fs::remove_file(state_file(home));
    }
    result?;
    println!("sparkwing dashboard: stopped");
    Ok(0)
}

/// `sparkwing dashboard status`: 0 when running, 3 when not.
pub fn status(home: &Path, json_out: bool) -> Result<u8> {
    let v = running(home);
    let healthy = v
        .as_ref()
        .and_then(|v| v["addr"].as_str()?.parse().ok())
        .is_some_and(healthy);
    if json_out {
        let out = match &v {
            Some(v) => json!({
                "running": true, "responding": healthy, "url": v["url"], "pid": v["pid"],
                "profile": v["profile"], "started_at": v["started_at"],
                "log": log_file(home),
            }),
            None => json!({ "running": false, "log": log_file(home) }),
        };
        println!("{out:#}");
    } else {
        match &v {
            Some(v) => println!(
                "dashboard running at {} (profile \"{}\", pid {}, since {}){}",
                v["url"].as_str().unwrap_or_default(),
                v["profile"].as_str().unwrap_or_default(),
                v["pid"],
                v["started_at"].as_str().unwrap_or_default(),
                if healthy {
                    ""
                } else {
                    "; it is not answering: see the log, or restart it with `sparkwing dashboard stop` and `start`"
                }
            ),
            None => println!("dashboard not running; start it with `sparkwing dashboard start`"),
        }
    }
    Ok(if v.is_some() { 0 } else { 3 })
}

/// `sparkwing dashboard stop`: SIGTERM, then SIGKILL after 10 s.
pub fn stop(home: &Path) -> Result<u8> {
    let Some(v) = running(home) else {
        println!("dashboard not running");
        return Ok(0);
    };
    let pid = v["pid"].as_i64().unwrap_or(0) as libc::pid_t;
    if pid <= 0 {
        bail!(
            "{} names no valid pid; delete it",
            state_file(home).display()
        );
    }
    // SAFETY: a plain kill(2) on the recorded pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid as i64) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid as i64) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(state_file(home));
    println!("dashboard stopped (pid {pid})");
    Ok(0)
}
