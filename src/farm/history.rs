//! The build history in `state_dir/history/`: every build's start and
//! finish records ([`BuildRecord`]), one JSON line each, appended to
//! numbered segment files (`000000000001.jsonl`, ...). The worker owns it.
//!
//! * A start record is written (and fsynced) before the build runs, so a
//!   build id is never handed out twice, even across a crash; a finish
//!   record is written (and fsynced) before the build counts as finished.
//! * A segment holds about a tenth of `[history].keep` finished builds;
//!   once the newer segments hold `keep` of them, the oldest is deleted.
//!   So the files hold at most about 1.1 × `keep` builds, and reading
//!   them at start is linear and bounded.
//! * A crash at any instant leaves a readable history: a torn last line
//!   (a write cut short) is dropped with a warning and cut off the file;
//!   any other unreadable line is skipped with a warning. A build that
//!   started but never finished (the daemon died) is recorded at the next
//!   start as cancelled.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::model::build::BuildState;
use crate::model::history::BuildRecord;
use crate::model::name::is_safe_component;
use crate::model::notify::Outcome;

/// The error of a build the daemon stopped in the middle of (a crash, a
/// SIGKILL, a power cut): recorded at the next start.
pub const INTERRUPTED: &str = "interrupted: the daemon stopped while the build ran";

/// One segment file.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Finish records in it.
    finished: usize,
}

/// The history files (see the module documentation).
#[derive(Debug)]
pub struct History {
    dir: PathBuf,
    keep: usize,
    per_segment: usize,
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending, and its length.
    file: Option<(File, u64)>,
    next_id: u64,
    /// How each recipe's last finished build (succeeded or failed) ended,
    /// as found at start; taken by the worker.
    last_outcomes: HashMap<String, Outcome>,
}

/// What the history held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The finished builds, oldest first, at most `keep`.
    pub records: Vec<BuildRecord>,
    /// Lines that could not be read (each logged).
    pub skipped: usize,
    /// Builds that started but never finished, now recorded as cancelled.
    pub interrupted: usize,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:012}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let n = name.strip_suffix(".jsonl")?;
    (n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

impl History {
    /// Opens (creating) the history in `dir`, keeping at most `keep`
    /// finished builds; reads it. Blocking: run it off the runtime.
    pub fn open(dir: &Path, keep: usize) -> io::Result<(History, Loaded)> {
        let keep = keep.max(1);
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                crate::host::fs::sync_dir(parent)?;
            }
        }
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| parse_segment_name(e.file_name().to_str()?))
            .collect();
        seqs.sort_unstable();
        let mut h = History {
            dir: dir.to_path_buf(),
            keep,
            per_segment: (keep / 10).max(1),
            segments: VecDeque::new(),
            file: None,
            next_id: 1,
            last_outcomes: HashMap::new(),
        };
        let mut loaded = Loaded::default();
        let mut finished: Vec<BuildRecord> = Vec::new();
        let mut running: HashMap<u64, BuildRecord> = HashMap::new();
        let newest = seqs.last().copied();
        for seq in seqs {
            let path = dir.join(segment_name(seq));
            let mut seg = Segment {
                seq,
                path,
                finished: 0,
            };
            let records = read_segment(&seg.path, Some(seq) == newest, &mut loaded.skipped)?;
            for r in records {
                h.next_id = h.next_id.max(r.id.saturating_add(1));
                if r.is_finished() {
                    seg.finished += 1;
                    running.remove(&r.id);
                    finished.push(r);
                } else if finished.last().is_none_or(|f| f.id < r.id) {
                    running.insert(r.id, r);
                }
            }
            h.segments.push_back(seg);
        }
        if let Some(seg) = h.segments.back() {
            let f = OpenOptions::new().append(true).open(&seg.path)?;
            let len = f.metadata()?.len();
            h.file = Some((f, len));
        }
        // Builds the daemon died in the middle of.
        let mut interrupted: Vec<BuildRecord> = running.into_values().collect();
        interrupted.sort_by_key(|r| r.id);
        for mut r in interrupted {
            r.state = BuildState::Cancelled;
            r.error = Some(INTERRUPTED.to_string());
            r.finished_at = None;
            r.duration = None;
            // Phase changes are not written down as they happen: where the
            // build was when the daemon stopped is not known.
            r.phase = None;
            h.append(&r)?;
            loaded.interrupted += 1;
            finished.push(r);
        }
        h.drop_old()?;
        finished.sort_by_key(|r| r.id);
        for r in &finished {
            let outcome = match r.state {
                BuildState::Succeeded => Outcome::Succeeded,
                BuildState::Failed => Outcome::Failed,
                BuildState::Running | BuildState::Cancelled => continue,
            };
            h.last_outcomes.insert(r.recipe.clone(), outcome);
        }
        let excess = finished.len().saturating_sub(keep);
        finished.drain(..excess);
        loaded.records = finished;
        Ok((h, loaded))
    }

    /// How each recipe's last finished build ended (cancelled builds
    /// aside), as the history held it at start; empty after the first
    /// call. The notifications' `failed` and `recovered` compare with it,
    /// so a restart neither repeats a `failed` nor misses a `recovered`.
    pub fn take_last_outcomes(&mut self) -> HashMap<String, Outcome> {
        std::mem::take(&mut self.last_outcomes)
    }

    /// The id the next build gets: one more than any the history holds.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Takes the next build id.
    pub fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Appends `rec` durably (written and fsynced before this returns).
    /// After a finish record, rotates segments and drops the oldest ones
    /// beyond `keep`. Blocking: run it off the runtime.
    pub fn append(&mut self, rec: &BuildRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.file.is_none() {
            self.new_segment()?;
        }
        let (f, len) = self.file.as_mut().expect("a segment is open");
        let written = f.write_all(&line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Never leave half a line for the next record to run into.
            let _ = f.set_len(*len);
            return Err(e);
        }
        *len += line.len() as u64;
        self.next_id = self.next_id.max(rec.id.saturating_add(1));
        if rec.is_finished() {
            let seg = self.segments.back_mut().expect("a segment is open");
            seg.finished += 1;
            if seg.finished >= self.per_segment {
                self.file = None;
                self.drop_old()?;
            }
        }
        Ok(())
    }

    fn new_segment(&mut self) -> io::Result<()> {
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        let path = self.dir.join(segment_name(seq));
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        crate::host::fs::sync_dir(&self.dir)?;
        let len = f.metadata()?.len();
        self.segments.push_back(Segment {
            seq,
            path,
            finished: 0,
        });
        self.file = Some((f, len));
        Ok(())
    }

    /// Deletes the oldest segments while the others hold `keep` finished
    /// builds.
    fn drop_old(&mut self) -> io::Result<()> {
        let mut total: usize = self.segments.iter().map(|s| s.finished).sum();
        let mut dropped = false;
        while self.segments.len() > 1 {
            let oldest = self.segments.front().expect("more than one").finished;
            if total - oldest < self.keep {
                break;
            }
            let seg = self.segments.pop_front().expect("more than one");
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.segments.push_front(seg);
                    return Err(e);
                }
            }
            total -= oldest;
            dropped = true;
        }
        if dropped {
            crate::host::fs::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The segment files now, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }
}

/// Reads one segment's records. A last line without its newline (a write
/// cut short) is dropped with a warning and, in the newest segment, cut
/// off the file so the next record starts on a line of its own.
fn read_segment(path: &Path, newest: bool, skipped: &mut usize) -> io::Result<Vec<BuildRecord>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        let torn = bytes.len() - complete;
        warn!(file = %path.display(), bytes = torn, "history: torn last record dropped");
        *skipped += 1;
        if newest {
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(complete as u64)?;
            f.sync_all()?;
        }
    }
    let mut out = Vec::new();
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<BuildRecord>(line) {
            Ok(r) if !(is_safe_component(&r.recipe) && is_safe_component(&r.version)) => {
                warn!(file = %path.display(), line = i + 1, "history: record with an unsafe recipe id or version skipped");
                *skipped += 1;
            }
            Ok(r) => out.push(r),
            Err(e) => {
                warn!(file = %path.display(), line = i + 1, err = %e, "history: unreadable record skipped");
                *skipped += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::{Phase, Trigger};
    use crate::model::history::PhaseSpan;
    use std::time::{Duration, SystemTime};

    fn start(id: u64) -> BuildRecord {
        BuildRecord {
            id,
            recipe: "hello".into(),
            version: format!("1.{id}.0-1"),
            tag: format!("v1.{id}.0"),
            trigger: Trigger::Poll,
            state: BuildState::Running,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + id * 10),
            finished_at: None,
            duration: None,
            phase: None,
            error: None,
            phases: vec![PhaseSpan {
                phase: Phase::Fetching,
                started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + id * 10),
                duration: None,
            }],
            log: Some(1),
        }
    }

    fn finish(mut r: BuildRecord) -> BuildRecord {
        r.state = BuildState::Succeeded;
        r.finished_at = Some(r.started_at + Duration::from_secs(2));
        r.duration = Some(2.0);
        r
    }

    fn build(h: &mut History) -> u64 {
        let id = h.take_id();
        h.append(&start(id)).unwrap();
        h.append(&finish(start(id))).unwrap();
        id
    }

    #[test]
    fn ids_continue_and_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("history");
        let (mut h, loaded) = History::open(&hd, 100).unwrap();
        assert!(loaded.records.is_empty());
        assert_eq!(h.next_id(), 1);
        for _ in 0..30 {
            build(&mut h);
        }
        drop(h);
        let (h, loaded) = History::open(&hd, 100).unwrap();
        assert_eq!(loaded.records.len(), 30);
        assert_eq!(loaded.records[0].id, 1);
        assert_eq!(loaded.records[29], finish(start(30)));
        assert_eq!(h.next_id(), 31);
        assert_eq!(loaded.skipped, 0);
    }

    #[test]
    fn keep_bounds_the_files_and_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("history");
        let (mut h, _) = History::open(&hd, 20).unwrap();
        for _ in 0..95 {
            build(&mut h);
        }
        // Segments of 2 finished builds; at most keep + one segment's worth.
        let lines: usize = h
            .files()
            .iter()
            .map(|p| fs::read_to_string(p).unwrap().lines().count())
            .sum();
        assert!((40..=44).contains(&lines), "{lines} lines on disk");
        drop(h);
        let (h, loaded) = History::open(&hd, 20).unwrap();
        assert_eq!(loaded.records.len(), 20);
        assert_eq!(loaded.records[0].id, 76);
        assert_eq!(h.next_id(), 96);
        // A smaller keep takes effect at the next start.
        drop(h);
        let (h, loaded) = History::open(&hd, 5).unwrap();
        assert_eq!(loaded.records.len(), 5);
        assert!(h.files().len() <= 3, "{:?}", h.files());
        assert_eq!(h.next_id(), 96);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("history");
        let (mut h, _) = History::open(&hd, 100).unwrap();
        for _ in 0..3 {
            build(&mut h);
        }
        let file = h.files().pop().unwrap();
        drop(h);
        // A crash in the middle of writing build 4's finish record.
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        let line = serde_json::to_string(&start(4)).unwrap();
        writeln!(f, "{line}").unwrap();
        let whole = serde_json::to_string(&finish(start(4))).unwrap();
        f.write_all(&whole.as_bytes()[..whole.len() / 2]).unwrap();
        drop(f);
        let (mut h, loaded) = History::open(&hd, 100).unwrap();
        assert_eq!(loaded.skipped, 1);
        assert_eq!(loaded.interrupted, 1);
        let ids: Vec<(u64, BuildState)> = loaded.records.iter().map(|r| (r.id, r.state)).collect();
        assert_eq!(
            ids,
            [
                (1, BuildState::Succeeded),
                (2, BuildState::Succeeded),
                (3, BuildState::Succeeded),
                (4, BuildState::Cancelled)
            ]
        );
        assert_eq!(loaded.records[3].error.as_deref(), Some(INTERRUPTED));
        assert_eq!(loaded.records[3].phase, None);
        assert_eq!(h.next_id(), 5);
        build(&mut h);
        drop(h);
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.ends_with("\n"));
        let (h, loaded) = History::open(&hd, 100).unwrap();
        assert_eq!((loaded.skipped, loaded.interrupted), (0, 0));
        assert_eq!(loaded.records.len(), 5);
        assert_eq!(h.next_id(), 6);
    }

    #[test]
    fn garbage_is_skipped_never_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let hd = dir.path().join("history");
        fs::create_dir_all(&hd).unwrap();
        let good = serde_json::to_string(&finish(start(7))).unwrap();
        let mut evil = finish(start(6));
        evil.recipe = "../../etc".into();
        let evil = serde_json::to_string(&evil).unwrap();
        fs::write(
            hd.join(segment_name(1)),
            format!("{{\"not\": \"a record\"}}\n\n\u{0}\u{1}binary\n{evil}\n{good}\n"),
        )
        .unwrap();
        fs::write(hd.join("README"), "not a segment").unwrap();
        let (h, loaded) = History::open(&hd, 100).unwrap();
        assert_eq!(loaded.skipped, 3);
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(h.next_id(), 8);
    }
}
