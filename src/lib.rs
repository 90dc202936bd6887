//! `sparkwing` owns the command line, profiles, the pipeline model and its
//! executor, the local store facade, the job cache and logs.
//!
//! # Layout
//! - [`cli`]: flags, dispatch and exit codes (the binary is `cli::main`).
//! - [`fault`]: exit codes by meaning; which errors mean "sparkwing itself
//!   could not work".
//! - [`pipeline`]: `.sparkwing/sparkwing.yaml`: discovery, parsing, validation.
//! - [`profile`]: profile files, selection, validation, redaction.
//! - [`exec`]: runs a pipeline's job DAG: processes, timeouts, signals.
//! - [`gate`]: the host-local cap on concurrent runs (flock slots).
//! - [`synccmd`]: `sparkwing sync` status, daemon, flush, retry.
//! - [`session`]: `SyncSession`: outbox, actor and replicator, wired once.
//! - [`logging`]: the long-running processes' logs (`tracing`: levels,
//!   fields, `RUST_LOG`, text or JSON lines).
//! - [`runsview`]: `runs list/show/logs`, merged with a remote's runs.
//! - [`store`]: `state.db`: runs, jobs, steps, events, cache index.
//! - [`status`]: `RunStatus`, `JobStatus`, `StepStatus`: one spelling each.
//! - [`cache`]: cache keys, the content-addressed store, restore.
//! - [`logs`]: per-job log files; tail and follow.
//! - [`remote`]: a profile's remote surfaces as sync targets.
//! - [`remote_doc`]: remote run documents parsed into types and bounded.
//! - [`remote_cache`]: cross-runner cache reads from the remote, verified.
//! - [`signing`]: HMAC-SHA256 signatures on cache manifests (optional).
//! - [`replicate`]: event segments and log chunks recorded in `state.db`,
//!   turned into outbox entries; crash recovery (reconcile).
//! - [`verify`]: `sparkwing sync verify`, the remote compared with this machine.
//! - [`report`]: the JSON documents of runs (CLI output and remote summaries).
//! - [`yaml`]: YAML helpers with file:line:column errors.
//! - [`util`]: run IDs, clocks, durations.
//! - [`web`]: the dashboard (routes, pages, log streaming) and its sources.
//! - [`dashboard`]: `sparkwing dashboard start/status/stop` (the background server).

pub mod cache;
pub mod cli;
pub mod dashboard;
pub mod exec;
pub mod fault;
pub mod gate;
pub mod logging;
pub mod logs;
pub mod pipeline;
pub mod profile;
pub mod remote;
pub mod remote_cache;
pub mod remote_doc;
pub mod replicate;
pub mod report;
pub mod runsview;
pub mod session;
pub mod signing;
pub mod status;
pub mod store;
pub mod synccmd;
pub mod util;
pub mod verify;
pub mod web;
pub mod yaml;
