//! Dedup of a first poll: 20,000 matching tags against a published index
//! of 20,000 entries (DESIGN.md section 12: well under 50 ms). Measures the
//! whole per-poll path after ls-remote: tag_pattern matching and version
//! composition for every tag, then the O(1) dedup + backoff filter.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use farmhand::farm::backoff::BackoffBook;
use farmhand::farm::queue::BuildQueue;
use farmhand::model::recipe::load_roster;
use farmhand::watch::poll::match_tags;

const N: usize = 20_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("recipes/big");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(
        r.join("recipe.toml"),
        "[upstream]\ngit = \"/nonexistent\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n",
    )
    .unwrap();
    let roster = load_roster(&dir.path().join("recipes"), Duration::from_secs(3600)).unwrap();
    let recipe = roster.recipes["big"].clone();
    let tags: Vec<String> = (0..N)
        .map(|i| format!("v{}.{}.{}", i / 1000, (i / 10) % 100, i % 10))
        .collect();
    let published: HashSet<String> = match_tags(&recipe, &tags)
        .candidates
        .into_iter()
        .map(|c| c.version)
        .collect();
    assert_eq!(published.len(), N);
    let mut queue = BuildQueue::new();
    for v in &published {
        queue.mark_published("big", v);
    }
    let (book, _) = BackoffBook::load(
        &dir.path().join("state.json"),
        vec![Duration::from_secs(60)],
    );

    let mut g = c.benchmark_group("dedup_20000_tags_all_published");
    g.sample_size(20);
    g.bench_function("match_tags_and_dedup", |b| {
        b.iter(|| {
            let m = match_tags(&recipe, black_box(&tags));
            let fresh = queue.select_new(&recipe, m.candidates, &book, None, SystemTime::now());
            assert!(fresh.is_empty());
            fresh.len()
        });
    });
    let candidates = match_tags(&recipe, &tags).candidates;
    g.bench_function("dedup_only", |b| {
        b.iter(|| {
            queue
                .select_new(
                    &recipe,
                    black_box(candidates.clone()),
                    &book,
                    None,
                    SystemTime::now(),
                )
                .len()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
