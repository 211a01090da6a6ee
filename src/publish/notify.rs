//! Notifications out (DESIGN.md section 16): each `[[notify]]` table gets
//! the events it subscribes to as JSON, POSTed to its `url` (signed with
//! `X-Farmhand-Signature-256: sha256=<hex HMAC-SHA256 of the body>` keyed
//! by its `secret_file`) or given on stdin to its `command` (a non-zero
//! exit is a failed delivery).
//!
//! Delivery never delays a build or the HTTP server: the worker hands an
//! event to [`Notifications::send`], which only puts it in each
//! subscribed target's queue and returns. Every target has its own queue
//! (a `broadcast` channel of [`QUEUE`] events, so a full queue drops its
//! oldest undelivered event, never blocks the sender) and its own task,
//! which delivers in order: each attempt within [`TIMEOUT`], retried
//! [`RETRY_BACKOFF`]`.len()` times with growing waits. A receiver that
//! hangs or is down holds up only its own queue. Every outcome is reported
//! (`delivered`, `failed`, `dropped`) for `farmhand_notifications_total`.
//!
//! A target is named `notify[<i>]` in the log, with the URL's host or the
//! command's program: a chat webhook URL carries its token in the path,
//! so the URL is never logged whole, and the secret never at all.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Request, Uri};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::model::config::{Config, NotifyTarget};
use crate::model::notify::{build_url, Notification, NotifyEvent, NotifyResult};
use crate::model::time::rfc3339;

/// Time allowed for one delivery attempt (connect, send, answer; or the
/// command's whole run).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The waits before the retries of a failed attempt.
pub const RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// Undelivered events each target holds; past that the oldest is dropped.
pub const QUEUE: usize = 64;
/// The bytes of a failing command's stderr kept for the log.
const STDERR_KEPT: u64 = 2048;

/// Counts an outcome (the status store's `farmhand_notifications_total`).
pub type Report = Arc<dyn Fn(NotifyResult) + Send + Sync>;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One event, serialised once for all its targets.
#[derive(Debug)]
struct Queued {
    event: NotifyEvent,
    recipe: String,
    version: String,
    body: Bytes,
}

/// Where one `[[notify]]` table delivers.
enum Kind {
    Http {
        uri: Uri,
        secret: Arc<[u8]>,
        client: Box<HttpClient>,
    },
    Command {
        argv: Vec<String>,
    },
}

struct Target {
    /// `notify[<i>]`.
    name: String,
    /// The waits before retries ([`RETRY_BACKOFF`]).
    backoff: &'static [Duration],
    /// The URL's host or the command's program, for the log.
    shown: String,
    kind: Kind,
}

struct Shared {
    farm_id: String,
    public_url: Option<String>,
    queues: Vec<(Vec<NotifyEvent>, broadcast::Sender<Arc<Queued>>)>,
}

/// The sending side, cheap to clone: the worker holds one. Sending with no
/// `[[notify]]` table configured does nothing.
#[derive(Clone, Default)]
pub struct Notifications {
    shared: Option<Arc<Shared>>,
}

impl Notifications {
    /// Queues `event` about build `build_id` of `recipe` at `version` for
    /// every target subscribed to it. Returns at once.
    pub fn send(
        &self,
        event: NotifyEvent,
        recipe: &str,
        version: &str,
        build_id: u64,
        error: Option<&str>,
    ) {
        let Some(shared) = &self.shared else { return };
        let mut queues = shared
            .queues
            .iter()
            .filter(|(on, _)| on.contains(&event))
            .map(|(_, q)| q)
            .peekable();
        if queues.peek().is_none() {
            return;
        }
        let doc = Notification {
            event,
            farm_id: shared.farm_id.clone(),
            recipe: recipe.to_string(),
            version: version.to_string(),
            build_id,
            error: error.map(str::to_string),
            build_url: build_url(shared.public_url.as_deref(), build_id),
            at: rfc3339(SystemTime::now()),
        };
        let mut body = serde_json::to_vec(&doc).unwrap_or_default();
        body.push(b'\n');
        let queued = Arc::new(Queued {
            event,
            recipe: recipe.to_string(),
            version: version.to_string(),
            body: Bytes::from(body),
        });
        for q in queues {
            // No receiver only once the target's task has stopped (shutdown).
            let _ = q.send(queued.clone());
        }
    }
}

/// The delivery tasks and a sender; [`Notifier::close`] ends them.
pub struct Notifier {
    sender: Notifications,
    tasks: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Starts one delivery task per `[[notify]]` table of `cfg`, reading
    /// their secret files now. An unreadable or empty secret file, a URL
    /// hyper cannot use or a TLS setup that fails is an error naming the
    /// table. Without tables nothing is started.
    pub fn start(cfg: &Config, report: Report) -> Result<Notifier, String> {
        Notifier::start_with(cfg, report, &RETRY_BACKOFF)
    }

    fn start_with(
        cfg: &Config,
        report: Report,
        backoff: &'static [Duration],
    ) -> Result<Notifier, String> {
        if cfg.notify.is_empty() {
            return Ok(Notifier {
                sender: Notifications::default(),
                tasks: Vec::new(),
            });
        }
        let mut client: Option<HttpClient> = None;
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for (i, n) in cfg.notify.iter().enumerate() {
            let name = format!("notify[{i}]");
            let (kind, shown) = match &n.target {
                NotifyTarget::Url { url, secret_file } => {
                    let uri: Uri = url
                        .parse()
                        .map_err(|e| format!("{}: {name}.url: {e}", cfg.path.display()))?;
                    let secret = read_secret(secret_file)?;
                    let client = match &client {
                        Some(c) => c.clone(),
                        None => {
                            let c = http_client()
                                .map_err(|e| format!("{name}: cannot set up TLS: {e}"))?;
                            client = Some(c.clone());
                            c
                        }
                    };
                    let shown = uri.host().unwrap_or("").to_string();
                    (
                        Kind::Http {
                            uri,
                            secret,
                            client: Box::new(client),
                        },
                        shown,
                    )
                }
                NotifyTarget::Command { argv } => (
                    Kind::Command { argv: argv.clone() },
                    argv.first().cloned().unwrap_or_default(),
                ),
            };
            let (tx, rx) = broadcast::channel(QUEUE);
            queues.push((n.on.clone(), tx));
            let target = Target {
                name,
                backoff,
                shown,
                kind,
            };
            tasks.push(tokio::spawn(run_target(target, rx, report.clone())));
        }
        Ok(Notifier {
            sender: Notifications {
                shared: Some(Arc::new(Shared {
                    farm_id: cfg.manager.id.clone(),
                    public_url: cfg.http.public_url.clone(),
                    queues,
                })),
            },
            tasks,
        })
    }

    /// A sender for the worker.
    pub fn sender(&self) -> Notifications {
        self.sender.clone()
    }

    /// Lets the tasks deliver what is queued for at most `grace`, then
    /// abandons the rest. Every other sender must be gone by then (the
    /// worker has stopped), or the tasks wait out the grace.
    pub async fn close(self, grace: Duration) {
        let Notifier { sender, tasks } = self;
        let pending: usize = sender
            .shared
            .as_ref()
            .map_or(0, |s| s.queues.iter().map(|(_, q)| q.len()).sum());
        drop(sender);
        if tasks.is_empty() {
            return;
        }
        if pending > 0 {
            info!(
                pending,
                grace = grace.as_secs(),
                "delivering queued notifications before exit"
            );
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut abandoned = false;
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
                abandoned = true;
            }
        }
        if abandoned {
            warn!(
                grace = grace.as_secs(),
                "notifications still undelivered at exit were abandoned"
            );
        }
    }
}

fn read_secret(path: &Path) -> Result<Arc<[u8]>, String> {
    crate::host::keys::read_secret(
        path,
        "notification secret",
        "notifications are always signed",
    )
}

fn http_client() -> Result<HttpClient, String> {
    let tls = native_tls::TlsConnector::new().map_err(|e| e.to_string())?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(TIMEOUT));
    http.set_nodelay(true);
    let https = HttpsConnector::from((http, tls.into()));
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

/// Delivers the target's queue in order until every sender is gone.
async fn run_target(target: Target, mut rx: broadcast::Receiver<Arc<Queued>>, report: Report) {
    loop {
        match rx.recv().await {
            Ok(q) => report(deliver(&target, &q).await),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(notify = %target.name, target = %target.shown, dropped = n, "notifications dropped: the queue was full");
                for _ in 0..n {
                    report(NotifyResult::Dropped);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One event to one target: the first attempt and one retry after each
/// wait of the target's backoff.
async fn deliver(target: &Target, q: &Queued) -> NotifyResult {
    let attempts = target.backoff.len() + 1;
    let mut last_err = String::new();
    for attempt in 1..=attempts {
        let tried = tokio::time::timeout(TIMEOUT, attempt_once(target, q))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", TIMEOUT.as_secs())));
        match tried {
            Ok(()) => {
                info!(notify = %target.name, target = %target.shown, event = q.event.as_str(), recipe = %q.recipe, version = %q.version, attempts = attempt, "notification delivered");
                return NotifyResult::Delivered;
            }
            Err(e) => {
                debug!(notify = %target.name, target = %target.shown, event = q.event.as_str(), recipe = %q.recipe, attempt, err = %e, "notification attempt failed");
                last_err = e;
            }
        }
        if let Some(wait) = target.backoff.get(attempt - 1) {
            tokio::time::sleep(*wait).await;
        }
    }
    warn!(notify = %target.name, target = %target.shown, event = q.event.as_str(), recipe = %q.recipe, version = %q.version, attempts, err = %last_err, "notification failed");
    NotifyResult::Failed
}

async fn attempt_once(target: &Target, q: &Queued) -> Result<(), String> {
    match &target.kind {
        Kind::Http {
            uri,
            secret,
            client,
        } => post(client, uri, secret, q).await,
        Kind::Command { argv } => run_command(argv, &q.body).await,
    }
}

/// `X-Farmhand-Signature-256` of `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(client: &HttpClient, uri: &Uri, secret: &[u8], q: &Queued) -> Result<(), String> {
    let sig = HeaderValue::from_str(&signature(secret, &q.body)).map_err(|e| e.to_string())?;
    let req = Request::post(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("farmhand/", env!("CARGO_PKG_VERSION")))
        .header("X-Farmhand-Event", q.event.as_str())
        .header("X-Farmhand-Signature-256", sig)
        .body(Full::new(q.body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered HTTP {status}"))
    }
}

/// An error and its sources on one line, each cause once.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Runs the command with `body` on stdin; a non-zero exit fails, with the
/// start of its stderr. The command is killed when the attempt times out
/// (the future is dropped).
async fn run_command(argv: &[String], body: &Bytes) -> Result<(), String> {
    let shown = argv.join(" ");
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let write = async move {
        // A command that does not read its stdin is not an error by itself.
        let _ = stdin.write_all(body).await;
    };
    let read = async move {
        let mut kept = Vec::new();
        let _ = (&mut stderr).take(STDERR_KEPT).read_to_end(&mut kept).await;
        kept
    };
    let ((), kept) = tokio::join!(write, read);
    let status = child.wait().await.map_err(|e| format!("`{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&kept);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Err(format!("`{shown}` failed ({status}): {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config(notify: &str, dir: &Path) -> Config {
        let text = format!(
            "[manager]\nid = \"f\"\nrecipes_dir = \"r\"\nstate_dir = \"s\"\n[repo]\nname = \"p\"\n\
             [poll]\ndefault_interval = \"1h\"\n[http]\npublic_url = \"https://farm.example.org/\"\n{notify}"
        );
        Config::parse(&dir.join("config.toml"), &text).unwrap()
    }

    fn counter() -> (Report, Arc<[AtomicUsize; 3]>) {
        let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let c = counts.clone();
        let report: Report = Arc::new(move |r| {
            let i = match r {
                NotifyResult::Delivered => 0,
                NotifyResult::Failed => 1,
                NotifyResult::Dropped => 2,
            };
            c[i].fetch_add(1, Ordering::SeqCst);
        });
        (report, counts)
    }

    #[tokio::test]
    async fn command_gets_the_json_on_stdin_and_only_subscribed_events() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cfg = config(
            &format!(
                "[[notify]]\non = [\"failed\"]\ncommand = [\"sh\", \"-c\", \"cat >> {}\"]\n",
                out.display()
            ),
            dir.path(),
        );
        let (report, counts) = counter();
        let n = Notifier::start(&cfg, report).unwrap();
        let s = n.sender();
        s.send(NotifyEvent::Published, "r", "1.0-1", 1, None);
        s.send(
            NotifyEvent::Failed,
            "r",
            "1.1-1",
            2,
            Some("building: exit 1"),
        );
        drop(s);
        n.close(Duration::from_secs(10)).await;
        let text = std::fs::read_to_string(&out).unwrap();
        let docs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 1, "{text}");
        assert_eq!(docs[0]["event"], "failed");
        assert_eq!(docs[0]["version"], "1.1-1");
        assert_eq!(docs[0]["error"], "building: exit 1");
        assert_eq!(docs[0]["farm_id"], "f");
        assert_eq!(docs[0]["build_url"], "https://farm.example.org/builds/2");
        assert_eq!(counts[0].load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failing_command_is_retried_then_counted_failed() {
        let dir = tempfile::tempdir().unwrap();
        let tries = dir.path().join("tries");
        let cfg = config(
            &format!(
                "[[notify]]\non = [\"published\"]\ncommand = [\"sh\", \"-c\", \"echo x >> {}; echo nope >&2; exit 3\"]\n",
                tries.display()
            ),
            dir.path(),
        );
        let (report, counts) = counter();
        const QUICK: [Duration; 3] = [Duration::from_millis(10); 3];
        let n = Notifier::start_with(&cfg, report, &QUICK).unwrap();
        n.sender()
            .send(NotifyEvent::Published, "r", "1.0-1", 1, None);
        n.close(Duration::from_secs(60)).await;
        assert_eq!(std::fs::read_to_string(&tries).unwrap().lines().count(), 4);
        assert_eq!(counts[1].load(Ordering::SeqCst), 1);
        assert_eq!(counts[0].load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_events() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cfg = config(
            &format!(
                "[[notify]]\non = [\"published\"]\ncommand = [\"sh\", \"-c\", \"cat >> {}; echo >> {}\"]\n",
                out.display(),
                out.display()
            ),
            dir.path(),
        );
        let (report, counts) = counter();
        let n = Notifier::start(&cfg, report).unwrap();
        let s = n.sender();
        // Sent before the delivery task first runs: the queue holds the
        // newest QUEUE of them.
        for i in 0..QUEUE as u64 + 6 {
            s.send(NotifyEvent::Published, "r", &format!("{i}-1"), i, None);
        }
        drop(s);
        n.close(Duration::from_secs(60)).await;
        assert_eq!(counts[2].load(Ordering::SeqCst), 6);
        assert_eq!(counts[0].load(Ordering::SeqCst), QUEUE);
        let text = std::fs::read_to_string(&out).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["build_id"], 6, "the oldest six were dropped");
    }

    #[test]
    fn signatures_are_github_style_hex() {
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn errors_chain_their_causes() {
        let e = std::io::Error::other("outer");
        assert_eq!(error_chain(&e), "outer");
    }
}
