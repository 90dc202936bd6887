//! `sparkwing-outbox` owns the durable replay queue in
//! `SPARKWING_HOME/outbox.db`: enqueue (in the same transaction as the local
//! state write it mirrors), claim with a lease, ack, the retry schedule and
//! quarantine, and the statistics that `sparkwing sync status` prints.
//!
//! It knows nothing about remotes, HTTP or pipelines.
//!
//! Mode 1 (the built-in `laptop` profile) has no remote, so nothing is
//! enqueued yet; the queue itself lands with the sync engine (issue 3).

/// The file name of the outbox database inside `SPARKWING_HOME`.
pub const OUTBOX_FILE: &str = "outbox.db";
