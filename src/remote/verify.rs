//! `sparkwing sync verify`: does the remote hold exactly what this machine
//! holds? For every local run bound for the profile's targets it compares,
//! object by object, what the remote has with what the local store says it
//! should have, and names every difference.
//!
//! - **Events**: each local event once across the run's segment objects
//!   (a seq in two segments is a discrepancy even when both copies agree),
//!   each equal to the local row, none the local store does not have.
//! - **Run document**: `run.json` equals the local run document, status
//!   and `events_through` included.
//! - **Logs**: each job's chunks are the recorded ones, present and
//!   byte-equal to the local log file's ranges, and cover the whole file.
//! - **Cache**: every manifest the run published is present and names the
//!   same files, and every blob it names is present with the right SHA-256.
//!
//! Everything read from the remote is untrusted: it is parsed into types,
//! and a malformed object is reported as a discrepancy, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sparkwing_sync::target::sha256_hex;
use sparkwing_sync::view::RunRead;
use sparkwing_sync::RemoteView;

use crate::local::store::{RunRow, Store};
use crate::remote::{Endpoint, Remote};
use crate::run::cache::Manifest;
use crate::run::logs::log_path;
use crate::util::sanitize;

/// What verification found for one run.
#[derive(Debug, Default)]
pub struct RunReport {
    pub id: String,
    /// Why the run was not compared (still running), if it was not.
    pub skipped: Option<String>,
    pub problems: Vec<String>,
    /// Differences that are not discrepancies (Mode 2's last write wins).
    pub notes: Vec<String>,
}

/// The verdict over every run checked.
#[derive(Debug, Default)]
pub struct Report {
    pub targets: Vec<String>,
    pub runs: Vec<RunReport>,
    /// Writes still queued in the outbox for these targets.
    pub pending: u64,
}

impl Report {
    pub fn discrepancies(&self) -> usize {
        self.runs.iter().map(|r| r.problems.len()).sum()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "targets": self.targets,
            "equal": self.discrepancies() == 0,
            "discrepancies": self.discrepancies(),
            "pending_entries": self.pending,
            "runs": self.runs.iter().map(|r| json!({
                "id": r.id,
                "result": if r.skipped.is_some() { "skipped" } else if r.problems.is_empty() { "equal" } else { "differs" },
                "skipped": r.skipped,
                // Text from a remote (object names, errors) is escaped: no
                // control character reaches whoever prints this JSON raw.
                "problems": r.problems.iter().map(|p| sanitize(p)).collect::<Vec<_>>(),
                "notes": r.notes.iter().map(|p| sanitize(p)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A remote read's error as text naming what was read.
fn failed(what: &str) -> impl FnOnce(sparkwing_sync::TargetError) -> String + '_ {
    move |e| {
        format!(
            "could not read {what}: {}",
            crate::profile::scrub(&e.message)
        )
    }
}

/// A remote read's outcome for the report. A permanent failure is an
/// object the remote holds but will not serve as what it should be (too
/// large, a link, not a file): a discrepancy of this run, as text. Any
/// other failure is a remote that did not answer (an outage, a timeout,
/// refused credentials): its objects were not seen, so nothing can be said
/// about them, and verification ends with that failure's class (exit 69, or
/// 2 for credentials) rather than reporting what it could not read as
/// missing.
fn answered<T>(r: Result<T, sparkwing_sync::TargetError>, what: &str) -> Result<Result<T, String>> {
    match r {
        Err(e) if e.class != sparkwing_outbox::ErrorClass::Permanent => Err(anyhow::Error::new(e)
            .context(format!(
                "could not read {what} on the remote; nothing was verified, try again"
            ))),
        r => Ok(r.map_err(failed(what))),
    }
}

/// Compares every local run bound for `remote` (or only `only`) with what
/// the remote holds.
pub fn verify(home: &std::path::Path, remote: &Remote, only: Option<&str>) -> Result<Report> {
    let store = Store::open(home)?;
    let targets: Vec<String> = remote
        .targets()
        .iter()
        .map(|t| t.id().to_string())
        .collect();
    let mut report = Report {
        targets: targets.clone(),
        ..Report::default()
    };
    if home.join(sparkwing_outbox::OUTBOX_FILE).exists() {
        let outbox = crate::remote::replicate::open_outbox(home)?;
        report.pending = outbox.pending(&targets)?.0;
    }
    // Every run bound for one of these targets, with where it replicates.
    let mut runs: BTreeMap<String, RunRow> = BTreeMap::new();
    let mut bound: HashMap<String, crate::local::store::RunTargets> = HashMap::new();
    for t in &targets {
        for (r, to) in store.runs_for_target(t)? {
            bound.insert(r.id.clone(), to);
            runs.insert(r.id.clone(), r);
        }
    }
    if let Some(id) = only {
        let r = store.find_run(id)?;
        if !runs.contains_key(&r.id) {
            anyhow::bail!(
                "run {} does not replicate to {}; pass the --profile it ran with",
                r.id,
                targets.join(", ")
            );
        }
        runs.retain(|k, _| *k == r.id);
    }
    let rt = crate::util::runtime()?;
    for (id, row) in runs {
        let mut rr = RunReport {
            id: id.clone(),
            ..RunReport::default()
        };
        let status = row.shown_status().to_string();
        if crate::status::RunStatus::live(&status) {
            rr.skipped = Some(format!(
                "still {status}; its remote copy catches up as it goes"
            ));
            report.runs.push(rr);
            continue;
        }
        let mine = bound.get(&id).cloned().unwrap_or_default();
        let same = |e: &Option<Endpoint>, theirs: &Option<String>| {
            e.as_ref()
                .filter(|e| theirs.as_deref() == Some(e.id()))
                .map(|e| Arc::clone(&e.view))
        };
        if let Some(t) = same(&remote.state, &mine.state) {
            rt.block_on(check_state(&store, &t, &row, &mut rr.problems))?;
        }
        if let Some(t) = same(&remote.logs, &mine.logs) {
            rt.block_on(check_logs(home, &store, &t, &row, &mut rr.problems))?;
        }
        if let Some(t) = same(&remote.cache, &mine.cache) {
            rt.block_on(check_cache(
                home,
                &store,
                &t,
                &row,
                &mut rr.problems,
                &mut rr.notes,
            ))?;
        }
        report.runs.push(rr);
    }
    Ok(report)
}

async fn check_state(
    store: &Store,
    t: &Arc<dyn RemoteView>,
    row: &RunRow,
    problems: &mut Vec<String>,
) -> Result<()> {
    let run = &row.id;
    let local = store.events_after(run, 0)?;
    // A listing the remote refuses (a hostile object name) is this run's
    // problem, not the end of the whole report; an outage ends it
    // ([`answered`]).
    let stored = match answered(t.events(run).await, "the run's events")? {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            Default::default()
        }
    };
    for stray in &stored.strays {
        problems.push(format!("unexpected object {stray} (not a segment name)"));
    }
    // seq -> the segments it was found in, and its first decoded copy.
    let mut seen: BTreeMap<i64, (Vec<i64>, crate::local::store::EventRow)> = BTreeMap::new();
    for seg in stored.segments {
        let first = seg.first_seq;
        let events = match seg.events {
            Ok(ev) => ev,
            Err(e) => {
                problems.push(format!("segment {first}: {e}"));
                continue;
            }
        };
        if events.first().map(|e| e.seq) != Some(first) {
            problems.push(format!(
                "segment {first} starts with event {}",
                events
                    .first()
                    .map_or("nothing".to_string(), |e| e.seq.to_string())
            ));
        }
        for e in events {
            if e.run != *run {
                problems.push(format!("segment {first} holds an event of another run"));
                continue;
            }
            let entry = seen.entry(e.seq).or_insert_with(|| (Vec::new(), e.clone()));
            entry.0.push(first);
        }
    }
    let local_seqs: HashMap<i64, &crate::local::store::EventRow> =
        local.iter().map(|e| (e.seq, e)).collect();
    let mut missing = Vec::new();
    for e in &local {
        match seen.get(&e.seq) {
            None => missing.push(e.seq),
            Some((segs, got)) => {
                if segs.len() > 1 {
                    problems.push(format!(
                        "event {} appears {} times (segments {})",
                        e.seq,
                        segs.len(),
                        segs.iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if got.ts != e.ts || got.kind != e.kind || got.job != e.job || got.data != e.data {
                    problems.push(format!("event {} differs from the local one", e.seq));
                }
            }
        }
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {} events missing on the remote: {}",
            missing.len(),
            local.len(),
            ranges(&missing)
        ));
    }
    let extra: Vec<i64> = seen
        .keys()
        .filter(|s| !local_seqs.contains_key(s))
        .copied()
        .collect();
    if !extra.is_empty() {
        problems.push(format!(
            "{} event(s) on the remote that this machine does not have: {}",
            extra.len(),
            ranges(&extra)
        ));
    }
    // The run document, as types: what sparkwing writes, field by field
    // (a field no reader knows is not compared: no reader would see it).
    let doc: Value = match answered(t.run(run).await, "the run document")? {
        Ok(Some(RunRead::Doc(d))) => d.to_value(),
        Ok(Some(RunRead::Unreadable(why))) => {
            problems.push(format!("the run document is unreadable: {why}"));
            return Ok(());
        }
        Ok(None) => {
            problems.push("run.json missing on the remote".into());
            return Ok(());
        }
        Err(e) => {
            problems.push(e);
            return Ok(());
        }
    };
    let want = crate::local::view::remote_document(store, row)?;
    // A field of the remote document as shown in a message (it may hold
    // anything: cut short).
    let shown = |k: &str, absent: &str| {
        crate::util::clip(
            &doc.get(k)
                .map(Value::to_string)
                .unwrap_or_else(|| absent.into()),
            40,
        )
    };
    if doc.get("status") != want.get("status") {
        problems.push(format!(
            "run.json says status {}; this machine says {}",
            shown("status", "nothing"),
            want["status"]
        ));
    }
    if doc.get("events_through") != want.get("events_through") {
        problems.push(format!(
            "run.json is as of event {}; the last local event is {}",
            shown("events_through", "none"),
            want["events_through"]
        ));
    }
    if doc != want {
        let differing: Vec<String> = match (doc.as_object(), want.as_object()) {
            (Some(a), Some(b)) => b
                .keys()
                .chain(a.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| crate::util::clip(k, 40))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            _ => vec!["(not an object)".into()],
        };
        problems.push(format!(
            "run.json differs from the local run document in: {}",
            differing.join(", ")
        ));
    }
    Ok(())
}

async fn check_logs(
    home: &std::path::Path,
    store: &Store,
    t: &Arc<dyn RemoteView>,
    row: &RunRow,
    problems: &mut Vec<String>,
) -> Result<()> {
    let run = &row.id;
    for job in store.jobs(run)? {
        let path = log_path(home, run, &job.name);
        let local_len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let chunks = store.log_chunks_after(run, &job.name, -1)?;
        let covered: u64 = chunks.iter().map(|c| c.2).sum();
        if covered < local_len {
            problems.push(format!(
                "log of job {}: {} byte(s) at the end of the local log were never queued (run `sparkwing sync flush`)",
                job.name,
                local_len - covered
            ));
        }
        let listed = match answered(
            t.log_chunks(run, &job.name).await,
            &format!("the log of job {}", job.name),
        )? {
            Ok(l) => l,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for k in listed.strays {
            problems.push(format!("log of job {}: unexpected object {k}", job.name));
        }
        let mut present: std::collections::BTreeSet<i64> = listed
            .seqs
            .iter()
            .filter_map(|s| i64::try_from(*s).ok())
            .collect();
        let total = chunks.len();
        let file = std::fs::File::open(&path).ok();
        for (seq, offset, len) in &chunks {
            if !present.remove(seq) {
                problems.push(format!(
                    "log of job {}: chunk {} of {total} missing on the remote",
                    job.name,
                    seq + 1
                ));
                continue;
            }
            let want = match &file {
                Some(f) => crate::local::view::read_range(f, *offset, *len),
                None => Err(std::io::Error::other("the local log file is gone")),
            };
            let want = match want {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!(
                        "log of job {}: reading {}: {e}",
                        job.name,
                        path.display()
                    ));
                    continue;
                }
            };
            let got = answered(
                t.log_chunk(run, &job.name, u64::try_from(*seq).unwrap_or(u64::MAX))
                    .await,
                &format!("chunk {} of job {}", seq + 1, job.name),
            )?;
            match got {
                Ok(Some(got)) if got.as_ref() == want.as_slice() => {}
                Ok(Some(got)) => problems.push(format!(
                    "log of job {}: chunk {} of {total} differs ({} bytes remote, {} local)",
                    job.name,
                    seq + 1,
                    got.len(),
                    want.len()
                )),
                Ok(None) => problems.push(format!(
                    "log of job {}: chunk {} of {total} missing on the remote",
                    job.name,
                    seq + 1
                )),
                Err(e) => problems.push(e),
            }
        }
        for seq in present {
            problems.push(format!(
                "log of job {}: chunk {} on the remote, but this machine recorded {total}",
                job.name,
                seq + 1
            ));
        }
    }
    Ok(())
}

async fn check_cache(
    home: &std::path::Path,
    store: &Store,
    t: &Arc<dyn RemoteView>,
    row: &RunRow,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<()> {
    for entry in store.cache_entries_of_run(&row.id)? {
        let short = crate::util::clip(&entry.key, 12);
        let local: Manifest = serde_json::from_str(&entry.manifest)
            .with_context(|| format!("reading the local manifest of cache key {short}"))?;
        let files = |m: &Manifest| {
            m.files
                .iter()
                .map(|f| (f.path.clone(), f.sha256.clone(), f.mode, f.symlink.clone()))
                .collect::<Vec<_>>()
        };
        let remote = match answered(t.manifest(&entry.key).await, "the manifest")? {
            Ok(Some(b)) => match crate::remote::cache::parse_entry(&entry.key, &b) {
                Ok(e) => {
                    let m = e.manifest.local();
                    let writer = e.run_id.0.as_str();
                    if files(&m) != files(&local) && writer != entry.run_id.as_str() {
                        // Mode 2: another runner computed the same key and
                        // wrote its manifest last (last write wins).
                        notes.push(format!(
                            "cache key {short}: the remote holds another run's outputs ({}; last write wins)",
                            crate::util::clip(writer, 40)
                        ));
                        None
                    } else if files(&m) != files(&local) {
                        problems.push(format!(
                            "cache key {short}: the remote manifest names other files"
                        ));
                        None
                    } else {
                        Some(e.manifest)
                    }
                }
                Err(e) => {
                    problems.push(format!(
                        "cache key {short}: the remote manifest is not a manifest ({})",
                        crate::util::one_line(&format!("{e:#}"), 300)
                    ));
                    None
                }
            },
            Ok(None) => {
                problems.push(format!("cache key {short}: manifest missing on the remote"));
                None
            }
            Err(e) => {
                problems.push(e);
                None
            }
        };
        match remote {
            Some(m) if m.version == 1 => check_blobs(t, &short, &local, problems).await?,
            Some(m) => check_packs(home, t, &short, &m, problems).await?,
            // Missing, unreadable or another run's: said above.
            None => {}
        }
    }
    Ok(())
}

/// Every file of a packed manifest, read from its packs into a scratch CAS
/// (under `SPARKWING_HOME`, removed after) and checked by SHA-256.
async fn check_packs(
    home: &std::path::Path,
    t: &Arc<dyn RemoteView>,
    short: &str,
    m: &crate::remote::pack::RemoteManifest,
    problems: &mut Vec<String>,
) -> Result<()> {
    let scratch = home.join("tmp").join(format!(
        "verify-{}-{}",
        std::process::id(),
        crate::util::new_run_id()
    ));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let size: u64 = m.files.iter().map(|f| f.size).fold(0, u64::saturating_add);
    if let Err(e) =
        crate::run::cache::check_room(&scratch, size, "checking the remote entry's files")
    {
        let _ = std::fs::remove_dir_all(&scratch);
        problems.push(format!("cache key {short}: not checked: {e:#}"));
        return Ok(());
    }
    let cas = crate::run::cache::Cas::at(&scratch);
    let got = crate::remote::pack::download(t.as_ref(), &cas, m, |_| true).await;
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = got {
        problems.push(format!(
            "cache key {short}: {}",
            crate::util::one_line(&format!("{e:#}"), 500)
        ));
    }
    Ok(())
}

/// Every blob of a version 1 manifest, present with the right SHA-256.
async fn check_blobs(
    t: &Arc<dyn RemoteView>,
    short: &str,
    local: &Manifest,
    problems: &mut Vec<String>,
) -> Result<()> {
    let mut checked = std::collections::HashSet::new();
    for f in local.files.iter().filter(|f| f.symlink.is_none()) {
        if !checked.insert(f.sha256.clone()) {
            continue;
        }
        let short_blob = crate::util::clip(&f.sha256, 12);
        // Up to 1 MiB more than expected is read and hashed, so a replaced
        // blob is reported by its hash; anything larger by its size.
        let got = answered(
            t.blob(&f.sha256, f.size.saturating_add(1 << 20)).await,
            "a blob",
        )?;
        match got {
            Ok(Some(b)) => {
                let got = sha256_hex(&b);
                if got != f.sha256 {
                    problems.push(format!(
                        "cache key {short}: blob {short_blob} ({}) hashes to {}",
                        f.path,
                        crate::util::clip(&got, 12)
                    ));
                }
            }
            Ok(None) => problems.push(format!(
                "cache key {short}: blob {short_blob} ({}) missing on the remote",
                f.path
            )),
            Err(e) => problems.push(e),
        }
    }
    Ok(())
}

/// `1-3, 7, 9-10` from sorted numbers.
fn ranges(v: &[i64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() && out.len() < 20 {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if i < v.len() {
        out.push("…".into());
    }
    out.join(", ")
}

/// Prints a report; returns the exit code (0 only when everything is equal).
pub fn print(report: &Report, as_json: bool) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report.to_json())?)?;
    } else {
        let checked = report.runs.iter().filter(|r| r.skipped.is_none()).count();
        for r in &report.runs {
            match (&r.skipped, r.problems.is_empty()) {
                (Some(why), _) => writeln!(out, "{}  skipped: {why}", r.id)?,
                (None, true) => writeln!(out, "{}  equal", r.id)?,
                (None, false) => {
                    writeln!(out, "{}  {} problem(s)", r.id, r.problems.len())?;
                    for p in &r.problems {
                        writeln!(out, "  - {}", sanitize(p))?;
                    }
                }
            }
            for n in &r.notes {
                writeln!(out, "  note: {}", sanitize(n))?;
            }
        }
        let n = report.discrepancies();
        if report.pending > 0 {
            writeln!(
                out,
                "note: {} write(s) are still queued for {}; `sparkwing sync flush` delivers them",
                report.pending,
                report.targets.join(", ")
            )?;
        }
        if n == 0 {
            writeln!(
                out,
                "verified {checked} run(s) on {}: the remote equals this machine",
                report.targets.join(", ")
            )?;
        } else {
            writeln!(
                out,
                "verified {checked} run(s) on {}: {n} discrepanc{} in {} run(s)",
                report.targets.join(", "),
                if n == 1 { "y" } else { "ies" },
                report
                    .runs
                    .iter()
                    .filter(|r| !r.problems.is_empty())
                    .count()
            )?;
        }
    }
    Ok(if report.discrepancies() == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_seqs() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
    }

    #[test]
    fn remote_text_in_a_report_carries_no_control_characters() {
        let report = Report {
            runs: vec![RunReport {
                id: "R".into(),
                problems: vec!["unexpected object evil\u{1b}]0;title\u{7}\u{9b}2J".into()],
                notes: vec!["\u{1b}[31mred".into()],
                ..RunReport::default()
            }],
            ..Report::default()
        };
        let text = serde_json::to_string(&report.to_json()).unwrap();
        assert!(
            !text.contains('\u{9b}') && !text.contains("\\u001b"),
            "{text}"
        );
        assert!(text.contains("\\u{1b}]0;title"), "{text}");
    }
}
