//! The object layout of a remote (DESIGN "The remote layouts"), spelled
//! here and nowhere else: the keys writes go to ([`crate::Op::key`]) and
//! the keys reads look for, relative to a surface's prefix.
//!
//! - state: `runs/<run>/run.json`, `runs/<run>/events/<first_seq:020>.ndjson`
//! - logs: `<run>/<job>/<seq:010>.log`
//! - cache: `cas/<sha256[..2]>/<sha256>`, `keys/<cache key>.json`

/// The folder of run documents and events (its children are run ids).
pub const RUNS: &str = "runs";

/// A run's document.
pub fn run_document(run: &str) -> String {
    format!("{RUNS}/{run}/run.json")
}

/// The prefix of a run's event segments.
pub fn events_prefix(run: &str) -> String {
    format!("{RUNS}/{run}/events/")
}

/// One event segment, named by its first event's seq.
pub fn event_segment(run: &str, first_seq: i64) -> String {
    format!("{}{first_seq:020}.ndjson", events_prefix(run))
}

/// The seq an event segment's key names (20 digits), or `None`.
pub fn segment_seq(key: &str) -> Option<u64> {
    fixed_seq(key, ".ndjson", 20)
}

/// The prefix of a job's log chunks.
pub fn log_prefix(run: &str, job: &str) -> String {
    format!("{run}/{job}/")
}

/// The prefix of every log chunk of a run (all its jobs).
pub fn run_logs_prefix(run: &str) -> String {
    format!("{run}/")
}

/// One log chunk.
pub fn log_chunk(run: &str, job: &str, seq: i64) -> String {
    format!("{}{seq:010}.log", log_prefix(run, job))
}

/// The seq a log chunk's key names (10 digits), or `None`.
pub fn chunk_seq(key: &str) -> Option<u64> {
    fixed_seq(key, ".log", 10)
}

/// A cache key's manifest.
pub fn manifest(key: &str) -> String {
    format!("keys/{key}.json")
}

/// A cache blob: `cas/<sha[..2]>/<sha>`.
pub fn blob(sha256: &str) -> String {
    format!("cas/{}/{sha256}", &sha256[..2.min(sha256.len())])
}

/// The marks a cache surface's garbage collection leaves for the next one
/// ([`crate::gc`]).
pub const GC_CANDIDATES: &str = "gc/candidates.json";

/// The number a key's last segment names: exactly `width` digits then
/// `suffix`; `None` for anything else (a hostile or stray key).
pub fn fixed_seq(key: &str, suffix: &str, width: usize) -> Option<u64> {
    let digits = key.rsplit('/').next()?.strip_suffix(suffix)?;
    if digits.len() != width || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_their_numbers() {
        assert_eq!(run_document("R"), "runs/R/run.json");
        assert_eq!(
            event_segment("R", 7),
            "runs/R/events/00000000000000000007.ndjson"
        );
        assert_eq!(segment_seq(&event_segment("R", 7)), Some(7));
        assert_eq!(segment_seq("runs/R/events/7.ndjson"), None);
        assert_eq!(
            segment_seq("runs/R/events/99999999999999999999.ndjson"),
            None
        );
        assert_eq!(
            segment_seq("runs/R/events/0000000000000000000x.ndjson"),
            None
        );
        assert_eq!(log_chunk("R", "j", 3), "R/j/0000000003.log");
        assert_eq!(chunk_seq(&log_chunk("R", "j", 3)), Some(3));
        assert_eq!(chunk_seq("R/j/000000000x.log"), None);
        assert_eq!(manifest("abc"), "keys/abc.json");
        assert_eq!(blob("abcdef"), "cas/ab/abcdef");
    }
}
