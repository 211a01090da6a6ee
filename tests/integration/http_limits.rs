//! No request can exhaust the daemon (DESIGN.md section 18): odd paths are
//! answered, never a panic; webhook bodies being buffered share one 64 MiB
//! budget (503 with `Retry-After` when full); build logs are served only
//! from the daemon's own files; connections stay below the file-descriptor
//! limit.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-secret";
const T: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;
const BAD_SIGNATURE: &str =
    "sha256=0000000000000000000000000000000000000000000000000000000000000000";

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

/// Opens a webhook request declaring `declared` body bytes (with a wrong
/// signature), sends `send` of them and keeps the connection open.
fn hold_webhook(addr: &str, declared: usize, send: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: {BAD_SIGNATURE}\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    write_plain(&mut s, send, b'a');
    s
}

fn assert_busy(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 503, "{what}: {} {:?}", r.status, r.text());
    let after = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After in {:?}", r.headers));
    assert!(
        after.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s)),
        "{what}: Retry-After {after:?}"
    );
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{what}"
    );
}

#[test]
fn webhook_bodies_share_one_budget() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let d = farm.start();
    let addr = d.addr.clone().unwrap();

    // Two bodies of 24 MiB each are being received: 48 of 64 MiB reserved.
    let a = hold_webhook(&addr, 24 * MIB, 64 * 1024);
    let b = hold_webhook(&addr, 24 * MIB, 64 * 1024);
    std::thread::sleep(Duration::from_millis(500));

    // A third one does not fit: refused from its Content-Length at once.
    let t = Instant::now();
    let mut c = hold_webhook(&addr, 24 * MIB, 0);
    let r = read_response(&mut c, false).expect("an answer to the third body");
    assert_busy(&r, "declared 24 MiB");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(c);

    // A small delivery still fits in what is left.
    let r = d.webhook("ping", "budget-ping", b"{}", SECRET);
    assert_eq!(r.status, 200, "{}", r.text());

    // A body without a length reserves as it arrives, and is cut off once
    // the budget is spent (16 MiB left, 20 MiB sent).
    let t = Instant::now();
    let r = exchange(
        &addr,
        &format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
             X-Hub-Signature-256: {BAD_SIGNATURE}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        |s| write_chunked(s, 20 * MIB, b'a'),
    );
    assert_busy(&r, "chunked 20 MiB");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // The over-limit rules stay: 413 from Content-Length, before any budget.
    let r = exchange(
        &addr,
        &format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
             Content-Length: {}\r\n\r\n",
            25 * MIB + 1
        ),
        |_| {},
    );
    assert_eq!(r.status, 413, "{}", r.text());

    // The reservations end with their requests: once the two are gone, a
    // whole 24 MiB body is read again (and refused for its signature).
    drop(a);
    drop(b);
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: {BAD_SIGNATURE}\r\nContent-Length: {}\r\n\r\n",
        24 * MIB
    );
    wait_for(Duration::from_secs(10), "the budget to be released", || {
        let r = exchange(&addr, &head, |s| write_plain(s, 24 * MIB, b'a'));
        match r.status {
            503 => None,
            401 => Some(()),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    });
    d.assert_healthy();
}

/// A farm with HTTP and one recipe `hello` whose build runs `script`, then
/// (when `gated`) waits for the file `gate` in the farm. Returns once the
/// build is published, or once it runs and its log holds `ready` bytes,
/// with the path of its log: plain while the build runs, compressed
/// (`.log.zst`) once it has finished.
fn log_farm(script: &str, gated: bool, ready: u64) -> (Farm, Daemon, PathBuf) {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    let gate = if gated {
        wait_file_sh(&farm.root.join("gate"))
    } else {
        String::new()
    };
    farm.simple_recipe(
        "hello",
        &up,
        &format!(
            "#!/bin/sh\n{script}\n{gate}mkdir -p \"$DESTDIR/usr/share/hello\"\necho hi > \"$DESTDIR/usr/share/hello/hi\"\n"
        ),
        "",
    );
    let d = farm.start();
    if !gated {
        d.wait_event("build + publish complete", &[("recipe", "hello")], T);
    }
    let logs = farm.state().join("logs");
    let log = wait_for(T, "the build's log", || {
        walk_tree(&logs).into_iter().find(|p| {
            let name = p.to_string_lossy();
            let ext = if gated { ".log" } else { ".log.zst" };
            name.ends_with(ext)
                && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() >= ready)
        })
    });
    (farm, d, log)
}

#[test]
fn a_log_replaced_by_a_link_or_a_fifo_is_not_served() {
    // A finished build's log (compressed), then a running one's (plain).
    for gated in [false, true] {
        let line = "an honest log line";
        let (farm, d, log) = log_farm(&format!("echo {line}"), gated, line.len() as u64);
        let addr = d.addr.clone().unwrap();
        wait_for(T, "the line in the log", || {
            let r = d.get("/builds/1/log");
            (r.status == 200 && r.text().contains(line)).then_some(())
        });

        let state = if gated { "running" } else { "finished" };
        let secret_file = farm.root.join("webhook-secret");
        let root = farm.root.display().to_string();
        let check = |what: &str| {
            for path in ["/builds/1/log", "/builds/1/log?follow=1"] {
                for method in ["GET", "HEAD"] {
                    let req =
                        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    let raw = raw_exchange(&addr, req.as_bytes(), Duration::from_secs(5))
                        .unwrap_or_else(|| panic!("{state} {what}: {method} {path}: no answer"));
                    let text = String::from_utf8_lossy(&raw);
                    let status = status_of(&raw);
                    assert!(
                        matches!(status, Some(404) | Some(500)),
                        "{state} {what}: {method} {path}: {text:?}"
                    );
                    assert!(!text.contains("test-secret"), "{state} {what}: {text:?}");
                    assert!(
                        !text.contains(&root),
                        "{state} {what}: names a path: {text:?}"
                    );
                    assert!(raw.len() < 400, "{state} {what}: {text:?}");
                }
            }
        };

        // A symbolic link to a secret.
        std::fs::remove_file(&log).unwrap();
        std::os::unix::fs::symlink(&secret_file, &log).unwrap();
        check("symlink");

        // A FIFO (opening it would wait for a writer).
        std::fs::remove_file(&log).unwrap();
        nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        check("fifo");

        if gated {
            // A regular file back, and the build ends.
            std::fs::remove_file(&log).unwrap();
            std::fs::write(&log, "").unwrap();
            std::fs::write(farm.root.join("gate"), "").unwrap();
            d.wait_event("build + publish complete", &[("recipe", "hello")], T);
        }
        d.assert_healthy();
    }
}

/// (soft, hard) "Max open files" of a process.
fn nofile_of(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let mut words = line["Max open files".len()..].split_whitespace();
    (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    )
}

/// Starts a TCP connection to `addr` without waiting for it to be
/// established.
fn connect_nonblocking(addr: &str) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let std::net::SocketAddr::V4(sa) = addr.parse().unwrap() else {
        panic!("{addr} is not IPv4");
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    match connect(fd.as_raw_fd(), &SockaddrIn::from(sa)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => fd,
        Err(e) => panic!("connect {addr}: {e}"),
    }
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn connections_stay_below_the_descriptor_limit() {
    const HARD: u64 = 512;
    const HELD: usize = 700;
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    // Started by a shell that lowers its descriptor limits first.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -S -n 256 && ulimit -H -n {HARD} && exec \"$0\" \"$@\""
        ))
        .arg(bin())
        .arg("--config")
        .arg(farm.config_path())
        .args(["--log-format", "logfmt"]);
    let mut d = Daemon::spawn(&mut cmd);
    d.addr = Some(d.wait_log_field("webhook server listening", "addr", T));
    let addr = d.addr.clone().unwrap();
    let pid = d.pid();

    // The soft limit is raised to the hard one at start.
    assert_eq!(
        nofile_of(pid),
        (HARD.to_string(), HARD.to_string()),
        "Max open files"
    );

    // More idle connections than the daemon has descriptors.
    // (Connected without waiting: those beyond the listen backlog stay in
    // SYN-SENT, retrying, as a crowd of real clients would.)
    let held: Vec<std::os::fd::OwnedFd> = (0..HELD).map(|_| connect_nonblocking(&addr)).collect();
    let mut fds = 0;
    for _ in 0..20 {
        fds = fds.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{HELD} idle connections: the daemon holds {fds} descriptors of {HARD}");
    assert!(
        fds as u64 + 200 <= HARD,
        "{fds} descriptors open with a limit of {HARD}"
    );

    // Meanwhile a reload reads its files and the new recipe is polled and
    // built: room is left for polls, builds and reloads.
    farm.simple_recipe(
        "added",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/added\"\necho hi > \"$DESTDIR/usr/share/added/hi\"\n",
        "",
    );
    d.signal("HUP");
    d.wait_event("recipes reloaded", &[], T);
    d.wait_event("build + publish complete", &[("recipe", "added")], T);
    let fds = open_fds(pid);
    assert!(fds as u64 + 128 <= HARD, "{fds} descriptors open");
    assert_eq!(d.count("accept failed"), 0, "{}", d.logs());
    assert_eq!(d.count("Too many open files"), 0, "{}", d.logs());

    // Once the idle connections go, /healthz answers at once.
    drop(held);
    let t = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "/healthz after the idle connections",
        || {
            let r = raw_exchange(
                &addr,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                Duration::from_secs(2),
            )?;
            (status_of(&r) == Some(200)).then_some(())
        },
    );
    eprintln!(
        "/healthz answered {:?} after the idle connections closed",
        t.elapsed()
    );
}
