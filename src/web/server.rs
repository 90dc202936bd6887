//! The dashboard's accept loop and its limits: how many connections it
//! holds, how long a connection may sit idle or take to send a request
//! head, and what it does when it runs out of room.
//!
//! `axum::serve` has none of these knobs (a half-sent request is held
//! forever), so this module drives hyper's HTTP/1 connections itself, with
//! the [`Router`] as the service. Each connection is a task with a small
//! watchdog beside hyper: it knows whether a request is in flight (from the
//! service and its response body), when the connection last went idle, and
//! when the first byte of a new request head arrived (from the socket), and
//! closes the connection when the matching timeout passes.
//!
//! Why not hyper's own `header_read_timeout`: in hyper 1.12 that clock
//! starts when a connection opens and again whenever it goes idle after a
//! response, so it is one number for "time to send a head" and "time a
//! keep-alive connection may sit unused". The dashboard keeps them apart:
//! a browser's keep-alive connection may rest for [`Limits::idle_timeout`],
//! but once a head starts it must finish within [`Limits::header_timeout`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Result};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The dashboard's resource limits. [`Limits::default`] holds the numbers
/// README documents; [`Limits::from_env`] fits the connection cap to this
/// process's file limit and applies `SPARKWING_WEB_*` overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to finish a request head once its first byte
    /// arrives. Then the connection is closed.
    pub header_timeout: Duration,
    /// How long a connection may sit with no request in flight and no new
    /// request begun (after opening, or between keep-alive requests).
    pub idle_timeout: Duration,
    /// The most connections held open. At the cap, a newcomer makes the
    /// longest-idle connection close (one with no request in flight), so a
    /// flood of idle sockets cannot lock out a real request.
    pub max_connections: usize,
    /// The most live log streams (server-sent events) at once; beyond it a
    /// stream request gets 503 with `Retry-After`.
    pub max_streams: usize,
    /// The most bytes of a request head (request line and headers): 431.
    pub max_header_bytes: usize,
    /// The most bytes of a request target (path and query): 414.
    pub max_uri_bytes: usize,
}

/// Descriptors kept for the process itself, beside its connections: stdio,
/// the runtime, SQLite databases with their WAL and shared memory.
const RESERVED_FDS: u64 = 64;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_streams: 64,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
        }
    }
}

impl Limits {
    /// The defaults fitted to this process's file limit, with any
    /// `SPARKWING_WEB_*` overrides from the environment.
    pub fn from_env() -> Result<Limits> {
        Limits::from_vars(nofile_limit(), |k| std::env::var(k).ok())
    }

    /// [`Limits::from_env`] with the file limit and the variables given.
    ///
    /// Every connection may hold two descriptors (its socket, and a log file
    /// it is sending), and [`RESERVED_FDS`] stay with the process, so the cap
    /// is at most `(nofile - 64) / 2`: the process never runs out of
    /// descriptors however many clients connect. Live streams are at most
    /// half the connections, so idle connections can always be evicted to
    /// make room.
    pub fn from_vars(nofile: u64, var: impl Fn(&str) -> Option<String>) -> Result<Limits> {
        let d = Limits::default();
        let num = |name: &str| -> Result<Option<u64>> {
            match var(name) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => bail!(
                        "{name}={v:?} is not a whole number above 0; unset it for the default"
                    ),
                },
            }
        };
        let ms = |name: &str, default: Duration| -> Result<Duration> {
            Ok(num(name)?.map_or(default, Duration::from_millis))
        };
        let fits = (nofile.saturating_sub(RESERVED_FDS) / 2).max(8) as usize;
        let max_connections = num("SPARKWING_WEB_MAX_CONNECTIONS")?
            .map_or(d.max_connections, |n| n as usize)
            .min(fits);
        let max_streams = num("SPARKWING_WEB_MAX_STREAMS")?
            .map_or(d.max_streams, |n| n as usize)
            .min((max_connections / 2).max(1));
        Ok(Limits {
            header_timeout: ms("SPARKWING_WEB_HEADER_TIMEOUT_MS", d.header_timeout)?,
            idle_timeout: ms("SPARKWING_WEB_IDLE_TIMEOUT_MS", d.idle_timeout)?,
            max_connections,
            max_streams,
            ..d
        })
    }
}

/// This process's soft limit on open files (`RLIMIT_NOFILE`).
fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// What a connection's watchdog and the eviction choice look at.
struct ConnState {
    /// Requests whose response has not finished (a live stream counts until
    /// it ends).
    in_flight: u32,
    /// When the connection opened or its last response finished.
    idle_since: Instant,
    /// When the first byte of a request head arrived, until the head is
    /// complete and the request reaches the service.
    head_since: Option<Instant>,
    /// Closed to make room for a newcomer.
    evicted: bool,
}

/// One connection as the registry and its watchdog see it. The state sits
/// behind a std `Mutex`: every use is a few field reads or writes, never
/// held across an `.await`, and the socket's read path takes it only when
/// bytes arrived.
struct Conn {
    state: Mutex<ConnState>,
    /// Wakes the watchdog to recompute its deadline (or to close).
    wake: Notify,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        // A panic while holding it leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the watchdog should close the connection; `None` while a
    /// request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let s = self.state();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.head_since {
            Some(t) => t + limits.header_timeout,
            None => s.idle_since + limits.idle_timeout,
        })
    }
}

/// The open connections, for the cap and for eviction.
#[derive(Default)]
struct Registry {
    /// Locked before any `Conn::state`, never the other way round.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn map(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the connection that has been idle longest (no request in
    /// flight; a half-sent head counts as idle). False when every
    /// connection is busy.
    fn evict_idlest(&self) -> bool {
        let mut map = self.map();
        let idlest = map
            .iter()
            .filter_map(|(id, c)| {
                let s = c.state();
                (s.in_flight == 0).then_some((s.idle_since, *id))
            })
            .min();
        let Some((_, id)) = idlest else {
            return false;
        };
        if let Some(c) = map.remove(&id) {
            c.state().evicted = true;
            c.wake.notify_one();
        }
        true
    }
}

/// The socket, noting when a request head begins: the first bytes read
/// while no request is in flight.
struct Watched {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut s = self.conn.state();
            if s.in_flight == 0 && s.head_since.is_none() {
                s.head_since = Some(Instant::now());
                drop(s);
                // The deadline moved from the idle timeout to the head's.
                self.conn.wake.notify_one();
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A request in flight, from the moment its head reached the service until
/// its response body is dropped (finished, or the connection closed).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn begin(conn: &Arc<Conn>) -> InFlight {
        let mut s = conn.state();
        s.in_flight += 1;
        s.head_since = None;
        InFlight(Arc::clone(conn))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight -= 1;
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
        }
        drop(s);
        self.0.wake.notify_one();
    }
}

/// A response body that ends its request's [`InFlight`] when dropped.
struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a newcomer gets when every connection is busy with a request.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 62\r\nConnection: close\r\n\r\nthe dashboard is at its connection limit; try again shortly.\n";

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes; then stops accepting, lets in-flight requests finish and
/// closes idle connections, waiting at most `grace`.
pub(super) async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let limits = Arc::new(limits);
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_header_size(limits.max_header_bytes)
        // Timed by the watchdog instead; see the module comment.
        .header_read_timeout(None);
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    let mut last_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connection tasks as they end.
            Some(_) = tasks.join_next() => continue,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                accept_failed(&e, &registry, &mut last_warned).await;
                continue;
            }
        };
        if registry.map().len() >= limits.max_connections && !registry.evict_idlest() {
            // Every connection has a request in flight: say so and close.
            let _ = tcp.try_write(BUSY);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        next_id += 1;
        let conn = Arc::new(Conn {
            state: Mutex::new(ConnState {
                in_flight: 0,
                idle_since: Instant::now(),
                head_since: None,
                evicted: false,
            }),
            wake: Notify::new(),
        });
        registry.map().insert(next_id, Arc::clone(&conn));
        tasks.spawn(serve_conn(
            next_id,
            tcp,
            conn,
            router.clone(),
            http.clone(),
            Arc::clone(&limits),
            Arc::clone(&registry),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    // Whatever is still open after the grace period is dropped (and so
    // closed) with the JoinSet.
    let _ = tokio::time::timeout(grace, drained).await;
}

/// An accept that failed. A connection the peer already gave up on
/// concerns only that connection. Out of descriptors (EMFILE, ENFILE) or
/// memory, the loop closes the longest-idle connection and backs off for a
/// moment, instead of spinning or ending the server; the warning is written
/// at most once a minute.
async fn accept_failed(e: &io::Error, registry: &Registry, last_warned: &mut Option<Instant>) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        registry.evict_idlest();
    }
    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
        *last_warned = Some(Instant::now());
        tracing::warn!(
            error = %e,
            nofile = nofile_limit(),
            "the dashboard could not accept a connection; it closes idle connections and retries (raise the file limit with `ulimit -n`)"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One connection: hyper serving `router`, and the watchdog closing it when
/// a timeout passes, when it is evicted, or (gracefully) at shutdown.
#[allow(clippy::too_many_arguments)]
async fn serve_conn(
    id: u64,
    tcp: TcpStream,
    conn: Arc<Conn>,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    limits: Arc<Limits>,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Watched {
        tcp,
        conn: Arc::clone(&conn),
    });
    let c2 = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&c2);
        let mut router = router.clone();
        async move {
            let res = tower_service::Service::call(&mut router, req).await?;
            Ok::<_, Infallible>(res.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let served = http.serve_connection(io, service);
    tokio::pin!(served);
    let mut closing = false;
    loop {
        // With nothing to time, look again in an hour (a state change
        // wakes the loop before that).
        let deadline = conn
            .deadline(&limits)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            // Ended: the client closed, an error, or after graceful shutdown.
            _ = served.as_mut() => break,
            _ = conn.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stop.changed(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
        }
        let (evicted, idle) = {
            let s = conn.state();
            (s.evicted, s.in_flight == 0)
        };
        let expired = conn.deadline(&limits).is_some_and(|d| d <= Instant::now());
        // At shutdown a connection with no request in flight (idle, or a
        // head still arriving) closes at once; hyper's graceful shutdown
        // lets one in flight finish first.
        if evicted || expired || (closing && idle) {
            // Dropping hyper's connection closes the socket.
            break;
        }
    }
    registry.map().remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_connection_cap_fits_the_file_limit_and_streams_fit_the_connections() {
        let plenty = Limits::from_vars(65536, vars(&[])).unwrap();
        assert_eq!(plenty, Limits::default());
        // 1,024 files: (1024 - 64) / 2 connections.
        let l = Limits::from_vars(1024, vars(&[])).unwrap();
        assert_eq!((l.max_connections, l.max_streams), (480, 64));
        // A tiny limit still leaves a few connections and fewer streams.
        let l = Limits::from_vars(100, vars(&[])).unwrap();
        assert_eq!((l.max_connections, l.max_streams), (18, 9));
        let l = Limits::from_vars(16, vars(&[])).unwrap();
        assert_eq!((l.max_connections, l.max_streams), (8, 4));
        // Overrides, clamped the same way.
        let l = Limits::from_vars(
            1024,
            vars(&[
                ("SPARKWING_WEB_MAX_CONNECTIONS", "100000"),
                ("SPARKWING_WEB_MAX_STREAMS", "1000"),
                ("SPARKWING_WEB_HEADER_TIMEOUT_MS", "250"),
                ("SPARKWING_WEB_IDLE_TIMEOUT_MS", "1500"),
            ]),
        )
        .unwrap();
        assert_eq!((l.max_connections, l.max_streams), (480, 240));
        assert_eq!(l.header_timeout, Duration::from_millis(250));
        assert_eq!(l.idle_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        for bad in ["", "0", "-1", "ten", "1.5"] {
            let e = Limits::from_vars(1024, vars(&[("SPARKWING_WEB_MAX_STREAMS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("SPARKWING_WEB_MAX_STREAMS=") && e.contains("unset it"),
                "{e}"
            );
        }
    }

    fn conn(idle_for: Duration, in_flight: u32) -> Arc<Conn> {
        Arc::new(Conn {
            state: Mutex::new(ConnState {
                in_flight,
                idle_since: Instant::now() - idle_for,
                head_since: None,
                evicted: false,
            }),
            wake: Notify::new(),
        })
    }

    #[test]
    fn eviction_takes_the_longest_idle_connection_and_never_a_busy_one() {
        let r = Registry::default();
        let busy = conn(Duration::from_secs(100), 1);
        let old = conn(Duration::from_secs(50), 0);
        let new = conn(Duration::from_secs(1), 0);
        for (id, c) in [(1, &busy), (2, &old), (3, &new)] {
            r.map().insert(id, Arc::clone(c));
        }
        assert!(r.evict_idlest());
        assert!(old.state().evicted && !busy.state().evicted && !new.state().evicted);
        assert!(r.evict_idlest());
        assert!(new.state().evicted);
        assert!(!r.evict_idlest(), "a busy connection is never evicted");
        assert_eq!(r.map().len(), 1);
    }

    #[test]
    fn the_deadline_is_the_head_timeout_once_a_head_begins_and_none_in_flight() {
        let limits = Limits::default();
        let c = conn(Duration::ZERO, 0);
        let idle = c.state().idle_since;
        assert_eq!(c.deadline(&limits), Some(idle + limits.idle_timeout));
        let t = Instant::now();
        c.state().head_since = Some(t);
        assert_eq!(c.deadline(&limits), Some(t + limits.header_timeout));
        let req = InFlight::begin(&c);
        assert_eq!(c.deadline(&limits), None);
        drop(req);
        let s = c.state();
        assert!(s.in_flight == 0 && s.head_since.is_none() && s.idle_since >= t);
    }
}
