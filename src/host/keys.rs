//! The farm's key and secret files: the Ed25519 signing key, and the
//! shared secrets of webhooks and notifications.

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
