//! The farm's key and secret files: the Ed25519 signing key, the control
//! API's bearer token, and the shared secrets of webhooks and notifications.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;

/// Why the key file is unusable. Names the file, never the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a key farmhand can use.
    #[error("{}: signing key: {problem}", path.display())]
    Bad {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The file is not a control token farmhand accepts.
    #[error("{}: control token (http.control_token_file): {problem}", path.display())]
    BadToken {
        /// The token file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The shortest control token accepted, in characters.
pub const MIN_TOKEN_LEN: usize = 32;

/// Reads the control API's bearer token: the file's text with trailing
/// whitespace trimmed, at least [`MIN_TOKEN_LEN`] printable ASCII
/// characters without spaces, in a file nobody but its owner and group can
/// read (mode 0640 or narrower). Errors name the file and what to do,
/// never the token.
pub fn read_control_token(path: &Path) -> Result<String, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |problem: String| KeyError::BadToken {
        path: path.to_path_buf(),
        problem,
    };
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o7777;
    if mode & !0o640 != 0 {
        return Err(bad(format!(
            "the file's mode {mode:04o} lets others read or change it; make it 0600 or 0640 (chmod 600 {})",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let token = bytes.trim_ascii_end();
    if token.len() < MIN_TOKEN_LEN {
        return Err(bad(format!(
            "{} characters, fewer than the {MIN_TOKEN_LEN} required (make one with: head -c 32 /dev/urandom | base64 > {})",
            token.len(),
            path.display()
        )));
    }
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(bad(
            "holds characters other than printable ASCII without spaces (it travels in an HTTP header)".to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(token).into_owned())
}

/// Reads an Ed25519 signing key: a file of exactly 32 raw bytes (the seed),
/// or a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Errors name the file and
/// the problem, never the key material.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let key_err = |problem: String| KeyError::Bad {
        path: path.to_path_buf(),
        problem,
    };
    if bytes.len() == 32 {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        return Ok(SigningKey::from_bytes(&seed));
    }
    let text = std::str::from_utf8(&bytes).ok().map(str::trim_start);
    match text {
        Some(t) if t.starts_with("-----BEGIN PRIVATE KEY-----") => SigningKey::from_pkcs8_pem(t)
            .map_err(|e| key_err(format!("not a valid PKCS#8 Ed25519 private key: {e}"))),
        Some(t) if t.starts_with("-----BEGIN") => Err(key_err(
            "unsupported PEM type (expected `-----BEGIN PRIVATE KEY-----`, PKCS#8 Ed25519)"
                .to_string(),
        )),
        _ => Err(key_err(format!(
            "expected 32 raw bytes (Ed25519 seed) or a PKCS#8 PEM private key, found {} bytes",
            bytes.len()
        ))),
    }
}

/// Reads a secret file (the webhook secret, a notification secret):
/// its text with trailing whitespace (the final newline) trimmed. An
/// unreadable or empty file is an error naming the file and `what` (an
/// empty one also says `why` that matters), never its content.
pub fn read_secret(path: &Path, what: &str, why: &str) -> Result<Arc<[u8]>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{}: cannot read {what}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim_end();
    if trimmed.is_empty() {
        return Err(format!("{}: {what} file is empty; {why}", path.display()));
    }
    Ok(Arc::from(trimmed.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("control-token");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn control_tokens_are_long_private_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let good = "0123456789abcdef0123456789abcdef";
        for mode in [0o600, 0o640, 0o400] {
            let p = token_file(dir.path(), &format!("{good} \n\n"), mode);
            assert_eq!(read_control_token(&p).unwrap(), good, "{mode:o}");
        }
        for (text, mode, want) in [
            (good, 0o644, "mode 0644"),
            (good, 0o660, "mode 0660"),
            (good, 0o604, "chmod 600"),
            ("short\n", 0o600, "5 characters, fewer than the 32"),
            (
                "0123456789abcdef 0123456789abcdef",
                0o600,
                "printable ASCII",
            ),
        ] {
            let p = token_file(dir.path(), text, mode);
            let e = read_control_token(&p).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{}: control token", p.display())),
                "{e}"
            );
            assert!(e.contains(want), "{e}");
            assert!(!e.contains(good), "the token is never shown: {e}");
        }
        let e = read_control_token(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
