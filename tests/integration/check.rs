//! `farmhand --check`: the roster it prints, every problem it reports
//! (naming file and key), and its exit codes; config errors and bad flags
//! exit 2. Also validates the example recipes shipped in `recipes/`.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::*;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The roster row of `id`: its whitespace-separated cells.
fn row<'a>(text: &'a str, id: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&id))
}

/// The problem line mentioning recipe `id`.
fn problem<'a>(text: &'a str, id: &str) -> &'a str {
    let needle = format!("recipe {id} invalid:");
    text.lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no problem reported for {id}:\n{text}"))
}

#[test]
fn good_roster_is_listed_and_exits_0() {
    let farm = Farm::new();
    farm.write_config("[http]\nwebhook_secret_file = \"webhook-secret\"\n");
    farm.recipe(
        "libz",
        "[meta]\nlicense = \"Zlib\"\n\n[upstream]\ngit = \"https://github.com/madler/zlib\"\n\
         tag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n\n[watch]\ngithub_webhook = true\npoll_interval = \"6h\"\n",
        "#!/bin/sh\n",
    );
    farm.recipe(
        "busybox",
        "[upstream]\ngit = \"https://git.busybox.net/busybox\"\n\
         tag_pattern = '^(?P<major>\\d+)_(?P<minor>\\d+)_(?P<patch>\\d+)$'\n",
        "#!/bin/sh\n",
    );
    farm.recipe("manual", "[meta]\nlicense = \"MIT\"\n", "#!/bin/sh\n");
    // A directory without a recipe file is ignored silently.
    std::fs::create_dir_all(farm.root.join("recipes/notes")).unwrap();
    std::fs::write(farm.root.join("recipes/notes/README"), "not a recipe\n").unwrap();

    let out = farm.run(&["--check"]);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let text = stdout(&out);
    assert_eq!(
        row(&text, "libz").unwrap(),
        ["libz", "https://github.com/madler/zlib", "6h", "on"],
        "{text}"
    );
    assert_eq!(
        row(&text, "busybox").unwrap(),
        ["busybox", "https://git.busybox.net/busybox", "1h", "off"],
        "{text}"
    );
    let manual = row(&text, "manual").unwrap();
    assert_eq!(manual.last(), Some(&"off"), "{text}");
    assert!(
        manual.contains(&"-"),
        "no interval for an unwatched recipe: {text}"
    );
    assert!(row(&text, "notes").is_none(), "{text}");
    assert!(!text.contains("problem"), "{text}");
    // --check touches nothing: no state dir is created.
    assert!(!farm.state().exists());
}

#[test]
fn bad_recipes_are_each_reported_and_good_ones_still_listed() {
    let farm = Farm::new();
    farm.write_config("");
    let up = "git = \"https://example.org/x.git\"";
    farm.recipe(
        "good",
        &format!("[upstream]\n{up}\ntag_pattern = '^v(.*)$'\n[watch]\npoll_interval = \"2h\"\n"),
        "#!/bin/sh\n",
    );
    farm.recipe(
        "zz-good",
        &format!("[upstream]\n{up}\ntag_pattern = '^release-(\\d+)$'\n"),
        "#!/bin/sh\n",
    );
    // Line 3 holds the unterminated string.
    farm.recipe(
        "malformed",
        &format!("[upstream]\n{up}\ntag_pattern = '^v(.*)$\n"),
        "",
    );
    farm.recipe(
        "typo",
        &format!("[upstream]\n{up}\ntag_patern = '^v(.*)$'\n"),
        "",
    );
    farm.recipe(
        "nogroup",
        &format!("[upstream]\n{up}\ntag_pattern = '^v\\d+\\.\\d+$'\n"),
        "",
    );
    farm.recipe(
        "mixed",
        &format!("[upstream]\n{up}\ntag_pattern = '^(?P<major>\\d+)\\.(\\d+)$'\n"),
        "",
    );
    farm.recipe(
        "unknown-group",
        &format!("[upstream]\n{up}\ntag_pattern = '^(?P<major>\\d+)\\.(?P<minor>\\d+)\\.(?P<micro>\\d+)$'\n"),
        "",
    );
    farm.recipe(
        "Bad_Id",
        &format!("[upstream]\n{up}\ntag_pattern = '^v(.*)$'\n"),
        "",
    );
    let both = farm.recipe(
        "both",
        &format!("[upstream]\n{up}\ntag_pattern = '^v(.*)$'\n"),
        "",
    );
    std::fs::write(both.join("peipkg.toml"), "[meta]\n").unwrap();
    farm.recipe(
        "too-fast",
        &format!("[upstream]\n{up}\ntag_pattern = '^v(.*)$'\n[watch]\npoll_interval = \"30s\"\n"),
        "",
    );

    let out = farm.run(&["--check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));

    // The valid recipes are still listed next to the invalid ones.
    assert_eq!(
        row(&text, "good").unwrap(),
        ["good", "https://example.org/x.git", "2h", "off"]
    );
    assert_eq!(
        row(&text, "zz-good").unwrap(),
        ["zz-good", "https://example.org/x.git", "1h", "off"]
    );

    let file = |id: &str, name: &str| {
        farm.root
            .join("recipes")
            .join(id)
            .join(name)
            .display()
            .to_string()
    };
    let p = problem(&text, "malformed");
    assert!(p.contains(&file("malformed", "recipe.toml")), "{p}");
    assert!(p.contains("line 3"), "{p}");

    let p = problem(&text, "typo");
    assert!(p.contains(&file("typo", "recipe.toml")), "{p}");
    assert!(p.contains("tag_patern"), "{p}");

    let p = problem(&text, "nogroup");
    assert!(p.contains(&file("nogroup", "recipe.toml")), "{p}");
    assert!(
        p.contains("upstream.tag_pattern") && p.contains("group"),
        "{p}"
    );

    let p = problem(&text, "mixed");
    assert!(p.contains(&file("mixed", "recipe.toml")), "{p}");
    assert!(
        p.contains("upstream.tag_pattern") && p.contains("mixes"),
        "{p}"
    );

    let p = problem(&text, "unknown-group");
    assert!(p.contains(&file("unknown-group", "recipe.toml")), "{p}");
    assert!(
        p.contains("upstream.tag_pattern") && p.contains("micro"),
        "{p}"
    );

    let p = problem(&text, "Bad_Id");
    assert!(
        p.contains(&farm.root.join("recipes/Bad_Id").display().to_string()),
        "{p}"
    );
    assert!(p.contains("recipe id"), "{p}");

    let p = problem(&text, "both");
    assert!(
        p.contains(&farm.root.join("recipes/both").display().to_string()),
        "{p}"
    );
    assert!(
        p.contains("recipe.toml") && p.contains("peipkg.toml"),
        "{p}"
    );

    let p = problem(&text, "too-fast");
    assert!(p.contains(&file("too-fast", "recipe.toml")), "{p}");
    assert!(p.contains("watch.poll_interval") && p.contains("1m"), "{p}");

    // Invalid recipes are not listed as roster rows.
    for id in ["malformed", "typo", "nogroup", "mixed", "Bad_Id", "both"] {
        assert!(row(&text, id).is_none(), "{id} listed as valid:\n{text}");
    }
}

#[test]
fn config_errors_exit_2_naming_file_and_key() {
    let farm = Farm::new();
    farm.recipe(
        "hello",
        "[upstream]\ngit = \"https://example.org/hello.git\"\ntag_pattern = '^v(.*)$'\n",
        "#!/bin/sh\n",
    );
    let cfg = farm.config_path().display().to_string();
    let base = "[manager]\nid = \"farm-1\"\nrecipes_dir = \"recipes\"\nstate_dir = \"state\"\n\n\
                [repo]\nname = \"test-packages\"\n\n[poll]\ndefault_interval = \"1h\"\n";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            base.replace(
                "state_dir = \"state\"\n",
                "state_dir = \"state\"\nrecipe_dir = \"x\"\n",
            ),
            vec!["unknown field `recipe_dir`"],
        ),
        (
            format!("{base}[pol]\nconcurrency = 2\n"),
            vec!["unknown field `pol`"],
        ),
        (
            base.replace("id = \"farm-1\"\n", ""),
            vec!["manager.id", "required"],
        ),
        (
            base.replace("[repo]\nname = \"test-packages\"\n", ""),
            vec!["[repo]", "required"],
        ),
        (
            base.replace("\"1h\"", "\"30s\""),
            vec!["poll.default_interval", "30s", "minimum", "1m"],
        ),
        (
            format!("{base}[build]\ntimeout = \"0s\"\n"),
            vec!["build.timeout", "minimum"],
        ),
        (
            base.replace("\"1h\"", "60"),
            vec!["line 10", "invalid type"],
        ),
        (
            format!("{base}[build]\nkeep_logs = \"ten\"\n"),
            vec!["line 12", "invalid type"],
        ),
        (
            format!("{base}[upload]\nbackend = \"s3\"\n"),
            vec!["upload.backend", "s3"],
        ),
        (format!("{base}[poll\n"), vec!["line 11"]),
    ];
    for (text, wants) in &cases {
        std::fs::write(farm.config_path(), text).unwrap();
        for mode in ["--check", "--once"] {
            let out = farm.run(&[mode]);
            let all = all_output(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{mode} with config\n{text}\ngave:\n{all}"
            );
            assert!(all.contains(&cfg), "{mode}: file not named:\n{all}");
            for w in wants {
                assert!(all.contains(w), "{mode}: {w:?} missing from:\n{all}");
            }
        }
    }
    assert!(!farm.state().exists(), "a bad config must not create state");

    // A missing config file.
    std::fs::remove_file(farm.config_path()).unwrap();
    for mode in ["--check", "--once"] {
        let out = farm.run(&[mode]);
        let all = all_output(&out);
        assert_eq!(out.status.code(), Some(2), "{mode}: {all}");
        assert!(all.contains(&cfg), "{all}");
    }
}

#[test]
fn webhook_recipe_without_secret_file_is_a_config_error() {
    let farm = Farm::new();
    farm.write_config("");
    farm.recipe(
        "hooked",
        "[upstream]\ngit = \"https://example.org/h.git\"\ntag_pattern = '^v(.*)$'\n\
         [watch]\ngithub_webhook = true\n",
        "#!/bin/sh\n",
    );
    for mode in ["--check", "--once"] {
        let out = farm.run(&[mode]);
        let all = all_output(&out);
        assert_eq!(out.status.code(), Some(2), "{mode}: {all}");
        assert!(all.contains("webhook_secret_file"), "{mode}: {all}");
        assert!(all.contains("hooked"), "{mode}: recipe not named: {all}");
    }
    // --check still lists the roster, webhook on.
    let out = farm.run(&["--check"]);
    assert_eq!(
        row(&stdout(&out), "hooked").unwrap(),
        ["hooked", "https://example.org/h.git", "1h", "on"]
    );
    assert!(!farm.state().exists());

    // With the secret file configured the same roster is valid.
    farm.write_config("[http]\nwebhook_secret_file = \"webhook-secret\"\n");
    let out = farm.run(&["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
}

#[test]
fn bad_flags_exit_2() {
    let farm = Farm::new();
    farm.write_config("");
    let cases: &[&[&str]] = &[
        &["--bogus"],
        &["--log-level", "loud", "--check"],
        &["--log-format", "xml", "--check"],
        &["--once", "--check"],
        &["--check", "extra-argument"],
    ];
    for args in cases {
        let out = Command::new(bin())
            .arg("--config")
            .arg(farm.config_path())
            .args(*args)
            .output()
            .unwrap();
        let all = all_output(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains("error"), "{args:?}: {all}");
    }
    // --help is not an error.
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("--check"));
}

/// peipkg-manager's command line, as Go's flag package spells it (one dash,
/// `-flag value` or `-flag=value`), works unchanged.
#[test]
fn go_style_single_dash_flags_work() {
    let farm = Farm::new();
    farm.write_config("");
    let config = farm.config_path().display().to_string();
    for args in [
        vec!["-check".to_string(), "-config".into(), config.clone()],
        vec![
            format!("-config={config}"),
            "-log-level=warn".into(),
            "-check".into(),
        ],
    ] {
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", all_output(&out));
        assert!(
            stdout(&out).contains("ok: config and all recipes are valid"),
            "{args:?}"
        );
    }
    let out = Command::new(bin())
        .args(["-once", "-config", config.as_str(), "-log-format", "logfmt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mode=once"));
}

/// The shipped example recipes load, are listed with their upstream,
/// interval and webhook setting, and their build scripts parse.
#[test]
fn example_recipes_pass_check() {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let farm = Farm::new();
    std::fs::write(farm.root.join("webhook-secret"), "example-secret\n").unwrap();
    std::fs::write(
        farm.config_path(),
        format!(
            "[manager]\nid = \"example-farm\"\nrecipes_dir = \"{}\"\nstate_dir = \"state\"\n\n\
             [repo]\nname = \"example-packages\"\n\n[http]\nwebhook_secret_file = \"webhook-secret\"\n\n\
             [poll]\ndefault_interval = \"1h\"\n",
            recipes.display()
        ),
    )
    .unwrap();
    let out = farm.run(&["--check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));

    let mut ids = Vec::new();
    for e in std::fs::read_dir(&recipes).unwrap() {
        let dir = e.unwrap().path();
        let id = dir.file_name().unwrap().to_string_lossy().into_owned();
        let recipe: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("recipe.toml")).unwrap()).unwrap();
        let git = recipe["upstream"]["git"].as_str().unwrap();
        let watch = recipe.get("watch");
        let interval = watch
            .and_then(|w| w.get("poll_interval"))
            .and_then(|v| v.as_str())
            .unwrap_or("1h");
        let hook = watch
            .and_then(|w| w.get("github_webhook"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
        let want = [id.as_str(), git, interval, if hook { "on" } else { "off" }];
        assert_eq!(
            row(&text, &id).unwrap_or_else(|| panic!("{id} not listed:\n{text}")),
            want
        );
        // The build script exists and is valid shell.
        let script = dir.join(
            recipe
                .get("meta")
                .and_then(|m| m.get("build_script"))
                .and_then(|v| v.as_str())
                .unwrap_or("build.sh"),
        );
        let sh = Command::new("sh").arg("-n").arg(&script).output().unwrap();
        assert!(
            sh.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&sh.stderr)
        );
        ids.push(id);
    }
    assert!(
        ids.len() >= 3,
        "expected at least three example recipes: {ids:?}"
    );
}

#[test]
fn a_local_upstream_of_another_owner_is_a_check_warning() {
    use std::os::unix::fs::chown;
    let farm = Farm::new();
    farm.write_config("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("theirs", &up, "#!/bin/sh\n", "");
    farm.recipe(
        "gone",
        "[upstream]\ngit = \"/nonexistent/upstream\"\ntag_pattern = '^v(.*)$'\n",
        "#!/bin/sh\n",
    );
    let out = farm.run(&["--check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warning: recipe gone: local upstream /nonexistent/upstream is not readable"),
        "{text}"
    );
    assert!(!text.contains("recipe theirs"), "{text}");
    // Owned by another user: git would refuse it as this user.
    chown(&up.path, Some(65534), None).unwrap();
    let out = farm.run(&["--check"]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "warnings do not fail --check: {text}"
    );
    assert!(
        text.contains("warning: recipe theirs: local upstream")
            && text.contains("owned by uid 65534")
            && text.contains("safe.directory"),
        "{text}"
    );
}

#[test]
fn a_state_dir_of_another_owner_is_refused() {
    use std::os::unix::fs::chown;
    let farm = Farm::new();
    farm.write_config("");
    std::fs::create_dir_all(farm.state()).unwrap();
    chown(farm.state(), Some(65534), Some(65534)).unwrap();
    let out = farm.run(&["--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("state_dir") && err.contains("runuser -u"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(farm.state()).unwrap().count(),
        0,
        "nothing written into the other user's state_dir"
    );
}
