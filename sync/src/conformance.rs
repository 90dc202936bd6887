//! The conformance suite every [`Target`] passes: plain async functions
//! taking `&dyn Target`, run by each backend's tests (`run_all`). A target
//! that keeps nothing (`none`) only has to accept every op.
//!
//! Each check panics with a message naming the contract it saw broken.

use bytes::Bytes;
use sparkwing_outbox::ErrorClass;

use crate::target::{sha256_hex, Applied, Op, Target};

fn ops(nonce: &str) -> Vec<Op> {
    let blob = Bytes::from(format!("blob bytes {nonce}\0\u{1}\u{ff}"));
    vec![
        Op::StateEvents {
            run: format!("RUN{nonce}"),
            first_seq: 1,
            body: Bytes::from_static(b"{\"seq\":1}\n{\"seq\":2}\n"),
        },
        Op::RunSummary {
            run: format!("RUN{nonce}"),
            body: Bytes::from_static(b"{\"status\":\"running\"}"),
        },
        Op::LogChunk {
            run: format!("RUN{nonce}"),
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

/// Runs every check. `nonce` keeps runs of the suite on one store apart.
pub async fn run_all(target: &dyn Target, nonce: &str) {
    assert!(!target.id().is_empty(), "id must not be empty");
    let stores = !matches!(target.apply(&ops(nonce)[0]).await, Ok(Applied::Discarded));
    applies_and_reads_back(target, nonce, stores).await;
    applying_twice_is_applying_once(target, &format!("{nonce}x"), stores).await;
    present_blobs_are_not_uploaded_again(target, &format!("{nonce}y"), stores).await;
    corrupt_blobs_are_refused(target, &format!("{nonce}z")).await;
    summaries_and_manifests_are_rewritten_whole(target, &format!("{nonce}w"), stores).await;
    absent_keys_read_as_none(target).await;
    reads_are_bounded(target, &format!("{nonce}r"), stores).await;
    batches_apply_in_order_and_stop_at_the_first_failure(target, &format!("{nonce}b"), stores)
        .await;
}

/// `apply_all`: every op lands as `apply` would land it, a batch applied
/// twice is applied once, and a failure stops the batch exactly there.
pub async fn batches_apply_in_order_and_stop_at_the_first_failure(
    t: &dyn Target,
    nonce: &str,
    stores: bool,
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
    if stores {
        for op in &good {
            assert_eq!(
                t.read(&op.key(), u64::MAX).await.expect("read").as_deref(),
                Some(op.body().as_ref()),
                "batched {} reads back",
                op.key()
            );
        }
    }
    // A corrupt blob in the middle: what comes before lands, nothing after.
    let before = Op::LogChunk {
        run: format!("RUN{nonce}"),
        job: "batch".into(),
        seq: 1,
        body: Bytes::from_static(b"before\n"),
    };
    let corrupt = Op::CacheBlob {
        sha256: sha256_hex(format!("corrupt {nonce}").as_bytes()),
        body: Bytes::from_static(b"other bytes"),
    };
    let after = Op::LogChunk {
        run: format!("RUN{nonce}"),
        job: "batch".into(),
        seq: 2,
        body: Bytes::from_static(b"after\n"),
    };
    let (n, err) = t
        .apply_all(&[before.clone(), corrupt.clone(), after.clone()])
        .await;
    if stores {
        assert_eq!(n, 1, "the batch stops at the corrupt blob");
        let err = err.expect("the corrupt blob's error");
        assert_eq!(err.class, ErrorClass::Permanent, "{err}");
        assert!(t
            .read(&before.key(), u64::MAX)
            .await
            .expect("read")
            .is_some());
        assert_eq!(t.read(&corrupt.key(), u64::MAX).await.expect("read"), None);
        assert_eq!(
            t.read(&after.key(), u64::MAX).await.expect("read"),
            None,
            "nothing after the failure"
        );
    }
}

pub async fn applies_and_reads_back(t: &dyn Target, nonce: &str, stores: bool) {
    for op in ops(nonce) {
        let r = t
            .apply(&op)
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e}", op.key()));
        if !stores {
            assert_eq!(r, Applied::Discarded);
            continue;
        }
        let got = t
            .read(&op.key(), u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("read {}: {e}", op.key()));
        assert_eq!(
            got.as_ref(),
            Some(op.body()),
            "{} reads back what was applied",
            op.key()
        );
    }
    if stores {
        let keys = t.list(&format!("runs/RUN{nonce}/")).await.expect("list");
        assert_eq!(
            keys,
            vec![
                format!("runs/RUN{nonce}/events/{:020}.ndjson", 1),
                format!("runs/RUN{nonce}/run.json")
            ],
            "list returns the keys under a prefix, sorted"
        );
        let children = t.list_children("runs/").await.expect("list_children");
        assert!(
            children.contains(&format!("RUN{nonce}")),
            "list_children(runs/) names the run: {children:?}"
        );
        assert!(children.iter().all(|c| !c.contains('/')));
        let logs = t.list(&format!("RUN{nonce}/build/")).await.expect("list");
        assert_eq!(logs, vec![format!("RUN{nonce}/build/{:010}.log", 0)]);
    }
}

pub async fn applying_twice_is_applying_once(t: &dyn Target, nonce: &str, stores: bool) {
    for op in ops(nonce) {
        t.apply(&op).await.expect("first apply");
        t.apply(&op)
            .await
            .expect("second apply of the same op must succeed");
        if stores {
            assert_eq!(
                t.read(&op.key(), u64::MAX).await.expect("read").as_ref(),
                Some(op.body())
            );
        }
    }
    if stores {
        assert_eq!(
            t.list(&format!("RUN{nonce}/")).await.expect("list").len(),
            1,
            "one object, not two"
        );
    }
}

pub async fn present_blobs_are_not_uploaded_again(t: &dyn Target, nonce: &str, stores: bool) {
    let body = Bytes::from(format!("dedup {nonce}"));
    let op = Op::CacheBlob {
        sha256: sha256_hex(&body),
        body,
    };
    let first = t.apply(&op).await.expect("blob");
    let second = t.apply(&op).await.expect("blob again");
    if stores {
        assert_eq!(first, Applied::Written);
        assert_eq!(
            second,
            Applied::AlreadyPresent,
            "a present blob is not uploaded again"
        );
    }
}

pub async fn corrupt_blobs_are_refused(t: &dyn Target, nonce: &str) {
    let op = Op::CacheBlob {
        sha256: sha256_hex(nonce.as_bytes()),
        body: Bytes::from_static(b"not those bytes"),
    };
    match t.apply(&op).await {
        Ok(Applied::Discarded) => {}
        Ok(other) => panic!("a blob that does not hash to its key was accepted: {other:?}"),
        Err(e) => {
            assert_eq!(e.class, ErrorClass::Permanent, "corrupt blob: {e}");
            assert_eq!(
                t.read(&op.key(), u64::MAX).await.expect("read"),
                None,
                "nothing stored"
            );
        }
    }
}

pub async fn summaries_and_manifests_are_rewritten_whole(
    t: &dyn Target,
    nonce: &str,
    stores: bool,
) {
    let run = format!("RUN{nonce}");
    let key = sha256_hex(nonce.as_bytes());
    for body in [
        &b"{\"v\":1,\"long\":\"xxxxxxxxxxxxxxxx\"}"[..],
        b"{\"v\":2}",
    ] {
        t.apply(&Op::RunSummary {
            run: run.clone(),
            body: Bytes::copy_from_slice(body),
        })
        .await
        .expect("summary");
        t.apply(&Op::CacheManifest {
            key: key.clone(),
            body: Bytes::copy_from_slice(body),
        })
        .await
        .expect("manifest");
    }
    if stores {
        assert_eq!(
            t.read(&format!("runs/{run}/run.json"), u64::MAX)
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(b"{\"v\":2}")
        );
        assert_eq!(
            t.read(&format!("keys/{key}.json"), u64::MAX)
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(b"{\"v\":2}")
        );
    }
}

/// `read(key, max)`: an object of exactly `max` bytes reads whole; one
/// byte more is a permanent error that names the object, never a partial
/// or an unbounded read.
pub async fn reads_are_bounded(t: &dyn Target, nonce: &str, stores: bool) {
    let op = &ops(nonce)[1];
    t.apply(op).await.expect("apply the summary");
    if !stores {
        return;
    }
    let n = op.body().len() as u64;
    assert_eq!(
        t.read(&op.key(), n)
            .await
            .expect("read at the bound")
            .as_ref(),
        Some(op.body()),
        "an object of exactly `max` bytes reads whole"
    );
    let e = t
        .read(&op.key(), n - 1)
        .await
        .expect_err("an object over the bound must be refused");
    assert_eq!(e.class, ErrorClass::Permanent, "{e:?}");
    assert!(
        e.message.contains(&op.key()) && e.message.contains(&n.to_string()),
        "{e:?}"
    );
}

pub async fn absent_keys_read_as_none(t: &dyn Target) {
    assert_eq!(
        t.read("runs/NOPE/run.json", 1).await.expect("read absent"),
        None
    );
    assert!(t.list("runs/NOPE/").await.expect("list absent").is_empty());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fault::FaultTarget;
    use crate::none::NoneTarget;
    use crate::object::ObjectStoreTarget;

    #[tokio::test]
    async fn none_target() {
        run_all(&NoneTarget, "n").await;
    }

    #[tokio::test]
    async fn filesystem_target() {
        let dir = tempfile::tempdir().unwrap();
        run_all(&ObjectStoreTarget::filesystem(dir.path()), "f").await;
    }

    #[tokio::test]
    async fn object_store_target_with_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let t = ObjectStoreTarget::new("local:team/prefix", store, "team/prefix/");
        run_all(&t, "p").await;
        assert!(
            dir.path().join("team/prefix/runs").is_dir(),
            "objects live under the prefix"
        );
    }

    #[tokio::test]
    async fn in_memory_object_store() {
        let store = Arc::new(object_store::memory::InMemory::new());
        run_all(&ObjectStoreTarget::new("memory:", store, ""), "m").await;
    }

    #[tokio::test]
    async fn fault_wrapper_passes_when_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let t = FaultTarget::new(Arc::new(ObjectStoreTarget::filesystem(dir.path())));
        run_all(&t, "w").await;
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
