//! Everything that talks to a profile's remote: its surfaces as endpoints
//! (a sync target to write, a view to read), replication into the outbox,
//! the sync session, cross-runner cache reads, merged views of runs, `sync
//! verify`, and signed manifests. Key formats are not spelled here: they
//! live in `sparkwing_sync` (`layout`, `view`).

pub mod cache;
pub mod pack;
pub mod replicate;
pub mod runs;
pub mod session;
pub mod signing;
pub mod targets;
pub mod verify;

pub use targets::{remote_of, Endpoint, Remote};
