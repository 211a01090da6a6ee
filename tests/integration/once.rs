//! `farmhand --once` end to end: poll, build, package, publish, index,
//! backoff book, signatures, deterministic packages, `[[package]]` stanzas,
//! build logs, upload, and which versions a sweep picks (`min_version`,
//! `backlog`, revision bumps).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};

use crate::util::*;

const ARCH: &str = std::env::consts::ARCH;

fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

fn parse_rfc3339(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339 Z: {e}"))
}

/// Every index entry's file exists, and its hash and sizes match the file.
fn assert_entries_match_files(farm: &Farm, doc: &serde_json::Value) {
    for e in doc["packages"].as_array().unwrap() {
        let url = e["url"].as_str().unwrap();
        let file = farm.repo().join(url);
        assert!(file.is_file(), "{url} missing");
        assert_eq!(e["hash"]["algorithm"], "sha256");
        assert_eq!(
            e["hash"]["value"].as_str().unwrap(),
            sha256_file(&file),
            "{url}"
        );
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(e["size_compressed"].as_u64().unwrap(), len, "{url}");
        let installed: u64 = read_tar_zst(&file)
            .iter()
            .filter(|t| t.kind.is_file())
            .map(|t| t.data.len() as u64)
            .sum();
        assert_eq!(e["size_installed"].as_u64().unwrap(), installed, "{url}");
    }
}

fn entry<'a>(doc: &'a serde_json::Value, name: &str, version: &str) -> &'a serde_json::Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["version"] == version)
        .unwrap_or_else(|| panic!("no {name} {version} in {doc:#}"))
}

fn version_set(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    index_versions(doc).into_iter().collect()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const ALPHA_BUILD: &str = r#"#!/bin/sh
set -eu
mkdir -p "$DESTDIR/usr/bin" "$DESTDIR/usr/share/doc/alpha"
printf '#!/bin/sh\necho alpha %s\n' "$FARMHAND_VERSION" > "$DESTDIR/usr/bin/alpha"
chmod 755 "$DESTDIR/usr/bin/alpha"
cp VERSION "$DESTDIR/usr/share/doc/alpha/VERSION"
echo "alpha build of $FARMHAND_TAG done"
"#;

const BETA_BUILD: &str = r#"#!/bin/sh
set -eu
if [ "$FARMHAND_TAG" = v0.2.0 ]; then
  echo "beta: this release does not build" >&2
  exit 3
fi
mkdir -p "$DESTDIR/usr/lib"
echo "libbeta $FARMHAND_VERSION" > "$DESTDIR/usr/lib/libbeta.so"
"#;

#[test]
fn once_publishes_indexes_and_books_failures() {
    let farm = Farm::new();
    let alpha = Upstream::new(&farm.root.join("alpha"));
    alpha.release_at("v1.9.0", 1_700_000_100);
    alpha.release_at("v1.10.0-rc.1", 1_700_000_200);
    alpha.release_at("v1.10.0", 1_700_000_300);
    alpha.release_at("not-a-release", 1_700_000_350);
    let beta = Upstream::new(&farm.root.join("beta"));
    beta.release_at("v0.1.0", 1_700_001_000);
    beta.release_at("v0.2.0", 1_700_002_000);
    farm.write_config("");
    farm.recipe(
        "alpha",
        &format!(
            "[meta]\nlicense = \"MIT\"\nhomepage = \"https://alpha.example.org\"\n\
             description = \"The alpha tool\"\n\n[upstream]\ngit = \"{}\"\n\
             tag_pattern = '^v(\\d+\\.\\d+\\.\\d+(?:-rc\\.\\d+)?)$'\n",
            alpha.url()
        ),
        ALPHA_BUILD,
    );
    farm.simple_recipe("beta", &beta, BETA_BUILD, "");

    let before = SystemTime::now();
    let log = farm.once_ok();
    let after = SystemTime::now();
    assert_eq!(log_lines(&log, "starting build").len(), 5, "{log}");
    assert_eq!(
        log_lines(&log, "build + publish complete").len(),
        4,
        "{log}"
    );
    let failed = log_lines(&log, "build failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("recipe=beta")
            && failed[0].contains("version=0.2.0-1")
            && failed[0].contains("next_retry_after=1m")
            && failed[0].contains("exited with status 3"),
        "{}",
        failed[0]
    );

    // Artifacts in pool/<name>/<name>_<version>_<arch>.tar.zst.
    for (name, version) in [
        ("alpha", "1.9.0-1"),
        ("alpha", "1.10.0-rc.1-1"),
        ("alpha", "1.10.0-1"),
        ("beta", "0.1.0-1"),
    ] {
        let p = farm
            .repo()
            .join(format!("pool/{name}/{name}_{version}_{ARCH}.tar.zst"));
        assert!(p.is_file(), "{} missing", p.display());
    }
    assert!(!farm
        .repo()
        .join(format!("pool/beta/beta_0.2.0-1_{ARCH}.tar.zst"))
        .exists());

    let archive = farm.archive();
    let active = farm.active();
    assert_eq!(archive["schema_version"], 1);
    assert_eq!(archive["kind"], "archive");
    assert_eq!(archive["repo"], "test-packages");
    assert_eq!(active["kind"], "active");
    // One publish per successful build.
    assert_eq!(archive["index_version"], 4);
    assert_eq!(active["index_version"], 4);
    parse_rfc3339(archive["generated_at"].as_str().unwrap());
    assert_eq!(
        version_set(&archive),
        set(&[
            ("alpha", "1.9.0-1"),
            ("alpha", "1.10.0-rc.1-1"),
            ("alpha", "1.10.0-1"),
            ("beta", "0.1.0-1"),
        ])
    );
    // Newest by version ordering: 1.10.0 > 1.10.0-rc.1 > 1.9.0.
    assert_eq!(
        version_set(&active),
        set(&[("alpha", "1.10.0-1"), ("beta", "0.1.0-1")])
    );
    assert_entries_match_files(&farm, &archive);
    assert_entries_match_files(&farm, &active);

    // Entry fields.
    for (version, tag, epoch) in [
        ("1.9.0-1", "v1.9.0", 1_700_000_100),
        ("1.10.0-rc.1-1", "v1.10.0-rc.1", 1_700_000_200),
        ("1.10.0-1", "v1.10.0", 1_700_000_300),
    ] {
        let e = entry(&archive, "alpha", version);
        assert_eq!(e["architecture"], ARCH);
        assert_eq!(e["description"], "The alpha tool");
        assert_eq!(e["license"], "MIT");
        assert_eq!(e["homepage"], "https://alpha.example.org");
        assert_eq!(
            e["url"],
            format!("pool/alpha/alpha_{version}_{ARCH}.tar.zst")
        );
        assert_eq!(e["build"]["timestamp"], rfc3339(epoch));
        assert_eq!(e["build"]["farm_id"], "test-farm");
        assert_eq!(e["build"]["recipe"], "alpha");
        assert_eq!(
            e["build"]["source_ref"],
            format!("git+{}#refs/tags/{tag}", alpha.url())
        );
        // The package holds what the script installed for this tag.
        let files = read_tar_zst(&farm.repo().join(e["url"].as_str().unwrap()));
        let doc = files
            .iter()
            .find(|t| t.path == "usr/share/doc/alpha/VERSION")
            .expect("VERSION packaged");
        assert_eq!(doc.data, format!("{tag}\n").as_bytes());
    }
    let b = entry(&archive, "beta", "0.1.0-1");
    assert_eq!(b["build"]["timestamp"], rfc3339(1_700_001_000));
    assert_eq!(b["license"], "");
    assert_eq!(b["build"]["recipe"], "beta");

    // No key configured: no signatures, no public key.
    let sigs: Vec<_> = walk_tree(&farm.repo())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".sig"))
        .collect();
    assert!(sigs.is_empty(), "{sigs:?}");
    assert_eq!(
        std::fs::read_dir(farm.repo().join("keys")).unwrap().count(),
        0
    );
    let meta = read_json(&farm.repo().join("repo.json"));
    assert_eq!(meta["schema_version"], 1);
    assert_eq!(meta["name"], "test-packages");
    assert_eq!(meta["farm_id"], "test-farm");

    // The failure is in the backoff book, first step of the schedule (1m).
    let state = read_json(&farm.state().join("state.json"));
    let f = &state["failures"]["beta@0.2.0-1"];
    assert_eq!(f["failures"], 1, "{state:#}");
    let next = parse_rfc3339(f["next_retry"].as_str().unwrap());
    let lo = before + Duration::from_secs(59);
    let hi = after + Duration::from_secs(61);
    assert!(
        next >= lo && next <= hi,
        "next_retry {f} not about now + 1m"
    );
    assert_eq!(state["failures"].as_object().unwrap().len(), 1, "{state:#}");

    // A second sweep builds nothing: published versions are deduplicated,
    // the failure is backing off.
    let archive_bytes = std::fs::read(farm.repo().join("index/archive.json")).unwrap();
    let log = farm.once_ok();
    assert!(log_lines(&log, "starting build").is_empty(), "{log}");
    assert_eq!(
        std::fs::read(farm.repo().join("index/archive.json")).unwrap(),
        archive_bytes,
        "a sweep that builds nothing leaves the index alone"
    );
    let state2 = read_json(&farm.state().join("state.json"));
    assert_eq!(state2["failures"], state["failures"]);

    // A new tag: exactly one build, one more index version.
    alpha.release_at("v1.11.0", 1_700_000_400);
    let log = farm.once_ok();
    let started = log_lines(&log, "starting build");
    assert_eq!(started.len(), 1, "{log}");
    assert!(started[0].contains("version=1.11.0-1"), "{}", started[0]);
    let archive = farm.archive();
    assert_eq!(archive["index_version"], 5);
    assert_eq!(farm.active()["index_version"], 5);
    assert_eq!(archive["packages"].as_array().unwrap().len(), 5);
    assert_eq!(
        version_set(&farm.active()),
        set(&[("alpha", "1.11.0-1"), ("beta", "0.1.0-1")])
    );
    assert_entries_match_files(&farm, &archive);
}

fn verify_sig(file: &Path, key: &VerifyingKey) {
    let sig_path = format!("{}.sig", file.display());
    let hex_sig = std::fs::read_to_string(&sig_path).unwrap_or_else(|e| panic!("{sig_path}: {e}"));
    let raw = hex::decode(hex_sig.trim()).expect("signature is hex");
    let sig = Signature::from_slice(&raw).expect("64-byte signature");
    let bytes = std::fs::read(file).unwrap();
    key.verify(&bytes, &sig)
        .unwrap_or_else(|e| panic!("{sig_path} does not verify: {e}"));
}

fn published_key(farm: &Farm) -> VerifyingKey {
    let text = std::fs::read_to_string(farm.repo().join("keys/test-farm.pub")).unwrap();
    let raw: [u8; 32] = hex::decode(text.trim())
        .expect("public key is hex")
        .try_into()
        .expect("32 bytes");
    VerifyingKey::from_bytes(&raw).unwrap()
}

fn signed_farm(key_file: &str) -> (Farm, Upstream) {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config(&format!("[signing]\nkey_file = \"{key_file}\"\n"));
    farm.simple_recipe(
        "hello",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/hello\"\necho hi > \"$DESTDIR/usr/share/hello/hi\"\n",
        "",
    );
    (farm, up)
}

fn assert_indexes_signed(farm: &Farm, expected: &VerifyingKey) {
    let key = published_key(farm);
    assert_eq!(key, *expected, "keys/test-farm.pub is the configured key");
    for doc in ["archive.json", "active.json"] {
        verify_sig(&farm.repo().join("index").join(doc), &key);
    }
    let mut sigs: Vec<String> = std::fs::read_dir(farm.repo().join("index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sig"))
        .collect();
    sigs.sort();
    assert_eq!(sigs, ["active.json.sig", "archive.json.sig"]);
}

#[test]
fn raw_seed_key_signs_both_indexes() {
    let (farm, up) = signed_farm("farm.ed25519");
    let seed: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    std::fs::write(farm.root.join("farm.ed25519"), seed).unwrap();
    let expected = SigningKey::from_bytes(&seed).verifying_key();

    let log = farm.once_ok();
    assert_eq!(
        log_lines(&log, "build + publish complete").len(),
        1,
        "{log}"
    );
    assert_indexes_signed(&farm, &expected);
    // Neither the key nor its path is logged.
    assert!(!log.contains(&hex::encode(seed)));

    // Signatures follow every publish.
    up.release("v1.1.0");
    farm.once_ok();
    assert_eq!(farm.archive()["index_version"], 2);
    assert_indexes_signed(&farm, &expected);
}

#[test]
fn pkcs8_pem_key_signs_both_indexes() {
    let (farm, _up) = signed_farm("farm.pem");
    let pem_path = farm.root.join("farm.pem");
    let openssl = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem_path)
        .output();
    let made_by_openssl = matches!(&openssl, Ok(o) if o.status.success());
    if !made_by_openssl {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
        let key = SigningKey::from_bytes(&[42u8; 32]);
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(&pem_path, pem.as_bytes()).unwrap();
    }
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let expected = {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        SigningKey::from_pkcs8_pem(&pem).unwrap().verifying_key()
    };
    if made_by_openssl {
        // Cross-check with openssl's own idea of the public key (the raw
        // key is the last 32 bytes of the SubjectPublicKeyInfo DER).
        let der = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&pem_path)
            .output()
            .unwrap();
        assert!(der.status.success());
        assert_eq!(&der.stdout[der.stdout.len() - 32..], expected.as_bytes());
    }

    let log = farm.once_ok();
    assert_eq!(
        log_lines(&log, "build + publish complete").len(),
        1,
        "{log}"
    );
    assert_indexes_signed(&farm, &expected);
}

/// Same tag, two separate farms: byte-identical packages, whatever the
/// build's file creation order, times and umask.
#[test]
fn same_tag_gives_identical_bytes_on_two_farms() {
    let root = tempfile::tempdir().unwrap();
    let up = Upstream::new(&root.path().join("up"));
    up.commit("src/data.txt", "payload\n", "data");
    up.release_at("v2.0.0", 1_700_123_456);
    let script = r#"#!/bin/sh
set -eu
umask "$(shuf -n1 -e 022 027 077 002)"
d="$DESTDIR/usr/share/det"
mkdir -p "$d/nested/deeper" "$DESTDIR/usr/bin" "$DESTDIR/var/empty"
for i in $(seq 1 15 | shuf); do
  echo "file $i" > "$d/f$i"
  touch -d "@$(( $(date +%s) - $(shuf -n1 -i 1-100000) ))" "$d/f$i"
done
cp "$SOURCE_DIR/src/data.txt" "$d/nested/deeper/data.txt"
printf '#!/bin/sh\necho det\n' > "$DESTDIR/usr/bin/det"
chmod 755 "$DESTDIR/usr/bin/det"
ln -s ../share/det/f1 "$DESTDIR/usr/bin/det-f1"
"#;
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let farm = Farm::new();
        farm.write_config("");
        farm.simple_recipe("det", &up, script, "");
        farm.once_ok();
        let path = farm
            .repo()
            .join(format!("pool/det/det_2.0.0-1_{ARCH}.tar.zst"));
        outputs.push((std::fs::read(&path).unwrap(), read_tar_zst(&path)));
    }
    assert!(
        outputs[0].0 == outputs[1].0,
        "packages differ between farms"
    );

    let entries = &outputs[0].1;
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e.path.trim_end_matches('/'))
        .collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    assert_eq!(paths, sorted, "entries are sorted");
    for want in [
        "usr/share/det/f1",
        "usr/share/det/f15",
        "usr/share/det/nested/deeper/data.txt",
        "usr/bin/det",
        "usr/bin/det-f1",
        "var/empty",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    for e in entries {
        assert_eq!(e.mtime, 1_700_123_456, "{} mtime", e.path);
        assert_eq!((e.uid, e.gid), (0, 0), "{} owner", e.path);
        assert!(e.uname.is_empty() && e.gname.is_empty(), "{} names", e.path);
    }
    let by_path: BTreeMap<&str, &TarEntry> = entries
        .iter()
        .map(|e| (e.path.trim_end_matches('/'), e))
        .collect();
    assert_eq!(by_path["usr/bin/det"].mode & 0o111, 0o111);
    assert_eq!(by_path["usr/share/det/f3"].mode & 0o111, 0);
    assert_eq!(by_path["usr/share/det/f3"].data, b"file 3\n");
    assert_eq!(
        by_path["usr/share/det/nested/deeper/data.txt"].data,
        b"payload\n"
    );
    assert!(by_path["usr/bin/det-f1"].kind.is_symlink());
    assert_eq!(
        by_path["usr/bin/det-f1"].link.as_deref(),
        Some("../share/det/f1")
    );
}

#[test]
fn package_stanzas_split_destdir_and_orphans_fail() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v3.1.0");
    farm.write_config("");
    let install = r#"#!/bin/sh
set -eu
mkdir -p "$DESTDIR/usr/bin" "$DESTDIR/usr/lib" "$DESTDIR/usr/share/doc/tools"
echo bin > "$DESTDIR/usr/bin/tool"
echo lib > "$DESTDIR/usr/lib/libtool.so.3"
echo readme > "$DESTDIR/usr/share/doc/tools/README"
echo license > "$DESTDIR/usr/share/doc/tools/LICENSE"
if [ "$FARMHAND_RECIPE" = stray ]; then
  mkdir -p "$DESTDIR/etc"
  echo x > "$DESTDIR/etc/stray.conf"
fi
"#;
    let stanzas = r#"
[meta]
description = "shared description"

[[package]]
name = "tools-bin"
description = "the programs"
files = ["usr/bin/*", "usr/share/doc/tools/README"]

[[package]]
name = "libtools"
files = ["usr/lib/**"]

[[package]]
name = "tools-doc"
description = "the documentation"
files = ["usr/share/**"]
"#;
    for id in ["tools", "stray"] {
        farm.recipe(
            id,
            &format!(
                "{stanzas}\n[upstream]\ngit = \"{}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n",
                up.url()
            ),
            install,
        );
    }
    let log = farm.once_ok();
    assert_eq!(
        log_lines(&log, "build + publish complete").len(),
        1,
        "{log}"
    );

    let archive = farm.archive();
    assert_eq!(
        version_set(&archive),
        set(&[
            ("libtools", "3.1.0-1"),
            ("tools-bin", "3.1.0-1"),
            ("tools-doc", "3.1.0-1"),
        ])
    );
    // One publish for the three packages of one build.
    assert_eq!(archive["index_version"], 1);
    assert_entries_match_files(&farm, &archive);
    let files = |name: &str| -> Vec<String> {
        read_tar_zst(
            &farm
                .repo()
                .join(format!("pool/{name}/{name}_3.1.0-1_{ARCH}.tar.zst")),
        )
        .into_iter()
        .filter(|e| e.kind.is_file())
        .map(|e| e.path)
        .collect()
    };
    // First stanza wins: README goes to tools-bin, not tools-doc.
    assert_eq!(
        files("tools-bin"),
        ["usr/bin/tool", "usr/share/doc/tools/README"]
    );
    assert_eq!(files("libtools"), ["usr/lib/libtool.so.3"]);
    assert_eq!(files("tools-doc"), ["usr/share/doc/tools/LICENSE"]);
    assert_eq!(
        entry(&archive, "tools-bin", "3.1.0-1")["description"],
        "the programs"
    );
    // A stanza without a description takes the recipe's.
    assert_eq!(
        entry(&archive, "libtools", "3.1.0-1")["description"],
        "shared description"
    );
    assert_eq!(
        entry(&archive, "tools-bin", "3.1.0-1")["build"]["recipe"],
        "tools"
    );

    // A DESTDIR file no stanza takes fails the build and is named.
    let failed = log_lines(&log, "build failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("recipe=stray")
            && failed[0].contains("phase=packaging")
            && failed[0].contains("etc/stray.conf"),
        "{}",
        failed[0]
    );
    assert!(!farm.repo().join("pool/stray").exists());

    // The recipe's packages are named differently from it: still not rebuilt.
    let log = farm.once_ok();
    assert!(log_lines(&log, "starting build").is_empty(), "{log}");
}

#[test]
fn build_logs_are_kept_per_attempt_and_pruned() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    for t in ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"] {
        up.release(t);
    }
    let flag = farm.root.join("fail-1.0.0");
    std::fs::write(&flag, "").unwrap();
    farm.write_config("[build]\nkeep_logs = 2\n\n[backoff]\nschedule = [\"1s\"]\n");
    farm.simple_recipe(
        "logged",
        &up,
        &format!(
            "#!/bin/sh\necho \"stdout of $FARMHAND_VERSION\"\necho \"stderr of $FARMHAND_VERSION\" >&2\n\
             if [ \"$FARMHAND_TAG\" = v1.0.0 ] && [ -e {} ]; then echo 'failing on purpose' >&2; exit 1; fi\n\
             mkdir -p \"$DESTDIR/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/x/v\"\n",
            flag.display()
        ),
        "",
    );
    let log = farm.once_ok();
    assert_eq!(
        log_lines(&log, "build + publish complete").len(),
        3,
        "{log}"
    );
    let logs = farm.state().join("logs/logged");
    let names = || -> BTreeSet<String> {
        std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // Builds ran newest first: 1.3.0, 1.2.0, 1.1.0 (kept: the last two
    // successful ones), then the failed 1.0.0.
    assert_eq!(
        names(),
        [
            "1.0.0-1.1.log.zst",
            "1.1.0-1.1.log.zst",
            "1.2.0-1.1.log.zst"
        ]
        .map(String::from)
        .into(),
    );
    let failed_log = read_build_log(&logs.join("1.0.0-1.1.log.zst"));
    assert!(failed_log.contains("stdout of 1.0.0-1"), "{failed_log}");
    assert!(failed_log.contains("stderr of 1.0.0-1"), "{failed_log}");
    assert!(failed_log.contains("failing on purpose"), "{failed_log}");
    let ok_log = read_build_log(&logs.join("1.1.0-1.1.log.zst"));
    assert!(ok_log.contains("stdout of 1.1.0-1") && ok_log.contains("stderr of 1.1.0-1"));

    // Once the 1s backoff has run out, the next sweep retries: a second
    // attempt log, and success clears the failure.
    std::fs::remove_file(&flag).unwrap();
    let state = read_json(&farm.state().join("state.json"));
    let next = parse_rfc3339(
        state["failures"]["logged@1.0.0-1"]["next_retry"]
            .as_str()
            .unwrap(),
    );
    wait_for(Duration::from_secs(5), "the backoff to run out", || {
        (SystemTime::now() > next).then_some(())
    });
    let log = farm.once_ok();
    let started = log_lines(&log, "starting build");
    assert_eq!(started.len(), 1, "{log}");
    assert!(started[0].contains("version=1.0.0-1"));
    let now = names();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains("1.0.0-1.2.log.zst"), "{now:?}");
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(state["failures"], serde_json::json!({}));
    assert_eq!(farm.archive()["packages"].as_array().unwrap().len(), 4);
}

#[test]
fn upload_command_runs_after_publish_with_repo_dir() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    up.release("v1.1.0");
    let marker = farm.root.join("uploads");
    farm.write_config(&format!(
        "[upload]\nbackend = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \
         \"echo \\\"$1 $(ls \\\"$1/pool/up\\\" | wc -l)\\\" >> {}\", \"upload\", \"{{repo_dir}}\"]\n",
        marker.display()
    ));
    farm.simple_recipe(
        "up",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/a\"\necho a > \"$DESTDIR/a/a\"\n",
        "",
    );
    farm.once_ok();
    let text = std::fs::read_to_string(&marker).expect("the upload command ran");
    let repo = farm.repo().display().to_string();
    // Once per publish, with {repo_dir} substituted, after the files landed.
    assert_eq!(text, format!("{repo} 1\n{repo} 2\n"));

    // Nothing published, nothing uploaded.
    farm.once_ok();
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 2);
}

#[test]
fn min_version_backlog_and_revision_bump_choose_what_is_built() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    for t in ["v1.4.0", "v1.5.0", "v1.6.0", "v1.7.0"] {
        up.release(t);
    }
    farm.write_config("");
    let script = "#!/bin/sh\nmkdir -p \"$DESTDIR/v\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/v/$FARMHAND_RECIPE\"\n";
    let recipe = |id: &str, extra: &str| farm.simple_recipe(id, &up, script, extra);
    recipe("floor", "min_version = \"1.5.0\"\n");
    recipe("newest", "\n[watch]\nbacklog = \"latest\"\n");
    recipe("bumped", "revision = 1\n");

    let log = farm.once_ok();
    let by_recipe = |log: &str, id: &str| -> BTreeSet<String> {
        log_lines(log, "starting build")
            .into_iter()
            .filter(|l| l.contains(&format!("recipe={id} ")))
            .map(|l| field(l, "version").unwrap())
            .collect()
    };
    assert_eq!(
        by_recipe(&log, "floor"),
        ["1.5.0-1", "1.6.0-1", "1.7.0-1"].map(String::from).into()
    );
    assert_eq!(
        by_recipe(&log, "newest"),
        ["1.7.0-1"].map(String::from).into()
    );
    assert_eq!(by_recipe(&log, "bumped").len(), 4);
    let floor_poll = log_lines(&log, "poll complete")
        .into_iter()
        .find(|l| l.contains("recipe=floor "))
        .unwrap();
    assert_eq!(
        field(floor_poll, "skipped_below_min_version").as_deref(),
        Some("1")
    );

    // Bump the revision: every published upstream version is rebuilt at the
    // new revision; a backlog = "latest" recipe still does not go back
    // through history, but builds the next release.
    recipe("bumped", "revision = 2\n");
    up.release("v1.8.0");
    let log = farm.once_ok();
    assert_eq!(
        by_recipe(&log, "bumped"),
        ["1.4.0-2", "1.5.0-2", "1.6.0-2", "1.7.0-2", "1.8.0-2"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        by_recipe(&log, "newest"),
        ["1.8.0-1"].map(String::from).into()
    );
    assert_eq!(
        by_recipe(&log, "floor"),
        ["1.8.0-1"].map(String::from).into()
    );
    let active = version_set(&farm.active());
    assert!(
        active.contains(&("bumped".into(), "1.8.0-2".into())),
        "{active:?}"
    );
    let archive = version_set(&farm.archive());
    assert!(archive.contains(&("bumped".into(), "1.4.0-1".into())));
    assert!(archive.contains(&("bumped".into(), "1.4.0-2".into())));
    assert!(!archive.iter().any(|(n, v)| n == "newest" && v == "1.4.0-1"));
}
