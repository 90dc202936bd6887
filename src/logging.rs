//! Logs of sparkwing's long-running processes (`sync daemon`, the dashboard
//! server, `sparkwing-web`): `tracing` events with levels and fields, on
//! stderr, as human lines or JSON lines (`--log-format json`, one object per
//! line for log shippers).
//!
//! What is shown: `RUST_LOG` when set (`target=level` pairs and a default
//! level, e.g. `info,sparkwing_sync=debug`); else sparkwing's own crates at
//! the command's level: `info` for the long-running commands and nothing
//! for the others (their output is what they print), one step more per
//! `-v`, `warn` with `-q` (which never makes a silent command speak). Every
//! line is cleaned on its way out ([`Scrubbed`]), whichever crate logged it.

use std::str::FromStr;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human lines: time, level, message, fields.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The crates whose events are shown by default.
const OURS: [&str; 4] = [
    "sparkwing",
    "sparkwing_sync",
    "sparkwing_outbox",
    "sparkwing_web",
];

/// The level a command logs at: `service` for the long-running ones.
pub fn level(service: bool, verbose: u8, quiet: bool) -> LevelFilter {
    match (quiet, service, verbose) {
        // Quieter, never louder: a command that logs nothing stays silent.
        (true, true, _) => LevelFilter::WARN,
        (true, false, _) => LevelFilter::OFF,
        (false, true, 0) => LevelFilter::INFO,
        (false, false, 0) => LevelFilter::OFF,
        (false, true, 1) | (false, false, 1) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The filter: `RUST_LOG` if it is set and parses, else sparkwing's crates
/// at `default`. A `RUST_LOG` that does not parse is reported once and
/// ignored.
pub fn filter(rust_log: Option<&str>, default: LevelFilter) -> (Targets, Option<String>) {
    let ours = || Targets::new().with_targets(OURS.iter().map(|t| (*t, default)));
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (ours(), None),
        Some(s) => match Targets::from_str(s) {
            Ok(t) => (t, None),
            Err(e) => (
                ours(),
                Some(format!(
                    "RUST_LOG={:?} is not understood ({e}); write e.g. `info` or `info,sparkwing_sync=debug`",
                    crate::util::one_line(s, 200)
                )),
            ),
        },
    }
}

/// Where log lines go: stderr, each event cleaned on its way out
/// (`util::clean`: URL credentials and query strings, secret pairs and
/// control characters), whichever crate wrote it. `RUST_LOG` can let other
/// crates' events through (object_store logs the URLs it retries, query
/// strings included): none of them reaches the terminal unscrubbed.
struct Scrubbed;

/// One event's bytes, written cleaned when the formatter is done with it.
struct ScrubbedEvent(Vec<u8>);

impl std::io::Write for ScrubbedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedEvent {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = cleaned(&self.0);
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
    }
}

/// A formatted event as it may reach the terminal.
fn cleaned(event: &[u8]) -> String {
    crate::util::clean(&String::from_utf8_lossy(event))
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Scrubbed {
    type Writer = ScrubbedEvent;
    fn make_writer(&'a self) -> ScrubbedEvent {
        ScrubbedEvent(Vec::new())
    }
}

/// Installs the process's subscriber (once; later calls do nothing).
pub fn init(level: LevelFilter, format: LogFormat) {
    let (targets, problem) = filter(std::env::var("RUST_LOG").ok().as_deref(), level);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(Scrubbed)
        .with_ansi(false)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(fmt.with_filter(targets))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(Scrubbed)
                    .json()
                    .flatten_event(true)
                    .with_filter(targets),
            )
            .try_init(),
    };
    if let (Ok(()), Some(p)) = (installed, problem) {
        tracing::warn!("{p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Other crates' events (let through by RUST_LOG) are cleaned too:
    /// a URL's user info and query string, and escape sequences.
    #[test]
    fn every_event_is_cleaned_on_its_way_out() {
        let event = b"2026-11-29T06:00:00Z  INFO retrying url=https://acct.blob.core.windows.net/ctr/x?sv=1&sig=SECRETSIG user=http://u:pw@h/ \x1b[2J\n";
        let out = cleaned(event);
        assert!(!out.contains("SECRETSIG") && !out.contains("u:pw"), "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(
            out.contains("acct.blob.core.windows.net/ctr/x") && out.ends_with('\n'),
            "{out}"
        );
        let json = br#"{"level":"WARN","error":"GET http://h/k?token=SECRETTOKEN failed","profile":"team"}"#;
        let out = cleaned(json);
        assert!(!out.contains("SECRETTOKEN"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("still one JSON object");
        assert_eq!(v["profile"], "team");
    }

    #[test]
    fn levels_follow_the_command_and_the_flags() {
        assert_eq!(level(true, 0, false), LevelFilter::INFO);
        assert_eq!(level(false, 0, false), LevelFilter::OFF);
        assert_eq!(level(false, 1, false), LevelFilter::DEBUG);
        assert_eq!(level(true, 1, false), LevelFilter::DEBUG);
        assert_eq!(level(true, 2, false), LevelFilter::TRACE);
        assert_eq!(level(true, 0, true), LevelFilter::WARN);
        assert_eq!(
            level(false, 0, true),
            LevelFilter::OFF,
            "-q never adds lines"
        );
    }

    #[test]
    fn rust_log_overrides_and_a_bad_one_is_named_not_fatal() {
        use tracing::Level;
        let (t, p) = filter(None, LevelFilter::INFO);
        assert!(p.is_none());
        assert!(t.would_enable("sparkwing_sync::actor", &Level::INFO));
        assert!(!t.would_enable("sparkwing_sync::actor", &Level::DEBUG));
        assert!(!t.would_enable("hyper", &Level::INFO), "others stay quiet");
        let (t, p) = filter(Some("warn,sparkwing_sync=debug"), LevelFilter::INFO);
        assert!(p.is_none());
        assert!(t.would_enable("sparkwing_sync::actor", &Level::DEBUG));
        assert!(!t.would_enable("sparkwing::cmd::sync", &Level::INFO));
        assert!(t.would_enable("hyper", &Level::WARN));
        let (t, p) = filter(Some("sparkwing=loud"), LevelFilter::INFO);
        assert!(p.is_some_and(|p| p.contains("RUST_LOG=\"sparkwing=loud\" is not understood")));
        assert!(
            t.would_enable("sparkwing::cmd::sync", &Level::INFO),
            "the default applies"
        );
    }
}
