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
use std::sync::Arc;
use std::time::SystemTime;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, std::hash::Hash)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, std::hash::Hash)]
pub struct Hash {
    /// Always `"sha256"`.
    pub algorithm: String,
    /// Lowercase hex digest.
    pub value: String,
}

/// One package in an index document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, std::hash::Hash)]
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

/// An index document (`archive.json` or `active.json`), read whole (the
/// active set, tests).
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
struct IndexDocumentRef<'a, P: Serialize> {
    schema_version: u32,
    repo: &'a str,
    kind: &'a str,
    index_version: u64,
    generated_at: String,
    packages: &'a [P],
}

/// The packages of an index document as they are written in it.
#[derive(Deserialize)]
struct RawPackages<'a> {
    #[serde(borrow)]
    packages: Vec<&'a RawValue>,
}

/// An index document's fields besides its packages.
#[derive(Debug)]
struct Header {
    schema_version: u32,
    kind: String,
    index_version: u64,
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

/// `pool/<name>/<name>_<version>_<arch>.tar.zst`, where farmhand puts a
/// package file.
fn pool_url(name: &str, version: &str, architecture: &str) -> String {
    format!("pool/{name}/{name}_{version}_{architecture}.tar.zst")
}

/// What the repository keeps in memory of one archive entry: enough for
/// dedup (recipe, version), for placing a new entry in order and deriving
/// the active set (name, architecture, version) and for refusing a second
/// file under a published name (the url). The rest of each entry stays in
/// `archive.json`, which is read again when a publish rewrites it: 30,000
/// published versions cost about 2 MiB here instead of about 30 MiB.
#[derive(Debug, Clone)]
struct Entry {
    /// Interned in [`Symbols`].
    name: u32,
    architecture: u32,
    recipe: u32,
    version: Box<str>,
    /// The entry's url when it is not [`pool_url`] (farmhand always
    /// writes that; another tool may not have).
    url: Option<Box<str>>,
}

/// Package names, architectures and recipe ids, each stored once.
#[derive(Debug, Default)]
struct Symbols {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Symbols {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let sym: Arc<str> = Arc::from(s);
        let i = self.names.len() as u32;
        self.names.push(sym.clone());
        self.ids.insert(sym, i);
        i
    }

    fn get(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

/// Which version of `archive.json` the repository last read or wrote: a
/// publish checks that the file is still that one before it splices new
/// entries into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// A fingerprint of a whole entry, to tell whether `active.json` holds
/// exactly the archive's newest entries without keeping them in memory.
fn fingerprint(e: &IndexEntry) -> u64 {
    use std::hash::{Hash as _, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.hash(&mut h);
    h.finish()
}

/// The documents a publish writes, and the index that goes with them.
struct Spliced {
    archive: Vec<u8>,
    active: Vec<u8>,
    entries: Vec<Entry>,
}

/// The compact form of `e`.
fn compact(symbols: &mut Symbols, e: IndexEntry) -> Entry {
    let url =
        (e.url != pool_url(&e.name, &e.version, &e.architecture)).then(|| e.url.into_boxed_str());
    Entry {
        name: symbols.id(&e.name),
        architecture: symbols.id(&e.architecture),
        recipe: symbols.id(&e.build.recipe),
        version: e.version.into_boxed_str(),
        url,
    }
}

/// [`cmp_entries`] between a compact entry and a whole one.
fn cmp_entry(symbols: &Symbols, a: &Entry, b: &IndexEntry) -> Ordering {
    symbols
        .get(a.name)
        .cmp(&b.name)
        .then_with(|| symbols.get(a.architecture).cmp(&b.architecture))
        .then_with(|| cmp_versions(&a.version, &b.version))
}

/// The repository: a compact index in memory and the writer of its files.
#[derive(Debug)]
pub struct Repo {
    cfg: RepoConfig,
    signer: Option<SigningKey>,
    index_version: u64,
    /// Every archive entry, sorted by (name, architecture, version).
    entries: Vec<Entry>,
    symbols: Symbols,
    /// `archive.json` lists its entries in the order of `entries` (else
    /// the next publish rewrites it from a full parse).
    file_sorted: bool,
    /// The `archive.json` that `entries` describe.
    archive_id: Option<FileId>,
    active_count: usize,
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
    /// `index/archive.json` (into a compact index), writes
    /// `keys/<farm_id>.pub` when a signer is given, and heals: `active.json`
    /// and the signatures are re-derived and rewritten when missing,
    /// different from what `archive.json` derives, or stale; leftover
    /// temporary files in `pool/` and `index/` are removed. A malformed
    /// `archive.json`, or an archive entry whose file is missing or has the
    /// wrong size, is an error naming it.
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
            entries: Vec::new(),
            symbols: Symbols::default(),
            file_sorted: true,
            archive_id: None,
            active_count: 0,
        };

        // The archive: the source of truth.
        let archive_path = repo.archive_path();
        let archive_bytes = match fs::read(&archive_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&archive_path)(e)),
        };
        // Per entry, in `entries` order: its position in the file and the
        // fingerprint of the whole entry (only while opening).
        let mut found: Vec<(u32, u64)> = Vec::new();
        let archive_bytes = match archive_bytes {
            Some(bytes) => {
                found = repo.load_archive(&archive_path, &bytes)?;
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
                let bytes = repo.render::<IndexEntry>("archive", repo.index_version, &[]);
                write_atomic(&archive_path, &bytes).map_err(io_err(&archive_path))?;
                bytes
            }
        };
        repo.archive_id = file_id(&archive_path);
        repo.heal_signature(&archive_path, &archive_bytes)?;

        // The active set: re-derived when missing or different.
        let derived = repo.derive_active_positions();
        repo.active_count = derived.len();
        let active_path = repo.active_path();
        let current = match fs::read(&active_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&active_path)(e)),
        };
        let agrees = |doc: &IndexDocument| {
            doc.index_version == repo.index_version
                && doc.repo == repo.cfg.name
                && doc.packages.len() == derived.len()
                && doc
                    .packages
                    .iter()
                    .zip(&derived)
                    .all(|(e, &i)| fingerprint(e) == found[i].1)
        };
        let active_bytes = match current {
            Some(bytes)
                if parse_index(&active_path, &bytes, "active").is_ok_and(|doc| agrees(&doc)) =>
            {
                bytes
            }
            _ => {
                // The newest entries, whole, from a second pass over the archive.
                let mut wanted: HashMap<u32, usize> = derived
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| (found[i].0, k))
                    .collect();
                let mut newest: Vec<Option<IndexEntry>> = vec![None; derived.len()];
                let mut pos = 0u32;
                parse_index_with(&archive_path, &archive_bytes, |e| {
                    if let Some(k) = wanted.remove(&pos) {
                        newest[k] = Some(e);
                    }
                    pos += 1;
                    Ok(())
                })?;
                let newest: Vec<IndexEntry> = newest.into_iter().flatten().collect();
                let bytes = repo.render("active", repo.index_version, &newest);
                write_atomic(&active_path, &bytes).map_err(io_err(&active_path))?;
                bytes
            }
        };
        repo.heal_signature(&active_path, &active_bytes)?;
        Ok(repo)
    }

    /// Reads `archive.json` (already in `bytes`) into the compact index,
    /// checking every entry; returns each entry's file position and
    /// fingerprint, in index order.
    fn load_archive(&mut self, path: &Path, bytes: &[u8]) -> Result<Vec<(u32, u64)>, RepoError> {
        let mut loaded: Vec<(Entry, u32, u64)> = Vec::new();
        let mut seen: HashMap<u64, Vec<u32>> = HashMap::new();
        let hasher = std::collections::hash_map::RandomState::new();
        let header = parse_index_with(path, bytes, |e| {
            let pos = loaded.len() as u32;
            self.check_entry(path, &e)?;
            // Duplicates by url: a hash per entry, strings compared only on
            // a hash match.
            let same = seen
                .entry(std::hash::BuildHasher::hash_one(&hasher, &e.url))
                .or_default();
            if same
                .iter()
                .any(|&p| self.entry_url(&loaded[p as usize].0) == e.url)
            {
                let file = self.cfg.dir.join(&e.url);
                return Err(RepoError::BrokenEntry {
                    index: path.to_path_buf(),
                    url: e.url.clone(),
                    file,
                    problem: "listed twice".to_string(),
                });
            }
            same.push(pos);
            let fp = fingerprint(&e);
            let entry = compact(&mut self.symbols, e);
            loaded.push((entry, pos, fp));
            Ok(())
        })?;
        expect_kind(path, &header, "archive")?;
        self.index_version = header.index_version;
        drop(seen);
        let symbols = &self.symbols;
        loaded.sort_by_cached_key(|(e, _, _)| {
            (
                symbols.get(e.name).to_string(),
                symbols.get(e.architecture).to_string(),
                Version::parse(&e.version).ok(),
                e.version.clone(),
            )
        });
        self.file_sorted = loaded.iter().enumerate().all(|(i, l)| l.1 as usize == i);
        let mut found = Vec::with_capacity(loaded.len());
        self.entries = loaded
            .into_iter()
            .map(|(e, pos, fp)| {
                found.push((pos, fp));
                e
            })
            .collect();
        self.entries.shrink_to_fit();
        Ok(found)
    }

    fn entry_url(&self, e: &Entry) -> String {
        match &e.url {
            Some(u) => u.to_string(),
            None => pool_url(
                self.symbols.get(e.name),
                &e.version,
                self.symbols.get(e.architecture),
            ),
        }
    }

    /// Is `url` (a [`pool_url`] of `name`, `version`, `architecture`)
    /// the url of `e`?
    fn has_url(&self, e: &Entry, url: &str, name: &str, version: &str, architecture: &str) -> bool {
        match &e.url {
            Some(u) => **u == *url,
            None => {
                *e.version == *version
                    && self.symbols.get(e.name) == name
                    && self.symbols.get(e.architecture) == architecture
            }
        }
    }

    /// Where the newest entry of each (name, architecture) is in
    /// `entries`, sorted by (name, architecture): the last of each run,
    /// as `entries` is sorted by version within a run.
    fn derive_active_positions(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let last_of_run = self
                .entries
                .get(i + 1)
                .is_none_or(|n| n.name != e.name || n.architecture != e.architecture);
            if last_of_run {
                out.push(i);
            }
        }
        out
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
    /// The entries already published are copied from the current
    /// `archive.json` as they are written there (re-read, not kept in
    /// memory); a file changed behind farmhand's back is read again first.
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
        let archive_path = self.archive_path();
        if file_id(&archive_path) != self.archive_id {
            *self = self.reopen()?;
        }
        let pool = self.cfg.dir.join("pool");
        // Validate everything before touching the filesystem.
        let mut new_entries: Vec<(IndexEntry, PathBuf, PathBuf)> = Vec::new();
        let mut batch_urls = HashSet::new();
        let mut published_hashes: Option<HashMap<String, String>> = None;
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
            let taken = self
                .entries
                .iter()
                .any(|e| self.has_url(e, &url, &a.name, &a.version, &a.architecture));
            if taken {
                // Rare (a rebuild of a published version): the published
                // hash comes from the file.
                if published_hashes.is_none() {
                    let mut m = HashMap::new();
                    let bytes = fs::read(&archive_path).map_err(io_err(&archive_path))?;
                    parse_index_with(&archive_path, &bytes, |e| {
                        m.insert(e.url, e.hash.value);
                        Ok(())
                    })?;
                    published_hashes = Some(m);
                }
                let existing = published_hashes
                    .as_ref()
                    .and_then(|m| m.get(&url))
                    .cloned()
                    .unwrap_or_default();
                if existing == a.sha256 {
                    continue; // idempotent
                }
                return Err(RepoError::HashConflict {
                    path: dest,
                    existing,
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
        drop(published_hashes);
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
        let index_version =
            self.index_version
                .checked_add(1)
                .ok_or_else(|| RepoError::Invalid {
                    path: archive_path.clone(),
                    problem: "index_version overflow".to_string(),
                })?;
        let mut new_entries: Vec<IndexEntry> = new_entries.into_iter().map(|(e, _, _)| e).collect();
        new_entries.sort_by(cmp_entries);
        let current = fs::read(&archive_path).map_err(io_err(&archive_path))?;
        let Spliced {
            archive: archive_bytes,
            active: active_bytes,
            entries,
        } = self.splice(&archive_path, &current, index_version, new_entries)?;
        drop(current);
        write_index(&archive_path, &archive_bytes).map_err(io_err(&archive_path))?;

        self.index_version = index_version;
        self.entries = entries;
        self.file_sorted = true;
        self.archive_id = file_id(&archive_path);
        self.active_count = self.derive_active_positions().len();

        self.write_signature(&archive_path, &archive_bytes)?;
        drop(archive_bytes);
        let active_path = self.active_path();
        write_index(&active_path, &active_bytes).map_err(io_err(&active_path))?;
        self.write_signature(&active_path, &active_bytes)?;
        Ok(())
    }

    /// The archive and active documents with `added` (sorted) merged into
    /// the current archive (`current`, the bytes of `archive.json`), and
    /// the compact index that goes with them. The published entries are
    /// copied as they are written in `current`.
    fn splice(
        &mut self,
        path: &Path,
        current: &[u8],
        index_version: u64,
        added: Vec<IndexEntry>,
    ) -> Result<Spliced, RepoError> {
        let malformed = |source| RepoError::Malformed {
            path: path.to_path_buf(),
            source,
        };
        // Each new entry written as it will stand in the document.
        let mut fresh: Vec<Box<RawValue>> = Vec::with_capacity(added.len());
        for e in &added {
            let doc = self.render("archive", index_version, std::slice::from_ref(e));
            let raw: RawPackages = serde_json::from_slice(&doc).map_err(malformed)?;
            let text = raw.packages[0].get().to_string();
            fresh.push(RawValue::from_string(text).map_err(malformed)?);
        }
        let old = serde_json::from_slice::<RawPackages>(current)
            .map_err(malformed)?
            .packages;
        let mut merged: Vec<&RawValue> = Vec::with_capacity(old.len() + added.len());
        let mut entries: Vec<Entry> = Vec::with_capacity(old.len() + added.len());
        if self.file_sorted && old.len() == self.entries.len() {
            // Merge two sorted runs.
            let mut next_new = added.iter().zip(&fresh).peekable();
            for (e, raw) in self.entries.iter().zip(&old) {
                while let Some((n, nraw)) =
                    next_new.next_if(|(n, _)| cmp_entry(&self.symbols, e, n) == Ordering::Greater)
                {
                    merged.push(nraw);
                    entries.push(compact(&mut self.symbols, n.clone()));
                }
                merged.push(raw);
                entries.push(e.clone());
            }
            for (n, nraw) in next_new {
                merged.push(nraw);
                entries.push(compact(&mut self.symbols, n.clone()));
            }
        } else {
            // The file is not in the index's order (another tool wrote
            // it): sort its entries, once, each still as written.
            let mut all: Vec<(IndexEntry, &RawValue)> = Vec::with_capacity(old.len());
            for raw in old {
                let e = serde_json::from_str::<IndexEntry>(raw.get()).map_err(malformed)?;
                all.push((e, raw));
            }
            all.extend(added.into_iter().zip(fresh.iter().map(|b| &**b)));
            all.sort_by_cached_key(|(e, _)| entry_key(e));
            for (e, raw) in all {
                merged.push(raw);
                entries.push(compact(&mut self.symbols, e));
            }
        }
        let archive = self.render("archive", index_version, &merged);
        let mut active: Vec<&RawValue> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let last_of_run = entries
                .get(i + 1)
                .is_none_or(|n| n.name != e.name || n.architecture != e.architecture);
            if last_of_run {
                active.push(merged[i]);
            }
        }
        let active = self.render("active", index_version, &active);
        Ok(Spliced {
            archive,
            active,
            entries,
        })
    }

    /// The index version of the current documents (0 before any publish).
    pub fn index_version(&self) -> u64 {
        self.index_version
    }

    /// Number of entries in `archive.json`.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True before anything was published.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (recipe, version) of every archive entry: what dedup skips.
    pub fn published(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries
            .iter()
            .map(|e| (self.symbols.get(e.recipe), &*e.version))
    }

    /// Every entry of `archive.json` (read from the file), sorted by (name,
    /// architecture, version).
    pub fn read_archive(&self) -> Result<Vec<IndexEntry>, RepoError> {
        let path = self.archive_path();
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let mut all = Vec::new();
        parse_index_with(&path, &bytes, |e| {
            all.push(e);
            Ok(())
        })?;
        all.sort_by_cached_key(entry_key);
        Ok(all)
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

    fn render<P: Serialize>(&self, kind: &str, index_version: u64, packages: &[P]) -> Vec<u8> {
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

    /// Checks one archive entry: safe url, file present with the recorded
    /// size.
    fn check_entry(&self, index: &Path, e: &IndexEntry) -> Result<(), RepoError> {
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
        match fs::metadata(&file) {
            Ok(m) if !m.is_file() => Err(broken(file, "not a regular file".to_string())),
            Ok(m) if m.len() != e.size_compressed => {
                let problem = format!(
                    "file is {} bytes, index says {}",
                    m.len(),
                    e.size_compressed
                );
                Err(broken(file, problem))
            }
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(broken(file, "file is missing".to_string()))
            }
            Err(err) => Err(io_err(&file)(err)),
        }
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
    let header = Header {
        schema_version: doc.schema_version,
        kind: doc.kind.clone(),
        index_version: doc.index_version,
    };
    expect_kind(path, &header, kind)?;
    Ok(doc)
}

/// Checks an index document's schema version and kind.
fn expect_kind(path: &Path, h: &Header, kind: &str) -> Result<(), RepoError> {
    if h.schema_version != 1 {
        return Err(RepoError::Invalid {
            path: path.to_path_buf(),
            problem: format!("unsupported schema_version {}", h.schema_version),
        });
    }
    if h.kind != kind {
        return Err(RepoError::Invalid {
            path: path.to_path_buf(),
            problem: format!("kind is `{}`, expected `{kind}`", h.kind),
        });
    }
    Ok(())
}

/// Parses the index document in `bytes`, handing each package entry to
/// `each` in file order instead of keeping them all; the first error
/// `each` returns stops the parse and is returned. The caller checks the
/// header's kind ([`expect_kind`]).
fn parse_index_with(
    path: &Path,
    bytes: &[u8],
    mut each: impl FnMut(IndexEntry) -> Result<(), RepoError>,
) -> Result<Header, RepoError> {
    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };

    struct Entries<'a, F> {
        each: &'a mut F,
        failed: &'a mut Option<RepoError>,
    }
    impl<'de, F: FnMut(IndexEntry) -> Result<(), RepoError>> DeserializeSeed<'de> for Entries<'_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de, F: FnMut(IndexEntry) -> Result<(), RepoError>> Visitor<'de> for Entries<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of packages")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(e) = seq.next_element::<IndexEntry>()? {
                if let Err(err) = (self.each)(e) {
                    *self.failed = Some(err);
                    return Err(de::Error::custom("entry rejected"));
                }
            }
            Ok(())
        }
    }

    struct Doc<'a, F> {
        each: &'a mut F,
        failed: &'a mut Option<RepoError>,
    }
    impl<'de, F: FnMut(IndexEntry) -> Result<(), RepoError>> Visitor<'de> for Doc<'_, F> {
        type Value = Header;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an index document")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
            let mut schema_version = None;
            let mut repo: Option<String> = None;
            let mut kind = None;
            let mut index_version = None;
            let mut generated_at: Option<String> = None;
            let mut packages = false;
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "schema_version" if schema_version.is_none() => {
                        schema_version = Some(map.next_value()?);
                    }
                    "repo" if repo.is_none() => repo = Some(map.next_value()?),
                    "kind" if kind.is_none() => kind = Some(map.next_value()?),
                    "index_version" if index_version.is_none() => {
                        index_version = Some(map.next_value()?);
                    }
                    "generated_at" if generated_at.is_none() => {
                        generated_at = Some(map.next_value()?);
                    }
                    "packages" if !packages => {
                        map.next_value_seed(Entries {
                            each: &mut *self.each,
                            failed: &mut *self.failed,
                        })?;
                        packages = true;
                    }
                    "schema_version" | "repo" | "kind" | "index_version" | "generated_at"
                    | "packages" => {
                        return Err(de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let missing = <A::Error as de::Error>::missing_field;
            if generated_at.is_none() {
                return Err(missing("generated_at"));
            }
            if !packages {
                return Err(missing("packages"));
            }
            if repo.is_none() {
                return Err(missing("repo"));
            }
            Ok(Header {
                schema_version: schema_version.ok_or_else(|| missing("schema_version"))?,
                kind: kind.ok_or_else(|| missing("kind"))?,
                index_version: index_version.ok_or_else(|| missing("index_version"))?,
            })
        }
    }

    let mut failed = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de
        .deserialize_map(Doc {
            each: &mut each,
            failed: &mut failed,
        })
        .and_then(|h| de.end().map(|()| h));
    match (parsed, failed) {
        (_, Some(e)) => Err(e),
        (Ok(h), None) => Ok(h),
        (Err(source), None) => Err(RepoError::Malformed {
            path: path.to_path_buf(),
            source,
        }),
    }
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
        repo.published().any(|(r, v)| r == recipe && v == version)
    }

    fn has_published(repo: &Repo, recipe: &str) -> bool {
        repo.published().any(|(r, _)| r == recipe)
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
        assert!(repo.is_empty() && repo.read_archive().unwrap().is_empty());
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
        assert_eq!(repo.read_archive().unwrap(), archive.packages);

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
        assert_eq!(repo.read_archive().unwrap(), archive.packages);
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
        assert_eq!(repo.len(), 1);

        let different = f.package("1.0.0-1", "different");
        let err = repo.publish(vec![different]).unwrap_err();
        assert!(matches!(err, RepoError::HashConflict { .. }), "{err}");
        assert!(
            err.to_string().contains("libfoo_1.0.0-1_x86_64.tar.zst"),
            "{err}"
        );
        assert_eq!(repo.index_version(), 1);
        assert_eq!(repo.len(), 1);

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
            assert_eq!(
                doc.packages,
                Repo::derive_active(&repo.read_archive().unwrap())
            );
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
    fn publish_keeps_published_entries_as_written_and_sorts_a_foreign_archive() {
        let f = Fixture::new();
        let mut repo = Repo::open(f.cfg(), None).unwrap();
        repo.publish(vec![f.package("1.2.0-1", "a")]).unwrap();
        repo.publish(vec![f.package("1.10.0-1", "b")]).unwrap();
        drop(repo);
        let path = f.repo_dir().join("index/archive.json");
        // Another tool wrote the archive: newest first, one line, a field
        // farmhand does not know.
        let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let packages = doc["packages"].as_array_mut().unwrap();
        packages.reverse();
        packages[0]["extra"] = serde_json::json!({"kept": true});
        fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

        let mut repo = Repo::open(f.cfg(), None).unwrap();
        assert_eq!(repo.len(), 2);
        repo.publish(vec![f.package("1.3.0-1", "c")]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let versions: Vec<_> = read_doc(&path)
            .packages
            .into_iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, ["1.2.0-1", "1.3.0-1", "1.10.0-1"]);
        assert!(text.contains("\"extra\""), "{text}");
        // From then on, new entries are spliced between the ones written.
        repo.publish(vec![f.package("1.4.0-1", "d")]).unwrap();
        let doc = read_doc(&path);
        let versions: Vec<_> = doc.packages.iter().map(|e| e.version.as_str()).collect();
        assert_eq!(versions, ["1.2.0-1", "1.3.0-1", "1.4.0-1", "1.10.0-1"]);
        assert!(fs::read_to_string(&path).unwrap().contains("\"extra\""));
        assert_eq!(doc.index_version, 4);
        assert_eq!(
            read_doc(&f.repo_dir().join("index/active.json")).packages,
            [doc.packages[3].clone()]
        );
        // The pretty layout is kept whole: the file reads as farmhand writes it.
        let reparsed: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(reparsed["packages"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn publish_reads_an_archive_changed_behind_its_back_again() {
        let f = Fixture::new();
        let mut a = Repo::open(f.cfg(), None).unwrap();
        a.publish(vec![f.package("1.0.0-1", "a")]).unwrap();
        // A second writer (the daemon's copy was reopened after a panic,
        // say) publishes meanwhile.
        let mut b = Repo::open(f.cfg(), None).unwrap();
        b.publish(vec![f.package("2.0.0-1", "b")]).unwrap();
        a.publish(vec![f.package("3.0.0-1", "c")]).unwrap();
        let doc = read_doc(&f.repo_dir().join("index/archive.json"));
        let versions: Vec<_> = doc.packages.iter().map(|e| e.version.as_str()).collect();
        assert_eq!(versions, ["1.0.0-1", "2.0.0-1", "3.0.0-1"]);
        assert_eq!(doc.index_version, 3);
        assert!(is_published(&a, "foo", "2.0.0-1"));
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
