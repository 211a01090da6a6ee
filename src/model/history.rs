//! A build's record: what `/builds` lists and what `state_dir/history`
//! keeps, one JSON line per record. A build is recorded twice: when it
//! starts (state `running`, so its id is never handed out again) and when
//! it finishes (its final state, phases, error and log).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::build::{BuildState, Phase, Trigger};

/// One phase of a build: when it started and how long it took (`None`
/// while it runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSpan {
    /// The phase.
    pub phase: Phase,
    /// When it started.
    #[serde(with = "millis")]
    pub started_at: SystemTime,
    /// Seconds; `None` while the phase runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

/// One build, as the history file holds it (fields without a value are
/// left out of the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The build id.
    pub id: u64,
    /// Recipe id.
    pub recipe: String,
    /// Package version.
    pub version: String,
    /// Upstream tag.
    pub tag: String,
    /// What set it off.
    pub trigger: Trigger,
    /// `running` in a start record; how it ended in a finish record.
    pub state: BuildState,
    /// When it started.
    #[serde(with = "millis")]
    pub started_at: SystemTime,
    /// When it ended; `None` while running (or when a crash left it unknown).
    #[serde(with = "opt_millis", default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<SystemTime>,
    /// Seconds from start to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// The phase it failed or was cancelled in (while running: the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its phases in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseSpan>,
    /// The attempt number `n` of its log, `logs/<recipe>/<version>.<n>.log`
    /// (`.log.zst` once finished); `None` when it has no log (pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<u32>,
}

impl BuildRecord {
    /// True once the build has ended.
    pub fn is_finished(&self) -> bool {
        self.state != BuildState::Running
    }
}

/// Seconds as JSON shows them: rounded to the millisecond.
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// RFC 3339 UTC with milliseconds (`2026-05-07T14:32:11.250Z`), the
/// history file's time form.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    /// Writes the time.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
    /// Reads RFC 3339 text (any precision).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

/// [`millis`] for an optional time (`null` when absent).
pub mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    /// Writes the time or `null`.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
    /// Reads RFC 3339 text or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_778_164_331_250);
        let r = BuildRecord {
            id: 7,
            recipe: "libz".into(),
            version: "1.3.1-1".into(),
            tag: "v1.3.1".into(),
            trigger: Trigger::Webhook,
            state: BuildState::Failed,
            started_at: t,
            finished_at: Some(t + Duration::from_millis(1500)),
            duration: Some(1.5),
            phase: Some(Phase::Building),
            error: Some("build script exited with status 1".into()),
            phases: vec![
                PhaseSpan {
                    phase: Phase::Fetching,
                    started_at: t,
                    duration: Some(0.5),
                },
                PhaseSpan {
                    phase: Phase::Building,
                    started_at: t + Duration::from_millis(500),
                    duration: Some(1.0),
                },
            ],
            log: Some(2),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("\"started_at\":\"2026-05-07T14:32:11.250Z\""),
            "{line}"
        );
        let back: BuildRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        // A start record needs only what a build has when it starts.
        let start: BuildRecord = serde_json::from_str(
            r#"{"id":8,"recipe":"a","version":"1-1","tag":"v1","trigger":"poll","state":"running","started_at":"2026-05-07T14:32:11Z"}"#,
        )
        .unwrap();
        assert!(!start.is_finished());
        assert_eq!(start.log, None);
        assert_eq!(seconds(Duration::from_micros(1_234_567)), 1.235);
    }
}
