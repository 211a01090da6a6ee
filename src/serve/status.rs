//! Counters and snapshots behind `/status`, `/metrics` and `/builds`.
//!
//! One small struct behind a std `Mutex` (never held across an `.await`):
//! the worker, the poller and the HTTP handlers update it, and the HTTP
//! handlers read rendered documents from it. Every change bumps a
//! generation number; rendered JSON and Prometheus text are cached per
//! generation, so a scrape storm costs one render per change.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use crate::model::build::{BuildKey, BuildState, FailureRecord, QueuedBuild};
use crate::model::build::{Phase, Trigger};
use crate::model::time::rfc3339;
use crate::watch::poll::PollObserver;
use crate::watch::WebhookResult;

/// How many finished builds `/builds` remembers.
pub const BUILD_HISTORY: usize = 200;
/// How many queued builds `/status` lists (`queue_depth` counts them all).
pub const QUEUE_LISTED: usize = 1000;

/// Buckets of `farmhand_build_duration_seconds`.
const BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// The build in progress.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    /// Recipe id.
    pub recipe: String,
    /// Package version.
    pub version: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Upstream tag.
    pub tag: String,
    /// poll or webhook.
    pub trigger: Trigger,
    /// The build id.
    pub build_id: u64,
    /// Where it is.
    pub phase: Phase,
    #[serde(skip)]
    started: SystemTime,
}

/// One build, as `/builds` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
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
    /// The failed phase.
    pub phase: Option<Phase>,
    /// The error.
    pub error: Option<String>,
    /// `/builds/<id>/log`, the build's log over HTTP.
    pub log_url: String,
    /// The same as `log_url` (a short alias).
    pub log: String,
    /// The log file.
    #[serde(skip)]
    pub log_path: PathBuf,
}

/// Last poll of one recipe.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PollInfo {
    /// RFC 3339 time of the last poll.
    pub last_at: Option<String>,
    /// Did it succeed?
    pub ok: bool,
    /// Tags the upstream listed.
    pub tags_seen: usize,
    /// RFC 3339 time of the next scheduled poll.
    pub next_at: Option<String>,
    /// The last error, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize)]
struct FailureView {
    failures: u32,
    next_retry: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct QueueView<'a> {
    recipe: &'a str,
    version: &'a str,
    tag: &'a str,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Everything `/status` and `/metrics` show.
struct State {
    farm_id: String,
    started_at: SystemTime,
    recipes: Vec<String>,
    invalid: BTreeMap<String, String>,
    builds_attempted: u64,
    builds_succeeded: u64,
    builds_failed: u64,
    failed_by_recipe: BTreeMap<String, u64>,
    in_flight: Option<InFlight>,
    failures: BTreeMap<BuildKey, FailureRecord>,
    queue: Vec<QueuedBuild>,
    queue_depth: usize,
    polls: BTreeMap<String, PollInfo>,
    polls_total: BTreeMap<(String, PollResult), u64>,
    last_poll_success: BTreeMap<String, SystemTime>,
    webhooks_total: BTreeMap<WebhookResult, u64>,
    published_packages: usize,
    repository_error: Option<String>,
    sandbox: &'static str,
    held: Option<String>,
    durations: Histogram,
    builds: VecDeque<BuildRecord>,
    /// `[http].per_recipe_metrics`.
    per_recipe_metrics: bool,
}

/// The shared status.
pub struct Status {
    state: Mutex<State>,
    generation: AtomicU64,
    cache: Mutex<Cache>,
    summary: tokio::sync::watch::Sender<String>,
}

#[derive(Default)]
struct Cache {
    json: Option<(u64, Bytes)>,
    metrics: Option<(u64, Bytes)>,
}

/// How a poll went: the `result` label of `farmhand_polls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PollResult {
    Ok,
    Error,
}

impl PollResult {
    fn as_str(self) -> &'static str {
        match self {
            PollResult::Ok => "ok",
            PollResult::Error => "error",
        }
    }
}

impl Status {
    /// A fresh status for farm `farm_id`.
    pub fn new(farm_id: &str) -> Status {
        Status {
            state: Mutex::new(State {
                farm_id: farm_id.to_string(),
                started_at: SystemTime::now(),
                recipes: Vec::new(),
                invalid: BTreeMap::new(),
                builds_attempted: 0,
                builds_succeeded: 0,
                builds_failed: 0,
                failed_by_recipe: BTreeMap::new(),
                in_flight: None,
                failures: BTreeMap::new(),
                queue: Vec::new(),
                queue_depth: 0,
                polls: BTreeMap::new(),
                polls_total: BTreeMap::new(),
                last_poll_success: BTreeMap::new(),
                webhooks_total: WebhookResult::ALL.iter().map(|r| (*r, 0)).collect(),
                published_packages: 0,
                repository_error: None,
                sandbox: "none",
                held: None,
                durations: Histogram::default(),
                builds: VecDeque::new(),
                per_recipe_metrics: true,
            }),
            generation: AtomicU64::new(1),
            cache: Mutex::new(Cache::default()),
            summary: tokio::sync::watch::Sender::new("idle, 0 recipes".into()),
        }
    }

    /// The one-line summary (`idle, 12 recipes` / `building nginx 1.27.0-1`),
    /// updated on every change; systemd's `STATUS=` follows it.
    pub fn summary(&self) -> tokio::sync::watch::Receiver<String> {
        self.summary.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        f(&mut s);
        self.generation.fetch_add(1, Ordering::Release);
        let line = match &s.in_flight {
            Some(b) => format!("building {} {}", b.recipe, b.version),
            None => format!("idle, {} recipes", s.recipes.len()),
        };
        drop(s);
        self.summary.send_if_modified(|old| {
            if *old == line {
                false
            } else {
                *old = line;
                true
            }
        });
    }

    /// Sets the roster: valid ids and invalid recipes with their errors.
    pub fn set_roster(&self, recipes: Vec<String>, invalid: BTreeMap<String, String>) {
        self.update(|s| {
            s.polls.retain(|k, _| recipes.binary_search(k).is_ok());
            s.recipes = recipes;
            s.invalid = invalid;
        });
    }

    /// A build started.
    pub fn build_started(&self, rec: BuildRecord, phase: Phase) {
        self.update(|s| {
            s.builds_attempted += 1;
            s.in_flight = Some(InFlight {
                recipe: rec.recipe.clone(),
                version: rec.version.clone(),
                started_at: rec.started_at.clone(),
                tag: rec.tag.clone(),
                trigger: rec.trigger,
                build_id: rec.id,
                phase,
                started: SystemTime::now(),
            });
            s.builds.push_front(rec);
            while s.builds.len() > BUILD_HISTORY {
                s.builds.pop_back();
            }
        });
    }

    /// The in-flight build moved to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.update(|s| {
            if let Some(f) = s.in_flight.as_mut() {
                f.phase = phase;
            }
        });
    }

    /// The in-flight build ended.
    pub fn build_finished(
        &self,
        id: u64,
        state: BuildState,
        phase: Option<Phase>,
        error: Option<String>,
    ) {
        self.update(|s| {
            let now = SystemTime::now();
            let started = s
                .in_flight
                .take()
                .filter(|f| f.build_id == id)
                .map(|f| f.started)
                .unwrap_or(now);
            let secs = now
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64();
            let mut recipe = None;
            if let Some(r) = s.builds.iter_mut().find(|r| r.id == id) {
                r.state = state;
                r.finished_at = Some(rfc3339(now));
                r.duration = Some((secs * 1000.0).round() / 1000.0);
                r.phase = phase;
                r.error = error;
                recipe = Some(r.recipe.clone());
            }
            match state {
                BuildState::Succeeded => s.builds_succeeded += 1,
                BuildState::Failed => {
                    s.builds_failed += 1;
                    if let Some(r) = recipe {
                        *s.failed_by_recipe.entry(r).or_default() += 1;
                    }
                }
                _ => {}
            }
            if state != BuildState::Cancelled {
                let h = &mut s.durations;
                for (i, b) in BUCKETS.iter().enumerate() {
                    if secs <= *b {
                        h.counts[i] += 1;
                    }
                }
                h.sum += secs;
                h.count += 1;
            }
        });
    }

    /// The backoff book changed.
    pub fn set_failures(&self, failures: &BTreeMap<BuildKey, FailureRecord>) {
        self.update(|s| s.failures = failures.clone());
    }

    /// The queue changed.
    pub fn set_queue(&self, listed: Vec<QueuedBuild>, depth: usize) {
        self.update(|s| {
            s.queue = listed;
            s.queue_depth = depth;
        });
    }

    /// The number of packages in the active index.
    pub fn set_published(&self, n: usize) {
        self.update(|s| s.published_packages = n);
    }

    /// Whether `/metrics` carries the series labelled by recipe
    /// (`[http].per_recipe_metrics`); without them, failed builds and polls
    /// are counted for the whole farm.
    pub fn set_per_recipe_metrics(&self, on: bool) {
        self.update(|s| s.per_recipe_metrics = on);
    }

    /// The build sandbox in force: `bwrap` or `none`.
    pub fn set_sandbox(&self, sandbox: &'static str) {
        self.update(|s| s.sandbox = sandbox);
    }

    /// Why the farm holds its queue (a host fault: `disk full: ...`), or
    /// `None`.
    pub fn set_held(&self, held: Option<String>) {
        self.update(|s| s.held = held);
    }

    /// Why the farm holds its queue, if it does.
    pub fn held(&self) -> Option<String> {
        self.lock().held.clone()
    }

    /// Why the repository cannot be opened (builds are held), or `None`.
    pub fn set_repository_error(&self, e: Option<String>) {
        self.update(|s| s.repository_error = e);
    }

    /// A poll finished.
    fn record_poll(&self, recipe: &str, result: Result<usize, String>) {
        self.update(|s| {
            // A poll that was running when a reload removed its recipe.
            if s.recipes
                .binary_search_by(|r| r.as_str().cmp(recipe))
                .is_err()
            {
                return;
            }
            let now = SystemTime::now();
            let p = s.polls.entry(recipe.to_string()).or_default();
            p.last_at = Some(rfc3339(now));
            let label = match result {
                Ok(n) => {
                    p.ok = true;
                    p.tags_seen = n;
                    p.error = None;
                    PollResult::Ok
                }
                Err(e) => {
                    p.ok = false;
                    p.error = Some(e);
                    PollResult::Error
                }
            };
            if label == PollResult::Ok {
                s.last_poll_success.insert(recipe.to_string(), now);
            }
            *s.polls_total
                .entry((recipe.to_string(), label))
                .or_default() += 1;
        });
    }

    /// The next scheduled poll of `recipe`.
    fn record_next_poll(&self, recipe: &str, at: SystemTime) {
        self.update(|s| {
            if s.recipes
                .binary_search_by(|r| r.as_str().cmp(recipe))
                .is_err()
            {
                return;
            }
            s.polls.entry(recipe.to_string()).or_default().next_at = Some(rfc3339(at));
        });
    }

    /// Counts a webhook outcome.
    pub fn webhook(&self, result: WebhookResult) {
        self.update(|s| *s.webhooks_total.entry(result).or_default() += 1);
    }

    /// The recent builds, newest first.
    pub fn builds(&self) -> Vec<BuildRecord> {
        self.lock().builds.iter().cloned().collect()
    }

    /// One build by id.
    pub fn build(&self, id: u64) -> Option<BuildRecord> {
        self.lock().builds.iter().find(|b| b.id == id).cloned()
    }

    /// `/status` JSON.
    pub fn json(&self) -> Bytes {
        let gen = self.generation.load(Ordering::Acquire);
        if let Some((g, b)) = &self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .json
        {
            if *g == gen {
                return b.clone();
            }
        }
        let body = Bytes::from(self.render_json());
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .json = Some((gen, body.clone()));
        body
    }

    /// `/metrics` Prometheus text.
    pub fn metrics(&self) -> Bytes {
        let gen = self.generation.load(Ordering::Acquire);
        if let Some((g, b)) = &self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .metrics
        {
            if *g == gen {
                return b.clone();
            }
        }
        let body = Bytes::from(self.render_metrics());
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .metrics = Some((gen, body.clone()));
        body
    }

    fn render_json(&self) -> Vec<u8> {
        let s = self.lock();
        #[derive(Serialize)]
        struct Doc<'a> {
            farm_id: &'a str,
            recipes: &'a [String],
            builds_attempted: u64,
            builds_succeeded: u64,
            in_flight: Option<&'a InFlight>,
            failures: BTreeMap<String, FailureView>,
            version: &'static str,
            started_at: String,
            builds_failed: u64,
            queue: Vec<QueueView<'a>>,
            queue_depth: usize,
            invalid_recipes: &'a BTreeMap<String, String>,
            polls: &'a BTreeMap<String, PollInfo>,
            published_packages: usize,
            repository_error: Option<&'a str>,
            sandbox: &'static str,
            held: Option<&'a str>,
        }
        let doc = Doc {
            farm_id: &s.farm_id,
            recipes: &s.recipes,
            builds_attempted: s.builds_attempted,
            builds_succeeded: s.builds_succeeded,
            in_flight: s.in_flight.as_ref(),
            failures: s
                .failures
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        FailureView {
                            failures: v.failures,
                            next_retry: rfc3339(v.next_retry),
                            error: (!v.error.is_empty()).then(|| v.error.clone()),
                        },
                    )
                })
                .collect(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339(s.started_at),
            builds_failed: s.builds_failed,
            queue: s
                .queue
                .iter()
                .map(|q| QueueView {
                    recipe: &q.recipe,
                    version: &q.version,
                    tag: &q.tag,
                })
                .collect(),
            queue_depth: s.queue_depth,
            invalid_recipes: &s.invalid,
            polls: &s.polls,
            published_packages: s.published_packages,
            repository_error: s.repository_error.as_deref(),
            sandbox: s.sandbox,
            held: s.held.as_deref(),
        };
        let mut out = serde_json::to_vec(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    fn render_metrics(&self) -> String {
        let s = self.lock();
        let mut m = String::with_capacity(4096);
        let head = |m: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut m,
            "farmhand_builds_attempted_total",
            "counter",
            "Builds started since the daemon started.",
        );
        let _ = writeln!(m, "farmhand_builds_attempted_total {}", s.builds_attempted);
        head(
            &mut m,
            "farmhand_builds_succeeded_total",
            "counter",
            "Builds built and published.",
        );
        let _ = writeln!(m, "farmhand_builds_succeeded_total {}", s.builds_succeeded);
        if s.per_recipe_metrics {
            head(
                &mut m,
                "farmhand_builds_failed_total",
                "counter",
                "Failed builds, by recipe.",
            );
            for (r, n) in &s.failed_by_recipe {
                let _ = writeln!(
                    m,
                    "farmhand_builds_failed_total{{recipe=\"{}\"}} {n}",
                    escape(r)
                );
            }
        } else {
            head(
                &mut m,
                "farmhand_builds_failed_total",
                "counter",
                "Failed builds.",
            );
            let _ = writeln!(m, "farmhand_builds_failed_total {}", s.builds_failed);
        }
        head(
            &mut m,
            "farmhand_build_duration_seconds",
            "histogram",
            "Duration of finished builds.",
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                m,
                "farmhand_build_duration_seconds_bucket{{le=\"{b}\"}} {}",
                s.durations.counts[i]
            );
        }
        let _ = writeln!(
            m,
            "farmhand_build_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            s.durations.count
        );
        let _ = writeln!(m, "farmhand_build_duration_seconds_sum {}", s.durations.sum);
        let _ = writeln!(
            m,
            "farmhand_build_duration_seconds_count {}",
            s.durations.count
        );
        head(
            &mut m,
            "farmhand_build_in_flight",
            "gauge",
            "1 while a build runs.",
        );
        let _ = writeln!(
            m,
            "farmhand_build_in_flight {}",
            u8::from(s.in_flight.is_some())
        );
        head(
            &mut m,
            "farmhand_build_in_flight_started_timestamp_seconds",
            "gauge",
            "Start time of the running build (0 when idle).",
        );
        let started = s.in_flight.as_ref().map(|f| unix(f.started)).unwrap_or(0.0);
        let _ = writeln!(
            m,
            "farmhand_build_in_flight_started_timestamp_seconds {started}"
        );
        head(
            &mut m,
            "farmhand_backoff_entries",
            "gauge",
            "Failed builds waiting out their backoff.",
        );
        let _ = writeln!(m, "farmhand_backoff_entries {}", s.failures.len());
        head(
            &mut m,
            "farmhand_queue_depth",
            "gauge",
            "Builds waiting in the queue.",
        );
        let _ = writeln!(m, "farmhand_queue_depth {}", s.queue_depth);
        head(
            &mut m,
            "farmhand_recipes",
            "gauge",
            "Valid recipes in the roster.",
        );
        let _ = writeln!(m, "farmhand_recipes {}", s.recipes.len());
        head(
            &mut m,
            "farmhand_invalid_recipes",
            "gauge",
            "Invalid recipes in the recipes directory.",
        );
        let _ = writeln!(m, "farmhand_invalid_recipes {}", s.invalid.len());
        if s.per_recipe_metrics {
            head(
                &mut m,
                "farmhand_polls_total",
                "counter",
                "Upstream polls, by recipe and result.",
            );
            for ((r, res), n) in &s.polls_total {
                let _ = writeln!(
                    m,
                    "farmhand_polls_total{{recipe=\"{}\",result=\"{}\"}} {n}",
                    escape(r),
                    res.as_str()
                );
            }
            head(
                &mut m,
                "farmhand_last_poll_success_timestamp_seconds",
                "gauge",
                "Time of the last successful poll, by recipe.",
            );
            for (r, t) in &s.last_poll_success {
                let _ = writeln!(
                    m,
                    "farmhand_last_poll_success_timestamp_seconds{{recipe=\"{}\"}} {}",
                    escape(r),
                    unix(*t)
                );
            }
        } else {
            head(
                &mut m,
                "farmhand_polls_total",
                "counter",
                "Upstream polls, by result.",
            );
            for res in [PollResult::Ok, PollResult::Error] {
                let n: u64 = s
                    .polls_total
                    .iter()
                    .filter(|((_, r), _)| *r == res)
                    .map(|(_, n)| n)
                    .sum();
                let _ = writeln!(m, "farmhand_polls_total{{result=\"{}\"}} {n}", res.as_str());
            }
        }
        head(
            &mut m,
            "farmhand_webhooks_total",
            "counter",
            "Webhook requests, by result.",
        );
        for (r, n) in &s.webhooks_total {
            let _ = writeln!(
                m,
                "farmhand_webhooks_total{{result=\"{}\"}} {n}",
                r.as_str()
            );
        }
        head(
            &mut m,
            "farmhand_published_packages",
            "gauge",
            "Packages in the active index.",
        );
        let _ = writeln!(m, "farmhand_published_packages {}", s.published_packages);
        head(
            &mut m,
            "farmhand_start_time_seconds",
            "gauge",
            "When the daemon started.",
        );
        let _ = writeln!(m, "farmhand_start_time_seconds {}", unix(s.started_at));
        head(
            &mut m,
            "farmhand_build_info",
            "gauge",
            "The farmhand version.",
        );
        let _ = writeln!(
            m,
            "farmhand_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        m
    }
}

fn unix(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() as f64 + f64::from(d.subsec_millis()) / 1000.0
}

/// Escapes a Prometheus label value (`\`, `"` and newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl PollObserver for Status {
    fn poll_finished(&self, recipe: &str, result: Result<usize, String>) {
        self.record_poll(recipe, result);
    }

    fn poll_scheduled(&self, recipe: &str, at: SystemTime) {
        self.record_next_poll(recipe, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_anchor_fields_and_caches() {
        let st = Status::new("farm-1");
        st.set_roster(vec!["a".into()], BTreeMap::new());
        let j: serde_json::Value = serde_json::from_slice(&st.json()).unwrap();
        for k in [
            "farm_id",
            "recipes",
            "builds_attempted",
            "builds_succeeded",
            "in_flight",
            "failures",
            "version",
            "started_at",
            "builds_failed",
            "queue",
            "invalid_recipes",
            "polls",
        ] {
            assert!(j.get(k).is_some(), "missing {k}");
        }
        assert!(j["in_flight"].is_null());
        assert_eq!(j["failures"], serde_json::json!({}));
        let a = st.json();
        assert_eq!(a.as_ptr(), st.json().as_ptr(), "cached while unchanged");
        st.webhook(WebhookResult::Pong);
        assert_ne!(a.as_ptr(), st.json().as_ptr());
    }

    #[test]
    fn metrics_escape_labels() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let st = Status::new("f");
        st.poll_finished("x", Ok(3));
        assert!(
            !String::from_utf8(st.metrics().to_vec())
                .unwrap()
                .contains("recipe=\"x\""),
            "polls of recipes outside the roster are not recorded"
        );
        st.set_roster(vec!["x".into()], BTreeMap::new());
        st.poll_finished("x", Ok(3));
        let m = String::from_utf8(st.metrics().to_vec()).unwrap();
        assert!(m.contains("farmhand_polls_total{recipe=\"x\",result=\"ok\"} 1"));
        assert!(m.contains("farmhand_webhooks_total{result=\"too_large\"} 0"));
    }

    #[test]
    fn per_recipe_series_can_be_turned_off() {
        let st = Status::new("f");
        st.set_roster(vec!["x".into(), "y".into()], BTreeMap::new());
        st.poll_finished("x", Ok(3));
        st.poll_finished("y", Ok(1));
        st.poll_finished("y", Err("gone".into()));
        st.set_per_recipe_metrics(false);
        let m = String::from_utf8(st.metrics().to_vec()).unwrap();
        assert!(!m.contains("recipe="), "{m}");
        assert!(m.contains("farmhand_polls_total{result=\"ok\"} 2"), "{m}");
        assert!(
            m.contains("farmhand_polls_total{result=\"error\"} 1"),
            "{m}"
        );
        assert!(m.contains("\nfarmhand_builds_failed_total 0\n"), "{m}");
        assert!(
            !m.contains("farmhand_last_poll_success_timestamp_seconds"),
            "{m}"
        );
    }
}
