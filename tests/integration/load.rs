//! Load: `/healthz` and `/status` under 1,000 concurrent connections and a
//! crowd of slow clients while a build runs. Every request is answered,
//! slow clients are cut off after the header timeout, the daemon's resident
//! memory stays bounded, and it still answers (and finishes the build)
//! afterwards.

use crate::util::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CONCURRENT: usize = 1000;
const ROUNDS: usize = 3;
const SLOW_CLIENTS: usize = 200;
const THREADS: usize = 10;

/// Opens `n` connections, then sends one request on each, then reads every
/// response: all `n` are open at once. Returns how many answered 200 with
/// the expected body.
fn burst(addr: &str, n: usize, round: usize) -> usize {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        socks.push(s);
    }
    let mut paths = Vec::with_capacity(n);
    for (i, s) in socks.iter_mut().enumerate() {
        let path = if (i + round) % 2 == 0 {
            "/healthz"
        } else {
            "/status"
        };
        paths.push(path);
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
    }
    let mut ok = 0;
    for (s, path) in socks.iter_mut().zip(paths) {
        let mut raw = Vec::new();
        if s.read_to_end(&mut raw).is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&raw);
        let good = text.starts_with("HTTP/1.1 200")
            && match path {
                "/healthz" => text.ends_with("\r\n\r\nok\n"),
                _ => {
                    text.contains("\"farm_id\":\"test-farm\"")
                        || text.contains("\"farm_id\": \"test-farm\"")
                }
            };
        if good {
            ok += 1;
        }
    }
    ok
}

#[test]
fn thousand_connections_and_slow_clients_while_building() {
    let mut farm = Farm::new();
    farm.http = true;
    let go = farm.root.join("go");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe(
        "busy",
        &up,
        &format!(
            "#!/bin/sh\n{}mkdir -p \"$DESTDIR/usr/share/x\"\necho hi > \"$DESTDIR/usr/share/x/f\"\n",
            wait_file_sh(&go)
        ),
        "",
    );
    let d = farm.start();
    d.wait_event(
        "starting build",
        &[("recipe", "busy")],
        Duration::from_secs(30),
    );
    let addr = d.addr.clone().unwrap();
    let pid = d.pid();
    // Warm up, then the baseline.
    for _ in 0..20 {
        assert_eq!(d.get("/status").status, 200);
    }
    let rss_before = vm_rss_kib(pid);

    // Slow clients: half send part of a request and stall, half send
    // nothing at all.
    let t_slow = Instant::now();
    let mut slow = Vec::new();
    for i in 0..SLOW_CLIENTS {
        let mut s = TcpStream::connect(&addr).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /status HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
        }
        slow.push(s);
    }

    // 1,000 concurrent connections, several rounds, from several threads.
    let started = Instant::now();
    let per = CONCURRENT / THREADS;
    for round in 0..ROUNDS {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let addr = addr.clone();
                std::thread::spawn(move || burst(&addr, per, round + t))
            })
            .collect();
        // Meanwhile a fresh client is answered promptly.
        let t = Instant::now();
        d.assert_healthy();
        let probe = t.elapsed();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(
            ok, CONCURRENT,
            "round {round}: {ok} of {CONCURRENT} answered 200"
        );
        assert!(
            probe < Duration::from_secs(2),
            "healthz took {probe:?} under load"
        );
    }
    let elapsed = started.elapsed();
    let rss_peak = vm_rss_kib(pid);
    eprintln!(
        "load: {} requests over {CONCURRENT} concurrent connections in {elapsed:?}; VmRSS {rss_before} KiB before, {rss_peak} KiB after",
        CONCURRENT * ROUNDS
    );
    // The build is still in flight, its state intact.
    let st = d.status();
    assert_eq!(st["in_flight"]["recipe"], "busy", "{st:#}");

    // Slow clients are cut off by the header timeout, not held forever.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "slow client not disconnected after {:?}: {e}",
                    t_slow.elapsed()
                ),
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "slow client got {text:?}"
        );
    }
    let cut_off = t_slow.elapsed();
    eprintln!("load: {SLOW_CLIENTS} slow clients disconnected within {cut_off:?}");
    // The slow clients are read only after the load rounds: by then each
    // should have been cut off (10 s header timeout), so reading them ends
    // within 20 s of their connecting, or promptly after the rounds when
    // those took longer on a busy machine.
    assert!(
        cut_off < Duration::from_secs(20).max(elapsed + Duration::from_secs(5)),
        "slow clients cut off after {cut_off:?} (load rounds took {elapsed:?})"
    );

    // Memory stays bounded: a generous 48 MiB over the baseline.
    let rss_after = vm_rss_kib(pid);
    assert!(
        rss_peak < rss_before + 48 * 1024 && rss_after < rss_before + 48 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_peak} KiB (now {rss_after} KiB)"
    );

    // Still serving, and the build finishes.
    d.assert_healthy();
    std::fs::write(&go, "").unwrap();
    d.wait_event(
        "build + publish complete",
        &[("recipe", "busy")],
        Duration::from_secs(30),
    );
    let st = d.status();
    assert_eq!(st["builds_succeeded"], 1, "{st:#}");
    d.assert_healthy();
}
