//! Runs one build: fetch the tag, run the recipe's build script in its own
//! process group with a clean environment and a time limit, and package
//! DESTDIR. Everything the build does goes to its log file,
//! `state_dir/logs/<recipe>/<version>.<n>.log`.
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

/// Picks the log file for a new attempt: `<version>.<n>.log` with `n` one
/// more than the highest existing attempt of that version.
pub fn next_log_path(
    settings: &BuildSettings,
    recipe: &str,
    version: &str,
) -> std::io::Result<PathBuf> {
    let dir = settings.log_dir(recipe);
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("{version}.");
    let mut n = 0u64;
    for e in std::fs::read_dir(&dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".log"))
        {
            if let Ok(k) = rest.parse::<u64>() {
                n = n.max(k);
            }
        }
    }
    Ok(dir.join(format!("{version}.{}.log", n + 1)))
}

/// Removes the oldest logs of a recipe beyond `keep`, never `current`.
pub fn prune_logs(settings: &BuildSettings, recipe: &str, current: &Path) {
    let dir = settings.log_dir(recipe);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(settings.keep_logs);
    for (_, p) in logs.into_iter().take(excess) {
        if p != current {
            let _ = std::fs::remove_file(p);
        }
    }
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
    // SAFETY: the closure runs in the forked child before exec and calls
    // only setsid(2), which is async-signal-safe; it allocates nothing and
    // touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
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
