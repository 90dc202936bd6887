//! The replay actor: drains the outbox into targets.
//!
//! Concurrency: one pass ([`SyncActor::sync_once`]) claims up to
//! `concurrency` streams across this actor's targets and delivers them in
//! parallel; inside a stream, entries go strictly in order and delivery
//! stops at the first failure. Outbox calls are blocking SQLite work, so
//! they run on `spawn_blocking`, never on the async executor.
//!
//! Wake-ups: an in-process [`Notify`] (a run enqueues and pokes it), the
//! outbox's `data_version` (another process committed), the earliest retry
//! time, and a periodic tick.
//!
//! Stopping: [`SyncActor::run`]'s shutdown and [`SyncActor::drain`]'s
//! deadline are watched during a pass too, not only between passes. When
//! one fires, the pass claims nothing more, cancels the deliveries under
//! way (their futures are dropped, so an HTTP request in flight is
//! abandoned) and releases every claim it holds with nothing delivered:
//! the entries stay queued, unacknowledged and not counted as failures,
//! and the next pass (this process's or another's) delivers them again,
//! writing the same objects with the same bytes.
//!
//! Time: every instant is tokio's ([`tokio::time::Instant`], sleeps,
//! intervals) and every Unix-ms decision (a retry due, a lease left) reads
//! the outbox's [`Clock`], so tests run the actor on paused time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use sparkwing_outbox::clock::Clock;
use sparkwing_outbox::{Claim, Connectivity, ErrorClass, Outbox, OutboxError, Payload};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::target::{Op, OpKind, Target, TargetError};

/// Tuning for an actor.
#[derive(Debug, Clone, Copy)]
pub struct SyncConfig {
    /// Streams delivered at once.
    pub concurrency: usize,
    /// Entries taken from one stream per claim.
    pub max_entries: usize,
    /// Payload bytes taken from one stream per claim.
    pub max_bytes: u64,
    /// Payload bytes being delivered at once, across streams: a new
    /// delivery starts only while the ones running hold less (one always
    /// may). Bounds memory when the payloads are large (cache packs).
    pub max_bytes_in_flight: u64,
    /// Idle re-check interval.
    pub tick: Duration,
    /// How often a target whose credentials failed is probed again.
    pub auth_probe: Duration,
    /// After a wake-up, wait this long so writes arriving together go out
    /// together (fewer, larger objects: object stores bill per request).
    pub linger: Duration,
    /// Listen for other processes' enqueues on this home ([`sparkwing_outbox::wake`])
    /// and start delivering at once (no `linger`: their entries are whole
    /// already), polling `outbox.db` only as a fallback. For daemons.
    pub push_wake: bool,
    /// How often the lease of a stream being delivered is renewed, so a
    /// slow delivery (a large upload, a share that hangs) keeps its stream
    /// and no other worker takes it over and writes over it.
    pub renew_every: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            concurrency: 8,
            max_entries: 256,
            max_bytes: 8 << 20,
            max_bytes_in_flight: 24 << 20,
            tick: Duration::from_secs(1),
            auth_probe: Duration::from_secs(60),
            linger: Duration::from_millis(200),
            push_wake: false,
            renew_every: sparkwing_outbox::LEASE / 4,
        }
    }
}

/// What passes delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub streams: u64,
    pub delivered: u64,
    pub bytes: u64,
    pub failures: u64,
}

impl SyncReport {
    /// Adds another pass's (or drain's) counts to these.
    pub fn add(&mut self, o: SyncReport) {
        self.streams += o.streams;
        self.delivered += o.delivered;
        self.bytes += o.bytes;
        self.failures += o.failures;
    }
}

/// A claim transaction running on a blocking thread: how many streams it
/// asked for, and what it got.
type PendingClaim = tokio::task::JoinHandle<Result<(usize, Vec<Claim>), OutboxError>>;

/// How a delivery task ended.
enum Outcome {
    /// Delivered this many entries, then stopped at this error, if any.
    Done(usize, Option<TargetError>),
    /// Cancelled by a stop before it finished: what it wrote is unknown.
    Cancelled,
}

pub struct SyncActor {
    outbox: Arc<Outbox>,
    targets: HashMap<String, Arc<dyn Target>>,
    ids: Vec<String>,
    cfg: SyncConfig,
    wake: Arc<Notify>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl SyncActor {
    /// An actor delivering the entries addressed to `targets` (and only those).
    pub fn new(outbox: Arc<Outbox>, targets: Vec<Arc<dyn Target>>, cfg: SyncConfig) -> Self {
        let ids = targets.iter().map(|t| t.id().to_string()).collect();
        let targets = targets
            .into_iter()
            .map(|t| (t.id().to_string(), t))
            .collect();
        SyncActor {
            outbox,
            targets,
            ids,
            cfg,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Poke this to make an idle actor look at the outbox at once.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    pub fn target_ids(&self) -> &[String] {
        &self.ids
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Entries and bytes still queued for this actor's targets.
    pub async fn pending(&self) -> Result<(u64, u64), OutboxError> {
        let (ob, ids) = (Arc::clone(&self.outbox), self.ids.clone());
        blocking(move || ob.pending(&ids)).await
    }

    /// One pass over what is ready now: keeps up to `concurrency` streams
    /// in flight, claiming another as each one settles, until no stream is
    /// ready. Returns what it delivered. The synchronous entry for tests and
    /// one-shot callers; nothing stops it early.
    pub async fn sync_once(&self) -> Result<SyncReport, OutboxError> {
        let mut never = std::future::pending::<()>();
        Ok(self.pass(&mut never).await?.0)
    }

    /// [`SyncActor::sync_once`], stopped early when `stop` resolves (see
    /// the module's "Stopping"). Returns what it delivered and whether
    /// `stop` resolved; once it has, it is not polled again.
    async fn pass<S: Future<Output = ()> + Unpin>(
        &self,
        stop: &mut S,
    ) -> Result<(SyncReport, bool), OutboxError> {
        // An event loop over three kinds of work, none of which waits for
        // another: claiming streams (a blocking outbox transaction),
        // delivering them (async, at most `concurrency` at once) and
        // settling them (blocking). Streams are claimed ahead into a local
        // queue; a stream stays leased until its settle commits, so no
        // worker (this one included) can claim it twice.
        let cfg = self.cfg;
        let mut report = SyncReport::default();
        // A stop reaches the delivery tasks through this channel rather
        // than `JoinSet::abort_all`: a task that sees it returns its claim,
        // which the pass still has to release (an aborted task's claim
        // would be lost with it and stay leased until the lease runs out).
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let mut delivering: JoinSet<(Claim, Outcome, Duration)> = JoinSet::new();
        let mut settling: JoinSet<Result<bool, OutboxError>> = JoinSet::new();
        let mut claiming: Option<PendingClaim> = None;
        let mut queued: std::collections::VecDeque<Claim> = Default::default();
        let mut ready = true;
        let mut stopping = false;
        // Payload bytes of the deliveries running.
        let mut in_flight = 0u64;
        loop {
            if stopping {
                // Claimed but never started: released as they are.
                while let Some(claim) = queued.pop_front() {
                    self.release(&mut settling, claim, Duration::ZERO);
                }
            } else {
                if ready && claiming.is_none() && queued.len() < cfg.concurrency {
                    let want = 2 * cfg.concurrency - queued.len();
                    let (ob, ids) = (Arc::clone(&self.outbox), self.ids.clone());
                    claiming = Some(tokio::task::spawn_blocking(move || {
                        ob.claim(&ids, want, cfg.max_entries, cfg.max_bytes, cfg.auth_probe)
                            .map(|c| (want, c))
                    }));
                }
                while delivering.len() < cfg.concurrency {
                    let Some(bytes) = queued.front().map(claim_bytes) else {
                        break;
                    };
                    if !delivering.is_empty()
                        && in_flight.saturating_add(bytes) > cfg.max_bytes_in_flight
                    {
                        break;
                    }
                    let Some(claim) = queued.pop_front() else {
                        break;
                    };
                    in_flight += bytes;
                    let Some(target) = self.targets.get(&claim.target).cloned() else {
                        continue;
                    };
                    let outbox = Arc::clone(&self.outbox);
                    let mut cancelled = cancelled.clone();
                    delivering.spawn(async move {
                        let start = Instant::now();
                        // Dropping the delivery future is what cancels it:
                        // its request, its lease renewal. `biased`: one that
                        // finished as the stop came counts as delivered.
                        let outcome = tokio::select! {
                            biased;
                            (n, err) = deliver_renewing(&outbox, target.as_ref(), &claim, cfg.renew_every) => {
                                Outcome::Done(n, err)
                            }
                            _ = cancelled.wait_for(|c| *c) => Outcome::Cancelled,
                        };
                        (claim, outcome, start.elapsed())
                    });
                }
            }
            if delivering.is_empty() && settling.is_empty() && claiming.is_none() {
                break;
            }
            tokio::select! {
                _ = &mut *stop, if !stopping => {
                    stopping = true;
                    let _ = cancel.send(true);
                }
                Some(joined) = delivering.join_next() => {
                    let (claim, outcome, took) = match joined {
                        Ok(x) => x,
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    };
                    in_flight = in_flight.saturating_sub(claim_bytes(&claim));
                    let (n, err) = match outcome {
                        Outcome::Done(n, err) => (n, err),
                        Outcome::Cancelled if Self::rewrites(&claim) => {
                            // A request the server already has may still
                            // land after the stop. For an immutable object
                            // that is harmless (the same bytes again), but a
                            // run document is rewritten: released now, a
                            // newer version delivered at once could be
                            // overwritten by this older one, for good. So
                            // the claim keeps its lease, which outlives the
                            // client's request timeout, and the stream is
                            // delivered again only after it has run out.
                            tracing::debug!(
                                target_id = %claim.target, stream = %claim.stream,
                                "delivery of a run document cancelled by a stop; its entries stay queued, leased until the request it may have sent is over"
                            );
                            continue;
                        }
                        Outcome::Cancelled => {
                            tracing::debug!(
                                target_id = %claim.target, stream = %claim.stream,
                                "delivery cancelled by a stop; its entries stay queued"
                            );
                            self.release(&mut settling, claim, took);
                            continue;
                        }
                    };
                    report.delivered += n as u64;
                    report.bytes += claim.entries[..n].iter().map(|e| e.payload.len()).sum::<u64>();
                    if err.is_some() {
                        report.failures += 1;
                    }
                    // Whatever a target said is stored in outbox.db, shown
                    // and logged: one redaction before it goes anywhere.
                    let message = err.as_ref().map(|e| crate::redact::scrub(&e.message));
                    match (&err, &message) {
                        (Some(e), Some(m)) if e.class == ErrorClass::Transient => tracing::debug!(
                            target_id = %claim.target, stream = %claim.stream, delivered = n,
                            class = e.class.as_str(), error = %m, "delivery failed; retrying with backoff"
                        ),
                        (Some(e), Some(m)) => tracing::warn!(
                            target_id = %claim.target, stream = %claim.stream, delivered = n,
                            class = e.class.as_str(), error = %m, "delivery refused"
                        ),
                        _ => tracing::trace!(
                            target_id = %claim.target, stream = %claim.stream, delivered = n, "delivered"
                        ),
                    }
                    let ob = Arc::clone(&self.outbox);
                    settling.spawn_blocking(move || {
                        let failure = err.as_ref().zip(message.as_deref()).map(|(e, m)| (e.class, m, e.retry_after));
                        ob.settle(&claim, n, took, failure).map(|_| err.is_none())
                    });
                }
                Some(settled) = settling.join_next() => {
                    // A stream delivered whole may have more behind its claim.
                    if settled.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))? {
                        ready = true;
                    }
                }
                // A claim transaction is never abandoned, even when
                // stopping: it may have leased streams, which are then
                // released at the top of the loop.
                claimed = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    let (want, claims) = claimed.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
                    // Fewer than asked: nothing else is ready until something settles.
                    ready = claims.len() >= want;
                    report.streams += claims.len() as u64;
                    queued.extend(claims);
                }
            }
        }
        Ok((report, stopping))
    }

    /// Whether a claim rewrites an object in place (a run document): one its
    /// cancelled request could overwrite with older bytes if it landed late.
    fn rewrites(claim: &Claim) -> bool {
        claim
            .entries
            .iter()
            .any(|e| OpKind::parse(&e.op) == Some(OpKind::RunSummary))
    }

    /// Settles `claim` with nothing delivered and no failure: its lease is
    /// released and its entries stay queued as they were (no attempt
    /// counted, no retry delay), due again at once.
    fn release(
        &self,
        settling: &mut JoinSet<Result<bool, OutboxError>>,
        claim: Claim,
        took: Duration,
    ) {
        let ob = Arc::clone(&self.outbox);
        settling.spawn_blocking(move || ob.settle(&claim, 0, took, None).map(|_| false));
    }

    /// Delivers until nothing is pending or `deadline` passes. Returns what
    /// was delivered; check [`SyncActor::pending`] for what is left. The
    /// deadline holds within a pass too: deliveries still under way when it
    /// passes are cancelled and their entries stay queued.
    pub async fn drain(&self, deadline: Instant) -> Result<SyncReport, OutboxError> {
        let mut total = SyncReport::default();
        let stop = tokio::time::sleep_until(deadline);
        tokio::pin!(stop);
        loop {
            let (r, stopped) = self.pass(&mut stop).await?;
            total.add(r);
            if stopped || self.pending().await?.0 == 0 || Instant::now() >= deadline {
                return Ok(total);
            }
            // Waiting cannot help while every target that has entries is
            // stopped (credentials refused, or misconfigured): it is probed
            // again only after a while, or after `sync retry`.
            if (r.streams == 0 || r.failures > 0) && self.all_stopped().await? {
                return Ok(total);
            }
            if r.streams == 0 || r.failures > 0 {
                // Nothing due: sleep until the next retry time (bounded).
                let wait = self
                    .until_next_due()
                    .await?
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                    _ = self.wake.notified() => {}
                }
            }
        }
    }

    /// Whether every target with pending entries is stopped.
    async fn all_stopped(&self) -> Result<bool, OutboxError> {
        let (ob, ids) = (Arc::clone(&self.outbox), self.ids.clone());
        let stats = blocking(move || ob.stats(Some(&ids))).await?;
        let mut pending = stats.iter().filter(|s| s.pending_entries > 0).peekable();
        Ok(pending.peek().is_some()
            && pending.all(|s| {
                matches!(
                    s.connectivity,
                    Some(Connectivity::AuthFailed | Connectivity::Misconfigured)
                )
            }))
    }

    async fn until_next_due(&self) -> Result<Duration, OutboxError> {
        let (ob, ids) = (Arc::clone(&self.outbox), self.ids.clone());
        let due = blocking(move || ob.next_due(&ids)).await?;
        let now = self.outbox.clock().now_ms();
        Ok(match due {
            Some(t) if t > now => Duration::from_millis((t - now) as u64).min(self.cfg.tick),
            Some(_) => Duration::from_millis(20),
            None => self.cfg.tick,
        })
    }

    /// Replays until `shutdown` resolves, then returns promptly, even in
    /// the middle of a pass: the deliveries under way are cancelled and
    /// their entries stay queued (see the module's "Stopping"). It does not
    /// drain: callers that want a final flush call [`SyncActor::drain`].
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<SyncReport, OutboxError> {
        tokio::pin!(shutdown);
        let mut total = SyncReport::default();
        // Pushed wake-ups, if this actor listens and the socket can be made;
        // `outbox.db` is then polled only as a fallback (a lost datagram, a
        // writer that cannot reach the socket).
        let (_listener, mut pushes) = match self.cfg.push_wake {
            true => match self.outbox.wake_listener() {
                Ok(l) => match l.socket().and_then(tokio::net::UnixDatagram::from_std) {
                    Ok(sock) => (Some(l), Some(sock)),
                    Err(e) => {
                        tracing::info!(error = %e, "no pushed wake-ups (the wake-up socket could not be used); polling outbox.db every 200 ms");
                        (None, None)
                    }
                },
                Err(e) => {
                    tracing::info!(error = %e, "no pushed wake-ups (a socket under SPARKWING_HOME/wake/ could not be made); polling outbox.db every 200 ms");
                    (None, None)
                }
            },
            false => (None, None),
        };
        let mut buf = [0u8; 64];
        loop {
            // Shutdown is honoured between passes even with a backlog.
            if futures_util::FutureExt::now_or_never(&mut shutdown).is_some() {
                return Ok(total);
            }
            // What this pass will see: a change after it wakes the next.
            let ob = Arc::clone(&self.outbox);
            let version = blocking(move || ob.data_version()).await?;
            // And during the pass: a shutdown cancels what is under way.
            let (r, stopped) = self.pass(&mut shutdown).await?;
            total.add(r);
            if stopped {
                return Ok(total);
            }
            if r.streams > 0 {
                tracing::debug!(
                    streams = r.streams,
                    delivered = r.delivered,
                    bytes = r.bytes,
                    failures = r.failures,
                    "delivery pass"
                );
            }
            if r.streams > 0 && r.failures == 0 {
                continue;
            }
            let poll_every = match pushes {
                Some(_) => self.cfg.tick,
                None => Duration::from_millis(200),
            };
            let idle_until = Instant::now() + self.until_next_due().await?;
            let mut woken = false;
            let mut pushed = false;
            loop {
                let step = idle_until
                    .saturating_duration_since(Instant::now())
                    .min(poll_every);
                tokio::select! {
                    _ = &mut shutdown => return Ok(total),
                    _ = self.wake.notified() => { woken = true; break }
                    ok = next_push(&pushes, &mut buf) => {
                        if ok {
                            pushed = true;
                            break;
                        }
                        // A broken socket: poll from now on.
                        tracing::info!("the wake-up socket failed; polling outbox.db every 200 ms");
                        pushes = None;
                    }
                    _ = tokio::time::sleep(step) => {}
                }
                let ob = Arc::clone(&self.outbox);
                let v = blocking(move || ob.data_version()).await?;
                if v != version {
                    woken = true;
                    break;
                }
                if Instant::now() >= idle_until {
                    break;
                }
            }
            // Writes that come together go out together: a run's own
            // actor lingers `linger`; a pushed daemon only PUSH_LINGER, so
            // successive versions of a run document still collapse into
            // one upload while delivery starts within milliseconds. A push
            // during the linger ends it.
            let linger = match (pushed, woken) {
                (true, _) => PUSH_LINGER,
                (false, true) => self.cfg.linger,
                (false, false) => Duration::ZERO,
            };
            if !linger.is_zero() {
                tokio::select! {
                    _ = &mut shutdown => return Ok(total),
                    _ = tokio::time::sleep(linger) => {}
                    _ = next_push(&pushes, &mut buf), if !pushed => {}
                }
            }
        }
    }
}

/// How long a pushed daemon waits for more writes before its pass.
const PUSH_LINGER: Duration = Duration::from_millis(3);

/// The next pushed wake-up (several at once count as one): `true`, or
/// `false` if the socket failed; never ready without a socket.
async fn next_push(pushes: &Option<tokio::net::UnixDatagram>, buf: &mut [u8]) -> bool {
    match pushes {
        Some(s) => {
            let ok = s.recv(buf).await.is_ok();
            while s.try_recv(buf).is_ok() {}
            ok
        }
        None => std::future::pending().await,
    }
}

/// Delivers a claim's entries in order; returns how many succeeded and the
/// error that stopped it, if any. `clock` is the outbox's, which set the
/// claim's lease.
pub async fn deliver(
    target: &dyn Target,
    claim: &Claim,
    clock: &dyn Clock,
) -> (usize, Option<TargetError>) {
    // A claim whose lease has run out (or nearly: this process may have
    // been paused, a laptop asleep) is not delivered: another worker may
    // have taken the stream since and written a newer run document, which
    // this older one must not overwrite. Settling it with nothing
    // delivered releases it for a fresh claim.
    if !lease_left(claim, clock.now_ms()) {
        return (0, None);
    }
    let entries = &claim.entries;
    // All payloads of the claim at once (bounded by the claim's max_bytes).
    let bodies = match read_payloads(entries).await {
        Ok(b) => b,
        Err((i, err)) => {
            let e = &entries[i];
            let message = format!("reading the local payload of {} {}: {err}", e.op, e.subject);
            // Entries before the unreadable one can still go out first.
            let (n, first_err) = deliver_some(target, entries, &[], i).await;
            return match first_err {
                Some(e) => (n, Some(e)),
                None => (
                    n,
                    Some(TargetError {
                        class: ErrorClass::Permanent,
                        message,
                        retry_after: None,
                    }),
                ),
            };
        }
    };
    deliver_some(target, entries, &bodies, entries.len()).await
}

/// Applies entries `0..upto` using `bodies` (read on demand when empty):
/// the claim's ops are built first, then handed to the target in one
/// ordered batch ([`Target::apply_all`]).
async fn deliver_some(
    target: &dyn Target,
    entries: &[sparkwing_outbox::Entry],
    bodies: &[Bytes],
    upto: usize,
) -> (usize, Option<TargetError>) {
    let mut ops = Vec::new();
    // How many entries each op carries (consecutive events share one).
    let mut counts = Vec::new();
    // Where building stopped early, and why: entries before it still go.
    let mut stop: Option<(usize, TargetError)> = None;
    let mut i = 0;
    while i < upto {
        // Each entry is one object, whose key and bytes were fixed when it
        // was enqueued. Only a run document is rewritten in place: of
        // consecutive versions of one, only the newest is sent (the older
        // ones would be overwritten at once).
        let mut n = 1;
        if entries[i].op == OpKind::RunSummary.as_str() {
            while i + n < upto
                && entries[i + n].op == OpKind::RunSummary.as_str()
                && entries[i + n].subject == entries[i].subject
            {
                n += 1;
            }
        }
        let last = i + n - 1;
        let e = &entries[last];
        let body = if bodies.is_empty() {
            match read_payloads(&entries[last..last + 1]).await {
                Ok(b) => concat(&b),
                Err((_, err)) => {
                    let message =
                        format!("reading the local payload of {} {}: {err}", e.op, e.subject);
                    stop = Some((
                        i,
                        TargetError {
                            class: ErrorClass::Permanent,
                            message,
                            retry_after: None,
                        },
                    ));
                    break;
                }
            }
        } else {
            bodies[last].clone()
        };
        match Op::from_entry(&e.op, &e.subject, e.seq, body) {
            Ok(op) => {
                ops.push(op);
                counts.push(n);
            }
            Err(err) => {
                stop = Some((i, err));
                break;
            }
        }
        i += n;
    }
    let (applied, err) = target.apply_all(&ops).await;
    let mut delivered: usize = counts[..applied].iter().sum();
    if err.is_some() {
        // A run document that failed stood for several versions: the older
        // ones are superseded by the newest, which stays queued with the
        // failure. Settling them keeps a retry (whatever its claim's
        // length) from sending a version older than one this attempt may
        // already have written before its answer was lost.
        delivered += counts.get(applied).map_or(0, |n| n - 1);
        return (delivered, err);
    }
    match stop {
        Some((at, e)) => (at, Some(e)),
        None => (delivered, None),
    }
}

/// [`deliver`], renewing the claim's lease every `every` until it is done.
/// Renewal runs on the async runtime, so a delivery stuck in a blocking
/// call (a hung share) still keeps its lease; only a process that is not
/// running at all (stopped, asleep) lets it lapse, and then [`deliver`]'s
/// check keeps it from writing when it wakes.
pub async fn deliver_renewing(
    outbox: &Arc<Outbox>,
    target: &dyn Target,
    claim: &Claim,
    every: Duration,
) -> (usize, Option<TargetError>) {
    let lease = Claim {
        target: claim.target.clone(),
        stream: claim.stream.clone(),
        entries: Vec::new(),
        lease_until: claim.lease_until,
        lease: claim.lease.clone(),
    };
    let renew = async {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            let (ob, l) = (Arc::clone(outbox), lease.clone());
            // A failed renewal is retried at the next tick; the lease still
            // has most of its time left.
            let _ = tokio::task::spawn_blocking(move || ob.renew(&[&l])).await;
        }
    };
    tokio::select! {
        r = deliver(target, claim, outbox.clock().as_ref()) => r,
        // (The renewal loop never ends by itself.)
        _ = renew => (0, None),
    }
}

/// How long before its lease runs out a claim is no longer started.
pub const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Whether `claim` still has enough of its lease left at `now_ms` (Unix
/// ms, by the outbox's clock) to start delivering.
pub fn lease_left(claim: &Claim, now_ms: i64) -> bool {
    now_ms + (LEASE_MARGIN.as_millis() as i64) < claim.lease_until
}

/// The payload bytes of a claim.
fn claim_bytes(claim: &Claim) -> u64 {
    claim.entries.iter().map(|e| e.payload.len()).sum()
}

fn concat(parts: &[Bytes]) -> Bytes {
    if parts.len() == 1 {
        return parts[0].clone();
    }
    let mut out = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    Bytes::from(out)
}

/// Every entry's payload. Inline payloads are copied on the executor; file
/// references are read on one blocking thread, each file opened once. On
/// failure, the index of the first unreadable entry.
async fn read_payloads(
    entries: &[sparkwing_outbox::Entry],
) -> Result<Vec<Bytes>, (usize, std::io::Error)> {
    if entries
        .iter()
        .all(|e| matches!(e.payload, Payload::Inline(_)))
    {
        return Ok(entries
            .iter()
            .map(|e| match &e.payload {
                Payload::Inline(b) => Bytes::copy_from_slice(b),
                Payload::File { .. } => Bytes::new(),
            })
            .collect());
    }
    let payloads: Vec<Payload> = entries.iter().map(|e| e.payload.clone()).collect();
    let joined = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut files: HashMap<std::path::PathBuf, std::fs::File> = HashMap::new();
        let mut out = Vec::with_capacity(payloads.len());
        let mut i = 0;
        while i < payloads.len() {
            match &payloads[i] {
                Payload::Inline(b) => {
                    out.push(Bytes::copy_from_slice(b));
                    i += 1;
                }
                Payload::File { path, offset, len } => {
                    // Consecutive ranges of one file (a log stream's chunks)
                    // are read with one call and handed out as slices.
                    let mut j = i + 1;
                    let mut end = offset + len;
                    while let Some(Payload::File {
                        path: p2,
                        offset: o2,
                        len: l2,
                    }) = payloads.get(j)
                    {
                        if p2 != path || *o2 != end {
                            break;
                        }
                        end += l2;
                        j += 1;
                    }
                    let read = (|| {
                        if !files.contains_key(path) {
                            files.insert(path.clone(), std::fs::File::open(path)?);
                        }
                        let f = files
                            .get_mut(path)
                            .ok_or_else(|| std::io::Error::other("file handle"))?;
                        f.seek(SeekFrom::Start(*offset))?;
                        let mut buf = vec![0u8; (end - offset) as usize];
                        f.read_exact(&mut buf)?;
                        Ok::<_, std::io::Error>(Bytes::from(buf))
                    })();
                    let whole = read.map_err(|e| (i, e))?;
                    let mut at = 0usize;
                    for p in &payloads[i..j] {
                        let n = p.len() as usize;
                        out.push(whole.slice(at..at + n));
                        at += n;
                    }
                    i = j;
                }
            }
        }
        Ok(out)
    })
    .await;
    match joined {
        Ok(r) => r,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::fault::FaultTarget;
    use crate::object::ObjectStoreTarget;
    use crate::target::sha256_hex;
    use sparkwing_outbox::backoff::{DecorrelatedJitter, DecorrelatedJitterBuilder};
    use sparkwing_outbox::{NewEntry, Payload, LEASE};

    struct Rig {
        _home: tempfile::TempDir,
        _remote: tempfile::TempDir,
        outbox: Arc<Outbox>,
        target: Arc<FaultTarget>,
        remote: std::path::PathBuf,
    }

    /// Retries within 10 ms.
    fn quick() -> DecorrelatedJitterBuilder {
        DecorrelatedJitterBuilder {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(10),
            max_times: None,
            seed: None,
        }
    }

    fn rig() -> Rig {
        rig_with(quick())
    }

    /// An outbox on tokio's clock (so tests on paused time assert retry
    /// times and leases exactly) and a filesystem remote behind faults.
    fn rig_with(policy: DecorrelatedJitterBuilder) -> Rig {
        let home = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        let outbox = Arc::new(
            Outbox::open_with(home.path(), policy)
                .unwrap()
                .with_clock(Arc::new(TokioClock::new())),
        );
        let target = Arc::new(FaultTarget::new(Arc::new(ObjectStoreTarget::filesystem(
            remote.path(),
        ))));
        let remote_path = remote.path().to_path_buf();
        Rig {
            _home: home,
            _remote: remote,
            outbox,
            target,
            remote: remote_path,
        }
    }

    fn actor(r: &Rig) -> SyncActor {
        let cfg = SyncConfig {
            auth_probe: Duration::from_secs(3600),
            ..Default::default()
        };
        SyncActor::new(
            Arc::clone(&r.outbox),
            vec![r.target.clone() as Arc<dyn Target>],
            cfg,
        )
    }

    fn log(run: &str, job: &str, seq: i64, text: &str) -> NewEntry {
        NewEntry {
            stream: crate::target::stream::log(run, job),
            seq,
            op: OpKind::LogChunk.as_str().into(),
            subject: crate::target::stream::log_subject(run, job),
            payload: Payload::Inline(text.as_bytes().to_vec()),
        }
    }

    fn event(run: &str, seq: i64) -> NewEntry {
        NewEntry {
            stream: crate::target::stream::state(run),
            seq,
            op: OpKind::StateEvents.as_str().into(),
            subject: run.into(),
            payload: Payload::Inline(format!("{{\"seq\":{seq}}}\n").into_bytes()),
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// Another worker on the same `outbox.db` and clock (a second process,
    /// as far as leases go: another owner).
    fn other_worker(r: &Rig) -> Outbox {
        Outbox::open_with(r._home.path(), quick())
            .unwrap()
            .with_clock(Arc::clone(r.outbox.clock()))
    }

    fn claim_all(ob: &Outbox, r: &Rig) -> Vec<Claim> {
        ob.claim(
            &[r.target.id().to_string()],
            8,
            100,
            1 << 20,
            Duration::ZERO,
        )
        .unwrap()
    }

    /// The leases held in `outbox.db`: `(stream, until)`.
    fn leases(r: &Rig) -> Vec<(String, i64)> {
        let db = rusqlite::Connection::open(r.outbox.path()).unwrap();
        let mut st = db
            .prepare("SELECT stream, until FROM leases ORDER BY stream")
            .unwrap();
        st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The stored backoff delay and attempt count of the only queued entry.
    fn backoff_of_head(r: &Rig) -> (Duration, i64) {
        let db = rusqlite::Connection::open(r.outbox.path()).unwrap();
        db.query_row(
            "SELECT backoff_ms, attempts FROM entries ORDER BY stream, seq LIMIT 1",
            [],
            |row| {
                Ok((
                    Duration::from_millis(row.get::<_, i64>(0)? as u64),
                    row.get(1)?,
                ))
            },
        )
        .unwrap()
    }

    fn ms(d: Duration) -> i64 {
        d.as_millis() as i64
    }

    #[tokio::test]
    async fn delivers_streams_in_order_one_object_per_entry() {
        let r = rig();
        let id = r.target.id().to_string();
        let mut entries: Vec<NewEntry> = (0..5)
            .map(|i| log("R1", "a", i, &format!("a{i}\n")))
            .collect();
        entries.extend((1..=10).map(|i| event("R1", i)));
        entries.extend((0..3).map(|i| log("R1", "b", i, &format!("b{i}\n"))));
        r.outbox.enqueue(&id, &entries, &[]).unwrap();
        let a = actor(&r);
        let rep = a.drain(far()).await.unwrap();
        assert_eq!(rep.delivered, 18);
        assert_eq!(a.pending().await.unwrap(), (0, 0));
        // Each entry is its own object, with exactly its bytes: the
        // replicator decided the segment, the actor never regroups.
        for i in 1..=10 {
            let seg =
                std::fs::read_to_string(r.remote.join(format!("runs/R1/events/{i:020}.ndjson")))
                    .unwrap();
            assert_eq!(seg, format!("{{\"seq\":{i}}}\n"));
        }
        let journal = r.target.journal();
        let a_chunks: Vec<_> = journal
            .iter()
            .filter(|k| k.starts_with("R1/a/"))
            .cloned()
            .collect();
        let mut sorted = a_chunks.clone();
        sorted.sort();
        assert_eq!(a_chunks, sorted, "a stream replays in order");
        let text: String = (0..5)
            .map(|i| std::fs::read_to_string(r.remote.join(format!("R1/a/{i:010}.log"))).unwrap())
            .collect();
        assert_eq!(text, "a0\na1\na2\na3\na4\n");
    }

    #[tokio::test]
    async fn consecutive_run_documents_collapse_to_the_newest() {
        let r = rig();
        let id = r.target.id().to_string();
        let doc = |v: i64| NewEntry {
            stream: "summary/R1".into(),
            seq: v,
            op: OpKind::RunSummary.as_str().into(),
            subject: "R1".into(),
            payload: Payload::Inline(format!("{{\"v\":{v}}}").into_bytes()),
        };
        r.outbox
            .enqueue(&id, &[doc(1), doc(2), doc(3)], &[])
            .unwrap();
        let a = actor(&r);
        let rep = a.drain(far()).await.unwrap();
        assert_eq!(rep.delivered, 3, "all three settled");
        let writes: Vec<_> = r
            .target
            .journal()
            .into_iter()
            .filter(|k| k == "runs/R1/run.json")
            .collect();
        assert_eq!(writes.len(), 1, "one PUT for three versions");
        let body = std::fs::read_to_string(r.remote.join("runs/R1/run.json")).unwrap();
        assert_eq!(body, "{\"v\":3}");
    }

    /// A worker paused past its lease (a laptop asleep) must not write what
    /// it claimed: another may have delivered newer versions since. The
    /// cut-off is exact: [`LEASE_MARGIN`] before the lease runs out.
    #[tokio::test(start_paused = true)]
    async fn a_claim_past_its_lease_is_not_delivered_and_is_released() {
        let r = rig();
        let id = r.target.id().to_string();
        r.outbox
            .enqueue(&id, &[log("R1", "a", 0, "a0\n")], &[])
            .unwrap();
        let clock = Arc::clone(r.outbox.clock());
        let claim = claim_all(&r.outbox, &r).remove(0);
        assert_eq!(claim.lease_until, clock.now_ms() + ms(LEASE));
        tokio::time::advance(LEASE - LEASE_MARGIN - Duration::from_millis(1)).await;
        assert!(
            lease_left(&claim, clock.now_ms()),
            "1 ms before the cut-off"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            deliver(r.target.as_ref(), &claim, clock.as_ref()).await,
            (0, None)
        );
        assert!(r.target.journal().is_empty(), "nothing was written");
        // Still leased until the lease itself runs out.
        let other = other_worker(&r);
        assert!(claim_all(&other, &r).is_empty());
        r.outbox
            .settle(&claim, 0, Duration::from_millis(1), None)
            .unwrap();
        // Released: a fresh claim delivers it, once.
        let a = actor(&r);
        assert_eq!(a.drain(far()).await.unwrap().delivered, 1);
        assert_eq!(r.target.journal(), vec!["R1/a/0000000000.log".to_string()]);
    }

    /// A slow delivery renews its lease every `renew_every` (a quarter of
    /// the lease), so no other worker takes the stream over while it is
    /// still writing: here one that takes three leases' time.
    #[tokio::test(start_paused = true)]
    async fn a_slow_delivery_keeps_its_lease_renewed() {
        let r = rig();
        let id = r.target.id().to_string();
        r.outbox
            .enqueue(&id, &[log("R1", "a", 0, "a0\n")], &[])
            .unwrap();
        r.target.set_delay(LEASE * 3);
        let a = Arc::new(actor(&r));
        let every = a.cfg.renew_every;
        assert_eq!(every, LEASE / 4);
        let clock = Arc::clone(r.outbox.clock());
        let other = other_worker(&r);
        let t0 = clock.now_ms();
        let task = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.sync_once().await }
        });
        // Between renewals (never at one, so the order of two timers due
        // at the same instant does not matter).
        tokio::time::sleep(Duration::from_secs(5)).await;
        while clock.now_ms() - t0 < ms(LEASE * 3) {
            let since = clock.now_ms() - t0;
            let renewed_at = t0 + since / ms(every) * ms(every);
            assert_eq!(
                leases(&r),
                vec![(
                    crate::target::stream::log("R1", "a"),
                    renewed_at + ms(LEASE)
                )],
                "{since} ms into the delivery"
            );
            assert!(
                claim_all(&other, &r).is_empty(),
                "{since} ms into the delivery, another worker took the stream"
            );
            assert!(!task.is_finished());
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert_eq!(task.await.unwrap().unwrap().delivered, 1);
        assert!(leases(&r).is_empty(), "released once settled");
        assert_eq!(r.target.journal(), vec!["R1/a/0000000000.log".to_string()]);
    }

    /// Each transient failure reschedules the stream exactly its backoff
    /// later, the delay resuming from the previous one (decorrelated jitter,
    /// seeded so the schedule is known), and nothing is tried before.
    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_then_recover() {
        let policy = DecorrelatedJitterBuilder {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_times: None,
            seed: Some(42),
        };
        let r = rig_with(policy);
        let id = r.target.id().to_string();
        r.outbox
            .enqueue(
                &id,
                &[log("R", "j", 0, "x\n"), log("R", "j", 1, "y\n")],
                &[],
            )
            .unwrap();
        let failures = 6;
        r.target.fail_next(failures, ErrorClass::Transient, None);
        let a = actor(&r);
        let clock = Arc::clone(r.outbox.clock());
        let mut prev = Duration::ZERO;
        for attempt in 1..=failures as i64 {
            let rep = a.sync_once().await.unwrap();
            assert_eq!((rep.streams, rep.delivered, rep.failures), (1, 0, 1));
            let st = &r.outbox.stats(None).unwrap()[0];
            assert_eq!(st.connectivity, Some(Connectivity::Offline));
            let (delay, attempts) = backoff_of_head(&r);
            assert_eq!(attempts, attempt);
            let expected = DecorrelatedJitter::resume(policy, prev).next().unwrap();
            assert_eq!(delay, expected, "attempt {attempt} resumes from {prev:?}");
            assert_eq!(
                r.outbox.next_due(std::slice::from_ref(&id)).unwrap(),
                Some(clock.now_ms() + ms(delay)),
                "attempt {attempt}: due exactly its delay later"
            );
            tokio::time::advance(delay - Duration::from_millis(1)).await;
            assert_eq!(
                a.sync_once().await.unwrap().streams,
                0,
                "attempt {attempt}: too early"
            );
            tokio::time::advance(Duration::from_millis(1)).await;
            prev = delay;
        }
        assert!(prev > policy.base * 3, "the delays grew: {prev:?}");
        let rep = a.sync_once().await.unwrap();
        assert_eq!((rep.delivered, rep.failures), (2, 0));
        assert_eq!(
            r.outbox.stats(None).unwrap()[0].connectivity,
            Some(Connectivity::Online)
        );
        assert_eq!(
            r.target.journal(),
            vec![
                "R/j/0000000000.log".to_string(),
                "R/j/0000000001.log".to_string()
            ]
        );
    }

    /// A `Retry-After` longer than the backoff is waited out exactly.
    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let r = rig();
        let id = r.target.id().to_string();
        r.outbox
            .enqueue(&id, &[log("R", "j", 0, "x\n")], &[])
            .unwrap();
        let asked = Duration::from_secs(30);
        r.target.fail_next(1, ErrorClass::Transient, Some(asked));
        let a = actor(&r);
        let clock = Arc::clone(r.outbox.clock());
        assert_eq!(a.sync_once().await.unwrap().failures, 1);
        let (delay, _) = backoff_of_head(&r);
        assert!(delay < asked, "the backoff alone would retry sooner");
        assert_eq!(
            r.outbox.next_due(std::slice::from_ref(&id)).unwrap(),
            Some(clock.now_ms() + ms(asked))
        );
        tokio::time::advance(asked - Duration::from_millis(1)).await;
        assert_eq!(
            a.sync_once().await.unwrap().streams,
            0,
            "nothing is due before Retry-After"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(a.sync_once().await.unwrap().delivered, 1);
    }

    /// Issue 12: a shutdown during a pass is honoured at once, not after
    /// the deliveries under way end (they could take minutes): they are
    /// cancelled, their claims released, their entries still queued as if
    /// never tried; the next pass delivers each exactly once.
    #[tokio::test(start_paused = true)]
    async fn a_shutdown_during_a_slow_delivery_cancels_it_and_keeps_its_entries() {
        let r = rig();
        let id = r.target.id().to_string();
        let entries = [
            log("R", "a", 0, "a0\n"),
            log("R", "a", 1, "a1\n"),
            log("R", "b", 0, "b0\n"),
        ];
        r.outbox.enqueue(&id, &entries, &[]).unwrap();
        r.target.set_delay(Duration::from_secs(3600));
        let a = Arc::new(actor(&r));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn({
            let a = Arc::clone(&a);
            async move {
                a.run(async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(leases(&r).len(), 2, "both streams are being delivered");
        let asked = Instant::now();
        stop.send(()).unwrap();
        let report = runner.await.unwrap().unwrap();
        assert_eq!(
            Instant::now() - asked,
            Duration::ZERO,
            "run returned without waiting for the deliveries under way"
        );
        assert_eq!((report.delivered, report.failures), (0, 0));
        assert!(r.target.journal().is_empty(), "nothing was written");
        // Released, not acknowledged, not failed: due again at once.
        assert!(leases(&r).is_empty(), "every claim is released");
        assert_eq!(a.pending().await.unwrap().0, 3);
        assert_eq!(
            backoff_of_head(&r),
            (Duration::ZERO, 0),
            "no attempt counted"
        );
        assert_eq!(r.outbox.stats(None).unwrap()[0].connectivity, None);
        // Delivered later, exactly once, byte for byte.
        r.target.set_delay(Duration::ZERO);
        let rep = a.drain(far()).await.unwrap();
        assert_eq!((rep.delivered, a.pending().await.unwrap().0), (3, 0));
        let mut journal = r.target.journal();
        journal.sort();
        assert_eq!(
            journal,
            [
                "R/a/0000000000.log",
                "R/a/0000000001.log",
                "R/b/0000000000.log"
            ]
        );
        for (key, body) in [
            ("R/a/0000000000.log", "a0\n"),
            ("R/a/0000000001.log", "a1\n"),
            ("R/b/0000000000.log", "b0\n"),
        ] {
            assert_eq!(std::fs::read(r.remote.join(key)).unwrap(), body.as_bytes());
        }
    }

    /// A run document's delivery cancelled by a stop keeps its lease (a
    /// request the server already has may land late, and a newer version
    /// delivered meanwhile would be overwritten by it): the stream is
    /// delivered again only once the lease has run out, which is after the
    /// client's request timeout; then exactly the newest version lands.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_run_document_stays_leased_until_its_request_is_over() {
        assert!(
            sparkwing_outbox::LEASE - SyncConfig::default().renew_every
                > crate::object::REQUEST_TIMEOUT,
            "a kept lease outlives any request the client still has open"
        );
        let r = rig();
        let id = r.target.id().to_string();
        let doc = |v: i64| NewEntry {
            stream: "summary/R1".into(),
            seq: v,
            op: OpKind::RunSummary.as_str().into(),
            subject: "R1".into(),
            payload: Payload::Inline(format!("{{\"v\":{v}}}").into_bytes()),
        };
        r.outbox
            .enqueue(&id, &[doc(1), log("R1", "a", 0, "a0\n")], &[])
            .unwrap();
        r.target.set_delay(Duration::from_secs(3600));
        let a = Arc::new(actor(&r));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn({
            let a = Arc::clone(&a);
            async move {
                a.run(async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.send(()).unwrap();
        runner.await.unwrap().unwrap();
        // The log chunk's claim is released; the document's is kept.
        let held = leases(&r);
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].0, "summary/R1");
        r.target.set_delay(Duration::ZERO);
        // A newer version arrives; a drain now delivers the log chunk only.
        r.outbox.enqueue(&id, &[doc(2)], &[]).unwrap();
        let rep = a.sync_once().await.unwrap();
        assert_eq!(rep.delivered, 1);
        assert_eq!(r.target.journal(), ["R1/a/0000000000.log"]);
        assert!(!r.remote.join("runs/R1/run.json").exists());
        // Once the lease has run out, the newest version lands, once.
        tokio::time::advance(sparkwing_outbox::LEASE).await;
        let rep = a.drain(far()).await.unwrap();
        assert_eq!((rep.delivered, a.pending().await.unwrap().0), (2, 0));
        let writes = r
            .target
            .journal()
            .into_iter()
            .filter(|k| k == "runs/R1/run.json")
            .count();
        assert_eq!(writes, 1);
        assert_eq!(
            std::fs::read_to_string(r.remote.join("runs/R1/run.json")).unwrap(),
            "{\"v\":2}"
        );
    }

    /// A drain's deadline holds within a pass: a delivery still under way
    /// when it passes is cancelled and its entries stay queued.
    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_at_its_deadline_during_a_slow_delivery() {
        let r = rig();
        let id = r.target.id().to_string();
        r.outbox
            .enqueue(&id, &[log("R", "a", 0, "a0\n")], &[])
            .unwrap();
        r.target.set_delay(Duration::from_secs(3600));
        let a = actor(&r);
        let start = Instant::now();
        let rep = a.drain(start + Duration::from_secs(10)).await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        assert_eq!(rep.delivered, 0);
        assert!(leases(&r).is_empty(), "the claim is released");
        assert_eq!(a.pending().await.unwrap().0, 1);
        r.target.set_delay(Duration::ZERO);
        assert_eq!(a.drain(far()).await.unwrap().delivered, 1);
        assert_eq!(r.target.journal(), vec!["R/a/0000000000.log".to_string()]);
        assert_eq!(
            std::fs::read(r.remote.join("R/a/0000000000.log")).unwrap(),
            b"a0\n"
        );
    }

    /// A cancelled delivery to a directory stops writing: its batch runs on
    /// a blocking thread, which dropping the future does not stop by
    /// itself, and the claim is released right after (real time: the
    /// thread is real).
    #[tokio::test]
    async fn a_cancelled_directory_batch_stops_before_its_next_object() {
        let remote = tempfile::tempdir().unwrap();
        let target = ObjectStoreTarget::filesystem(remote.path());
        let ops: Vec<Op> = (0..10_000)
            .map(|i| {
                let subject = crate::target::stream::log_subject("R", "j");
                Op::from_entry(
                    OpKind::LogChunk.as_str(),
                    &subject,
                    i,
                    Bytes::from_static(b"x\n"),
                )
                .unwrap()
            })
            .collect();
        // Polled once (the batch starts on its thread), then dropped.
        let started = tokio::time::timeout(Duration::ZERO, target.apply_all(&ops)).await;
        assert!(started.is_err(), "the batch was still being written");
        let written = || std::fs::read_dir(remote.path().join("R/j")).map_or(0, |d| d.count());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let at_rest = written();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(written(), at_rest, "the thread went on writing");
        assert!(at_rest < ops.len(), "all {at_rest} objects were written");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_run_document_leaves_only_its_newest_version_queued() {
        let r = rig();
        let id = r.target.id().to_string();
        let doc = |v: i64| NewEntry {
            stream: "summary/R".into(),
            seq: v,
            op: OpKind::RunSummary.as_str().into(),
            subject: "R".into(),
            payload: Payload::Inline(format!("{{\"v\":{v}}}").into_bytes()),
        };
        r.outbox
            .enqueue(&id, &[doc(1), doc(2), doc(3)], &[])
            .unwrap();
        // Version 3 stands for all three; its answer may have been lost
        // after it was written.
        r.target.fail_next(1, ErrorClass::Transient, None);
        let ids = [id.clone()];
        let claim = r
            .outbox
            .claim(&ids, 1, 10, u64::MAX, Duration::ZERO)
            .unwrap();
        let (n, err) = deliver(r.target.as_ref(), &claim[0], r.outbox.clock().as_ref()).await;
        assert_eq!(n, 2, "versions 1 and 2 are superseded by 3");
        let e = err.unwrap();
        r.outbox
            .settle(
                &claim[0],
                n,
                Duration::ZERO,
                Some((e.class, &e.message, None)),
            )
            .unwrap();
        // Past the policy's cap: the retry is due.
        tokio::time::advance(quick().cap).await;
        // So a retry, even one entry long, never sends an older version.
        let again = r
            .outbox
            .claim(&ids, 1, 1, u64::MAX, Duration::ZERO)
            .unwrap();
        assert_eq!(again[0].entries[0].seq, 3);
    }

    #[tokio::test]
    async fn a_permanent_failure_quarantines_one_entry_and_other_streams_flow() {
        let r = rig();
        let id = r.target.id().to_string();
        // A malformed entry (bad subject) is permanent by construction.
        let mut bad = log("R", "j", 0, "x\n");
        bad.subject = "../escape".into();
        bad.stream = "log/bad".into();
        r.outbox
            .enqueue(
                &id,
                &[
                    bad,
                    log("R", "ok", 0, "fine\n"),
                    log("R", "ok", 1, "fine2\n"),
                ],
                &[],
            )
            .unwrap();
        let a = actor(&r);
        a.drain(Instant::now() + Duration::from_millis(300))
            .await
            .unwrap();
        let st = &r.outbox.stats(None).unwrap()[0];
        assert_eq!(st.quarantined, 1);
        assert_eq!(st.pending_entries, 0);
        assert_eq!(st.last_error_class.as_deref(), Some("permanent"));
        assert!(r.remote.join("R/ok/0000000001.log").exists());
    }

    #[tokio::test]
    async fn an_auth_failure_stops_the_target_and_keeps_its_entries() {
        stops_the_target_and_keeps_its_entries(ErrorClass::Auth, Connectivity::AuthFailed).await;
    }

    /// A missing bucket, a 400, a 501: the setup is wrong, so the target
    /// stops as it does for refused credentials (issue 11).
    #[tokio::test]
    async fn a_configuration_failure_stops_the_target_and_keeps_its_entries() {
        stops_the_target_and_keeps_its_entries(ErrorClass::Config, Connectivity::Misconfigured)
            .await;
    }

    async fn stops_the_target_and_keeps_its_entries(class: ErrorClass, shown: Connectivity) {
        let r = rig();
        let id = r.target.id().to_string();
        r.outbox
            .enqueue(
                &id,
                &[log("R", "a", 0, "x\n"), log("R", "b", 0, "y\n")],
                &[],
            )
            .unwrap();
        r.target.fail_next(100, class, None);
        let a = actor(&r);
        // A drain with no deadline to speak of returns: waiting cannot help
        // a stopped target (the bound only keeps a regression from hanging).
        tokio::time::timeout(Duration::from_secs(120), a.drain(far()))
            .await
            .expect("drain returns once every target with entries is stopped")
            .unwrap();
        assert_eq!(a.pending().await.unwrap().0, 2, "entries are kept");
        let st = &r.outbox.stats(None).unwrap()[0];
        assert_eq!(st.connectivity, Some(shown));
        assert_eq!(st.quarantined, 0, "nothing is quarantined");
        assert!(r.target.journal().is_empty());
        // The setup fixed and the stop lifted: everything flows.
        r.target.fail_next(0, class, None);
        r.outbox.retry(None).unwrap();
        a.drain(far()).await.unwrap();
        assert_eq!(a.pending().await.unwrap().0, 0);
    }

    #[tokio::test]
    async fn entries_are_delivered_only_to_their_own_target() {
        let r = rig();
        let other = tempfile::tempdir().unwrap();
        let other_t = Arc::new(ObjectStoreTarget::filesystem(other.path()));
        r.outbox
            .enqueue(other_t.id(), &[log("R", "elsewhere", 0, "z\n")], &[])
            .unwrap();
        r.outbox
            .enqueue(r.target.id(), &[log("R", "mine", 0, "m\n")], &[])
            .unwrap();
        let a = actor(&r);
        a.drain(far()).await.unwrap();
        assert!(r.remote.join("R/mine/0000000000.log").exists());
        assert!(!r.remote.join("R/elsewhere").exists());
        assert!(
            !other.path().join("R").exists(),
            "the other target's actor has not run"
        );
        assert_eq!(r.outbox.pending(&[other_t.id().to_string()]).unwrap().0, 1);
    }

    #[tokio::test]
    async fn a_manifest_waits_for_its_blobs() {
        let r = rig();
        let id = r.target.id().to_string();
        let body = b"blob".to_vec();
        let sha = sha256_hex(&body);
        let key = sha256_hex(b"key");
        let entries = vec![
            NewEntry {
                stream: "cache/k".into(),
                seq: 0,
                op: OpKind::CacheBlob.as_str().into(),
                subject: sha.clone(),
                payload: Payload::Inline(body),
            },
            NewEntry {
                stream: "cache/k".into(),
                seq: 1,
                op: OpKind::CacheManifest.as_str().into(),
                subject: key.clone(),
                payload: Payload::Inline(b"{}".to_vec()),
            },
        ];
        r.outbox.enqueue(&id, &entries, &[]).unwrap();
        r.target.fail_next(1, ErrorClass::Transient, None);
        let a = actor(&r);
        a.sync_once().await.unwrap();
        assert!(
            !r.remote.join(format!("keys/{key}.json")).exists(),
            "no manifest before its blob"
        );
        a.drain(far()).await.unwrap();
        assert_eq!(
            r.target.journal(),
            vec![crate::target::blob_key(&sha), format!("keys/{key}.json")]
        );
    }

    #[tokio::test]
    async fn a_listening_actor_wakes_on_another_connections_enqueue() {
        let r = rig();
        // No polling to speak of: only a pushed wake-up can start it.
        let a = Arc::new(SyncActor::new(
            Arc::new(Outbox::open(r._home.path()).unwrap()),
            vec![Arc::clone(&r.target) as Arc<dyn Target>],
            SyncConfig {
                push_wake: true,
                tick: Duration::from_secs(3600),
                ..Default::default()
            },
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                a.run(async {
                    let _ = stopped.await;
                })
                .await
            })
        };
        // Until its socket is bound.
        let wake_dir = r._home.path().join(sparkwing_outbox::wake::DIR);
        while std::fs::read_dir(&wake_dir).map_or(true, |mut d| d.next().is_none()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Another connection (another process's, as far as SQLite knows).
        r.outbox
            .enqueue(r.target.id(), &[log("R", "pushed", 0, "x\n")], &[])
            .unwrap();
        let landed = r.remote.join("R/pushed/0000000000.log");
        tokio::time::timeout(Duration::from_secs(60), async {
            while !landed.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("delivered on the push, not on an hour-long poll");
        let _ = stop.send(());
        runner.await.unwrap().unwrap();
        assert!(
            std::fs::read_dir(&wake_dir).unwrap().next().is_none(),
            "the socket is removed when the actor stops"
        );
    }

    #[tokio::test]
    async fn run_wakes_on_notify_and_stops_on_shutdown() {
        let r = rig();
        let id = r.target.id().to_string();
        let a = Arc::new(actor(&r));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let a2 = Arc::clone(&a);
        let task = tokio::spawn(async move {
            a2.run(async {
                let _ = rx.await;
            })
            .await
        });
        r.outbox
            .enqueue(&id, &[log("R", "j", 0, "live\n")], &[])
            .unwrap();
        a.waker().notify_one();
        let start = Instant::now();
        while !r.remote.join("R/j/0000000000.log").exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "not delivered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
