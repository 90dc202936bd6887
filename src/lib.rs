//! `sparkwing` owns the command line, profiles, the pipeline model and its
//! executor, the local store facade, the job cache and logs.
//!
//! # Layout
//! By concern; `cmd` uses every other module and nothing uses `cmd`.
//! - [`cmd`]: the commands: `cli` (flags, dispatch, exit codes; the binary
//!   is `cmd::cli::main`), `sync` (`sparkwing sync` status, daemon, flush,
//!   retry), `dashboard` (`sparkwing dashboard start/status/stop`).
//! - [`run`]: running a pipeline here: `pipeline` (the pipeline file:
//!   discovery, parsing, validation), `exec` (the job DAG: processes,
//!   timeouts, signals; a job as phases), `cache` (keys, the
//!   content-addressed store, restore, the per-key host hold), `logs`
//!   (per-job log files, tail, follow), `gate` (the host-local cap on
//!   concurrent runs).
//! - [`local`]: `store`, `state.db`: runs, jobs, steps, events, cache index.
//! - [`remote`]: the profile's remote: `targets` (surfaces as sync targets),
//!   `replicate` (state.db into outbox entries; crash recovery), `session`
//!   (outbox, actor and replicator wired once), `cache` (cross-runner cache
//!   reads, verified), `doc` (remote run documents parsed into types),
//!   `runs` (`runs list/show/logs` merged with the remote), `verify` (`sync
//!   verify`), `signing` (HMAC-SHA256 manifests).
//! - [`web`]: the dashboard (routes, pages, log streaming) and its sources.
//! - [`profile`]: profile files, selection, validation, redaction.
//! - [`status`]: `RunStatus`, `JobStatus`, `StepStatus`: one spelling each.
//! - [`fault`]: exit codes by meaning; which errors mean "sparkwing itself
//!   could not work".
//! - [`logging`]: the long-running processes' logs (`tracing`).
//! - [`report`]: the JSON documents of runs (CLI output and remote summaries).
//! - [`yaml`]: YAML helpers with file:line:column errors and input limits.
//! - [`util`]: run IDs, clocks, durations, byte counts, the runtime.

pub mod cmd;
pub mod fault;
pub mod local;
pub mod logging;
pub mod profile;
pub mod remote;
pub mod report;
pub mod run;
pub mod status;
pub mod util;
pub mod web;
pub mod yaml;
