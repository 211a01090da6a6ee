//! The `peipkg` backend: `peipkg-build build` replaces the build script and
//! packaging, `peipkg-repo publish` replaces publishing, both with
//! peipkg-manager's exact argv. farmhand still fetches the tag itself (the
//! same shallow, cached, `.git`-free export) and still owns scheduling,
//! dedup and backoff.
//!
//! Both binaries are resolved on `PATH` once at start and pinned, so a later
//! `PATH` change cannot redirect the daemon.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::builder::Job;
use crate::config::Config;
use crate::queue::rfc3339;
use crate::recipe::Roster;

/// The resolved peipkg tools and what their argv needs.
#[derive(Debug, Clone)]
pub struct PeipkgTools {
    /// `peipkg-build`.
    pub build_bin: PathBuf,
    /// `peipkg-repo`.
    pub repo_bin: PathBuf,
    farm_id: String,
    sign_key: PathBuf,
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
                let sk = crate::repo::load_signing_key(Path::new(&k.private))
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

    /// `peipkg-repo publish --in REPO --new NEW --out REPO --sign-key K --timestamp NOW`.
    pub fn publish_argv(&self, repo_dir: &Path, new_dir: &Path) -> Vec<String> {
        let r = repo_dir.display().to_string();
        vec![
            self.repo_bin.display().to_string(),
            "publish".into(),
            "--in".into(),
            r.clone(),
            "--new".into(),
            new_dir.display().to_string(),
            "--out".into(),
            r,
            "--sign-key".into(),
            self.sign_key.display().to_string(),
            "--timestamp".into(),
            rfc3339(SystemTime::now()),
        ]
    }

    /// Runs `peipkg-repo init` when `repo_dir` has no `repo.json` yet.
    pub fn init_repo(&self, repo_dir: &Path, name: &str, description: &str) -> Result<(), String> {
        if repo_dir.join("repo.json").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(repo_dir)
            .map_err(|e| format!("cannot create {}: {e}", repo_dir.display()))?;
        let mut cmd = std::process::Command::new(&self.repo_bin);
        cmd.args(["init", "--name", name, "--sign-key"])
            .arg(&self.sign_key)
            .args(["--timestamp", &rfc3339(SystemTime::now()), "--out"])
            .arg(repo_dir);
        if !description.is_empty() {
            cmd.args(["--description", description]);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.repo_bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "peipkg-repo init failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Runs `peipkg-repo publish` on the outputs in `new_dir`.
    pub async fn publish(&self, repo_dir: &Path, new_dir: &Path) -> Result<(), String> {
        let argv = self.publish_argv(repo_dir, new_dir);
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
        if !out.status.success() {
            return Err(format!(
                "peipkg-repo publish failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
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

/// What peipkg-repo's `archive.json` says is published, by recipe: an
/// entry's `build.recipe` when present, else the recipe whose package (or
/// id) has the entry's name.
pub fn published(
    repo_dir: &Path,
    roster: &Roster,
) -> Result<HashMap<String, HashSet<String>>, String> {
    let path = repo_dir.join("index").join("archive.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut by_name: HashMap<&str, &str> = HashMap::new();
    for r in roster.recipes.values() {
        by_name.insert(r.id.as_str(), r.id.as_str());
        for p in &r.packages {
            by_name.insert(p.name.as_str(), r.id.as_str());
        }
    }
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for e in doc["packages"].as_array().into_iter().flatten() {
        let Some(version) = e["version"].as_str() else {
            continue;
        };
        let recipe = e["build"]["recipe"]
            .as_str()
            .or_else(|| e["name"].as_str().and_then(|n| by_name.get(n).copied()));
        if let Some(r) = recipe {
            out.entry(r.to_string())
                .or_default()
                .insert(version.to_string());
        }
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
