//! The host-local concurrency gate: at most N `sparkwing run` processes
//! run at once per `SPARKWING_HOME` (one per machine, normally).
//!
//! A slot is an exclusive `flock` on `SPARKWING_HOME/gate/slot-<i>.lock`:
//! the kernel holds it, so a holder that crashes or is killed frees its slot
//! at once. Waiting runs are rows of `state.db` with status `waiting`, and
//! they are admitted in arrival order (the oldest live waiting run on this
//! host tries for a slot; the others wait behind it), which also makes them
//! visible in `sparkwing runs list`.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::local::store::Store;
use crate::util::{human_duration, pid_alive};

/// A held run slot; dropping it (or the process dying) frees it.
pub struct Slot {
    _file: File,
    pub index: usize,
}

/// The limit: `SPARKWING_MAX_RUNS`, else `max_runs:` in the user profile
/// file, else the number of CPUs.
pub fn max_runs(from_user_file: Option<u32>) -> Result<usize> {
    if let Ok(v) = std::env::var("SPARKWING_MAX_RUNS") {
        return match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => bail!("SPARKWING_MAX_RUNS={v:?} is not a positive whole number; set it to how many runs may run at once on this machine"),
        };
    }
    if let Some(n) = from_user_file {
        return Ok(n as usize);
    }
    Ok(std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2))
}

/// Waits for a slot for `run` (already recorded as `waiting`), printing
/// where it stands in line while it waits.
pub fn acquire(home: &Path, store: &Store, run: &str, limit: usize) -> Result<Slot> {
    let dir = home.join("gate");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let host = crate::util::hostname();
    let start = Instant::now();
    let mut said: Option<usize> = None;
    let mut last_note = Instant::now();
    loop {
        // Only the oldest live waiting run on this host may take a slot.
        let line: Vec<String> = store
            .waiting_runs(&host)?
            .into_iter()
            .filter(|(_, pid)| pid_alive(*pid))
            .map(|(id, _)| id)
            .collect();
        let position = line.iter().position(|id| id == run).unwrap_or(0);
        if position == 0 {
            for i in 0..limit {
                if let Some(file) = crate::util::try_flock(&dir.join(format!("slot-{i}.lock")))? {
                    if said.is_some() {
                        crate::say!(
                            "sparkwing: run slot {} free after {}; starting",
                            i + 1,
                            human_duration(start.elapsed())
                        );
                    }
                    return Ok(Slot {
                        _file: file,
                        index: i,
                    });
                }
            }
        }
        if said != Some(position) || last_note.elapsed() > Duration::from_secs(30) {
            crate::say!(
                "sparkwing: waiting for a run slot: all {limit} in use on this machine, {position} run(s) ahead in line \
                 (waited {}); SPARKWING_MAX_RUNS sets the limit",
                human_duration(start.elapsed())
            );
            said = Some(position);
            last_note = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
