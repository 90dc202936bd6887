//! `sparkwing sync status | daemon | flush | retry` (`verify` is in
//! `verify.rs`), and the words used to
//! report on the outbox.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sparkwing_outbox::{Connectivity, TargetStats, OUTBOX_FILE};
use sparkwing_sync::SyncConfig;

use crate::profile::Resolved;
use crate::remote::remote_of;
use crate::remote::session::{
    ago, blocking_reason, clause, stats_json, SyncSession, RECONCILE_EVERY,
};
use crate::remote::Remote;
use crate::util::{human_bytes, human_duration, now_ms};

fn stats_text(s: &TargetStats) -> String {
    let mut out = format!("{}\n", s.target);
    let conn = match (s.connectivity, s.since) {
        (Some(c), Some(t)) => format!("{} (since {} ago)", c.as_str(), ago(t)),
        _ => "unknown (nothing sent or read yet)".into(),
    };
    out.push_str(&format!("  connectivity   {conn}\n"));
    out.push_str(&format!(
        "  pending        {} write(s), {}\n",
        s.pending_entries,
        human_bytes(s.pending_bytes)
    ));
    for (op, n, b) in &s.pending_by_op {
        out.push_str(&format!("    {op:<15} {n} ({})\n", human_bytes(*b)));
    }
    if let Some(t) = s.oldest_pending_at {
        out.push_str(&format!("  oldest         {} ago\n", ago(t)));
    }
    if let Some(t) = s.next_attempt_at.filter(|t| *t > now_ms()) {
        out.push_str(&format!(
            "  next attempt   in {}\n",
            human_duration(Duration::from_millis((t - now_ms()) as u64))
        ));
    }
    out.push_str(&format!("  quarantined    {}\n", s.quarantined));
    out.push_str(&format!(
        "  last success   {}\n",
        s.last_success_at
            .map(|t| format!("{} ago", ago(t)))
            .unwrap_or_else(|| "never".into())
    ));
    if let Some(e) = s
        .last_error
        .as_deref()
        .map(|e| crate::util::one_line(e, 500))
    {
        out.push_str(&format!(
            "  last error     [{}] {e}\n",
            s.last_error_class.as_deref().unwrap_or("?")
        ));
    }
    let eta = match s.drain_estimate_secs() {
        Some(x) if s.pending_entries == 0 => {
            let _ = x;
            "nothing to drain".to_string()
        }
        Some(x) => format!("about {}", human_duration(Duration::from_secs_f64(x))),
        None => "unknown until a delivery succeeds".into(),
    };
    out.push_str(&format!("  drain estimate {eta}\n"));
    out
}

pub fn status(
    home: &std::path::Path,
    resolved: &Resolved,
    explicit: bool,
    json_out: bool,
) -> Result<()> {
    let remote = remote_of(resolved)?;
    let ids: Option<Vec<String>> = match (&remote, explicit) {
        (Some(r), _) => Some(r.targets().iter().map(|t| t.id().to_string()).collect()),
        (None, true) => Some(Vec::new()),
        (None, false) => None,
    };
    let stats = if home.join(OUTBOX_FILE).exists() {
        crate::remote::replicate::open_outbox(home)?.stats(ids.as_deref())?
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    if json_out {
        let v = json!({
            "profile": resolved.name,
            "targets": stats.iter().map(stats_json).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    if stats.is_empty() {
        writeln!(
            out,
            "nothing queued: profile \"{}\" {}",
            resolved.name,
            if remote.is_some() {
                "has no writes waiting"
            } else {
                "keeps everything local (Mode 1)"
            }
        )?;
        return Ok(());
    }
    for s in &stats {
        writeln!(out, "{}", stats_text(s))?;
    }
    Ok(())
}

/// The session of `flush` and `daemon`, reconciled once.
fn open_sync(home: &std::path::Path, remote: &Remote, concurrency: usize) -> Result<SyncSession> {
    let cfg = SyncConfig {
        concurrency,
        // A daemon starts on another process's enqueue at once (only its
        // `run` listens; flush and retry just drain).
        push_wake: true,
        ..SyncConfig::default()
    };
    let session = SyncSession::open(home, remote, cfg)?;
    session.reconcile_once()?;
    Ok(session)
}

/// `sync flush`: exits 0 only once nothing is queued for the profile.
pub fn flush(
    home: &std::path::Path,
    resolved: &Resolved,
    timeout: Duration,
    concurrency: usize,
) -> Result<u8> {
    let Some(remote) = remote_of(resolved)? else {
        crate::say!(
            "sparkwing: profile \"{}\" keeps everything local (Mode 1); nothing to flush",
            resolved.name
        );
        return Ok(0);
    };
    let session = open_sync(home, &remote, concurrency)?;
    let actor = &session.actor;
    let rt = crate::util::runtime()?;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let deadline = started + timeout;
    let mut done = sparkwing_sync::SyncReport::default();
    let left = rt.block_on(async {
        let second = Duration::from_secs(1);
        let mut progress = tokio::time::interval_at(Instant::now() + second, second);
        loop {
            // One drain to the deadline, with the progress line printed
            // beside it: a drain cut into steps would cancel, at each
            // step's end, an upload that takes longer than a step.
            let drained = actor.drain(deadline);
            tokio::pin!(drained);
            loop {
                tokio::select! {
                    r = &mut drained => {
                        done.add(r?);
                        break;
                    }
                    _ = progress.tick(), if tty => {
                        let (n, bytes) = actor.pending().await?;
                        crate::say!(
                            "sparkwing: flushing: {n} write(s) ({}) left{}",
                            human_bytes(bytes),
                            clause(&blocking_reason(actor).await)
                        );
                    }
                }
            }
            let (n, bytes) = actor.pending().await?;
            if n == 0 || Instant::now() >= deadline {
                return anyhow::Ok((n, bytes));
            }
            // The drain ended early because every target with entries is
            // stopped (credentials refused, misconfigured): look again
            // every second until the deadline.
            tokio::time::sleep_until((Instant::now() + second).min(deadline)).await;
        }
    })?;
    let quarantined: u64 = actor
        .outbox()
        .stats(Some(actor.target_ids()))?
        .iter()
        .map(|s| s.quarantined)
        .sum();
    let delivered = match done.delivered {
        0 => "delivered nothing".to_string(),
        n => format!(
            "delivered {n} write(s), {}, in {}",
            human_bytes(done.bytes),
            human_duration(started.elapsed())
        ),
    };
    if left.0 == 0 && quarantined == 0 {
        let targets = actor.target_ids().join(", ");
        match done.delivered {
            0 => crate::say!("sparkwing: flushed: nothing queued for {targets}"),
            _ => crate::say!("sparkwing: flushed: {delivered} to {targets}"),
        }
        return Ok(0);
    }
    let why = clause(&rt.block_on(blocking_reason(actor)));
    crate::say!(
        "sparkwing: flush gave up after {} ({delivered}): {} write(s) ({}) and {quarantined} quarantined still queued for {}{why}",
        human_duration(timeout),
        left.0,
        human_bytes(left.1),
        actor.target_ids().join(", ")
    );
    Ok(1)
}

/// `sync daemon`: replays until SIGTERM/SIGINT, then drains for up to
/// `drain_timeout` and reports what it left.
pub fn daemon(
    home: &std::path::Path,
    resolved: &Resolved,
    drain_timeout: Duration,
    concurrency: usize,
) -> Result<u8> {
    let Some(remote) = remote_of(resolved)? else {
        bail!(
            "profile \"{}\" keeps everything local (Mode 1): there is nothing to sync. Pass --profile NAME for a profile with remote surfaces",
            resolved.name
        );
    };
    let session = Arc::new(open_sync(home, &remote, concurrency)?);
    let actor = &session.actor;
    let rt = crate::util::runtime()?;
    tracing::info!(
        profile = %resolved.name,
        targets = %actor.target_ids().join(", "),
        outbox = %actor.outbox().path().display(),
        "sync daemon replaying; stop with Ctrl-C or SIGTERM"
    );
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Signals counted: the first stops the replay and starts the drain,
        // the second ends the drain at once (everything stays queued).
        let (signals_tx, mut signals) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                signals_tx.send_modify(|n| *n += 1);
            }
        });
        // Runs that crash while the daemon is up leave writes that only a
        // reconcile queues: one every RECONCILE_EVERY, until the first signal.
        tokio::spawn({
            let (session, mut first) = (Arc::clone(&session), signals.clone());
            async move {
                session
                    .reconcile_every(RECONCILE_EVERY, async move {
                        let _ = first.wait_for(|n| *n >= 1).await;
                    })
                    .await
            }
        });
        let a = Arc::clone(actor);
        let mut first = signals.clone();
        let task = tokio::spawn(async move {
            a.run(async move {
                let _ = first.wait_for(|n| *n >= 1).await;
            })
            .await
        });
        // The first signal ends the replay promptly, even mid-pass: the
        // deliveries under way are cancelled and their entries stay
        // queued, for the drain below to take up again under its deadline.
        // A second signal ends the daemon at once, here or in the drain.
        let mut second = signals.clone();
        let report = tokio::select! {
            joined = task => joined.context("the replay task failed")??,
            _ = second.wait_for(|n| *n >= 2) => {
                tracing::warn!("a second signal: stopping now, without draining");
                return anyhow::Ok(());
            }
        };
        tracing::info!(
            delivered = report.delivered,
            bytes = %human_bytes(report.bytes),
            drain_timeout = %human_duration(drain_timeout),
            "stopping: draining what is queued"
        );
        let mut total = report;
        tokio::select! {
            drained = actor.drain(Instant::now() + drain_timeout) => { total.add(drained?); }
            _ = signals.wait_for(|n| *n >= 2) => {
                tracing::warn!("a second signal: stopping now, without draining");
            }
        }
        let (n, bytes) = actor.pending().await?;
        if n == 0 {
            tracing::info!(
                delivered = total.delivered,
                bytes = %human_bytes(total.bytes),
                "sync daemon stopped; nothing left queued"
            );
        } else {
            tracing::warn!(
                delivered = total.delivered,
                pending = n,
                bytes = %human_bytes(bytes),
                reason = %blocking_reason(actor).await,
                "sync daemon stopped with writes still queued; they go out with the next daemon, run or flush"
            );
        }
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// `sync retry`: re-queues quarantined entries and lifts auth stops.
pub fn retry(home: &std::path::Path, resolved: &Resolved, explicit: bool) -> Result<()> {
    let remote = remote_of(resolved)?;
    let outbox = crate::remote::replicate::open_outbox(home)?;
    let ids: Option<Vec<String>> = match (&remote, explicit) {
        (Some(r), _) => Some(r.targets().iter().map(|t| t.id().to_string()).collect()),
        (None, true) => Some(Vec::new()),
        (None, false) => None,
    };
    let stopped = outbox
        .stats(ids.as_deref())?
        .iter()
        .filter(|s| {
            matches!(
                s.connectivity,
                Some(Connectivity::AuthFailed | Connectivity::Misconfigured)
            )
        })
        .count();
    let mut n = 0;
    match &ids {
        Some(ids) => {
            for id in ids {
                n += outbox.retry(Some(id))?;
            }
        }
        None => n = outbox.retry(None)?,
    }
    let lifted = match stopped {
        0 => String::new(),
        k => {
            format!(" and lifted the stop on {k} target(s) (credentials refused or misconfigured)")
        }
    };
    crate::say!("sparkwing: re-queued {n} quarantined write(s){lifted}; they go out with the next daemon, run or flush");
    Ok(())
}
