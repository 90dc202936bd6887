//! The conformance suites: plain async functions run by each backend's
//! tests.
//!
//! - [`run_all`]: the write contract of every [`Target`], read back through
//!   the same remote's [`RemoteView`] (a target that keeps nothing, `none`,
//!   only has to accept every op).
//! - [`view_suite`]: the read contract of every [`RemoteView`] (the object
//!   views and the local store's), against what a finished run is known to
//!   have written.
//!
//! Each check panics with a message naming the contract it saw broken.

use bytes::Bytes;
use serde_json::{json, Value};
use sparkwing_outbox::ErrorClass;

use crate::doc::{self, Event};
use crate::target::{read_limits, sha256_hex, Applied, Op, Target};
use crate::view::{RemoteView, RunRead};

/// A run ID for the suite's objects (ULID-like: upper case and digits).
fn run_id(nonce: &str) -> String {
    format!("RUN{}", nonce.to_ascii_uppercase())
}

fn events_of(run: &str, first: i64, n: i64) -> Vec<Event> {
    (first..first + n)
        .map(|seq| Event {
            run: run.into(),
            seq,
            ts: 1_700_000_000_000 + seq,
            kind: "step.output".into(),
            job: Some("build".into()),
            data: json!({"line": format!("event {seq} \u{1b}[31m")}),
        })
        .collect()
}

fn segment(events: &[Event]) -> Bytes {
    Bytes::from(events.iter().flat_map(Event::encode).collect::<Vec<u8>>())
}

/// A run document for `run` with `status`.
pub fn run_document(run: &str, status: &str) -> Value {
    json!({"id": run, "pipeline": "conformance", "status": status, "profile": "shared",
           "host": "h", "pid": 1, "project_dir": null, "started_at": "2026-11-29T00:00:00.000Z",
           "finished_at": null, "duration_ms": null, "error": null, "events_through": 2,
           "jobs": [{"name": "build", "needs": [], "status": status, "started_at": 1,
                     "finished_at": null, "duration_ms": null, "cache_key": null,
                     "cached_from_run": null, "error": null, "log_chunks": 1, "log_bytes": 14,
                     "steps": []}]})
}

fn ops(nonce: &str) -> Vec<Op> {
    let run = run_id(nonce);
    let blob = Bytes::from(format!("blob bytes {nonce}\0\u{1}\u{ff}"));
    vec![
        Op::StateEvents {
            run: run.clone(),
            first_seq: 1,
            body: segment(&events_of(&run, 1, 2)),
        },
        Op::RunSummary {
            run: run.clone(),
            body: Bytes::from(run_document(&run, "running").to_string()),
        },
        Op::LogChunk {
            run,
            job: "build".into(),
            seq: 0,
            body: Bytes::from_static(b"line 1\nline 2\n"),
        },
        Op::CacheBlob {
            sha256: sha256_hex(&blob),
            body: blob,
        },
        Op::CacheManifest {
            key: sha256_hex(nonce.as_bytes()),
            body: Bytes::from_static(b"{\"files\":[]}"),
        },
    ]
}

/// Whether what `op` wrote reads back through `view`, byte for byte (or,
/// for documents and events, value for value).
async fn reads_back(view: &dyn RemoteView, op: &Op) -> bool {
    fn fail<T>(op: &Op) -> impl FnOnce(crate::TargetError) -> T + '_ {
        move |e| panic!("reading back {}: {e}", op.key())
    }
    match op {
        Op::StateEvents {
            run,
            first_seq,
            body,
        } => {
            let want = doc::decode_events(body).expect("the suite's own events");
            let got = view.events(run).await.unwrap_or_else(fail(op));
            got.segments
                .iter()
                .any(|s| s.first_seq == *first_seq && s.events.as_ref() == Ok(&want))
        }
        Op::RunSummary { run, body } => {
            let want = doc::parse_run(run, body).map(|d| d.to_value());
            match view.run(run).await.unwrap_or_else(fail(op)) {
                Some(RunRead::Doc(d)) => Ok(d.to_value()) == want,
                Some(RunRead::Unreadable(why)) => want.as_ref().err() == Some(&why),
                None => false,
            }
        }
        Op::LogChunk {
            run,
            job,
            seq,
            body,
        } => {
            let seq = u64::try_from(*seq).expect("a chunk seq");
            view.log_chunk(run, job, seq).await.unwrap_or_else(fail(op)) == Some(body.clone())
        }
        Op::CacheBlob { sha256, body } => {
            view.blob(sha256, u64::MAX).await.unwrap_or_else(fail(op)) == Some(body.clone())
        }
        Op::CacheManifest { key, body } => {
            view.manifest(key).await.unwrap_or_else(fail(op)) == Some(body.clone())
        }
    }
}

/// Runs every check of the write contract. `view` reads the same remote
/// (`None` for a target that keeps nothing); `nonce` keeps runs of the
/// suite on one store apart.
pub async fn run_all(target: &dyn Target, view: Option<&dyn RemoteView>, nonce: &str) {
    assert!(!target.id().is_empty(), "id must not be empty");
    let Some(view) = view else {
        for op in ops(nonce) {
            assert_eq!(
                target.apply(&op).await.expect("apply"),
                Applied::Discarded,
                "a target without a view keeps nothing"
            );
        }
        return;
    };
    assert_eq!(view.id(), target.id(), "a view has its target's id");
    applies_and_reads_back(target, view, nonce).await;
    applying_twice_is_applying_once(target, view, &format!("{nonce}x")).await;
    present_blobs_are_not_uploaded_again(target, &format!("{nonce}y")).await;
    corrupt_blobs_are_refused(target, view, &format!("{nonce}z")).await;
    summaries_and_manifests_are_rewritten_whole(target, view, &format!("{nonce}w")).await;
    absent_things_read_as_none(view).await;
    reads_are_bounded(target, view, &format!("{nonce}r")).await;
    batches_apply_in_order_and_stop_at_the_first_failure(target, view, &format!("{nonce}b")).await;
}

/// `apply_all`: every op lands as `apply` would land it, a batch applied
/// twice is applied once, and a failure stops the batch exactly there.
pub async fn batches_apply_in_order_and_stop_at_the_first_failure(
    t: &dyn Target,
    view: &dyn RemoteView,
    nonce: &str,
) {
    let good = ops(nonce);
    let (n, err) = t.apply_all(&good).await;
    assert!(err.is_none(), "a healthy batch failed: {err:?}");
    assert_eq!(n, good.len(), "a healthy batch applies every op");
    let (n, err) = t.apply_all(&good).await;
    assert!(
        err.is_none() && n == good.len(),
        "a batch applied twice: {err:?}"
    );
    for op in &good {
        assert!(
            reads_back(view, op).await,
            "batched {} reads back",
            op.key()
        );
    }
    // A corrupt blob in the middle: what comes before lands, nothing after.
    let run = run_id(nonce);
    let chunk = |seq: i64, body: &'static [u8]| Op::LogChunk {
        run: run.clone(),
        job: "batch".into(),
        seq,
        body: Bytes::from_static(body),
    };
    let (before, after) = (chunk(1, b"before\n"), chunk(2, b"after\n"));
    let corrupt_sha = sha256_hex(format!("corrupt {nonce}").as_bytes());
    let corrupt = Op::CacheBlob {
        sha256: corrupt_sha.clone(),
        body: Bytes::from_static(b"other bytes"),
    };
    let (n, err) = t
        .apply_all(&[before.clone(), corrupt.clone(), after.clone()])
        .await;
    assert_eq!(n, 1, "the batch stops at the corrupt blob");
    let err = err.expect("the corrupt blob's error");
    assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    assert!(reads_back(view, &before).await);
    assert_eq!(view.blob(&corrupt_sha, u64::MAX).await.expect("read"), None);
    assert_eq!(
        view.log_chunks(&run, "batch").await.expect("list").seqs,
        vec![1],
        "nothing after the failure"
    );
}

pub async fn applies_and_reads_back(t: &dyn Target, view: &dyn RemoteView, nonce: &str) {
    for op in ops(nonce) {
        t.apply(&op)
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e}", op.key()));
        assert!(
            reads_back(view, &op).await,
            "{} reads back what was applied",
            op.key()
        );
    }
    let run = run_id(nonce);
    let ids = view.run_ids().await.expect("run_ids");
    assert!(ids.contains(&run), "run_ids names the run: {ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "run_ids ascending and distinct: {ids:?}"
    );
    let events = view.events(&run).await.expect("events");
    assert_eq!(events.segments.len(), 1, "one segment");
    assert!(events.strays.is_empty(), "{:?}", events.strays);
    assert_eq!(events.flatten(), events_of(&run, 1, 2));
    let chunks = view.log_chunks(&run, "build").await.expect("log_chunks");
    assert_eq!(chunks.seqs, vec![0]);
    assert!(chunks.strays.is_empty());
}

pub async fn applying_twice_is_applying_once(t: &dyn Target, view: &dyn RemoteView, nonce: &str) {
    for op in ops(nonce) {
        t.apply(&op).await.expect("first apply");
        t.apply(&op)
            .await
            .expect("second apply of the same op must succeed");
        assert!(reads_back(view, &op).await, "{}", op.key());
    }
    let run = run_id(nonce);
    let events = view.events(&run).await.expect("events");
    assert_eq!(
        events.flatten(),
        events_of(&run, 1, 2),
        "every event once, not twice"
    );
    assert_eq!(
        view.log_chunks(&run, "build").await.expect("list").seqs,
        vec![0],
        "one chunk, not two"
    );
}

pub async fn present_blobs_are_not_uploaded_again(t: &dyn Target, nonce: &str) {
    let body = Bytes::from(format!("dedup {nonce}"));
    let op = Op::CacheBlob {
        sha256: sha256_hex(&body),
        body,
    };
    let first = t.apply(&op).await.expect("blob");
    let second = t.apply(&op).await.expect("blob again");
    assert_eq!(first, Applied::Written);
    assert_eq!(
        second,
        Applied::AlreadyPresent,
        "a present blob is not uploaded again"
    );
}

pub async fn corrupt_blobs_are_refused(t: &dyn Target, view: &dyn RemoteView, nonce: &str) {
    let sha = sha256_hex(nonce.as_bytes());
    let op = Op::CacheBlob {
        sha256: sha.clone(),
        body: Bytes::from_static(b"not those bytes"),
    };
    let e = t
        .apply(&op)
        .await
        .expect_err("a blob that does not hash to its key must be refused");
    assert_eq!(e.class, ErrorClass::Permanent, "corrupt blob: {e}");
    assert_eq!(
        view.blob(&sha, u64::MAX).await.expect("read"),
        None,
        "nothing stored"
    );
}

pub async fn summaries_and_manifests_are_rewritten_whole(
    t: &dyn Target,
    view: &dyn RemoteView,
    nonce: &str,
) {
    let run = run_id(nonce);
    let key = sha256_hex(nonce.as_bytes());
    // The first version is the longer one: a rewrite leaves no tail of it.
    let versions = [
        (
            run_document(&run, "running_with_a_long_status"),
            &b"{\"v\":1,\"long\":\"xxxxxxxxxxxxxxxx\"}"[..],
        ),
        (run_document(&run, "success"), b"{\"v\":2}"),
    ];
    for (doc, manifest) in &versions {
        t.apply(&Op::RunSummary {
            run: run.clone(),
            body: Bytes::from(doc.to_string()),
        })
        .await
        .expect("summary");
        t.apply(&Op::CacheManifest {
            key: key.clone(),
            body: Bytes::copy_from_slice(manifest),
        })
        .await
        .expect("manifest");
    }
    match view.run(&run).await.expect("run") {
        Some(RunRead::Doc(d)) => assert_eq!(d.to_value(), versions[1].0),
        other => panic!("the rewritten run document: {other:?}"),
    }
    assert_eq!(
        view.manifest(&key).await.expect("manifest"),
        Some(Bytes::from_static(b"{\"v\":2}"))
    );
}

/// Reads are bounded: a blob of exactly `max` bytes reads whole; one byte
/// more is a permanent error that names the size, never a partial or an
/// unbounded read. A run document over its bound lists as unreadable.
pub async fn reads_are_bounded(t: &dyn Target, view: &dyn RemoteView, nonce: &str) {
    let body = Bytes::from(format!("bounded blob {nonce}"));
    let sha = sha256_hex(&body);
    t.apply(&Op::CacheBlob {
        sha256: sha.clone(),
        body: body.clone(),
    })
    .await
    .expect("apply the blob");
    let n = body.len() as u64;
    assert_eq!(
        view.blob(&sha, n).await.expect("read at the bound"),
        Some(body),
        "a blob of exactly `max` bytes reads whole"
    );
    let e = view
        .blob(&sha, n - 1)
        .await
        .expect_err("a blob over the bound must be refused");
    assert_eq!(e.class, ErrorClass::Permanent, "{e:?}");
    assert!(e.message.contains(&n.to_string()), "{e:?}");

    let run = run_id(nonce);
    let mut doc = run_document(&run, "success");
    doc["error"] = json!("x".repeat(read_limits::RUN_DOCUMENT as usize));
    t.apply(&Op::RunSummary {
        run: run.clone(),
        body: Bytes::from(doc.to_string()),
    })
    .await
    .expect("apply the oversized summary");
    match view
        .run(&run)
        .await
        .expect("an oversized document is an answer")
    {
        Some(RunRead::Unreadable(why)) => assert!(why.contains("bytes"), "{why}"),
        other => panic!("an oversized run document must be unreadable: {other:?}"),
    }
}

pub async fn absent_things_read_as_none(view: &dyn RemoteView) {
    let nope = "NOPE00000000000000000000AB";
    assert!(view.run(nope).await.expect("read absent").is_none());
    let events = view.events(nope).await.expect("absent events");
    assert!(events.segments.is_empty() && events.strays.is_empty());
    assert_eq!(
        view.log_chunks(nope, "build").await.expect("absent log"),
        Default::default()
    );
    assert_eq!(view.log_chunk(nope, "build", 0).await.expect("chunk"), None);
    let absent = sha256_hex(b"absent");
    assert_eq!(view.manifest(&absent).await.expect("manifest"), None);
    assert_eq!(view.blob(&absent, 1).await.expect("blob"), None);
    assert_eq!(
        view.blob_range(&absent, 0, 1).await.expect("blob_range"),
        None
    );
    view.probe()
        .await
        .expect("a reachable remote answers a probe");
}

/// What a finished run is known to have written, for [`view_suite`]: taken
/// from the local store's own rows and files, not from a view.
#[derive(Debug, Clone)]
pub struct Expected {
    /// A finished run the remote holds.
    pub run: String,
    /// Its document, as the remote is to hold it ([`doc::RunDoc::to_value`]).
    pub doc: Value,
    /// Every event of the run, in order.
    pub events: Vec<Event>,
    /// A job of the run with a log, and the log's bytes.
    pub job: String,
    pub log: Vec<u8>,
    /// A cache key the run saved, its manifest's meaning (as
    /// [`CacheFormat::meaning`] gives it), and one file's bytes.
    pub cache_key: String,
    pub manifest: Value,
    pub blob: Bytes,
}

/// How the caller reads its cache manifests: `sync` stores them as bytes
/// and knows no manifest format, and one surface may hold an entry as a
/// blob per file where another holds packs.
#[async_trait::async_trait]
pub trait CacheFormat: Sync {
    /// What a manifest says (its files), to compare across surfaces.
    fn meaning(&self, manifest: &[u8]) -> Result<Value, String>;
    /// The objects (blobs, packs) a manifest names.
    fn objects(&self, manifest: &[u8]) -> Result<Vec<String>, String>;
    /// The bytes of the file whose SHA-256 is `sha`, read through `view`.
    async fn file(
        &self,
        view: &dyn RemoteView,
        manifest: &[u8],
        sha: &str,
    ) -> Result<Bytes, String>;
}

/// The views of a profile's three surfaces (one view may serve all three:
/// the local store's does).
#[derive(Clone, Copy)]
pub struct Surfaces<'a> {
    pub state: &'a dyn RemoteView,
    pub logs: &'a dyn RemoteView,
    pub cache: &'a dyn RemoteView,
}

/// The read contract, against surfaces that hold `want`'s run.
pub async fn view_suite(views: Surfaces<'_>, want: &Expected, format: &dyn CacheFormat) {
    let Surfaces { state, logs, cache } = views;
    let who = state.id().to_string();
    state.probe().await.expect("probe");
    let ids = state.run_ids().await.expect("run_ids");
    assert!(ids.contains(&want.run), "{who}: run_ids names the run");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{who}: run_ids ascending and distinct: {ids:?}"
    );
    match state.run(&want.run).await.expect("run") {
        Some(RunRead::Doc(d)) => assert_eq!(d.to_value(), want.doc, "{who}: the run document"),
        other => panic!("{who}: the run document: {other:?}"),
    }
    // Every event exactly once and in order, with its content.
    let events = state.events(&want.run).await.expect("events");
    assert!(events.strays.is_empty(), "{who}: {:?}", events.strays);
    for s in &events.segments {
        let first = s.events.as_ref().map(|e| e.first().map(|e| e.seq));
        assert_eq!(
            first,
            Ok(Some(s.first_seq)),
            "{who}: a segment starts with the event it is named by"
        );
    }
    assert_eq!(events.flatten(), want.events, "{who}: the events");

    // The log: chunks 0..n, each once, whose bytes concatenate to the log.
    let who = logs.id().to_string();
    let chunks = logs
        .log_chunks(&want.run, &want.job)
        .await
        .expect("log_chunks");
    assert!(chunks.strays.is_empty(), "{who}: {:?}", chunks.strays);
    assert!(!chunks.seqs.is_empty(), "{who}: the job's log has chunks");
    assert_eq!(
        chunks.seqs,
        (0..chunks.seqs.len() as u64).collect::<Vec<_>>(),
        "{who}: chunks from 0 without a gap"
    );
    let mut log = Vec::new();
    for seq in &chunks.seqs {
        let c = logs
            .log_chunk(&want.run, &want.job, *seq)
            .await
            .expect("log_chunk")
            .unwrap_or_else(|| panic!("{who}: chunk {seq} listed but absent"));
        log.extend_from_slice(&c);
    }
    assert_eq!(log, want.log, "{who}: the log's bytes");

    // The cache entry: the same files, whatever the form.
    let who = cache.id().to_string();
    let manifest = cache
        .manifest(&want.cache_key)
        .await
        .expect("manifest")
        .unwrap_or_else(|| panic!("{who}: no manifest"));
    assert_eq!(
        format.meaning(&manifest),
        Ok(want.manifest.clone()),
        "{who}: the manifest's meaning"
    );
    let sha = sha256_hex(&want.blob);
    assert_eq!(
        format.file(cache, &manifest, &sha).await,
        Ok(want.blob.clone()),
        "{who}: a file's bytes"
    );
    // Each object it names: whole, by range, and refused over a bound.
    let objects = format.objects(&manifest).expect("the manifest's objects");
    assert!(!objects.is_empty(), "{who}: the manifest names objects");
    for name in objects {
        let whole = cache
            .blob(&name, u64::MAX)
            .await
            .expect("blob")
            .unwrap_or_else(|| panic!("{who}: object {name} is named but absent"));
        assert_eq!(sha256_hex(&whole), name, "{who}: object {name}'s bytes");
        let n = whole.len() as u64;
        if n > 2 {
            assert_eq!(
                cache.blob_range(&name, 1, n - 2).await.expect("range"),
                Some(whole.slice(1..n as usize - 1)),
                "{who}: a range of {name}"
            );
            let e = cache.blob(&name, n - 1).await.expect_err("over the bound");
            assert_eq!(e.class, ErrorClass::Permanent, "{who}: {e}");
        }
    }
    for v in [state, logs, cache] {
        absent_things_read_as_none(v).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fault::FaultTarget;
    use crate::none::NoneTarget;
    use crate::object::ObjectStoreTarget;
    use crate::view::ObjectView;

    /// The suite over an object target and the view of the same objects.
    async fn objects(t: ObjectStoreTarget, nonce: &str) {
        let t = Arc::new(t);
        let view = ObjectView::new(Arc::clone(&t));
        run_all(&*t, Some(&view), nonce).await;
    }

    #[tokio::test]
    async fn none_target() {
        run_all(&NoneTarget, None, "n").await;
    }

    #[tokio::test]
    async fn filesystem_target() {
        let dir = tempfile::tempdir().unwrap();
        objects(ObjectStoreTarget::filesystem(dir.path()), "f").await;
    }

    #[tokio::test]
    async fn object_store_target_with_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let t = ObjectStoreTarget::new("local:team/prefix", store, "team/prefix/");
        objects(t, "p").await;
        assert!(
            dir.path().join("team/prefix/runs").is_dir(),
            "objects live under the prefix"
        );
    }

    #[tokio::test]
    async fn in_memory_object_store() {
        let store = Arc::new(object_store::memory::InMemory::new());
        objects(ObjectStoreTarget::new("memory:", store, ""), "m").await;
    }

    #[tokio::test]
    async fn fault_wrapper_passes_when_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(ObjectStoreTarget::filesystem(dir.path()));
        let t = FaultTarget::new(Arc::clone(&inner) as Arc<dyn Target>);
        run_all(&t, Some(&ObjectView::new(inner)), "w").await;
        assert!(!t.journal().is_empty());
    }

    #[tokio::test]
    async fn a_missing_directory_is_transient_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("not-mounted");
        let t = ObjectStoreTarget::filesystem(&gone);
        let e = t.apply(&ops("g")[0]).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(!gone.exists());
    }
}
