//! The Mode 2 suite, one body per behaviour, each run on every provider
//! (issue 11, requirement 3): S3 (moto), Azure Blob (Azurite) and GCS
//! (fake-gcs-server behind `gcs_adapter.rs`); see `providers.rs`.
//!
//! A body is a `fn(Provider)`; [`on_every_provider!`] stamps one `#[test]`
//! per provider for it, named `mode2::<body>::<provider>` (so
//! `cargo test mode2::conformance` runs one body everywhere and `cargo test
//! mode2:: -- gcs` one provider). Under `CI=true` no provider skips.

use crate::providers::Provider;

/// `on_every_provider!(body, ...)`: a module `body` with the tests `s3`,
/// `azure` and `gcs`, each calling `body(Provider::…)`.
macro_rules! on_every_provider {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            use crate::providers::Provider;
            #[test]
            fn s3() {
                super::$body(Provider::S3)
            }
            #[test]
            fn azure() {
                super::$body(Provider::Azure)
            }
            #[test]
            fn gcs() {
                super::$body(Provider::Gcs)
            }
        }
    )*};
}

on_every_provider!(conformance, raw_client_semantics);

/// The target conformance suite (`sparkwing_sync::conformance`) over an
/// `ObjectStoreTarget` of the provider's raw client, under a prefix.
fn conformance(p: Provider) {
    let Some(server) = p.start() else { return };
    server.bucket("conformance");
    let t = server.target("conformance", "team/prefix");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(sparkwing_sync::conformance::run_all(&t, p.name()));
    // Everything landed under the prefix.
    let snap = server.snapshot("conformance");
    assert!(!snap.is_empty(), "{p:?}: the suite wrote nothing");
    for key in snap.keys() {
        assert!(
            key.starts_with("team/prefix/"),
            "{p:?}: {key} is outside the prefix"
        );
    }
}

/// Everything `object_store`'s clients do, on each provider's raw client:
/// conditional creates and updates, ranged reads, HEAD, lists with and
/// without a delimiter, copies and deletes. On GCS it proves the adapter
/// (`gcs_adapter.rs`) translates every call the same way the real
/// services answer.
fn raw_client_semantics(p: Provider) {
    use futures_util::TryStreamExt;
    use sparkwing_sync::object_store::path::Path as OPath;
    use sparkwing_sync::object_store::{
        self as object_store, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
    };
    let Some(server) = p.start() else { return };
    server.bucket("raw-semantics");
    let store = server.store("raw-semantics");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = OPath::from("dir/a b+c.json");
        let put = store.put(&a, "0123456789".into()).await.unwrap();
        assert!(put.e_tag.is_some(), "{p:?}: a put answers an ETag");
        let created = store
            .put_opts(&a, "x".into(), PutOptions::from(PutMode::Create))
            .await;
        assert!(
            matches!(created, Err(object_store::Error::AlreadyExists { .. })),
            "{p:?}: create over an existing object: {created:?}"
        );
        let got = store.get(&a).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"0123456789", "{p:?}: create left it alone");
        let fresh = OPath::from("dir/sub/new");
        store
            .put_opts(&fresh, "new".into(), PutOptions::from(PutMode::Create))
            .await
            .unwrap_or_else(|e| panic!("{p:?}: create of an absent object: {e}"));
        let meta = store.head(&a).await.unwrap();
        assert_eq!(meta.size, 10, "{p:?}: HEAD size");
        assert!(
            matches!(
                store.head(&OPath::from("dir/nope")).await,
                Err(object_store::Error::NotFound { .. })
            ),
            "{p:?}: HEAD of an absent object"
        );
        let range = store.get_range(&a, 2..5).await.unwrap();
        assert_eq!(&range[..], b"234", "{p:?}: ranged GET");
        {
            let v = UpdateVersion {
                e_tag: meta.e_tag.clone(),
                version: meta.version.clone(),
            };
            store
                .put_opts(
                    &a,
                    "updated".into(),
                    PutOptions::from(PutMode::Update(v.clone())),
                )
                .await
                .unwrap_or_else(|e| panic!("{p:?}: update at the current version: {e}"));
            let stale = store
                .put_opts(&a, "stale".into(), PutOptions::from(PutMode::Update(v)))
                .await;
            assert!(
                matches!(stale, Err(object_store::Error::Precondition { .. })),
                "{p:?}: update at a stale version: {stale:?}"
            );
            let got = store.get(&a).await.unwrap().bytes().await.unwrap();
            assert_eq!(&got[..], b"updated", "{p:?}");
        }
        let mut all: Vec<String> = store
            .list(Some(&OPath::from("dir")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        all.sort();
        assert_eq!(all, ["dir/a b+c.json", "dir/sub/new"], "{p:?}: list");
        let d = store
            .list_with_delimiter(Some(&OPath::from("dir")))
            .await
            .unwrap();
        let objects: Vec<String> = d.objects.iter().map(|m| m.location.to_string()).collect();
        let prefixes: Vec<String> = d.common_prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(objects, ["dir/a b+c.json"], "{p:?}: delimited list");
        assert_eq!(prefixes, ["dir/sub"], "{p:?}: common prefixes");
        let copy = OPath::from("dir/copy");
        store.copy(&a, &copy).await.unwrap();
        assert_eq!(
            store.get(&copy).await.unwrap().bytes().await.unwrap(),
            store.get(&a).await.unwrap().bytes().await.unwrap(),
            "{p:?}: copy"
        );
        if p != Provider::S3 {
            // object_store refuses S3 copy-if-not-exists unless a mode for
            // the server is configured (`S3CopyIfNotExists`).
            let again = store.copy_if_not_exists(&a, &copy).await;
            assert!(
                matches!(again, Err(object_store::Error::AlreadyExists { .. })),
                "{p:?}: copy over an existing object: {again:?}"
            );
        }
        store.delete(&copy).await.unwrap();
        assert!(
            matches!(
                store.get(&copy).await,
                Err(object_store::Error::NotFound { .. })
            ),
            "{p:?}: deleted"
        );
        let empty: Vec<_> = store
            .list(Some(&OPath::from("nothing-here")))
            .try_collect()
            .await
            .unwrap();
        assert!(empty.is_empty(), "{p:?}: an absent prefix lists empty");
    });
}
