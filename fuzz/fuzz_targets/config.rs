//! Config parsing (`Config::parse`, DESIGN.md section 2).
//!
//! Input (after a mode byte) is raw config text, a fuzzed value put in one
//! slot of a valid config (so that validation, not only TOML syntax, is
//! exercised), or a Go-style duration.
//! Nothing may panic; an error names the file, on one line; an accepted config holds
//! only values the design allows. Go-style durations print back to the
//! same value (to the millisecond).
#![no_main]

mod common;

use std::path::Path;
use std::time::Duration;

use farmhand::model::config::{format_duration, parse_duration, Config, MIN_POLL_INTERVAL};
use libfuzzer_sys::fuzz_target;

const TEMPLATE: &[&str] = &[
    "[manager]",
    "id = @",
    "recipes_dir = @",
    "state_dir = @",
    "[repo]",
    "name = @",
    "description = @",
    "[signing]",
    "key_file = @",
    "[upload]",
    "backend = @",
    "remote = @",
    "command = @",
    "[http]",
    "addr = @",
    "webhook_secret_file = @",
    "[poll]",
    "default_interval = @",
    "concurrency = @",
    "timeout = @",
    "[build]",
    "backend = @",
    "timeout = @",
    "shutdown_grace = @",
    "keep_logs = @",
    "runner = @",
    "[backoff]",
    "schedule = @",
];

const DEFAULTS: &[&str] = &[
    "\"farm-1\"",
    "\"recipes\"",
    "\"state\"",
    "\"my-packages\"",
    "\"\"",
    "\"farm.key\"",
    "\"none\"",
    "\"r2:x\"",
    "[\"/bin/true\", \"{repo_dir}\"]",
    "\"127.0.0.1:8080\"",
    "\"secret\"",
    "\"1h\"",
    "4",
    "\"2m\"",
    "\"builtin\"",
    "\"4h\"",
    "\"30s\"",
    "10",
    "[]",
    "[\"1m\", \"5m\"]",
];

fn render(slot: usize, value: &str, quote: bool) -> String {
    common::render(TEMPLATE, DEFAULTS, slot, value, quote)
}

fn check(text: &str) {
    let path = Path::new("/fuzz/config.toml");
    match Config::parse(path, text) {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.starts_with("/fuzz/config.toml: "),
                "error does not name the file: {e}"
            );
            assert!(!e.contains('\n'), "error is not one line: {e:?}");
        }
        Ok(c) => {
            assert!(c.poll.default_interval >= MIN_POLL_INTERVAL);
            assert!((1..=1024).contains(&c.poll.concurrency));
            assert!(c.poll.timeout >= Duration::from_secs(1));
            assert!(c.build.timeout >= Duration::from_secs(1));
            assert!(c.build.keep_logs >= 1);
            assert!(!c.backoff.is_empty());
            assert!(c.backoff.iter().all(|d| *d >= Duration::from_secs(1)));
            assert!(farmhand::model::name::is_safe_component(&c.manager.id));
            assert!(!c.repo.name.is_empty());
            assert!(c
                .repo
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            assert!(c.manager.recipes_dir.is_absolute());
            assert!(c.manager.state_dir.is_absolute());
            if let Some(a) = &c.http.addr {
                let (host, port) = a.rsplit_once(':').expect("addr has a port");
                assert!(port.parse::<u16>().is_ok(), "{a}");
                assert!(!host.is_empty(), "{a}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: what the rest is. Seeds are `\0` + a config file.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 | 1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                check(text);
            }
        }
        2 => {
            // slot byte, then the value (quoted as a TOML string when the
            // slot byte is odd, raw otherwise).
            let Some((&slot, value)) = rest.split_first() else {
                return;
            };
            if let Ok(value) = std::str::from_utf8(value) {
                check(&render(
                    usize::from(slot) % DEFAULTS.len(),
                    value,
                    slot % 2 == 1,
                ));
            }
        }
        _ => {
            let Ok(s) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(d) = parse_duration(s) {
                // Printed to the millisecond, parsed back exactly.
                let shown = format_duration(d);
                let again = parse_duration(&shown).expect("a printed duration parses");
                let ms = Duration::from_millis(d.as_millis() as u64);
                assert_eq!(again, ms, "{s:?} -> {d:?} -> {shown:?}");
                assert_eq!(format_duration(again), shown, "{s:?}");
            }
        }
    }
});
