//! The build vocabulary every part speaks: which build ([`BuildKey`],
//! `recipe@version`), what set it off ([`Trigger`]), where it is
//! ([`Phase`]), how it ended ([`BuildState`]), and the [`Job`] itself.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::model::recipe::Recipe;

/// One version of one recipe: `recipe@version`, the key of the backoff
/// book, of `/status` `failures` and of the retry endpoint. Neither a
/// recipe id nor a version can hold `@`, so the text form is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildKey {
    /// The recipe id.
    pub recipe: String,
    /// The package version, e.g. `1.3.2-1`.
    pub version: String,
}

impl BuildKey {
    /// The key of (`recipe`, `version`).
    pub fn new(recipe: impl Into<String>, version: impl Into<String>) -> BuildKey {
        BuildKey {
            recipe: recipe.into(),
            version: version.into(),
        }
    }
}

impl fmt::Display for BuildKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.recipe, self.version)
    }
}

/// A text that is not `recipe@version`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected recipe@version, got {0:?}")]
pub struct BadBuildKey(pub String);

impl FromStr for BuildKey {
    type Err = BadBuildKey;

    fn from_str(s: &str) -> Result<BuildKey, BadBuildKey> {
        let bad = || BadBuildKey(s.to_string());
        let at = s.find('@').ok_or_else(bad)?;
        let (recipe, version) = (&s[..at], &s[at + 1..]);
        if recipe.is_empty() || version.is_empty() || version.contains('@') {
            return Err(bad());
        }
        Ok(BuildKey::new(recipe, version))
    }
}

impl serde::Serialize for BuildKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BuildKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BuildKey, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a build is in its life; shown in `/status` as `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Fetching the tag.
    Fetching,
    /// Running the build script.
    Building,
    /// Packaging DESTDIR.
    Packaging,
    /// Publishing into the repository.
    Publishing,
    /// Uploading the repository.
    Uploading,
}

impl Phase {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Fetching => "fetching",
            Phase::Building => "building",
            Phase::Packaging => "packaging",
            Phase::Publishing => "publishing",
            Phase::Uploading => "uploading",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version a poll found: the tag and what it maps to.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The tag.
    pub tag: String,
    /// The upstream version the tag yields.
    pub upstream: String,
    /// The package version (`<upstream>-<revision>`).
    pub version: String,
}

/// What set a build off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A scheduled poll (or `--once`).
    Poll,
    /// A webhook.
    Webhook,
}

impl Trigger {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
        }
    }
}

/// One build to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The build id: ids increase with start time and continue across
    /// restarts (the build history keeps the highest); never reused.
    pub id: u64,
    /// The recipe.
    pub recipe: Arc<Recipe>,
    /// The upstream tag.
    pub tag: String,
    /// The package version, e.g. `1.3.2-1`.
    pub version: String,
    /// What set it off.
    pub trigger: Trigger,
}

impl Job {
    /// `git+<url>#refs/tags/<tag>`.
    pub fn source_ref(&self) -> String {
        let url = self
            .recipe
            .upstream
            .as_ref()
            .map(|u| u.git.as_str())
            .unwrap_or("");
        format!("git+{url}#refs/tags/{}", self.tag)
    }
}

/// How a build ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    /// Still running.
    Running,
    /// Built and published.
    Succeeded,
    /// Failed; see `phase` and `error`.
    Failed,
    /// Stopped by an operator or by shutdown; see [`StopReason`].
    Cancelled,
}

impl BuildState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
        }
    }

    /// The state named `s` (its lowercase name), if any.
    pub fn parse(s: &str) -> Option<BuildState> {
        [
            BuildState::Running,
            BuildState::Succeeded,
            BuildState::Failed,
            BuildState::Cancelled,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }
}

/// Why a build was stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The daemon is stopping (after `shutdown_grace`): no backoff entry,
    /// not counted, built again after the restart.
    Shutdown,
    /// An operator cancelled it: it enters backoff like a failure and
    /// counts in `builds_cancelled`.
    Operator,
}

impl StopReason {
    /// The build's `error`: `shutdown` or `cancelled by operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Shutdown => "shutdown",
            StopReason::Operator => "cancelled by operator",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Job {
    /// This build's (recipe, version).
    pub fn key(&self) -> BuildKey {
        BuildKey::new(self.recipe.id.clone(), self.version.clone())
    }
}

/// One version waiting to be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBuild {
    /// Recipe id.
    pub recipe: String,
    /// Upstream tag.
    pub tag: String,
    /// Upstream version (from the tag).
    pub upstream: String,
    /// Package version.
    pub version: String,
    /// What asked for it.
    pub trigger: Trigger,
}

/// One failed (recipe, version).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct FailureRecord {
    /// Consecutive failures.
    pub failures: u32,
    /// Not retried before this time (RFC 3339 in the file).
    #[serde(with = "crate::model::time::serde_rfc3339")]
    pub next_retry: SystemTime,
    /// The last error, with its phase.
    #[serde(default)]
    pub error: String,
    /// The upstream tag of the version, so a retry can queue it without a
    /// poll (empty in entries written before farmhand kept it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
}

/// A fault of the host rather than of the recipe: the build failed because
/// the disk is full or the process ran out of file descriptors. Such a
/// failure puts nothing into backoff; the farm holds its queue and tries
/// again until the fault clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFault {
    /// ENOSPC or EDQUOT.
    DiskFull,
    /// EMFILE or ENFILE.
    NoDescriptors,
}

impl HostFault {
    /// The fault a build error reports, if any. The error texts farmhand
    /// writes carry the operating system's error as `std::io::Error` shows
    /// it, `... (os error N)`.
    pub fn of(error: &str) -> Option<HostFault> {
        const CODES: [(&str, HostFault); 4] = [
            ("(os error 28)", HostFault::DiskFull),
            ("(os error 122)", HostFault::DiskFull),
            ("(os error 24)", HostFault::NoDescriptors),
            ("(os error 23)", HostFault::NoDescriptors),
        ];
        CODES
            .iter()
            .find(|(code, _)| error.contains(code))
            .map(|&(_, fault)| fault)
    }

    /// How `/status` and the log name it.
    pub fn as_str(self) -> &'static str {
        match self {
            HostFault::DiskFull => "disk full",
            HostFault::NoDescriptors => "out of file descriptors",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_faults_are_told_from_recipe_failures() {
        let enospc = std::io::Error::from_raw_os_error(28).to_string();
        let emfile = std::io::Error::from_raw_os_error(24).to_string();
        assert_eq!(
            HostFault::of(&format!("writing x: {enospc}")),
            Some(HostFault::DiskFull)
        );
        assert_eq!(HostFault::of(&emfile), Some(HostFault::NoDescriptors));
        assert_eq!(HostFault::of("build script exited with status 2"), None);
    }

    #[test]
    fn build_keys_parse_and_print() {
        let k: BuildKey = "musl@1.2.5-1".parse().unwrap();
        assert_eq!(k, BuildKey::new("musl", "1.2.5-1"));
        assert_eq!(k.to_string(), "musl@1.2.5-1");
        let e: BuildKey = "x@2:1.0-1".parse().unwrap();
        assert_eq!(e.version, "2:1.0-1");
        for bad in ["", "musl", "@1.0-1", "musl@", "a@b@c"] {
            assert!(bad.parse::<BuildKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn build_keys_are_json_strings() {
        let k = BuildKey::new("libz", "1.3.1-1");
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"libz@1.3.1-1\"");
        let m: std::collections::BTreeMap<BuildKey, u32> =
            serde_json::from_str(r#"{"libz@1.3.1-1": 2}"#).unwrap();
        assert_eq!(m[&k], 2);
    }
}
