//! The build worker: the one task that owns the build queue, the backoff
//! book and the repository, and runs one build at a time.
//!
//! Polls (and, through them, webhooks) send it [`Offer`]s; it dedups each
//! candidate in O(1) against what is published, queued, in flight or
//! backing off, queues the rest newest-first with recipes taking turns,
//! and runs the queue: fetch → build → package → publish → upload. The
//! repository is lent to the running build's future and handed back with
//! its outcome, so there is never a second writer.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::builder::{self, BuildSettings, Job, Phase, Progress, Trigger};
use crate::config::{Config, Upload};
use crate::poller::PollRequest;
use crate::queue::{rfc3339, BackoffBook, BuildQueue, QueuedBuild};
use crate::recipe::{Backlog, Recipe, Roster};
use crate::repo::{BuildInfo, NewPackage, Repo, RepoConfig};
use crate::status::{BuildRecord, BuildState, Health, Loop, Status, QUEUE_LISTED};
use crate::upload;

/// A version a poll found: the tag and what it maps to.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The tag.
    pub tag: String,
    /// The upstream version the tag yields.
    pub upstream: String,
    /// The package version (`<upstream>-<revision>`).
    pub version: String,
}

/// Messages to the worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// The versions a poll of `recipe` found; the reply is how many were
    /// queued.
    Offer {
        /// The recipe as polled.
        recipe: Arc<Recipe>,
        /// Every matching version, any order.
        candidates: Vec<Candidate>,
        /// What set the poll off.
        trigger: Trigger,
        /// How many were queued.
        reply: oneshot::Sender<usize>,
    },
    /// `--once`: exit as soon as the queue is empty and nothing runs.
    Drain,
}

/// The worker's handle for senders.
pub type WorkerTx = mpsc::Sender<WorkerMsg>;

type Running = Pin<Box<dyn Future<Output = (Option<Repo>, Outcome)> + Send>>;

enum Outcome {
    Published { outputs: usize, timestamp: String },
    Failed(builder::Failure),
}

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

/// Everything the worker needs.
pub struct Worker {
    cfg: Arc<Config>,
    settings: BuildSettings,
    repo: Option<Repo>,
    held: Option<HeldRepo>,
    published: HashMap<String, HashSet<String>>,
    queue: BuildQueue,
    book: BackoffBook,
    status: Arc<Status>,
    health: Arc<Health>,
    roster: watch::Receiver<Arc<Roster>>,
    polls: Option<mpsc::Sender<PollRequest>>,
    retry_requested: HashSet<String>,
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
    /// A worker over an opened repository and a loaded backoff book.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Arc<Config>,
        settings: BuildSettings,
        repo: Option<Repo>,
        published: HashMap<String, HashSet<String>>,
        book: BackoffBook,
        status: Arc<Status>,
        health: Arc<Health>,
        roster: watch::Receiver<Arc<Roster>>,
        polls: Option<mpsc::Sender<PollRequest>>,
        shutdown: CancellationToken,
    ) -> Worker {
        let mut published = published;
        if let Some(repo) = &repo {
            remember_published(&mut published, repo);
            status.set_published(repo.active_count());
        }
        let mut book = book;
        prune_book(&mut book, &roster.borrow());
        status.set_failures(book.entries());
        Worker {
            cfg,
            settings,
            repo,
            held: None,
            published,
            queue: BuildQueue::new(),
            book,
            status,
            health,
            roster,
            polls,
            retry_requested: HashSet::new(),
            next_id: 1,
            shutdown,
            kill: CancellationToken::new(),
        }
    }

    /// Holds every build until `held` opens on a reload (see [`HeldRepo`]).
    pub fn hold_until_repaired(mut self, held: HeldRepo) -> Worker {
        self.status.set_repository_error(Some(held.error.clone()));
        self.held = Some(held);
        self
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
                remember_published(&mut self.published, &repo);
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

    /// Runs until shutdown (daemon) or until drained (`--once`).
    pub async fn run(mut self, mut rx: mpsc::Receiver<WorkerMsg>) {
        let mut current: Option<(Job, Running)> = None;
        let mut draining = false;
        let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut heartbeat = tokio::time::interval(Health::BEAT);
        let mut rx_open = true;
        loop {
            let stopping = self.shutdown.is_cancelled();
            if current.is_none() && !stopping {
                if let Some(next) = self.next_job() {
                    current = Some(next);
                }
            }
            if current.is_none() && (stopping || (draining && self.queue.is_empty())) {
                break;
            }
            if stopping && grace.is_none() && current.is_some() {
                grace = Some(Box::pin(tokio::time::sleep(self.cfg.build.shutdown_grace)));
            }
            let retry_in = self.retry_wait();
            tokio::select! {
                msg = rx.recv(), if rx_open => match msg {
                    Some(WorkerMsg::Offer { recipe, candidates, trigger, reply }) => {
                        let n = self.offer(&recipe, candidates, trigger, current.as_ref().map(|(j, _)| j));
                        let _ = reply.send(n);
                    }
                    Some(WorkerMsg::Drain) => draining = true,
                    None => { rx_open = false; draining = true; }
                },
                (repo, outcome) = async { current.as_mut().expect("guarded").1.as_mut().await }, if current.is_some() => {
                    let (job, _) = current.take().expect("guarded");
                    self.repo = repo;
                    self.finish(&job, outcome);
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
                        self.roster_changed();
                        self.reopen_held_repo().await;
                    }
                }
                _ = heartbeat.tick() => self.health.beat(Loop::Worker),
            }
        }
        if let Err(e) = self.book.save() {
            error!(err = %e, "cannot save backoff book");
        }
    }

    fn offer(
        &mut self,
        recipe: &Arc<Recipe>,
        candidates: Vec<Candidate>,
        trigger: Trigger,
        running: Option<&Job>,
    ) -> usize {
        let id = recipe.id.as_str();
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
        let fresh = select_new(
            &current,
            candidates,
            &Seen {
                published: self.published.get(id),
                queue: &self.queue,
                book: &self.book,
                running,
            },
            SystemTime::now(),
        );
        let mut queued = 0;
        for c in fresh {
            let ok = self.queue.push(QueuedBuild {
                recipe: id.to_string(),
                tag: c.tag,
                upstream: c.upstream,
                version: c.version.clone(),
                trigger,
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
        if self.held.is_some() {
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
        let log = builder::next_log_path(&self.settings, &job.recipe.id, &job.version)
            .unwrap_or_else(|_| {
                self.settings
                    .log_dir(&job.recipe.id)
                    .join(format!("{}.log", job.version))
            });
        let now = SystemTime::now();
        self.status.build_started(
            BuildRecord {
                id: job.id,
                recipe: job.recipe.id.clone(),
                version: job.version.clone(),
                tag: job.tag.clone(),
                trigger: job.trigger,
                state: BuildState::Running,
                started_at: rfc3339(now),
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
        let repo = self.repo.take();
        let settings = self.settings.clone();
        let status = self.status.clone();
        let kill = self.kill.clone();
        let farm_id = self.cfg.manager.id.clone();
        let upload_cfg = self.cfg.upload.clone();
        let repo_dir = self.cfg.repo_dir();
        Box::pin(async move {
            let progress = StatusProgress(status.clone());
            let built = match builder::run(&job, &settings, &log, &progress, &kill).await {
                Ok(b) => b,
                Err(f) => return (repo, Outcome::Failed(f)),
            };
            progress.phase(Phase::Publishing);
            let timestamp = rfc3339(
                SystemTime::UNIX_EPOCH + Duration::from_secs(built.commit_time.max(0) as u64),
            );
            let stage = built.stage_dir.clone();
            let (repo, outputs, published) = match (repo, &settings.peipkg) {
                (_, Some(tools)) => {
                    let n = built.peipkg_outputs.len();
                    let r = tools.publish(&repo_dir, &stage.join("out")).await;
                    (None, n, r)
                }
                (Some(mut repo), None) => {
                    let packages: Vec<NewPackage> = built
                        .artifacts
                        .iter()
                        .map(|a| NewPackage {
                            artifact: with_description(a, &job.recipe.description),
                            license: job.recipe.license.clone(),
                            homepage: job.recipe.homepage.clone(),
                            build: BuildInfo {
                                timestamp: timestamp.clone(),
                                farm_id: farm_id.clone(),
                                recipe: job.recipe.id.clone(),
                                source_ref: job.source_ref(),
                            },
                        })
                        .collect();
                    let n = packages.len();
                    let (repo, r) = tokio::task::spawn_blocking(move || {
                        let r = repo.publish(packages).map_err(|e| e.to_string());
                        (repo, r)
                    })
                    .await
                    .expect("publish task panicked");
                    status.set_published(repo.active_count());
                    (Some(repo), n, r)
                }
                (None, None) => (None, 0, Err("no repository is open".to_string())),
            };
            let _ = std::fs::remove_dir_all(&stage);
            if let Err(e) = published {
                return (
                    repo,
                    Outcome::Failed(builder::Failure {
                        phase: Phase::Publishing,
                        error: e,
                        cancelled: false,
                    }),
                );
            }
            if upload_cfg != Upload::None {
                progress.phase(Phase::Uploading);
                if let Err(e) = upload::upload(&upload_cfg, &repo_dir).await {
                    error!(recipe = %job.recipe.id, version = %job.version, err = %e, "upload failed");
                }
            }
            builder::prune_logs(&settings, &job.recipe.id, &log);
            (repo, Outcome::Published { outputs, timestamp })
        })
    }

    fn finish(&mut self, job: &Job, outcome: Outcome) {
        let (recipe, version) = (job.recipe.id.as_str(), job.version.as_str());
        match outcome {
            Outcome::Published { outputs, timestamp } => {
                self.published
                    .entry(recipe.to_string())
                    .or_default()
                    .insert(version.to_string());
                if self.book.clear(recipe, version) {
                    self.save_book();
                }
                self.status
                    .build_finished(job.id, BuildState::Succeeded, None, None);
                info!(recipe, version, outputs, build_timestamp = %timestamp, build_id = job.id, "build + publish complete");
            }
            Outcome::Failed(f) if f.cancelled => {
                self.status.build_finished(
                    job.id,
                    BuildState::Cancelled,
                    Some(f.phase),
                    Some(f.error.clone()),
                );
                warn!(recipe, version, phase = f.phase.as_str(), err = %f.error, "build cancelled");
            }
            Outcome::Failed(f) => {
                let wait = self.book.record_failure(
                    recipe,
                    version,
                    &format!("{}: {}", f.phase, f.error),
                    SystemTime::now(),
                );
                self.retry_requested
                    .remove(&crate::queue::failure_key(recipe, version));
                self.save_book();
                self.status.build_finished(
                    job.id,
                    BuildState::Failed,
                    Some(f.phase),
                    Some(f.error.clone()),
                );
                let next = crate::config::format_duration(wait);
                if f.phase == Phase::Publishing {
                    error!(recipe, version, err = %f.error, next_retry_after = %next, build_id = job.id, "publish failed");
                } else {
                    error!(recipe, version, phase = f.phase.as_str(), err = %f.error, next_retry_after = %next, build_id = job.id, "build failed");
                }
            }
        }
    }

    fn save_book(&self) {
        if let Err(e) = self.book.save() {
            error!(err = %e, file = %self.cfg.manager.state_dir.join("state.json").display(), "cannot save backoff book");
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
                if let Some((recipe, _)) = k.rsplit_once('@') {
                    recipes.insert(recipe.to_string());
                }
            }
        }
        for recipe in recipes {
            let _ = polls.try_send(PollRequest {
                recipe,
                trigger: Trigger::Poll,
            });
        }
    }

    fn roster_changed(&mut self) {
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
            self.save_book();
        }
    }
}

/// Adds every version in `repo`'s archive to `published` (recipe →
/// versions), the worker's O(1) dedup set.
fn remember_published(published: &mut HashMap<String, HashSet<String>>, repo: &Repo) {
    for e in repo.archive() {
        published
            .entry(e.build.recipe.clone())
            .or_default()
            .insert(e.version.clone());
    }
}

/// Drops backoff entries that can no longer be retried: recipes gone from
/// recipes_dir, versions of an older revision (a bump supersedes them) or
/// below `min_version`. An invalid recipe keeps its entries: fixing a typo
/// must not retry a broken build at once. Returns how many were dropped.
fn prune_book(book: &mut BackoffBook, roster: &Roster) -> usize {
    let dropped = book.retain(|recipe, version| match roster.recipes.get(recipe) {
        Some(r) => match (&r.upstream, version.rsplit_once('-')) {
            (Some(u), Some((upstream, rev))) => rev == u.revision.to_string() && r.admits(upstream),
            _ => false,
        },
        None => roster.invalid.contains_key(recipe),
    });
    if dropped > 0 {
        info!(
            dropped,
            "backoff entries of removed recipes or superseded versions dropped"
        );
    }
    dropped
}

/// The artifact, described by the recipe's `[meta].description` when its
/// package stanza has no description of its own (or there is no stanza).
fn with_description(
    a: &crate::package::Artifact,
    recipe_description: &str,
) -> crate::package::Artifact {
    let mut a = a.clone();
    if a.description.is_empty() {
        a.description = recipe_description.to_string();
    }
    a
}

/// What a recipe already has: published versions, the queue, the build in
/// flight and the backoff book.
pub struct Seen<'a> {
    /// Published versions of the recipe.
    pub published: Option<&'a HashSet<String>>,
    /// The build queue.
    pub queue: &'a BuildQueue,
    /// The backoff book.
    pub book: &'a BackoffBook,
    /// The version of this recipe being built, if any.
    pub running: Option<&'a str>,
}

/// The dedup and backoff filter: the candidates of `recipe` that are not
/// published, queued, in flight or backing off, and at or above
/// `min_version`. O(1) per candidate.
///
/// With `backlog = "latest"` the history before the recipe's first build
/// is never built: with nothing published, only the newest candidate;
/// afterwards, only upstream versions newer than the newest published one,
/// or published ones at another revision (a revision bump). That costs one
/// pass over the recipe's published versions per offer.
pub fn select_new(
    recipe: &Recipe,
    mut candidates: Vec<Candidate>,
    seen: &Seen,
    now: SystemTime,
) -> Vec<Candidate> {
    let id = recipe.id.as_str();
    if recipe.watch.backlog == Backlog::Latest {
        match seen.published.filter(|s| !s.is_empty()) {
            None => {
                let newest = candidates
                    .iter()
                    .filter_map(|c| {
                        crate::version::Version::parse(&c.version)
                            .ok()
                            .map(|v| (v, c.clone()))
                    })
                    .max_by(|a, b| a.0.cmp(&b.0))
                    .map(|(_, c)| c);
                candidates = newest.into_iter().collect();
            }
            Some(published) => {
                let upstreams: HashSet<&str> = published
                    .iter()
                    .filter_map(|v| v.rsplit_once('-').map(|(u, _)| u))
                    .collect();
                let newest = upstreams
                    .iter()
                    .copied()
                    .max_by(|a, b| crate::version::compare_upstream(a, b));
                candidates.retain(|c| {
                    upstreams.contains(c.upstream.as_str())
                        || newest.is_none_or(|n| {
                            crate::version::compare_upstream(&c.upstream, n).is_gt()
                        })
                });
            }
        }
    }
    candidates.retain(|c| {
        if !recipe.admits(&c.upstream)
            || seen.published.is_some_and(|p| p.contains(&c.version))
            || seen.queue.contains(id, &c.version)
            || seen.running == Some(c.version.as_str())
        {
            return false;
        }
        if seen.book.is_backing_off(id, &c.version, now) {
            debug!(recipe = id, version = %c.version, "trigger skipped (in failure backoff window)");
            return false;
        }
        true
    });
    candidates
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
    }
}

/// The stage and sources directories, cleared at start.
pub fn ephemeral_dirs(cfg: &Config) -> [PathBuf; 2] {
    [
        cfg.manager.state_dir.join("sources"),
        cfg.manager.state_dir.join("stage"),
    ]
}
