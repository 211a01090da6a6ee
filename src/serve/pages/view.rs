//! What the pages show, as plain data: made from one [`Snapshot`] of the
//! status store and the roster, then handed to the templates. Keeping the
//! figures here (states, estimates, neighbours) leaves the templates with
//! nothing to decide but markup.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::model::build::{BuildState, Phase, Trigger};
use crate::model::recipe::{Backlog, Roster};
use crate::model::version::Version;
use crate::serve::status::{BuildRecord, PollInfo, Snapshot};

/// Every phase of a build, in order.
pub const PHASES: [Phase; 5] = [
    Phase::Fetching,
    Phase::Building,
    Phase::Packaging,
    Phase::Publishing,
    Phase::Uploading,
];

/// Past this share of the previous successful build's duration, a running
/// build is marked overdue.
pub const OVERDUE: f64 = 1.2;

/// How many finished builds the overview's timeline shows.
pub const TIMELINE: usize = 30;

/// How many builds the recipe page lists.
pub const RECIPE_BUILDS: usize = 20;

/// A recipe's state, as the overview's table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeState {
    /// Nothing to do.
    Idle,
    /// A version waits in the queue.
    Queued,
    /// A version is building.
    Building,
    /// A version is in backoff after failing.
    Failing,
    /// An operator paused it.
    Paused,
    /// Its file is invalid.
    Invalid,
}

impl RecipeState {
    /// The word the pages show (and the CSS class suffix).
    pub fn as_str(self) -> &'static str {
        match self {
            RecipeState::Idle => "idle",
            RecipeState::Queued => "queued",
            RecipeState::Building => "building",
            RecipeState::Failing => "failing",
            RecipeState::Paused => "paused",
            RecipeState::Invalid => "invalid",
        }
    }
}

/// Where one phase of a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseState {
    /// Finished.
    Done,
    /// Running now.
    Current,
    /// The build failed (or was cancelled) here.
    Failed,
    /// Not reached (yet, or ever).
    Pending,
}

impl PhaseState {
    /// The word the pages show.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseState::Done => "done",
            PhaseState::Current => "running",
            PhaseState::Failed => "failed",
            PhaseState::Pending => "pending",
        }
    }
}

/// One phase in a timeline.
#[derive(Debug, Clone)]
pub struct PhaseRow {
    /// The phase.
    pub phase: Phase,
    /// Where it stands.
    pub state: PhaseState,
    /// Seconds it took (or has taken so far), when known.
    pub duration: Option<f64>,
}

/// One build, as lists and the build page show it.
#[derive(Debug, Clone)]
pub struct BuildRow {
    /// The build id.
    pub id: u64,
    /// Recipe id.
    pub recipe: String,
    /// Package version.
    pub version: String,
    /// Upstream tag.
    pub tag: String,
    /// poll or webhook.
    pub trigger: Trigger,
    /// How it ended, or running.
    pub state: BuildState,
    /// When it started.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// Seconds from start to end (so far, while running).
    pub duration: Option<f64>,
    /// The phase it failed in, or the current one while running.
    pub phase: Option<Phase>,
    /// What went wrong.
    pub error: Option<String>,
    /// Where its log is served.
    pub log_url: Option<String>,
}

/// The build in progress.
#[derive(Debug, Clone)]
pub struct Running {
    /// The build.
    pub build: BuildRow,
    /// Its phases.
    pub phases: Vec<PhaseRow>,
    /// Seconds since it started.
    pub elapsed: f64,
    /// The duration of the recipe's previous successful build.
    pub estimate: Option<f64>,
    /// The last lines of its log.
    pub log_tail: String,
}

impl Running {
    /// True past [`OVERDUE`] times the estimate.
    pub fn overdue(&self) -> bool {
        self.estimate.is_some_and(|e| self.elapsed > e * OVERDUE)
    }
}

/// A backoff entry.
#[derive(Debug, Clone)]
pub struct FailureRow {
    /// `recipe@version`.
    pub key: String,
    /// Recipe id.
    pub recipe: String,
    /// Package version.
    pub version: String,
    /// Consecutive failures.
    pub failures: u32,
    /// Not retried before this.
    pub next_retry: SystemTime,
    /// The last error.
    pub error: String,
}

/// A version waiting to be built.
#[derive(Debug, Clone)]
pub struct QueueRow {
    /// Recipe id.
    pub recipe: String,
    /// Package version.
    pub version: String,
    /// Upstream tag.
    pub tag: String,
    /// What asked for it.
    pub trigger: Trigger,
}

/// One row of the overview's recipe table.
#[derive(Debug, Clone)]
pub struct RecipeRow {
    /// Recipe id.
    pub id: String,
    /// Its state.
    pub state: RecipeState,
    /// Its newest published version.
    pub published: Option<String>,
    /// Its last poll.
    pub last_poll: Option<SystemTime>,
    /// Whether the last poll succeeded.
    pub poll_ok: Option<bool>,
    /// Its next scheduled poll.
    pub next_poll: Option<SystemTime>,
    /// Whether it takes webhooks.
    pub webhook: bool,
}

/// The overview, `/`.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The farm's id.
    pub farm_id: String,
    /// farmhand's version.
    pub version: &'static str,
    /// When the daemon started.
    pub started_at: SystemTime,
    /// When this page was made.
    pub now: SystemTime,
    /// Builds started.
    pub attempted: u64,
    /// Builds succeeded.
    pub succeeded: u64,
    /// Builds failed.
    pub failed: u64,
    /// Builds an operator cancelled.
    pub cancelled: u64,
    /// Packages in the index.
    pub published_packages: usize,
    /// Builds queued.
    pub queue_depth: usize,
    /// Why builds are held.
    pub held: Option<String>,
    /// Why the repository cannot be opened.
    pub repository_error: Option<String>,
    /// The build sandbox.
    pub sandbox: &'static str,
    /// The build in progress.
    pub running: Option<Running>,
    /// The queue in build order.
    pub queue: Vec<QueueRow>,
    /// The backoff book.
    pub failures: Vec<FailureRow>,
    /// Every recipe (valid and invalid), by id, after the filter.
    pub recipes: Vec<RecipeRow>,
    /// How many recipes there are in all.
    pub recipes_total: usize,
    /// The filter the reader typed (`?filter=`).
    pub filter: String,
    /// Invalid recipes and their errors.
    pub invalid: Vec<(String, String)>,
    /// The recent finished builds, newest first.
    pub timeline: Vec<BuildRow>,
}

/// The build page, `/builds/{id}`.
#[derive(Debug, Clone)]
pub struct BuildPage {
    /// The farm's id.
    pub farm_id: String,
    /// When this page was made.
    pub now: SystemTime,
    /// The build.
    pub build: BuildRow,
    /// Its phases.
    pub phases: Vec<PhaseRow>,
    /// The duration of the recipe's previous successful build.
    pub previous_duration: Option<f64>,
    /// The previous build of the same recipe.
    pub previous: Option<u64>,
    /// The next build of the same recipe.
    pub next: Option<u64>,
    /// Its log (the end of it when long).
    pub log: String,
    /// True when `log` is only the end of the log.
    pub log_truncated: bool,
}

/// A poll of a recipe.
#[derive(Debug, Clone)]
pub struct PollRow {
    /// When.
    pub at: Option<SystemTime>,
    /// Did it succeed?
    pub ok: bool,
    /// The error, when not.
    pub error: Option<String>,
    /// Tags the upstream listed.
    pub tags_seen: usize,
}

/// A recipe's settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The upstream git URL.
    pub git: Option<String>,
    /// The tag pattern.
    pub tag_pattern: Option<String>,
    /// The poll interval.
    pub interval: Option<Duration>,
    /// Whether it takes webhooks.
    pub webhook: bool,
    /// The lowest upstream version built.
    pub min_version: Option<String>,
    /// The package revision.
    pub revision: Option<u64>,
    /// Submodules fetched.
    pub submodules: bool,
    /// `all` or `latest`.
    pub backlog: &'static str,
    /// `[meta].description`.
    pub description: String,
    /// `[meta].homepage`.
    pub homepage: String,
    /// `[meta].license`.
    pub license: String,
    /// The recipe file.
    pub path: String,
}

/// The recipe page, `/recipes/{id}`.
#[derive(Debug, Clone)]
pub struct RecipePage {
    /// The farm's id.
    pub farm_id: String,
    /// When this page was made.
    pub now: SystemTime,
    /// The recipe id.
    pub id: String,
    /// Its state.
    pub state: RecipeState,
    /// Why its file is invalid.
    pub invalid: Option<String>,
    /// Its settings (defaults when invalid).
    pub settings: Settings,
    /// Its versions in the index, newest first.
    pub published: Vec<String>,
    /// Its builds, newest first.
    pub builds: Vec<BuildRow>,
    /// Its polls, newest first.
    pub polls: Vec<PollRow>,
    /// Its next scheduled poll.
    pub next_poll: Option<SystemTime>,
    /// Its backoff entries.
    pub failures: Vec<FailureRow>,
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn build_row(r: &BuildRecord, now: SystemTime) -> BuildRow {
    let started_at = parse_time(&r.started_at);
    let duration = r.duration.or_else(|| {
        (r.state == BuildState::Running)
            .then(|| started_at.map(|t| secs(now.duration_since(t).unwrap_or_default())))
            .flatten()
    });
    BuildRow {
        id: r.id,
        recipe: r.recipe.clone(),
        version: r.version.clone(),
        tag: r.tag.clone(),
        trigger: r.trigger,
        state: r.state,
        started_at,
        finished_at: r.finished_at.as_deref().and_then(parse_time),
        duration,
        phase: r.phase,
        error: r.error.clone(),
        log_url: Some(r.log_url.clone()),
    }
}

/// The phases of a build: those before `at` done, `at` itself running (or
/// failed, for a failed build), the rest pending; a succeeded build has
/// them all done.
pub fn phase_rows(state: BuildState, at: Option<Phase>) -> Vec<PhaseRow> {
    let here = at.and_then(|p| PHASES.iter().position(|q| *q == p));
    PHASES
        .iter()
        .enumerate()
        .map(|(i, &phase)| {
            let state = match (state, here) {
                (BuildState::Succeeded, _) => PhaseState::Done,
                (_, Some(h)) if i < h => PhaseState::Done,
                (BuildState::Running, Some(h)) if i == h => PhaseState::Current,
                (BuildState::Failed | BuildState::Cancelled, Some(h)) if i == h => {
                    PhaseState::Failed
                }
                _ => PhaseState::Pending,
            };
            PhaseRow {
                phase,
                state,
                duration: None,
            }
        })
        .collect()
}

/// The duration of `recipe`'s most recent successful build that started
/// before build `before`.
fn previous_success(builds: &[BuildRecord], recipe: &str, before: u64) -> Option<f64> {
    builds
        .iter()
        .filter(|b| b.recipe == recipe && b.id < before && b.state == BuildState::Succeeded)
        .max_by_key(|b| b.id)
        .and_then(|b| b.duration)
}

fn failure_rows(s: &Snapshot, recipe: Option<&str>) -> Vec<FailureRow> {
    s.failures
        .iter()
        .filter(|(k, _)| recipe.is_none_or(|r| k.recipe == r))
        .map(|(k, v)| FailureRow {
            key: k.to_string(),
            recipe: k.recipe.clone(),
            version: k.version.clone(),
            failures: v.failures,
            next_retry: v.next_retry,
            error: v.error.clone(),
        })
        .collect()
}

/// Each recipe's state, from the snapshot.
fn states(s: &Snapshot) -> HashMap<&str, RecipeState> {
    let mut m: HashMap<&str, RecipeState> = HashMap::with_capacity(s.recipes.len());
    for q in &s.queue {
        m.insert(q.recipe.as_str(), RecipeState::Queued);
    }
    for k in s.failures.keys() {
        m.insert(k.recipe.as_str(), RecipeState::Failing);
    }
    for r in &s.paused {
        m.insert(r.as_str(), RecipeState::Paused);
    }
    if let Some((f, _)) = &s.in_flight {
        m.insert(f.recipe.as_str(), RecipeState::Building);
    }
    m
}

/// True when `id` matches the reader's filter (a case-insensitive
/// substring; empty matches everything).
pub fn matches(id: &str, filter: &str) -> bool {
    filter.is_empty() || id.to_lowercase().contains(&filter.to_lowercase())
}

impl Overview {
    /// The overview of `s`; `log_tail` is the end of the running build's log.
    pub fn new(
        s: &Snapshot,
        roster: &Roster,
        filter: &str,
        log_tail: String,
        now: SystemTime,
    ) -> Overview {
        let running = s.in_flight.as_ref().map(|(f, started)| {
            let elapsed = secs(now.duration_since(*started).unwrap_or_default());
            let build = s
                .builds
                .iter()
                .find(|b| b.id == f.build_id)
                .map(|b| build_row(b, now))
                .unwrap_or_else(|| BuildRow {
                    id: f.build_id,
                    recipe: f.recipe.clone(),
                    version: f.version.clone(),
                    tag: f.tag.clone(),
                    trigger: f.trigger,
                    state: BuildState::Running,
                    started_at: Some(*started),
                    finished_at: None,
                    duration: Some(elapsed),
                    phase: Some(f.phase),
                    error: None,
                    log_url: Some(format!("/builds/{}/log", f.build_id)),
                });
            Running {
                build: BuildRow {
                    phase: Some(f.phase),
                    ..build
                },
                phases: phase_rows(BuildState::Running, Some(f.phase)),
                elapsed,
                estimate: previous_success(&s.builds, &f.recipe, f.build_id),
                log_tail,
            }
        });
        let states = states(s);
        let newest = newest_published(s);
        let mut recipes: Vec<RecipeRow> = s
            .recipes
            .iter()
            .filter(|id| matches(id, filter))
            .map(|id| {
                let poll = s.polls.get(id);
                RecipeRow {
                    id: id.clone(),
                    state: states
                        .get(id.as_str())
                        .copied()
                        .unwrap_or(RecipeState::Idle),
                    published: newest.get(id.as_str()).map(|v| (*v).to_string()),
                    last_poll: poll.and_then(|p| p.last_at.as_deref()).and_then(parse_time),
                    poll_ok: poll.and_then(|p| p.last_at.as_ref().map(|_| p.ok)),
                    next_poll: poll.and_then(|p| p.next_at.as_deref()).and_then(parse_time),
                    webhook: roster
                        .recipes
                        .get(id)
                        .is_some_and(|r| r.watch.github_webhook),
                }
            })
            .collect();
        recipes.extend(
            s.invalid
                .keys()
                .filter(|id| matches(id, filter))
                .map(|id| RecipeRow {
                    id: id.clone(),
                    state: RecipeState::Invalid,
                    published: newest.get(id.as_str()).map(|v| (*v).to_string()),
                    last_poll: None,
                    poll_ok: None,
                    next_poll: None,
                    webhook: false,
                }),
        );
        recipes.sort_by(|a, b| a.id.cmp(&b.id));
        Overview {
            farm_id: s.farm_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: s.started_at,
            now,
            attempted: s.builds_attempted,
            succeeded: s.builds_succeeded,
            failed: s.builds_failed,
            cancelled: s.builds_cancelled,
            published_packages: s.published_packages,
            queue_depth: s.queue_depth,
            held: s.held.clone(),
            repository_error: s.repository_error.clone(),
            sandbox: s.sandbox,
            running,
            queue: s
                .queue
                .iter()
                .map(|q| QueueRow {
                    recipe: q.recipe.clone(),
                    version: q.version.clone(),
                    tag: q.tag.clone(),
                    trigger: q.trigger,
                })
                .collect(),
            failures: failure_rows(s, None),
            recipes,
            recipes_total: s.recipes.len() + s.invalid.len(),
            filter: filter.to_string(),
            invalid: s
                .invalid
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeline: s
                .builds
                .iter()
                .filter(|b| b.state != BuildState::Running)
                .take(TIMELINE)
                .map(|b| build_row(b, now))
                .collect(),
        }
    }
}

/// True when version `a` sorts after `b` (versions that do not parse
/// sort as text).
fn newer(a: &str, b: &str) -> bool {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => a > b,
    }
}

/// The newest version each recipe published, as far as the snapshot
/// knows (the builds it remembers).
fn newest_published(s: &Snapshot) -> BTreeMap<&str, &str> {
    let mut m: BTreeMap<&str, &str> = BTreeMap::new();
    for b in &s.builds {
        if b.state != BuildState::Succeeded {
            continue;
        }
        let newer = m
            .get(b.recipe.as_str())
            .is_none_or(|v| newer(&b.version, v));
        if newer {
            m.insert(b.recipe.as_str(), b.version.as_str());
        }
    }
    m
}

impl BuildPage {
    /// The page of build `id`, or `None` when the snapshot does not know it.
    pub fn new(
        s: &Snapshot,
        id: u64,
        log: String,
        log_truncated: bool,
        now: SystemTime,
    ) -> Option<BuildPage> {
        let r = s.builds.iter().find(|b| b.id == id)?;
        let mut build = build_row(r, now);
        if r.state == BuildState::Running {
            if let Some((f, _)) = s.in_flight.as_ref().filter(|(f, _)| f.build_id == id) {
                build.phase = Some(f.phase);
            }
        }
        let same = s.builds.iter().filter(|b| b.recipe == r.recipe);
        let previous = same.clone().filter(|b| b.id < id).map(|b| b.id).max();
        let next = same.filter(|b| b.id > id).map(|b| b.id).min();
        Some(BuildPage {
            farm_id: s.farm_id.clone(),
            now,
            phases: phase_rows(r.state, build.phase),
            build,
            previous_duration: previous_success(&s.builds, &r.recipe, id),
            previous,
            next,
            log,
            log_truncated,
        })
    }
}

fn poll_row(p: &PollInfo) -> PollRow {
    PollRow {
        at: p.last_at.as_deref().and_then(parse_time),
        ok: p.ok,
        error: p.error.clone(),
        tags_seen: p.tags_seen,
    }
}

impl RecipePage {
    /// The page of recipe `id`, or `None` when the roster has no such
    /// recipe, valid or invalid.
    pub fn new(s: &Snapshot, roster: &Roster, id: &str, now: SystemTime) -> Option<RecipePage> {
        let recipe = roster.recipes.get(id);
        let invalid = roster.invalid.get(id).cloned();
        if recipe.is_none() && invalid.is_none() {
            return None;
        }
        let mut settings = Settings::default();
        if let Some(r) = recipe {
            settings.interval = Some(r.watch.poll_interval);
            settings.webhook = r.watch.github_webhook;
            settings.backlog = match r.watch.backlog {
                Backlog::All => "all",
                Backlog::Latest => "latest",
            };
            settings.description = r.description.clone();
            settings.homepage = r.homepage.clone();
            settings.license = r.license.clone();
            settings.path = r.path.display().to_string();
            if let Some(u) = &r.upstream {
                settings.git = Some(u.git.clone());
                settings.tag_pattern = Some(u.tag_pattern.as_str().to_string());
                settings.min_version = u.min_version.clone();
                settings.revision = Some(u.revision);
                settings.submodules = u.submodules;
            }
        }
        let state = if invalid.is_some() {
            RecipeState::Invalid
        } else {
            states(s).get(id).copied().unwrap_or(RecipeState::Idle)
        };
        let builds: Vec<BuildRow> = s
            .builds
            .iter()
            .filter(|b| b.recipe == id)
            .take(RECIPE_BUILDS)
            .map(|b| build_row(b, now))
            .collect();
        // The versions its remembered builds published, newest first.
        let mut published: Vec<String> = s
            .builds
            .iter()
            .filter(|b| b.recipe == id && b.state == BuildState::Succeeded)
            .map(|b| b.version.clone())
            .collect();
        published.sort_by(|a, b| {
            if newer(a, b) {
                std::cmp::Ordering::Less
            } else if newer(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        published.dedup();
        let poll = s.polls.get(id);
        Some(RecipePage {
            farm_id: s.farm_id.clone(),
            now,
            id: id.to_string(),
            state,
            invalid,
            settings,
            published,
            builds,
            polls: poll
                .filter(|p| p.last_at.is_some())
                .map(poll_row)
                .into_iter()
                .collect(),
            next_poll: poll.and_then(|p| p.next_at.as_deref()).and_then(parse_time),
            failures: failure_rows(s, Some(id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_of_a_build() {
        let words = |rows: Vec<PhaseRow>| -> Vec<&'static str> {
            rows.iter().map(|r| r.state.as_str()).collect()
        };
        assert_eq!(
            words(phase_rows(BuildState::Running, Some(Phase::Building))),
            ["done", "running", "pending", "pending", "pending"]
        );
        assert_eq!(
            words(phase_rows(BuildState::Failed, Some(Phase::Packaging))),
            ["done", "done", "failed", "pending", "pending"]
        );
        assert_eq!(
            words(phase_rows(BuildState::Succeeded, None)),
            ["done", "done", "done", "done", "done"]
        );
    }

    #[test]
    fn filter_is_a_case_insensitive_substring() {
        assert!(matches("libFoo", ""));
        assert!(matches("libFoo", "foo"));
        assert!(!matches("libFoo", "bar"));
    }
}
