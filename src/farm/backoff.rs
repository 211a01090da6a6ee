//! The backoff book: failed (recipe, version) pairs and when each may be
//! retried, and the recipes an operator paused, saved atomically to
//! `state_dir/state.json` so a restart neither forgets failures nor
//! hammers a broken recipe nor resumes a paused one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::host::fs::write_atomic;
use crate::model::build::{BuildKey, FailureRecord};
use crate::model::config::backoff_after;

#[derive(Serialize, Deserialize)]
struct StateFile {
    schema_version: u32,
    #[serde(default)]
    failures: BTreeMap<BuildKey, FailureRecord>,
    /// Recipes paused by an operator (absent from files written before
    /// pausing existed).
    #[serde(default)]
    paused: BTreeSet<String>,
}

/// The backoff book: failed builds and their next-retry times, persisted
/// in `state.json`.
#[derive(Debug)]
pub struct BackoffBook {
    path: PathBuf,
    schedule: Vec<Duration>,
    entries: BTreeMap<BuildKey, FailureRecord>,
    paused: BTreeSet<String>,
}

/// The book's file contents at one instant, to be written off the runtime
/// (two fsyncs) with [`BookSnapshot::write`].
#[derive(Debug)]
pub struct BookSnapshot {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl BookSnapshot {
    /// The file it goes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file atomically (blocking: temp file, fsync, rename,
    /// fsync of the directory).
    pub fn write(&self) -> std::io::Result<()> {
        write_atomic(&self.path, &self.bytes)
    }
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
            paused: BTreeSet::new(),
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (book, None),
            Err(e) => return (book, Some(format!("{}: cannot read: {e}", path.display()))),
        };
        match serde_json::from_slice::<StateFile>(&text) {
            Ok(s) => {
                book.entries = s.failures;
                book.paused = s.paused;
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

    /// Is `key` waiting out a backoff at `now`?
    pub fn is_backing_off(&self, key: &BuildKey, now: SystemTime) -> bool {
        !self.entries.is_empty() && self.entries.get(key).is_some_and(|r| r.next_retry > now)
    }

    /// Records a failure of `key`, built from `tag`; returns the wait
    /// before the next retry.
    pub fn record_failure(
        &mut self,
        key: &BuildKey,
        tag: &str,
        error: &str,
        now: SystemTime,
    ) -> Duration {
        let e = self.entries.entry(key.clone()).or_insert(FailureRecord {
            failures: 0,
            next_retry: now,
            error: String::new(),
            tag: String::new(),
        });
        e.failures += 1;
        let wait = backoff_after(&self.schedule, e.failures);
        e.next_retry = now + wait;
        e.error = error.to_string();
        e.tag = tag.to_string();
        wait
    }

    /// Clears `key` (after success, or for a retry); the entry, if it was
    /// there.
    pub fn clear(&mut self, key: &BuildKey) -> Option<FailureRecord> {
        self.entries.remove(key)
    }

    /// Is `recipe` paused?
    pub fn is_paused(&self, recipe: &str) -> bool {
        self.paused.contains(recipe)
    }

    /// Pauses or resumes `recipe`; true if that changed anything.
    pub fn set_paused(&mut self, recipe: &str, paused: bool) -> bool {
        if paused {
            self.paused.insert(recipe.to_string())
        } else {
            self.paused.remove(recipe)
        }
    }

    /// The paused recipes, sorted.
    pub fn paused(&self) -> &BTreeSet<String> {
        &self.paused
    }

    /// Keeps the entries for which `keep` is true; returns how many were
    /// dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&BuildKey) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|k, _| keep(k));
        before - self.entries.len()
    }

    /// Keeps the paused recipes for which `keep` is true; returns how many
    /// were dropped.
    pub fn retain_paused(&mut self, keep: impl FnMut(&String) -> bool) -> usize {
        let before = self.paused.len();
        self.paused.retain(keep);
        before - self.paused.len()
    }

    /// All entries, by key.
    pub fn entries(&self) -> &BTreeMap<BuildKey, FailureRecord> {
        &self.entries
    }

    /// The file's contents now, to write with [`BookSnapshot::write`].
    pub fn snapshot(&self) -> BookSnapshot {
        let doc = StateFile {
            schema_version: 1,
            failures: self.entries.clone(),
            paused: self.paused.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&doc).expect("the book serialises");
        bytes.push(b'\n');
        BookSnapshot {
            path: self.path.clone(),
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_book_round_trips_and_follows_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let sched = vec![Duration::from_secs(60), Duration::from_secs(300)];
        let (mut b, err) = BackoffBook::load(&path, sched.clone());
        assert!(err.is_none());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let musl = BuildKey::new("musl", "1.2.5-1");
        assert_eq!(
            b.record_failure(&musl, "v1.2.5", "build failed", now),
            Duration::from_secs(60)
        );
        assert_eq!(
            b.record_failure(&musl, "v1.2.5", "build failed", now),
            Duration::from_secs(300)
        );
        assert_eq!(
            b.record_failure(&musl, "v1.2.5", "build failed", now),
            Duration::from_secs(300)
        );
        assert!(b.is_backing_off(&musl, now));
        assert!(!b.is_backing_off(&musl, now + Duration::from_secs(301)));
        b.record_failure(&BuildKey::new("gone", "1.0-1"), "v1.0", "build failed", now);
        assert_eq!(b.retain(|k| k.recipe != "gone"), 1);
        assert!(b.set_paused("libz", true) && !b.set_paused("libz", true));
        b.snapshot().write().unwrap();
        let (b2, _) = BackoffBook::load(&path, sched.clone());
        assert_eq!(b2.entries()[&musl].failures, 3);
        assert_eq!(b2.entries()[&musl].tag, "v1.2.5");
        assert_eq!(b2.entries(), b.entries());
        assert!(b2.is_paused("libz") && !b2.is_paused("musl"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"musl@1.2.5-1\""), "{text}");

        std::fs::write(&path, "{ nope").unwrap();
        let (b3, err) = BackoffBook::load(&path, sched);
        assert!(b3.entries().is_empty());
        assert!(err.unwrap().contains("state.json: "));
        assert!(dir.path().join("state.json.corrupt").exists());
    }

    #[test]
    fn state_files_from_before_pausing_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"schema_version": 1, "failures": {"musl@1.2.5-1": {"failures": 2, "next_retry": "2026-05-07T14:47:11Z", "error": "building: boom"}}}"#,
        )
        .unwrap();
        let (mut b, err) = BackoffBook::load(&path, vec![Duration::from_secs(60)]);
        assert!(err.is_none(), "{err:?}");
        let musl = BuildKey::new("musl", "1.2.5-1");
        assert_eq!(b.entries()[&musl].tag, "");
        assert!(b.paused().is_empty());
        assert_eq!(b.clear(&musl).map(|r| r.failures), Some(2));
        assert_eq!(b.clear(&musl), None);
        b.set_paused("b", true);
        b.set_paused("a", true);
        assert_eq!(b.retain_paused(|r| r != "b"), 1);
        assert_eq!(b.paused().iter().collect::<Vec<_>>(), ["a"]);
    }
}
