//! Replication: turns what a run writes locally into outbox entries.
//!
//! Every source is local and durable first (`state.db` events, job log
//! files, CAS blobs and cache manifests). **What a remote receives is
//! decided once, in the local store**: events are grouped into segments and
//! log bytes into chunks by rows of `state.db` (`event_segments`,
//! `log_chunks`), written under its write lock, so every caller — this run,
//! another process's reconcile, a daemon, a rebuilt `outbox.db` — derives
//! the same objects with the same bytes. The outbox then drops anything at or
//! below a stream's high-water mark inside the enqueue transaction, so
//! nothing delivered is queued again. ARCHITECTURE.md ("Why nothing is lost
//! or doubled") has the argument in full.
//!
//! | source | stream | entry seq | op | object |
//! |---|---|---|---|---|
//! | a closed event segment | `state/<run>` | its first event seq | `state.event` | `runs/<run>/events/<first>.ndjson` |
//! | the run document | `summary/<run>` | [`summary_version`] | `state.run` | `runs/<run>/run.json` |
//! | a recorded log chunk | `log/<run>/<job>` | the chunk's seq | `log.chunk` | `<run>/<job>/<seq>.log` |
//! | a cache entry's new packs | `cache/<key>/<run>/<pack>`, one each | 0 | `cache.blob` | `cas/..` |
//! | then its manifest (after every stream below its own) | `cache/<key>/<run>` | 0 | `cache.manifest` | `keys/<key>.json` |

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use sparkwing_outbox::{Mark, NewEntry, Outbox, Payload, INLINE_LIMIT};
use sparkwing_sync::doc::Event;
use sparkwing_sync::target::{stream, OpKind};
use tokio::sync::Notify;

use crate::local::store::{CacheEntry, RunTargets, Store};
use crate::remote::pack;
use crate::remote::signing::SigningKey;
use crate::run::cache::Manifest;
use crate::run::logs::log_path;

/// Most events in one segment object.
pub const SEGMENT_MAX: i64 = 256;

/// A run's events wait this long for company before a segment is closed
/// (unless the run has ended): fewer, larger objects.
pub const SEGMENT_LINGER_MS: i64 = 1000;

/// Largest log chunk object.
pub const LOG_CHUNK: u64 = 1 << 20;

/// The version of a run document: it changes when the run has a new event
/// or a new log chunk, and only grows (both counts only grow), so the
/// outbox's high-water mark keeps an older document from being queued
/// after a newer one.
pub fn summary_version(last_event_seq: i64, log_chunks: i64) -> i64 {
    (last_event_seq << 32) | (log_chunks & 0xffff_ffff)
}

/// Opens `home/outbox.db` for any command. When the open found it damaged
/// and moved it aside, says so once, naming both files: nothing is lost,
/// since the caller's reconcile (run, daemon, flush) queues again from
/// `state.db` whatever was not delivered, and a delivered object is
/// rewritten with the same bytes.
pub fn open_outbox(home: &std::path::Path) -> Result<Outbox> {
    let outbox = Outbox::open(home)?;
    if let Some(aside) = outbox.set_aside() {
        crate::say!(
            "sparkwing: warning: {} was damaged ({}); moved it aside to {} and started a new one, which is filled again from {} (nothing is lost; delete the old file when done with it)",
            outbox.path().display(),
            aside.reason,
            aside.path.display(),
            home.join("state.db").display()
        );
    }
    Ok(outbox)
}

/// Enqueues a run's writes for its remote targets.
pub struct Replicator {
    outbox: Arc<Outbox>,
    home: PathBuf,
    targets: RunTargets,
    wake: Option<Arc<Notify>>,
    signing: Option<Arc<SigningKey>>,
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
            signing: None,
        }
    }

    /// Signs the cache manifests this replicator publishes with `key`.
    pub fn with_signing(mut self, key: Option<Arc<SigningKey>>) -> Self {
        self.signing = key;
        self
    }

    fn poke(&self, n: usize) {
        if n > 0 {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
    }

    /// Closes the run's event segments that are due (all of them when
    /// `force`: the run has ended) and enqueues every closed segment the
    /// outbox has not seen.
    pub fn events(&self, store: &Store, run: &str, force: bool) -> Result<usize> {
        let Some(t) = &self.targets.state else {
            return Ok(0);
        };
        store.close_segments(run, force, SEGMENT_LINGER_MS, SEGMENT_MAX)?;
        let stream = stream::state(run);
        let high = self.outbox.stream_high(t, &stream)?.unwrap_or(0);
        let mut entries = Vec::new();
        for (first, last) in store.segments_after(run, high)? {
            let mut body = Vec::new();
            for e in store.events_between(run, first, last)? {
                body.extend(Event::encode(&e));
            }
            entries.push(NewEntry {
                stream: stream.clone(),
                seq: first,
                op: OpKind::StateEvents.as_str().into(),
                subject: run.to_string(),
                payload: Payload::Inline(body),
            });
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let n = self.outbox.enqueue(t, &entries, &[])?;
        self.poke(n);
        Ok(n)
    }

    /// Enqueues the run document (`run.json`) as of now, unless the outbox
    /// already had this version of it (see [`summary_version`]).
    pub fn summary(&self, store: &Store, run: &str) -> Result<usize> {
        let Some(t) = &self.targets.state else {
            return Ok(0);
        };
        // The version first, the document after: every change of the run
        // row comes with an event, so a document read after its version is
        // at least as new as that version says. (Read the other way round,
        // a reconcile in another process could pair a `running` row with
        // the version of the finished run, and the run's own final
        // document, at the same version, was then dropped as already
        // queued: the remote kept `running`. The eight-runs test found it.)
        let seq = store.last_event_seq(run)?;
        let chunks = store.log_chunk_totals(run)?;
        let version = summary_version(seq, chunks.values().map(|c| c.0).sum());
        let stream = stream::summary(run);
        if self
            .outbox
            .stream_high(t, &stream)?
            .is_some_and(|h| h >= version)
        {
            return Ok(0);
        }
        let row = store.find_run(run)?;
        let doc = crate::local::view::remote_document(store, &row)?;
        let body = serde_json::to_vec(&doc)?;
        let payload = if body.len() <= INLINE_LIMIT {
            Payload::Inline(body)
        } else {
            // A huge pipeline: keep the document beside the run's logs.
            let path = self
                .home
                .join("runs")
                .join(run)
                .join(format!(".run.{version}.json"));
            crate::util::write_atomic(&path, &body)?;
            Payload::File {
                path,
                offset: 0,
                len: body.len() as u64,
            }
        };
        let entry = NewEntry {
            stream,
            seq: version,
            op: OpKind::RunSummary.as_str().into(),
            subject: run.to_string(),
            payload,
        };
        let n = self.outbox.enqueue(t, &[entry], &[])?;
        self.poke(n);
        Ok(n)
    }

    /// Records a job's log chunks up to `len` bytes of its file (in chunks
    /// of at most [`LOG_CHUNK`]) and enqueues every recorded chunk the
    /// outbox has not seen. The log file only grows, so each chunk is a
    /// reference to an immutable byte range.
    pub fn log(&self, store: &Store, run: &str, job: &str, len: u64) -> Result<usize> {
        let Some(t) = &self.targets.logs else {
            return Ok(0);
        };
        store.record_log_chunks(run, job, len, LOG_CHUNK)?;
        let stream = stream::log(run, job);
        let high = self.outbox.stream_high(t, &stream)?.unwrap_or(-1);
        let path = log_path(&self.home, run, job);
        let entries: Vec<NewEntry> = store
            .log_chunks_after(run, job, high)?
            .into_iter()
            .map(|(seq, offset, len)| NewEntry {
                stream: stream.clone(),
                seq,
                op: OpKind::LogChunk.as_str().into(),
                subject: stream::log_subject(run, job),
                payload: Payload::File {
                    path: path.clone(),
                    offset,
                    len,
                },
            })
            .collect();
        if entries.is_empty() {
            return Ok(0);
        }
        let n = self.outbox.enqueue(t, &entries, &[])?;
        self.poke(n);
        Ok(n)
    }

    /// Enqueues a cache entry: its new packs, each on a stream below the
    /// entry's, and its manifest on the entry's stream, which waits for
    /// them: the manifest is published only after every pack it names
    /// ([`crate::remote::pack`]). Chunks the target already holds (the
    /// local index, counting only packs that have left the outbox) are
    /// named, not packed again.
    pub fn cache(&self, store: &Store, entry: &CacheEntry) -> Result<usize> {
        let Some(t) = &self.targets.cache else {
            return Ok(0);
        };
        let name = stream::cache(&entry.key, &entry.run_id);
        if self.outbox.mark(t, &name)?.is_some() {
            return Ok(0);
        }
        let manifest: Manifest =
            serde_json::from_str(&entry.manifest).context("reading a cache manifest")?;
        // Held until the packs are queued: the staging sweep of `cache
        // prune` runs only while no save holds it, so it never removes a
        // pack built here and not queued yet.
        let _building = crate::run::cache::begin_save(&self.home)?;
        // A pack this machine queued is named only once it has left this
        // very outbox: while queued, the manifest could be published
        // before it; through an outbox since deleted or set aside, it may
        // never have been delivered at all.
        let outbox_id = self.outbox.identity()?;
        let mut delivered: HashMap<String, bool> = HashMap::new();
        let mut known = HashMap::new();
        for (sha, (loc, via)) in store.cache_chunks(t)? {
            let usable = match via {
                None => true,
                Some(v) if v != outbox_id => false,
                Some(_) => match delivered.get(&loc.pack) {
                    Some(&d) => d,
                    None => {
                        let d = !self.outbox.has_subject(Some(t), &loc.pack)?;
                        delivered.insert(loc.pack.clone(), d);
                        d
                    }
                },
            };
            if usable {
                known.insert(sha, loc);
            }
        }
        let built = pack::build(&self.home, &manifest, &known)?;
        let mut entries = Vec::new();
        // Each pack in a stream of its own below the entry's: packs go in
        // parallel, the manifest (on the entry's stream) after all of them
        // ([`Outbox::claim`]).
        for p in &built.packs {
            entries.push(NewEntry {
                stream: stream::cache_pack(&name, &p.sha256),
                seq: 0,
                op: OpKind::CacheBlob.as_str().into(),
                subject: p.sha256.clone(),
                payload: Payload::File {
                    path: p.path.clone(),
                    offset: 0,
                    len: p.len,
                },
            });
        }
        let mut doc = crate::run::cache::manifest_document(entry, &built.manifest);
        if let (Some(key), Some(map)) = (&self.signing, doc.as_object_mut()) {
            key.sign(map);
        }
        let body = pack::encode_manifest(&serde_json::to_vec(&doc)?)?;
        let payload = if body.len() <= INLINE_LIMIT {
            Payload::Inline(body)
        } else {
            // Too large to keep in outbox.db: a file beside the packs,
            // removed once delivered (`run::evict::sweep_staging`).
            let path = pack::staging_dir(&self.home).join(format!(
                "{}.{}.manifest",
                entry.key,
                sparkwing_sync::target::sha256_hex(&body)
            ));
            crate::util::write_atomic(&path, &body)
                .map_err(|e| anyhow::anyhow!(sparkwing_schema::StorageFault::from_io(&path, &e)))?;
            Payload::File {
                path,
                offset: 0,
                len: body.len() as u64,
            }
        };
        entries.push(NewEntry {
            stream: name.clone(),
            seq: 0,
            op: OpKind::CacheManifest.as_str().into(),
            subject: entry.key.clone(),
            payload,
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
        // Usable by later saves once these packs have left the outbox.
        store.cache_chunks_put(t, &built.chunks, Some(&outbox_id))?;
        self.poke(n);
        Ok(n)
    }

    /// Enqueues whatever local writes of runs bound for these targets are
    /// not in the outbox yet (after a crash, or a run that could not reach
    /// the outbox). Runs already complete on every target are skipped.
    pub fn reconcile(&self, store: &Store) -> Result<usize> {
        // Runs whose process died are recorded as interrupted first, so
        // that state change replicates like any other.
        store.settle_dead_runs()?;
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
                    signing: self.signing.clone(),
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
        row: &crate::local::store::RunRow,
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
        // A run that has ended writes no more events: close them all.
        // A live run (another process) closes its own as they come due.
        let ended = !crate::status::RunStatus::live(row.shown_status());
        let mut total = self.events(store, &row.id, ended)?;
        for job in store.jobs(&row.id)? {
            let len =
                std::fs::metadata(log_path(&self.home, &row.id, &job.name)).map_or(0, |m| m.len());
            total += self.log(store, &row.id, &job.name, len)?;
        }
        for entry in store.cache_entries_of_run(&row.id)? {
            match self.cache(store, &entry) {
                Ok(n) => total += n,
                Err(e) if crate::fault::is_storage(&e) => return Err(e),
                // Its outputs left the local cache before they could be
                // packed (`cache prune`): nothing to send, said once (the
                // entry is marked as handled); the rest goes.
                Err(e) => {
                    if let Some(t) = &self.targets.cache {
                        self.outbox.enqueue(
                            t,
                            &[],
                            &[Mark {
                                name: stream::cache(&entry.key, &entry.run_id),
                                seq: entry.created_at,
                                offset: 0,
                            }],
                        )?;
                    }
                    crate::say!(
                        "sparkwing: cache key {} of run {} is not sent to the remote: its outputs are no longer in the local cache ({})",
                        crate::util::clip(&entry.key, 12),
                        row.id,
                        crate::util::one_line(&format!("{e:#}"), 300)
                    )
                }
            }
        }
        total += self.summary(store, &row.id)?;
        // A finished (or interrupted) run writes nothing more: remember it.
        if ended {
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
