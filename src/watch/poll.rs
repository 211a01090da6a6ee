//! Polling: one poll lists an upstream's tags (`ls-remote`, no clone),
//! maps them through the recipe's tag pattern and offers the versions to
//! the worker. The [`Scheduler`] runs the first poll of every recipe at
//! start, then one per interval with a little jitter, at most
//! `[poll].concurrency` at once; webhooks, operators and backoff expiry
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

struct Entry {
    recipe: Arc<Recipe>,
    due: Option<Instant>,
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
            recipe,
            due: Some(due),
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
    line: std::collections::VecDeque<String>,
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
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut due: BTreeSet<(Instant, String)> = BTreeSet::new();
        let jitter_seed = std::collections::hash_map::RandomState::new();
        let mut heartbeat = tokio::time::interval(Health::BEAT);
        let mut tasks = tokio::task::JoinSet::new();

        let roster = self.roster.borrow_and_update().clone();
        let now = Instant::now();
        for r in roster.recipes.values().filter(|r| r.is_watched()) {
            entries.insert(r.id.clone(), Entry::new(r.clone(), now));
            due.insert((now, r.id.clone()));
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
                            if self.is_paused(&id) {
                                self.schedule_next(&id, e, &mut due, &jitter_seed);
                            } else if e.running {
                                e.again.get_or_insert(Trigger::Poll);
                            } else {
                                self.start(&id, e, Trigger::Poll, &mut slots, &done_tx, &mut tasks);
                            }
                        }
                    }
                }
                Some(req) = self.requests.recv() => {
                    if self.is_paused(&req.recipe) {
                        debug!(recipe = %req.recipe, source = req.trigger.as_str(), "poll request dropped (recipe paused)");
                    } else if let Some(e) = entries.get_mut(&req.recipe) {
                        if e.running {
                            // Coalesce: poll once more when the running poll ends.
                            e.again = Some(req.trigger);
                        } else {
                            if let Some(t) = e.due.take() { due.remove(&(t, req.recipe.clone())); }
                            self.start(&req.recipe, e, req.trigger, &mut slots, &done_tx, &mut tasks);
                        }
                    }
                }
                Some(id) = done_rx.recv() => {
                    slots.free += 1;
                    if let Some(e) = entries.get_mut(&id) {
                        e.running = false;
                        match e.again.take().filter(|_| !self.is_paused(&id)) {
                            Some(trigger) => self.start(&id, e, trigger, &mut slots, &done_tx, &mut tasks),
                            None => self.schedule_next(&id, e, &mut due, &jitter_seed),
                        }
                    }
                }
                r = self.roster.changed() => {
                    if r.is_err() { continue; }
                    let roster = self.roster.borrow_and_update().clone();
                    entries.retain(|id, e| {
                        let keep = roster.recipes.get(id).is_some_and(|r| r.is_watched());
                        if !keep { if let Some(t) = e.due { due.remove(&(t, id.clone())); } }
                        keep
                    });
                    let now = Instant::now();
                    for r in roster.recipes.values().filter(|r| r.is_watched()) {
                        match entries.get_mut(&r.id) {
                            Some(e) => {
                                let changed = e.recipe.differs_for_polling(r);
                                e.recipe = r.clone();
                                if changed {
                                    if e.running {
                                        e.again = Some(Trigger::Poll);
                                    } else {
                                        if let Some(t) = e.due.replace(now) { due.remove(&(t, r.id.clone())); }
                                        due.insert((now, r.id.clone()));
                                    }
                                }
                            }
                            None => {
                                entries.insert(r.id.clone(), Entry::new(r.clone(), now));
                                due.insert((now, r.id.clone()));
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
                        self.spawn(&id, e, trigger, &done_tx, &mut tasks);
                    }
                }
            }
        }
        tasks.shutdown().await;
    }

    fn is_paused(&self, id: &str) -> bool {
        self.paused.borrow().contains(id)
    }

    /// Sets `id`'s next poll one interval (plus jitter) from now.
    fn schedule_next(
        &self,
        id: &str,
        e: &mut Entry,
        due: &mut BTreeSet<(Instant, String)>,
        seed: &std::collections::hash_map::RandomState,
    ) {
        let interval = e.recipe.watch.poll_interval;
        let j = jitter(seed, id, interval);
        let at = Instant::now() + interval + j;
        if let Some(old) = e.due.replace(at) {
            due.remove(&(old, id.to_string()));
        }
        due.insert((at, id.to_string()));
        self.status
            .poll_scheduled(id, SystemTime::now() + interval + j);
    }

    /// Starts a poll of `id` now if a slot is free, else puts it in line.
    fn start(
        &self,
        id: &str,
        e: &mut Entry,
        trigger: Trigger,
        slots: &mut Slots,
        done: &mpsc::UnboundedSender<String>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        e.running = true;
        if slots.free > 0 {
            slots.free -= 1;
            self.spawn(id, e, trigger, done, tasks);
        } else {
            e.waiting = Some(trigger);
            slots.line.push_back(id.to_string());
        }
    }

    fn spawn(
        &self,
        id: &str,
        e: &Entry,
        trigger: Trigger,
        done: &mpsc::UnboundedSender<String>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        let (recipe, done, worker, status, cancel, timeout, id) = (
            e.recipe.clone(),
            done.clone(),
            self.worker.clone(),
            self.status.clone(),
            self.cancel.clone(),
            self.timeout,
            id.to_string(),
        );
        tasks.spawn(async move {
            let _ = poll_recipe(recipe, trigger, timeout, &worker, &*status, &cancel).await;
            let _ = done.send(id);
        });
    }
}

/// Up to a tenth of the interval (at most five minutes) of random delay,
/// so recipes with the same interval do not poll in the same second.
fn jitter(
    seed: &std::collections::hash_map::RandomState,
    id: &str,
    interval: Duration,
) -> Duration {
    let span = (interval / 10).min(Duration::from_secs(300)).as_millis() as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    let h = seed.hash_one((id, SystemTime::now()));
    Duration::from_millis(h % span)
}
