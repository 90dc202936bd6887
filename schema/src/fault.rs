//! What a failure of one of sparkwing's own files means to the person
//! running it: the problem by meaning, the file, and what to do.
//!
//! Both databases (`state.db`, `outbox.db`) and the plain files sparkwing
//! writes under `SPARKWING_HOME` (logs, the cache's blobs) map their low-level
//! errors (`rusqlite::Error`, `std::io::Error`) into a [`StorageFault`] in one
//! place each, so a full disk says "free space on …" whichever file hit it,
//! and the binary can give every such failure one exit code.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong with a file, by what the user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// No space (or quota) left on the filesystem holding the file.
    DiskFull,
    /// The file is not a database, or its pages are corrupt.
    Damaged,
    /// The file or its directory cannot be written (permissions, a
    /// read-only filesystem).
    Denied,
    /// Another process held the database's lock past the busy timeout.
    Locked,
    /// The device or filesystem failed (`EIO`).
    Io,
    /// Anything else (the path is a file where a directory should be, …):
    /// the file and the system's words.
    Other,
}

/// A failure of one of sparkwing's own files. Its text names the file and
/// the fix; the low-level error is kept as `detail` (text, not a source, so
/// an error chain prints it once).
#[derive(Debug, Clone)]
pub struct StorageFault {
    pub problem: Problem,
    pub path: PathBuf,
    pub detail: String,
    /// Said after the fix, e.g. what moving a damaged file aside loses.
    note: Option<String>,
}

impl StorageFault {
    pub fn new(problem: Problem, path: &Path, detail: impl Into<String>) -> StorageFault {
        StorageFault {
            problem,
            path: path.to_path_buf(),
            detail: detail.into(),
            note: None,
        }
    }

    /// Adds a sentence said after the fix.
    pub fn with_note(mut self, note: impl Into<String>) -> StorageFault {
        self.note = Some(note.into());
        self
    }

    /// The meaning of a failed SQLite call on the database at `path`, or
    /// `None` when it is not a storage problem (an SQL error, a constraint:
    /// a bug, reported as it is).
    pub fn from_sqlite(path: &Path, e: &rusqlite::Error) -> Option<StorageFault> {
        use rusqlite::ErrorCode as C;
        let problem = match e.sqlite_error_code()? {
            C::DiskFull => Problem::DiskFull,
            C::DatabaseCorrupt | C::NotADatabase => Problem::Damaged,
            C::ReadOnly | C::PermissionDenied | C::CannotOpen => Problem::Denied,
            C::DatabaseBusy | C::DatabaseLocked => Problem::Locked,
            C::SystemIoFailure => Problem::Io,
            _ => return None,
        };
        let detail = match e {
            rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
            other => other.to_string(),
        };
        Some(StorageFault::new(problem, path, detail))
    }

    /// The meaning of a failed file operation on `path`.
    pub fn from_io(path: &Path, e: &std::io::Error) -> StorageFault {
        use std::io::ErrorKind as K;
        let problem = match e.kind() {
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => Problem::DiskFull,
            K::PermissionDenied | K::ReadOnlyFilesystem => Problem::Denied,
            // EIO is 5 on every Unix; it has no ErrorKind of its own.
            _ if e.raw_os_error() == Some(5) => Problem::Io,
            _ => Problem::Other,
        };
        StorageFault::new(problem, path, e.to_string())
    }

    /// The directory whose filesystem or permissions are at stake.
    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => &self.path,
        }
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, dir, detail) = (self.path.display(), self.dir().display(), &self.detail);
        match self.problem {
            Problem::DiskFull => write!(
                f,
                "{path}: the disk is full ({detail}); free space on the filesystem holding {dir} and run again"
            )?,
            Problem::Damaged => write!(
                f,
                "{path} is damaged ({detail}): move it aside to start fresh (with its -wal and -shm files, e.g. `mv {path} {path}.damaged`)"
            )?,
            Problem::Denied => write!(
                f,
                "{path}: cannot write it ({detail}); make it and {dir} writable by the user running sparkwing, or set SPARKWING_HOME to a directory you own"
            )?,
            Problem::Locked => write!(
                f,
                "{path} stayed locked by another process ({detail}); wait for that process to finish (`fuser {path}` names it) and run again"
            )?,
            Problem::Io => write!(
                f,
                "{path}: I/O error ({detail}); check the device holding {dir} (`dmesg`) and run again"
            )?,
            Problem::Other => write!(f, "{path}: {detail}")?,
        }
        if let Some(n) = &self.note {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StorageFault {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_map_by_meaning() {
        let p = Path::new("/h/state.db");
        let fail = |code: i32, msg: &str| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(msg.into()))
        };
        let full = StorageFault::from_sqlite(p, &fail(13, "database or disk is full")).unwrap();
        assert_eq!(full.problem, Problem::DiskFull);
        assert_eq!(
            full.to_string(),
            "/h/state.db: the disk is full (database or disk is full); free space on the filesystem holding /h and run again"
        );
        let bad = StorageFault::from_sqlite(p, &fail(26, "file is not a database")).unwrap();
        assert_eq!(bad.problem, Problem::Damaged);
        assert!(bad.to_string().starts_with("/h/state.db is damaged"));
        assert_eq!(
            StorageFault::from_sqlite(p, &fail(11, "malformed"))
                .unwrap()
                .problem,
            Problem::Damaged
        );
        assert_eq!(
            StorageFault::from_sqlite(p, &fail(8, "readonly"))
                .unwrap()
                .problem,
            Problem::Denied
        );
        assert_eq!(
            StorageFault::from_sqlite(p, &fail(5, "busy"))
                .unwrap()
                .problem,
            Problem::Locked
        );
        // A constraint is a bug, not a storage problem.
        assert!(StorageFault::from_sqlite(p, &fail(19, "UNIQUE")).is_none());
        assert!(StorageFault::from_sqlite(p, &rusqlite::Error::QueryReturnedNoRows).is_none());
    }

    #[test]
    fn io_kinds_map_by_meaning_and_notes_follow_the_fix() {
        let p = Path::new("/h/runs/R/a.log");
        let e = |k| std::io::Error::from(k);
        use std::io::ErrorKind as K;
        assert_eq!(
            StorageFault::from_io(p, &e(K::StorageFull)).problem,
            Problem::DiskFull
        );
        assert_eq!(
            StorageFault::from_io(p, &e(K::QuotaExceeded)).problem,
            Problem::DiskFull
        );
        assert_eq!(
            StorageFault::from_io(p, &e(K::PermissionDenied)).problem,
            Problem::Denied
        );
        assert_eq!(
            StorageFault::from_io(p, &e(K::ReadOnlyFilesystem)).problem,
            Problem::Denied
        );
        assert_eq!(
            StorageFault::from_io(p, &std::io::Error::from_raw_os_error(5)).problem,
            Problem::Io
        );
        let other = StorageFault::from_io(p, &e(K::NotADirectory));
        assert_eq!(other.problem, Problem::Other);
        assert_eq!(other.to_string(), "/h/runs/R/a.log: not a directory");
        let s = StorageFault::from_io(p, &e(K::StorageFull))
            .with_note("the log ends here")
            .to_string();
        assert!(
            s.contains("free space on the filesystem holding /h/runs/R"),
            "{s}"
        );
        assert!(s.ends_with("; the log ends here"), "{s}");
    }
}
