//! The `none` target of Mode 1: nothing leaves the machine.

use async_trait::async_trait;

use crate::target::{Applied, Op, Target, TargetError};

/// Accepts every op and keeps nothing (Mode 1 has no remote to read).
#[derive(Debug, Default)]
pub struct NoneTarget;

#[async_trait]
impl Target for NoneTarget {
    fn id(&self) -> &str {
        "none:"
    }

    async fn apply(&self, _op: &Op) -> Result<Applied, TargetError> {
        Ok(Applied::Discarded)
    }
}
