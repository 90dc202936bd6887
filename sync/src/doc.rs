//! The documents a remote holds, as types, bounded before use.
//!
//! A remote is written by other machines, possibly hostile ones (DESIGN.md,
//! invariant 10). A run document is parsed into [`RunDoc`]: every field has
//! a type, every string a length bound, every list a count bound, so a
//! field this module does not know, or a value of the wrong type, never
//! reaches a page or a terminal. Events are parsed into [`Event`]. Nothing
//! here panics on any input (the fuzz target `remote_run_doc` checks).
//!
//! These are the values a [`crate::view::RemoteView`] returns, whatever
//! the remote is (an object store, the local store, later Postgres or the
//! controller). Cache manifests are signed documents: a view returns their
//! exact bytes and the cache parses them after checking the signature
//! (`sparkwing::remote::cache`), with the bounded types below.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
#[cfg(test)]
use serde_json::json;
use serde_json::Value;

/// Longest name (run ID, pipeline, job, step, host, status, cache key).
pub const MAX_NAME: usize = 4 << 10;
/// Longest free text (an error message, a path).
pub const MAX_TEXT: usize = 64 << 10;
/// Most jobs in one run, steps in one job, needs of one job.
pub const MAX_ITEMS: usize = 10_000;

/// A string of at most `N` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Bounded<const N: usize>(pub String);

/// A string from a document, kept only if `check` accepts it.
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(de::Error::custom)?;
    Ok(s)
}

impl<'de, const N: usize> Deserialize<'de> for Bounded<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, |s| {
            if s.len() > N {
                return Err(format!(
                    "a string of {} bytes, over the limit of {N}",
                    s.len()
                ));
            }
            // A name is one line of plain text; free text (N > MAX_NAME)
            // may hold lines and is escaped where it is shown.
            if N <= MAX_NAME && s.chars().any(is_deceptive) {
                return Err("a name with a control or bidirectional formatting character".into());
            }
            Ok(())
        })
        .map(Bounded)
    }
}

/// A list of at most [`MAX_ITEMS`] values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a list of at most {MAX_ITEMS} items")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    if out.len() == MAX_ITEMS {
                        return Err(de::Error::custom(format!(
                            "a list of more than {MAX_ITEMS} items"
                        )));
                    }
                    out.push(v);
                }
                Ok(List(out))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

type Name = Bounded<MAX_NAME>;
type Text = Bounded<MAX_TEXT>;

/// Whether `c` would let a value rearrange, hide or forge what a terminal
/// shows: a control character, a bidirectional or zero-width formatting
/// character, a line or paragraph separator, a tag character.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{e0000}'..='\u{e007f}')
}

/// Whether `name` can be a pipeline or job name: 1 to 100 of `A-Z`, `a-z`,
/// `0-9`, `-`, `_`, `.`, not starting with `.`. Such names become paths
/// and keys (a pipeline file's names follow the same rule).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `s` is a lowercase hex SHA-256 (a blob's name, a cache key): the
/// only shape such a name may have before it goes into a key or a path.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `s` cut to `max` characters, with `…` where it was cut.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A pipeline or job name ([`valid_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PlainName(pub String);

impl<'de> Deserialize<'de> for PlainName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, |s| match valid_name(s) {
            true => Ok(()),
            false => Err(format!(
                "{:?} is not a pipeline or job name (letters, digits, -, _ and ., up to 100)",
                clip(s, 40)
            )),
        })
        .map(PlainName)
    }
}

/// A run ID ([`is_run_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, |s| match is_run_id(s) {
            true => Ok(()),
            false => Err(format!("{:?} is not a run ID", clip(s, 40))),
        })
        .map(RunId)
    }
}

/// A run document, as a runner's replicator writes it (`run.json` in an
/// object store).
/// Fields sparkwing has always written are required; later additions are
/// optional so older runners' documents still read.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RunDoc {
    pub id: RunId,
    pub pipeline: PlainName,
    pub status: Status,
    #[serde(default)]
    pub profile: Option<Name>,
    #[serde(default)]
    pub host: Option<Name>,
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub project_dir: Option<Text>,
    pub started_at: Name,
    #[serde(default)]
    pub finished_at: Option<Name>,
    #[serde(default)]
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub error: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_through: Option<i64>,
    #[serde(default)]
    pub jobs: List<JobDoc>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct JobDoc {
    pub name: PlainName,
    #[serde(default)]
    pub needs: List<PlainName>,
    pub status: Status,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub cache_key: Option<Name>,
    #[serde(default)]
    pub cached_from_run: Option<RunId>,
    #[serde(default)]
    pub error: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_chunks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
    #[serde(default)]
    pub steps: List<StepDoc>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepDoc {
    #[serde(default)]
    pub job: Option<PlainName>,
    pub index: i64,
    pub name: Text,
    pub status: Status,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub duration_ms: Option<i64>,
}

/// A status word: 1 to 32 of `a-z`, `0-9`, `_`, `-` (so a newer runner's
/// status still reads, and nothing else does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Status(pub String);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, |s| {
            let ok = (1..=32).contains(&s.len())
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            match ok {
                true => Ok(()),
                false => Err("a status must be 1-32 characters of a-z, 0-9, _ and -".into()),
            }
        })
        .map(Status)
    }
}

/// Whether `id` can name a run: 1 to 64 of `A-Z`, `a-z`, `0-9`, `-`, `_`.
/// (Sparkwing's IDs are 26-character ULIDs; anything a run directory may
/// be named by another tool is checked before it is used in a key.)
pub fn is_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses the `run.json` of run `id` (the name of its directory on the
/// remote). The document must name that same run.
pub fn parse_run(id: &str, body: &[u8]) -> Result<RunDoc, String> {
    let doc: RunDoc = serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "is not JSON",
            _ => "is not a run document",
        };
        format!("its run.json {what}: {e}")
    })?;
    if doc.id.0 != id {
        return Err(format!(
            "its run.json names another run ({})",
            clip(&doc.id.0, 64)
        ));
    }
    Ok(doc)
}

impl RunDoc {
    /// The document as JSON: only the fields known here, in the order
    /// sparkwing writes them.
    pub fn to_value(&self) -> Value {
        // Plain strings, numbers and lists always serialize.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// One event of a run's log, as the local store keeps it and a remote
/// holds it (one JSON object per line of an event segment).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub run: String,
    pub seq: i64,
    pub ts: i64,
    pub kind: String,
    pub job: Option<String>,
    pub data: Value,
}

impl Event {
    /// The event as one line of a segment object.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, numbers and a JSON value always serialize.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Parses the lines of a segment object (the inverse of [`Event::encode`]).
/// A line that is not an event is an error naming its number.
pub fn decode_events(body: &[u8]) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(Value::as_i64);
        match (s("run"), n("seq"), n("ts"), s("kind")) {
            (Some(run), Some(seq), Some(ts), Some(kind)) => out.push(Event {
                run,
                seq,
                ts,
                kind,
                job: s("job"),
                data: v.get("data").cloned().unwrap_or(Value::Null),
            }),
            _ => {
                return Err(format!(
                    "line {}: not an event (needs run, seq, ts, kind)",
                    i + 1
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(id: &str) -> Value {
        json!({"id": id, "pipeline": "p", "status": "success", "profile": "shared", "host": "h",
               "pid": 1, "project_dir": "/x", "started_at": "2026-11-29T00:00:00.000Z",
               "finished_at": null, "duration_ms": 5, "error": null, "events_through": 3,
               "jobs": [{"name": "build", "needs": [], "status": "success", "started_at": 1,
                         "finished_at": 2, "duration_ms": 1, "cache_key": null,
                         "cached_from_run": null, "error": null, "log_chunks": 1, "log_bytes": 4,
                         "steps": [{"job": "build", "index": 0, "name": "echo", "status": "success",
                                    "exit_code": 0, "started_at": 1, "finished_at": 2,
                                    "duration_ms": 1}]}]})
    }

    #[test]
    fn our_own_documents_read_back_unchanged() {
        let v = good("R1");
        let back = parse_run("R1", v.to_string().as_bytes()).unwrap();
        assert_eq!(back.to_value(), v);
    }

    #[test]
    fn unknown_fields_are_dropped_and_hostile_ones_refused() {
        let mut v = good("R1");
        v["evil"] = json!("\u{1b}]52;c;AAAA\u{7}");
        let back = parse_run("R1", v.to_string().as_bytes()).unwrap();
        assert!(back.to_value().get("evil").is_none());

        let long = "x".repeat(MAX_NAME + 1);
        let many: Vec<Value> = (0..=MAX_ITEMS).map(|i| json!(format!("j{i}"))).collect();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"[1,2,3]".to_vec(), "not a run document"),
            (b"5".to_vec(), "not a run document"),
            (b"\"str\"".to_vec(), "not a run document"),
            (b"{".to_vec(), "not JSON"),
            (b"\xff\xfe".to_vec(), "not JSON"),
            (
                json!({"id": "R1"}).to_string().into_bytes(),
                "missing field",
            ),
            (
                {
                    let mut d = good("R1");
                    d["pipeline"] = json!(long);
                    d.to_string().into_bytes()
                },
                "not a pipeline or job name",
            ),
            (
                {
                    let mut d = good("R1");
                    d["host"] = json!("x".repeat(MAX_NAME + 1));
                    d.to_string().into_bytes()
                },
                "over the limit",
            ),
            (
                {
                    let mut d = good("R1");
                    d["host"] = json!("h\nsparkwing: forged");
                    d.to_string().into_bytes()
                },
                "control or bidirectional",
            ),
            (
                {
                    let mut d = good("R1");
                    d["host"] = json!("h\u{202e}x");
                    d.to_string().into_bytes()
                },
                "control or bidirectional",
            ),
            (
                {
                    let mut d = good("R1");
                    d["jobs"][0]["name"] = json!("/tmp/secret");
                    d.to_string().into_bytes()
                },
                "not a pipeline or job name",
            ),
            (
                {
                    let mut d = good("R1");
                    d["jobs"][0]["name"] = json!("..");
                    d.to_string().into_bytes()
                },
                "not a pipeline or job name",
            ),
            (
                {
                    let mut d = good("R1");
                    d["jobs"][0]["cached_from_run"] = json!("R\n1");
                    d.to_string().into_bytes()
                },
                "not a run ID",
            ),
            (
                {
                    let mut d = good("R1");
                    d["jobs"][0]["name"] = json!(long);
                    d.to_string().into_bytes()
                },
                "not a pipeline or job name",
            ),
            (
                {
                    let mut d = good("R1");
                    d["jobs"][0]["needs"] = json!(many);
                    d.to_string().into_bytes()
                },
                "more than 10000",
            ),
            (
                {
                    let mut d = good("R1");
                    d["pid"] = json!("1");
                    d.to_string().into_bytes()
                },
                "invalid type",
            ),
            (
                {
                    let mut d = good("R1");
                    d["jobs"] = json!({"a": 1});
                    d.to_string().into_bytes()
                },
                "invalid type",
            ),
            (
                {
                    let mut d = good("R1");
                    d["status"] = json!("<b>ok</b>");
                    d.to_string().into_bytes()
                },
                "a status must be",
            ),
            (
                {
                    let mut d = good("R1");
                    d["jobs"][0]["log_chunks"] = json!(-1);
                    d.to_string().into_bytes()
                },
                "invalid value",
            ),
            (good("R2").to_string().into_bytes(), "names another run"),
        ];
        for (body, want) in cases {
            let e = parse_run("R1", &body).unwrap_err();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn events_round_trip_through_segment_lines() {
        let e = Event {
            run: "R".into(),
            seq: 7,
            ts: 1,
            kind: "job.started".into(),
            job: Some("build".into()),
            data: json!({"cache_key": null, "note": "line\nbreak"}),
        };
        // The exact bytes earlier releases wrote: a rebuilt outbox must
        // write the same segment objects.
        assert_eq!(
            String::from_utf8(e.encode()).unwrap(),
            "{\"run\":\"R\",\"seq\":7,\"ts\":1,\"kind\":\"job.started\",\"job\":\"build\",\"data\":{\"cache_key\":null,\"note\":\"line\\nbreak\"}}\n"
        );
        let mut body = e.encode();
        body.extend(
            Event {
                seq: 8,
                job: None,
                ..e.clone()
            }
            .encode(),
        );
        let back = decode_events(&body).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], e);
        assert_eq!(back[1].job, None);
        assert!(decode_events(b"{\"seq\":1}\n")
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn run_ids_are_checked_before_use_in_a_key() {
        assert!(is_run_id("01KB4ZJ0Q1V6Y5N3G7T0M8D2XS"));
        for bad in ["", "..", "a/b", "a b", "\u{1b}[2J", &"A".repeat(65), "é"] {
            assert!(!is_run_id(bad), "{bad:?}");
        }
    }
}
