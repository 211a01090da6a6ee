//! The HTTP server (hyper 1.x, HTTP/1.1, no framework): `/healthz`,
//! `/status`, `/metrics`, `/builds`, `/builds/{id}`, `/builds/{id}/log`,
//! `/recipes/{id}`, `/events`, `POST /webhooks/{github,gitlab,gitea,bitbucket}`,
//! the control API (`serve::control`) and the console pages (`/`,
//! `/assets/`, and `/builds/{id}` and `/recipes/{id}` for browsers).
//!
//! [`route`] decides where a request goes from its method, path and query
//! alone; it is pure, total and fuzzed (no path can panic a handler).
//! Headers must arrive within [`HEADER_TIMEOUT`] (a deadline, not an idle
//! timer: trickling bytes does not extend it); webhook bodies are limited
//! to 25 MiB, refused from `Content-Length` or while streaming, before any
//! HMAC work, must arrive within [`BODY_TIMEOUT`], and share one
//! [`limits::BODY_BUDGET`] over all connections (503 with `Retry-After`
//! when it is spent). Build logs are streamed in chunks of [`LOG_CHUNK`]
//! from descriptors the daemon opened itself ([`logs::open`]: no link, no
//! FIFO). Connections and log readers are capped below the descriptor
//! limit ([`limits::Caps`]). `HEAD` works on every `GET`. Errors are short
//! plain-text bodies. The server lives for the daemon's whole life: a
//! reload never bounces it.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::host::health::Health;
use crate::model::build::BuildState;
use crate::model::build::Trigger;
use crate::model::control::Paused;
use crate::model::recipe::Roster;
use crate::serve::api::{self, Representation};
use crate::serve::builds::BuildQuery;
use crate::serve::control::{self, ControlApi};
use crate::serve::events;
use crate::serve::limits::{self, Budget, Caps, StallGuard};
use crate::serve::logs;
use crate::serve::pages;
use crate::serve::status::Status;
use crate::serve::status::{BuildLog, LogFile};
use crate::watch::forge::{self, Event, Webhook};
use crate::watch::github;
use crate::watch::poll::PollRequest;
use crate::watch::{Forge, WebhookResult};

/// Time allowed for a client to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a client to send a webhook body (GitHub gives up on a
/// delivery after 10 s anyway).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Delivery ids remembered for redelivery detection.
const DELIVERIES_REMEMBERED: usize = 10_000;
/// Bytes read from a running build's log at a time.
pub const LOG_CHUNK: usize = logs::CHUNK;
/// Most bytes hyper buffers per connection (request head, body reads,
/// queued answer).
const CONNECTION_BUFFER: usize = 64 * 1024;
/// How often a followed log of a running build is checked for more.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// `Retry-After` (seconds) when the webhook body budget is spent: every
/// body in it is done within [`BODY_TIMEOUT`].
const BUDGET_RETRY_AFTER: &str = "10";
/// `Retry-After` (seconds) when every log reader slot is taken.
const READERS_RETRY_AFTER: &str = "5";
/// Least time between two warnings of one kind of refusal.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The webhook secret, swappable on reload.
pub type Secret = Arc<RwLock<Option<Arc<[u8]>>>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// What the handlers need.
pub struct HttpState {
    /// Counters.
    pub status: Arc<Status>,
    /// Liveness.
    pub health: Arc<Health>,
    /// Current roster (webhook routing).
    pub roster: watch::Receiver<Arc<Roster>>,
    /// The webhook secret.
    pub secret: Secret,
    /// Immediate poll requests.
    pub polls: mpsc::Sender<PollRequest>,
    /// Shutdown.
    pub cancel: CancellationToken,
    /// The control API (off unless [`HttpState::with_control`] turns it on).
    pub control: ControlApi,
    /// Paused recipes, whose webhooks trigger nothing.
    pub paused: watch::Receiver<Paused>,
    deliveries: Mutex<Deliveries>,
    /// Webhook bodies being buffered, over all connections.
    bodies: Arc<Budget>,
    /// Warnings of refused requests, at most one per [`WARN_EVERY`].
    budget_warning: Throttle,
    pages: pages::Cache,
}

/// Lets a repeated warning through at most once per [`WARN_EVERY`],
/// counting the ones it held back.
#[derive(Default)]
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    /// `Some(held back since the last one)` when a warning may go out now.
    fn pass(&self) -> Option<u64> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, held) = &mut *g;
        if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            *held += 1;
            return None;
        }
        *last = Some(Instant::now());
        Some(std::mem::take(held))
    }
}

#[derive(Default)]
struct Deliveries {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Deliveries {
    /// Records `id`; false if it was already seen.
    fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        while self.order.len() > DELIVERIES_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

impl HttpState {
    /// Builds the handler state.
    pub fn new(
        status: Arc<Status>,
        health: Arc<Health>,
        roster: watch::Receiver<Arc<Roster>>,
        secret: Secret,
        polls: mpsc::Sender<PollRequest>,
        cancel: CancellationToken,
    ) -> HttpState {
        HttpState {
            status,
            health,
            roster,
            secret,
            polls,
            cancel,
            control: ControlApi::disabled(),
            paused: watch::channel(Paused::default()).1,
            deliveries: Mutex::new(Deliveries::default()),
            bodies: Budget::new(limits::BODY_BUDGET),
            budget_warning: Throttle::default(),
            pages: pages::Cache::default(),
        }
    }

    /// Serves the control API `control`; webhooks for the recipes in
    /// `paused` trigger nothing.
    pub fn with_control(
        mut self,
        control: ControlApi,
        paused: watch::Receiver<Paused>,
    ) -> HttpState {
        self.control = control;
        self.paused = paused;
        self
    }
}

/// Where a request goes, decided by [`route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /`: the console.
    Console,
    /// `GET /assets/...`, the whole path.
    Asset(&'a str),
    /// `GET /healthz`.
    Healthz,
    /// `GET /status`.
    Status,
    /// `GET /metrics`.
    Metrics,
    /// `GET /builds`, filtered by the query.
    Builds,
    /// `GET /events`.
    Events,
    /// `GET /builds/{id}`, the id as sent (one path segment).
    Build(&'a str),
    /// `GET /builds/{id}/log`; `follow` from `?follow=1` (or `=true`).
    BuildLog {
        /// The build id (a positive decimal without leading zeros).
        id: u64,
        /// Stream until the build ends.
        follow: bool,
    },
    /// `GET /recipes/{id}`, the id as sent (percent-encoded).
    Recipe(&'a str),
    /// `POST /webhooks/{github,gitlab,gitea,bitbucket}`.
    Webhook(Forge),
    /// The control API (section 15): `POST /recipes/{id}/{poll,pause,resume}`,
    /// `POST /builds/{id}/cancel`, `POST /failures/{key}/retry`; the target
    /// is read by [`control::ControlApi::answer`].
    Control,
    /// A known path with another method: 405 with this `Allow`.
    MethodNotAllowed(&'static str),
    /// Anything else: 404, whatever the method.
    NotFound,
}

const GET_HEAD: &str = "GET, HEAD";

/// Routes a request from its method (as sent, case-sensitive), path and
/// query. Pure and total: any input gives a [`Route`], never a panic;
/// `HEAD` goes wherever `GET` does; an unknown path is [`Route::NotFound`]
/// whatever the method.
pub fn route<'a>(method: &str, path: &'a str, query: Option<&str>) -> Route<'a> {
    let only = |allow: &'static str, target: Route<'a>| {
        let allowed = match allow {
            "POST" => method == "POST",
            _ => matches!(method, "GET" | "HEAD"),
        };
        if allowed {
            target
        } else {
            Route::MethodNotAllowed(allow)
        }
    };
    if let Some(forge) = Forge::from_path(path) {
        return only("POST", Route::Webhook(forge));
    }
    match path {
        "/" => return only(GET_HEAD, Route::Console),
        "/healthz" => return only(GET_HEAD, Route::Healthz),
        "/status" => return only(GET_HEAD, Route::Status),
        "/metrics" => return only(GET_HEAD, Route::Metrics),
        "/builds" => return only(GET_HEAD, Route::Builds),
        "/events" => return only(GET_HEAD, Route::Events),
        _ => {}
    }
    if control::is_control_path(path) {
        return only("POST", Route::Control);
    }
    if path.starts_with("/assets/") {
        return only(GET_HEAD, Route::Asset(path));
    }
    if let Some(rest) = path.strip_prefix("/builds/") {
        if let Some(id) = rest.strip_suffix("/log") {
            return match build_id(id) {
                Some(id) => only(
                    GET_HEAD,
                    Route::BuildLog {
                        id,
                        follow: follow_requested(query),
                    },
                ),
                None => Route::NotFound,
            };
        }
        if !rest.is_empty() && !rest.contains('/') {
            return only(GET_HEAD, Route::Build(rest));
        }
        return Route::NotFound;
    }
    match path.strip_prefix("/recipes/") {
        Some(id) if !id.is_empty() && !id.contains('/') => only(GET_HEAD, Route::Recipe(id)),
        _ => Route::NotFound,
    }
}

/// A build id as it appears in a path: decimal digits, no leading zero, no
/// sign, at most `u64::MAX`.
fn build_id(s: &str) -> Option<u64> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// True when the query asks to follow a log: a `follow=1` or
/// `follow=true` pair.
fn follow_requested(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "follow=1" || kv == "follow=true")
    })
}

/// At most `max` characters of `s`, marked when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}...", &s[..i]),
    }
}

/// Binds the listener (an error names the address).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves until `cancel`, then lets open requests finish (up to 5 s).
///
/// First raises the soft limit on open files to the hard one
/// ([`limits::raise_nofile_limit`]) and sizes its [`Caps`] from it: at the
/// connection cap it accepts nothing until a connection closes (the
/// others wait in the listen backlog), so the daemon keeps
/// [`limits::FD_RESERVE`] descriptors for polls, builds and reloads. An
/// `accept` that fails for want of descriptors or memory is retried after
/// a pause that grows to 1 s, with one warning per 10 s.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let nofile = limits::raise_nofile_limit().unwrap_or_else(|e| {
        warn!(err = %e, "cannot read the open-file limit; assuming 1024");
        1024
    });
    let caps = Caps::for_nofile(nofile);
    info!(
        addr = %addr,
        max_connections = caps.connections,
        open_files_limit = nofile,
        "webhook server listening"
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(caps.connections));
    let readers = Arc::new(Semaphore::new(caps.log_readers));
    let cancel = state.cancel.clone();
    let accept_warning = Throttle::default();
    let mut failures = 0u32;
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => {
                    failures = 0;
                    x
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if let Some(held_back) = accept_warning.pass() {
                        warn!(err = %e, repeated = held_back, "accept failed");
                    }
                    // Out of descriptors or memory: wait for some to be
                    // given back rather than spin. Anything else (a client
                    // gone before its accept) is retried almost at once.
                    let pause = if limits::is_resource_exhaustion(&e) {
                        limits::accept_backoff(failures)
                    } else {
                        limits::accept_backoff(failures) / 10
                    };
                    drop(permit);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let readers = readers.clone();
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(CONNECTION_BUFFER)
            .keep_alive(true)
            .serve_connection(
                TokioIo::new(StallGuard::new(stream, limits::WRITE_STALL)),
                service_fn(move |req| {
                    let st = st.clone();
                    let readers = readers.clone();
                    async move { Ok::<_, Infallible>(handle(req, peer, &st, &readers).await) }
                }),
            );
        let fut = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = fut.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut s: String = body.into();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    let mut r = Response::new(full(s));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn with_type(body: Bytes, ctype: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// 503 with `Retry-After`.
fn unavailable(body: &str, retry_after: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, body);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(retry_after));
    r
}

const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    st: &HttpState,
    readers: &Arc<Semaphore>,
) -> Response<Body> {
    let uri = req.uri().clone();
    match route(req.method().as_str(), uri.path(), uri.query()) {
        Route::Healthz => match st.health.check() {
            Ok(()) => match st.status.held() {
                None => text(StatusCode::OK, "ok"),
                Some(held) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("builds held: {held}"),
                ),
            },
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        Route::Status => {
            if prefers_prometheus(req.headers().get(hyper::header::ACCEPT)) {
                with_type(st.status.metrics(), PROMETHEUS_TYPE)
            } else {
                with_type(st.status.json(), "application/json")
            }
        }
        Route::Metrics => with_type(st.status.metrics(), PROMETHEUS_TYPE),
        Route::Builds => match BuildQuery::parse(uri.query()) {
            Ok(q) => json(&st.status.builds(&q)),
            Err(e) => text(StatusCode::BAD_REQUEST, e),
        },
        Route::Events => event_stream(&req, st),
        Route::Build(id) => {
            let doc = build_id(id).and_then(|id| st.status.build_detail(id));
            let id = shorten(id, 100);
            match (doc, wants_page(&req)) {
                (Some(doc), true) => pages::build(&st.status, &doc).await.map(full),
                (Some(doc), false) => json(&doc),
                (None, true) => pages::missing(&st.status, &format!("No build {id:?}.")).map(full),
                (None, false) => text(StatusCode::NOT_FOUND, format!("no build {id:?}")),
            }
        }
        Route::BuildLog { id, follow } => {
            let zstd_ok = logs::accepts_zstd(req.headers().get(hyper::header::ACCEPT_ENCODING));
            let head = req.method() == Method::HEAD;
            build_log(id, follow, zstd_ok, head, st, readers).await
        }
        Route::Recipe(id) => {
            let doc = crate::serve::builds::percent_decode(id)
                .filter(|id| crate::model::name::is_safe_component(id))
                .and_then(|id| api::recipe_doc(&st.roster.borrow(), &st.status, &id));
            let id = shorten(id, 100);
            match (doc, wants_page(&req)) {
                (Some(doc), true) => {
                    let roster = st.roster.borrow().clone();
                    pages::recipe(&st.status, &roster, &doc).map(full)
                }
                (Some(doc), false) => json(&doc),
                (None, true) => pages::missing(&st.status, &format!("No recipe {id:?}.")).map(full),
                (None, false) => text(StatusCode::NOT_FOUND, format!("no recipe {id:?}")),
            }
        }
        Route::Console => {
            let roster = st.roster.borrow().clone();
            pages::overview(&st.status, roster, uri.query(), &st.pages)
                .await
                .map(full)
        }
        Route::Asset(path) => pages::asset(path).map(full),
        Route::Webhook(forge) => webhook(forge, req, peer, st).await,
        Route::Control => {
            let auth = req.headers().get(AUTHORIZATION);
            st.control
                .answer(uri.path(), auth, peer)
                .await
                .map(|b| b.map_err(|never| match never {}).boxed())
        }
        Route::MethodNotAllowed(allow) => method_not_allowed(allow),
        Route::NotFound => text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {}", shorten(uri.path(), 100)),
        ),
    }
}

/// `value` as pretty JSON.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    with_type(Bytes::from(body), "application/json")
}

/// True when the request prefers the console page of a document of
/// `/builds/{id}` or `/recipes/{id}` to its JSON.
fn wants_page(req: &Request<Incoming>) -> bool {
    api::negotiate(req.headers().get(hyper::header::ACCEPT)) == Representation::Html
}

/// `GET /events`: Server-Sent Events, resuming after `Last-Event-ID`;
/// 503 when every subscriber slot is taken.
fn event_stream(req: &Request<Incoming>, st: &HttpState) -> Response<Body> {
    let stream_headers = |mut r: Response<Body>| {
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    };
    if req.method() == Method::HEAD {
        return stream_headers(Response::new(full(Bytes::new())));
    }
    let last = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    let bus = st.status.events().clone();
    match bus.subscribe(last) {
        Ok(sub) => {
            let body = events::stream(bus, sub, st.cancel.clone());
            stream_headers(Response::new(body.map_err(|never| match never {}).boxed()))
        }
        Err(full) => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, full.to_string());
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// True when the `Accept` header prefers Prometheus text over JSON.
pub fn prefers_prometheus(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let (mut text_q, mut json_q) = (0.0f32, 0.0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|v| v.parse::<f32>().ok())
            .unwrap_or(1.0);
        match mime.as_str() {
            "text/plain" | "application/openmetrics-text" => text_q = text_q.max(q),
            "application/json" | "application/*" | "*/*" => json_q = json_q.max(q),
            _ => {}
        }
    }
    text_q > json_q
}

/// One webhook request from `forge`: the body is read within its limit,
/// the signature checked before the JSON is parsed, a redelivery answered
/// once, and a tag event for a watched upstream turned into poll requests.
async fn webhook(
    forge: Forge,
    req: Request<Incoming>,
    peer: SocketAddr,
    st: &HttpState,
) -> Response<Body> {
    let too_large = || {
        st.status.webhook(forge, WebhookResult::TooLarge);
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large (limit 25 MiB)",
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > github::MAX_BODY as u64) {
        return too_large();
    }
    let hook = Webhook::new(forge, |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    // Every byte buffered is first reserved from the budget all connections
    // share: a declared length at once, before any body is read; a body
    // without one as it arrives. When it does not fit, the request is
    // refused (503, Retry-After); the reservation ends with this function.
    let busy = || {
        if let Some(held_back) = st.budget_warning.pass() {
            warn!(
                remote = %peer,
                forge = forge.as_str(),
                in_use = st.bodies.in_use(),
                limit = st.bodies.limit(),
                repeated = held_back,
                "webhook refused: body budget spent"
            );
        }
        unavailable(
            "too many webhook bodies being received; retry later",
            BUDGET_RETRY_AFTER,
        )
    };
    let Some(mut held) = st.bodies.reserve(declared.unwrap_or(0) as usize) else {
        return busy();
    };
    // One buffer, sized from Content-Length when there is one, grown (never
    // past the limit) while streaming; a body over the limit is refused as
    // soon as its size shows, and the buffer is released at once. A client
    // that stalls mid-body is answered 408 after BODY_TIMEOUT.
    let mut incoming = req.into_body();
    let mut body: Vec<u8> = Vec::with_capacity(held.bytes());
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                st.status.webhook(forge, WebhookResult::BadRequest);
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body not received within {}s",
                        BODY_TIMEOUT.as_secs()
                    ),
                );
            }
        };
        let Ok(frame) = frame else {
            st.status.webhook(forge, WebhookResult::BadRequest);
            return text(StatusCode::BAD_REQUEST, "could not read request body");
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let need = body.len() + data.len();
        if need > github::MAX_BODY {
            return too_large();
        }
        if need > body.capacity() {
            let grown = (body.capacity() * 2).clamp(need, github::MAX_BODY);
            let size = if held.grow_to(grown) {
                grown
            } else if held.grow_to(need) {
                need
            } else {
                return busy();
            };
            body.reserve_exact(size - body.len());
        }
        body.extend_from_slice(&data);
    }
    let secret = st
        .secret
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let delivery = hook.delivery().unwrap_or("");
    let verified = match secret.as_deref() {
        Some(s) => hook.verify(s, &body, std::time::SystemTime::now()),
        None => Err(hook.unsigned()),
    };
    if let Err(why) = verified {
        st.status.webhook(forge, WebhookResult::InvalidSignature);
        warn!(
            remote = %peer,
            forge = forge.as_str(),
            delivery,
            has_signature = hook.has_signature(),
            reason = why,
            "webhook signature invalid"
        );
        return text(StatusCode::UNAUTHORIZED, why);
    }
    let payload = match forge::parse_payload(forge, &body) {
        Ok(p) => p,
        Err(e) => {
            st.status.webhook(forge, WebhookResult::BadRequest);
            return text(StatusCode::BAD_REQUEST, e);
        }
    };
    if !delivery.is_empty() {
        let first = st
            .deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first_time(&format!("{forge}:{delivery}"));
        if !first {
            st.status.webhook(forge, WebhookResult::Duplicate);
            info!(
                forge = forge.as_str(),
                delivery, "webhook redelivery ignored"
            );
            return text(StatusCode::OK, "duplicate delivery, already handled");
        }
    }
    match hook.event() {
        Event::Ping => {
            st.status.webhook(forge, WebhookResult::Pong);
            text(StatusCode::OK, "pong")
        }
        Event::Tags(event) => {
            let roster = st.roster.borrow().clone();
            let (mut recipes, known) = forge::route_all(&roster, &payload);
            // A paused recipe is treated as an opted-out one.
            let paused = st.paused.borrow().clone();
            for r in recipes.iter().filter(|r| paused.contains(*r)) {
                info!(recipe = %r, "webhook for a paused recipe ignored");
            }
            recipes.retain(|r| !paused.contains(r));
            if recipes.is_empty() {
                st.status.webhook(forge, WebhookResult::NotWatched);
                let url = payload.urls.first().map(String::as_str).unwrap_or("");
                info!(
                    forge = forge.as_str(),
                    html_url = url,
                    known,
                    "webhook for unrecognised or opted-out repo"
                );
                return text(StatusCode::OK, "repository not watched");
            }
            for r in &recipes {
                info!(recipe = %r, forge = forge.as_str(), event = %event, delivery, "webhook accepted, triggering immediate poll");
                // The scheduler takes requests as fast as they come; an
                // upstream shared by more recipes than the line holds
                // (1,024) waits for room rather than losing polls.
                let request = PollRequest {
                    recipe: r.clone(),
                    trigger: Trigger::Webhook,
                };
                let sent = tokio::time::timeout(POLL_REQUEST_WAIT, st.polls.send(request)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    warn!(recipe = %r, "poll request queue full; the scheduled poll will catch up");
                }
            }
            st.status.webhook(forge, WebhookResult::Accepted);
            text(
                StatusCode::ACCEPTED,
                format!("accepted: polling {}", recipes.join(", ")),
            )
        }
        Event::Other(other) => {
            st.status.webhook(forge, WebhookResult::NotWatched);
            info!(forge = forge.as_str(), event = %other, "webhook event ignored");
            text(StatusCode::OK, format!("event {other:?} ignored"))
        }
        Event::Missing => {
            st.status.webhook(forge, WebhookResult::BadRequest);
            text(
                StatusCode::BAD_REQUEST,
                format!("missing {} header", hook.event_header()),
            )
        }
    }
}

/// How long a webhook waits for room in the scheduler's line of poll
/// requests before it leaves a recipe to its scheduled poll.
const POLL_REQUEST_WAIT: Duration = Duration::from_secs(5);

/// A log answer's body with the log reader's slot, given back when hyper
/// drops the body (the answer is sent, or the client went away).
struct Slotted {
    body: Body,
    _slot: OwnedSemaphorePermit,
}

impl hyper::body::Body for Slotted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A running build's log as an answer body: chunks read by [`pump_log`],
/// one at a time. With a known length (a snapshot) hyper sends
/// `Content-Length`; an error (the file shrank or failed) aborts the
/// connection rather than end a short answer as if it were whole.
struct LogBody {
    chunks: mpsc::Receiver<Result<Bytes, BoxError>>,
    remaining: Option<u64>,
}

impl hyper::body::Body for LogBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(n) = &mut self.remaining {
                    *n = n.saturating_sub(b.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Opens a running build's log like [`logs::open`] (no link, no FIFO);
/// returns the file and its length now.
async fn open_log(path: PathBuf) -> std::io::Result<(std::fs::File, u64)> {
    tokio::task::spawn_blocking(move || {
        let f = logs::open(&path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Up to `len` bytes of `file` from `offset` (empty at its end).
async fn read_chunk(file: Arc<std::fs::File>, offset: u64, len: usize) -> std::io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        let n = file.read_at(&mut buf, offset)?;
        buf.truncate(n);
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A running build whose log is followed.
struct Follow {
    status: Arc<Status>,
    id: u64,
    file: LogFile,
    cancel: CancellationToken,
}

/// Feeds a [`LogBody`] from a running build's log, [`LOG_CHUNK`] at a
/// time, each read only once the one before was taken: memory per reader
/// stays at a few chunks (one read, one queued, one in hyper's buffer)
/// however slowly its client reads. A snapshot (`end`) stops there; a
/// followed log reads what was added every [`FOLLOW_INTERVAL`] until the
/// build ends (or shutdown, or the client goes). The descriptor opened
/// once is read to its end even after the log is compressed and removed.
async fn pump_log(
    mut file: Option<Arc<std::fs::File>>,
    end: Option<u64>,
    follow: Option<Follow>,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
) {
    let mut offset = 0u64;
    loop {
        let running = follow
            .as_ref()
            .is_some_and(|f| f.status.build_state(f.id) == Some(BuildState::Running));
        if let (None, Some(f)) = (&file, &follow) {
            match open_log(f.file.plain.clone()).await {
                Ok((opened, _)) => file = Some(Arc::new(opened)),
                // Ended before its log was opened here: the log is
                // compressed now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !running => {
                    let file = f.file.clone();
                    let from =
                        tokio::task::spawn_blocking(move || logs::compressed_from(&file, offset))
                            .await
                            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    let _ = send_all(from, &tx).await;
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(build_id = f.id, path = %f.file.plain.display(), err = %e, "build log not served");
                    let _ = tx.send(Err("build log unreadable".into())).await;
                    return;
                }
            }
        }
        if let Some(f) = &file {
            loop {
                let want = match end {
                    Some(end) => (end - offset).min(LOG_CHUNK as u64) as usize,
                    None => LOG_CHUNK,
                };
                if want == 0 {
                    break;
                }
                match read_chunk(f.clone(), offset, want).await {
                    Ok(b) if b.is_empty() => {
                        if end.is_some() {
                            let _ = tx.send(Err("build log shrank".into())).await;
                            return;
                        }
                        break;
                    }
                    Ok(b) => {
                        offset += b.len() as u64;
                        if tx.send(Ok(b)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        }
        let Some(f) = &follow else { return };
        if !running {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            _ = f.cancel.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}

/// Sends what `reader` gives, [`LOG_CHUNK`] at a time (see
/// [`logs::next_chunk`]), until its end; false when it failed.
async fn send_all(
    reader: std::io::Result<impl std::io::Read + Send + 'static>,
    tx: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> bool {
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e.into())).await;
            return false;
        }
    };
    loop {
        let Some((back, chunk)) = logs::next_chunk(reader).await else {
            return false;
        };
        reader = back;
        match chunk {
            Ok(b) if b.is_empty() => return true,
            Ok(b) => {
                if tx.send(Ok(b)).await.is_err() {
                    return false;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return false;
            }
        }
    }
}

/// A finished build's log ([`logs::finished`]).
async fn finished_log(file: &LogFile, zstd_ok: bool, head: bool) -> Option<Response<Body>> {
    logs::finished(file, zstd_ok, head)
        .await
        .map(|r| r.map(|b| b.map_err(|never| match never {}).boxed()))
}

async fn build_log(
    id: u64,
    follow: bool,
    zstd_ok: bool,
    head: bool,
    st: &HttpState,
    readers: &Arc<Semaphore>,
) -> Response<Body> {
    let pruned = || {
        text(
            StatusCode::NOT_FOUND,
            format!("the log of build {id} was pruned"),
        )
    };
    let file = match st.status.build_log(id) {
        BuildLog::File(f) => f,
        BuildLog::Pruned => return pruned(),
        BuildLog::Unknown => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no build {id} (only the last [history].keep builds are kept)"),
            )
        }
    };
    let Ok(slot) = readers.clone().try_acquire_owned() else {
        return unavailable(
            "too many build logs being read; retry later",
            READERS_RETRY_AFTER,
        );
    };
    let answer = if file.running {
        running_log(id, follow, zstd_ok, head, file, st).await
    } else {
        finished_log(&file, zstd_ok, head)
            .await
            .unwrap_or_else(pruned)
    };
    answer.map(|body| Slotted { body, _slot: slot }.boxed())
}

/// The log of a running build: what it holds now, or (`follow`) all of it
/// until the build ends.
async fn running_log(
    id: u64,
    follow: bool,
    zstd_ok: bool,
    head: bool,
    file: LogFile,
    st: &HttpState,
) -> Response<Body> {
    let opened = match open_log(file.plain.clone()).await {
        Ok((f, len)) => Some((Arc::new(f), len)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!(build_id = id, path = %file.plain.display(), err = %e, "build log not served");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the log of build {id} cannot be served"),
            );
        }
    };
    let (opened, end) = match (opened, follow) {
        (Some((f, len)), false) => (Some(f), Some(len)),
        (Some((f, _)), true) => (Some(f), None),
        (None, true) => (None, None),
        // It may have ended (and its log been compressed) just now.
        (None, false) => {
            return match finished_log(&file, zstd_ok, head).await {
                Some(r) => r,
                None => text(StatusCode::OK, ""),
            }
        }
    };
    let follow = follow.then(|| Follow {
        status: st.status.clone(),
        id,
        file,
        cancel: st.cancel.clone(),
    });
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(pump_log(opened, end, follow, tx));
    let mut r = Response::new(
        LogBody {
            chunks: rx,
            remaining: end,
        }
        .boxed(),
    );
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `/{kind}/{target}/{action}` of the control API.
    fn is_control(path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        parts.len() == 4
            && parts[0].is_empty()
            && matches!(
                (parts[1], parts[3]),
                ("recipes", "poll" | "pause" | "resume")
                    | ("builds", "cancel")
                    | ("failures", "retry")
            )
    }

    /// What [`route`] should answer, written independently of it.
    fn expected_route<'a>(method: &str, path: &'a str, query: Option<&str>) -> Route<'a> {
        let get = method == "GET" || method == "HEAD";
        let post = method == "POST";
        use std::sync::LazyLock;
        static LOG: LazyLock<regex::Regex> =
            LazyLock::new(|| regex::Regex::new(r"^/builds/([1-9][0-9]*)/log$").unwrap());
        static LOG_LIKE: LazyLock<regex::Regex> =
            LazyLock::new(|| regex::Regex::new(r"^/builds/.*/log$").unwrap());
        static BUILD: LazyLock<regex::Regex> =
            LazyLock::new(|| regex::Regex::new(r"^/builds/([^/]+)$").unwrap());
        static RECIPE: LazyLock<regex::Regex> =
            LazyLock::new(|| regex::Regex::new(r"^/recipes/([^/]+)$").unwrap());
        let (target, allow) = match path {
            "/webhooks/github" => (Route::Webhook(Forge::Github), "POST"),
            "/webhooks/gitlab" => (Route::Webhook(Forge::Gitlab), "POST"),
            "/webhooks/gitea" => (Route::Webhook(Forge::Gitea), "POST"),
            "/webhooks/bitbucket" => (Route::Webhook(Forge::Bitbucket), "POST"),
            "/" => (Route::Console, "GET, HEAD"),
            _ if path.starts_with("/assets/") => (Route::Asset(path), "GET, HEAD"),
            "/healthz" => (Route::Healthz, "GET, HEAD"),
            "/status" => (Route::Status, "GET, HEAD"),
            "/metrics" => (Route::Metrics, "GET, HEAD"),
            "/builds" => (Route::Builds, "GET, HEAD"),
            "/events" => (Route::Events, "GET, HEAD"),
            _ if is_control(path) => (Route::Control, "POST"),
            _ => {
                let id = |re: &regex::Regex| {
                    re.captures(path)
                        .and_then(|c| c.get(1))
                        .and_then(|m| m.as_str().parse::<u64>().ok())
                };
                if let Some(id) = id(&LOG) {
                    let follow = query.is_some_and(|q| {
                        q.split('&').any(|p| p == "follow=1" || p == "follow=true")
                    });
                    (Route::BuildLog { id, follow }, "GET, HEAD")
                } else if LOG_LIKE.is_match(path) {
                    return Route::NotFound;
                } else if BUILD.is_match(path) {
                    (Route::Build(&path["/builds/".len()..]), "GET, HEAD")
                } else if RECIPE.is_match(path) {
                    (Route::Recipe(&path["/recipes/".len()..]), "GET, HEAD")
                } else {
                    return Route::NotFound;
                }
            }
        };
        if (allow == "POST" && post) || (allow != "POST" && get) {
            target
        } else {
            Route::MethodNotAllowed(allow)
        }
    }

    fn check_route(method: &str, path: &str, query: Option<&str>) -> Result<(), TestCaseError> {
        let r = route(method, path, query);
        prop_assert_eq!(r, expected_route(method, path, query));
        prop_assert_eq!(route("HEAD", path, query), route("GET", path, query));
        if r == Route::NotFound {
            for m in ["GET", "POST", "DELETE", "OPTIONS"] {
                prop_assert_eq!(route(m, path, query), Route::NotFound);
            }
        }
        match r {
            Route::BuildLog { id, .. } => prop_assert_eq!(format!("/builds/{id}/log"), path),
            Route::Build(id) => prop_assert_eq!(format!("/builds/{id}"), path),
            Route::Asset(p) => prop_assert_eq!(p, path),
            Route::Recipe(id) => prop_assert_eq!(format!("/recipes/{id}"), path),
            _ => {}
        }
        Ok(())
    }

    #[test]
    fn routes_of_known_and_odd_paths() {
        use Route::*;
        let cases: &[(&str, &str, Option<&str>, Route)] = &[
            ("GET", "/builds/log", None, Build("log")),
            ("HEAD", "/builds/log", None, Build("log")),
            ("POST", "/builds/log", None, MethodNotAllowed("GET, HEAD")),
            ("GET", "/builds//log", None, NotFound),
            ("GET", "/builds/a/b/log", None, NotFound),
            ("GET", "/builds/", None, NotFound),
            ("GET", "/builds/l", None, Build("l")),
            ("GET", "/builds/+1/log", None, NotFound),
            ("GET", "/builds/01/log", None, NotFound),
            ("GET", "/builds/0/log", None, NotFound),
            ("GET", "/builds/18446744073709551616/log", None, NotFound),
            (
                "GET",
                "/builds/7/log",
                None,
                BuildLog {
                    id: 7,
                    follow: false,
                },
            ),
            (
                "HEAD",
                "/builds/7/log",
                Some("follow=1"),
                BuildLog {
                    id: 7,
                    follow: true,
                },
            ),
            (
                "GET",
                "/builds/7/log",
                Some("a=b&follow=true"),
                BuildLog {
                    id: 7,
                    follow: true,
                },
            ),
            (
                "GET",
                "/builds/7/log",
                Some("follow=0&follow"),
                BuildLog {
                    id: 7,
                    follow: false,
                },
            ),
            (
                "GET",
                "/builds/18446744073709551615/log",
                None,
                BuildLog {
                    id: u64::MAX,
                    follow: false,
                },
            ),
            ("POST", "/builds/7/log", None, MethodNotAllowed("GET, HEAD")),
            ("GET", "/builds/7", None, Build("7")),
            ("GET", "/builds/+7", None, Build("+7")),
            ("GET", "/builds/7/", None, NotFound),
            ("DELETE", "/builds/7", None, MethodNotAllowed("GET, HEAD")),
            ("GET", "/recipes/zlib", None, Recipe("zlib")),
            ("GET", "/recipes/", None, NotFound),
            ("GET", "/recipes/zlib/", None, NotFound),
            ("PUT", "/recipes/zlib", None, MethodNotAllowed("GET, HEAD")),
            ("get", "/healthz", None, MethodNotAllowed("GET, HEAD")),
            ("GET", "/healthz", Some("x"), Healthz),
            ("GET", "/status", None, Status),
            ("GET", "/metrics", None, Metrics),
            ("GET", "/builds", Some("recipe=zlib"), Builds),
            ("GET", "/events", None, Events),
            ("POST", "/events", None, MethodNotAllowed("GET, HEAD")),
            ("POST", "/webhooks/github", None, Webhook(Forge::Github)),
            ("POST", "/webhooks/gitlab", None, Webhook(Forge::Gitlab)),
            ("POST", "/webhooks/gitea", None, Webhook(Forge::Gitea)),
            (
                "POST",
                "/webhooks/bitbucket",
                None,
                Webhook(Forge::Bitbucket),
            ),
            ("GET", "/webhooks/gitea", None, MethodNotAllowed("POST")),
            ("POST", "/webhooks/forgejo", None, NotFound),
            ("GET", "/", None, Console),
            ("POST", "/", None, MethodNotAllowed("GET, HEAD")),
            (
                "GET",
                "/assets/console.js",
                None,
                Asset("/assets/console.js"),
            ),
            ("GET", "/assets/", None, Asset("/assets/")),
            ("PUT", "/assets/x", None, MethodNotAllowed("GET, HEAD")),
            ("GET", "/webhooks/github", None, MethodNotAllowed("POST")),
            ("GET", "/webhooks/github/", None, NotFound),
            ("POST", "/recipes/zlib/poll", None, Control),
            ("POST", "/builds/7/cancel", None, Control),
            ("POST", "/failures/zlib@1.3-1/retry", None, Control),
            ("POST", "/recipes//pause", None, Control),
            (
                "HEAD",
                "/recipes/zlib/resume",
                None,
                MethodNotAllowed("POST"),
            ),
            ("POST", "/recipes/a/b/poll", None, NotFound),
            ("POST", "/builds/7/retry", None, NotFound),
            ("GET", "", None, NotFound),
            ("GET", "*", None, NotFound),
        ];
        for (m, p, q, want) in cases {
            assert_eq!(route(m, p, *q), *want, "{m} {p} {q:?}");
            check_route(m, p, *q).unwrap();
        }
        assert_eq!(shorten("/abc", 100), "/abc");
        assert_eq!(
            shorten(&"é".repeat(150), 100),
            format!("{}...", "é".repeat(100))
        );
    }

    fn method() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get"
            ])
            .prop_map(str::to_string),
            "\\PC{0,10}",
        ]
    }

    /// Paths made of the pieces routes are made of, and anything at all.
    fn path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(vec![
                "/",
                "/builds",
                "/builds/",
                "builds",
                "log",
                "/log",
                "lo",
                "g",
                "0",
                "1",
                "42",
                "18446744073709551615",
                "18446744073709551616",
                "+",
                "-",
                "%2F",
                "é",
                "\u{1F600}",
                "/healthz",
                "/status",
                "/metrics",
                "/events",
                "/webhooks/github",
                "?",
                "#",
                " ",
                "/recipes/",
                "/failures/",
                "/poll",
                "/pause",
                "/resume",
                "/cancel",
                "/retry",
                "zlib",
                "/webhooks/gitlab",
                "/webhooks/",
                "gitea",
                "/assets/",
            ])
            .prop_map(str::to_string),
            "[0-9]{1,25}",
        ];
        prop_oneof![
            prop::collection::vec(piece, 0..7).prop_map(|v| v.concat()),
            "\\PC{0,40}",
            any::<String>(),
        ]
    }

    fn query() -> impl Strategy<Value = Option<String>> {
        let piece = prop_oneof![
            prop::sample::select(vec![
                "follow=1",
                "follow=true",
                "follow",
                "=",
                "&",
                "1",
                "x=y"
            ])
            .prop_map(str::to_string),
            "\\PC{0,6}",
        ];
        proptest::option::of(prop::collection::vec(piece, 0..5).prop_map(|v| v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn any_request_is_routed_without_panic(m in method(), p in path(), q in query()) {
            check_route(&m, &p, q.as_deref())?;
        }
    }

    #[test]
    fn accept_negotiation() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(!prefers_prometheus(None));
        assert!(!prefers_prometheus(Some(&h("*/*"))));
        assert!(!prefers_prometheus(Some(&h("application/json"))));
        assert!(prefers_prometheus(Some(&h("text/plain"))));
        assert!(prefers_prometheus(Some(&h(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ))));
        assert!(!prefers_prometheus(Some(&h(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        ))));
    }

    #[test]
    fn deliveries_are_remembered_and_bounded() {
        let mut d = Deliveries::default();
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        for i in 0..DELIVERIES_REMEMBERED {
            d.first_time(&i.to_string());
        }
        assert!(d.first_time("a"), "oldest id forgotten");
        assert!(d.seen.len() <= DELIVERIES_REMEMBERED);
    }
}
