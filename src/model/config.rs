//! The farm config file (`config.toml`): a superset of peipkg-config.toml.
//!
//! The file is parsed into raw serde structs that reject unknown keys, then
//! validated once into [`Config`], whose fields cannot hold bad values
//! (durations above their minimum, a known upload backend, ...). Every error
//! names the file and the dotted key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::notify::NotifyEvent;

/// A config error: the file, and what is wrong in it (key and problem).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

/// The validated farm config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// `[manager]`.
    pub manager: Manager,
    /// `[repo]`.
    pub repo: RepoSettings,
    /// `[signing].key_file`, if any.
    pub signing_key_file: Option<PathBuf>,
    /// `[upload]`.
    pub upload: Upload,
    /// `[http]`.
    pub http: Http,
    /// `[poll]`.
    pub poll: Poll,
    /// `[build]`.
    pub build: Build,
    /// `[backoff].schedule`: the wait after the 1st, 2nd, ... failure.
    pub backoff: Vec<Duration>,
    /// `[history]`.
    pub history: HistorySettings,
    /// peipkg-manager's `[[signing_key]]` tables (used by the peipkg backend).
    pub signing_keys: Vec<SigningKey>,
    /// peipkg-manager's `[[grant]]` tables (used by the peipkg backend).
    pub grants: Vec<Grant>,
    /// `[[notify]]` tables: where build events are sent.
    pub notify: Vec<Notify>,
}

/// One `[[notify]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// The events it subscribes to (`on`), at least one, no repeats.
    pub on: Vec<NotifyEvent>,
    /// Where they go.
    pub target: NotifyTarget,
}

/// Where a `[[notify]]` table sends its events.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifyTarget {
    /// POST the event JSON, signed with the secret in `secret_file`.
    Url {
        /// An `http://` or `https://` URL.
        url: String,
        /// The file holding the signing secret.
        secret_file: PathBuf,
    },
    /// Run this argv with the event JSON on stdin.
    Command {
        /// The argv.
        argv: Vec<String>,
    },
}

/// `[manager]`: identity and paths.
#[derive(Debug, Clone)]
pub struct Manager {
    /// The farm id recorded in every index entry.
    pub id: String,
    /// Where recipes live.
    pub recipes_dir: PathBuf,
    /// farmhand's writable state.
    pub state_dir: PathBuf,
}

/// `[repo]`: the repository's identity.
#[derive(Debug, Clone)]
pub struct RepoSettings {
    /// Kebab-case repository name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// `[upload]`: where the published repository is copied after each publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Upload {
    /// Keep it local.
    None,
    /// `rclone copy` in two passes to this remote.
    Rclone {
        /// The rclone destination, e.g. `r2:pkgs.example.org`.
        remote: String,
    },
    /// Run this argv; `{repo_dir}` is substituted.
    Command {
        /// The argv.
        argv: Vec<String>,
    },
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct Http {
    /// The listen address (`host:port`), `None` for no HTTP server.
    pub addr: Option<String>,
    /// The webhook secret file.
    pub webhook_secret_file: Option<PathBuf>,
    /// Export the series labelled by recipe on `/metrics` (default true;
    /// very large farms turn them off to keep the scrape small).
    pub per_recipe_metrics: bool,
    /// The farm's address as people reach it (`https://farm.example.org`),
    /// without a trailing slash: the base of links in notifications.
    pub public_url: Option<String>,
    /// The control API's bearer token file; `None` leaves the control API
    /// off.
    pub control_token_file: Option<PathBuf>,
    /// At most this many `GET /events` subscribers at once.
    pub max_event_clients: usize,
}

/// `[history]`: the finished builds kept in `state_dir/history`.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// At most this many finished builds are kept (the oldest are dropped).
    pub keep: usize,
}

/// `[poll]`.
#[derive(Debug, Clone)]
pub struct Poll {
    /// Poll interval of recipes that set none.
    pub default_interval: Duration,
    /// At most this many polls run at once.
    pub concurrency: usize,
    /// Time limit of one poll (`ls-remote`).
    pub timeout: Duration,
}

/// Which tools fetch, build, package and publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildBackend {
    /// farmhand's own pipeline.
    Builtin,
    /// `peipkg-build` and `peipkg-repo`, as peipkg-manager runs them.
    Peipkg,
}

/// `[build].sandbox`: how build scripts are confined (DESIGN.md section 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// bubblewrap when a trial run at start succeeds, else none (with a warning).
    Auto,
    /// bubblewrap, or the daemon does not start.
    Bwrap,
    /// No sandbox (a warning at start).
    None,
}

/// `[build]`.
#[derive(Debug, Clone)]
pub struct Build {
    /// The backend.
    pub backend: BuildBackend,
    /// A build running longer is killed and counts as failed.
    pub timeout: Duration,
    /// How long shutdown waits for the in-flight build.
    pub shutdown_grace: Duration,
    /// Build logs kept per recipe.
    pub keep_logs: usize,
    /// And none older than this.
    pub keep_logs_for: Duration,
    /// Optional argv the build script is run through.
    pub runner: Vec<String>,
    /// How build scripts are confined.
    pub sandbox: SandboxMode,
    /// Whether builds may use the network (`false`: a loopback interface only).
    pub network: bool,
}

/// A peipkg-manager `[[signing_key]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    /// Name referenced by grants.
    #[serde(default)]
    pub name: String,
    /// Path to the Ed25519 private key.
    #[serde(default)]
    pub private: String,
    /// Build-env variable that receives the public key in hex.
    #[serde(default)]
    pub pubkey_env: String,
}

/// A peipkg-manager `[[grant]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The recipe id.
    #[serde(default)]
    pub recipe: String,
    /// Keys whose public hex is injected into the build env.
    #[serde(default)]
    pub inject_pubkey: Vec<String>,
    /// Keys the recipe may sign binaries with.
    #[serde(default)]
    pub sign: Vec<String>,
}

/// The default backoff schedule: 1m, 5m, 15m, 1h, 6h, 24h.
pub fn default_backoff() -> Vec<Duration> {
    [60, 300, 900, 3600, 6 * 3600, 24 * 3600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawConfig {
    manager: Option<RawManager>,
    repo: Option<RawRepo>,
    #[serde(default)]
    signing: RawSigning,
    #[serde(default)]
    upload: RawUpload,
    #[serde(default)]
    http: RawHttp,
    poll: Option<RawPoll>,
    #[serde(default)]
    build: RawBuild,
    #[serde(default)]
    backoff: RawBackoff,
    #[serde(default)]
    history: RawHistory,
    #[serde(default)]
    signing_key: Vec<SigningKey>,
    #[serde(default)]
    grant: Vec<Grant>,
    #[serde(default)]
    notify: Vec<RawNotify>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawNotify {
    on: Option<Vec<String>>,
    url: Option<String>,
    secret_file: Option<String>,
    command: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawManager {
    id: Option<String>,
    recipes_dir: Option<String>,
    state_dir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRepo {
    name: Option<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawSigning {
    key_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawUpload {
    backend: Option<String>,
    remote: Option<String>,
    command: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHttp {
    addr: Option<String>,
    webhook_secret_file: Option<String>,
    control_token_file: Option<String>,
    max_event_clients: Option<i64>,
    public_url: Option<String>,
    per_recipe_metrics: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPoll {
    default_interval: Option<String>,
    concurrency: Option<i64>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawBuild {
    backend: Option<String>,
    timeout: Option<String>,
    shutdown_grace: Option<String>,
    keep_logs: Option<i64>,
    keep_logs_for: Option<String>,
    runner: Option<Vec<String>>,
    sandbox: Option<String>,
    network: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawBackoff {
    schedule: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    keep: Option<i64>,
}

/// `[http].max_event_clients` when unset.
pub const DEFAULT_MAX_EVENT_CLIENTS: usize = 64;
/// `[history].keep` when unset.
pub const DEFAULT_HISTORY_KEEP: usize = 10_000;
/// `[build].keep_logs_for` when unset: 30 days.
pub const DEFAULT_KEEP_LOGS_FOR: Duration = Duration::from_secs(720 * 3600);

/// Collects the first problem with its dotted key.
struct Check<'a> {
    path: &'a Path,
}

impl Check<'_> {
    fn err(&self, message: impl fmt::Display) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            message: message.to_string(),
        }
    }

    fn required(&self, v: Option<String>, key: &str) -> Result<String, ConfigError> {
        match v {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(self.err(format!("{key}: is required"))),
        }
    }

    fn duration(&self, v: &str, key: &str, min: Duration) -> Result<Duration, ConfigError> {
        let d = parse_duration(v).map_err(|e| self.err(format!("{key}: {e}")))?;
        if d < min {
            return Err(self.err(format!(
                "{key}: {v:?} is below the minimum of {}",
                format_duration(min)
            )));
        }
        Ok(d)
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are taken
    /// relative to the directory holding the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: format!("cannot read config: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `path` is used for messages and
    /// to resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let c = Check { path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| c.err(toml_error(&e, text)))?;
        // Resolved paths must be absolute: build scripts run in their
        // source dir and see SOURCE_DIR and DESTDIR, so a path relative to
        // the daemon's working directory would point elsewhere for them.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.is_absolute() {
            base
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&base))
                .unwrap_or(base)
        };
        let resolve = |p: String| -> PathBuf {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };

        let m = raw
            .manager
            .ok_or_else(|| c.err("[manager]: section is required"))?;
        let manager = Manager {
            id: c.required(m.id, "manager.id")?,
            recipes_dir: resolve(c.required(m.recipes_dir, "manager.recipes_dir")?),
            state_dir: resolve(c.required(m.state_dir, "manager.state_dir")?),
        };
        if !crate::model::name::is_safe_component(&manager.id) {
            return Err(c.err(format!(
                "manager.id: {:?} must start with a letter or digit and hold only letters, digits and ._+-~",
                manager.id
            )));
        }

        let r = raw
            .repo
            .ok_or_else(|| c.err("[repo]: section is required"))?;
        let name = c.required(r.name, "repo.name")?;
        if !is_kebab_case(&name) {
            return Err(c.err(format!(
                "repo.name: {name:?} is not kebab-case (lowercase letters, digits and single hyphens, e.g. \"my-packages\")"
            )));
        }
        let repo = RepoSettings {
            name,
            description: r.description,
        };

        let signing_key_file = raw
            .signing
            .key_file
            .filter(|s| !s.trim().is_empty())
            .map(resolve);

        let upload = match raw.upload.backend.as_deref().unwrap_or("none") {
            "" | "none" => Upload::None,
            "rclone" => Upload::Rclone {
                remote: c.required(raw.upload.remote, "upload.remote (backend = \"rclone\")")?,
            },
            "command" => {
                let argv = raw.upload.command.unwrap_or_default();
                if argv.is_empty() || argv[0].trim().is_empty() {
                    return Err(c.err(
                        "upload.command: is required and must name a program when backend = \"command\"",
                    ));
                }
                Upload::Command { argv }
            }
            other => {
                return Err(c.err(format!(
                    "upload.backend: {other:?} is not one of \"none\", \"rclone\", \"command\""
                )))
            }
        };

        let addr = match raw.http.addr.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => Some(normalize_addr(a).map_err(|e| c.err(format!("http.addr: {e}")))?),
        };
        let http = Http {
            addr,
            webhook_secret_file: raw
                .http
                .webhook_secret_file
                .filter(|s| !s.trim().is_empty())
                .map(resolve),
            control_token_file: raw
                .http
                .control_token_file
                .filter(|s| !s.trim().is_empty())
                .map(resolve),
            max_event_clients: match raw.http.max_event_clients {
                None => DEFAULT_MAX_EVENT_CLIENTS,
                Some(n) if (1..=4096).contains(&n) => n as usize,
                Some(n) => {
                    return Err(c.err(format!(
                        "http.max_event_clients: {n} is out of range (1 to 4096)"
                    )))
                }
            },
            public_url: match raw.http.public_url.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(u) => Some(
                    http_url(u)
                        .map_err(|e| c.err(format!("http.public_url: {e}")))?
                        .trim_end_matches('/')
                        .to_string(),
                ),
            },
            per_recipe_metrics: raw.http.per_recipe_metrics.unwrap_or(true),
        };

        let p = raw
            .poll
            .ok_or_else(|| c.err("[poll]: section is required"))?;
        let interval = c.required(p.default_interval, "poll.default_interval")?;
        let poll = Poll {
            default_interval: c.duration(&interval, "poll.default_interval", MIN_POLL_INTERVAL)?,
            concurrency: match p.concurrency {
                None => 4,
                Some(n) if (1..=1024).contains(&n) => n as usize,
                Some(n) => {
                    return Err(c.err(format!("poll.concurrency: {n} is out of range (1 to 1024)")))
                }
            },
            timeout: match p.timeout {
                Some(t) => c.duration(&t, "poll.timeout", Duration::from_secs(1))?,
                None => Duration::from_secs(120),
            },
        };

        let b = raw.build;
        let backend = match b.backend.as_deref().unwrap_or("builtin") {
            "builtin" => BuildBackend::Builtin,
            "peipkg" => BuildBackend::Peipkg,
            other => {
                return Err(c.err(format!(
                    "build.backend: {other:?} is not one of \"builtin\", \"peipkg\""
                )))
            }
        };
        let build = Build {
            backend,
            timeout: match b.timeout {
                Some(t) => c.duration(&t, "build.timeout", Duration::from_secs(1))?,
                None => Duration::from_secs(4 * 3600),
            },
            shutdown_grace: match b.shutdown_grace {
                Some(t) => c.duration(&t, "build.shutdown_grace", Duration::ZERO)?,
                None => Duration::from_secs(30),
            },
            keep_logs: match b.keep_logs {
                None => 10,
                Some(n) if (1..=100_000).contains(&n) => n as usize,
                Some(n) => {
                    return Err(c.err(format!(
                        "build.keep_logs: {n} is out of range (1 to 100000)"
                    )))
                }
            },
            keep_logs_for: match b.keep_logs_for {
                Some(t) => c.duration(&t, "build.keep_logs_for", Duration::from_secs(1))?,
                None => DEFAULT_KEEP_LOGS_FOR,
            },
            runner: b.runner.unwrap_or_default(),
            sandbox: match b.sandbox.as_deref().unwrap_or("auto") {
                "auto" => SandboxMode::Auto,
                "bwrap" => SandboxMode::Bwrap,
                "none" => SandboxMode::None,
                other => {
                    return Err(c.err(format!(
                        "build.sandbox: {other:?} is not one of \"auto\", \"bwrap\", \"none\""
                    )))
                }
            },
            network: b.network.unwrap_or(true),
        };
        if build.runner.first().is_some_and(|s| s.trim().is_empty()) {
            return Err(c.err("build.runner: the first element must name a program"));
        }
        if backend == BuildBackend::Peipkg && signing_key_file.is_none() {
            return Err(c.err(
                "signing.key_file: is required when build.backend = \"peipkg\" (peipkg-build and peipkg-repo sign everything)",
            ));
        }

        let backoff = match raw.backoff.schedule {
            None => default_backoff(),
            Some(list) if list.is_empty() => {
                return Err(c.err("backoff.schedule: must list at least one duration"))
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    c.duration(s, &format!("backoff.schedule[{i}]"), Duration::from_secs(1))
                })
                .collect::<Result<_, _>>()?,
        };

        let history = HistorySettings {
            keep: match raw.history.keep {
                None => DEFAULT_HISTORY_KEEP,
                Some(n) if (1..=10_000_000).contains(&n) => n as usize,
                Some(n) => {
                    return Err(c.err(format!("history.keep: {n} is out of range (1 to 10000000)")))
                }
            },
        };

        validate_peipkg_keys(&c, &raw.signing_key, &raw.grant)?;
        let signing_keys = raw
            .signing_key
            .into_iter()
            .map(|mut k| {
                k.private = resolve(std::mem::take(&mut k.private))
                    .display()
                    .to_string();
                k
            })
            .collect();

        let notify = raw
            .notify
            .into_iter()
            .enumerate()
            .map(|(i, n)| notify_table(&c, i, n, &resolve))
            .collect::<Result<_, _>>()?;

        Ok(Config {
            path: path.to_path_buf(),
            manager,
            repo,
            signing_key_file,
            upload,
            http,
            poll,
            build,
            backoff,
            history,
            signing_keys,
            grants: raw.grant,
            notify,
        })
    }

    /// `state_dir/repo`.
    pub fn repo_dir(&self) -> PathBuf {
        self.manager.state_dir.join("repo")
    }

    /// The wait after the `failures`-th consecutive failure (1-based); the
    /// schedule's last entry repeats.
    pub fn backoff_after(&self, failures: u32) -> Duration {
        backoff_after(&self.backoff, failures)
    }
}

/// The wait after the `failures`-th consecutive failure (1-based) in
/// `schedule`; its last entry repeats.
pub fn backoff_after(schedule: &[Duration], failures: u32) -> Duration {
    let i = (failures.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    schedule.get(i).copied().unwrap_or(Duration::from_secs(60))
}

/// Validates one `[[notify]]` table (`notify[i]` in messages).
fn notify_table(
    c: &Check,
    i: usize,
    n: RawNotify,
    resolve: &dyn Fn(String) -> PathBuf,
) -> Result<Notify, ConfigError> {
    let names = NotifyEvent::ALL
        .iter()
        .map(|e| format!("{:?}", e.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let list = n.on.unwrap_or_default();
    if list.is_empty() {
        return Err(c.err(format!(
            "notify[{i}].on: is required: a list of one or more of {names}"
        )));
    }
    let mut on = Vec::new();
    for e in &list {
        let Some(event) = NotifyEvent::parse(e) else {
            return Err(c.err(format!("notify[{i}].on: {e:?} is not one of {names}")));
        };
        if on.contains(&event) {
            return Err(c.err(format!("notify[{i}].on: {e:?} is listed twice")));
        }
        on.push(event);
    }
    let target = match (n.url, n.command) {
        (Some(_), Some(_)) => {
            return Err(c.err(format!(
                "notify[{i}]: set url (with secret_file) or command, not both"
            )))
        }
        (None, None) => {
            return Err(c.err(format!(
                "notify[{i}]: set url (with secret_file) or command"
            )))
        }
        (Some(url), None) => {
            let url = http_url(url.trim()).map_err(|e| c.err(format!("notify[{i}].url: {e}")))?;
            let secret_file = n
                .secret_file
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| {
                    c.err(format!(
                        "notify[{i}].secret_file: is required with url (every delivery is signed)"
                    ))
                })?;
            NotifyTarget::Url {
                url: url.to_string(),
                secret_file: resolve(secret_file),
            }
        }
        (None, Some(argv)) => {
            if n.secret_file.is_some() {
                return Err(c.err(format!(
                    "notify[{i}].secret_file: applies to url only, not to command"
                )));
            }
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(c.err(format!(
                    "notify[{i}].command: the first element must name a program"
                )));
            }
            NotifyTarget::Command { argv }
        }
    };
    Ok(Notify { on, target })
}

/// `u` when it is an absolute `http://` or `https://` URL with a host.
fn http_url(u: &str) -> Result<&str, String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("{u:?} must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || host.ends_with('@') {
        return Err(format!("{u:?} has no host"));
    }
    if u.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!("{u:?} holds whitespace or control characters"));
    }
    if u.parse::<hyper::Uri>().is_err() {
        return Err(format!("{u:?} is not a valid URL"));
    }
    Ok(u)
}

/// The smallest poll interval accepted.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(60);

fn validate_peipkg_keys(
    c: &Check,
    keys: &[SigningKey],
    grants: &[Grant],
) -> Result<(), ConfigError> {
    let mut names = std::collections::HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        if k.name.is_empty() {
            return Err(c.err(format!("signing_key[{i}].name: is required")));
        }
        if names.insert(k.name.as_str(), k).is_some() {
            return Err(c.err(format!(
                "signing_key[{i}].name: duplicate name {:?}",
                k.name
            )));
        }
        if k.private.is_empty() {
            return Err(c.err(format!(
                "signing_key[{i}].private: is required (key {:?})",
                k.name
            )));
        }
    }
    let mut recipes = std::collections::HashSet::new();
    for (i, g) in grants.iter().enumerate() {
        if g.recipe.is_empty() {
            return Err(c.err(format!("grant[{i}].recipe: is required")));
        }
        if !recipes.insert(g.recipe.as_str()) {
            return Err(c.err(format!(
                "grant[{i}].recipe: duplicate recipe {:?}",
                g.recipe
            )));
        }
        for n in &g.inject_pubkey {
            match names.get(n.as_str()) {
                None => {
                    return Err(c.err(format!(
                        "grant[{i}].inject_pubkey: unknown signing key {n:?}"
                    )))
                }
                Some(k) if k.pubkey_env.is_empty() => {
                    return Err(c.err(format!(
                        "grant[{i}].inject_pubkey: signing key {n:?} has no pubkey_env"
                    )))
                }
                Some(_) => {}
            }
        }
        for n in &g.sign {
            if !names.contains_key(n.as_str()) {
                return Err(c.err(format!("grant[{i}].sign: unknown signing key {n:?}")));
            }
        }
    }
    Ok(())
}

/// toml's error on one line: where it is, the dotted key it is about when
/// the document tells one, and toml's message (`line 2, column 6:
/// manager.id: invalid type: integer `5`, expected a string`). Built from
/// the error's span and message, never from its printed form.
pub fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = toml_message(e);
    let Some(span) = e.span() else {
        return message;
    };
    let (line, column) = line_column(text, span.start);
    match key_at(text, span.start) {
        Some(key) => format!("line {line}, column {column}: {key}: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// toml's message, its lines (`invalid table header` / `duplicate key ...`)
/// joined with "; " so that an error stays on one line.
fn toml_message(e: &toml::de::Error) -> String {
    e.message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The line and column (both from 1) of byte `offset` of `text`, counted
/// as toml counts them in its own messages: columns in characters, and in
/// bytes when the offset does not end a whole character.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let Some(last) = bytes.len().checked_sub(1) else {
        return (1, offset + 1);
    };
    let at = offset.min(last);
    let line_start = bytes[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = bytes[..line_start].iter().filter(|&&b| b == b'\n').count();
    let column = std::str::from_utf8(&bytes[line_start..=at])
        .map_or(at - line_start, |s| s.chars().count() - 1);
    (line + 1, column + (offset - at) + 1)
}

/// The dotted key that byte `offset` of `text` is about: the table header
/// it is in (`[[name]]` headers are numbered: `grant[1]`), else the key of
/// the key/value pair it is in or follows, under the table above it
/// (`manager.id`; `backoff.schedule` for any element of its array;
/// `manager.id` in `manager = { id = 5 }`). `None` when that is not a
/// well-formed key: before any key, on a line that is not `key = value`,
/// and in or under a table header that is not.
///
/// It reads `text` with toml's own lexer and push parser, which carry on
/// past a syntax error, so even a document that does not parse tells the
/// key of its bad value.
fn key_at(text: &str, offset: usize) -> Option<String> {
    use toml_parser::parser::{Event, EventKind};

    let source = toml_parser::Source::new(text);
    let tokens = source.lex().into_vec();
    let mut events: Vec<Event> = Vec::new();
    toml_parser::parser::parse_document(&tokens, &mut events, &mut ());
    // One part of a key as written, `None` if it is not well-formed.
    let decode = |event: &Event| {
        let raw = source.get(event)?;
        let (mut part, mut ok) = (String::new(), true);
        raw.decode_key(&mut part, &mut |_| ok = false);
        ok.then_some(part)
    };
    // `prefix.key`, if every part is well-formed.
    let join = |prefix: &str, parts: &[Option<String>]| {
        let mut path: Vec<&str> = Some(prefix).filter(|p| !p.is_empty()).into_iter().collect();
        for part in parts {
            path.push(part.as_deref()?);
        }
        Some(path.join("."))
    };

    // The current table; `None` under a header that is not well-formed.
    let mut table = Some(String::new());
    // How many `[[name]]` headers each name had so far.
    let mut numbered: std::collections::HashMap<String, usize> = Default::default();
    // The parts of a header or of a key being read.
    let mut header: Option<Vec<Option<String>>> = None;
    let mut key: Vec<Option<String>> = Vec::new();
    // Open inline tables (with their path) and arrays (`None`; keys in an
    // array are not followed).
    let mut open: Vec<Option<String>> = Vec::new();
    // Whether this line had a syntax error outside a value, is a header,
    // is past its `=`.
    let mut spoiled = false;
    let mut is_header = false;
    let mut in_value = false;
    // The header or key read last.
    let mut last: Option<String> = None;

    for event in &events {
        // Past the offset, only finish the header or key it is in.
        let past = event.span().start() > offset;
        if past && header.is_none() && key.is_empty() {
            break;
        }
        match event.kind() {
            EventKind::StdTableOpen | EventKind::ArrayTableOpen => {
                header = Some(Vec::new());
                open.clear();
            }
            EventKind::SimpleKey => match &mut header {
                Some(parts) => parts.push(decode(event)),
                None if !open.contains(&None) => key.push(decode(event)),
                None => {}
            },
            EventKind::StdTableClose | EventKind::ArrayTableClose => {
                let Some(parts) = header.take() else {
                    continue;
                };
                table = join("", &parts).filter(|_| !spoiled);
                if let (Some(path), EventKind::ArrayTableClose) = (&mut table, event.kind()) {
                    let n = numbered.entry(path.clone()).or_default();
                    *path = format!("{path}[{n}]");
                    *n += 1;
                }
                last.clone_from(&table);
                is_header = true;
            }
            EventKind::KeyValSep if !key.is_empty() => {
                last = match open.last() {
                    // In an inline table, a malformed key is still in
                    // the table's key.
                    Some(inline) => inline
                        .as_ref()
                        .map(|path| join(path, &key).unwrap_or_else(|| path.clone())),
                    None => table
                        .as_ref()
                        .and_then(|path| join(path, &key))
                        .filter(|_| !spoiled),
                };
                key.clear();
                in_value = true;
            }
            EventKind::Error if !in_value && open.is_empty() => {
                spoiled = true;
                // Text after a header's `]`: the header is not well-formed.
                if is_header {
                    table = None;
                    last = None;
                }
            }
            EventKind::InlineTableOpen => open.push(last.clone()),
            EventKind::ArrayOpen => open.push(None),
            EventKind::InlineTableClose | EventKind::ArrayClose => {
                if let Some(Some(path)) = open.pop() {
                    last = Some(path);
                }
            }
            EventKind::Newline => {
                // A header or key still being read: the line is not one.
                if header.take().is_some() {
                    table = None;
                    last = None;
                }
                let unfinished = !key.is_empty();
                key.clear();
                // An inline table must close on its line: the problem is
                // in the outermost one's key.
                if let Some(inline) = open.iter().position(Option::is_some) {
                    last = open[inline].clone();
                    open.clear();
                } else if open.is_empty() {
                    if (unfinished || spoiled) && !in_value {
                        last = None;
                    }
                    spoiled = false;
                    is_header = false;
                    in_value = false;
                }
            }
            _ => {}
        }
        if past && header.is_none() && key.is_empty() {
            break;
        }
    }
    if header.is_some() || !key.is_empty() {
        return None;
    }
    last
}

fn is_kebab_case(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Turns a Go-style listen address into one `std::net` parses:
/// `:8080` means all interfaces.
pub fn normalize_addr(a: &str) -> Result<String, String> {
    let full = if let Some(port) = a.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        a.to_string()
    };
    match full.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(full),
        Err(_) => {
            // host names such as localhost:8080
            let (host, port) = full
                .rsplit_once(':')
                .ok_or_else(|| format!("{a:?} is not host:port"))?;
            // A host name: letters, digits, dots and hyphens (IP addresses
            // parsed above), so `http://host:80` or `::1:80` are refused
            // here, not when the listener fails to bind.
            let host_ok = host.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
            if !host_ok || port.parse::<u16>().is_err() {
                return Err(format!("{a:?} is not host:port"));
            }
            Ok(full)
        }
    }
}

/// Parses a Go-style duration: `90s`, `5m`, `1h30m`, `1.5h`, `300ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration (use e.g. \"90s\", \"5m\", \"1h30m\")".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("{orig:?} is negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let bad = || format!("{orig:?} is not a duration (use e.g. \"90s\", \"5m\", \"1h30m\")");
    let too_long = || format!("{orig:?} is too long");
    // Exact integer nanoseconds, as Go does: floating point would make
    // long durations print and re-parse to different values.
    const LIMIT_NS: u128 = 10_000_000_000 * 1_000_000_000;
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let int = int.trim_start_matches('0');
        if int.len() > 20 {
            return Err(too_long());
        }
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        // Digits past the 20th cannot reach a nanosecond.
        let (mut f, mut div) = (0u128, 1u128);
        for d in frac.bytes().take(20) {
            f = f * 10 + u128::from(d - b'0');
            div *= 10;
        }
        total += whole * scale + f * scale / div;
        if total > LIMIT_NS {
            return Err(too_long());
        }
        rest = next;
    }
    Ok(Duration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    ))
}

/// Formats a duration the way Go prints it: `1m0s` style is avoided in
/// favour of the shortest exact form (`90s`, `5m`, `1h30m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if s >= size {
            out.push_str(&format!("{}{unit}", s / size));
            s %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[manager]
id = "farm-1"
recipes_dir = "/etc/farmhand/recipes"
state_dir = "/var/lib/farmhand"
[repo]
name = "my-packages"
[poll]
default_interval = "1h"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/farmhand/config.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.manager.id, "farm-1");
        assert_eq!(c.poll.default_interval, Duration::from_secs(3600));
        assert_eq!(c.poll.concurrency, 4);
        assert_eq!(c.build.backend, BuildBackend::Builtin);
        assert_eq!(c.build.timeout, Duration::from_secs(4 * 3600));
        assert_eq!(c.build.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.build.keep_logs, 10);
        assert_eq!(c.build.keep_logs_for, Duration::from_secs(720 * 3600));
        assert_eq!(c.http.max_event_clients, 64);
        assert_eq!(c.history.keep, 10_000);
        assert_eq!(c.upload, Upload::None);
        assert!(c.http.addr.is_none());
        assert!(c.http.per_recipe_metrics);
        let off = parse(&format!("{MINIMAL}[http]\nper_recipe_metrics = false\n")).unwrap();
        assert!(!off.http.per_recipe_metrics);
        assert!(parse(&format!("{MINIMAL}[http]\nper_recipe_metric = false\n")).is_err());
        assert_eq!(c.backoff, default_backoff());
        assert_eq!(c.backoff_after(1), Duration::from_secs(60));
        assert_eq!(c.backoff_after(99), Duration::from_secs(86400));
    }

    #[test]
    fn history_log_and_event_keys() {
        let c = parse(&format!(
            "{MINIMAL}[http]\nmax_event_clients = 3\n[build]\nkeep_logs_for = \"48h\"\n[history]\nkeep = 5\n"
        ))
        .unwrap();
        assert_eq!(c.http.max_event_clients, 3);
        assert_eq!(c.build.keep_logs_for, Duration::from_secs(48 * 3600));
        assert_eq!(c.history.keep, 5);
    }

    #[test]
    fn notify_tables() {
        let base = "[manager]\nid = \"f\"\nrecipes_dir = \"r\"\nstate_dir = \"s\"\n[repo]\nname = \"p\"\n[poll]\ndefault_interval = \"1h\"\n";
        let c = parse(&format!(
            "{base}[http]\npublic_url = \"https://farm.example.org/\"\n\
             [[notify]]\non = [\"failed\", \"recovered\"]\nurl = \"https://hooks.example.org/farm\"\nsecret_file = \"notify-secret\"\n\
             [[notify]]\non = [\"published\", \"cancelled\"]\ncommand = [\"/usr/local/bin/farm-notify\", \"-v\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.http.public_url.as_deref(),
            Some("https://farm.example.org")
        );
        assert_eq!(c.notify.len(), 2);
        assert_eq!(
            c.notify[0].on,
            [NotifyEvent::Failed, NotifyEvent::Recovered]
        );
        match &c.notify[0].target {
            NotifyTarget::Url { url, secret_file } => {
                assert_eq!(url, "https://hooks.example.org/farm");
                assert!(secret_file.is_absolute() && secret_file.ends_with("notify-secret"));
            }
            t => panic!("{t:?}"),
        }
        assert_eq!(
            c.notify[1].target,
            NotifyTarget::Command {
                argv: vec!["/usr/local/bin/farm-notify".into(), "-v".into()]
            }
        );
        for (table, want) in [
            ("on = []\ncommand = [\"x\"]", "notify[0].on: is required"),
            ("command = [\"x\"]", "notify[0].on: is required"),
            (
                "on = [\"fail\"]\ncommand = [\"x\"]",
                "notify[0].on: \"fail\" is not one of",
            ),
            (
                "on = [\"failed\", \"failed\"]\ncommand = [\"x\"]",
                "listed twice",
            ),
            (
                "on = [\"failed\"]",
                "notify[0]: set url (with secret_file) or command",
            ),
            (
                "on = [\"failed\"]\nurl = \"https://h/x\"\nsecret_file = \"s\"\ncommand = [\"x\"]",
                "not both",
            ),
            (
                "on = [\"failed\"]\nurl = \"https://h/x\"",
                "notify[0].secret_file: is required with url",
            ),
            (
                "on = [\"failed\"]\nurl = \"ftp://h/x\"\nsecret_file = \"s\"",
                "notify[0].url: \"ftp://h/x\" must start with http:// or https://",
            ),
            (
                "on = [\"failed\"]\nurl = \"https:///x\"\nsecret_file = \"s\"",
                "notify[0].url: \"https:///x\" has no host",
            ),
            (
                "on = [\"failed\"]\ncommand = []",
                "notify[0].command: the first element must name a program",
            ),
            (
                "on = [\"failed\"]\ncommand = [\"x\"]\nsecret_file = \"s\"",
                "notify[0].secret_file: applies to url only",
            ),
            (
                "on = [\"failed\"]\ncommand = [\"x\"]\nurls = \"y\"",
                "unknown field `urls`",
            ),
        ] {
            let e = parse(&format!("{base}[[notify]]\n{table}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{table:?}: {e}");
        }
        let e = parse(&format!(
            "{base}[http]\npublic_url = \"farm.example.org\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http.public_url: \"farm.example.org\" must start with http:// or https://"),
            "{e}"
        );
    }

    #[test]
    fn peipkg_manager_sample_loads_unchanged() {
        let text = r#"
[manager]
id = "peios-build-1"
recipes_dir = "/etc/peipkg-manager/recipes"
state_dir = "/var/lib/peipkg-manager"
[repo]
name = "peios-official"
description = "Official Peios package repository"
[signing]
key_file = "/etc/peipkg-manager/farm.ed25519"
[upload]
backend = "rclone"
remote = "r2:pkgs.peios.org"
[http]
addr = ":8080"
webhook_secret_file = "/etc/peipkg-manager/webhook-secret"
[poll]
default_interval = "1h"
[[signing_key]]
name = "tcb"
private = "/etc/peipkg-manager/tcb.ed25519"
pubkey_env = "PKM_KACS_TCB_PUBKEY_HEX"
[[grant]]
recipe = "kernel"
inject_pubkey = ["tcb"]
sign = ["tcb"]
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.http.addr.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(
            c.upload,
            Upload::Rclone {
                remote: "r2:pkgs.peios.org".into()
            }
        );
        assert_eq!(c.grants.len(), 1);
    }

    #[test]
    fn shipped_example_config_parses() {
        let text = include_str!("../../packaging/config.example.toml");
        parse(text).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[manager]\nid='x'\nfoo=1\n", "unknown field `foo`"),
            ("", "[manager]: section is required"),
            (
                &MINIMAL.replace("id = \"farm-1\"", "id = \"farm-1\"\nrecipe_dir = \"x\""),
                "unknown field `recipe_dir`",
            ),
            (
                &MINIMAL.replace("\"1h\"", "\"30s\""),
                "poll.default_interval: \"30s\" is below the minimum of 1m",
            ),
            (
                &MINIMAL.replace("\"1h\"", "\"soon\""),
                "poll.default_interval: \"soon\" is not a duration",
            ),
            (&MINIMAL.replace("\"1h\"", "60"), "invalid type"),
            (&MINIMAL.replace("my-packages", "My_Packages"), "repo.name"),
            (
                &format!("{MINIMAL}[upload]\nbackend = \"s3\"\n"),
                "upload.backend: \"s3\"",
            ),
            (
                &format!("{MINIMAL}[upload]\nbackend = \"rclone\"\n"),
                "upload.remote",
            ),
            (
                &format!("{MINIMAL}[upload]\nbackend = \"command\"\n"),
                "upload.command",
            ),
            (
                &format!("{MINIMAL}[build]\nbackend = \"peipkg\"\n"),
                "signing.key_file",
            ),
            (
                &format!("{MINIMAL}[build]\ntimeout = \"0s\"\n"),
                "build.timeout",
            ),
            (
                &format!("{MINIMAL}[build]\nkeep_logs = 0\n"),
                "build.keep_logs",
            ),
            (
                &format!("{MINIMAL}[backoff]\nschedule = []\n"),
                "backoff.schedule",
            ),
            (
                &format!("{MINIMAL}[build]\nkeep_logs_for = \"0s\"\n"),
                "build.keep_logs_for: \"0s\" is below the minimum of 1s",
            ),
            (
                &format!("{MINIMAL}[build]\nkeep_logs_for = \"a month\"\n"),
                "build.keep_logs_for: \"a month\" is not a duration",
            ),
            (
                &format!("{MINIMAL}[history]\nkeep = 0\n"),
                "history.keep: 0 is out of range (1 to 10000000)",
            ),
            (
                &format!("{MINIMAL}[history]\nkept = 5\n"),
                "history.kept: unknown field `kept`",
            ),
            (
                &format!("{MINIMAL}[http]\nmax_event_clients = 0\n"),
                "http.max_event_clients: 0 is out of range (1 to 4096)",
            ),
            (
                &format!("{MINIMAL}[http]\nmax_event_client = 5\n"),
                "http.max_event_client: unknown field `max_event_client`",
            ),
            (
                &format!("{MINIMAL}[backoff]\nschedule = [\"1m\", \"x\"]\n"),
                "backoff.schedule[1]",
            ),
            (&format!("{MINIMAL}[http]\naddr = \"nope\"\n"), "http.addr"),
            (
                &format!("{MINIMAL}[[grant]]\nrecipe = \"k\"\nsign = [\"nokey\"]\n"),
                "grant[0].sign: unknown signing key",
            ),
            (
                &format!("{MINIMAL}[[signing_key]]\nname = \"a\"\n"),
                "signing_key[0].private",
            ),
            ("[manager\n", "line 1"),
            // Type errors name the dotted key, not only line and column.
            (
                "[manager]\nid = 5\n",
                "line 2, column 6: manager.id: invalid type: integer `5`, expected a string",
            ),
            (
                "manager = 5\n",
                "manager: invalid type: integer `5`, expected a table",
            ),
            (
                &format!("{MINIMAL}[backoff]\nschedule = [\n  \"1m\",\n  \"a=b\",\n  5,\n]\n"),
                "backoff.schedule: invalid type: integer `5`",
            ),
            (
                &format!("{MINIMAL}[[signing_key]]\nname = \"a\"\n[[grant]]\nrecipe = \"k\"\n[[signing_key]]\nname = 5\n"),
                "signing_key[1].name: invalid type",
            ),
            (
                &format!("{MINIMAL}[build]\ntimout = \"1h\"\n"),
                "build.timout: unknown field `timout`",
            ),
            // Multi-line toml messages stay on one line.
            (
                &format!("{MINIMAL}[repo]\nname = \"again\"\n"),
                "invalid table header; duplicate key `repo` in document root",
            ),
            // Host names only: these would fail at bind time, not here.
            (
                &format!("{MINIMAL}[http]\naddr = \"http://127.0.0.1:8080\"\n"),
                "http.addr: \"http://127.0.0.1:8080\" is not host:port",
            ),
            (
                &format!("{MINIMAL}[http]\naddr = \"::1:8080\"\n"),
                "http.addr: \"::1:8080\" is not host:port",
            ),
            (
                &format!("{MINIMAL}[http]\naddr = \"127.0.0.1 :8080\"\n"),
                "http.addr",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.starts_with("/etc/farmhand/config.toml: "), "{e}");
            assert!(e.contains(want), "error {e:?} should contain {want:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
        for ok in [
            "localhost:8080",
            "[::1]:8080",
            ":8080",
            "build-1.example.org:80",
        ] {
            assert!(normalize_addr(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn key_positions() {
        let text = "top = 1\n[a]\nx = 1\n\"q\" . y = [\n  1,\n  \"k=v\",\n]\n[[t]]\n[[t]]\nz = 2\n[b.c] # note\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("1\n[a]").as_deref(), Some("top"));
        assert_eq!(at("x =").as_deref(), Some("a.x"));
        assert_eq!(at("\"k=v\"").as_deref(), Some("a.q.y"));
        assert_eq!(at("z =").as_deref(), Some("t[1].z"));
        assert_eq!(at("[b.c]").as_deref(), Some("b.c"));
        assert_eq!(key_at("[unclosed\nx = 1\n", 12), None);
        assert_eq!(key_at("", 5), None);
    }

    #[test]
    fn key_positions_follow_the_toml_grammar() {
        let at = |text: &str, needle: &str| key_at(text, text.find(needle).unwrap());
        // Quoted keys as toml reads them; inline tables name their key.
        let text = "[\"a b\".'c']\n\"x\\\"y\" = 1\nm = { id = 5, n = { k = true } }\n";
        assert_eq!(at(text, "1\n").as_deref(), Some("a b.c.x\"y"));
        assert_eq!(at(text, "5,").as_deref(), Some("a b.c.m.id"));
        assert_eq!(at(text, "true").as_deref(), Some("a b.c.m.n.k"));
        assert_eq!(at(text, "= {").as_deref(), Some("a b.c.m"));
        // Documents that do not parse: a value left open belongs to its
        // key, even lines below it.
        let text = "[p]\nlist = [\"a\"\n\n[q]\nx = 1\n";
        assert_eq!(at(text, "[q]").as_deref(), Some("p.list"));
        let text = "[p]\nt = { a = 1\nx = 1\n";
        assert_eq!(at(text, "\nx").as_deref(), Some("p.t"));
        let text = "[p]\nid = \"open\nx = 1\n";
        assert_eq!(at(text, "open").as_deref(), Some("p.id"));
        // A line that is not `key = value` is no key's, not the one above.
        let text = "[p]\nid = 1\nstray\n'\nb]ad = 2\n";
        assert_eq!(at(text, "stray"), None);
        assert_eq!(at(text, "'"), None);
        assert_eq!(at(text, "]ad"), None);
        // Nor is anything under a header that is not well-formed.
        let text = "[p]x\ny = 1\n";
        assert_eq!(at(text, "x\n"), None);
        assert_eq!(at(text, "1"), None);
    }

    #[test]
    fn line_and_column_count_as_toml_does() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // After a two-byte character: counted in characters.
        assert_eq!(line_column(text, 9), (2, 3));
        // Past the end: on the last line, as toml has it; an empty text.
        assert_eq!(line_column(text, text.len()), (2, 8));
        assert_eq!(line_column(text, text.len() + 2), (2, 10));
        assert_eq!(line_column("", 0), (1, 1));
        // Whatever toml says, the same place.
        for text in [
            "[manager]\nid = \"é\nx",
            "é = [1,\n2,,]",
            "[[a]]\nb = 1\n[a]\n",
        ] {
            let e = toml::from_str::<toml::Table>(text).unwrap_err();
            let (line, column) = line_column(text, e.span().unwrap().start);
            let at = format!("at line {line}, column {column}\n");
            assert!(e.to_string().contains(&at), "{text:?}: {at:?} in {e}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let c = Config::parse(
            Path::new("/srv/farm/config.toml"),
            &MINIMAL
                .replace("/etc/farmhand/recipes", "recipes")
                .replace("/var/lib/farmhand", "state"),
        )
        .unwrap();
        assert_eq!(c.manager.recipes_dir, Path::new("/srv/farm/recipes"));
        assert_eq!(c.manager.state_dir, Path::new("/srv/farm/state"));
        assert_eq!(c.http.control_token_file, None);
        let c = Config::parse(
            Path::new("/srv/farm/config.toml"),
            &format!("{MINIMAL}\n[http]\ncontrol_token_file = \"control-token\"\n"),
        )
        .unwrap();
        assert_eq!(
            c.http.control_token_file.as_deref(),
            Some(Path::new("/srv/farm/control-token"))
        );
        // A config given by a relative path still yields absolute paths.
        let c = Config::parse(
            Path::new("config.toml"),
            &MINIMAL.replace("/var/lib/farmhand", "state"),
        )
        .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.manager.state_dir, cwd.join("state"));
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("24h", 86_400_000),
            ("1.5h", 5_400_000),
            ("300ms", 300),
            ("0", 0),
            ("2m30s", 150_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s).unwrap().as_millis(), ms, "{s}");
        }
        for bad in [
            "", "5", "m", "5x", "-5m", "1h-5m", ".", "1.2.3s", "..5s", "5s.", "1e3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.000000001s").unwrap(), Duration::new(1, 1));
        assert!(parse_duration("99999999999h")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration(&format!("{}s", "9".repeat(400)))
            .unwrap_err()
            .contains("too long"));
        // Exact, so printing and re-parsing is stable even for long
        // durations (found by the config fuzz target).
        for s in [
            "2562047h47m16.854775807s",
            "2562047h47m16.8454775807s",
            "9223372036845ms",
        ] {
            let d = parse_duration(s).unwrap();
            let shown = format_duration(d);
            assert_eq!(
                format_duration(parse_duration(&shown).unwrap()),
                shown,
                "{s}"
            );
            assert_eq!(
                parse_duration(&shown).unwrap().as_millis(),
                d.as_millis(),
                "{s}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
