//! The command line: flags parsed into plain structs (no I/O), then
//! dispatched. `main` prints one error with its context chain and maps
//! outcomes to exit codes by meaning (see [`crate::fault`]): 0 success, 1 a
//! run failed, 2 invalid input, 74 sparkwing itself could not work, 130 a
//! run was cancelled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::local::store::Store;
use crate::profile::{self, Request};
use crate::remote::Remote;
use crate::report::{self, run_json};
use crate::run::exec::{self, RunOptions};
use crate::run::logs::{self, LogRequest};
use crate::run::pipeline::{self, Pipeline};
use crate::util::table;

/// The top-level help's examples and environment (the exit codes follow).
const ROOT_EXAMPLES: &str = "Examples:\n  sparkwing run hello                 run the `hello` pipeline\n  sparkwing runs list                 recent runs, newest first\n  sparkwing runs logs latest --follow watch the newest run's output\n  sparkwing profile                   which profile applies and why\n  sparkwing dashboard start           the web dashboard at http://127.0.0.1:4343/\n\nEnvironment:\n  SPARKWING_HOME        where state.db, logs and the cache live (default ~/.sparkwing)\n  SPARKWING_PROFILES    the user profile file (default $XDG_CONFIG_HOME/sparkwing/profiles.yaml)\n  SPARKWING_LOCAL_ONLY  set to 1 to pin runs to the local layout";

#[derive(Parser, Debug)]
#[command(
    name = "sparkwing",
    version,
    about = "Run CI/CD pipelines locally first, and share them when you want to.",
    long_about = "Sparkwing runs the pipelines defined in .sparkwing/sparkwing.yaml: a DAG of jobs made of \
shell steps, with cached jobs. Every run is recorded in SPARKWING_HOME (default ~/.sparkwing): \
state.db for runs, jobs and steps, runs/<runID>/<job>.log for output, cas/ for cached outputs.",
    after_help = format!("{ROOT_EXAMPLES}\n\n{}", crate::fault::EXIT_CODES_HELP)
)]
pub struct Cli {
    /// The project directory (holding .sparkwing/sparkwing.yaml); found by
    /// walking up from the current directory when not given.
    #[arg(long, global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// More detail in the logs: -v debug, -vv trace. The sync daemon and the
    /// dashboard log at info; other commands log only with -v. RUST_LOG
    /// (e.g. `info,sparkwing_sync=debug`) overrides.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors in the logs.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log lines as human text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text, value_name = "FORMAT")]
    pub log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline: jobs in parallel where `needs` allows, logs saved as they arrive.
    #[command(
        after_help = "Exit status: 0 when every job passed or was restored from cache, 1 when a job failed, 2 when the pipeline, profile or flags are invalid (nothing ran), 74 when sparkwing itself could not work (a full disk, missing permissions or a damaged state.db; the run is recorded as failed with the reason), 130 when cancelled (Ctrl-C)."
    )]
    Run(RunArgs),
    /// List or scaffold the pipelines of the project.
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// Inspect recorded runs: list, show, logs.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// Show the profile that resolves, why, and what else was considered (secrets redacted).
    Profile(ProfileArgs),
    /// The outbox and its replay to the profile's remote: status, daemon, flush, verify, retry.
    #[command(subcommand)]
    Sync(SyncCmd),
    /// The local job cache: its entries, its size against its limit, pruning.
    #[command(subcommand)]
    Cache(CacheCmd),
    /// The web dashboard of this machine's runs (merged with the profile's remote): start, status, stop.
    #[command(subcommand)]
    Dashboard(DashboardCmd),
}

#[derive(Subcommand, Debug)]
pub enum CacheCmd {
    /// Every cache entry, most recently used first: its key, job, producing run, files and size.
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// How many entries, the bytes they name, what the CAS holds on disk, and the size limit.
    Stats {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Collect a profile's remote cache: delete manifests past their ttl, then blobs no manifest names (marked by one collection, deleted by a later one).
    #[command(
        after_help = "A blob no manifest names is first marked; a collection at least --grace later deletes it if it is still unnamed. A save in progress (its blobs uploaded, its manifest not yet written) therefore keeps its blobs if it takes less than the grace period; a save that reuses a blob already marked for that long can still lose it, which costs a cache miss, never a wrong restore. Run it from one place (a scheduled CI job), for example daily.\n\nExamples:\n  sparkwing cache gc --profile shared --dry-run\n  sparkwing cache gc --profile shared -o json"
    )]
    Gc {
        /// The profile whose cache surface to collect.
        #[arg(long, value_name = "NAME")]
        profile: String,
        /// How long a blob stays marked before a collection may delete it.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration_arg)]
        grace: Duration,
        /// Say what would be deleted, delete and mark nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove expired entries, entries unused for a while, or the least recently used ones past a size; then the blobs no entry names.
    #[command(
        after_help = "An entry a running job is restoring or saving is kept (named as busy), and so is one still on its way to the profile's remote (`sparkwing sync flush` sends it). A blob no entry names is kept for an hour (a save in progress may be about to name it), unless this prune removed the entry that named it while no save was writing the cache.\n\nThe limit a save enforces by itself is `cache: { max_size: 10GiB }` in the user profile file (default 10 GiB).\n\nExamples:\n  sparkwing cache prune --older-than 30d      entries unused for 30 days\n  sparkwing cache prune --max-size 2GiB       least recently used first, down to 2 GiB\n  sparkwing cache prune --max-size 0 --dry-run   what emptying the cache would remove"
    )]
    Prune {
        /// Remove entries last used (stored or restored) longer ago than this (e.g. 30d, 12h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        older_than: Option<Duration>,
        /// Then remove the least recently used entries until the rest fit in this size (e.g. 2GiB, 500MB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        max_size: Option<u64>,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArg,
    },
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::util::parse_size(s)
}

#[derive(Subcommand, Debug)]
pub enum DashboardCmd {
    /// Start the dashboard in the background and print its URL (does nothing if it is already running).
    #[command(
        after_help = "The dashboard is read-only: runs (with filters), each run's job graph, steps and cache provenance, live job logs, pipelines, and the sync backlog. It listens on loopback unless --addr says otherwise; its output goes to SPARKWING_HOME/dashboard.log.\n\nExamples:\n  sparkwing dashboard start                       http://127.0.0.1:4343/, the default profile\n  sparkwing dashboard start --profile shared      every runner's runs, and this machine's\n  sparkwing dashboard start --foreground --addr 127.0.0.1:0\n                                                  attached, on a free port"
    )]
    Start {
        /// Address to listen on (IP:PORT; port 0 picks a free one) [default: 127.0.0.1:4343].
        #[arg(long, value_name = "ADDR")]
        addr: Option<String>,
        /// The profile whose runs to show (merged with its remote).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Stay attached (logs to the terminal; Ctrl-C stops it).
        #[arg(long)]
        foreground: bool,
    },
    /// Whether the dashboard runs, where, and for which profile (exit 0 running, 3 not running).
    Status {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Stop the background dashboard.
    Stop,
}

#[derive(Subcommand, Debug)]
pub enum SyncCmd {
    /// Per target: connectivity, pending writes by kind, oldest, last success and error, quarantined, drain estimate.
    Status {
        /// Only this profile's targets [default: every target in the outbox].
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Replay in the foreground until stopped; on SIGTERM/SIGINT drain, then report what is left.
    Daemon {
        /// The profile whose targets to replay to.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// How long to keep draining after the stop signal.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration_arg)]
        drain_timeout: Duration,
        /// Streams replayed at once.
        #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
        concurrency: u32,
    },
    /// Deliver everything queued for the profile; exit 0 only once nothing is left (the last step of a CI job).
    Flush {
        /// The profile whose targets to flush.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Give up (exit 1) after this long.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration_arg)]
        timeout: Duration,
        /// Streams replayed at once.
        #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
        concurrency: u32,
    },
    /// Check that the remote holds exactly what this machine holds: every event once, logs byte for byte, run.json with the local status, every cache blob by SHA-256. Exit 0 only when equal; each difference is printed.
    #[command(
        after_help = "Runs still running are skipped. Writes still queued are reported; run `sparkwing sync flush --profile NAME` first to compare a settled remote.\n\nExamples:\n  sparkwing sync verify --profile shared\n  sparkwing sync verify --profile shared --run 01JB4Q -o json"
    )]
    Verify {
        /// The profile whose remote to check.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Only this run (full ID or unique prefix) [default: every run bound for the profile's targets].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Re-queue quarantined writes (after fixing their cause) and lift a target's stop (credentials refused, or misconfigured: no such bucket, a request the server cannot take).
    Retry {
        /// Only this profile's targets [default: all].
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::util::parse_duration(s)
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline to run (see `sparkwing pipeline list`).
    pub pipeline: String,
    /// The profile to run under (user profiles file first, then the project's `profiles:`).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// How many jobs may run at once [default: the number of CPUs].
    #[arg(long = "sw-workers", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,
    /// Do not restore from the cache (successful cached jobs still store their outputs).
    #[arg(long = "sw-no-cache")]
    pub no_cache: bool,
    /// Pin this run's state, cache and logs to the local layout, whatever profile resolves.
    #[arg(long = "sw-local-only")]
    pub local_only: bool,
    /// At exit, wait this long for the run's writes to reach the remote (the rest stays queued).
    #[arg(long = "sw-sync-timeout", value_name = "DURATION", default_value = "30s", value_parser = parse_duration_arg)]
    pub sync_timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum PipelineCmd {
    /// List the pipelines of .sparkwing/sparkwing.yaml.
    List(OutputArg),
    /// Add a working pipeline entry to .sparkwing/sparkwing.yaml (creating it if needed).
    New {
        /// The new pipeline's name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// Recorded runs, newest first.
    List {
        /// Only runs of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only runs with this status.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::status::RunStatus::ALL.iter().map(|s| s.as_str())))]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Merge with every runner's runs on this profile's remote.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// One run: its jobs, steps, timings and cache provenance.
    Show {
        /// A run ID, a unique prefix of one, or `latest`.
        run: String,
        /// Also look on this profile's remote (runs of other runners).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print a run's logs; --follow streams them while the run is in progress.
    Logs {
        /// A run ID, a unique prefix of one, or `latest`.
        run: String,
        /// Only this job's log.
        #[arg(long)]
        job: Option<String>,
        /// Only the last N lines (of each job).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Keep printing new output until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Also look on this profile's remote (runs of other runners).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },
    /// Remove runs that ended longer ago than --older-than, with their logs.
    #[command(
        after_help = "This machine's runs go from state.db and SPARKWING_HOME/runs/. With --profile, every runner's runs that old go from the profile's remote too (their run document, events and log chunks). A run still in progress is kept, and so is one of this machine's runs whose writes are still queued for the remote (`sparkwing sync flush` sends them). Cache entries stay: `sparkwing cache prune` and `sparkwing cache gc` bound them.\n\nExamples:\n  sparkwing runs prune --older-than 30d\n  sparkwing runs prune --older-than 90d --profile shared --dry-run\n  sparkwing runs prune --older-than 7d -o json"
    )]
    Prune {
        /// Remove runs that ended longer ago than this (e.g. 30d, 12h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        older_than: Duration,
        /// Also remove every runner's runs that old from this profile's remote.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Resolve this profile name instead of the default selection.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Resolve as `sparkwing run PIPELINE` would (honours its `profile:`).
    #[arg(long, value_name = "PIPELINE")]
    pub pipeline: Option<String>,
    /// Show what --sw-local-only would pin.
    #[arg(long = "sw-local-only")]
    pub local_only: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub use crate::util::home_dir;

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The long-running commands log at info by default; the others only
    // when asked (-v or RUST_LOG): what they print is their output.
    let service = matches!(
        cli.command,
        Command::Sync(SyncCmd::Daemon { .. })
            | Command::Dashboard(DashboardCmd::Start {
                foreground: true,
                ..
            })
    );
    crate::logging::init(
        crate::logging::level(service, cli.verbose, cli.quiet),
        cli.log_format,
    );
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Errors can quote a remote's text and a profile's URLs: `say!`
            // lets no control character and no credential reach the terminal.
            let msg = format!("{e:#}");
            if msg.starts_with("sparkwing: ") {
                crate::say!("{msg}");
            } else {
                crate::say!("sparkwing: {msg}");
            }
            ExitCode::from(crate::fault::exit_code(&e))
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    let project_flag = cli.project.as_deref();
    match cli.command {
        Command::Run(args) => cmd_run(project_flag, args),
        Command::Pipeline(PipelineCmd::List(o)) => {
            cmd_pipeline_list(project_flag, o.format).map(|_| 0)
        }
        Command::Pipeline(PipelineCmd::New { name }) => {
            cmd_pipeline_new(project_flag, &name).map(|_| 0)
        }
        Command::Runs(cmd) => cmd_runs(project_flag, cmd).map(|_| 0),
        Command::Profile(args) => cmd_profile(project_flag, args).map(|_| 0),
        Command::Sync(cmd) => cmd_sync(project_flag, cmd),
        Command::Cache(cmd) => {
            let home = home_dir()?;
            let json = |o: &OutputArg| o.format == Format::Json;
            match cmd {
                CacheCmd::List { output } => {
                    crate::cmd::cache::list(&home, json(&output)).map(|_| 0)
                }
                CacheCmd::Stats { output } => {
                    crate::cmd::cache::stats(&home, json(&output)).map(|_| 0)
                }
                CacheCmd::Prune {
                    older_than,
                    max_size,
                    dry_run,
                    output,
                } => crate::cmd::cache::prune(&home, older_than, max_size, dry_run, json(&output))
                    .map(|_| 0),
                CacheCmd::Gc {
                    profile,
                    grace,
                    dry_run,
                    output,
                } => {
                    let project = pipeline::optional_project(project_flag)?;
                    let resolved = pipeline::resolve_profile(
                        project.as_ref(),
                        &Request {
                            flag: Some(&profile),
                            pipeline: None,
                            local_only_flag: false,
                        },
                    )?;
                    crate::cmd::cache::gc(&resolved, grace, dry_run, json(&output))
                }
            }
        }
        Command::Dashboard(cmd) => {
            let home = home_dir()?;
            match cmd {
                DashboardCmd::Start {
                    addr,
                    profile,
                    foreground,
                } => crate::cmd::dashboard::start(
                    &home,
                    project_flag,
                    &crate::cmd::dashboard::StartArgs {
                        addr,
                        profile,
                        foreground,
                    },
                ),
                DashboardCmd::Status { output } => {
                    crate::cmd::dashboard::status(&home, output.format == Format::Json)
                }
                DashboardCmd::Stop => crate::cmd::dashboard::stop(&home),
            }
        }
    }
}

fn cmd_run(project_flag: Option<&Path>, args: RunArgs) -> Result<u8> {
    let project = pipeline::load_project(project_flag)?;
    let pipe = project.pipeline(&args.pipeline)?;
    let resolved = pipeline::resolve_profile(
        Some(&project),
        &Request {
            flag: args.profile.as_deref(),
            pipeline: Some(&args.pipeline),
            local_only_flag: args.local_only,
        },
    )?;
    resolved.check_runnable()?;
    check_coordination(&project.file, pipe, &resolved)?;
    let workers = match args.workers {
        Some(n) => n as usize,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    };
    let code = exec::run_pipeline(
        &project,
        pipe,
        RunOptions {
            home: home_dir()?,
            remote: if resolved.local_only.is_some() {
                Remote::default()
            } else {
                Remote::from_profile(&resolved.def)?.observing_reads(&home_dir()?)
            },
            sync_timeout: args.sync_timeout,
            max_runs: crate::run::gate::max_runs(profile::user_max_runs()?)?,
            workers,
            no_cache: args.no_cache,
            profile: resolved.name.clone(),
            cache_max_size: profile::user_cache_max_size()?,
            stop: None,
        },
    )?;
    Ok(code as u8)
}

/// Approvals and coordinated cache reservation need Postgres or a
/// controller; refuse them up front in Modes 1 and 2.
fn check_coordination(file: &Path, pipe: &Pipeline, resolved: &profile::Resolved) -> Result<()> {
    let mode = resolved.mode();
    if mode >= 3 {
        return Ok(());
    }
    for (name, job) in pipe.jobs.iter() {
        let feature = if job.approval.is_some() {
            Some("approval")
        } else if job.cache.as_ref().is_some_and(|c| c.on_limit.is_some()) {
            Some("cache.on_limit (coordinated cache reservation)")
        } else {
            None
        };
        if let Some(feature) = feature {
            bail!(
                "{}: pipeline `{}`, job `{name}` uses {feature}, which needs a coordinator; profile \"{}\" is Mode {mode} ({}). \
                 Run it under a Mode 3 (Postgres) or Mode 4 (controller) profile, or remove {feature}",
                file.display(),
                pipe.name,
                resolved.name,
                profile::mode_name(mode)
            );
        }
    }
    Ok(())
}

fn out() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut o = out();
    serde_json::to_writer_pretty(&mut o, v)?;
    writeln!(o)?;
    Ok(())
}

fn cmd_pipeline_list(project_flag: Option<&Path>, format: Format) -> Result<()> {
    let project = pipeline::load_project(project_flag)?;
    let pipes = &project.config.pipelines;
    if format == Format::Json {
        let v: Vec<_> = pipes
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "description": p.description, "profile": p.profile,
                    "jobs": p.jobs.keys().collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&json!(v));
    }
    if pipes.is_empty() {
        writeln!(
            out(),
            "no pipelines in {}; add one with `sparkwing pipeline new --name NAME`",
            project.file.display()
        )?;
        return Ok(());
    }
    let mut rows = vec![vec![
        "NAME".into(),
        "JOBS".into(),
        "PROFILE".into(),
        "DESCRIPTION".into(),
    ]];
    for p in pipes {
        rows.push(vec![
            p.name.clone(),
            p.jobs.len().to_string(),
            p.profile.clone().unwrap_or_else(|| "-".into()),
            p.description.clone().unwrap_or_default(),
        ]);
    }
    out().write_all(table(&rows).as_bytes())?;
    Ok(())
}

fn cmd_pipeline_new(project_flag: Option<&Path>, name: &str) -> Result<()> {
    let dir = match project_flag {
        Some(d) => d.to_path_buf(),
        None => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            pipeline::find_project_dir(&cwd).unwrap_or(cwd)
        }
    };
    let file = pipeline::add_pipeline(&dir, name)?;
    writeln!(
        out(),
        "added pipeline `{name}` to {}; run it with `sparkwing run {name}`",
        file.display()
    )?;
    Ok(())
}

/// The remote view of `--profile NAME` for the runs commands.
fn remote_runs(project_flag: Option<&Path>, name: &str) -> Result<crate::remote::runs::RemoteRuns> {
    let project = pipeline::optional_project(project_flag)?;
    let resolved = pipeline::resolve_profile(
        project.as_ref(),
        &Request {
            flag: Some(name),
            pipeline: None,
            local_only_flag: false,
        },
    )?;
    let remote = crate::remote::remote_of(&resolved)?.unwrap_or_default();
    let Some(state) = remote.state.clone() else {
        bail!("profile \"{name}\" keeps run state on this machine; `sparkwing runs` without --profile shows it");
    };
    crate::remote::runs::RemoteRuns::new(state.view, remote.logs.map(|e| e.view))
}

fn cmd_runs(project_flag: Option<&Path>, cmd: RunsCmd) -> Result<()> {
    use crate::remote::runs;
    let home = home_dir()?;
    let store = Store::open(&home)?;
    // Runs whose process died are recorded as interrupted (with an event
    // that the next sync delivers), so every view agrees on their status.
    match store.settle_dead_runs() {
        Err(e) if crate::fault::is_damaged(&e) => return Err(e),
        Err(e) => crate::say!("sparkwing: could not record interrupted runs ({e:#})"),
        Ok(_) => {}
    }
    match cmd {
        RunsCmd::Prune {
            older_than,
            profile,
            dry_run,
            output,
        } => {
            let resolved = match &profile {
                Some(name) => {
                    let project = pipeline::optional_project(project_flag)?;
                    Some(pipeline::resolve_profile(
                        project.as_ref(),
                        &Request {
                            flag: Some(name),
                            pipeline: None,
                            local_only_flag: false,
                        },
                    )?)
                }
                None => None,
            };
            drop(store);
            crate::cmd::runs::prune(
                &home,
                resolved.as_ref(),
                older_than,
                dry_run,
                output.format == Format::Json,
            )?;
        }
        RunsCmd::List {
            pipeline,
            status,
            limit,
            profile,
            output,
        } => {
            let (rows, merged) = match &profile {
                Some(name) => {
                    let remote = remote_runs(project_flag, name)?;
                    let (rows, warning) = runs::merged_list(
                        Some(&store),
                        &remote,
                        &runs::ListQuery {
                            pipeline: pipeline.as_deref(),
                            status: status.as_deref(),
                            before: None,
                            limit,
                        },
                    )?;
                    if let Some(w) = warning {
                        crate::say!("sparkwing: warning: {w}");
                    }
                    (rows, true)
                }
                None => {
                    let runs = store.list_runs(pipeline.as_deref(), status.as_deref(), limit)?;
                    (runs.iter().map(run_json).collect(), false)
                }
            };
            if output.format == Format::Json {
                return print_json(&json!(rows));
            }
            if rows.is_empty() {
                writeln!(
                    out(),
                    "no runs match; start one with `sparkwing run PIPELINE`"
                )?;
                return Ok(());
            }
            out().write_all(runs::render_list(&rows, merged).as_bytes())?;
        }
        RunsCmd::Show {
            run,
            profile,
            output,
        } => {
            let doc = match &profile {
                Some(name) => {
                    runs::merged_show(Some(&store), &remote_runs(project_flag, name)?, &home, &run)?
                        .0
                }
                None => report::run_document(&store, &store.find_run(&run)?, Some(&home))?,
            };
            if output.format == Format::Json {
                return print_json(&doc);
            }
            out().write_all(runs::render_show(&doc).as_bytes())?;
        }
        RunsCmd::Logs {
            run,
            job,
            tail,
            follow,
            profile,
        } => {
            if let (Some(name), Err(_)) = (&profile, store.find_run(&run)) {
                let remote = remote_runs(project_flag, name)?;
                let (doc, _) = runs::merged_show(Some(&store), &remote, &home, &run)?;
                if follow && doc["status"] == crate::status::RunStatus::Running.as_str() {
                    bail!("--follow works on this machine's runs; run {} is another runner's (its logs arrive in chunks: run the command again)", doc["id"]);
                }
                return runs::remote_logs(&remote, &doc, job.as_deref(), tail);
            }
            let r = store.find_run(&run)?;
            logs::print(
                &store,
                &home,
                &r,
                &LogRequest {
                    job: job.as_deref(),
                    tail,
                    follow,
                },
            )?;
        }
    }
    Ok(())
}

fn cmd_sync(project_flag: Option<&Path>, cmd: SyncCmd) -> Result<u8> {
    let flag = match &cmd {
        SyncCmd::Status { profile, .. }
        | SyncCmd::Daemon { profile, .. }
        | SyncCmd::Flush { profile, .. }
        | SyncCmd::Verify { profile, .. }
        | SyncCmd::Retry { profile } => profile.clone(),
    };
    let project = pipeline::optional_project(project_flag)?;
    let resolved = pipeline::resolve_profile(
        project.as_ref(),
        &Request {
            flag: flag.as_deref(),
            pipeline: None,
            local_only_flag: false,
        },
    )?;
    let home = home_dir()?;
    let explicit = flag.is_some();
    match cmd {
        SyncCmd::Status { output, .. } => {
            crate::cmd::sync::status(&home, &resolved, explicit, output.format == Format::Json)
                .map(|_| 0)
        }
        SyncCmd::Daemon {
            drain_timeout,
            concurrency,
            ..
        } => crate::cmd::sync::daemon(&home, &resolved, drain_timeout, concurrency as usize),
        SyncCmd::Flush {
            timeout,
            concurrency,
            ..
        } => crate::cmd::sync::flush(&home, &resolved, timeout, concurrency as usize),
        SyncCmd::Verify { run, output, .. } => {
            let Some(remote) = crate::remote::remote_of(&resolved)? else {
                bail!(
                    "profile \"{}\" keeps everything local (Mode 1): there is no remote to verify. Pass --profile NAME for a profile with remote surfaces",
                    resolved.name
                );
            };
            let report = crate::remote::verify::verify(&home, &remote, run.as_deref())?;
            crate::remote::verify::print(&report, output.format == Format::Json)
        }
        SyncCmd::Retry { .. } => crate::cmd::sync::retry(&home, &resolved, explicit).map(|_| 0),
    }
}

fn cmd_profile(project_flag: Option<&Path>, args: ProfileArgs) -> Result<()> {
    // The profile can be inspected outside a project too.
    let project = pipeline::optional_project(project_flag)?;
    if args.pipeline.is_some() && project.is_none() {
        bail!("--pipeline needs a project: no .sparkwing/sparkwing.yaml here or above; pass --project DIR");
    }
    let resolved = pipeline::resolve_profile(
        project.as_ref(),
        &Request {
            flag: args.profile.as_deref(),
            pipeline: args.pipeline.as_deref(),
            local_only_flag: args.local_only,
        },
    )?;
    let home = home_dir()?;
    if args.output.format == Format::Json {
        return print_json(&resolved.to_json(&home));
    }
    out().write_all(profile::render_text(&resolved, &home).as_bytes())?;
    Ok(())
}
