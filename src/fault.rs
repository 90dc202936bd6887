//! Exit codes by meaning, and which errors mean "sparkwing itself could
//! not work".
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a run failed (a job failed), `sync verify` found a difference, `sync flush` timed out |
//! | 2 | invalid input (pipeline, profile, flags, an unknown run, credentials or a bucket a remote refuses): nothing ran |
//! | 69 | a remote could not be read (unreachable, timed out, a server error, or an object it cannot serve): nothing changed; try again |
//! | 74 | sparkwing itself could not work: its own files (`state.db`, `outbox.db`, logs, the cache) hit a full disk, missing permissions or damage, or it failed during a run |
//! | 130 | a run was cancelled (Ctrl-C, SIGTERM) |
//!
//! 74 is `EX_IOERR` of `sysexits.h`. The more obvious 3 is taken: `sparkwing
//! dashboard status` exits 3 when the dashboard is not running, as an LSB
//! init script's `status` does.
//!
//! The classification looks at meaning, not at the text: an error is
//! [`COULD_NOT_WORK`] when its chain holds a [`StorageFault`] (every store
//! maps its low-level errors into one), a [`RunAborted`] (a run that had
//! started and could not go on), any other SQLite or outbox error (sparkwing
//! uses SQLite only for its own databases, so that is a bug or a storage
//! problem, never bad input), or an I/O error that is a full disk or a
//! read-only filesystem. A remote's failure keeps its class to the end (a
//! [`sparkwing_sync::TargetError`] in the chain): credentials or a set-up
//! the remote refuses are input to fix (2); a remote that could not answer
//! is [`REMOTE_UNAVAILABLE`] (69, `EX_UNAVAILABLE`). Everything else is
//! input the user can fix: 2.

use std::fmt;

use sparkwing_outbox::ErrorClass;
use sparkwing_schema::StorageFault;

pub const SUCCESS: u8 = 0;
pub const RUN_FAILED: u8 = 1;
pub const INVALID_INPUT: u8 = 2;
pub const REMOTE_UNAVAILABLE: u8 = 69;
pub const COULD_NOT_WORK: u8 = 74;
pub const CANCELLED: u8 = 130;

/// The exit codes as `--help` and README state them.
pub const EXIT_CODES_HELP: &str = "Exit status:\n  0    success\n  1    a run failed (a job failed); `sync verify` found a difference; `sync flush` timed out\n  2    invalid input (pipeline, profile, flags, an unknown run, credentials or a bucket\n       a remote refuses): nothing ran\n  69   a remote could not be read (unreachable, timed out, a server error): try again\n  74   sparkwing itself could not work: a full disk, missing permissions or a damaged\n       state.db under SPARKWING_HOME, or a failure of its own during a run (the run is\n       then recorded as failed, with the reason); the message names the file and the fix\n  130  the run was cancelled (Ctrl-C, SIGTERM)\n  (`dashboard status` exits 3 when the dashboard is not running)";

/// The context of an error that stopped a run after it was recorded as
/// started: whether its failure could be recorded in `state.db`.
#[derive(Debug)]
pub struct RunAborted {
    pub run: String,
    /// `Err(why)` when recording the failure failed too.
    pub recorded: Result<(), String>,
}

impl fmt::Display for RunAborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.recorded {
            Ok(()) => write!(
                f,
                "run {} stopped, recorded as failed with this reason",
                self.run
            ),
            Err(why) => write!(
                f,
                "run {} stopped, and recording that failed too ({why}); it will show as interrupted",
                self.run
            ),
        }
    }
}

/// Whether `e` is a failure of one of sparkwing's own files.
pub fn is_storage(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StorageFault>().is_some() || e.chain().any(|c| c.is::<StorageFault>())
}

/// Whether `e` is a damaged database: every later call fails the same way,
/// so it is not worth going on (unlike a full disk, where reads still work).
pub fn is_damaged(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StorageFault>()
        .is_some_and(|f| f.problem == sparkwing_schema::Problem::Damaged)
}

/// The exit code of a command that ended with `e`.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if is_storage(e) || e.downcast_ref::<RunAborted>().is_some() {
        return COULD_NOT_WORK;
    }
    let own = e.chain().any(|c| {
        c.is::<rusqlite::Error>()
            || c.is::<sparkwing_outbox::OutboxError>()
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                use std::io::ErrorKind as K;
                matches!(
                    io.kind(),
                    K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem | K::FileTooLarge
                )
            })
    });
    if own {
        return COULD_NOT_WORK;
    }
    let remote = e
        .chain()
        .find_map(|c| c.downcast_ref::<sparkwing_sync::TargetError>());
    match remote.map(|t| t.class) {
        Some(ErrorClass::Auth | ErrorClass::Config) | None => INVALID_INPUT,
        Some(_) => REMOTE_UNAVAILABLE,
    }
}

/// `e` as a [`RunAborted`] error for `run`, after recording the run as
/// failed with `e` as the reason (best effort: saying so when that fails).
pub fn abort_run(store: &crate::local::store::Store, run: &str, e: anyhow::Error) -> anyhow::Error {
    let reason = crate::profile::scrub(&format!("{e:#}"));
    let recorded = store.run_failed(run, &reason).map_err(|r| {
        let why = format!("{r:#}");
        if why == reason {
            "the same error".to_string()
        } else {
            why
        }
    });
    e.context(RunAborted {
        run: run.to_string(),
        recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};
    use sparkwing_schema::Problem;
    use std::path::Path;

    /// A remote's failure keeps its class through every context to the
    /// exit code.
    #[test]
    fn remote_failures_exit_by_their_class() {
        use sparkwing_sync::TargetError;
        let down = anyhow::Error::new(TargetError::transient("connection refused"))
            .context("reading the runs of s3:b/state");
        assert_eq!(exit_code(&down), REMOTE_UNAVAILABLE);
        let too_big = anyhow::Error::new(TargetError::permanent("object is 9 GB"));
        assert_eq!(exit_code(&too_big), REMOTE_UNAVAILABLE);
        for refused in [
            TargetError::auth("403"),
            TargetError::config("no such bucket"),
        ] {
            let e = anyhow::Error::new(refused).context("x");
            assert_eq!(exit_code(&e), INVALID_INPUT);
        }
    }

    #[test]
    fn storage_faults_and_aborted_runs_are_could_not_work_through_contexts() {
        let full = anyhow!(StorageFault::new(
            Problem::DiskFull,
            Path::new("/h/state.db"),
            "full"
        ));
        let e = Err::<(), _>(full)
            .context("recording a step")
            .context("job a")
            .unwrap_err();
        assert_eq!(exit_code(&e), COULD_NOT_WORK);
        let aborted = anyhow!("a job task failed").context(RunAborted {
            run: "R".into(),
            recorded: Ok(()),
        });
        assert_eq!(exit_code(&aborted), COULD_NOT_WORK);
        // Inside another error's chain (an outbox error's source).
        #[derive(Debug)]
        struct Wrap(StorageFault);
        impl fmt::Display for Wrap {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "wrapped")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = StorageFault::new(Problem::Damaged, Path::new("/h/outbox.db"), "x");
        assert_eq!(exit_code(&anyhow!(Wrap(inner))), COULD_NOT_WORK);
    }

    #[test]
    fn sqlite_and_resource_errors_are_could_not_work_input_errors_are_not() {
        let sql = anyhow!(rusqlite::Error::QueryReturnedNoRows).context("reading runs");
        assert_eq!(exit_code(&sql), COULD_NOT_WORK);
        let full = anyhow!(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(exit_code(&full), COULD_NOT_WORK);
        let rofs = anyhow!(std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem));
        assert_eq!(exit_code(&rofs), COULD_NOT_WORK);
        // Reading the user's own files: input they can fix.
        let denied = anyhow!(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            .context("reading .sparkwing/sparkwing.yaml");
        assert_eq!(exit_code(&denied), INVALID_INPUT);
        assert_eq!(
            exit_code(&anyhow!("profile \"x\" not found")),
            INVALID_INPUT
        );
    }

    #[test]
    fn an_unrecorded_failure_says_so_once() {
        let a = RunAborted {
            run: "R".into(),
            recorded: Err("the same error".into()),
        };
        assert_eq!(
            a.to_string(),
            "run R stopped, and recording that failed too (the same error); it will show as interrupted"
        );
    }
}
