//! The commands: flags and dispatch (`cli`), `sparkwing sync …` (`sync`),
//! `sparkwing cache …` (`cache`), `sparkwing runs prune` (`runs`) and
//! `sparkwing dashboard …` (`dashboard`). Commands use every other module;
//! nothing uses them.

pub mod cache;
pub mod cli;
pub mod dashboard;
pub mod runs;
pub mod sync;
