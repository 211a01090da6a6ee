//! The control vocabulary (DESIGN.md section 15): what an operator can ask
//! of the farm ([`ControlRequest`]), how the farm answers
//! ([`ControlOutcome`]), and the record of an action taken
//! ([`ControlEvent`]), for the log, the metrics and `/events`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::model::build::BuildKey;

/// The recipes an operator paused, as the farm publishes them (sorted).
pub type Paused = Arc<BTreeSet<String>>;

/// One kind of control action: the `action` label of
/// `farmhand_control_actions_total`. A closed set, so no typo can start a
/// new series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    /// Poll a recipe now.
    Poll,
    /// Stop polling and building a recipe.
    Pause,
    /// Undo a pause.
    Resume,
    /// Stop the build in flight.
    Cancel,
    /// Clear a backoff entry and build that version now.
    Retry,
}

impl ControlAction {
    /// Every action, in label order.
    pub const ALL: [ControlAction; 5] = [
        ControlAction::Poll,
        ControlAction::Pause,
        ControlAction::Resume,
        ControlAction::Cancel,
        ControlAction::Retry,
    ];

    /// The label value, also the last segment of the action's URL.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Poll => "poll",
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Cancel => "cancel",
            ControlAction::Retry => "retry",
        }
    }
}

impl fmt::Display for ControlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator asks of the farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// `POST /recipes/{id}/poll`.
    Poll(String),
    /// `POST /recipes/{id}/pause`.
    Pause(String),
    /// `POST /recipes/{id}/resume`.
    Resume(String),
    /// `POST /builds/{id}/cancel`.
    Cancel(u64),
    /// `POST /failures/{recipe}@{version}/retry`.
    Retry(BuildKey),
}

impl ControlRequest {
    /// Which action this is.
    pub fn action(&self) -> ControlAction {
        match self {
            ControlRequest::Poll(_) => ControlAction::Poll,
            ControlRequest::Pause(_) => ControlAction::Pause,
            ControlRequest::Resume(_) => ControlAction::Resume,
            ControlRequest::Cancel(_) => ControlAction::Cancel,
            ControlRequest::Retry(_) => ControlAction::Retry,
        }
    }

    /// Parses a control path: `/recipes/{id}/{poll,pause,resume}`,
    /// `/builds/{id}/cancel` or `/failures/{recipe}@{version}/retry`, its
    /// segments already percent-decoded. `None` for any other path.
    pub fn from_path(path: &str) -> Option<Result<ControlRequest, String>> {
        let rest = path.strip_prefix('/')?;
        let (kind, rest) = rest.split_once('/')?;
        let (target, action) = rest.rsplit_once('/')?;
        if target.is_empty() || target.contains('/') {
            return None;
        }
        Some(match (kind, action) {
            ("recipes", "poll") => Ok(ControlRequest::Poll(target.to_string())),
            ("recipes", "pause") => Ok(ControlRequest::Pause(target.to_string())),
            ("recipes", "resume") => Ok(ControlRequest::Resume(target.to_string())),
            ("builds", "cancel") => target
                .parse::<u64>()
                .ok()
                .filter(|id| *id > 0)
                .map(ControlRequest::Cancel)
                .ok_or_else(|| format!("no build {target:?}: build ids are positive integers")),
            ("failures", "retry") => target
                .parse::<BuildKey>()
                .map(ControlRequest::Retry)
                .map_err(|e| format!("no failure {target:?}: {e}")),
            _ => return None,
        })
    }
}

/// How the farm answered a [`ControlRequest`]; each maps to one HTTP
/// status, and carries a one-line message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Done (pause, resume): 200.
    Done(String),
    /// Started (poll, cancel, retry): 202.
    Accepted(String),
    /// No such recipe, build or failure entry: 404.
    NotFound(String),
    /// Not possible now (poll of a paused recipe, cancel of a build that
    /// is not running): 409.
    Conflict(String),
    /// The farm cannot act (shutting down): 503.
    Unavailable(String),
}

impl ControlOutcome {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ControlOutcome::Done(_) => 200,
            ControlOutcome::Accepted(_) => 202,
            ControlOutcome::NotFound(_) => 404,
            ControlOutcome::Conflict(_) => 409,
            ControlOutcome::Unavailable(_) => 503,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ControlOutcome::Done(m)
            | ControlOutcome::Accepted(m)
            | ControlOutcome::NotFound(m)
            | ControlOutcome::Conflict(m)
            | ControlOutcome::Unavailable(m) => m,
        }
    }

    /// True for 200 and 202.
    pub fn is_success(&self) -> bool {
        matches!(self, ControlOutcome::Done(_) | ControlOutcome::Accepted(_))
    }
}

/// One control action the farm took: logged as `control action`, counted
/// in `farmhand_control_actions_total`, and the event `/events` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlEvent {
    /// What was done.
    pub action: ControlAction,
    /// The recipe acted on.
    pub recipe: String,
    /// The version (cancel, retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The build (cancel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<u64>,
    /// RFC 3339 time of the action.
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_paths_parse() {
        let ok = [
            ("/recipes/libz/poll", ControlRequest::Poll("libz".into())),
            ("/recipes/libz/pause", ControlRequest::Pause("libz".into())),
            (
                "/recipes/libz/resume",
                ControlRequest::Resume("libz".into()),
            ),
            ("/builds/12/cancel", ControlRequest::Cancel(12)),
            (
                "/failures/musl@1.2.5-1/retry",
                ControlRequest::Retry(BuildKey::new("musl", "1.2.5-1")),
            ),
        ];
        for (path, want) in ok {
            assert_eq!(ControlRequest::from_path(path), Some(Ok(want)), "{path}");
        }
        for not_control in [
            "/recipes/libz",
            "/recipes/libz/log",
            "/recipes//poll",
            "/recipes/a/b/poll",
            "/builds/12/log",
            "/status",
            "/",
            "",
        ] {
            assert_eq!(
                ControlRequest::from_path(not_control),
                None,
                "{not_control}"
            );
        }
        for bad in [
            "/builds/0/cancel",
            "/builds/x/cancel",
            "/failures/musl/retry",
        ] {
            assert!(
                matches!(ControlRequest::from_path(bad), Some(Err(_))),
                "{bad}"
            );
        }
        assert_eq!(
            ControlRequest::Cancel(3).action().as_str(),
            "cancel",
            "labels are the URL's last segment"
        );
    }

    #[test]
    fn outcomes_map_to_status_codes() {
        assert_eq!(ControlOutcome::Done("x".into()).status(), 200);
        assert_eq!(ControlOutcome::Accepted("x".into()).status(), 202);
        assert_eq!(ControlOutcome::NotFound("x".into()).status(), 404);
        assert_eq!(ControlOutcome::Conflict("x".into()).status(), 409);
        assert_eq!(ControlOutcome::Unavailable("x".into()).status(), 503);
    }
}
