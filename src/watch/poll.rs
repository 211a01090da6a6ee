//! Polling: one poll lists an upstream's tags (`ls-remote`, no clone),
//! maps them through the recipe's tag pattern and offers the versions to
//! the worker. The [`Scheduler`] runs the first poll of every recipe at
//! start, then one per interval on the recipe's own slot of a grid, at
//! most `[poll].concurrency` at once (see [`Grid`] for how the slots
//! spread polls without bunching); webhooks, operators and backoff expiry
//! ask it for an immediate poll, which coalesces with one already running.
//! Recipes an operator paused are not polled at all: their timers run on
//! without polling and requests for them are dropped.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::git::helper;
use crate::host::health::{Health, Loop};
use crate::model::build::{Candidate, Trigger};
use crate::model::control::Paused;
use crate::model::recipe::{Recipe, Roster};

/// The versions one poll of `recipe` found, offered to whoever queues
/// builds; the reply is how many were queued.
#[derive(Debug)]
pub struct Offer {
    /// The recipe as polled.
    pub recipe: Arc<Recipe>,
    /// Every matching version, any order.
    pub candidates: Vec<Candidate>,
    /// What set the poll off.
    pub trigger: Trigger,
    /// How many were queued.
    pub reply: oneshot::Sender<usize>,
}

/// Where polls send their [`Offer`]s.
pub type OfferTx = mpsc::Sender<Offer>;

/// What one successful poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollCounts {
    /// Tags the upstream listed.
    pub tags_seen: usize,
    /// Tags that map to a version the recipe builds.
    pub matches: usize,
    /// Versions of those that were new and queued.
    pub queued: usize,
}

/// Who hears how polls went (the farm's status store).
pub trait PollObserver: Send + Sync {
    /// A poll of `recipe` ended: what it found, or the error.
    fn poll_finished(&self, recipe: &str, result: Result<PollCounts, String>);
    /// The next poll of `recipe` is due at `at`.
    fn poll_scheduled(&self, recipe: &str, at: SystemTime);
}

/// "Poll this recipe now".
#[derive(Debug, Clone)]
pub struct PollRequest {
    /// Recipe id.
    pub recipe: String,
    /// Why.
    pub trigger: Trigger,
}

/// The result of mapping a tag list through a recipe.
#[derive(Debug, Default)]
pub struct Matches {
    /// Versions to offer.
    pub candidates: Vec<Candidate>,
    /// Tags below `min_version`.
    pub below_min: usize,
    /// Tags whose version is unusable (logged).
    pub rejected: usize,
}

/// Maps tags to candidates: pattern, version validity, `min_version`.
pub fn match_tags(recipe: &Recipe, tags: &[String]) -> Matches {
    let mut m = Matches::default();
    let Some(up) = recipe.upstream.as_ref() else {
        return m;
    };
    let mut matcher = up.tag_pattern.matcher();
    for tag in tags {
        match matcher.upstream_version(tag) {
            None => {}
            Some(Err(e)) => {
                m.rejected += 1;
                warn!(recipe = %recipe.id, tag = %tag, err = %e, "tag skipped");
            }
            Some(Ok(upstream)) => {
                if !recipe.admits(&upstream) {
                    m.below_min += 1;
                    continue;
                }
                let version = format!("{upstream}-{}", up.revision);
                if crate::model::version::Version::parse(&version).is_err() {
                    m.rejected += 1;
                    warn!(recipe = %recipe.id, tag = %tag, err = "not a valid package version", "tag skipped");
                    continue;
                }
                m.candidates.push(Candidate {
                    tag: tag.clone(),
                    upstream,
                    version,
                });
            }
        }
    }
    m
}

/// Polls one recipe and offers what it found to the worker. Returns the
/// number of tags seen, or the error.
pub async fn poll_recipe(
    recipe: Arc<Recipe>,
    trigger: Trigger,
    timeout: Duration,
    worker: &OfferTx,
    status: &dyn PollObserver,
    cancel: &CancellationToken,
) -> Result<usize, String> {
    let Some(up) = recipe.upstream.as_ref() else {
        return Ok(0);
    };
    info!(recipe = %recipe.id, git = %up.git, source = trigger.as_str(), "polling upstream");
    // The child process enforces the time limit itself and is killed when
    // it overruns or shutdown comes, so a silent server cannot hold a
    // thread or this poll's concurrency slot.
    let tags = match helper::list_tags(&up.git, timeout, cancel).await {
        Ok(t) => t,
        Err(_) if cancel.is_cancelled() => return Err("cancelled".into()),
        Err(e) => {
            warn!(recipe = %recipe.id, err = %e, "ls-remote failed");
            status.poll_finished(&recipe.id, Err(e.clone()));
            return Err(e);
        }
    };
    let m = match_tags(&recipe, &tags);
    let matches = m.candidates.len();
    let (reply, answer) = oneshot::channel();
    let sent = worker
        .send(Offer {
            recipe: recipe.clone(),
            candidates: m.candidates,
            trigger,
            reply,
        })
        .await;
    let emitted = if sent.is_ok() {
        answer.await.unwrap_or(0)
    } else {
        0
    };
    status.poll_finished(
        &recipe.id,
        Ok(PollCounts {
            tags_seen: tags.len(),
            matches,
            queued: emitted,
        }),
    );
    info!(
        recipe = %recipe.id,
        tags_seen = tags.len(),
        matches_emitted = emitted,
        skipped_below_min_version = m.below_min,
        "poll complete"
    );
    Ok(tags.len())
}

/// Polls every watched recipe once but the `paused` ones, at most
/// `concurrency` at a time (`--once`).
pub async fn poll_all_once(
    roster: &Roster,
    paused: &Paused,
    concurrency: usize,
    timeout: Duration,
    worker: &OfferTx,
    status: &Arc<dyn PollObserver>,
    cancel: &CancellationToken,
) {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for r in roster
        .recipes
        .values()
        .filter(|r| r.is_watched() && !paused.contains(&r.id))
    {
        let (r, sem, worker, status, cancel) = (
            r.clone(),
            sem.clone(),
            worker.clone(),
            status.clone(),
            cancel.clone(),
        );
        set.spawn(async move {
            let Ok(_permit) = sem.acquire().await else {
                return;
            };
            let _ = poll_recipe(r, Trigger::Poll, timeout, &worker, &*status, &cancel).await;
        });
    }
    while set.join_next().await.is_some() {}
}

/// A recipe id as the scheduler's tables hold it: one copy per recipe,
/// shared by the table of entries, the timetable and the line.
type Id = Arc<str>;

struct Entry {
    /// The recipe's id (the key it is filed under).
    id: Id,
    recipe: Arc<Recipe>,
    due: Option<Instant>,
    /// `due` is a point of the recipe's slot grid (not a first poll or a
    /// changed recipe's poll-now).
    due_on_grid: bool,
    /// The grid point the running poll was due at, when it was a
    /// scheduled one; `None` for first, requested and changed-recipe polls.
    fired: Option<Instant>,
    /// When the running (or last) poll was handed a slot.
    started: Instant,
    /// A poll is waiting for a slot or running.
    running: bool,
    /// Waiting for a slot, with this trigger.
    waiting: Option<Trigger>,
    /// Poll once more when the current one ends.
    again: Option<Trigger>,
}

impl Entry {
    fn new(recipe: Arc<Recipe>, due: Instant) -> Entry {
        Entry {
            id: Id::from(recipe.id.as_str()),
            recipe,
            due: Some(due),
            due_on_grid: false,
            fired: None,
            started: due,
            running: false,
            waiting: None,
            again: None,
        }
    }
}

/// Poll slots: at most `[poll].concurrency` polls run; the others wait in
/// line (as plain ids, so 1,000 recipes due at once cost 1,000 queue
/// entries, not 1,000 parked tasks).
struct Slots {
    free: usize,
    line: std::collections::VecDeque<Id>,
}

/// The daemon's poll scheduler.
pub struct Scheduler {
    /// The roster, as published by the daemon.
    pub roster: watch::Receiver<Arc<Roster>>,
    /// Immediate poll requests (webhooks, operators, backoff expiry).
    pub requests: mpsc::Receiver<PollRequest>,
    /// The recipes an operator paused, as the worker publishes them.
    pub paused: watch::Receiver<Paused>,
    /// Where offers go.
    pub worker: OfferTx,
    /// Hears how polls went.
    pub status: Arc<dyn PollObserver>,
    /// Liveness.
    pub health: Arc<Health>,
    /// At most this many polls at once.
    pub concurrency: usize,
    /// Time limit of one poll.
    pub timeout: Duration,
    /// Shutdown.
    pub cancel: CancellationToken,
}

impl Scheduler {
    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut slots = Slots {
            free: self.concurrency,
            line: Default::default(),
        };
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Id>();
        let mut entries: HashMap<Id, Entry> = HashMap::new();
        let mut due: BTreeSet<(Instant, Id)> = BTreeSet::new();
        let mut heartbeat = tokio::time::interval(Health::BEAT);
        let mut tasks = tokio::task::JoinSet::new();

        let roster = self.roster.borrow_and_update().clone();
        let now = Instant::now();
        let mut grid = Grid::new(now, &roster);
        for r in roster.recipes.values().filter(|r| r.is_watched()) {
            let e = Entry::new(r.clone(), now);
            due.insert((now, e.id.clone()));
            entries.insert(e.id.clone(), e);
        }

        // Test-only fault hook (debug builds only): wedge this loop after N
        // seconds so the watchdog and /healthz behaviour can be tested.
        #[cfg(debug_assertions)]
        let wedge_at = std::env::var("FARMHAND_FAULT_WEDGE_SCHEDULER_AFTER")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|secs| Instant::now() + Duration::from_secs_f64(secs));
        loop {
            #[cfg(debug_assertions)]
            if wedge_at.is_some_and(|t| Instant::now() >= t) {
                warn!("scheduler wedged by FARMHAND_FAULT_WEDGE_SCHEDULER_AFTER (test hook)");
                self.cancel.cancelled().await;
                break;
            }
            let next_due = due.first().map(|(t, _)| *t);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = async { tokio::time::sleep_until(next_due.expect("guarded").into()).await }, if next_due.is_some() => {
                    let now = Instant::now();
                    while let Some((t, id)) = due.first().cloned() {
                        if t > now { break; }
                        due.pop_first();
                        if let Some(e) = entries.get_mut(&id) {
                            e.due = None;
                            e.fired = std::mem::take(&mut e.due_on_grid).then_some(t);
                            if self.is_paused(&id) {
                                e.started = now;
                                self.schedule_next(&id, e, &mut due, &grid);
                            } else if e.running {
                                e.again.get_or_insert(Trigger::Poll);
                            } else {
                                self.start(e, Trigger::Poll, &mut slots, &done_tx, &mut tasks);
                            }
                        }
                    }
                }
                Some(req) = self.requests.recv() => {
                    if self.is_paused(&req.recipe) {
                        debug!(recipe = %req.recipe, source = req.trigger.as_str(), "poll request dropped (recipe paused)");
                    } else if let Some(e) = entries.get_mut(req.recipe.as_str()) {
                        if e.running {
                            // Coalesce: poll once more when the running poll ends.
                            e.again = Some(req.trigger);
                        } else {
                            if let Some(t) = e.due.take() { due.remove(&(t, e.id.clone())); }
                            e.fired = None;
                            self.start(e, req.trigger, &mut slots, &done_tx, &mut tasks);
                        }
                    }
                }
                Some(id) = done_rx.recv() => {
                    slots.free += 1;
                    if let Some(e) = entries.get_mut(&id) {
                        e.running = false;
                        match e.again.take().filter(|_| !self.is_paused(&id)) {
                            Some(trigger) => self.start(e, trigger, &mut slots, &done_tx, &mut tasks),
                            None => self.schedule_next(&id, e, &mut due, &grid),
                        }
                    }
                }
                r = self.roster.changed() => {
                    if r.is_err() { continue; }
                    let roster = self.roster.borrow_and_update().clone();
                    grid.resize(&roster);
                    entries.retain(|id, e| {
                        let keep = roster.recipes.get(&**id).is_some_and(|r| r.is_watched());
                        if !keep { if let Some(t) = e.due { due.remove(&(t, id.clone())); } }
                        keep
                    });
                    let now = Instant::now();
                    for r in roster.recipes.values().filter(|r| r.is_watched()) {
                        match entries.get_mut(r.id.as_str()) {
                            Some(e) => {
                                let changed = e.recipe.differs_for_polling(r);
                                e.recipe = r.clone();
                                if changed {
                                    if e.running {
                                        e.again = Some(Trigger::Poll);
                                    } else {
                                        if let Some(t) = e.due.replace(now) { due.remove(&(t, e.id.clone())); }
                                        e.due_on_grid = false;
                                        due.insert((now, e.id.clone()));
                                    }
                                }
                            }
                            None => {
                                let e = Entry::new(r.clone(), now);
                                due.insert((now, e.id.clone()));
                                entries.insert(e.id.clone(), e);
                            }
                        }
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = heartbeat.tick() => self.health.beat(Loop::Scheduler),
            }
            // Hand free slots to the polls waiting in line (skipping those
            // of recipes removed meanwhile).
            while slots.free > 0 {
                let Some(id) = slots.line.pop_front() else {
                    break;
                };
                if let Some(e) = entries.get_mut(&id) {
                    if let Some(trigger) = e.waiting.take() {
                        slots.free -= 1;
                        self.spawn(e, trigger, &done_tx, &mut tasks);
                    }
                }
            }
        }
        tasks.shutdown().await;
    }

    fn is_paused(&self, id: &str) -> bool {
        self.paused.borrow().contains(id)
    }

    /// Sets `id`'s next poll on its slot of `grid`, after the poll that
    /// just ended (or was skipped while paused).
    fn schedule_next(
        &self,
        id: &str,
        e: &mut Entry,
        due: &mut BTreeSet<(Instant, Id)>,
        grid: &Grid,
    ) {
        let now = Instant::now();
        let at = grid.next(
            id,
            e.recipe.watch.poll_interval,
            e.fired.take(),
            e.started,
            now,
        );
        if let Some(old) = e.due.replace(at) {
            due.remove(&(old, e.id.clone()));
        }
        e.due_on_grid = true;
        due.insert((at, e.id.clone()));
        self.status
            .poll_scheduled(id, SystemTime::now() + at.saturating_duration_since(now));
    }

    /// Starts a poll of `e` now if a slot is free, else puts it in line.
    fn start(
        &self,
        e: &mut Entry,
        trigger: Trigger,
        slots: &mut Slots,
        done: &mpsc::UnboundedSender<Id>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        e.running = true;
        if slots.free > 0 {
            slots.free -= 1;
            self.spawn(e, trigger, done, tasks);
        } else {
            e.waiting = Some(trigger);
            slots.line.push_back(e.id.clone());
        }
    }

    fn spawn(
        &self,
        e: &mut Entry,
        trigger: Trigger,
        done: &mpsc::UnboundedSender<Id>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        e.started = Instant::now();
        let (recipe, done, worker, status, cancel, timeout, id) = (
            e.recipe.clone(),
            done.clone(),
            self.worker.clone(),
            self.status.clone(),
            self.cancel.clone(),
            self.timeout,
            e.id.clone(),
        );
        tasks.spawn(async move {
            let _ = poll_recipe(recipe, trigger, timeout, &worker, &*status, &cancel).await;
            let _ = done.send(id);
        });
    }
}

/// Where each recipe's polls fall after its first.
///
/// Every recipe has a slot: a fixed offset from the scheduler's start, so
/// its scheduled polls fall on `epoch + offset + k * interval` and come
/// exactly one interval apart. The offsets of the recipes sharing an
/// interval are spread (by a hash of the recipe id) over a span that
/// grows with their number: at least the "little jitter" of a tenth of the
/// interval (at most five minutes), one second per recipe beyond that,
/// and the whole interval once there are more recipes than seconds in it.
/// So a small farm polls much as it always did (one interval plus a
/// little after its first poll), while 10,000 recipes at one minute poll
/// about 167 a second, evenly, instead of all in the seconds after each
/// round started.
struct Grid {
    epoch: Instant,
    seed: std::collections::hash_map::RandomState,
    /// The span of the offsets, per interval.
    spans: HashMap<Duration, Duration>,
}

impl Grid {
    /// How far apart, at least, the slots of recipes sharing an interval
    /// are spread.
    const SPACING: Duration = Duration::from_secs(1);

    fn new(epoch: Instant, roster: &Roster) -> Grid {
        let mut grid = Grid {
            epoch,
            seed: Default::default(),
            spans: HashMap::new(),
        };
        grid.resize(roster);
        grid
    }

    /// Recomputes the spans for the watched recipes of `roster` (after a
    /// reload).
    fn resize(&mut self, roster: &Roster) {
        self.resize_for(
            roster
                .recipes
                .values()
                .filter(|r| r.is_watched())
                .map(|r| r.watch.poll_interval),
        );
    }

    /// Recomputes the spans for recipes polling at these intervals (one
    /// item per recipe). A recipe's offset is its hash's fraction of the
    /// span, so a span that grows or shrinks a little moves the slots
    /// only a little.
    fn resize_for(&mut self, intervals: impl Iterator<Item = Duration>) {
        let mut counts: HashMap<Duration, u32> = HashMap::new();
        for iv in intervals {
            *counts.entry(iv).or_default() += 1;
        }
        self.spans = counts
            .into_iter()
            .map(|(iv, n)| (iv, span(iv, n)))
            .collect();
    }

    fn offset(&self, id: &str, interval: Duration) -> Duration {
        let span = self
            .spans
            .get(&interval)
            .copied()
            .unwrap_or_else(|| span(interval, 1));
        let fraction = (self.seed.hash_one(id) >> 11) as f64 / (1u64 << 53) as f64;
        span.mul_f64(fraction)
    }

    /// The next poll of `id`, whose last poll started at `started` and
    /// ended at `now`, never in the past: for a scheduled poll (`fired` at
    /// a grid point), the grid point one interval on (found with a little
    /// slack, in case a reload moved the slot a little); for any other
    /// (the first, a webhook's, an operator's), the first grid point at
    /// least one interval after it started.
    fn next(
        &self,
        id: &str,
        interval: Duration,
        fired: Option<Instant>,
        started: Instant,
        now: Instant,
    ) -> Instant {
        let not_before = match fired {
            Some(at) => at + interval - little_jitter(interval),
            None => started + interval,
        };
        let origin = self.epoch + self.offset(id, interval);
        grid_point_at_or_after(origin, interval, not_before.max(now))
    }
}

/// The span the slots of `n` recipes polling every `interval` spread over.
fn span(interval: Duration, n: u32) -> Duration {
    (Grid::SPACING * n)
        .max(little_jitter(interval))
        .min(interval)
}

/// A tenth of the interval, at most five minutes: the least a slot span
/// is, and the slack allowed for a slot moved by a reload.
fn little_jitter(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(300))
}

/// The first `origin + k * interval` (k ≥ 0) at or after `t`.
fn grid_point_at_or_after(origin: Instant, interval: Duration, t: Instant) -> Instant {
    let iv = interval.as_nanos().max(1);
    let k = t.saturating_duration_since(origin).as_nanos().div_ceil(iv);
    origin + Duration::from_nanos((k * iv) as u64)
}

#[cfg(test)]
mod grid_tests {
    use super::*;

    fn grid(n: usize, interval: Duration) -> Grid {
        let mut g = Grid {
            epoch: Instant::now(),
            seed: Default::default(),
            spans: HashMap::new(),
        };
        g.resize_for(std::iter::repeat_n(interval, n));
        g
    }

    #[test]
    fn a_small_farm_polls_one_interval_and_a_little_after_its_first_poll() {
        let iv = Duration::from_secs(3600);
        let g = grid(3, iv);
        for id in ["a", "b", "c"] {
            let started = g.epoch + Duration::from_millis(20);
            let next = g.next(id, iv, None, started, started + Duration::from_millis(5));
            let gap = next - started;
            assert!(
                gap >= iv && gap <= iv + Duration::from_secs(300),
                "{id}: {gap:?}"
            );
        }
    }

    #[test]
    fn scheduled_polls_come_exactly_one_interval_apart() {
        let iv = Duration::from_secs(60);
        let g = grid(10_000, iv);
        let first = g.next("r", iv, None, g.epoch, g.epoch + Duration::from_secs(1));
        // Started late (the line was long) and took a while: still on the grid.
        let second = g.next(
            "r",
            iv,
            Some(first),
            first + Duration::from_secs(3),
            first + Duration::from_secs(5),
        );
        assert_eq!(second, first + iv);
        let third = g.next(
            "r",
            iv,
            Some(second),
            second,
            second + Duration::from_millis(1),
        );
        assert_eq!(third, second + iv);
        // A poll that overran its interval: the next grid point after it.
        let late = g.next(
            "r",
            iv,
            Some(third),
            third,
            third + iv + Duration::from_secs(1),
        );
        assert_eq!(late, third + 2 * iv);
    }

    #[test]
    fn a_webhook_poll_moves_the_next_one_at_least_an_interval_on() {
        let iv = Duration::from_secs(3600);
        let g = grid(10_000, iv);
        let hook = g.epoch + Duration::from_secs(5000);
        let next = g.next("r", iv, None, hook, hook + Duration::from_secs(1));
        assert!(next >= hook + iv && next < hook + 2 * iv);
    }

    #[test]
    fn ten_thousand_recipes_at_one_minute_spread_over_the_minute() {
        let iv = Duration::from_secs(60);
        let g = grid(10_000, iv);
        let mut per_second = [0u32; 60];
        for i in 0..10_000 {
            // The first round took two seconds.
            let started = g.epoch + Duration::from_millis(i * 2000 / 10_000);
            let next = g.next(&format!("recipe-{i}"), iv, None, started, started);
            let at = (next - g.epoch).as_secs();
            assert!((60..122).contains(&at), "{at}");
            per_second[(at % 60) as usize] += 1;
        }
        // 167 a second on average; no second holds a burst.
        let max = per_second.iter().max().unwrap();
        let min = per_second.iter().min().unwrap();
        assert!(*max < 250 && *min > 100, "{per_second:?}");
    }

    #[test]
    fn a_reload_that_grows_the_span_a_little_keeps_scheduled_polls_in_place() {
        let iv = Duration::from_secs(3600);
        let mut g = grid(1000, iv);
        for i in 0..100 {
            let id = format!("recipe-{i}");
            let fired = g.next(&id, iv, None, g.epoch, g.epoch);
            g.resize_for(std::iter::repeat_n(iv, 1010));
            let next = g.next(&id, iv, Some(fired), fired, fired);
            g.resize_for(std::iter::repeat_n(iv, 1000));
            // The span grew by 1 %: the slot moves by at most 10 s.
            let drift = next.max(fired + iv) - next.min(fired + iv);
            assert!(drift <= Duration::from_secs(10), "{id}: {drift:?}");
        }
    }

    #[test]
    fn spans_grow_with_the_recipes_sharing_an_interval() {
        let m = Duration::from_secs(60);
        let h = Duration::from_secs(3600);
        assert_eq!(span(m, 1), Duration::from_secs(6));
        assert_eq!(span(m, 30), Duration::from_secs(30));
        assert_eq!(span(m, 10_000), m);
        assert_eq!(span(h, 10), Duration::from_secs(300));
        assert_eq!(span(h, 1000), Duration::from_secs(1000));
        assert_eq!(span(h, 10_000), h);
    }
}
