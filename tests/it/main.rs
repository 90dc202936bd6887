//! End-to-end tests: each spawns the real `sparkwing` binary with a
//! temporary HOME and project. No mocks, no timing assertions.

mod adversarial;
mod browser;
mod cache;
mod checker;
mod compat;
mod concurrency;
mod dashboard;
mod exactly_once;
mod faults;
mod gate;
mod gcs_adapter;
mod hostile;
mod inspect;
mod mode2;
mod pipelines;
mod poison;
mod profiles;
mod providers;
mod prune;
mod run;
mod s3;
mod secrets;
mod signals;
mod sim;
mod sync;
mod util;
mod verify;
mod web;
