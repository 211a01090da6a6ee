//! Version parsing and ordering (DESIGN.md section 4).
//!
//! A package version is `[epoch:]upstream-revision`, e.g. `1.3.2-1` or
//! `2:0.5.0-1`. Versions order by epoch (integer), then by upstream version
//! (see [`compare_upstream`]), then by revision (integer).
//!
//! # Upstream ordering model
//!
//! An upstream version is split on `.`, `+`, `-` and `~`, then at every
//! digit/letter boundary, into *segments*. Each segment is either a number
//! or a word, and is either *pre-release* or *ordinary*:
//!
//! * a pre-release token (`dev`, `alpha`/`a`, `beta`/`b`, `pre`, `rc`,
//!   case-insensitive) is pre-release, and so is every later segment of
//!   the same hyphen group;
//! * after a `~`, every later segment of the same hyphen group is
//!   pre-release;
//! * a `-` starts a new hyphen group, whose segments are ordinary again
//!   until the next token or `~`.
//!
//! The two sequences are then compared lexicographically, each one
//! terminated by an *end* marker, over this total order of segment keys:
//!
//! ```text
//! pre-release word  <  pre-release number  <  END  <  ordinary number  <  ordinary word
//! ```
//!
//! Pre-release words order by rank (`dev` < `alpha` = `a` < `beta` = `b` <
//! `pre` < `rc` < any other word), then, for other words only, bytewise;
//! ordinary words bytewise; numbers numerically, of any length, ignoring
//! leading zeros. Hence a longer version whose next segment is pre-release
//! sorts below the shorter one (`16beta1` < `16`, `1.0~1` < `1.0`), and one
//! whose next segment is ordinary sorts above it (`1.0` < `1.0.1` <
//! `1.0-foo`). Because it is a lexicographic order over a totally ordered
//! alphabet, it is a total order; versions that differ only in leading zeros,
//! token aliases, case of tokens or separators (`1.01` / `1.1`, `1.0~a` /
//! `1.0~alpha`, `1.0~rc.1` / `1.0-rc.1`) compare equal.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a version string was rejected. Every message quotes the input.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    /// The string has no `-revision` suffix.
    #[error("invalid version {input:?}: missing \"-revision\" suffix")]
    MissingRevision {
        /// The rejected input.
        input: String,
    },
    /// A `:` is present but nothing precedes it.
    #[error("invalid version {input:?}: empty epoch before ':'")]
    EmptyEpoch {
        /// The rejected input.
        input: String,
    },
    /// Nothing between the epoch and the revision.
    #[error("invalid version {input:?}: empty upstream version")]
    EmptyUpstream {
        /// The rejected input.
        input: String,
    },
    /// The string ends with `-`.
    #[error("invalid version {input:?}: empty revision after '-'")]
    EmptyRevision {
        /// The rejected input.
        input: String,
    },
    /// The epoch or revision holds something other than ASCII digits.
    #[error("invalid version {input:?}: {part} must be a decimal number")]
    NotANumber {
        /// The rejected input.
        input: String,
        /// `"epoch"` or `"revision"`.
        part: &'static str,
    },
    /// The epoch or revision has a leading zero.
    #[error("invalid version {input:?}: {part} must not have leading zeros")]
    LeadingZero {
        /// The rejected input.
        input: String,
        /// `"epoch"` or `"revision"`.
        part: &'static str,
    },
    /// The epoch or revision does not fit in 64 bits.
    #[error("invalid version {input:?}: {part} is too large")]
    TooLarge {
        /// The rejected input.
        input: String,
        /// `"epoch"` or `"revision"`.
        part: &'static str,
    },
    /// The revision is 0.
    #[error("invalid version {input:?}: revision must be 1 or more")]
    RevisionZero {
        /// The rejected input.
        input: String,
    },
    /// The upstream part does not start with an ASCII letter or digit.
    #[error(
        "invalid version {input:?}: upstream version {upstream:?} must start with a letter or digit"
    )]
    UpstreamStart {
        /// The rejected input.
        input: String,
        /// The upstream part of it.
        upstream: String,
    },
    /// The upstream part holds a character outside letters, digits and `.+-~`.
    #[error(
        "invalid version {input:?}: upstream version {upstream:?} has characters outside letters, digits and .+-~"
    )]
    UpstreamChars {
        /// The rejected input.
        input: String,
        /// The upstream part of it.
        upstream: String,
    },
}

/// A package version, `[epoch:]upstream-revision`.
///
/// Equality and ordering follow section 4 of the design: two versions that
/// print differently may still be equal (`1.01-1` == `1.1-1`). For that
/// reason `Version` deliberately does not implement `Hash`; key maps by
/// its `Display` form when the exact spelling matters.
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u64,
    /// Whether the epoch was written out (`0:1.0-1`), so that `Display`
    /// reproduces exactly what was parsed.
    explicit_epoch: bool,
    upstream: String,
    revision: u64,
}

impl Version {
    /// Parses `[epoch:]upstream-revision`.
    ///
    /// The epoch is the digits before the first `:` (optional); the revision
    /// is the digits after the last `-`; the upstream version is the rest and
    /// may itself contain `-` (`1.0-rc.1-1` has upstream `1.0-rc.1`).
    /// Revision 0, leading zeros in epoch or revision, empty parts and
    /// characters outside the allowed set are errors.
    ///
    /// # Errors
    ///
    /// A [`VersionError`] naming the input and what is wrong with it.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let err_input = || s.to_string();
        let (epoch, explicit_epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() {
                    return Err(VersionError::EmptyEpoch { input: err_input() });
                }
                (parse_number(s, e, "epoch")?, true, rest)
            }
            None => (0, false, s),
        };
        let Some((upstream, rev)) = rest.rsplit_once('-') else {
            return Err(VersionError::MissingRevision { input: err_input() });
        };
        if upstream.is_empty() {
            return Err(VersionError::EmptyUpstream { input: err_input() });
        }
        if rev.is_empty() {
            return Err(VersionError::EmptyRevision { input: err_input() });
        }
        check_upstream(s, upstream)?;
        let revision = parse_number(s, rev, "revision")?;
        if revision == 0 {
            return Err(VersionError::RevisionZero { input: err_input() });
        }
        Ok(Version {
            epoch,
            explicit_epoch,
            upstream: upstream.to_string(),
            revision,
        })
    }

    /// Builds `upstream-revision` with epoch 0 (not printed), validating
    /// the upstream version and requiring a revision of 1 or more.
    ///
    /// # Errors
    ///
    /// A [`VersionError`] when the upstream version is empty or has
    /// characters outside the allowed set, or the revision is 0.
    pub fn new(upstream: &str, revision: u64) -> Result<Version, VersionError> {
        let input = format!("{upstream}-{revision}");
        if upstream.is_empty() {
            return Err(VersionError::EmptyUpstream { input });
        }
        check_upstream(&input, upstream)?;
        if revision == 0 {
            return Err(VersionError::RevisionZero { input });
        }
        Ok(Version {
            epoch: 0,
            explicit_epoch: false,
            upstream: upstream.to_string(),
            revision,
        })
    }

    /// The epoch; 0 when none was written.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The upstream version, e.g. `1.3.2` in `1.3.2-1`.
    #[must_use]
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The revision, 1 or more.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// Validates the upstream part of `input` (already known to be non-empty).
fn check_upstream(input: &str, upstream: &str) -> Result<(), VersionError> {
    if !upstream
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
    {
        return Err(VersionError::UpstreamStart {
            input: input.to_string(),
            upstream: upstream.to_string(),
        });
    }
    if !is_valid_upstream(upstream) {
        return Err(VersionError::UpstreamChars {
            input: input.to_string(),
            upstream: upstream.to_string(),
        });
    }
    Ok(())
}

/// Parses a non-empty epoch or revision: ASCII digits, no leading zero.
fn parse_number(input: &str, digits: &str, part: &'static str) -> Result<u64, VersionError> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VersionError::NotANumber {
            input: input.to_string(),
            part,
        });
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err(VersionError::LeadingZero {
            input: input.to_string(),
            part,
        });
    }
    digits.parse().map_err(|_| VersionError::TooLarge {
        input: input.to_string(),
        part,
    })
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    /// Prints `[epoch:]upstream-revision`, exactly as parsed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.explicit_epoch || self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        write!(f, "{}-{}", self.upstream, self.revision)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_upstream(&self.upstream, &other.upstream))
            .then_with(|| self.revision.cmp(&other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    /// Agrees with [`Ord`]: `1.01-1 == 1.1-1`.
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Whether `s` is a usable upstream version: non-empty, first character an
/// ASCII letter or digit, the rest ASCII letters, digits and `.+-~`.
#[must_use]
pub fn is_valid_upstream(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphanumeric() => bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'~')),
        _ => false,
    }
}

/// Compares two upstream versions (section 4; see the module docs for the
/// exact model). Used for `min_version` and inside [`Version`]'s ordering.
///
/// Total for any input; bytes outside the upstream character set (which
/// [`is_valid_upstream`] rejects) are treated as `.` separators.
#[must_use]
pub fn compare_upstream(a: &str, b: &str) -> Ordering {
    let mut a = Segments::new(a);
    let mut b = Segments::new(b);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (Some(x), None) => return x.class().cmp(&Class::End),
            (None, Some(y)) => return Class::End.cmp(&y.class()),
            (Some(x), Some(y)) => match x.cmp_segment(&y) {
                Ordering::Equal => {}
                unequal => return unequal,
            },
        }
    }
}

/// Rank of a pre-release token, or `None` for an ordinary word.
fn pre_release_rank(word: &str) -> Option<u8> {
    const TOKENS: [(&str, u8); 7] = [
        ("dev", 0),
        ("alpha", 1),
        ("a", 1),
        ("beta", 2),
        ("b", 2),
        ("pre", 3),
        ("rc", 4),
    ];
    TOKENS
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(word))
        .map(|&(_, r)| r)
}

/// Rank of any word that is not a pre-release token.
const RANK_OTHER: u8 = 5;

/// Where a segment (or the end of the version) sits in the total order,
/// before its value is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    PreWord,
    PreNumber,
    End,
    Number,
    Word,
}

/// One segment of an upstream version.
#[derive(Debug, Clone, Copy)]
struct Segment<'a> {
    text: &'a str,
    numeric: bool,
    pre_release: bool,
}

impl Segment<'_> {
    fn class(&self) -> Class {
        match (self.pre_release, self.numeric) {
            (true, false) => Class::PreWord,
            (true, true) => Class::PreNumber,
            (false, true) => Class::Number,
            (false, false) => Class::Word,
        }
    }

    fn cmp_segment(&self, other: &Segment<'_>) -> Ordering {
        let class = self.class();
        class.cmp(&other.class()).then_with(|| match class {
            Class::PreNumber | Class::Number => compare_digits(self.text, other.text),
            Class::PreWord => {
                let ra = pre_release_rank(self.text).unwrap_or(RANK_OTHER);
                let rb = pre_release_rank(other.text).unwrap_or(RANK_OTHER);
                ra.cmp(&rb).then_with(|| {
                    if ra == RANK_OTHER {
                        self.text.as_bytes().cmp(other.text.as_bytes())
                    } else {
                        // Aliases (and case variants) of one token are equal.
                        Ordering::Equal
                    }
                })
            }
            Class::Word => self.text.as_bytes().cmp(other.text.as_bytes()),
            Class::End => Ordering::Equal,
        })
    }
}

/// Compares two non-empty runs of ASCII digits as integers of any length.
fn compare_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Lazily splits an upstream version into segments, without allocating.
struct Segments<'a> {
    s: &'a str,
    pos: usize,
    /// Inside the pre-release tail of the current hyphen group.
    pre_release: bool,
}

impl<'a> Segments<'a> {
    fn new(s: &'a str) -> Self {
        Segments {
            s,
            pos: 0,
            pre_release: false,
        }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        let bytes = self.s.as_bytes();
        while let Some(&c) = bytes.get(self.pos) {
            if c.is_ascii_alphanumeric() {
                break;
            }
            match c {
                b'-' => self.pre_release = false,
                b'~' => self.pre_release = true,
                _ => {}
            }
            self.pos += 1;
        }
        let start = self.pos;
        let first = *bytes.get(start)?;
        let numeric = first.is_ascii_digit();
        let end = bytes[start..]
            .iter()
            .position(|b| {
                if numeric {
                    !b.is_ascii_digit()
                } else {
                    !b.is_ascii_alphabetic()
                }
            })
            .map_or(bytes.len(), |n| start + n);
        self.pos = end;
        // Both ends are at ASCII bytes (or the string's end), so this slice
        // is on char boundaries.
        let text = &self.s[start..end];
        if !numeric && pre_release_rank(text).is_some() {
            self.pre_release = true;
        }
        Some(Segment {
            text,
            numeric,
            pre_release: self.pre_release,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        match Version::parse(s) {
            Ok(v) => v,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    /// Every row of the table in DESIGN.md section 4.
    const TABLE: &[(&str, &str, Ordering)] = &[
        ("1.0-1", "1.0.1-1", Ordering::Less),
        ("1.0-1", "1.0-rc.1-1", Ordering::Greater),
        ("1.0-1", "1.0a-1", Ordering::Greater),
        ("1.10-1", "1.9-1", Ordering::Greater),
        ("1.0~rc1-1", "1.0-1", Ordering::Less),
        ("1.0~a-1", "1.0~alpha-1", Ordering::Equal),
        ("1.0~rc.1-1", "1.0-rc.1-1", Ordering::Equal),
        ("1.0-1", "1.0-foo-1", Ordering::Less),
        ("16beta1-1", "16-1", Ordering::Less),
        ("1.01-1", "1.1-1", Ordering::Equal),
        ("2:0.5.0-1", "1:99.99-1", Ordering::Greater),
        ("1.0-10", "1.0-9", Ordering::Greater),
    ];

    /// Further cases that pin down the model (see the module docs).
    const MORE: &[(&str, &str, Ordering)] = &[
        ("1.0~1-1", "1.0-1", Ordering::Less),
        ("5.2~20240101-1", "5.2-1", Ordering::Less),
        ("1.0~2-1", "1.0.1-1", Ordering::Less),
        ("1.0~foo-1", "1.0-foo-1", Ordering::Less),
        ("1.0~rc-1", "1.0~1-1", Ordering::Less),
        ("1.0-dev-1", "1.0-alpha-1", Ordering::Less),
        ("1.0-alpha-1", "1.0-beta-1", Ordering::Less),
        ("1.0-beta-1", "1.0-pre-1", Ordering::Less),
        ("1.0-pre-1", "1.0-rc-1", Ordering::Less),
        ("1.0-rc-1", "1.0~zzz-1", Ordering::Less),
        ("1.0a1-1", "1.0b1-1", Ordering::Less),
        ("1.0-RC1-1", "1.0-rc1-1", Ordering::Equal),
        ("1.0~rc1-1", "1.0~rc2-1", Ordering::Less),
        ("1.0~rc2-1", "1.0-1", Ordering::Less),
        ("1.0-rc-2-1", "1.0-rc.2-1", Ordering::Greater),
        ("1.0.1-1", "1.0-foo-1", Ordering::Less),
        ("1.0-foo-1", "1.0-goo-1", Ordering::Less),
        ("1.0+git-1", "1.0.git-1", Ordering::Equal),
        ("1:1.0-1", "2.0-1", Ordering::Greater),
        ("0:1.0-1", "1.0-1", Ordering::Equal),
        ("1.0-1", "1.0-2", Ordering::Less),
        (
            "123456789012345678901234567890-1",
            "123456789012345678901234567891-1",
            Ordering::Less,
        ),
        ("0001.0-1", "1.0-1", Ordering::Equal),
        ("1.0-1.0-1", "1.0.1.0-1", Ordering::Equal),
        ("1.0-1.0-1", "1.0.1-1", Ordering::Greater),
    ];

    #[test]
    fn design_table_both_directions() {
        for &(a, b, want) in TABLE.iter().chain(MORE) {
            let (va, vb) = (v(a), v(b));
            assert_eq!(va.cmp(&vb), want, "cmp({a}, {b})");
            assert_eq!(vb.cmp(&va), want.reverse(), "cmp({b}, {a})");
            assert_eq!(va == vb, want == Ordering::Equal, "{a} == {b}");
            assert_eq!(va.partial_cmp(&vb), Some(want), "partial_cmp({a}, {b})");
        }
    }

    #[test]
    fn compare_upstream_matches_version_order() {
        assert_eq!(compare_upstream("1.3.0", "1.3.0"), Ordering::Equal);
        assert_eq!(compare_upstream("1.3.1", "1.3.0"), Ordering::Greater);
        assert_eq!(compare_upstream("1.3.0~rc1", "1.3.0"), Ordering::Less);
        assert_eq!(compare_upstream("", "0"), Ordering::Less);
        assert_eq!(compare_upstream("", ""), Ordering::Equal);
        // Junk outside the character set is treated as a separator.
        assert_eq!(compare_upstream("1;0", "1.0"), Ordering::Equal);
        assert_eq!(compare_upstream("é1", "1"), Ordering::Equal);
    }

    #[test]
    fn parse_parts() {
        let x = v("2:0.5.0-1");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (2, "0.5.0", 1));
        let x = v("1.0-rc.1-1");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (0, "1.0-rc.1", 1));
        let x = v("1.3.2-10");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (0, "1.3.2", 10));
        assert_eq!("1.0~rc1-3".parse::<Version>(), Ok(v("1.0~rc1-3")));
    }

    #[test]
    fn parse_errors() {
        type Mk = fn(String) -> VersionError;
        let cases: &[(&str, Mk)] = &[
            ("1.0-0", |input| VersionError::RevisionZero { input }),
            ("01:1.0-1", |input| VersionError::LeadingZero {
                input,
                part: "epoch",
            }),
            ("1.0-01", |input| VersionError::LeadingZero {
                input,
                part: "revision",
            }),
            ("-1", |input| VersionError::EmptyUpstream { input }),
            ("1.0-", |input| VersionError::EmptyRevision { input }),
            (":1.0-1", |input| VersionError::EmptyEpoch { input }),
            ("1.0", |input| VersionError::MissingRevision { input }),
            ("", |input| VersionError::MissingRevision { input }),
            ("1:-1", |input| VersionError::EmptyUpstream { input }),
            ("x:1.0-1", |input| VersionError::NotANumber {
                input,
                part: "epoch",
            }),
            ("1.0-1a", |input| VersionError::NotANumber {
                input,
                part: "revision",
            }),
            ("1.0-+1", |input| VersionError::NotANumber {
                input,
                part: "revision",
            }),
            ("1.0-99999999999999999999", |input| VersionError::TooLarge {
                input,
                part: "revision",
            }),
            ("99999999999999999999:1.0-1", |input| {
                VersionError::TooLarge {
                    input,
                    part: "epoch",
                }
            }),
            ("1.0;rm-1", |input| VersionError::UpstreamChars {
                input,
                upstream: "1.0;rm".into(),
            }),
            ("1.0 -1", |input| VersionError::UpstreamChars {
                input,
                upstream: "1.0 ".into(),
            }),
            ("é-1", |input| VersionError::UpstreamStart {
                input,
                upstream: "é".into(),
            }),
            ("1.é-1", |input| VersionError::UpstreamChars {
                input,
                upstream: "1.é".into(),
            }),
            ("~1-1", |input| VersionError::UpstreamStart {
                input,
                upstream: "~1".into(),
            }),
            ("1:2:3-1", |input| VersionError::UpstreamChars {
                input,
                upstream: "2:3".into(),
            }),
            ("../x-1", |input| VersionError::UpstreamStart {
                input,
                upstream: "../x".into(),
            }),
            ("1.0/x-1", |input| VersionError::UpstreamChars {
                input,
                upstream: "1.0/x".into(),
            }),
        ];
        for (input, mk) in cases {
            assert_eq!(Version::parse(input), Err(mk(input.to_string())), "{input}");
        }
    }

    #[test]
    fn error_messages_quote_the_input() {
        let msg = |s: &str| match Version::parse(s) {
            Ok(v) => panic!("{s} parsed as {v}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            msg("1.0-0"),
            r#"invalid version "1.0-0": revision must be 1 or more"#
        );
        assert_eq!(
            msg("1.0-01"),
            r#"invalid version "1.0-01": revision must not have leading zeros"#
        );
        assert_eq!(
            msg("1.0"),
            r#"invalid version "1.0": missing "-revision" suffix"#
        );
        assert!(msg("1.0;rm-1").contains(r#""1.0;rm-1""#));
        // Control characters are escaped, never written raw into a log.
        assert!(msg("1.0\n-1").contains(r#""1.0\n-1""#));
    }

    #[test]
    fn new_validates() {
        let x = Version::new("1.3.2", 1).expect("valid");
        assert_eq!(x.to_string(), "1.3.2-1");
        assert_eq!(x, v("1.3.2-1"));
        assert_eq!(
            Version::new("1.0", 0),
            Err(VersionError::RevisionZero {
                input: "1.0-0".into()
            })
        );
        assert!(matches!(
            Version::new("", 1),
            Err(VersionError::EmptyUpstream { .. })
        ));
        assert!(matches!(
            Version::new("1.1;rm", 1),
            Err(VersionError::UpstreamChars { .. })
        ));
        assert!(matches!(
            Version::new("-1", 1),
            Err(VersionError::UpstreamStart { .. })
        ));
        assert_eq!(
            Version::new("1.0-rc.1", 2).map(|v| v.to_string()),
            Ok("1.0-rc.1-2".to_string())
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "2:0.5.0-1",
            "1.3.2-1",
            "0:1.0-1",
            "1.0-rc.1-1",
            "1.0~rc1-12",
            "01.02-3",
            "1.0+git20240101-1",
            "18446744073709551615:1-18446744073709551615",
        ] {
            assert_eq!(v(s).to_string(), s);
        }
    }

    #[test]
    fn valid_upstream() {
        for s in ["1", "a", "1.0-rc.1", "1.0~a+b", "Z9"] {
            assert!(is_valid_upstream(s), "{s}");
        }
        for s in [
            "", "-1", ".1", "~1", "+1", "1;", "1 ", "1/2", "é", "1é", "1:2",
        ] {
            assert!(!is_valid_upstream(s), "{s}");
        }
    }

    #[test]
    fn sorting_is_sensible() {
        let mut list: Vec<Version> = [
            "1.0-1",
            "1.0~rc1-1",
            "1.0.1-1",
            "0.9-1",
            "1.0~alpha-1",
            "1.0~dev-1",
            "1.0-2",
            "1:0.1-1",
            "1.0~beta2-1",
            "1.0~beta10-1",
        ]
        .iter()
        .map(|s| v(s))
        .collect();
        list.sort();
        let got: Vec<String> = list.iter().map(Version::to_string).collect();
        assert_eq!(
            got,
            [
                "0.9-1",
                "1.0~dev-1",
                "1.0~alpha-1",
                "1.0~beta2-1",
                "1.0~beta10-1",
                "1.0~rc1-1",
                "1.0-1",
                "1.0-2",
                "1.0.1-1",
                "1:0.1-1",
            ]
        );
    }

    // ---- property tests ----

    /// Reference model: each upstream as an explicit key sequence with a
    /// derived (hence total) order. The lazy comparator must agree with it.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        PreWord(u8, Vec<u8>),
        PreNumber(usize, Vec<u8>),
        End,
        Number(usize, Vec<u8>),
        Word(Vec<u8>),
    }

    fn keys(s: &str) -> Vec<Key> {
        let mut out: Vec<Key> = Segments::new(s)
            .map(|seg| {
                let digits = || {
                    let t = seg.text.trim_start_matches('0');
                    (t.len(), t.as_bytes().to_vec())
                };
                match seg.class() {
                    Class::PreWord => match pre_release_rank(seg.text) {
                        Some(r) => Key::PreWord(r, Vec::new()),
                        None => Key::PreWord(RANK_OTHER, seg.text.as_bytes().to_vec()),
                    },
                    Class::PreNumber => {
                        let (n, d) = digits();
                        Key::PreNumber(n, d)
                    }
                    Class::Number => {
                        let (n, d) = digits();
                        Key::Number(n, d)
                    }
                    Class::Word => Key::Word(seg.text.as_bytes().to_vec()),
                    Class::End => unreachable!("segments are never End"),
                }
            })
            .collect();
        out.push(Key::End);
        out
    }

    fn segment_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[0-9]{1,3}",
            1 => "0{0,2}[0-9]{1,25}",
            2 => prop::sample::select(vec![
                "dev", "alpha", "a", "beta", "b", "pre", "rc", "RC", "Alpha", "DEV",
            ])
            .prop_map(String::from),
            2 => prop::sample::select(vec!["foo", "git", "post", "x", "Zeta", "z", "final"])
                .prop_map(String::from),
        ]
    }

    fn upstream_strategy() -> impl Strategy<Value = String> {
        (
            segment_strategy(),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["", ".", ".", "+", "-", "~"]),
                    segment_strategy(),
                ),
                0..6,
            ),
        )
            .prop_map(|(first, rest)| {
                let mut s = first;
                for (sep, seg) in rest {
                    s.push_str(sep);
                    s.push_str(&seg);
                }
                s
            })
    }

    fn version_strategy() -> impl Strategy<Value = Version> {
        (
            prop_oneof![4 => Just(None), 1 => (0u64..3).prop_map(Some)],
            upstream_strategy(),
            1u64..4,
        )
            .prop_map(|(epoch, upstream, revision)| {
                let s = match epoch {
                    Some(e) => format!("{e}:{upstream}-{revision}"),
                    None => format!("{upstream}-{revision}"),
                };
                match Version::parse(&s) {
                    Ok(v) => v,
                    Err(e) => panic!("generator produced invalid {s}: {e}"),
                }
            })
    }

    /// Small pool so that triples often share prefixes and compare equal.
    fn small_upstream() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["", ".", "-", "~"]),
                prop::sample::select(vec!["0", "1", "01", "2", "a", "alpha", "rc", "foo"]),
            ),
            1..5,
        )
        .prop_map(|parts| {
            let mut s = String::new();
            for (i, (sep, seg)) in parts.into_iter().enumerate() {
                if i > 0 {
                    s.push_str(sep);
                }
                s.push_str(seg);
            }
            s
        })
    }

    fn small_version() -> impl Strategy<Value = Version> {
        (small_upstream(), 1u64..3).prop_map(|(u, r)| match Version::new(&u, r) {
            Ok(v) => v,
            Err(e) => panic!("generator produced invalid {u}: {e}"),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn generated_versions_round_trip(a in version_strategy()) {
            let again = Version::parse(&a.to_string());
            prop_assert_eq!(again.as_ref().map(Version::to_string), Ok(a.to_string()));
            prop_assert!(is_valid_upstream(a.upstream()));
        }

        #[test]
        fn reflexive(a in version_strategy()) {
            prop_assert_eq!(a.cmp(&a), Ordering::Equal);
            prop_assert!(a == a.clone());
        }

        #[test]
        fn antisymmetric(a in version_strategy(), b in version_strategy()) {
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        }

        #[test]
        fn eq_agrees_with_cmp(a in version_strategy(), b in version_strategy()) {
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
            prop_assert_eq!(a.partial_cmp(&b), Some(a.cmp(&b)));
            prop_assert_eq!(a < b, a.cmp(&b) == Ordering::Less);
        }

        #[test]
        fn transitive(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            if a <= b && b <= c {
                prop_assert!(a <= c, "{} <= {} <= {} but not {} <= {}", a, b, c, a, c);
            }
            if a == b && b == c {
                prop_assert!(a == c);
            }
        }

        #[test]
        fn transitive_small(a in small_version(), b in small_version(), c in small_version()) {
            let all = [&a, &b, &c];
            for x in all {
                for y in all {
                    for z in all {
                        if x <= y && y <= z {
                            prop_assert!(x <= z, "{} <= {} <= {} but not {} <= {}", x, y, z, x, z);
                        }
                        if x == y && y == z {
                            prop_assert!(x == z);
                        }
                    }
                }
            }
        }

        #[test]
        fn matches_reference_model(a in upstream_strategy(), b in upstream_strategy()) {
            prop_assert_eq!(compare_upstream(&a, &b), keys(&a).cmp(&keys(&b)));
        }

        #[test]
        fn matches_reference_model_small(a in small_upstream(), b in small_upstream()) {
            prop_assert_eq!(compare_upstream(&a, &b), keys(&a).cmp(&keys(&b)));
        }

        #[test]
        fn compare_upstream_total_on_junk(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            prop_assert_eq!(compare_upstream(&a, &b), compare_upstream(&b, &a).reverse());
            prop_assert_eq!(compare_upstream(&a, &a), Ordering::Equal);
            let _ = Version::parse(&a);
        }
    }
}
