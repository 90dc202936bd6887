//! The `none` target of Mode 1: nothing leaves the machine.

use async_trait::async_trait;
use bytes::Bytes;

use crate::target::{Applied, Op, Target, TargetError};

/// Accepts every op and keeps nothing. Reads find nothing.
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

    async fn read(&self, _key: &str, _max: u64) -> Result<Option<Bytes>, TargetError> {
        Ok(None)
    }

    async fn list(&self, _prefix: &str) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }
}
