//! This machine's own store: `state.db` (runs, jobs, steps, events, log
//! chunks, the cache index).

pub mod store;
