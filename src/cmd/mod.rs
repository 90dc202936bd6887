//! The commands: flags and dispatch (`cli`), `sparkwing sync …` (`sync`)
//! and `sparkwing dashboard …` (`dashboard`). Commands use every other
//! module; nothing uses them.

pub mod cli;
pub mod dashboard;
pub mod sync;
