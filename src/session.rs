//! One sync session: the outbox, the actor that drains it and the
//! replicator that feeds it (the actor's waker, so a replicated write wakes
//! the actor), wired once for `run`, `sync daemon` and `sync flush`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use sparkwing_outbox::Outbox;
use sparkwing_sync::{SyncActor, SyncConfig};

use crate::remote::Remote;
use crate::replicate::Replicator;

pub struct SyncSession {
    pub actor: Arc<SyncActor>,
    pub repl: Arc<Replicator>,
}

impl SyncSession {
    /// Opens `home`'s outbox (a damaged one is set aside, with a warning)
    /// and wires the session for `remote`'s targets.
    pub fn open(home: &Path, remote: &Remote, cfg: SyncConfig) -> Result<SyncSession> {
        let outbox = Arc::new(crate::replicate::open_outbox(home)?);
        Ok(SyncSession::over(outbox, home, remote, cfg))
    }

    /// A session over an outbox already open.
    pub fn over(outbox: Arc<Outbox>, home: &Path, remote: &Remote, cfg: SyncConfig) -> SyncSession {
        let actor = Arc::new(SyncActor::new(Arc::clone(&outbox), remote.targets(), cfg));
        let repl = Arc::new(
            Replicator::new(
                outbox,
                home.to_path_buf(),
                remote.run_targets(),
                Some(actor.waker()),
            )
            .with_signing(remote.signing.clone()),
        );
        SyncSession { actor, repl }
    }
}
