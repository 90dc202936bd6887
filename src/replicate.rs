//! Replication: turns what a run writes locally into outbox entries.
//!
//! Every source is local and durable first (`state.db` events, job log
//! files, CAS blobs and cache manifests); what has been enqueued from each is
//! tracked by an outbox **mark** that moves in the same transaction as the
//! entries. Enqueueing is therefore a pure function of local state and
//! marks: a run calls it as it goes, and [`Replicator::reconcile`] calls the
//! same functions after a crash to enqueue whatever the crash left out.
//!
//! | source | stream | op | object |
//! |---|---|---|---|
//! | events after mark `events/<run>` | `state/<run>` | `state.event` | `runs/<run>/events/<seq>.ndjson` |
//! | the run document | `summary/<run>` | `state.run` | `runs/<run>/run.json` |
//! | log bytes after mark `log/<run>/<job>` | `log/<run>/<job>` | `log.chunk` | `<run>/<job>/<seq>.log` |
//! | a cache entry's blobs, then its manifest | `cache/<key>/<run>` | `cache.blob`, `cache.manifest` | `cas/..`, `keys/<key>.json` |

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sparkwing_outbox::{Mark, NewEntry, Outbox, Payload, INLINE_LIMIT};
use tokio::sync::Notify;

use crate::cache::{Cas, Manifest};
use crate::logs::log_path;
use crate::report;
use crate::store::{CacheEntry, EventRow, RunTargets, Store};

/// Largest log chunk object.
pub const LOG_CHUNK: u64 = 1 << 20;

/// One event as a line of a segment object.
pub fn encode_event(e: &EventRow) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "run": e.run, "seq": e.seq, "ts": e.ts, "kind": e.kind, "job": e.job, "data": e.data,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Parses the lines of a segment object (the inverse of [`encode_event`]).
/// A line that is not an event is an error naming its number.
pub fn decode_events(body: &[u8]) -> Result<Vec<EventRow>, String> {
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(Value::as_i64);
        match (s("run"), n("seq"), n("ts"), s("kind")) {
            (Some(run), Some(seq), Some(ts), Some(kind)) => out.push(EventRow {
                run,
                seq,
                ts,
                kind,
                job: s("job"),
                data: v.get("data").cloned().unwrap_or(Value::Null),
            }),
            _ => {
                return Err(format!(
                    "line {}: not an event (needs run, seq, ts, kind)",
                    i + 1
                ))
            }
        }
    }
    Ok(out)
}

/// Enqueues a run's writes for its remote targets.
pub struct Replicator {
    outbox: Arc<Outbox>,
    home: PathBuf,
    targets: RunTargets,
    wake: Option<Arc<Notify>>,
}

impl Replicator {
    pub fn new(
        outbox: Arc<Outbox>,
        home: PathBuf,
        targets: RunTargets,
        wake: Option<Arc<Notify>>,
    ) -> Self {
        Replicator {
            outbox,
            home,
            targets,
            wake,
        }
    }

    fn poke(&self, n: usize) {
        if n > 0 {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
    }

    /// Enqueues the run's events after its mark.
    pub fn events(&self, store: &Store, run: &str) -> Result<usize> {
        let Some(t) = &self.targets.state else {
            return Ok(0);
        };
        let name = format!("events/{run}");
        let after = self.outbox.mark(t, &name)?.map_or(0, |m| m.0);
        let events = store.events_after(run, after)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let entries: Vec<NewEntry> = events
            .iter()
            .map(|e| NewEntry {
                stream: format!("state/{run}"),
                seq: e.seq,
                op: "state.event".into(),
                subject: run.to_string(),
                payload: Payload::Inline(encode_event(e)),
            })
            .collect();
        let n = self.outbox.enqueue(
            t,
            &entries,
            &[Mark {
                name,
                seq: last,
                offset: 0,
            }],
        )?;
        self.poke(n);
        Ok(n)
    }

    /// Enqueues the run document (`run.json`) as of its latest event.
    pub fn summary(&self, store: &Store, run: &str) -> Result<usize> {
        let Some(t) = &self.targets.state else {
            return Ok(0);
        };
        let row = store.find_run(run)?;
        let seq = store.last_event_seq(run)?;
        let name = format!("summary/{run}");
        if self.outbox.mark(t, &name)?.is_some_and(|m| m.0 >= seq) {
            return Ok(0);
        }
        let mut doc = report::run_document(store, &row, None)?;
        doc["events_through"] = json!(seq);
        let body = serde_json::to_vec(&doc)?;
        let payload = if body.len() <= INLINE_LIMIT {
            Payload::Inline(body)
        } else {
            // A huge pipeline: keep the document beside the run's logs.
            let path = self
                .home
                .join("runs")
                .join(run)
                .join(format!(".run.{seq}.json"));
            crate::util::write_atomic(&path, &body)?;
            Payload::File {
                path,
                offset: 0,
                len: body.len() as u64,
            }
        };
        let entry = NewEntry {
            stream: format!("summary/{run}"),
            seq,
            op: "state.run".into(),
            subject: run.to_string(),
            payload,
        };
        let n = self.outbox.enqueue(
            t,
            &[entry],
            &[Mark {
                name,
                seq,
                offset: 0,
            }],
        )?;
        self.poke(n);
        Ok(n)
    }

    /// Enqueues a job's log bytes from its mark up to `len`, in chunks of at
    /// most [`LOG_CHUNK`]. The bytes are already in the log file, which only
    /// grows, so each chunk is a reference to an immutable byte range.
    pub fn log(&self, run: &str, job: &str, len: u64) -> Result<usize> {
        let Some(t) = &self.targets.logs else {
            return Ok(0);
        };
        let name = format!("log/{run}/{job}");
        let (mut seq, mut offset) = self
            .outbox
            .mark(t, &name)?
            .map_or((0, 0), |m| (m.0, m.1 as u64));
        if len <= offset {
            return Ok(0);
        }
        let path = log_path(&self.home, run, job);
        let mut entries = Vec::new();
        while offset < len {
            let n = (len - offset).min(LOG_CHUNK);
            entries.push(NewEntry {
                stream: name.clone(),
                seq,
                op: "log.chunk".into(),
                subject: format!("{run}/{job}"),
                payload: Payload::File {
                    path: path.clone(),
                    offset,
                    len: n,
                },
            });
            seq += 1;
            offset += n;
        }
        let n = self.outbox.enqueue(
            t,
            &entries,
            &[Mark {
                name,
                seq,
                offset: offset as i64,
            }],
        )?;
        self.poke(n);
        Ok(n)
    }

    /// Enqueues a cache entry: its blobs, then its manifest, in one stream,
    /// so the manifest is published only after every blob it names.
    pub fn cache(&self, entry: &CacheEntry) -> Result<usize> {
        let Some(t) = &self.targets.cache else {
            return Ok(0);
        };
        let name = format!("cache/{}/{}", entry.key, entry.run_id);
        if self.outbox.mark(t, &name)?.is_some() {
            return Ok(0);
        }
        let manifest: Manifest =
            serde_json::from_str(&entry.manifest).context("reading a cache manifest")?;
        let cas = Cas::new(&self.home);
        let mut entries = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for f in manifest.files.iter().filter(|f| f.symlink.is_none()) {
            if !seen.insert(f.sha256.clone()) {
                continue;
            }
            entries.push(NewEntry {
                stream: name.clone(),
                seq: entries.len() as i64,
                op: "cache.blob".into(),
                subject: f.sha256.clone(),
                payload: Payload::File {
                    path: cas.blob_path(&f.sha256),
                    offset: 0,
                    len: f.size,
                },
            });
        }
        let doc = json!({
            "key": entry.key, "job": entry.job, "pipeline": entry.pipeline, "run_id": entry.run_id,
            "created_at": entry.created_at, "expires_at": entry.expires_at, "manifest": manifest,
        });
        entries.push(NewEntry {
            stream: name.clone(),
            seq: entries.len() as i64,
            op: "cache.manifest".into(),
            subject: entry.key.clone(),
            payload: Payload::Inline(serde_json::to_vec(&doc)?),
        });
        let n = self.outbox.enqueue(
            t,
            &entries,
            &[Mark {
                name,
                seq: entry.created_at,
                offset: 0,
            }],
        )?;
        self.poke(n);
        Ok(n)
    }

    /// Enqueues whatever local writes of runs bound for these targets are
    /// not in the outbox yet (after a crash, or a run that could not reach
    /// the outbox). Runs already complete on every target are skipped.
    pub fn reconcile(&self, store: &Store) -> Result<usize> {
        let ids = self.target_ids();
        // Which runs are already complete, one query per target (not one
        // per run: this runs at the start of every run).
        let mut done = std::collections::HashMap::new();
        for t in &ids {
            done.insert(t.to_string(), self.outbox.mark_names(t, "done/")?);
        }
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for t in &ids {
            for (row, targets) in store.runs_for_target(t)? {
                if !seen.insert(row.id.clone()) {
                    continue;
                }
                // Only the surfaces this replicator serves; a run bound for
                // other targets is left to their own daemon.
                let same = |mine: &Option<String>, theirs: &Option<String>| {
                    if mine == theirs {
                        mine.clone()
                    } else {
                        None
                    }
                };
                let part = Replicator {
                    outbox: Arc::clone(&self.outbox),
                    home: self.home.clone(),
                    targets: RunTargets {
                        state: same(&self.targets.state, &targets.state),
                        logs: same(&self.targets.logs, &targets.logs),
                        cache: same(&self.targets.cache, &targets.cache),
                    },
                    wake: self.wake.clone(),
                };
                total += part.reconcile_run(store, &row, &done)?;
            }
        }
        Ok(total)
    }

    /// The distinct targets this replicator serves.
    fn target_ids(&self) -> Vec<&String> {
        let mut ids: Vec<&String> = [&self.targets.state, &self.targets.logs, &self.targets.cache]
            .into_iter()
            .flatten()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn reconcile_run(
        &self,
        store: &Store,
        row: &crate::store::RunRow,
        done_marks: &std::collections::HashMap<String, std::collections::HashSet<String>>,
    ) -> Result<usize> {
        let ids = self.target_ids();
        let done = format!("done/{}", row.id);
        if ids.iter().all(|t| {
            done_marks
                .get(t.as_str())
                .is_some_and(|d| d.contains(&done))
        }) {
            return Ok(0);
        }
        let mut total = self.events(store, &row.id)?;
        for job in store.jobs(&row.id)? {
            let len =
                std::fs::metadata(log_path(&self.home, &row.id, &job.name)).map_or(0, |m| m.len());
            total += self.log(&row.id, &job.name, len)?;
        }
        for entry in store.cache_entries_of_run(&row.id)? {
            total += self.cache(&entry)?;
        }
        total += self.summary(store, &row.id)?;
        // A finished (or interrupted) run writes nothing more: remember it.
        if row.shown_status() != "running" {
            for t in &ids {
                self.outbox.enqueue(
                    t,
                    &[],
                    &[Mark {
                        name: done.clone(),
                        seq: 1,
                        offset: 0,
                    }],
                )?;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_segment_lines() {
        let e = EventRow {
            run: "R".into(),
            seq: 7,
            ts: 1,
            kind: "job.started".into(),
            job: Some("build".into()),
            data: json!({"cache_key": null, "note": "line\nbreak"}),
        };
        let mut body = encode_event(&e);
        body.extend(encode_event(&EventRow {
            seq: 8,
            job: None,
            ..e.clone()
        }));
        let back = decode_events(&body).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].seq, 7);
        assert_eq!(back[0].data, e.data);
        assert_eq!(back[1].job, None);
        assert!(decode_events(b"{\"seq\":1}\n")
            .unwrap_err()
            .contains("line 1"));
    }
}
