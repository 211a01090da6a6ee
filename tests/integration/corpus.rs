//! The bad-input corpus under `tests/corpus/`: malformed configs, recipes
//! and webhook requests, each with the error it must produce.
//!
//! * `config/*.toml`: a header comment `# expect: <text>` (and optionally
//!   `# recipes: webhook`, `# names: <file>`). Each file is copied into a
//!   temporary farm and run through `farmhand --check --config`: exit 2, and
//!   one output line names the file (the config, or the `names:` file) and
//!   holds the expected text, which names the key.
//! * `recipe/<id>/recipe.toml` (or `peipkg.toml`): the same header (`# names:
//!   dir` when the directory itself is at fault). Each is put beside one good
//!   recipe and run through `--check`: exit 2, the problem names the recipe
//!   and its file, and the good recipe is still listed.
//! * `webhook/*.http`: a request as text (see [`WebhookCase::parse`]) with
//!   `# expect-status:` and `# expect-body:`, for every forge's endpoint.
//!   All are sent to one running daemon; afterwards nothing was polled or
//!   built, the webhook counters add up, `/healthz` is 200, and a correctly
//!   signed push still builds. Then the cases expecting 202 (payloads as
//!   each forge really sends them) are sent one by one: each triggers one
//!   poll, logged with its forge.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

fn corpus(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind)
}

/// The `# key: value` lines at the top of a corpus file (other leading
/// comment lines are free text).
fn directives(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"# ") else {
            break;
        };
        let rest = String::from_utf8_lossy(rest);
        if let Some((k, v)) = rest.split_once(": ") {
            if !k.contains(' ') {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

const GOOD_RECIPE: &str = "[upstream]\ngit = \"https://github.com/madler/zlib\"\n\
     tag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n";

const VALID_CONFIG: &str = "[manager]\nid = \"corpus-farm\"\nrecipes_dir = \"recipes\"\n\
     state_dir = \"state\"\n\n[repo]\nname = \"corpus-packages\"\n\n[poll]\ndefault_interval = \"1h\"\n";

/// A farm directory for config cases: `recipes/good` always, and
/// `recipes/hooked` (github_webhook = true) when `webhook`; a non-empty
/// `webhook-secret` and an empty `empty-secret` beside the config.
fn config_farm(webhook: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("recipes");
    std::fs::create_dir_all(r.join("good")).unwrap();
    std::fs::write(r.join("good/recipe.toml"), GOOD_RECIPE).unwrap();
    if webhook {
        std::fs::create_dir_all(r.join("hooked")).unwrap();
        std::fs::write(
            r.join("hooked/recipe.toml"),
            format!("{GOOD_RECIPE}\n[watch]\ngithub_webhook = true\n"),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("webhook-secret"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("empty-secret"), "").unwrap();
    dir
}

fn check(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .arg("--check")
        .arg("--config")
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("farmhand runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn bad_configs_are_refused_naming_file_and_key() {
    // Control: the farms themselves are fine, so every failure below comes
    // from the corpus file.
    for webhook in [false, true] {
        let farm = config_farm(webhook);
        let cfg = farm.path().join("valid.toml");
        let extra = if webhook {
            "\n[http]\naddr = \"127.0.0.1:0\"\nwebhook_secret_file = \"webhook-secret\"\n"
        } else {
            ""
        };
        std::fs::write(&cfg, format!("{VALID_CONFIG}{extra}")).unwrap();
        let (code, out) = check(&cfg);
        assert_eq!(code, Some(0), "control config must pass:\n{out}");
        assert!(
            out.contains("ok: config and all recipes are valid"),
            "{out}"
        );
    }

    let plain = config_farm(false);
    let hooked = config_farm(true);
    let files: Vec<PathBuf> = sorted_entries(&corpus("config"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(files.len() >= 50, "only {} config cases", files.len());
    let mut failures = Vec::new();
    for src in &files {
        let bytes = std::fs::read(src).unwrap();
        let d = directives(&bytes);
        let name = src.file_name().unwrap();
        let expect = d
            .get("expect")
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", src.display()));
        let farm = if d.get("recipes").is_some_and(|r| r == "webhook") {
            &hooked
        } else {
            &plain
        };
        let cfg = farm.path().join(name);
        std::fs::write(&cfg, &bytes).unwrap();
        let named = match d.get("names") {
            Some(f) => farm.path().join(f),
            None => cfg.clone(),
        };
        let (code, out) = check(&cfg);
        let named = named.display().to_string();
        let hit = out
            .lines()
            .any(|l| l.contains(&named) && l.contains(expect.as_str()));
        if code != Some(2) || !hit {
            failures.push(format!(
                "{}: exit {code:?}, want 2 and a line naming {named} with {expect:?}; got:\n{out}",
                src.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} config cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in sorted_entries(from) {
        let dest = to.join(e.file_name().unwrap());
        if e.is_dir() {
            copy_dir(&e, &dest);
        } else {
            std::fs::copy(&e, &dest).unwrap();
        }
    }
}

#[test]
fn bad_recipes_are_refused_and_the_good_one_still_listed() {
    let cases = sorted_entries(&corpus("recipe"));
    assert!(cases.len() >= 50, "only {} recipe cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let id = case.file_name().unwrap().to_string_lossy().into_owned();
        let file = ["recipe.toml", "peipkg.toml"]
            .into_iter()
            .find(|f| case.join(f).exists())
            .unwrap_or_else(|| panic!("{}: no recipe file", case.display()));
        let d = directives(&std::fs::read(case.join(file)).unwrap());
        let expect = d
            .get("expect")
            .unwrap_or_else(|| panic!("{}/{file}: no `# expect:` line", case.display()));

        let farm = Farm::new();
        farm.write_config("");
        farm.recipe("good", GOOD_RECIPE, "#!/bin/sh\n");
        let dir = farm.root.join("recipes").join(&id);
        copy_dir(case, &dir);
        let named = if d.get("names").is_some_and(|n| n == "dir") {
            dir.display().to_string()
        } else {
            dir.join(file).display().to_string()
        };
        let out = farm.run(&["--check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let problem = format!("recipe {id} invalid: ");
        let named_ok = text
            .lines()
            .any(|l| l.contains(&problem) && l.contains(&named) && l.contains(expect.as_str()));
        let good_listed = text
            .lines()
            .any(|l| l.starts_with("good ") && l.contains("https://github.com/madler/zlib"));
        let counted = text.contains("(1 valid, 1 invalid)");
        if out.status.code() != Some(2) || !named_ok || !good_listed || !counted {
            failures.push(format!(
                "{}: exit {:?}, named={named_ok} good_listed={good_listed} counted={counted}; \
                 want a line with {problem:?}, {named} and {expect:?}; got:\n{text}",
                case.display(),
                out.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} recipe cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// One webhook corpus file.
///
/// Format: `# key: value` directive lines (and free `#` comment lines),
/// then an HTTP request as text: the request line (`POST /webhooks/github`),
/// header lines, one empty line, and the body (the rest of the file, exact
/// bytes). `Host`, `Connection: close` and `Content-Length` are added
/// unless the file sets `Content-Length` itself or uses
/// `Transfer-Encoding: chunked` (the body is then sent chunked).
///
/// Directives: `expect-status`, `expect-body` (substring of the answer),
/// `sign-over` (sign this text instead of the body), `body-fill: N c` (the
/// body is N copies of the character c).
///
/// Placeholders, replaced before sending: in the body, `@UPSTREAM@` and
/// `@OPTED_OUT@` (the upstream URLs of the watched and the opted-out
/// recipe); in header values, `@SIGNATURE@` (`sha256=` + HMAC-SHA256 of the
/// body with the farm's secret), `@SIGNATURE:<secret>@` (with another
/// secret), `@HMAC-HEX@` (the hex alone), `@HMAC-HEX:<secret>@` (with
/// another secret), `@HMAC-HEX-TRUNCATED@` (its last two digits cut),
/// `@SECRET@` (the farm's secret itself, as GitLab's `X-Gitlab-Token`
/// sends it), `@NOW@` and `@NOW-360@` (Unix seconds now and 6 minutes ago)
/// and `@GITLAB-SIGNATURE@` (`v1,` + base64 HMAC-SHA256 of
/// `{webhook-id}.{webhook-timestamp}.{body}`, GitLab's signing token).
struct WebhookCase {
    name: String,
    status: u16,
    body_text: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    sign_over: Option<Vec<u8>>,
}

impl WebhookCase {
    fn parse(path: &Path, vars: &[(&str, &str)]) -> WebhookCase {
        let raw = std::fs::read(path).unwrap();
        let d = directives(&raw);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut rest: &[u8] = &raw;
        while rest.starts_with(b"#") {
            let end = rest.iter().position(|&b| b == b'\n').unwrap() + 1;
            rest = &rest[end..];
        }
        let split = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or_else(|| panic!("{name}: no empty line after the headers"));
        let head = String::from_utf8(rest[..split].to_vec()).unwrap();
        let mut body = rest[split + 2..].to_vec();
        let mut lines = head.lines();
        let (method, target) = lines
            .next()
            .and_then(|l| l.split_once(' '))
            .unwrap_or_else(|| panic!("{name}: no request line"));
        let headers = lines
            .map(|l| {
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{name}: bad header line {l:?}"));
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let subst = |b: &[u8]| {
            let mut s = b.to_vec();
            for (k, v) in vars {
                s = replace_bytes(&s, k.as_bytes(), v.as_bytes());
            }
            s
        };
        body = subst(&body);
        if let Some(fill) = d.get("body-fill") {
            let (n, c) = fill.split_once(' ').expect("body-fill: N c");
            body = c.repeat(n.parse().expect("body-fill count")).into_bytes();
        }
        WebhookCase {
            status: d
                .get("expect-status")
                .unwrap_or_else(|| panic!("{name}: no expect-status"))
                .parse()
                .unwrap(),
            body_text: d
                .get("expect-body")
                .unwrap_or_else(|| panic!("{name}: no expect-body"))
                .clone(),
            method: method.to_string(),
            path: target.to_string(),
            headers,
            body,
            sign_over: d.get("sign-over").map(|s| subst(s.as_bytes())),
            name,
        }
    }

    /// The raw request bytes (headers; the body is sent separately).
    fn head(&self, addr: &str, secret: &[u8]) -> Vec<u8> {
        let signed: &[u8] = self.sign_over.as_deref().unwrap_or(&self.body);
        let sig = sign(secret, signed);
        let hex = sig["sha256=".len()..].to_string();
        let mut req = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
            self.method, self.path
        );
        let mut explicit_length = false;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let timed = |v: &str| {
            v.replace("@NOW-360@", &(now - 360).to_string())
                .replace("@NOW@", &now.to_string())
                .replace("@SECRET@", &String::from_utf8_lossy(secret))
        };
        let header = |name: &str| {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| timed(v))
                .unwrap_or_default()
        };
        let gitlab_sig = {
            use base64::Engine as _;
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            mac.update(
                format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).as_bytes(),
            );
            mac.update(signed);
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            )
        };
        for (k, v) in &self.headers {
            let mut v = timed(v)
                .replace("@GITLAB-SIGNATURE@", &gitlab_sig)
                .replace("@SIGNATURE@", &sig)
                .replace("@HMAC-HEX-TRUNCATED@", &hex[..hex.len() - 2])
                .replace("@HMAC-HEX@", &hex);
            if let Some((before, after)) = v.split_once("@SIGNATURE:") {
                let (other_secret, tail) = after.split_once('@').expect("@SIGNATURE:<secret>@");
                v = format!("{before}{}{tail}", sign(other_secret.as_bytes(), signed));
            }
            if let Some((before, after)) = v.split_once("@HMAC-HEX:") {
                let (other_secret, tail) = after.split_once('@').expect("@HMAC-HEX:<secret>@");
                let other = sign(other_secret.as_bytes(), signed);
                v = format!("{before}{}{tail}", &other["sha256=".len()..]);
            }
            if k.eq_ignore_ascii_case("content-length") {
                explicit_length = true;
            }
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !explicit_length && !self.chunked() {
            req.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        req.push_str("\r\n");
        req.into_bytes()
    }

    fn chunked(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        })
    }

    /// Sends the request (body from a second thread, so that an early
    /// answer is read even while the server refuses the rest) and returns
    /// (status, body, time to answer).
    fn send(&self, addr: &str, secret: &[u8]) -> (u16, String, Duration) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let head = self.head(addr, secret);
        let body = if self.chunked() {
            let mut b = Vec::with_capacity(self.body.len() + 64);
            for chunk in self.body.chunks(1 << 16) {
                b.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                b.extend_from_slice(chunk);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        } else {
            self.body.clone()
        };
        let started = Instant::now();
        let writer = std::thread::spawn(move || {
            // The server may answer and close before reading everything.
            let _ = w.write_all(&head).and_then(|_| w.write_all(&body));
        });
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
            if response_complete(&raw) {
                break;
            }
        }
        let elapsed = started.elapsed();
        let _ = s.shutdown(std::net::Shutdown::Both);
        writer.join().unwrap();
        let (status, body) = parse_answer(&raw).unwrap_or_else(|| {
            panic!(
                "{}: no HTTP answer in {:?}",
                self.name,
                String::from_utf8_lossy(&raw)
            )
        });
        (status, body, elapsed)
    }
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Header end and declared length, when the headers are complete.
fn split_answer(raw: &[u8]) -> Option<(usize, Option<usize>, bool)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    Some((end, length, chunked))
}

fn response_complete(raw: &[u8]) -> bool {
    match split_answer(raw) {
        Some((end, Some(n), _)) => raw.len() >= end + n,
        Some((_, None, true)) => raw.ends_with(b"0\r\n\r\n"),
        _ => false,
    }
}

fn parse_answer(raw: &[u8]) -> Option<(u16, String)> {
    let (end, length, chunked) = split_answer(raw)?;
    let status = String::from_utf8_lossy(&raw[..end])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let mut body = raw[end..].to_vec();
    if chunked {
        body = dechunk(&body);
    } else if let Some(n) = length {
        body.truncate(n);
    }
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The `farmhand_webhooks_total` counters from `/metrics`, by result
/// (summed over the forges).
fn webhook_counters(d: &Daemon) -> BTreeMap<String, u64> {
    let m = d.get("/metrics").text();
    let mut out = BTreeMap::new();
    for l in m.lines() {
        let Some(rest) = l.strip_prefix("farmhand_webhooks_total{forge=\"") else {
            continue;
        };
        let Some((_, rest)) = rest.split_once("\",result=\"") else {
            continue;
        };
        let Some((r, n)) = rest.split_once("\"} ") else {
            continue;
        };
        *out.entry(r.to_string()).or_default() += n.trim().parse::<u64>().unwrap();
    }
    out
}

#[test]
fn bad_webhooks_get_their_status_and_trigger_nothing() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let secret = b"test-secret"; // util's webhook-secret file, trimmed
    let up = Upstream::new(&farm.root.join("up"));
    let other = Upstream::new(&farm.root.join("other"));
    let build = "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/hello\"\n\
                 echo \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/hello/version\"\n";
    farm.simple_recipe("hooked", &up, build, "\n[watch]\ngithub_webhook = true\n");
    farm.simple_recipe("opted-out", &other, build, "");
    let d = farm.start();
    let addr = d.addr.clone().unwrap();
    d.wait_count("poll complete", 2, Duration::from_secs(20));
    // From now on a poll of `hooked` would find a version to build.
    up.release("v1.0.0");

    let upstream_url = up.url();
    let other_url = other.url();
    let vars = [
        ("@UPSTREAM@", upstream_url.as_str()),
        ("@OPTED_OUT@", other_url.as_str()),
    ];
    let files = sorted_entries(&corpus("webhook"));
    assert!(files.len() >= 30, "only {} webhook cases", files.len());
    let (accepted, refused): (Vec<WebhookCase>, Vec<WebhookCase>) = files
        .iter()
        .map(|f| WebhookCase::parse(f, &vars))
        .partition(|c| c.status == 202);
    for forge in ["github", "gitea", "gitlab", "bitbucket"] {
        let path = format!("/webhooks/{forge}");
        assert!(
            refused.iter().filter(|c| c.path == path).count() >= 4,
            "too few refused cases for {forge}"
        );
    }
    assert!(
        accepted.len() >= 5,
        "only {} accepted cases",
        accepted.len()
    );
    let mut failures = Vec::new();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for case in &refused {
        let (status, body, elapsed) = case.send(&addr, secret);
        if status != case.status || !body.contains(&case.body_text) {
            failures.push(format!(
                "{}: got {status} {body:?}, want {} with {:?}",
                case.name, case.status, case.body_text
            ));
        }
        if elapsed > Duration::from_secs(5) {
            failures.push(format!("{}: answered after {elapsed:?}", case.name));
        }
        let result = match case.status {
            401 => Some("invalid_signature"),
            400 => Some("bad_request"),
            413 => Some("too_large"),
            200 => Some("not_watched"),
            _ => None,
        };
        if let Some(r) = result {
            *want.entry(r.to_string()).or_default() += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing was acted on: no webhook accepted, no extra poll, no build.
    let counters = webhook_counters(&d);
    for r in ["accepted", "pong", "duplicate"] {
        assert_eq!(counters.get(r), Some(&0), "{r}: {counters:?}");
    }
    for (r, n) in &want {
        assert_eq!(counters.get(r), Some(n), "{r}: {counters:?}");
    }
    assert_eq!(d.count("webhook accepted"), 0, "{}", d.logs());
    assert_eq!(d.count("polling upstream"), 2, "{}", d.logs());
    assert_eq!(d.count("starting build"), 0, "{}", d.logs());
    let builds: serde_json::Value = serde_json::from_slice(&d.get("/builds").body).unwrap();
    assert_eq!(builds, serde_json::json!([]));
    assert_eq!(
        d.count("webhook signature invalid"),
        want["invalid_signature"] as usize
    );
    let h = d.get("/healthz");
    assert_eq!((h.status, h.text().trim()), (200, "ok"));

    // Control: the same daemon still acts on a correctly signed push.
    let body =
        format!(r#"{{"ref":"refs/tags/v1.0.0","repository":{{"clone_url":"{upstream_url}"}}}}"#);
    let r = d.webhook("push", "corpus-control", body.as_bytes(), secret);
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_log("build + publish complete", Duration::from_secs(30));
    assert_eq!(d.count("webhook accepted"), 1);

    // Each forge's real-looking tag event: accepted, one poll each.
    for (i, case) in accepted.iter().enumerate() {
        let forge = case.path.trim_start_matches("/webhooks/");
        let (status, body, _) = case.send(&addr, secret);
        assert_eq!(
            (status, body.contains(&case.body_text)),
            (202, true),
            "{}: {status} {body:?}",
            case.name
        );
        d.wait_events(
            "webhook accepted, triggering immediate poll",
            &[("recipe", "hooked"), ("forge", forge)],
            accepted[..=i]
                .iter()
                .filter(|c| c.path == case.path)
                .count(),
            Duration::from_secs(20),
        );
        d.wait_events(
            "poll complete",
            &[("recipe", "hooked")],
            // The first poll, the control's, and one per case so far.
            2 + i + 1,
            Duration::from_secs(20),
        );
    }
    let counters = webhook_counters(&d);
    assert_eq!(counters["accepted"], 1 + accepted.len() as u64);
    assert_eq!(d.count("starting build"), 1, "{}", d.logs());
}
