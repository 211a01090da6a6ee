//! `tag_pattern` matching and upstream version composition (DESIGN.md
//! section 3).
//!
//! A recipe's `tag_pattern` is a regular expression (RE2 / Go syntax is
//! accepted, including `(?P<name>...)`) in exactly one of two styles:
//!
//! * **unnamed**: only unnamed groups; the first capture group is the
//!   upstream version (`^v(\d+\.\d+\.\d+)$`);
//! * **named**: only named groups from the closed set `major`, `minor`,
//!   `patch`, `prerelease` (`major` and `minor` required), composed as
//!   `major.minor[.patch][-prerelease]`
//!   (`^busybox-(?P<major>\d+)_(?P<minor>\d+)_(?P<patch>\d+)$` turns
//!   `busybox-1_37_0` into `1.37.0`).
//!
//! Non-capturing groups `(?:...)` are allowed in both styles. The pattern is
//! used exactly as written: the recipe supplies its own `^...$` anchors.
//!
//! Tags come from the network, so every version a tag yields is checked with
//! [`crate::model::version::is_valid_upstream`] and a length limit before anyone
//! can use it (for instance in a path).
//!
//! A tag farmhand cannot use at all (longer than [`MAX_TAG_LEN`], not a
//! valid git ref name, not UTF-8) reaches the matcher as a stand-in made by
//! [`unusable_tag`]: its first characters and its length, at most
//! [`MAX_SHOWN_TAG`] characters in all, so neither the tag listing nor any
//! log line carries it whole (DESIGN.md section 18). It never yields a
//! version; when its first characters could begin a match of the pattern,
//! the matcher reports it as [`TagError::Unusable`], which is logged.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use regex_automata::nfa::thompson::{self, backtrack::BoundedBacktracker, pikevm::PikeVM};
use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use regex_automata::PatternID;

use crate::model::version::is_valid_upstream;

/// Longest upstream version a tag may yield, in bytes.
pub const MAX_UPSTREAM_LEN: usize = 128;

/// Longest tag farmhand uses, in bytes: one file name (a tag is a loose
/// ref file in the object cache), and room for any version with a prefix.
pub const MAX_TAG_LEN: usize = 255;

/// Most characters of a tag farmhand cannot use that a listing or a
/// message shows (the stand-in of [`unusable_tag`], note included).
pub const MAX_SHOWN_TAG: usize = 100;

/// Separates the kept characters of an unusable tag from its length in
/// [`unusable_tag`]. It holds spaces, which git never allows in a ref name,
/// so no real tag looks like a stand-in.
const UNUSABLE_NOTE: &str = "… [unusable tag of ";

/// The stand-in for a tag farmhand cannot use (longer than
/// [`MAX_TAG_LEN`], not a valid ref name, not UTF-8), given its raw bytes:
/// its first characters (control characters as `?`), then its length, at
/// most [`MAX_SHOWN_TAG`] characters in all:
/// `v1.2.3333… [unusable tag of 10000 bytes]`.
#[must_use]
pub fn unusable_tag(tag: &[u8]) -> String {
    let tail = format!("{UNUSABLE_NOTE}{} bytes]", tag.len());
    let keep = MAX_SHOWN_TAG.saturating_sub(tail.chars().count());
    let mut out: String = String::from_utf8_lossy(tag)
        .chars()
        .take(keep)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    out.push_str(&tail);
    out
}

/// The kept first characters of a stand-in made by [`unusable_tag`], or
/// `None` for a real tag.
#[must_use]
pub fn unusable_tag_head(tag: &str) -> Option<&str> {
    if !tag.ends_with(" bytes]") || tag.chars().count() > MAX_SHOWN_TAG {
        return None;
    }
    tag.rfind(UNUSABLE_NOTE).map(|i| &tag[..i])
}

/// The group names allowed in the named style, in composition order.
const GROUP_NAMES: [&str; 4] = ["major", "minor", "patch", "prerelease"];

/// Why a `tag_pattern` was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TagPatternError {
    /// The regular expression does not compile (the parser's message, on
    /// one line).
    #[error("does not compile: {0}")]
    Compile(String),
    /// The pattern has no capture group at all.
    #[error("needs a capture group")]
    NoGroup,
    /// The pattern has both named and unnamed capture groups.
    #[error("mixes named and unnamed groups (use (?:...) for grouping only)")]
    MixedGroups,
    /// A named group outside `major`, `minor`, `patch`, `prerelease`.
    #[error("unknown group name {0:?} (allowed: major, minor, patch, prerelease)")]
    UnknownGroup(String),
    /// The same group name is used more than once.
    #[error("group {0:?} appears twice")]
    DuplicateGroup(String),
    /// Named style without both `major` and `minor`.
    #[error("named groups need both \"major\" and \"minor\"")]
    MissingMajorMinor,
}

/// Why a tag that matched the pattern yields no usable version. The caller
/// logs it as a warning and skips the tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The tag itself cannot be used (see [`unusable_tag`]); its first
    /// characters could begin a match of the pattern.
    #[error(
        "tag {:?} cannot be used (longer than {MAX_TAG_LEN} bytes or not a valid git tag name)",
        shorten(.tag)
    )]
    Unusable {
        /// The stand-in from [`unusable_tag`], never the whole tag.
        tag: String,
    },
    /// A group the version is made from did not take part in the match.
    #[error("tag {:?} matches but group {group:?} did not take part in the match", shorten(.tag))]
    GroupNotMatched {
        /// The tag.
        tag: String,
        /// The group: `"1"` in the unnamed style, else its name.
        group: String,
    },
    /// The captured or composed version is empty.
    #[error("tag {:?} yields an empty version", shorten(.tag))]
    Empty {
        /// The tag.
        tag: String,
    },
    /// The version is longer than [`MAX_UPSTREAM_LEN`].
    #[error(
        "tag {:?} yields a version of {len} characters, more than the limit of {MAX_UPSTREAM_LEN}",
        shorten(.tag)
    )]
    TooLong {
        /// The tag.
        tag: String,
        /// The version's length in bytes.
        len: usize,
    },
    /// The version does not start with an ASCII letter or digit.
    #[error(
        "tag {:?} yields version {:?}, which does not start with a letter or digit",
        shorten(.tag),
        shorten(.version)
    )]
    BadStart {
        /// The tag.
        tag: String,
        /// The version it yields.
        version: String,
    },
    /// The version has characters outside letters, digits and `.+-~`.
    #[error(
        "tag {:?} yields version {:?}, which has characters outside letters, digits and .+-~",
        shorten(.tag),
        shorten(.version)
    )]
    BadChars {
        /// The tag.
        tag: String,
        /// The version it yields.
        version: String,
    },
}

/// Cuts very long strings (tags come from the network) to at most
/// [`MAX_SHOWN_TAG`] characters for messages.
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(MAX_SHOWN_TAG) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// How the version is taken out of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Capture group 1 is the version.
    Unnamed,
    /// Composed from named groups; group indices.
    Named {
        major: usize,
        minor: usize,
        patch: Option<usize>,
        prerelease: Option<usize>,
    },
}

/// A validated `tag_pattern`: its text and how a version is taken out of
/// a match. The compiled form is built when tags are matched (see
/// [`compile`]), not kept per recipe.
#[derive(Debug, Clone)]
pub struct TagPattern {
    /// Shared by every recipe with the same pattern (see [`intern`]).
    source: Arc<str>,
    style: Style,
}

/// A compiled pattern and the text it was compiled from: one Thompson NFA,
/// run by the bounded backtracker (fastest on short haystacks such as tags)
/// or, for a tag too long for the backtracker's memory bound, the PikeVM.
/// Both share the NFA.
#[derive(Debug)]
struct Compiled {
    pattern: Arc<str>,
    backtrack: BoundedBacktracker,
    pikevm: PikeVM,
}

/// How many compiled patterns are kept for the next poll (see [`compile`]).
const COMPILED_KEPT: usize = 32;

/// The text of `pattern`, shared with every other recipe that uses the
/// same one (through weak references: nothing outlives the last recipe
/// using it).
fn intern(pattern: &str) -> Arc<str> {
    static SHARED: Mutex<Option<HashMap<Arc<str>, Weak<str>>>> = Mutex::new(None);
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let shared = shared.get_or_insert_with(HashMap::new);
    if let Some(s) = shared.get(pattern).and_then(Weak::upgrade) {
        return s;
    }
    let s: Arc<str> = Arc::from(pattern);
    shared.retain(|_, w| w.strong_count() > 0);
    shared.insert(s.clone(), Arc::downgrade(&s));
    s
}

/// Compiles `pattern`, or returns the compiled form a recent poll used.
///
/// Tags are short and matched once per poll, so the pattern is compiled to
/// a forward NFA alone (no DFA, no reverse NFA): about 5 KiB for a Unicode
/// `\d` pattern instead of about 100 KiB with the regex crate's defaults,
/// and about 50 µs to build. Even 5 KiB per recipe adds up on a farm with
/// thousands of distinct patterns, so the compiled forms are not kept per
/// recipe: the last [`COMPILED_KEPT`] used are, which covers recipes
/// sharing a handful of patterns (no compiling at all) and the polls in
/// flight; any other poll compiles its pattern again, a small cost next
/// to listing the remote's tags. Matching follows the regex crate:
/// leftmost-first, unanchored unless the pattern anchors itself,
/// Unicode-aware.
fn compile(pattern: &Arc<str>) -> Result<Arc<Compiled>, TagPatternError> {
    static KEPT: Mutex<VecDeque<Arc<Compiled>>> = Mutex::new(VecDeque::new());
    let lock = || {
        KEPT.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    {
        let mut kept = lock();
        if let Some(i) = kept.iter().position(|c| *c.pattern == **pattern) {
            let c = kept.remove(i).expect("found");
            kept.push_front(c.clone());
            return Ok(c);
        }
    }
    let hir = syntax::parse(pattern).map_err(|e| syntax_error(&e))?;
    let build = |e: thompson::BuildError| TagPatternError::Compile(e.to_string());
    let nfa = thompson::Compiler::new()
        .configure(thompson::Config::new().nfa_size_limit(Some(NFA_SIZE_LIMIT)))
        .build_from_hir(&hir)
        .map_err(build)?;
    let backtrack = BoundedBacktracker::builder()
        .build_from_nfa(nfa.clone())
        .map_err(build)?;
    let pikevm = PikeVM::builder().build_from_nfa(nfa).map_err(build)?;
    let c = Arc::new(Compiled {
        pattern: pattern.clone(),
        backtrack,
        pikevm,
    });
    let mut kept = lock();
    kept.push_front(c.clone());
    kept.truncate(COMPILED_KEPT);
    Ok(c)
}

/// The largest compiled pattern accepted (the regex crate's own limit).
const NFA_SIZE_LIMIT: usize = 10 << 20;

/// A pattern the regex parser rejected, from the parser's structured error:
/// a repeated group name becomes [`TagPatternError::DuplicateGroup`] naming
/// the group; anything else is [`TagPatternError::Compile`] with the
/// parser's description and, for a one-line pattern, where the problem
/// starts (`unclosed group at column 3`), so that it fits on the one line
/// recipe errors are logged and listed on.
fn syntax_error(e: &regex_syntax::Error) -> TagPatternError {
    use regex_syntax::ast::{ErrorKind, Span};
    let (what, pattern, spans): (String, &str, [Option<&Span>; 2]) = match e {
        regex_syntax::Error::Parse(e) => {
            if let ErrorKind::GroupNameDuplicate { .. } = e.kind() {
                let name = e.span().start.offset..e.span().end.offset;
                if let Some(name) = e.pattern().get(name) {
                    return TagPatternError::DuplicateGroup(name.to_string());
                }
            }
            (
                e.kind().to_string(),
                e.pattern(),
                [Some(e.span()), e.auxiliary_span()],
            )
        }
        regex_syntax::Error::Translate(e) => {
            (e.kind().to_string(), e.pattern(), [Some(e.span()), None])
        }
        // A kind of error this version of the parser does not have.
        other => {
            let text = other.to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            return TagPatternError::Compile(lines.join("; "));
        }
    };
    // Columns only point somewhere for a pattern on one line. An error
    // with two places (a flag given twice) starts at the first.
    let column = spans
        .into_iter()
        .flatten()
        .map(|s| s.start.column)
        .min()
        .filter(|_| !pattern.contains('\n'));
    TagPatternError::Compile(match column {
        Some(c) => format!("{what} at column {c}"),
        None => what,
    })
}

impl TagPattern {
    /// Compiles and validates a recipe's `tag_pattern`.
    ///
    /// # Errors
    ///
    /// [`TagPatternError`] when the pattern does not compile, has no capture
    /// group, mixes named and unnamed groups, uses a name outside `major`,
    /// `minor`, `patch`, `prerelease` or a name twice, or has named groups
    /// without both `major` and `minor`.
    pub fn new(pattern: &str) -> Result<TagPattern, TagPatternError> {
        let source = intern(pattern);
        let regex = compile(&source)?;

        let mut unnamed = 0usize;
        let mut named: [Option<usize>; 4] = [None; 4];
        let mut any_named = false;
        let names = regex
            .pikevm
            .get_nfa()
            .group_info()
            .pattern_names(PatternID::ZERO);
        for (index, name) in names.enumerate().skip(1) {
            let Some(name) = name else {
                unnamed += 1;
                continue;
            };
            any_named = true;
            let Some(slot) = GROUP_NAMES.iter().position(|&n| n == name) else {
                return Err(TagPatternError::UnknownGroup(name.to_string()));
            };
            if named[slot].is_some() {
                return Err(TagPatternError::DuplicateGroup(name.to_string()));
            }
            named[slot] = Some(index);
        }

        let style = match (unnamed > 0, any_named) {
            (false, false) => return Err(TagPatternError::NoGroup),
            (true, true) => return Err(TagPatternError::MixedGroups),
            (true, false) => Style::Unnamed,
            (false, true) => match named {
                [Some(major), Some(minor), patch, prerelease] => Style::Named {
                    major,
                    minor,
                    patch,
                    prerelease,
                },
                _ => return Err(TagPatternError::MissingMajorMinor),
            },
        };
        Ok(TagPattern { source, style })
    }

    /// The pattern as written in the recipe.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// None: the tag does not match the pattern (ignored silently).
    /// Some(Ok(upstream)): the upstream version it yields (validated with
    /// [`crate::model::version::is_valid_upstream`] and at most
    /// [`MAX_UPSTREAM_LEN`] bytes long).
    /// Some(Err(..)): it matched but the captured version is unusable
    /// (caller logs a warning and skips the tag).
    #[must_use]
    pub fn upstream_version(&self, tag: &str) -> Option<Result<String, TagError>> {
        self.matcher().upstream_version(tag)
    }

    /// A matcher for many tags in a row (one poll): it holds the compiled
    /// pattern and keeps the matching engines' scratch space between tags.
    #[must_use]
    pub fn matcher(&self) -> TagMatcher {
        // The pattern compiled when it was validated; compiling it again
        // cannot fail.
        let c = compile(&self.source).expect("a validated pattern compiles");
        TagMatcher {
            style: self.style,
            backtrack: c.backtrack.create_cache(),
            pikevm: c.pikevm.create_cache(),
            caps: c.pikevm.create_captures(),
            regex: c,
        }
    }
}

/// Matches tags against one [`TagPattern`], reusing its scratch space.
#[derive(Debug)]
pub struct TagMatcher {
    regex: Arc<Compiled>,
    style: Style,
    backtrack: thompson::backtrack::Cache,
    pikevm: thompson::pikevm::Cache,
    caps: Captures,
}

impl TagMatcher {
    /// As [`TagPattern::upstream_version`].
    pub fn upstream_version(&mut self, tag: &str) -> Option<Result<String, TagError>> {
        let c = &self.regex;
        if let Some(head) = unusable_tag_head(tag) {
            return may_match_from(c.pikevm.get_nfa(), head).then(|| {
                Err(TagError::Unusable {
                    tag: tag.to_string(),
                })
            });
        }
        let caps = &mut self.caps;
        let backtracked = tag.len() <= c.backtrack.max_haystack_len()
            && c.backtrack
                .try_captures(&mut self.backtrack, tag, caps)
                .is_ok();
        if !backtracked {
            c.pikevm.captures(&mut self.pikevm, tag, caps);
        }
        if !caps.is_match() {
            return None;
        }
        let (caps, style) = (&*caps, self.style);
        let group = |caps: &Captures, i: usize| caps.get_group(i).map(|span| &tag[span.range()]);
        let not_matched = |group: &str| TagError::GroupNotMatched {
            tag: tag.to_string(),
            group: group.to_string(),
        };
        let version = match style {
            Style::Unnamed => match group(caps, 1) {
                Some(m) => m.to_string(),
                None => return Some(Err(not_matched("1"))),
            },
            Style::Named {
                major,
                minor,
                patch,
                prerelease,
            } => {
                let Some(major) = group(caps, major) else {
                    return Some(Err(not_matched("major")));
                };
                let Some(minor) = group(caps, minor) else {
                    return Some(Err(not_matched("minor")));
                };
                let optional = |index: Option<usize>| {
                    index.and_then(|i| group(caps, i)).filter(|s| !s.is_empty())
                };
                let mut v = format!("{major}.{minor}");
                if let Some(p) = optional(patch) {
                    v.push('.');
                    v.push_str(p);
                }
                if let Some(p) = optional(prerelease) {
                    v.push('-');
                    v.push_str(p);
                }
                v
            }
        };
        Some(check_version(tag, version))
    }
}

impl fmt::Display for TagPattern {
    /// Prints the pattern as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Could a text starting with `head` match `nfa`? Runs a lazy DFA over
/// `head` and answers no only when it dies (no continuation can match).
/// Answers yes when the DFA cannot tell (a Unicode word boundary on
/// non-ASCII text, say): an unusable tag is then warned about rather than
/// skipped in silence. Built only for unusable tags, which are rare, so
/// patterns stay NFA-only the rest of the time (see [`compile`]).
fn may_match_from(nfa: &thompson::NFA, head: &str) -> bool {
    use regex_automata::hybrid::dfa::DFA;
    use regex_automata::Input;
    let Ok(dfa) = DFA::builder().build_from_nfa(nfa.clone()) else {
        return true;
    };
    let mut cache = dfa.create_cache();
    let Ok(mut state) = dfa.start_state_forward(&mut cache, &Input::new(head)) else {
        return true;
    };
    for &byte in head.as_bytes() {
        state = match dfa.next_state(&mut cache, state, byte) {
            Ok(s) => s,
            Err(_) => return true,
        };
        if state.is_dead() {
            return false;
        }
        if state.is_quit() || state.is_match() {
            return true;
        }
    }
    true
}

/// Applies the section 3 rules to a version taken out of `tag`.
fn check_version(tag: &str, version: String) -> Result<String, TagError> {
    if version.is_empty() {
        return Err(TagError::Empty {
            tag: tag.to_string(),
        });
    }
    if version.len() > MAX_UPSTREAM_LEN {
        return Err(TagError::TooLong {
            tag: tag.to_string(),
            len: version.len(),
        });
    }
    if is_valid_upstream(&version) {
        return Ok(version);
    }
    let starts_well = version
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric);
    let tag = tag.to_string();
    Err(if starts_well {
        TagError::BadChars { tag, version }
    } else {
        TagError::BadStart { tag, version }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> TagPattern {
        match TagPattern::new(p) {
            Ok(t) => t,
            Err(e) => panic!("{p}: {e}"),
        }
    }

    fn ok(p: &TagPattern, tag: &str) -> String {
        match p.upstream_version(tag) {
            Some(Ok(v)) => v,
            other => panic!("{tag} against {}: {other:?}", p.as_str()),
        }
    }

    fn err(p: &TagPattern, tag: &str) -> TagError {
        match p.upstream_version(tag) {
            Some(Err(e)) => e,
            other => panic!("{tag} against {}: {other:?}", p.as_str()),
        }
    }

    fn pattern_err(p: &str) -> TagPatternError {
        match TagPattern::new(p) {
            Ok(_) => panic!("{p} accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn unnamed_style_zlib() {
        let p = pat(r"^v(\d+\.\d+\.\d+)$");
        assert_eq!(p.as_str(), r"^v(\d+\.\d+\.\d+)$");
        assert_eq!(p.to_string(), r"^v(\d+\.\d+\.\d+)$");
        assert_eq!(ok(&p, "v1.3.1"), "1.3.1");
        assert_eq!(ok(&p, "v1.2.13"), "1.2.13");
        assert_eq!(p.upstream_version("v1.3"), None);
        assert_eq!(p.upstream_version("1.3.1"), None);
        assert_eq!(p.upstream_version("v1.3.1-rc1"), None);
        assert_eq!(p.upstream_version(""), None);
    }

    #[test]
    fn unnamed_style_uses_first_group() {
        let p = pat(r"^(?:release-)?v?(\d+(?:\.\d+)*)(-(rc\d+))?$");
        assert_eq!(ok(&p, "release-v2.0-rc1"), "2.0");
        assert_eq!(ok(&p, "2.0"), "2.0");
        // Pattern as given: no implicit anchors.
        let p = pat(r"v(\d+)");
        assert_eq!(ok(&p, "xv12y"), "12");
    }

    #[test]
    fn unnamed_first_group_not_participating() {
        let p = pat(r"^(?:v(\d+)|x(\d+))$");
        assert_eq!(ok(&p, "v3"), "3");
        assert_eq!(
            err(&p, "x3"),
            TagError::GroupNotMatched {
                tag: "x3".into(),
                group: "1".into()
            }
        );
    }

    #[test]
    fn named_style_busybox() {
        let p = pat(r"^busybox-(?P<major>\d+)_(?P<minor>\d+)_(?P<patch>\d+)$");
        assert_eq!(ok(&p, "busybox-1_37_0"), "1.37.0");
        assert_eq!(p.upstream_version("busybox-1_37"), None);
        assert_eq!(p.upstream_version("1_37_0"), None);
    }

    #[test]
    fn named_style_angle_syntax_and_optional_groups() {
        let p = pat(
            r"^v(?<major>\d+)\.(?<minor>\d+)(?:\.(?<patch>\d+))?(?:-(?P<prerelease>[a-z]+\d*))?$",
        );
        assert_eq!(ok(&p, "v1.2"), "1.2");
        assert_eq!(ok(&p, "v1.2.3"), "1.2.3");
        assert_eq!(ok(&p, "v1.2-rc1"), "1.2-rc1");
        assert_eq!(ok(&p, "v1.2.3-beta2"), "1.2.3-beta2");
        assert_eq!(p.upstream_version("v1"), None);

        // Empty captures are omitted like absent ones.
        let p = pat(r"^(?P<major>\d+)\.(?P<minor>\d+)\.?(?P<patch>\d*)-?(?P<prerelease>\w*)$");
        assert_eq!(ok(&p, "4.5"), "4.5");
        assert_eq!(ok(&p, "4.5.6"), "4.5.6");
        assert_eq!(ok(&p, "4.5-rc1"), "4.5-rc1");
    }

    #[test]
    fn named_groups_in_any_order() {
        let p = pat(r"^(?P<minor>\d+)_(?P<major>\d+)$");
        assert_eq!(ok(&p, "7_1"), "1.7");
    }

    #[test]
    fn named_required_group_not_participating() {
        let p = pat(r"^(?:(?P<major>\d+)|x)\.(?P<minor>\d+)$");
        assert_eq!(
            err(&p, "x.1"),
            TagError::GroupNotMatched {
                tag: "x.1".into(),
                group: "major".into()
            }
        );
        // Required but empty: the composed version is then invalid.
        let p = pat(r"^(?P<major>\d*)\.(?P<minor>\d+)$");
        assert!(matches!(err(&p, ".1"), TagError::BadStart { .. }));
    }

    #[test]
    fn named_prerelease_is_validated() {
        let p = pat(r"^v(?P<major>\d+)\.(?P<minor>\d+)(?:-(?P<prerelease>.+))?$");
        assert_eq!(ok(&p, "v1.0-rc.1"), "1.0-rc.1");
        assert_eq!(
            err(&p, "v1.0-x;rm"),
            TagError::BadChars {
                tag: "v1.0-x;rm".into(),
                version: "1.0-x;rm".into()
            }
        );
        assert!(matches!(err(&p, "v1.0-../x"), TagError::BadChars { .. }));
    }

    #[test]
    fn hostile_tags_are_rejected() {
        // `(?s)`: let `.` match newlines too, as permissive as it gets.
        let p = pat(r"(?s)^v(.+)$");
        let e = err(&p, "v1.1;rm");
        assert_eq!(
            e,
            TagError::BadChars {
                tag: "v1.1;rm".into(),
                version: "1.1;rm".into()
            }
        );
        assert_eq!(
            e.to_string(),
            r#"tag "v1.1;rm" yields version "1.1;rm", which has characters outside letters, digits and .+-~"#
        );
        assert!(matches!(err(&p, "v1.3`id`"), TagError::BadChars { .. }));
        let e = err(&p, "v../../x");
        assert_eq!(
            e,
            TagError::BadStart {
                tag: "v../../x".into(),
                version: "../../x".into()
            }
        );
        assert_eq!(
            e.to_string(),
            r#"tag "v../../x" yields version "../../x", which does not start with a letter or digit"#
        );
        for tag in [
            "v1/../../etc",
            "v1 2",
            "v1\n2",
            "v1$(id)",
            "v1\\x",
            "v-1",
            "v~1",
            "v.1",
            "v1é",
            "v1:2",
            "v1\0",
        ] {
            assert!(
                matches!(p.upstream_version(tag), Some(Err(_))),
                "{tag:?} accepted"
            );
        }
        assert_eq!(ok(&p, "v1.0~rc1+git.2-3"), "1.0~rc1+git.2-3");
        assert_eq!(p.upstream_version("1.0"), None);
        // Control characters are escaped in the message.
        assert!(err(&p, "v1\n2").to_string().contains(r#""v1\n2""#));
    }

    #[test]
    fn empty_capture_is_an_error() {
        let p = pat(r"^v(\d*)$");
        assert_eq!(err(&p, "v"), TagError::Empty { tag: "v".into() });
        assert_eq!(
            err(&p, "v").to_string(),
            r#"tag "v" yields an empty version"#
        );
    }

    #[test]
    fn length_limit() {
        let p = pat(r"^v(.+)$");
        let longest = "1".repeat(MAX_UPSTREAM_LEN);
        assert_eq!(ok(&p, &format!("v{longest}")), longest);
        let too_long = format!("v{longest}2");
        assert_eq!(
            err(&p, &too_long),
            TagError::TooLong {
                tag: too_long.clone(),
                len: MAX_UPSTREAM_LEN + 1
            }
        );
        // Messages stay short even for huge tags.
        let huge = format!("v{}", "9".repeat(10_000));
        let e = err(&p, &huge).to_string();
        assert!(e.len() < 400, "{e}");
        assert!(!e.contains(&"9".repeat(MAX_SHOWN_TAG + 1)), "{e}");
    }

    #[test]
    fn unusable_tags_are_short_stand_ins() {
        let huge = format!("v1.2.{}", "3".repeat(9_995));
        let s = unusable_tag(huge.as_bytes());
        assert!(s.chars().count() <= MAX_SHOWN_TAG, "{s}");
        assert!(
            s.starts_with("v1.2.333") && s.ends_with("[unusable tag of 10000 bytes]"),
            "{s}"
        );
        assert!(unusable_tag_head(&s).is_some_and(|h| huge.starts_with(h)));
        // Control characters and bytes that are not UTF-8 stay out.
        let odd = unusable_tag(b"v1\n\x1b[31m\xff");
        assert!(!odd.chars().any(char::is_control), "{odd:?}");
        assert_eq!(unusable_tag_head(&odd), Some("v1??[31m\u{fffd}"));
        // However long the tag, the stand-in fits.
        assert!(unusable_tag(&vec![b'x'; 1 << 20]).chars().count() <= MAX_SHOWN_TAG);
        // No real tag (git refuses spaces in ref names) reads as a stand-in.
        for tag in ["v1.0", "v1.0-bytes]", "x\u{2026}[unusable"] {
            assert_eq!(unusable_tag_head(tag), None, "{tag}");
        }
    }

    #[test]
    fn unusable_tags_are_reported_when_they_could_match() {
        let p = pat(r"^v(\d+\.\d+\.\d+)$");
        let could = unusable_tag(format!("v1.2.{}", "3".repeat(9_995)).as_bytes());
        assert_eq!(
            p.upstream_version(&could),
            Some(Err(TagError::Unusable { tag: could.clone() }))
        );
        let e = err(&p, &could).to_string();
        assert!(e.contains("cannot be used") && e.len() < 250, "{e}");
        // Its first characters already rule a match out: silent.
        let cannot = unusable_tag(format!("v1.2.3x{}", "3".repeat(9_995)).as_bytes());
        assert_eq!(p.upstream_version(&cannot), None);
        assert_eq!(p.upstream_version(&unusable_tag(&[b'z'; 300])), None);
        // Unanchored patterns could match anything.
        let p = pat(r"v(\d+)");
        assert!(matches!(
            p.upstream_version(&unusable_tag(&[b'z'; 300])),
            Some(Err(TagError::Unusable { .. }))
        ));
        // A match already complete in the first characters.
        let p = pat(r"^v(\d+)");
        assert!(matches!(
            p.upstream_version(&unusable_tag(format!("v12{}", "-".repeat(300)).as_bytes())),
            Some(Err(TagError::Unusable { .. }))
        ));
    }

    #[test]
    fn pattern_does_not_compile() {
        let e = pattern_err(r"^v(\d+$");
        assert!(matches!(e, TagPatternError::Compile(_)), "{e:?}");
        assert!(e.to_string().starts_with("does not compile: "), "{e}");
        assert!(matches!(
            pattern_err(r"^v(\d+)\1$"),
            TagPatternError::Compile(_)
        ));
    }

    #[test]
    fn compile_errors_fit_on_one_line() {
        let e = pattern_err(r"^v(\d+\.\d+$").to_string();
        assert_eq!(e, "does not compile: unclosed group at column 3");
        let e = pattern_err(r"^v(\d+)\1$").to_string();
        assert!(
            !e.contains('\n') && e.contains("backreferences are not supported"),
            "{e}"
        );
        let e = pattern_err("^v(\\d+\n)(?x)(\n$").to_string();
        assert!(!e.contains('\n') && e.contains("unclosed group"), "{e}");
        assert_eq!(e, "does not compile: unclosed group");
        // Errors found after parsing (translation) have a column too.
        let e = pattern_err(r"^v(\p{Foo})$").to_string();
        assert_eq!(
            e,
            "does not compile: Unicode property not found at column 4"
        );
        // Two places: the column of the first.
        let e = pattern_err(r"^(?ixi)v(\d+)$").to_string();
        assert_eq!(e, "does not compile: duplicate flag at column 4");
    }

    #[test]
    fn pattern_needs_a_group() {
        for p in [r"^v\d+\.\d+$", r"^v(?:\d+)$", r"^(?i)v\d+$"] {
            let e = pattern_err(p);
            assert!(matches!(e, TagPatternError::NoGroup), "{p}: {e:?}");
            assert_eq!(e.to_string(), "needs a capture group");
        }
    }

    #[test]
    fn pattern_mixes_styles() {
        let e = pattern_err(r"^(?P<major>\d+)\.(?P<minor>\d+)(\.\d+)?$");
        assert!(matches!(e, TagPatternError::MixedGroups), "{e:?}");
        assert!(e.to_string().starts_with("mixes named and unnamed groups"));
    }

    #[test]
    fn pattern_unknown_name() {
        let e = pattern_err(r"^(?P<major>\d+)\.(?P<foo>\d+)$");
        assert!(
            matches!(&e, TagPatternError::UnknownGroup(n) if n == "foo"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            r#"unknown group name "foo" (allowed: major, minor, patch, prerelease)"#
        );
        assert!(matches!(
            pattern_err(r"^(?P<version>.+)$"),
            TagPatternError::UnknownGroup(_)
        ));
        // Names are case-sensitive.
        assert!(matches!(
            pattern_err(r"^(?P<Major>\d+)\.(?P<minor>\d+)$"),
            TagPatternError::UnknownGroup(_)
        ));
    }

    #[test]
    fn pattern_repeated_name() {
        for p in [
            r"^(?P<major>\d+)\.(?P<minor>\d+)|(?P<major>\d+)_(?P<minor>\d+)$",
            r"^(?<major>\d+)\.(?<major>\d+)$",
            // The parser names the group: text that only looks like a
            // group (inside a class, or a comment) does not count.
            r"^[(?P<minor>(?P<minor>]*(?P<major>\d+)\.(?P<major>\d+)$",
            "(?x)^(?P<major>\\d+) # (?P<minor>\n (?P<minor>\\d+) (?P<major>x)$",
        ] {
            let e = pattern_err(p);
            assert!(
                matches!(&e, TagPatternError::DuplicateGroup(n) if n == "major"),
                "{p}: {e:?}"
            );
            assert_eq!(e.to_string(), r#"group "major" appears twice"#);
        }
    }

    #[test]
    fn pattern_needs_major_and_minor() {
        for p in [
            r"^(?P<major>\d+)$",
            r"^(?P<minor>\d+)$",
            r"^(?P<major>\d+)\.(?P<patch>\d+)$",
            r"^(?P<prerelease>\w+)$",
        ] {
            let e = pattern_err(p);
            assert!(
                matches!(e, TagPatternError::MissingMajorMinor),
                "{p}: {e:?}"
            );
            assert_eq!(
                e.to_string(),
                r#"named groups need both "major" and "minor""#
            );
        }
    }

    #[test]
    fn identical_patterns_share_their_text_and_compiled_form() {
        let a = pat(r"^v(\d+\.\d+\.\d+)$");
        let b = pat(r"^v(\d+\.\d+\.\d+)$");
        let c = pat(r"^release-(\d+\.\d+\.\d+)$");
        assert!(Arc::ptr_eq(&a.source, &b.source));
        assert!(!Arc::ptr_eq(&a.source, &c.source));
        assert!(Arc::ptr_eq(&a.matcher().regex, &b.matcher().regex));
        // Many other patterns later, it is compiled again, the same.
        for i in 0..COMPILED_KEPT {
            let _ = pat(&format!("^p{i}-v(.+)$")).matcher();
        }
        assert_eq!(ok(&a, "v1.2.3"), "1.2.3");
        assert_eq!(ok(&b, "v1.2.3"), "1.2.3");
        assert_eq!(ok(&c, "release-1.2.3"), "1.2.3");
    }

    #[test]
    fn yielded_versions_parse_as_versions() {
        let p = pat(r"^v(.+)$");
        for tag in ["v1.0", "v1.0-rc.1", "v2~beta", "vX"] {
            let up = ok(&p, tag);
            let v = crate::model::version::Version::new(&up, 1);
            assert!(v.is_ok(), "{tag}: {v:?}");
        }
    }
}
