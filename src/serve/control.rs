//! The control API on the HTTP side (DESIGN.md section 15): the bearer
//! token, the request envelope the farm answers, and the HTTP answer.
//!
//! The handler checks the token and hands a [`ControlRequest`] to the farm
//! over a channel ([`ControlCall`]); the farm's worker, which owns the
//! queue, the backoff book and the running build, carries it out and
//! replies with a [`ControlOutcome`], which maps to the status code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::model::control::{ControlOutcome, ControlRequest};

/// How long a control request waits for the farm's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The configured control token, never kept in the clear: only its HMAC
/// (keyed by the token) over a fixed label. A presented token is checked
/// by computing the same HMAC keyed by it and comparing the two 32-byte
/// tags with `hmac`'s `verify_slice`, which runs in constant time
/// (`subtle::ConstantTimeEq`), so neither the token's bytes nor its
/// length show in the timing.
pub struct ControlToken {
    tag: [u8; 32],
}

const LABEL: &[u8] = b"farmhand control token";

fn keyed(token: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token).expect("HMAC takes keys of any length");
    mac.update(LABEL);
    mac
}

impl ControlToken {
    /// Keeps `token` (as its HMAC).
    pub fn new(token: &str) -> ControlToken {
        ControlToken {
            tag: keyed(token.as_bytes()).finalize().into_bytes().into(),
        }
    }

    /// Is `presented` the token? Constant time.
    pub fn verify(&self, presented: &[u8]) -> bool {
        keyed(presented).verify_slice(&self.tag).is_ok()
    }
}

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(..)")
    }
}

/// The control token, swappable on reload; `None` while the control API
/// is off.
pub type TokenSlot = Arc<RwLock<Option<ControlToken>>>;

/// One control request on its way to the farm, with where to answer.
#[derive(Debug)]
pub struct ControlCall {
    /// What the operator asks.
    pub request: ControlRequest,
    /// The farm's answer.
    pub reply: oneshot::Sender<ControlOutcome>,
}

/// Where the HTTP server sends control requests.
pub type ControlTx = mpsc::Sender<ControlCall>;

/// The control API: the token and the farm's control channel.
pub struct ControlApi {
    token: TokenSlot,
    config_path: PathBuf,
    farm: Option<ControlTx>,
}

impl ControlApi {
    /// The control API of the farm behind `farm`, on while `token` holds a
    /// token; `config_path` is named when it is off.
    pub fn new(token: TokenSlot, config_path: PathBuf, farm: ControlTx) -> ControlApi {
        ControlApi {
            token,
            config_path,
            farm: Some(farm),
        }
    }

    /// No control API at all (every control request answers 403).
    pub fn disabled() -> ControlApi {
        ControlApi {
            token: Arc::new(RwLock::new(None)),
            config_path: PathBuf::from("the config file"),
            farm: None,
        }
    }

    /// Answers the control request `POST path` (`path` still
    /// percent-encoded) carrying `authorization` from `peer`: 403 while
    /// the API is off, 401 without the right bearer token, else what the
    /// farm answers (JSON on success, plain text otherwise).
    pub async fn answer(
        &self,
        path: &str,
        authorization: Option<&HeaderValue>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let verified = {
            let token = self
                .token
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(token) = token.as_ref() else {
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "control API disabled: set [http].control_token_file in {}",
                        self.config_path.display()
                    ),
                );
            };
            bearer(authorization).map(|presented| token.verify(presented))
        };
        match verified {
            Some(true) => {}
            Some(false) => {
                warn!(remote = %peer, path, "control request refused: wrong token");
                return unauthorized("wrong control token");
            }
            None => {
                return unauthorized(
                    "missing \"Authorization: Bearer <token>\" header; the token is in the file [http].control_token_file names",
                )
            }
        }
        let request = match percent_decode(path).and_then(|p| ControlRequest::from_path(&p)) {
            Some(Ok(r)) => r,
            Some(Err(e)) => return text(StatusCode::NOT_FOUND, e),
            None => return text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        };
        let action = request.action();
        let outcome = self.ask(request).await;
        let code = StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::OK);
        if !outcome.is_success() {
            return text(code, outcome.message());
        }
        let mut body = serde_json::to_vec(&serde_json::json!({
            "action": action,
            "status": outcome.status(),
            "message": outcome.message(),
        }))
        .unwrap_or_default();
        body.push(b'\n');
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }

    /// Hands `request` to the farm and waits (at most [`REPLY_TIMEOUT`])
    /// for its answer.
    async fn ask(&self, request: ControlRequest) -> ControlOutcome {
        let gone = || {
            ControlOutcome::Unavailable(
                "the farm is shutting down; try again once it is back".into(),
            )
        };
        let Some(farm) = &self.farm else {
            return gone();
        };
        let (reply, answer) = oneshot::channel();
        let call = farm.send_timeout(ControlCall { request, reply }, REPLY_TIMEOUT);
        if call.await.is_err() {
            return gone();
        }
        match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => gone(),
            Err(_) => ControlOutcome::Unavailable(format!(
                "the farm did not answer within {}s; see its log",
                REPLY_TIMEOUT.as_secs()
            )),
        }
    }
}

/// True when `path` names a control action (whatever its target).
pub fn is_control_path(path: &str) -> bool {
    let Some((kind, action)) = path
        .strip_prefix('/')
        .and_then(|p| Some((p.split_once('/')?.0, p.rsplit_once('/')?.1)))
    else {
        return false;
    };
    matches!(
        (kind, action),
        ("recipes", "poll" | "pause" | "resume") | ("builds", "cancel") | ("failures", "retry")
    ) && path.matches('/').count() == 3
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: Option<&HeaderValue>) -> Option<&[u8]> {
    let v = header?.as_bytes();
    let (scheme, token) = v.split_at(v.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Decodes `%XX` escapes; `None` for a bad escape or a result that is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut s: String = body.into();
    s.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(s)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unauthorized(message: &str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"farmhand control\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_themselves() {
        let t = ControlToken::new("0123456789abcdef0123456789abcdef");
        assert!(t.verify(b"0123456789abcdef0123456789abcdef"));
        for wrong in [
            &b""[..],
            b"0123456789abcdef0123456789abcde",
            b"0123456789abcdef0123456789abcdeF",
            b"0123456789abcdef0123456789abcdef0",
        ] {
            assert!(!t.verify(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "ControlToken(..)");
    }

    #[test]
    fn bearer_headers_and_paths() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&h("Bearer abc"))), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(&h("bearer  abc "))), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(&h("Basic abc"))), None);
        assert_eq!(bearer(Some(&h("Bearer"))), None);
        assert_eq!(bearer(Some(&h("Bearer "))), None);
        assert_eq!(bearer(None), None);
        assert_eq!(
            percent_decode("musl%401.2.5-1").as_deref(),
            Some("musl@1.2.5-1")
        );
        assert_eq!(percent_decode("a%2").as_deref(), None);
        assert_eq!(percent_decode("a%zz").as_deref(), None);
        for p in [
            "/recipes/x/poll",
            "/recipes/x/pause",
            "/recipes/x/resume",
            "/builds/3/cancel",
            "/failures/a@1-1/retry",
            "/builds/nope/cancel",
        ] {
            assert!(is_control_path(p), "{p}");
        }
        for p in [
            "/recipes/x",
            "/builds/3/log",
            "/recipes/x/y/poll",
            "/status",
            "/",
        ] {
            assert!(!is_control_path(p), "{p}");
        }
    }
}
