//! `--once` against hostile or broken input: the build environment is
//! clean and holds nothing secret, tags that could reach a path are
//! skipped, a build that runs too long is killed with everything it
//! started, and an unusable state dir or signing key stops the run.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

const ENV_DUMP: &str = r#"set -eu
out=@OUT@
mkdir -p "$out"
tr '\0' '\n' < /proc/$$/environ > "$out/environ"
pwd > "$out/pwd"
echo "$0" > "$out/argv0"
ls -A "$DESTDIR" > "$out/destdir-before"
ls -A "$HOME" > "$out/home-before"
find "$SOURCE_DIR" -name '.git*' > "$out/git-entries"
(cd "$SOURCE_DIR" && find . -type f | sort) > "$out/source-files"
mkdir -p "$DESTDIR/usr/share/envdump"
echo ok > "$DESTDIR/usr/share/envdump/ok"
"#;

#[test]
fn build_environment_is_exactly_the_documented_one() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.commit("src/main.c", "int main(void) { return 0; }\n", "code");
    up.release_at("v1.2.3", 1_700_000_777);
    std::fs::write(farm.root.join("farm.key"), [9u8; 32]).unwrap();
    farm.write_config(
        "[signing]\nkey_file = \"farm.key\"\n\n[http]\nwebhook_secret_file = \"webhook-secret\"\n",
    );
    let out = farm.root.join("envdump");
    let dir = farm.simple_recipe(
        "envdump",
        &up,
        &ENV_DUMP.replace("@OUT@", &out.display().to_string()),
        "",
    );
    // Not executable: run through /bin/sh.
    let script = dir.join("build.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    farm.recipe(
        "noscript",
        &format!(
            "[meta]\nbuild_script = \"scripts/build-it.sh\"\n\n[upstream]\ngit = \"{}\"\n\
             tag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n",
            up.url()
        ),
        "",
    );

    let path = std::env::var("PATH").unwrap();
    let run = farm.run_env(
        &["--once"],
        &[
            ("FARMHAND_TEST_SECRET", "hunter2-do-not-leak"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-do-not-leak"),
            ("LANG", "en_US.UTF-8"),
            ("HOME", "/root/not-for-builds"),
            ("PATH", &path),
        ],
    );
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(0), "{log}");
    let done = log_lines(&log, "build + publish complete");
    assert_eq!(done.len(), 1, "{log}");
    assert!(done[0].contains("recipe=envdump"), "{}", done[0]);

    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let environ = read("environ");
    let env: BTreeMap<&str, &str> = environ
        .lines()
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .collect();
    let keys: Vec<&str> = env.keys().copied().collect();
    assert_eq!(
        keys,
        [
            "DESTDIR",
            "FARMHAND_RECIPE",
            "FARMHAND_TAG",
            "FARMHAND_VERSION",
            "HOME",
            "LC_ALL",
            "PATH",
            "SOURCE_DATE_EPOCH",
            "SOURCE_DIR",
            "TZ",
        ],
        "{environ}"
    );
    for secret in [
        "hunter2",
        "aws-secret",
        "test-secret",
        "farm.key",
        "webhook-secret",
    ] {
        assert!(!environ.contains(secret), "{secret} leaked:\n{environ}");
    }
    let state = farm.state().display().to_string();
    assert_eq!(env["PATH"], path);
    assert_eq!(env["LC_ALL"], "C");
    assert_eq!(env["TZ"], "UTC");
    assert_eq!(env["SOURCE_DATE_EPOCH"], "1700000777");
    assert_eq!(env["FARMHAND_RECIPE"], "envdump");
    assert_eq!(env["FARMHAND_VERSION"], "1.2.3-1");
    assert_eq!(env["FARMHAND_TAG"], "v1.2.3");
    for k in ["HOME", "SOURCE_DIR", "DESTDIR"] {
        assert!(
            Path::new(env[k]).is_absolute() && env[k].starts_with(&state),
            "{k}={} is not under {state}",
            env[k]
        );
    }
    assert!(env["SOURCE_DIR"].starts_with(&format!("{state}/sources/")));
    let distinct: std::collections::BTreeSet<&str> =
        [env["HOME"], env["SOURCE_DIR"], env["DESTDIR"]].into();
    assert_eq!(distinct.len(), 3);
    // The script runs in SOURCE_DIR; DESTDIR and HOME start empty.
    assert_eq!(read("pwd").trim(), env["SOURCE_DIR"]);
    assert_eq!(read("destdir-before"), "");
    assert_eq!(read("home-before"), "");
    assert_eq!(read("argv0").trim(), script.display().to_string());
    // The exported tree, without any git metadata.
    assert_eq!(read("git-entries"), "");
    assert_eq!(read("source-files"), "./README\n./VERSION\n./src/main.c\n");
    // Sources and stage are ephemeral.
    for d in ["sources", "stage"] {
        let left: Vec<_> = std::fs::read_dir(farm.state().join(d)).unwrap().collect();
        assert!(left.is_empty(), "{d} not cleaned: {left:?}");
    }
    // The secrets are not in farmhand's own log either.
    assert!(
        !log.contains("hunter2") && !log.contains("test-secret"),
        "{log}"
    );

    // A missing build script fails the build and names it.
    let failed = log_lines(&log, "build failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("recipe=noscript") && failed[0].contains("scripts/build-it.sh"),
        "{}",
        failed[0]
    );
    let book = read_json(&farm.state().join("state.json"));
    let err = book["failures"]["noscript@1.2.3-1"]["error"]
        .as_str()
        .unwrap();
    assert!(err.contains("scripts/build-it.sh"), "{err}");
}

#[test]
fn dangerous_tags_are_skipped_and_never_reach_a_path() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let bad = [
        "v1.1;rm",
        "v1.2`id`",
        "v1.3$(id)",
        "v-1.4",
        "v.hidden",
        "v1.5|x",
    ];
    for t in bad {
        up.release(t);
    }
    farm.write_config("");
    let script =
        "#!/bin/sh\nmkdir -p \"$DESTDIR/t\"\necho \"$FARMHAND_TAG\" > \"$DESTDIR/t/tag\"\n";
    farm.recipe(
        "permissive",
        &format!(
            "[upstream]\ngit = \"{}\"\ntag_pattern = '^v(.*)$'\n",
            up.url()
        ),
        script,
    );
    let log = farm.once_ok();
    let skipped = log_lines(&log, "tag skipped");
    for t in bad {
        assert!(
            skipped.iter().any(|l| l.contains(t)),
            "no warning for {t}:\n{log}"
        );
        assert!(
            skipped.iter().all(|l| l.contains("level=WARN")),
            "{skipped:?}"
        );
    }
    let started = log_lines(&log, "starting build");
    assert_eq!(started.len(), 1, "{log}");
    assert!(started[0].contains("tag=v1.0.0"));
    assert_eq!(
        index_versions(&farm.archive()),
        [("permissive".to_string(), "1.0.0-1".to_string())]
    );
    // Nothing under state_dir is named after a bad tag.
    for p in walk_tree(&farm.state()) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        for c in [';', '`', '$', '|', '(', ')'] {
            assert!(!name.contains(c), "{} under state_dir", p.display());
        }
        assert!(!name.contains("hidden"), "{}", p.display());
    }
}

#[test]
fn build_timeout_kills_the_whole_process_group() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("[build]\ntimeout = \"2s\"\n");
    let pidfile = farm.root.join("background.pid");
    farm.simple_recipe(
        "slow",
        &up,
        &format!(
            "#!/bin/sh\n\
             # A background child that ignores SIGTERM, so only SIGKILL ends it.\n\
             (trap '' TERM; exec sleep 300) &\n\
             echo $! > {pid}.tmp && mv {pid}.tmp {pid}\n\
             echo 'working...'\n\
             sleep 300\n",
            pid = pidfile.display()
        ),
        "",
    );
    let started = Instant::now();
    let log = farm.once_ok();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    let failed = log_lines(&log, "build failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("recipe=slow") && failed[0].contains("timed out after 2s"),
        "{}",
        failed[0]
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("the build script started its background child")
        .trim()
        .parse()
        .unwrap();
    assert!(
        pid_alive(std::process::id() as i32),
        "pid_alive sees live processes"
    );
    wait_for(
        Duration::from_secs(10),
        &format!("background child {pid} to be gone"),
        || (!pid_alive(pid)).then_some(()),
    );
    let build_log = read_build_log(&farm.state().join("logs/slow/1.0.0-1.1.log.zst"));
    assert!(build_log.contains("working..."), "{build_log}");
    assert!(build_log.contains("timed out"), "{build_log}");
    assert!(farm.archive()["packages"].as_array().unwrap().is_empty());
}

#[test]
fn unwritable_state_dir_exits_1_naming_it() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("hello", &up, "#!/bin/sh\n", "");

    // A read-only directory; root writes there anyway, so then use a path
    // below a regular file, which nobody can create.
    let ro = farm.root.join("readonly");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    let probe = ro.join("probe");
    let root_writes_anyway = std::fs::write(&probe, "").is_ok();
    let _ = std::fs::remove_file(&probe);
    let mut cases = vec![];
    if !root_writes_anyway {
        cases.push(ro.join("state"));
        cases.push(ro.clone());
    }
    std::fs::write(farm.root.join("somefile"), "").unwrap();
    cases.push(farm.root.join("somefile/state"));

    for state in cases {
        let cfg = format!(
            "[manager]\nid = \"test-farm\"\nrecipes_dir = \"recipes\"\nstate_dir = \"{}\"\n\n\
             [repo]\nname = \"test-packages\"\n\n[poll]\ndefault_interval = \"1h\"\n",
            state.display()
        );
        std::fs::write(farm.config_path(), cfg).unwrap();
        let out = farm.run(&["--once"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {log}", state.display());
        let last = log.lines().last().unwrap_or("");
        assert!(
            last.contains(&state.display().to_string()),
            "error does not name {}: {log}",
            state.display()
        );
        assert!(log_lines(&log, "starting build").is_empty(), "{log}");
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn unusable_signing_key_exits_1_naming_it() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("hello", &up, "#!/bin/sh\n", "");
    let key = farm.root.join("farm.key");
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("missing", None),
        ("garbage", Some(b"this is not an ed25519 key\n".to_vec())),
        ("31 bytes", Some(vec![1u8; 31])),
        (
            "public key PEM",
            Some(
                b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"
                    .to_vec(),
            ),
        ),
        (
            "corrupt private key PEM",
            Some(
                b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n"
                    .to_vec(),
            ),
        ),
    ];
    farm.write_config("[signing]\nkey_file = \"farm.key\"\n");
    for (what, content) in cases {
        match &content {
            Some(bytes) => std::fs::write(&key, bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(&key);
            }
        }
        let out = farm.run(&["--once"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {log}");
        let last = log.lines().last().unwrap_or("");
        assert!(
            last.contains(&key.display().to_string()),
            "{what}: key file not named: {log}"
        );
        assert!(
            log_lines(&log, "starting build").is_empty(),
            "{what}: {log}"
        );
        if let Some(bytes) = content {
            // The error never shows key material.
            let text = String::from_utf8_lossy(&bytes);
            if let Some(secret_line) = text.lines().nth(1) {
                assert!(!log.contains(secret_line), "{what}: {log}");
            }
        }
    }
}
