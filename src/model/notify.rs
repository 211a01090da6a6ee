//! Notifications out (DESIGN.md section 16): the events a `[[notify]]`
//! table subscribes to, the JSON each delivery carries, and the rule that
//! turns finished builds into events. A recipe is reported when its state
//! changes (it starts failing, it recovers), not every time it stays
//! broken; every publish and every operator cancel is reported.

use serde::Serialize;

/// An event a `[[notify]]` table can subscribe to (`on = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyEvent {
    /// A build failed, and the recipe's previous finished build had
    /// succeeded (or it had none).
    Failed,
    /// A build succeeded, and the recipe's previous finished build had failed.
    Recovered,
    /// A build was published.
    Published,
    /// An operator cancelled a build.
    Cancelled,
}

impl NotifyEvent {
    /// Every event.
    pub const ALL: [NotifyEvent; 4] = [
        NotifyEvent::Failed,
        NotifyEvent::Recovered,
        NotifyEvent::Published,
        NotifyEvent::Cancelled,
    ];

    /// Its name in the config and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failed => "failed",
            NotifyEvent::Recovered => "recovered",
            NotifyEvent::Published => "published",
            NotifyEvent::Cancelled => "cancelled",
        }
    }

    /// The event named `s`.
    pub fn parse(s: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// What became of one delivery: the `result` label of
/// `farmhand_notifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyResult {
    /// The receiver took it (a 2xx answer, or the command exited 0).
    Delivered,
    /// Every attempt failed.
    Failed,
    /// Dropped from a full queue before it was attempted.
    Dropped,
}

impl NotifyResult {
    /// Every result, in label order.
    pub const ALL: [NotifyResult; 3] = [
        NotifyResult::Delivered,
        NotifyResult::Dropped,
        NotifyResult::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyResult::Delivered => "delivered",
            NotifyResult::Failed => "failed",
            NotifyResult::Dropped => "dropped",
        }
    }
}

/// The JSON document of one event, as POSTed or given on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// `failed`, `recovered`, `published` or `cancelled`.
    pub event: NotifyEvent,
    /// `[manager].id`.
    pub farm_id: String,
    /// The recipe id.
    pub recipe: String,
    /// The package version.
    pub version: String,
    /// The build's id.
    pub build_id: u64,
    /// The error (failed, cancelled), `null` otherwise.
    pub error: Option<String>,
    /// `[http].public_url` + `/builds/<id>`, or the path alone.
    pub build_url: String,
    /// When the event happened, RFC 3339 UTC.
    pub at: String,
}

/// The link to build `id`: `public_url` (without its trailing slashes) +
/// `/builds/<id>`, or the path alone when no public URL is configured.
pub fn build_url(public_url: Option<&str>, id: u64) -> String {
    let base = public_url.map_or("", |u| u.trim_end_matches('/'));
    format!("{base}/builds/{id}")
}

/// How a finished build ended, as far as the state-change rule cares
/// (host faults and shutdown are neither: they change nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Built and published.
    Succeeded,
    /// Failed in any phase.
    Failed,
}

/// The events a finished build raises, given how the recipe's previous
/// finished build ended (`None`: it had none).
pub fn events_for(previous: Option<Outcome>, now: Outcome) -> Vec<NotifyEvent> {
    match now {
        Outcome::Succeeded if previous == Some(Outcome::Failed) => {
            vec![NotifyEvent::Recovered, NotifyEvent::Published]
        }
        Outcome::Succeeded => vec![NotifyEvent::Published],
        Outcome::Failed if previous == Some(Outcome::Failed) => Vec::new(),
        Outcome::Failed => vec![NotifyEvent::Failed],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes() {
        use NotifyEvent::*;
        use Outcome as O;
        assert_eq!(events_for(None, O::Failed), [Failed]);
        assert_eq!(events_for(Some(O::Succeeded), O::Failed), [Failed]);
        assert!(events_for(Some(O::Failed), O::Failed).is_empty());
        assert_eq!(
            events_for(Some(O::Failed), O::Succeeded),
            [Recovered, Published]
        );
        assert_eq!(events_for(Some(O::Succeeded), O::Succeeded), [Published]);
        assert_eq!(events_for(None, O::Succeeded), [Published]);
    }

    #[test]
    fn names_and_json() {
        for e in NotifyEvent::ALL {
            assert_eq!(NotifyEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(NotifyEvent::parse("fail"), None);
        let n = Notification {
            event: NotifyEvent::Recovered,
            farm_id: "f".into(),
            recipe: "r".into(),
            version: "1.0-1".into(),
            build_id: 7,
            error: None,
            build_url: build_url(Some("https://farm.example.org/"), 7),
            at: "2026-01-01T00:00:00Z".into(),
        };
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "event": "recovered", "farm_id": "f", "recipe": "r", "version": "1.0-1",
                "build_id": 7, "error": null, "build_url": "https://farm.example.org/builds/7",
                "at": "2026-01-01T00:00:00Z"
            })
        );
        assert_eq!(build_url(None, 3), "/builds/3");
    }
}
