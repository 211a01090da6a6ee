//! The builds the status store knows: the finished ones of the build
//! history (at most `[history].keep`) and the running one, sorted by id,
//! and the documents made of them: the entries of `/builds` and
//! `/recipes/{id}` ([`BuildSummary`]) and `/builds/{id}` ([`BuildDetail`]).
//! Plain serde structs, so a page can render them as they are.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

    fn admits(&self, recipe: &str, state: BuildState, id: u64) -> bool {
        self.recipe.as_deref().is_none_or(|want| recipe == want)
            && self.state.is_none_or(|s| state == s)
            && self.before.is_none_or(|b| id < b)
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
///
/// A finished build is kept in a compact form ([`Compact`]: about 170
/// bytes, its phases inline and its strings in one text buffer shared by
/// all records), so the 10,000 builds of a default `[history].keep` cost
/// under 2 MiB in a few large blocks instead of 6 MiB in 40,000 small
/// ones; a running build (whose phases still change), or one that does
/// not fit the compact form, stays a whole record. Queries hand out whole
/// records, made on demand.
#[derive(Debug)]
pub struct Builds {
    records: VecDeque<Entry>,
    keep: usize,
    running: usize,
    /// One copy of each recipe id the records hold.
    names: HashSet<Arc<str>>,
    /// The version, tag and error of every compact record.
    text: String,
    /// Bytes of `text` no record uses any more.
    dead: usize,
}

#[derive(Debug)]
enum Entry {
    Whole(Box<BuildRecord>),
    Done(Compact),
}

/// Phases a compact record holds (a build has five kinds, each once).
const MAX_PHASES: usize = 5;

/// A finished build: times as milliseconds since the epoch (the
/// precision the history file and the JSON documents have), the recipe
/// id shared, the version, tag and error in [`Builds::text`].
#[derive(Debug)]
struct Compact {
    id: u64,
    recipe: Arc<str>,
    /// Where `version \n tag [\n error]` is in the text buffer: neither a
    /// version nor a tag holds a line break (git refuses control
    /// characters in ref names).
    text_at: u32,
    text_len: u32,
    started_ms: i64,
    /// `i64::MIN` when unknown.
    finished_ms: i64,
    /// NaN when unknown.
    duration: f64,
    phases: [CompactPhase; MAX_PHASES],
    log: Option<u32>,
    trigger: Trigger,
    state: BuildState,
    phase: Option<Phase>,
    has_error: bool,
    n_phases: u8,
}

#[derive(Debug, Clone, Copy)]
struct CompactPhase {
    phase: Phase,
    /// Milliseconds after the build's start (clamped at zero).
    offset_ms: u32,
    /// NaN while it ran.
    duration: f64,
}

const NO_PHASE: CompactPhase = CompactPhase {
    phase: Phase::Fetching,
    offset_ms: 0,
    duration: f64::NAN,
};

fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn opt_f64(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

impl Compact {
    /// `r` in compact form, its strings appended to `text`; `None` (and
    /// nothing appended) when it does not fit.
    fn new(r: &BuildRecord, names: &mut HashSet<Arc<str>>, text: &mut String) -> Option<Compact> {
        if r.phases.len() > MAX_PHASES || r.version.contains('\n') || r.tag.contains('\n') {
            return None;
        }
        let started_ms = to_ms(r.started_at);
        let mut phases = [NO_PHASE; MAX_PHASES];
        for (slot, p) in phases.iter_mut().zip(&r.phases) {
            *slot = CompactPhase {
                phase: p.phase,
                offset_ms: u32::try_from(to_ms(p.started_at) - started_ms).ok()?,
                duration: p.duration.unwrap_or(f64::NAN),
            };
        }
        let len = r.version.len() + r.tag.len() + 1 + r.error.as_ref().map_or(0, |e| e.len() + 1);
        let text_at = u32::try_from(text.len()).ok()?;
        let text_len = u32::try_from(len).ok()?;
        text_at.checked_add(text_len)?;
        text.push_str(&r.version);
        text.push('\n');
        text.push_str(&r.tag);
        if let Some(e) = &r.error {
            text.push('\n');
            text.push_str(e);
        }
        let recipe = match names.get(r.recipe.as_str()) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = r.recipe.as_str().into();
                names.insert(name.clone());
                name
            }
        };
        Some(Compact {
            id: r.id,
            recipe,
            text_at,
            text_len,
            started_ms,
            finished_ms: r.finished_at.map_or(i64::MIN, to_ms),
            duration: r.duration.unwrap_or(f64::NAN),
            phases,
            log: r.log,
            trigger: r.trigger,
            state: r.state,
            phase: r.phase,
            has_error: r.error.is_some(),
            n_phases: r.phases.len() as u8,
        })
    }

    fn text<'t>(&self, text: &'t str) -> &'t str {
        let at = self.text_at as usize;
        &text[at..at + self.text_len as usize]
    }

    /// Version, tag and error.
    fn parts<'t>(&self, text: &'t str) -> (&'t str, &'t str, Option<&'t str>) {
        let mut it = self.text(text).splitn(3, '\n');
        let version = it.next().unwrap_or_default();
        let tag = it.next().unwrap_or_default();
        let error = self.has_error.then(|| it.next().unwrap_or_default());
        (version, tag, error)
    }

    fn record(&self, text: &str) -> BuildRecord {
        let (version, tag, error) = self.parts(text);
        BuildRecord {
            id: self.id,
            recipe: self.recipe.to_string(),
            version: version.to_string(),
            tag: tag.to_string(),
            trigger: self.trigger,
            state: self.state,
            started_at: from_ms(self.started_ms),
            finished_at: (self.finished_ms != i64::MIN).then(|| from_ms(self.finished_ms)),
            duration: opt_f64(self.duration),
            phase: self.phase,
            error: error.map(str::to_string),
            phases: self.phases[..usize::from(self.n_phases)]
                .iter()
                .map(|p| PhaseSpan {
                    phase: p.phase,
                    started_at: from_ms(self.started_ms + i64::from(p.offset_ms)),
                    duration: opt_f64(p.duration),
                })
                .collect(),
            log: self.log,
        }
    }
}

impl Entry {
    fn id(&self) -> u64 {
        match self {
            Entry::Whole(r) => r.id,
            Entry::Done(c) => c.id,
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Entry::Whole(r) => r.is_finished(),
            Entry::Done(_) => true,
        }
    }

    fn recipe(&self) -> &str {
        match self {
            Entry::Whole(r) => &r.recipe,
            Entry::Done(c) => &c.recipe,
        }
    }

    fn state(&self) -> BuildState {
        match self {
            Entry::Whole(r) => r.state,
            Entry::Done(c) => c.state,
        }
    }

    fn record(&self, text: &str) -> BuildRecord {
        match self {
            Entry::Whole(r) => (**r).clone(),
            Entry::Done(c) => c.record(text),
        }
    }
}

impl Builds {
    /// No builds; at most `keep` finished ones will be kept.
    pub fn new(keep: usize) -> Builds {
        Builds {
            records: VecDeque::new(),
            keep: keep.max(1),
            running: 0,
            names: HashSet::new(),
            text: String::new(),
            dead: 0,
        }
    }

    fn entry(&mut self, rec: BuildRecord) -> Entry {
        if rec.is_finished() {
            if let Some(c) = Compact::new(&rec, &mut self.names, &mut self.text) {
                return Entry::Done(c);
            }
        }
        Entry::Whole(Box::new(rec))
    }

    /// Replaces everything with the finished builds of the history.
    pub fn load(&mut self, mut records: Vec<BuildRecord>, keep: usize) {
        records.sort_by_key(|r| r.id);
        records.dedup_by_key(|r| r.id);
        self.keep = keep.max(1);
        self.running = records.iter().filter(|r| !r.is_finished()).count();
        self.names.clear();
        self.text = String::with_capacity(
            records
                .iter()
                .map(|r| {
                    r.version.len() + r.tag.len() + 2 + r.error.as_ref().map_or(0, String::len)
                })
                .sum(),
        );
        self.dead = 0;
        let mut entries = VecDeque::with_capacity(records.len());
        for r in records {
            let e = self.entry(r);
            entries.push_back(e);
        }
        self.records = entries;
        self.trim();
    }

    fn trim(&mut self) {
        while self.records.len() - self.running > self.keep {
            match self.records.pop_front() {
                Some(e) if !e.is_finished() => {
                    // Never drop a running build: put it back and stop.
                    self.records.push_front(e);
                    break;
                }
                Some(Entry::Done(c)) => {
                    self.dead += c.text_len as usize;
                    // The last record of a recipe gone: its name goes too.
                    if Arc::strong_count(&c.recipe) == 2 {
                        self.names.remove(&*c.recipe);
                    }
                }
                Some(Entry::Whole(_)) => {}
                None => break,
            }
        }
        if self.dead > 64 * 1024 && self.dead > self.text.len() / 2 {
            self.repack();
        }
    }

    /// Copies the text the records still use into a new buffer.
    fn repack(&mut self) {
        let mut text = String::with_capacity(self.text.len() - self.dead);
        for e in &mut self.records {
            if let Entry::Done(c) = e {
                let at = text.len();
                text.push_str(c.text(&self.text));
                c.text_at = at as u32;
            }
        }
        self.text = text;
        self.dead = 0;
    }

    fn index(&self, id: u64) -> Option<usize> {
        let (a, b) = self.records.as_slices();
        match a.binary_search_by_key(&id, Entry::id) {
            Ok(i) => Some(i),
            Err(_) => b
                .binary_search_by_key(&id, Entry::id)
                .ok()
                .map(|i| a.len() + i),
        }
    }

    /// A build started (state running), or any record to put in place.
    pub fn start(&mut self, rec: BuildRecord) {
        self.running += usize::from(!rec.is_finished());
        let id = rec.id;
        let e = self.entry(rec);
        if let Some(i) = self.index(id) {
            let old = std::mem::replace(&mut self.records[i], e);
            self.running -= usize::from(!old.is_finished());
            if let Entry::Done(c) = old {
                self.dead += c.text_len as usize;
            }
        } else if self.records.back().is_none_or(|last| last.id() < id) {
            self.records.push_back(e);
        } else {
            let at = self.records.partition_point(|r| r.id() < id);
            self.records.insert(at, e);
        }
    }

    /// The running build `id` entered `phase` at `at`.
    pub fn phase(&mut self, id: u64, phase: Phase, at: SystemTime) -> Option<&BuildRecord> {
        let i = self.index(id)?;
        let Entry::Whole(r) = &mut self.records[i] else {
            return None;
        };
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
    pub fn get(&self, id: u64) -> Option<BuildRecord> {
        self.index(id).map(|i| self.records[i].record(&self.text))
    }

    /// The state of build `id`.
    pub fn state(&self, id: u64) -> Option<BuildState> {
        self.index(id).map(|i| self.records[i].state())
    }

    /// The builds `q` asks for, newest first.
    pub fn query(&self, q: &BuildQuery) -> Vec<BuildRecord> {
        let newest = match q.before {
            Some(b) => self.records.partition_point(|r| r.id() < b),
            None => self.records.len(),
        };
        self.records
            .range(..newest)
            .rev()
            .filter(|e| q.admits(e.recipe(), e.state(), e.id()))
            .take(q.limit)
            .map(|e| e.record(&self.text))
            .collect()
    }

    /// The duration of the most recent successful build of `rec`'s
    /// recipe that finished before `rec` started.
    pub fn previous_duration(&self, rec: &BuildRecord) -> Option<f64> {
        let end = self.records.partition_point(|r| r.id() < rec.id);
        let started = to_ms(rec.started_at);
        self.records.range(..end).rev().find_map(|e| match e {
            Entry::Done(c)
                if *c.recipe == *rec.recipe
                    && c.state == BuildState::Succeeded
                    && c.finished_ms != i64::MIN
                    && c.finished_ms <= started =>
            {
                Some(opt_f64(c.duration))
            }
            Entry::Whole(r)
                if r.recipe == rec.recipe
                    && r.state == BuildState::Succeeded
                    && r.finished_at.is_some_and(|f| f <= rec.started_at) =>
            {
                Some(r.duration)
            }
            _ => None,
        })?
    }

    /// Logs were pruned: the records of `(recipe, version, attempt)` lose
    /// their log.
    pub fn logs_pruned<'a>(&mut self, gone: impl IntoIterator<Item = (&'a str, &'a str, u32)>) {
        let gone: HashSet<(&str, &str, u32)> = gone.into_iter().collect();
        if gone.is_empty() {
            return;
        }
        let text = &self.text;
        for e in self.records.iter_mut().rev() {
            match e {
                Entry::Whole(r) => {
                    if let Some(n) = r.log {
                        if gone.contains(&(r.recipe.as_str(), r.version.as_str(), n)) {
                            r.log = None;
                        }
                    }
                }
                Entry::Done(c) => {
                    if let Some(n) = c.log {
                        let (version, _, _) = c.parts(text);
                        if gone.contains(&(&*c.recipe, version, n)) {
                            c.log = None;
                        }
                    }
                }
            }
        }
    }

    /// The previous and the next build of the same recipe as build `id`.
    pub fn neighbours(&self, id: u64) -> (Option<u64>, Option<u64>) {
        let Some(i) = self.index(id) else {
            return (None, None);
        };
        let recipe = self.records[i].recipe();
        let previous = self
            .records
            .range(..i)
            .rev()
            .find(|r| r.recipe() == recipe)
            .map(Entry::id);
        let next = self
            .records
            .range(i + 1..)
            .find(|r| r.recipe() == recipe)
            .map(Entry::id);
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
            summary: (&r).into(),
            phases: r
                .phases
                .iter()
                .map(|p| PhaseView {
                    phase: p.phase,
                    started_at: rfc3339(p.started_at),
                    duration: p.duration,
                })
                .collect(),
            previous_duration: self.previous_duration(&r),
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
        assert_eq!(b.previous_duration(&b.get(5).unwrap()), Some(5.0));
        assert_eq!(b.previous_duration(&b.get(1).unwrap()), None);
        assert_eq!(b.previous_duration(&b.get(4).unwrap()), Some(7.0));
    }

    #[test]
    fn finished_records_come_back_as_they_went_in() {
        use BuildState::*;
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut failed = rec(7, "a", Failed, 0, 3);
        failed.started_at = t0;
        failed.finished_at = Some(t0 + Duration::from_millis(3_456));
        failed.duration = Some(3.456);
        failed.phase = Some(Phase::Building);
        failed.error = Some("line one\nline two\n<b>&\u{fffd}".into());
        failed.phases = vec![
            PhaseSpan {
                phase: Phase::Fetching,
                started_at: t0,
                duration: Some(0.25),
            },
            PhaseSpan {
                phase: Phase::Building,
                started_at: t0 + Duration::from_millis(250),
                duration: Some(3.206),
            },
        ];
        let mut empty_error = rec(8, "b", Cancelled, 10, 1);
        empty_error.error = Some(String::new());
        let mut no_log = rec(9, "a", Succeeded, 20, 1);
        no_log.log = None;
        let unknown_end = BuildRecord {
            finished_at: None,
            duration: None,
            ..rec(10, "c", Failed, 30, 1)
        };
        let all = [failed, empty_error, no_log, unknown_end];
        let mut b = Builds::new(100);
        b.load(all.to_vec(), 100);
        for r in &all {
            assert_eq!(b.get(r.id).as_ref(), Some(r));
            assert_eq!(b.state(r.id), Some(r.state));
        }
        // One copy of each recipe id.
        assert_eq!(b.names.len(), 3);
        let mut b = Builds::new(1);
        for r in &all {
            b.finish(r.clone());
        }
        assert_eq!(b.names.len(), 1, "names of dropped records go too");
        // A record that does not fit (six phases) is kept whole.
        let mut odd = all[0].clone();
        odd.id = 11;
        odd.phases = std::iter::repeat_n(all[0].phases[0].clone(), 6).collect();
        b.finish(odd.clone());
        assert_eq!(b.get(11), Some(odd));
    }

    #[test]
    fn text_of_dropped_records_is_given_back() {
        let mut b = Builds::new(100);
        for id in 1..=20_000 {
            let mut r = rec(id, "a", BuildState::Failed, id, 1);
            r.error = Some(format!("failure number {id}"));
            b.finish(r);
        }
        assert_eq!(b.len(), 100);
        assert!(
            b.text.len() < 64 * 1024 * 3,
            "{} bytes of text",
            b.text.len()
        );
        let last = b.get(20_000).unwrap();
        assert_eq!(last.error.as_deref(), Some("failure number 20000"));
        assert_eq!(last.version, "20000.0-1");
        assert_eq!(b.get(19_901).unwrap().tag, "v19901.0");
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
