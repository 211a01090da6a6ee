//! The fetch against hostile upstreams (DESIGN.md section 18): crafted
//! trees cannot write outside the source directory, submodules of a remote
//! upstream cannot pull local repositories, and a tag farmhand cannot use
//! does not hide the others or flood the log.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

/// `git hash-object -w --literally -t <kind>` of `data` in `repo`: writes
/// objects `git mktree` would refuse (two entries of one name).
fn write_object(repo: &Path, kind: &str, data: &[u8]) -> String {
    let mut child = Command::new("git")
        .args(["hash-object", "-w", "--literally", "--stdin", "-t", kind])
        .current_dir(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git hash-object: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A raw tree object from `(mode, name, object id)` entries, in the order
/// given (duplicates allowed).
fn raw_tree(entries: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, name, oid) in entries {
        out.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        out.extend_from_slice(&hex::decode(oid).unwrap());
    }
    out
}

/// Commits `tree` on top of HEAD in `repo` and tags the commit `tag`.
fn commit_tree_and_tag(repo: &Path, tree: &str, tag: &str) {
    let head = git(repo, &["rev-parse", "HEAD"]);
    let commit = git(
        repo,
        &[
            "commit-tree",
            tree,
            "-p",
            head.trim(),
            "-m",
            &format!("crafted {tag}"),
        ],
    );
    git(repo, &["tag", tag, commit.trim()]);
}

#[test]
fn crafted_trees_cannot_write_through_links() {
    let farm = Farm::new();
    let served = farm.root.join("served");
    let up = Upstream::new(&served.join("up"));
    up.release("v0.9.0");

    // The victims live in this test's own temporary directory.
    let victim_file = farm.root.join("victim/file");
    std::fs::create_dir_all(victim_file.parent().unwrap()).unwrap();
    std::fs::write(&victim_file, "untouched\n").unwrap();
    let victim_dir = farm.root.join("victim_dir");
    std::fs::create_dir_all(&victim_dir).unwrap();

    let repo = &up.path;
    let version = write_object(repo, "blob", b"crafted\n");
    // v1.0.0: a link `f` to the victim file, then a file `f`.
    let link_file = write_object(repo, "blob", victim_file.display().to_string().as_bytes());
    let pwned = write_object(repo, "blob", b"pwned\n");
    let tree = raw_tree(&[
        ("100644", "VERSION", &version),
        ("120000", "f", &link_file),
        ("100644", "f", &pwned),
    ]);
    let tree = write_object(repo, "tree", &tree);
    commit_tree_and_tag(repo, &tree, "v1.0.0");
    // v1.1.0: under `a/`, a link `lnk` to the victim directory, then a
    // directory `lnk` holding `pwned.txt`.
    let link_dir = write_object(repo, "blob", victim_dir.display().to_string().as_bytes());
    let inner = write_object(repo, "tree", &raw_tree(&[("100644", "pwned.txt", &pwned)]));
    let a = write_object(
        repo,
        "tree",
        &raw_tree(&[("120000", "lnk", &link_dir), ("40000", "lnk", &inner)]),
    );
    let tree = write_object(
        repo,
        "tree",
        &raw_tree(&[("100644", "VERSION", &version), ("40000", "a", &a)]),
    );
    commit_tree_and_tag(repo, &tree, "v1.1.0");

    let daemon = GitDaemon::start(&served);
    farm.write_config("");
    let script =
        "#!/bin/sh\nset -eu\nmkdir -p \"$DESTDIR/share\"\ncp VERSION \"$DESTDIR/share/\"\n";
    let pattern = "tag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'";
    farm.recipe(
        "local",
        &format!("[upstream]\ngit = \"{}\"\n{pattern}\n", up.url()),
        script,
    );
    farm.recipe(
        "net",
        &format!("[upstream]\ngit = \"{}\"\n{pattern}\n", daemon.url("up")),
        script,
    );
    let log = farm.once_ok();

    assert_eq!(
        std::fs::read_to_string(&victim_file).unwrap(),
        "untouched\n",
        "the fetch wrote through a link:\n{log}"
    );
    let planted: Vec<_> = std::fs::read_dir(&victim_dir).unwrap().collect();
    assert!(planted.is_empty(), "files planted: {planted:?}\n{log}");

    // The honest tag builds; both crafted ones fail at the fetch, naming
    // the tag and the path.
    let ids = archive_ids(&farm);
    assert!(ids.contains(&"local@0.9.0-1".to_string()), "{ids:?}\n{log}");
    assert!(ids.contains(&"net@0.9.0-1".to_string()), "{ids:?}\n{log}");
    assert_eq!(ids.len(), 2, "{ids:?}");
    let book = read_json(&farm.state().join("state.json"));
    for recipe in ["local", "net"] {
        for (version, tag, path) in [
            ("1.0.0-1", "v1.0.0", "\"f\""),
            ("1.1.0-1", "v1.1.0", "\"a/lnk\""),
        ] {
            let err = book["failures"][format!("{recipe}@{version}")]["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{recipe}@{version} did not fail: {book:#}\n{log}"));
            assert!(
                err.contains(tag) && err.contains(path),
                "{recipe}@{version}: {err}"
            );
        }
    }
    drop(daemon);
}

#[test]
fn submodules_of_a_remote_upstream_must_be_remote() {
    let farm = Farm::new();
    let served = farm.root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let daemon = GitDaemon::start(&served);

    // A repository the daemon can read but no upstream may reach: it
    // stands for other recipes' git caches under state_dir/git.
    let secret = Upstream::new(&farm.root.join("secret"));
    secret.commit("secret.txt", "farm secret\n", "secret");
    // A library served over git:// like the application.
    let lib = Upstream::new(&served.join("lib"));
    lib.commit("lib.txt", "library\n", "library");

    let app = Upstream::new(&served.join("app"));
    let add = |url: &str, path: &str| {
        git(
            &app.path,
            &[
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "add",
                "-q",
                url,
                path,
            ],
        );
    };
    add(&lib.url(), "vendor/lib");
    git(&app.path, &["commit", "-q", "-m", "vendor the library"]);
    let set_url = |name: &str, url: &str, tag: &str| {
        git(
            &app.path,
            &[
                "config",
                "-f",
                ".gitmodules",
                &format!("submodule.{name}.url"),
                url,
            ],
        );
        git(&app.path, &["add", ".gitmodules"]);
        git(&app.path, &["commit", "-q", "--allow-empty", "-m", tag]);
        git(&app.path, &["tag", tag]);
    };
    let ext_marker = farm.root.join("ext-ran");
    // v1.0.0: the library over git://, as it should be.
    set_url("vendor/lib", &daemon.url("lib"), "v1.0.0");
    add(&secret.url(), "vendor/secret");
    // v1.1.0: an absolute path.
    set_url("vendor/secret", &secret.url(), "v1.1.0");
    // v1.2.0: a file:// URL.
    set_url(
        "vendor/secret",
        &format!("file://{}", secret.path.display()),
        "v1.2.0",
    );
    // v1.3.0: a relative URL, which is local for a local upstream only.
    set_url("vendor/secret", "../../secret", "v1.3.0");
    // v1.4.0: git's ext:: transport runs a command.
    set_url(
        "vendor/secret",
        &format!("ext::sh -c touch% {}", ext_marker.display()),
        "v1.4.0",
    );
    // v1.5.0: the secret back at its remote, but served over git://
    // instead (not served: the fetch fails, yet not for being local).
    set_url("vendor/secret", &daemon.url("secret"), "v1.5.0");

    farm.write_config("");
    let script = "#!/bin/sh\nset -eu\nd=\"$DESTDIR/share\"\nmkdir -p \"$d\"\n\
                  cat vendor/lib/lib.txt > \"$d/lib\"\n\
                  if [ -e vendor/secret/secret.txt ]; then cp vendor/secret/secret.txt \"$d/\"; fi\n";
    let pattern = "tag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\nsubmodules = true";
    farm.recipe(
        "net",
        &format!("[upstream]\ngit = \"{}\"\n{pattern}\n", daemon.url("app")),
        script,
    );
    farm.recipe(
        "local",
        &format!("[upstream]\ngit = \"{}\"\n{pattern}\n", app.url()),
        script,
    );
    let log = farm.once_ok();
    let book = read_json(&farm.state().join("state.json"));
    let error = |key: &str| -> String {
        book["failures"][key]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{key} did not fail: {book:#}\n{log}"))
            .to_string()
    };

    // The remote upstream: every local URL fails, naming the submodule.
    for version in ["1.1.0-1", "1.2.0-1", "1.4.0-1"] {
        let err = error(&format!("net@{version}"));
        assert!(
            err.contains("submodule \"vendor/secret\""),
            "{version}: {err}"
        );
    }
    for version in ["1.1.0-1", "1.2.0-1"] {
        let err = error(&format!("net@{version}"));
        assert!(err.contains("must be remote"), "{version}: {err}");
    }
    // A relative URL resolves against the git:// upstream: remote, so it
    // is fetched (and fails only because nothing serves it).
    let err = error("net@1.3.0-1");
    assert!(!err.contains("must be remote"), "{err}");
    assert!(!error("net@1.5.0-1").contains("must be remote"));
    assert!(!ext_marker.exists(), "ext:: ran a command");

    // The local upstream may use local submodules, never ext::.
    let err = error("local@1.4.0-1");
    assert!(err.contains("submodule \"vendor/secret\""), "{err}");
    assert!(!ext_marker.exists(), "ext:: ran a command");

    let ids = archive_ids(&farm);
    let mut expected = vec![
        "net@1.0.0-1",
        "local@1.0.0-1",
        "local@1.1.0-1",
        "local@1.2.0-1",
        "local@1.3.0-1",
    ];
    let mut got: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{log}");
    // Nothing published for the remote upstream carries the secret.
    for e in read_tar_zst(&farm.repo().join(format!(
        "pool/net/net_1.0.0-1_{}.tar.zst",
        std::env::consts::ARCH
    ))) {
        assert!(!e.path.contains("secret"), "{}", e.path);
    }
    drop(daemon);
}

/// Adds `refs/tags/<tag>` for HEAD to `repo` through `packed-refs` (`git
/// tag` and loose ref files cannot hold a name this long).
fn pack_tag(repo: &Path, tag: &str) {
    let head = git(repo, &["rev-parse", "HEAD"]);
    let packed = repo.join(".git/packed-refs");
    let mut text = std::fs::read_to_string(&packed).unwrap_or_default();
    text.push_str(&format!("{} refs/tags/{tag}\n", head.trim()));
    std::fs::write(&packed, text).unwrap();
}

#[test]
fn a_tag_too_long_to_use_hides_nothing_and_is_never_logged_whole() {
    let farm = Farm::new();
    let served = farm.root.join("served");
    let up = Upstream::new(&served.join("up"));
    up.release("v1.0.0");
    up.release("v1.1.0");
    // Matches the pattern (so it is warned about), 10,000 characters.
    let matching = format!("v1.2.{}", "3".repeat(9_995));
    // Does not match it (so it is skipped silently).
    let other = "z".repeat(10_000);
    pack_tag(&up.path, &matching);
    pack_tag(&up.path, &other);
    let daemon = GitDaemon::start(&served);

    farm.write_config("");
    let script =
        "#!/bin/sh\nset -eu\nmkdir -p \"$DESTDIR/share\"\ncp VERSION \"$DESTDIR/share/\"\n";
    let pattern = "tag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'";
    for (id, url) in [("local", up.url()), ("net", daemon.url("up"))] {
        farm.recipe(
            id,
            &format!("[upstream]\ngit = \"{url}\"\n{pattern}\n"),
            script,
        );
    }
    let log = farm.once_ok();

    // The other tags are seen and built.
    let mut ids = archive_ids(&farm);
    ids.sort();
    assert_eq!(
        ids,
        [
            "local@1.0.0-1",
            "local@1.1.0-1",
            "net@1.0.0-1",
            "net@1.1.0-1"
        ],
        "{log}"
    );
    assert!(log_lines(&log, "ls-remote failed").is_empty(), "{log}");
    assert!(log_lines(&log, "build failed").is_empty(), "{log}");

    // One warning per recipe, for the matching tag alone, naming it in at
    // most 100 characters.
    let skipped = log_lines(&log, "tag skipped");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    for id in ["local", "net"] {
        let line = skipped
            .iter()
            .find(|l| l.contains(&format!("recipe={id} ")))
            .unwrap_or_else(|| panic!("no warning for {id}: {skipped:?}"));
        assert!(line.contains("level=WARN"), "{line}");
        let tag = field(line, "tag").unwrap_or_default();
        assert!(tag.starts_with("v1.2.333"), "{line}");
        assert!(
            tag.chars().count() <= 100,
            "{} characters: {tag}",
            tag.chars().count()
        );
    }
    // No log line carries either tag whole, nor a long piece of it.
    for piece in ["3".repeat(101), "z".repeat(101)] {
        assert!(
            !log.lines().any(|l| l.contains(&piece)),
            "a log line carries a tag:\n{}",
            log.lines()
                .find(|l| l.contains(&piece))
                .map(|l| &l[..l.len().min(500)])
                .unwrap_or("")
        );
    }
    drop(daemon);
}
