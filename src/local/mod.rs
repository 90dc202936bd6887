//! This machine's own store: `state.db` (runs, jobs, steps, events, log
//! chunks, the cache index), and [`view::LocalView`], the same store read
//! through the remote view contract.

pub mod store;
pub mod view;
