//! https upstreams: the git helper verifies the server's certificate with
//! OpenSSL, whether the trusted CAs come as a hashed directory alone (what
//! farmhand hands the helper on systems with one) or as a bundle file, and
//! refuses a certificate no trusted CA signed.
//!
//! The server is `openssl s_server -HTTP` on 127.0.0.1 answering git's smart
//! HTTP ref advertisement (`info/refs?service=git-upload-pack`), which is
//! all an ls-remote reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.pem`, `<name>.key`) and a directory holding it under its
/// subject hash (`<name>-dir/<hash>.0`), as /etc/ssl/certs holds the
/// system's CAs.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-subj",
            &format!("/CN=farmhand test {name}"),
            "-days",
            "2",
        ],
    );
    let hashed = dir.join(format!("{name}-dir"));
    std::fs::create_dir_all(&hashed).unwrap();
    std::fs::copy(dir.join(format!("{name}.pem")), hashed.join("ca.pem")).unwrap();
    openssl(dir, &["rehash", hashed.to_str().unwrap()]);
    (dir.join(format!("{name}.pem")), hashed)
}

struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves the ref advertisement of the bare repository `repo` as
/// `https://127.0.0.1:<port>/up.git`, with a certificate for 127.0.0.1
/// signed by the CA `ca`.
fn serve(dir: &Path, ca: &str, repo: &Path) -> TlsServer {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    let adv = Command::new("git")
        .args(["upload-pack", "--stateless-rpc", "--advertise-refs"])
        .arg(repo)
        .output()
        .unwrap();
    assert!(adv.status.success());
    let mut body = b"001e# service=git-upload-pack\n0000".to_vec();
    body.extend_from_slice(&adv.stdout);
    let mut response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("up.git/info")).unwrap();
    // s_server -HTTP answers `GET /<path>` with the file ./<path>, which
    // holds the whole response.
    std::fs::write(
        www.join("up.git/info/refs?service=git-upload-pack"),
        response,
    )
    .unwrap();
    // Port 0: s_server binds a port the kernel picks, read back from the
    // kernel once it listens (see `listening_port`).
    let child = Command::new("openssl")
        .args(["s_server", "-HTTP", "-quiet", "-accept", "127.0.0.1:0"])
        .arg("-cert")
        .arg(dir.join("server.pem"))
        .arg("-key")
        .arg(dir.join("server.key"))
        .current_dir(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server starts");
    let mut s = TlsServer { child, port: 0 };
    s.port = listening_port(&mut s.child, "s_server");
    s
}

#[test]
fn https_upstream_certificates_are_verified() {
    let farm = Farm::new();
    let pki = farm.root.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let (ca_file, ca_dir) = make_ca(&pki, "ca");
    let (_, other_dir) = make_ca(&pki, "other");

    let up = Upstream::new(&farm.root.join("src"));
    up.release("v1.0.0");
    up.release("v1.1.0");
    let bare = farm.root.join("up.git");
    git(
        &farm.root,
        &["clone", "-q", "--bare", &up.url(), bare.to_str().unwrap()],
    );
    let server = serve(&pki, "ca", &bare);
    farm.write_config("");
    // Polled only: the tags match no version, so nothing is fetched.
    farm.recipe(
        "tls",
        &format!(
            "[upstream]\ngit = \"https://127.0.0.1:{}/up.git\"\ntag_pattern = '^release-(.*)$'\n",
            server.port
        ),
        "#!/bin/sh\n",
    );

    let poll = |env: &[(&str, &str)]| {
        let out = farm.run_env(&["--once"], env);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{log}");
        log
    };
    let dev_null = "/dev/null";

    // The hashed directory alone (an empty bundle file), as farmhand hands
    // it to the helper on a system whose CAs live in /etc/ssl/certs.
    let log = poll(&[
        ("SSL_CERT_FILE", dev_null),
        ("SSL_CERT_DIR", ca_dir.to_str().unwrap()),
    ]);
    let line = log
        .lines()
        .find(|l| l.contains("msg=\"poll complete\""))
        .unwrap_or_else(|| panic!("no poll complete in:\n{log}"));
    assert_eq!(field(line, "tags_seen").as_deref(), Some("2"), "{line}");

    // A bundle file, as an operator may configure.
    let log = poll(&[("SSL_CERT_FILE", ca_file.to_str().unwrap())]);
    assert!(log.contains("tags_seen=2"), "{log}");

    // A certificate from a CA nobody trusts is refused and the poll fails.
    let log = poll(&[
        ("SSL_CERT_FILE", dev_null),
        ("SSL_CERT_DIR", other_dir.to_str().unwrap()),
    ]);
    let line = log
        .lines()
        .find(|l| l.contains("msg=\"ls-remote failed\""))
        .unwrap_or_else(|| panic!("no ls-remote failure in:\n{log}"));
    assert!(line.contains("certificate"), "{line}");
    assert!(
        line.contains(&format!("https://127.0.0.1:{}/up.git", server.port)),
        "{line}"
    );
    assert!(!log.contains("msg=\"poll complete\""), "{log}");
}
