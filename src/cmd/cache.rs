//! `sparkwing cache list|stats|prune`: the local job cache's entries, its
//! size against its limit, and pruning (see [`crate::run::evict`]).

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::local::store::Store;
use crate::run::cache::Cas;
use crate::run::evict::{self, DEFAULT_MAX_SIZE};
use crate::util::{cell, human_bytes, human_duration, now_ms, table};

/// The limit in force and where it comes from.
fn limit() -> Result<(u64, &'static str)> {
    Ok(match crate::profile::user_cache_max_size()? {
        Some(n) => (n, "cache.max_size in the user profile file"),
        None => (DEFAULT_MAX_SIZE, "the default"),
    })
}

/// `cache list`: every entry, most recently used first.
pub fn list(home: &std::path::Path, json_out: bool) -> Result<()> {
    let store = Store::open(home)?;
    let mut entries = evict::entries(&store)?;
    entries.reverse();
    if json_out {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!(
            "the local cache is empty ({})",
            Cas::new(home).root().display()
        );
        return Ok(());
    }
    let now = now_ms();
    let mut rows = vec![vec![
        "KEY".to_string(),
        "PIPELINE/JOB".into(),
        "RUN".into(),
        "FILES".into(),
        "SIZE".into(),
        "LAST USED".into(),
        "FROM".into(),
    ]];
    for e in &entries {
        rows.push(vec![
            cell(e.key.get(..12).unwrap_or(&e.key)),
            cell(&format!(
                "{}/{}{}",
                e.pipeline,
                e.job,
                if e.expired(now) { " (expired)" } else { "" }
            )),
            cell(&e.run_id),
            e.files.to_string(),
            human_bytes(e.bytes),
            format!("{} ago", crate::remote::session::ago(e.last_used_at)),
            cell(&e.origin),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// `cache stats`: entries, the bytes they name, the CAS on disk, the limit.
pub fn stats(home: &std::path::Path, json_out: bool) -> Result<()> {
    let store = Store::open(home)?;
    let entries = evict::entries(&store)?;
    let now = now_ms();
    let (named_blobs, named_bytes) = evict::named(&entries);
    let disk = evict::disk(&Cas::new(home))?;
    let (max, from) = limit()?;
    let expired = entries.iter().filter(|e| e.expired(now)).count();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "entries": entries.len(),
                "expired_entries": expired,
                "blobs_named": named_blobs,
                "bytes_named": named_bytes,
                "blobs_on_disk": disk.blobs,
                "bytes_on_disk": disk.bytes,
                "max_size": max,
                "max_size_from": from,
                "cas": Cas::new(home).root(),
            }))?
        );
        return Ok(());
    }
    println!(
        "entries      {} ({expired} expired)\nnamed        {} blobs, {}\non disk      {} blobs, {} in {}\nlimit        {} ({from}); past it, a save evicts the least recently used entries\n{}",
        entries.len(),
        named_blobs,
        human_bytes(named_bytes),
        disk.blobs,
        human_bytes(disk.bytes),
        Cas::new(home).root().display(),
        human_bytes(max),
        if disk.bytes > named_bytes {
            format!(
                "{} on disk no entry names: `sparkwing cache prune` collects it",
                human_bytes(disk.bytes - named_bytes)
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `cache prune`.
pub fn prune(
    home: &std::path::Path,
    older_than: Option<Duration>,
    max_size: Option<u64>,
    dry_run: bool,
    json_out: bool,
) -> Result<()> {
    let store = Store::open(home)?;
    let p = evict::prune(home, &store, older_than, max_size, dry_run)?;
    if json_out {
        let mut v = serde_json::to_value(&p)?;
        v["dry_run"] = json!(dry_run);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} entr{} and {} blob(s), {}; {} entr{} left ({})",
        p.removed_entries.len(),
        if p.removed_entries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        p.removed_blobs,
        human_bytes(p.freed_bytes),
        p.entries_left,
        if p.entries_left == 1 { "y" } else { "ies" },
        human_bytes(p.bytes_left)
    );
    if !p.undelivered.is_empty() {
        println!(
            "kept {} entr{} not yet delivered to the remote (its upload reads the blobs); `sparkwing sync flush` sends {}",
            p.undelivered.len(),
            if p.undelivered.len() == 1 { "y" } else { "ies" },
            if p.undelivered.len() == 1 { "it" } else { "them" }
        );
    }
    if !p.busy.is_empty() {
        println!(
            "kept {} entr{} in use by a running job (a restore or save holds {}); prune again later",
            p.busy.len(),
            if p.busy.len() == 1 { "y" } else { "ies" },
            if p.busy.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

/// `cache gc --profile P`: one collection of the profile's cache surface
/// (see [`sparkwing_sync::gc`]).
pub fn gc(
    resolved: &crate::profile::Resolved,
    grace: Duration,
    dry_run: bool,
    json_out: bool,
) -> Result<u8> {
    let remote = crate::remote::remote_of(resolved)?;
    let Some(objects) = remote
        .as_ref()
        .and_then(|r| r.cache.as_ref())
        .and_then(|e| e.objects.clone())
    else {
        anyhow::bail!(
            "profile \"{}\" has no object store cache surface to collect; `sparkwing cache prune` bounds the local cache",
            resolved.name
        );
    };
    let parse = |key: &str, body: &[u8]| -> Result<sparkwing_sync::gc::ManifestFacts, String> {
        let e = crate::remote::cache::parse_entry(key, body).map_err(|e| format!("{e:#}"))?;
        Ok(sparkwing_sync::gc::ManifestFacts {
            // Its packs (or, for a version 1 manifest, its files' blobs).
            blobs: e.manifest.objects(),
            expires_at: e.expires_at,
        })
    };
    let opts = sparkwing_sync::gc::GcOptions {
        now_ms: now_ms(),
        grace,
        dry_run,
    };
    let rt = crate::util::runtime()?;
    let report = rt
        .block_on(sparkwing_sync::gc::collect(&objects, &parse, opts))
        .map_err(anyhow::Error::new)
        .with_context(|| format!("collecting {}", sparkwing_sync::Target::id(&*objects)))?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{}: {} manifest(s), {} blob(s), {} named; {verb} {} expired manifest(s) and {} blob(s) ({}); {} unnamed blob(s) marked{}",
        crate::util::clean(sparkwing_sync::Target::id(&*objects)),
        report.manifests,
        report.blobs,
        report.blobs_named,
        report.expired_manifests_deleted.len(),
        report.deleted_blobs,
        human_bytes(report.deleted_bytes),
        report.marked,
        if report.waiting > 0 {
            format!(
                "; {} blob(s) wait out the {} grace (a collection after it deletes those still unnamed)",
                report.waiting,
                human_duration(grace)
            )
        } else {
            String::new()
        }
    );
    for u in &report.unreadable_manifests {
        println!(
            "  unreadable manifest (no blob is deleted while one is): {}",
            cell(u)
        );
    }
    Ok(0)
}
