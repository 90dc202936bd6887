//! The remote side of a profile: one [`Endpoint`] per surface that is not
//! local (a sync [`Target`] that writes it and a [`RemoteView`] that reads
//! it), and the run's target addresses.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use sparkwing_sync::observe::ReadsObserved;
use sparkwing_sync::{ObjectStoreTarget, ObjectView, RemoteView, Target};

use crate::local::store::RunTargets;
use crate::profile::{ProfileDef, Resolved, Surface, SurfaceType};
use crate::remote::signing::SigningKey;

/// One remote surface: the target the replay actor writes it through and
/// the view readers read it through (the same objects, or the same
/// database, seen from both sides).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub target: Arc<dyn Target>,
    pub view: Arc<dyn RemoteView>,
    /// The objects themselves, for administration (`cache gc`); `None` for
    /// a surface that is not an object store.
    pub objects: Option<Arc<ObjectStoreTarget>>,
}

impl Endpoint {
    /// An object store surface: written and read as objects.
    pub fn objects(t: ObjectStoreTarget) -> Endpoint {
        let t = Arc::new(t);
        Endpoint {
            target: Arc::clone(&t) as Arc<dyn Target>,
            view: Arc::new(ObjectView::new(Arc::clone(&t))),
            objects: Some(t),
        }
    }

    /// The target's id (the outbox address, with no secret in it).
    pub fn id(&self) -> &str {
        self.target.id()
    }
}

/// The surfaces of a profile; `None` where a surface is local.
#[derive(Debug, Default, Clone)]
pub struct Remote {
    pub state: Option<Endpoint>,
    pub logs: Option<Endpoint>,
    pub cache: Option<Endpoint>,
    /// The key cache manifests are signed and checked with
    /// (`cache.signing_key_source`); `None` leaves them unsigned.
    pub signing: Option<Arc<SigningKey>>,
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(path),
    }
}

/// The endpoint of a surface; `None` for a local one.
pub(crate) fn endpoint_for(role: &str, s: &Surface) -> Result<Option<Endpoint>> {
    match s.kind {
        SurfaceType::Sqlite => Ok(None),
        SurfaceType::Filesystem => {
            let raw = s.path.as_deref().unwrap_or_default();
            let dir = expand_home(raw);
            if !dir.is_absolute() {
                bail!("{role}: filesystem path `{raw}` must be absolute (or start with ~/)");
            }
            Ok(Some(Endpoint::objects(ObjectStoreTarget::filesystem(dir))))
        }
        SurfaceType::S3 | SurfaceType::Gcs | SurfaceType::AzureBlob => {
            Ok(Some(Endpoint::objects(cloud_target(role, s)?)))
        }
        other => bail!(
            "{role}: type {} is recognized but not implemented in this build; use --sw-local-only to run locally",
            other.as_str()
        ),
    }
}

impl Remote {
    /// Builds the endpoints of a (validated, runnable) profile.
    pub fn from_profile(def: &ProfileDef) -> Result<Remote> {
        let one = |role: &str, s: &Option<Surface>| -> Result<Option<Endpoint>> {
            let e = match s {
                Some(s) => endpoint_for(role, s)?,
                None => None,
            };
            Ok(e.map(|e| Endpoint {
                target: with_faults(e.target),
                ..e
            }))
        };
        Ok(Remote {
            state: one("state", &def.state)?,
            logs: one("logs", &def.logs)?,
            cache: one("cache", &def.cache)?,
            signing: match def
                .cache
                .as_ref()
                .and_then(|c| c.signing_key_source.as_deref())
            {
                Some(src) => Some(Arc::new(SigningKey::from_source(src, "cache")?)),
                None => None,
            },
        })
    }

    /// Each view records in `home`'s outbox what reads learn about its
    /// connectivity (`sync status` then shows a target just read from as
    /// online).
    pub fn observing_reads(self, home: &std::path::Path) -> Remote {
        let wrap = |e: Option<Endpoint>| -> Option<Endpoint> {
            e.map(|e| Endpoint {
                view: Arc::new(ReadsObserved::new(e.view, home)),
                ..e
            })
        };
        Remote {
            state: wrap(self.state),
            logs: wrap(self.logs),
            cache: wrap(self.cache),
            signing: self.signing,
        }
    }

    pub fn is_local(&self) -> bool {
        self.state.is_none() && self.logs.is_none() && self.cache.is_none()
    }

    /// The distinct targets, in state, logs, cache order.
    pub fn targets(&self) -> Vec<Arc<dyn Target>> {
        let mut out: Vec<Arc<dyn Target>> = Vec::new();
        for e in [&self.state, &self.logs, &self.cache].into_iter().flatten() {
            if !out.iter().any(|o| o.id() == e.id()) {
                out.push(Arc::clone(&e.target));
            }
        }
        out
    }

    pub fn run_targets(&self) -> RunTargets {
        let id = |e: &Option<Endpoint>| e.as_ref().map(|e| e.id().to_string());
        RunTargets {
            state: id(&self.state),
            logs: id(&self.logs),
            cache: id(&self.cache),
        }
    }
}

/// Fault injection and auditing for end-to-end tests of real processes:
/// `SPARKWING_SYNC_FAULTS=auth` makes every delivery fail as refused
/// credentials, `=down` as unreachable; `SPARKWING_SYNC_JOURNAL=FILE`
/// appends every delivered object key to FILE. Only in builds with the
/// `test-hooks` feature (`cargo test` turns it on); a user's build ignores
/// both variables.
#[cfg(not(feature = "test-hooks"))]
fn with_faults(t: Arc<dyn Target>) -> Arc<dyn Target> {
    t
}

#[cfg(feature = "test-hooks")]
fn with_faults(t: Arc<dyn Target>) -> Arc<dyn Target> {
    use sparkwing_sync::fault::{FaultTarget, JournalTarget};
    let t = match std::env::var_os("SPARKWING_SYNC_JOURNAL") {
        Some(path) => match JournalTarget::new(Arc::clone(&t), std::path::Path::new(&path)) {
            Ok(j) => Arc::new(j),
            Err(_) => t,
        },
        None => t,
    };
    let Ok(mode) = std::env::var("SPARKWING_SYNC_FAULTS") else {
        return t;
    };
    let f = FaultTarget::new(t);
    match mode.as_str() {
        "auth" => f.fail_next(usize::MAX, sparkwing_outbox::ErrorClass::Auth, None),
        "down" => f.set_down(true),
        _ => {}
    }
    Arc::new(f)
}

/// An object store's endpoint: the profile's `endpoint:` (checked when the
/// profile loaded), else the first of the environment variables `vars` that
/// is set (`SPARKWING_S3_ENDPOINT`, then object_store's own `AWS_ENDPOINT_URL`
/// and `AWS_ENDPOINT`, which its client would otherwise honour silently;
/// `SPARKWING_GCS_ENDPOINT`), checked here and named when it is not an
/// http(s) URL. Whatever it is, it goes into the target's id, so entries
/// queued for one server are never delivered to another.
fn endpoint_of(role: &str, s: &Surface, vars: &[&str]) -> Result<Option<String>> {
    if let Some(e) = s.endpoint.clone().filter(|e| !e.trim().is_empty()) {
        return Ok(Some(e));
    }
    let Some((var, e)) = vars.iter().find_map(|v| {
        std::env::var(v)
            .ok()
            .filter(|e| !e.trim().is_empty())
            .map(|e| (*v, e))
    }) else {
        return Ok(None);
    };
    crate::profile::names::check_endpoint(&e).map_err(|why| {
        anyhow::anyhow!(
            "{role}: {var} {} is not an http(s) URL with a host: {why}; fix or unset {var} (e.g. http://127.0.0.1:9000)",
            crate::profile::shown_endpoint(&e)
        )
    })?;
    Ok(Some(e))
}

/// A yes/no environment variable: unset, empty, `0`, `false` or `no` is no.
fn env_flag(var: &str) -> Result<bool> {
    match std::env::var(var) {
        Err(_) => Ok(false),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "no" => Ok(false),
            "1" | "true" | "yes" => Ok(true),
            _ => bail!(
                "{var}={:?} is not understood; set it to 1 or true (or unset it)",
                crate::util::one_line(&v, 40)
            ),
        },
    }
}

/// GCS credentials, read the way Google's tools read them, each checked
/// here so that a wrong file names its variable at run start:
/// - `GOOGLE_SERVICE_ACCOUNT` (or `GOOGLE_SERVICE_ACCOUNT_PATH`): a service
///   account key file; `GOOGLE_SERVICE_ACCOUNT_KEY`: the same JSON inline.
///   Such a key may also carry object_store's `gcs_base_url` and
///   `disable_oauth` (an emulator).
/// - `GOOGLE_APPLICATION_CREDENTIALS`: application default credentials, a
///   file with `"type": "service_account"` or `"authorized_user"` (gcloud's);
///   a key file without `type` is read as a service account key.
/// - neither: gcloud's `~/.config/gcloud/application_default_credentials.json`
///   if present, or the VM's metadata server when
///   `SPARKWING_GCS_INSTANCE_CREDENTIALS=1`.
fn gcs_credentials(
    role: &str,
    b: sparkwing_sync::object_store::gcp::GoogleCloudStorageBuilder,
) -> Result<(
    sparkwing_sync::object_store::gcp::GoogleCloudStorageBuilder,
    Option<String>,
)> {
    let parse = |var: &str, shown: &str, text: &str| -> Result<serde_json::Value> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if v.is_object() => Ok(v),
            _ => bail!("{role}: type gcs: {var} names {shown}, which is not a JSON credentials file; point {var} at a service account key (.json)"),
        }
    };
    let json_file = |var: &str, path: &str| -> Result<serde_json::Value> {
        let shown = crate::util::one_line(path, 200);
        let unreadable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("{role}: type gcs: {var} names {shown}, which cannot be read ({e}); point {var} at a JSON credentials file")
        };
        // Never block on a FIFO or a device: a regular file only, opened
        // without waiting, and checked again once open.
        let f = std::os::unix::fs::OpenOptionsExt::custom_flags(
            std::fs::OpenOptions::new().read(true),
            libc::O_NONBLOCK,
        )
        .open(path)
        .map_err(|e| unreadable(&e))?;
        if !f.metadata().map_err(|e| unreadable(&e))?.is_file() {
            return Err(unreadable(&"it is not a regular file"));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut text).map_err(
            |e| {
                anyhow::anyhow!("{role}: type gcs: {var} names {shown}, which cannot be read ({e})")
            },
        )?;
        parse(var, &shown, &text)
    };
    // A service account key: either a real one (an email and a private
    // key) or an emulator's (`disable_oauth`). Its `gcs_base_url`, if any,
    // decides whether plain http is allowed.
    let service_key = |var: &str, v: &serde_json::Value| -> Result<Option<String>> {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str());
        let oauth_off = v.get("disable_oauth").and_then(|x| x.as_bool()) == Some(true);
        let fields = ["private_key", "private_key_id", "client_email"];
        let missing: Vec<&str> = fields
            .into_iter()
            .filter(|k| match text(k) {
                None => true,
                // An emulator's key may leave them empty.
                Some(x) => x.is_empty() && !oauth_off && *k != "private_key_id",
            })
            .collect();
        if !missing.is_empty() {
            bail!(
                "{role}: type gcs: the service account key in {var} lacks {} (an emulator's key may leave them empty with \"disable_oauth\": true); download a key for the service account, or fix {var}",
                missing.join(", ")
            );
        }
        Ok(text("gcs_base_url").map(str::to_string))
    };
    for var in ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH"] {
        if let Some(path) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            let base = service_key(var, &json_file(var, &path)?)?;
            return Ok((b, base));
        }
    }
    let var = "GOOGLE_SERVICE_ACCOUNT_KEY";
    if let Some(text) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        let base = service_key(var, &parse(var, "its value", &text)?)?;
        return Ok((b, base));
    }
    let var = "GOOGLE_APPLICATION_CREDENTIALS";
    if let Some(path) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        let v = json_file(var, &path)?;
        return match v.get("type").and_then(|t| t.as_str()) {
            Some("service_account") => Ok((b, service_key(var, &v)?)),
            Some("authorized_user") => Ok((b, None)),
            // A key file without `type` (an emulator's): a service account key.
            None => {
                let base = service_key(var, &v)?;
                Ok((b.with_service_account_path(path), base))
            }
            Some(other) => bail!(
                "{role}: type gcs: {var} is a credentials file of type {:?}, which this build cannot use; use a service account key or gcloud's application default credentials",
                crate::util::one_line(other, 40)
            ),
        };
    }
    let gcloud = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".config/gcloud/application_default_credentials.json"));
    if gcloud.is_some_and(|p| p.is_file()) || env_flag("SPARKWING_GCS_INSTANCE_CREDENTIALS")? {
        return Ok((b, None));
    }
    bail!(
        "{role}: type gcs found no credentials: export GOOGLE_APPLICATION_CREDENTIALS (a service account key file) \
         or GOOGLE_SERVICE_ACCOUNT; on a GCE VM set SPARKWING_GCS_INSTANCE_CREDENTIALS=1; \
         for an emulator without authentication set `anonymous: true` (or SPARKWING_GCS_ANONYMOUS=1)"
    )
}

/// A client that could not be built from the profile and the environment:
/// the error (scrubbed) and the variables it was built from, to check.
fn built_wrong(role: &str, t: &str, e: &dyn std::fmt::Display, vars: &[&str]) -> anyhow::Error {
    let set: Vec<&str> = vars.iter().copied().filter(|v| env_set(&[v])).collect();
    let from = if set.is_empty() {
        format!("check the `{role}:` surface of the profile")
    } else {
        format!(
            "check {} (and the `{role}:` surface of the profile)",
            set.join(", ")
        )
    };
    anyhow::anyhow!(
        "{role}: type {t}: the client could not be set up: {}; {from}",
        sparkwing_sync::redact::scrub(e.to_string().trim_end_matches('.'))
    )
}

fn env_set(names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| std::env::var_os(n).is_some_and(|v| !v.is_empty()))
}

fn cloud_target(role: &str, s: &Surface) -> Result<ObjectStoreTarget> {
    use sparkwing_sync::object_store::aws::AmazonS3Builder;
    use sparkwing_sync::object_store::azure::MicrosoftAzureBuilder;
    use sparkwing_sync::object_store::gcp::GoogleCloudStorageBuilder;
    sparkwing_sync::object::install_crypto_provider();
    let bucket = s.bucket.clone().unwrap_or_default();
    let prefix = s.prefix.clone().unwrap_or_default();
    let t = s.kind.as_str();
    let store: Arc<dyn sparkwing_sync::object_store::ObjectStore>;
    let seen = sparkwing_sync::object::RetryAfter::default();
    let connector = || sparkwing_sync::object::RetryAfterConnector::new(seen.clone());
    let id: String;
    match s.kind {
        SurfaceType::S3 => {
            let endpoint = endpoint_of(
                role,
                s,
                &["SPARKWING_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"],
            )?;
            let region = s
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .filter(|r| !r.is_empty());
            let Some(region) = region else {
                bail!("{role}: type s3 needs a region: set `region:` in the profile or export AWS_REGION");
            };
            let creds = env_set(&["AWS_ACCESS_KEY_ID"]) && env_set(&["AWS_SECRET_ACCESS_KEY"])
                || env_set(&[
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                ])
                || env_set(&["SPARKWING_S3_INSTANCE_CREDENTIALS"]);
            if !creds {
                bail!(
                    "{role}: type s3 found no credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                     (or run with web-identity or container credentials; on an EC2 instance role set SPARKWING_S3_INSTANCE_CREDENTIALS=1)"
                );
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&bucket)
                .with_region(&region)
                .with_retry(sparkwing_sync::object::client_retry());
            let allow_http = endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
            if let Some(ep) = &endpoint {
                b = b.with_endpoint(ep);
            }
            b = b
                .with_client_options(sparkwing_sync::object::client_options(allow_http))
                .with_http_connector(connector());
            store = Arc::new(b.build().map_err(|e| {
                built_wrong(
                    role,
                    "s3",
                    &e,
                    &[
                        "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY",
                        "AWS_SESSION_TOKEN",
                        "AWS_REGION",
                        "SPARKWING_S3_ENDPOINT",
                    ],
                )
            })?);
            let at = endpoint
                .map(|e| format!("@{}", crate::profile::redact_url(&e)))
                .unwrap_or_default();
            id = format!("s3:{bucket}/{prefix}{at}");
        }
        SurfaceType::Gcs => {
            let endpoint = endpoint_of(role, s, &["SPARKWING_GCS_ENDPOINT"])?;
            let anonymous = match s.anonymous {
                Some(a) => a,
                None => env_flag("SPARKWING_GCS_ANONYMOUS")?,
            };
            let mut b = GoogleCloudStorageBuilder::from_env();
            let mut key_base = None;
            if anonymous {
                // No credentials of any kind are read or sent: reads skip
                // signing, and writes (which object_store signs regardless)
                // carry an empty token instead of asking a metadata server.
                use sparkwing_sync::object_store::gcp::GcpCredential;
                use sparkwing_sync::object_store::StaticCredentialProvider;
                b = GoogleCloudStorageBuilder::new()
                    .with_skip_signature(true)
                    .with_credentials(Arc::new(StaticCredentialProvider::new(GcpCredential {
                        bearer: String::new(),
                    })));
            } else {
                (b, key_base) = gcs_credentials(role, b)?;
            }
            // The endpoint, else the key's emulator URL, decides on http.
            let allow_http = endpoint
                .as_deref()
                .or(key_base.as_deref())
                .is_some_and(|e| e.starts_with("http://"));
            if let Some(ep) = &endpoint {
                b = b.with_base_url(ep.trim_end_matches('/'));
            }
            let b = b
                .with_http_connector(connector())
                .with_bucket_name(&bucket)
                .with_retry(sparkwing_sync::object::client_retry())
                .with_client_options(sparkwing_sync::object::client_options(allow_http));
            store = Arc::new(b.build().map_err(|e| {
                built_wrong(
                    role,
                    "gcs",
                    &e,
                    &[
                        "GOOGLE_SERVICE_ACCOUNT",
                        "GOOGLE_SERVICE_ACCOUNT_KEY",
                        "GOOGLE_APPLICATION_CREDENTIALS",
                        "SPARKWING_GCS_ENDPOINT",
                    ],
                )
            })?);
            let at = endpoint
                .or(key_base)
                .map(|e| format!("@{}", crate::profile::redact_url(&e)))
                .unwrap_or_default();
            id = format!("gcs:{bucket}/{prefix}{at}");
        }
        SurfaceType::AzureBlob => {
            let emulator = env_flag("AZURE_STORAGE_USE_EMULATOR")?;
            // Under the emulator, object_store's own default: Azurite's
            // well-known development account.
            let account = s
                .account
                .clone()
                .or_else(|| std::env::var("AZURE_STORAGE_ACCOUNT_NAME").ok())
                .filter(|a| !a.is_empty())
                .or_else(|| emulator.then(|| "devstoreaccount1".to_string()));
            let Some(account) = account else {
                bail!("{role}: type azure-blob needs a storage account: set `account:` in the profile or export AZURE_STORAGE_ACCOUNT_NAME");
            };
            if !env_set(&[
                "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_ACCESS_KEY",
                "AZURE_STORAGE_SAS_KEY",
                "AZURE_STORAGE_TOKEN",
                "AZURE_CLIENT_SECRET",
                "AZURE_FEDERATED_TOKEN_FILE",
            ]) && !emulator
            {
                bail!("{role}: type azure-blob found no credentials: export AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, or a service principal's AZURE_CLIENT_SECRET)");
            }
            let b = MicrosoftAzureBuilder::from_env()
                .with_http_connector(connector())
                .with_account(&account)
                .with_container_name(&bucket)
                .with_retry(sparkwing_sync::object::client_retry())
                .with_client_options(sparkwing_sync::object::client_options(false));
            store = Arc::new(b.build().map_err(|e| {
                built_wrong(
                    role,
                    "azure-blob",
                    &e,
                    &[
                        "AZURE_STORAGE_ACCOUNT_KEY",
                        "AZURE_STORAGE_ACCESS_KEY",
                        "AZURE_STORAGE_SAS_KEY",
                        "AZURE_STORAGE_TOKEN",
                        "AZURE_CLIENT_ID",
                        "AZURE_CLIENT_SECRET",
                        "AZURE_TENANT_ID",
                        "AZURE_FEDERATED_TOKEN_FILE",
                        "AZURITE_BLOB_STORAGE_URL",
                    ],
                )
            })?);
            // The emulator's address is part of the target (object_store's
            // default when unset).
            let at = if emulator {
                let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
                    .ok()
                    .filter(|u| !u.trim().is_empty())
                    .unwrap_or_else(|| "http://127.0.0.1:10000".into());
                format!("@{}", crate::profile::redact_url(&url))
            } else {
                String::new()
            };
            id = format!("azure-blob:{account}/{bucket}/{prefix}{at}");
        }
        _ => bail!("{role}: type {t} is not an object store"),
    }
    Ok(ObjectStoreTarget::new(id, store, &prefix)
        .with_retry_after(seen)
        .with_content_types())
}

/// The remote targets of a resolved profile, or `None` for a local one.
pub fn remote_of(resolved: &Resolved) -> Result<Option<Remote>> {
    if resolved.local_only.is_some() {
        return Ok(None);
    }
    resolved.check_runnable()?;
    let remote = Remote::from_profile(&resolved.def)?.observing_reads(&crate::util::home_dir()?);
    Ok(if remote.is_local() {
        None
    } else {
        Some(remote)
    })
}
