//! A fault-injecting wrapper around any [`Target`], for tests of the actor
//! and of whole runs: fail the next N applies with a given class, add
//! delay, switch the target down and up. It also journals every apply.
//! [`JournalTarget`] appends every successful apply to a file, so tests of
//! several processes can check that nothing was applied twice or out of
//! order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sparkwing_outbox::ErrorClass;

use crate::target::{Applied, Op, Target, TargetError};

#[derive(Debug, Default)]
struct Faults {
    fail_next: usize,
    class: Option<ErrorClass>,
    retry_after: Option<Duration>,
    delay: Duration,
    down: bool,
    journal: Vec<String>,
}

/// Wraps a target with switchable faults. Same id as the inner target.
#[derive(Debug)]
pub struct FaultTarget {
    inner: Arc<dyn Target>,
    faults: Mutex<Faults>,
}

impl FaultTarget {
    pub fn new(inner: Arc<dyn Target>) -> Self {
        FaultTarget {
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` applies fail with `class`.
    pub fn fail_next(&self, n: usize, class: ErrorClass, retry_after: Option<Duration>) {
        let mut f = self.faults();
        f.fail_next = n;
        f.class = Some(class);
        f.retry_after = retry_after;
    }

    /// Every call waits this long first.
    pub fn set_delay(&self, d: Duration) {
        self.faults().delay = d;
    }

    /// While down, every call fails as unreachable (transient).
    pub fn set_down(&self, down: bool) {
        self.faults().down = down;
    }

    /// The keys of the ops applied successfully, in order.
    pub fn journal(&self) -> Vec<String> {
        self.faults().journal.clone()
    }

    fn check(&self) -> Result<(), TargetError> {
        let mut f = self.faults();
        if f.down {
            return Err(TargetError::transient(
                "connection refused (injected outage)",
            ));
        }
        if f.fail_next > 0 {
            f.fail_next -= 1;
            let class = f.class.unwrap_or(ErrorClass::Transient);
            return Err(TargetError {
                class,
                message: format!("injected {} failure", class.as_str()),
                retry_after: f.retry_after,
            });
        }
        Ok(())
    }

    async fn pause(&self) {
        let d = self.faults().delay;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[async_trait]
impl Target for FaultTarget {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn apply(&self, op: &Op) -> Result<Applied, TargetError> {
        self.pause().await;
        self.check()?;
        let r = self.inner.apply(op).await?;
        self.faults().journal.push(op.key());
        Ok(r)
    }
}

/// Appends `<pid> <key>` to a file after every successful apply. Each line
/// is one `O_APPEND` write, so lines from several processes never interleave.
#[derive(Debug)]
pub struct JournalTarget {
    inner: Arc<dyn Target>,
    file: Mutex<std::fs::File>,
}

impl JournalTarget {
    pub fn new(inner: Arc<dyn Target>, path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JournalTarget {
            inner,
            file: Mutex::new(file),
        })
    }
}

#[async_trait]
impl Target for JournalTarget {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn apply(&self, op: &Op) -> Result<Applied, TargetError> {
        let r = self.inner.apply(op).await?;
        let line = format!("{} {} {}\n", std::process::id(), self.inner.id(), op.key());
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        std::io::Write::write_all(&mut *f, line.as_bytes())
            .map_err(|e| TargetError::transient(format!("writing the journal: {e}")))?;
        Ok(r)
    }
}
