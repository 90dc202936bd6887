//! One sync session: the outbox, the actor that drains it, the
//! replicator that feeds it (the actor's waker, so a replicated write wakes
//! the actor) and the reconcile that repairs what a crash left unqueued,
//! wired once for `run`, `sync daemon` and `sync flush`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use sparkwing_outbox::{Connectivity, Outbox, TargetStats};
use sparkwing_sync::{SyncActor, SyncConfig};

use crate::util::{human_duration, now_ms, rfc3339_ms};

use crate::local::store::Store;
use crate::remote::replicate::Replicator;
use crate::remote::Remote;

/// How often a long-running session (the daemon) re-queues what runs that
/// crashed while it was up left behind.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

pub struct SyncSession {
    pub actor: Arc<SyncActor>,
    pub repl: Arc<Replicator>,
    /// The local store the replicator reads and reconciles from.
    pub store: Arc<Store>,
}

impl SyncSession {
    /// Opens `home`'s `state.db` and outbox (a damaged outbox is set aside,
    /// with a warning) and wires the session for `remote`'s targets.
    pub fn open(home: &Path, remote: &Remote, cfg: SyncConfig) -> Result<SyncSession> {
        let store = Arc::new(Store::open(home)?);
        let outbox = Arc::new(crate::remote::replicate::open_outbox(home)?);
        Ok(SyncSession::over(outbox, store, home, remote, cfg))
    }

    /// A session over an outbox and a store already open.
    pub fn over(
        outbox: Arc<Outbox>,
        store: Arc<Store>,
        home: &Path,
        remote: &Remote,
        cfg: SyncConfig,
    ) -> SyncSession {
        let actor = Arc::new(SyncActor::new(Arc::clone(&outbox), remote.targets(), cfg));
        let repl = Arc::new(
            Replicator::new(
                outbox,
                home.to_path_buf(),
                remote.run_targets(),
                Some(actor.waker()),
            )
            .with_signing(remote.signing.clone()),
        );
        SyncSession { actor, repl, store }
    }

    /// Queues whatever the local store holds for this session's targets
    /// and the outbox lacks (a crash between a local write and its enqueue,
    /// a run whose process died, a deleted `outbox.db`); returns how many
    /// entries were new. Blocking SQLite work: call it before the runtime
    /// starts or from `spawn_blocking`. Every run, daemon and flush calls it
    /// as it starts; [`SyncSession::reconcile_every`] repeats it.
    pub fn reconcile_once(&self) -> Result<usize> {
        self.repl.reconcile(&self.store)
    }

    /// [`SyncSession::reconcile_once`] every `every` (the first one `every`
    /// from now) until `shutdown` resolves, which ends it at once. A failed
    /// reconcile is logged and tried again at the next tick.
    pub async fn reconcile_every(&self, every: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // A reconcile that took longer than `every` is followed by a full
        // interval, not by a burst catching up.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let (repl, store) = (Arc::clone(&self.repl), Arc::clone(&self.store));
            // On a blocking thread (SQLite). A shutdown does not wait for
            // it: the thread finishes its short transactions on its own,
            // and whatever it had not queued yet the next reconcile queues.
            let reconciled = tokio::task::spawn_blocking(move || repl.reconcile(&store));
            let error = tokio::select! {
                _ = &mut shutdown => return,
                done = reconciled => match done {
                    Ok(Ok(n)) => {
                        if n > 0 {
                            tracing::info!(queued = n, "re-queued writes that crashed runs left behind");
                        }
                        continue;
                    }
                    Ok(Err(e)) => crate::util::clean(&format!("{e:#}")),
                    Err(e) => format!("the reconcile thread failed: {e}"),
                },
            };
            tracing::warn!(
                error = %error,
                retry_in = %human_duration(every),
                "could not re-queue leftovers of crashed runs; trying again later"
            );
        }
    }
}

/// How long ago a Unix-ms instant was, for people.
pub fn ago(ms: i64) -> String {
    human_duration(Duration::from_millis((now_ms() - ms).max(0) as u64))
}

/// Why entries are still queued ("" if unknown).
pub async fn blocking_reason(actor: &SyncActor) -> String {
    let (ob, ids) = (Arc::clone(actor.outbox()), actor.target_ids().to_vec());
    let stats = tokio::task::spawn_blocking(move || ob.stats(Some(&ids))).await;
    let Ok(Ok(stats)) = stats else {
        return String::new();
    };
    reason(&stats)
}

/// Why entries are still queued, from the targets' statistics.
pub fn reason(stats: &[TargetStats]) -> String {
    let mut parts = Vec::new();
    for s in stats {
        let err = crate::util::one_line(s.last_error.as_deref().unwrap_or_default(), 500);
        match s.connectivity {
            Some(Connectivity::AuthFailed) => parts.push(format!("credentials refused: {err}")),
            Some(Connectivity::Misconfigured) => parts.push(format!(
                "the target is misconfigured: {err}; fix the profile (bucket, endpoint), then run `sparkwing sync retry`"
            )),
            Some(Connectivity::Offline) => parts.push(format!(
                "offline since {} ago: {err}",
                s.since.map(ago).unwrap_or_default()
            )),
            _ => {}
        }
        if s.quarantined > 0 {
            parts.push(format!(
                "{} quarantined: {err}; fix it and run `sparkwing sync retry`",
                s.quarantined
            ));
        }
    }
    parts.join("; ")
}

/// A reason as a parenthesised clause to append to a line, or nothing.
pub fn clause(reason: &str) -> String {
    match reason {
        "" => String::new(),
        r => format!(" ({r})"),
    }
}

/// A target's statistics as `sync status -o json` and the dashboard show them.
pub fn stats_json(s: &TargetStats) -> Value {
    json!({
        "target": s.target,
        "connectivity": s.connectivity.map(|c| c.as_str()).unwrap_or("unknown"),
        "since": s.since.map(rfc3339_ms),
        "pending_entries": s.pending_entries,
        "pending_bytes": s.pending_bytes,
        "pending_by_kind": s.pending_by_op.iter().map(|(op, n, b)| json!({"kind": op, "entries": n, "bytes": b})).collect::<Vec<_>>(),
        "oldest_pending_at": s.oldest_pending_at.map(rfc3339_ms),
        "oldest_pending_age_ms": s.oldest_pending_at.map(|t| (now_ms() - t).max(0)),
        "next_attempt_at": s.next_attempt_at.map(rfc3339_ms),
        "next_attempt_in_ms": s.next_attempt_at.map(|t| (t - now_ms()).max(0)),
        "quarantined": s.quarantined,
        "last_success_at": s.last_success_at.map(rfc3339_ms),
        "last_error": s.last_error.as_deref().map(crate::profile::scrub),
        "last_error_class": s.last_error_class,
        "delivered_entries": s.delivered_entries,
        "delivered_bytes": s.delivered_bytes,
        "drain_estimate_s": s.drain_estimate_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::store::{NewRun, RunRow};
    use sparkwing_sync::ObjectStoreTarget;

    /// The timer reconciles exactly every `every`, so a run that crashed
    /// while the session was up is queued by the next tick, and it stops at
    /// once on shutdown.
    #[tokio::test(start_paused = true)]
    async fn the_reconcile_timer_queues_a_crashed_runs_writes_and_stops_on_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        let (home, dir) = (tmp.path().join("home"), tmp.path().join("remote"));
        std::fs::create_dir_all(&dir).unwrap();
        let remote = Remote {
            state: Some(crate::remote::Endpoint::objects(
                ObjectStoreTarget::filesystem(&dir),
            )),
            ..Remote::default()
        };
        let s = Arc::new(SyncSession::open(&home, &remote, SyncConfig::default()).unwrap());
        assert_eq!(s.reconcile_once().unwrap(), 0, "nothing to queue yet");
        let every = Duration::from_secs(30);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let timer = tokio::spawn({
            let s = Arc::clone(&s);
            async move {
                s.reconcile_every(every, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        // A run recorded for the session's target by a process that died
        // before it queued anything.
        let row = RunRow {
            id: "01CRASHEDRUN0000000000000A".into(),
            pipeline: "p".into(),
            status: "running".into(),
            profile: "shared".into(),
            project_dir: "/project".into(),
            host: crate::util::hostname(),
            pid: 999_999_999,
            started_at: now_ms(),
            finished_at: None,
            error: None,
        };
        s.store
            .create_run(&NewRun {
                run: &row,
                targets: remote.run_targets(),
                jobs: Vec::new(),
                steps: Vec::new(),
            })
            .unwrap();
        let pending = || s.actor.outbox().pending(s.actor.target_ids()).unwrap().0;
        tokio::time::sleep(every - Duration::from_millis(1)).await;
        assert_eq!(pending(), 0, "no reconcile before its interval");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            pending() > 0,
            "the tick at {every:?} queued the crashed run"
        );
        let asked = tokio::time::Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), timer)
            .await
            .expect("the timer ends on shutdown")
            .unwrap();
        assert_eq!(tokio::time::Instant::now(), asked, "at once");
    }
}
