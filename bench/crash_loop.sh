#!/usr/bin/env bash
# Crash-consistency loop at full count: runs the integration test
# crash::sigkill_at_any_instant_of_publishing_loses_nothing with
# FARMHAND_CRASH_RUNS runs (default 150; CI runs 20) and prints, from its
# output, how many SIGKILLs landed in which phase of building and publishing.
#
#   bench/crash_loop.sh                 # 150 runs
#   bench/crash_loop.sh 300             # 300 runs
#   FARMHAND_CRASH_SEED=123 bench/crash_loop.sh   # replay a seed
#
# The test uses the debug build's FARMHAND_FAULT_PUBLISH_DELAY_MS hook, so
# it runs the debug binary (as the test suite does).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-${FARMHAND_CRASH_RUNS:-150}}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

echo "crash loop: $runs runs (SIGKILL, restart, check after every run)"
status=0
FARMHAND_CRASH_RUNS="$runs" cargo test --locked --test integration \
  crash::sigkill_at_any_instant_of_publishing_loses_nothing -- --exact --nocapture \
  >"$out" 2>&1 || status=$?

grep -E '^crash test:|^ +[0-9]+  ' "$out" || true
if [ "$status" -ne 0 ]; then
  echo "FAILED (exit $status); test output:" >&2
  tail -n 80 "$out" >&2
  exit "$status"
fi
echo "result: ok ($runs runs: every index entry's file present with its sha256 and size, nothing partial under a final name, index_version monotonic, indexes and signatures healed at every restart, every version published at the end)"
