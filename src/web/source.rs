//! Where the dashboard reads from. `sparkwing dashboard start` reads this
//! machine's `state.db` merged with the resolved profile's remote;
//! `sparkwing-web` reads the surfaces its `--*-spec` flags name. Every read
//! is blocking (SQLite, or a remote read blocking on the server's runtime)
//! and runs on `spawn_blocking`, never on the async workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use sparkwing_sync::RemoteView;

use crate::local::store::Store;
use crate::profile::{Surface, SurfaceType};
use crate::remote::runs::{self, ListQuery, RemoteRuns};
use crate::report::{self, run_json};
use crate::run::logs;
use crate::run::pipeline::Project;

/// How long a start-up reachability check of a spec may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed `--state-spec`, `--logs-spec` or `--artifacts-spec`.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// `sqlite:///path/state.db`: a local state database (state only).
    Sqlite(PathBuf),
    /// A directory (`/path` or `file:///path`), in the remote layout.
    Dir(PathBuf),
    /// `s3://`, `gs://` or `az://` bucket and prefix.
    Object(Box<Surface>),
}

fn bucket_and_prefix(rest: &str) -> (String, String) {
    let rest = rest.trim_matches('/');
    match rest.split_once('/') {
        Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
        None => (rest.to_string(), String::new()),
    }
}

/// Parses one spec; errors name the flag and the accepted forms.
pub fn parse_spec(flag: &str, raw: &str) -> Result<Spec> {
    let forms = "sqlite:///path/state.db (state only), /a/directory or file:///a/directory, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix";
    let raw = raw.trim();
    if raw.is_empty() {
        bail!("{flag} is empty; give one of: {forms}");
    }
    let object = |kind: SurfaceType, rest: &str| -> Result<Spec> {
        let (bucket, prefix) = bucket_and_prefix(rest);
        if bucket.is_empty() {
            bail!("{flag} `{raw}` names no bucket; e.g. s3://my-bucket/state");
        }
        let shown = crate::util::cell(&crate::profile::redact_url(raw));
        crate::profile::names::check_bucket(kind, &bucket)
            .map_err(|why| anyhow!("{flag} `{shown}`: the bucket {why}"))?;
        crate::profile::names::check_prefix(&prefix)
            .map_err(|why| anyhow!("{flag} `{shown}`: the prefix is not valid: {why}"))?;
        Ok(Spec::Object(Box::new(Surface {
            kind,
            path: None,
            bucket: Some(bucket),
            prefix: Some(prefix),
            endpoint: None,
            region: None,
            account: None,
            url: None,
            url_source: None,
            signing_key_source: None,
            anonymous: None,
        })))
    };
    let absolute = |p: &str| -> Result<PathBuf> {
        let path = PathBuf::from(p);
        if !path.is_absolute() {
            bail!("{flag} `{raw}` must be an absolute path");
        }
        Ok(path)
    };
    if let Some(p) = raw.strip_prefix("sqlite://") {
        if flag != "--state-spec" {
            bail!("{flag} `{raw}`: a SQLite database holds run state only; give a directory or a bucket for {flag}");
        }
        return Ok(Spec::Sqlite(absolute(p)?));
    }
    if let Some(p) = raw.strip_prefix("file://") {
        return Ok(Spec::Dir(absolute(p)?));
    }
    if let Some(rest) = raw.strip_prefix("s3://") {
        return object(SurfaceType::S3, rest);
    }
    if let Some(rest) = raw.strip_prefix("gs://") {
        return object(SurfaceType::Gcs, rest);
    }
    if let Some(rest) = raw.strip_prefix("az://") {
        return object(SurfaceType::AzureBlob, rest);
    }
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        bail!("{flag}: Postgres state (Mode 3) is not served by this build; give one of: {forms}");
    }
    if raw.contains("://") {
        bail!(
            "{flag} `{}`: unknown scheme; give one of: {forms}",
            crate::profile::redact_url(raw)
        );
    }
    let path = absolute(raw)?;
    if path.extension().is_some_and(|e| e == "db") && flag == "--state-spec" {
        return Ok(Spec::Sqlite(path));
    }
    Ok(Spec::Dir(path))
}

/// Where one job's log lives.
#[derive(Clone)]
pub enum LogLoc {
    /// This machine's log file (it may still be growing).
    File(PathBuf),
    /// Another runner's chunks, on the logs surface.
    Chunks(RemoteLog),
}

/// A job's log on a remote.
#[derive(Clone)]
pub struct RemoteLog {
    pub view: Arc<dyn RemoteView>,
    pub run: String,
    pub job: String,
}

impl LogLoc {
    /// The letter of this log's stream cursors: `b` (a byte offset in a
    /// file) or `c` (a count of remote chunks).
    pub fn cursor_kind(&self) -> char {
        match self {
            LogLoc::File(_) => 'b',
            LogLoc::Chunks(..) => 'c',
        }
    }
}

/// What the dashboard reads from. Cheap to share (`Arc`).
pub struct Source {
    /// Shown in the header: which profile or which specs.
    pub label: String,
    /// The profile name (dashboard start), for the sync page.
    pub profile: Option<String>,
    store: Option<Arc<Store>>,
    /// Where local log files are (`home/runs/<run>/<job>.log`).
    home: Option<PathBuf>,
    remote: Option<Arc<RemoteRuns>>,
    logs: Option<Arc<dyn RemoteView>>,
    artifacts: Option<Arc<dyn RemoteView>>,
    /// The outbox to report on, and the target IDs of the profile.
    sync: Option<(PathBuf, Option<Vec<String>>)>,
    project: Option<Project>,
}

/// The local parts of a dashboard's source.
pub struct LocalParts {
    pub home: PathBuf,
    pub profile: String,
    pub remote: Option<crate::remote::Remote>,
    pub project: Option<Project>,
}

impl Source {
    /// `sparkwing dashboard start`: this machine's state merged with the
    /// profile's remote (when it has one).
    pub fn local(parts: LocalParts, handle: tokio::runtime::Handle) -> Result<Source> {
        let store = Arc::new(Store::open(&parts.home)?);
        let remote = parts.remote.unwrap_or_default();
        let ids = remote
            .targets()
            .iter()
            .map(|t| t.id().to_string())
            .collect();
        let label = match &remote.state {
            Some(e) => format!("profile {} · {}", parts.profile, e.id()),
            None => format!("profile {} · this machine", parts.profile),
        };
        let view = |e: &Option<crate::remote::Endpoint>| e.as_ref().map(|e| Arc::clone(&e.view));
        let logs = view(&remote.logs);
        Ok(Source {
            label,
            profile: Some(parts.profile),
            store: Some(store),
            home: Some(parts.home.clone()),
            remote: view(&remote.state)
                .map(|s| Arc::new(RemoteRuns::with_handle(s, logs.clone(), handle))),
            logs,
            artifacts: view(&remote.cache),
            sync: Some((parts.home, Some(ids))),
            project: parts.project,
        })
    }

    /// `sparkwing-web`: the surfaces named by the specs, checked at start.
    pub async fn from_specs(
        state: &str,
        logs_spec: Option<&str>,
        artifacts: Option<&str>,
    ) -> Result<Source> {
        let handle = tokio::runtime::Handle::current();
        let state_spec = parse_spec("--state-spec", state)?;
        let mut label = vec![format!("state {}", describe(&state_spec))];
        let (store, home, remote_state) = match &state_spec {
            Spec::Sqlite(p) => {
                if !p.is_file() {
                    bail!(
                        "--state-spec: {} does not exist; give the state.db of a SPARKWING_HOME (e.g. sqlite://$HOME/.sparkwing/state.db)",
                        p.display()
                    );
                }
                let home = p.parent().map(Path::to_path_buf).unwrap_or_default();
                let h = home.clone();
                let store = tokio::task::spawn_blocking(move || Store::open(&h))
                    .await?
                    .with_context(|| format!("--state-spec: opening {}", p.display()))?;
                (Some(Arc::new(store)), Some(home), None)
            }
            other => (None, None, Some(open_view("--state-spec", other).await?)),
        };
        let logs = optional_view("--logs-spec", "logs", logs_spec, &mut label).await?;
        let artifacts =
            optional_view("--artifacts-spec", "artifacts", artifacts, &mut label).await?;
        Ok(Source {
            label: label.join(" · "),
            profile: None,
            store,
            home,
            remote: remote_state
                .map(|s| Arc::new(RemoteRuns::with_handle(s, logs.clone(), handle))),
            logs,
            artifacts,
            sync: None,
            project: None,
        })
    }

    /// Whether the sync page applies (dashboard start only).
    pub fn has_sync(&self) -> bool {
        self.sync.is_some()
    }

    /// Whether the runs come (partly) from a remote.
    pub fn merged(&self) -> bool {
        self.remote.is_some()
    }

    /// A page of runs, newest first, and a warning when the remote could not
    /// be read.
    pub fn list(&self, q: &ListQuery) -> Result<(Vec<Value>, Option<String>)> {
        match (&self.remote, &self.store) {
            (Some(remote), store) => runs::merged_list(store.as_deref(), remote, q),
            (None, Some(store)) => {
                let rows = store.list_runs_before(q.pipeline, q.status, q.before, q.limit)?;
                Ok((
                    rows.iter()
                        .map(|r| {
                            let mut v = run_json(r);
                            v["sync"] = json!("local");
                            v
                        })
                        .collect(),
                    None,
                ))
            }
            (None, None) => Ok((Vec::new(), None)),
        }
    }

    /// One run's document (jobs, steps), local first.
    pub fn run(&self, id: &str) -> Result<Value> {
        if let Some(store) = &self.store {
            if let Ok(r) = store.find_run(id) {
                if r.id == id {
                    let mut doc = report::run_document(store, &r, None)?;
                    doc["sync"] = json!("local");
                    return Ok(doc);
                }
            }
        }
        match &self.remote {
            Some(remote) => {
                let docs = remote.docs(&[id.to_string()])?;
                let mut doc = docs
                    .get(id)
                    .cloned()
                    .ok_or_else(|| anyhow!("no run {id} here or on {}", remote.state.id()))?;
                doc["sync"] = json!("remote");
                Ok(doc)
            }
            None => bail!("no run {id}"),
        }
    }

    /// Where a job's log is: this machine's file when it exists, else the
    /// remote chunks. `None` when neither is available.
    pub fn log_loc(&self, run: &str, job: &str) -> Option<LogLoc> {
        // Both come from the URL (and may come from a remote document):
        // only names that can be a run and a job ever become a path or key.
        if !sparkwing_sync::doc::is_run_id(run) || !crate::run::pipeline::valid_name(job) {
            return None;
        }
        if let Some(home) = &self.home {
            let p = logs::log_path(home, run, job);
            if p.is_file() {
                return Some(LogLoc::File(p));
            }
        }
        self.logs.clone().map(|view| {
            LogLoc::Chunks(RemoteLog {
                view,
                run: run.to_string(),
                job: job.to_string(),
            })
        })
    }

    /// The chunks of a remote log, in order, one slot per chunk: `None`
    /// where one is missing, counting what the run document promises (see
    /// [`runs::order_chunks`]).
    pub fn chunk_slots(&self, log: &RemoteLog) -> Result<Vec<Option<u64>>> {
        let expected = self
            .run(&log.run)
            .ok()
            .and_then(|doc| runs::expected_chunks(&doc, &log.job));
        let log = log.clone();
        block(async move {
            let present = log
                .view
                .log_chunks(&log.run, &log.job)
                .await
                .map_err(anyhow::Error::new)?;
            Ok(runs::order_chunks(present.seqs, expected))
        })
    }

    /// One chunk of a remote log: its bytes, or a marker line saying it is
    /// missing (slot `i` of `total`).
    pub fn read_chunk(
        &self,
        log: &RemoteLog,
        slot: Option<u64>,
        i: usize,
        total: usize,
    ) -> Result<Bytes> {
        let got = match slot {
            Some(seq) => {
                let log = log.clone();
                block(async move {
                    log.view
                        .log_chunk(&log.run, &log.job, seq)
                        .await
                        .map_err(|e| anyhow!("{}", crate::profile::scrub(&e.message)))
                })?
            }
            None => None,
        };
        Ok(got.unwrap_or_else(|| Bytes::from(runs::missing_marker(i, total))))
    }

    /// A job's status, and whether its log can still grow (its run is in
    /// progress and the job has not finished). Unknown runs read as
    /// finished, with no status.
    pub fn job_state(&self, run: &str, job: &str) -> (bool, String) {
        self.run(run)
            .map(|doc| job_state(&doc, job))
            .unwrap_or_default()
    }

    /// The cache entry a key names: this machine's index, else the
    /// artifacts surface's manifest.
    pub fn cache_entry(&self, key: &str) -> Option<Value> {
        if let Some(store) = &self.store {
            if let Ok(Some(e)) = store.cache_get(key) {
                return Some(json!({
                    "key": e.key, "run_id": e.run_id, "job": e.job,
                    "manifest": serde_json::from_str::<Value>(&e.manifest).unwrap_or(Value::Null),
                    "from": "this machine",
                }));
            }
        }
        let t = self.artifacts.clone()?;
        let k = key.to_string();
        let body =
            block(async move { t.manifest(&k).await.map_err(anyhow::Error::new) }).ok()??;
        // Another runner's document: shown only as far as it parses.
        let e = crate::remote::cache::parse_entry(key, &body).ok()?;
        Some(json!({
            "key": e.key, "run_id": e.run_id, "job": e.job, "manifest": e.manifest.local(),
            "from": crate::profile::scrub(self.artifacts.as_ref().map_or("", |t| t.id())),
        }))
    }

    /// Sync status per target (dashboard start only).
    pub fn sync_stats(&self) -> Result<Option<Vec<Value>>> {
        let Some((home, ids)) = &self.sync else {
            return Ok(None);
        };
        if !home.join("outbox.db").exists() {
            return Ok(Some(Vec::new()));
        }
        let stats = crate::remote::replicate::open_outbox(home)?.stats(ids.as_deref())?;
        Ok(Some(
            stats
                .iter()
                .map(crate::remote::session::stats_json)
                .collect(),
        ))
    }

    /// The project's pipelines (dashboard start in a project).
    pub fn project_pipelines(&self) -> Vec<Value> {
        self.project
            .iter()
            .flat_map(|p| p.config.pipelines.iter())
            .map(|p| {
                json!({
                    "name": p.name, "description": p.description, "profile": p.profile,
                    "jobs": p.jobs.keys().collect::<Vec<_>>(),
                })
            })
            .collect()
    }
}

/// [`Source::job_state`] from a run document already read.
pub fn job_state(doc: &Value, job: &str) -> (bool, String) {
    let status = doc["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| j["name"] == job)
        .and_then(|j| j["status"].as_str())
        .unwrap_or_default();
    let run_live = doc["status"]
        .as_str()
        .is_some_and(crate::status::RunStatus::live);
    (
        run_live
            && matches!(
                crate::status::JobStatus::parse(status),
                Some(crate::status::JobStatus::Pending | crate::status::JobStatus::Running)
            ),
        status.to_string(),
    )
}

/// Runs a remote read from a blocking thread on the current runtime.
fn block<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let h = tokio::runtime::Handle::try_current()
        .map_err(|_| anyhow!("remote reads need the server's runtime"))?;
    h.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .map_err(|_| anyhow!("the remote did not answer within 30s"))?
    })
}

fn describe(spec: &Spec) -> String {
    match spec {
        Spec::Sqlite(p) => format!("sqlite://{}", p.display()),
        Spec::Dir(p) => p.display().to_string(),
        Spec::Object(s) => format!(
            "{}:{}/{}",
            s.kind.as_str(),
            s.bucket.as_deref().unwrap_or_default(),
            s.prefix.as_deref().unwrap_or_default()
        ),
    }
}

/// The view of an optional spec flag, named in the header `label`.
async fn optional_view(
    flag: &str,
    name: &str,
    raw: Option<&str>,
    label: &mut Vec<String>,
) -> Result<Option<Arc<dyn RemoteView>>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let spec = parse_spec(flag, raw)?;
    label.push(format!("{name} {}", describe(&spec)));
    Ok(Some(open_view(flag, &spec).await?))
}

/// A spec's view, with one read to prove it reachable and readable.
async fn open_view(flag: &str, spec: &Spec) -> Result<Arc<dyn RemoteView>> {
    let t: Arc<dyn RemoteView> = match spec {
        Spec::Dir(p) => {
            if !p.is_dir() {
                bail!(
                    "{flag}: directory {} does not exist; give the directory a `filesystem` profile surface writes to",
                    p.display()
                );
            }
            crate::remote::Endpoint::objects(sparkwing_sync::ObjectStoreTarget::filesystem(
                p.clone(),
            ))
            .view
        }
        Spec::Object(s) => {
            crate::remote::targets::endpoint_for(flag, s)?
                .ok_or_else(|| anyhow!("{flag}: not an object store"))?
                .view
        }
        Spec::Sqlite(_) => bail!("{flag}: a SQLite database holds run state only"),
    };
    let probe = tokio::time::timeout(PROBE_TIMEOUT, t.probe()).await;
    // The failure keeps its class (it decides the exit code).
    let e = match probe {
        Ok(Ok(_)) => return Ok(t),
        Ok(Err(e)) => e,
        Err(_) => sparkwing_sync::TargetError::transient(format!(
            "no answer within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    };
    Err(anyhow::Error::new(e).context(format!(
        "{flag}: {} cannot be read: check the endpoint (SPARKWING_S3_ENDPOINT for S3), the bucket, the credentials in the environment and the network",
        t.id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_name_the_flag() {
        assert_eq!(
            parse_spec("--state-spec", "sqlite:///h/state.db").unwrap(),
            Spec::Sqlite("/h/state.db".into())
        );
        assert_eq!(
            parse_spec("--logs-spec", "file:///srv/logs").unwrap(),
            Spec::Dir("/srv/logs".into())
        );
        match parse_spec("--state-spec", "s3://bkt/state/").unwrap() {
            Spec::Object(s) => {
                assert_eq!(s.bucket.as_deref(), Some("bkt"));
                assert_eq!(s.prefix.as_deref(), Some("state"));
            }
            other => panic!("{other:?}"),
        }
        for (flag, bad, want) in [
            ("--state-spec", "", "--state-spec is empty"),
            (
                "--logs-spec",
                "relative/dir",
                "--logs-spec `relative/dir` must be an absolute path",
            ),
            ("--logs-spec", "sqlite:///x.db", "holds run state only"),
            ("--state-spec", "ftp://u:secret@h/x", "unknown scheme"),
            ("--state-spec", "s3://", "names no bucket"),
            ("--state-spec", "postgres://u:pw@h/db", "Mode 3"),
            (
                "--state-spec",
                "s3://../../x",
                "--state-spec `s3://../../x`: the bucket is not a valid S3 bucket name: it is 2 characters long",
            ),
            (
                "--logs-spec",
                "gs://Team/logs",
                "--logs-spec `gs://Team/logs`: the bucket is not a valid GCS bucket name: it has uppercase",
            ),
            (
                "--artifacts-spec",
                "az://a--b/cache",
                "--artifacts-spec `az://a--b/cache`: the bucket is not a valid Azure container name",
            ),
            (
                "--state-spec",
                "s3://u:secret@bkt/x",
                "--state-spec `s3://***@bkt/x`: the bucket is not a valid S3 bucket name",
            ),
            (
                "--logs-spec",
                "s3://bkt/team/../x",
                "--logs-spec `s3://bkt/team/../x`: the prefix is not valid: it has a `.` or `..` part",
            ),
        ] {
            let e = parse_spec(flag, bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(!e.contains("secret") && !e.contains("pw@"), "{e}");
        }
    }
}
