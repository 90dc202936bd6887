//! The dashboard: a read-only HTTP server over a [`Source`], shared by
//! `sparkwing dashboard start` (this machine merged with the profile's
//! remote) and the `sparkwing-web` binary (surfaces named by specs).
//!
//! # Layout
//! - [`source`]: where runs, logs, cache entries and sync stats come from.
//! - [`html`]: the pages, server-rendered, every value escaped.
//! - [`ansi`]: log bytes to HTML (escaping, ANSI colours), streaming.
//! - [`server`]: the accept loop and its [`Limits`]: connection cap with
//!   eviction of the longest-idle connection, head and idle timeouts.
//! - this module: routes, log tail and live stream, raw download, headers,
//!   request size limits and the cap on live streams.
//!
//! Only `GET` routes exist, and a `GET` may not carry a body. Reads block
//! (SQLite, or a remote read blocking on this runtime), so every one runs on
//! `spawn_blocking`. Logs are never read whole: the page shows the last
//! [`TAIL_BYTES`], the raw download and the live stream move through the
//! file in bounded pieces.

pub mod ansi;
pub mod html;
mod server;
pub mod source;

pub use server::Limits;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::remote::runs::ListQuery;
use html::{LogView, Page};
use source::{LogLoc, Source};

/// How much of a log's end the log page renders.
pub const TAIL_BYTES: u64 = 512 * 1024;
/// The most bytes one live-stream event carries.
const EVENT_BYTES: u64 = 256 * 1024;
/// How long a remote job's stream keeps looking for late chunks after the
/// job reads as finished.
const REMOTE_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct App {
    src: Arc<Source>,
    /// Host names the server answers to when bound to loopback (a guard
    /// against DNS rebinding); empty when bound elsewhere.
    hosts: Arc<Vec<String>>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// One permit per live log stream ([`Limits::max_streams`]).
    streams: Arc<tokio::sync::Semaphore>,
    limits: Arc<Limits>,
}

/// Serves the dashboard on `listener` within `limits` until `shutdown`
/// completes. Open live streams end at shutdown; the server then waits at
/// most a few seconds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    src: Arc<Source>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let hosts = if addr.ip().is_loopback() {
        let p = addr.port();
        vec![
            format!("127.0.0.1:{p}"),
            format!("localhost:{p}"),
            format!("[::1]:{p}"),
            "127.0.0.1".into(),
            "localhost".into(),
            "[::1]".into(),
        ]
    } else {
        Vec::new()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = App {
        src,
        hosts: Arc::new(hosts),
        stop: rx,
        streams: Arc::new(tokio::sync::Semaphore::new(limits.max_streams)),
        limits: Arc::new(limits.clone()),
    };
    let router = router(app);
    let signal = async move {
        shutdown.await;
        // Streams end on the stop signal.
        let _ = tx.send(true);
    };
    // The accept loop backs off on accept errors rather than ending, so it
    // returns only after shutdown; in-flight requests get a moment.
    tokio::spawn(server::run(
        listener,
        router,
        limits,
        signal,
        Duration::from_secs(3),
    ))
    .await
    .map_err(|e| anyhow!("the dashboard server failed: {e}"))
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/jobs/{job}/log", get(log_page))
        .route("/runs/{id}/jobs/{job}/log.txt", get(log_raw))
        .route("/runs/{id}/jobs/{job}/log/stream", get(log_stream))
        .route("/pipelines", get(pipelines_page))
        .route("/sync", get(sync_page))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{id}", get(api_run))
        .route("/assets/{name}", get(asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Why a request is refused before it reaches a route, if it is.
fn refusal(app: &App, req: &Request) -> Option<Response> {
    // The head's size as a whole is hyper's (431); the target's is ours.
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > app.limits.max_uri_bytes {
        return Some(
            (
                StatusCode::URI_TOO_LONG,
                format!(
                    "the request target is {target} bytes; this dashboard takes at most {}\n",
                    app.limits.max_uri_bytes
                ),
            )
                .into_response(),
        );
    }
    // Only GET routes exist and no handler reads a body: refuse one
    // outright and close the connection rather than drain it. Other
    // methods get the router's 405, which reads no body either.
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if is_get && has_body {
        return Some(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONNECTION, "close")],
                "this dashboard is read-only and takes no request bodies\n",
            )
                .into_response(),
        );
    }
    if !app.hosts.is_empty() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Some(
                (
                    StatusCode::MISDIRECTED_REQUEST,
                    "this dashboard answers to localhost only; open http://127.0.0.1:PORT/\n",
                )
                    .into_response(),
            );
        }
    }
    None
}

/// Host check, request size limits, and the security headers every
/// response carries (refusals included).
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    // The path only: a query string may carry anything.
    let (method, path) = (req.method().clone(), crate::util::clean(req.uri().path()));
    let started = std::time::Instant::now();
    let mut res = match refusal(&app, &req) {
        Some(r) => r,
        None => next.run(req).await,
    };
    tracing::debug!(
        %method,
        path = %path,
        status = res.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("a dashboard read failed: {e}"))?
}

fn page(app: &App, nav: &str, title: &str, main: &str, refresh: Option<String>) -> String {
    Page {
        title,
        source: &app.src.label,
        nav,
        has_sync: app.src.has_sync(),
        refresh,
    }
    .render(main)
}

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error(app: &App, status: StatusCode, title: &str, detail: &str) -> Response {
    html_response(
        status,
        page(app, "", title, &html::error_page(title, detail), None),
    )
}

async fn not_found(State(app): State<App>) -> Response {
    error(
        &app,
        StatusCode::NOT_FOUND,
        "Not found",
        "No such page. The runs list is at /.",
    )
}

/// A run ID as recorded (a ULID): anything else is refused before it is
/// used in a remote key or a path.
fn valid_run_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

/// A runs-list request's filters, cursor and page size, checked.
#[derive(Clone)]
struct Listing {
    pipeline: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: usize,
}

impl Listing {
    fn query(&self) -> ListQuery<'_> {
        ListQuery {
            pipeline: self.pipeline.as_deref(),
            status: self.status.as_deref(),
            before: self.before.as_deref(),
            limit: self.limit,
        }
    }
}

fn list_query(q: &HashMap<String, String>) -> Result<Listing, String> {
    let status = param(q, "status").map(String::from);
    if let Some(s) = &status {
        if crate::status::RunStatus::parse(s).is_none() {
            let known: Vec<&str> = crate::status::RunStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect();
            return Err(format!(
                "unknown status `{s}`; one of: {}",
                known.join(", ")
            ));
        }
    }
    let before = param(q, "before").map(String::from);
    if before.as_deref().is_some_and(|b| !valid_run_id(b)) {
        return Err("`before` must be a run ID".into());
    }
    let limit = match param(q, "limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| "`limit` must be a number from 1 to 500".to_string())?,
        None => html::PAGE,
    };
    Ok(Listing {
        pipeline: param(q, "pipeline").map(String::from),
        status,
        before,
        limit,
    })
}

async fn runs_page(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let listing = match list_query(&q) {
        Ok(x) => x,
        Err(e) => return error(&app, StatusCode::BAD_REQUEST, "Bad filter", &e),
    };
    let src = Arc::clone(&app.src);
    let l2 = listing.clone();
    let listed = blocking(move || {
        let (rows, warning) = src.list(&l2.query())?;
        let mut names: Vec<String> = src
            .project_pipelines()
            .iter()
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect();
        for r in &rows {
            if let Some(p) = r["pipeline"].as_str() {
                if !names.iter().any(|n| n == p) {
                    names.push(p.to_string());
                }
            }
        }
        Ok((rows, warning, names))
    })
    .await;
    let (rows, warning, names) = match listed {
        Ok(x) => x,
        Err(e) => {
            return error(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                "Runs could not be read",
                &format!("{e:#}"),
            )
        }
    };
    let view = listing.query();
    let main = html::runs_list(&rows, &view, warning.as_deref(), &names);
    if q.contains_key("fragment") {
        return html_response(StatusCode::OK, main);
    }
    // Refresh in place while something is in progress.
    let live = rows.iter().any(|r| {
        r["status"]
            .as_str()
            .is_some_and(crate::status::RunStatus::live)
    });
    let refresh = live.then(|| {
        let mut params = vec!["fragment=1".to_string()];
        params.extend(html::list_params(&view, view.before));
        format!("/?{}", params.join("&"))
    });
    html_response(StatusCode::OK, page(&app, "runs", "Runs", &main, refresh))
}

async fn load_run(app: &App, id: &str) -> Result<Value, Response> {
    if !valid_run_id(id) {
        return Err(error(
            app,
            StatusCode::NOT_FOUND,
            "No such run",
            &format!("`{id}` is not a run ID (26 characters, as `sparkwing runs list` shows)."),
        ));
    }
    let (src, id2) = (Arc::clone(&app.src), id.to_string());
    blocking(move || src.run(&id2))
        .await
        .map_err(|e| error(app, StatusCode::NOT_FOUND, "No such run", &format!("{e:#}")))
}

async fn run_page(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let doc = match load_run(&app, &id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let keys: Vec<String> = doc["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["cache_key"].as_str().map(String::from))
        .filter(|k| k.len() <= 128 && k.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect();
    let src = Arc::clone(&app.src);
    let caches = blocking(move || {
        Ok(keys
            .into_iter()
            .filter_map(|k| src.cache_entry(&k).map(|v| (k, v)))
            .collect::<HashMap<_, _>>())
    })
    .await
    .unwrap_or_default();
    let main = html::run_detail(&doc, &caches);
    if q.contains_key("fragment") {
        return html_response(StatusCode::OK, main);
    }
    let live = doc["status"]
        .as_str()
        .is_some_and(crate::status::RunStatus::live);
    let refresh = live.then(|| format!("/runs/{}?fragment=1", html::enc(&id)));
    let title = format!("{} {}", doc["pipeline"].as_str().unwrap_or("run"), id);
    html_response(StatusCode::OK, page(&app, "runs", &title, &main, refresh))
}

/// The run and the job's entry in it; 404 for a job the run does not have.
async fn load_job(app: &App, id: &str, job: &str) -> Result<(Value, Value), Response> {
    let doc = load_run(app, id).await?;
    let j = doc["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| j["name"] == job)
        .cloned();
    match j {
        Some(j) => Ok((doc, j)),
        None => Err(error(
            app,
            StatusCode::NOT_FOUND,
            "No such job",
            &format!("run {id} has no job `{job}`."),
        )),
    }
}

/// Reads up to `max` bytes of a log from `cursor` (a byte offset for a file,
/// a chunk count for remote chunks). Returns the bytes and the new cursor.
fn read_more(src: &Source, loc: &LogLoc, cursor: u64, max: u64) -> Result<(Vec<u8>, u64)> {
    match loc {
        LogLoc::File(p) => {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = match std::fs::File::open(p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((Vec::new(), cursor))
                }
                Err(e) => return Err(e.into()),
            };
            f.seek(SeekFrom::Start(cursor))?;
            let mut buf = Vec::new();
            f.take(max).read_to_end(&mut buf)?;
            let n = buf.len() as u64;
            Ok((buf, cursor + n))
        }
        LogLoc::Chunks(log) => {
            let keys = src.chunk_slots(log)?;
            let mut out = Vec::new();
            let mut c = cursor;
            while (c as usize) < keys.len() && (out.len() as u64) < max {
                let b = src.read_chunk(log, keys[c as usize], c as usize, keys.len())?;
                out.extend_from_slice(&b);
                c += 1;
            }
            Ok((out, c))
        }
    }
}

/// The end of a log for the page: its bytes, what was left out before them
/// (said for a reader), and the cursor after them.
type Tailed = (Vec<u8>, Option<String>, u64);

/// Keeps the last [`TAIL_BYTES`] of `buf`, starting at a line boundary;
/// returns how many bytes were dropped.
fn keep_tail(buf: &mut Vec<u8>) -> u64 {
    if buf.len() as u64 <= TAIL_BYTES {
        return 0;
    }
    // Start after the first newline at or after the byte before the tail:
    // a tail that begins a line is kept whole.
    let mut cut = buf.len() - TAIL_BYTES as usize;
    if let Some(nl) = buf[cut - 1..].iter().position(|&b| b == b'\n') {
        cut += nl;
    }
    buf.drain(..cut);
    cut as u64
}

fn read_tail(src: &Source, loc: &LogLoc) -> Result<Tailed> {
    match loc {
        LogLoc::File(p) => {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = match std::fs::File::open(p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((Vec::new(), None, 0))
                }
                Err(e) => return Err(e.into()),
            };
            let len = f.metadata()?.len();
            // One byte before the tail, so a tail that starts exactly on a
            // line is kept whole.
            let start = len.saturating_sub(TAIL_BYTES + 1);
            f.seek(SeekFrom::Start(start))?;
            let mut buf = Vec::new();
            (&mut f).take(len - start).read_to_end(&mut buf)?;
            let skipped = start + keep_tail(&mut buf);
            let note = (skipped > 0).then(|| {
                format!(
                    "{} of {}",
                    crate::util::human_bytes(skipped),
                    crate::util::human_bytes(len)
                )
            });
            Ok((buf, note, len))
        }
        LogLoc::Chunks(log) => {
            let keys = src.chunk_slots(log)?;
            let mut parts: Vec<Bytes> = Vec::new();
            let mut size = 0u64;
            let mut first = keys.len();
            while first > 0 && size < TAIL_BYTES {
                first -= 1;
                let b = src.read_chunk(log, keys[first], first, keys.len())?;
                size += b.len() as u64;
                parts.push(b);
            }
            parts.reverse();
            let mut buf = parts.concat();
            let dropped = keep_tail(&mut buf);
            // The size of the chunks not read is unknown without reading
            // them, so the note counts chunks.
            let note = (first > 0 || dropped > 0).then(|| {
                format!(
                    "the first {first} of {} chunks and {} of the next",
                    keys.len(),
                    crate::util::human_bytes(dropped)
                )
            });
            Ok((buf, note, keys.len() as u64))
        }
    }
}

async fn log_page(
    State(app): State<App>,
    UrlPath((id, job)): UrlPath<(String, String)>,
) -> Response {
    let (doc, j) = match load_job(&app, &id, &job).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Read before the tail: a job that ends in between still streams, and
    // its stream delivers the rest and then ends.
    let (live, _) = source::job_state(&doc, &job);
    let src = Arc::clone(&app.src);
    let (id2, job2) = (id.clone(), job.clone());
    let read = blocking(move || {
        let Some(loc) = src.log_loc(&id2, &job2) else {
            return Ok(None);
        };
        let tail = read_tail(&src, &loc)?;
        Ok(Some((tail, loc.cursor_kind())))
    })
    .await;
    let (text, note, cursor, kind) = match read {
        Ok(Some(((b, note, c), kind))) => (b, note, c, kind),
        Ok(None) => {
            return error(
                &app,
                StatusCode::NOT_FOUND,
                "No log here",
                "This dashboard reads no logs surface for this run: start sparkwing-web with --logs-spec (the profile's logs prefix or directory).",
            )
        }
        Err(e) => {
            return error(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                "The log could not be read",
                &format!("{e:#}"),
            )
        }
    };
    let rendered = ansi::to_html(&text);
    let status = j["status"].as_str().unwrap_or("").to_string();
    let run_status = doc["status"].as_str().unwrap_or("");
    let cursor = format!("{kind}{cursor}");
    let main = html::log_page(&LogView {
        run: &id,
        job: &job,
        status: if run_status == crate::status::RunStatus::Interrupted.as_str() {
            run_status
        } else {
            &status
        },
        html: &rendered,
        skipped: note,
        stream_from: live.then_some(cursor),
    });
    html_response(
        StatusCode::OK,
        page(&app, "runs", &format!("{job} log"), &main, None),
    )
}

fn attachment_name(run: &str, job: &str) -> String {
    let clean: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{run}-{clean}.log")
}

async fn log_raw(
    State(app): State<App>,
    UrlPath((id, job)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = load_job(&app, &id, &job).await {
        return r;
    }
    let src = Arc::clone(&app.src);
    let (id2, job2) = (id.clone(), job.clone());
    let loc = blocking(move || Ok(src.log_loc(&id2, &job2)))
        .await
        .ok()
        .flatten();
    let body = match loc {
        None => Body::empty(),
        Some(LogLoc::File(p)) => match tokio::fs::File::open(&p).await {
            Ok(f) => {
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                // Exactly the bytes present now, in 64 KiB reads.
                let s = futures_util::stream::unfold((f, len), |(mut f, left)| async move {
                    if left == 0 {
                        return None;
                    }
                    let mut buf = vec![0u8; left.min(64 * 1024) as usize];
                    match f.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((
                                Ok::<_, std::io::Error>(Bytes::from(buf)),
                                (f, left - n as u64),
                            ))
                        }
                        Err(e) => Some((Err(e), (f, 0))),
                    }
                });
                Body::from_stream(s)
            }
            Err(_) => Body::empty(),
        },
        Some(LogLoc::Chunks(log)) => {
            let src = Arc::clone(&app.src);
            let (s2, l2) = (Arc::clone(&src), log.clone());
            let keys = Arc::new(
                blocking(move || s2.chunk_slots(&l2))
                    .await
                    .unwrap_or_default(),
            );
            // One chunk (at most 1 MiB) in memory at a time.
            let s = futures_util::stream::unfold(0usize, move |i| {
                let (src, log, keys) = (Arc::clone(&src), log.clone(), Arc::clone(&keys));
                async move {
                    let slot = *keys.get(i)?;
                    let total = keys.len();
                    let got = blocking(move || src.read_chunk(&log, slot, i, total)).await;
                    match got {
                        Ok(b) => Some((Ok::<_, std::io::Error>(b), i + 1)),
                        Err(e) => Some((Err(std::io::Error::other(e.to_string())), usize::MAX)),
                    }
                }
            });
            Body::from_stream(s)
        }
    };
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if q.contains_key("download") {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            attachment_name(&id, &job)
        )) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    res
}

/// One live-tail connection's state.
struct Tail {
    src: Arc<Source>,
    loc: LogLoc,
    run: String,
    job: String,
    cursor: u64,
    renderer: ansi::Renderer,
    done: bool,
    last_sent: Instant,
    /// When a remote job was first seen finished with nothing new to read.
    quiet_since: Option<Instant>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// This stream's place under [`Limits::max_streams`], given back when
    /// the stream ends or its client goes away.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// `b123` or `c4` into its kind letter and number.
fn parse_cursor(raw: &str) -> Option<(char, u64)> {
    let kind = raw.chars().next().filter(|k| matches!(k, 'b' | 'c'))?;
    Some((kind, raw[1..].parse().ok()?))
}

fn sse(event: &str, id: Option<&str>, data: &Value) -> Bytes {
    let mut out = String::new();
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("event: {event}\ndata: {data}\n\n"));
    Bytes::from(out)
}

async fn next_event(mut t: Tail) -> Option<(Result<Bytes, std::io::Error>, Tail)> {
    if t.done {
        return None;
    }
    let chunked = matches!(t.loc, LogLoc::Chunks(..));
    let poll = if chunked {
        Duration::from_millis(1500)
    } else {
        Duration::from_millis(200)
    };
    loop {
        if *t.stop.borrow() {
            return None;
        }
        let (src, loc, run, job, cursor) = (
            Arc::clone(&t.src),
            t.loc.clone(),
            t.run.clone(),
            t.job.clone(),
            t.cursor,
        );
        // Liveness first, then the read: output written before the job
        // ended is always delivered before the end event.
        let step = blocking(move || {
            let (live, status) = src.job_state(&run, &job);
            let (bytes, next) = read_more(&src, &loc, cursor, EVENT_BYTES)?;
            Ok((live, status, bytes, next))
        })
        .await;
        let (live, status, bytes, next) = match step {
            Ok(x) => x,
            Err(e) => {
                t.done = true;
                let ev = sse("error", None, &json!({"message": format!("{e:#}")}));
                return Some((Ok(ev), t));
            }
        };
        if !bytes.is_empty() {
            t.quiet_since = None;
            t.cursor = next;
            t.last_sent = Instant::now();
            let html = t.renderer.render(&bytes);
            let id = format!("{}{}", t.loc.cursor_kind(), t.cursor);
            let ev = sse("log", Some(&id), &json!({ "html": html }));
            return Some((Ok(ev), t));
        }
        if !live && chunked && t.quiet_since.is_none_or(|q| q.elapsed() < REMOTE_GRACE) {
            // Another runner's log and its run.json travel as separate
            // streams: the job may read as finished before its last chunk
            // lands. Keep looking for a little while.
            t.quiet_since.get_or_insert_with(Instant::now);
        } else if !live {
            t.done = true;
            return Some((Ok(sse("end", None, &json!({ "status": status }))), t));
        }
        if t.last_sent.elapsed() > Duration::from_secs(15) {
            t.last_sent = Instant::now();
            return Some((Ok(Bytes::from_static(b": keepalive\n\n")), t));
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = t.stop.changed() => return None,
        }
    }
}

async fn log_stream(
    State(app): State<App>,
    UrlPath((id, job)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = load_job(&app, &id, &job).await {
        return r;
    }
    let src = Arc::clone(&app.src);
    let (id2, job2) = (id.clone(), job.clone());
    let Some(loc) = blocking(move || Ok(src.log_loc(&id2, &job2)))
        .await
        .ok()
        .flatten()
    else {
        return (StatusCode::NOT_FOUND, "this job has no log here\n").into_response();
    };
    // A reconnecting EventSource resumes from its last event.
    let raw = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| param(&q, "from"));
    let cursor = match raw.map_or(Some((loc.cursor_kind(), 0)), parse_cursor) {
        Some((kind, n)) if kind == loc.cursor_kind() => n,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "`from` must be the cursor the log page gave (b<offset> or c<chunk>)\n",
            )
                .into_response()
        }
    };
    let Ok(slot) = Arc::clone(&app.streams).try_acquire_owned() else {
        // The page's script retries after a pause; the log page itself
        // still shows the log's end.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            format!(
                "the dashboard is serving its most live log streams ({}); try again in a few seconds, or reload the log page\n",
                app.limits.max_streams
            ),
        )
            .into_response();
    };
    let tail = Tail {
        src: Arc::clone(&app.src),
        loc,
        run: id,
        job,
        cursor,
        renderer: ansi::Renderer::new(),
        done: false,
        last_sent: Instant::now(),
        quiet_since: None,
        stop: app.stop.clone(),
        _slot: slot,
    };
    let body = Body::from_stream(futures_util::stream::unfold(tail, next_event));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn pipelines_page(State(app): State<App>) -> Response {
    let src = Arc::clone(&app.src);
    let got = blocking(move || {
        let limit = if src.merged() { 100 } else { 500 };
        let (recent, _) = src.list(&ListQuery {
            limit,
            ..Default::default()
        })?;
        Ok((src.project_pipelines(), recent))
    })
    .await;
    match got {
        Ok((project, recent)) => {
            let main = html::pipelines(&project, &recent, !project.is_empty());
            html_response(
                StatusCode::OK,
                page(&app, "pipelines", "Pipelines", &main, None),
            )
        }
        Err(e) => error(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            "Pipelines could not be read",
            &format!("{e:#}"),
        ),
    }
}

async fn sync_page(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let src = Arc::clone(&app.src);
    match blocking(move || src.sync_stats()).await {
        Ok(Some(stats)) => {
            let main = html::sync_page(app.src.profile.as_deref().unwrap_or(""), &stats);
            if q.contains_key("fragment") {
                return html_response(StatusCode::OK, main);
            }
            html_response(
                StatusCode::OK,
                page(&app, "sync", "Sync", &main, Some("/sync?fragment=1".into())),
            )
        }
        Ok(None) => error(
            &app,
            StatusCode::NOT_FOUND,
            "No sync status here",
            "sparkwing-web reads a remote; the sync status of a machine's outbox is on that machine's `sparkwing dashboard start`.",
        ),
        Err(e) => error(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            "The outbox could not be read",
            &format!("{e:#}"),
        ),
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{v:#}\n"),
    )
        .into_response()
}

async fn api_runs(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let listing = match list_query(&q) {
        Ok(x) => x,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({ "error": e })),
    };
    let src = Arc::clone(&app.src);
    let got = blocking(move || src.list(&listing.query())).await;
    match got {
        Ok((rows, warning)) => {
            json_response(StatusCode::OK, &json!({ "runs": rows, "warning": warning }))
        }
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "error": crate::profile::scrub(&format!("{e:#}")) }),
        ),
    }
}

async fn api_run(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Response {
    if !valid_run_id(&id) {
        return json_response(StatusCode::NOT_FOUND, &json!({ "error": "not a run ID" }));
    }
    let src = Arc::clone(&app.src);
    match blocking(move || src.run(&id)).await {
        Ok(doc) => json_response(StatusCode::OK, &doc),
        Err(e) => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": crate::profile::scrub(&format!("{e:#}")) }),
        ),
    }
}

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");
const ICON_SVG: &str = include_str!("assets/icon.svg");

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    let (ct, body) = match name.as_str() {
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "icon.svg" => ("image/svg+xml", ICON_SVG),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The address a server bound, as the URL to open.
pub fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_starts_at_a_line_and_keeps_a_whole_first_line() {
        let t = TAIL_BYTES as usize;
        // The byte before the tail ends a line: the tail is kept whole.
        let mut buf = vec![b'x'; 10];
        buf.push(b'\n');
        buf.extend(std::iter::repeat_n(b'y', t - 1));
        buf.push(b'\n');
        let mut b = buf.clone();
        assert_eq!(keep_tail(&mut b), 11);
        assert_eq!(b.len(), t);
        // Otherwise the partial first line is dropped.
        let mut b = buf[5..].to_vec();
        b.insert(0, b'z');
        let dropped = keep_tail(&mut b);
        assert!(b.starts_with(b"y") && dropped > 0);
        // Short logs are untouched.
        let mut short = b"a\nb\n".to_vec();
        assert_eq!(keep_tail(&mut short), 0);
        assert_eq!(short, b"a\nb\n");
    }
}
