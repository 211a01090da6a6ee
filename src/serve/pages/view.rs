//! What the pages show, as plain data: made from one [`Snapshot`] of the
//! status store and the roster, then handed to the templates. Keeping the
//! figures here (states, estimates, neighbours) leaves the templates with
//! nothing to decide but markup.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::model::build::{BuildKey, BuildState, Phase, Trigger};
use crate::model::control::ControlAction;
use crate::model::recipe::{Backlog, Recipe, Roster};
use crate::serve::api::RecipeDoc;
use crate::serve::builds::{BuildDetail, BuildSummary};
use crate::serve::status::{FailureView, PollRecord, Snapshot};

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
    /// Not reached yet.
    Pending,
    /// Never run (the build ended before it, or it had nothing to do).
    NotRun,
}

impl PhaseState {
    /// The word the pages show.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseState::Done => "done",
            PhaseState::Current => "running",
            PhaseState::Failed => "failed",
            PhaseState::Pending => "pending",
            PhaseState::NotRun => "not run",
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
    /// What an operator can do about it: retry, unless its recipe is
    /// invalid now (the farm would refuse).
    pub actions: Vec<ControlAction>,
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
    /// Whether an operator paused it (also while it builds or is invalid).
    pub paused: bool,
    /// The control actions that apply to it ([`recipe_actions`]).
    pub actions: Vec<ControlAction>,
}

/// The overview, `/`.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The farm's id.
    pub farm_id: String,
    /// The control API is on: the page offers the token form.
    pub control: bool,
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
    /// The control API is on: the page offers the token form.
    pub control: bool,
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
    /// Tags that map to a version the recipe builds.
    pub matches: usize,
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
    /// The control API is on: the page offers the token form.
    pub control: bool,
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
    /// Whether an operator paused it.
    pub paused: bool,
    /// The control actions that apply to it ([`recipe_actions`]).
    pub actions: Vec<ControlAction>,
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

fn build_row(b: &BuildSummary) -> BuildRow {
    BuildRow {
        id: b.id,
        recipe: b.recipe.clone(),
        version: b.version.clone(),
        tag: b.tag.clone(),
        trigger: b.trigger,
        state: b.state,
        started_at: parse_time(&b.started_at),
        finished_at: b.finished_at.as_deref().and_then(parse_time),
        duration: b.duration,
        phase: b.phase,
        error: b.error.clone(),
        log_url: b.log_url.clone(),
    }
}

/// The phases of a build with no recorded phases: those before `at` done,
/// `at` itself running (or failed), the rest pending; a succeeded build
/// has them all done.
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

/// The phase timeline of a build from its recorded phases, with each
/// phase's duration (the running one's so far).
pub fn timeline(d: &BuildDetail, now: SystemTime) -> Vec<PhaseRow> {
    let b = &d.summary;
    if d.phases.is_empty() {
        return phase_rows(b.state, b.phase);
    }
    let last = d.phases.last().map(|p| p.phase);
    PHASES
        .iter()
        .map(|&phase| {
            let Some(p) = d.phases.iter().rev().find(|p| p.phase == phase) else {
                let state = match b.state {
                    BuildState::Running => PhaseState::Pending,
                    _ => PhaseState::NotRun,
                };
                return PhaseRow {
                    phase,
                    state,
                    duration: None,
                };
            };
            let ended_here = Some(phase) == b.phase && Some(phase) == last;
            let state = match b.state {
                BuildState::Running if Some(phase) == last => PhaseState::Current,
                BuildState::Failed | BuildState::Cancelled if ended_here => PhaseState::Failed,
                _ => PhaseState::Done,
            };
            let duration = p.duration.or_else(|| {
                (state == PhaseState::Current)
                    .then(|| parse_time(&p.started_at))
                    .flatten()
                    .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64())
            });
            PhaseRow {
                phase,
                state,
                duration,
            }
        })
        .collect()
}

/// The control actions that apply to a recipe (`recipe` is its parsed
/// file, `None` when invalid): none for an invalid recipe (the farm
/// refuses them all); resume when paused (a paused recipe is not polled);
/// otherwise poll, when it has an upstream to poll, and pause.
pub fn recipe_actions(recipe: Option<&Recipe>, paused: bool) -> Vec<ControlAction> {
    match recipe {
        None => Vec::new(),
        Some(_) if paused => vec![ControlAction::Resume],
        Some(r) if r.is_watched() => vec![ControlAction::Poll, ControlAction::Pause],
        Some(_) => vec![ControlAction::Pause],
    }
}

/// A backoff entry; `retryable` when its recipe is valid.
fn failure_row(key: &str, f: &FailureView, retryable: bool) -> FailureRow {
    let (recipe, version) = key
        .parse::<BuildKey>()
        .map(|k| (k.recipe, k.version))
        .unwrap_or_else(|_| (key.to_string(), String::new()));
    FailureRow {
        key: key.to_string(),
        recipe,
        version,
        failures: f.failures,
        next_retry: parse_time(&f.next_retry).unwrap_or(SystemTime::UNIX_EPOCH),
        error: f.error.clone().unwrap_or_default(),
        actions: if retryable {
            vec![ControlAction::Retry]
        } else {
            Vec::new()
        },
    }
}

/// Each recipe's state, from the snapshot (recipes not in the map are
/// idle).
pub fn states(s: &Snapshot) -> HashMap<&str, RecipeState> {
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
    if let Some(d) = &s.running {
        m.insert(d.summary.recipe.as_str(), RecipeState::Building);
    }
    for r in s.invalid.keys() {
        m.insert(r.as_str(), RecipeState::Invalid);
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
        let running = s.running.as_ref().map(|d| Running {
            build: build_row(&d.summary),
            phases: timeline(d, now),
            elapsed: d.elapsed.unwrap_or_default(),
            estimate: d.previous_duration,
            log_tail,
        });
        let states = states(s);
        let filter = filter.to_lowercase();
        let mut recipes: Vec<RecipeRow> = s
            .recipes
            .iter()
            .chain(s.invalid.keys())
            .filter(|id| matches(id, &filter))
            .map(|id| {
                let poll = s.polls.get(id);
                let paused = s.paused.binary_search(id).is_ok();
                let recipe = roster
                    .recipes
                    .get(id)
                    .filter(|_| !s.invalid.contains_key(id));
                RecipeRow {
                    id: id.clone(),
                    state: states
                        .get(id.as_str())
                        .copied()
                        .unwrap_or(RecipeState::Idle),
                    published: s.newest_published.get(id).cloned(),
                    last_poll: poll.and_then(|p| p.last_at),
                    poll_ok: poll.and_then(|p| p.last_at.as_ref().map(|_| p.ok)),
                    next_poll: poll.and_then(|p| p.next_at),
                    webhook: roster.recipes.get(id).is_some_and(|r| r.watch.webhook),
                    paused,
                    actions: recipe_actions(recipe.map(|r| &**r), paused),
                }
            })
            .collect();
        recipes.sort_by(|a, b| a.id.cmp(&b.id));
        Overview {
            farm_id: s.farm_id.clone(),
            control: s.control,
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
            failures: s
                .failures
                .iter()
                .map(|(k, v)| {
                    let valid = !s.invalid.contains_key(&k.recipe);
                    failure_row(&k.to_string(), &FailureView::from(v), valid)
                })
                .collect(),
            recipes,
            recipes_total: s.recipes.len() + s.invalid.len(),
            filter,
            invalid: s
                .invalid
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeline: s.recent.iter().map(build_row).collect(),
        }
    }
}

impl BuildPage {
    /// The page of the build `d`, with its recipe's previous and next
    /// build and its log.
    pub fn new(
        farm_id: &str,
        d: &BuildDetail,
        neighbours: (Option<u64>, Option<u64>),
        log: String,
        log_truncated: bool,
        now: SystemTime,
    ) -> BuildPage {
        let mut build = build_row(&d.summary);
        if build.state == BuildState::Running {
            build.duration = d.elapsed;
        }
        BuildPage {
            farm_id: farm_id.to_string(),
            control: false,
            now,
            phases: timeline(d, now),
            build,
            previous_duration: d.previous_duration,
            previous: neighbours.0,
            next: neighbours.1,
            log,
            log_truncated,
        }
    }
}

fn poll_row(p: &PollRecord) -> PollRow {
    PollRow {
        at: Some(p.at),
        ok: p.ok,
        error: p.error.clone(),
        tags_seen: p.tags_seen,
        matches: p.matches,
    }
}

impl RecipePage {
    /// The page of the recipe `doc` (`recipe` is its parsed file, when
    /// valid) in `state`.
    pub fn new(
        farm_id: &str,
        doc: &RecipeDoc,
        recipe: Option<&Recipe>,
        state: RecipeState,
        next_poll: Option<SystemTime>,
        now: SystemTime,
    ) -> RecipePage {
        let mut settings = Settings {
            git: doc.git.clone(),
            tag_pattern: doc.tag_pattern.clone(),
            interval: doc.interval.map(Duration::from_secs),
            webhook: doc.webhook,
            min_version: doc.min_version.clone(),
            revision: doc.revision,
            ..Settings::default()
        };
        if let Some(r) = recipe {
            settings.backlog = match r.watch.backlog {
                Backlog::All => "all",
                Backlog::Latest => "latest",
            };
            settings.submodules = r.upstream.as_ref().is_some_and(|u| u.submodules);
            settings.description = r.description.clone();
            settings.homepage = r.homepage.clone();
            settings.license = r.license.clone();
            settings.path = r.path.display().to_string();
        }
        let a = &doc.activity;
        RecipePage {
            farm_id: farm_id.to_string(),
            control: false,
            now,
            id: doc.id.clone(),
            state: if doc.paused && state != RecipeState::Building {
                RecipeState::Paused
            } else {
                state
            },
            invalid: doc.invalid.clone(),
            settings,
            published: a.published.clone(),
            builds: a.builds.iter().map(build_row).collect(),
            polls: a.polls.iter().map(poll_row).collect(),
            next_poll,
            failures: a
                .failures
                .iter()
                .map(|(k, v)| failure_row(k, v, recipe.is_some()))
                .collect(),
            paused: doc.paused,
            actions: recipe_actions(recipe, doc.paused),
        }
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

    /// A valid recipe parsed from `text`.
    fn recipe(id: &str, text: &str) -> Recipe {
        let dir = std::path::Path::new("/srv/recipes").join(id);
        crate::model::recipe::parse_recipe(
            id,
            &dir,
            &dir.join("recipe.toml"),
            crate::model::recipe::RecipeFile::Farmhand,
            text,
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    /// A recipe with an upstream to poll.
    const WATCHED: &str =
        "[upstream]\ngit = 'https://example.org/z.git'\ntag_pattern = '^v(.*)$'\n";

    #[test]
    fn control_actions_apply_where_the_farm_takes_them() {
        use ControlAction::{Pause, Poll, Resume};
        let watched = recipe("zlib", WATCHED);
        let unwatched = recipe("local", "[meta]\nlicense = 'MIT'\n");
        assert_eq!(recipe_actions(Some(&watched), false), [Poll, Pause]);
        assert_eq!(recipe_actions(Some(&watched), true), [Resume]);
        assert_eq!(recipe_actions(Some(&unwatched), false), [Pause]);
        assert_eq!(recipe_actions(Some(&unwatched), true), [Resume]);
        assert_eq!(recipe_actions(None, false), []);
        assert_eq!(recipe_actions(None, true), []);
    }

    #[test]
    fn filter_is_a_case_insensitive_substring() {
        assert!(matches("libFoo", ""));
        assert!(matches("libFoo", "foo"));
        assert!(!matches("libFoo", "bar"));
    }
}
