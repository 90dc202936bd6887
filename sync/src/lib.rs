//! `sparkwing-sync` owns the [`Target`] trait and its backends (`none`,
//! object store, filesystem; Postgres and controller later), the replay
//! [`actor`] that drains the outbox into targets, connectivity tracking and
//! the classification of failures (DESIGN invariant 6).
//!
//! It knows nothing about the CLI, pipelines or HTML.
//!
//! # Layout
//! - [`target`]: the [`Target`] contract, [`Op`] (what an outbox entry asks
//!   for), [`TargetError`] and the remote object layout.
//! - [`view`]: the [`RemoteView`] read contract (typed reads of runs,
//!   events, log chunks, manifests, blobs) and [`view::ObjectView`], its
//!   implementation over the object layout.
//! - [`doc`]: the documents a remote holds as bounded types ([`doc::RunDoc`],
//!   [`doc::Event`]).
//! - [`layout`]: the remote object layout's keys, spelled once.
//! - [`gc`]: garbage collection of a cache surface (expired manifests,
//!   blobs no manifest names, two collections apart).
//! - [`object`]: [`ObjectStoreTarget`] over any `Arc<dyn ObjectStore>`, and
//!   the `filesystem` surface built on it.
//! - [`redact`]: masks URL credentials, query strings and secret pairs in
//!   any text (every stored error and message passes through it).
//! - [`none`]: the Mode 1 target: accepts and drops.
//! - [`observe`]: a wrapper view that records what reads learn about a
//!   target's connectivity (`sync status` shows a target read from as online).
//! - `fault` (feature `test-hooks`): a wrapper target that injects failures,
//!   delay and outages, and one that journals deliveries.
//! - [`actor`]: [`SyncActor`]: claims, delivers, settles; `sync_once`.
//! - `conformance` (feature `test-hooks`): the suites every target and
//!   every view pass.
//! - `clock` (feature `test-hooks`): `TokioClock`, an outbox clock that
//!   follows tokio's (pausable) time, for exact timing tests.

pub mod actor;
#[cfg(any(test, feature = "test-hooks"))]
pub mod clock;
#[cfg(any(test, feature = "test-hooks"))]
pub mod conformance;
pub mod doc;
#[cfg(any(test, feature = "test-hooks"))]
pub mod fault;
pub mod gc;
pub mod layout;
pub mod none;
pub mod object;
pub mod observe;
pub mod redact;
pub mod target;
pub mod view;

pub use actor::{SyncActor, SyncConfig, SyncReport};
pub use object::ObjectStoreTarget;
/// The object_store crate this one is built on (its builders configure targets).
pub use object_store;
pub use target::{Applied, Op, Target, TargetError};
pub use view::{ObjectView, RemoteView};
