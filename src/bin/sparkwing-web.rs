//! `sparkwing-web`: the dashboard, read-only, over the surfaces its specs
//! name (a Mode 1 `state.db`, a shared directory, or a bucket), with no
//! outbox and no local runs of its own. Thin: parse, then `web::serve`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "sparkwing-web",
    version,
    about = "Serve the sparkwing dashboard, read-only, from a state, logs and cache surface.",
    after_help = "Spec forms:\n  sqlite:///path/state.db     a SPARKWING_HOME's state (logs default to that home's runs/)\n  /path or file:///path       a directory a `filesystem` surface writes to\n  s3://bucket/prefix          S3 or an S3-compatible server: AWS_REGION, AWS_ACCESS_KEY_ID,\n                              AWS_SECRET_ACCESS_KEY, and SPARKWING_S3_ENDPOINT for a non-AWS endpoint\n  gs://bucket/prefix          GCS: GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT),\n                              SPARKWING_GCS_ENDPOINT and SPARKWING_GCS_ANONYMOUS=1 for an emulator\n  az://container/prefix       Azure Blob: AZURE_STORAGE_ACCOUNT_NAME and a key or token\n                              (Azurite: AZURE_STORAGE_USE_EMULATOR=true, AZURITE_BLOB_STORAGE_URL)\n\nExample (Mode 2):\n  sparkwing-web --state-spec s3://my-org-sparkwing/state \\\n    --logs-spec s3://my-org-sparkwing/logs --artifacts-spec s3://my-org-sparkwing/cache"
)]
struct Args {
    /// Where run state is: sqlite:///path/state.db, a directory, or s3:// gs:// az://.
    #[arg(long, value_name = "SPEC")]
    state_spec: String,
    /// Where job logs are (a directory or a bucket prefix).
    #[arg(long, value_name = "SPEC")]
    logs_spec: Option<String>,
    /// Where cached outputs are (a directory or a bucket prefix): shows each cached job's files.
    #[arg(long, value_name = "SPEC")]
    artifacts_spec: Option<String>,
    /// Address to listen on (IP:PORT; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = sparkwing::cmd::dashboard::DEFAULT_ADDR)]
    addr: String,
    /// More detail in the logs (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors in the logs.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    quiet: bool,
    /// Log lines as human text or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = sparkwing::logging::LogFormat::Text, value_name = "FORMAT")]
    log_format: sparkwing::logging::LogFormat,
}

fn run(args: Args) -> Result<()> {
    sparkwing::logging::init(
        sparkwing::logging::level(true, args.verbose, args.quiet),
        args.log_format,
    );
    let addr = sparkwing::cmd::dashboard::parse_addr(&args.addr)?;
    let limits = sparkwing::web::Limits::from_env()?;
    let rt = sparkwing::util::runtime()?;
    rt.block_on(async move {
        let src = sparkwing::web::source::Source::from_specs(
            &args.state_spec,
            args.logs_spec.as_deref(),
            args.artifacts_spec.as_deref(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow!("--addr {addr}: cannot listen: {e}"))?;
        let bound = listener.local_addr()?;
        if !bound.ip().is_loopback() {
            eprintln!("sparkwing-web: warning: listening on {bound}, reachable from other machines; the dashboard is read-only and has no login");
        }
        println!("sparkwing-web: {} ({}); Ctrl-C to stop", sparkwing::web::url_of(bound), src.label);
        let shutdown = async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        sparkwing::web::serve(listener, Arc::new(src), limits, shutdown).await
    })
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "sparkwing-web: {}",
                sparkwing::util::clean(&format!("{e:#}"))
            );
            ExitCode::from(sparkwing::fault::exit_code(&e))
        }
    }
}
