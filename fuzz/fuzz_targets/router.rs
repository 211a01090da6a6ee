//! The HTTP router (DESIGN.md sections 7 and 18: no request path can panic
//! a handler).
//!
//! `route` never panics on any method, path and query; it answers what an
//! independent reading of the endpoint table says; `HEAD` goes where `GET`
//! goes; an unknown path is 404 whatever the method; a build's or recipe's
//! id (and an asset's path) prints back to exactly the path it came from. Paths are taken raw and
//! also assembled from the pieces routes are made of, so that
//! `/builds/{id}/log` and its near misses (`/builds/log`, `/builds//log`,
//! `/builds/+1/log`, ids past `u64::MAX`) and the control API's paths
//! (`/recipes/{id}/poll`, `/builds/{id}/cancel`, ...) come up at once.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use farmhand::serve::http::{route, Route};
use farmhand::watch::Forge;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Piece<'a> {
    Slash,
    Builds,
    Log,
    Number(u64),
    Digits(u8),
    Known(u8),
    Raw(&'a str),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a str,
    known_method: Option<u8>,
    path: &'a str,
    pieces: Vec<Piece<'a>>,
    query: Option<&'a str>,
    query_pieces: Vec<u8>,
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get"];
const KNOWN: [&str; 22] = [
    "/recipes/",
    "/failures/",
    "/poll",
    "/pause",
    "/resume",
    "/cancel",
    "/retry",
    "zlib@1.3-1",
    "/events",
    "/builds/7",
    "/webhooks/",
    "gitlab",
    "/assets/",
    "/healthz",
    "/status",
    "/metrics",
    "/builds",
    "/webhooks/github",
    "/builds/",
    "/log",
    "0",
    "18446744073709551616",
];
const QUERY: [&str; 7] = ["follow=1", "follow=true", "follow", "=", "&", "1", "x=y"];

static BUILD_LOG: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^/builds/([1-9][0-9]*)/log$").unwrap());
static LOG_LIKE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^/builds/.*/log$").unwrap());
static BUILD: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^/builds/([^/]+)$").unwrap());
static RECIPE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^/recipes/([^/]+)$").unwrap());

/// `/{kind}/{target}/{action}` of the control API (section 15).
fn is_control(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() == 4
        && parts[0].is_empty()
        && matches!(
            (parts[1], parts[3]),
            ("recipes", "poll" | "pause" | "resume") | ("builds", "cancel") | ("failures", "retry")
        )
}

/// The endpoint table of DESIGN.md sections 7 and 15, read independently
/// of `route`.
fn expected<'a>(method: &str, path: &'a str, query: Option<&str>) -> Route<'a> {
    let id = |re: &regex::Regex| {
        re.captures(path)
            .and_then(|c| c.get(1))
            .and_then(|m| m.as_str().parse::<u64>().ok())
    };
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
            if let Some(id) = id(&BUILD_LOG) {
                let follow = query
                    .is_some_and(|q| q.split('&').any(|p| p == "follow=1" || p == "follow=true"));
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
    let allowed = if allow == "POST" {
        method == "POST"
    } else {
        method == "GET" || method == "HEAD"
    };
    if allowed {
        target
    } else {
        Route::MethodNotAllowed(allow)
    }
}

fn check(method: &str, path: &str, query: Option<&str>) {
    let r = route(method, path, query);
    assert_eq!(
        r,
        expected(method, path, query),
        "{method} {path:?} {query:?}"
    );
    assert_eq!(
        route("HEAD", path, query),
        route("GET", path, query),
        "{path:?}"
    );
    if r == Route::NotFound {
        for m in METHODS {
            assert_eq!(route(m, path, query), Route::NotFound, "{m} {path:?}");
        }
    }
    match r {
        Route::BuildLog { id, .. } => assert_eq!(format!("/builds/{id}/log"), path),
        Route::Build(id) => assert_eq!(format!("/builds/{id}"), path),
        Route::Asset(p) => assert_eq!(p, path),
        Route::Recipe(id) => assert_eq!(format!("/recipes/{id}"), path),
        _ => {}
    }
    if let Route::MethodNotAllowed(allow) = r {
        assert!(allow == "POST" || allow == "GET, HEAD", "{allow}");
    }
}

fuzz_target!(|input: Input| {
    let method = match input.known_method {
        Some(i) => METHODS[usize::from(i) % METHODS.len()],
        None => input.method,
    };
    let mut built = String::new();
    for p in &input.pieces {
        match p {
            Piece::Slash => built.push('/'),
            Piece::Builds => built.push_str("builds"),
            Piece::Log => built.push_str("log"),
            Piece::Number(n) => built.push_str(&n.to_string()),
            Piece::Digits(n) => built.push_str(&"9".repeat(usize::from(*n % 32))),
            Piece::Known(i) => built.push_str(KNOWN[usize::from(*i) % KNOWN.len()]),
            Piece::Raw(s) => built.push_str(s),
        }
    }
    let built_query: String = input
        .query_pieces
        .iter()
        .map(|&i| QUERY[usize::from(i) % QUERY.len()])
        .collect();
    for path in [input.path, built.as_str()] {
        check(method, path, input.query);
        check(method, path, Some(&built_query));
    }
});
