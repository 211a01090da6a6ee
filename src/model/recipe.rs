//! Recipe files and the roster.
//!
//! A recipe is `recipes_dir/<id>/recipe.toml` (or `peipkg.toml`). farmhand
//! owns `[upstream]` and `[watch]` and rejects unknown keys there; `[meta]`
//! and `[[package]]` are shared with peipkg-build, so farmhand reads the keys
//! it knows and tolerates the rest, as it tolerates any other section. An
//! invalid recipe is recorded in the roster's `invalid` map and never stops
//! the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::model::config::{parse_duration, toml_error, MIN_POLL_INTERVAL};
use crate::model::name::is_safe_component;
use crate::model::package::PackageSpec;
use crate::model::tags::TagPattern;
use crate::model::version;

/// Which file format a recipe came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeFile {
    /// `recipe.toml`.
    Farmhand,
    /// `peipkg.toml`.
    Peipkg,
}

/// How much history a recipe with nothing published builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// Every matching tag not yet published.
    All,
    /// Only the newest tag, while nothing is published yet.
    Latest,
}

/// A validated recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The directory name.
    pub id: String,
    /// The recipe directory.
    pub dir: PathBuf,
    /// The recipe file.
    pub path: PathBuf,
    /// Which format the file is.
    pub file: RecipeFile,
    /// `[meta].build_script`, relative to `dir`.
    pub build_script: String,
    /// `[meta].license`.
    pub license: String,
    /// `[meta].homepage`.
    pub homepage: String,
    /// `[meta].description`.
    pub description: String,
    /// The `[[package]]` stanzas (empty: one package named after the id).
    pub packages: Vec<PackageSpec>,
    /// `[upstream]`; `None` means the recipe is never auto-built.
    pub upstream: Option<Upstream>,
    /// `[watch]`.
    pub watch: Watch,
}

/// `[upstream]`: where the source lives and which tags are versions.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The git URL.
    pub git: String,
    /// The compiled tag pattern.
    pub tag_pattern: TagPattern,
    /// The package revision (`peios_revision`, alias `revision`).
    pub revision: u64,
    /// Fetch submodules recursively.
    pub submodules: bool,
    /// The lowest upstream version built.
    pub min_version: Option<String>,
}

/// `[watch]`: how new versions are learned about.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Accept webhooks for this upstream, from any forge (`[watch].webhook`,
    /// or the anchor's `github_webhook`, which means the same).
    pub webhook: bool,
    /// The poll interval (the config default when the recipe sets none).
    pub poll_interval: Duration,
    /// Whether the recipe set its own interval.
    pub poll_interval_set: bool,
    /// How much history to build.
    pub backlog: Backlog,
}

impl Recipe {
    /// The build script's path.
    pub fn script_path(&self) -> PathBuf {
        self.dir.join(&self.build_script)
    }

    /// True when the recipe is polled and built automatically.
    pub fn is_watched(&self) -> bool {
        self.upstream.is_some()
    }

    /// True when `upstream_version` is at or above `min_version`.
    pub fn admits(&self, upstream_version: &str) -> bool {
        match self
            .upstream
            .as_ref()
            .and_then(|u| u.min_version.as_deref())
        {
            Some(min) => version::compare_upstream(upstream_version, min).is_ge(),
            None => true,
        }
    }

    /// Whether a change between `self` and `other` calls for an immediate
    /// re-poll on reload (anything that changes what is built).
    pub fn differs_for_polling(&self, other: &Recipe) -> bool {
        let key = |r: &Recipe| {
            r.upstream.as_ref().map(|u| {
                (
                    u.git.clone(),
                    u.tag_pattern.as_str().to_string(),
                    u.revision,
                    u.submodules,
                    u.min_version.clone(),
                )
            })
        };
        key(self) != key(other)
            || self.watch.poll_interval != other.watch.poll_interval
            || self.watch.backlog != other.watch.backlog
            || self.watch.webhook != other.watch.webhook
            || self.build_script != other.build_script
            || self.packages != other.packages
    }
}

/// The recipes of a farm: valid ones by id, invalid ones with their error.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// Valid recipes by id.
    pub recipes: BTreeMap<String, Arc<Recipe>>,
    /// Invalid recipes: id → message naming the file, key and problem.
    pub invalid: BTreeMap<String, String>,
}

impl Roster {
    /// Ids of the valid recipes, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.recipes.keys().cloned().collect()
    }

    /// True when some valid recipe accepts webhooks.
    pub fn any_webhook(&self) -> bool {
        self.recipes.values().any(|r| r.watch.webhook)
    }
}

/// A whole-roster failure: the recipes directory itself cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read recipes directory: {source}", dir.display())]
pub struct RosterError {
    /// The recipes directory.
    pub dir: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Loads every recipe under `dir`. Only an unreadable directory is an
/// error; a bad recipe lands in [`Roster::invalid`].
pub fn load_roster(dir: &Path, default_interval: Duration) -> Result<Roster, RosterError> {
    let rerr = |source| RosterError {
        dir: dir.to_path_buf(),
        source,
    };
    let mut roster = Roster::default();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(rerr)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(rerr)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let sub = entry.path();
        if !sub.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let farm = sub.join("recipe.toml");
        let peipkg = sub.join("peipkg.toml");
        let (path, file) = match (farm.exists(), peipkg.exists()) {
            (false, false) => continue,
            (true, true) => {
                roster.invalid.insert(
                    name,
                    format!(
                        "{}: both recipe.toml and peipkg.toml are present; keep one",
                        sub.display()
                    ),
                );
                continue;
            }
            (true, false) => (farm, RecipeFile::Farmhand),
            (false, true) => (peipkg, RecipeFile::Peipkg),
        };
        match load_recipe(&name, &sub, &path, file, default_interval) {
            Ok(r) => {
                roster.recipes.insert(name, Arc::new(r));
            }
            Err(e) => {
                roster.invalid.insert(name, e);
            }
        }
    }
    Ok(roster)
}

/// The recipe id rule: `^[a-z0-9][a-z0-9._+-]*$`.
pub fn is_valid_id(id: &str) -> bool {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[a-z0-9][a-z0-9._+-]*$").expect("static regex"))
        .is_match(id)
        && id.len() <= 128
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
struct RawRecipe {
    #[serde(default)]
    meta: RawMeta,
    #[serde(default)]
    package: Vec<RawPackage>,
    upstream: Option<RawUpstream>,
    #[serde(default)]
    watch: RawWatch,
}

#[derive(Deserialize, Default)]
#[serde(expecting = "a table")]
struct RawMeta {
    build_script: Option<String>,
    #[serde(default)]
    license: String,
    #[serde(default)]
    homepage: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(expecting = "a table")]
struct RawPackage {
    name: Option<String>,
    architecture: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawUpstream {
    git: Option<String>,
    tag_pattern: Option<String>,
    #[serde(alias = "revision")]
    peios_revision: Option<i64>,
    #[serde(default)]
    submodules: bool,
    min_version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawWatch {
    webhook: Option<bool>,
    github_webhook: Option<bool>,
    poll_interval: Option<String>,
    backlog: Option<String>,
}

fn load_recipe(
    id: &str,
    dir: &Path,
    path: &Path,
    file: RecipeFile,
    default_interval: Duration,
) -> Result<Recipe, String> {
    if !is_valid_id(id) {
        return Err(invalid_id(id, dir));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse_recipe(id, dir, path, file, &text, default_interval)
}

fn invalid_id(id: &str, dir: &Path) -> String {
    format!(
        "{}: recipe id {id:?} is invalid (must match ^[a-z0-9][a-z0-9._+-]*$)",
        dir.display()
    )
}

/// Parses and validates the text of one recipe file without touching the
/// filesystem. `id` is the recipe id (the directory name), `dir` the recipe
/// directory and `path` the file, both used for messages and for
/// [`Recipe::script_path`]; `default_interval` is `[poll].default_interval`.
///
/// # Errors
///
/// A message naming `path` (or `dir`, for a bad id), the key and the problem.
pub fn parse_recipe(
    id: &str,
    dir: &Path,
    path: &Path,
    file: RecipeFile,
    text: &str,
    default_interval: Duration,
) -> Result<Recipe, String> {
    let shown = path.display();
    let err = |m: String| format!("{shown}: {m}");
    if !is_valid_id(id) {
        return Err(invalid_id(id, dir));
    }
    let raw: RawRecipe = toml::from_str(text).map_err(|e| err(toml_error(&e, text)))?;

    let build_script = raw.meta.build_script.unwrap_or_else(|| "build.sh".into());
    let script = Path::new(&build_script);
    if script.is_absolute()
        || script
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        // `.` or `./` name the recipe directory itself, not a script.
        || !script
            .components()
            .any(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(err(format!(
            "meta.build_script: {build_script:?} must be a relative path inside the recipe directory"
        )));
    }

    let host_arch = std::env::consts::ARCH;
    let mut packages = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in raw.package.into_iter().enumerate() {
        let name = p
            .name
            .ok_or_else(|| err(format!("package[{i}].name: is required")))?;
        if !is_safe_component(&name) {
            return Err(err(format!(
                "package[{i}].name: {name:?} must start with a letter or digit and hold only letters, digits and ._+-~"
            )));
        }
        let architecture = p.architecture.unwrap_or_else(|| host_arch.to_string());
        if !is_safe_component(&architecture) {
            return Err(err(format!(
                "package[{i}].architecture: {architecture:?} is not a valid architecture name"
            )));
        }
        if !seen.insert((name.clone(), architecture.clone())) {
            return Err(err(format!("package[{i}].name: {name:?} appears twice")));
        }
        if p.files.is_empty() {
            return Err(err(format!(
                "package[{i}].files: package {name:?} lists no files"
            )));
        }
        let mut files = Vec::with_capacity(p.files.len());
        for g in &p.files {
            // Globs match paths relative to DESTDIR. A leading `/` names the
            // same place (`/usr/lib/**` is DESTDIR's usr/lib); `..` never
            // appears in such a path, so a glob holding it matches nothing.
            let rel = g.trim_start_matches('/');
            if rel.is_empty() || rel.split('/').any(|c| c == "..") {
                return Err(err(format!(
                    "package[{i}].files: {g:?} must be a glob of paths inside DESTDIR (not empty and no ..)"
                )));
            }
            if let Err(e) = globset::GlobBuilder::new(rel)
                .literal_separator(true)
                .build()
            {
                return Err(err(format!("package[{i}].files: {g:?}: {e}")));
            }
            files.push(rel.to_string());
        }
        packages.push(PackageSpec {
            name,
            architecture,
            description: p.description,
            files,
        });
    }

    let upstream = match raw.upstream {
        None => None,
        Some(u) => {
            let git = u
                .git
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| err("upstream.git: is required".into()))?;
            let pat = u
                .tag_pattern
                .filter(|s| !s.is_empty())
                .ok_or_else(|| err("upstream.tag_pattern: is required".into()))?;
            let tag_pattern =
                TagPattern::new(&pat).map_err(|e| err(format!("upstream.tag_pattern: {e}")))?;
            let revision = match u.peios_revision {
                None => 1,
                Some(n) if n >= 1 => n as u64,
                Some(n) => {
                    return Err(err(format!(
                        "upstream.peios_revision: {n} must be 1 or more"
                    )))
                }
            };
            let min_version = match u.min_version.filter(|s| !s.is_empty()) {
                None => None,
                Some(m) if version::is_valid_upstream(&m) => Some(m),
                Some(m) => {
                    return Err(err(format!(
                        "upstream.min_version: {m:?} is not a valid upstream version"
                    )))
                }
            };
            Some(Upstream {
                git,
                tag_pattern,
                revision,
                submodules: u.submodules,
                min_version,
            })
        }
    };

    let (poll_interval, poll_interval_set) = match raw.watch.poll_interval {
        None => (default_interval, false),
        Some(s) => {
            let d = parse_duration(&s).map_err(|e| err(format!("watch.poll_interval: {e}")))?;
            if d < MIN_POLL_INTERVAL {
                return Err(err(format!(
                    "watch.poll_interval: {s:?} is below the minimum of 1m"
                )));
            }
            (d, true)
        }
    };
    let webhook = match (raw.watch.webhook, raw.watch.github_webhook) {
        (Some(a), Some(b)) if a != b => {
            return Err(err(format!(
                "watch.webhook: {a} contradicts watch.github_webhook = {b} (they mean the same; set one)"
            )))
        }
        (a, b) => a.or(b).unwrap_or(false),
    };
    let backlog = match raw.watch.backlog.as_deref() {
        None | Some("all") => Backlog::All,
        Some("latest") => Backlog::Latest,
        Some(other) => {
            return Err(err(format!(
                "watch.backlog: {other:?} is not one of \"all\", \"latest\""
            )))
        }
    };

    Ok(Recipe {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        file,
        build_script,
        license: raw.meta.license,
        homepage: raw.meta.homepage,
        description: raw.meta.description,
        packages,
        upstream,
        watch: Watch {
            webhook,
            poll_interval,
            poll_interval_set,
            backlog,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, id: &str, file: &str, text: &str) {
        let d = dir.join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), text).unwrap();
    }

    const GOOD: &str = r#"
[meta]
license = "Zlib"
dependencies = ["tolerated"]
[[package]]
name = "libz"
files = ["usr/lib/**"]
side_effects = ["ldconfig"]
[upstream]
git = "https://github.com/madler/zlib"
tag_pattern = '^v(\d+\.\d+\.\d+)$'
revision = 2
min_version = "1.2.0"
[watch]
github_webhook = true
poll_interval = "2h"
backlog = "latest"
[something_else]
x = 1
"#;

    #[test]
    fn good_recipe_loads_and_bad_ones_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "zlib", "recipe.toml", GOOD);
        write(
            dir.path(),
            "peip",
            "peipkg.toml",
            "[upstream]\ngit='x'\ntag_pattern='^(.*)$'\n",
        );
        write(
            dir.path(),
            "typo",
            "recipe.toml",
            "[upstream]\ngit='x'\ntag_patern='^(.*)$'\n",
        );
        write(
            dir.path(),
            "nogroup",
            "recipe.toml",
            "[upstream]\ngit='x'\ntag_pattern='^v.*$'\n",
        );
        write(dir.path(), "broken", "recipe.toml", "[upstream\n");
        write(dir.path(), "both", "recipe.toml", "");
        write(dir.path(), "both", "peipkg.toml", "");
        write(dir.path(), "Bad_Id", "recipe.toml", "");
        write(
            dir.path(),
            "nobuild",
            "recipe.toml",
            "[meta]\nlicense='MIT'\n",
        );
        std::fs::create_dir_all(dir.path().join("notes")).unwrap();

        let r = load_roster(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(r.ids(), vec!["nobuild", "peip", "zlib"]);
        let z = &r.recipes["zlib"];
        let u = z.upstream.as_ref().unwrap();
        assert_eq!(u.revision, 2);
        assert_eq!(z.watch.backlog, Backlog::Latest);
        assert_eq!(z.watch.poll_interval, Duration::from_secs(7200));
        assert_eq!(z.license, "Zlib");
        assert_eq!(z.packages[0].architecture, std::env::consts::ARCH);
        assert!(z.admits("1.3.1") && !z.admits("1.1.9"));
        assert_eq!(r.recipes["peip"].file, RecipeFile::Peipkg);
        assert!(!r.recipes["nobuild"].is_watched());

        let inv = &r.invalid;
        assert!(
            inv["typo"].contains("unknown field `tag_patern`"),
            "{}",
            inv["typo"]
        );
        assert!(inv["typo"].contains("typo/recipe.toml"), "{}", inv["typo"]);
        assert!(
            inv["nogroup"].contains("upstream.tag_pattern"),
            "{}",
            inv["nogroup"]
        );
        assert!(inv["broken"].contains("line 1"), "{}", inv["broken"]);
        assert!(inv["both"].contains("both recipe.toml and peipkg.toml"));
        assert!(inv["Bad_Id"].contains("recipe id"));
        assert!(!inv.contains_key("notes"));
    }

    #[test]
    fn field_errors_name_the_key() {
        let cases = [
            (
                "[upstream]\ngit='x'\ntag_pattern='^(.*)$'\nrevision=0\n",
                "upstream.peios_revision",
            ),
            ("[upstream]\ntag_pattern='^(.*)$'\n", "upstream.git"),
            (
                "[upstream]\ngit='x'\ntag_pattern='^(.*)$'\nmin_version='1;2'\n",
                "upstream.min_version",
            ),
            ("[watch]\npoll_interval='10s'\n", "watch.poll_interval"),
            ("[watch]\nbacklog='some'\n", "watch.backlog"),
            ("[watch]\nwebhooks=true\n", "unknown field `webhooks`"),
            (
                "[watch]\nwebhook=true\ngithub_webhook=false\n",
                "watch.webhook: true contradicts watch.github_webhook = false",
            ),
            ("[watch]\nwebhook='yes'\n", "watch.webhook"),
            ("[[package]]\nname='../x'\nfiles=['*']\n", "package[0].name"),
            ("[[package]]\nname='a'\n", "package[0].files"),
            ("[[package]]\nname='a'\nfiles=['a/[']\n", "package[0].files"),
            ("[meta]\nbuild_script='../../bin/sh'\n", "meta.build_script"),
            ("[meta]\nbuild_script='.'\n", "meta.build_script"),
            ("[meta]\nbuild_script='./'\n", "meta.build_script"),
            (
                "[[package]]\nname='a'\nfiles=['/usr/../lib/**']\n",
                "package[0].files: \"/usr/../lib/**\" must be a glob of paths inside DESTDIR",
            ),
            (
                "[[package]]\nname='a'\nfiles=['usr/../../x']\n",
                "package[0].files",
            ),
            ("[[package]]\nname='a'\nfiles=['']\n", "package[0].files"),
            (
                "[upstream]\ngit='x'\ntag_pattern=1\n",
                "line 3, column 13: upstream.tag_pattern: invalid type",
            ),
            (
                "[upstream]\ngit='x'\ntag_pattern='^v(\\d+$'\n",
                "upstream.tag_pattern: does not compile: unclosed group at column 3",
            ),
            (
                "[upstream]\ngit='x'\ntag_pattern='^(?P<major>\\d+)(\\d+)$'\n",
                "upstream.tag_pattern",
            ),
        ];
        for (text, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "r", "recipe.toml", text);
            let r = load_roster(dir.path(), Duration::from_secs(3600)).unwrap();
            let e = r
                .invalid
                .get("r")
                .unwrap_or_else(|| panic!("{text} should fail"));
            assert!(e.contains(want), "{e:?} should contain {want:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn parse_recipe_from_text() {
        let dir = Path::new("/srv/recipes/zlib");
        let r = parse_recipe(
            "zlib",
            dir,
            &dir.join("recipe.toml"),
            RecipeFile::Farmhand,
            GOOD,
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(r.script_path(), dir.join("build.sh"));
        assert_eq!(r.upstream.unwrap().revision, 2);
        let e = parse_recipe(
            "Zlib",
            dir,
            &dir.join("recipe.toml"),
            RecipeFile::Farmhand,
            GOOD,
            Duration::from_secs(3600),
        )
        .unwrap_err();
        assert!(
            e.starts_with("/srv/recipes/zlib: recipe id \"Zlib\""),
            "{e}"
        );
    }

    #[test]
    fn a_leading_slash_in_a_glob_names_the_same_destdir_path() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "r",
            "peipkg.toml",
            "[[package]]\nname = 'r'\nfiles = ['/usr/lib/**', 'usr/bin/*']\n",
        );
        let roster = load_roster(dir.path(), Duration::from_secs(3600)).unwrap();
        assert!(roster.invalid.is_empty(), "{:?}", roster.invalid);
        assert_eq!(
            roster.recipes["r"].packages[0].files,
            ["usr/lib/**", "usr/bin/*"]
        );
    }

    #[test]
    fn unreadable_dir_is_an_error() {
        let e =
            load_roster(Path::new("/nonexistent/recipes"), Duration::from_secs(60)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/recipes"));
    }
}
