//! Job logs: `SPARKWING_HOME/runs/<runID>/<job>.log`, written as output
//! arrives (see `exec`), and `sparkwing runs logs` to read, tail and follow
//! them.

use crate::status::RunStatus;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::local::store::{RunRow, Store};

pub fn log_path(home: &Path, run: &str, job: &str) -> PathBuf {
    run_dir(home, run).join(format!("{job}.log"))
}

/// A run's folder of logs: `SPARKWING_HOME/runs/<run>`.
pub fn run_dir(home: &Path, run: &str) -> PathBuf {
    home.join("runs").join(run)
}

/// Byte offset where the last `n` lines of the file start.
fn tail_offset(f: &mut File, n: usize) -> io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    // A trailing newline ends the last line; it does not start a new one.
    let mut skip_last = true;
    while pos > 0 {
        let read = (pos as usize).min(buf.len());
        pos -= read as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..read])?;
        for i in (0..read).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    skip_last = false;
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        skip_last = false;
    }
    Ok(0)
}

/// One job's log being read: where we are and any partial line held back.
struct Reader {
    job: String,
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Reader {
    /// Emits what was appended since the last call. Partial lines are held
    /// back unless `flush` (the run is over).
    fn pump(&mut self, out: &mut impl Write, prefix: bool, flush: bool) -> io::Result<()> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            self.partial.extend_from_slice(&buf[..n]);
            let last_nl = self.partial.iter().rposition(|&b| b == b'\n');
            if let Some(end) = last_nl {
                write_lines(out, &self.job, &self.partial[..=end], prefix)?;
                self.partial.drain(..=end);
            }
        }
        if flush && !self.partial.is_empty() {
            let mut rest = std::mem::take(&mut self.partial);
            rest.push(b'\n');
            write_lines(out, &self.job, &rest, prefix)?;
        }
        Ok(())
    }
}

fn write_lines(out: &mut impl Write, job: &str, bytes: &[u8], prefix: bool) -> io::Result<()> {
    if !prefix {
        return out.write_all(bytes);
    }
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        write!(out, "[{job}] ")?;
        out.write_all(line)?;
    }
    Ok(())
}

pub struct LogRequest<'a> {
    pub job: Option<&'a str>,
    pub tail: Option<usize>,
    pub follow: bool,
}

/// Prints a run's logs, following them while the run is in progress.
pub fn print(store: &Store, home: &Path, run: &RunRow, req: &LogRequest) -> Result<()> {
    let jobs = store.jobs(&run.id)?;
    let names: Vec<String> = match req.job {
        Some(j) => {
            if !jobs.iter().any(|r| r.name == j) {
                bail!(
                    "run {} has no job `{j}`; its jobs: {}",
                    run.id,
                    jobs.iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            vec![j.to_string()]
        }
        None => jobs.iter().map(|r| r.name.clone()).collect(),
    };
    let mut readers: Vec<Reader> = Vec::new();
    for name in &names {
        let path = log_path(home, &run.id, name);
        let offset = match (req.tail, File::open(&path)) {
            (Some(n), Ok(mut f)) => tail_offset(&mut f, n)?,
            _ => 0,
        };
        readers.push(Reader {
            job: name.clone(),
            path,
            offset,
            partial: Vec::new(),
        });
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let multi = readers.len() > 1;
    if !req.follow {
        for r in &mut readers {
            if multi {
                writeln!(out, "==> {} <==", r.job)?;
            }
            r.pump(&mut out, false, true)?;
        }
        return Ok(());
    }
    // Follow: poll the files; stop once the run is over and all is read.
    loop {
        let status = store.find_run(&run.id)?.shown_status().to_string();
        let over = RunStatus::parse(&status) != Some(RunStatus::Running);
        for r in &mut readers {
            r.pump(&mut out, multi, over)?;
        }
        out.flush()?;
        if over {
            if status == RunStatus::Interrupted.as_str() {
                crate::say!(
                    "sparkwing: run {} was interrupted (its process is gone); its log ends here",
                    run.id
                );
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_offset_finds_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(tail_offset(&mut f, 1).unwrap(), 4);
        assert_eq!(tail_offset(&mut f, 2).unwrap(), 2);
        assert_eq!(tail_offset(&mut f, 9).unwrap(), 0);
        std::fs::write(&p, "a\nb\nc").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(tail_offset(&mut f, 1).unwrap(), 4);
        let big: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &big).unwrap();
        let mut f = File::open(&p).unwrap();
        let off = tail_offset(&mut f, 3).unwrap() as usize;
        assert_eq!(&big[off..], "line 99997\nline 99998\nline 99999\n");
    }
}
