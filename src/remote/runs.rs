//! `sparkwing runs list/show/logs`, over this machine's `state.db` and,
//! with `--profile P` for a profile with a remote state surface, merged with
//! the runs every runner wrote there.
//!
//! Remote layout used for reading: run IDs are ULIDs, so one delimiter LIST
//! of `runs/` gives every run in time order (one request per 1,000 runs);
//! only the page being shown has its `run.json` fetched, concurrently. Logs
//! are the job's chunks listed in order. A remote that cannot be reached
//! degrades to the local view with a warning, never an error.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sparkwing_sync::doc::clip;
use sparkwing_sync::view::RunRead;
use sparkwing_sync::RemoteView;

use crate::local::store::Store;
use crate::profile::scrub;
use crate::report::{self, run_json};
use crate::util::{cell, human_duration, table};

/// How long a remote read may take before the view falls back to local.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Remote `run.json` fetched at once.
const FETCH_CONCURRENCY: usize = 16;

fn fmt_ms(v: &Value) -> String {
    v.as_i64()
        .map(|m| human_duration(Duration::from_millis(m.max(0) as u64)))
        .unwrap_or_else(|| "-".into())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

pub fn render_list(rows: &[Value], merged: bool) -> String {
    let mut t = vec![vec![
        "RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "PROFILE",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>()];
    if merged {
        t[0].extend(["HOST".to_string(), "SYNC".to_string()]);
    }
    for r in rows {
        let mut row = vec![
            s(r, "id").to_string(),
            s(r, "pipeline").to_string(),
            s(r, "status").to_string(),
            s(r, "started_at").to_string(),
            fmt_ms(&r["duration_ms"]),
            s(r, "profile").to_string(),
        ];
        if merged {
            row.push(s(r, "host").to_string());
            row.push(s(r, "sync").to_string());
        }
        t.push(row);
    }
    table(&t)
}

/// The text of `runs show`, from a run document (local or remote).
pub fn render_show(doc: &Value) -> String {
    // The document may be another runner's: every value is shown through
    // `cell` (no control characters, cut when long).
    let c = |k: &str| cell(s(doc, k));
    let mut out = String::new();
    out.push_str(&format!(
        "run       {}\npipeline  {}\nstatus    {}\nprofile   {}\nhost      {} (pid {})\nproject   {}\nstarted   {}\n",
        c("id"),
        c("pipeline"),
        c("status"),
        c("profile"),
        c("host"),
        cell(&doc["pid"].to_string()),
        c("project_dir"),
        c("started_at")
    ));
    if doc["finished_at"].is_string() {
        out.push_str(&format!(
            "finished  {} ({})\n",
            c("finished_at"),
            fmt_ms(&doc["duration_ms"])
        ));
    }
    if let Some(e) = doc["error"].as_str() {
        out.push_str(&format!("error     {}\n", cell(e)));
    }
    if let Some(d) = doc["logs_dir"].as_str() {
        out.push_str(&format!("logs      {}\n", cell(d)));
    }
    if let Some(sync) = doc["sync"].as_str() {
        out.push_str(&format!("sync      {}\n", cell(sync)));
    }
    out.push('\n');
    let mut rows = vec![vec!["JOB", "STATUS", "DURATION", "NEEDS", "CACHE"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()];
    for j in doc["jobs"].as_array().into_iter().flatten() {
        let cache = match (j["cached_from_run"].as_str(), j["cache_key"].as_str()) {
            (Some(from), _) => format!("restored from run {from}"),
            (None, Some(k)) => format!("key {}", k.chars().take(12).collect::<String>()),
            _ => "-".into(),
        };
        let needs = report::needs_of(j);
        rows.push(vec![
            s(j, "name").to_string(),
            s(j, "status").to_string(),
            fmt_ms(&j["duration_ms"]),
            if needs.is_empty() {
                "-".into()
            } else {
                needs.join(",")
            },
            cache,
        ]);
        for st in j["steps"].as_array().into_iter().flatten() {
            rows.push(vec![
                format!(
                    "  {}. {}",
                    st["index"].as_i64().unwrap_or(0) + 1,
                    s(st, "name")
                ),
                s(st, "status").to_string(),
                fmt_ms(&st["duration_ms"]),
                st["exit_code"]
                    .as_i64()
                    .map(|c| format!("exit {c}"))
                    .unwrap_or_default(),
                String::new(),
            ]);
        }
        if let Some(e) = j["error"].as_str() {
            rows.push(vec![format!("  ! {e}")]);
        }
    }
    out.push_str(&table(&rows));
    out
}

/// The remote side of a merged view.
pub struct RemoteRuns {
    pub state: Arc<dyn RemoteView>,
    pub logs: Option<Arc<dyn RemoteView>>,
    rt: Rt,
    /// How long one remote read may take ([`REMOTE_TIMEOUT`]).
    timeout: Duration,
}

/// The runtime remote reads block on: the CLI owns one; the dashboard lends
/// its own (the blocking calls then run on `spawn_blocking` threads, where
/// `Handle::block_on` is allowed).
enum Rt {
    Owned(tokio::runtime::Runtime),
    Borrowed(tokio::runtime::Handle),
}

impl RemoteRuns {
    pub fn new(state: Arc<dyn RemoteView>, logs: Option<Arc<dyn RemoteView>>) -> Result<Self> {
        let rt = crate::util::runtime()?;
        Ok(RemoteRuns {
            state,
            logs,
            rt: Rt::Owned(rt),
            timeout: REMOTE_TIMEOUT,
        })
    }

    /// A view that blocks on `handle` (call it only off the async workers).
    pub fn with_handle(
        state: Arc<dyn RemoteView>,
        logs: Option<Arc<dyn RemoteView>>,
        handle: tokio::runtime::Handle,
    ) -> Self {
        RemoteRuns {
            state,
            logs,
            rt: Rt::Borrowed(handle),
            timeout: REMOTE_TIMEOUT,
        }
    }

    /// The same view with another time limit per read (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn block<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let limit = self.timeout;
        let f = async move {
            match tokio::time::timeout(limit, f).await {
                Ok(r) => r,
                // Unanswered is a remote that could not be read (its class
                // decides the exit code).
                Err(_) => Err(anyhow::Error::new(sparkwing_sync::TargetError::transient(
                    format!("no answer within {}", human_duration(limit)),
                ))),
            }
        };
        match &self.rt {
            Rt::Owned(rt) => rt.block_on(f),
            Rt::Borrowed(h) => h.block_on(f),
        }
    }

    /// Every run ID on the remote, oldest first.
    pub fn ids(&self) -> Result<Vec<String>> {
        let t = Arc::clone(&self.state);
        self.block(async move { t.run_ids().await.map_err(anyhow::Error::new) })
    }

    /// The `run.json` of some runs (absent ones are left out), fetched
    /// concurrently and parsed into types ([`sparkwing_sync::doc`]). A run
    /// whose document cannot be read or used is one `unreadable` row with
    /// the reason; it never fails the others.
    pub fn docs(&self, ids: &[String]) -> Result<HashMap<String, Value>> {
        let t = Arc::clone(&self.state);
        let ids = ids.to_vec();
        self.block(async move {
            let mut out = HashMap::new();
            for chunk in ids.chunks(FETCH_CONCURRENCY) {
                let mut set = tokio::task::JoinSet::new();
                for id in chunk {
                    let (t, id) = (Arc::clone(&t), id.clone());
                    set.spawn(async move {
                        let r = t.run(&id).await;
                        (id, r)
                    });
                }
                while let Some(j) = set.join_next().await {
                    let (id, r) = j.map_err(anyhow::Error::new)?;
                    let doc = match r {
                        Ok(None) => continue,
                        Ok(Some(RunRead::Doc(d))) => d.to_value(),
                        Ok(Some(RunRead::Unreadable(why))) => unreadable(&id, &why),
                        Err(e) => unreadable(
                            &id,
                            &format!("could not read its document: {}", scrub(&e.message)),
                        ),
                    };
                    out.insert(id, doc);
                }
            }
            Ok(out)
        })
    }

    /// A job's log as stored remotely: its chunks in order, checked
    /// against `expected` (the chunk count the run document promises),
    /// handed to `sink` one chunk at a time (a log is never held whole),
    /// with a marker line where a chunk is missing. Returns what is
    /// missing, if anything. Each request has its own time limit.
    pub fn log(
        &self,
        run: &str,
        job: &str,
        expected: Option<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Option<String>> {
        let t = self
            .logs
            .clone()
            .ok_or_else(|| anyhow!("the profile keeps logs locally"))?;
        let present =
            self.block(async { t.log_chunks(run, job).await.map_err(anyhow::Error::new) })?;
        let chunks = order_chunks(present.seqs, expected);
        for (i, seq) in chunks.iter().enumerate() {
            let got = match seq {
                Some(seq) => self.block(async {
                    t.log_chunk(run, job, *seq)
                        .await
                        .map_err(anyhow::Error::new)
                })?,
                None => None,
            };
            match got {
                Some(b) => sink(&b)?,
                None => sink(&missing_marker(i, chunks.len()))?,
            }
        }
        Ok(missing_note(job, &chunks))
    }
}

/// The last `n` lines of a byte stream fed in pieces, in bounded memory
/// (`n` lines, however long each is).
struct LastLines {
    n: usize,
    lines: std::collections::VecDeque<Vec<u8>>,
}

impl LastLines {
    fn new(n: usize) -> Self {
        LastLines {
            n,
            lines: std::collections::VecDeque::new(),
        }
    }

    fn push(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            let open = self.lines.back().is_some_and(|l| l.last() != Some(&b'\n'));
            if !open {
                self.lines.push_back(Vec::new());
                if self.lines.len() > self.n.max(1) {
                    self.lines.pop_front();
                }
            }
            let end = b
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |i| i + 1);
            if let Some(l) = self.lines.back_mut() {
                l.extend_from_slice(&b[..end]);
            }
            b = &b[end..];
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        if self.n == 0 {
            return Vec::new();
        }
        self.lines.into_iter().flatten().collect()
    }
}

/// The row shown for a remote run whose document could not be used.
pub fn unreadable(id: &str, why: &str) -> Value {
    json!({"id": clip(id, 64), "pipeline": "?", "status": "unreadable",
           "error": clip(why, 500), "jobs": []})
}

/// Most chunks a remote log is taken to have, 64 GiB of log (10 digits of seq allow more,
/// but a hostile key must not make a reader allocate for them).
const MAX_CHUNKS: u64 = 1 << 16;

/// A remote log's chunks in order of their seq, one slot per chunk from 0:
/// `None` where a chunk is missing (a gap, or fewer chunks than the
/// `expected` count a run document promises). A seq present twice is kept
/// once; seqs past [`MAX_CHUNKS`] are ignored.
pub fn order_chunks(seqs: Vec<u64>, expected: Option<u64>) -> Vec<Option<u64>> {
    let present: BTreeSet<u64> = seqs.into_iter().filter(|s| *s < MAX_CHUNKS).collect();
    let n = present
        .last()
        .map_or(0, |s| s + 1)
        .max(expected.unwrap_or(0).min(MAX_CHUNKS));
    (0..n).map(|i| present.contains(&i).then_some(i)).collect()
}

/// What a reader says where a chunk is missing (the log is never shown as
/// whole when it is not).
pub fn missing_marker(i: usize, total: usize) -> Vec<u8> {
    format!(
        "\n[sparkwing: chunk {} of {total} of this log is missing on the remote]\n",
        i + 1
    )
    .into_bytes()
}

/// `log of job X: chunk 2 of 5 missing on the remote`, or `None`.
pub fn missing_note(job: &str, chunks: &[Option<u64>]) -> Option<String> {
    let missing: Vec<String> = chunks
        .iter()
        .enumerate()
        .filter(|(_, k)| k.is_none())
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    match missing.len() {
        0 => None,
        1 => Some(format!(
            "log of job {job}: chunk {} of {} missing on the remote",
            missing[0],
            chunks.len()
        )),
        n => Some(format!(
            "log of job {job}: {n} of {} chunks missing on the remote ({})",
            chunks.len(),
            clip(&missing.join(", "), 80)
        )),
    }
}

/// The chunk count a run document promises for a job's log.
pub fn expected_chunks(doc: &Value, job: &str) -> Option<u64> {
    doc["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["name"] == job)?
        .get("log_chunks")?
        .as_u64()
}

fn matches(doc: &Value, pipeline: Option<&str>, status: Option<&str>) -> bool {
    pipeline.is_none_or(|p| doc["pipeline"] == p) && status.is_none_or(|st| doc["status"] == st)
}

/// Which runs a list shows: filters, and a page cursor (runs older than
/// `before`, a run ID).
#[derive(Debug, Default, Clone, Copy)]
pub struct ListQuery<'a> {
    pub pipeline: Option<&'a str>,
    pub status: Option<&'a str>,
    pub before: Option<&'a str>,
    pub limit: usize,
}

/// The merged runs list: newest first, local rows marked by sync state.
/// Returns the rows and a warning when the remote could not be read.
/// `store` is `None` where there is no local state (a bucket-only view).
pub fn merged_list(
    store: Option<&Store>,
    remote: &RemoteRuns,
    q: &ListQuery,
) -> Result<(Vec<Value>, Option<String>)> {
    let (pipeline, status, limit) = (q.pipeline, q.status, q.limit);
    let target = remote.state.id().to_string();
    let local: HashMap<String, Value> = match store {
        Some(store) => store
            .runs_for_target(&target)?
            .into_iter()
            .map(|(r, _)| (r.id.clone(), run_json(&r)))
            .collect(),
        None => HashMap::new(),
    };
    let (remote_ids, warning) = match remote.ids() {
        Ok(ids) => (ids.into_iter().collect::<BTreeSet<_>>(), None),
        Err(e) => (
            BTreeSet::new(),
            Some(crate::util::sanitize(&scrub(&format!(
                "could not read {target} ({e:#}); showing this machine's runs only"
            )))),
        ),
    };
    let reachable = warning.is_none();
    let mut all: Vec<&String> = local
        .keys()
        .chain(remote_ids.iter())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|id| q.before.is_none_or(|b| id.as_str() < b))
        .collect();
    all.reverse();
    let mut rows = Vec::new();
    let mut docs_failed: Option<String> = None;
    let mut i = 0;
    while rows.len() < limit && i < all.len() {
        // The next page of candidates; fetch the remote ones together.
        let page: Vec<&String> = all[i..(i + limit.max(FETCH_CONCURRENCY)).min(all.len())].to_vec();
        i += page.len();
        let need: Vec<String> = page
            .iter()
            .filter(|id| !local.contains_key(**id))
            .map(|id| (*id).clone())
            .collect();
        // The IDs listed, but their documents may not come (a remote that
        // hangs on reads): like a listing that fails, that degrades to
        // what this machine has, with a warning, never an error.
        let docs = if need.is_empty() || docs_failed.is_some() {
            HashMap::new()
        } else {
            match remote.docs(&need) {
                Ok(d) => d,
                Err(e) => {
                    docs_failed = Some(crate::util::sanitize(&scrub(&format!(
                        "could not read the runs on {target} ({e:#}); showing this machine's runs only"
                    ))));
                    HashMap::new()
                }
            }
        };
        for id in page {
            let row = match local.get(id) {
                Some(v) => {
                    let mut v = v.clone();
                    v["sync"] = json!(if !reachable {
                        "unknown"
                    } else if remote_ids.contains(id) {
                        "synced"
                    } else {
                        "local only"
                    });
                    v
                }
                None => match docs.get(id) {
                    Some(d) => {
                        let mut v = d.clone();
                        if let Some(m) = v.as_object_mut() {
                            m.remove("jobs");
                        }
                        v["sync"] = json!("remote");
                        v
                    }
                    None => continue,
                },
            };
            if matches(&row, pipeline, status) && rows.len() < limit {
                rows.push(row);
            }
        }
    }
    Ok((rows, warning.or(docs_failed)))
}

/// One run's document: local when this machine has it, else the remote's.
pub fn merged_show(
    store: Option<&Store>,
    remote: &RemoteRuns,
    home: &Path,
    id: &str,
) -> Result<(Value, Option<String>)> {
    if let Some(Ok(r)) = store.map(|s| s.find_run(id)) {
        let store = store.ok_or_else(|| anyhow!("no local store"))?;
        let mut doc = report::run_document(store, &r, Some(home))?;
        doc["sync"] = json!("local");
        return Ok((doc, None));
    }
    let ids = remote.ids().with_context(|| {
        format!(
            "run `{id}` is not on this machine and {} could not be read",
            remote.state.id()
        )
    })?;
    let upper = id.to_ascii_uppercase();
    let found: Vec<&String> = ids.iter().filter(|r| r.starts_with(&upper)).collect();
    let full = match found.as_slice() {
        [one] => (*one).clone(),
        [] => bail!(
            "no run `{id}` on this machine or on {}; see `sparkwing runs list --profile ...`",
            remote.state.id()
        ),
        many => bail!(
            "run ID prefix `{id}` is ambiguous ({} matches); give more characters",
            many.len()
        ),
    };
    let docs = remote.docs(std::slice::from_ref(&full))?;
    let mut doc = docs
        .get(&full)
        .cloned()
        .ok_or_else(|| anyhow!("run {full} has no run.json on {} yet", remote.state.id()))?;
    doc["sync"] = json!("remote");
    Ok((doc, None))
}

/// Prints a remote run's logs (all jobs, or one), with `--tail`.
pub fn remote_logs(
    remote: &RemoteRuns,
    doc: &Value,
    job: Option<&str>,
    tail: Option<usize>,
) -> Result<()> {
    let run = s(doc, "id");
    if doc["status"] == "unreadable" {
        bail!(
            "run {run} on the remote is unreadable ({}); there is no log to show",
            s(doc, "error")
        );
    }
    let jobs: Vec<&str> = doc["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["name"].as_str())
        .collect();
    let selected: Vec<&str> = match job {
        Some(j) if jobs.contains(&j) => vec![j],
        Some(j) => bail!(
            "run {run} has no job `{}`; its jobs: {}{}",
            crate::util::clip(j, 100),
            jobs.iter().take(20).copied().collect::<Vec<_>>().join(", "),
            if jobs.len() > 20 {
                format!(" … ({} more)", jobs.len() - 20)
            } else {
                String::new()
            }
        ),
        None => jobs.clone(),
    };
    let mut out = std::io::stdout().lock();
    let mut incomplete = Vec::new();
    for j in &selected {
        if selected.len() > 1 {
            writeln!(out, "==> {} <==", cell(j))?;
        }
        let expected = expected_chunks(doc, j);
        let missing = match tail {
            None => remote.log(run, j, expected, &mut |b| Ok(out.write_all(b)?))?,
            Some(n) => {
                // Only the last `n` lines are kept while the chunks go by.
                let mut last = LastLines::new(n);
                let m = remote.log(run, j, expected, &mut |b| {
                    last.push(b);
                    Ok(())
                })?;
                out.write_all(&last.into_bytes())?;
                m
            }
        };
        if let Some(m) = missing {
            incomplete.push(m);
        }
    }
    out.flush()?;
    for m in incomplete {
        crate::say!(
            "sparkwing: {}; the log above marks where (it may still be on its way: see `sparkwing sync status` on the runner that ran it)",
            crate::util::sanitize(&m)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_lines_of_a_log_fed_in_pieces_are_exact() {
        let log = b"one\ntwo\nthree is long\nfour\nfive";
        for n in [0usize, 1, 2, 3, 10] {
            let want: Vec<u8> = {
                let lines: Vec<&[u8]> = log.split_inclusive(|&b| b == b'\n').collect();
                lines[lines.len().saturating_sub(n)..].concat()
            };
            for piece in [1usize, 2, 3, 7, 100] {
                let mut last = LastLines::new(n);
                for c in log.chunks(piece) {
                    last.push(c);
                }
                assert_eq!(last.into_bytes(), want, "n={n} piece={piece}");
            }
        }
    }

    use super::*;

    #[test]
    fn remote_chunks_are_ordered_deduplicated_and_gaps_named() {
        let chunks = order_chunks(vec![2, 0, 0], None);
        assert_eq!(chunks, vec![Some(0), None, Some(2)]);
        assert_eq!(
            missing_note("j", &chunks).as_deref(),
            Some("log of job j: chunk 2 of 3 missing on the remote")
        );
        // The run document promises 5: the last two are missing too.
        let chunks = order_chunks(vec![0, 1, 2], Some(5));
        assert_eq!(chunks.len(), 5);
        assert!(missing_note("j", &chunks).is_some_and(|m| m.contains("2 of 5 chunks")));
        // A hostile seq cannot make a reader allocate billions of slots.
        assert!(order_chunks(vec![9_999_999_999], None).is_empty());
        assert_eq!(
            order_chunks(vec![], Some(u64::MAX)).len() as u64,
            MAX_CHUNKS
        );
    }

    /// A remote that lists its runs but never answers for their documents
    /// (a proxy or share that hangs on reads) degrades `runs list
    /// --profile` to this machine's runs with a warning, as a listing that
    /// fails does; it is not an error (it was, exiting 69 after 15 s).
    #[test]
    fn a_remote_that_hangs_on_documents_degrades_the_list_to_a_warning() {
        use async_trait::async_trait;
        use bytes::Bytes;
        use sparkwing_sync::view::{LogChunks, RunEvents};
        use sparkwing_sync::TargetError;

        #[derive(Debug)]
        struct Hangs;
        #[async_trait]
        impl RemoteView for Hangs {
            fn id(&self) -> &str {
                "test:hangs"
            }
            async fn probe(&self) -> Result<(), TargetError> {
                Ok(())
            }
            async fn run_ids(&self) -> Result<Vec<String>, TargetError> {
                Ok(vec!["01M8K9H70J68EA8RZACW4CBG3J".into()])
            }
            async fn run(&self, _: &str) -> Result<Option<RunRead>, TargetError> {
                std::future::pending().await
            }
            async fn events(&self, _: &str) -> Result<RunEvents, TargetError> {
                std::future::pending().await
            }
            async fn log_chunks(&self, _: &str, _: &str) -> Result<LogChunks, TargetError> {
                std::future::pending().await
            }
            async fn log_chunk(
                &self,
                _: &str,
                _: &str,
                _: u64,
            ) -> Result<Option<Bytes>, TargetError> {
                std::future::pending().await
            }
            async fn manifest(&self, _: &str) -> Result<Option<Bytes>, TargetError> {
                std::future::pending().await
            }
            async fn blob(&self, _: &str, _: u64) -> Result<Option<Bytes>, TargetError> {
                std::future::pending().await
            }
            async fn blob_range(
                &self,
                _: &str,
                _: u64,
                _: u64,
            ) -> Result<Option<Bytes>, TargetError> {
                std::future::pending().await
            }
        }
        let remote = RemoteRuns::new(Arc::new(Hangs), None)
            .unwrap()
            .with_timeout(Duration::from_millis(50));
        let q = ListQuery {
            limit: 20,
            ..ListQuery::default()
        };
        let (rows, warning) = merged_list(None, &remote, &q).unwrap();
        assert!(rows.is_empty(), "{rows:?}");
        let w = warning.expect("a warning");
        assert!(w.contains("showing this machine's runs only"), "{w}");
        // `runs show` of that run still says the remote could not be read.
        let home = tempfile::tempdir().unwrap();
        let e = merged_show(None, &remote, home.path(), "01M8K9H70J68")
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            crate::fault::exit_code(&e),
            crate::fault::REMOTE_UNAVAILABLE
        );
    }

    #[test]
    fn a_hostile_remote_document_renders_without_panicking() {
        let doc = json!({
            "id": "R", "status": 7, "pid": null,
            "jobs": [{"name": "ü", "cache_key": "ééééééééééééééé", "needs": "not a list",
                      "steps": [{"index": "x", "exit_code": "y"}]}, 5, null],
        });
        let out = render_show(&doc);
        assert!(out.contains("key éééééééééééé"), "{out}");
        // Escape sequences in any field never reach the terminal.
        let evil = json!({"id": "R\u{1b}]0;t\u{7}", "status": "\u{1b}[2J", "error": "a\rb",
            "pipeline": "p".repeat(70_000), "jobs": [{"name": "\u{9b}x", "error": "\u{1b}[31m"}]});
        let out = render_show(&evil);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(render_list(&[doc, json!(null)], true).contains("RUN"));
    }
}
