//! docs/migrating.md run as written under a real systemd: a farm that
//! peipkg-manager ran (`peipkg-manager.service`, its config and recipes in
//! `/etc/peipkg-manager`, its repository in `/var/lib/peipkg-manager/repo`)
//! is switched over to the farmhand package by the page's steps, and the
//! migrated farm keeps every published version and builds only what is
//! new.
//!
//! What stands in for peipkg-manager's world:
//! - `peipkg-build` and `peipkg-repo` are scripts in `/usr/local/bin` that
//!   take the real tools' argv (as tests/integration/peipkg.rs does):
//!   peipkg-build packs the source tree as `<package>_<version>_x86_64.peipkg`,
//!   peipkg-repo keeps a `pool/` and an `index/archive.json` listing every
//!   pool file with its sha256;
//! - the repository is made by `farmhand --once` with the `peipkg` backend
//!   (peipkg-manager's argv for both tools) and a scratch state directory,
//!   then moved to `/var/lib/peipkg-manager/repo`;
//! - `peipkg-manager.service` is a unit that sleeps, so that step 4 has a
//!   daemon to stop and disable;
//! - the upstreams are local git repositories; after the package created
//!   the farmhand user they are given to it (git refuses repositories of
//!   other owners), where a real farm's would be remote.

use super::*;

/// peipkg-manager's config, in its own format: no `[build]` section,
/// Go-style durations, `":8080"`.
const OLD_CONFIG: &str = r#"# /etc/peipkg-manager/config.toml
[manager]
id = "peios-build-1"
recipes_dir = "/etc/peipkg-manager/recipes"
state_dir = "/var/lib/peipkg-manager"

[repo]
name = "peios-packages"
description = "Packages built by peios-build-1"

[signing]
key_file = "/etc/peipkg-manager/farm.ed25519"

[upload]
backend = "none"

[http]
addr = ":8080"
webhook_secret_file = "/etc/peipkg-manager/webhook-secret"

[poll]
default_interval = "1h0m0s"
"#;

/// `peipkg-build build --recipe R --source S --version V ... --out O ...`.
const PEIPKG_BUILD: &str = r#"#!/bin/sh
# Stand-in for peipkg-build (the real_systemd test).
set -eu
[ "$1" = build ] || { echo "peipkg-build: unknown command $1" >&2; exit 2; }
shift
recipe= source= version= out=
while [ $# -gt 0 ]; do
  case "$1" in
    --recipe) recipe=$2; shift ;;
    --source) source=$2; shift ;;
    --version) version=$2; shift ;;
    --out) out=$2; shift ;;
  esac
  shift
done
name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$recipe" | head -n 1)
tar -C "$source" -cf "$out/${name}_${version}_x86_64.peipkg" .
"#;

/// `peipkg-repo init --name N ... --out DIR` and `peipkg-repo publish --in
/// DIR --new NEW --out DIR ...`.
const PEIPKG_REPO: &str = r#"#!/bin/sh
# Stand-in for peipkg-repo (the real_systemd test).
set -eu
cmd=$1; shift
name= out= new=
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift ;;
    --out) out=$2; shift ;;
    --new) new=$2; shift ;;
  esac
  shift
done
case "$cmd" in
  init)
    mkdir -p "$out"
    printf '{"schema_version":1,"name":"%s"}\n' "$name" > "$out/repo.json" ;;
  publish)
    mkdir -p "$out/pool" "$out/index"
    cp "$new"/*.peipkg "$out/pool/"
    entries=
    for f in "$out"/pool/*.peipkg; do
      b=$(basename "$f" .peipkg)
      package=${b%%_*}; rest=${b#*_}; version=${rest%%_*}
      hash=$(sha256sum "$f" | cut -d' ' -f1)
      entries="$entries${entries:+,}{\"name\":\"$package\",\"version\":\"$version\",\"url\":\"pool/$b.peipkg\",\"hash\":{\"algorithm\":\"sha256\",\"value\":\"$hash\"}}"
    done
    printf '{"schema_version":1,"packages":[%s]}\n' "$entries" > "$out/index/archive.json.new"
    mv "$out/index/archive.json.new" "$out/index/archive.json" ;;
  *) echo "peipkg-repo: unknown command $cmd" >&2; exit 2 ;;
esac
"#;

/// The old daemon, as far as step 4 is concerned.
const OLD_UNIT: &str = "[Unit]\nDescription=peipkg-manager (stand-in)\n\n\
    [Service]\nExecStart=/bin/sleep infinity\n\n\
    [Install]\nWantedBy=multi-user.target\n";

/// The old farm's recipes: (id, package name, webhooks, tags released
/// while peipkg-manager ran). libdemo's package is named like the recipe,
/// peitools' is not (farmhand matches published entries by package name).
const RECIPES: [(&str, &str, bool, &[&str]); 2] = [
    ("libdemo", "libdemo", true, &["v1.0.0", "v1.1.0"]),
    ("peitools", "pei-tools", false, &["v2.0.0"]),
];
/// Released after peipkg-manager's last poll: the one build the migrated
/// farm owes.
const NEW_TAG: (&str, &str) = ("libdemo", "v1.2.0");
const NEW_VERSION: &str = "1.2.0-1";

fn upstream(id: &str) -> String {
    format!("/var/lib/peipkg-upstream/{id}")
}

/// A peipkg.toml as peipkg-build reads it (farmhand tolerates its
/// `[meta]` and `[[package]]` keys).
fn peipkg_toml(id: &str, package: &str, webhook: bool) -> String {
    format!(
        "[meta]\nlicense = \"MIT\"\ndescription = \"{id}, built by peipkg-build\"\n\n\
         [[package]]\nname = \"{package}\"\nfiles = [\"**\"]\ndependencies = [{{ name = \"libc\" }}]\n\n\
         [upstream]\ngit = \"{}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\npeios_revision = 1\n\n\
         [watch]\ngithub_webhook = {webhook}\npoll_interval = \"30m0s\"\n",
        upstream(id)
    )
}

#[test]
fn peipkg_manager_farm_migrated_as_the_docs_say() {
    if skip() {
        return;
    }
    let _one = BOOT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let lap = |what: &str| lap(started, what);
    let deb = debian_package();
    lap("package built");
    let c = Container::boot(&units_to_mask());
    lap("container booted");
    // Step 1: "Install farmhand (installation.md)".
    install(&c, &deb);
    let before = old_farm(&c);
    lap("peipkg-manager's farm made");
    switch_over(&c);
    lap("docs/migrating.md steps 2 to 6 run");
    migrated_farm(&c, &before);
    drop(c);
    lap("container powered off");
}

/// The archive of a repository, read from the host.
fn archive(c: &Container, repo: &str) -> Value {
    fs::read(c.path(&format!("{repo}/index/archive.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn entries(archive: &Value) -> Vec<Value> {
    archive["packages"].as_array().cloned().unwrap_or_default()
}

/// `(name, version)` of every entry, sorted.
fn versions(archive: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = entries(archive)
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("name"), s("version"))
        })
        .collect();
    v.sort();
    v
}

/// Entries of `archive` whose pool file is missing or differs from its
/// hash.
fn pool_problems(c: &Container, repo: &str, archive: &Value) -> Vec<String> {
    entries(archive)
        .iter()
        .filter_map(|e| {
            let url = e["url"].as_str().unwrap_or("");
            let file = c.path(&format!("{repo}/{url}"));
            let want = e["hash"]["value"].as_str().unwrap_or("");
            if !url.starts_with("pool/") || !file.is_file() {
                Some(format!("{repo}: {url:?} is not in the pool"))
            } else if sha256_file(&file) != want {
                Some(format!("{repo}/{url}: sha256 differs from the index"))
            } else {
                None
            }
        })
        .collect()
}

/// The farm as peipkg-manager left it: the peipkg tools, its config, key,
/// secret and recipes, a repository with the versions it published, a
/// release it has not seen yet, and its running service. Returns its
/// archive.
fn old_farm(c: &Container) -> Value {
    c.write("/usr/local/bin/peipkg-build", PEIPKG_BUILD, 0o755);
    c.write("/usr/local/bin/peipkg-repo", PEIPKG_REPO, 0o755);
    let etc = "/etc/peipkg-manager";
    c.write(&format!("{etc}/config.toml"), OLD_CONFIG, 0o644);
    c.write(&format!("{etc}/farm.ed25519"), [0x42u8; 32], 0o600);
    c.write(
        &format!("{etc}/webhook-secret"),
        "peipkg-webhook-secret\n",
        0o600,
    );
    let mut releases = String::from("set -e\n");
    for (id, package, webhook, tags) in RECIPES {
        let recipe = peipkg_toml(id, package, webhook);
        c.write(&format!("{etc}/recipes/{id}/peipkg.toml"), recipe, 0o644);
        let up = upstream(id);
        releases.push_str(&format!("git init -q -b main {up}\n"));
        for tag in tags {
            releases.push_str(&release(&up, tag));
        }
    }
    c.sh_ok(&releases);
    // peipkg-manager's runs, with its argv for the peipkg tools: the
    // peipkg backend of farmhand's --once, in a scratch state directory.
    let scratch = OLD_CONFIG
        .replace(
            "state_dir = \"/var/lib/peipkg-manager\"",
            "state_dir = \"/root/peipkg-seed/state\"",
        )
        .replace("[poll]", "[build]\nbackend = \"peipkg\"\n\n[poll]");
    c.write("/root/peipkg-seed/config.toml", scratch, 0o644);
    let seed = c.sh_text(
        "farmhand --config /root/peipkg-seed/config.toml --once --log-format logfmt \
         && install -d /var/lib/peipkg-manager \
         && mv /root/peipkg-seed/state/repo /var/lib/peipkg-manager/repo \
         && rm -r /root/peipkg-seed && echo SEEDED",
    );
    let (id, tag) = NEW_TAG;
    c.sh_ok(&format!("set -e\n{}", release(&upstream(id), tag)));
    c.write(
        "/etc/systemd/system/peipkg-manager.service",
        OLD_UNIT,
        0o644,
    );
    c.sh_ok(
        "systemctl daemon-reload && systemctl enable --now peipkg-manager 2>&1 \
         && chown -R farmhand: /var/lib/peipkg-upstream",
    );
    let repo = "/var/lib/peipkg-manager/repo";
    let old = archive(c, repo);
    let mut problems = Vec::new();
    if !seed.trim_end().ends_with("SEEDED") {
        problems.push("farmhand --once with the peipkg backend did not make the repository".into());
    }
    let want: Vec<(String, String)> = [
        ("libdemo", "1.0.0-1"),
        ("libdemo", "1.1.0-1"),
        ("pei-tools", "2.0.0-1"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    if versions(&old) != want {
        problems.push(format!(
            "{repo}/index/archive.json lists {:?}, want {want:?}",
            versions(&old)
        ));
    }
    problems.extend(pool_problems(c, repo, &old));
    if c.prop("peipkg-manager", "ActiveState") != "active" {
        problems.push("peipkg-manager.service is not running".into());
    }
    check(
        "migration 0: peipkg-manager's farm with its published versions and a new release",
        &problems,
        || format!("--- the seeding run\n{seed}\n--- archive.json\n{old:#}"),
    );
    old
}

/// Shell lines that commit a release of `up` and tag it.
fn release(up: &str, tag: &str) -> String {
    format!(
        "echo {tag} > {up}/VERSION\n\
         git -C {up} add -A\n\
         git -C {up} -c user.name=upstream -c user.email=upstream@example.org commit -q -m {tag}\n\
         git -C {up} tag {tag}\n"
    )
}

/// docs/migrating.md's steps 2 to 6 as written; step 3's config edit is
/// the page's TOML applied to the copied config.
fn switch_over(c: &Container) {
    let page = "migrating.md";
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    for step in ["migrate-check", "migrate-copy", "migrate-secrets"] {
        runs.push(c.run_block(page, step, "/root", false));
    }
    let config = c.path("/etc/farmhand/config.toml");
    let mut t: toml::Table = fs::read_to_string(&config)
        .unwrap_or_default()
        .parse()
        .unwrap_or_default();
    let edit: toml::Table = doc_block(page, "migrate-config")
        .parse()
        .unwrap_or_else(|e| panic!("docs/{page} `migrate-config` is not TOML: {e}"));
    for (k, v) in edit {
        match (t.get_mut(&k), v) {
            (Some(toml::Value::Table(have)), toml::Value::Table(set)) => have.extend(set),
            (_, v) => {
                t.insert(k, v);
            }
        }
    }
    fs::write(&config, toml::to_string(&t).unwrap()).unwrap();
    for step in ["migrate-stop-old", "migrate-repository"] {
        runs.push(c.run_block(page, step, "/root", false));
    }
    let start = c.run_block(page, "migrate-start", "/root", true);
    for r in &runs {
        problems.extend(r.problem(false));
    }
    problems.extend(start.problem(true));
    if !start.follows_fields(&["MESSAGE", "RECIPE", "MATCHES_EMITTED"]) {
        problems.push(
            "step 6's journalctl -f printed no MESSAGE=, RECIPE= and MATCHES_EMITTED= lines".into(),
        );
    }
    let old = c.show("peipkg-manager", &["ActiveState", "UnitFileState"]);
    if (old["ActiveState"].as_str(), old["UnitFileState"].as_str()) != ("inactive", "disabled") {
        problems.push(format!("peipkg-manager.service after step 4: {old:?}"));
    }
    let new = c.show("farmhand", &["ActiveState", "UnitFileState"]);
    if (new["ActiveState"].as_str(), new["UnitFileState"].as_str()) != ("active", "enabled") {
        problems.push(format!("farmhand.service after step 6: {new:?}"));
    }
    let owners = c.sh_text(
        "stat -c '%n %U %a' /etc/farmhand/farm.ed25519 /etc/farmhand/webhook-secret \
         /var/lib/farmhand/repo/index/archive.json",
    );
    for l in owners.lines() {
        if !l.contains(" farmhand ") || (l.contains("/etc/") && !l.ends_with(" 600")) {
            problems.push(format!("after the steps: {l}"));
        }
    }
    check(
        "migration 1: docs/migrating.md steps 2 to 6 as written",
        &problems,
        || {
            let outputs: String = runs
                .iter()
                .chain([&start])
                .map(|r| format!("--- {}\n{}", r.name, r.output))
                .collect();
            format!(
                "{outputs}--- /etc/farmhand/config.toml\n{}\n{}",
                fs::read_to_string(&config).unwrap_or_default(),
                c.evidence()
            )
        },
    );
}

/// The migrated farm keeps every version peipkg-manager published (entries
/// and pool files unchanged) and builds only the release it had not seen.
fn migrated_farm(c: &Container, before: &Value) {
    let (new_id, _) = NEW_TAG;
    let ended = poll(Duration::from_secs(30), || {
        let fields = [("RECIPE", new_id), ("VERSION", NEW_VERSION)];
        let done = !c.events("build + publish complete", "", &fields).is_empty()
            || !c.events("build failed", "", &fields).is_empty();
        let polled = RECIPES
            .iter()
            .all(|(id, ..)| !c.events("poll complete", "", &[("RECIPE", id)]).is_empty());
        (done && polled).then_some(())
    });
    let repo = "/var/lib/farmhand/repo";
    let after = archive(c, repo);
    let mut problems = Vec::new();
    if ended.is_none() {
        problems.push(format!(
            "within 30 s {new_id} {NEW_VERSION} was not built and published, or not every recipe polled"
        ));
    }
    let built: Vec<(String, String)> = c
        .events("starting build", "", &[])
        .iter()
        .map(|e| (field(e, "RECIPE").into(), field(e, "VERSION").into()))
        .collect();
    if built != [(new_id.to_string(), NEW_VERSION.to_string())] {
        problems.push(format!(
            "builds started: {built:?}; want only {new_id} {NEW_VERSION}"
        ));
    }
    for (id, emitted) in [("peitools", "0"), ("libdemo", "1")] {
        let polls = c.events("poll complete", "", &[("RECIPE", id)]);
        match polls.first() {
            Some(e) if field(e, "MATCHES_EMITTED") == emitted => {}
            other => problems.push(format!(
                "the first `poll complete` of {id} should have MATCHES_EMITTED={emitted}: {other:?}"
            )),
        }
    }
    let now = entries(&after);
    for e in entries(before) {
        if !now.contains(&e) {
            problems.push(format!("the migrated archive lost or changed {e}"));
        }
    }
    let new_entry = now
        .iter()
        .any(|e| e["name"] == "libdemo" && e["version"] == NEW_VERSION);
    if !new_entry || now.len() != entries(before).len() + 1 {
        problems.push(format!(
            "the archive should hold the old entries and libdemo {NEW_VERSION}: {:?}",
            versions(&after)
        ));
    }
    problems.extend(pool_problems(c, repo, &after));
    let status = c.sh_text("curl -sS --max-time 5 http://127.0.0.1:8080/status");
    match serde_json::from_str::<Value>(&status) {
        Ok(s) if s["farm_id"] == "peios-build-1" && s["builds_succeeded"] == 1 => {}
        _ => problems.push(format!(
            "/status should show farm peios-build-1 with one build: {status}"
        )),
    }
    check(
        "migration 2: every published version kept, only the new release built",
        &problems,
        || {
            format!(
                "--- archive.json before\n{before:#}\n--- after\n{after:#}\n{}",
                c.evidence()
            )
        },
    );
}
