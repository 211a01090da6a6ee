//! DESTDIR → deterministic `.tar.zst` per package stanza.
//!
//! Each `[[package]]` stanza of a recipe takes the DESTDIR files its globs
//! match (the first matching stanza wins); a file matched by no stanza fails
//! the packaging and is named. Every package becomes one `.tar.zst` whose
//! bytes depend only on the file names, contents, exec bits, symlink targets
//! and the given mtime: entries are sorted, headers are built by hand with
//! uid/gid 0, no user names and no times other than `mtime`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

use crate::model::name::is_safe_component;
use crate::model::package::PackageSpec;

/// zstd compression level used for every package (fixed for determinism).
const ZSTD_LEVEL: i32 = 6;
/// Size of a tar block.
const BLOCK: usize = 512;
/// Orphan paths listed in an error before "and N more".
const MAX_LISTED_ORPHANS: usize = 20;

/// A package file written by [`package_destdir`].
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Package name.
    pub name: String,
    /// Package version (`<upstream>-<revision>`).
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// Description from the stanza (empty for the default package).
    pub description: String,
    /// Where the file was written (inside `out_dir`).
    pub path: PathBuf,
    /// `<name>_<version>_<arch>.tar.zst`.
    pub file_name: String,
    /// Size of the `.tar.zst` file in bytes.
    pub size_compressed: u64,
    /// Sum of the sizes of the regular files in the package.
    pub size_installed: u64,
    /// SHA-256 of the `.tar.zst` file, lowercase hex.
    pub sha256: String,
}

/// Why packaging failed. Every variant names the path, package or pattern
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// An I/O error on a file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// DESTDIR is not a directory.
    #[error("{}: DESTDIR is not a directory", path.display())]
    NotADirectory {
        /// The DESTDIR given.
        path: PathBuf,
    },
    /// A package name, version or architecture is not usable in a file name.
    #[error("{what} `{value}` is not a safe file name component (letters, digits and `._+-~`, starting with a letter or digit)")]
    UnsafeName {
        /// Which field: "package name", "version" or "architecture".
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// Two stanzas would produce the same artifact file name.
    #[error("package `{package}` is declared twice (artifact file name {file_name})")]
    DuplicatePackage {
        /// The package name.
        package: String,
        /// The colliding file name.
        file_name: String,
    },
    /// A glob in a stanza does not parse.
    #[error("package `{package}`: bad glob `{pattern}`: {source}")]
    BadGlob {
        /// The package whose stanza holds the glob.
        package: String,
        /// The glob as written.
        pattern: String,
        /// The parse error.
        #[source]
        source: globset::Error,
    },
    /// DESTDIR holds something other than directories, regular files and
    /// symlinks.
    #[error("{}: {kind} in DESTDIR cannot be packaged", path.display())]
    SpecialFile {
        /// The offending path.
        path: PathBuf,
        /// What it is ("device", "fifo", "socket", ...).
        kind: &'static str,
    },
    /// Files in DESTDIR matched by no stanza.
    #[error("{}: {} matched by no [[package]] stanza: {}", destdir.display(), plural(*count, "file"), OrphanList(paths, *count))]
    Orphans {
        /// DESTDIR.
        destdir: PathBuf,
        /// The first orphan paths, relative to DESTDIR (at most 20).
        paths: Vec<String>,
        /// The total number of orphans.
        count: usize,
    },
    /// A stanza whose globs match nothing in DESTDIR.
    #[error("package `{package}`: its files globs match nothing in {}", destdir.display())]
    EmptyPackage {
        /// The package name.
        package: String,
        /// DESTDIR.
        destdir: PathBuf,
    },
    /// A file changed size while it was being packaged.
    #[error("{}: file changed while it was being packaged", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
    },
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

struct OrphanList<'a>(&'a [String], usize);

impl fmt::Display for OrphanList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))?;
        if self.1 > self.0.len() {
            write!(f, " and {} more", self.1 - self.0.len())?;
        }
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a DESTDIR path is.
#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File { size: u64, exec: bool },
    Symlink { target: Vec<u8> },
}

/// One path found in DESTDIR, relative, `/`-separated, no leading `./`.
#[derive(Debug, Clone)]
struct Node {
    rel: Vec<u8>,
    kind: Kind,
}

/// Sort key: the path's components compared bytewise, so parents sort right
/// before their children and the order never depends on the directory
/// iteration order.
fn path_key(rel: &[u8]) -> Vec<&[u8]> {
    rel.split(|b| *b == b'/').collect()
}

/// Walks DESTDIR without following symlinks.
fn walk(destdir: &Path) -> Result<Vec<Node>, PackageError> {
    let meta = fs::symlink_metadata(destdir).map_err(io_err(destdir))?;
    if !meta.is_dir() {
        return Err(PackageError::NotADirectory {
            path: destdir.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(destdir.to_path_buf(), Vec::new())];
    while let Some((dir, rel_dir)) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(io_err(&dir))?;
        for ent in rd {
            let ent = ent.map_err(io_err(&dir))?;
            let full = ent.path();
            let mut rel = rel_dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(ent.file_name().as_bytes());
            let md = fs::symlink_metadata(&full).map_err(io_err(&full))?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push((full, rel.clone()));
                Kind::Dir
            } else if ft.is_file() {
                Kind::File {
                    size: md.len(),
                    exec: md.mode() & 0o111 != 0,
                }
            } else if ft.is_symlink() {
                let target = fs::read_link(&full).map_err(io_err(&full))?;
                Kind::Symlink {
                    target: target.into_os_string().into_vec(),
                }
            } else {
                let kind = if ft.is_block_device() {
                    "block device"
                } else if ft.is_char_device() {
                    "character device"
                } else if ft.is_fifo() {
                    "fifo"
                } else if ft.is_socket() {
                    "socket"
                } else {
                    "special file"
                };
                return Err(PackageError::SpecialFile { path: full, kind });
            };
            out.push(Node { rel, kind });
        }
    }
    Ok(out)
}

fn check_safe(what: &'static str, value: &str) -> Result<(), PackageError> {
    if is_safe_component(value) {
        Ok(())
    } else {
        Err(PackageError::UnsafeName {
            what,
            value: value.to_string(),
        })
    }
}

fn build_globset(spec: &PackageSpec) -> Result<GlobSet, PackageError> {
    let mut b = GlobSetBuilder::new();
    for pattern in &spec.files {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|source| PackageError::BadGlob {
                package: spec.name.clone(),
                pattern: pattern.clone(),
                source,
            })?;
        b.add(glob);
    }
    b.build().map_err(|source| PackageError::BadGlob {
        package: spec.name.clone(),
        pattern: spec.files.join(", "),
        source,
    })
}

/// Packages DESTDIR into one deterministic `.tar.zst` per stanza, written to
/// `out_dir` as `<name>_<version>_<arch>.tar.zst`.
///
/// With no stanzas, one package named `default_name` for `default_arch`
/// holds all of DESTDIR (empty directories included; an empty DESTDIR gives
/// a valid empty package). Otherwise each regular file or symlink goes to the
/// first stanza whose globs match its path relative to DESTDIR; a file
/// matched by none, a stanza matching nothing, a bad glob, a device, fifo or
/// socket anywhere in DESTDIR, or a name unusable as a file name component is
/// an error. Symlinks are stored as symlinks, never followed; each archive
/// holds the parent directories of its entries (mode 0755).
///
/// The bytes depend only on paths, contents, exec bits, symlink targets,
/// `version` and `mtime`: never on DESTDIR's times, owners, umask or
/// directory iteration order.
pub fn package_destdir(
    destdir: &Path,
    specs: &[PackageSpec],
    default_name: &str,
    default_arch: &str,
    version: &str,
    mtime: u64,
    out_dir: &Path,
) -> Result<Vec<Artifact>, PackageError> {
    check_safe("version", version)?;
    let default_spec;
    let (specs, whole_tree): (&[PackageSpec], bool) = if specs.is_empty() {
        default_spec = [PackageSpec {
            name: default_name.to_string(),
            architecture: default_arch.to_string(),
            description: String::new(),
            files: Vec::new(),
        }];
        (&default_spec, true)
    } else {
        (specs, false)
    };
    let mut file_names = HashSet::new();
    for spec in specs {
        check_safe("package name", &spec.name)?;
        check_safe("architecture", &spec.architecture)?;
        let file_name = artifact_file_name(&spec.name, version, &spec.architecture);
        if !file_names.insert(file_name.clone()) {
            return Err(PackageError::DuplicatePackage {
                package: spec.name.clone(),
                file_name,
            });
        }
    }
    let globsets = if whole_tree {
        Vec::new()
    } else {
        specs
            .iter()
            .map(build_globset)
            .collect::<Result<Vec<_>, _>>()?
    };

    let nodes = walk(destdir)?;

    // Route every node to a package: index into `specs`.
    let mut members: Vec<Vec<&Node>> = vec![Vec::new(); specs.len()];
    let mut orphans: Vec<&Node> = Vec::new();
    for node in &nodes {
        if whole_tree {
            members[0].push(node);
            continue;
        }
        if matches!(node.kind, Kind::Dir) {
            continue;
        }
        let candidate = Path::new(OsStr::from_bytes(&node.rel));
        match globsets.iter().position(|g| g.is_match(candidate)) {
            Some(i) => members[i].push(node),
            None => orphans.push(node),
        }
    }
    if !orphans.is_empty() {
        orphans.sort_by(|a, b| path_key(&a.rel).cmp(&path_key(&b.rel)));
        return Err(PackageError::Orphans {
            destdir: destdir.to_path_buf(),
            paths: orphans
                .iter()
                .take(MAX_LISTED_ORPHANS)
                .map(|n| String::from_utf8_lossy(&n.rel).into_owned())
                .collect(),
            count: orphans.len(),
        });
    }
    if !whole_tree {
        if let Some(i) = members.iter().position(std::vec::Vec::is_empty) {
            return Err(PackageError::EmptyPackage {
                package: specs[i].name.clone(),
                destdir: destdir.to_path_buf(),
            });
        }
    }

    let mut artifacts = Vec::with_capacity(specs.len());
    for (spec, nodes) in specs.iter().zip(members) {
        artifacts.push(write_package(
            destdir, spec, nodes, version, mtime, out_dir,
        )?);
    }
    Ok(artifacts)
}

fn artifact_file_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}_{version}_{arch}.tar.zst")
}

/// Writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where a write failed: the output file, or a DESTDIR file being read.
enum WriteFail {
    Out(io::Error),
    In(PackageError),
}

fn write_package(
    destdir: &Path,
    spec: &PackageSpec,
    nodes: Vec<&Node>,
    version: &str,
    mtime: u64,
    out_dir: &Path,
) -> Result<Artifact, PackageError> {
    // Entries: the members plus every parent directory, sorted.
    let dir_kind = Kind::Dir;
    let mut entries: BTreeMap<Vec<&[u8]>, (&[u8], &Kind)> = BTreeMap::new();
    let mut dirs: BTreeSet<&[u8]> = BTreeSet::new();
    let mut size_installed = 0u64;
    for node in &nodes {
        if let Kind::File { size, .. } = node.kind {
            size_installed = size_installed.saturating_add(size);
        }
        entries.insert(path_key(&node.rel), (&node.rel, &node.kind));
        let mut end = node.rel.len();
        while let Some(pos) = node.rel[..end].iter().rposition(|b| *b == b'/') {
            dirs.insert(&node.rel[..pos]);
            end = pos;
        }
    }
    for d in dirs {
        entries.entry(path_key(d)).or_insert((d, &dir_kind));
    }

    let file_name = artifact_file_name(&spec.name, version, &spec.architecture);
    let final_path = out_dir.join(&file_name);
    // Package files are published as they are written here: readable like
    // any file the daemon creates (0644 less its umask), not tempfile's 0600.
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(out_dir)
        .map_err(io_err(out_dir))?;
    let file = tmp.as_file().try_clone().map_err(io_err(tmp.path()))?;
    let out = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        count: 0,
    };
    let result = (|| -> Result<HashingWriter<BufWriter<File>>, WriteFail> {
        let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(WriteFail::Out)?;
        enc.include_checksum(true).map_err(WriteFail::Out)?;
        enc.include_contentsize(false).map_err(WriteFail::Out)?;
        for (rel, kind) in entries.values() {
            write_entry(&mut enc, destdir, rel, kind, mtime)?;
        }
        // End of archive: two zero blocks.
        enc.write_all(&[0u8; 2 * BLOCK]).map_err(WriteFail::Out)?;
        enc.finish().map_err(WriteFail::Out)
    })();
    let mut out = match result {
        Ok(out) => out,
        Err(WriteFail::Out(e)) => return Err(io_err(tmp.path())(e)),
        Err(WriteFail::In(e)) => return Err(e),
    };
    out.flush().map_err(io_err(tmp.path()))?;
    let HashingWriter {
        inner,
        hasher,
        count,
    } = out;
    drop(inner);
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    tmp.persist(&final_path)
        .map_err(|e| io_err(&final_path)(e.error))?;
    Ok(Artifact {
        name: spec.name.clone(),
        version: version.to_string(),
        architecture: spec.architecture.clone(),
        description: spec.description.clone(),
        path: final_path,
        file_name,
        size_compressed: count,
        size_installed,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Writes one tar entry (GNU headers, long names through `././@LongLink`).
fn write_entry<W: Write>(
    w: &mut W,
    destdir: &Path,
    rel: &[u8],
    kind: &Kind,
    mtime: u64,
) -> Result<(), WriteFail> {
    let mut name = rel.to_vec();
    let mut header = tar::Header::new_gnu();
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    match kind {
        Kind::Dir => {
            name.push(b'/');
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
        }
        Kind::File { exec, .. } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if *exec { 0o755 } else { 0o644 });
        }
        Kind::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            if target.len() > 100 {
                write_long(w, b'K', target, mtime).map_err(WriteFail::Out)?;
            }
            let n = target.len().min(100);
            header.as_old_mut().linkname[..n].copy_from_slice(&target[..n]);
        }
    }
    if name.len() > 100 {
        write_long(w, b'L', &name, mtime).map_err(WriteFail::Out)?;
    }
    let n = name.len().min(100);
    header.as_old_mut().name[..n].copy_from_slice(&name[..n]);

    if let Kind::File { .. } = kind {
        let full = destdir.join(OsStr::from_bytes(rel));
        let mut file = File::open(&full).map_err(|e| WriteFail::In(io_err(&full)(e)))?;
        // Size from the opened file, so header and content agree.
        let size = file
            .metadata()
            .map_err(|e| WriteFail::In(io_err(&full)(e)))?
            .len();
        header.set_size(size);
        header.set_cksum();
        w.write_all(header.as_bytes()).map_err(WriteFail::Out)?;
        let mut remaining = size;
        let mut buf = vec![0u8; 64 * 1024];
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let got = match file.read(&mut buf[..want]) {
                Ok(0) => return Err(WriteFail::In(PackageError::FileChanged { path: full })),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WriteFail::In(io_err(&full)(e))),
            };
            w.write_all(&buf[..got]).map_err(WriteFail::Out)?;
            remaining -= got as u64;
        }
        // A file that grew since its size was taken would be truncated.
        match file.read(&mut buf[..1]) {
            Ok(0) => {}
            Ok(_) => return Err(WriteFail::In(PackageError::FileChanged { path: full })),
            Err(e) => return Err(WriteFail::In(io_err(&full)(e))),
        }
        pad(w, size).map_err(WriteFail::Out)?;
    } else {
        header.set_cksum();
        w.write_all(header.as_bytes()).map_err(WriteFail::Out)?;
    }
    Ok(())
}

/// Writes a GNU long-name (`L`) or long-link (`K`) pseudo entry.
fn write_long<W: Write>(w: &mut W, kind: u8, data: &[u8], mtime: u64) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    let marker = b"././@LongLink";
    header.as_old_mut().name[..marker.len()].copy_from_slice(marker);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(data.len() as u64 + 1);
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_cksum();
    w.write_all(header.as_bytes())?;
    w.write_all(data)?;
    w.write_all(&[0])?;
    pad(w, data.len() as u64 + 1)
}

fn pad<W: Write>(w: &mut W, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::{Duration, SystemTime};

    fn write(root: &Path, rel: &str, content: &[u8], mode: u32) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn spec(name: &str, files: &[&str]) -> PackageSpec {
        PackageSpec {
            name: name.to_string(),
            architecture: "x86_64".to_string(),
            description: format!("{name} package"),
            files: files.iter().map(std::string::ToString::to_string).collect(),
        }
    }

    #[derive(Debug, PartialEq)]
    struct Entry {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        mtime: u64,
        uid: u64,
        gid: u64,
        content: Vec<u8>,
        link: Option<String>,
    }

    fn read_archive(path: &Path) -> Vec<Entry> {
        let dec = zstd::stream::read::Decoder::new(File::open(path).unwrap()).unwrap();
        let mut ar = tar::Archive::new(dec);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            out.push(Entry {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                mtime: h.mtime().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                content,
                link: e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
            });
        }
        out
    }

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    /// Builds the sample tree, creating files in the given order.
    fn sample_tree(root: &Path, reverse: bool, mtime: SystemTime, mode_plain: u32) {
        let mut files: Vec<(&str, &[u8], u32)> = vec![
            ("usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
            ("usr/lib/libz.so.1.3", b"ELF pretend", mode_plain),
            ("usr/share/doc/z/README", b"readme", mode_plain),
            ("usr/share/doc/z/deep/er/NOTES", b"notes", mode_plain),
            ("etc/z.conf", b"conf=1\n", mode_plain),
        ];
        if reverse {
            files.reverse();
        }
        for (rel, content, mode) in files {
            write(root, rel, content, mode);
            let f = File::options().write(true).open(root.join(rel)).unwrap();
            f.set_modified(mtime).unwrap();
        }
        symlink("libz.so.1.3", root.join("usr/lib/libz.so.1")).unwrap();
        fs::create_dir_all(root.join("var/empty")).unwrap();
    }

    #[test]
    fn same_tree_gives_same_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let out_a = tempfile::tempdir().unwrap();
        let out_b = tempfile::tempdir().unwrap();
        sample_tree(
            a.path(),
            false,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            0o644,
        );
        sample_tree(b.path(), true, SystemTime::now(), 0o600);
        for specs in [
            vec![],
            vec![spec("z-doc", &["usr/share/**"]), spec("z", &["**"])],
        ] {
            let ra = package_destdir(
                a.path(),
                &specs,
                "z",
                "x86_64",
                "1.3.2-1",
                1_700_000_000,
                out_a.path(),
            )
            .unwrap();
            let rb = package_destdir(
                b.path(),
                &specs,
                "z",
                "x86_64",
                "1.3.2-1",
                1_700_000_000,
                out_b.path(),
            )
            .unwrap();
            assert_eq!(ra.len(), rb.len());
            for (x, y) in ra.iter().zip(&rb) {
                assert_eq!(fs::read(&x.path).unwrap(), fs::read(&y.path).unwrap());
                assert_eq!(x.sha256, y.sha256);
                assert_eq!(x.file_name, y.file_name);
            }
        }
        // No temporary file is left in out_dir.
        let names: Vec<_> = fs::read_dir(out_a.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".tar.zst")), "{names:?}");
    }

    #[test]
    fn package_files_are_readable_like_ordinary_files() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write(d.path(), "usr/bin/x", b"x", 0o755);
        let arts = package_destdir(d.path(), &[], "x", "x86_64", "1-1", 0, out.path()).unwrap();
        // What the process umask lets an ordinary new file have.
        let reference = out.path().join("reference");
        fs::write(&reference, b"").unwrap();
        let want = fs::metadata(&reference).unwrap().permissions().mode() & 0o644;
        let got = fs::metadata(&arts[0].path).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, want, "package file mode {got:o}, want {want:o}");
    }

    #[test]
    fn whole_tree_content_extracts() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        sample_tree(d.path(), false, SystemTime::now(), 0o640);
        let arts = package_destdir(
            d.path(),
            &[],
            "zlib",
            "aarch64",
            "1.3.2-1",
            1234,
            out.path(),
        )
        .unwrap();
        assert_eq!(arts.len(), 1);
        let a = &arts[0];
        assert_eq!(a.file_name, "zlib_1.3.2-1_aarch64.tar.zst");
        assert_eq!(a.path, out.path().join(&a.file_name));
        assert_eq!(a.description, "");
        let bytes = fs::read(&a.path).unwrap();
        assert_eq!(a.size_compressed, bytes.len() as u64);
        assert_eq!(a.sha256, hex::encode(Sha256::digest(&bytes)));
        let expect_installed = [18u64, 11, 6, 5, 7].iter().sum::<u64>();
        assert_eq!(a.size_installed, expect_installed);

        let entries = read_archive(&a.path);
        assert_eq!(
            paths(&entries),
            [
                "etc/",
                "etc/z.conf",
                "usr/",
                "usr/bin/",
                "usr/bin/tool",
                "usr/lib/",
                "usr/lib/libz.so.1",
                "usr/lib/libz.so.1.3",
                "usr/share/",
                "usr/share/doc/",
                "usr/share/doc/z/",
                "usr/share/doc/z/README",
                "usr/share/doc/z/deep/",
                "usr/share/doc/z/deep/er/",
                "usr/share/doc/z/deep/er/NOTES",
                "var/",
                "var/empty/",
            ]
        );
        for e in &entries {
            assert_eq!((e.mtime, e.uid, e.gid), (1234, 0, 0), "{}", e.path);
            match e.path.as_str() {
                "usr/bin/tool" => {
                    assert_eq!(e.mode, 0o755);
                    assert_eq!(e.content, b"#!/bin/sh\necho hi\n");
                }
                "etc/z.conf" => {
                    assert_eq!(e.mode, 0o644);
                    assert_eq!(e.content, b"conf=1\n");
                }
                "usr/lib/libz.so.1" => {
                    assert_eq!(e.kind, tar::EntryType::Symlink);
                    assert_eq!(e.link.as_deref(), Some("libz.so.1.3"));
                }
                p if p.ends_with('/') => {
                    assert_eq!(e.kind, tar::EntryType::Directory);
                    assert_eq!(e.mode, 0o755);
                }
                _ => assert_eq!(e.kind, tar::EntryType::Regular),
            }
        }

        // And it unpacks cleanly with the tar crate.
        let dest = tempfile::tempdir().unwrap();
        let dec = zstd::stream::read::Decoder::new(File::open(&a.path).unwrap()).unwrap();
        tar::Archive::new(dec).unpack(dest.path()).unwrap();
        assert_eq!(
            fs::read(dest.path().join("usr/share/doc/z/deep/er/NOTES")).unwrap(),
            b"notes"
        );
        assert_eq!(
            fs::read_link(dest.path().join("usr/lib/libz.so.1")).unwrap(),
            Path::new("libz.so.1.3")
        );
        assert!(dest.path().join("var/empty").is_dir());
    }

    #[test]
    fn stanzas_first_match_wins() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        sample_tree(d.path(), false, SystemTime::now(), 0o644);
        let specs = vec![
            spec("libz", &["usr/lib/libz.so.1*"]),
            spec("z-doc", &["usr/share/doc/**"]),
            // Would also match the libs and docs, but comes later.
            spec("z-rest", &["**"]),
        ];
        let arts =
            package_destdir(d.path(), &specs, "z", "x86_64", "1.0-1", 0, out.path()).unwrap();
        let names: Vec<_> = arts.iter().map(|a| a.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "libz_1.0-1_x86_64.tar.zst",
                "z-doc_1.0-1_x86_64.tar.zst",
                "z-rest_1.0-1_x86_64.tar.zst"
            ]
        );
        assert_eq!(arts[1].description, "z-doc package");
        assert_eq!(
            paths(&read_archive(&arts[0].path)),
            [
                "usr/",
                "usr/lib/",
                "usr/lib/libz.so.1",
                "usr/lib/libz.so.1.3"
            ]
        );
        assert_eq!(
            paths(&read_archive(&arts[1].path)),
            [
                "usr/",
                "usr/share/",
                "usr/share/doc/",
                "usr/share/doc/z/",
                "usr/share/doc/z/README",
                "usr/share/doc/z/deep/",
                "usr/share/doc/z/deep/er/",
                "usr/share/doc/z/deep/er/NOTES",
            ]
        );
        // Empty directories are not packaged when stanzas are given.
        assert_eq!(
            paths(&read_archive(&arts[2].path)),
            ["etc/", "etc/z.conf", "usr/", "usr/bin/", "usr/bin/tool"]
        );
        assert_eq!(arts[0].size_installed, 11);
    }

    #[test]
    fn star_stays_within_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write(d.path(), "usr/share/doc/a", b"a", 0o644);
        write(d.path(), "usr/share/doc/sub/b", b"b", 0o644);
        let specs = vec![spec("doc", &["usr/share/doc/*"])];
        let err =
            package_destdir(d.path(), &specs, "x", "x86_64", "1-1", 0, out.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, PackageError::Orphans { count: 1, .. }),
            "{msg}"
        );
        assert!(msg.contains("usr/share/doc/sub/b"), "{msg}");
        assert!(!msg.contains("usr/share/doc/a"), "{msg}");
    }

    #[test]
    fn orphans_are_named_and_capped() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write(d.path(), "usr/bin/tool", b"x", 0o755);
        for i in 0..25 {
            write(d.path(), &format!("opt/f{i:02}"), b"x", 0o644);
        }
        let specs = vec![spec("tool", &["usr/bin/*"])];
        let err =
            package_destdir(d.path(), &specs, "x", "x86_64", "1-1", 0, out.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("25 files matched by no [[package]] stanza"),
            "{msg}"
        );
        assert!(msg.contains("opt/f00") && msg.contains("opt/f19"), "{msg}");
        assert!(!msg.contains("opt/f20"), "{msg}");
        assert!(msg.ends_with("and 5 more"), "{msg}");
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn empty_stanza_bad_glob_and_unsafe_names() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write(d.path(), "usr/bin/tool", b"x", 0o755);
        let specs = vec![spec("tool", &["usr/**"]), spec("ghost", &["opt/**"])];
        let err =
            package_destdir(d.path(), &specs, "x", "x86_64", "1-1", 0, out.path()).unwrap_err();
        assert!(
            matches!(&err, PackageError::EmptyPackage { package, .. } if package == "ghost"),
            "{err}"
        );
        assert!(err.to_string().contains("ghost"));

        let specs = vec![spec("tool", &["usr/[bin"])];
        let err =
            package_destdir(d.path(), &specs, "x", "x86_64", "1-1", 0, out.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("tool") && msg.contains("usr/[bin"), "{msg}");

        for (name, arch, version) in [
            ("../x", "x86_64", "1-1"),
            ("x", "x/86", "1-1"),
            ("x", "x86_64", "1;rm"),
        ] {
            let err =
                package_destdir(d.path(), &[], name, arch, version, 0, out.path()).unwrap_err();
            assert!(matches!(err, PackageError::UnsafeName { .. }), "{err}");
        }
        let specs = vec![spec("tool", &["usr/**"]), spec("tool", &["**"])];
        let err =
            package_destdir(d.path(), &specs, "x", "x86_64", "1-1", 0, out.path()).unwrap_err();
        assert!(
            matches!(err, PackageError::DuplicatePackage { .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_destdir_gives_valid_package() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let arts =
            package_destdir(d.path(), &[], "empty", "noarch", "0.1-1", 5, out.path()).unwrap();
        assert_eq!(arts.len(), 1);
        assert_eq!(arts[0].size_installed, 0);
        assert!(read_archive(&arts[0].path).is_empty());
        let again = tempfile::tempdir().unwrap();
        let arts2 =
            package_destdir(d.path(), &[], "empty", "noarch", "0.1-1", 5, again.path()).unwrap();
        assert_eq!(arts[0].sha256, arts2[0].sha256);
        // With stanzas an empty DESTDIR is an empty stanza.
        let err = package_destdir(
            d.path(),
            &[spec("e", &["**"])],
            "x",
            "x",
            "1-1",
            0,
            out.path(),
        );
        assert!(matches!(err, Err(PackageError::EmptyPackage { .. })));
    }

    #[test]
    fn special_files_and_missing_destdir_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("run")).unwrap();
        let sock = d.path().join("run/s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = package_destdir(d.path(), &[], "x", "x86_64", "1-1", 0, out.path()).unwrap_err();
        assert!(
            matches!(err, PackageError::SpecialFile { kind: "socket", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("run/s.sock"));

        let missing = d.path().join("nope");
        let err = package_destdir(&missing, &[], "x", "x86_64", "1-1", 0, out.path()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn symlinks_are_not_followed_and_long_names_work() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        // A symlink to a directory outside DESTDIR, and a dangling one.
        symlink("/etc", d.path().join("etc-link")).unwrap();
        symlink("does/not/exist", d.path().join("dangling")).unwrap();
        let long_dir = "d".repeat(90);
        let long_rel = format!("{long_dir}/{}", "f".repeat(80));
        write(d.path(), &long_rel, b"long", 0o644);
        let long_target = "t".repeat(150);
        symlink(&long_target, d.path().join("long-link")).unwrap();
        let arts = package_destdir(d.path(), &[], "x", "x86_64", "1-1", 0, out.path()).unwrap();
        let entries = read_archive(&arts[0].path);
        let by_path: HashMap<_, _> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
        assert_eq!(by_path["etc-link"].link.as_deref(), Some("/etc"));
        assert_eq!(by_path["dangling"].link.as_deref(), Some("does/not/exist"));
        assert_eq!(
            by_path["long-link"].link.as_deref(),
            Some(long_target.as_str())
        );
        assert_eq!(by_path[long_rel.as_str()].content, b"long");
        assert_eq!(arts[0].size_installed, 4);
    }
    use std::collections::HashMap;
}
