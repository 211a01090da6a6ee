//! No request can exhaust the daemon (DESIGN.md section 18): odd paths are
//! answered, never a panic.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends `req` as it is and reads until the server closes or `timeout`
/// passes; `None` when nothing at all came back.
fn raw_exchange(addr: &str, req: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    (!raw.is_empty()).then_some(raw)
}

/// The status code of a raw response.
fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn no_request_path_panics_a_handler() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let d = farm.start();
    let addr = d.addr.clone().unwrap();
    let cases: &[(&str, &str, u16)] = &[
        ("GET", "/builds/log", 404),
        ("HEAD", "/builds/log", 404),
        ("POST", "/builds/log", 404),
        ("DELETE", "/builds/log", 404),
        ("GET", "/builds//log", 404),
        ("GET", "/builds/log/log", 404),
        ("GET", "/builds/1/log/", 404),
        ("GET", "/builds/+1/log", 404),
        ("GET", "/builds/-1/log", 404),
        ("GET", "/builds/0/log", 404),
        ("GET", "/builds/01/log", 404),
        ("GET", "/builds/%31/log", 404),
        ("GET", "/builds/18446744073709551615/log", 404),
        ("GET", "/builds/18446744073709551616/log", 404),
        ("GET", "/builds/99999999999999999999999999999/log", 404),
        ("GET", "/builds/1/log?follow=1&follow&=&&=1", 404),
        ("GET", "/builds/", 404),
        ("GET", "/builds/l", 404),
        ("GET", "/builds/lo", 404),
        ("GET", "/builds/og", 404),
        ("GET", "/log", 404),
        ("GET", "//", 404),
        ("GET", "/webhooks/github/", 404),
        ("GET", "/healthz/", 404),
        ("GET", "/healthz?follow=1&&x", 200),
        ("DELETE", "/healthz", 405),
        ("OPTIONS", "/builds/log", 404),
        ("PATCH", "/webhooks/github", 405),
        ("GET", "/builds/+1", 404),
        ("GET", "/builds/abc", 404),
        ("GET", "/recipes/", 404),
        ("GET", "/recipes/a/b", 404),
        ("POST", "/events", 405),
        ("GET", "/recipes/hello/poll", 405),
        ("POST", "/recipes/a/b/poll", 404),
        ("POST", "/recipes/%zz/poll", 403),
        ("POST", "/builds/log/cancel", 403),
    ];
    let mut failures = Vec::new();
    for (method, path, want) in cases {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        match raw_exchange(&addr, req.as_bytes(), Duration::from_secs(10)) {
            None => failures.push(format!("{method} {path}: connection dropped, no answer")),
            Some(raw) => {
                let got = status_of(&raw);
                if got != Some(*want) {
                    failures.push(format!(
                        "{method} {path}: got {got:?}, want {want}: {:?}",
                        String::from_utf8_lossy(&raw)
                    ));
                }
            }
        }
    }
    // A long unknown path is answered with a short error.
    let long = format!("/{}", "x".repeat(8000));
    let r = d.get(&long);
    if r.status != 404 || r.body.len() > 200 {
        failures.push(format!(
            "GET /xxx...: {} with a {} byte body",
            r.status,
            r.body.len()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    d.assert_healthy();
    assert!(!d.logs().contains("panicked"), "{}", d.logs());
}
