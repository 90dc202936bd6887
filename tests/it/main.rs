//! End-to-end tests: each spawns the real `sparkwing` binary with a
//! temporary HOME and project. No mocks, no timing assertions.

mod browser;
mod cache;
mod concurrency;
mod dashboard;
mod gate;
mod inspect;
mod pipelines;
mod profiles;
mod run;
mod s3;
mod signals;
mod sync;
mod util;
mod web;
