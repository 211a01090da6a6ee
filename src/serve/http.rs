//! The HTTP server (hyper 1.x, HTTP/1.1, no framework): `/healthz`,
//! `/status`, `/metrics`, `/builds`, `/builds/{id}`, `/builds/{id}/log`,
//! `/recipes/{id}`, `/events`, `POST /webhooks/github` and the control API
//! (`serve::control`).
//!
//! [`route`] decides where a request goes from its method, path and query
//! alone; it is pure, total and fuzzed (no path can panic a handler).
//! Headers must arrive within [`HEADER_TIMEOUT`]; webhook bodies are
//! limited to 25 MiB, refused from `Content-Length` or while streaming,
//! before any HMAC work, must arrive within [`BODY_TIMEOUT`], and share one
//! [`limits::BODY_BUDGET`] over all connections (503 with `Retry-After`
//! when it is spent). `HEAD` works on every `GET`. Errors are short
//! plain-text bodies. The server lives for the daemon's whole life: a
//! reload never bounces it.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
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
use crate::serve::limits::{self, Budget};
use crate::serve::logs;
use crate::serve::status::BuildLog;
use crate::serve::status::Status;
use crate::watch::github;
use crate::watch::poll::PollRequest;
use crate::watch::WebhookResult;

/// Time allowed for a client to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a client to send a webhook body (GitHub gives up on a
/// delivery after 10 s anyway).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Delivery ids remembered for redelivery detection.
const DELIVERIES_REMEMBERED: usize = 10_000;
/// Most connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4096;
/// `Retry-After` (seconds) when the webhook body budget is spent: every
/// body in it is done within [`BODY_TIMEOUT`].
const BUDGET_RETRY_AFTER: &str = "10";
/// Least time between two warnings of one kind of refusal.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The webhook secret, swappable on reload.
pub type Secret = Arc<RwLock<Option<Arc<[u8]>>>>;

type Body = BoxBody<Bytes, Infallible>;

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
    /// `GET /builds/{id}`.
    Build {
        /// The build id (a positive decimal without leading zeros).
        id: u64,
    },
    /// `GET /builds/{id}/log`; `follow` from `?follow=1` (or `=true`).
    BuildLog {
        /// The build id (a positive decimal without leading zeros).
        id: u64,
        /// Stream until the build ends.
        follow: bool,
    },
    /// `GET /recipes/{id}`, the id as sent (percent-encoded).
    Recipe(&'a str),
    /// `POST /webhooks/github`.
    GithubWebhook,
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
    match path {
        "/webhooks/github" => return only("POST", Route::GithubWebhook),
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
    if let Some(rest) = path.strip_prefix("/builds/") {
        let (id, log) = match rest.strip_suffix("/log") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        return match build_id(id) {
            Some(id) if log => only(
                GET_HEAD,
                Route::BuildLog {
                    id,
                    follow: follow_requested(query),
                },
            ),
            Some(id) => only(GET_HEAD, Route::Build { id }),
            None => Route::NotFound,
        };
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
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(addr = %addr, "webhook server listening");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let cancel = state.cancel.clone();
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(err = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(true)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(handle(req, peer, &st).await) }
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
    Full::new(body.into()).boxed()
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

async fn handle(req: Request<Incoming>, peer: SocketAddr, st: &HttpState) -> Response<Body> {
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
        Route::Build { id } => match st.status.build_detail(id) {
            Some(doc) => document(&req, &doc),
            None => text(StatusCode::NOT_FOUND, format!("no build \"{id}\"")),
        },
        Route::BuildLog { id, follow } => {
            let zstd_ok = logs::accepts_zstd(req.headers().get(hyper::header::ACCEPT_ENCODING));
            let head = req.method() == Method::HEAD;
            build_log(id, follow, zstd_ok, head, st).await
        }
        Route::Recipe(id) => {
            let doc = crate::serve::builds::percent_decode(id)
                .filter(|id| crate::model::name::is_safe_component(id))
                .and_then(|id| api::recipe_doc(&st.roster.borrow(), &st.status, &id));
            match doc {
                Some(doc) => document(&req, &doc),
                None => text(
                    StatusCode::NOT_FOUND,
                    format!("no recipe {:?}", shorten(id, 100)),
                ),
            }
        }
        Route::GithubWebhook => github_webhook(req, peer, st).await,
        Route::Control => {
            let auth = req.headers().get(AUTHORIZATION);
            st.control
                .answer(uri.path(), auth, peer)
                .await
                .map(BodyExt::boxed)
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

/// A document of `/builds/{id}` or `/recipes/{id}` in the representation
/// the request prefers.
fn document<T: serde::Serialize>(req: &Request<Incoming>, doc: &T) -> Response<Body> {
    match api::negotiate(req.headers().get(hyper::header::ACCEPT)) {
        // The console pages (section 14 of the design) render `doc` here;
        // until they exist, a browser gets the JSON.
        Representation::Html => json(doc),
        Representation::Json => json(doc),
    }
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
            stream_headers(Response::new(body.boxed()))
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

async fn github_webhook(
    req: Request<Incoming>,
    peer: SocketAddr,
    st: &HttpState,
) -> Response<Body> {
    let too_large = || {
        st.status.webhook(WebhookResult::TooLarge);
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
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = header("x-hub-signature-256");
    let event = header("x-github-event");
    let delivery = header("x-github-delivery");
    // Every byte buffered is first reserved from the budget all connections
    // share: a declared length at once, before any body is read; a body
    // without one as it arrives. When it does not fit, the request is
    // refused (503, Retry-After); the reservation ends with this function.
    let busy = || {
        if let Some(held_back) = st.budget_warning.pass() {
            warn!(
                remote = %peer,
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
                st.status.webhook(WebhookResult::BadRequest);
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
            st.status.webhook(WebhookResult::BadRequest);
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
    let verified = secret
        .as_deref()
        .is_some_and(|s| github::verify_signature(s, &body, signature.as_deref()));
    if !verified {
        st.status.webhook(WebhookResult::InvalidSignature);
        warn!(
            remote = %peer,
            delivery = delivery.as_deref().unwrap_or(""),
            has_signature = signature.is_some(),
            "webhook signature invalid"
        );
        return text(
            StatusCode::UNAUTHORIZED,
            "invalid or missing X-Hub-Signature-256",
        );
    }
    let payload = match github::parse_payload(&body) {
        Ok(p) => p,
        Err(e) => {
            st.status.webhook(WebhookResult::BadRequest);
            return text(StatusCode::BAD_REQUEST, e);
        }
    };
    if let Some(id) = delivery.as_deref() {
        let first = st
            .deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first_time(id);
        if !first {
            st.status.webhook(WebhookResult::Duplicate);
            info!(delivery = id, "webhook redelivery ignored");
            return text(StatusCode::OK, "duplicate delivery, already handled");
        }
    }
    match event.as_deref() {
        Some("ping") => {
            st.status.webhook(WebhookResult::Pong);
            text(StatusCode::OK, "pong")
        }
        Some("push") | Some("create") => {
            let roster = st.roster.borrow().clone();
            let (mut recipes, known) = github::route_all(&roster, &payload);
            // A paused recipe is treated as an opted-out one.
            let paused = st.paused.borrow().clone();
            for r in recipes.iter().filter(|r| paused.contains(*r)) {
                info!(recipe = %r, "webhook for a paused recipe ignored");
            }
            recipes.retain(|r| !paused.contains(r));
            if recipes.is_empty() {
                st.status.webhook(WebhookResult::NotWatched);
                let url = payload.urls.first().map(String::as_str).unwrap_or("");
                info!(
                    html_url = url,
                    known, "webhook for unrecognised or opted-out repo"
                );
                return text(StatusCode::OK, "repository not watched");
            }
            for r in &recipes {
                info!(recipe = %r, delivery = delivery.as_deref().unwrap_or(""), "webhook accepted, triggering immediate poll");
                if st
                    .polls
                    .try_send(PollRequest {
                        recipe: r.clone(),
                        trigger: Trigger::Webhook,
                    })
                    .is_err()
                {
                    warn!(recipe = %r, "poll request queue full; the scheduled poll will catch up");
                }
            }
            st.status.webhook(WebhookResult::Accepted);
            text(
                StatusCode::ACCEPTED,
                format!("accepted: polling {}", recipes.join(", ")),
            )
        }
        Some(other) => {
            st.status.webhook(WebhookResult::NotWatched);
            info!(event = other, "webhook event ignored");
            text(StatusCode::OK, format!("event {other:?} ignored"))
        }
        None => {
            st.status.webhook(WebhookResult::BadRequest);
            text(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header")
        }
    }
}

/// A body fed from a channel, for streaming logs.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

async fn build_log(
    id: u64,
    follow: bool,
    zstd_ok: bool,
    head: bool,
    st: &HttpState,
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
    if !file.running {
        return logs::finished(&file, zstd_ok, head)
            .await
            .unwrap_or_else(pruned);
    }
    if !follow {
        return match tokio::fs::read(&file.plain).await {
            Ok(b) => with_type(Bytes::from(b), "text/plain; charset=utf-8"),
            // It may have ended (and its log been compressed) just now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match logs::finished(&file, zstd_ok, head).await {
                    Some(r) => r,
                    None => text(StatusCode::OK, ""),
                }
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read log of build {id}: {e}"),
            ),
        };
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let status = st.status.clone();
    let cancel = st.cancel.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut offset = 0u64;
        loop {
            let running = status.build_state(id) == Some(BuildState::Running);
            match tokio::fs::File::open(&file.plain).await {
                Ok(mut f) => {
                    use tokio::io::AsyncSeekExt;
                    if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                        let mut buf = Vec::new();
                        if f.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                            offset += buf.len() as u64;
                            if tx.send(Bytes::from(buf)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                // Once the build has ended its log is compressed: send
                // what the follower has not seen yet from there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !running => {
                    let f = file.clone();
                    let rest =
                        tokio::task::spawn_blocking(move || logs::compressed_tail(&f, offset))
                            .await;
                    if let Ok(Ok(rest)) = rest {
                        if !rest.is_empty() {
                            let _ = tx.send(Bytes::from(rest)).await;
                        }
                    }
                    return;
                }
                Err(_) => {}
            }
            if !running {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = cancel.cancelled() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
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
        static BUILD: LazyLock<regex::Regex> =
            LazyLock::new(|| regex::Regex::new(r"^/builds/([1-9][0-9]*)$").unwrap());
        static RECIPE: LazyLock<regex::Regex> =
            LazyLock::new(|| regex::Regex::new(r"^/recipes/([^/]+)$").unwrap());
        let (target, allow) = match path {
            "/webhooks/github" => (Route::GithubWebhook, "POST"),
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
                } else if let Some(id) = id(&BUILD) {
                    (Route::Build { id }, "GET, HEAD")
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
            Route::Build { id } => prop_assert_eq!(format!("/builds/{id}"), path),
            Route::Recipe(id) => prop_assert_eq!(format!("/recipes/{id}"), path),
            _ => {}
        }
        Ok(())
    }

    #[test]
    fn routes_of_known_and_odd_paths() {
        use Route::*;
        let cases: &[(&str, &str, Option<&str>, Route)] = &[
            ("GET", "/builds/log", None, NotFound),
            ("HEAD", "/builds/log", None, NotFound),
            ("POST", "/builds/log", None, NotFound),
            ("GET", "/builds//log", None, NotFound),
            ("GET", "/builds/", None, NotFound),
            ("GET", "/builds/l", None, NotFound),
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
            ("GET", "/builds/7", None, Build { id: 7 }),
            ("GET", "/builds/+7", None, NotFound),
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
            ("POST", "/webhooks/github", None, GithubWebhook),
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
