//! One sync session: the outbox, the actor that drains it and the
//! replicator that feeds it (the actor's waker, so a replicated write wakes
//! the actor), wired once for `run`, `sync daemon` and `sync flush`.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use sparkwing_outbox::{Connectivity, Outbox, TargetStats};
use sparkwing_sync::{SyncActor, SyncConfig};

use crate::util::{human_duration, now_ms, rfc3339_ms};

use crate::remote::replicate::Replicator;
use crate::remote::Remote;

pub struct SyncSession {
    pub actor: Arc<SyncActor>,
    pub repl: Arc<Replicator>,
}

impl SyncSession {
    /// Opens `home`'s outbox (a damaged one is set aside, with a warning)
    /// and wires the session for `remote`'s targets.
    pub fn open(home: &Path, remote: &Remote, cfg: SyncConfig) -> Result<SyncSession> {
        let outbox = Arc::new(crate::remote::replicate::open_outbox(home)?);
        Ok(SyncSession::over(outbox, home, remote, cfg))
    }

    /// A session over an outbox already open.
    pub fn over(outbox: Arc<Outbox>, home: &Path, remote: &Remote, cfg: SyncConfig) -> SyncSession {
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
        SyncSession { actor, repl }
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
