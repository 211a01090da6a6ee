//! The build worker: the one task that owns the build queue (with the
//! dedup set), the backoff book and the repository, and runs one build at
//! a time.
//!
//! Polls (and, through them, webhooks) send it [`Offer`]s; it dedups each
//! candidate in O(1) against what is published, queued, in flight or
//! backing off, queues the rest newest-first with recipes taking turns,
//! and runs the queue: fetch → build → package (`build`), then publish →
//! upload → prune ([`Publisher`]). The repository is lent to the running
//! build's future and handed back with its outcome, so there is never a
//! second writer.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::build::runner::{self, BuildSettings, Failure, Progress};
use crate::farm::backoff::BackoffBook;
use crate::farm::publisher::{Published, Publisher};
use crate::farm::queue::BuildQueue;
use crate::host::health::{Health, Loop};
use crate::model::build::{BuildKey, BuildState, HostFault, Job, Phase, QueuedBuild, Trigger};
use crate::model::config::{format_duration, Config};
use crate::model::recipe::Roster;
use crate::model::time::rfc3339;
use crate::publish::repo::{Repo, RepoConfig};
use crate::serve::status::{BuildRecord, Status, QUEUE_LISTED};
use crate::watch::poll::{Offer, PollRequest};

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
    next_id: u64,
    shutdown: CancellationToken,
    kill: CancellationToken,
}

struct StatusProgress(Arc<Status>);

impl Progress for StatusProgress {
    fn phase(&self, phase: Phase) {
        self.0.set_phase(phase);
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
        } = setup;
        let mut queue = BuildQueue::new();
        let (repo, held) = match repo {
            RepoAtStart::Open(repo) => {
                remember_published(&mut queue, &repo);
                status.set_published(repo.active_count());
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
                (None, None)
            }
        };
        prune_book(&mut book, &roster.borrow());
        status.set_failures(book.entries());
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
            next_id: 1,
            shutdown,
            kill: CancellationToken::new(),
        }
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
    /// and the queue is empty (`--once`).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Offer>) {
        let mut current: Option<(Job, Running)> = None;
        let mut draining = false;
        let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut heartbeat = tokio::time::interval(Health::BEAT);
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
        let mut queued = 0;
        for c in fresh {
            let ok = self.queue.push(QueuedBuild {
                recipe: id.to_string(),
                tag: c.tag,
                upstream: c.upstream,
                version: c.version.clone(),
                trigger: offer.trigger,
            });
            if ok {
                queued += 1;
            } else {
                warn!(recipe = id, version = %c.version, err = "version does not parse", "dedup check failed");
            }
        }
        if queued > 0 {
            self.publish_queue();
        }
        queued
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
            let b = self.queue.pop()?;
            let recipe = self.roster.borrow().recipes.get(&b.recipe).cloned();
            let Some(recipe) = recipe.filter(|r| r.admits(&b.upstream)) else {
                continue;
            };
            self.publish_queue();
            let id = self.next_id;
            self.next_id += 1;
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
        info!(
            recipe = %job.recipe.id,
            tag = %job.tag,
            version = %job.version,
            source = job.trigger.as_str(),
            build_id = job.id,
            "starting build"
        );
        let repo = self.repo.take();
        let settings = self.settings.clone();
        let publisher = self.publisher.clone();
        let status = self.status.clone();
        let kill = self.kill.clone();
        Box::pin(async move {
            let log = {
                let (s, r, v) = (settings.clone(), job.recipe.id.clone(), job.version.clone());
                tokio::task::spawn_blocking(move || runner::next_log_path(&s, &r, &v))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_else(|| {
                        settings
                            .log_dir(&job.recipe.id)
                            .join(format!("{}.log", job.version))
                    })
            };
            status.build_started(
                BuildRecord {
                    id: job.id,
                    recipe: job.recipe.id.clone(),
                    version: job.version.clone(),
                    tag: job.tag.clone(),
                    trigger: job.trigger,
                    state: BuildState::Running,
                    started_at: rfc3339(SystemTime::now()),
                    finished_at: None,
                    duration: None,
                    phase: None,
                    error: None,
                    log_url: format!("/builds/{}/log", job.id),
                    log: format!("/builds/{}/log", job.id),
                    log_path: log.clone(),
                },
                Phase::Fetching,
            );
            let progress = StatusProgress(status);
            match runner::run(&job, &settings, &log, &progress, &kill).await {
                Ok(built) => {
                    publisher
                        .run(&job, built, repo, &log, &progress, &kill)
                        .await
                }
                Err(f) => (repo, Err(f)),
            }
        })
    }

    async fn finish(&mut self, job: &Job, outcome: Result<Published, Failure>) {
        let (recipe, version) = (job.recipe.id.as_str(), job.version.as_str());
        let key = job.key();
        if let Some(repo) = &self.repo {
            self.status.set_published(repo.active_count());
        }
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
            self.status.build_finished(
                job.id,
                BuildState::Failed,
                Some(f.phase),
                Some(f.error.clone()),
            );
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
        match outcome {
            Ok(Published { outputs, timestamp }) => {
                self.queue.mark_published(recipe, version);
                if self.book.clear(&key) {
                    self.save_book().await;
                }
                self.status
                    .build_finished(job.id, BuildState::Succeeded, None, None);
                info!(recipe, version, outputs, build_timestamp = %timestamp, build_id = job.id, "build + publish complete");
            }
            Err(f) if f.cancelled => {
                self.status.build_finished(
                    job.id,
                    BuildState::Cancelled,
                    Some(f.phase),
                    Some(f.error.clone()),
                );
                warn!(recipe, version, phase = f.phase.as_str(), err = %f.error, "build cancelled");
            }
            Err(f) => {
                let wait = self.book.record_failure(
                    &key,
                    &format!("{}: {}", f.phase, f.error),
                    SystemTime::now(),
                );
                self.retry_requested.remove(&key);
                self.save_book().await;
                self.status.build_finished(
                    job.id,
                    BuildState::Failed,
                    Some(f.phase),
                    Some(f.error.clone()),
                );
                let next = format_duration(wait);
                if f.phase == Phase::Publishing {
                    error!(recipe, version, err = %f.error, next_retry_after = %next, build_id = job.id, "publish failed");
                } else {
                    error!(recipe, version, phase = f.phase.as_str(), err = %f.error, next_retry_after = %next, build_id = job.id, "build failed");
                }
            }
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
        if prune_book(&mut self.book, &roster) > 0 {
            self.save_book().await;
        }
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

/// Adds every version in `repo`'s archive to the queue's dedup set.
fn remember_published(queue: &mut BuildQueue, repo: &Repo) {
    for (recipe, version) in repo.published() {
        queue.mark_published(recipe, version);
    }
}

/// Drops backoff entries that can no longer be retried: recipes gone from
/// recipes_dir, versions of an older revision (a bump supersedes them) or
/// below `min_version`. An invalid recipe keeps its entries: fixing a typo
/// must not retry a broken build at once. Returns how many were dropped.
fn prune_book(book: &mut BackoffBook, roster: &Roster) -> usize {
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
    dropped
}

/// The settings every build shares, from the config.
pub fn build_settings(cfg: &Config) -> BuildSettings {
    BuildSettings {
        state_dir: cfg.manager.state_dir.clone(),
        timeout: cfg.build.timeout,
        keep_logs: cfg.build.keep_logs,
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
