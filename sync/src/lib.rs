//! `sparkwing-sync` owns the `Target` trait and its backends (`none`, object
//! store, Postgres, controller), the replay actor that drains the outbox into
//! a target, connectivity tracking and the classification of failures.
//!
//! It knows nothing about the CLI, pipelines or HTML.
//!
//! Mode 1 replays to the `none` target: every write stays local. The other
//! backends and the actor land with the sync engine (issue 3).

/// The kind of remote a profile's writes are delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetKind {
    /// Mode 1: nothing leaves the machine.
    None,
}

impl TargetKind {
    /// The name used in `sparkwing sync status` and in outbox entries.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::None => "none",
        }
    }
}
