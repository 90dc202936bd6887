//! The JSON documents that describe a run: `runs list/show -o json` print
//! them, and the run summary replicated to a remote (`run.json`) is one.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use crate::local::store::{RunRow, Store};
use crate::run::logs;
use crate::util::{now_ms, rfc3339_ms};

/// Milliseconds between two times; to now while still open.
pub fn duration_of(start: Option<i64>, end: Option<i64>) -> Option<i64> {
    match (start, end) {
        (Some(s), Some(e)) => Some(e - s),
        (Some(s), None) => Some(now_ms() - s),
        _ => None,
    }
}

/// The `needs` of a job in a run document (local or another runner's),
/// skipping anything that is not a name.
pub fn needs_of(job: &Value) -> Vec<&str> {
    job["needs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One run's row, with stable field names.
pub fn run_json(r: &RunRow) -> Value {
    json!({
        "id": r.id,
        "pipeline": r.pipeline,
        "status": r.shown_status(),
        "profile": r.profile,
        "host": r.host,
        "pid": r.pid,
        "project_dir": r.project_dir,
        "started_at": rfc3339_ms(r.started_at),
        "finished_at": r.finished_at.map(rfc3339_ms),
        "duration_ms": duration_of(Some(r.started_at), r.finished_at),
        "error": r.error,
    })
}

/// A run with its jobs and steps. `home` adds local log paths (left out of
/// the copy that goes to a remote, where they mean nothing).
pub fn run_document(store: &Store, r: &RunRow, home: Option<&Path>) -> Result<Value> {
    let jobs = store.jobs(&r.id)?;
    let steps = store.steps(&r.id)?;
    let jobs_v: Vec<Value> = jobs
        .iter()
        .map(|j| {
            let mut v = serde_json::to_value(j).unwrap_or_default();
            v["duration_ms"] = json!(duration_of(j.started_at, j.finished_at));
            if let Some(home) = home {
                v["log"] = json!(logs::log_path(home, &r.id, &j.name));
            }
            v["steps"] = json!(steps
                .iter()
                .filter(|s| s.job == j.name)
                .map(|s| {
                    let mut sv = serde_json::to_value(s).unwrap_or_default();
                    sv["duration_ms"] = json!(duration_of(s.started_at, s.finished_at));
                    sv
                })
                .collect::<Vec<_>>());
            v
        })
        .collect();
    let mut v = run_json(r);
    if let Some(home) = home {
        v["logs_dir"] = json!(home.join("runs").join(&r.id));
    }
    v["jobs"] = json!(jobs_v);
    Ok(v)
}
