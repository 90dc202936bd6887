//! The remote side of a profile: one sync [`Target`] per surface that is
//! not local, and the run's target addresses.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use sparkwing_sync::fault::{FaultTarget, JournalTarget};
use sparkwing_sync::{ObjectStoreTarget, Target};

use crate::profile::{ProfileDef, Surface, SurfaceType};
use crate::store::RunTargets;

/// The targets of a profile's surfaces; `None` where a surface is local.
#[derive(Debug, Default, Clone)]
pub struct Remote {
    pub state: Option<Arc<dyn Target>>,
    pub logs: Option<Arc<dyn Target>>,
    pub cache: Option<Arc<dyn Target>>,
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

fn target_for(role: &str, s: &Surface) -> Result<Option<Arc<dyn Target>>> {
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
