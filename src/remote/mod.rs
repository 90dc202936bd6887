//! Everything that talks to a profile's remote: its surfaces as sync
//! targets, replication into the outbox, the sync session, cross-runner
//! cache reads, remote documents parsed into types, merged views of runs,
//! `sync verify`, and signed manifests.

pub mod cache;
pub mod doc;
pub mod replicate;
pub mod runs;
pub mod session;
pub mod signing;
pub mod targets;
pub mod verify;

pub use targets::{remote_of, Remote};
