//! The `peipkg` backend: `peipkg-build build` replaces the build script and
//! packaging, `peipkg-repo publish` replaces publishing, both with
//! peipkg-manager's exact argv. farmhand still fetches the tag itself (the
//! same shallow, cached, `.git`-free export) and still owns scheduling,
//! dedup and backoff.
//!
//! This is the build side; `publish::peipkg` runs `peipkg-repo`.
//!
//! Both binaries are resolved on `PATH` once at start and pinned, so a later
//! `PATH` change cannot redirect the daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::model::build::Job;
use crate::model::config::Config;
use crate::model::time::rfc3339;

/// The resolved peipkg tools and what their argv needs.
#[derive(Debug, Clone)]
pub struct PeipkgTools {
    /// `peipkg-build`.
    pub build_bin: PathBuf,
    /// `peipkg-repo`.
    pub repo_bin: PathBuf,
    farm_id: String,
    /// The farm's signing key (`[signing].key_file`).
    pub sign_key: PathBuf,
    /// name → (private key path, pubkey env var, pubkey hex)
    keys: HashMap<String, (String, String, String)>,
    /// recipe → (inject_pubkey names, sign names)
    grants: HashMap<String, (Vec<String>, Vec<String>)>,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl PeipkgTools {
    /// Resolves the binaries on `PATH` and the `[[signing_key]]` public keys.
    pub fn resolve(cfg: &Config) -> Result<PeipkgTools, String> {
        let build_bin = which("peipkg-build")
            .ok_or("peipkg-build not found on PATH (needed by build.backend = \"peipkg\")")?;
        let repo_bin = which("peipkg-repo")
            .ok_or("peipkg-repo not found on PATH (needed by build.backend = \"peipkg\")")?;
        let sign_key = cfg
            .signing_key_file
            .clone()
            .ok_or("signing.key_file is required by build.backend = \"peipkg\"")?;
        let mut keys = HashMap::new();
        for k in &cfg.signing_keys {
            let hex = if k.pubkey_env.is_empty() {
                String::new()
            } else {
                let sk = crate::host::keys::load_signing_key(Path::new(&k.private))
                    .map_err(|e| format!("signing_key {:?}: {e}", k.name))?;
                hex::encode(sk.verifying_key().as_bytes())
            };
            keys.insert(
                k.name.clone(),
                (k.private.clone(), k.pubkey_env.clone(), hex),
            );
        }
        let grants = cfg
            .grants
            .iter()
            .map(|g| (g.recipe.clone(), (g.inject_pubkey.clone(), g.sign.clone())))
            .collect();
        Ok(PeipkgTools {
            build_bin,
            repo_bin,
            farm_id: cfg.manager.id.clone(),
            sign_key,
            keys,
            grants,
        })
    }

    /// `peipkg-build build --recipe R --source S --version V --source-ref REF
    /// --farm-id F --timestamp T --out O --sign-key K [--build-env E=HEX]...
    /// [--binary-sign-key NAME=PATH]...`
    pub fn build_argv(
        &self,
        job: &Job,
        source: &Path,
        out: &Path,
        commit_time: i64,
    ) -> Vec<String> {
        let ts = rfc3339(UNIX_EPOCH + Duration::from_secs(commit_time.max(0) as u64));
        let mut argv: Vec<String> = vec![
            self.build_bin.display().to_string(),
            "build".into(),
            "--recipe".into(),
            job.recipe.path.display().to_string(),
            "--source".into(),
            source.display().to_string(),
            "--version".into(),
            job.version.clone(),
            "--source-ref".into(),
            job.source_ref(),
            "--farm-id".into(),
            self.farm_id.clone(),
            "--timestamp".into(),
            ts,
            "--out".into(),
            out.display().to_string(),
            "--sign-key".into(),
            self.sign_key.display().to_string(),
        ];
        if let Some((inject, sign)) = self.grants.get(&job.recipe.id) {
            for name in inject {
                if let Some((_, env, hex)) = self.keys.get(name) {
                    argv.push("--build-env".into());
                    argv.push(format!("{env}={hex}"));
                }
            }
            for name in sign {
                if let Some((private, _, _)) = self.keys.get(name) {
                    argv.push("--binary-sign-key".into());
                    argv.push(format!("{name}={private}"));
                }
            }
        }
        argv
    }
}

/// The `.peipkg` files in a stage directory; none is an error.
pub fn collect_outputs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "peipkg"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!(
            "peipkg-build succeeded but produced no .peipkg files in {}",
            dir.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_need_at_least_one_peipkg() {
        let d = tempfile::tempdir().unwrap();
        assert!(collect_outputs(d.path()).is_err());
        std::fs::write(d.path().join("a_1.0-1_x86_64.peipkg"), b"x").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(collect_outputs(d.path()).unwrap().len(), 1);
    }
}
