//! `--once` over the transports operators use: `git://` (a real
//! `git daemon` on 127.0.0.1), `file://` URLs, and submodules.

use crate::util::*;

const ARCH: &str = std::env::consts::ARCH;

#[test]
fn git_daemon_file_url_and_submodules_are_built() {
    let farm = Farm::new();

    // Served over git:// by a real git daemon.
    let served = farm.root.join("served");
    let net = Upstream::new(&served.join("net"));
    net.release_at("v1.0.0", 1_700_000_500);
    net.release_at("v1.1.0", 1_700_000_600);
    let daemon = GitDaemon::start(&served);

    // Reached through a file:// URL.
    let local = Upstream::new(&farm.root.join("local"));
    local.release("v2.0.0");

    // An application that vendors a library as a submodule; the tag pins
    // the library's first commit.
    let lib = Upstream::new(&farm.root.join("lib"));
    lib.commit("lib.txt", "library v1\n", "library");
    let app = Upstream::new(&farm.root.join("app"));
    git(
        &app.path,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &lib.url(),
            "vendor/lib",
        ],
    );
    git(&app.path, &["commit", "-q", "-m", "vendor the library"]);
    app.release("v3.0.0");
    lib.commit("lib.txt", "library v2\n", "library moves on");

    farm.write_config("");
    let copy_version = "#!/bin/sh\nset -eu\nmkdir -p \"$DESTDIR/share\"\n\
                        cp VERSION \"$DESTDIR/share/VERSION\"\n";
    let pattern = "tag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'";
    farm.recipe(
        "net",
        &format!("[upstream]\ngit = \"{}\"\n{pattern}\n", daemon.url("net")),
        copy_version,
    );
    let file_url = format!("file://{}", local.path.display());
    farm.recipe(
        "local",
        &format!("[upstream]\ngit = \"{file_url}\"\n{pattern}\n"),
        copy_version,
    );
    let app_script = "#!/bin/sh\nset -eu\nd=\"$DESTDIR/share/app\"\nmkdir -p \"$d\"\n\
                      ls -A vendor/lib > \"$d/vendored\"\n\
                      find \"$SOURCE_DIR\" -name .git > \"$d/git-entries\"\n\
                      if [ -e vendor/lib/lib.txt ]; then cp vendor/lib/lib.txt \"$d/lib.txt\"; fi\n";
    for (id, subs) in [("app", true), ("app-nosub", false)] {
        farm.recipe(
            id,
            &format!(
                "[upstream]\ngit = \"{}\"\n{pattern}\nsubmodules = {subs}\n",
                app.url()
            ),
            app_script,
        );
    }

    let log = farm.once_ok();
    assert_eq!(
        log_lines(&log, "build + publish complete").len(),
        5,
        "{log}"
    );
    assert!(log_lines(&log, "build failed").is_empty(), "{log}");
    let archive = farm.archive();
    let find = |name: &str, version: &str| {
        archive["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name && p["version"] == version)
            .unwrap_or_else(|| panic!("{name} {version} not published: {archive:#}"))
            .clone()
    };
    let file_of = |name: &str, version: &str, path: &str| -> Vec<u8> {
        let tar = read_tar_zst(
            &farm
                .repo()
                .join(format!("pool/{name}/{name}_{version}_{ARCH}.tar.zst")),
        );
        tar.into_iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} not in {name} {version}"))
            .data
    };

    // git://
    let e = find("net", "1.1.0-1");
    assert_eq!(
        e["build"]["source_ref"],
        format!("git+{}#refs/tags/v1.1.0", daemon.url("net"))
    );
    assert_eq!(e["build"]["timestamp"], "2023-11-14T22:23:20Z");
    assert_eq!(file_of("net", "1.1.0-1", "share/VERSION"), b"v1.1.0\n");
    assert_eq!(file_of("net", "1.0.0-1", "share/VERSION"), b"v1.0.0\n");

    // file://
    let e = find("local", "2.0.0-1");
    assert_eq!(
        e["build"]["source_ref"],
        format!("git+{file_url}#refs/tags/v2.0.0")
    );
    assert_eq!(file_of("local", "2.0.0-1", "share/VERSION"), b"v2.0.0\n");

    // Submodules: exported at the pinned commit, without git metadata;
    // without `submodules = true` the directory stays empty.
    find("app", "3.0.0-1");
    assert_eq!(
        file_of("app", "3.0.0-1", "share/app/lib.txt"),
        b"library v1\n"
    );
    assert_eq!(
        file_of("app", "3.0.0-1", "share/app/vendored"),
        b"README\nlib.txt\n"
    );
    assert_eq!(file_of("app", "3.0.0-1", "share/app/git-entries"), b"");
    assert_eq!(file_of("app-nosub", "3.0.0-1", "share/app/vendored"), b"");

    // The daemon's upstream is polled again without rebuilding.
    let log = farm.once_ok();
    assert!(log_lines(&log, "starting build").is_empty(), "{log}");
    let polled = log_lines(&log, "poll complete")
        .into_iter()
        .find(|l| l.contains("recipe=net "))
        .expect("net polled");
    assert_eq!(field(polled, "tags_seen").as_deref(), Some("2"));
    drop(daemon);
}
