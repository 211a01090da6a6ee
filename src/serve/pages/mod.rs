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

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, VARY};
use hyper::{Response, StatusCode};

use crate::model::recipe::Roster;
use crate::serve::status::Status;

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

/// True when `accept` prefers `text/html` to JSON (a browser's does).
pub fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let (mut html, mut json) = (0.0f32, 0.0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|v| v.parse::<f32>().ok())
            .unwrap_or(1.0);
        match mime.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "application/json" => json = json.max(q),
            _ => {}
        }
    }
    html > json
}

/// The value of `key` in a query string, percent-decoded (`+` is a space).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    let value = query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)?
        .1;
    let mut out = Vec::with_capacity(value.len());
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The last `max` bytes of the file at `path`, cut to whole lines and to
/// at most `lines` lines, as text (invalid UTF-8 shows as U+FFFD); true
/// when that is not the whole file. A missing file is empty.
async fn log_end(path: &Path, max: u64, lines: usize) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return (String::new(), false);
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return (String::new(), false);
    }
    let mut buf = Vec::with_capacity((len - start) as usize);
    if f.take(max).read_to_end(&mut buf).await.is_err() {
        return (String::new(), false);
    }
    let mut truncated = start > 0;
    let mut from = 0;
    if truncated {
        // Drop the partial first line.
        from = buf.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1);
    }
    let body = &buf[from..];
    let newlines: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'\n')
        .map(|(i, _)| i)
        .collect();
    let mut cut = 0;
    // A trailing newline ends the last line rather than starting another.
    let complete = newlines.len() - usize::from(body.last() == Some(&b'\n'));
    if complete >= lines {
        cut = newlines[complete - lines] + 1;
        truncated = true;
    }
    (
        String::from_utf8_lossy(&body[cut..]).into_owned(),
        truncated,
    )
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
    let snap = status.snapshot();
    let log = match snap
        .in_flight
        .as_ref()
        .and_then(|(f, _)| snap.builds.iter().find(|b| b.id == f.build_id))
    {
        Some(b) => log_end(&b.log_path, TAIL_BYTES, TAIL_LINES).await.0,
        None => String::new(),
    };
    let page = view::Overview::new(&snap, &roster, filter.trim(), log, now);
    let body = Bytes::from(templates::overview(&page).into_string());
    if cacheable {
        cache.put(key, body.clone());
    }
    html_bytes(body)
}

/// `GET /builds/{id}` for a browser (`id` as the path has it).
pub async fn build(status: &Status, id: &str) -> Response<Bytes> {
    let snap = status.snapshot();
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| snap.builds.iter().find(|b| b.id == id));
    let Some(rec) = found else {
        return html(
            StatusCode::NOT_FOUND,
            templates::not_found(
                &snap.farm_id,
                &format!("No build {id:?} (only recent builds are kept)."),
            ),
        );
    };
    let (log, truncated) = log_end(&rec.log_path, LOG_BYTES, usize::MAX).await;
    let id = rec.id;
    match view::BuildPage::new(&snap, id, log, truncated, SystemTime::now()) {
        Some(page) => html(StatusCode::OK, templates::build(&page)),
        None => html(
            StatusCode::NOT_FOUND,
            templates::not_found(&snap.farm_id, &format!("No build {id}.")),
        ),
    }
}

/// `GET /recipes/{id}` for a browser.
pub fn recipe(status: &Status, roster: &Roster, id: &str) -> Response<Bytes> {
    let snap = status.snapshot();
    match view::RecipePage::new(&snap, roster, id, SystemTime::now()) {
        Some(page) => html(StatusCode::OK, templates::recipe(&page)),
        None => html(
            StatusCode::NOT_FOUND,
            templates::not_found(&snap.farm_id, &format!("No recipe {id:?}.")),
        ),
    }
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
    fn html_only_when_preferred() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(!prefers_html(None));
        assert!(!prefers_html(Some(&h("*/*"))));
        assert!(!prefers_html(Some(&h("application/json"))));
        assert!(prefers_html(Some(&h(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ))));
        assert!(!prefers_html(Some(&h("application/json, text/html;q=0.5"))));
    }

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
        let (all, cut) = log_end(&p, 1 << 20, usize::MAX).await;
        assert_eq!((all.as_str(), cut), (text.as_str(), false));
        let (tail, cut) = log_end(&p, 1 << 20, 3).await;
        assert_eq!((tail.as_str(), cut), ("line 97\nline 98\nline 99\n", true));
        let (tail, cut) = log_end(&p, 20, usize::MAX).await;
        assert!(cut);
        assert!(tail.starts_with("line "), "{tail:?}");
        assert!(tail.ends_with("line 99\n"));
        std::fs::write(&p, b"ok \xff\xfe bytes\n").unwrap();
        assert_eq!(log_end(&p, 100, 10).await.0, "ok \u{fffd}\u{fffd} bytes\n");
        assert_eq!(
            log_end(&dir.path().join("none"), 10, 10).await,
            (String::new(), false)
        );
    }
}
