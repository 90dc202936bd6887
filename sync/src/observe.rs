//! [`ReadsObserved`]: a wrapper target that records what reads learn about
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

use crate::target::{Applied, Op, Target, TargetError};

/// How often an unchanged state is written again.
pub const EVERY: Duration = Duration::from_secs(5);

pub struct ReadsObserved {
    inner: Arc<dyn Target>,
    home: PathBuf,
    /// Opened on first use; `None` if it could not be (then nothing is
    /// recorded: observing is never worth failing a read).
    outbox: OnceLock<Option<Arc<Outbox>>>,
    last: Mutex<Option<(bool, Instant)>>,
}

impl ReadsObserved {
    /// Wraps `inner`, recording into `home/outbox.db`.
    pub fn new(inner: Arc<dyn Target>, home: impl Into<PathBuf>) -> Self {
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

#[async_trait]
impl Target for ReadsObserved {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn apply(&self, op: &Op) -> Result<Applied, TargetError> {
        self.inner.apply(op).await
    }

    async fn apply_all(&self, ops: &[Op]) -> (usize, Option<TargetError>) {
        self.inner.apply_all(ops).await
    }

    async fn read(&self, key: &str, max: u64) -> Result<Option<Bytes>, TargetError> {
        let r = self.inner.read(key, max).await;
        self.note(&r).await;
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        let r = self.inner.list(prefix).await;
        self.note(&r).await;
        r
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        let r = self.inner.list_children(prefix).await;
        self.note(&r).await;
        r
    }
}
