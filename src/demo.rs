//! `farmhand demo`: the zero-setup first run.
//!
//! Creates DIR holding a local upstream git repository with three version
//! tags of a tiny real program (`greet`, a POSIX shell tool with its own
//! test suite and man page), a recipe for it, a signing key, a webhook
//! secret and a config; then runs the real daemon on it until Ctrl-C. No
//! network is needed. Running it again reuses the farm it made.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;

use crate::farm::daemon::{self, Fatal};

const GREET: &str = r#"#!/bin/sh
# greet - print a friendly greeting
VERSION=@VERSION@
case "$1" in
  --version) echo "greet $VERSION"; exit 0 ;;
  --help) echo "usage: greet [--shout] [NAME]"; exit 0 ;;
  --shout) shift; echo "HELLO, $(echo "${1:-WORLD}" | tr '[:lower:]' '[:upper:]')!"; exit 0 ;;
esac
echo "Hello, ${1:-world}!"
"#;

const TEST: &str = r#"#!/bin/sh
# The upstream's own test suite.
set -e
[ "$(sh ./greet)" = "Hello, world!" ]
[ "$(sh ./greet farm)" = "Hello, farm!" ]
[ "$(sh ./greet --shout farm)" = "HELLO, FARM!" ]
echo "all tests passed"
"#;

const MANPAGE: &str = ".TH GREET 1\n.SH NAME\ngreet \\- print a friendly greeting\n.SH SYNOPSIS\n.B greet\n[\\-\\-shout] [NAME]\n";

const BUILD_SH: &str = r#"#!/bin/sh
# Build script for the demo recipe: run upstream's tests, then install.
set -eu
echo "building greet $FARMHAND_VERSION from tag $FARMHAND_TAG"
sh ./test.sh
sed "s/@VERSION@/$FARMHAND_VERSION/" greet > greet.out
install -D -m 0755 greet.out "$DESTDIR/usr/bin/greet"
install -D -m 0644 greet.1 "$DESTDIR/usr/share/man/man1/greet.1"
install -D -m 0644 README "$DESTDIR/usr/share/doc/greet/README"
echo "installed into $DESTDIR"
"#;

const RECIPE: &str = r#"# The demo recipe: a tiny shell tool from a local upstream.
[meta]
build_script = "build.sh"
license = "MIT"
homepage = "https://example.org/greet"
description = "print a friendly greeting"

[[package]]
name = "greet"
description = "print a friendly greeting"
files = ["usr/bin/*", "usr/share/man/**"]

[[package]]
name = "greet-doc"
description = "greet documentation"
files = ["usr/share/doc/**"]

[upstream]
git = "@UPSTREAM@"
tag_pattern = '^v(\d+\.\d+\.\d+)$'
revision = 1

[watch]
github_webhook = true
poll_interval = "1m"
"#;

/// Creates the demo farm under `dir` (unless it exists) and runs the
/// daemon on it until SIGINT/SIGTERM.
pub async fn run(dir: &Path, addr: &str) -> Result<(), Fatal> {
    let config = create(dir, addr).map_err(Fatal::Runtime)?;
    let cfg = daemon::load_config(&config)?;
    // The farm's own absolute path: the recipe names the upstream by it,
    // so the webhook hint must too.
    let dir = config.parent().unwrap_or(dir).to_path_buf();
    let secret = std::fs::read_to_string(dir.join("webhook-secret")).unwrap_or_default();
    daemon::run_daemon_with(cfg, |bound| {
        // The address actually bound (`--addr 127.0.0.1:0` picks a port).
        let addr = bound.map_or_else(|| addr.to_string(), |a| a.to_string());
        eprintln!(
            "\nfarmhand demo farm in {dir}\n\
             \x20 console:   open http://{addr}/ in a browser\n\
             \x20 status:    curl http://{addr}/status\n\
             \x20 metrics:   curl http://{addr}/metrics\n\
             \x20 builds:    curl http://{addr}/builds\n\
             \x20 repo:      ls {dir}/state/repo/pool {dir}/state/repo/index\n\
             \x20 new tag:   git -C {dir}/upstream tag v1.3.0 && kill -HUP {pid}   (or wait for the 1m poll)\n\
             \x20 webhook:   body='{{\"repository\":{{\"clone_url\":\"{up}\"}}}}'; \\\n\
             \x20            curl -H \"X-GitHub-Event: push\" -H \"X-Hub-Signature-256: sha256=$(printf %s \"$body\" | openssl dgst -sha256 -hmac '{secret}' | sed 's/.* //')\" -d \"$body\" http://{addr}/webhooks/github\n\
             \x20 control:   {exe} ctl --url http://{addr} --token-file {dir}/control-token pause greet\n\
             \x20            (and resume, poll, status, builds, events: {exe} ctl --help)\n\
             \x20            in the console: paste the token in {dir}/control-token into the Control token field\n\
             \x20 stop:      Ctrl-C\n",
            exe = std::env::current_exe().map_or_else(|_| "farmhand".into(), |p| p.display().to_string()),
            dir = dir.display(),
            up = dir.join("upstream").display(),
            secret = secret.trim(),
            pid = std::process::id(),
        );
    })
    .await
}

/// Makes the demo farm (idempotent); returns the config path.
pub fn create(dir: &Path, addr: &str) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let config = dir.join("config.toml");
    if config.exists() {
        return Ok(config);
    }
    let upstream = dir.join("upstream");
    make_upstream(&upstream)?;
    let recipe_dir = dir.join("recipes").join("greet");
    std::fs::create_dir_all(&recipe_dir)?;
    std::fs::write(
        recipe_dir.join("recipe.toml"),
        RECIPE.replace("@UPSTREAM@", &upstream.display().to_string()),
    )?;
    write_exec(&recipe_dir.join("build.sh"), BUILD_SH)?;

    let mut seed = [0u8; 32];
    let mut secret = [0u8; 16];
    let mut token = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    urandom.read_exact(&mut seed)?;
    urandom.read_exact(&mut secret)?;
    urandom.read_exact(&mut token)?;
    write_private(&dir.join("farm.ed25519"), &seed)?;
    write_private(
        &dir.join("webhook-secret"),
        format!("{}\n", hex::encode(secret)).as_bytes(),
    )?;
    write_private(
        &dir.join("control-token"),
        format!("{}\n", hex::encode(token)).as_bytes(),
    )?;
    std::fs::write(
        &config,
        format!(
            "# farmhand demo farm (made by `farmhand demo`)\n\
             [manager]\nid = \"demo-farm\"\nrecipes_dir = \"recipes\"\nstate_dir = \"state\"\n\n\
             [repo]\nname = \"demo-packages\"\ndescription = \"farmhand demo repository\"\n\n\
             [signing]\nkey_file = \"farm.ed25519\"\n\n\
             [http]\naddr = \"{addr}\"\nwebhook_secret_file = \"webhook-secret\"\n\
             control_token_file = \"control-token\"\n\n\
             [poll]\ndefault_interval = \"1m\"\n\n\
             [build]\ntimeout = \"5m\"\nshutdown_grace = \"10s\"\n"
        ),
    )?;
    Ok(config)
}

fn write_exec(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A local upstream with tags v1.0.0, v1.1.0 and v1.2.0 at fixed times.
fn make_upstream(path: &Path) -> anyhow::Result<()> {
    let repo = git2::Repository::init(path).context("cannot create the demo upstream")?;
    let versions = [
        ("1.0.0", 1_700_000_000i64),
        ("1.1.0", 1_710_000_000),
        ("1.2.0", 1_720_000_000),
    ];
    let mut parent: Option<git2::Oid> = None;
    for (v, when) in versions {
        std::fs::write(path.join("greet"), GREET)?;
        std::fs::write(path.join("test.sh"), TEST)?;
        std::fs::write(path.join("greet.1"), MANPAGE)?;
        std::fs::write(
            path.join("README"),
            format!("greet {v}\n\nPrints a friendly greeting.\n"),
        )?;
        let mut index = repo.index()?;
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
        index.write()?;
        let tree = repo.find_tree(index.write_tree()?)?;
        let sig = git2::Signature::new(
            "greet upstream",
            "greet@example.org",
            &git2::Time::new(when, 0),
        )?;
        let parents: Vec<git2::Commit> = parent
            .map(|p| repo.find_commit(p))
            .transpose()?
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        let oid = repo.commit(
            Some("HEAD"),
            &sig,
            &sig,
            &format!("greet {v}"),
            &tree,
            &refs,
        )?;
        repo.tag_lightweight(&format!("v{v}"), &repo.find_object(oid, None)?, false)?;
        parent = Some(oid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_farm_is_a_valid_farm() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = create(&dir.path().join("demo"), "127.0.0.1:0").unwrap();
        let cfg = crate::model::config::Config::load(&cfg_path).unwrap();
        let roster =
            crate::model::recipe::load_roster(&cfg.manager.recipes_dir, cfg.poll.default_interval)
                .unwrap();
        assert!(roster.invalid.is_empty(), "{:?}", roster.invalid);
        assert_eq!(roster.ids(), vec!["greet"]);
        let up = roster.recipes["greet"].upstream.as_ref().unwrap();
        let tags = crate::git::libgit::list_tags(
            &up.git,
            std::time::Duration::from_secs(10),
            &crate::git::libgit::Abort::new(),
        )
        .unwrap();
        assert_eq!(tags, vec!["v1.0.0", "v1.1.0", "v1.2.0"]);
        // Idempotent: a second call keeps the farm.
        assert_eq!(
            create(&dir.path().join("demo"), "127.0.0.1:0").unwrap(),
            cfg_path
        );
    }
}
