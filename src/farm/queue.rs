//! The build queue and the backoff book.
//!
//! [`BuildQueue`] keeps, per recipe, the versions waiting to be built,
//! newest first, and hands them out with recipes taking turns, so one
//! recipe with 300 historic tags cannot starve the others. Membership is a
//! hash lookup, so dedup is O(1) per trigger. An operator's retry goes
//! ahead of all of them ([`BuildQueue::push_front`]), and the worker skips
//! the builds of paused recipes ([`BuildQueue::pop_where`]), which stay
//! queued.
//!
//! The queue also holds the farm's one dedup set: the versions of each
//! recipe already published. [`BuildQueue::select_new`] filters a poll's
//! candidates against it, the queue, the build in flight and the backoff
//! book.
//!
//! [`BackoffBook`] remembers failed (recipe, version) pairs and when each
//! may be retried; it is saved atomically to `state_dir/state.json`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::SystemTime;

use tracing::debug;

use crate::farm::backoff::BackoffBook;
use crate::model::build::{BuildKey, Candidate, QueuedBuild};
use crate::model::recipe::{Backlog, Recipe};
use crate::model::version::{compare_upstream, Version};

/// Sort key: the parsed version, then the raw string so that versions equal
/// by ordering (`1.01` and `1.1`) stay distinct entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key(Version, String);

/// The deduplicating, fair build queue.
#[derive(Debug, Default)]
pub struct BuildQueue {
    /// Builds that go before any recipe's turn (retries), in order.
    urgent: VecDeque<QueuedBuild>,
    per_recipe: HashMap<String, BTreeMap<Key, QueuedBuild>>,
    turns: VecDeque<String>,
    members: HashMap<String, HashSet<String>>,
    len: usize,
    /// recipe → versions in the repository (the dedup set).
    published: HashMap<String, HashSet<String>>,
}

impl BuildQueue {
    /// An empty queue.
    pub fn new() -> BuildQueue {
        BuildQueue::default()
    }

    /// Records that `version` of `recipe` is in the repository.
    pub fn mark_published(&mut self, recipe: &str, version: &str) {
        self.published
            .entry(recipe.to_string())
            .or_default()
            .insert(version.to_string());
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

    /// Queues `b` ahead of every other build (an operator's retry); a
    /// version already queued moves there. False if the version does not
    /// parse.
    pub fn push_front(&mut self, b: QueuedBuild) -> bool {
        let Ok(v) = Version::parse(&b.version) else {
            return false;
        };
        if self.contains(&b.recipe, &b.version) {
            if let Some(i) = self
                .urgent
                .iter()
                .position(|u| u.recipe == b.recipe && u.version == b.version)
            {
                self.urgent.remove(i);
            } else if let Some(q) = self.per_recipe.get_mut(&b.recipe) {
                q.remove(&Key(v, b.version.clone()));
                if q.is_empty() {
                    self.per_recipe.remove(&b.recipe);
                    self.turns.retain(|r| *r != b.recipe);
                }
            }
        } else {
            self.members
                .entry(b.recipe.clone())
                .or_default()
                .insert(b.version.clone());
            self.len += 1;
        }
        self.urgent.push_front(b);
        true
    }

    /// The next build: the newest version of the recipe whose turn it is.
    pub fn pop(&mut self) -> Option<QueuedBuild> {
        self.pop_where(|_| true)
    }

    /// The next build of a recipe for which `runnable` is true: the first
    /// urgent one, else the newest version of the first such recipe in
    /// turn. The builds of other recipes stay queued, in their places.
    pub fn pop_where(&mut self, runnable: impl Fn(&str) -> bool) -> Option<QueuedBuild> {
        if let Some(i) = self.urgent.iter().position(|b| runnable(&b.recipe)) {
            let b = self.urgent.remove(i)?;
            self.forget(&b.recipe, &b.version);
            return Some(b);
        }
        let turn = self.turns.iter().position(|r| runnable(r))?;
        let recipe = self.turns.remove(turn)?;
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
        self.urgent.retain(|b| {
            let k = keep(b);
            if !k {
                gone.push((b.recipe.clone(), b.version.clone()));
            }
            k
        });
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

    /// Up to `limit` queued builds in the order they will run (paused
    /// recipes aside).
    pub fn snapshot(&self, limit: usize) -> Vec<QueuedBuild> {
        let mut iters: Vec<_> = self
            .turns
            .iter()
            .filter_map(|r| self.per_recipe.get(r))
            .map(|q| q.values().rev())
            .collect();
        let mut out: Vec<QueuedBuild> = self.urgent.iter().take(limit).cloned().collect();
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

impl BuildQueue {
    /// The dedup and backoff filter: the candidates of `recipe` that are not
    /// published, queued, in flight (`running`, this recipe's version being
    /// built) or backing off, and at or above `min_version`. O(1) per
    /// candidate.
    ///
    /// With `backlog = "latest"` the history before the recipe's first build
    /// is never built: with nothing published, only the newest candidate;
    /// afterwards, only upstream versions newer than the newest published
    /// one, or published ones at another revision (a revision bump). That
    /// costs one pass over the recipe's published versions per offer.
    pub fn select_new(
        &self,
        recipe: &Recipe,
        mut candidates: Vec<Candidate>,
        book: &BackoffBook,
        running: Option<&str>,
        now: SystemTime,
    ) -> Vec<Candidate> {
        let id = recipe.id.as_str();
        let published = self.published.get(id).filter(|s| !s.is_empty());
        if recipe.watch.backlog == Backlog::Latest {
            match published {
                None => {
                    let newest = candidates
                        .iter()
                        .filter_map(|c| Version::parse(&c.version).ok().map(|v| (v, c.clone())))
                        .max_by(|a, b| a.0.cmp(&b.0))
                        .map(|(_, c)| c);
                    candidates = newest.into_iter().collect();
                }
                Some(published) => {
                    let upstreams: HashSet<&str> = published
                        .iter()
                        .filter_map(|v| v.rsplit_once('-').map(|(upstream, _revision)| upstream))
                        .collect();
                    let newest = upstreams
                        .iter()
                        .copied()
                        .max_by(|a, b| compare_upstream(a, b));
                    candidates.retain(|c| {
                        upstreams.contains(c.upstream.as_str())
                            || newest.is_none_or(|n| compare_upstream(&c.upstream, n).is_gt())
                    });
                }
            }
        }
        candidates.retain(|c| {
            if !recipe.admits(&c.upstream)
                || published.is_some_and(|p| p.contains(&c.version))
                || self.contains(id, &c.version)
                || running == Some(c.version.as_str())
            {
                return false;
            }
            if !book.entries().is_empty()
                && book.is_backing_off(&BuildKey::new(id, c.version.as_str()), now)
            {
                debug!(recipe = id, version = %c.version, "trigger skipped (in failure backoff window)");
                return false;
            }
            true
        });
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::Trigger;

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
    fn retries_go_first_and_paused_recipes_wait_in_place() {
        let mut q = BuildQueue::new();
        for v in ["1.0", "2.0", "3.0"] {
            q.push(qb("a", v));
        }
        q.push(qb("b", "1.0"));
        q.push(qb("c", "1.0"));
        // A queued version moves to the front; a new one joins it there.
        assert!(q.push_front(qb("a", "1.0")));
        assert!(q.push_front(qb("d", "0.5")));
        assert!(!q.push_front(qb("d", "not a version!")));
        assert_eq!(q.len(), 6);
        let ids = |v: Vec<QueuedBuild>| -> Vec<String> {
            v.into_iter()
                .map(|b| format!("{}@{}", b.recipe, b.upstream))
                .collect()
        };
        assert_eq!(
            ids(q.snapshot(100)),
            ["d@0.5", "a@1.0", "a@3.0", "b@1.0", "c@1.0", "a@2.0"]
        );
        // Recipe a paused: its builds are skipped, not dropped.
        let not_a = |r: &str| r != "a";
        let order: Vec<_> = std::iter::from_fn(|| q.pop_where(not_a)).collect();
        assert_eq!(ids(order), ["d@0.5", "b@1.0", "c@1.0"]);
        assert_eq!(q.len(), 3);
        assert!(q.contains("a", "1.0-1") && !q.contains("b", "1.0-1"));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(ids(order), ["a@1.0", "a@3.0", "a@2.0"]);
        assert!(q.is_empty());
        q.push_front(qb("x", "1.0"));
        assert_eq!(q.retain(|b| b.recipe != "x"), 1);
        assert!(q.is_empty() && q.pop().is_none());
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
}
