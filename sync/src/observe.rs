//! [`ReadsObserved`]: a wrapper view that records what reads learn about
//! a target's connectivity in `outbox.db`, so `sparkwing sync status` shows
//! a target that was just read from as `online` (and one whose reads fail
//! for network reasons as `offline`), not `unknown`, even when nothing has
//! been delivered to it yet.
//!
//! Deliveries record their own outcome in the outbox when they settle; this
//! wrapper adds reads only. It never overrides `auth_failed` or
//! `misconfigured` (a read can succeed where a write is refused), and it
//! writes at most once per [`EVERY`] unless the state changes, so a listing
//! of a thousand runs costs one small transaction, off the async executor.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sparkwing_outbox::{ErrorClass, Outbox};

use crate::target::TargetError;
use crate::view::{LogChunks, RemoteView, RunEvents, RunRead};

/// How often an unchanged state is written again.
pub const EVERY: Duration = Duration::from_secs(5);

pub struct ReadsObserved {
    inner: Arc<dyn RemoteView>,
    home: PathBuf,
    /// Opened on first use; `None` if it could not be (then nothing is
    /// recorded: observing is never worth failing a read).
    outbox: OnceLock<Option<Arc<Outbox>>>,
    last: Mutex<Option<(bool, Instant)>>,
}

impl ReadsObserved {
    /// Wraps `inner`, recording into `home/outbox.db`.
    pub fn new(inner: Arc<dyn RemoteView>, home: impl Into<PathBuf>) -> Self {
        ReadsObserved {
            inner,
            home: home.into(),
            outbox: OnceLock::new(),
            last: Mutex::new(None),
        }
    }

    async fn note<T>(&self, r: &Result<T, TargetError>) {
        let online = match r {
            Ok(_) => true,
            Err(e) if e.class == ErrorClass::Transient => false,
            // A refusal is recorded by the deliveries that meet it.
            Err(_) => return,
        };
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*last, Some((was, at)) if was == online && at.elapsed() < EVERY) {
                return;
            }
            *last = Some((online, Instant::now()));
        }
        let error = match r {
            Err(e) => Some(e.message.clone()),
            Ok(_) => None,
        };
        let (home, target) = (self.home.clone(), self.inner.id().to_string());
        let cell = self.outbox.get().cloned();
        let opened = tokio::task::spawn_blocking(move || {
            let ob = match cell {
                Some(ob) => ob,
                None => Outbox::open(&home).ok().map(Arc::new),
            };
            if let Some(ob) = &ob {
                let _ = ob.observe_read(&target, online, error.as_deref());
            }
            ob
        })
        .await;
        if let Ok(ob) = opened {
            let _ = self.outbox.set(ob);
        }
    }
}

impl std::fmt::Debug for ReadsObserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadsObserved")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Each read, then its outcome noted.
macro_rules! observed {
    ($self:ident, $call:expr) => {{
        let r = $call.await;
        $self.note(&r).await;
        r
    }};
}

#[async_trait]
impl RemoteView for ReadsObserved {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn probe(&self) -> Result<(), TargetError> {
        observed!(self, self.inner.probe())
    }

    async fn run_ids(&self) -> Result<Vec<String>, TargetError> {
        observed!(self, self.inner.run_ids())
    }

    async fn run(&self, run: &str) -> Result<Option<RunRead>, TargetError> {
        observed!(self, self.inner.run(run))
    }

    async fn events(&self, run: &str) -> Result<RunEvents, TargetError> {
        observed!(self, self.inner.events(run))
    }

    async fn log_chunks(&self, run: &str, job: &str) -> Result<LogChunks, TargetError> {
        observed!(self, self.inner.log_chunks(run, job))
    }

    async fn log_chunk(
        &self,
        run: &str,
        job: &str,
        seq: u64,
    ) -> Result<Option<Bytes>, TargetError> {
        observed!(self, self.inner.log_chunk(run, job, seq))
    }

    async fn manifest(&self, key: &str) -> Result<Option<Bytes>, TargetError> {
        observed!(self, self.inner.manifest(key))
    }

    async fn blob(&self, sha256: &str, max: u64) -> Result<Option<Bytes>, TargetError> {
        observed!(self, self.inner.blob(sha256, max))
    }

    async fn blob_range(
        &self,
        sha256: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, TargetError> {
        observed!(self, self.inner.blob_range(sha256, start, len))
    }
}
