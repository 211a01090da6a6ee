//! The HTTP server (hyper 1.x, HTTP/1.1, no framework): `/healthz`,
//! `/status`, `/metrics`, `/builds`, `/builds/{id}`, `/builds/{id}/log`,
//! `/recipes/{id}`, `/events`, `POST /webhooks/{github,gitlab,gitea,bitbucket}`,
//! the control API (`serve::control`) and the console pages (`/`,
//! `/assets/`, and `/builds/{id}` and `/recipes/{id}` for browsers).
//!
//! Headers must arrive within [`HEADER_TIMEOUT`]; webhook bodies are
//! limited to 25 MiB, refused from `Content-Length` or while streaming,
//! before any HMAC work, and must arrive within [`BODY_TIMEOUT`]. `HEAD`
//! works on every `GET`. Errors are short plain-text bodies. The server
//! lives for the daemon's whole life: a reload never bounces it.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
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
use crate::serve::logs;
use crate::serve::pages;
use crate::serve::status::BuildLog;
use crate::serve::status::Status;
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
/// Most connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4096;

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
    pages: pages::Cache,
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

const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn handle(req: Request<Incoming>, peer: SocketAddr, st: &HttpState) -> Response<Body> {
    let path = req.uri().path().to_string();
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path.as_str() {
        p if Forge::from_path(p).is_some() => {
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            let forge = Forge::from_path(p).expect("guarded");
            webhook(forge, req, peer, st).await
        }
        "/healthz" | "/status" | "/metrics" | "/builds" | "/events" if !is_get => {
            method_not_allowed("GET, HEAD")
        }
        "/healthz" => match st.health.check() {
            Ok(()) => match st.status.held() {
                None => text(StatusCode::OK, "ok"),
                Some(held) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("builds held: {held}"),
                ),
            },
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        "/status" => {
            if prefers_prometheus(req.headers().get(hyper::header::ACCEPT)) {
                with_type(st.status.metrics(), PROMETHEUS_TYPE)
            } else {
                with_type(st.status.json(), "application/json")
            }
        }
        "/metrics" => with_type(st.status.metrics(), PROMETHEUS_TYPE),
        p if control::is_control_path(p) => {
            if req.method() != Method::POST {
                return method_not_allowed("POST");
            }
            let auth = req.headers().get(AUTHORIZATION);
            st.control.answer(p, auth, peer).await.map(BodyExt::boxed)
        }
        "/builds" => match BuildQuery::parse(req.uri().query()) {
            Ok(q) => json(&st.status.builds(&q)),
            Err(e) => text(StatusCode::BAD_REQUEST, e),
        },
        "/events" => event_stream(&req, st),
        p if p.starts_with("/builds/") && p.ends_with("/log") => {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let id = &p["/builds/".len()..p.len() - "/log".len()];
            let Ok(id) = id.parse::<u64>() else {
                return text(StatusCode::NOT_FOUND, format!("no build {id:?}"));
            };
            let follow = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == "follow=1" || kv == "follow=true")
            });
            let zstd_ok = logs::accepts_zstd(req.headers().get(hyper::header::ACCEPT_ENCODING));
            let head = req.method() == Method::HEAD;
            build_log(id, follow, zstd_ok, head, st).await
        }
        p if p
            .strip_prefix("/builds/")
            .is_some_and(|id| !id.contains('/')) =>
        {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let id = &p["/builds/".len()..];
            let doc = id
                .parse::<u64>()
                .ok()
                .and_then(|id| st.status.build_detail(id));
            match (doc, wants_page(&req)) {
                (Some(doc), true) => pages::build(&st.status, &doc).await.map(full),
                (Some(doc), false) => json(&doc),
                (None, true) => pages::missing(&st.status, &format!("No build {id:?}.")).map(full),
                (None, false) => text(StatusCode::NOT_FOUND, format!("no build {id:?}")),
            }
        }
        p if p
            .strip_prefix("/recipes/")
            .is_some_and(|id| !id.contains('/')) =>
        {
            if !is_get {
                return method_not_allowed("GET, HEAD");
            }
            let id = &p["/recipes/".len()..];
            let doc = crate::serve::builds::percent_decode(id)
                .filter(|id| crate::model::name::is_safe_component(id))
                .and_then(|id| api::recipe_doc(&st.roster.borrow(), &st.status, &id));
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
        "/" if !is_get => method_not_allowed("GET, HEAD"),
        "/" => {
            let roster = st.roster.borrow().clone();
            pages::overview(&st.status, roster, req.uri().query(), &st.pages)
                .await
                .map(full)
        }
        p if p.starts_with("/assets/") => match is_get {
            true => pages::asset(p).map(full),
            false => method_not_allowed("GET, HEAD"),
        },
        _ => text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
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
    // One buffer, sized from Content-Length when there is one, grown (never
    // past the limit) while streaming; a body over the limit is refused as
    // soon as its size shows, and the buffer is released at once. A client
    // that stalls mid-body is answered 408 after BODY_TIMEOUT.
    let mut incoming = req.into_body();
    let mut body: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0) as usize);
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
            body.reserve_exact(grown - body.len());
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
