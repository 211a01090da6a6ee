//! `farmhand ctl`: the farm's HTTP API from a shell (DESIGN.md section 15).
//!
//! It reads `[http].addr` and `[http].control_token_file` from the farm's
//! config (or takes `--url` and `--token-file`), speaks plain HTTP/1.1 to
//! the daemon over a `TcpStream` (no TLS: on the build host it talks to
//! the daemon directly), and prints aligned tables and one-line results,
//! or with `--json` the API's own JSON. Exit codes: 0 done, 1 the daemon
//! refused or failed (its message printed), 2 bad usage.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::host::keys::read_control_token;
use crate::model::build::BuildKey;
use crate::model::config::Config;

/// `farmhand ctl`'s own flags and the command.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's address, http://HOST:PORT, instead of reading it from
    /// --config.
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    pub url: Option<String>,
    /// The file holding the control token (with --url; --config reads
    /// [http].control_token_file).
    #[arg(long, value_name = "FILE", requires = "url")]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables and one-line results.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// A build state, for `builds --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// In flight.
    Running,
    /// Built and published.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled by an operator or stopped by shutdown.
    Cancelled,
}

/// The commands of `farmhand ctl`.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The farm at a glance: the build in flight, the queue, failures,
    /// paused and invalid recipes (GET /status).
    Status,
    /// Recent builds, newest first (GET /builds).
    Builds {
        /// Only the builds of this recipe.
        #[arg(long, value_name = "R")]
        recipe: Option<String>,
        /// Only builds in this state.
        #[arg(long, value_name = "S")]
        state: Option<StateFilter>,
    },
    /// One recipe: paused or not, its last poll, queued versions, failures
    /// and recent builds.
    Recipe {
        /// The recipe id.
        recipe: String,
    },
    /// A build's log (GET /builds/ID/log).
    Log {
        /// The build id (see `farmhand ctl builds`).
        id: u64,
        /// Follow a running build's log until the build ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Follow the farm's events as they happen, one line per event
    /// (GET /events); Ctrl-C stops.
    Watch,
    /// Poll a recipe's upstream now, whatever its webhook setting.
    Poll {
        /// The recipe id.
        recipe: String,
    },
    /// Stop polling and building a recipe until it is resumed (kept
    /// across restarts).
    Pause {
        /// The recipe id.
        recipe: String,
    },
    /// Undo a pause; the recipe is polled at once.
    Resume {
        /// The recipe id.
        recipe: String,
    },
    /// Cancel the build in flight: TERM to its processes, KILL after 5 s;
    /// its version backs off like a failure.
    Cancel {
        /// The build id (see `farmhand ctl status`).
        id: u64,
    },
    /// Clear a failed version's backoff and build it next.
    Retry {
        /// The failure, as `/status` lists it: RECIPE@VERSION.
        key: BuildKey,
    },
}

/// Why `ctl` stops: bad usage (exit 2) or the daemon refused or failed
/// (exit 1).
#[derive(Debug)]
enum Fail {
    Usage(String),
    Daemon(String),
}

type Result<T> = std::result::Result<T, Fail>;

/// Runs `farmhand ctl`; `config` is the farm config (`--config`, used
/// unless `--url` is given). Returns the exit code.
pub fn main(args: CtlArgs, config: &Path) -> i32 {
    match run(args, config) {
        Ok(()) => 0,
        Err(Fail::Usage(m)) => {
            eprintln!("farmhand ctl: {m}");
            2
        }
        Err(Fail::Daemon(m)) => {
            eprintln!("farmhand ctl: {m}");
            1
        }
    }
}

fn run(args: CtlArgs, config: &Path) -> Result<()> {
    let target = Target::new(&args, config)?;
    let json = args.json;
    match args.command {
        CtlCommand::Status => {
            let status = target.get_json("/status")?;
            if json {
                print_json(&status)
            } else {
                print_out(&render_status(&status))
            }
        }
        CtlCommand::Builds { recipe, state } => {
            let builds = target.get_json("/builds")?;
            let builds: Vec<Value> = builds
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| recipe.as_deref().is_none_or(|r| b["recipe"] == r))
                .filter(|b| {
                    state.is_none_or(|s| {
                        s.to_possible_value()
                            .is_some_and(|v| b["state"] == v.get_name())
                    })
                })
                .cloned()
                .collect();
            if json {
                print_json(&Value::Array(builds))
            } else {
                print_out(&render_builds(&builds))
            }
        }
        // `--json` prints the API's document (`GET /recipes/{id}`); the
        // table is the recipe as `/status` and `/builds` show it now.
        CtlCommand::Recipe { recipe } if json => {
            print_json(&target.get_json(&format!("/recipes/{}", encode(&recipe)))?)
        }
        CtlCommand::Recipe { recipe } => {
            let status = target.get_json("/status")?;
            let builds = target.get_json("/builds")?;
            print_out(&render_recipe(&recipe_from_status(
                &recipe, &status, &builds,
            )?))
        }
        CtlCommand::Log { id, follow } => {
            let path = if follow {
                format!("/builds/{id}/log?follow=1")
            } else {
                format!("/builds/{id}/log")
            };
            let mut r = target.request("GET", &path, None, None, follow)?;
            let mut out = std::io::stdout().lock();
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = r
                    .body
                    .read(&mut buf)
                    .map_err(|e| Fail::Daemon(format!("reading the log of build {id}: {e}")))?;
                if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return Ok(());
                }
            }
        }
        CtlCommand::Watch => watch(&target, json),
        CtlCommand::Poll { recipe } => {
            target.act(&format!("/recipes/{}/poll", encode(&recipe)), json)
        }
        CtlCommand::Pause { recipe } => {
            target.act(&format!("/recipes/{}/pause", encode(&recipe)), json)
        }
        CtlCommand::Resume { recipe } => {
            target.act(&format!("/recipes/{}/resume", encode(&recipe)), json)
        }
        CtlCommand::Cancel { id } => target.act(&format!("/builds/{id}/cancel"), json),
        CtlCommand::Retry { key } => target.act(
            &format!("/failures/{}/retry", encode(&key.to_string())),
            json,
        ),
    }
}

/// Where the daemon is and how to authenticate to it.
struct Target {
    /// `host:port`, for connecting and the `Host` header.
    authority: String,
    /// A path prefix (a daemon behind a proxy at `http://h/farm`), no
    /// trailing slash.
    base: String,
    /// Where the token comes from: the file, and what set it.
    token_file: Option<(PathBuf, String)>,
    /// Why there is no token, when there is none.
    no_token: String,
}

impl Target {
    fn new(args: &CtlArgs, config: &Path) -> Result<Target> {
        if let Some(url) = &args.url {
            let (authority, base) = parse_url(url)?;
            return Ok(Target {
                authority,
                base,
                token_file: args
                    .token_file
                    .clone()
                    .map(|f| (f, "--token-file".to_string())),
                no_token: "the control commands need a token: pass --token-file FILE with --url"
                    .into(),
            });
        }
        let cfg = Config::load(config).map_err(|e| {
            Fail::Usage(format!(
                "{e} (point --config at the farm's config, or pass --url http://HOST:PORT)"
            ))
        })?;
        let Some(addr) = &cfg.http.addr else {
            return Err(Fail::Usage(format!(
                "{}: [http].addr is not set, so the daemon serves no HTTP; set it, or pass --url if systemd hands it the socket",
                config.display()
            )));
        };
        Ok(Target {
            authority: client_addr(addr),
            base: String::new(),
            token_file: cfg
                .http
                .control_token_file
                .map(|f| (f, format!("[http].control_token_file in {}", config.display()))),
            no_token: format!(
                "{}: [http].control_token_file is not set, so the control API is off; set it (see docs/configuration.md) and restart farmhand",
                config.display()
            ),
        })
    }

    fn token(&self) -> Result<String> {
        let Some((file, from)) = &self.token_file else {
            return Err(Fail::Usage(self.no_token.clone()));
        };
        read_control_token(file).map_err(|e| {
            Fail::Usage(format!(
                "{e} (the file named by {from}; run as a user who may read it, e.g. with sudo)"
            ))
        })
    }

    /// One request; a status other than 2xx is a [`Fail::Daemon`] with
    /// the daemon's message. `stream` lifts the read timeout (a followed
    /// log, the event stream).
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        accept: Option<&str>,
        stream: bool,
    ) -> Result<Response> {
        let mut r = http_request(
            &self.authority,
            method,
            &format!("{}{path}", self.base),
            token,
            accept,
            stream,
        )?;
        if !(200..300).contains(&r.status) {
            let text = r.text().unwrap_or_default();
            let mut m = format!(
                "{method} {path}: {} {}",
                r.status,
                text.trim().lines().next().unwrap_or("")
            );
            if r.status == 401 {
                if let Some((file, from)) = &self.token_file {
                    m.push_str(&format!(
                        " (the token in {} ({from}) is not the daemon's)",
                        file.display()
                    ));
                }
            }
            return Err(Fail::Daemon(m));
        }
        Ok(r)
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        let mut r = self.request("GET", path, None, Some("application/json"), false)?;
        let text = r
            .text()
            .map_err(|e| Fail::Daemon(format!("GET {path}: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| Fail::Daemon(format!("GET {path}: the answer is not JSON: {e}")))
    }

    /// A control action: POST with the token; prints the daemon's message.
    fn act(&self, path: &str, json: bool) -> Result<()> {
        let token = self.token()?;
        let mut r = self.request("POST", path, Some(&token), None, false)?;
        let text = r
            .text()
            .map_err(|e| Fail::Daemon(format!("POST {path}: {e}")))?;
        if json {
            return print_out(text.trim_end());
        }
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        print_out(doc["message"].as_str().unwrap_or(text.trim()))
    }
}

/// `(authority, base path)` of `http://host:port[/base]`.
fn parse_url(url: &str) -> Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(Fail::Usage(format!(
            "--url {url:?}: only http://HOST:PORT is supported (farmhand ctl talks to the daemon directly, not through a TLS proxy)"
        )));
    };
    let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(Fail::Usage(format!("--url {url:?}: no host")));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let base = base.trim_end_matches('/');
    let base = if base.is_empty() {
        String::new()
    } else {
        format!("/{base}")
    };
    Ok((authority, base))
}

/// The address to connect to for a listen address: the wildcard becomes
/// loopback.
fn client_addr(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    }
}

/// Percent-encodes a path segment (everything but unreserved characters
/// and `@`).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- A tiny HTTP/1.1 client ----

/// A response whose body is read as it arrives.
struct Response {
    status: u16,
    body: Box<dyn Read>,
}

impl Response {
    fn text(&mut self) -> std::io::Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }
}

fn http_request(
    authority: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    accept: Option<&str>,
    stream: bool,
) -> Result<Response> {
    let cannot = |e: std::io::Error| {
        Fail::Daemon(format!(
            "cannot reach farmhand at {authority}: {e}; is it running? (systemctl status farmhand)"
        ))
    };
    let addrs: Vec<_> = authority.to_socket_addrs().map_err(cannot)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut conn = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(s) => {
                conn = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut s = conn.ok_or_else(|| cannot(last))?;
    let timeout = (!stream).then_some(Duration::from_secs(60));
    s.set_read_timeout(timeout).map_err(cannot)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: farmhand-ctl/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(a) = accept {
        head.push_str(&format!("Accept: {a}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(cannot)?;
    let bad = |m: &str| Fail::Daemon(format!("{method} {path}: bad answer from {authority}: {m}"));
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| bad(&e.to_string()))?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad(&format!("status line {:?}", line.trim_end())))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        let n = r.read_line(&mut line).map_err(|e| bad(&e.to_string()))?;
        let l = line.trim_end();
        if n == 0 || l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse::<u64>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let body: Box<dyn Read> = if chunked {
        Box::new(Chunked {
            inner: r,
            left: 0,
            done: false,
        })
    } else if let Some(n) = length {
        Box::new(r.take(n))
    } else {
        Box::new(r)
    };
    Ok(Response { status, body })
}

/// A chunked transfer-encoded body, decoded as it is read.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF that ends the previous chunk.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {size:?}"),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

// ---- Events ----

/// One Server-Sent Event.
#[derive(Debug, PartialEq)]
struct Event {
    name: String,
    data: String,
}

/// Reads Server-Sent Events from `r`, handing each to `each` until it
/// returns false or the stream ends.
fn read_events(r: impl BufRead, mut each: impl FnMut(Event) -> bool) -> std::io::Result<()> {
    let (mut name, mut data) = (String::new(), Vec::<String>::new());
    for line in r.lines() {
        let line = line?;
        if line.is_empty() {
            if !data.is_empty() || !name.is_empty() {
                let ev = Event {
                    name: if name.is_empty() {
                        "message".into()
                    } else {
                        std::mem::take(&mut name)
                    },
                    data: data.join("\n"),
                };
                data.clear();
                if !each(ev) {
                    return Ok(());
                }
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value.to_string(),
            "data" => data.push(value.to_string()),
            _ => {}
        }
    }
    Ok(())
}

/// One line for an event: its name, then its data's fields as
/// `key=value` (or the data as it came, when it is not a JSON object).
fn event_line(ev: &Event) -> String {
    let fields = match serde_json::from_str::<Value>(&ev.data) {
        Ok(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => ev.data.replace('\n', " "),
    };
    format!("{} {fields}", ev.name).trim_end().to_string()
}

fn watch(target: &Target, json: bool) -> Result<()> {
    let r = target
        .request("GET", "/events", None, Some("text/event-stream"), true)
        .map_err(|f| match f {
            Fail::Daemon(m) if m.contains(" 404 ") => Fail::Daemon(format!(
                "{m}: this farmhand has no event stream yet; upgrade it, or use `farmhand ctl status`"
            )),
            other => other,
        })?;
    let mut out = std::io::stdout().lock();
    read_events(BufReader::new(r.body), |ev| {
        let line = if json {
            serde_json::from_str::<Value>(&ev.data)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| ev.data.clone())
        } else {
            event_line(&ev)
        };
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    })
    .map_err(|e| Fail::Daemon(format!("GET /events: {e}")))
}

// ---- Output ----

fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", text.trim_end_matches('\n'));
    Ok(())
}

fn print_json(v: &Value) -> Result<()> {
    print_out(&serde_json::to_string_pretty(v).unwrap_or_default())
}

/// A JSON value as table text: strings bare, null as `-`.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An aligned table, two spaces between columns.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = head.iter().map(|h| (*h).to_string()).collect();
    for r in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                line.push_str(c);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Aligned `name  value` lines.
fn pairs(rows: &[Vec<String>]) -> String {
    let t = table(&["", ""], rows);
    t.split_once('\n')
        .map_or(String::new(), |(_, rest)| rest.to_string())
}

fn seconds(v: &Value) -> String {
    match v.as_f64() {
        Some(s) if s >= 60.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        Some(s) => format!("{s:.1}s"),
        None => "-".into(),
    }
}

fn render_status(s: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "farm {} (farmhand {}), up since {}\n",
        scalar(&s["farm_id"]),
        scalar(&s["version"]),
        scalar(&s["started_at"])
    ));
    let f = &s["in_flight"];
    let in_flight = if f.is_null() {
        "idle".to_string()
    } else {
        format!(
            "build {} {} {} ({}, since {}, {})",
            scalar(&f["build_id"]),
            scalar(&f["recipe"]),
            scalar(&f["version"]),
            scalar(&f["phase"]),
            scalar(&f["started_at"]),
            scalar(&f["trigger"])
        )
    };
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(scalar)
            .collect::<Vec<_>>()
    };
    let paused = ids(&s["paused"]);
    let invalid = s["invalid_recipes"]
        .as_object()
        .map_or(0, serde_json::Map::len);
    let queue: Vec<String> = s["queue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| format!("{} {}", scalar(&q["recipe"]), scalar(&q["version"])))
        .collect();
    let mut rows = vec![
        vec!["in flight".to_string(), in_flight],
        vec![
            "recipes".into(),
            format!("{} valid, {invalid} invalid", ids(&s["recipes"]).len()),
        ],
        vec![
            "paused".into(),
            if paused.is_empty() {
                "none".into()
            } else {
                paused.join(", ")
            },
        ],
        vec![
            "queue".into(),
            match s["queue_depth"].as_u64().unwrap_or(queue.len() as u64) {
                0 => "empty".into(),
                n => format!(
                    "{n}: {}{}",
                    queue.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                    if n > 5 { ", ..." } else { "" }
                ),
            },
        ],
        vec![
            "builds".into(),
            format!(
                "{} attempted, {} succeeded, {} failed, {} cancelled",
                scalar(&s["builds_attempted"]),
                scalar(&s["builds_succeeded"]),
                scalar(&s["builds_failed"]),
                s["builds_cancelled"].as_u64().unwrap_or(0)
            ),
        ],
    ];
    if let Some(e) = s["repository_error"].as_str() {
        rows.push(vec!["repository".into(), format!("UNUSABLE: {e}")]);
    }
    if let Some(h) = s["held"].as_str() {
        rows.push(vec!["held".into(), format!("builds held: {h}")]);
    }
    out.push_str(&pairs(&rows));
    if let Some(t) = failures_table(&s["failures"], "FAILURE") {
        out.push('\n');
        out.push_str(&t);
    }
    if let Some(invalid) = s["invalid_recipes"].as_object().filter(|m| !m.is_empty()) {
        let rows: Vec<Vec<String>> = invalid
            .iter()
            .map(|(k, e)| vec![k.clone(), scalar(e)])
            .collect();
        out.push('\n');
        out.push_str(&table(&["INVALID RECIPE", "ERROR"], &rows));
    }
    out
}

fn render_builds(builds: &[Value]) -> String {
    if builds.is_empty() {
        return "no builds\n".into();
    }
    let rows: Vec<Vec<String>> = builds
        .iter()
        .map(|b| {
            let error = match (b["phase"].as_str(), b["error"].as_str()) {
                (Some(p), Some(e)) => format!("{p}: {e}"),
                (None, Some(e)) => e.to_string(),
                _ => String::new(),
            };
            vec![
                scalar(&b["id"]),
                scalar(&b["recipe"]),
                scalar(&b["version"]),
                scalar(&b["state"]),
                scalar(&b["trigger"]),
                scalar(&b["started_at"]),
                seconds(&b["duration"]),
                error,
            ]
        })
        .collect();
    table(
        &[
            "ID", "RECIPE", "VERSION", "STATE", "TRIGGER", "STARTED", "DURATION", "ERROR",
        ],
        &rows,
    )
}

/// The backoff entries of `failures` (an object keyed by `first`'s
/// column) as a table, or `None` when there are none.
fn failures_table(failures: &Value, first: &str) -> Option<String> {
    let failures = failures.as_object().filter(|m| !m.is_empty())?;
    let rows: Vec<Vec<String>> = failures
        .iter()
        .map(|(k, f)| {
            vec![
                k.clone(),
                scalar(&f["failures"]),
                scalar(&f["next_retry"]),
                scalar(&f["error"]),
            ]
        })
        .collect();
    Some(table(&[first, "FAILURES", "NEXT RETRY", "ERROR"], &rows))
}

/// A recipe document of [`recipe_from_status`], for people.
fn render_recipe(r: &Value) -> String {
    let state = match (&r["invalid"], r["paused"].as_bool()) {
        (Value::String(e), _) => format!("invalid: {e}"),
        (_, Some(true)) => "paused".into(),
        _ => "active".into(),
    };
    let p = &r["poll"];
    let poll = if p["last_at"].is_null() {
        "not yet".to_string()
    } else {
        let result = match p["error"].as_str() {
            Some(e) => format!("failed: {e}"),
            None => format!("ok, {} tags", scalar(&p["tags_seen"])),
        };
        format!(
            "{} {result}; next {}",
            scalar(&p["last_at"]),
            scalar(&p["next_at"])
        )
    };
    let f = &r["in_flight"];
    let in_flight = if f.is_null() {
        "-".to_string()
    } else {
        format!(
            "build {} {} ({})",
            scalar(&f["build_id"]),
            scalar(&f["version"]),
            scalar(&f["phase"])
        )
    };
    let queued: Vec<String> = r["queued"]
        .as_array()
        .into_iter()
        .flatten()
        .map(scalar)
        .collect();
    let mut out = pairs(&[
        vec!["recipe".into(), scalar(&r["id"])],
        vec!["state".into(), state],
        vec!["last poll".into(), poll],
        vec!["in flight".into(), in_flight],
        vec![
            "queued".into(),
            if queued.is_empty() {
                "none".into()
            } else {
                queued.join(", ")
            },
        ],
    ]);
    if let Some(t) = failures_table(&r["failures"], "FAILED") {
        out.push('\n');
        out.push_str(&t);
    }
    if let Some(builds) = r["recent_builds"].as_array().filter(|b| !b.is_empty()) {
        let rows: Vec<Vec<String>> = builds
            .iter()
            .map(|b| {
                vec![
                    scalar(&b["id"]),
                    scalar(&b["version"]),
                    scalar(&b["state"]),
                    scalar(&b["started_at"]),
                    b["error"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["ID", "VERSION", "STATE", "STARTED", "ERROR"],
            &rows,
        ));
    }
    out
}

/// One recipe put together from `/status` and `/builds`.
fn recipe_from_status(id: &str, status: &Value, builds: &Value) -> Result<Value> {
    let listed = |v: &Value| v.as_array().is_some_and(|a| a.iter().any(|x| x == id));
    let invalid = status["invalid_recipes"].get(id).cloned();
    if !listed(&status["recipes"]) && invalid.is_none() {
        return Err(Fail::Daemon(format!(
            "no recipe {id} (`farmhand ctl status` lists them)"
        )));
    }
    let in_flight = Some(&status["in_flight"])
        .filter(|f| f["recipe"] == id)
        .cloned()
        .unwrap_or(Value::Null);
    let queued: Vec<Value> = status["queue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["recipe"] == id)
        .map(|q| q["version"].clone())
        .collect();
    let prefix = format!("{id}@");
    let failures: serde_json::Map<String, Value> = status["failures"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k[prefix.len()..].to_string(), v.clone()))
        .collect();
    let recent: Vec<Value> = builds
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["recipe"] == id)
        .take(5)
        .map(|b| {
            serde_json::json!({
                "id": b["id"], "version": b["version"], "state": b["state"],
                "started_at": b["started_at"], "error": b["error"],
            })
        })
        .collect();
    Ok(serde_json::json!({
        "id": id,
        "valid": invalid.is_none(),
        "invalid": invalid,
        "paused": listed(&status["paused"]),
        "poll": status["polls"].get(id).cloned().unwrap_or(Value::Null),
        "in_flight": in_flight,
        "queued": queued,
        "failures": failures,
        "recent_builds": recent,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_one_line_each() {
        let stream = b": hello\n\nevent: control\ndata: {\"action\":\"pause\",\"recipe\":\"libz\"}\n\ndata: plain\ndata: two\n\nevent: build\r\ndata: {\"id\": 3,\r\ndata:  \"state\": null}\r\n\r\n";
        let mut got = Vec::new();
        read_events(&stream[..], |ev| {
            got.push(event_line(&ev));
            true
        })
        .unwrap();
        assert_eq!(
            got,
            [
                "control action=pause recipe=libz",
                "message plain two",
                "build id=3 state=-"
            ]
        );
    }

    #[test]
    fn chunked_bodies_decode() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        let mut r = Chunked {
            inner: &body[..],
            left: 0,
            done: false,
        };
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello, world");
    }

    #[test]
    fn urls_addresses_and_segments() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080").ok().unwrap(),
            ("127.0.0.1:8080".into(), String::new())
        );
        assert_eq!(
            parse_url("http://farm/x/").ok().unwrap(),
            ("farm:80".into(), "/x".into())
        );
        assert!(matches!(parse_url("https://farm"), Err(Fail::Usage(_))));
        assert_eq!(client_addr("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(client_addr("[::]:80"), "[::1]:80");
        assert_eq!(client_addr("10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(encode("musl@1.2.5-1"), "musl@1.2.5-1");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "RECIPE"],
            &[
                vec!["1".into(), "libz".into()],
                vec!["10".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID  RECIPE\n1   libz\n10  x\n");
    }
}
