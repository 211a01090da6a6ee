//! A first end-to-end check of the harness: demo-like farm, --once.

use crate::util::*;

#[test]
fn once_publishes_and_second_once_builds_nothing() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    up.release("v1.1.0");
    farm.write_config("");
    farm.simple_recipe("hello", &up, "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/hello\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/hello/version\"\n", "");
    let out = farm.run(&["--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(
        log.matches("msg=\"build + publish complete\"").count(),
        2,
        "{log}"
    );
    let archive = read_json(&farm.repo().join("index/archive.json"));
    assert_eq!(archive["packages"].as_array().unwrap().len(), 2);
    let out = farm.run(&["--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(log.matches("starting build").count(), 0, "{log}");
}
