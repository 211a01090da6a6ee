//! Wires the pieces together: `--check`, `--once`, the daemon, reload and
//! shutdown.
//!
//! The daemon owns the roster and publishes it to the scheduler, the
//! worker and the HTTP server through a `watch` channel; SIGHUP replaces
//! it. A single `CancellationToken` carries shutdown: the scheduler stops
//! polling, the worker finishes (or, after `shutdown_grace`, kills) the
//! in-flight build, the HTTP server drains, and the process exits 0.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::build::peipkg::PeipkgTools;
use crate::build::runner::BuildSettings;
use crate::build::sandbox::Sandbox;
use crate::farm::backoff::BackoffBook;
use crate::farm::history::History;
use crate::farm::worker::{self, RepoAtStart, Worker, WorkerSetup};
use crate::host::health::{Health, Loop};
use crate::host::keys::{read_control_token, KeyError};
use crate::host::systemd;
use crate::model::config::{format_duration, BuildBackend, Config, NotifyTarget, SandboxMode};
use crate::model::recipe::{self, Roster};
use crate::publish::notify::Notifier;
use crate::publish::repo::{Repo, RepoConfig, RepoError};
use crate::serve::control::{ControlApi, ControlToken, TokenSlot};
use crate::serve::events::EventBus;
use crate::serve::http::{self, HttpState, Secret};
use crate::serve::status::Status;
use crate::watch::poll::{self, PollObserver, Scheduler};

/// Why the program stops with an error, and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// Bad flags or an invalid config: exit 2.
    #[error("{0}")]
    Config(String),
    /// Anything that goes wrong at run time: exit 1.
    #[error("{}", chain_message(.0))]
    Runtime(anyhow::Error),
}

/// The error and its causes on one line, `outer: inner: ...`, leaving out a
/// cause whose text the line already holds (many errors here put their
/// cause in their own message, which a plain chain would print twice).
fn chain_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

impl Fatal {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Fatal::Config(_) => 2,
            Fatal::Runtime(_) => 1,
        }
    }
}

impl From<anyhow::Error> for Fatal {
    fn from(e: anyhow::Error) -> Fatal {
        Fatal::Runtime(e)
    }
}

/// Loads the config; an error is a config error (exit 2).
pub fn load_config(path: &Path) -> Result<Config, Fatal> {
    Config::load(path).map_err(|e| Fatal::Config(e.to_string()))
}

/// Problems that make a roster unusable as configured (beyond invalid
/// recipes, which are listed separately).
fn roster_problems(cfg: &Config, roster: &Roster) -> Vec<String> {
    let mut p = Vec::new();
    if roster.any_webhook() && cfg.http.webhook_secret_file.is_none() {
        let ids: Vec<_> = roster
            .recipes
            .values()
            .filter(|r| r.watch.webhook)
            .map(|r| r.id.as_str())
            .collect();
        p.push(format!(
            "{}: http.webhook_secret_file: is required because recipes accept webhooks ({}); unsigned webhooks are never accepted",
            cfg.path.display(),
            ids.join(", ")
        ));
    }
    p
}

/// Refuses to run as another user than the one owning `state_dir` (when it
/// exists): files written as root into a farm the service runs as
/// `farmhand` (`state.json`, `stage/`, the repository) would break the
/// service later.
fn check_state_dir_owner(state: &Path) -> Result<(), Fatal> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(state) else {
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() == me {
        return Ok(());
    }
    let owner = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", meta.uid()), |u| u.name);
    Err(Fatal::Runtime(anyhow::anyhow!(
        "state_dir {} belongs to {owner}, but farmhand runs as uid {me}: run it as that user (runuser -u {owner} -- farmhand ...) so the files it writes stay usable by the service",
        state.display()
    )))
}

/// Warnings about local upstreams that git will refuse to read as the
/// user `--check` runs as (the daemon's user, when run as the docs show):
/// missing, or owned by another user and not in git's `safe.directory`.
fn local_upstream_warnings(roster: &Roster, state_dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    // The user the daemon runs as: this one, or, for root (an operator
    // checking the service's farm), the owner of the state directory.
    let me = match nix::unistd::geteuid().as_raw() {
        0 => match std::fs::metadata(state_dir) {
            Ok(m) => m.uid(),
            Err(_) => 0,
        },
        uid => uid,
    };
    let mut out = Vec::new();
    for r in roster.recipes.values() {
        let Some(up) = &r.upstream else { continue };
        let path = up.git.strip_prefix("file://").unwrap_or(&up.git);
        if !path.starts_with('/') {
            continue;
        }
        match std::fs::metadata(path) {
            Err(e) => out.push(format!(
                "recipe {}: local upstream {path} is not readable: {e}",
                r.id
            )),
            Ok(m) if m.uid() != me => out.push(format!(
                "recipe {}: local upstream {path} is owned by uid {}, not by the user farmhand runs as (uid {me}); git refuses it unless it is listed in git's safe.directory",
                r.id,
                m.uid()
            )),
            Ok(_) => {}
        }
    }
    out
}

/// `--check`: prints the roster and every problem; returns the exit code.
/// (A closed stdout, as in `farmhand --check | head -1`, is not an error.)
pub fn check(config_path: &Path) -> i32 {
    use std::io::Write as _;
    let (code, report) = check_report(config_path);
    let _ = std::io::stdout().lock().write_all(report.as_bytes());
    code
}

/// The `--check` report and its exit code.
fn check_report(config_path: &Path) -> (i32, String) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let cfg = match load_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "invalid config: {e}");
            return (2, out);
        }
    };
    let roster = match recipe::load_roster(&cfg.manager.recipes_dir, cfg.poll.default_interval) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "invalid config: {e}");
            return (2, out);
        }
    };
    let mut problems = roster_problems(&cfg, &roster);
    if cfg.build.backend == BuildBackend::Peipkg {
        if let Err(e) = PeipkgTools::resolve(&cfg) {
            problems.push(format!("{}: {e}", cfg.path.display()));
        }
    }
    let warnings = local_upstream_warnings(&roster, &cfg.manager.state_dir);
    if let Some(f) = &cfg.http.webhook_secret_file {
        if roster.any_webhook() {
            if let Err(e) = read_secret(f) {
                problems.push(e);
            }
        }
    }
    if let Err(e) = control_token(&cfg) {
        problems.push(e.to_string());
    }
    for (i, n) in cfg.notify.iter().enumerate() {
        if let NotifyTarget::Url { secret_file, .. } = &n.target {
            if let Err(e) = crate::host::keys::read_secret(
                secret_file,
                "notification secret",
                "notifications are always signed",
            ) {
                problems.push(format!("notify[{i}].secret_file: {e}"));
            }
        }
    }
    let _ = writeln!(
        out,
        "farm {}: {} recipes in {} ({} valid, {} invalid)",
        cfg.manager.id,
        roster.recipes.len() + roster.invalid.len(),
        cfg.manager.recipes_dir.display(),
        roster.recipes.len(),
        roster.invalid.len()
    );
    let rows: Vec<[String; 4]> = roster
        .recipes
        .values()
        .map(|r| {
            let (up, interval) = match &r.upstream {
                Some(u) => (u.git.clone(), format_duration(r.watch.poll_interval)),
                None => ("(none: not auto-built)".into(), "-".into()),
            };
            let hook = if r.watch.webhook { "on" } else { "off" };
            [r.id.clone(), up, interval, hook.into()]
        })
        .collect();
    let head = ["RECIPE", "UPSTREAM", "INTERVAL", "WEBHOOK"].map(String::from);
    let mut widths = head.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in std::iter::once(&head).chain(rows.iter()) {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    for (id, e) in &roster.invalid {
        problems.push(format!("recipe {id} invalid: {e}"));
    }
    for w in &warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if problems.is_empty() {
        let _ = writeln!(out, "ok: config and all recipes are valid");
        (0, out)
    } else {
        let _ = writeln!(out, "{} problem(s):", problems.len());
        for p in &problems {
            let _ = writeln!(out, "  {p}");
        }
        (2, out)
    }
}

fn read_secret(path: &Path) -> Result<Arc<[u8]>, String> {
    crate::host::keys::read_secret(
        path,
        "webhook secret",
        "unsigned webhooks are never accepted",
    )
}

/// The control token `[http].control_token_file` holds, if one is
/// configured. A short token or a file others can read is a config error
/// (exit 2); a file that cannot be read, a runtime one (exit 1).
fn control_token(cfg: &Config) -> Result<Option<ControlToken>, Fatal> {
    let Some(f) = &cfg.http.control_token_file else {
        return Ok(None);
    };
    match read_control_token(f) {
        Ok(t) => Ok(Some(ControlToken::new(&t))),
        Err(e @ KeyError::Io { .. }) => Err(Fatal::Runtime(anyhow::anyhow!(
            "http.control_token_file: {e}"
        ))),
        Err(e) => Err(Fatal::Config(e.to_string())),
    }
}

fn log_invalid(roster: &Roster) {
    for (id, e) in &roster.invalid {
        error!(recipe = %id, err = %e, "recipe invalid");
    }
}

/// What both modes set up before running.
struct Farm {
    cfg: Arc<Config>,
    settings: BuildSettings,
    roster: Roster,
    repo: RepoAtStart,
    book: BackoffBook,
    history: History,
    status: Arc<Status>,
    health: Arc<Health>,
    /// The control API's token, when `[http].control_token_file` is set.
    control_token: Option<ControlToken>,
    /// Held for the process's life: one farmhand per state_dir.
    state_lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes `state_dir/lock` (an exclusive `flock`), so that a second
/// farmhand on the same state_dir (a daemon, or `--once` from cron) stops
/// before it clears the staging directories of the one already running.
/// The lock goes with the process, however it ends.
fn lock_state_dir(state: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = state.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => anyhow::anyhow!(
            "state_dir {} is in use by another farmhand (lock {} is held); stop it first",
            state.display(),
            path.display()
        ),
        e => anyhow::anyhow!("cannot lock {}: {e}", path.display()),
    })
}

async fn prepare(cfg: Config, mode: &str) -> Result<Farm, Fatal> {
    info!(farm_id = %cfg.manager.id, mode, farmhand_version = env!("CARGO_PKG_VERSION"), config = %cfg.path.display(), "farmhand starting");
    check_state_dir_owner(&cfg.manager.state_dir)?;
    let inherited = crate::host::fs::close_inherited_on_exec();
    if inherited > 0 {
        info!(
            count = inherited,
            "inherited file descriptors made close-on-exec"
        );
    }
    // Processes a build leaves behind outside its process group come back
    // here, to be killed when the build ends.
    if !crate::build::runner::become_subreaper() {
        warn!("cannot become a child subreaper; processes that builds leave behind outside their process group will outlive them");
    }
    crate::git::helper::set_poll_helpers(cfg.poll.concurrency);
    let roster = recipe::load_roster(&cfg.manager.recipes_dir, cfg.poll.default_interval)
        .map_err(|e| Fatal::Config(e.to_string()))?;
    let problems = roster_problems(&cfg, &roster);
    if let Some(p) = problems.first() {
        return Err(Fatal::Config(p.clone()));
    }
    let control_token = control_token(&cfg)?;
    info!(count = roster.recipes.len(), invalid = roster.invalid.len(), dir = %cfg.manager.recipes_dir.display(), "recipe roster loaded");
    log_invalid(&roster);

    let state = cfg.manager.state_dir.clone();
    for d in [state.clone(), state.join("logs"), state.join("git")] {
        std::fs::create_dir_all(&d).with_context(|| {
            format!(
                "state_dir {}: cannot create {}",
                state.display(),
                d.display()
            )
        })?;
    }
    tempfile::tempfile_in(&state)
        .with_context(|| format!("state_dir {} is not writable", state.display()))?;
    let state_lock = lock_state_dir(&state)?;
    // Nothing uses the git caches yet: locks in them are left from a crash.
    for lock in crate::git::libgit::clear_stale_locks(&state.join("git")) {
        warn!(file = %lock.display(), "removed stale git lock file");
    }
    for d in worker::ephemeral_dirs(&cfg) {
        if d.exists() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                warn!(dir = %d.display(), err = %e, "clear staging dir failed");
            }
        }
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }

    let mut settings = worker::build_settings(&cfg);
    if cfg.build.backend == BuildBackend::Builtin {
        settings.sandbox = choose_sandbox(&cfg).await?;
    }
    let repo = if cfg.build.backend == BuildBackend::Peipkg {
        // A missing tool is a configuration error: restarting cannot fix it.
        let tools = PeipkgTools::resolve(&cfg)
            .map_err(|e| Fatal::Config(format!("{}: {e}", cfg.path.display())))?;
        let repo_dir = cfg.repo_dir();
        let (name, desc) = (cfg.repo.name.clone(), cfg.repo.description.clone());
        let t = tools.clone();
        tokio::task::spawn_blocking(move || {
            crate::publish::peipkg::init_repo(&t, &repo_dir, &name, &desc)
        })
        .await
        .context("repository task failed")?
        .map_err(|e| Fatal::Runtime(anyhow::anyhow!(e)))?;
        let published =
            crate::publish::peipkg::published(&cfg.repo_dir(), &roster).unwrap_or_else(|e| {
                error!(err = %e, "dedup check failed");
                Default::default()
            });
        settings.peipkg = Some(tools);
        RepoAtStart::Peipkg(published)
    } else {
        let signer = match &cfg.signing_key_file {
            Some(p) => Some(
                crate::host::keys::load_signing_key(p)
                    .with_context(|| "signing.key_file is unusable".to_string())?,
            ),
            None => None,
        };
        let rc = RepoConfig {
            dir: cfg.repo_dir(),
            name: cfg.repo.name.clone(),
            description: cfg.repo.description.clone(),
            farm_id: cfg.manager.id.clone(),
        };
        let (c, k) = (rc.clone(), signer.clone());
        let opened = tokio::task::spawn_blocking(move || Repo::open(c, k))
            .await
            .context("repository task failed")?;
        match opened {
            Ok(repo) => RepoAtStart::Open(repo),
            // The daemon keeps serving what is valid and builds nothing
            // until the repository is repaired and it is reloaded; a
            // one-shot run has nothing to serve and stops.
            Err(e) if mode == "daemon" && !matches!(e, RepoError::ArchiveMissing { .. }) => {
                let error = e.to_string();
                error!(err = %error, "repository unusable; builds are held until it is repaired and the daemon reloaded");
                RepoAtStart::Held(worker::HeldRepo {
                    error,
                    config: rc,
                    signer,
                })
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("cannot open the repository")
                    .into())
            }
        }
    };

    let (book, book_err) = BackoffBook::load(&state.join("state.json"), cfg.backoff.clone());
    if let Some(e) = book_err {
        error!(err = %e, "backoff book unreadable");
    }
    let status = Arc::new(Status::with_events(
        &cfg.manager.id,
        Arc::new(EventBus::new(cfg.http.max_event_clients)),
    ));
    status.set_per_recipe_metrics(cfg.http.per_recipe_metrics);
    status.set_control_api(cfg.http.control_token_file.is_some());
    let history = open_history(&cfg, &settings, &status).await?;
    status.set_sandbox(if settings.sandbox.is_some() {
        "bwrap"
    } else {
        "none"
    });
    status.set_roster(roster.ids(), roster.invalid.clone());
    Ok(Farm {
        cfg: Arc::new(cfg),
        settings,
        roster,
        repo,
        book,
        history,
        status,
        health: Arc::new(Health::default()),
        control_token,
        state_lock,
    })
}

/// Reads the build history (`state_dir/history`) and goes over the build
/// logs (compressing those a crash left plain, removing those older than
/// `[build].keep_logs_for`), on a blocking thread; hands the finished
/// builds to the status store, each with its log if it is still there.
async fn open_history(
    cfg: &Config,
    settings: &BuildSettings,
    status: &Status,
) -> Result<History, Fatal> {
    let dir = cfg.manager.state_dir.join("history");
    let keep = cfg.history.keep;
    let settings = settings.clone();
    let d = dir.clone();
    let (opened, swept) = tokio::task::spawn_blocking(move || {
        let opened = History::open(&d, keep);
        let swept = crate::build::runner::sweep_logs(&settings, None, std::time::SystemTime::now());
        (opened, swept)
    })
    .await
    .context("history task failed")?;
    let (history, mut loaded) =
        opened.with_context(|| format!("cannot open the build history {}", dir.display()))?;
    if loaded.interrupted > 0 {
        warn!(
            count = loaded.interrupted,
            "builds the daemon stopped in the middle of are recorded as cancelled"
        );
    }
    if swept.compressed > 0 {
        info!(
            count = swept.compressed,
            "build logs left uncompressed by the last run compressed"
        );
    }
    for r in &mut loaded.records {
        let present = r.log.is_some_and(|attempt| {
            swept.present.contains(&crate::build::runner::LogId {
                recipe: r.recipe.clone(),
                version: r.version.clone(),
                attempt,
            })
        });
        if !present {
            r.log = None;
        }
    }
    info!(
        builds = loaded.records.len(),
        next_build_id = history.next_id(),
        skipped = loaded.skipped,
        "build history loaded"
    );
    status.load_history(loaded.records, keep, cfg.manager.state_dir.join("logs"));
    Ok(history)
}

/// The sandbox builds run in, as `[build].sandbox` asks: bubblewrap when
/// it works here (`auto`), bubblewrap or nothing (`bwrap`: start fails
/// naming the cause), or none. The config directory and every key and
/// secret file are hidden from builds.
async fn choose_sandbox(cfg: &Config) -> Result<Option<Sandbox>, Fatal> {
    if cfg.build.sandbox == SandboxMode::None {
        warn!("build sandbox off (build.sandbox = \"none\"): build scripts can read and write whatever the daemon can, its keys and repository included");
        return Ok(None);
    }
    let config_dir = cfg
        .path
        .parent()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf()))
        .unwrap_or_default();
    let notify_secrets = cfg.notify.iter().filter_map(|n| match &n.target {
        NotifyTarget::Url { secret_file, .. } => Some(secret_file),
        NotifyTarget::Command { .. } => None,
    });
    let secrets: Vec<PathBuf> = [
        &cfg.signing_key_file,
        &cfg.http.webhook_secret_file,
        &cfg.http.control_token_file,
    ]
    .into_iter()
    .flatten()
    .chain(notify_secrets)
    .cloned()
    .collect();
    let network = cfg.build.network;
    let probed =
        tokio::task::spawn_blocking(move || Sandbox::probe(network, &config_dir, &secrets))
            .await
            .context("sandbox trial task failed")?;
    match (probed, cfg.build.sandbox) {
        (Ok(s), _) => {
            info!(network, "build sandbox: bubblewrap");
            Ok(Some(s))
        }
        (Err(e), _) if !cfg.build.network => Err(Fatal::Runtime(anyhow::anyhow!(
            "build.network = false needs the build sandbox, and bubblewrap does not work here: {e}"
        ))),
        (Err(e), SandboxMode::Bwrap) => Err(Fatal::Runtime(anyhow::anyhow!(
            "build.sandbox = \"bwrap\" but bubblewrap does not work here: {e}"
        ))),
        (Err(e), _) => {
            warn!(err = %e, "build sandbox unavailable (build.sandbox = \"auto\"): build scripts run unsandboxed");
            Ok(None)
        }
    }
}

/// How long `--once` waits, after its builds, for the notifications they
/// raised (each is bounded: 4 attempts of 10 s and 7 s of waits).
const ONCE_NOTIFY_GRACE: Duration = Duration::from_secs(60);
/// How long a stopping daemon waits for queued notifications.
const SHUTDOWN_NOTIFY_GRACE: Duration = Duration::from_secs(5);

/// Starts the `[[notify]]` delivery tasks, counting outcomes in `status`.
fn start_notifier(cfg: &Config, status: &Arc<Status>) -> Result<Notifier, Fatal> {
    let status = status.clone();
    Notifier::start(cfg, Arc::new(move |r| status.notification(r)))
        .map_err(|e| Fatal::Runtime(anyhow::anyhow!(e)))
}

/// `--once`: poll every recipe, build and publish what is new, exit.
pub async fn run_once(cfg: Config) -> Result<(), Fatal> {
    let farm = prepare(cfg, "once").await?;
    let _state_lock = farm.state_lock;
    let notifier = start_notifier(&farm.cfg, &farm.status)?;
    let cancel = CancellationToken::new();
    spawn_signal_stop(cancel.clone());
    let (roster_tx, roster_rx) = watch::channel(Arc::new(farm.roster));
    let (wtx, wrx) = mpsc::channel(1024);
    let w = Worker::new(WorkerSetup {
        cfg: farm.cfg.clone(),
        settings: farm.settings,
        repo: farm.repo,
        book: farm.book,
        history: farm.history,
        status: farm.status.clone(),
        health: farm.health.clone(),
        roster: roster_rx,
        polls: None,
        shutdown: cancel.clone(),
        notify: notifier.sender(),
    });
    let paused = w.paused().borrow().clone();
    let worker_task = tokio::spawn(w.run(wrx, None));
    let roster = roster_tx.borrow().clone();
    let observer: Arc<dyn PollObserver> = farm.status.clone();
    poll::poll_all_once(
        &roster,
        &paused,
        farm.cfg.poll.concurrency,
        farm.cfg.poll.timeout,
        &wtx,
        &observer,
        &cancel,
    )
    .await;
    // The worker drains the queue and stops once no sender is left.
    drop(wtx);
    let worker_result = worker_task.await;
    notifier.close(ONCE_NOTIFY_GRACE).await;
    crate::git::helper::close_helpers();
    if let Err(e) = worker_result {
        error!(err = %e, "manager.Run returned non-cancel error");
        return Err(Fatal::Runtime(anyhow::anyhow!("build worker failed: {e}")));
    }
    let j: serde_json::Value = serde_json::from_slice(&farm.status.json()).unwrap_or_default();
    info!(
        builds_attempted = %j["builds_attempted"],
        builds_succeeded = %j["builds_succeeded"],
        builds_failed = %j["builds_failed"],
        "sweep complete"
    );
    Ok(())
}

fn spawn_signal_stop(cancel: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
        cancel.cancel();
    });
}

/// The daemon: runs until SIGTERM/SIGINT.
pub async fn run_daemon(cfg: Config) -> Result<(), Fatal> {
    run_daemon_with(cfg, |_| {}).await
}

/// The daemon, telling `on_listening` the address the HTTP server is bound
/// to (`None` without one) before it starts serving.
pub async fn run_daemon_with(
    cfg: Config,
    on_listening: impl FnOnce(Option<std::net::SocketAddr>),
) -> Result<(), Fatal> {
    // Signal handlers first, so a SIGHUP during start-up is not fatal.
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;

    let farm = prepare(cfg, "daemon").await?;
    let _state_lock = farm.state_lock;
    let cfg = farm.cfg.clone();
    let notifier = start_notifier(&cfg, &farm.status)?;
    let secret: Secret = Arc::new(RwLock::new(None));
    if let Some(f) = &cfg.http.webhook_secret_file {
        match read_secret(f) {
            Ok(s) => {
                *secret
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s)
            }
            Err(e) if farm.roster.any_webhook() => return Err(Fatal::Runtime(anyhow::anyhow!(e))),
            Err(e) => warn!(err = %e, "webhook secret unusable; every webhook will be refused"),
        }
    }
    // A socket passed by systemd (farmhand.socket) replaces [http].addr.
    let inherited =
        systemd::inherited_listener().map_err(|e| Fatal::Runtime(anyhow::anyhow!(e)))?;
    let listener = match (inherited, &cfg.http.addr) {
        (Some(l), _) => Some(l),
        (None, Some(a)) => Some(http::bind(a).await.map_err(|e| Fatal::Runtime(e.into()))?),
        (None, None) => None,
    };
    on_listening(listener.as_ref().and_then(|l| l.local_addr().ok()));

    let cancel = CancellationToken::new();
    let (roster_tx, roster_rx) = watch::channel(Arc::new(farm.roster));
    let (wtx, wrx) = mpsc::channel(1024);
    let (ptx, prx) = mpsc::channel(1024);
    let (ctx, crx) = mpsc::channel(64);
    let token: TokenSlot = Arc::new(RwLock::new(farm.control_token));
    let status = farm.status.clone();
    let health = farm.health.clone();
    health.beat(Loop::Scheduler);
    health.beat(Loop::Worker);

    let w = Worker::new(WorkerSetup {
        cfg: cfg.clone(),
        settings: farm.settings,
        repo: farm.repo,
        book: farm.book,
        history: farm.history,
        status: status.clone(),
        health: health.clone(),
        roster: roster_rx.clone(),
        polls: Some(ptx.clone()),
        shutdown: cancel.clone(),
        notify: notifier.sender(),
    });
    let paused = w.paused();
    let worker_task = tokio::spawn(w.run(wrx, Some(crx)));
    let sched = Scheduler {
        roster: roster_rx.clone(),
        requests: prx,
        paused: paused.clone(),
        worker: wtx.clone(),
        status: status.clone(),
        health: health.clone(),
        concurrency: cfg.poll.concurrency,
        timeout: cfg.poll.timeout,
        cancel: cancel.clone(),
    };
    let sched_task = tokio::spawn(sched.run());
    let http_task = listener.map(|l| {
        let st = Arc::new(
            HttpState::new(
                status.clone(),
                health.clone(),
                roster_rx.clone(),
                secret.clone(),
                ptx.clone(),
                cancel.clone(),
            )
            .with_control(
                ControlApi::new(token.clone(), cfg.path.clone(), ctx.clone()),
                paused.clone(),
            ),
        );
        tokio::spawn(http::serve(l, st))
    });

    // Start-up (the repository and the roster read whole) freed a lot.
    crate::host::memory::release();
    // systemd: ready once the roster is loaded and the listener bound.
    let mut summary = status.summary();
    systemd::ready(&summary.borrow_and_update().clone());
    let watchdog = systemd::watchdog_interval()
        .map(|iv| tokio::spawn(systemd::watchdog(iv, health.clone(), cancel.clone())));

    loop {
        tokio::select! {
            _ = hup.recv() => {
                systemd::reloading();
                reload(&cfg, &roster_tx, &secret, &token, &status).await;
                systemd::ready(&summary.borrow_and_update().clone());
            }
            _ = term.recv() => { info!(signal = "SIGTERM", "shutting down"); break; }
            _ = int.recv() => { info!(signal = "SIGINT", "shutting down"); break; }
            r = summary.changed() => {
                if r.is_ok() { systemd::status(&summary.borrow_and_update().clone()); }
            }
        }
    }
    systemd::stopping();
    cancel.cancel();
    let mut failed = false;
    if let Err(e) = worker_task.await {
        error!(err = %e, "manager.Run returned non-cancel error");
        failed = true;
    }
    notifier.close(SHUTDOWN_NOTIFY_GRACE).await;
    let _ = sched_task.await;
    if let Some(h) = http_task {
        let _ = h.await;
    }
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    crate::git::helper::close_helpers();
    if failed {
        return Err(Fatal::Runtime(anyhow::anyhow!("the build worker failed")));
    }
    info!("stopped");
    Ok(())
}

/// Re-reads recipes_dir, the webhook secret and the control token;
/// publishes the new roster.
async fn reload(
    cfg: &Config,
    roster_tx: &watch::Sender<Arc<Roster>>,
    secret: &Secret,
    token: &TokenSlot,
    status: &Status,
) {
    let dir = cfg.manager.recipes_dir.clone();
    let interval = cfg.poll.default_interval;
    let loaded = tokio::task::spawn_blocking(move || recipe::load_roster(&dir, interval)).await;
    let roster = match loaded {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            error!(err = %e, "recipes reload failed; keeping the current roster");
            return;
        }
        Err(e) => {
            error!(err = %e, "recipes reload failed; keeping the current roster");
            return;
        }
    };
    for p in roster_problems(cfg, &roster) {
        error!(err = %p, "reload problem");
    }
    log_invalid(&roster);
    if let Some(f) = &cfg.http.webhook_secret_file {
        match read_secret(f) {
            Ok(s) => {
                *secret
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s)
            }
            Err(e) => error!(err = %e, "webhook secret not reloaded; keeping the current one"),
        }
    }
    match control_token(cfg) {
        Ok(Some(t)) => {
            *token
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(t)
        }
        Ok(None) => {}
        Err(e) => error!(err = %e, "control token not reloaded; keeping the current one"),
    }
    status.set_roster(roster.ids(), roster.invalid.clone());
    info!(count = roster.recipes.len(), invalid = roster.invalid.len(), dir = %cfg.manager.recipes_dir.display(), "recipes reloaded");
    drop(roster_tx.send_replace(Arc::new(roster)));
    crate::host::memory::release();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_errors_name_each_cause_once() {
        let io = std::io::Error::other("No space left on device");
        let repo = crate::publish::repo::RepoError::Io {
            path: "/s/repo/index/archive.json".into(),
            source: io,
        };
        let e = Fatal::Runtime(anyhow::Error::new(repo).context("cannot open the repository"));
        assert_eq!(
            e.to_string(),
            "cannot open the repository: /s/repo/index/archive.json: No space left on device"
        );
        let e = Fatal::Runtime(
            anyhow::anyhow!("inner cause")
                .context("middle")
                .context("outer"),
        );
        assert_eq!(e.to_string(), "outer: middle: inner cause");
    }
}
