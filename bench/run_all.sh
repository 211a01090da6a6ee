#!/usr/bin/env bash
# Runs every benchmark of DESIGN.md section 12 and prints one Markdown table
# (the one in docs/performance.md), each figure with the machine's load
# average while it was measured. Needs wrk (Debian package `wrk`) for the
# HTTP rows. Takes about 15 minutes; run it on a quiet machine and compare
# ratios within one run, not across machines.
#
# The farms (up to 10,000 upstreams and 30,000 published versions, about
# 60,000 small files) are made under $TMPDIR: TMPDIR=/dev/shm keeps them
# off a small or slow disk.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet

echo "| scenario | farmhand | target | command |"
echo "|---|---|---|---|"
# Criterion: dedup of 20,000 tags against 20,000 published entries.
cargo bench --quiet --bench dedup -- --noplot 2>/dev/null | awk -v load="$(cut -d' ' -f1-3 /proc/loadavg)" '
  /^dedup_20000_tags_all_published\// { name = $1; sub(/.*\//, "", name) }
  /time:/ { gsub(/\[|\]/, ""); est[name] = $4 " " $5 }
  END {
    printf "| dedup of 20,000 matching tags against 20,000 published (Criterion) | %s (tag matching + dedup), %s (dedup alone) (load %s) | dedup < 50 ms | `cargo bench --bench dedup` |\n", est["match_tags_and_dedup"], est["dedup_only"], load
  }'
python3 bench/once_sweep.py | grep '^|'
python3 bench/idle_memory.py | grep '^|'
python3 bench/http_load.py | grep '^|'
python3 bench/webhook_latency.py | grep '^|'
python3 bench/build_overhead.py | grep '^|'
python3 bench/incremental_fetch.py | grep '^|'
python3 bench/history_startup.py | grep '^|'
python3 bench/console.py | grep '^|'
python3 bench/events.py | grep '^|'
# Scale on one host: 1,000 then 10,000 recipes with their own upstreams.
RECIPES=1000 python3 bench/scale.py | grep '^|' | head -2 | tail -1
python3 bench/scale.py | grep '^|'
python3 bench/steady_memory.py | grep '^|'
python3 bench/poll_spread.py | grep '^|'
