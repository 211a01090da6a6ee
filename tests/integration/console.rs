//! The console (DESIGN.md section 14, "Pages") against the real daemon:
//! its headers and content negotiation over plain HTTP, and, in a real
//! headless Chromium driven over WebDriver (fantoccini), a live overview
//! that follows a build without a reload, failures with a countdown, the
//! same facts with JavaScript off, a hidden tab that stops asking,
//! hostile text shown literally, and the control buttons (section 15): the
//! token field, pause, resume, poll, cancel and retry from the page, a
//! wrong token's 401 and a disabled API's 403 shown inline.
//!
//! Chromium and chromedriver come from Debian (`chromium`,
//! `chromium-driver`; `.ci/run` installs them). Where they are missing the
//! browser tests say they were skipped; under `CI` they fail instead.
//! Screenshots land in `$CARGO_TARGET_TMPDIR/console/`; with
//! `FARMHAND_SCREENSHOTS=docs/img` they are also written there (the ones
//! docs/console.md shows).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::util::*;

const T: Duration = Duration::from_secs(30);
const SECRET: &[u8] = b"test-secret";
const HOOKED: &str = "\n[watch]\ngithub_webhook = true\npoll_interval = \"1h\"\n";

/// Accept header of a browser.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver on a port of 127.0.0.1, with the Chromium it drives.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver, or says why it cannot: `None` means the test is
    /// skipped (it panics instead when `CI` is set).
    fn start(test: &str) -> Option<Driver> {
        let chromium = find_program(&["chromium", "chromium-browser"]);
        let driver = find_program(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let why = "chromium and chromedriver are not installed \
                       (apt-get install chromium chromium-driver)";
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {why}");
            }
            eprintln!("{test}: skipped: {why}");
            return None;
        };
        // chromedriver binds a free port itself (--port=0) and says which.
        for _ in 0..3 {
            let mut child = Command::new(&driver)
                .args(["--port=0", "--allowed-ips=127.0.0.1", "--log-level=SEVERE"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("started successfully on port ").nth(1) {
                        let port = rest.trim_end_matches('.').trim().to_string();
                        let _ = tx.send(port);
                    }
                }
            });
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(port) => {
                    return Some(Driver {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                        chromium,
                    });
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("chromedriver did not start");
    }

    /// A fresh headless browser session with its own profile; `js` false
    /// turns JavaScript off.
    async fn session(&self, profile: &Path, js: bool) -> Client {
        self.session_with(profile, js, &[]).await
    }

    /// A session with more browser flags (`--force-dark-mode`: the page
    /// sees `prefers-color-scheme: dark`).
    async fn session_with(&self, profile: &Path, js: bool, flags: &[&str]) -> Client {
        let mut opts = json!({
            "binary": self.chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1200,1000",
                "--force-color-profile=srgb", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        for f in flags {
            opts["args"].as_array_mut().unwrap().push(json!(f));
        }
        if !js {
            opts["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), opts);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `textContent` of the first element matching `css` ("" when none).
async fn text(c: &Client, css: &str) -> String {
    c.execute(
        "var e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        vec![json!(css)],
    )
    .await
    .expect("script runs")
    .as_str()
    .unwrap_or("")
    .to_string()
}

async fn eval(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.expect("script runs")
}

/// Waits until `css`'s text satisfies `ok`; returns it.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let t = text(c, css).await;
        if ok(&t) {
            return t;
        }
        if start.elapsed() > T {
            panic!("timed out waiting for {what} in {css}; it says:\n{t}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many requests the page's script has made (Resource Timing).
async fn fetches(c: &Client) -> u64 {
    eval(
        c,
        "return performance.getEntriesByType('resource')\
           .filter(function (e) { return e.initiatorType === 'fetch'; }).length;",
    )
    .await
    .as_u64()
    .unwrap()
}

async fn set_visibility(c: &Client, state: &str) {
    c.execute(
        "Object.defineProperty(document, 'visibilityState', {value: arguments[0], configurable: true});\
         Object.defineProperty(document, 'hidden', {value: arguments[0] === 'hidden', configurable: true});\
         document.dispatchEvent(new Event('visibilitychange'));",
        vec![json!(state)],
    )
    .await
    .unwrap();
}

/// Saves a screenshot under the target dir, and under
/// `$FARMHAND_SCREENSHOTS` when set.
async fn screenshot(c: &Client, name: &str) {
    save_png(name, &c.screenshot().await.expect("screenshot"));
}

/// Saves a screenshot of the first element matching `css`, as
/// [`screenshot`] does.
async fn screenshot_of(c: &Client, css: &str, name: &str) {
    c.execute(
        "document.querySelector(arguments[0]).scrollIntoView(); return 1;",
        vec![json!(css)],
    )
    .await
    .expect("script runs");
    let e = c.find(Locator::Css(css)).await.expect("the element");
    save_png(name, &e.screenshot().await.expect("screenshot"));
}

fn save_png(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
    if let Some(out) = std::env::var_os("FARMHAND_SCREENSHOTS") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(name), png).unwrap();
    }
}

/// A build script: prints a few lines, installs a file; for `slow_version`
/// it prints its lines slowly and waits for the files `gate1` and `gate2`
/// in the farm directory.
fn busybox_script(root: &Path) -> String {
    format!(
        r#"#!/bin/sh
set -e
echo "configuring busybox $FARMHAND_VERSION"
if [ "$FARMHAND_VERSION" = "1.36.1-1" ]; then
  for i in 1 2 3 4 5; do echo "compiling applets, part $i of 5"; sleep 0.2; done
  echo "waiting for the gate"
  while [ ! -e "{root}/gate1" ]; do sleep 0.05; done
  echo "linking busybox"
  while [ ! -e "{root}/gate2" ]; do sleep 0.05; done
else
  sleep 3
fi
mkdir -p "$DESTDIR/usr/bin"
echo busybox > "$DESTDIR/usr/bin/busybox"
"#,
        root = root.display()
    )
}

const QUICK: &str = "#!/bin/sh\necho \"building $FARMHAND_RECIPE $FARMHAND_VERSION\"\n\
                     mkdir -p \"$DESTDIR/usr/share/$FARMHAND_RECIPE\"\n\
                     echo \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/$FARMHAND_RECIPE/version\"\n";

const FAILING: &str = "#!/bin/sh\necho \"checking for a C compiler... cc\"\n\
                       echo \"src/ldso/dynlink.c:42: error: expected ';' before '}' token\" >&2\n\
                       exit 2\n";

/// A farm with three quick recipes, one that fails, one invalid, and
/// busybox, whose second version is built slowly on a webhook; with
/// `control`, the control API is on with [`TOKEN`].
struct ShowFarm {
    farm: Farm,
    busybox: Upstream,
    daemon: Daemon,
}

/// Tags busybox v1.36.1, announces it by a signed webhook and waits until
/// the page `c` shows its (slow) build in flight.
async fn slow_busybox_in_flight(show: &ShowFarm, c: &Client) {
    show.busybox.release("v1.36.1");
    let r = show.daemon.webhook(
        "push",
        "d-1",
        &push_payload(&show.busybox.url(), "v1.36.1"),
        SECRET,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_text(c, "#in-flight", "the build in flight", |t| {
        t.contains("Building busybox 1.36.1-1")
    })
    .await;
}

fn show_farm(control: bool) -> ShowFarm {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("[backoff]\nschedule = [\"10m\"]\n");
    if control {
        turn_control_on(&farm);
    }
    let up = |name: &str, tags: &[&str]| {
        let u = Upstream::new(&farm.root.join("upstreams").join(name));
        for t in tags {
            u.release(t);
        }
        u
    };
    let zlib = up("zlib", &["v1.3.1"]);
    let figlet = up("figlet", &["v2.2.5"]);
    let musl = up("musl", &["v1.2.5"]);
    let busybox = up("busybox", &["v1.36.0"]);
    farm.simple_recipe("zlib", &zlib, QUICK, "");
    farm.simple_recipe("figlet", &figlet, QUICK, "");
    farm.simple_recipe("musl", &musl, FAILING, "");
    farm.simple_recipe("busybox", &busybox, &busybox_script(&farm.root), HOOKED);
    farm.recipe(
        "nginx",
        "[upstream]\ngit = \"https://example.org/nginx.git\"\ntag_patern = '^release-(.*)$'\n",
        QUICK,
    );
    let daemon = farm.start();
    daemon.wait_status(T, "the first builds", |s| {
        s["builds_succeeded"].as_u64() >= Some(3)
            && s["builds_failed"].as_u64() >= Some(1)
            && s["in_flight"].is_null()
    });
    ShowFarm {
        farm,
        busybox,
        daemon,
    }
}

/// The control token of the farms with the control API on.
const TOKEN: &str = "console-0123456789abcdef0123456789abcdef";

/// Names the token file `control-token` (holding [`TOKEN`], mode 0600) in
/// the farm's `[http]` section.
fn turn_control_on(farm: &Farm) {
    use std::os::unix::fs::PermissionsExt;
    let line = "webhook_secret_file = \"webhook-secret\"\n";
    let text = std::fs::read_to_string(farm.config_path()).unwrap();
    assert!(text.contains(line));
    let text = text.replacen(
        line,
        &format!("{line}control_token_file = \"control-token\"\n"),
        1,
    );
    std::fs::write(farm.config_path(), text).unwrap();
    let p = farm.root.join("control-token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The id of the newest build of `recipe` in `/builds`.
fn build_id(d: &Daemon, recipe: &str) -> u64 {
    let b: serde_json::Value = serde_json::from_slice(&d.get("/builds").body).unwrap();
    b.as_array()
        .unwrap()
        .iter()
        .find(|b| b["recipe"] == recipe)
        .and_then(|b| b["id"].as_u64())
        .unwrap_or_else(|| panic!("no build of {recipe} in {b}"))
}

#[test]
fn pages_carry_their_headers_and_answer_browsers() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let u = Upstream::new(&farm.root.join("up"));
    u.release("v1.0.0");
    farm.simple_recipe("zlib", &u, QUICK, "");
    let d = farm.start();
    d.wait_status(T, "the build", |s| s["builds_succeeded"] == 1);
    let html = |path: &str, accept: &str| d.http("GET", path, &[("Accept", accept)], b"");
    for (path, code) in [
        ("/", 200),
        ("/builds/1", 200),
        ("/recipes/zlib", 200),
        ("/recipes/nope", 404),
        ("/builds/999", 404),
    ] {
        let r = html(path, BROWSER_ACCEPT);
        assert_eq!(r.status, code, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(
            r.header("content-security-policy"),
            Some(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; frame-ancestors 'none'"
            ),
            "{path}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        let body = r.text();
        assert!(body.starts_with("<!DOCTYPE html>"), "{path}");
        assert!(!body.contains(" style="), "{path}: no inline style");
        assert!(!body.contains("<style"), "{path}: no inline style");
        for script in body.split("<script").skip(1) {
            assert!(
                script.starts_with(" src=\"/assets/console."),
                "{path}: only the embedded script, no inline one: <script{script}"
            );
        }
    }
    // `/` is the console whatever the client asks for.
    assert!(d
        .get("/")
        .text()
        .contains("<h1 id=\"summary-title\">test-farm</h1>"));
    // Without a preference for HTML, /builds/{id} and /recipes/{id} are
    // not pages.
    assert!(!d.get("/recipes/zlib").text().starts_with("<!DOCTYPE"));
    assert!(!html("/builds/1", "application/json")
        .text()
        .starts_with("<!DOCTYPE"));
    // The page names its assets by content hash; they are cached for good.
    let page = d.get("/").text();
    for ext in ["css", "js"] {
        let url = page
            .match_indices("/assets/console.")
            .map(|(i, _)| page[i..].split('"').next().unwrap())
            .find(|u| u.ends_with(ext))
            .unwrap_or_else(|| panic!("no {ext} asset in the page"));
        let r = d.get(url);
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let hash = url.split('.').nth(1).unwrap();
        assert_eq!(hash.len(), 16, "{url}");
        assert!(
            sha256_bytes(&r.body).starts_with(hash),
            "{url} is named by its content"
        );
    }
    assert_eq!(d.get("/assets/console.css").status, 404);
    assert_eq!(d.http("POST", "/", &[], b"").status, 405);
    // The filter box works without JavaScript.
    let filtered = d.get("/?filter=nothing-like-it").text();
    assert!(filtered.contains("0 of 1 recipes"), "{filtered}");
}

fn sha256_bytes(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn overview_follows_a_build_live_in_a_browser() {
    let Some(driver) = Driver::start("overview_follows_a_build_live_in_a_browser") else {
        return;
    };
    let show = show_farm(false);
    let d = &show.daemon;
    let addr = d.addr.clone().unwrap();
    let base = format!("http://{addr}");
    let profiles = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let c = driver.session(&profiles.path().join("js"), true).await;
        c.goto(&format!("{base}/")).await.unwrap();
        // The script follows /events.
        wait_text(&c, "#live-state", "the event stream", |t| {
            t.starts_with("Live")
        })
        .await;
        // Without [http].control_token_file the page offers no token form
        // and says it is read-only.
        assert_eq!(
            eval(
                &c,
                "return [document.body.dataset.control, !!document.getElementById('control-form'), \
                         !!document.getElementById('control')];"
            )
            .await,
            json!(["off", false, false])
        );
        assert_eq!(text(&c, "#control-off").await, "Read-only");

        // Failures: the failing recipe, its count and a ticking countdown.
        let failures = wait_text(&c, "#failures", "musl's failure", |t| {
            t.contains("musl@1.2.5-1")
        })
        .await;
        assert!(failures.contains("exited with status 2"), "{failures}");
        let countdown = "#failures time[data-countdown]";
        let first = text(&c, countdown).await;
        assert!(first.starts_with("in "), "{first}");
        wait_text(&c, countdown, "the countdown to tick", |t| t != first).await;
        assert_eq!(text(&c, "#failures td.num").await, "1");
        let recipes = text(&c, "#recipe-table").await;
        for r in ["busybox", "figlet", "musl", "nginx", "zlib"] {
            assert!(recipes.contains(r), "{r} in {recipes}");
        }
        assert!(
            text(&c, "tr[data-recipe=musl]").await.contains("failing"),
            "musl is failing"
        );
        assert!(text(&c, "tr[data-recipe=nginx]").await.contains("invalid"));
        assert!(text(&c, "#invalid").await.contains("tag_patern"));

        // The filter box narrows the table as one types.
        c.find(Locator::Css("#filter"))
            .await
            .unwrap()
            .send_keys("fig")
            .await
            .unwrap();
        let shown = eval(
            &c,
            "return Array.from(document.querySelectorAll('table.recipes tbody tr'))\
               .filter(function (r) { return !r.hidden; }).map(function (r) { return r.dataset.recipe; });",
        )
        .await;
        assert_eq!(shown, json!(["figlet"]));
        c.find(Locator::Css("#filter"))
            .await
            .unwrap()
            .clear()
            .await
            .unwrap();
        eval(
            &c,
            "document.getElementById('filter').dispatchEvent(new Event('input')); return 1;",
        )
        .await;

        // A marker that a reload would lose.
        eval(&c, "window.farmhandMarker = 42; return 1;").await;

        // A new busybox version, announced by webhook, builds slowly.
        slow_busybox_in_flight(&show, &c).await;
        wait_text(&c, "#in-flight-phase", "the building phase", |t| {
            t == "building"
        })
        .await;
        wait_text(&c, "#log-tail", "the first log lines", |t| {
            t.contains("configuring busybox 1.36.1-1")
        })
        .await;
        wait_text(&c, "#log-tail", "the lines printed later", |t| {
            t.contains("compiling applets, part 5 of 5") && t.contains("waiting for the gate")
        })
        .await;
        let inflight = text(&c, "#in-flight").await;
        assert!(inflight.contains("v1.36.1"), "the tag: {inflight}");
        assert!(
            inflight.contains("the previous successful build"),
            "an estimate from busybox 1.36.0-1: {inflight}"
        );
        assert!(
            text(&c, "#in-flight .phase-running").await.contains("building"),
            "the phase timeline marks the running phase"
        );
        assert!(text(&c, "#summary").await.contains("building"));
        screenshot(&c, "overview-building.png").await;

        // The dark theme: the same page where the reader asks for dark.
        let dark = driver
            .session_with(&profiles.path().join("dark"), true, &["--force-dark-mode"])
            .await;
        dark.goto(&format!("{base}/")).await.unwrap();
        wait_text(&dark, "#in-flight", "the build in flight (dark)", |t| {
            t.contains("Building busybox 1.36.1-1")
        })
        .await;
        let colours = eval(
            &dark,
            "var b = getComputedStyle(document.body); \
             return [matchMedia('(prefers-color-scheme: dark)').matches, b.backgroundColor, b.color];",
        )
        .await;
        assert_eq!(
            colours,
            json!([true, "rgb(18, 21, 24)", "rgb(227, 230, 232)"]),
            "dark background, light text"
        );
        screenshot(&dark, "overview-dark.png").await;
        // A phone's width: the page reflows; only wide tables scroll, in
        // their own boxes, never the page itself.
        dark.set_window_size(390, 844).await.unwrap();
        let widths = eval(
            &dark,
            "return [document.documentElement.scrollWidth, window.innerWidth];",
        )
        .await;
        let (page, view) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(view <= 400, "the window is a phone's width: {widths}");
        assert!(page <= view, "nothing sticks out sideways: {widths}");
        screenshot(&dark, "overview-phone.png").await;
        dark.close().await.unwrap();

        // A hidden tab asks nothing; shown again, it catches up at once.
        set_visibility(&c, "hidden").await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let before = fetches(&c).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = fetches(&c).await;
        assert_eq!(after, before, "no requests while hidden");
        assert!(text(&c, "#live-state").await.contains("hidden"));
        set_visibility(&c, "visible").await;
        let start = Instant::now();
        while fetches(&c).await <= after {
            assert!(
                start.elapsed() < Duration::from_millis(1500),
                "a request at once when shown"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_text(&c, "#live-state", "the live indicator", |t| {
            t.contains("updated")
        })
        .await;

        // Lines printed now show up without a reload.
        std::fs::write(show.farm.root.join("gate1"), "").unwrap();
        wait_text(&c, "#log-tail", "a line printed after the gate", |t| {
            t.contains("linking busybox")
        })
        .await;
        std::fs::write(show.farm.root.join("gate2"), "").unwrap();

        // The finished build moves to the timeline; still the same page.
        let busy_id = wait_text(&c, "#timeline", "the finished build", |t| {
            t.contains("busybox 1.36.1-1")
        })
        .await;
        assert!(busy_id.contains("succeeded"), "{busy_id}");
        wait_text(&c, "#in-flight", "idle", |t| t.contains("Idle")).await;
        assert_eq!(eval(&c, "return window.farmhandMarker;").await, json!(42));
        assert_eq!(text(&c, "#count-succeeded").await, "4");
        assert!(
            text(&c, "#banner").await.contains("cannot be reached")
                && eval(&c, "return document.getElementById('banner').hidden;").await
                    == json!(true),
            "no banner while the daemon answers"
        );

        // The failed build's page: metadata, phases, the error, the log.
        let musl = build_id(d, "musl");
        c.goto(&format!("{base}/builds/{musl}")).await.unwrap();
        let summary = text(&c, "#build-summary").await;
        for want in ["musl", "1.2.5-1", "failed", "exited with status 2", "building"] {
            assert!(summary.contains(want), "{want} in {summary}");
        }
        assert!(text(&c, ".phase-failed").await.contains("building"));
        assert!(text(&c, "#log")
            .await
            .contains("error: expected ';' before '}' token"));
        screenshot(&c, "build-failed.png").await;

        // Neighbours: busybox's two builds link to each other.
        let busy = build_id(d, "busybox");
        c.goto(&format!("{base}/builds/{busy}")).await.unwrap();
        let prev = c
            .find(Locator::Css("a[rel=prev]"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        c.goto(&format!("{base}{prev}")).await.unwrap();
        assert!(text(&c, "#build-title").await.contains("busybox 1.36.0-1"));
        assert!(c.find(Locator::Css("a[rel=next]")).await.is_ok());

        // The recipe page: settings, published version, builds, polls.
        c.goto(&format!("{base}/recipes/busybox")).await.unwrap();
        let settings = text(&c, "#settings").await;
        assert!(settings.contains(&show.busybox.url()), "{settings}");
        assert!(settings.contains("Webhook") && settings.contains("on"));
        assert!(text(&c, "#published").await.contains("1.36.1-1"));
        let builds = text(&c, "#recipe-builds").await;
        assert!(builds.contains("1.36.0-1") && builds.contains("1.36.1-1"));
        assert!(text(&c, "#polls").await.contains("ok"));
        screenshot(&c, "recipe.png").await;
        c.close().await.unwrap();

        // JavaScript off: the same facts are in the page.
        let nojs = driver.session(&profiles.path().join("nojs"), false).await;
        nojs.goto(&format!("{base}/")).await.unwrap();
        let body = nojs
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for want in [
            "musl@1.2.5-1",
            "busybox 1.36.1-1",
            "succeeded",
            "failed",
            "tag_patern",
            "Idle: no build is running.",
        ] {
            assert!(body.contains(want), "{want} without JavaScript:\n{body}");
        }
        let live = nojs
            .find(Locator::Css("#live-state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            live.starts_with("Server-rendered at"),
            "the script did not run: {live}"
        );
        nojs.close().await.unwrap();
    });
    // And over plain HTTP, as curl sees it.
    let page = d.get("/").text();
    for want in [
        "musl@1.2.5-1",
        "data-countdown>in ",
        "#5 busybox 1.36.1-1",
        "<dd id=\"count-succeeded\">4</dd>",
    ] {
        assert!(page.contains(want), "{want} in the HTML");
    }
    // When the daemon goes away, the page says so.
    runtime().block_on(async {
        let c = driver.session(&profiles.path().join("gone"), true).await;
        c.goto(&format!("{base}/")).await.unwrap();
        wait_text(&c, "#live-state", "the event stream", |t| {
            t.starts_with("Live")
        })
        .await;
        d.signal("KILL");
        wait_text(&c, "#live-state", "the unreachable daemon", |t| {
            t.contains("unreachable")
        })
        .await;
        assert_eq!(
            eval(&c, "return document.getElementById('banner').hidden;").await,
            json!(false),
            "the banner shows"
        );
        c.close().await.unwrap();
    });
}

#[test]
fn hostile_text_is_shown_literally_in_a_browser() {
    let Some(driver) = Driver::start("hostile_text_is_shown_literally_in_a_browser") else {
        return;
    };
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("[backoff]\nschedule = [\"10m\"]\n");
    let u = Upstream::new(&farm.root.join("up"));
    let tags = [
        "v1.0.0<script>window.pwned=1</script>",
        "v1.0.1\"><img/src=x/onerror=window.pwned=2>",
    ];
    for t in tags {
        u.release(t);
    }
    let script = r#"#!/bin/sh
echo '<script>window.pwned=3</script>'
echo '"><img src=x onerror=window.pwned=4>'
printf 'bytes \377\376 end\n'
mkdir -p "$DESTDIR/usr/share/evil"
echo x > "$DESTDIR/usr/share/evil/x"
if [ "$FARMHAND_VERSION" = "1.0.1-1" ]; then
  mkfifo "$DESTDIR/\"><img src=x onerror=window.pwned=5><script>window.pwned=6"
fi
"#;
    farm.recipe(
        "evil",
        &format!(
            "[meta]\ndescription = \"<script>window.pwned=7</script>\"\n\
             [upstream]\ngit = \"{}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+).*$'\n",
            u.url()
        ),
        script,
    );
    farm.recipe(
        "bad",
        "[upstream]\ngit = \"x\"\n\"<img src=x onerror=window.pwned=8>\" = 1\n",
        QUICK,
    );
    let d = farm.start();
    d.wait_status(T, "both builds", |s| {
        s["builds_attempted"] == 2 && s["in_flight"].is_null()
    });
    let ids: Vec<u64> = {
        let b: serde_json::Value = serde_json::from_slice(&d.get("/builds").body).unwrap();
        b.as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_u64().unwrap())
            .collect()
    };
    let base = format!("http://{}", d.addr.clone().unwrap());
    let profile = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let c = driver.session(profile.path(), true).await;
        let mut pages = vec![format!("{base}/"), format!("{base}/recipes/evil")];
        pages.extend(ids.iter().map(|id| format!("{base}/builds/{id}")));
        pages.push(format!("{base}/recipes/bad"));
        for url in &pages {
            c.goto(url).await.unwrap();
            // Let the script refresh the page once.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                eval(&c, "return typeof window.pwned;").await,
                json!("undefined"),
                "nothing ran on {url}"
            );
            assert_eq!(
                eval(&c, "return document.querySelectorAll('img').length;").await,
                json!(0),
                "no injected element on {url}"
            );
            assert_eq!(
                eval(&c, "return document.scripts.length;").await,
                json!(1),
                "only the console's script on {url}"
            );
        }
        c.goto(&format!("{base}/")).await.unwrap();
        let main = text(&c, "main").await;
        assert!(
            main.contains("<img src=x onerror=window.pwned=8>"),
            "the invalid recipe's error, literally: {main}"
        );
        let mut failed = 0;
        for id in &ids {
            c.goto(&format!("{base}/builds/{id}")).await.unwrap();
            let summary = text(&c, "#build-summary").await;
            let log = text(&c, "#log").await;
            assert!(log.contains("<script>window.pwned=3</script>"), "{log}");
            assert!(log.contains("\"><img src=x onerror=window.pwned=4>"));
            assert!(
                log.contains("bytes \u{fffd}\u{fffd} end"),
                "invalid UTF-8: {log}"
            );
            assert!(
                tags.iter().any(|t| summary.contains(t)),
                "the tag, literally: {summary}"
            );
            if summary.contains("failed") {
                failed += 1;
                assert!(
                    summary.contains("\"><img src=x onerror=window.pwned=5><script>window.pwned=6"),
                    "the error, literally: {summary}"
                );
            }
        }
        assert_eq!(failed, 1, "the build with the hostile file name failed");

        // With the control API off, a token kept in the tab makes no
        // buttons: the page is read-only and says so.
        c.goto(&format!("{base}/")).await.unwrap();
        c.execute(
            "sessionStorage.setItem('farmhand.control-token', arguments[0]); return 1;",
            vec![json!(TOKEN)],
        )
        .await
        .unwrap();
        c.refresh().await.unwrap();
        wait_text(&c, "#live-state", "the event stream", |t| {
            t.starts_with("Live")
        })
        .await;
        assert_eq!(
            eval(
                &c,
                "return document.querySelectorAll('button[data-act]').length;"
            )
            .await,
            json!(0)
        );
        assert_eq!(text(&c, "#control-off").await, "Read-only");
        assert_eq!(d.status()["paused"], json!([]));
        c.goto(&format!("{base}/recipes/evil")).await.unwrap();
        assert!(text(&c, "#settings")
            .await
            .contains("<script>window.pwned=7</script>"));
        c.close().await.unwrap();
    });
}

/// Clicks the first element matching `css` once there is one (again when
/// a refresh replaced it between finding and clicking).
async fn click(c: &Client, css: &str) {
    let start = Instant::now();
    loop {
        let clicked = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.map(drop),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if start.elapsed() > T => panic!("cannot click {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The labels of the control buttons shown in `css`.
async fn buttons(c: &Client, css: &str) -> serde_json::Value {
    c.execute(
        "return Array.from(document.querySelectorAll(arguments[0] + ' button[data-act]'))\
           .filter(function (b) { return b.offsetParent !== null; })\
           .map(function (b) { return b.textContent; });",
        vec![json!(css)],
    )
    .await
    .expect("script runs")
}

/// Types `token` into the control field and submits it.
async fn enter_token(c: &Client, token: &str) {
    c.find(Locator::Css("#control-token"))
        .await
        .expect("the control field")
        .send_keys(token)
        .await
        .unwrap();
    click(c, "#control-form button[type=submit]").await;
}

#[test]
fn control_buttons_act_on_the_farm_from_a_browser() {
    let Some(driver) = Driver::start("control_buttons_act_on_the_farm_from_a_browser") else {
        return;
    };
    let show = show_farm(true);
    let d = &show.daemon;
    let base = format!("http://{}", d.addr.clone().unwrap());

    // As sent, the pages hold no control button (the one button is the
    // filter form's): without JavaScript they are read-only.
    let page = d.get("/").text();
    assert_eq!(page.matches("<button").count(), 1, "{page}");
    assert!(page.contains("data-control=\"/recipes/zlib\""), "{page}");

    let profile = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let c = driver.session(profile.path(), true).await;
        c.goto(&format!("{base}/")).await.unwrap();
        wait_text(&c, "#live-state", "the event stream", |t| {
            t.starts_with("Live")
        })
        .await;

        // The control field, and no button until a token is entered.
        assert!(c
            .find(Locator::Css("#control-token"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap());
        assert_eq!(buttons(&c, "main").await, json!([]));
        assert!(text(&c, "#control").await.contains("Control token"));
        screenshot_of(&c, "header.top", "control-token.png").await;

        // A wrong token: the 401 shows next to the button; nothing is done.
        enter_token(&c, "not-the-token-not-the-token-not-the-token").await;
        click(&c, "tr[data-recipe=zlib] button[data-act=pause]").await;
        let said = wait_text(&c, "tr[data-recipe=zlib] .control-answer", "the 401", |t| {
            t.contains("401")
        })
        .await;
        screenshot_of(&c, "#recipes", "control-wrong-token.png").await;
        assert_eq!(
            eval(&c, "return Array.from(document.querySelectorAll('th.actions')).map(function (e) { return e.textContent; });").await,
            json!(["Actions", "Actions"])
        );
        assert!(said.contains("wrong control token"), "{said}");
        assert!(
            eval(
                &c,
                "return document.querySelector('tr[data-recipe=zlib] .control-answer').className;"
            )
            .await
            .as_str()
            .unwrap()
            .contains("error"),
            "shown as an error"
        );
        assert_eq!(d.status()["paused"], json!([]));

        // Forgetting it takes the buttons away.
        click(&c, "#control-forget").await;
        assert_eq!(buttons(&c, "main").await, json!([]));
        assert_eq!(
            eval(
                &c,
                "return sessionStorage.getItem('farmhand.control-token');"
            )
            .await,
            json!(null)
        );

        // The right token: kept in the tab's sessionStorage, never a cookie.
        enter_token(&c, TOKEN).await;
        assert_eq!(
            eval(
                &c,
                "return sessionStorage.getItem('farmhand.control-token');"
            )
            .await,
            json!(TOKEN)
        );
        let cookie = eval(&c, "return document.cookie;").await;
        assert!(!cookie.as_str().unwrap().contains(TOKEN), "{cookie}");
        assert_eq!(
            eval(&c, "return document.getElementById('control-token').value;").await,
            json!("")
        );

        // Buttons where the actions apply: none on the invalid recipe.
        assert_eq!(
            buttons(&c, "tr[data-recipe=zlib]").await,
            json!(["Poll now", "Pause"])
        );
        assert_eq!(buttons(&c, "tr[data-recipe=nginx]").await, json!([]));
        assert_eq!(
            buttons(&c, "#failures tr[data-failure='musl@1.2.5-1']").await,
            json!(["Retry now"])
        );
        assert_eq!(
            buttons(&c, "#in-flight").await,
            json!([]),
            "idle: nothing to cancel"
        );
        assert_eq!(
            c.find(Locator::Css("tr[data-recipe=zlib] button[data-act=pause]"))
                .await
                .unwrap()
                .attr("aria-label")
                .await
                .unwrap()
                .as_deref(),
            Some("Pause (zlib)")
        );

        // Pause, from the keyboard: the row says paused, /status lists it,
        // the answer stays next to the button, which is now resume (and
        // keeps the focus).
        c.find(Locator::Css("tr[data-recipe=zlib] button[data-act=pause]"))
            .await
            .unwrap()
            .send_keys(&Key::Enter)
            .await
            .unwrap();
        wait_text(&c, "tr[data-recipe=zlib] .badge", "zlib paused", |t| {
            t == "paused"
        })
        .await;
        d.wait_status(T, "zlib paused", |s| s["paused"] == json!(["zlib"]));
        let said = wait_text(
            &c,
            "tr[data-recipe=zlib] .control-answer",
            "the answer",
            |t| t.contains("paused zlib"),
        )
        .await;
        assert!(!said.contains("Error"), "{said}");
        assert_eq!(buttons(&c, "tr[data-recipe=zlib]").await, json!(["Resume"]));
        let start = Instant::now();
        while eval(
            &c,
            "return document.activeElement.getAttribute('data-act');",
        )
        .await
            != json!("resume")
        {
            assert!(start.elapsed() < T, "the focus moves to resume");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A new busybox version builds slowly: cancel is offered on the
        // build in flight.
        slow_busybox_in_flight(&show, &c).await;
        wait_text(&c, "#log-tail", "the build waiting", |t| {
            t.contains("waiting for the gate")
        })
        .await;
        assert_eq!(buttons(&c, "#in-flight").await, json!(["Cancel build"]));
        // Tall enough to show the header down to the recipes.
        c.set_window_size(1200, 2000).await.unwrap();
        eval(&c, "window.scrollTo(0, 0); return 1;").await;
        screenshot(&c, "overview-control.png").await;
        c.set_window_size(1200, 1000).await.unwrap();

        // Resume undoes the pause.
        click(&c, "tr[data-recipe=zlib] button[data-act=resume]").await;
        wait_text(&c, "tr[data-recipe=zlib] .badge", "zlib resumed", |t| {
            t != "paused"
        })
        .await;
        d.wait_status(T, "zlib resumed", |s| s["paused"] == json!([]));
        wait_text(
            &c,
            "tr[data-recipe=zlib] .control-answer",
            "the answer",
            |t| t.contains("zlib resumed"),
        )
        .await;

        // Poll now.
        click(&c, "tr[data-recipe=figlet] button[data-act=poll]").await;
        wait_text(
            &c,
            "tr[data-recipe=figlet] .control-answer",
            "the answer",
            |t| t.contains("polling figlet"),
        )
        .await;

        // The running build's page offers cancel too; the token is still
        // there after navigating.
        let busy = build_id(d, "busybox");
        c.goto(&format!("{base}/builds/{busy}")).await.unwrap();
        assert_eq!(buttons(&c, "#build-summary").await, json!(["Cancel build"]));
        c.goto(&format!("{base}/")).await.unwrap();

        // Cancel: the build ends cancelled, in the timeline; the answer
        // stays in the header once the in-flight part has gone.
        click(&c, "#in-flight button[data-act=cancel]").await;
        let tl = wait_text(&c, "#timeline li", "the cancelled build", |t| {
            t.contains("busybox 1.36.1-1")
        })
        .await;
        assert!(tl.contains("cancelled"), "{tl}");
        wait_text(&c, "#in-flight", "idle", |t| t.contains("Idle")).await;
        let said = text(&c, "#control-said").await;
        assert!(said.contains(&format!("cancelling build {busy}")), "{said}");
        let b: serde_json::Value = serde_json::from_slice(&d.get("/builds").body).unwrap();
        assert_eq!(b[0]["id"], busy);
        assert_eq!(b[0]["state"], "cancelled");
        assert_eq!(
            buttons(&c, "#failures tr[data-failure='busybox@1.36.1-1']").await,
            json!(["Retry now"]),
            "the cancelled build is in backoff"
        );

        // Retry: the failed version is built again at once (and fails again,
        // entering backoff anew).
        let attempted = d.status()["builds_attempted"].as_u64().unwrap();
        click(
            &c,
            "#failures tr[data-failure='musl@1.2.5-1'] button[data-act=retry]",
        )
        .await;
        wait_text(&c, "#control-said", "the answer", |t| {
            t.contains("retrying musl@1.2.5-1")
        })
        .await;
        let tl = wait_text(&c, "#timeline li", "musl built again", |t| {
            t.contains("musl 1.2.5-1")
        })
        .await;
        assert!(tl.contains("failed"), "{tl}");
        d.wait_status(T, "the retry", |s| {
            s["builds_attempted"].as_u64() == Some(attempted + 1) && s["in_flight"].is_null()
        });
        let builds: serde_json::Value = serde_json::from_slice(&d.get("/builds").body).unwrap();
        let musl = builds
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["recipe"] == "musl")
            .count();
        assert_eq!(musl, 2, "{builds}");
        wait_text(&c, "#failures", "musl in backoff again", |t| {
            t.contains("musl@1.2.5-1")
        })
        .await;

        // The recipe page: poll and pause, retry on its backoff entry.
        c.goto(&format!("{base}/recipes/musl")).await.unwrap();
        assert_eq!(
            buttons(&c, "#recipe-summary").await,
            json!(["Poll now", "Pause"])
        );
        assert_eq!(buttons(&c, "#backoff").await, json!(["Retry now"]));
        click(&c, "#recipe-summary button[data-act=pause]").await;
        wait_text(&c, "#recipe-title", "musl paused", |t| t.contains("paused")).await;
        assert_eq!(buttons(&c, "#recipe-summary").await, json!(["Resume"]));
        d.wait_status(T, "musl paused", |s| s["paused"] == json!(["musl"]));
        c.close().await.unwrap();
    });
}
