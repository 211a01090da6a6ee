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
use crate::model::build::{Phase, StopReason, Trigger};
use crate::model::control::{ControlAction, ControlEvent};
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
    builds_cancelled: u64,
    failed_by_recipe: BTreeMap<String, u64>,
    in_flight: Option<InFlight>,
    failures: BTreeMap<BuildKey, FailureRecord>,
    queue: Vec<QueuedBuild>,
    queue_depth: usize,
    polls: BTreeMap<String, PollInfo>,
    polls_total: BTreeMap<(String, PollResult), u64>,
    last_poll_success: BTreeMap<String, SystemTime>,
    webhooks_total: BTreeMap<WebhookResult, u64>,
    control_actions_total: BTreeMap<ControlAction, u64>,
    paused: Vec<String>,
    published_packages: usize,
    repository_error: Option<String>,
    sandbox: &'static str,
    held: Option<String>,
    durations: Histogram,
    builds: VecDeque<BuildRecord>,
}

impl State {
    /// Records the end of build `id` (see [`Status::build_finished`]).
    fn finish_build(
        &mut self,
        id: u64,
        state: BuildState,
        phase: Option<Phase>,
        error: Option<String>,
    ) {
        let now = SystemTime::now();
        let started = self
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
        if let Some(r) = self.builds.iter_mut().find(|r| r.id == id) {
            r.state = state;
            r.finished_at = Some(rfc3339(now));
            r.duration = Some((secs * 1000.0).round() / 1000.0);
            r.phase = phase;
            r.error = error;
            recipe = Some(r.recipe.clone());
        }
        match state {
            BuildState::Succeeded => self.builds_succeeded += 1,
            BuildState::Failed => {
                self.builds_failed += 1;
                if let Some(r) = recipe {
                    *self.failed_by_recipe.entry(r).or_default() += 1;
                }
            }
            _ => {}
        }
        if state != BuildState::Cancelled {
            let h = &mut self.durations;
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }
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
                builds_cancelled: 0,
                failed_by_recipe: BTreeMap::new(),
                in_flight: None,
                failures: BTreeMap::new(),
                queue: Vec::new(),
                queue_depth: 0,
                polls: BTreeMap::new(),
                polls_total: BTreeMap::new(),
                last_poll_success: BTreeMap::new(),
                webhooks_total: WebhookResult::ALL.iter().map(|r| (*r, 0)).collect(),
                control_actions_total: ControlAction::ALL.iter().map(|a| (*a, 0)).collect(),
                paused: Vec::new(),
                published_packages: 0,
                repository_error: None,
                sandbox: "none",
                held: None,
                durations: Histogram::default(),
                builds: VecDeque::new(),
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
        self.update(|s| s.finish_build(id, state, phase, error));
    }

    /// The in-flight build was stopped in `phase`: `cancelled`, with the
    /// reason as its error; an operator's cancel counts in
    /// `builds_cancelled`, a shutdown does not.
    pub fn build_stopped(&self, id: u64, phase: Phase, reason: StopReason) {
        self.update(|s| {
            let error = Some(reason.as_str().to_string());
            s.finish_build(id, BuildState::Cancelled, Some(phase), error);
            if reason == StopReason::Operator {
                s.builds_cancelled += 1;
            }
        });
    }

    /// The paused recipes changed.
    pub fn set_paused(&self, paused: impl IntoIterator<Item = String>) {
        let mut paused: Vec<String> = paused.into_iter().collect();
        paused.sort();
        self.update(|s| s.paused = paused);
    }

    /// An operator's action was carried out: counted in
    /// `farmhand_control_actions_total`. This is where a control event
    /// enters the farm's event stream: `/events` (DESIGN.md section 14)
    /// publishes `ev` from here.
    pub fn control_action(&self, ev: &ControlEvent) {
        self.update(|s| *s.control_actions_total.entry(ev.action).or_default() += 1);
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

    /// A number that changes whenever anything in the store does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
            builds_cancelled: u64,
            paused: &'a [String],
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
            builds_cancelled: s.builds_cancelled,
            paused: &s.paused,
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
        head(
            &mut m,
            "farmhand_builds_cancelled_total",
            "counter",
            "Builds cancelled by an operator (not those stopped by shutdown).",
        );
        let _ = writeln!(m, "farmhand_builds_cancelled_total {}", s.builds_cancelled);
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
            "farmhand_control_actions_total",
            "counter",
            "Control actions carried out, by action.",
        );
        for (a, n) in &s.control_actions_total {
            let _ = writeln!(
                m,
                "farmhand_control_actions_total{{action=\"{}\"}} {n}",
                a.as_str()
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

/// A copy of what the console pages show (`serve::pages`), taken under
/// the lock in one go so a page never mixes two states of the farm.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The farm's id.
    pub farm_id: String,
    /// When the daemon started.
    pub started_at: SystemTime,
    /// Valid recipe ids, sorted.
    pub recipes: Vec<String>,
    /// Invalid recipes and their errors.
    pub invalid: BTreeMap<String, String>,
    /// Builds started.
    pub builds_attempted: u64,
    /// Builds built and published.
    pub builds_succeeded: u64,
    /// Builds failed.
    pub builds_failed: u64,
    /// Builds an operator cancelled.
    pub builds_cancelled: u64,
    /// Recipes an operator paused, sorted.
    pub paused: Vec<String>,
    /// The build in progress and when it started.
    pub in_flight: Option<(InFlight, SystemTime)>,
    /// The backoff book.
    pub failures: BTreeMap<BuildKey, FailureRecord>,
    /// The queue in build order (at most [`QUEUE_LISTED`]).
    pub queue: Vec<QueuedBuild>,
    /// How many builds are queued.
    pub queue_depth: usize,
    /// The last poll of each recipe.
    pub polls: BTreeMap<String, PollInfo>,
    /// Packages in the active index.
    pub published_packages: usize,
    /// Why the repository cannot be opened.
    pub repository_error: Option<String>,
    /// Why the farm holds its queue.
    pub held: Option<String>,
    /// The build sandbox in force.
    pub sandbox: &'static str,
    /// The recent builds, newest first.
    pub builds: Vec<BuildRecord>,
}

impl Status {
    /// A copy of everything the console pages show.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        Snapshot {
            farm_id: s.farm_id.clone(),
            started_at: s.started_at,
            recipes: s.recipes.clone(),
            invalid: s.invalid.clone(),
            builds_attempted: s.builds_attempted,
            builds_succeeded: s.builds_succeeded,
            builds_failed: s.builds_failed,
            builds_cancelled: s.builds_cancelled,
            paused: s.paused.clone(),
            in_flight: s.in_flight.as_ref().map(|f| (f.clone(), f.started)),
            failures: s.failures.clone(),
            queue: s.queue.clone(),
            queue_depth: s.queue_depth,
            polls: s.polls.clone(),
            published_packages: s.published_packages,
            repository_error: s.repository_error.clone(),
            held: s.held.clone(),
            sandbox: s.sandbox,
            builds: s.builds.iter().cloned().collect(),
        }
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
}
