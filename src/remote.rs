//! The remote side of a profile: one sync [`Target`] per surface that is
//! not local, and the run's target addresses.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use sparkwing_sync::fault::{FaultTarget, JournalTarget};
use sparkwing_sync::{ObjectStoreTarget, Target};

use crate::profile::{ProfileDef, Surface, SurfaceType};
use crate::signing::SigningKey;
use crate::store::RunTargets;

/// The targets of a profile's surfaces; `None` where a surface is local.
#[derive(Debug, Default, Clone)]
pub struct Remote {
    pub state: Option<Arc<dyn Target>>,
    pub logs: Option<Arc<dyn Target>>,
    pub cache: Option<Arc<dyn Target>>,
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

pub(crate) fn target_for(role: &str, s: &Surface) -> Result<Option<Arc<dyn Target>>> {
    match s.kind {
        SurfaceType::Sqlite => Ok(None),
        SurfaceType::Filesystem => {
            let raw = s.path.as_deref().unwrap_or_default();
            let dir = expand_home(raw);
            if !dir.is_absolute() {
                bail!("{role}: filesystem path `{raw}` must be absolute (or start with ~/)");
            }
            Ok(Some(Arc::new(ObjectStoreTarget::filesystem(dir))))
        }
        SurfaceType::S3 | SurfaceType::Gcs | SurfaceType::AzureBlob => Ok(Some(cloud_target(role, s)?)),
        other => bail!(
            "{role}: type {} is recognized but not implemented in this build; use --sw-local-only to run locally",
            other.as_str()
        ),
    }
}

impl Remote {
    /// Builds the targets of a (validated, runnable) profile.
    pub fn from_profile(def: &ProfileDef) -> Result<Remote> {
        let one = |role: &str, s: &Option<Surface>| -> Result<Option<Arc<dyn Target>>> {
            let t = match s {
                Some(s) => target_for(role, s)?,
                None => None,
            };
            Ok(t.map(with_faults))
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

    pub fn is_local(&self) -> bool {
        self.state.is_none() && self.logs.is_none() && self.cache.is_none()
    }

    /// The distinct targets, in state, logs, cache order.
    pub fn targets(&self) -> Vec<Arc<dyn Target>> {
        let mut out: Vec<Arc<dyn Target>> = Vec::new();
        for t in [&self.state, &self.logs, &self.cache].into_iter().flatten() {
            if !out.iter().any(|o| o.id() == t.id()) {
                out.push(Arc::clone(t));
            }
        }
        out
    }

    pub fn run_targets(&self) -> RunTargets {
        let id = |t: &Option<Arc<dyn Target>>| t.as_ref().map(|t| t.id().to_string());
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
/// appends every delivered object key to FILE. Not for production use.
fn with_faults(t: Arc<dyn Target>) -> Arc<dyn Target> {
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

/// The S3 endpoint: the profile's `endpoint:` (checked when the profile
/// loaded), else `SPARKWING_S3_ENDPOINT`, checked here and named when it is
/// not an http(s) URL.
fn s3_endpoint(role: &str, s: &Surface) -> Result<Option<String>> {
    if let Some(e) = s.endpoint.clone().filter(|e| !e.trim().is_empty()) {
        return Ok(Some(e));
    }
    let Some(e) = std::env::var("SPARKWING_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(None);
    };
    crate::profile::names::check_endpoint(&e).map_err(|why| {
        anyhow::anyhow!(
            "{role}: SPARKWING_S3_ENDPOINT {} is not an http(s) URL with a host: {why}; fix or unset SPARKWING_S3_ENDPOINT (e.g. http://127.0.0.1:9000)",
            crate::profile::shown_endpoint(&e)
        )
    })?;
    Ok(Some(e))
}

fn env_set(names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| std::env::var_os(n).is_some_and(|v| !v.is_empty()))
}

fn cloud_target(role: &str, s: &Surface) -> Result<Arc<dyn Target>> {
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
            let endpoint = s3_endpoint(role, s)?;
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
            store = Arc::new(
                b.build()
                    .map_err(|e| anyhow::anyhow!("{role}: type s3: {e}"))?,
            );
            let at = endpoint
                .map(|e| format!("@{}", crate::profile::redact_url(&e)))
                .unwrap_or_default();
            id = format!("s3:{bucket}/{prefix}{at}");
        }
        SurfaceType::Gcs => {
            if !env_set(&[
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_PATH",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                "GOOGLE_APPLICATION_CREDENTIALS",
            ]) {
                bail!("{role}: type gcs found no credentials: export GOOGLE_APPLICATION_CREDENTIALS (a service account key file)");
            }
            let b = GoogleCloudStorageBuilder::from_env()
                .with_http_connector(connector())
                .with_bucket_name(&bucket)
                .with_retry(sparkwing_sync::object::client_retry())
                .with_client_options(sparkwing_sync::object::client_options(false));
            store = Arc::new(
                b.build()
                    .map_err(|e| anyhow::anyhow!("{role}: type gcs: {e}"))?,
            );
            id = format!("gcs:{bucket}/{prefix}");
        }
        SurfaceType::AzureBlob => {
            let account = s
                .account
                .clone()
                .or_else(|| std::env::var("AZURE_STORAGE_ACCOUNT_NAME").ok())
                .filter(|a| !a.is_empty());
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
                "AZURE_STORAGE_USE_EMULATOR",
            ]) {
                bail!("{role}: type azure-blob found no credentials: export AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, or a service principal's AZURE_CLIENT_SECRET)");
            }
            let b = MicrosoftAzureBuilder::from_env()
                .with_http_connector(connector())
                .with_account(&account)
                .with_container_name(&bucket)
                .with_retry(sparkwing_sync::object::client_retry())
                .with_client_options(sparkwing_sync::object::client_options(false));
            store = Arc::new(
                b.build()
                    .map_err(|e| anyhow::anyhow!("{role}: type azure-blob: {e}"))?,
            );
            id = format!("azure-blob:{account}/{bucket}/{prefix}");
        }
        _ => bail!("{role}: type {t} is not an object store"),
    }
    Ok(Arc::new(
        ObjectStoreTarget::new(id, store, &prefix).with_retry_after(seen),
    ))
}
