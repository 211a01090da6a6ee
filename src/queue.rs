//! The build queue and the backoff book.
//!
//! [`BuildQueue`] keeps, per recipe, the versions waiting to be built,
//! newest first, and hands them out with recipes taking turns, so one
//! recipe with 300 historic tags cannot starve the others. Membership is a
//! hash lookup, so dedup is O(1) per trigger.
//!
//! [`BackoffBook`] remembers failed (recipe, version) pairs and when each
//! may be retried; it is saved atomically to `state_dir/state.json`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::builder::Trigger;
use crate::fsutil::write_atomic;
use crate::version::Version;

/// One version waiting to be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBuild {
    /// Recipe id.
    pub recipe: String,
    /// Upstream tag.
    pub tag: String,
    /// Upstream version (from the tag).
    pub upstream: String,
    /// Package version.
    pub version: String,
    /// What asked for it.
    pub trigger: Trigger,
}

/// Sort key: the parsed version, then the raw string so that versions equal
/// by ordering (`1.01` and `1.1`) stay distinct entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key(Version, String);

/// The deduplicating, fair build queue.
#[derive(Debug, Default)]
pub struct BuildQueue {
    per_recipe: HashMap<String, BTreeMap<Key, QueuedBuild>>,
    turns: VecDeque<String>,
    members: HashMap<String, HashSet<String>>,
    len: usize,
}

impl BuildQueue {
    /// An empty queue.
    pub fn new() -> BuildQueue {
        BuildQueue::default()
    }

    /// Is (recipe, version) queued?
    pub fn contains(&self, recipe: &str, version: &str) -> bool {
        self.members
            .get(recipe)
            .is_some_and(|s| s.contains(version))
    }

    /// Queues a build; false if it is already queued or the version does
    /// not parse.
    pub fn push(&mut self, b: QueuedBuild) -> bool {
        let Ok(v) = Version::parse(&b.version) else {
            return false;
        };
        if !self
            .members
            .entry(b.recipe.clone())
            .or_default()
            .insert(b.version.clone())
        {
            return false;
        }
        self.len += 1;
        let recipe = b.recipe.clone();
        let q = self.per_recipe.entry(recipe.clone()).or_default();
        if q.is_empty() {
            self.turns.push_back(recipe);
        }
        q.insert(Key(v, b.version.clone()), b);
        true
    }

    /// The next build: the newest version of the recipe whose turn it is.
    pub fn pop(&mut self) -> Option<QueuedBuild> {
        let recipe = self.turns.pop_front()?;
        let q = self.per_recipe.get_mut(&recipe)?;
        let (_, b) = q.pop_last()?;
        if q.is_empty() {
            self.per_recipe.remove(&recipe);
        } else {
            self.turns.push_back(recipe);
        }
        self.forget(&b.recipe, &b.version);
        Some(b)
    }

    fn forget(&mut self, recipe: &str, version: &str) {
        if let Some(s) = self.members.get_mut(recipe) {
            if s.remove(version) {
                self.len -= 1;
            }
            if s.is_empty() {
                self.members.remove(recipe);
            }
        }
    }

    /// Drops every queued build for which `keep` is false; returns how many.
    pub fn retain(&mut self, mut keep: impl FnMut(&QueuedBuild) -> bool) -> usize {
        let mut gone = Vec::new();
        self.per_recipe.retain(|_, q| {
            q.retain(|_, b| {
                let k = keep(b);
                if !k {
                    gone.push((b.recipe.clone(), b.version.clone()));
                }
                k
            });
            !q.is_empty()
        });
        let dropped = gone.len();
        for (r, v) in gone {
            self.forget(&r, &v);
        }
        let per = &self.per_recipe;
        self.turns.retain(|r| per.contains_key(r));
        dropped
    }

    /// Number of queued builds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `limit` queued builds in the order they will run.
    pub fn snapshot(&self, limit: usize) -> Vec<QueuedBuild> {
        let mut iters: Vec<_> = self
            .turns
            .iter()
            .filter_map(|r| self.per_recipe.get(r))
            .map(|q| q.values().rev())
            .collect();
        let mut out = Vec::new();
        while out.len() < limit && !iters.is_empty() {
            iters.retain_mut(|it| match it.next() {
                Some(b) if out.len() < limit => {
                    out.push(b.clone());
                    true
                }
                Some(_) => false,
                None => false,
            });
        }
        out
    }
}

/// One failed (recipe, version).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureRecord {
    /// Consecutive failures.
    pub failures: u32,
    /// Not retried before this time (RFC 3339 in the file).
    #[serde(with = "rfc3339")]
    pub next_retry: SystemTime,
    /// The last error, with its phase.
    #[serde(default)]
    pub error: String,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    schema_version: u32,
    #[serde(default)]
    failures: BTreeMap<String, FailureRecord>,
}

/// The backoff book: failed builds and their next-retry times, persisted
/// in `state.json`.
#[derive(Debug)]
pub struct BackoffBook {
    path: PathBuf,
    schedule: Vec<Duration>,
    entries: BTreeMap<String, FailureRecord>,
}

/// The book's key for (recipe, version): `recipe@version`.
pub fn failure_key(recipe: &str, version: &str) -> String {
    format!("{recipe}@{version}")
}

impl BackoffBook {
    /// Loads the book from `path`. A missing file is an empty book. A
    /// malformed one is moved aside to `state.json.corrupt` (nothing is
    /// lost) and the error, naming the file and position, is returned with
    /// an empty book so the daemon keeps running.
    pub fn load(path: &Path, schedule: Vec<Duration>) -> (BackoffBook, Option<String>) {
        let mut book = BackoffBook {
            path: path.to_path_buf(),
            schedule,
            entries: BTreeMap::new(),
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (book, None),
            Err(e) => return (book, Some(format!("{}: cannot read: {e}", path.display()))),
        };
        match serde_json::from_slice::<StateFile>(&text) {
            Ok(s) => {
                book.entries = s.failures;
                (book, None)
            }
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                let _ = std::fs::rename(path, &aside);
                (
                    book,
                    Some(format!(
                        "{}: {e}; moved aside to {} and starting with an empty backoff book",
                        path.display(),
                        aside.display()
                    )),
                )
            }
        }
    }

    /// Is (recipe, version) waiting out a backoff at `now`?
    pub fn is_backing_off(&self, recipe: &str, version: &str, now: SystemTime) -> bool {
        !self.entries.is_empty()
            && self
                .entries
                .get(&failure_key(recipe, version))
                .is_some_and(|r| r.next_retry > now)
    }

    /// Records a failure; returns the wait before the next retry.
    pub fn record_failure(
        &mut self,
        recipe: &str,
        version: &str,
        error: &str,
        now: SystemTime,
    ) -> Duration {
        let e = self
            .entries
            .entry(failure_key(recipe, version))
            .or_insert(FailureRecord {
                failures: 0,
                next_retry: now,
                error: String::new(),
            });
        e.failures += 1;
        let wait = crate::config::backoff_after(&self.schedule, e.failures);
        e.next_retry = now + wait;
        e.error = error.to_string();
        wait
    }

    /// Clears a (recipe, version) after success; true if it was there.
    pub fn clear(&mut self, recipe: &str, version: &str) -> bool {
        self.entries.remove(&failure_key(recipe, version)).is_some()
    }

    /// Keeps the entries for which `keep(recipe, version)` is true; returns
    /// how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|k, _| match k.split_once('@') {
            Some((recipe, version)) => keep(recipe, version),
            None => false,
        });
        before - self.entries.len()
    }

    /// All entries, by key.
    pub fn entries(&self) -> &BTreeMap<String, FailureRecord> {
        &self.entries
    }

    /// The earliest next-retry time, if any.
    pub fn earliest_retry(&self) -> Option<SystemTime> {
        self.entries.values().map(|r| r.next_retry).min()
    }

    /// Writes the book to its file atomically.
    pub fn save(&self) -> std::io::Result<()> {
        let doc = StateFile {
            schema_version: 1,
            failures: self.entries.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes)
    }
}

/// RFC 3339 UTC timestamps (`2026-05-07T14:32:11Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qb(recipe: &str, v: &str) -> QueuedBuild {
        QueuedBuild {
            recipe: recipe.into(),
            tag: format!("v{v}"),
            upstream: v.into(),
            version: format!("{v}-1"),
            trigger: Trigger::Poll,
        }
    }

    #[test]
    fn newest_first_and_recipes_take_turns() {
        let mut q = BuildQueue::new();
        for v in ["1.0", "1.10", "1.9", "1.2"] {
            assert!(q.push(qb("big", v)));
        }
        assert!(q.push(qb("small", "2.0")));
        assert!(q.push(qb("other", "0.1")));
        assert!(!q.push(qb("big", "1.9")), "duplicate");
        assert_eq!(q.len(), 6);
        let snap: Vec<_> = q
            .snapshot(100)
            .into_iter()
            .map(|b| format!("{}@{}", b.recipe, b.version))
            .collect();
        let order: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|b| format!("{}@{}", b.recipe, b.version))
            .collect();
        assert_eq!(
            order,
            [
                "big@1.10-1",
                "small@2.0-1",
                "other@0.1-1",
                "big@1.9-1",
                "big@1.2-1",
                "big@1.0-1"
            ]
        );
        assert_eq!(snap, order);
        assert!(q.is_empty() && !q.contains("big", "1.0-1"));
    }

    #[test]
    fn retain_drops_and_keeps_membership_right() {
        let mut q = BuildQueue::new();
        q.push(qb("a", "1.0"));
        q.push(qb("a", "2.0"));
        q.push(qb("b", "1.0"));
        assert_eq!(q.retain(|b| b.recipe != "b" && b.upstream != "1.0"), 2);
        assert!(!q.contains("b", "1.0-1") && q.contains("a", "2.0-1"));
        assert_eq!(q.pop().unwrap().version, "2.0-1");
        assert!(q.pop().is_none());
    }

    #[test]
    fn backoff_book_round_trips_and_follows_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let sched = vec![Duration::from_secs(60), Duration::from_secs(300)];
        let (mut b, err) = BackoffBook::load(&path, sched.clone());
        assert!(err.is_none());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            b.record_failure("musl", "1.2.5-1", "build failed", now),
            Duration::from_secs(60)
        );
        assert_eq!(
            b.record_failure("musl", "1.2.5-1", "build failed", now),
            Duration::from_secs(300)
        );
        assert_eq!(
            b.record_failure("musl", "1.2.5-1", "build failed", now),
            Duration::from_secs(300)
        );
        assert!(b.is_backing_off("musl", "1.2.5-1", now));
        assert!(!b.is_backing_off("musl", "1.2.5-1", now + Duration::from_secs(301)));
        b.record_failure("gone", "1.0-1", "build failed", now);
        assert_eq!(b.retain(|recipe, _| recipe != "gone"), 1);
        b.save().unwrap();
        let (b2, _) = BackoffBook::load(&path, sched.clone());
        assert_eq!(b2.entries()["musl@1.2.5-1"].failures, 3);
        assert_eq!(b2.entries(), b.entries());

        std::fs::write(&path, "{ nope").unwrap();
        let (b3, err) = BackoffBook::load(&path, sched);
        assert!(b3.entries().is_empty());
        assert!(err.unwrap().contains("state.json: "));
        assert!(dir.path().join("state.json.corrupt").exists());
    }
}
