//! The Mode 2 suite, one body per behaviour, each run on every provider
//! (issue 11, requirement 3): S3 (moto), Azure Blob (Azurite) and GCS
//! (fake-gcs-server behind `gcs_adapter.rs`); see `providers.rs`.
//!
//! A body is a `fn(Provider)`; [`on_every_provider!`] stamps one `#[test]`
//! per provider for it, named `mode2::<body>::<provider>` (so
//! `cargo test mode2::conformance` runs one body everywhere and `cargo test
//! mode2:: -- gcs` one provider). Under `CI=true` no provider skips.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::checker::{self, Scope};
use crate::providers::{Provider, Server};
use crate::util::*;
use crate::web::Server as Web;

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

on_every_provider!(
    conformance,
    raw_client_semantics,
    replication_through_an_outage_equals_local,
    a_second_runner_hits_the_cache_and_reads_every_runners_runs,
    objects_carry_their_content_type,
    a_missing_bucket_is_misconfigured,
    the_local_store_and_the_bucket_answer_reads_alike,
    cache_gc_collects_what_no_manifest_names,
    packed_workloads_restore_byte_identical_and_a_small_change_sends_little,
);

/// The target conformance suite (`sparkwing_sync::conformance::run_all`)
/// over an `ObjectStoreTarget` of the provider's raw client, under a
/// prefix, read back through the object view of the same objects.
fn conformance(p: Provider) {
    let Some(server) = p.start() else { return };
    server.bucket("conformance");
    let t = std::sync::Arc::new(server.target("conformance", "team/prefix"));
    let view = sparkwing_sync::ObjectView::new(std::sync::Arc::clone(&t));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(sparkwing_sync::conformance::run_all(
        &*t,
        Some(&view),
        p.name(),
    ));
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

// ------------------------------------------------ runs against a provider

/// The pipeline of the run bodies: a job that talks (a log), and a cached
/// job whose outputs are random bytes (equal elsewhere only if restored,
/// not recomputed) with an executable mode, counting its computations.
const WORK: &str = r#"pipelines:
  - name: work
    jobs:
      talk:
        steps: [{ run: 'for i in 1 2 3; do echo "line $i of $SPARKWING_RUN_ID"; done' }]
      build:
        cache: { key: [seed.txt], outputs: [out] }
        steps:
          - run: |
              echo computed >> computed.txt
              mkdir -p out && cp seed.txt out/seed.txt && head -c 70000 /dev/urandom > out/noise.bin
              printf '#!/bin/sh\necho tool\n' > out/tool && chmod 750 out/tool
"#;

/// A runner: its own home and checkout, replicating to `bucket` through
/// `endpoint` (the server's, or a proxy's in front of it).
struct Runner<'a> {
    env: Env,
    server: &'a Server,
    endpoint: String,
}

impl<'a> Runner<'a> {
    fn new(server: &'a Server, endpoint: &str, bucket: &str) -> Runner<'a> {
        let env = Env::new();
        env.write_project(&format!(
            "{}{WORK}",
            server.profile(endpoint, "shared", bucket)
        ));
        std::fs::write(env.dir().join("seed.txt"), "the seed\n").unwrap();
        Runner {
            env,
            server,
            endpoint: endpoint.to_string(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.env.cmd(args);
        c.envs(self.server.env_at(&self.endpoint));
        c
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.cmd(args).output().unwrap();
        expect_code(&out, 0);
        out
    }

    fn status(&self) -> serde_json::Value {
        let out = self.ok(&["sync", "status", "--profile", "shared", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn latest(&self) -> String {
        self.env.json(&["runs", "list", "-o", "json"])[0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// A run replicates; an outage never fails the runs made during it; the
/// backlog replays when the provider is back; and then the bucket holds
/// exactly what the local store holds (the strict checker: every event
/// once, logs byte-equal, blobs verified, nothing stray).
fn replication_through_an_outage_equals_local(p: Provider) {
    let Some(server) = p.start() else { return };
    server.bucket("outage");
    let proxy = Proxy::start(&server.endpoint);
    let a = Runner::new(&server, &proxy.endpoint(), "outage");
    let out = a.ok(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "60s",
    ]);
    assert!(
        text(&out.stderr).contains("sparkwing: synced to"),
        "{p:?}: {}",
        text(&out.stderr)
    );
    proxy.set_up(false);
    for round in 0..2 {
        std::fs::write(a.env.dir().join("seed.txt"), format!("seed {round}\n")).unwrap();
        a.ok(&[
            "run",
            "work",
            "--profile",
            "shared",
            "--sw-sync-timeout",
            "2s",
        ]);
    }
    let st = a.status();
    let targets = st["targets"].as_array().unwrap();
    assert!(
        targets
            .iter()
            .any(|t| t["connectivity"] == "offline" && t["pending_entries"].as_u64().unwrap() > 0),
        "{p:?}: the outage shows, with the backlog: {st}"
    );
    proxy.set_up(true);
    a.ok(&["sync", "flush", "--profile", "shared", "--timeout", "120s"]);
    let c = checker::check(
        &a.env.sw_home(),
        &server.snapshot("outage"),
        Scope::Exclusive,
    );
    assert_eq!(c.runs, 3, "{p:?}: {c:?}");
    assert!(c.statuses.values().all(|s| s == "success"), "{p:?}: {c:?}");
    assert_eq!(c.manifests, 3, "{p:?}: one manifest per seed: {c:?}");
    assert!(
        // A pack per entry: made while the remote was away, none could
        // name another's.
        c.log_chunks >= 3 && c.events > 0 && c.blobs == 3,
        "{p:?}: {c:?}"
    );
    let st = a.status();
    for t in st["targets"].as_array().unwrap() {
        assert_eq!(t["connectivity"], "online", "{p:?}: {st}");
        assert_eq!(t["pending_entries"], 0, "{p:?}: {st}");
    }
}

/// A second runner (its own home and checkout) restores the first one's
/// cached outputs byte-identical with their modes, without computing; its
/// `runs list/show/logs --profile` show the first runner's run; and
/// `sparkwing-web` over the provider's specs serves it.
fn a_second_runner_hits_the_cache_and_reads_every_runners_runs(p: Provider) {
    let Some(server) = p.start() else { return };
    server.bucket("shared");
    let a = Runner::new(&server, &server.endpoint, "shared");
    a.ok(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "60s",
    ]);
    let run_a = a.latest();
    let b = Runner::new(&server, &server.endpoint, "shared");
    let out = b.ok(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "60s",
    ]);
    assert!(
        text(&out.stderr).contains(&format!("restored from run {run_a}")),
        "{p:?}: {}",
        text(&out.stderr)
    );
    assert!(
        !b.env.dir().join("computed.txt").exists(),
        "{p:?}: B did not compute"
    );
    for f in ["out/seed.txt", "out/noise.bin", "out/tool"] {
        assert_eq!(
            std::fs::read(b.env.dir().join(f)).unwrap(),
            std::fs::read(a.env.dir().join(f)).unwrap(),
            "{p:?}: {f} byte-identical"
        );
    }
    let mode = std::fs::metadata(b.env.dir().join("out/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "{p:?}: the mode is kept");
    let run_b = b.latest();

    // Merged reads on B.
    let list = b.ok(&["runs", "list", "--profile", "shared", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&run_a.as_str()) && ids.contains(&run_b.as_str()),
        "{p:?}: {list}"
    );
    assert_eq!(ids.len(), 2, "{p:?}: each run once: {list}");
    let show = b.ok(&["runs", "show", &run_a, "--profile", "shared"]);
    assert!(
        text(&show.stdout).contains("talk"),
        "{p:?}: {}",
        text(&show.stdout)
    );
    let local_log =
        std::fs::read(a.env.sw_home().join("runs").join(&run_a).join("talk.log")).unwrap();
    let logs = b.ok(&[
        "runs",
        "logs",
        &run_a,
        "--job",
        "talk",
        "--profile",
        "shared",
    ]);
    assert_eq!(
        logs.stdout, local_log,
        "{p:?}: A's log, byte for byte, on B"
    );

    // sparkwing-web over the bucket alone.
    let env = server.web_env();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let web = Web::web(
        &[
            "--state-spec",
            &server.web_spec("shared", "state"),
            "--logs-spec",
            &server.web_spec("shared", "logs"),
            "--artifacts-spec",
            &server.web_spec("shared", "cache"),
        ],
        &envs,
    );
    let page = web.get("/").text();
    assert!(
        page.contains(&run_a) && page.contains(&run_b),
        "{p:?}: {page}"
    );
    let detail = web.get(&format!("/runs/{run_a}")).text();
    assert!(
        detail.contains("cached outputs: 3 file(s)"),
        "{p:?}: {detail}"
    );
    let raw = web.get(&format!("/runs/{run_a}/jobs/talk/log.txt"));
    assert_eq!(raw.status, 200, "{p:?}");
    assert_eq!(raw.text().as_bytes(), &local_log[..], "{p:?}");
}

/// Objects are stored with their content type, so a bucket console shows
/// a log or a document instead of downloading it.
fn objects_carry_their_content_type(p: Provider) {
    use sparkwing_sync::object_store::{path::Path as OPath, Attribute, GetOptions, ObjectStore};
    let Some(server) = p.start() else { return };
    server.bucket("typed");
    let a = Runner::new(&server, &server.endpoint, "typed");
    a.ok(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "60s",
    ]);
    let store = server.store("typed");
    let snap = server.snapshot("typed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for key in snap.keys() {
        let want = if key.ends_with(".log") {
            "text/plain; charset=utf-8"
        } else if key.ends_with(".ndjson") {
            "application/x-ndjson"
        } else if key.ends_with(".json") {
            "application/json"
        } else if key.starts_with("cache/cas/") {
            "application/octet-stream"
        } else {
            panic!("{p:?}: unexpected object {key}")
        };
        let got = rt.block_on(store.get_opts(
            &OPath::from(key.as_str()),
            GetOptions {
                head: true,
                ..Default::default()
            },
        ));
        let got = got.unwrap_or_else(|e| panic!("{p:?}: HEAD {key}: {e}"));
        let ct = got
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string());
        assert_eq!(ct.as_deref(), Some(want), "{p:?}: {key}");
        seen.insert(want);
    }
    assert_eq!(
        seen.len(),
        4,
        "{p:?}: every kind of object was checked: {seen:?}"
    );
}

/// GCS credentials from a file, both ways Google's tools name one
/// (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`): a key that
/// carries the emulator's URL (`gcs_base_url`, http) and `disable_oauth`
/// reaches the emulator with no `endpoint:` and no `anonymous:`.
#[test]
fn gcs_credentials_files_name_the_emulator() {
    let Some(server) = Provider::Gcs.start() else {
        return;
    };
    server.bucket("keys");
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        serde_json::json!({
            "gcs_base_url": server.endpoint,
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        })
        .to_string(),
    )
    .unwrap();
    let partial = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        partial.path(),
        r#"{"type": "service_account", "client_email": "a@b"}"#,
    )
    .unwrap();
    for var in ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_APPLICATION_CREDENTIALS"] {
        let env = Env::new();
        env.write_project(&format!(
            "profiles:\n  shared:\n    cache: {{ type: gcs, bucket: keys }}\n{WORK}"
        ));
        let out = env
            .cmd(&["run", "work", "--profile", "shared"])
            .env(var, partial.path())
            .output()
            .unwrap();
        expect_code(&out, 2);
        assert!(
            text(&out.stderr).contains(&format!(
                "the service account key in {var} lacks private_key, private_key_id"
            )),
            "{var}: {}",
            text(&out.stderr)
        );
    }
    for var in ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_APPLICATION_CREDENTIALS"] {
        let env = Env::new();
        let mut y = "profiles:\n  shared:\n".to_string();
        for s in ["state", "logs", "cache"] {
            y.push_str(&format!(
                "    {s}: {{ type: gcs, bucket: keys, prefix: {var}/{s} }}\n"
            ));
        }
        env.write_project(&format!("{y}{WORK}"));
        std::fs::write(env.dir().join("seed.txt"), var).unwrap();
        let out = env
            .cmd(&[
                "run",
                "work",
                "--profile",
                "shared",
                "--sw-sync-timeout",
                "60s",
            ])
            .env(var, key.path())
            .output()
            .unwrap();
        expect_code(&out, 0);
        assert!(
            text(&out.stderr).contains("sparkwing: synced to"),
            "{var}: {}",
            text(&out.stderr)
        );
        let run = env.json(&["runs", "list", "-o", "json"])[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let snap = server.snapshot("keys");
        assert!(
            snap.contains_key(&format!("{var}/state/runs/{run}/run.json")),
            "{var}: {:?}",
            snap.keys().collect::<Vec<_>>()
        );
    }
}

/// README "Offline, refused or misconfigured": a bucket (container) that
/// does not exist stops the target as `misconfigured`, on every provider
/// (`s3::a_missing_bucket_or_…` checks the 400 and 501 cases on S3).
fn a_missing_bucket_is_misconfigured(p: Provider) {
    let Some(server) = p.start() else { return };
    let env = Env::new();
    env.write_project(&format!(
        "{}pipelines:\n  - name: work\n    jobs:\n      talk: {{ steps: [{{ run: 'echo hello' }}] }}\n",
        server.profile(&server.endpoint, "shared", "nevermade")
    ));
    let mut c = env.cmd(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "3s",
    ]);
    c.envs(server.env());
    let out = c.output().unwrap();
    expect_code(&out, 0);
    let mut c = env.cmd(&["sync", "status", "--profile", "shared", "-o", "json"]);
    c.envs(server.env());
    let st: serde_json::Value = serde_json::from_slice(&c.output().unwrap().stdout).unwrap();
    for t in st["targets"].as_array().unwrap() {
        if t["pending_entries"].as_u64().unwrap() > 0 {
            assert_eq!(t["connectivity"], "misconfigured", "{p:?}: {st}");
        }
    }
}

/// One conformance body (`sparkwing_sync::conformance::view_suite`) over
/// the local store's view and the provider's object views of the same
/// run, after a real run and a flush: both answer every read with the same
/// values, which are what the local store's own rows and files hold.
/// Sparkwing's cache manifests for the view suite: version 1 (the local
/// store answers so) or packed (what a bucket holds), read through the
/// product's own parser and restore.
struct PackFormat(String);

#[async_trait::async_trait]
impl sparkwing_sync::conformance::CacheFormat for PackFormat {
    fn meaning(&self, manifest: &[u8]) -> Result<serde_json::Value, String> {
        let e = sparkwing::remote::cache::parse_entry(&self.0, manifest)
            .map_err(|e| format!("{e:#}"))?;
        serde_json::to_value(e.manifest.local()).map_err(|e| e.to_string())
    }

    fn objects(&self, manifest: &[u8]) -> Result<Vec<String>, String> {
        let e = sparkwing::remote::cache::parse_entry(&self.0, manifest)
            .map_err(|e| format!("{e:#}"))?;
        Ok(e.manifest.objects())
    }

    async fn file(
        &self,
        view: &dyn sparkwing_sync::RemoteView,
        manifest: &[u8],
        sha: &str,
    ) -> Result<bytes::Bytes, String> {
        let e = sparkwing::remote::cache::parse_entry(&self.0, manifest)
            .map_err(|e| format!("{e:#}"))?;
        if e.manifest.version == 1 {
            return view
                .blob(sha, u64::MAX)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("blob {sha} is absent"));
        }
        let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cas = sparkwing::run::cache::Cas::at(scratch.path());
        sparkwing::remote::pack::download(view, &cas, &e.manifest, |s| s == sha)
            .await
            .map_err(|e| format!("{e:#}"))?;
        std::fs::read(cas.blob_path(sha))
            .map(Into::into)
            .map_err(|e| e.to_string())
    }
}

fn the_local_store_and_the_bucket_answer_reads_alike(p: Provider) {
    use sparkwing::local::store::Store;
    use sparkwing::local::view::{remote_document, LocalView};
    use sparkwing_sync::conformance::{view_suite, Expected, Surfaces};
    use sparkwing_sync::{ObjectView, RemoteView};
    use std::sync::Arc;

    let Some(server) = p.start() else { return };
    server.bucket("views");
    let a = Runner::new(&server, &server.endpoint, "views");
    // A job slow enough that the run's events close in several segments.
    a.env.write_project(&format!(
        "{}{WORK}      slow:\n        steps: [{{ run: 'sleep 1.3' }}, {{ run: 'sleep 1.3' }}, {{ run: 'true' }}]\n",
        server.profile(&server.endpoint, "shared", "views")
    ));
    a.ok(&["run", "work", "--profile", "shared"]);
    a.ok(&["sync", "flush", "--profile", "shared", "--timeout", "120s"]);

    // What the run wrote, from the local store's rows and files.
    let home = a.env.sw_home();
    let store = Arc::new(Store::open(&home).unwrap());
    let run = store.run_ids().unwrap().pop().expect("the run");
    let row = store.run_by_id(&run).unwrap().unwrap();
    let doc = remote_document(&store, &row).unwrap();
    let doc = sparkwing_sync::doc::parse_run(&run, doc.to_string().as_bytes())
        .unwrap()
        .to_value();
    let entry = store
        .cache_entries_of_run(&run)
        .unwrap()
        .pop()
        .expect("the cache entry");
    let manifest: sparkwing::run::cache::Manifest = serde_json::from_str(&entry.manifest).unwrap();
    let file = manifest
        .files
        .iter()
        .find(|f| f.path.ends_with("noise.bin"))
        .expect("noise.bin in the manifest");
    let cas = sparkwing::run::cache::Cas::new(&home);
    let want = Expected {
        run: run.clone(),
        doc,
        events: store.events_after(&run, 0).unwrap(),
        job: "talk".into(),
        log: std::fs::read(sparkwing::run::logs::log_path(&home, &run, "talk")).unwrap(),
        cache_key: entry.key.clone(),
        manifest: serde_json::to_value(&manifest).unwrap(),
        blob: std::fs::read(cas.blob_path(&file.sha256)).unwrap().into(),
    };
    assert!(!want.events.is_empty() && !want.log.is_empty());
    assert_eq!(want.blob.len(), 70_000);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let local = LocalView::new(Arc::clone(&store), &home);
    let segments = rt.block_on(local.events(&run)).unwrap().segments.len();
    assert!(
        segments >= 2,
        "{p:?}: the run's events are in {segments} segment(s)"
    );
    let object = |prefix: &str| ObjectView::new(Arc::new(server.target("views", prefix)));
    let (state, logs, cache) = (object("state"), object("logs"), object("cache"));
    rt.block_on(async {
        view_suite(
            Surfaces {
                state: &local,
                logs: &local,
                cache: &local,
            },
            &want,
            &PackFormat(entry.key.clone()),
        )
        .await;
        view_suite(
            Surfaces {
                state: &state,
                logs: &logs,
                cache: &cache,
            },
            &want,
            &PackFormat(entry.key.clone()),
        )
        .await;
        // And the bucket's surfaces hold nothing the other surfaces do.
        assert!(logs.run_ids().await.unwrap().is_empty(), "{p:?}");
    });
}

/// `cache gc --profile` on the provider (issue 13): with two entries, a
/// manifest removed leaves its own blobs unnamed (one is shared with the
/// other entry and stays named); they are marked, then deleted by a
/// collection after the grace, and the other entry still restores on a
/// second runner.
fn cache_gc_collects_what_no_manifest_names(p: Provider) {
    use futures_util::TryStreamExt;
    use sparkwing_sync::object_store::path::Path as OPath;
    use sparkwing_sync::object_store::ObjectStoreExt;
    let Some(server) = p.start() else { return };
    server.bucket("gcbucket");
    let a = Runner::new(&server, &server.endpoint, "gcbucket");
    a.ok(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "60s",
    ]);
    let first_out = a.env.dir().join("out-first");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(a.env.dir().join("out"))
        .arg(&first_out)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::write(a.env.dir().join("seed.txt"), "another seed\n").unwrap();
    a.ok(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "60s",
    ]);
    a.ok(&["sync", "flush", "--profile", "shared", "--timeout", "60s"]);
    let store = server.store("gcbucket");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let list = |prefix: &str| -> Vec<String> {
        let mut keys: Vec<String> = rt
            .block_on(
                store
                    .list(Some(&OPath::from(prefix)))
                    .try_collect::<Vec<_>>(),
            )
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        keys.sort();
        keys
    };
    // Two entries: seed, noise and tool each; tool is the same bytes, so
    // the second's pack holds only its seed and noise (tool is named from
    // the first's pack).
    let manifests = list("cache/keys");
    assert_eq!(manifests.len(), 2, "{p:?}: {manifests:?}");
    assert_eq!(list("cache/cas").len(), 2, "{p:?}");
    let gc = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["cache", "gc", "--profile", "shared", "-o", "json"];
        args.extend_from_slice(extra);
        let out = a.ok(&args);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = gc(&[]);
    assert_eq!(
        (first["manifests"].as_u64(), first["blobs"].as_u64()),
        (Some(2), Some(2)),
        "{p:?}: {first}"
    );
    assert_eq!(first["marked"], 0, "{p:?}: everything is named");
    // The second run's entry goes (as an expired one would).
    let another = sparkwing_sync::target::sha256_hex(b"another seed\n");
    let second_run_manifest = manifests
        .iter()
        .find(|k| {
            let body = rt
                .block_on(async { store.get(&OPath::from(k.as_str())).await?.bytes().await })
                .unwrap();
            let json = sparkwing::remote::pack::manifest_json(&body).unwrap();
            String::from_utf8_lossy(&json).contains(&another)
        })
        .unwrap()
        .clone();
    rt.block_on(store.delete(&OPath::from(second_run_manifest.as_str())))
        .unwrap();
    let marked = gc(&[]);
    assert_eq!(
        (marked["marked"].as_u64(), marked["deleted_blobs"].as_u64()),
        (Some(1), Some(0)),
        "{p:?}: {marked}"
    );
    let swept = gc(&["--grace", "0s"]);
    assert_eq!(swept["deleted_blobs"], 1, "{p:?}: {swept}");
    assert_eq!(list("cache/cas").len(), 1, "{p:?}");
    // The remaining entry restores on another runner, byte for byte.
    let b = Runner::new(&server, &server.endpoint, "gcbucket");
    let out = b.ok(&[
        "run",
        "work",
        "--profile",
        "shared",
        "--sw-sync-timeout",
        "60s",
    ]);
    assert!(
        text(&out.stderr).contains("restored from run"),
        "{p:?}: {}",
        text(&out.stderr)
    );
    assert_same_tree(&first_out, &b.env.dir().join("out"));
}

/// Issue 13: the cache workloads (scaled down: many small files, a large
/// one cut into chunks, an empty file, an executable, a symlink) restore
/// byte for byte on a fresh runner from packs; a 1% change re-sends one
/// small pack, and the second runner restores that entry too.
fn packed_workloads_restore_byte_identical_and_a_small_change_sends_little(p: Provider) {
    let Some(server) = p.start() else { return };
    server.bucket("packs");
    let runner = || {
        let env = Env::new();
        env.write_project(&format!(
            "{}{WORKLOAD_PIPELINE}",
            server.profile(&server.endpoint, "shared", "packs")
        ));
        write_workload(env.dir(), 0);
        env
    };
    let run = |env: &Env| {
        let mut c = env.cmd(&[
            "run",
            "packs",
            "--profile",
            "shared",
            "--sw-sync-timeout",
            "120s",
        ]);
        c.envs(server.env_at(&server.endpoint));
        let out = c.output().unwrap();
        expect_code(&out, 0);
        out
    };
    let packs = |snap: &checker::Snapshot| -> std::collections::BTreeMap<String, usize> {
        snap.iter()
            .filter(|(k, _)| k.starts_with("cache/cas/"))
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    };
    let (a, b) = (runner(), runner());
    run(&a);
    let first = packs(&server.snapshot("packs"));
    let stored: usize = first.values().sum();
    let plain: u64 = walk_size(&a.dir().join("data"));
    assert!(
        !first.is_empty() && (stored as u64) < plain,
        "{p:?}: {} packs, {stored} bytes for {plain} plain bytes",
        first.len()
    );
    let out = run(&b);
    assert!(
        !b.dir().join("computed.txt").exists(),
        "{p:?}: B restored instead of computing: {}",
        text(&out.stderr)
    );
    assert_same_tree(&a.dir().join("data"), &b.dir().join("out"));

    write_workload(a.dir(), 1);
    run(&a);
    let second = packs(&server.snapshot("packs"));
    let new: Vec<_> = second.keys().filter(|k| !first.contains_key(*k)).collect();
    assert_eq!(new.len(), 1, "{p:?}: one new pack for a 1% change: {new:?}");
    let sent = second[new[0]];
    assert!(
        sent * 100 <= stored * 5,
        "{p:?}: a 1% change sent {sent} bytes; the first save stored {stored}"
    );
    write_workload(b.dir(), 1);
    let out = run(&b);
    assert!(
        !b.dir().join("computed.txt").exists(),
        "{p:?}: B restored the changed entry: {}",
        text(&out.stderr)
    );
    assert_same_tree(&a.dir().join("data"), &b.dir().join("out"));
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            n += walk_size(&e.path());
        } else if m.is_file() {
            n += m.len();
        }
    }
    n
}
