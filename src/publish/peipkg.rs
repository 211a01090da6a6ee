//! The `peipkg` backend's publishing side: `peipkg-repo init` and
//! `peipkg-repo publish` with peipkg-manager's exact argv, and the dedup
//! set read from peipkg-repo's `archive.json`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::build::peipkg::PeipkgTools;
use crate::model::recipe::Roster;
use crate::model::time::rfc3339;

/// `peipkg-repo publish --in REPO --new NEW --out REPO --sign-key K --timestamp NOW`.
pub fn publish_argv(tools: &PeipkgTools, repo_dir: &Path, new_dir: &Path) -> Vec<String> {
    let r = repo_dir.display().to_string();
    vec![
        tools.repo_bin.display().to_string(),
        "publish".into(),
        "--in".into(),
        r.clone(),
        "--new".into(),
        new_dir.display().to_string(),
        "--out".into(),
        r,
        "--sign-key".into(),
        tools.sign_key.display().to_string(),
        "--timestamp".into(),
        rfc3339(SystemTime::now()),
    ]
}

/// Runs `peipkg-repo init` when `repo_dir` has no `repo.json` yet.
pub fn init_repo(
    tools: &PeipkgTools,
    repo_dir: &Path,
    name: &str,
    description: &str,
) -> Result<(), String> {
    if repo_dir.join("repo.json").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(repo_dir)
        .map_err(|e| format!("cannot create {}: {e}", repo_dir.display()))?;
    let mut cmd = std::process::Command::new(&tools.repo_bin);
    cmd.args(["init", "--name", name, "--sign-key"])
        .arg(&tools.sign_key)
        .args(["--timestamp", &rfc3339(SystemTime::now()), "--out"])
        .arg(repo_dir);
    if !description.is_empty() {
        cmd.args(["--description", description]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tools.repo_bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "peipkg-repo init failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs `peipkg-repo publish` on the outputs in `new_dir`. `kill`
/// (shutdown past its grace period) kills it; peipkg-repo replaces its
/// index files atomically, so a killed publish leaves the previous index.
pub async fn publish(
    tools: &PeipkgTools,
    repo_dir: &Path,
    new_dir: &Path,
    kill: &CancellationToken,
) -> Result<(), String> {
    let argv = publish_argv(tools, repo_dir, new_dir);
    let run = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::select! {
        out = run => out.map_err(|e| format!("cannot run {}: {e}", argv[0]))?,
        _ = kill.cancelled() => return Err("peipkg-repo publish killed by shutdown".into()),
    };
    if !out.status.success() {
        return Err(format!(
            "peipkg-repo publish failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
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
