//! The statuses of runs, jobs and steps: one spelling each, as `state.db`
//! rows, run documents, events and `-o json` carry them (the strings are
//! the wire format and never change meaning; a new status is a new variant).

/// Defines a status enum with its strings, parsing and serde.
macro_rules! status {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// As stored and shown.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($s => Some($name::$v),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "unknown {} {:?}; expected one of {}",
                        stringify!($name),
                        crate::util::one_line(&s, 40),
                        known.join(", ")
                    ))
                })
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }
    };
}

status!(
    /// A run's status.
    RunStatus {
        /// Recorded, waiting for a slot of the host-local gate.
        Waiting = "waiting",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Its process died (a crash, `kill -9`, a reboot) before it ended.
        Interrupted = "interrupted",
    }
);

status!(
    /// A job's status.
    JobStatus {
        Pending = "pending",
        Running = "running",
        Success = "success",
        /// Its outputs were restored from the cache; its steps did not run.
        Cached = "cached",
        Failed = "failed",
        /// A job it needs did not pass.
        Skipped = "skipped",
        Cancelled = "cancelled",
        Interrupted = "interrupted",
    }
);

status!(
    /// A step's status.
    StepStatus {
        Pending = "pending",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Skipped = "skipped",
        Cancelled = "cancelled",
        Interrupted = "interrupted",
    }
);

impl RunStatus {
    /// Still going (as recorded: see `RunRow::shown_status` for runs whose
    /// process is gone).
    pub fn is_live(self) -> bool {
        matches!(self, RunStatus::Waiting | RunStatus::Running)
    }

    /// Whether a run status string (from a row or a document) is live.
    pub fn live(s: &str) -> bool {
        RunStatus::parse(s).is_some_and(RunStatus::is_live)
    }
}

impl JobStatus {
    /// Its dependents may run.
    pub fn passed(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Cached)
    }

    /// Its dependents are skipped.
    pub fn blocks_dependents(self) -> bool {
        matches!(
            self,
            JobStatus::Failed | JobStatus::Skipped | JobStatus::Cancelled | JobStatus::Interrupted
        )
    }

    /// The status of its steps that never started.
    pub fn rest(self) -> StepStatus {
        match self {
            JobStatus::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Skipped,
        }
    }
}

/// How a status reads at a glance: the dashboard's colour and symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Passed (success; cached).
    Ok,
    Bad,
    Running,
    /// Not started yet (waiting for a slot; pending).
    Waiting,
    /// Stopped before its end (cancelled; interrupted).
    Stopped,
    /// Did not run (skipped).
    Muted,
}

impl Tone {
    /// The tone of any run, job or step status string; `None` for a word
    /// none of them knows (a newer runner's, shown plainly).
    pub fn of(status: &str) -> Option<Tone> {
        if RunStatus::parse(status) == Some(RunStatus::Waiting) {
            return Some(Tone::Waiting);
        }
        // Job statuses are a superset of step statuses and share the run
        // statuses' other words.
        Some(match JobStatus::parse(status)? {
            JobStatus::Success | JobStatus::Cached => Tone::Ok,
            JobStatus::Failed => Tone::Bad,
            JobStatus::Running => Tone::Running,
            JobStatus::Pending => Tone::Waiting,
            JobStatus::Cancelled | JobStatus::Interrupted => Tone::Stopped,
            JobStatus::Skipped => Tone::Muted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings are the wire format: `state.db` rows and run documents
    /// written before these types existed read back as the same statuses.
    #[test]
    fn statuses_keep_their_strings() {
        let runs = [
            "waiting",
            "running",
            "success",
            "failed",
            "cancelled",
            "interrupted",
        ];
        for s in runs {
            assert_eq!(RunStatus::parse(s).unwrap().as_str(), s);
            let v: RunStatus = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(s));
        }
        assert_eq!(RunStatus::ALL.len(), runs.len());
        let jobs = [
            "pending",
            "running",
            "success",
            "cached",
            "failed",
            "skipped",
            "cancelled",
            "interrupted",
        ];
        for s in jobs {
            assert_eq!(JobStatus::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(JobStatus::ALL.len(), jobs.len());
        let steps = [
            "pending",
            "running",
            "success",
            "failed",
            "skipped",
            "cancelled",
            "interrupted",
        ];
        for s in steps {
            assert_eq!(StepStatus::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(StepStatus::ALL.len(), steps.len());
        let err = serde_json::from_value::<RunStatus>(serde_json::json!("exploded")).unwrap_err();
        assert!(
            err.to_string().contains("unknown RunStatus \"exploded\""),
            "{err}"
        );
        // Every status of every kind has a tone; other words have none.
        for s in runs.iter().chain(&jobs).chain(&steps) {
            assert!(Tone::of(s).is_some(), "{s}");
        }
        assert_eq!(Tone::of("exploded"), None);
        assert!(RunStatus::live("waiting") && RunStatus::live("running"));
        assert!(!RunStatus::live("success") && !RunStatus::live("nonsense"));
    }
}
