//! Profiles: where a run's state, cache and logs live.
//!
//! A profile is found by name in the user's `profiles.yaml` first, then in
//! the project's `profiles:`; it is selected by `--profile`, else the
//! pipeline's `profile:`, else the project's `defaults.profile`, else the
//! built-in `laptop` (Mode 1). Nothing is selected from the environment.
//! `--sw-local-only` pins one run to the local layout whatever resolves.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::yaml::{self, UniqueMap};

pub mod names;

/// The built-in profile's name.
pub const BUILTIN: &str = "laptop";

/// One profile as written in YAML.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileDef {
    #[serde(default)]
    pub state: Option<Surface>,
    #[serde(default)]
    pub cache: Option<Surface>,
    #[serde(default)]
    pub logs: Option<Surface>,
    #[serde(default)]
    pub controller: Option<Controller>,
}

/// One storage surface (`state`, `cache` or `logs`) of a profile.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Surface {
    #[serde(rename = "type")]
    pub kind: SurfaceType,
    pub path: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
    pub url: Option<String>,
    pub url_source: Option<String>,
    /// `env:VAR`: sign cache manifests with the key in VAR and accept only
    /// manifests signed with it (cache surfaces only; see `signing`).
    pub signing_key_source: Option<String>,
    /// `true`: send no credentials at all (an emulator such as
    /// fake-gcs-server; gcs surfaces only).
    pub anonymous: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SurfaceType {
    Sqlite,
    Filesystem,
    S3,
    Gcs,
    AzureBlob,
    Postgres,
}

impl SurfaceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SurfaceType::Sqlite => "sqlite",
            SurfaceType::Filesystem => "filesystem",
            SurfaceType::S3 => "s3",
            SurfaceType::Gcs => "gcs",
            SurfaceType::AzureBlob => "azure-blob",
            SurfaceType::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    pub url: String,
    pub token: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserFile {
    #[serde(default)]
    profiles: UniqueMap<ProfileDef>,
    /// The host-local gate: at most this many runs at once.
    #[serde(default)]
    max_runs: Option<u32>,
    /// The local cache's bounds.
    #[serde(default)]
    cache: Option<UserCache>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserCache {
    /// The local cache's size limit (`10GiB`, `500MB`): least recently
    /// used entries are evicted past it.
    #[serde(default)]
    max_size: Option<String>,
}

/// The user profile file, parsed, with its path; `None` when it is absent,
/// unreadable or empty (an unreadable file is reported by profile
/// resolution, with its origin).
fn user_file() -> Result<Option<(PathBuf, UserFile)>> {
    let (path, _) = user_file_path();
    let Ok(text) = yaml::read_file(&path) else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let file: UserFile = yaml::parse(&path, &text).map_err(anyhow::Error::msg)?;
    Ok(Some((path, file)))
}

/// `cache: { max_size: }` from the user profile file, in bytes, when set.
pub fn user_cache_max_size() -> Result<Option<u64>> {
    let Some((path, file)) = user_file()? else {
        return Ok(None);
    };
    match file.cache.and_then(|c| c.max_size) {
        None => Ok(None),
        Some(s) => crate::util::parse_size(&s)
            .map(Some)
            .map_err(|why| anyhow::anyhow!("{}: cache.max_size: {why}", path.display())),
    }
}

/// `max_runs:` from the user profile file, when set (and valid).
pub fn user_max_runs() -> Result<Option<u32>> {
    let Some((path, file)) = user_file()? else {
        return Ok(None);
    };
    if file.max_runs == Some(0) {
        bail!("{}: max_runs must be at least 1", path.display());
    }
    Ok(file.max_runs)
}

/// Where a profile definition came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    User(PathBuf),
    Project(PathBuf),
    Builtin,
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::User(p) => format!("user file {}", p.display()),
            Origin::Project(p) => format!("project file {}", p.display()),
            Origin::Builtin => "built in".into(),
        }
    }
}

/// Why a profile was selected.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Flag,
    Pipeline(String),
    ProjectDefault,
    Builtin,
}

impl Source {
    fn as_str(&self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Pipeline(_) => "pipeline",
            Source::ProjectDefault => "project-default",
            Source::Builtin => "builtin",
        }
    }
}

/// What the user asked for, raw.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub flag: Option<&'a str>,
    pub pipeline: Option<&'a str>,
    pub local_only_flag: bool,
}

/// The outcome of resolution, with everything `sparkwing profile` reports.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub source: Source,
    pub origin: Origin,
    pub def: ProfileDef,
    pub why: String,
    /// `Some(reason)` when the run is pinned to the local layout.
    pub local_only: Option<String>,
    /// The profile that would have applied without `--sw-local-only`.
    pub shadowed: Option<Box<Resolved>>,
    /// Every place looked at, in order, with what was found there.
    pub considered: Vec<String>,
    pub user_file: PathBuf,
}

/// Which variable the user's profile file path was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserFileFrom {
    /// `$SPARKWING_PROFILES`, set: the file must exist.
    Profiles,
    /// The default under `$XDG_CONFIG_HOME`.
    XdgConfigHome,
    /// The default under `$HOME/.config`.
    Home,
}

impl UserFileFrom {
    /// How an error names the origin: `from $SPARKWING_PROFILES`.
    fn describe(self) -> &'static str {
        match self {
            UserFileFrom::Profiles => "from $SPARKWING_PROFILES",
            UserFileFrom::XdgConfigHome => "the default under $XDG_CONFIG_HOME",
            UserFileFrom::Home => "the default under $HOME/.config",
        }
    }

    fn fix(self) -> &'static str {
        match self {
            UserFileFrom::Profiles => "fix the path or unset SPARKWING_PROFILES",
            _ => "fix the file or move it aside",
        }
    }
}

/// The path of the user's profile file: `$SPARKWING_PROFILES`, else
/// `$XDG_CONFIG_HOME/sparkwing/profiles.yaml`, else `~/.config/sparkwing/profiles.yaml`.
pub fn user_file_path() -> (PathBuf, UserFileFrom) {
    if let Some(p) = std::env::var_os("SPARKWING_PROFILES").filter(|v| !v.is_empty()) {
        return (PathBuf::from(p), UserFileFrom::Profiles);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return (
            PathBuf::from(x).join("sparkwing/profiles.yaml"),
            UserFileFrom::XdgConfigHome,
        );
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    (
        home.join(".config/sparkwing/profiles.yaml"),
        UserFileFrom::Home,
    )
}

/// Parses and validates a user profile file's text.
pub fn parse_user_file(path: &Path, text: &str) -> Result<UniqueMap<ProfileDef>> {
    let file: UserFile = if text.trim().is_empty() {
        UserFile::default()
    } else {
        yaml::parse(path, text).map_err(anyhow::Error::msg)?
    };
    for (name, def) in file.profiles.iter() {
        validate(path, name, def)?;
    }
    Ok(file.profiles)
}

fn load_user_file() -> Result<(PathBuf, Option<UniqueMap<ProfileDef>>)> {
    let (path, from) = user_file_path();
    match yaml::read_file(&path) {
        Ok(text) => Ok((path.clone(), Some(parse_user_file(&path, &text)?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && from != UserFileFrom::Profiles => {
            Ok((path, None))
        }
        Err(e) => Err(anyhow!(
            "reading profile file {} ({}): {e}; {}",
            path.display(),
            from.describe(),
            from.fix()
        )),
    }
}

/// Checks one profile's meaning (the YAML shape was checked by the parser).
pub fn validate(file: &Path, name: &str, def: &ProfileDef) -> Result<()> {
    let at = format!("{}: profile \"{name}\"", file.display());
    if let Some(c) = &def.controller {
        if def.state.is_some() || def.cache.is_some() || def.logs.is_some() {
            bail!("{at}: a controller profile routes state, cache and logs through the controller; remove state:, cache: and logs:");
        }
        if !(c.url.starts_with("https://") || c.url.starts_with("http://")) {
            bail!("{at}: controller.url must start with https:// or http://");
        }
        if c.token.trim().is_empty() {
            bail!("{at}: controller.token is empty; set the token the controller issued you");
        }
        return Ok(());
    }
    if def.state.is_none() && def.cache.is_none() && def.logs.is_none() {
        bail!("{at}: the profile is empty; give it state:, cache: and logs: surfaces, or a controller: block");
    }
    for (role, s) in surfaces(def) {
        validate_surface(&at, role, s)?;
    }
    Ok(())
}

fn surfaces(def: &ProfileDef) -> Vec<(&'static str, &Surface)> {
    [
        ("state", &def.state),
        ("cache", &def.cache),
        ("logs", &def.logs),
    ]
    .into_iter()
    .filter_map(|(r, s)| s.as_ref().map(|s| (r, s)))
    .collect()
}

/// `at` names the file and the profile; errors add the surface and field.
fn validate_surface(profile_at: &str, role: &str, s: &Surface) -> Result<()> {
    use SurfaceType::*;
    let at = &format!("{profile_at}: {role}");
    let t = s.kind.as_str();
    let allowed: &[&str] = match s.kind {
        Sqlite => &[],
        Filesystem => &["path"],
        S3 => &["bucket", "prefix", "endpoint", "region"],
        Gcs => &["bucket", "prefix", "endpoint", "anonymous"],
        AzureBlob => &["bucket", "prefix", "account"],
        Postgres => &["url", "url_source"],
    };
    let given = [
        ("path", &s.path),
        ("bucket", &s.bucket),
        ("prefix", &s.prefix),
        ("endpoint", &s.endpoint),
        ("region", &s.region),
        ("account", &s.account),
        ("url", &s.url),
        ("url_source", &s.url_source),
    ];
    if s.anonymous.is_some() && s.kind != Gcs {
        bail!("{at}: `anonymous` does not apply to type {t}; it is for gcs surfaces pointed at an emulator");
    }
    if s.signing_key_source.is_some() && (role != "cache" || matches!(s.kind, Sqlite | Postgres)) {
        bail!("{at}: `signing_key_source` applies to a remote cache surface only (cache: with type filesystem, s3, gcs or azure-blob)");
    }
    if let Some(src) = &s.signing_key_source {
        env_var_of(src).ok_or_else(|| {
            anyhow!("{at}: signing_key_source `{src}` is not understood; write `signing_key_source: env:VAR`")
        })?;
    }
    for (key, value) in given {
        if value.is_some() && !allowed.contains(&key) {
            let hint = if allowed.is_empty() {
                "it takes no other keys".to_string()
            } else {
                format!("it takes {}", allowed.join(", "))
            };
            bail!("{at}: `{key}` does not apply to type {t}; {hint}");
        }
    }
    let nonempty = |v: &Option<String>| v.as_deref().is_some_and(|x| !x.trim().is_empty());
    match s.kind {
        Sqlite | Postgres if role != "state" => {
            bail!("{at}: type {t} holds run state only; use filesystem, s3, gcs or azure-blob for {role}")
        }
        Filesystem if !nonempty(&s.path) => bail!("{at}: type filesystem needs `path:` (a directory)"),
        Filesystem
            if !s.path.as_deref().is_some_and(|p| p.starts_with('/') || p.starts_with("~/")) =>
        {
            bail!("{at}: filesystem path must be absolute (or start with ~/)")
        }
        S3 | Gcs | AzureBlob if !nonempty(&s.bucket) => {
            bail!("{at}: type {t} needs `bucket:`")
        }
        Postgres => match (&s.url, &s.url_source) {
            (Some(_), Some(_)) => bail!("{at}: set exactly one of `url` or `url_source`, not both"),
            (None, None) => bail!(
                "{at}: type postgres needs `url:` or `url_source: env:VAR` (keeps the DSN out of the file)"
            ),
            (Some(u), None) if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) => {
                bail!("{at}: url must start with postgres:// or postgresql://")
            }
            (None, Some(src)) => {
                env_var_of(src).ok_or_else(|| {
                    anyhow!("{at}: url_source `{src}` is not understood; write `url_source: env:VAR`")
                })?;
            }
            _ => {}
        },
        _ => {}
    }
    if let Some(bucket) = &s.bucket {
        names::check_bucket(s.kind, bucket).map_err(|why| {
            anyhow!(
                "{profile_at}: {role}.bucket \"{}\" {why}; fix `bucket:`",
                crate::util::cell(bucket)
            )
        })?;
    }
    if let Some(endpoint) = &s.endpoint {
        names::check_endpoint(endpoint).map_err(|why| {
            anyhow!(
                "{profile_at}: {role}.endpoint {} is not an http(s) URL with a host: {why}; fix `endpoint:` (e.g. https://s3.example.com or http://127.0.0.1:9000)",
                shown_endpoint(endpoint)
            )
        })?;
    }
    if let Some(prefix) = &s.prefix {
        names::check_prefix(prefix).map_err(|why| {
            anyhow!(
                "{profile_at}: {role}.prefix \"{}\" is not a valid prefix: {why}; fix `prefix:`",
                crate::util::cell(prefix)
            )
        })?;
    }
    Ok(())
}

/// An endpoint as an error may show it: quoted and redacted, or not at all
/// when it has no scheme (then it cannot be told where a secret would be).
pub fn shown_endpoint(raw: &str) -> String {
    // An `@` anywhere may be a password's end: such a value is not shown.
    if raw.contains("://") && !raw.contains('@') {
        format!("\"{}\"", crate::util::cell(&redact_url(raw)))
    } else {
        "(value not shown)".into()
    }
}

fn env_var_of(src: &str) -> Option<&str> {
    let var = src.strip_prefix("env:")?;
    let ok = !var.is_empty()
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !var.starts_with(|c: char| c.is_ascii_digit());
    ok.then_some(var)
}

/// The built-in `laptop` profile: state in SQLite, cache and logs on disk.
pub fn laptop() -> ProfileDef {
    ProfileDef::default()
}

/// What a project contributes to resolving a profile (see
/// `pipeline::resolve_profile`, which builds it from a loaded project).
#[derive(Clone)]
pub struct ProjectProfiles<'a> {
    /// The project file, as errors and `sparkwing profile` name it.
    pub file: &'a Path,
    /// Its `profiles:`.
    pub profiles: &'a UniqueMap<ProfileDef>,
    /// Its `defaults.profile`.
    pub default: Option<&'a str>,
    /// The requested pipeline's own `profile:`, or why it could not be
    /// looked up (an unknown pipeline: reported where resolution reports
    /// its errors, so `--sw-local-only` still shows it as a note).
    pub pipeline_profile: std::result::Result<Option<&'a str>, String>,
}

/// Resolves the profile for a request against the user file and project.
pub fn resolve(project: Option<ProjectProfiles<'_>>, req: &Request) -> Result<Resolved> {
    let local_only = if req.local_only_flag {
        Some("--sw-local-only".to_string())
    } else if std::env::var("SPARKWING_LOCAL_ONLY")
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    {
        Some("SPARKWING_LOCAL_ONLY=1".to_string())
    } else {
        None
    };
    let resolved = resolve_selected(project, req);
    match local_only {
        None => resolved,
        Some(reason) => {
            let (user_file, _) = user_file_path();
            let mut considered = vec![format!(
                "{reason}: state, cache and logs pinned to the local layout"
            )];
            let shadowed = match resolved {
                Ok(r) => {
                    considered.push(format!(
                        "without it, profile \"{}\" ({}) would apply",
                        r.name,
                        r.origin.describe()
                    ));
                    Some(Box::new(r))
                }
                Err(e) => {
                    considered.push(format!("without it, resolution fails: {e:#}"));
                    None
                }
            };
            Ok(Resolved {
                name: BUILTIN.into(),
                source: Source::Builtin,
                origin: Origin::Builtin,
                def: laptop(),
                why: format!("pinned to the local layout by {reason}"),
                local_only: Some(reason),
                shadowed,
                considered,
                user_file,
            })
        }
    }
}

fn resolve_selected(project: Option<ProjectProfiles<'_>>, req: &Request) -> Result<Resolved> {
    let project = project.as_ref();
    let (user_file, user) = load_user_file()?;
    let mut considered = Vec::new();
    match &user {
        Some(p) => considered.push(format!(
            "user file {}: {}",
            user_file.display(),
            list_names(p)
        )),
        None => considered.push(format!("user file {}: not found", user_file.display())),
    }
    let project_profiles = project.map(|p| p.profiles);
    if let Some(p) = project {
        considered.push(format!(
            "project file {}: {}",
            p.file.display(),
            list_names(p.profiles)
        ));
        for (name, def) in p.profiles.iter() {
            validate(p.file, name, def)?;
        }
    }
    let pipeline_profile = match project {
        Some(p) => p
            .pipeline_profile
            .clone()
            .map_err(|e| anyhow!(e))?
            .map(str::to_string),
        None => None,
    };
    let default_profile = project.and_then(|p| p.default.map(str::to_string));

    let (name, source, why) = if let Some(flag) = req.flag {
        (flag.to_string(), Source::Flag, format!("--profile {flag}"))
    } else if let Some(p) = pipeline_profile {
        let pl = req.pipeline.unwrap_or_default().to_string();
        considered.push("--profile: not given".into());
        (
            p.clone(),
            Source::Pipeline(pl.clone()),
            format!("pipeline `{pl}` sets profile: {p}"),
        )
    } else if let Some(d) = default_profile {
        considered.push("--profile: not given".into());
        if let Some(pl) = req.pipeline {
            considered.push(format!("pipeline `{pl}`: sets no profile:"));
        }
        (
            d.clone(),
            Source::ProjectDefault,
            format!("the project's defaults.profile is {d}"),
        )
    } else {
        considered.push("--profile: not given".into());
        if let Some(pl) = req.pipeline {
            considered.push(format!("pipeline `{pl}`: sets no profile:"));
        }
        considered.push("project defaults.profile: not set".into());
        considered.push(
            "SPARKWING_PROFILE and other environment variables are never used to select a profile"
                .into(),
        );
        (BUILTIN.to_string(), Source::Builtin, "no --profile, no pipeline profile: and no defaults.profile; the built-in laptop profile applies".to_string())
    };

    let from_user = user.as_ref().and_then(|u| u.get(&name).cloned());
    let from_project = project_profiles.and_then(|p| p.get(&name).cloned());
    let (def, origin) = match (from_user, from_project) {
        (Some(d), other) => {
            if other.is_some() {
                considered.push(format!(
                    "profile \"{name}\" is also defined in the project file; the user file's definition wins"
                ));
            }
            (d, Origin::User(user_file.clone()))
        }
        (None, Some(d)) => (
            d,
            Origin::Project(project.map(|p| p.file.to_path_buf()).unwrap_or_default()),
        ),
        (None, None) if name == BUILTIN => (laptop(), Origin::Builtin),
        (None, None) => {
            let mut known: Vec<String> = Vec::new();
            if let Some(u) = &user {
                known.extend(u.keys().cloned());
            }
            if let Some(p) = project_profiles {
                known.extend(p.keys().cloned());
            }
            known.push(BUILTIN.into());
            known.dedup();
            bail!(
                "profile \"{name}\" (selected by {why}) is not defined in {} nor in the project's profiles:; known profiles: {}. Define it with `profiles: {{ {name}: {{ state: ..., cache: ..., logs: ... }} }}` in {}",
                user_file.display(),
                known.join(", "),
                user_file.display()
            );
        }
    };
    Ok(Resolved {
        name,
        source,
        origin,
        def,
        why,
        local_only: None,
        shadowed: None,
        considered,
        user_file,
    })
}

fn list_names(p: &UniqueMap<ProfileDef>) -> String {
    if p.is_empty() {
        "no profiles".into()
    } else {
        format!(
            "profiles {}",
            p.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

impl Resolved {
    /// The deployment mode this profile puts a run in (1 to 4).
    pub fn mode(&self) -> u8 {
        mode_of(&self.def)
    }

    /// Checks what a run needs before it starts: secrets named by
    /// `url_source` are present, and every surface is one this build runs.
    pub fn check_runnable(&self) -> Result<()> {
        let at = format!("profile \"{}\" ({})", self.name, self.origin.describe());
        if self.def.controller.is_some() {
            bail!("{at}: controller: type controller is recognized but not implemented in this build; use --sw-local-only to run locally");
        }
        for (role, s) in surfaces(&self.def) {
            if let Some(var) = s.url_source.as_deref().and_then(env_var_of) {
                if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                    bail!("{at}: {role}.url_source env:{var} is unset; export {var} or use url:");
                }
            }
            if let Some(src) = &s.signing_key_source {
                crate::remote::signing::SigningKey::from_source(src, &format!("{at}: {role}"))?;
            }
        }
        for (role, s) in surfaces(&self.def) {
            if s.kind == SurfaceType::Postgres {
                bail!(
                    "{at}: {role}: type {} is recognized but not implemented in this build; use --sw-local-only to run locally",
                    s.kind.as_str()
                );
            }
        }
        Ok(())
    }

    /// The JSON form for `sparkwing profile -o json`, every secret redacted.
    pub fn to_json(&self, home: &Path) -> Value {
        let origin = match &self.origin {
            Origin::User(p) => json!({"kind": "user", "path": p}),
            Origin::Project(p) => json!({"kind": "project", "path": p}),
            Origin::Builtin => json!({"kind": "builtin"}),
        };
        json!({
            "name": self.name,
            "mode": self.mode(),
            "mode_name": mode_name(self.mode()),
            "source": self.source.as_str(),
            "why": self.why,
            "defined_in": origin,
            "local_only": self.local_only,
            "would_resolve_to": self.shadowed.as_ref().map(|s| json!({
                "name": s.name, "mode": s.mode(), "source": s.source.as_str(),
            })),
            "surfaces": surfaces_json(&self.def, home),
            "considered": self.considered,
            "user_file": self.user_file,
        })
    }
}

fn mode_of(def: &ProfileDef) -> u8 {
    if def.controller.is_some() {
        return 4;
    }
    if def
        .state
        .as_ref()
        .is_some_and(|s| s.kind == SurfaceType::Postgres)
    {
        return 3;
    }
    let remote = surfaces(def)
        .iter()
        .any(|(_, s)| s.kind != SurfaceType::Sqlite);
    if remote {
        2
    } else {
        1
    }
}

pub fn mode_name(mode: u8) -> &'static str {
    match mode {
        1 => "local",
        2 => "shared object storage",
        3 => "postgres + object storage",
        _ => "hosted controller",
    }
}

fn surfaces_json(def: &ProfileDef, home: &Path) -> Value {
    if let Some(c) = &def.controller {
        return json!({"controller": {"url": redact_url(&c.url), "token": "[redacted]"}});
    }
    let one = |role: &str, s: &Option<Surface>| -> Value {
        match s {
            None => {
                let (kind, path) = match role {
                    "state" => ("sqlite", home.join("state.db")),
                    "cache" => ("local", home.join("cas")),
                    _ => ("local", home.join("runs")),
                };
                json!({"type": kind, "path": path, "default": true})
            }
            Some(s) => {
                let mut m = serde_json::Map::new();
                m.insert("type".into(), json!(s.kind.as_str()));
                if s.kind == SurfaceType::Sqlite {
                    m.insert("path".into(), json!(home.join("state.db")));
                }
                for (k, v) in [
                    ("path", &s.path),
                    ("bucket", &s.bucket),
                    ("prefix", &s.prefix),
                    ("region", &s.region),
                    ("account", &s.account),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), json!(v));
                    }
                }
                if let Some(e) = &s.endpoint {
                    m.insert("endpoint".into(), json!(redact_url(e)));
                }
                if let Some(a) = s.anonymous {
                    m.insert("anonymous".into(), json!(a));
                }
                if let Some(u) = &s.url {
                    m.insert("url".into(), json!(redact_url(u)));
                }
                for (k, src) in [
                    ("url_source", &s.url_source),
                    ("signing_key_source", &s.signing_key_source),
                ] {
                    if let Some(src) = src {
                        m.insert(k.into(), json!(src));
                        let set = env_var_of(src)
                            .is_some_and(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
                        m.insert(format!("{k}_set"), json!(set));
                    }
                }
                Value::Object(m)
            }
        }
    };
    json!({"state": one("state", &def.state), "cache": one("cache", &def.cache), "logs": one("logs", &def.logs)})
}

pub use sparkwing_sync::redact::{redact_url, scrub};

/// The human form for `sparkwing profile`.
pub fn render_text(r: &Resolved, home: &Path) -> String {
    let mut out = String::new();
    let j = r.to_json(home);
    out.push_str(&format!("profile:  {} ({})\n", r.name, r.origin.describe()));
    out.push_str(&format!(
        "mode:     {} ({})\n",
        r.mode(),
        mode_name(r.mode())
    ));
    out.push_str(&format!("why:      {}\n", r.why));
    if let Some(s) = &r.shadowed {
        out.push_str(&format!(
            "pinned:   without it, profile \"{}\" (mode {}) would apply\n",
            s.name,
            s.mode()
        ));
    }
    if let Some(obj) = j["surfaces"].as_object() {
        for (role, v) in obj {
            let mut parts = Vec::new();
            if let Some(m) = v.as_object() {
                for (k, val) in m {
                    if k == "type" || k == "default" {
                        continue;
                    }
                    let shown = val
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| val.to_string());
                    parts.push(format!("{k}={shown}"));
                }
            }
            let kind = v["type"].as_str().unwrap_or("");
            out.push_str(&format!(
                "{:<9} {kind} {}\n",
                format!("{role}:"),
                parts.join(" ")
            ));
        }
    }
    out.push_str("considered:\n");
    for c in &r.considered {
        out.push_str(&format!("  - {c}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UniqueMap<ProfileDef>, String> {
        parse_user_file(Path::new("p.yaml"), text).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn every_surface_type_parses() {
        let text = r#"
profiles:
  a:
    state: { type: sqlite }
    cache: { type: filesystem, path: /mnt/team/cache }
    logs: { type: s3, bucket: team-logs, prefix: logs, endpoint: "http://127.0.0.1:9000", region: us-east-1 }
  b:
    state: { type: postgres, url_source: "env:SPARKWING_PG_URL" }
    cache: { type: gcs, bucket: team_cache.example.com }
    logs: { type: azure-blob, bucket: logs, account: acct }
  c:
    state: { type: postgres, url: "postgres://u:secret@db/x" }
  d:
    controller: { url: "https://api.example.dev", token: swu_abc }
"#;
        let p = parse(text).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(mode_of(&p["a"]), 2);
        assert_eq!(mode_of(&p["b"]), 3);
        assert_eq!(mode_of(&p["d"]), 4);
    }

    #[test]
    fn errors_name_the_file_and_what_to_fix() {
        let cases = [
            ("profiles:\n  a:\n    state: { type: mysql }\n", "p.yaml:3:"),
            ("profiles:\n  a:\n    stat: { type: sqlite }\n", "unknown field `stat`"),
            ("profiles:\n  a:\n    cache: { type: s3 }\n", "needs `bucket:`"),
            ("profiles:\n  a:\n    cache: { type: filesystem }\n", "needs `path:`"),
            ("profiles:\n  a:\n    state: { type: postgres }\n", "needs `url:` or `url_source"),
            ("profiles:\n  a:\n    state: { type: postgres, url: 'postgres://x', url_source: 'env:X' }\n", "exactly one"),
            ("profiles:\n  a:\n    state: { type: postgres, url_source: 'X' }\n", "env:VAR"),
            ("profiles:\n  a:\n    cache: { type: postgres, url: 'postgres://x' }\n", "run state only"),
            ("profiles:\n  a:\n    state: { type: sqlite, bucket: x }\n", "does not apply"),
            ("profiles:\n  a:\n    controller: { url: 'ftp://x', token: t }\n", "https://"),
            ("profiles:\n  a:\n    controller: { url: 'https://x' }\n", "missing field `token`"),
            ("profiles:\n  a: {}\n", "empty"),
            ("profiles:\n  a: {state: {type: sqlite}}\n  a: {state: {type: sqlite}}\n", "duplicate key `a`"),
            ("profiles:\n  shared:\n    cache: { type: s3, bucket: '../../x' }\n", "p.yaml: profile \"shared\": cache.bucket \"../../x\" is not a valid S3 bucket name: `/` is not allowed; S3 bucket names are 3-63"),
            ("profiles:\n  a:\n    logs: { type: gcs, bucket: 'a..b' }\n", "logs.bucket \"a..b\" is not a valid GCS bucket name"),
            ("profiles:\n  a:\n    state: { type: azure-blob, bucket: 'runs--x' }\n", "state.bucket \"runs--x\" is not a valid Azure container name: it has two hyphens"),
            ("profiles:\n  a:\n    cache: { type: s3, bucket: \"x\\e]0;t\\a\" }\n", "cache.bucket \"x\\u{1b}]0;t\\u{7}\" is not"),
            ("profiles:\n  a:\n    cache: { type: s3, bucket: bkt, endpoint: '::::' }\n", "cache.endpoint (value not shown) is not an http(s) URL with a host: it does not start with http:// or https://; fix `endpoint:`"),
            ("profiles:\n  a:\n    cache: { type: s3, bucket: bkt, endpoint: 'http://minio:99999/?token=T0K' }\n", "cache.endpoint \"http://minio:99999/?***\" is not an http(s) URL with a host: it is not a URL (invalid port number)"),
            ("profiles:\n  a:\n    cache: { type: s3, bucket: bkt, endpoint: 'http://u:pw@minio:9/' }\n", "cache.endpoint (value not shown) is not an http(s) URL with a host: it carries user information"),
            ("profiles:\n  a:\n    logs: { type: s3, bucket: bkt, prefix: 'team/../../x' }\n", "logs.prefix \"team/../../x\" is not a valid prefix: it has a `.` or `..` part"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("p.yaml"), "{e}");
            assert!(!e.contains("pw@") && !e.contains("T0K"), "{e}");
        }
    }
}
