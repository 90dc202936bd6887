//! `sparkwing runs prune --older-than D [--profile P]`: bounded history
//! (issue 13). Runs that ended longer ago than `D` go with their logs:
//! from `state.db` and `SPARKWING_HOME/runs/`, and with `--profile` from
//! the profile's state and logs surfaces too (every runner's runs that
//! old). Cache entries stay: they are bounded by `cache prune` and `cache
//! gc`, and a run's outputs may still be restored after the run is gone.
//!
//! A run still in progress is never removed, nor a local run bound for a
//! remote that has not reached it whole: writes still queued (quarantined
//! ones too), or no `done/<run>` mark on one of its targets (they would be
//! lost to the remote, and queued log chunks would point at removed files).

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use sparkwing_sync::view::RunRead;

use crate::local::store::Store;
use crate::profile::Resolved;
use crate::status::RunStatus;
use crate::util::{now_ms, rfc3339_ms};

/// What a prune removed (or, dry, would remove).
#[derive(Debug, Default, Serialize)]
pub struct RunsPruned {
    pub older_than: String,
    pub dry_run: bool,
    /// Local runs removed with their logs.
    pub local_removed: Vec<String>,
    /// Local runs kept because writes of theirs are still queued for the
    /// remote.
    pub local_undelivered: Vec<String>,
    /// Remote runs removed (their objects on the state and logs surfaces).
    pub remote_removed: Vec<String>,
    pub remote_objects_deleted: u64,
    /// Remote runs whose document could not be read or gives no readable
    /// end time: kept.
    pub remote_unreadable: Vec<String>,
}

/// Whether `s` is a time as sparkwing writes it (`rfc3339_ms`), so that
/// times compare as strings.
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

pub fn prune(
    home: &std::path::Path,
    resolved: Option<&Resolved>,
    older_than: Duration,
    dry_run: bool,
    json_out: bool,
) -> Result<u8> {
    let cutoff = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
    let mut out = RunsPruned {
        older_than: crate::util::human_duration(older_than),
        dry_run,
        ..RunsPruned::default()
    };
    let remote = match resolved {
        Some(r) => {
            let remote = crate::remote::remote_of(r)?;
            if remote.is_none() {
                anyhow::bail!(
                    "profile \"{}\" keeps everything local (Mode 1): drop --profile to prune this machine's runs",
                    r.name
                );
            }
            remote
        }
        None => None,
    };

    // This machine's runs.
    let store = Store::open(home)?;
    let outbox = if home.join(sparkwing_outbox::OUTBOX_FILE).exists() {
        Some(crate::remote::replicate::open_outbox(home)?)
    } else {
        None
    };
    for id in store.run_ids()? {
        let Some(row) = store.run_by_id(&id)? else {
            continue;
        };
        let ended = row.finished_at.is_some_and(|t| t < cutoff);
        if !ended || RunStatus::live(row.shown_status()) {
            continue;
        }
        // Bound for a remote: kept until every write has left the outbox
        // (quarantined ones too: `sync retry` still needs the files) and
        // the run is marked complete on each of its targets (a write the
        // run could not queue is queued again by the next reconcile).
        let targets = store.targets_of_run(&id)?.unwrap_or_default();
        let bound: Vec<&String> = [&targets.state, &targets.logs, &targets.cache]
            .into_iter()
            .flatten()
            .collect();
        if !bound.is_empty() {
            let undelivered = match &outbox {
                None => true,
                Some(ob) => {
                    use sparkwing_sync::target::stream;
                    let mut queued = 0;
                    for prefix in [
                        stream::state(&id),
                        stream::summary(&id),
                        stream::logs_prefix(&id),
                    ] {
                        queued += ob.queued_on_streams(&prefix)?;
                    }
                    let done = format!("done/{id}");
                    let mut complete = true;
                    for t in &bound {
                        complete &= ob.mark(t, &done)?.is_some();
                    }
                    queued > 0 || !complete
                }
            };
            if undelivered {
                out.local_undelivered.push(id);
                continue;
            }
        }
        if !dry_run {
            store.delete_run(&id)?;
            let dir = crate::run::logs::run_dir(home, &id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
        }
        out.local_removed.push(id);
    }

    // Every runner's runs on the remote.
    if let Some(remote) = &remote {
        let rt = crate::util::runtime()?;
        rt.block_on(prune_remote(remote, cutoff, dry_run, &mut out))?;
    }

    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} run(s) of this machine that ended before {} (with their logs)",
        out.local_removed.len(),
        rfc3339_ms(cutoff)
    );
    if !out.local_undelivered.is_empty() {
        println!(
            "kept {} run(s) whose writes are still queued for the remote: `sparkwing sync flush` sends them, then prune again",
            out.local_undelivered.len()
        );
    }
    if remote.is_some() {
        println!(
            "{verb} {} run(s) from the remote ({} object(s))",
            out.remote_removed.len(),
            out.remote_objects_deleted
        );
        if !out.remote_unreadable.is_empty() {
            println!(
                "kept {} remote run(s) whose document could not be read or names no end time",
                out.remote_unreadable.len()
            );
        }
    }
    Ok(0)
}

async fn prune_remote(
    remote: &crate::remote::Remote,
    cutoff: i64,
    dry_run: bool,
    out: &mut RunsPruned,
) -> Result<()> {
    let Some(state) = &remote.state else {
        return Ok(());
    };
    let Some(state_objects) = state.objects.clone() else {
        anyhow::bail!("the profile's state surface is not an object store; runs there cannot be pruned from here");
    };
    let logs_objects = remote.logs.as_ref().and_then(|e| e.objects.clone());
    let cutoff = rfc3339_ms(cutoff);
    let ids = state.view.run_ids().await.map_err(anyhow::Error::new)?;
    for id in ids {
        let doc = match state.view.run(&id).await {
            Ok(Some(RunRead::Doc(d))) => d,
            Ok(None) => continue,
            Ok(Some(RunRead::Unreadable(_))) | Err(_) => {
                out.remote_unreadable.push(id);
                continue;
            }
        };
        if RunStatus::live(doc.status.0.as_str()) {
            continue;
        }
        let Some(finished) = doc.finished_at.as_ref().map(|t| t.0.as_str()) else {
            out.remote_unreadable.push(id);
            continue;
        };
        if !is_time(finished) {
            out.remote_unreadable.push(id);
            continue;
        }
        if finished >= cutoff.as_str() {
            continue;
        }
        // The run document last: a prune cut short leaves a run that is
        // still listed, and removed by the next prune.
        let mut keys: Vec<(std::sync::Arc<sparkwing_sync::ObjectStoreTarget>, String)> = Vec::new();
        if let Some(logs) = &logs_objects {
            for k in logs
                .list(&sparkwing_sync::layout::run_logs_prefix(&id))
                .await?
            {
                keys.push((logs.clone(), k));
            }
        }
        let document = sparkwing_sync::layout::run_document(&id);
        for k in state_objects
            .list(&sparkwing_sync::layout::events_prefix(&id))
            .await?
        {
            keys.push((state_objects.clone(), k));
        }
        keys.push((state_objects.clone(), document));
        for (objects, key) in keys {
            if !dry_run {
                objects.delete(&key).await.map_err(anyhow::Error::new)?;
            }
            out.remote_objects_deleted += 1;
        }
        out.remote_removed.push(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_times_as_written_compare() {
        assert!(is_time(&rfc3339_ms(1_700_000_000_123)));
        for bad in [
            "",
            "2026-11-29",
            "2026-11-29T12:00:00Z",
            "2026-11-29T12:00:00.000+01:00",
            "9999-99-99T99:99:99.999X",
            "2026-11-29 12:00:00.000Z",
        ] {
            assert!(!is_time(bad), "{bad}");
        }
    }
}
