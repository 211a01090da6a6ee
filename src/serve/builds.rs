//! The builds the status store knows: the finished ones of the build
//! history (at most `[history].keep`) and the running one, sorted by id,
//! and the documents made of them: the entries of `/builds` and
//! `/recipes/{id}` ([`BuildSummary`]) and `/builds/{id}` ([`BuildDetail`]).
//! Plain serde structs, so a page can render them as they are.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde::Serialize;

use crate::model::build::{BuildState, Phase, Trigger};
use crate::model::history::{seconds, BuildRecord, PhaseSpan};
use crate::model::time::rfc3339;

/// Default `limit` of `/builds`.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest `limit` of `/builds`.
pub const MAX_LIMIT: usize = 500;

/// What `/builds` asks for: `?recipe=ID&state=STATE&limit=N&before=ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildQuery {
    /// Only this recipe's builds.
    pub recipe: Option<String>,
    /// Only builds in this state.
    pub state: Option<BuildState>,
    /// At most this many (1 to [`MAX_LIMIT`]).
    pub limit: usize,
    /// Only builds with a smaller id (the next page).
    pub before: Option<u64>,
}

impl Default for BuildQuery {
    fn default() -> BuildQuery {
        BuildQuery {
            recipe: None,
            state: None,
            limit: DEFAULT_LIMIT,
            before: None,
        }
    }
}

impl BuildQuery {
    /// Parses a query string; an error names the parameter. Unknown
    /// parameters are ignored; a `limit` above [`MAX_LIMIT`] is lowered to it.
    pub fn parse(query: Option<&str>) -> Result<BuildQuery, String> {
        let mut q = BuildQuery::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| format!("{k}: {v:?} is not a valid value"))?;
            let v = v.as_str();
            match k {
                "recipe" => {
                    if !crate::model::name::is_safe_component(v) {
                        return Err(format!("recipe: {v:?} is not a recipe id"));
                    }
                    q.recipe = Some(v.to_string());
                }
                "state" => {
                    q.state = Some(BuildState::parse(v).ok_or_else(|| {
                        format!("state: {v:?} is not one of running, succeeded, failed, cancelled")
                    })?);
                }
                "limit" => {
                    let n = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("limit: {v:?} is not a positive integer"))?;
                    q.limit = n.min(MAX_LIMIT);
                }
                "before" => {
                    let id = v
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("before: {v:?} is not a build id"))?;
                    q.before = Some(id);
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn admits(&self, r: &BuildRecord) -> bool {
        self.recipe.as_deref().is_none_or(|id| r.recipe == id)
            && self.state.is_none_or(|s| r.state == s)
            && self.before.is_none_or(|b| r.id < b)
    }
}

/// `%XX` escapes in a query value or path segment decoded (`+` stays
/// `+`: no id holds a space); `None` when an escape is malformed or the
/// result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The builds, oldest first (ids increase with start time).
#[derive(Debug)]
pub struct Builds {
    records: VecDeque<BuildRecord>,
    keep: usize,
    running: usize,
}

impl Builds {
    /// No builds; at most `keep` finished ones will be kept.
    pub fn new(keep: usize) -> Builds {
        Builds {
            records: VecDeque::new(),
            keep: keep.max(1),
            running: 0,
        }
    }

    /// Replaces everything with the finished builds of the history.
    pub fn load(&mut self, mut records: Vec<BuildRecord>, keep: usize) {
        records.sort_by_key(|r| r.id);
        records.dedup_by_key(|r| r.id);
        self.keep = keep.max(1);
        self.running = records.iter().filter(|r| !r.is_finished()).count();
        records.shrink_to_fit();
        self.records = records.into();
        self.trim();
    }

    fn trim(&mut self) {
        while self.records.len() - self.running > self.keep {
            match self.records.pop_front() {
                Some(r) if !r.is_finished() => {
                    // Never drop a running build: put it back and stop.
                    self.records.push_front(r);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
    }

    fn index(&self, id: u64) -> Option<usize> {
        let (a, b) = self.records.as_slices();
        match a.binary_search_by_key(&id, |r| r.id) {
            Ok(i) => Some(i),
            Err(_) => b
                .binary_search_by_key(&id, |r| r.id)
                .ok()
                .map(|i| a.len() + i),
        }
    }

    /// A build started (state running), or any record to put in place.
    pub fn start(&mut self, rec: BuildRecord) {
        self.running += usize::from(!rec.is_finished());
        if let Some(i) = self.index(rec.id) {
            let old = std::mem::replace(&mut self.records[i], rec);
            self.running -= usize::from(!old.is_finished());
        } else if self.records.back().is_none_or(|last| last.id < rec.id) {
            self.records.push_back(rec);
        } else {
            let at = self.records.partition_point(|r| r.id < rec.id);
            self.records.insert(at, rec);
        }
    }

    /// The running build `id` entered `phase` at `at`.
    pub fn phase(&mut self, id: u64, phase: Phase, at: SystemTime) -> Option<&BuildRecord> {
        let i = self.index(id)?;
        let r = &mut self.records[i];
        if r.is_finished() {
            return None;
        }
        if let Some(open) = r.phases.last_mut() {
            if open.phase == phase {
                return Some(r);
            }
            if open.duration.is_none() {
                let d = at.duration_since(open.started_at).unwrap_or_default();
                open.duration = Some(seconds(d));
            }
        }
        r.phases.push(PhaseSpan {
            phase,
            started_at: at,
            duration: None,
        });
        r.phase = Some(phase);
        Some(r)
    }

    /// A build finished: its record replaces the running one.
    pub fn finish(&mut self, rec: BuildRecord) {
        self.start(rec);
        self.trim();
    }

    /// Build `id`.
    pub fn get(&self, id: u64) -> Option<&BuildRecord> {
        self.index(id).map(|i| &self.records[i])
    }

    /// The builds `q` asks for, newest first.
    pub fn query(&self, q: &BuildQuery) -> Vec<&BuildRecord> {
        let newest = match q.before {
            Some(b) => self.records.partition_point(|r| r.id < b),
            None => self.records.len(),
        };
        self.records
            .range(..newest)
            .rev()
            .filter(|r| q.admits(r))
            .take(q.limit)
            .collect()
    }

    /// The duration of the most recent successful build of `rec`'s
    /// recipe that finished before `rec` started.
    pub fn previous_duration(&self, rec: &BuildRecord) -> Option<f64> {
        let end = self.records.partition_point(|r| r.id < rec.id);
        self.records
            .range(..end)
            .rev()
            .find(|r| {
                r.recipe == rec.recipe
                    && r.state == BuildState::Succeeded
                    && r.finished_at.is_some_and(|f| f <= rec.started_at)
            })
            .and_then(|r| r.duration)
    }

    /// Logs were pruned: the records of `(recipe, version, attempt)` lose
    /// their log.
    pub fn logs_pruned<'a>(&mut self, gone: impl IntoIterator<Item = (&'a str, &'a str, u32)>) {
        use std::collections::HashSet;
        let gone: HashSet<(&str, &str, u32)> = gone.into_iter().collect();
        if gone.is_empty() {
            return;
        }
        for r in self.records.iter_mut().rev() {
            if let Some(n) = r.log {
                if gone.contains(&(r.recipe.as_str(), r.version.as_str(), n)) {
                    r.log = None;
                }
            }
        }
    }

    /// The previous and the next build of the same recipe as build `id`.
    pub fn neighbours(&self, id: u64) -> (Option<u64>, Option<u64>) {
        let Some(i) = self.index(id) else {
            return (None, None);
        };
        let recipe = &self.records[i].recipe;
        let previous = self
            .records
            .range(..i)
            .rev()
            .find(|r| &r.recipe == recipe)
            .map(|r| r.id);
        let next = self
            .records
            .range(i + 1..)
            .find(|r| &r.recipe == recipe)
            .map(|r| r.id);
        (previous, next)
    }

    /// How many there are (finished and running).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// One build as `/builds` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    /// Build id.
    pub id: u64,
    /// Recipe id.
    pub recipe: String,
    /// Package version.
    pub version: String,
    /// Upstream tag.
    pub tag: String,
    /// poll or webhook.
    pub trigger: Trigger,
    /// running, succeeded, failed or cancelled.
    pub state: BuildState,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, null while running.
    pub finished_at: Option<String>,
    /// Seconds, null while running.
    pub duration: Option<f64>,
    /// The phase it failed or was cancelled in; while running, the
    /// current phase.
    pub phase: Option<Phase>,
    /// The error.
    pub error: Option<String>,
    /// `/builds/<id>/log`; null once the log was pruned.
    pub log_url: Option<String>,
    /// The same as `log_url` (a short alias).
    pub log: Option<String>,
}

impl From<&BuildRecord> for BuildSummary {
    fn from(r: &BuildRecord) -> BuildSummary {
        let log = r.log.map(|_| format!("/builds/{}/log", r.id));
        BuildSummary {
            id: r.id,
            recipe: r.recipe.clone(),
            version: r.version.clone(),
            tag: r.tag.clone(),
            trigger: r.trigger,
            state: r.state,
            started_at: rfc3339(r.started_at),
            finished_at: r.finished_at.map(rfc3339),
            duration: r.duration,
            phase: r.phase,
            error: r.error.clone(),
            log_url: log.clone(),
            log,
        }
    }
}

/// One phase as `/builds/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseView {
    /// The phase.
    pub phase: Phase,
    /// RFC 3339.
    pub started_at: String,
    /// Seconds; null while the phase runs.
    pub duration: Option<f64>,
}

/// One build as `/builds/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildDetail {
    /// The `/builds` fields.
    #[serde(flatten)]
    pub summary: BuildSummary,
    /// Its phases in order.
    pub phases: Vec<PhaseView>,
    /// The duration of the recipe's most recent successful build that
    /// finished before this one started.
    pub previous_duration: Option<f64>,
    /// Seconds since it started, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed: Option<f64>,
}

impl Builds {
    /// `/builds/{id}`.
    pub fn detail(&self, id: u64, now: SystemTime) -> Option<BuildDetail> {
        let r = self.get(id)?;
        Some(BuildDetail {
            summary: r.into(),
            phases: r
                .phases
                .iter()
                .map(|p| PhaseView {
                    phase: p.phase,
                    started_at: rfc3339(p.started_at),
                    duration: p.duration,
                })
                .collect(),
            previous_duration: self.previous_duration(r),
            elapsed: (!r.is_finished())
                .then(|| seconds(now.duration_since(r.started_at).unwrap_or_default())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec(id: u64, recipe: &str, state: BuildState, start: u64, secs: u64) -> BuildRecord {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + start);
        BuildRecord {
            id,
            recipe: recipe.into(),
            version: format!("{id}.0-1"),
            tag: format!("v{id}.0"),
            trigger: Trigger::Poll,
            state,
            started_at: t0,
            finished_at: (state != BuildState::Running).then(|| t0 + Duration::from_secs(secs)),
            duration: (state != BuildState::Running).then_some(secs as f64),
            phase: None,
            error: None,
            phases: Vec::new(),
            log: Some(1),
        }
    }

    #[test]
    fn queries_filter_and_page_newest_first() {
        use BuildState::*;
        let mut b = Builds::new(100);
        b.load(
            vec![
                rec(3, "a", Failed, 30, 1),
                rec(1, "a", Succeeded, 10, 5),
                rec(2, "b", Succeeded, 20, 7),
                rec(4, "b", Cancelled, 40, 1),
                rec(5, "a", Succeeded, 50, 3),
            ],
            100,
        );
        let ids = |q: &BuildQuery| b.query(q).iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&BuildQuery::default()), [5, 4, 3, 2, 1]);
        let q = BuildQuery::parse(Some("recipe=a&limit=2")).unwrap();
        assert_eq!(ids(&q), [5, 3]);
        let q = BuildQuery::parse(Some("recipe=a&limit=2&before=3")).unwrap();
        assert_eq!(ids(&q), [1]);
        let q = BuildQuery::parse(Some("state=succeeded")).unwrap();
        assert_eq!(ids(&q), [5, 2, 1]);
        assert_eq!(BuildQuery::parse(Some("limit=9999")).unwrap().limit, 500);
        let q = BuildQuery::parse(Some("recipe=a%2Bb&state=failed")).unwrap();
        assert_eq!(q.recipe.as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%2e%2E/x"), Some("../x".into()));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%ff"), None);
        for bad in [
            "recipe=%2e%2e",
            "recipe=%",
            "limit=0",
            "limit=x",
            "before=0",
            "state=done",
            "recipe=../x",
            "recipe=",
        ] {
            assert!(BuildQuery::parse(Some(bad)).is_err(), "{bad}");
        }
        // previous_duration: the last success of the same recipe that
        // finished before this one started.
        assert_eq!(b.previous_duration(b.get(5).unwrap()), Some(5.0));
        assert_eq!(b.previous_duration(b.get(1).unwrap()), None);
        assert_eq!(b.previous_duration(b.get(4).unwrap()), Some(7.0));
    }

    #[test]
    fn keep_bounds_finished_builds_and_phases_are_timed() {
        use BuildState::*;
        let mut b = Builds::new(2);
        for id in 1..=3 {
            b.finish(rec(id, "a", Succeeded, id * 10, 1));
        }
        assert_eq!(b.query(&BuildQuery::default()).len(), 2);
        assert!(b.get(1).is_none());
        let mut r = rec(4, "a", Running, 40, 0);
        r.log = Some(1);
        b.start(r);
        let t = b.get(4).unwrap().started_at;
        b.phase(4, Phase::Fetching, t);
        b.phase(4, Phase::Fetching, t + Duration::from_secs(1));
        b.phase(4, Phase::Building, t + Duration::from_millis(2500));
        let d = b.detail(4, t + Duration::from_secs(4)).unwrap();
        assert_eq!(d.elapsed, Some(4.0));
        assert_eq!(d.phases.len(), 2);
        assert_eq!(d.phases[0].duration, Some(2.5));
        assert_eq!(d.phases[1].duration, None);
        assert_eq!(d.summary.phase, Some(Phase::Building));
        assert_eq!(d.previous_duration, Some(1.0));
        assert_eq!(b.len(), 3, "the running build is not counted against keep");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["log_url"], "/builds/4/log");
        assert_eq!(json["id"], 4);
        b.logs_pruned([("a", "4.0-1", 1)]);
        let json = serde_json::to_value(b.detail(4, t).unwrap()).unwrap();
        assert!(json["log_url"].is_null() && json["log"].is_null());
    }
}
