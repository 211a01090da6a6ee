//! No request can exhaust the daemon (DESIGN.md section 18): odd paths are
//! answered, never a panic; webhook bodies being buffered share one 64 MiB
//! budget (503 with `Retry-After` when full); build logs are streamed with
//! bounded memory and only from the daemon's own files; connections stay
//! below the file-descriptor limit; and all of it together, at a bounded
//! scale, keeps the daemon's resident memory small while `/healthz`
//! answers.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
        ("POST", "/builds/log", 405),
        ("DELETE", "/builds/log", 405),
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
        ("OPTIONS", "/builds/log", 405),
        ("PATCH", "/webhooks/github", 405),
        ("GET", "/webhooks/gitlab", 405),
        ("POST", "/webhooks/forgejo", 404),
        ("POST", "/", 405),
        ("GET", "/assets/../../etc/passwd", 404),
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

/// The console's page of build 1.
const PAGE: &[u8] =
    b"GET /builds/1 HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n";

#[test]
fn a_log_replaced_by_a_link_or_a_fifo_is_not_served() {
    // A finished build's log (compressed), then a running one's (plain).
    for gated in [false, true] {
        let line = "an honest log line";
        let (farm, d, log) = log_farm(&format!("echo {line}"), gated, line.len() as u64);
        let addr = d.addr.clone().unwrap();
        wait_for(T, "the line in the log and on the build's page", || {
            let r = d.get("/builds/1/log");
            let page = raw_exchange(&addr, PAGE, Duration::from_secs(5))?;
            (r.status == 200
                && r.text().contains(line)
                && String::from_utf8_lossy(&page).contains(line))
            .then_some(())
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
            // Nor is it shown on the build's page.
            let raw = raw_exchange(&addr, PAGE, Duration::from_secs(5))
                .unwrap_or_else(|| panic!("{state} {what}: the build page: no answer"));
            let text = String::from_utf8_lossy(&raw);
            assert_eq!(status_of(&raw), Some(200), "{state} {what}: {text}");
            assert!(
                !text.contains("test-secret"),
                "{state} {what}: the build page shows what the link names"
            );
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

/// Trickles a never-ending request header, one byte per connection every
/// `every`, until the server closes each connection; returns how long each
/// lived.
fn trickle(addr: &str, n: usize, every: Duration, give_up: Duration) -> Vec<Option<Duration>> {
    let started = Instant::now();
    let mut socks: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut closed = vec![None; n];
    let mut buf = [0u8; 512];
    while closed.iter().any(Option::is_none) && started.elapsed() < give_up {
        for (i, s) in socks.iter_mut().enumerate() {
            if closed[i].is_some() {
                continue;
            }
            let gone = match s.read(&mut buf) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.write(b"a").is_err(),
                Err(_) => true,
            };
            if gone {
                closed[i] = Some(started.elapsed());
            }
        }
        std::thread::sleep(every);
    }
    closed
}

/// Reads `path` slowly, 16 KiB every 100 ms, for `time`; returns the bytes
/// it got.
fn slow_reader(addr: &str, path: &str, time: Duration) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0usize;
    let t = Instant::now();
    while t.elapsed() < time {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    got
}

/// For 12 s at once, while a build that printed 32 MiB runs: 40 webhook
/// bodies of 24 MiB with a wrong signature, each sent over about 9 s; 20
/// slow readers of the running build's log (half of them following it);
/// 300 connections trickling a request header from one address. Then, for
/// 4 s, 20 slow readers of the finished (compressed) log. The daemon's
/// VmRSS stays under 150 MiB throughout (the budget lets two bodies in,
/// 48 MiB; a log reader holds a few chunks, and a zstd window when it
/// decompresses), `/healthz` answers each probe within 3 s, the slow
/// headers are cut off at the 10 s header timeout, and the log is then
/// served whole.
#[test]
fn attacks_at_scale_keep_memory_bounded() {
    const WEBHOOKS: usize = 40;
    const WEBHOOK_BODY: usize = 24 * MIB;
    const READERS: usize = 20;
    const LOG_BYTES: usize = 32 * MIB;
    const SLOW_HEADERS: usize = 300;
    const ATTACK: Duration = Duration::from_secs(12);
    const RSS_LIMIT_KIB: u64 = 150 * 1024;
    const HEALTHZ_LIMIT: Duration = Duration::from_secs(3);

    const FINISHED: Duration = Duration::from_secs(4);

    let (farm, d, _) = log_farm(
        &format!(
            "yes 'farmhand stress test: a long line of build output, again and again' | head -c {LOG_BYTES}"
        ),
        true,
        LOG_BYTES as u64,
    );
    let addr = d.addr.clone().unwrap();
    let pid = d.pid();
    for _ in 0..10 {
        d.assert_healthy();
    }
    let rss_before = vm_rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            // A daemon that died (a zombie has no VmRSS) reads as u64::MAX.
            while !stop.load(Ordering::SeqCst) {
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        let kib = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
                        kib.split_whitespace().next()?.parse().ok()
                    })
                    .unwrap_or(u64::MAX);
                peak.fetch_max(rss, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();

    // 40 unsigned webhook bodies of 24 MiB, each sent over ~9 s.
    let webhooks: Vec<_> = (0..WEBHOOKS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let head = format!(
                    "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
                     X-Hub-Signature-256: {BAD_SIGNATURE}\r\nContent-Length: {WEBHOOK_BODY}\r\n\r\n"
                );
                let r = exchange(&addr, &head, |s| {
                    let chunk = vec![b'a'; 64 * 1024];
                    let pause = Duration::from_secs(9) / (WEBHOOK_BODY / chunk.len()) as u32;
                    for _ in 0..WEBHOOK_BODY / chunk.len() {
                        if s.write_all(&chunk).is_err() {
                            return;
                        }
                        std::thread::sleep(pause);
                    }
                });
                (r.status, r.header("retry-after").map(str::to_string))
            })
        })
        .collect();

    // 20 slow readers of the running build's 32 MiB log, half following.
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let addr = addr.clone();
            let path = ["/builds/1/log", "/builds/1/log?follow=1"][i % 2];
            std::thread::spawn(move || slow_reader(&addr, path, ATTACK))
        })
        .collect();

    // 300 connections trickling a header, one byte per 500 ms.
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            trickle(
                &addr,
                SLOW_HEADERS,
                Duration::from_millis(500),
                Duration::from_secs(16),
            )
        })
    };

    // Meanwhile /healthz answers, promptly.
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while started.elapsed() < ATTACK {
        let t = Instant::now();
        let Some(raw) = raw_exchange(
            &addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        ) else {
            break;
        };
        assert_eq!(
            status_of(&raw),
            Some(200),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        worst = worst.max(t.elapsed());
        probes += 1;
        std::thread::sleep(Duration::from_millis(200));
    }

    // (0: no answer at all.)
    let outcomes: Vec<(u16, Option<String>)> = webhooks
        .into_iter()
        .map(|h| h.join().unwrap_or((0, None)))
        .collect();
    let read: Vec<usize> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let closed = slow.join().unwrap();
    let rss_peak = peak.swap(0, Ordering::SeqCst);
    assert!(
        rss_peak != u64::MAX,
        "the daemon died under the attacks; its log ends:\n{}",
        d.logs()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let busy = outcomes
        .iter()
        .filter(|(s, after)| *s == 503 && after.is_some())
        .count();
    eprintln!(
        "attacks: VmRSS {rss_before} KiB before, peak {rss_peak} KiB (limit {RSS_LIMIT_KIB} KiB); \
         /healthz worst {worst:?} over {probes} probes; webhook answers {:?}; \
         log readers got {:?} bytes; slow headers closed after {:?} .. {:?}",
        outcomes.iter().map(|o| o.0).collect::<Vec<_>>(),
        read,
        closed.iter().flatten().min(),
        closed.iter().flatten().max(),
    );
    assert!(
        rss_peak < RSS_LIMIT_KIB,
        "VmRSS peaked at {rss_peak} KiB (before: {rss_before} KiB)"
    );
    assert!(worst < HEALTHZ_LIMIT, "/healthz took {worst:?}");
    assert!(
        busy >= WEBHOOKS - 10,
        "only {busy} of {WEBHOOKS} bodies refused with 503 + Retry-After: {outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|(s, _)| matches!(s, 503 | 401 | 408)),
        "{outcomes:?}"
    );
    assert!(
        read.iter().all(|&n| n > 0),
        "a log reader got nothing: {read:?}"
    );
    for (i, c) in closed.iter().enumerate() {
        let c = c.unwrap_or_else(|| panic!("slow connection {i} still open"));
        assert!(
            c >= Duration::from_secs(8) && c <= Duration::from_secs(14),
            "slow connection {i} closed after {c:?}"
        );
    }

    // The build ends; its log is compressed, and read slowly by 20 more.
    std::fs::write(farm.root.join("gate"), "").unwrap();
    d.wait_event("build + publish complete", &[("recipe", "hello")], T);
    let finished: Vec<_> = (0..READERS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || slow_reader(&addr, "/builds/1/log", FINISHED))
        })
        .collect();
    let read: Vec<usize> = finished.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let rss_finished = peak.load(Ordering::SeqCst);
    eprintln!(
        "attacks: VmRSS peak {rss_finished} KiB while {READERS} read the finished log; they got {read:?} bytes"
    );
    assert!(
        rss_finished < RSS_LIMIT_KIB,
        "VmRSS peaked at {rss_finished} KiB reading the finished log (before: {rss_before} KiB)"
    );
    assert!(
        read.iter().all(|&n| n > 0),
        "a log reader got nothing: {read:?}"
    );

    // Afterwards the log is served whole, and the daemon is healthy.
    let zst = walk_tree(&farm.state().join("logs"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".log.zst"))
        .expect("the compressed log");
    let want = zstd::decode_all(&std::fs::read(&zst).unwrap()[..]).unwrap();
    assert!(want.len() >= LOG_BYTES, "log is {} bytes", want.len());
    let r = d.get("/builds/1/log");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), want.len());
    assert!(r.body == want, "the log differs from the file");
    let head = d.http("HEAD", "/builds/1/log", &[], b"");
    assert_eq!(
        head.header("content-length"),
        Some(want.len().to_string().as_str())
    );
    d.assert_healthy();
    eprintln!(
        "attacks: VmRSS {} KiB after; {:?} in all",
        vm_rss_kib(pid),
        started.elapsed()
    );
}
