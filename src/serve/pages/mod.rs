//! The console: server-rendered pages for people (DESIGN.md section 14).
//!
//! `GET /` is always the overview; `GET /builds/{id}` and
//! `GET /recipes/{id}` are pages when the request's `Accept` prefers
//! `text/html`. Every figure is in the HTML the server sends; the embedded
//! script ([`assets`]) keeps a page current from `/events`, or by polling
//! when there is no event stream. Every page is rendered from one
//! [`Snapshot`] of the status store ([`view`]) by compile-time,
//! auto-escaping templates ([`templates`]) and carries the security headers
//! of [`page_headers`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, VARY};
use hyper::{Response, StatusCode};

use crate::model::recipe::Roster;
use crate::serve::api::RecipeDoc;
use crate::serve::builds::BuildDetail;
use crate::serve::logs;
use crate::serve::status::{BuildLog, Status};

/// The embedded stylesheet and script.
pub mod assets;
/// The markup.
pub mod templates;
/// What the pages show.
pub mod view;

/// How many bytes of the running build's log the overview shows (the end).
const TAIL_BYTES: u64 = 16 * 1024;
/// How many lines of it.
const TAIL_LINES: usize = 200;
/// How many bytes of a log the build page shows (the end).
const LOG_BYTES: u64 = 512 * 1024;

/// The `Content-Security-Policy` of every page: no inline script or style,
/// nothing from another origin, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// Adds the headers every page and asset carries.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

fn page_headers(h: &mut HeaderMap) {
    security_headers(h);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(VARY, HeaderValue::from_static("Accept"));
}

fn html(code: StatusCode, markup: maud::Markup) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(markup.into_string()));
    *r.status_mut() = code;
    page_headers(r.headers_mut());
    r
}

/// The value of `key` in a query string, decoded as a browser's form
/// encodes it (`%XX` escapes, `+` for a space; invalid UTF-8 shows as
/// U+FFFD).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The end of a log: the last whole lines of `buf` (at most `lines`),
/// as text (invalid UTF-8 shows as U+FFFD); `cut` says `buf` is already
/// only the end of the log (its first line is partial). True when that
/// is not the whole log.
fn tail_text(buf: &[u8], cut: bool, lines: usize) -> (String, bool) {
    let mut truncated = cut;
    let from = if cut {
        buf.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1)
    } else {
        0
    };
    let body = &buf[from..];
    let newlines: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'\n')
        .map(|(i, _)| i)
        .collect();
    // A trailing newline ends the last line rather than starting another.
    let complete = newlines.len() - usize::from(body.last() == Some(&b'\n'));
    let mut start = 0;
    if complete >= lines {
        start = newlines[complete - lines] + 1;
        truncated = true;
    }
    (
        String::from_utf8_lossy(&body[start..]).into_owned(),
        truncated,
    )
}

/// The last `max` bytes of the plain log at `path`, cut as [`tail_text`]
/// does, read on a blocking thread. A missing file is empty; so is
/// anything [`logs::open`] refuses (a link, a FIFO).
async fn plain_tail(path: &Path, max: u64, lines: usize) -> Option<(String, bool)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        let mut f = logs::open(&path).ok()?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(max);
        f.seek(std::io::SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.take(max).read_to_end(&mut buf).ok()?;
        Some(tail_text(&buf, start > 0, lines))
    })
    .await
    .ok()
    .flatten()
}

/// The last `max` bytes of the zstd-compressed log at `path`, decompressed
/// on a blocking thread without holding more than twice `max`.
async fn compressed_tail(path: PathBuf, max: usize, lines: usize) -> Option<(String, bool)> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let f = logs::open(&path).ok()?;
        let mut d = zstd::stream::read::Decoder::new(f).ok()?;
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut dropped = false;
        loop {
            let n = d.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 2 * max {
                buf.drain(..buf.len() - max);
                dropped = true;
            }
        }
        if buf.len() > max {
            buf.drain(..buf.len() - max);
            dropped = true;
        }
        Some(tail_text(&buf, dropped, lines))
    })
    .await
    .ok()
    .flatten()
}

/// The end of build `id`'s log, wherever it is (plain while the build
/// runs, compressed once it has ended); empty when it has none.
async fn log_tail(status: &Status, id: u64, max: u64, lines: usize) -> (String, bool) {
    let BuildLog::File(f) = status.build_log(id) else {
        return (String::new(), false);
    };
    let (first, second) = if f.running {
        (f.plain.clone(), f.compressed.clone())
    } else {
        (f.compressed.clone(), f.plain.clone())
    };
    for (path, zst) in [(first, !f.running), (second, f.running)] {
        let got = if zst {
            compressed_tail(path, max as usize, lines).await
        } else {
            plain_tail(&path, max, lines).await
        };
        if let Some(t) = got {
            return t;
        }
    }
    (String::new(), false)
}

/// The unfiltered overview as last rendered: made at most once per second
/// and per change of the status store (its relative times and the running
/// log's tail are per second), so a room full of open consoles, or a load
/// test, costs one render a second.
#[derive(Default)]
pub struct Cache {
    overview: Mutex<Option<(u64, u64, Bytes)>>,
}

impl Cache {
    fn get(&self, key: (u64, u64)) -> Option<Bytes> {
        let c = self
            .overview
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.as_ref()
            .filter(|(g, s, _)| (*g, *s) == key)
            .map(|(_, _, b)| b.clone())
    }

    fn put(&self, key: (u64, u64), body: Bytes) {
        *self
            .overview
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((key.0, key.1, body));
    }
}

fn html_bytes(body: Bytes) -> Response<Bytes> {
    let mut r = Response::new(body);
    page_headers(r.headers_mut());
    r
}

/// `GET /`: the overview (`?filter=` narrows the recipe table).
pub async fn overview(
    status: &Status,
    roster: Arc<Roster>,
    query: Option<&str>,
    cache: &Cache,
) -> Response<Bytes> {
    let filter = query_param(query, "filter").unwrap_or_default();
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // The generation before the snapshot: a change while rendering makes
    // the next request render again.
    let key = (status.generation(), second);
    let cacheable = filter.trim().is_empty();
    if cacheable {
        if let Some(body) = cache.get(key) {
            return html_bytes(body);
        }
    }
    let snap = status.snapshot(view::TIMELINE);
    let log = match &snap.running {
        Some(d) => {
            log_tail(status, d.summary.id, TAIL_BYTES, TAIL_LINES)
                .await
                .0
        }
        None => String::new(),
    };
    let page = view::Overview::new(&snap, &roster, filter.trim(), log, now);
    let body = Bytes::from(templates::overview(&page).into_string());
    if cacheable {
        cache.put(key, body.clone());
    }
    html_bytes(body)
}

/// `GET /builds/{id}` for a browser: the page of the build `doc`.
pub async fn build(status: &Status, doc: &BuildDetail) -> Response<Bytes> {
    let id = doc.summary.id;
    let (log, truncated) = log_tail(status, id, LOG_BYTES, usize::MAX).await;
    let farm_id = status.farm_id();
    let mut page = view::BuildPage::new(
        &farm_id,
        doc,
        status.build_neighbours(id),
        log,
        truncated,
        SystemTime::now(),
    );
    page.control = status.control_api();
    html(StatusCode::OK, templates::build(&page))
}

/// `GET /recipes/{id}` for a browser: the page of the recipe `doc`.
pub fn recipe(status: &Status, roster: &Roster, doc: &RecipeDoc) -> Response<Bytes> {
    let snap = status.snapshot(0);
    let state = view::states(&snap)
        .get(doc.id.as_str())
        .copied()
        .unwrap_or(view::RecipeState::Idle);
    let next_poll = snap.polls.get(&doc.id).and_then(|p| p.next_at);
    let mut page = view::RecipePage::new(
        &snap.farm_id,
        doc,
        roster.recipes.get(&doc.id).map(|r| &**r),
        state,
        next_poll,
        SystemTime::now(),
    );
    page.control = snap.control;
    html(StatusCode::OK, templates::recipe(&page))
}

/// A 404 page for a browser that asked for an unknown build or recipe.
pub fn missing(status: &Status, what: &str) -> Response<Bytes> {
    html(
        StatusCode::NOT_FOUND,
        templates::not_found(&status.farm_id(), what),
    )
}

/// `GET /assets/...`: an embedded asset under its hashed name, cached for
/// a year; anything else is 404.
pub fn asset(path: &str) -> Response<Bytes> {
    let mut r = match assets::get(path) {
        Some(a) => {
            let mut r = Response::new(Bytes::from_static(a.body));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
            h.insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            r
        }
        None => {
            let mut r = Response::new(Bytes::from(format!("no such asset: {path}\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    };
    security_headers(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&filter=lib%20z+x"), "filter").as_deref(),
            Some("lib z x")
        );
        assert_eq!(query_param(Some("filter="), "filter").as_deref(), Some(""));
        assert_eq!(
            query_param(Some("filter=%zz%"), "filter").as_deref(),
            Some("%zz%")
        );
        assert_eq!(query_param(None, "filter"), None);
        assert_eq!(query_param(Some("x=1"), "filter"), None);
    }

    #[tokio::test]
    async fn log_ends_are_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let all = plain_tail(&p, 1 << 20, usize::MAX).await.unwrap();
        assert_eq!((all.0.as_str(), all.1), (text.as_str(), false));
        let tail = plain_tail(&p, 1 << 20, 3).await.unwrap();
        assert_eq!(
            (tail.0.as_str(), tail.1),
            ("line 97\nline 98\nline 99\n", true)
        );
        let (tail, cut) = plain_tail(&p, 20, usize::MAX).await.unwrap();
        assert!(cut);
        assert!(tail.starts_with("line "), "{tail:?}");
        assert!(tail.ends_with("line 99\n"));
        std::fs::write(&p, b"ok \xff\xfe bytes\n").unwrap();
        assert_eq!(
            plain_tail(&p, 100, 10).await.unwrap().0,
            "ok \u{fffd}\u{fffd} bytes\n"
        );
        assert!(plain_tail(&dir.path().join("none"), 10, 10).await.is_none());
        let z = dir.path().join("log.zst");
        std::fs::write(&z, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        let (tail, cut) = compressed_tail(z.clone(), 30, usize::MAX).await.unwrap();
        assert!(cut);
        assert!(
            tail.ends_with("line 98\nline 99\n") && tail.starts_with("line "),
            "{tail:?}"
        );
        let (all, cut) = compressed_tail(z, 1 << 20, usize::MAX).await.unwrap();
        assert_eq!((all.as_str(), cut), (text.as_str(), false));
    }
}
