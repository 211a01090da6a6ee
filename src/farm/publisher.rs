//! After a successful build: publish its packages into the repository (or
//! through `peipkg-repo`) and upload the repository (the worker then
//! records the build and prunes the recipe's old logs). The worker lends the repository to [`Publisher::run`] and gets it
//! back with the outcome, so there is never a second writer.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::build::package::Artifact;
use crate::build::runner::{self, BuildSettings, Built, Failure, Progress};
use crate::model::build::{Job, Phase};
use crate::model::config::{Config, Upload};
use crate::model::time::rfc3339;
use crate::publish::peipkg;
use crate::publish::repo::{BuildInfo, NewPackage, Repo};
use crate::publish::upload;

/// What a publish put into the repository.
#[derive(Debug, Clone)]
pub struct Published {
    /// How many packages.
    pub outputs: usize,
    /// The build timestamp (the tag's commit time), RFC 3339.
    pub timestamp: String,
}

/// Publishes and uploads after each successful build.
#[derive(Debug, Clone)]
pub struct Publisher {
    farm_id: String,
    repo_dir: PathBuf,
    upload: Upload,
    settings: BuildSettings,
}

impl Publisher {
    /// A publisher for the farm `cfg` describes.
    pub fn new(cfg: &Config, settings: BuildSettings) -> Publisher {
        Publisher {
            farm_id: cfg.manager.id.clone(),
            repo_dir: cfg.repo_dir(),
            upload: cfg.upload.clone(),
            settings,
        }
    }

    /// Publishes `built` into `repo` (builtin backend) or through
    /// peipkg-repo, then uploads. The repository comes back with the outcome. An
    /// upload failure is logged, not a build failure: the packages are
    /// published, and the next upload carries them.
    pub async fn run(
        &self,
        job: &Job,
        built: Built,
        repo: Option<Repo>,
        progress: &dyn Progress,
        kill: &CancellationToken,
    ) -> (Option<Repo>, Result<Published, Failure>) {
        progress.phase(Phase::Publishing);
        let timestamp =
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(built.commit_time.max(0) as u64));
        let stage = built.stage_dir.clone();
        let (repo, published) = match (repo, &self.settings.peipkg) {
            (_, Some(tools)) => {
                let n = built.peipkg_outputs.len();
                let r = peipkg::publish(tools, &self.repo_dir, &stage.join("out"), kill).await;
                (None, r.map(|()| n))
            }
            (Some(repo), None) => {
                let packages = self.new_packages(job, &built.artifacts, &timestamp);
                publish_blocking(repo, packages).await
            }
            (None, None) => (None, Err("no repository is open".to_string())),
        };
        runner::remove_tree(stage).await;
        let outputs = match published {
            Ok(n) => n,
            Err(error) => {
                return (
                    repo,
                    Err(Failure {
                        phase: Phase::Publishing,
                        error,
                        cancelled: false,
                    }),
                )
            }
        };
        if self.upload != Upload::None {
            progress.phase(Phase::Uploading);
            if let Err(e) = upload::upload(&self.upload, &self.repo_dir, kill).await {
                error!(recipe = %job.recipe.id, version = %job.version, err = %e, "upload failed");
            }
        }
        (repo, Ok(Published { outputs, timestamp }))
    }

    fn new_packages(&self, job: &Job, artifacts: &[Artifact], timestamp: &str) -> Vec<NewPackage> {
        artifacts
            .iter()
            .map(|a| NewPackage {
                artifact: with_description(a, &job.recipe.description),
                license: job.recipe.license.clone(),
                homepage: job.recipe.homepage.clone(),
                build: BuildInfo {
                    timestamp: timestamp.to_string(),
                    farm_id: self.farm_id.clone(),
                    recipe: job.recipe.id.clone(),
                    source_ref: job.source_ref(),
                },
            })
            .collect()
    }
}

/// Runs [`Repo::publish`] on a blocking thread. A panic inside it becomes
/// a publish error with the panic's message, and the repository is opened
/// again from its files (the copy in memory may be half-updated; the files
/// never are), so the worker keeps its repository either way.
async fn publish_blocking(
    repo: Repo,
    packages: Vec<NewPackage>,
) -> (Option<Repo>, Result<usize, String>) {
    let n = packages.len();
    let task = tokio::task::spawn_blocking(move || {
        let mut repo = repo;
        match std::panic::catch_unwind(AssertUnwindSafe(|| repo.publish(packages))) {
            Ok(r) => (repo, r.map(|()| n).map_err(|e| e.to_string())),
            Err(panic) => {
                let msg = panic_message(panic.as_ref());
                let repo = match repo.reopen() {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        error!(err = %e, "repository cannot be reopened after a failed publish; keeping the copy in memory");
                        repo
                    }
                };
                (repo, Err(format!("publish panicked: {msg}")))
            }
        }
    });
    match task.await {
        Ok((repo, r)) => (Some(repo), r),
        Err(e) => (None, Err(format!("publish task failed: {e}"))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The artifact, described by the recipe's `[meta].description` when its
/// package stanza has no description of its own (or there is no stanza).
fn with_description(a: &Artifact, recipe_description: &str) -> Artifact {
    let mut a = a.clone();
    if a.description.is_empty() {
        a.description = recipe_description.to_string();
    }
    a
}
