//! The peipkg backend: farmhand runs peipkg-build and peipkg-repo with
//! peipkg-manager's argv. The two tools are stand-in scripts on PATH that
//! record their argv and produce what the real ones would.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;

const PEIPKG_BUILD: &str = r#"#!/bin/sh
echo "$@" >> "$ARGV_LOG"
out=""; version=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift ;;
    --version) version="$2"; shift ;;
  esac
  shift
done
[ -f VERSION ] || { echo "no source" >&2; exit 1; }
echo pkg > "$out/libdemo_${version}_x86_64.peipkg"
"#;

const PEIPKG_REPO: &str = r#"#!/bin/sh
echo "$@" >> "$ARGV_LOG"
case "$1" in
  init)
    while [ $# -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done
    echo '{"schema_version":1}' > "$out/repo.json" ;;
  publish)
    while [ $# -gt 0 ]; do
      case "$1" in --in) in="$2"; shift ;; --new) new="$2"; shift ;; esac; shift
    done
    mkdir -p "$in/index" "$in/pool"
    entries=""
    for f in "$new"/*.peipkg; do
      b=$(basename "$f" .peipkg); v=$(echo "$b" | cut -d_ -f2)
      cp "$f" "$in/pool/"
      echo "{\"name\":\"libdemo\",\"version\":\"$v\"}" >> "$in/entries"
    done
    printf '{"packages":[%s]}' "$(paste -sd, "$in/entries")" > "$in/index/archive.json" ;;
esac
"#;

fn tool(dir: &std::path::Path, name: &str, text: &str, argv_log: &std::path::Path) {
    let p = dir.join(name);
    std::fs::write(
        &p,
        text.replace("$ARGV_LOG", &argv_log.display().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn peipkg_backend_runs_the_peipkg_tools_with_their_argv() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    up.release("v1.1.0");
    let bin = farm.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv_log = farm.root.join("argv.log");
    // Builds get a clean environment, so the log path is baked in.
    tool(&bin, "peipkg-build", PEIPKG_BUILD, &argv_log);
    tool(&bin, "peipkg-repo", PEIPKG_REPO, &argv_log);
    std::fs::write(farm.root.join("farm.key"), [7u8; 32]).unwrap();
    farm.write_config(
        "[signing]\nkey_file = \"farm.key\"\n[build]\nbackend = \"peipkg\"\n\
         [[signing_key]]\nname = \"tcb\"\nprivate = \"farm.key\"\npubkey_env = \"TCB_PUBKEY_HEX\"\n\
         [[grant]]\nrecipe = \"libdemo\"\ninject_pubkey = [\"tcb\"]\nsign = [\"tcb\"]\n",
    );
    // peipkg recipes are peipkg.toml; the [[package]] name differs from the id.
    let d = farm.root.join("recipes/libdemo");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("peipkg.toml"),
        format!(
            "[meta]\nlicense = \"MIT\"\n[[package]]\nname = \"libdemo\"\nfiles = [\"**\"]\ndependencies = [{{ name = \"libc\" }}]\n\
             [upstream]\ngit = \"{}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\npeios_revision = 1\n",
            up.url()
        ),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = || {
        std::process::Command::new(bin_path())
            .args([
                "--config",
                farm.config_path().to_str().unwrap(),
                "--once",
                "--log-format",
                "logfmt",
            ])
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let out = run();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(
        log.matches("msg=\"build + publish complete\"").count(),
        2,
        "{log}"
    );
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    let lines: Vec<&str> = argv.lines().collect();
    assert!(
        lines[0].starts_with("init --name test-packages --sign-key "),
        "{argv}"
    );
    let build = lines
        .iter()
        .find(|l| l.starts_with("build "))
        .expect("peipkg-build ran");
    let key = farm.root.join("farm.key");
    for want in [
        format!("--recipe {}", d.join("peipkg.toml").display()),
        "--version 1.1.0-1".to_string(),
        format!("--source-ref git+{}#refs/tags/v1.1.0", up.url()),
        "--farm-id test-farm".to_string(),
        "--timestamp 2023-11-14T22:13:20Z".to_string(),
        format!("--sign-key {}", key.display()),
        "--build-env TCB_PUBKEY_HEX=".to_string(),
        format!("--binary-sign-key tcb={}", key.display()),
    ] {
        assert!(build.contains(&want), "{want:?} missing from {build}");
    }
    let publish = lines
        .iter()
        .find(|l| l.starts_with("publish "))
        .expect("peipkg-repo publish ran");
    let repo = farm.repo();
    assert!(
        publish.starts_with(&format!("publish --in {r} --new ", r = repo.display()))
            && publish.contains(&format!("--out {}", repo.display())),
        "{publish}"
    );
    // Dedup reads peipkg-repo's archive: the second sweep builds nothing,
    // though the package name is not the recipe id's.
    let out = run();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(!log.contains("starting build"), "{log}");
}

#[test]
fn peipkg_backend_without_the_tools_is_a_config_error() {
    let farm = Farm::new();
    std::fs::write(farm.root.join("farm.key"), [7u8; 32]).unwrap();
    farm.write_config("[signing]\nkey_file = \"farm.key\"\n[build]\nbackend = \"peipkg\"\n");
    // Exit 2 (the unit's RestartPreventExitStatus): restarting cannot
    // bring the tools back.
    for mode in ["--once", "--check"] {
        let out = std::process::Command::new(bin_path())
            .args(["--config", farm.config_path().to_str().unwrap(), mode])
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{mode}: {text}");
        assert!(
            text.contains("peipkg-build not found on PATH"),
            "{mode}: {text}"
        );
    }
}

fn bin_path() -> std::path::PathBuf {
    bin()
}
