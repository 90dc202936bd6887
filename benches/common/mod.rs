//! Helpers shared by the bench binaries.
#![allow(dead_code)]

use std::time::Duration;

use sparkwing_outbox::{NewEntry, Payload};

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A fixed-seed shuffle (xorshift), so runs are comparable.
pub fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// A backlog like an offline laptop's: 20 runs, each a state stream and
/// five log streams of 4 KiB chunks. As the replicator does, log chunks
/// refer to byte ranges of log files (in `logs`); events are inline.
pub fn backlog_entries(backlog: usize, logs: &std::path::Path) -> Vec<NewEntry> {
    let per_run = backlog / 20;
    let log_file = logs.join("job.log");
    std::fs::write(&log_file, vec![b'x'; 4096 * per_run]).unwrap();
    let mut all = Vec::new();
    for r in 0..20 {
        let run = format!("RUN{r:04}");
        for i in 0..per_run {
            all.push(if i % 10 == 0 {
                NewEntry {
                    stream: format!("state/{run}"),
                    seq: i as i64,
                    op: "state.event".into(),
                    subject: run.clone(),
                    payload: Payload::Inline(format!("{{\"seq\":{i}}}\n").into_bytes()),
                }
            } else {
                let job = format!("job{}", i % 5);
                NewEntry {
                    stream: format!("log/{run}/{job}"),
                    seq: i as i64,
                    op: "log.chunk".into(),
                    subject: format!("{run}/{job}"),
                    payload: Payload::File {
                        path: log_file.clone(),
                        offset: 4096 * i as u64,
                        len: 4096,
                    },
                }
            });
        }
    }
    all
}
