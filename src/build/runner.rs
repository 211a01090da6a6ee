//! Runs one build: fetch the tag, run the recipe's build script in its own
//! process group with a clean environment and a time limit, and package
//! DESTDIR. Everything the build does goes to its log file,
//! `state_dir/logs/<recipe>/<version>.<n>.log`, compressed to
//! `<version>.<n>.log.zst` once the build has finished ([`finish_log`]).
//!
//! Publishing is not done here: the caller owns the repository.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::build::package::{self, Artifact};
use crate::build::sandbox::{BuildPaths, Sandbox};
use crate::git::helper;
use crate::git::libgit as git;
use crate::model::build::{Job, Phase, StopReason};

/// Settings shared by every build.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// `state_dir`.
    pub state_dir: PathBuf,
    /// `[build].timeout`.
    pub timeout: Duration,
    /// `[build].keep_logs`.
    pub keep_logs: usize,
    /// `[build].keep_logs_for`.
    pub keep_logs_for: Duration,
    /// `[build].runner`.
    pub runner: Vec<String>,
    /// Time limit of the fetch.
    pub fetch_timeout: Duration,
    /// `PATH` given to build scripts.
    pub path_env: String,
    /// Set for the `peipkg` backend: peipkg-build replaces the build
    /// script and packaging.
    pub peipkg: Option<crate::build::peipkg::PeipkgTools>,
    /// The bubblewrap sandbox build scripts run in; `None` runs them
    /// unconfined (`[build].sandbox = "none"`, or no working bubblewrap).
    pub sandbox: Option<Sandbox>,
}

impl BuildSettings {
    /// The object cache of one upstream.
    pub fn git_cache(&self, url: &str) -> PathBuf {
        self.state_dir.join("git").join(git::cache_name(url))
    }
    /// The log directory of one recipe.
    pub fn log_dir(&self, recipe: &str) -> PathBuf {
        self.state_dir.join("logs").join(recipe)
    }
}

/// A successful build, staged and ready to publish.
#[derive(Debug)]
pub struct Built {
    /// The packages, in `stage_dir`.
    pub artifacts: Vec<Artifact>,
    /// The commit time (SOURCE_DATE_EPOCH).
    pub commit_time: i64,
    /// The per-build stage directory to remove after publishing.
    pub stage_dir: PathBuf,
    /// The `.peipkg` files peipkg-build produced (`peipkg` backend).
    pub peipkg_outputs: Vec<PathBuf>,
}

/// A failed or cancelled build.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The phase that failed.
    pub phase: Phase,
    /// What went wrong.
    pub error: String,
    /// True when the build was stopped (by shutdown or an operator, see
    /// [`BuildStop`]) rather than failing; `error` then says which.
    pub cancelled: bool,
}

/// Stops one build early and says why: shutdown (after
/// `shutdown_grace`) or an operator's cancel. The shutdown token reaches
/// every build through it; an operator's cancel reaches only this one.
///
/// A build that [`run`] finished is sealed: it goes on to be published,
/// and an operator can no longer stop it.
#[derive(Debug, Clone)]
pub struct BuildStop {
    token: CancellationToken,
    state: Arc<OnceLock<StopState>>,
}

#[derive(Debug, Clone, Copy)]
enum StopState {
    Stopped(StopReason),
    Sealed,
}

impl BuildStop {
    /// A stop for one build that also fires when `shutdown` does.
    pub fn new(shutdown: &CancellationToken) -> BuildStop {
        BuildStop {
            token: shutdown.child_token(),
            state: Arc::new(OnceLock::new()),
        }
    }

    /// Stops the build for `reason` (the first reason given stays). False
    /// when it is too late: the build is built and being published.
    pub fn stop(&self, reason: StopReason) -> bool {
        let _ = self.state.set(StopState::Stopped(reason));
        match self.state.get() {
            Some(StopState::Stopped(_)) => {
                self.token.cancel();
                true
            }
            _ => false,
        }
    }

    /// Seals a finished build against stopping; false if it was stopped
    /// first.
    fn seal(&self) -> bool {
        self.state.set(StopState::Sealed).is_ok() && !self.token.is_cancelled()
    }

    /// Fires when the build is to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Has the build been told to stop?
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why it was stopped (shutdown unless an operator said otherwise).
    pub fn reason(&self) -> StopReason {
        match self.state.get() {
            Some(StopState::Stopped(r)) => *r,
            _ => StopReason::Shutdown,
        }
    }

    /// The [`Failure`] of a build stopped in `phase`.
    fn failure(&self, phase: Phase) -> Failure {
        Failure {
            phase,
            error: self.reason().as_str().to_string(),
            cancelled: true,
        }
    }
}

impl Failure {
    fn new(phase: Phase, error: impl fmt::Display) -> Failure {
        Failure {
            phase,
            error: error.to_string(),
            cancelled: false,
        }
    }
}

/// The directories of one build, under `state_dir/sources` and
/// `state_dir/stage`.
#[derive(Debug, Clone)]
struct BuildDirs {
    /// The exported tag (`SOURCE_DIR`).
    source: PathBuf,
    /// The per-build stage: `destdir`, `home` and `out` below it.
    stage: PathBuf,
    /// `DESTDIR`, fresh and empty.
    destdir: PathBuf,
    /// `HOME`, a scratch directory.
    home: PathBuf,
    /// The packages made from DESTDIR.
    out: PathBuf,
}

impl BuildDirs {
    fn new(settings: &BuildSettings, job: &Job) -> BuildDirs {
        let key = format!("{}-{}-{}", job.recipe.id, job.version, job.id);
        let stage = settings.state_dir.join("stage").join(&key);
        BuildDirs {
            source: settings.state_dir.join("sources").join(&key),
            destdir: stage.join("destdir"),
            home: stage.join("home"),
            out: stage.join("out"),
            stage,
        }
    }
}

/// Removes a directory tree off the runtime's worker threads (a large
/// tree takes seconds); a missing tree is fine.
pub async fn remove_tree(dir: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), err = %e, "clear staging dir failed");
        }
        _ => {}
    })
    .await;
}

/// Reports progress to whoever watches the build.
pub trait Progress: Send + Sync {
    /// The build entered `phase`.
    fn phase(&self, phase: Phase);
}

/// The TERM → KILL grace period when a build's process group is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Most bytes of build output kept in one build log. Output beyond it is
/// still read (so the build never blocks on a full pipe) but discarded, and
/// the log says so: a runaway build cannot fill the disk the repository
/// lives on.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// Once a build's process group is gone, how long its output pipe is still
/// drained when a process that left the group (`setsid`) holds it open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The name of attempt `attempt` of `version`'s log: `<version>.<n>.log`,
/// or `<version>.<n>.log.zst` once compressed.
pub fn log_name(version: &str, attempt: u32, compressed: bool) -> String {
    let zst = if compressed { ".zst" } else { "" };
    format!("{version}.{attempt}.log{zst}")
}

/// `(version, attempt, compressed)` of a log file name, or `None` when
/// the name is not one [`log_name`] makes.
pub fn parse_log_name(name: &str) -> Option<(&str, u32, bool)> {
    let (rest, compressed) = match name.strip_suffix(".log.zst") {
        Some(r) => (r, true),
        None => (name.strip_suffix(".log")?, false),
    };
    let (version, n) = rest.rsplit_once('.')?;
    let attempt = n.parse::<u32>().ok().filter(|n| *n > 0)?;
    (!version.is_empty()).then_some((version, attempt, compressed))
}

/// Picks the log file for a new attempt: `<version>.<n>.log` with `n` one
/// more than the highest existing attempt of that version (plain or
/// compressed).
pub fn next_log_path(
    settings: &BuildSettings,
    recipe: &str,
    version: &str,
) -> std::io::Result<PathBuf> {
    let dir = settings.log_dir(recipe);
    std::fs::create_dir_all(&dir)?;
    let mut n = 0u32;
    for e in std::fs::read_dir(&dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some((v, k, _)) = parse_log_name(&name) {
            if v == version {
                n = n.max(k);
            }
        }
    }
    Ok(dir.join(log_name(version, n.saturating_add(1), false)))
}

/// The attempt number of a log path made by [`next_log_path`].
pub fn log_attempt(log: &Path) -> Option<u32> {
    parse_log_name(log.file_name()?.to_str()?).map(|(_, n, _)| n)
}

/// Compresses a finished build's log: `<version>.<n>.log` becomes
/// `<version>.<n>.log.zst` (zstd, the content size in the frame header),
/// written to a temporary file, fsynced and renamed into place before the
/// plain log is removed, so a crash leaves one or the other whole.
/// Returns the compressed file; a missing log is `NotFound`.
pub fn finish_log(log: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    // Neither a link nor a FIFO put in its place (by a build that runs
    // unsandboxed) may stop or redirect the daemon: no link is followed,
    // no open waits for a writer, and only a regular file is read.
    let plain = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(log)?;
    let meta = plain.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a regular file", log.display()),
        ));
    }
    let size = meta.len();
    let dir = log.parent().unwrap_or_else(|| Path::new("."));
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".zst");
    let target = dir.join(name);
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    let mut enc = zstd::stream::write::Encoder::new(tmp, 3)?;
    enc.set_pledged_src_size(Some(size))?;
    enc.include_contentsize(true)?;
    std::io::copy(&mut std::io::Read::take(plain, size), &mut enc)?;
    let tmp = enc.finish()?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    crate::host::fs::sync_dir(dir)?;
    std::fs::remove_file(log)?;
    Ok(target)
}

/// A build log [`prune_logs`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogId {
    /// The recipe.
    pub recipe: String,
    /// The version.
    pub version: String,
    /// The attempt.
    pub attempt: u32,
}

/// What [`prune_logs`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Logs older than `[build].keep_logs_for` (by modification time).
    Age,
    /// Those, and the oldest beyond `[build].keep_logs` (after a
    /// successful build, so that a run of failures never pushes out the
    /// logs of the last good builds).
    CountAndAge,
}

/// Removes a recipe's logs as `how` says, never `current` (the running
/// build's). Returns what it removed.
pub fn prune_logs(
    settings: &BuildSettings,
    recipe: &str,
    current: Option<&Path>,
    how: Prune,
    now: std::time::SystemTime,
) -> Vec<LogId> {
    let dir = settings.log_dir(recipe);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut logs: Vec<(std::time::SystemTime, PathBuf, String, u32)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let (version, attempt, _) = parse_log_name(&name)?;
            let (version, attempt) = (version.to_string(), attempt);
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, e.path(), version, attempt))
        })
        .filter(|(_, p, _, _)| Some(p.as_path()) != current)
        .collect();
    logs.sort();
    // The running build's log counts against keep_logs.
    let keep = settings
        .keep_logs
        .saturating_sub(usize::from(current.is_some()));
    let excess = match how {
        Prune::Age => 0,
        Prune::CountAndAge => logs.len().saturating_sub(keep),
    };
    let mut removed = Vec::new();
    for (i, (modified, p, version, attempt)) in logs.into_iter().enumerate() {
        let too_old = now
            .duration_since(modified)
            .is_ok_and(|age| age > settings.keep_logs_for);
        if (i < excess || too_old) && std::fs::remove_file(&p).is_ok() {
            removed.push(LogId {
                recipe: recipe.to_string(),
                version,
                attempt,
            });
        }
    }
    removed
}

/// What [`sweep_logs`] found and did.
#[derive(Debug, Default)]
pub struct Swept {
    /// The logs there are now.
    pub present: std::collections::HashSet<LogId>,
    /// The logs it removed (too old).
    pub removed: Vec<LogId>,
    /// Plain logs of finished builds it compressed (left by a crash, or
    /// by a farmhand that did not compress logs).
    pub compressed: usize,
}

/// Goes over every recipe's logs: compresses plain logs other than
/// `current` (the running build's), removes those older than
/// `[build].keep_logs_for`, and lists what is left.
pub fn sweep_logs(
    settings: &BuildSettings,
    current: Option<&Path>,
    now: std::time::SystemTime,
) -> Swept {
    let mut swept = Swept::default();
    let Ok(rd) = std::fs::read_dir(settings.state_dir.join("logs")) else {
        return swept;
    };
    for e in rd.filter_map(Result::ok) {
        let Some(recipe) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !crate::model::name::is_safe_component(&recipe)
            || !e.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let dir = settings.log_dir(&recipe);
        let names = || -> Vec<String> {
            std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().to_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        for name in names() {
            let path = dir.join(&name);
            if matches!(parse_log_name(&name), Some((_, _, false)))
                && Some(path.as_path()) != current
            {
                match finish_log(&path) {
                    Ok(_) => swept.compressed += 1,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), err = %e, "cannot compress build log")
                    }
                }
            }
        }
        swept
            .removed
            .extend(prune_logs(settings, &recipe, current, Prune::Age, now));
        for name in names() {
            if let Some((version, attempt, _)) = parse_log_name(&name) {
                swept.present.insert(LogId {
                    recipe: recipe.clone(),
                    version: version.to_string(),
                    attempt,
                });
            }
        }
    }
    swept
}

/// Opens a build log for appending, never through a symlink: a log that
/// was replaced by a link is not written through.
fn open_log(log: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(log)
}

fn log_line(log: &Path, line: &str) {
    if let Ok(mut f) = open_log(log) {
        let _ = writeln!(f, "farmhand: {line}");
    }
}

/// Runs fetch, build script and packaging for `job`. `kill` stops the
/// build (shutdown after the grace period, or an operator's cancel): the
/// process group gets TERM, then KILL after [`KILL_GRACE`], and the result
/// is a cancelled [`Failure`] whose error is the reason.
pub async fn run(
    job: &Job,
    settings: &BuildSettings,
    log: &Path,
    progress: &dyn Progress,
    kill: &BuildStop,
) -> Result<Built, Failure> {
    let recipe = &job.recipe;
    let Some(upstream) = recipe.upstream.as_ref() else {
        return Err(Failure::new(Phase::Fetching, "recipe has no [upstream]"));
    };
    let dirs = BuildDirs::new(settings, job);
    let (source_dir, stage_dir) = (dirs.source.clone(), dirs.stage.clone());
    let result: Result<Built, Failure> = async {
        log_line(
            log,
            &format!(
                "building {} {} from tag {} of {}",
                recipe.id, job.version, job.tag, upstream.git
            ),
        );
        // Fetch.
        progress.phase(Phase::Fetching);
        remove_tree(source_dir.clone()).await;
        let fetched = helper::fetch_tag(
            &settings.git_cache(&upstream.git),
            &upstream.git,
            &job.tag,
            &source_dir,
            upstream.submodules,
            settings.fetch_timeout,
            kill.token(),
        )
        .await
        .map_err(|e| {
            if kill.is_stopped() {
                kill.failure(Phase::Fetching)
            } else if filesystem_full(&settings.state_dir) {
                Failure::new(
                    Phase::Fetching,
                    format!(
                        "{e}: {}",
                        std::io::Error::from_raw_os_error(nix::libc::ENOSPC)
                    ),
                )
            } else {
                Failure::new(Phase::Fetching, e)
            }
        })?;
        log_line(
            log,
            &format!(
                "fetched commit {} (commit time {}), {} objects received",
                fetched.commit, fetched.commit_time, fetched.received_objects
            ),
        );

        // Build.
        progress.phase(Phase::Building);
        let (destdir, out) = (&dirs.destdir, &dirs.out);
        for d in [&dirs.destdir, &dirs.home, &dirs.out] {
            std::fs::create_dir_all(d).map_err(|e| {
                Failure::new(
                    Phase::Building,
                    format!("cannot create {}: {e}", d.display()),
                )
            })?;
        }
        if let Some(tools) = &settings.peipkg {
            let argv = tools.build_argv(job, &source_dir, out, fetched.commit_time);
            log_line(log, &format!("running {}", argv.join(" ")));
            let env = base_env(settings, job, &dirs, fetched.commit_time);
            run_process(&argv, &source_dir, env, settings.timeout, log, kill).await?;
            let outputs = crate::build::peipkg::collect_outputs(out)
                .map_err(|e| Failure::new(Phase::Building, e))?;
            return Ok(Built {
                artifacts: Vec::new(),
                commit_time: fetched.commit_time,
                stage_dir: stage_dir.clone(),
                peipkg_outputs: outputs,
            });
        }
        run_script(job, settings, &dirs, fetched.commit_time, log, kill).await?;

        // Package.
        progress.phase(Phase::Packaging);
        let specs = recipe.packages.clone();
        let (id, version, mtime) = (
            recipe.id.clone(),
            job.version.clone(),
            fetched.commit_time.max(0) as u64,
        );
        let (dd, od) = (destdir.clone(), out.clone());
        let artifacts = tokio::task::spawn_blocking(move || {
            package::package_destdir(
                &dd,
                &specs,
                &id,
                std::env::consts::ARCH,
                &version,
                mtime,
                &od,
            )
        })
        .await
        .map_err(|e| Failure::new(Phase::Packaging, e))?
        .map_err(|e| Failure::new(Phase::Packaging, e))?;
        for a in &artifacts {
            log_line(
                log,
                &format!(
                    "packaged {} ({} bytes, sha256 {})",
                    a.file_name, a.size_compressed, a.sha256
                ),
            );
        }
        Ok(Built {
            artifacts,
            commit_time: fetched.commit_time,
            stage_dir: stage_dir.clone(),
            peipkg_outputs: Vec::new(),
        })
    }
    .await;
    // Packaging cannot be interrupted; a stop that came meanwhile still
    // keeps the build from being published. Past this point it cannot.
    let result = result.and_then(|built| {
        if kill.seal() {
            Ok(built)
        } else {
            Err(kill.failure(Phase::Packaging))
        }
    });
    remove_tree(source_dir).await;
    match &result {
        Ok(_) => {
            // DESTDIR and HOME are no longer needed; `out` is published next.
            remove_tree(dirs.destdir).await;
            remove_tree(dirs.home).await;
        }
        Err(f) if f.cancelled => {
            log_line(
                log,
                &format!("build stopped while {}: {}", f.phase, f.error),
            );
            remove_tree(stage_dir).await;
        }
        Err(f) => {
            log_line(log, &format!("{} failed: {}", f.phase, f.error));
            remove_tree(stage_dir).await;
        }
    }
    result
}

/// The clean environment every build gets.
fn base_env(
    settings: &BuildSettings,
    job: &Job,
    dirs: &BuildDirs,
    commit_time: i64,
) -> Vec<(String, String)> {
    let p = |p: &Path| p.display().to_string();
    vec![
        ("PATH".into(), settings.path_env.clone()),
        ("HOME".into(), p(&dirs.home)),
        ("LC_ALL".into(), "C".into()),
        ("TZ".into(), "UTC".into()),
        ("SOURCE_DIR".into(), p(&dirs.source)),
        ("DESTDIR".into(), p(&dirs.destdir)),
        ("SOURCE_DATE_EPOCH".into(), commit_time.to_string()),
        ("FARMHAND_RECIPE".into(), job.recipe.id.clone()),
        ("FARMHAND_VERSION".into(), job.version.clone()),
        ("FARMHAND_TAG".into(), job.tag.clone()),
    ]
}

async fn run_script(
    job: &Job,
    settings: &BuildSettings,
    dirs: &BuildDirs,
    commit_time: i64,
    log: &Path,
    kill: &BuildStop,
) -> Result<(), Failure> {
    let fail = |m: String| Failure::new(Phase::Building, m);
    let script = job.recipe.script_path();
    let meta = std::fs::metadata(&script)
        .map_err(|e| fail(format!("build script {}: {e}", script.display())))?;
    if !meta.is_file() {
        return Err(fail(format!(
            "build script {} is not a regular file",
            script.display()
        )));
    }
    let mut argv: Vec<String> = settings.runner.clone();
    if meta.permissions().mode() & 0o111 == 0 {
        argv.push("/bin/sh".into());
    }
    argv.push(script.display().to_string());
    if let Some(sandbox) = &settings.sandbox {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let (source, destdir, home, recipe_dir) = (
            abs(&dirs.source),
            abs(&dirs.destdir),
            abs(&dirs.home),
            abs(&job.recipe.dir),
        );
        let paths = BuildPaths {
            source: &source,
            destdir: &destdir,
            home: &home,
            recipe_dir: &recipe_dir,
        };
        argv = sandbox.wrap(&paths, &argv);
    }
    let env = base_env(settings, job, dirs, commit_time);
    run_process(&argv, &dirs.source, env, settings.timeout, log, kill).await?;
    log_line(log, "build script succeeded");
    Ok(())
}

/// Runs `argv` in its own process group with exactly `env`, output to the
/// log (through a pipe, capped at [`MAX_LOG_BYTES`]), stopped (group-wide:
/// TERM, then KILL after [`KILL_GRACE`]) on timeout or `kill`. Whatever
/// the program leaves running in its group is killed when it exits.
async fn run_process(
    argv: &[String],
    cwd: &Path,
    env: Vec<(String, String)>,
    timeout: Duration,
    log: &Path,
    kill: &BuildStop,
) -> Result<(), Failure> {
    let fail = |m: String| Failure::new(Phase::Building, m);
    let logf =
        open_log(log).map_err(|e| fail(format!("cannot open build log {}: {e}", log.display())))?;
    let pipe_err = |e: nix::Error| fail(format!("cannot create the output pipe: {e}"));
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(pipe_err)?;
    let err_w = out_w
        .try_clone()
        .map_err(|e| fail(format!("cannot create the output pipe: {e}")))?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .kill_on_drop(false);
    new_session(&mut cmd);
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end go now, so the reader sees EOF
    // once the build's processes are gone.
    drop(cmd);
    let mut child = spawned.map_err(|e| fail(format!("cannot start {}: {e}", argv.join(" "))))?;
    let pgid = child.id().map(|p| p as i32);
    let mut copier = match tokio::net::unix::pipe::Receiver::from_owned_fd(out_r) {
        Ok(rx) => tokio::spawn(copy_capped(rx, logf, MAX_LOG_BYTES)),
        Err(e) => {
            if let Some(pg) = pgid {
                stop_group(pg, &mut child).await;
            }
            return Err(fail(format!("cannot read the output pipe: {e}")));
        }
    };
    let outcome = tokio::select! {
        status = child.wait() => Ok(status),
        _ = tokio::time::sleep(timeout) => Err(false),
        _ = kill.token().cancelled() => Err(true),
    };
    let what = if argv.len() > 1 && argv[0] == "/bin/sh" {
        &argv[1]
    } else {
        argv.last().unwrap_or(&argv[0])
    };
    match &outcome {
        Ok(_) => {
            if let Some(pg) = pgid {
                kill_group(pg, nix::sys::signal::Signal::SIGKILL);
            }
        }
        Err(_) => {
            if let Some(pg) = pgid {
                stop_group(pg, &mut child).await;
            }
        }
    }
    // The group is gone; so are processes that left it (setsid, double
    // fork) and were re-parented here.
    let strays = kill_strays().await;
    if strays > 0 {
        log_line(
            log,
            &format!(
                "killed {strays} process(es) the build left running outside its process group"
            ),
        );
    }
    // Whoever still holds the pipe is out of reach (not re-parented here).
    if tokio::time::timeout(DRAIN_GRACE, &mut copier)
        .await
        .is_err()
    {
        copier.abort();
        log_line(
            log,
            "output pipe still held open by a process that left the build's process group; stopped reading it",
        );
    }
    match outcome {
        Ok(status) => {
            let status = status.map_err(|e| fail(format!("waiting for {what}: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                let name = if argv.first().is_some_and(|a| a.ends_with("peipkg-build")) {
                    "peipkg-build"
                } else {
                    "build script"
                };
                let mut error = format!("{name} {}", describe_status(status));
                if filesystem_full(cwd) {
                    // The script's own "No space left on device" is in its
                    // log; say it here too, so the farm holds instead of
                    // backing the recipe off.
                    error = format!(
                        "{error}: {}",
                        std::io::Error::from_raw_os_error(nix::libc::ENOSPC)
                    );
                }
                Err(fail(error))
            }
        }
        Err(cancelled) => {
            if cancelled {
                Err(kill.failure(Phase::Building))
            } else {
                Err(fail(format!(
                    "build timed out after {} and was killed",
                    crate::model::config::format_duration(timeout)
                )))
            }
        }
    }
}

/// True when the filesystem holding `dir` has (almost) no space left.
fn filesystem_full(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|s| s.blocks_available().saturating_mul(s.fragment_size()) < 64 * 1024)
}

/// Copies the build's output into its log until `cap` bytes, then notes
/// the truncation and reads on, discarding, until EOF (so the build never
/// blocks on a full pipe).
async fn copy_capped(mut pipe: tokio::net::unix::pipe::Receiver, mut log: std::fs::File, cap: u64) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    let mut truncated = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let take = (cap.saturating_sub(written)).min(n as u64) as usize;
        if take > 0 {
            // A local file in the page cache: a short, bounded write.
            let _ = log.write_all(&buf[..take]);
            written += take as u64;
        }
        if take < n && !truncated {
            truncated = true;
            let _ = writeln!(
                log,
                "\nfarmhand: log truncated at {cap} bytes; the rest of the build's output is discarded"
            );
        }
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

/// Makes this process the reaper of its orphaned descendants (Linux
/// `PR_SET_CHILD_SUBREAPER`): a build's processes that leave its process
/// group (`setsid`, double fork) are re-parented here instead of to init,
/// so they can be killed when the build ends. False where unsupported.
pub fn become_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}

/// Children of this process that are not in its own process group: after
/// a build, only what the build left behind (farmhand's other children,
/// such as upload commands, share its group), each with whether it has
/// already exited (a zombie, waiting to be reaped).
fn stray_children() -> Vec<(i32, bool)> {
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the parenthesised command name: state, ppid, pgrp.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut f = rest.split_whitespace();
            let zombie = f.next() == Some("Z");
            let mut f = f.map(str::parse::<i32>);
            let (ppid, pgrp) = (f.next(), f.next());
            let stray = matches!(ppid, Some(Ok(p)) if p == me)
                && !matches!(pgrp, Some(Ok(g)) if g == my_group);
            stray.then_some((pid, zombie))
        })
        .collect()
}

/// SIGKILLs and reaps every stray child (see [`stray_children`]), in
/// rounds, as killing one re-parents its own children here. Returns how
/// many were killed. Bounded: a process that cannot die (uninterruptible
/// sleep) is left after a few rounds.
async fn kill_strays() -> usize {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let mut killed = std::collections::HashSet::new();
    for round in 0..20 {
        let mut strays = tokio::task::spawn_blocking(stray_children)
            .await
            .unwrap_or_default();
        if round == 0 && strays.iter().any(|&(_, zombie)| !zombie) {
            // A sandboxed build's namespace init outlives bubblewrap by a
            // moment and then dies on its own (--die-with-parent): give
            // what is already exiting a moment before counting it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            strays = tokio::task::spawn_blocking(stray_children)
                .await
                .unwrap_or_default();
        }
        if strays.is_empty() {
            break;
        }
        for &(pid, zombie) in &strays {
            if !zombie {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed.insert(pid);
            }
        }
        if strays.iter().any(|&(_, zombie)| !zombie) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for &(pid, _) in &strays {
            let _ = waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
    killed.len()
}

/// Starts the program as the leader of a new session (and so of a new
/// process group whose id is its pid). A build process cannot join the
/// daemon's process group from another session (setpgid(2) refuses), so
/// the group kill and the stray sweep reach everything it started.
#[allow(unsafe_code)]
fn new_session(cmd: &mut Command) {
    // The limit on open files as the daemon found it (read here, before
    // the fork), not as its HTTP server raised it.
    let nofile = crate::host::rlimit::as_found();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setsid(2) and setrlimit(2), which are async-signal-safe; it
    // allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            match nofile {
                Some(found) => crate::host::rlimit::restore_nofile(found),
                None => Ok(()),
            }
        });
    }
}

fn kill_group(pgid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
}

/// TERM the group, wait up to [`KILL_GRACE`] for the script, then KILL the
/// group (always, so stragglers that ignored TERM go too).
async fn stop_group(pgid: i32, child: &mut tokio::process::Child) {
    kill_group(pgid, nix::sys::signal::Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn settings(state: &Path, keep_logs: usize, keep_logs_for: Duration) -> BuildSettings {
        BuildSettings {
            state_dir: state.to_path_buf(),
            timeout: Duration::from_secs(60),
            keep_logs,
            keep_logs_for,
            runner: Vec::new(),
            fetch_timeout: Duration::from_secs(60),
            path_env: String::new(),
            peipkg: None,
            sandbox: None,
        }
    }

    #[test]
    fn log_names() {
        assert_eq!(log_name("1.2.3-1", 4, false), "1.2.3-1.4.log");
        assert_eq!(parse_log_name("1.2.3-1.4.log"), Some(("1.2.3-1", 4, false)));
        assert_eq!(
            parse_log_name("2:1.0-rc.1-1.12.log.zst"),
            Some(("2:1.0-rc.1-1", 12, true))
        );
        for bad in [
            "x.log",
            ".1.log",
            "1.0-1.0.log",
            "1.0-1.a.log",
            "1.0-1.1.txt",
        ] {
            assert_eq!(parse_log_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_fifo_or_a_link_in_place_of_a_log_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("1.0-1.1.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Without O_NONBLOCK this open would wait for a writer for ever.
        let e = finish_log(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(fifo.exists(), "left where it is");
        let link = dir.path().join("1.0-1.2.log");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(finish_log(&link).is_err());
        assert!(!dir.path().join("1.0-1.2.log.zst").exists());
    }

    #[test]
    fn logs_are_compressed_numbered_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 2, Duration::from_secs(3600));
        let first = next_log_path(&s, "r", "1.0-1").unwrap();
        assert_eq!(first.file_name().unwrap(), "1.0-1.1.log");
        std::fs::write(&first, "hello\n".repeat(1000)).unwrap();
        let zst = finish_log(&first).unwrap();
        assert!(!first.exists());
        assert_eq!(zst.file_name().unwrap(), "1.0-1.1.log.zst");
        let bytes = std::fs::read(&zst).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&bytes).unwrap(),
            Some(6000),
            "the content size is in the frame header"
        );
        assert_eq!(
            zstd::decode_all(&bytes[..]).unwrap(),
            "hello\n".repeat(1000).as_bytes()
        );
        // The next attempt of the same version counts compressed logs too.
        let second = next_log_path(&s, "r", "1.0-1").unwrap();
        assert_eq!(log_attempt(&second), Some(2));
        std::fs::write(&second, "two\n").unwrap();
        finish_log(&second).unwrap();
        let third = next_log_path(&s, "r", "2.0-1").unwrap();
        std::fs::write(&third, "three\n").unwrap();
        let now = SystemTime::now();
        // Age only: nothing is an hour old.
        assert!(prune_logs(&s, "r", Some(&third), Prune::Age, now).is_empty());
        // Count: two kept, the running one among them, never removed.
        let removed = prune_logs(&s, "r", Some(&third), Prune::CountAndAge, now);
        assert_eq!(
            removed,
            [LogId {
                recipe: "r".into(),
                version: "1.0-1".into(),
                attempt: 1
            }]
        );
        assert!(third.exists());
        // Age: two hours on, everything but the running log goes.
        let later = now + Duration::from_secs(7200);
        let removed = prune_logs(&s, "r", Some(&third), Prune::Age, later);
        assert_eq!(removed.len(), 1);
        assert!(third.exists());
        // The sweep compresses a plain log left behind and lists what is left.
        let swept = sweep_logs(&s, None, now);
        assert_eq!(swept.compressed, 1);
        assert!(swept.removed.is_empty());
        assert_eq!(
            swept.present.into_iter().collect::<Vec<_>>(),
            [LogId {
                recipe: "r".into(),
                version: "2.0-1".into(),
                attempt: 1
            }]
        );
        assert!(s.log_dir("r").join("2.0-1.1.log.zst").exists());
    }
}
