//! Copies the published repository elsewhere after each publish.
//!
//! `rclone` runs two passes so that remote readers never see an index
//! ahead of its files: first everything except the indexes, `repo.json` and
//! the keys (`rclone copy`), then everything (`rclone sync`). `command` runs
//! the operator's argv with `{repo_dir}` substituted. Both inherit the
//! daemon's environment (remote credentials live there, unlike build
//! scripts, which get a clean one).

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use tokio_util::sync::CancellationToken;

use crate::model::config::Upload;

/// How long one upload may run.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// The argv lists an upload runs, in order.
pub fn plan(upload: &Upload, repo_dir: &Path) -> Vec<Vec<String>> {
    let dir = repo_dir.display().to_string();
    match upload {
        Upload::None => Vec::new(),
        Upload::Rclone { remote } => vec![
            vec![
                "rclone".into(),
                "copy".into(),
                dir.clone(),
                remote.clone(),
                "--exclude".into(),
                "/index/**".into(),
                "--exclude".into(),
                "/repo.json*".into(),
                "--exclude".into(),
                "/keys/**".into(),
            ],
            vec!["rclone".into(), "sync".into(), dir, remote.clone()],
        ],
        Upload::Command { argv } => {
            vec![argv.iter().map(|a| a.replace("{repo_dir}", &dir)).collect()]
        }
    }
}

/// Runs the upload; the error names the command and how it failed. `kill`
/// (shutdown past its grace period) stops it at once: the command is
/// killed, and the next publish uploads everything again.
pub async fn upload(
    upload: &Upload,
    repo_dir: &Path,
    kill: &CancellationToken,
) -> Result<(), String> {
    for argv in plan(upload, repo_dir) {
        let shown = argv.join(" ");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::select! {
            out = tokio::time::timeout(UPLOAD_TIMEOUT, cmd.output()) => out
                .map_err(|_| format!("`{shown}` timed out after {}s", UPLOAD_TIMEOUT.as_secs()))?
                .map_err(|e| format!("cannot run `{shown}`: {e}"))?,
            _ = kill.cancelled() => return Err(format!("`{shown}` killed by shutdown")),
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(format!("`{shown}` failed ({}): {tail}", out.status));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rclone_uploads_files_before_indexes() {
        let p = plan(
            &Upload::Rclone {
                remote: "r2:bucket".into(),
            },
            Path::new("/s/repo"),
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0][1], "copy");
        assert!(p[0].contains(&"/index/**".to_string()));
        assert_eq!(p[1], ["rclone", "sync", "/s/repo", "r2:bucket"]);
    }

    #[tokio::test]
    async fn command_substitutes_repo_dir_and_reports_failure() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("seen");
        let ok = Upload::Command {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo \"$0\" > {}", marker.display()),
                "{repo_dir}".into(),
            ],
        };
        upload(&ok, Path::new("/x/repo"), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "/x/repo");
        let bad = Upload::Command {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo nope >&2; exit 3".into(),
            ],
        };
        let e = upload(&bad, Path::new("/x"), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(e.contains("nope") && e.contains("exit status: 3"), "{e}");
    }

    #[tokio::test]
    async fn kill_stops_a_hanging_upload_at_once() {
        let hang = Upload::Command {
            argv: vec!["/bin/sleep".into(), "600".into()],
        };
        let kill = CancellationToken::new();
        let k = kill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            k.cancel();
        });
        let started = std::time::Instant::now();
        let e = upload(&hang, Path::new("/x"), &kill).await.unwrap_err();
        assert!(e.contains("killed by shutdown"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
