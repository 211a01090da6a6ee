//! Repository state: the index held in memory, atomic publish, signing.
//!
//! Layout (under `state_dir/repo`):
//!
//! ```text
//! repo.json                 {"schema_version":1,"name","description","farm_id","created_at"}
//! pool/<name>/<name>_<version>_<arch>.tar.zst
//! index/archive.json        every artifact ever published
//! index/active.json         newest version of each (name, architecture)
//! index/*.json.sig          detached Ed25519 signature, hex (when a key is configured)
//! keys/<farm_id>.pub        the public key, hex
//! ```
//!
//! Artifacts reach their final name in `pool/` only through the rename of a
//! fully written, fsynced file; the indexes are replaced atomically after
//! that, `archive.json` first. [`Repo::open`] re-derives `active.json` and
//! the signatures from `archive.json` when they disagree, so a crash between
//! two renames heals itself.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::build::package::Artifact;
use crate::host::fs::{rename_durable, sync_dir, write_atomic, write_atomic_then};
use crate::model::name::is_safe_component;
use crate::model::version::Version;

/// Prefix of the temporary files `write_atomic` and `publish` create.
const TMP_PREFIX: &str = ".tmp-";

/// Where and what the repository is.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// The repository root (`state_dir/repo`).
    pub dir: PathBuf,
    /// Repository name (`[repo].name`).
    pub name: String,
    /// Repository description (`[repo].description`).
    pub description: String,
    /// The farm id (`[manager].id`); names the public key file.
    pub farm_id: String,
}

/// Why a repository operation failed. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// An I/O error on a file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A JSON file that does not parse (the serde error carries line and
    /// column).
    #[error("{}: malformed JSON: {source}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON file that parses but holds something invalid.
    #[error("{}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An archive entry whose pool file is missing or has the wrong size.
    #[error("{}: entry {url}: {problem} ({})", index.display(), file.display())]
    BrokenEntry {
        /// The index file holding the entry.
        index: PathBuf,
        /// The entry's url.
        url: String,
        /// The pool file it points to.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// `index/archive.json` is missing from a repository that has
    /// published: the daemon stops rather than start a new archive.
    #[error("{}: missing, but the repository has published ({evidence}); restore it from a backup, or move the repository aside to start a new one", path.display())]
    ArchiveMissing {
        /// The archive's path.
        path: PathBuf,
        /// What shows the repository has published.
        evidence: String,
    },
    /// The signing key file is unusable.
    #[error("{}: signing key: {problem}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never the key material).
        problem: String,
    },
    /// A name that would be used as a path component is unsafe.
    #[error("{}: {what} `{value}` is not a safe file name component", dir.display())]
    UnsafeName {
        /// The directory the name would be joined to.
        dir: PathBuf,
        /// Which field.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// An artifact handed to `publish` is inconsistent.
    #[error("{}: artifact {file_name}: {problem}", path.display())]
    BadArtifact {
        /// The artifact's path.
        path: PathBuf,
        /// Its file name.
        file_name: String,
        /// What is wrong.
        problem: String,
    },
    /// A file name already published with different content.
    #[error("{}: already published with sha256 {existing}, refusing to replace it with {new}", path.display())]
    HashConflict {
        /// The pool file.
        path: PathBuf,
        /// The published hash.
        existing: String,
        /// The new artifact's hash.
        new: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a build contributes for one package.
#[derive(Debug, Clone)]
pub struct NewPackage {
    /// The package file and its facts.
    pub artifact: Artifact,
    /// License from the recipe (may be empty).
    pub license: String,
    /// Homepage from the recipe (may be empty).
    pub homepage: String,
    /// Provenance.
    pub build: BuildInfo,
}

/// Provenance of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildInfo {
    /// Build timestamp, RFC 3339 UTC with `Z`.
    pub timestamp: String,
    /// The farm that built it.
    pub farm_id: String,
    /// The recipe id that built it.
    pub recipe: String,
    /// `git+<url>#refs/tags/<tag>`.
    pub source_ref: String,
}

/// Content hash of a package file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hash {
    /// Always `"sha256"`.
    pub algorithm: String,
    /// Lowercase hex digest.
    pub value: String,
}

/// One package in an index document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// Description.
    pub description: String,
    /// License.
    pub license: String,
    /// Homepage.
    pub homepage: String,
    /// Size of the package file.
    pub size_compressed: u64,
    /// Sum of the sizes of its regular files.
    pub size_installed: u64,
    /// Hash of the package file.
    pub hash: Hash,
    /// `pool/<name>/<file_name>`, relative to the repository root.
    pub url: String,
    /// Provenance.
    pub build: BuildInfo,
}

/// An index document (`archive.json` or `active.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexDocument {
    schema_version: u32,
    repo: String,
    kind: String,
    index_version: u64,
    generated_at: String,
    packages: Vec<IndexEntry>,
}

/// An index document to write, borrowing its packages.
#[derive(Serialize)]
struct IndexDocumentRef<'a> {
    schema_version: u32,
    repo: &'a str,
    kind: &'a str,
    index_version: u64,
    generated_at: String,
    packages: &'a [IndexEntry],
}

/// `repo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RepoMeta {
    schema_version: u32,
    name: String,
    description: String,
    farm_id: String,
    created_at: String,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Version ordering for entries: parsable versions by `crate::model::version`,
/// unparsable ones below them; ties broken bytewise so the order is total
/// and deterministic.
fn cmp_versions(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => Ordering::Equal,
    }
    .then_with(|| a.cmp(b))
}

/// Sort key equivalent to [`cmp_entries`], for sorting with each version
/// parsed once.
fn entry_key(e: &IndexEntry) -> (String, String, Option<Version>, String) {
    (
        e.name.clone(),
        e.architecture.clone(),
        Version::parse(&e.version).ok(),
        e.version.clone(),
    )
}

fn cmp_entries(a: &IndexEntry, b: &IndexEntry) -> Ordering {
    a.name
        .cmp(&b.name)
        .then_with(|| a.architecture.cmp(&b.architecture))
        .then_with(|| cmp_versions(&a.version, &b.version))
}

/// The repository: its index in memory and the writer of its files.
#[derive(Debug)]
pub struct Repo {
    cfg: RepoConfig,
    signer: Option<SigningKey>,
    index_version: u64,
    /// Sorted by (name, architecture, version).
    archive: Vec<IndexEntry>,
    active_count: usize,
    /// url → sha256 of every archive entry.
    by_url: HashMap<String, String>,
}

impl Repo {
    fn index_dir(&self) -> PathBuf {
        self.cfg.dir.join("index")
    }

    fn archive_path(&self) -> PathBuf {
        self.index_dir().join("archive.json")
    }

    fn active_path(&self) -> PathBuf {
        self.index_dir().join("active.json")
    }

    /// Creates the layout if missing (`repo.json` written once), loads
    /// `index/archive.json` into memory, writes `keys/<farm_id>.pub` when a
    /// signer is given, and heals: `active.json` and the signatures are
    /// re-derived and rewritten when missing, different from what
    /// `archive.json` derives, or stale; leftover temporary files in `pool/`
    /// and `index/` are removed. A malformed `archive.json`, or an archive
    /// entry whose file is missing or has the wrong size, is an error naming
    /// it.
    pub fn open(cfg: RepoConfig, signer: Option<SigningKey>) -> Result<Repo, RepoError> {
        if !is_safe_component(&cfg.farm_id) {
            return Err(RepoError::UnsafeName {
                dir: cfg.dir.join("keys"),
                what: "farm id",
                value: cfg.farm_id.clone(),
            });
        }
        create_dir_durable(&cfg.dir)?;
        for sub in ["pool", "index", "keys"] {
            create_dir_durable(&cfg.dir.join(sub))?;
        }
        remove_temp_files(&cfg.dir.join("index"))?;
        remove_temp_files(&cfg.dir.join("pool"))?;
        let pool = cfg.dir.join("pool");
        for ent in fs::read_dir(&pool).map_err(io_err(&pool))? {
            let ent = ent.map_err(io_err(&pool))?;
            let ft = ent.file_type().map_err(io_err(&ent.path()))?;
            if ft.is_dir() {
                remove_temp_files(&ent.path())?;
            }
        }

        let meta_path = cfg.dir.join("repo.json");
        match fs::read(&meta_path) {
            Ok(bytes) => {
                let meta: RepoMeta =
                    serde_json::from_slice(&bytes).map_err(|source| RepoError::Malformed {
                        path: meta_path.clone(),
                        source,
                    })?;
                if meta.schema_version != 1 {
                    return Err(RepoError::Invalid {
                        path: meta_path,
                        problem: format!("unsupported schema_version {}", meta.schema_version),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let meta = RepoMeta {
                    schema_version: 1,
                    name: cfg.name.clone(),
                    description: cfg.description.clone(),
                    farm_id: cfg.farm_id.clone(),
                    created_at: now_rfc3339(),
                };
                write_atomic(&meta_path, &to_json(&meta)).map_err(io_err(&meta_path))?;
            }
            Err(e) => return Err(io_err(&meta_path)(e)),
        }

        if let Some(key) = &signer {
            let pub_path = cfg.dir.join("keys").join(format!("{}.pub", cfg.farm_id));
            let want = format!("{}\n", hex::encode(key.verifying_key().to_bytes()));
            let have = fs::read(&pub_path).ok();
            if have.as_deref() != Some(want.as_bytes()) {
                write_atomic(&pub_path, want.as_bytes()).map_err(io_err(&pub_path))?;
            }
        }

        let mut repo = Repo {
            cfg,
            signer,
            index_version: 0,
            archive: Vec::new(),
            active_count: 0,
            by_url: HashMap::new(),
        };

        // The archive: the source of truth.
        let archive_path = repo.archive_path();
        let archive_bytes = match fs::read(&archive_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&archive_path)(e)),
        };
        let archive_bytes = match archive_bytes {
            Some(bytes) => {
                let doc = parse_index(&archive_path, &bytes, "archive")?;
                repo.check_entries(&archive_path, &doc.packages)?;
                repo.index_version = doc.index_version;
                let mut packages = doc.packages;
                packages.sort_by_cached_key(entry_key);
                for e in &packages {
                    repo.remember(e);
                }
                repo.archive = packages;
                bytes
            }
            None => {
                // A new repository is started only in an empty repo/: an
                // archive that vanished from under a published repository
                // must never be silently replaced by an empty one (every
                // tag would be built again and the index history lost).
                if let Some(evidence) = published_evidence(&repo.cfg.dir)? {
                    return Err(RepoError::ArchiveMissing {
                        path: archive_path,
                        evidence,
                    });
                }
                // Fresh repository: an empty, valid archive at index_version 0.
                let bytes = repo.render("archive", repo.index_version, &repo.archive);
                write_atomic(&archive_path, &bytes).map_err(io_err(&archive_path))?;
                bytes
            }
        };
        repo.heal_signature(&archive_path, &archive_bytes)?;

        // The active set: re-derived when missing or different.
        let derived = Repo::derive_active(&repo.archive);
        let active_path = repo.active_path();
        let current = match fs::read(&active_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&active_path)(e)),
        };
        let active_bytes = match current {
            Some(bytes)
                if parse_index(&active_path, &bytes, "active").is_ok_and(|doc| {
                    doc.index_version == repo.index_version
                        && doc.repo == repo.cfg.name
                        && doc.packages == derived
                }) =>
            {
                bytes
            }
            _ => {
                let bytes = repo.render("active", repo.index_version, &derived);
                write_atomic(&active_path, &bytes).map_err(io_err(&active_path))?;
                bytes
            }
        };
        repo.heal_signature(&active_path, &active_bytes)?;
        repo.active_count = derived.len();
        Ok(repo)
    }

    /// Opens this repository again from its files, as [`Repo::open`] does:
    /// after a publish that did not finish (a panic), the files on disk are
    /// the truth and the copy in memory is not trusted.
    pub fn reopen(&self) -> Result<Repo, RepoError> {
        Repo::open(self.cfg.clone(), self.signer.clone())
    }

    /// Moves each artifact into `pool/<name>/<file_name>` (durable rename;
    /// copied through a temporary file when the stage is on another
    /// filesystem), then replaces `index/archive.json`, its signature,
    /// `index/active.json` and its signature, each atomically, archive first.
    /// Both documents carry the new `index_version` (one more than before).
    ///
    /// Re-publishing an identical file name with an identical sha256 is
    /// allowed and changes nothing; a publish that adds nothing new leaves
    /// the index (and `index_version`) untouched. A different sha256 under a
    /// published file name is an error.
    ///
    /// On an error before `archive.json` is replaced, the in-memory state is
    /// unchanged. Once `archive.json` is replaced the publish is committed:
    /// the in-memory state follows it even if writing `active.json` or a
    /// signature then fails (the error is still returned, and the next
    /// publish or open rewrites them).
    pub fn publish(&mut self, packages: Vec<NewPackage>) -> Result<(), RepoError> {
        let pool = self.cfg.dir.join("pool");
        // Validate everything before touching the filesystem.
        let mut new_entries: Vec<(IndexEntry, PathBuf, PathBuf)> = Vec::new();
        let mut batch_urls = HashSet::new();
        for p in packages {
            let a = &p.artifact;
            for (what, value) in [
                ("package name", &a.name),
                ("version", &a.version),
                ("architecture", &a.architecture),
            ] {
                if !is_safe_component(value) {
                    return Err(RepoError::UnsafeName {
                        dir: pool.clone(),
                        what,
                        value: value.clone(),
                    });
                }
            }
            let bad = |problem: String| RepoError::BadArtifact {
                path: a.path.clone(),
                file_name: a.file_name.clone(),
                problem,
            };
            let expected = format!("{}_{}_{}.tar.zst", a.name, a.version, a.architecture);
            if a.file_name != expected {
                return Err(bad(format!("file name should be {expected}")));
            }
            let url = format!("pool/{}/{}", a.name, a.file_name);
            let dest = pool.join(&a.name).join(&a.file_name);
            if let Some(existing) = self.by_url.get(&url) {
                if *existing == a.sha256 {
                    continue; // idempotent
                }
                return Err(RepoError::HashConflict {
                    path: dest,
                    existing: existing.clone(),
                    new: a.sha256.clone(),
                });
            }
            if !batch_urls.insert(url.clone()) {
                return Err(bad("appears twice in one publish".to_string()));
            }
            let len = fs::metadata(&a.path).map_err(io_err(&a.path))?.len();
            if len != a.size_compressed {
                return Err(bad(format!(
                    "file is {len} bytes, artifact says {}",
                    a.size_compressed
                )));
            }
            let entry = IndexEntry {
                name: a.name.clone(),
                version: a.version.clone(),
                architecture: a.architecture.clone(),
                description: a.description.clone(),
                license: p.license.clone(),
                homepage: p.homepage.clone(),
                size_compressed: a.size_compressed,
                size_installed: a.size_installed,
                hash: Hash {
                    algorithm: "sha256".to_string(),
                    value: a.sha256.clone(),
                },
                url,
                build: p.build.clone(),
            };
            new_entries.push((entry, a.path.clone(), dest));
        }
        if new_entries.is_empty() {
            return Ok(());
        }

        // Files first: each lands under its final name fully written.
        for (_, from, to) in &new_entries {
            if let Some(dir) = to.parent() {
                create_dir_durable(dir)?;
            }
            fault_pause("move", to);
            move_into_pool(from, to)?;
            fault_pause("moved", to);
        }

        // Then the archive: the commit point.
        let archive_path = self.archive_path();
        let index_version =
            self.index_version
                .checked_add(1)
                .ok_or_else(|| RepoError::Invalid {
                    path: archive_path.clone(),
                    problem: "index_version overflow".to_string(),
                })?;
        let new_entries: Vec<IndexEntry> = new_entries.into_iter().map(|(e, _, _)| e).collect();
        let mut archive = self.archive.clone();
        for e in &new_entries {
            let pos = archive.partition_point(|x| cmp_entries(x, e) == Ordering::Less);
            archive.insert(pos, e.clone());
        }
        let archive_bytes = self.render("archive", index_version, &archive);
        write_index(&archive_path, &archive_bytes).map_err(io_err(&archive_path))?;

        self.index_version = index_version;
        self.archive = archive;
        for e in &new_entries {
            self.remember(e);
        }
        let derived = Repo::derive_active(&self.archive);
        self.active_count = derived.len();

        self.write_signature(&archive_path, &archive_bytes)?;
        let active_path = self.active_path();
        let active_bytes = self.render("active", index_version, &derived);
        write_index(&active_path, &active_bytes).map_err(io_err(&active_path))?;
        self.write_signature(&active_path, &active_bytes)?;
        Ok(())
    }

    /// The index version of the current documents (0 before any publish).
    pub fn index_version(&self) -> u64 {
        self.index_version
    }

    /// Every entry ever published, sorted by (name, architecture, version).
    pub fn archive(&self) -> &[IndexEntry] {
        &self.archive
    }

    /// Number of packages in `active.json`.
    pub fn active_count(&self) -> usize {
        self.active_count
    }

    /// Derives the active set: the newest version of each (name,
    /// architecture) by `crate::model::version` ordering, sorted by (name,
    /// architecture).
    pub fn derive_active(archive: &[IndexEntry]) -> Vec<IndexEntry> {
        let mut newest: HashMap<(&str, &str), &IndexEntry> = HashMap::new();
        for e in archive {
            newest
                .entry((e.name.as_str(), e.architecture.as_str()))
                .and_modify(|cur| {
                    if cmp_versions(&e.version, &cur.version) == Ordering::Greater {
                        *cur = e;
                    }
                })
                .or_insert(e);
        }
        let mut out: Vec<IndexEntry> = newest.into_values().cloned().collect();
        out.sort_by(cmp_entries);
        out
    }

    /// Records `e` in the lookup tables (not in `archive`).
    fn remember(&mut self, e: &IndexEntry) {
        self.by_url.insert(e.url.clone(), e.hash.value.clone());
    }

    fn render(&self, kind: &str, index_version: u64, packages: &[IndexEntry]) -> Vec<u8> {
        let doc = IndexDocumentRef {
            schema_version: 1,
            repo: &self.cfg.name,
            kind,
            index_version,
            generated_at: now_rfc3339(),
            packages,
        };
        to_json(&doc)
    }

    /// Checks every archive entry: safe url, no duplicates, file present
    /// with the recorded size.
    fn check_entries(&self, index: &Path, entries: &[IndexEntry]) -> Result<(), RepoError> {
        let mut seen = HashSet::new();
        for e in entries {
            let broken = |file: PathBuf, problem: String| RepoError::BrokenEntry {
                index: index.to_path_buf(),
                url: e.url.clone(),
                file,
                problem,
            };
            let parts: Vec<&str> = e.url.split('/').collect();
            let ok = parts.len() == 3
                && parts[0] == "pool"
                && parts[1..].iter().all(|p| is_safe_component(p));
            if !ok {
                return Err(broken(
                    self.cfg.dir.clone(),
                    "url is not of the form pool/<name>/<file>".to_string(),
                ));
            }
            let file = self.cfg.dir.join(parts[0]).join(parts[1]).join(parts[2]);
            if !seen.insert(e.url.as_str()) {
                return Err(broken(file, "listed twice".to_string()));
            }
            match fs::metadata(&file) {
                Ok(m) if !m.is_file() => {
                    return Err(broken(file, "not a regular file".to_string()));
                }
                Ok(m) if m.len() != e.size_compressed => {
                    let problem = format!(
                        "file is {} bytes, index says {}",
                        m.len(),
                        e.size_compressed
                    );
                    return Err(broken(file, problem));
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(broken(file, "file is missing".to_string()));
                }
                Err(err) => return Err(io_err(&file)(err)),
            }
        }
        Ok(())
    }

    /// Makes `<path>.sig` match `bytes`: with a signer, rewritten unless it
    /// already verifies; without one, removed unless it verifies against
    /// `keys/<farm_id>.pub`.
    fn heal_signature(&self, path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
        let sig_path = sig_path(path);
        let key = match &self.signer {
            Some(k) => Some(k.verifying_key()),
            None => self.published_key(),
        };
        let valid = key.is_some_and(|k| signature_valid(&sig_path, &k, bytes));
        if valid {
            return Ok(());
        }
        self.write_signature(path, bytes)
    }

    /// The key in `keys/<farm_id>.pub`, if present and well-formed.
    fn published_key(&self) -> Option<VerifyingKey> {
        let p = self
            .cfg
            .dir
            .join("keys")
            .join(format!("{}.pub", self.cfg.farm_id));
        let text = fs::read_to_string(p).ok()?;
        let raw: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&raw).ok()
    }

    /// Writes `<path>.sig` for `bytes`, or removes it when there is no signer.
    fn write_signature(&self, path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
        let sig_path = sig_path(path);
        match &self.signer {
            Some(key) => {
                let sig = key.sign(bytes);
                let text = format!("{}\n", hex::encode(sig.to_bytes()));
                write_index(&sig_path, text.as_bytes()).map_err(io_err(&sig_path))
            }
            None => match fs::remove_file(&sig_path) {
                Ok(()) => {
                    let dir = sig_path.parent().unwrap_or(Path::new("."));
                    sync_dir(dir).map_err(io_err(dir))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&sig_path)(e)),
            },
        }
    }
}

/// What shows that the repository at `dir` has published, when its
/// archive is missing: `index/active.json`, or a file in `pool/`.
fn published_evidence(dir: &Path) -> Result<Option<String>, RepoError> {
    let active = dir.join("index").join("active.json");
    if active.exists() {
        return Ok(Some(format!("{} exists", active.display())));
    }
    let pool = dir.join("pool");
    for ent in fs::read_dir(&pool).map_err(io_err(&pool))? {
        let sub = ent.map_err(io_err(&pool))?.path();
        if !sub.is_dir() {
            continue;
        }
        if let Some(f) = fs::read_dir(&sub).map_err(io_err(&sub))?.next() {
            let f = f.map_err(io_err(&sub))?.path();
            return Ok(Some(format!("{} exists", f.display())));
        }
    }
    Ok(None)
}

fn sig_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

fn signature_valid(sig_path: &Path, key: &VerifyingKey, bytes: &[u8]) -> bool {
    let Ok(text) = fs::read_to_string(sig_path) else {
        return false;
    };
    let Ok(raw) = hex::decode(text.trim()) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(&raw) else {
        return false;
    };
    key.verify(bytes, &sig).is_ok()
}

fn parse_index(path: &Path, bytes: &[u8], kind: &str) -> Result<IndexDocument, RepoError> {
    let doc: IndexDocument =
        serde_json::from_slice(bytes).map_err(|source| RepoError::Malformed {
            path: path.to_path_buf(),
            source,
        })?;
    if doc.schema_version != 1 {
        return Err(RepoError::Invalid {
            path: path.to_path_buf(),
            problem: format!("unsupported schema_version {}", doc.schema_version),
        });
    }
    if doc.kind != kind {
        return Err(RepoError::Invalid {
            path: path.to_path_buf(),
            problem: format!("kind is `{}`, expected `{kind}`", doc.kind),
        });
    }
    Ok(doc)
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs (strings, integers, vectors) to a
    // Vec cannot fail.
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Replaces an index document or signature atomically (the publish steps
/// the fault hook below can pause around).
fn write_index(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_then(path, bytes, || fault_pause("write", path))?;
    fault_pause("written", path);
    Ok(())
}

/// Test-only fault hook (debug builds only): with
/// `FARMHAND_FAULT_PUBLISH_DELAY_MS` set, every publish step (`move` /
/// `moved` around each pool rename, `write` / `written` around each index
/// and signature rename) logs `publish fault hook` with the step and file,
/// then sleeps that long, so a test's SIGKILL can land inside a chosen step.
/// With `FARMHAND_FAULT_PUBLISH_PANIC` set to a step's name, that step
/// panics instead (the worker must survive it).
#[cfg(debug_assertions)]
fn fault_pause(step: &str, file: &Path) {
    use std::sync::OnceLock;
    if std::env::var("FARMHAND_FAULT_PUBLISH_PANIC").is_ok_and(|s| s == step) {
        panic!("publish fault hook: injected panic at step {step}");
    }
    static DELAY: OnceLock<Option<std::time::Duration>> = OnceLock::new();
    let delay = *DELAY.get_or_init(|| {
        std::env::var("FARMHAND_FAULT_PUBLISH_DELAY_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(d) = delay {
        tracing::info!(step, file = %file.display(), "publish fault hook");
        std::thread::sleep(d);
    }
}

#[cfg(not(debug_assertions))]
fn fault_pause(_step: &str, _file: &Path) {}

/// Creates `dir` if missing and fsyncs its parent so the entry is durable.
fn create_dir_durable(dir: &Path) -> Result<(), RepoError> {
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(io_err(parent))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Parent missing: create it first.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                create_dir_durable(parent)?;
                return create_dir_durable(dir);
            }
            Err(io_err(dir)(e))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Removes files named `.tmp-*` directly inside `dir`.
fn remove_temp_files(dir: &Path) -> Result<(), RepoError> {
    let mut removed = false;
    for ent in fs::read_dir(dir).map_err(io_err(dir))? {
        let ent = ent.map_err(io_err(dir))?;
        let is_tmp = ent
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX));
        let ft = ent.file_type().map_err(io_err(&ent.path()))?;
        if is_tmp && ft.is_file() {
            let p = ent.path();
            fs::remove_file(&p).map_err(io_err(&p))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Moves `from` to `to` durably; across filesystems, copies to a temporary
/// file next to `to`, fsyncs it, renames it into place and removes `from`.
fn move_into_pool(from: &Path, to: &Path) -> Result<(), RepoError> {
    match rename_durable(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: the stage is on another filesystem.
            let dir = to.parent().unwrap_or(Path::new("."));
            let mut tmp = tempfile::Builder::new()
                .prefix(TMP_PREFIX)
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .tempfile_in(dir)
                .map_err(io_err(dir))?;
            let mut src = fs::File::open(from).map_err(io_err(from))?;
            io::copy(&mut src, tmp.as_file_mut()).map_err(io_err(tmp.path()))?;
            tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
            tmp.persist(to).map_err(|e| io_err(to)(e.error))?;
            sync_dir(dir).map_err(io_err(dir))?;
            // The stage copy is disposable; failing to remove it is harmless.
            let _ = fs::remove_file(from);
            Ok(())
        }
        Err(e) if !from.exists() => Err(io_err(from)(e)),
        Err(e) => Err(io_err(to)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::keys::{load_signing_key, KeyError};

    fn is_published(repo: &Repo, recipe: &str, version: &str) -> bool {
        repo.archive()
            .iter()
            .any(|e| e.build.recipe == recipe && e.version == version)
    }

    fn has_published(repo: &Repo, recipe: &str) -> bool {
        repo.archive().iter().any(|e| e.build.recipe == recipe)
    }
    use crate::build::package::package_destdir;
    use crate::model::package::PackageSpec;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use sha2::{Digest, Sha256};

    struct Fixture {
        root: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                root: tempfile::tempdir().unwrap(),
            }
        }

        fn cfg(&self) -> RepoConfig {
            RepoConfig {
                dir: self.root.path().join("state/repo"),
                name: "my-packages".to_string(),
                description: "test repo".to_string(),
                farm_id: "farm-1".to_string(),
            }
        }

        fn repo_dir(&self) -> PathBuf {
            self.cfg().dir
        }

        /// Builds a package `libfoo` of recipe `foo` at `version`.
        fn package(&self, version: &str, content: &str) -> NewPackage {
            let stage = self.root.path().join("state/stage").join(version);
            let dest = stage.join("destdir");
            let out = stage.join("out");
            fs::create_dir_all(dest.join("usr/lib")).unwrap();
            fs::create_dir_all(&out).unwrap();
            fs::write(dest.join("usr/lib/libfoo.so"), content).unwrap();
            let specs = [PackageSpec {
                name: "libfoo".to_string(),
                architecture: "x86_64".to_string(),
                description: "foo library".to_string(),
                files: vec!["usr/**".to_string()],
            }];
            let mut arts =
                package_destdir(&dest, &specs, "foo", "x86_64", version, 1000, &out).unwrap();
            NewPackage {
                artifact: arts.remove(0),
                license: "Zlib".to_string(),
                homepage: "https://example.org".to_string(),
                build: BuildInfo {
                    timestamp: "2026-05-07T14:32:11Z".to_string(),
                    farm_id: "farm-1".to_string(),
                    recipe: "foo".to_string(),
                    source_ref: format!("git+https://example.org/foo#refs/tags/v{version}"),
                },
            }
        }
    }

    fn read_doc(path: &Path) -> IndexDocument {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn verify_sig(repo_dir: &Path, file: &str) {
        let pub_hex = fs::read_to_string(repo_dir.join("keys/farm-1.pub")).unwrap();
        assert!(pub_hex.ends_with('\n'));
        let raw: [u8; 32] = hex::decode(pub_hex.trim()).unwrap().try_into().unwrap();
        let key = VerifyingKey::from_bytes(&raw).unwrap();
        let bytes = fs::read(repo_dir.join("index").join(file)).unwrap();
        let sig_text =
            fs::read_to_string(repo_dir.join("index").join(format!("{file}.sig"))).unwrap();
        assert!(sig_text.ends_with('\n'));
        assert_eq!(sig_text.trim(), sig_text.trim().to_lowercase());
        let sig = Signature::from_slice(&hex::decode(sig_text.trim()).unwrap()).unwrap();
        key.verify(&bytes, &sig).expect("signature verifies");
    }

    #[test]
    fn open_creates_layout() {
        let f = Fixture::new();
        let repo = Repo::open(f.cfg(), None).unwrap();
        let dir = f.repo_dir();
        for sub in ["pool", "index", "keys"] {
            assert!(dir.join(sub).is_dir(), "{sub}");
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("repo.json")).unwrap()).unwrap();
        assert_eq!(meta["schema_version"], 1);
        assert_eq!(meta["name"], "my-packages");
        assert_eq!(meta["description"], "test repo");
        assert_eq!(meta["farm_id"], "farm-1");
        let created = meta["created_at"].as_str().unwrap().to_string();
        assert!(created.ends_with('Z') && created.len() == 20, "{created}");
        assert_eq!(repo.index_version(), 0);
        assert!(repo.archive().is_empty());
        for (file, kind) in [("archive.json", "archive"), ("active.json", "active")] {
            let doc = read_doc(&dir.join("index").join(file));
            assert_eq!(doc.kind, kind);
            assert_eq!(doc.index_version, 0);
            assert_eq!(doc.repo, "my-packages");
            assert!(doc.packages.is_empty());
        }
        assert!(!dir.join("index/archive.json.sig").exists());
        drop(repo);
        // repo.json is written once.
        let text = fs::read_to_string(dir.join("repo.json")).unwrap();
        let text = text.replace(&created, "2000-01-01T00:00:00Z");
        fs::write(dir.join("repo.json"), &text).unwrap();
        Repo::open(f.cfg(), None).unwrap();
        assert_eq!(fs::read_to_string(dir.join("repo.json")).unwrap(), text);
    }

    #[test]
    fn publish_two_versions_and_reopen() {
        let f = Fixture::new();
        let mut repo = Repo::open(f.cfg(), None).unwrap();
        assert!(!has_published(&repo, "foo"));
        let p1 = f.package("1.2.0-1", "one");
        let stage_file = p1.artifact.path.clone();
        repo.publish(vec![p1.clone()]).unwrap();
        assert!(!stage_file.exists(), "artifact moved out of the stage");
        assert_eq!(repo.index_version(), 1);
        assert_eq!(repo.active_count(), 1);
        repo.publish(vec![f.package("1.10.0-1", "two")]).unwrap();
        assert_eq!(repo.index_version(), 2);

        let dir = f.repo_dir();
        let archive = read_doc(&dir.join("index/archive.json"));
        let active = read_doc(&dir.join("index/active.json"));
        assert_eq!((archive.index_version, active.index_version), (2, 2));
        let versions: Vec<_> = archive
            .packages
            .iter()
            .map(|e| e.version.as_str())
            .collect();
        assert_eq!(versions, ["1.2.0-1", "1.10.0-1"]);
        assert_eq!(active.packages.len(), 1);
        assert_eq!(active.packages[0].version, "1.10.0-1");
        assert_eq!(repo.active_count(), 1);
        assert!(archive.generated_at.ends_with('Z'));
        for e in &archive.packages {
            assert_eq!(
                e.url,
                format!("pool/libfoo/libfoo_{}_x86_64.tar.zst", e.version)
            );
            let bytes = fs::read(dir.join(&e.url)).unwrap();
            assert_eq!(e.hash.algorithm, "sha256");
            assert_eq!(e.hash.value, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(e.size_compressed, bytes.len() as u64);
            assert_eq!(e.license, "Zlib");
            assert_eq!(e.build.recipe, "foo");
        }
        assert_eq!(repo.archive(), archive.packages.as_slice());

        // Dedup is by recipe, not by package name.
        assert!(is_published(&repo, "foo", "1.2.0-1"));
        assert!(is_published(&repo, "foo", "1.10.0-1"));
        assert!(!is_published(&repo, "libfoo", "1.2.0-1"));
        assert!(!is_published(&repo, "foo", "1.3.0-1"));
        assert!(has_published(&repo, "foo"));

        let archive_bytes = fs::read(dir.join("index/archive.json")).unwrap();
        let active_bytes = fs::read(dir.join("index/active.json")).unwrap();
        drop(repo);
        let repo = Repo::open(f.cfg(), None).unwrap();
        assert_eq!(repo.index_version(), 2);
        assert_eq!(repo.archive(), archive.packages.as_slice());
        assert_eq!(repo.active_count(), 1);
        assert!(is_published(&repo, "foo", "1.2.0-1"));
        // A consistent repository is not rewritten on open.
        assert_eq!(
            fs::read(dir.join("index/archive.json")).unwrap(),
            archive_bytes
        );
        assert_eq!(
            fs::read(dir.join("index/active.json")).unwrap(),
            active_bytes
        );
    }

    #[test]
    fn republish_same_hash_is_idempotent_different_hash_fails() {
        let f = Fixture::new();
        let mut repo = Repo::open(f.cfg(), None).unwrap();
        repo.publish(vec![f.package("1.0.0-1", "same")]).unwrap();
        let again = f.package("1.0.0-1", "same");
        repo.publish(vec![again]).unwrap();
        assert_eq!(repo.index_version(), 1);
        assert_eq!(repo.archive().len(), 1);

        let different = f.package("1.0.0-1", "different");
        let err = repo.publish(vec![different]).unwrap_err();
        assert!(matches!(err, RepoError::HashConflict { .. }), "{err}");
        assert!(
            err.to_string().contains("libfoo_1.0.0-1_x86_64.tar.zst"),
            "{err}"
        );
        assert_eq!(repo.index_version(), 1);
        assert_eq!(repo.archive().len(), 1);

        // A mismatching size is refused before anything moves.
        let mut bad = f.package("2.0.0-1", "x");
        bad.artifact.size_compressed += 1;
        let err = repo.publish(vec![bad.clone()]).unwrap_err();
        assert!(matches!(err, RepoError::BadArtifact { .. }), "{err}");
        assert!(bad.artifact.path.exists());
        assert_eq!(repo.index_version(), 1);
        assert!(!is_published(&repo, "foo", "2.0.0-1"));
    }

    #[test]
    fn open_heals_active_and_temp_files() {
        let f = Fixture::new();
        let mut repo = Repo::open(f.cfg(), None).unwrap();
        repo.publish(vec![f.package("1.0.0-1", "a")]).unwrap();
        repo.publish(vec![f.package("2.0.0-1", "b")]).unwrap();
        drop(repo);
        let dir = f.repo_dir();
        let active = dir.join("index/active.json");

        let check = |expect_version: &str| {
            let repo = Repo::open(f.cfg(), None).unwrap();
            let doc = read_doc(&active);
            assert_eq!(doc.packages, Repo::derive_active(repo.archive()));
            assert_eq!(doc.index_version, 2);
            assert_eq!(doc.packages[0].version, expect_version);
        };

        fs::remove_file(&active).unwrap();
        check("2.0.0-1");

        fs::write(&active, b"{ not json").unwrap();
        check("2.0.0-1");

        // A crash after archive.json but before active.json: stale active.
        let mut doc = read_doc(&active);
        doc.index_version = 1;
        doc.packages[0] = read_doc(&dir.join("index/archive.json")).packages[0].clone();
        fs::write(&active, to_json(&doc)).unwrap();
        check("2.0.0-1");

        fs::write(dir.join("index/.tmp-abc"), b"partial").unwrap();
        fs::write(dir.join("pool/libfoo/.tmp-xyz"), b"partial").unwrap();
        check("2.0.0-1");
        assert!(!dir.join("index/.tmp-abc").exists());
        assert!(!dir.join("pool/libfoo/.tmp-xyz").exists());
    }

    #[test]
    fn signing_with_raw_seed() {
        let f = Fixture::new();
        let key_path = f.root.path().join("farm.ed25519");
        fs::write(&key_path, [7u8; 32]).unwrap();
        let key = load_signing_key(&key_path).unwrap();
        assert_eq!(key.to_bytes(), [7u8; 32]);
        let dir = f.repo_dir();
        let mut repo = Repo::open(f.cfg(), Some(key.clone())).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("keys/farm-1.pub")).unwrap(),
            format!("{}\n", hex::encode(key.verifying_key().to_bytes()))
        );
        verify_sig(&dir, "archive.json");
        verify_sig(&dir, "active.json");
        repo.publish(vec![f.package("1.0.0-1", "a")]).unwrap();
        verify_sig(&dir, "archive.json");
        verify_sig(&dir, "active.json");
        drop(repo);

        // A stale or garbled signature is rewritten on open.
        fs::write(dir.join("index/archive.json.sig"), "00\n").unwrap();
        fs::remove_file(dir.join("index/active.json.sig")).unwrap();
        let mut repo = Repo::open(f.cfg(), Some(key)).unwrap();
        verify_sig(&dir, "archive.json");
        verify_sig(&dir, "active.json");

        // Without a signer the still-valid signatures stay until the next
        // publish, which removes them.
        drop(repo);
        repo = Repo::open(f.cfg(), None).unwrap();
        verify_sig(&dir, "archive.json");
        repo.publish(vec![f.package("2.0.0-1", "b")]).unwrap();
        assert!(!dir.join("index/archive.json.sig").exists());
        assert!(!dir.join("index/active.json.sig").exists());
    }

    #[test]
    fn signing_with_pkcs8_pem() {
        let f = Fixture::new();
        let original = SigningKey::from_bytes(&[42u8; 32]);
        let pem = original
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let key_path = f.root.path().join("farm.pem");
        fs::write(&key_path, pem.as_bytes()).unwrap();
        let key = load_signing_key(&key_path).unwrap();
        assert_eq!(key.to_bytes(), original.to_bytes());
        let mut repo = Repo::open(f.cfg(), Some(key)).unwrap();
        repo.publish(vec![f.package("1.0.0-1", "a")]).unwrap();
        verify_sig(&f.repo_dir(), "archive.json");
        verify_sig(&f.repo_dir(), "active.json");
    }

    #[test]
    fn bad_key_files_are_named() {
        let f = Fixture::new();
        let missing = f.root.path().join("no-such-key");
        let err = load_signing_key(&missing).unwrap_err();
        assert!(err.to_string().contains("no-such-key"), "{err}");

        let garbage = f.root.path().join("garbage.key");
        fs::write(&garbage, b"this is not a key at all").unwrap();
        let err = load_signing_key(&garbage).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("garbage.key") && msg.contains("32 raw bytes"),
            "{msg}"
        );

        let bad_pem = f.root.path().join("bad.pem");
        fs::write(
            &bad_pem,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = load_signing_key(&bad_pem).unwrap_err();
        assert!(matches!(err, KeyError::Bad { .. }), "{err}");
        assert!(err.to_string().contains("bad.pem"), "{err}");

        let unreadable = f.root.path().join("dir.key");
        fs::create_dir(&unreadable).unwrap();
        let err = load_signing_key(&unreadable).unwrap_err();
        assert!(err.to_string().contains("dir.key"), "{err}");
    }

    #[test]
    fn malformed_archive_is_named() {
        let f = Fixture::new();
        drop(Repo::open(f.cfg(), None).unwrap());
        let archive = f.repo_dir().join("index/archive.json");
        fs::write(
            &archive,
            "{\n  \"schema_version\": 1,\n  \"repo\": oops\n}\n",
        )
        .unwrap();
        let err = Repo::open(f.cfg(), None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RepoError::Malformed { .. }), "{msg}");
        assert!(
            msg.contains("archive.json") && msg.contains("line 3"),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_truncated_pool_file_is_an_error() {
        let f = Fixture::new();
        let mut repo = Repo::open(f.cfg(), None).unwrap();
        repo.publish(vec![f.package("1.0.0-1", "a")]).unwrap();
        drop(repo);
        let file = f
            .repo_dir()
            .join("pool/libfoo/libfoo_1.0.0-1_x86_64.tar.zst");
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
        let err = Repo::open(f.cfg(), None).unwrap_err();
        assert!(matches!(err, RepoError::BrokenEntry { .. }), "{err}");
        assert!(
            err.to_string().contains("libfoo_1.0.0-1_x86_64.tar.zst"),
            "{err}"
        );
        fs::remove_file(&file).unwrap();
        let err = Repo::open(f.cfg(), None).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn derive_active_picks_newest_per_name_and_arch() {
        let f = Fixture::new();
        let base = f.package("1.0.0-1", "a");
        let entry = |name: &str, arch: &str, version: &str| IndexEntry {
            name: name.to_string(),
            version: version.to_string(),
            architecture: arch.to_string(),
            description: String::new(),
            license: String::new(),
            homepage: String::new(),
            size_compressed: 1,
            size_installed: 1,
            hash: Hash {
                algorithm: "sha256".to_string(),
                value: String::new(),
            },
            url: format!("pool/{name}/{name}_{version}_{arch}.tar.zst"),
            build: base.build.clone(),
        };
        let archive = vec![
            entry("b", "x86_64", "1.9.0-1"),
            entry("b", "x86_64", "1.10.0-1"),
            entry("a", "aarch64", "2.0.0-1"),
            entry("a", "x86_64", "1.0.0-2"),
            entry("a", "x86_64", "1.0.0-10"),
        ];
        let active = Repo::derive_active(&archive);
        let got: Vec<_> = active
            .iter()
            .map(|e| (e.name.as_str(), e.architecture.as_str(), e.version.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "aarch64", "2.0.0-1"),
                ("a", "x86_64", "1.0.0-10"),
                ("b", "x86_64", "1.10.0-1")
            ]
        );
    }
}
