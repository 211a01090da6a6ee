//! The build worker: the one task that owns the build queue (with the
//! dedup set), the backoff book and the repository, and runs one build at
//! a time.
//!
//! Polls (and, through them, webhooks) send it [`Offer`]s; it dedups each
//! candidate in O(1) against what is published, queued, in flight or
//! backing off, queues the rest newest-first with recipes taking turns,
//! and runs the queue: fetch → build → package (`build`), then publish →
//! upload ([`Publisher`]). The repository is lent to the running build's
//! future and handed back with its outcome, so there is never a second
//! writer.
//!
//! The worker also owns the build history ([`History`]): a build's start
//! record is written before it runs, and its finish record (phases,
//! outcome, log) before it counts as finished; its log is compressed and
//! the recipe's old logs pruned at the same time.
//!
//! Operators' control requests ([`ControlCall`]) come in on a second
//! channel and are carried out here, where the state they change lives:
//! poll now, pause and resume (kept in `state.json` with the backoff book,
//! and published to the scheduler and the HTTP server), cancel of the
//! build in flight, and retry of a failed version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::build::runner::{self, BuildSettings, BuildStop, Failure, LogId, Progress, Prune};
use crate::farm::backoff::BackoffBook;
use crate::farm::history::History;
use crate::farm::publisher::{Published, Publisher};
use crate::farm::queue::BuildQueue;
use crate::host::health::{Health, Loop};
use crate::model::build::{
    BuildKey, BuildState, HostFault, Job, Phase, QueuedBuild, StopReason, Trigger,
};
use crate::model::config::{format_duration, Config};
use crate::model::control::{ControlAction, ControlEvent, ControlOutcome, ControlRequest, Paused};
use crate::model::history::{seconds, BuildRecord, PhaseSpan};
use crate::model::notify::{events_for, NotifyEvent, Outcome};
use crate::model::recipe::{Recipe, Roster};
use crate::model::time::rfc3339;
use crate::publish::notify::Notifications;
use crate::publish::repo::{Repo, RepoConfig};
use crate::serve::control::ControlCall;
use crate::serve::status::{Status, QUEUE_LISTED};
use crate::watch::poll::{Offer, PollRequest};

/// How often every recipe's logs are checked against `[build].keep_logs_for`.
const LOG_SWEEP: Duration = Duration::from_secs(3600);

type Running = Pin<Box<dyn Future<Output = (Option<Repo>, Result<Published, Failure>)> + Send>>;

/// A repository that would not open (a malformed index, a missing pool
/// file): the daemon stays up and serves what is valid, and the worker
/// builds nothing (nothing could be published, and without the index no
/// version can be told published) until a reload opens it.
pub struct HeldRepo {
    /// Why it would not open; names the file.
    pub error: String,
    /// How to open it again.
    pub config: RepoConfig,
    /// The signing key, if one is configured.
    pub signer: Option<ed25519_dalek::SigningKey>,
}

/// The repository the worker starts with.
pub enum RepoAtStart {
    /// The builtin backend's repository, open.
    Open(Repo),
    /// The builtin backend's repository, unusable until repaired.
    Held(HeldRepo),
    /// The peipkg backend: peipkg-repo owns the files; these versions of
    /// each recipe are published.
    Peipkg(HashMap<String, HashSet<String>>),
}

/// Everything the worker is given at start.
pub struct WorkerSetup {
    /// The farm config.
    pub cfg: Arc<Config>,
    /// What every build shares.
    pub settings: BuildSettings,
    /// The repository.
    pub repo: RepoAtStart,
    /// The backoff book as loaded from `state.json`.
    pub book: BackoffBook,
    /// The build history, as opened at start.
    pub history: History,
    /// The status store.
    pub status: Arc<Status>,
    /// Liveness of the loops.
    pub health: Arc<Health>,
    /// The roster, as the daemon publishes it.
    pub roster: watch::Receiver<Arc<Roster>>,
    /// Where to ask for polls (backoff expiry, a reopened repository);
    /// `None` for `--once`.
    pub polls: Option<mpsc::Sender<PollRequest>>,
    /// Shutdown.
    pub shutdown: CancellationToken,
    /// Where build events go (`[[notify]]`).
    pub notify: Notifications,
}

/// The build worker (see the module documentation).
pub struct Worker {
    cfg: Arc<Config>,
    settings: BuildSettings,
    publisher: Publisher,
    repo: Option<Repo>,
    held: Option<HeldRepo>,
    queue: BuildQueue,
    book: BackoffBook,
    status: Arc<Status>,
    health: Arc<Health>,
    roster: watch::Receiver<Arc<Roster>>,
    polls: Option<mpsc::Sender<PollRequest>>,
    retry_requested: HashSet<BuildKey>,
    /// A host fault (disk full, no descriptors) holds the queue until this
    /// instant; the wait doubles while the fault persists.
    host_hold: Option<HostHold>,
    /// Versions an operator asked to retry whose tag the next poll finds
    /// (backoff entries written before farmhand kept the tag).
    retry_on_offer: HashSet<BuildKey>,
    /// The paused recipes, for the scheduler and the HTTP server.
    paused: watch::Sender<Paused>,
    history: Arc<Mutex<History>>,
    /// The running build's start record, phases and log.
    trace: Option<Arc<Trace>>,
    shutdown: CancellationToken,
    /// Kills the build in flight (shutdown, after `shutdown_grace`).
    kill: CancellationToken,
    notify: Notifications,
    /// How each recipe's last finished build ended, for the state-change
    /// events (`failed` once when it starts failing, `recovered`).
    last_outcome: HashMap<String, Outcome>,
    /// Stops the build in flight (an operator's cancel, or `kill`).
    stop: Option<BuildStop>,
}

/// What the worker learns of the running build while it runs: its start
/// record (once written), when each phase began, its log file.
#[derive(Default)]
struct Trace(Mutex<TraceInner>);

#[derive(Default)]
struct TraceInner {
    start: Option<(BuildRecord, Instant)>,
    phases: Vec<(PhaseSpan, Instant)>,
    log: Option<PathBuf>,
}

impl Trace {
    fn lock(&self) -> std::sync::MutexGuard<'_, TraceInner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The build entered `phase`: the open phase ends, `phase` begins.
    fn phase(&self, phase: Phase) {
        let mut t = self.lock();
        if t.phases.last().is_some_and(|(p, _)| p.phase == phase) {
            return;
        }
        let now = Instant::now();
        if let Some((open, began)) = t.phases.last_mut() {
            open.duration = Some(seconds(now - *began));
        }
        t.phases.push((
            PhaseSpan {
                phase,
                started_at: SystemTime::now(),
                duration: None,
            },
            now,
        ));
    }

    fn log(&self) -> Option<PathBuf> {
        self.lock().log.clone()
    }
}

/// Tells the status store, and the trace, where the running build is.
struct StatusProgress {
    status: Arc<Status>,
    trace: Arc<Trace>,
}

impl Progress for StatusProgress {
    fn phase(&self, phase: Phase) {
        self.trace.phase(phase);
        self.status.set_phase(phase);
    }
}

impl Worker {
    /// A worker over the repository and backoff book of `setup`.
    pub fn new(setup: WorkerSetup) -> Worker {
        let WorkerSetup {
            cfg,
            settings,
            repo,
            mut book,
            status,
            health,
            roster,
            polls,
            shutdown,
            mut history,
            notify,
        } = setup;
        // Notifications compare with how each recipe's last build ended,
        // across restarts.
        let last_outcome = history.take_last_outcomes();
        let mut queue = BuildQueue::new();
        let (repo, held) = match repo {
            RepoAtStart::Open(repo) => {
                remember_published(&mut queue, &repo);
                status.set_published(repo.active_count());
                status.set_published_versions(published_versions(&repo));
                (Some(repo), None)
            }
            RepoAtStart::Held(held) => {
                status.set_repository_error(Some(held.error.clone()));
                (None, Some(held))
            }
            RepoAtStart::Peipkg(published) => {
                for (recipe, versions) in &published {
                    for v in versions {
                        queue.mark_published(recipe, v);
                    }
                }
                status.set_published_versions(
                    published
                        .into_iter()
                        .map(|(r, v)| (r, v.into_iter().collect()))
                        .collect(),
                );
                (None, None)
            }
        };
        prune_book(&mut book, &roster.borrow());
        status.set_failures(book.entries());
        status.set_paused(book.paused().iter().cloned());
        let paused = watch::Sender::new(Arc::new(book.paused().clone()));
        Worker {
            publisher: Publisher::new(&cfg, settings.clone()),
            cfg,
            settings,
            repo,
            held,
            queue,
            book,
            status,
            health,
            roster,
            polls,
            retry_requested: HashSet::new(),
            host_hold: None,
            retry_on_offer: HashSet::new(),
            paused,
            history: Arc::new(Mutex::new(history)),
            trace: None,
            shutdown,
            kill: CancellationToken::new(),
            stop: None,
            notify,
            last_outcome,
        }
    }

    /// The paused recipes, as they change (for the scheduler and the
    /// HTTP server).
    pub fn paused(&self) -> watch::Receiver<Paused> {
        self.paused.subscribe()
    }

    /// On reload: tries to open a held repository again. Once it opens,
    /// every recipe is polled so that builds resume.
    async fn reopen_held_repo(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let (config, signer) = (held.config.clone(), held.signer.clone());
        let opened = tokio::task::spawn_blocking(move || Repo::open(config, signer))
            .await
            .map_err(|e| format!("repository task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        match opened {
            Ok(repo) => {
                remember_published(&mut self.queue, &repo);
                self.status.set_published(repo.active_count());
                self.status
                    .set_published_versions(published_versions(&repo));
                self.status.set_repository_error(None);
                info!(dir = %held.config.dir.display(), "repository reopened; builds resume");
                self.repo = Some(repo);
                if let Some(polls) = &self.polls {
                    for id in self.roster.borrow().recipes.keys() {
                        let _ = polls.try_send(PollRequest {
                            recipe: id.clone(),
                            trigger: Trigger::Poll,
                        });
                    }
                }
            }
            Err(error) => {
                error!(err = %error, "repository unusable; builds are held until it is repaired and the daemon reloaded");
                self.status.set_repository_error(Some(error.clone()));
                self.held = Some(HeldRepo { error, ..held });
            }
        }
    }

    /// Runs until shutdown (daemon), or until every sender of `rx` is gone
    /// and the queue is empty (`--once`, which polls no paused recipe). Control requests
    /// come in on `control` (none for `--once`).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Offer>,
        mut control: Option<mpsc::Receiver<ControlCall>>,
    ) {
        let mut current: Option<(Job, Running)> = None;
        let mut draining = false;
        let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut heartbeat = tokio::time::interval(Health::BEAT);
        let mut log_sweep =
            tokio::time::interval_at(tokio::time::Instant::now() + LOG_SWEEP, LOG_SWEEP);
        loop {
            let stopping = self.shutdown.is_cancelled();
            if current.is_none() && !stopping {
                current = self.next_job();
            }
            if current.is_none() && (stopping || (draining && self.queue.is_empty())) {
                break;
            }
            if stopping && grace.is_none() && current.is_some() {
                grace = Some(Box::pin(tokio::time::sleep(self.cfg.build.shutdown_grace)));
            }
            let retry_in = self.retry_wait();
            let hold_until = self
                .host_hold
                .map(|h| h.until)
                .filter(|u| current.is_none() && *u > tokio::time::Instant::now());
            tokio::select! {
                // The hold is over: the next build shows whether the fault cleared.
                () = async { tokio::time::sleep_until(hold_until.expect("guarded")).await }, if hold_until.is_some() => {}
                offer = rx.recv(), if !draining => match offer {
                    Some(offer) => {
                        let running = current.as_ref().map(|(j, _)| j);
                        let n = self.offer(&offer, running);
                        let _ = offer.reply.send(n);
                    }
                    None => draining = true,
                },
                call = async { control.as_mut().expect("guarded").recv().await }, if control.is_some() => match call {
                    Some(ControlCall { request, reply }) => {
                        let outcome = self.control(request, current.as_ref().map(|(j, _)| j)).await;
                        let _ = reply.send(outcome);
                    }
                    None => control = None,
                },
                (repo, outcome) = async { current.as_mut().expect("guarded").1.as_mut().await }, if current.is_some() => {
                    let (job, _) = current.take().expect("guarded");
                    self.repo = repo;
                    self.finish(&job, outcome).await;
                }
                _ = self.shutdown.cancelled(), if !stopping => {}
                _ = async { grace.as_mut().expect("guarded").as_mut().await }, if grace.is_some() && !self.kill.is_cancelled() => {
                    if let Some((job, _)) = &current {
                        warn!(recipe = %job.recipe.id, version = %job.version, "shutdown grace period over, killing build");
                    }
                    self.kill.cancel();
                }
                _ = tokio::time::sleep(retry_in.unwrap_or(Duration::from_secs(3600))), if retry_in.is_some() => {
                    self.request_retries();
                }
                r = self.roster.changed() => {
                    if r.is_ok() {
                        self.roster_changed().await;
                        self.reopen_held_repo().await;
                    }
                }
                _ = heartbeat.tick() => self.health.beat(Loop::Worker),
                _ = log_sweep.tick() => self.sweep_logs().await,
            }
        }
        self.save_book().await;
    }

    fn offer(&mut self, offer: &Offer, running: Option<&Job>) -> usize {
        let id = offer.recipe.id.as_str();
        if self.held.is_some() {
            debug!(recipe = id, "offer dropped (repository unusable)");
            return 0;
        }
        // Only recipes still in the roster, as they are now.
        let current = self.roster.borrow().recipes.get(id).cloned();
        let Some(current) = current else {
            debug!(recipe = id, "offer dropped (recipe removed from roster)");
            return 0;
        };
        let running = running
            .filter(|j| j.recipe.id == id)
            .map(|j| j.version.as_str());
        let fresh = self.queue.select_new(
            &current,
            offer.candidates.clone(),
            &self.book,
            running,
            SystemTime::now(),
        );
        let mut queued = Vec::new();
        for c in fresh {
            let retry = self
                .retry_on_offer
                .remove(&BuildKey::new(id, c.version.as_str()));
            let b = QueuedBuild {
                recipe: id.to_string(),
                tag: c.tag,
                upstream: c.upstream,
                version: c.version.clone(),
                trigger: offer.trigger,
            };
            let ok = if retry {
                self.queue.push_front(b.clone())
            } else {
                self.queue.push(b.clone())
            };
            if ok {
                queued.push(b);
            } else {
                warn!(recipe = id, version = %c.version, err = "version does not parse", "dedup check failed");
            }
        }
        if !queued.is_empty() {
            self.status.builds_queued(&queued);
            self.publish_queue();
        }
        queued.len()
    }

    fn publish_queue(&self) {
        self.status
            .set_queue(self.queue.snapshot(QUEUE_LISTED), self.queue.len());
    }

    fn next_job(&mut self) -> Option<(Job, Running)> {
        if self.held.is_some()
            || self
                .host_hold
                .is_some_and(|h| h.until > tokio::time::Instant::now())
        {
            return None;
        }
        loop {
            let book = &self.book;
            let b = self.queue.pop_where(|recipe| !book.is_paused(recipe))?;
            let recipe = self.roster.borrow().recipes.get(&b.recipe).cloned();
            let Some(recipe) = recipe.filter(|r| r.admits(&b.upstream)) else {
                continue;
            };
            self.publish_queue();
            let id = self
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take_id();
            let job = Job {
                id,
                recipe,
                tag: b.tag,
                version: b.version,
                trigger: b.trigger,
            };
            return Some((job.clone(), self.start(job)));
        }
    }

    fn start(&mut self, job: Job) -> Running {
        let repo = self.repo.take();
        let settings = self.settings.clone();
        let publisher = self.publisher.clone();
        let status = self.status.clone();
        let kill = self.kill.clone();
        let stop = BuildStop::new(&kill);
        self.stop = Some(stop.clone());
        let history = self.history.clone();
        let trace = Arc::new(Trace::default());
        self.trace = Some(trace.clone());
        Box::pin(async move {
            let log = {
                let (s, r, v) = (settings.clone(), job.recipe.id.clone(), job.version.clone());
                tokio::task::spawn_blocking(move || runner::next_log_path(&s, &r, &v))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_else(|| {
                        settings.log_dir(&job.recipe.id).join(runner::log_name(
                            &job.version,
                            1,
                            false,
                        ))
                    })
            };
            let (started_at, began) = (SystemTime::now(), Instant::now());
            let mut rec = record_of(&job, BuildState::Running, started_at);
            rec.phase = Some(Phase::Fetching);
            rec.phases = vec![PhaseSpan {
                phase: Phase::Fetching,
                started_at,
                duration: None,
            }];
            rec.log = runner::log_attempt(&log);
            // The start record goes to disk first: the id is never handed
            // out again, whatever happens next.
            let (h, line) = (history.clone(), rec.clone());
            match tokio::task::spawn_blocking(move || {
                h.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .append(&line)
            })
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(build_id = job.id, err = %e, "cannot append to the build history")
                }
                Err(e) => {
                    error!(build_id = job.id, err = %e, "cannot append to the build history")
                }
            }
            info!(
                recipe = %job.recipe.id,
                tag = %job.tag,
                version = %job.version,
                source = job.trigger.as_str(),
                build_id = job.id,
                "starting build"
            );
            {
                let mut t = trace.lock();
                t.start = Some((rec.clone(), began));
                t.log = Some(log.clone());
            }
            trace.phase(Phase::Fetching);
            status.build_started(rec, Phase::Fetching);
            let progress = StatusProgress { status, trace };
            match runner::run(&job, &settings, &log, &progress, &stop).await {
                Ok(built) => publisher.run(&job, built, repo, &progress, &kill).await,
                Err(f) => (repo, Err(f)),
            }
        })
    }

    /// Makes the finish record of the build that just ended and writes it
    /// durably, after compressing its log and pruning the recipe's old
    /// logs (on a blocking thread); returns it.
    async fn record_finish(
        &mut self,
        job: &Job,
        state: BuildState,
        failure: Option<&Failure>,
    ) -> BuildRecord {
        let now = SystemTime::now();
        let trace = self.trace.take().unwrap_or_default();
        let (start, phases, log) = {
            let mut t = trace.lock();
            (t.start.take(), std::mem::take(&mut t.phases), t.log.take())
        };
        // Without a start (the build's future ended before it got that
        // far), the build is recorded as it ended.
        let (mut rec, began) =
            start.unwrap_or_else(|| (record_of(job, state, now), Instant::now()));
        let end = Instant::now();
        rec.state = state;
        rec.finished_at = Some(now);
        rec.duration = Some(seconds(end - began));
        rec.phase = failure.map(|f| f.phase);
        rec.error = failure.map(|f| f.error.clone());
        rec.phases = phases
            .into_iter()
            .map(|(mut p, at)| {
                if p.duration.is_none() {
                    p.duration = Some(seconds(end - at));
                }
                p
            })
            .collect();
        let prune = if state == BuildState::Succeeded {
            Prune::CountAndAge
        } else {
            Prune::Age
        };
        let (settings, history) = (self.settings.clone(), self.history.clone());
        let fallback = rec.clone();
        let task = tokio::task::spawn_blocking(move || {
            if let Some(log) = &log {
                match runner::finish_log(log) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => rec.log = None,
                    // The plain log stays; it is served as it is, and
                    // compressed at the next start.
                    Err(e) => warn!(file = %log.display(), err = %e, "cannot compress build log"),
                }
            }
            let pruned = runner::prune_logs(&settings, &rec.recipe, None, prune, now);
            let written = history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .append(&rec);
            (rec, pruned, written)
        });
        match task.await {
            Ok((rec, pruned, written)) => {
                if let Err(e) = written {
                    error!(build_id = job.id, err = %e, "cannot append to the build history");
                }
                self.logs_pruned(&pruned);
                rec
            }
            Err(e) => {
                error!(build_id = job.id, err = %e, "cannot append to the build history");
                fallback
            }
        }
    }

    fn logs_pruned(&self, pruned: &[LogId]) {
        if !pruned.is_empty() {
            self.status.logs_pruned(
                pruned
                    .iter()
                    .map(|l| (l.recipe.as_str(), l.version.as_str(), l.attempt)),
            );
        }
    }

    /// Removes every recipe's logs older than `[build].keep_logs_for`.
    async fn sweep_logs(&self) {
        let settings = self.settings.clone();
        let current = self.trace.as_ref().and_then(|t| t.log());
        let swept = tokio::task::spawn_blocking(move || {
            runner::sweep_logs(&settings, current.as_deref(), SystemTime::now())
        })
        .await;
        if let Ok(swept) = swept {
            if !swept.removed.is_empty() {
                debug!(count = swept.removed.len(), "old build logs removed");
            }
            self.logs_pruned(&swept.removed);
        }
    }

    async fn finish(&mut self, job: &Job, outcome: Result<Published, Failure>) {
        let (recipe, version) = (job.recipe.id.as_str(), job.version.as_str());
        let key = job.key();
        let stop = self.stop.take();
        if let Some(repo) = &self.repo {
            self.status.set_published(repo.active_count());
        }
        // A stopped build says why it stopped: an operator's cancel or a
        // shutdown.
        let reason = stop.map_or(StopReason::Shutdown, |s| s.reason());
        let outcome = outcome.map_err(|mut f| {
            if f.cancelled {
                f.error = reason.as_str().to_string();
            }
            f
        });
        let fault = outcome
            .as_ref()
            .err()
            .filter(|f| !f.cancelled)
            .and_then(|f| HostFault::of(&f.error).map(|fault| (fault, f)));
        if let Some((fault, f)) = fault {
            // Not the recipe's fault: no backoff entry; the version goes
            // back into the queue and the farm holds until the fault clears.
            let wait = self
                .host_hold
                .map_or(HOST_HOLD_FIRST, |h| (h.wait * 2).min(HOST_HOLD_MAX));
            self.host_hold = Some(HostHold {
                until: tokio::time::Instant::now() + wait,
                wait,
            });
            let held = format!("{}: {}: {}", fault.as_str(), f.phase, f.error);
            self.status.set_held(Some(held.clone()));
            let rec = self.record_finish(job, BuildState::Failed, Some(f)).await;
            self.status.build_finished(rec, None);
            let upstream = version.rsplit_once('-').map_or(version, |(u, _)| u);
            self.queue.push(QueuedBuild {
                recipe: recipe.to_string(),
                tag: job.tag.clone(),
                upstream: upstream.to_string(),
                version: version.to_string(),
                trigger: job.trigger,
            });
            self.publish_queue();
            error!(recipe, version, phase = f.phase.as_str(), err = %f.error, held = %held, retry_in = %format_duration(wait), build_id = job.id, "builds held: host fault");
            return;
        }
        if self.host_hold.take().is_some() {
            self.status.set_held(None);
            info!("host fault cleared; builds resume");
        }
        // The build is recorded (durably) before it counts as finished.
        let (state, failure) = match &outcome {
            Ok(_) => (BuildState::Succeeded, None),
            Err(f) if f.cancelled => (BuildState::Cancelled, Some(f)),
            Err(f) => (BuildState::Failed, Some(f)),
        };
        let rec = self.record_finish(job, state, failure).await;
        match outcome {
            Ok(Published { outputs, timestamp }) => {
                self.queue.mark_published(recipe, version);
                if self.book.clear(&key).is_some() {
                    self.save_book().await;
                }
                self.status.version_published(recipe, version);
                self.status.build_finished(rec, None);
                info!(recipe, version, outputs, build_timestamp = %timestamp, build_id = job.id, "build + publish complete");
                self.notify_outcome(job, Outcome::Succeeded, None);
            }
            Err(f) if f.cancelled => {
                // An operator's cancel backs off like a failure, so the
                // version is not built again at once; a shutdown does not.
                let next = (reason == StopReason::Operator).then(|| {
                    let wait = self.book.record_failure(
                        &key,
                        &job.tag,
                        reason.as_str(),
                        SystemTime::now(),
                    );
                    self.retry_requested.remove(&key);
                    format_duration(wait)
                });
                if next.is_some() {
                    self.save_book().await;
                }
                self.status.build_finished(rec, Some(reason));
                warn!(
                    recipe,
                    version,
                    phase = f.phase.as_str(),
                    err = reason.as_str(),
                    next_retry_after = next.as_deref(),
                    build_id = job.id,
                    "build cancelled"
                );
                // An operator's cancel is news; a shutdown is not.
                if reason == StopReason::Operator {
                    self.notify.send(
                        NotifyEvent::Cancelled,
                        recipe,
                        version,
                        job.id,
                        Some(reason.as_str()),
                    );
                }
            }
            Err(f) => {
                let wait = self.book.record_failure(
                    &key,
                    &job.tag,
                    &format!("{}: {}", f.phase, f.error),
                    SystemTime::now(),
                );
                self.retry_requested.remove(&key);
                self.save_book().await;
                self.status.build_finished(rec, None);
                let next = format_duration(wait);
                if f.phase == Phase::Publishing {
                    error!(recipe, version, err = %f.error, next_retry_after = %next, build_id = job.id, "publish failed");
                } else {
                    error!(recipe, version, phase = f.phase.as_str(), err = %f.error, next_retry_after = %next, build_id = job.id, "build failed");
                }
                let error = format!("{}: {}", f.phase, f.error);
                self.notify_outcome(job, Outcome::Failed, Some(&error));
            }
        }
    }

    /// Records how `job` ended and queues the notifications that raises
    /// (never waits for their delivery).
    fn notify_outcome(&mut self, job: &Job, outcome: Outcome, error: Option<&str>) {
        let previous = self.last_outcome.insert(job.recipe.id.clone(), outcome);
        for event in events_for(previous, outcome) {
            self.notify
                .send(event, &job.recipe.id, &job.version, job.id, error);
        }
    }

    /// Writes `state.json` on a blocking thread (two fsyncs) and publishes
    /// the book to `/status`.
    async fn save_book(&self) {
        let snapshot = self.book.snapshot();
        let written = tokio::task::spawn_blocking(move || {
            let r = snapshot.write();
            (snapshot, r)
        })
        .await;
        match written {
            Ok((_, Ok(()))) => {}
            Ok((snapshot, Err(e))) => {
                error!(err = %e, file = %snapshot.path().display(), "cannot save backoff book");
            }
            Err(e) => error!(err = %e, "cannot save backoff book"),
        }
        self.status.set_failures(self.book.entries());
    }

    /// Time until the earliest backoff expiry not yet acted on (daemon only).
    fn retry_wait(&self) -> Option<Duration> {
        self.polls.as_ref()?;
        let now = SystemTime::now();
        self.book
            .entries()
            .iter()
            .filter(|(k, _)| !self.retry_requested.contains(*k))
            .map(|(_, r)| r.next_retry.duration_since(now).unwrap_or(Duration::ZERO))
            .min()
            .map(|d| d + Duration::from_millis(50))
    }

    /// Asks for a fresh poll of every recipe whose backoff has run out.
    fn request_retries(&mut self) {
        let Some(polls) = &self.polls else { return };
        let now = SystemTime::now();
        let mut recipes = HashSet::new();
        for (k, r) in self.book.entries() {
            if r.next_retry <= now && self.retry_requested.insert(k.clone()) {
                recipes.insert(k.recipe.clone());
            }
        }
        for recipe in recipes {
            let _ = polls.try_send(PollRequest {
                recipe,
                trigger: Trigger::Poll,
            });
        }
    }

    async fn roster_changed(&mut self) {
        let roster = self.roster.borrow_and_update().clone();
        let dropped = self.queue.retain(|b| {
            roster.recipes.get(&b.recipe).is_some_and(|r| {
                r.admits(&b.upstream)
                    && r.upstream
                        .as_ref()
                        .is_some_and(|u| b.version.ends_with(&format!("-{}", u.revision)))
            })
        });
        if dropped > 0 {
            info!(dropped, "queued builds dropped by reload");
            self.publish_queue();
        }
        self.last_outcome
            .retain(|id, _| roster.recipes.contains_key(id) || roster.invalid.contains_key(id));
        let paused_before = self.book.paused().len();
        if prune_book(&mut self.book, &roster) > 0 {
            self.save_book().await;
        }
        if self.book.paused().len() != paused_before {
            self.publish_paused();
        }
    }

    /// Carries out an operator's request; `running` is the build in flight.
    async fn control(&mut self, request: ControlRequest, running: Option<&Job>) -> ControlOutcome {
        use ControlOutcome::{Accepted, Conflict, Done, NotFound, Unavailable};
        let action = request.action();
        match request {
            ControlRequest::Poll(id) => {
                let recipe = match self.known_recipe(&id) {
                    Ok(r) => r,
                    Err(no) => return no,
                };
                if self.book.is_paused(&id) {
                    return Conflict(format!("recipe {id} is paused; resume it first"));
                }
                if !recipe.is_watched() {
                    return Conflict(format!(
                        "recipe {id} has no [upstream]; there is nothing to poll"
                    ));
                }
                if !self.request_poll(&id) {
                    return Unavailable(format!(
                        "cannot poll {id} now (the poll queue is full); try again shortly"
                    ));
                }
                self.acted(action, &id, None, None);
                Accepted(format!("polling {id}"))
            }
            ControlRequest::Pause(id) | ControlRequest::Resume(id) => {
                if let Err(no) = self.known_recipe(&id) {
                    return no;
                }
                let pause = action == ControlAction::Pause;
                let changed = self.book.set_paused(&id, pause);
                if changed {
                    self.save_book().await;
                    self.publish_paused();
                }
                self.acted(action, &id, None, None);
                match (pause, changed) {
                    (true, true) => Done(format!(
                        "paused {id}: no polls and no builds of it until it is resumed"
                    )),
                    (true, false) => Done(format!("{id} was already paused")),
                    (false, was_paused) => {
                        // The paused set is published before the request
                        // goes out, so the scheduler takes it.
                        self.request_poll(&id);
                        let was = if was_paused {
                            "resumed"
                        } else {
                            "was not paused"
                        };
                        Done(format!("{id} {was}; polling it now"))
                    }
                }
            }
            ControlRequest::Cancel(build) => match (running, &self.stop) {
                (Some(job), Some(stop)) if job.id == build => {
                    if !stop.stop(StopReason::Operator) {
                        return Conflict(format!(
                            "build {build} ({} {}) is built and being published; it can no longer be cancelled",
                            job.recipe.id, job.version
                        ));
                    }
                    self.acted(action, &job.recipe.id, Some(&job.version), Some(build));
                    Accepted(format!(
                        "cancelling build {build} ({} {})",
                        job.recipe.id, job.version
                    ))
                }
                _ if build
                    < self
                        .history
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next_id() =>
                {
                    Conflict(format!("build {build} is not running (it has ended)"))
                }
                _ => NotFound(format!("no build {build}")),
            },
            ControlRequest::Retry(key) => {
                let Some(entry) = self.book.entries().get(&key) else {
                    return NotFound(format!(
                        "no failure {key}: only versions in /status failures can be retried"
                    ));
                };
                let tag = entry.tag.clone();
                if running.is_some_and(|j| j.key() == key) {
                    return Conflict(format!("{key} is being built right now"));
                }
                let Some(upstream) = key.version.rsplit_once('-').map(|(u, _)| u.to_string())
                else {
                    return NotFound(format!("no failure {key}: not a package version"));
                };
                let valid = self.roster.borrow().recipes.get(&key.recipe).cloned();
                if !valid.is_some_and(|r| r.admits(&upstream)) {
                    return Conflict(format!(
                        "recipe {} is invalid or no longer admits {}; fix it (farmhand --check), reload, then retry",
                        key.recipe, key.version
                    ));
                }
                self.book.clear(&key);
                self.retry_requested.remove(&key);
                self.save_book().await;
                let queued = if tag.is_empty() {
                    // An entry from before tags were kept: the next poll
                    // of the recipe finds the tag and queues it first.
                    self.retry_on_offer.insert(key.clone());
                    self.request_poll(&key.recipe);
                    format!(
                        "retrying {key}: it is queued first once a poll of {} finds its tag",
                        key.recipe
                    )
                } else {
                    self.queue.push_front(QueuedBuild {
                        recipe: key.recipe.clone(),
                        tag,
                        upstream,
                        version: key.version.clone(),
                        trigger: Trigger::Poll,
                    });
                    self.publish_queue();
                    format!("retrying {key}: it is the next build")
                };
                self.acted(action, &key.recipe, Some(&key.version), None);
                Accepted(queued)
            }
        }
    }

    /// The recipe `id` of the roster, or the 404 answer.
    fn known_recipe(&self, id: &str) -> Result<Arc<Recipe>, ControlOutcome> {
        let roster = self.roster.borrow();
        match roster.recipes.get(id) {
            Some(r) => Ok(r.clone()),
            None if roster.invalid.contains_key(id) => Err(ControlOutcome::NotFound(format!(
                "recipe {id} is invalid (see /status invalid_recipes); fix it and reload first"
            ))),
            None => Err(ControlOutcome::NotFound(format!("no recipe {id}"))),
        }
    }

    /// Asks the scheduler to poll `recipe` now; false if it cannot.
    fn request_poll(&self, recipe: &str) -> bool {
        self.polls.as_ref().is_some_and(|p| {
            p.try_send(PollRequest {
                recipe: recipe.to_string(),
                trigger: Trigger::Poll,
            })
            .is_ok()
        })
    }

    /// Logs, counts and publishes an operator's action.
    fn acted(
        &self,
        action: ControlAction,
        recipe: &str,
        version: Option<&str>,
        build_id: Option<u64>,
    ) {
        let ev = ControlEvent {
            action,
            recipe: recipe.to_string(),
            version: version.map(str::to_string),
            build_id,
            at: rfc3339(SystemTime::now()),
        };
        info!(
            action = action.as_str(),
            recipe, version, build_id, "control action"
        );
        self.status.control_action(&ev);
    }

    /// Publishes the paused recipes to the scheduler, the HTTP server and
    /// `/status`.
    fn publish_paused(&self) {
        let paused = self.book.paused().clone();
        self.status.set_paused(paused.iter().cloned());
        self.paused.send_replace(Arc::new(paused));
    }
}

/// The first wait of a hold for a host fault, and the longest.
const HOST_HOLD_FIRST: Duration = Duration::from_secs(2);
const HOST_HOLD_MAX: Duration = Duration::from_secs(60);

/// The queue is held for a host fault until `until`.
#[derive(Debug, Clone, Copy)]
struct HostHold {
    until: tokio::time::Instant,
    wait: Duration,
}

/// A record of `job` in `state`, started at `started_at`, with nothing
/// else known yet.
fn record_of(job: &Job, state: BuildState, started_at: SystemTime) -> BuildRecord {
    BuildRecord {
        id: job.id,
        recipe: job.recipe.id.clone(),
        version: job.version.clone(),
        tag: job.tag.clone(),
        trigger: job.trigger,
        state,
        started_at,
        finished_at: None,
        duration: None,
        phase: None,
        error: None,
        phases: Vec::new(),
        log: None,
    }
}

/// Every recipe's versions in `repo`'s archive.
fn published_versions(repo: &Repo) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (recipe, version) in repo.published() {
        let v = out.entry(recipe.to_string()).or_default();
        if !v.iter().any(|x| x == version) {
            v.push(version.to_string());
        }
    }
    out
}

/// Adds every version in `repo`'s archive to the queue's dedup set.
fn remember_published(queue: &mut BuildQueue, repo: &Repo) {
    for (recipe, version) in repo.published() {
        queue.mark_published(recipe, version);
    }
}

/// Drops backoff entries that can no longer be retried: recipes gone from
/// recipes_dir, versions of an older revision (a bump supersedes them) or
/// below `min_version`. An invalid recipe keeps its entries: fixing a typo
/// must not retry a broken build at once. Pauses of recipes gone from
/// recipes_dir go too (an invalid recipe stays paused). Returns how many
/// entries and pauses were dropped.
fn prune_book(book: &mut BackoffBook, roster: &Roster) -> usize {
    let unpaused =
        book.retain_paused(|r| roster.recipes.contains_key(r) || roster.invalid.contains_key(r));
    if unpaused > 0 {
        info!(dropped = unpaused, "pauses of removed recipes dropped");
    }
    let dropped = book.retain(|key| match roster.recipes.get(&key.recipe) {
        Some(r) => match (&r.upstream, key.version.rsplit_once('-')) {
            (Some(u), Some((upstream, rev))) => rev == u.revision.to_string() && r.admits(upstream),
            _ => false,
        },
        None => roster.invalid.contains_key(&key.recipe),
    });
    if dropped > 0 {
        info!(
            dropped,
            "backoff entries of removed recipes or superseded versions dropped"
        );
    }
    dropped + unpaused
}

/// The settings every build shares, from the config.
pub fn build_settings(cfg: &Config) -> BuildSettings {
    BuildSettings {
        state_dir: cfg.manager.state_dir.clone(),
        timeout: cfg.build.timeout,
        keep_logs: cfg.build.keep_logs,
        keep_logs_for: cfg.build.keep_logs_for,
        runner: cfg.build.runner.clone(),
        fetch_timeout: cfg.poll.timeout.max(Duration::from_secs(600)),
        path_env: std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        }),
        peipkg: None,
        sandbox: None,
    }
}

/// The stage and sources directories, cleared at start.
pub fn ephemeral_dirs(cfg: &Config) -> [PathBuf; 2] {
    [
        cfg.manager.state_dir.join("sources"),
        cfg.manager.state_dir.join("stage"),
    ]
}
