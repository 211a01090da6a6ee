//! git through libgit2: list remote tags without cloning, fetch exactly one
//! tag into a per-recipe object cache, export its tree with no `.git`
//! anywhere (submodules included when asked), and read the commit time.
//!
//! Everything here blocks. The daemon runs the network operations in a
//! child process ([`crate::git::helper`]), which it kills when the deadline
//! passes or shutdown comes; inside, every network operation also has a
//! deadline, checked by libgit2's socket timeouts and by the transfer
//! callbacks, and can be cancelled through an [`Abort`] flag.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use git2::{AutotagOption, Direction, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use nix::unistd::symlinkat;

use crate::model::tags::{unusable_tag, MAX_TAG_LEN};

/// A git failure, naming the upstream and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 reported an error (cut to 400 bytes: it may quote names
    /// an upstream sent).
    #[error("{what} {url}: {}", clip(&.source.to_string(), 400))]
    Git {
        /// What was being done.
        what: &'static str,
        /// The upstream URL.
        url: String,
        /// libgit2's error.
        source: git2::Error,
    },
    /// The deadline passed.
    #[error("{what} {url}: timed out after {}s", .after.as_secs())]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The upstream URL.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// The operation was cancelled (shutdown).
    #[error("{what} {url}: cancelled")]
    Cancelled {
        /// What was being done.
        what: &'static str,
        /// The upstream URL.
        url: String,
    },
    /// The tag is not in the upstream.
    #[error("tag {tag:?} not found in {url}")]
    TagNotFound {
        /// The upstream URL.
        url: String,
        /// The tag.
        tag: String,
    },
    /// The tree holds something that must not be written.
    #[error("refusing to export {url} {tag}: {reason}")]
    UnsafeTree {
        /// The upstream URL.
        url: String,
        /// The tag.
        tag: String,
        /// What is wrong.
        reason: String,
    },
    /// Writing the exported tree failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A cancellation flag shared with a blocking git operation.
#[derive(Debug, Clone, Default)]
pub struct Abort(Arc<AtomicBool>);

impl Abort {
    /// A fresh, unset flag.
    pub fn new() -> Abort {
        Abort::default()
    }
    /// Asks the operation to stop at its next callback.
    pub fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Has `abort` been called?
    pub fn is_aborted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a fetch brought back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FetchedSource {
    /// The commit the tag points at.
    pub commit: String,
    /// Its committer time, seconds since the epoch (SOURCE_DATE_EPOCH).
    pub commit_time: i64,
    /// Objects received over the wire for this fetch (0 when the cache
    /// already had everything).
    pub received_objects: usize,
    /// Bytes received over the wire.
    pub received_bytes: usize,
}

#[allow(unsafe_code)]
fn init_libgit2() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Socket-level limits so a silent server cannot hold a thread forever.
        // SAFETY: libgit2's global options must not be set while another
        // thread uses libgit2; `Once` runs this before this process makes
        // any other libgit2 call.
        let _ = unsafe { git2::opts::set_server_connect_timeout_in_milliseconds(30_000) };
        // SAFETY: as above, inside the same `Once`.
        let _ = unsafe { git2::opts::set_server_timeout_in_milliseconds(60_000) };
    });
}

fn callbacks<'a>(
    deadline: Instant,
    abort: &'a Abort,
    timed_out: &'a AtomicBool,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    cb.transfer_progress(move |_| {
        if abort.is_aborted() {
            return false;
        }
        if Instant::now() > deadline {
            timed_out.store(true, Ordering::SeqCst);
            return false;
        }
        true
    });
    cb.sideband_progress(move |_| !abort.is_aborted() && Instant::now() <= deadline);
    cb
}

/// Lists the tag names of a remote without cloning it (`git ls-remote
/// --tags`). Peeled `^{}` entries are folded into their tag.
///
/// A tag farmhand cannot use (longer than [`MAX_TAG_LEN`], not a valid ref
/// name, not UTF-8) is listed as its short stand-in from [`unusable_tag`],
/// never whole: the poll warns about it when the recipe's pattern could
/// match it, and the other tags are listed as usual. A local upstream is
/// read directly (see [`local_ref_names`]), since libgit2's local transport
/// fails the whole listing on one such ref.
pub fn list_tags(url: &str, timeout: Duration, abort: &Abort) -> Result<Vec<String>, GitError> {
    init_libgit2();
    let names = if is_local(url) {
        local_ref_names(url)?
    } else {
        remote_ref_names(url, timeout, abort)?
    };
    let mut tags: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix(b"refs/tags/"))
        .map(|t| t.strip_suffix(b"^{}").unwrap_or(t))
        .map(|t| match usable_tag(t) {
            Some(tag) => tag.to_string(),
            None => unusable_tag(t),
        })
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// `tag` as text when farmhand can use it: UTF-8, at most [`MAX_TAG_LEN`]
/// bytes, and `refs/tags/<tag>` a valid ref name.
fn usable_tag(tag: &[u8]) -> Option<&str> {
    let tag = std::str::from_utf8(tag).ok()?;
    let valid = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && git2::Reference::is_valid_name(&format!("refs/tags/{tag}"));
    valid.then_some(tag)
}

/// The ref names a remote advertises (`git ls-remote`).
fn remote_ref_names(url: &str, timeout: Duration, abort: &Abort) -> Result<Vec<Vec<u8>>, GitError> {
    let what = "ls-remote";
    let start = Instant::now();
    let gerr = |source| GitError::Git {
        what,
        url: url.to_string(),
        source,
    };
    let mut remote = git2::Remote::create_detached(url.to_string()).map_err(gerr)?;
    let deadline = start + timeout;
    let timed_out = AtomicBool::new(false);
    let cb = callbacks(deadline, abort, &timed_out);
    let conn = remote
        .connect_auth(Direction::Fetch, Some(cb), None)
        .map_err(|e| classify(e, what, url, start, timeout, abort))?;
    let heads = conn
        .list()
        .map_err(|e| classify(e, what, url, start, timeout, abort))?;
    // git2 panics on a name that is not UTF-8, which a server may send:
    // such a ref is left out rather than failing the listing.
    Ok(heads
        .iter()
        .filter_map(|h| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                h.name().as_bytes().to_vec()
            }))
            .ok()
        })
        .collect())
}

/// Opens the repository a local URL names (a path or `file://`), as
/// libgit2's local transport does, without searching parent directories.
fn open_local(url: &str, what: &'static str) -> Result<Repository, GitError> {
    Repository::open_ext(
        local_path(url),
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|source| GitError::Git {
        what,
        url: url.to_string(),
        source,
    })
}

/// The ref names of a local repository, read through its ref database one
/// at a time, as stored (bytes: git allows names that are not UTF-8).
/// libgit2's local transport looks every ref up by a name it normalises
/// into a buffer of 1,024 bytes, so a single longer tag (git keeps one in
/// `packed-refs` without complaint) failed the whole listing.
fn local_ref_names(url: &str) -> Result<Vec<Vec<u8>>, GitError> {
    let what = "ls-remote";
    let gerr = |source| GitError::Git {
        what,
        url: url.to_string(),
        source,
    };
    let repo = open_local(url, what)?;
    let refs = repo.references().map_err(gerr)?;
    let mut names = Vec::new();
    for r in refs {
        names.push(r.map_err(gerr)?.name_bytes().to_vec());
    }
    Ok(names)
}

/// What [`copy_local`] copies.
enum Want<'a> {
    /// A ref (`refs/tags/v1.0`): its tag objects, commit and tree; the ref
    /// is created in the cache. Nothing is copied when the repository has
    /// no such ref.
    Ref(&'a str),
    /// A commit and its tree (a submodule's pinned commit), kept by
    /// `refs/farmhand/<id>` in the cache.
    Commit(Oid),
}

/// Copies what an export of `want` needs from the local repository at
/// `url` into `cache`: tag objects, the commit and its whole tree, without
/// history (the export reads nothing else) and without the objects `cache`
/// already has (a tree the cache holds is complete, as every copy writes
/// one pack). Returns (objects copied, bytes of the pack).
///
/// libgit2's local transport is not used for local upstreams: it looks up
/// every ref of the upstream first and fails outright on one whose name
/// it cannot normalise (a 10,000-character tag), which would fail every
/// fetch of that upstream.
fn copy_local(
    cache: &Repository,
    url: &str,
    want: Want<'_>,
    deadline: Instant,
    timeout: Duration,
    abort: &Abort,
) -> Result<(usize, usize), GitError> {
    let what = "fetch";
    let gerr = |source| GitError::Git {
        what,
        url: url.to_string(),
        source,
    };
    let stop = || -> Result<(), GitError> {
        if abort.is_aborted() {
            return Err(GitError::Cancelled {
                what,
                url: url.to_string(),
            });
        }
        if Instant::now() > deadline {
            return Err(GitError::Timeout {
                what,
                url: url.to_string(),
                after: timeout,
            });
        }
        Ok(())
    };
    let src = open_local(url, what)?;
    let (target, refname) = match want {
        Want::Ref(name) => match src.find_reference(name) {
            Ok(r) => {
                let r = r.resolve().map_err(gerr)?;
                let Some(id) = r.target() else {
                    return Ok((0, 0));
                };
                (id, name.to_string())
            }
            Err(_) => return Ok((0, 0)),
        },
        Want::Commit(id) => (id, format!("refs/farmhand/{id}")),
    };
    let have = cache.odb().map_err(gerr)?;
    // The pack is built in a repository made of the upstream's objects
    // alone: libgit2's pack builder first reads every tag of its
    // repository (to order the pack) and fails on one it cannot look up.
    let objects = Repository::from_odb(src.odb().map_err(gerr)?).map_err(gerr)?;
    let mut pack = objects.packbuilder().map_err(gerr)?;
    let mut count = 0usize;
    let mut add = |pack: &mut git2::PackBuilder<'_>, id: Oid| -> Result<(), GitError> {
        pack.insert_object(id, None).map_err(gerr)?;
        count += 1;
        if count % 1024 == 0 {
            stop()?;
        }
        Ok(())
    };
    // Annotated tags down to what they point at.
    let mut id = target;
    loop {
        let object = src.find_object(id, None).map_err(gerr)?;
        if !have.exists(id) {
            add(&mut pack, id)?;
        }
        match object.as_tag() {
            Some(tag) => id = tag.target_id(),
            None => break,
        }
    }
    if let Ok(commit) = src.find_commit(id) {
        // Each object once, however often the tree repeats it.
        let mut seen: HashSet<Oid> = HashSet::new();
        let mut trees = vec![commit.tree_id()];
        while let Some(tree_id) = trees.pop() {
            if !seen.insert(tree_id) || have.exists(tree_id) {
                continue;
            }
            add(&mut pack, tree_id)?;
            let tree = src.find_tree(tree_id).map_err(gerr)?;
            for entry in tree.iter() {
                match entry.kind() {
                    Some(ObjectType::Tree) => trees.push(entry.id()),
                    Some(ObjectType::Blob)
                        if seen.insert(entry.id()) && !have.exists(entry.id()) =>
                    {
                        add(&mut pack, entry.id())?;
                    }
                    // Gitlinks live in other repositories.
                    _ => {}
                }
            }
        }
    }
    let mut bytes = 0usize;
    if count > 0 {
        let mut writer = have.packwriter().map_err(gerr)?;
        let mut failed: Option<std::io::Error> = None;
        pack.foreach(|chunk| {
            bytes += chunk.len();
            match std::io::Write::write_all(&mut writer, chunk) {
                Ok(()) => !abort.is_aborted() && Instant::now() <= deadline,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
        .map_err(|e| {
            stop().err().unwrap_or_else(|| match failed.take() {
                Some(source) => GitError::Io {
                    path: cache.path().to_path_buf(),
                    source,
                },
                None => gerr(e),
            })
        })?;
        writer.commit().map_err(gerr)?;
    }
    cache
        .reference(
            &refname,
            target,
            true,
            "farmhand: copy from a local upstream",
        )
        .map_err(gerr)?;
    Ok((count, bytes))
}

fn classify(
    e: git2::Error,
    what: &'static str,
    url: &str,
    start: Instant,
    timeout: Duration,
    abort: &Abort,
) -> GitError {
    if abort.is_aborted() {
        GitError::Cancelled {
            what,
            url: url.to_string(),
        }
    } else if start.elapsed() >= timeout
        || e.class() == git2::ErrorClass::Net && e.message().contains("timed out")
    {
        GitError::Timeout {
            what,
            url: url.to_string(),
            after: timeout,
        }
    } else {
        GitError::Git {
            what,
            url: url.to_string(),
            source: e,
        }
    }
}

/// Opens (or creates) the bare object cache for one upstream.
fn open_cache(cache: &Path) -> Result<Repository, GitError> {
    let gerr = |source| GitError::Git {
        what: "open cache",
        url: cache.display().to_string(),
        source,
    };
    match Repository::open_bare(cache) {
        Ok(r) => Ok(r),
        Err(_) => {
            std::fs::create_dir_all(cache).map_err(|source| GitError::Io {
                path: cache.to_path_buf(),
                source,
            })?;
            Repository::init_bare(cache).map_err(gerr)
        }
    }
}

fn is_local(url: &str) -> bool {
    url_kind(url) == Ok(UrlKind::Local)
}

/// Where a git URL leads, as libgit2 reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    /// Over the network: `https://`, `http://`, `git://`, `ssh://` (and
    /// `git+ssh://`, `ssh+git://`), or scp-style `[user@]host:path`.
    Remote,
    /// This machine's file system: a path (absolute or relative) or a
    /// `file://` URL.
    Local,
}

/// Classifies `url` the way libgit2 picks a transport. `Err` (the reason)
/// for a URL no fetch may use: git's `<helper>::<address>` forms (`ext::`
/// runs a command), schemes libgit2 has no transport for, and anything
/// that reads as a command-line option.
pub fn url_kind(url: &str) -> Result<UrlKind, String> {
    if url.starts_with('-') {
        return Err("it starts with '-'".into());
    }
    let is_scheme = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    };
    if let Some((helper, _)) = url.split_once("::") {
        if is_scheme(helper) {
            return Err(format!("the {helper}:: transport is refused"));
        }
    }
    if let Some((scheme, _)) = url.split_once("://") {
        if is_scheme(scheme) {
            return match scheme.to_ascii_lowercase().as_str() {
                "https" | "http" | "git" | "ssh" | "git+ssh" | "ssh+git" => Ok(UrlKind::Remote),
                "file" => Ok(UrlKind::Local),
                _ => Err(format!("the {scheme}:// scheme is not supported")),
            };
        }
    }
    // scp-style `host:path` has a colon before any slash (git's rule). A
    // libgit2 without ssh reads it as a path when that directory exists,
    // so an existing path is local whatever its form.
    let scp = url
        .find(':')
        .is_some_and(|colon| colon > 0 && !url[..colon].contains('/'));
    if scp && !Path::new(url).exists() {
        Ok(UrlKind::Remote)
    } else {
        Ok(UrlKind::Local)
    }
}

/// The file-system path a local URL names (`file://` and `localhost`
/// removed, `%XX` decoded as libgit2 does).
fn local_path(url: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let Some(rest) = url
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("file://"))
        .map(|_| &url[7..])
    else {
        return PathBuf::from(url);
    };
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// At most `max` bytes of `s` (cut at a character boundary), for messages:
/// URLs and names from an upstream can be arbitrarily long.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Fetches `refspecs` from `url` into `repo`, shallow when the transport
/// supports it.
fn fetch_into(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    depth: i32,
    deadline: Instant,
    timeout: Duration,
    abort: &Abort,
) -> Result<(usize, usize), GitError> {
    let what = "fetch";
    let start = deadline - timeout;
    let mut remote = repo.remote_anonymous(url).map_err(|source| GitError::Git {
        what,
        url: url.to_string(),
        source,
    })?;
    let timed_out = AtomicBool::new(false);
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(deadline, abort, &timed_out));
    opts.download_tags(AutotagOption::None);
    // libgit2's local transport does not do shallow fetches; a local
    // upstream is cheap to fetch in full and only new objects are copied.
    if depth > 0 && !is_local(url) {
        opts.depth(depth);
    }
    remote.fetch(refspecs, Some(&mut opts), None).map_err(|e| {
        if timed_out.load(Ordering::SeqCst) {
            GitError::Timeout {
                what,
                url: url.to_string(),
                after: timeout,
            }
        } else {
            classify(e, what, url, start, timeout, abort)
        }
    })?;
    let stats = remote.stats();
    Ok((stats.received_objects(), stats.received_bytes()))
}

/// Fetches exactly `tag` from `url` into the object cache at `cache` and
/// exports its tree into `dest` (which must not exist yet). With
/// `submodules`, gitlinks are fetched and exported recursively.
pub fn fetch_tag(
    cache: &Path,
    url: &str,
    tag: &str,
    dest: &Path,
    submodules: bool,
    timeout: Duration,
    abort: &Abort,
) -> Result<FetchedSource, GitError> {
    init_libgit2();
    if usable_tag(tag.as_bytes()).is_none() {
        return Err(GitError::UnsafeTree {
            url: url.to_string(),
            tag: unusable_tag(tag.as_bytes()),
            reason: "farmhand cannot use this tag".into(),
        });
    }
    let deadline = Instant::now() + timeout;
    let repo = open_cache(cache)?;
    let refname = format!("refs/tags/{tag}");
    let (objects, bytes) = if is_local(url) {
        copy_local(&repo, url, Want::Ref(&refname), deadline, timeout, abort)?
    } else {
        fetch_into(
            &repo,
            url,
            &[format!("+{refname}:{refname}")],
            1,
            deadline,
            timeout,
            abort,
        )?
    };
    let gerr = |source| GitError::Git {
        what: "resolve tag",
        url: url.to_string(),
        source,
    };
    let reference = repo
        .find_reference(&refname)
        .map_err(|_| GitError::TagNotFound {
            url: url.to_string(),
            tag: tag.to_string(),
        })?;
    let commit = reference.peel_to_commit().map_err(gerr)?;
    let ctx = Export {
        url,
        tag,
        dest,
        cache_root: cache.parent().unwrap_or(cache),
        submodules,
        deadline,
        timeout,
        abort,
    };
    let io = |source| GitError::Io {
        path: dest.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dest).map_err(io)?;
    let root = open_dir_at(None, dest).map_err(|e| io(e.into()))?;
    ctx.export_commit(&repo, url, commit.id(), &root, "", 0)?;
    let commit_time = commit.committer().when().seconds();
    let fetched = FetchedSource {
        commit: commit.id().to_string(),
        commit_time,
        received_objects: objects,
        received_bytes: bytes,
    };
    Ok(fetched)
}

/// Deepest directory nesting a tree may have (git's own `core.maxTreeDepth`
/// default); deeper trees are refused rather than walked.
const MAX_TREE_DEPTH: usize = 4096;

/// Writes a tag's tree into the export directory.
///
/// Every file, link and directory is created relative to a descriptor of
/// the directory that holds it, never by path: directories with `mkdirat`
/// and then opened with `O_NOFOLLOW | O_DIRECTORY`, files with `O_CREAT |
/// O_EXCL | O_NOFOLLOW`, links with `symlinkat`, all of which fail on a
/// name that exists. So the export never follows a link it created: a
/// crafted tree holding a link `f -> /etc/passwd` and then a file `f`, or a
/// link `d -> /elsewhere` and then a directory `d`, cannot write outside the
/// export directory. Such a tree, like any with two entries of one name, is
/// refused with an error naming the tag and the path.
struct Export<'a> {
    url: &'a str,
    tag: &'a str,
    /// The export directory, for messages.
    dest: &'a Path,
    cache_root: &'a Path,
    submodules: bool,
    deadline: Instant,
    timeout: Duration,
    abort: &'a Abort,
}

/// `openat(2)` (relative to the working directory when `dir` is `None`),
/// returning a descriptor that closes itself.
#[allow(unsafe_code)]
fn open_at(
    dir: Option<RawFd>,
    name: &(impl nix::NixPath + ?Sized),
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let fd = openat(dir, name, flags | OFlag::O_CLOEXEC, mode)?;
    // SAFETY: `openat` succeeded, so `fd` is an open descriptor, and
    // nothing else owns it: it is handed out once, here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` inside `dir` (or the path `name` when `dir`
/// is `None`) without following a link.
fn open_dir_at(dir: Option<RawFd>, name: &(impl nix::NixPath + ?Sized)) -> nix::Result<OwnedFd> {
    open_at(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

impl Export<'_> {
    fn unsafe_tree(&self, reason: String) -> GitError {
        GitError::UnsafeTree {
            url: self.url.to_string(),
            tag: self.tag.to_string(),
            reason,
        }
    }

    /// An error creating `path` (relative to the export directory). The
    /// export directory starts empty, so a name that already exists can
    /// only come from the tree itself: that is reported as an unsafe tree.
    fn write_error(&self, path: &str, e: std::io::Error) -> GitError {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return self.unsafe_tree(format!("{path:?} already exists"));
        }
        GitError::Io {
            path: self.dest.join(path),
            source: e,
        }
    }

    /// Opens `rel` (`a/b/`, directories this export created) below `root`,
    /// one component at a time, following no link.
    fn open_beneath(&self, root: &OwnedFd, prefix: &str, rel: &str) -> Result<OwnedFd, GitError> {
        let io = |e: std::io::Error| self.write_error(&format!("{prefix}{rel}"), e);
        let mut dir = root.try_clone().map_err(io)?;
        for name in rel.split('/').filter(|n| !n.is_empty()) {
            dir = open_dir_at(Some(dir.as_raw_fd()), name).map_err(|e| io(e.into()))?;
        }
        Ok(dir)
    }

    /// Exports the tree of `commit` (of `repo`, fetched from `repo_url`)
    /// into the directory `root`, which is `prefix` below the export
    /// directory (`""`, or a submodule's `vendor/lib/`).
    fn export_commit(
        &self,
        repo: &Repository,
        repo_url: &str,
        commit: Oid,
        root: &OwnedFd,
        prefix: &str,
        depth: usize,
    ) -> Result<(), GitError> {
        if depth > 8 {
            return Err(self.unsafe_tree("submodules nested more than 8 deep".into()));
        }
        let gerr = |source| GitError::Git {
            what: "read tree",
            url: repo_url.to_string(),
            source,
        };
        let tree = repo
            .find_commit(commit)
            .map_err(gerr)?
            .tree()
            .map_err(gerr)?;
        let mut gitlinks: Vec<(String, Oid)> = Vec::new();
        // Trees still to write: (id, path below `root`: "" or "a/b/").
        let mut pending: Vec<(Oid, String)> = vec![(tree.id(), String::new())];
        while let Some((id, rel)) = pending.pop() {
            if rel.matches('/').count() >= MAX_TREE_DEPTH {
                let path = format!("{prefix}{rel}");
                return Err(self.unsafe_tree(format!(
                    "{path:?} is nested more than {MAX_TREE_DEPTH} directories deep"
                )));
            }
            let subtree = repo.find_tree(id).map_err(gerr)?;
            let dir = self.open_beneath(root, prefix, &rel)?;
            let mut seen: HashSet<Vec<u8>> = HashSet::new();
            for entry in subtree.iter() {
                let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
                    let path = format!("{prefix}{rel}");
                    return Err(self.unsafe_tree(format!("non-UTF-8 name under {path:?}")));
                };
                let path = format!("{prefix}{rel}{name}");
                if name.is_empty()
                    || name == "."
                    || name == ".."
                    || name.contains('/')
                    || name.contains('\0')
                    || name.eq_ignore_ascii_case(".git")
                {
                    return Err(self.unsafe_tree(format!("entry {path:?} is not allowed")));
                }
                if !seen.insert(name.as_bytes().to_vec()) {
                    return Err(self.unsafe_tree(format!("two entries named {path:?}")));
                }
                let mkdir = || {
                    mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| self.write_error(&path, e.into()))
                };
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        mkdir()?;
                        pending.push((entry.id(), format!("{rel}{name}/")));
                    }
                    Some(ObjectType::Blob) => {
                        write_blob(repo, entry.id(), entry.filemode(), &dir, name).map_err(
                            |e| match e {
                                BlobError::Git(source) => gerr(source),
                                BlobError::Io(e) => self.write_error(&path, e),
                            },
                        )?;
                    }
                    Some(ObjectType::Commit) => {
                        mkdir()?;
                        gitlinks.push((format!("{rel}{name}"), entry.id()));
                    }
                    _ => {}
                }
            }
        }
        if !self.submodules || gitlinks.is_empty() {
            return Ok(());
        }
        let modules = read_gitmodules(repo, &tree);
        for (path, oid) in gitlinks {
            let Some(sub_url) = modules.iter().find(|(p, _)| *p == path).map(|(_, u)| u) else {
                return Err(
                    self.unsafe_tree(format!("submodule at {path:?} has no url in .gitmodules"))
                );
            };
            let sub_url = resolve_submodule_url(repo_url, sub_url);
            self.check_submodule_url(repo_url, &path, &sub_url)?;
            let cache = self
                .cache_root
                .join("submodules")
                .join(cache_name(&sub_url));
            let sub = open_cache(&cache)?;
            if sub.find_commit(oid).is_err() && is_local(&sub_url) {
                copy_local(
                    &sub,
                    &sub_url,
                    Want::Commit(oid),
                    self.deadline,
                    self.timeout,
                    self.abort,
                )?;
            } else if sub.find_commit(oid).is_err() {
                // Ask for the commit itself first (servers allow fetching a
                // reachable sha); fall back to all branches and tags.
                let direct = fetch_into(
                    &sub,
                    &sub_url,
                    &[format!("+{oid}:refs/farmhand/{oid}")],
                    1,
                    self.deadline,
                    self.timeout,
                    self.abort,
                );
                if direct.is_err() || sub.find_commit(oid).is_err() {
                    fetch_into(
                        &sub,
                        &sub_url,
                        &[
                            "+refs/heads/*:refs/remotes/origin/*".to_string(),
                            "+refs/tags/*:refs/tags/*".to_string(),
                        ],
                        0,
                        self.deadline,
                        self.timeout,
                        self.abort,
                    )?;
                }
            }
            if sub.find_commit(oid).is_err() {
                return Err(self.unsafe_tree(format!(
                    "submodule {path:?} commit {oid} not found in {sub_url}"
                )));
            }
            let dir = self.open_beneath(root, prefix, &path)?;
            let sub_prefix = format!("{prefix}{path}/");
            self.export_commit(&sub, &sub_url, oid, &dir, &sub_prefix, depth + 1)?;
        }
        Ok(())
    }
}

impl Export<'_> {
    /// The submodule rule (DESIGN.md section 18): the submodule at `path`
    /// of the repository fetched from `parent` may be fetched from `url`
    /// (already resolved against `parent`).
    ///
    /// * A submodule of a remote repository must be remote: a local path
    ///   or `file://` URL there would let an upstream pull any repository
    ///   the daemon can read (other recipes' git caches under
    ///   `state_dir/git`, say) into its build.
    /// * A submodule of a local repository may be local too. The operator
    ///   chose that repository on this machine, as someone running `git`
    ///   by hand does, whose `protocol.file.allow=user` default lets its
    ///   own commands follow local submodules; tests and the demo rely on
    ///   it. Its submodules still never reach into farmhand's own object
    ///   caches (`state_dir/git`, the directory holding this upstream's
    ///   cache and the submodule caches). A remote
    ///   submodule's own submodules are held to the remote rule, so no
    ///   chain that passed through the network ever comes back local.
    /// * `ext::` and other `<helper>::` URLs, and unknown schemes, are
    ///   refused everywhere.
    fn check_submodule_url(&self, parent: &str, path: &str, url: &str) -> Result<(), GitError> {
        let shown = clip(url, 200);
        let kind = url_kind(url).map_err(|why| {
            self.unsafe_tree(format!("submodule {path:?} has the URL {shown:?}: {why}"))
        })?;
        if kind == UrlKind::Remote {
            return Ok(());
        }
        if url_kind(parent) != Ok(UrlKind::Local) {
            return Err(self.unsafe_tree(format!(
                "submodule {path:?} has the local URL {shown:?}: \
                 submodules of a remote upstream must be remote (https, ssh, git)"
            )));
        }
        if let (Ok(sub), Ok(caches)) = (
            std::fs::canonicalize(local_path(url)),
            std::fs::canonicalize(self.cache_root),
        ) {
            if sub.starts_with(&caches) {
                return Err(self.unsafe_tree(format!(
                    "submodule {path:?} has the URL {shown:?}, inside farmhand's git caches"
                )));
            }
        }
        Ok(())
    }
}

enum BlobError {
    Git(git2::Error),
    Io(std::io::Error),
}

/// Writes the blob `id` as `name` inside `dir`: a link for mode 120000,
/// else a file (executable for 100755). Never replaces or follows
/// anything already there.
fn write_blob(
    repo: &Repository,
    id: Oid,
    mode: i32,
    dir: &OwnedFd,
    name: &str,
) -> Result<(), BlobError> {
    let blob = repo.find_blob(id).map_err(BlobError::Git)?;
    let io = |e: nix::Error| BlobError::Io(e.into());
    if mode == 0o120000 {
        let target = std::str::from_utf8(blob.content()).map_err(|_| {
            BlobError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "symlink target is not UTF-8",
            ))
        })?;
        return symlinkat(target, Some(dir.as_raw_fd()), name).map_err(io);
    }
    let fd = open_at(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, blob.content()).map_err(BlobError::Io)?;
    let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
    fchmod(file.as_raw_fd(), Mode::from_bits_truncate(perm)).map_err(io)
}

/// (path, url) pairs from the tree's `.gitmodules`.
fn read_gitmodules(repo: &Repository, tree: &git2::Tree) -> Vec<(String, String)> {
    let Ok(entry) = tree.get_path(Path::new(".gitmodules")) else {
        return Vec::new();
    };
    let Ok(blob) = repo.find_blob(entry.id()) else {
        return Vec::new();
    };
    let Ok(tmp) = tempfile::NamedTempFile::new() else {
        return Vec::new();
    };
    if std::fs::write(tmp.path(), blob.content()).is_err() {
        return Vec::new();
    }
    let Ok(cfg) = git2::Config::open(tmp.path()) else {
        return Vec::new();
    };
    let mut paths = std::collections::BTreeMap::new();
    let mut urls = std::collections::BTreeMap::new();
    if let Ok(mut entries) = cfg.entries(Some(r"^submodule\..*\.(path|url)$")) {
        while let Some(Ok(e)) = entries.next() {
            let (Ok(name), Ok(value)) = (e.name(), e.value()) else {
                continue;
            };
            let Some(rest) = name.strip_prefix("submodule.") else {
                continue;
            };
            if let Some(sub) = rest.strip_suffix(".path") {
                paths.insert(sub.to_string(), value.trim_end_matches('/').to_string());
            } else if let Some(sub) = rest.strip_suffix(".url") {
                urls.insert(sub.to_string(), value.to_string());
            }
        }
    }
    paths
        .into_iter()
        .filter_map(|(name, path)| urls.get(&name).map(|u| (path, u.clone())))
        .collect()
}

/// Resolves a submodule URL that may be relative (`../lib.git`) to its
/// superproject's URL, as git does.
pub fn resolve_submodule_url(parent: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = parent.trim_end_matches('/').to_string();
    let mut rest = url;
    // The separator before the part removed last: `git@host:app.git` and
    // `../lib.git` give `git@host:lib.git`, as git does.
    let mut sep = '/';
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            // The last directory goes; without one, what follows the
            // colon of `host:path` (git's `chop_last_dir`).
            match (base.rfind('/'), base.rfind(':')) {
                (Some(i), _) => {
                    sep = '/';
                    base.truncate(i);
                }
                (None, Some(i)) => {
                    sep = ':';
                    base.truncate(i);
                }
                (None, None) => {
                    sep = '/';
                    base.clear();
                }
            }
        } else {
            break;
        }
    }
    format!("{base}{sep}{rest}")
}

/// Removes the `*.lock` files a crash (or a killed git) can leave in the
/// object caches under `git_root` (ref, `packed-refs`, `FETCH_HEAD`,
/// `shallow`, `config` locks): one left behind makes every later fetch of
/// that ref fail. Only safe while nothing else uses the caches: farmhand is
/// their only user and calls this at start. Returns the files removed.
pub fn clear_stale_locks(git_root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut stack = vec![git_root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                // Objects are written under temporary names, never locked.
                if e.file_name() != "objects" {
                    stack.push(path);
                }
            } else if ft.is_file()
                && e.file_name().to_string_lossy().ends_with(".lock")
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    removed
}

/// A directory name for an upstream's object cache, stable per URL.
pub fn cache_name(url: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(url.as_bytes());
    format!("{}.git", hex::encode(&h[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `dir/app`: a repository with a `main.c` and `sub` as a submodule
    /// at `path`, committed and tagged `tag`.
    fn app_with_submodule(dir: &Path, sub: &Path, path: &str, tag: &str) -> PathBuf {
        let app = dir.join("app");
        std::fs::create_dir_all(&app).unwrap();
        git(&app, &["init", "-q", "-b", "main"]);
        std::fs::write(app.join("main.c"), "int main(){}\n").unwrap();
        let sub = sub.to_str().unwrap();
        let add = [
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            sub,
            path,
        ];
        git(&app, &add);
        git(&app, &["commit", "-q", "-m", "app"]);
        git(&app, &["tag", tag]);
        app
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .env("GIT_AUTHOR_DATE", "1700000000 +0000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn upstream(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("hello.sh"), "echo hi\n").unwrap();
        std::fs::create_dir_all(dir.join("sub/dir")).unwrap();
        std::fs::write(dir.join("sub/dir/data"), "x").unwrap();
        std::os::unix::fs::symlink("hello.sh", dir.join("link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("hello.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", "one"]);
        git(dir, &["tag", "v1.0.0"]);
        git(dir, &["tag", "-a", "-m", "annotated", "v1.1.0"]);
    }

    #[test]
    fn list_fetch_and_export() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("up");
        upstream(&up);
        let url = up.to_str().unwrap();
        let abort = Abort::new();
        let tags = list_tags(url, Duration::from_secs(30), &abort).unwrap();
        assert_eq!(tags, vec!["v1.0.0", "v1.1.0"]);

        let cache = t.path().join("git").join(cache_name(url));
        let dest = t.path().join("src");
        let f = fetch_tag(
            &cache,
            url,
            "v1.1.0",
            &dest,
            false,
            Duration::from_secs(30),
            &abort,
        )
        .unwrap();
        assert_eq!(f.commit_time, 1_700_000_000);
        assert_eq!(
            std::fs::read_to_string(dest.join("hello.sh")).unwrap(),
            "echo hi\n"
        );
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("hello.sh")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dest.join("hello.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(!dest.join(".git").exists());

        // A second tag of the same upstream fetches no new objects.
        let dest2 = t.path().join("src2");
        let f2 = fetch_tag(
            &cache,
            url,
            "v1.0.0",
            &dest2,
            false,
            Duration::from_secs(30),
            &abort,
        )
        .unwrap();
        assert_eq!(f2.commit, f.commit);
        assert!(dest2.join("sub/dir/data").exists());

        let missing = fetch_tag(
            &cache,
            url,
            "v9",
            &t.path().join("src3"),
            false,
            Duration::from_secs(30),
            &abort,
        );
        assert!(missing.is_err());
    }

    #[test]
    fn submodules_are_exported_when_asked() {
        let t = tempfile::tempdir().unwrap();
        let lib = t.path().join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        git(&lib, &["init", "-q", "-b", "main"]);
        std::fs::write(lib.join("lib.c"), "int x;\n").unwrap();
        git(&lib, &["add", "-A"]);
        git(&lib, &["commit", "-q", "-m", "lib"]);
        let app = app_with_submodule(t.path(), &lib, "vendor/lib", "v2.0");
        let url = app.to_str().unwrap();
        let abort = Abort::new();
        let cache = t.path().join("cache").join(cache_name(url));
        let with = t.path().join("with");
        fetch_tag(
            &cache,
            url,
            "v2.0",
            &with,
            true,
            Duration::from_secs(30),
            &abort,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(with.join("vendor/lib/lib.c")).unwrap(),
            "int x;\n"
        );
        assert!(!with.join("vendor/lib/.git").exists());
        let without = t.path().join("without");
        fetch_tag(
            &cache,
            url,
            "v2.0",
            &without,
            false,
            Duration::from_secs(30),
            &abort,
        )
        .unwrap();
        assert!(without.join("vendor/lib").is_dir());
        assert!(!without.join("vendor/lib/lib.c").exists());
    }

    /// A commit of `upstream` whose tree is the raw `entries` (mode, name,
    /// id), duplicates and all, tagged `tag`.
    fn crafted_tag(upstream: &Path, entries: &[(&str, &str, Oid)], tag: &str) {
        let repo = Repository::open(upstream).unwrap();
        let odb = repo.odb().unwrap();
        let tree = odb.write(ObjectType::Tree, &raw_tree(entries)).unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let sig =
            git2::Signature::new("t", "t@example.org", &git2::Time::new(1_700_000_000, 0)).unwrap();
        let commit = repo
            .commit(None, &sig, &sig, "crafted", &tree, &[])
            .unwrap();
        repo.reference(&format!("refs/tags/{tag}"), commit, false, "")
            .unwrap();
    }

    fn raw_tree(entries: &[(&str, &str, Oid)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, name, id) in entries {
            out.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    #[test]
    fn crafted_trees_never_write_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("up");
        upstream(&up);
        let victim = t.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let victim_dir = t.path().join("victim_dir");
        std::fs::create_dir(&victim_dir).unwrap();
        let repo = Repository::open(&up).unwrap();
        let blob = |data: &[u8]| repo.blob(data).unwrap();
        let to_file = blob(victim.to_str().unwrap().as_bytes());
        let to_dir = blob(victim_dir.to_str().unwrap().as_bytes());
        let pwned = blob(b"pwned");
        let inner = repo
            .odb()
            .unwrap()
            .write(
                ObjectType::Tree,
                &raw_tree(&[("100644", "pwned.txt", pwned)]),
            )
            .unwrap();
        let sub = repo
            .odb()
            .unwrap()
            .write(
                ObjectType::Tree,
                &raw_tree(&[("120000", "lnk", to_dir), ("40000", "lnk", inner)]),
            )
            .unwrap();
        crafted_tag(
            &up,
            &[("120000", "f", to_file), ("100644", "f", pwned)],
            "file",
        );
        crafted_tag(&up, &[("100644", "ok", pwned), ("40000", "d", sub)], "dir");
        crafted_tag(
            &up,
            &[("100644", "f", pwned), ("100755", "f", pwned)],
            "twice",
        );
        crafted_tag(
            &up,
            &[("40000", "f", inner), ("100644", "f", pwned)],
            "dir-file",
        );

        let url = up.to_str().unwrap();
        let cache = t.path().join("git").join(cache_name(url));
        for (tag, path) in [
            ("file", "\"f\""),
            ("dir", "\"d/lnk\""),
            ("twice", "\"f\""),
            ("dir-file", "\"f\""),
        ] {
            let dest = t.path().join(format!("src-{tag}"));
            let e = fetch_tag(
                &cache,
                url,
                tag,
                &dest,
                false,
                Duration::from_secs(30),
                &Abort::new(),
            )
            .unwrap_err();
            assert!(matches!(e, GitError::UnsafeTree { .. }), "{tag}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{url} {tag}: two entries named {path}")),
                "{tag}: {msg}"
            );
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(std::fs::read_dir(&victim_dir).unwrap().count(), 0);
    }

    #[test]
    fn export_does_not_follow_a_link_in_place() {
        // Even when the export directory already holds a link (which the
        // export never makes itself), nothing is written through it.
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("up");
        upstream(&up);
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let dest = t.path().join("src");
        std::fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(&victim, dest.join("sub")).unwrap();
        std::fs::write(victim.join("hello.sh"), "mine").unwrap();
        std::os::unix::fs::symlink(victim.join("hello.sh"), dest.join("hello.sh")).unwrap();
        let url = up.to_str().unwrap();
        let e = fetch_tag(
            &t.path().join("git").join(cache_name(url)),
            url,
            "v1.0.0",
            &dest,
            false,
            Duration::from_secs(30),
            &Abort::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("v1.0.0"), "{e}");
        assert_eq!(
            std::fs::read_to_string(victim.join("hello.sh")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    }

    #[test]
    fn unusable_tags_hide_nothing() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("up");
        upstream(&up);
        // Names git keeps in packed-refs but farmhand cannot use: 10,000
        // characters, and bytes that are not UTF-8.
        let head = Repository::open(&up)
            .unwrap()
            .head()
            .unwrap()
            .target()
            .unwrap();
        let long = format!("v{}", "1".repeat(9_999));
        let mut packed = format!("{head} refs/tags/{long}\n").into_bytes();
        packed.extend_from_slice(format!("{head} refs/tags/v").as_bytes());
        packed.extend_from_slice(b"\xff\n");
        std::fs::write(up.join(".git/packed-refs"), packed).unwrap();
        let url = up.to_str().unwrap();
        let abort = Abort::new();
        let tags = list_tags(url, Duration::from_secs(30), &abort).unwrap();
        let mut expected = vec![
            "v1.0.0".to_string(),
            "v1.1.0".to_string(),
            unusable_tag(long.as_bytes()),
            unusable_tag(b"v\xff"),
        ];
        expected.sort();
        assert_eq!(tags, expected);
        // The usable tags still fetch, and an unusable one fails without
        // naming it whole.
        let cache = t.path().join("git").join(cache_name(url));
        let f = fetch_tag(
            &cache,
            url,
            "v1.1.0",
            &t.path().join("src"),
            false,
            Duration::from_secs(30),
            &abort,
        )
        .unwrap();
        assert!(f.received_objects > 0);
        assert!(t.path().join("src/sub/dir/data").exists());
        let again = fetch_tag(
            &cache,
            url,
            "v1.0.0",
            &t.path().join("src2"),
            false,
            Duration::from_secs(30),
            &abort,
        )
        .unwrap();
        assert_eq!(again.received_objects, 0, "the cache had everything");
        let e = fetch_tag(
            &cache,
            url,
            &long,
            &t.path().join("src3"),
            false,
            Duration::from_secs(30),
            &abort,
        )
        .unwrap_err()
        .to_string();
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn relative_submodule_urls() {
        assert_eq!(
            resolve_submodule_url("https://github.com/a/b.git", "../c.git"),
            "https://github.com/a/c.git"
        );
        assert_eq!(resolve_submodule_url("/srv/x/app", "../lib"), "/srv/x/lib");
        assert_eq!(
            resolve_submodule_url("/srv/app", "https://h/x"),
            "https://h/x"
        );
        assert_eq!(
            resolve_submodule_url("git@host:org/app.git", "../lib.git"),
            "git@host:org/lib.git"
        );
        assert_eq!(
            resolve_submodule_url("git@host:org/app.git", "../../lib.git"),
            "git@host:lib.git"
        );
        // Climbing out of the top gives an absolute path, which
        // `check_submodule_url` refuses below a remote upstream.
        assert_eq!(resolve_submodule_url("git@host:a", "../../x"), "/x");
    }

    #[test]
    fn urls_are_classified_like_libgit2_does() {
        for url in [
            "https://github.com/a/b",
            "HTTPS://github.com/a/b",
            "http://h/x",
            "git://127.0.0.1:9418/x",
            "ssh://git@h/x",
            "git+ssh://h/x",
            "git@github.com:a/b.git",
            "host:path",
        ] {
            assert_eq!(url_kind(url), Ok(UrlKind::Remote), "{url}");
        }
        let t = tempfile::tempdir().unwrap();
        let odd = t.path().join("dir:with-colon");
        std::fs::create_dir(&odd).unwrap();
        let odd = odd.to_str().unwrap().to_string();
        for url in [
            "/srv/git/x",
            "file:///srv/git/x",
            "FILE:///srv/git/x",
            "./x",
            "../x",
            "x",
            "a/b:c",
            odd.as_str(),
        ] {
            assert_eq!(url_kind(url), Ok(UrlKind::Local), "{url}");
        }
        for url in [
            "ext::sh -c touch% /tmp/x",
            "fd::17",
            "ftp://h/x",
            "-oProxyCommand=x",
        ] {
            assert!(url_kind(url).is_err(), "{url}");
        }
        assert_eq!(local_path("file:///a%20b/c"), Path::new("/a b/c"));
        assert_eq!(local_path("file://localhost/a"), Path::new("/a"));
        assert_eq!(local_path("/a%20b"), Path::new("/a%20b"));
    }

    #[test]
    fn local_submodules_never_reach_the_git_caches() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        // Another recipe's object cache, with a commit worth stealing.
        let other = state.join("git").join("other.git");
        std::fs::create_dir_all(&other).unwrap();
        git(&other, &["init", "-q", "-b", "main"]);
        std::fs::write(other.join("secret"), "s\n").unwrap();
        git(&other, &["add", "-A"]);
        git(&other, &["commit", "-q", "-m", "secret"]);
        let app = app_with_submodule(t.path(), &other, "vendor/x", "v1");
        let url = app.to_str().unwrap();
        let e = fetch_tag(
            &state.join("git").join(cache_name(url)),
            url,
            "v1",
            &state.join("sources/app"),
            true,
            Duration::from_secs(30),
            &Abort::new(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("submodule \"vendor/x\"") && msg.contains("git caches"),
            "{msg}"
        );
        assert!(!state.join("sources/app/vendor/x/secret").exists());
    }

    #[test]
    fn unreachable_upstream_is_an_error_naming_it() {
        let e = list_tags(
            "/nonexistent/upstream",
            Duration::from_secs(5),
            &Abort::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/upstream"), "{e}");
    }
}
