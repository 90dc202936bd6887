//! An independent checker of the remote layouts (DESIGN.md, "The remote
//! layouts"; invariants 2 and 4): the remote must hold exactly what the local
//! store holds, read here with the test's own code (std::fs for a directory,
//! raw `object_store` requests for a bucket), never through the product's
//! targets, replicator or `sync verify`.
//!
//! Strict by construction: every event seq exactly once across all segment
//! objects (a second copy is a failure even when identical), segment names
//! and boundaries equal to the local `event_segments` rows, every event equal
//! to its local row; `run.json` with the locally stored status and the last
//! local seq; log chunks contiguous from `0000000000.log` and byte-equal to
//! the local log file; every cache manifest's blobs present, SHA-256
//! verified, byte-equal to the local CAS; and (for a remote this home owns
//! alone) nothing else at all: no staged files, no stray keys.
//!
//! Every discrepancy is collected and the check panics once, listing them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::OptionalExtension;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A remote's objects: `<surface>/<key>` (surface = state, logs, cache) to
/// the object's bytes.
pub type Snapshot = BTreeMap<String, Vec<u8>>;

/// Where a staged write may sit in a `filesystem` surface (outside the key
/// space); it must be empty after a clean flush.
const STAGING: &str = ".sparkwing-staging";

/// Reads a filesystem remote whose surfaces are `root/{state,logs,cache}`,
/// every regular file, hidden ones included. Anything that is not a
/// directory or a regular file is recorded under a `!special:` key so the
/// check reports it.
pub fn dir_snapshot(root: &Path) -> Snapshot {
    fn walk(base: &Path, dir: &Path, out: &mut Snapshot) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for ent in rd {
            let ent = ent.unwrap();
            let p = ent.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                walk(base, &p, out);
            } else if ft.is_file() {
                out.insert(rel, std::fs::read(&p).unwrap());
            } else {
                out.insert(format!("!special:{rel}"), Vec::new());
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

/// Reads every object of an S3 bucket (moto) with plain `object_store`
/// list and get requests.
pub fn s3_snapshot(endpoint: &str, bucket: &str) -> Snapshot {
    use sparkwing_sync::object_store::aws::AmazonS3Builder;
    // TLS setup only (the client needs a crypto provider; the endpoint is
    // plain http).
    sparkwing_sync::object::install_crypto_provider();
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()
        .unwrap();
    store_snapshot(&store)
}

/// Reads every object of a store (a bucket of any provider, through a
/// client the test built itself) with plain `object_store` list and get
/// requests.
pub fn store_snapshot(store: &dyn sparkwing_sync::object_store::ObjectStore) -> Snapshot {
    use futures_util::TryStreamExt;
    use sparkwing_sync::object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = Snapshot::new();
        for m in metas {
            let body = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            assert_eq!(body.len() as u64, m.size, "{} read whole", m.location);
            out.insert(m.location.to_string(), body.to_vec());
        }
        out
    })
}

pub fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Whether the remote may hold data of other homes too (a bucket shared by
/// several runners): then keys of runs this home does not know are not
/// reported, everything about this home's runs still is.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Scope {
    /// This home is the only writer: anything unaccounted for is a failure.
    Exclusive,
    Shared,
}

/// What was checked (so a test can assert it checked enough).
#[derive(Debug, Default, Clone)]
pub struct Checked {
    pub runs: usize,
    pub events: usize,
    pub segments: usize,
    pub log_chunks: usize,
    pub log_bytes: u64,
    pub manifests: usize,
    pub blobs: usize,
    /// Runs whose (local and remote) status is `interrupted`.
    pub interrupted: Vec<String>,
    /// Local status of every run.
    pub statuses: BTreeMap<String, String>,
}

/// A `cache_entries` row: key, job, pipeline, run_id, created_at,
/// expires_at, manifest.
type CacheRow = (String, String, String, String, i64, Option<i64>, String);

struct LocalEvent {
    seq: i64,
    ts: i64,
    kind: String,
    job: Option<String>,
    data: Value,
}

fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn rows<T>(
    db: &rusqlite::Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
) -> Vec<T> {
    db.prepare(sql)
        .unwrap()
        .query_map(p, f)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Checks `remote` against the local store of `home` (a `SPARKWING_HOME`)
/// and panics listing every discrepancy. Call it after `sync flush` has
/// exited 0: every run's process is gone by then, so no run may still be
/// stored as `running` or `waiting`.
pub fn check(home: &Path, remote: &Snapshot, scope: Scope) -> Checked {
    let mut p: Vec<String> = Vec::new();
    let mut c = Checked::default();
    let db = rusqlite::Connection::open_with_flags(
        home.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    // Keys accounted for by the local store; whatever remains is a stray.
    let mut accounted: BTreeSet<&str> = BTreeSet::new();

    let runs: Vec<(String, String, String, Option<String>)> = rows(
        &db,
        "SELECT id, status, pipeline, state_target FROM runs ORDER BY id",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    );
    let local_runs: BTreeSet<String> = runs.iter().map(|r| r.0.clone()).collect();
    for (run, status, pipeline, state_target) in &runs {
        c.runs += 1;
        c.statuses.insert(run.clone(), status.clone());
        if state_target.is_none() {
            p.push(format!("run {run}: recorded without a state target"));
        }
        if status == "running" || status == "waiting" {
            p.push(format!(
                "run {run}: still stored as `{status}` locally after a flush (its process is gone; it was never settled to interrupted)"
            ));
        }
        // ---- events ----
        let local: Vec<LocalEvent> = rows(
            &db,
            "SELECT seq, ts, kind, job, data FROM events WHERE run_id = ?1 ORDER BY seq",
            [run],
            |r| {
                let data: String = r.get(4)?;
                Ok(LocalEvent {
                    seq: r.get(0)?,
                    ts: r.get(1)?,
                    kind: r.get(2)?,
                    job: r.get(3)?,
                    data: serde_json::from_str(&data).unwrap(),
                })
            },
        );
        if local.is_empty() {
            p.push(format!("run {run}: no local events at all"));
        }
        for (i, e) in local.iter().enumerate() {
            if e.seq != i as i64 + 1 {
                p.push(format!(
                    "run {run}: local seqs not 1..n (found {} at {i})",
                    e.seq
                ));
                break;
            }
        }
        if status == "interrupted" {
            c.interrupted.push(run.clone());
            if local.last().map(|e| e.kind.as_str()) != Some("run.interrupted") {
                p.push(format!(
                    "run {run}: interrupted, but its last event is {:?}, not run.interrupted",
                    local.last().map(|e| &e.kind)
                ));
            }
        }
        let seg_prefix = format!("state/runs/{run}/events/");
        let mut remote_events: BTreeMap<i64, (String, Value)> = BTreeMap::new();
        let mut remote_segments: BTreeSet<(i64, i64)> = BTreeSet::new();
        for (key, body) in remote.range(seg_prefix.clone()..) {
            let Some(name) = key.strip_prefix(&seg_prefix) else {
                break;
            };
            accounted.insert(key);
            let Some(first) = name
                .strip_suffix(".ndjson")
                .filter(|n| is_digits(n, 20))
                .map(|n| n.parse::<i64>().unwrap())
            else {
                p.push(format!("{key}: not a segment name (<seq:020>.ndjson)"));
                continue;
            };
            c.segments += 1;
            if !body.ends_with(b"\n") {
                p.push(format!("{key}: does not end with a newline"));
            }
            let mut seqs = Vec::new();
            for (ln, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let v: Value = match serde_json::from_slice(line) {
                    Ok(v) => v,
                    Err(e) => {
                        p.push(format!("{key} line {}: not JSON: {e}", ln + 1));
                        continue;
                    }
                };
                let Some(seq) = v["seq"].as_i64() else {
                    p.push(format!("{key} line {}: no seq: {v}", ln + 1));
                    continue;
                };
                seqs.push(seq);
                if let Some((prev, _)) = remote_events.insert(seq, (key.clone(), v)) {
                    p.push(format!(
                        "run {run}: event {seq} found twice, in {prev} and {key}"
                    ));
                }
            }
            if seqs.first() != Some(&first) {
                p.push(format!(
                    "{key}: named for seq {first} but starts with {:?}",
                    seqs.first()
                ));
            }
            if seqs.windows(2).any(|w| w[1] != w[0] + 1) {
                p.push(format!("{key}: seqs not consecutive: {seqs:?}"));
            }
            if let (Some(f), Some(l)) = (seqs.first(), seqs.last()) {
                remote_segments.insert((*f, *l));
            }
        }
        // Segments never overlap (a seq found twice is reported above; this
        // names the overlapping ranges).
        let segs: Vec<&(i64, i64)> = remote_segments.iter().collect();
        for w in segs.windows(2) {
            if w[1].0 <= w[0].1 {
                p.push(format!(
                    "run {run}: segments {}..={} and {}..={} overlap",
                    w[0].0, w[0].1, w[1].0, w[1].1
                ));
            }
        }
        let recorded: BTreeSet<(i64, i64)> = rows(
            &db,
            "SELECT first_seq, last_seq FROM event_segments WHERE run_id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .into_iter()
        .collect();
        if recorded != remote_segments {
            p.push(format!(
                "run {run}: remote segments {remote_segments:?} differ from the recorded boundaries {recorded:?}"
            ));
        }
        let mut missing = Vec::new();
        for e in &local {
            c.events += 1;
            match remote_events.remove(&e.seq) {
                None => missing.push(e.seq),
                Some((key, v)) => {
                    let want = json!({
                        "run": run, "seq": e.seq, "ts": e.ts, "kind": e.kind,
                        "job": e.job, "data": e.data,
                    });
                    if v != want {
                        p.push(format!(
                            "run {run}: event {} in {key} differs from the local row:\n  remote {v}\n  local  {want}",
                            e.seq
                        ));
                    }
                }
            }
        }
        if !missing.is_empty() {
            p.push(format!(
                "run {run}: events {missing:?} missing on the remote"
            ));
        }
        if !remote_events.is_empty() {
            p.push(format!(
                "run {run}: remote events {:?} do not exist locally",
                remote_events.keys().collect::<Vec<_>>()
            ));
        }

        // ---- run.json ----
        let summary_key = format!("state/runs/{run}/run.json");
        let summary: Option<Value> = match remote.get(&summary_key) {
            None => {
                p.push(format!("run {run}: no run.json on the remote"));
                None
            }
            Some(b) => {
                accounted.insert(remote.get_key_value(&summary_key).unwrap().0);
                match serde_json::from_slice(b) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        p.push(format!("{summary_key}: not JSON: {e}"));
                        None
                    }
                }
            }
        };
        if let Some(s) = &summary {
            if s["id"] != run.as_str() || s["pipeline"] != pipeline.as_str() {
                p.push(format!(
                    "{summary_key}: id/pipeline {} {}",
                    s["id"], s["pipeline"]
                ));
            }
            if s["status"] != status.as_str() {
                p.push(format!(
                    "run {run}: remote status {} but local status `{status}`",
                    s["status"]
                ));
            }
            let last = local.last().map(|e| e.seq);
            if s["events_through"].as_i64() != last {
                p.push(format!(
                    "run {run}: remote events_through {} but the last local seq is {last:?}",
                    s["events_through"]
                ));
            }
        }

        // ---- jobs, steps and logs ----
        let jobs: Vec<(String, String)> = rows(
            &db,
            "SELECT name, status FROM jobs WHERE run_id = ?1 ORDER BY position",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        );
        let remote_jobs: BTreeMap<String, Value> = summary
            .as_ref()
            .and_then(|s| s["jobs"].as_array())
            .map(|a| {
                a.iter()
                    .map(|j| (j["name"].as_str().unwrap_or("?").to_string(), j.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if summary.is_some() {
            let names: BTreeSet<&String> = jobs.iter().map(|j| &j.0).collect();
            if remote_jobs.keys().collect::<BTreeSet<_>>() != names {
                p.push(format!(
                    "run {run}: remote jobs {:?}, local {names:?}",
                    remote_jobs.keys().collect::<Vec<_>>()
                ));
            }
        }
        for (job, job_status) in &jobs {
            let local_log = std::fs::read(home.join("runs").join(run).join(format!("{job}.log")))
                .unwrap_or_default();
            let chunks: Vec<(i64, i64, i64)> = rows(
                &db,
                "SELECT seq, offset, len FROM log_chunks WHERE run_id = ?1 AND job = ?2 ORDER BY seq",
                [run, job],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            );
            let prefix = format!("logs/{run}/{job}/");
            let mut remote_chunks: Vec<(String, &Vec<u8>)> = Vec::new();
            for (key, body) in remote.range(prefix.clone()..) {
                let Some(name) = key.strip_prefix(&prefix) else {
                    break;
                };
                accounted.insert(key);
                remote_chunks.push((name.to_string(), body));
            }
            for (i, (name, _)) in remote_chunks.iter().enumerate() {
                if *name != format!("{i:010}.log") {
                    p.push(format!(
                        "run {run} job {job}: chunk {i} is `{name}` (chunks must be contiguous from 0000000000.log)"
                    ));
                    break;
                }
            }
            let joined: Vec<u8> = remote_chunks
                .iter()
                .flat_map(|(_, b)| b.iter().copied())
                .collect();
            if joined != local_log {
                p.push(format!(
                    "run {run} job {job}: remote log ({} bytes in {} chunks) differs from the local log ({} bytes)",
                    joined.len(),
                    remote_chunks.len(),
                    local_log.len()
                ));
            }
            // The chunks are exactly the recorded boundaries of the local file.
            let recorded_ok = chunks.len() == remote_chunks.len()
                && chunks
                    .iter()
                    .zip(&remote_chunks)
                    .all(|((_, off, len), (_, body))| {
                        let (off, len) = (*off as usize, *len as usize);
                        local_log.get(off..off + len) == Some(body.as_slice())
                    })
                && chunks.iter().enumerate().all(|(i, ch)| ch.0 == i as i64);
            if !recorded_ok {
                p.push(format!(
                    "run {run} job {job}: remote chunks (sizes {:?}) are not the recorded boundaries {chunks:?}",
                    remote_chunks.iter().map(|(_, b)| b.len()).collect::<Vec<_>>()
                ));
            }
            c.log_chunks += remote_chunks.len();
            c.log_bytes += joined.len() as u64;
            if let Some(j) = remote_jobs.get(job) {
                if j["status"] != job_status.as_str() {
                    p.push(format!(
                        "run {run} job {job}: remote status {} but local `{job_status}`",
                        j["status"]
                    ));
                }
                if j["log_chunks"].as_u64() != Some(remote_chunks.len() as u64)
                    || j["log_bytes"].as_u64() != Some(local_log.len() as u64)
                {
                    p.push(format!(
                        "run {run} job {job}: run.json says log_chunks {} log_bytes {}, the remote holds {} chunks, the local log is {} bytes",
                        j["log_chunks"],
                        j["log_bytes"],
                        remote_chunks.len(),
                        local_log.len()
                    ));
                }
                let local_steps: Vec<(i64, String)> = rows(
                    &db,
                    "SELECT idx, status FROM steps WHERE run_id = ?1 AND job = ?2 ORDER BY idx",
                    [run, job],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                );
                let remote_steps: Vec<(i64, String)> = j["steps"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|s| {
                                (
                                    s["index"].as_i64().unwrap_or(-1),
                                    s["status"].as_str().unwrap_or("?").to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if remote_steps != local_steps {
                    p.push(format!(
                        "run {run} job {job}: remote steps {remote_steps:?}, local {local_steps:?}"
                    ));
                }
            }
        }
    }

    // ---- cache ----
    let entries: Vec<CacheRow> = rows(
        &db,
        "SELECT key, job, pipeline, run_id, created_at, expires_at, manifest FROM cache_entries ORDER BY key",
        [],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        },
    );
    let cas = home.join("cas");
    let files_of = |m: &Value| -> Vec<Value> {
        m["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| json!([f["path"], f["sha256"], f["size"], f["mode"], f["symlink"]]))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (key, job, pipeline, run_id, created_at, expires_at, manifest) in &entries {
        if !local_runs.contains(run_id) {
            // Imported from another runner: not ours to publish.
            continue;
        }
        c.manifests += 1;
        let m: Value = serde_json::from_str(manifest).unwrap();
        let mkey = format!("cache/keys/{key}.json");
        // The remote document, decompressed, with its manifest in the
        // local form (packs and chunks are compared by reading the files
        // back below).
        let decoded = remote.get(&mkey).map(|b| {
            let entry =
                sparkwing::remote::cache::parse_entry(key, b).map_err(|e| format!("{e:#}"))?;
            let json = sparkwing::remote::pack::manifest_json(b).map_err(|e| format!("{e:#}"))?;
            let mut doc: Value = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
            doc["manifest"] = serde_json::to_value(entry.manifest.local()).unwrap();
            Ok::<_, String>((doc, entry.manifest))
        });
        let packed = match decoded {
            None => {
                p.push(format!(
                    "cache key {key} (run {run_id}): no manifest on the remote"
                ));
                None
            }
            Some(Err(e)) => {
                p.push(format!("{mkey}: not a manifest document: {e}"));
                None
            }
            Some(Ok((doc, packed))) => {
                let want = json!({
                    "key": key, "job": job, "pipeline": pipeline, "run_id": run_id,
                    "created_at": created_at, "expires_at": expires_at, "manifest": m,
                });
                if doc != want {
                    // Two runs that computed the same key (concurrently):
                    // last write wins, and is safe only because the outputs
                    // are the same files. The other writer must be a local
                    // run that stored this key (or, on a shared remote,
                    // another home's run).
                    let other = doc["run_id"].as_str().unwrap_or("");
                    let foreign = scope == Scope::Shared && !local_runs.contains(other);
                    let stored_by_other: bool = db
                        .query_row(
                            "SELECT 1 FROM events WHERE run_id = ?1 AND kind = 'cache.stored' AND json_extract(data, '$.key') = ?2",
                            [other, key.as_str()],
                            |_| Ok(()),
                        )
                        .optional()
                        .unwrap()
                        .is_some();
                    if other == run_id.as_str()
                        || !(stored_by_other || foreign)
                        || files_of(&doc["manifest"]) != files_of(&m)
                        || doc["key"] != key.as_str()
                    {
                        p.push(format!(
                            "{mkey}: differs from the local entry:\n  remote {doc}\n  local  {want}"
                        ));
                    }
                }
                Some(packed)
            }
        };
        // Every file, read back from the remote's packs, equal byte for
        // byte to the local CAS blob.
        if let Some(packed) = packed {
            let object = |name: &str| remote.get(&format!("cache/cas/{}/{name}", &name[..2]));
            match sparkwing::remote::pack::files_from(&packed, object) {
                Err(e) => p.push(format!("cache key {key} (run {run_id}): {e:#}")),
                Ok(files) => {
                    let named = m["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|f| f["symlink"].is_null())
                        .count();
                    if files.len() != named {
                        p.push(format!(
                            "cache key {key}: {} files read back, the manifest names {named}",
                            files.len()
                        ));
                    }
                    for (path, bytes) in files {
                        let sha = sha_hex(&bytes);
                        match std::fs::read(cas.join(&sha[..2]).join(&sha)) {
                            Ok(local) if local == bytes => {}
                            Ok(_) => p.push(format!(
                                "cache key {key}: {path} read back differs from the local CAS blob"
                            )),
                            Err(_) if scope == Scope::Exclusive => p.push(format!(
                                "cache key {key}: {path} ({sha}) not in the local CAS"
                            )),
                            Err(_) => {}
                        }
                    }
                }
            }
        }
    }
    // Every object under cas/ (packs; blobs of version 1): named by the
    // hash of its bytes.
    for (key, body) in remote.range("cache/cas/".to_string()..) {
        let Some(rest) = key.strip_prefix("cache/cas/") else {
            break;
        };
        accounted.insert(key);
        let ok_name = rest
            .split_once('/')
            .is_some_and(|(aa, sha)| is_hex64(sha) && aa == &sha[..2]);
        if !ok_name {
            p.push(format!("{key}: not a blob name (cas/<sha[..2]>/<sha256>)"));
            continue;
        }
        c.blobs += 1;
        let sha = &rest[3..];
        let got = sha_hex(body);
        if got != sha {
            p.push(format!("{key}: {} bytes hash to {got}", body.len()));
        }
    }
    let local_keys: BTreeSet<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    for (key, _) in remote.range("cache/keys/".to_string()..) {
        let Some(rest) = key.strip_prefix("cache/keys/") else {
            break;
        };
        let known = rest
            .strip_suffix(".json")
            .is_some_and(|k| local_keys.contains(k));
        if known || scope == Scope::Shared {
            accounted.insert(key);
        }
    }

    // ---- strays ----
    for (key, body) in remote {
        if accounted.contains(key.as_str()) {
            continue;
        }
        let staged = key
            .split('/')
            .nth(1)
            .is_some_and(|second| second == STAGING);
        if staged {
            p.push(format!(
                "{key}: a staged file ({} bytes) left in the surface after the flush",
                body.len()
            ));
            continue;
        }
        if scope == Scope::Shared {
            // Another runner's run: `state/runs/<id>/..` or `logs/<id>/..`.
            let other_run = match key.split('/').collect::<Vec<_>>().as_slice() {
                ["state", "runs", id, ..] | ["logs", id, ..] => !local_runs.contains(*id),
                _ => false,
            };
            if other_run {
                continue;
            }
        }
        p.push(format!(
            "{key}: on the remote ({} bytes) but not accounted for by the local store",
            body.len()
        ));
    }

    if !p.is_empty() {
        let shown: Vec<&String> = p.iter().take(60).collect();
        panic!(
            "the remote differs from the local store of {} ({} problems{}):\n- {}",
            home.display(),
            p.len(),
            if p.len() > shown.len() {
                ", first 60 shown"
            } else {
                ""
            },
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n- ")
        );
    }
    c
}
