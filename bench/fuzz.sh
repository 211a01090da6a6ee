#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time and prints a table
# (executions, speed, coverage, corpus size, crashes). Not run by CI.
#
#   bench/fuzz.sh                 # every target, FUZZ_SECONDS each (default 60)
#   FUZZ_SECONDS=300 bench/fuzz.sh version webhook
#
# Environment:
#   FUZZ_SECONDS    time per target in seconds (default 60)
#   FUZZ_SANITIZER  address (default) or none
#
# Only a stable toolchain is needed: cargo-fuzz passes -Z flags
# (-Zsanitizer=address), which stable rustc accepts with RUSTC_BOOTSTRAP=1.
# Inputs found along the way go to fuzz/corpus/<target>; crashing inputs to
# fuzz/artifacts/<target> (both ignored by git). The committed seeds are
# in fuzz/seeds/<target>, dictionaries in fuzz/dicts/<target>.dict.
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here/fuzz"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -O -s "$sanitizer" >&2

mkdir -p target/fuzz-logs
rows=()
crashed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    if [ -f "dicts/$t.dict" ]; then
        args+=(-dict="dicts/$t.dict")
    fi
    dirs=("corpus/$t")
    if [ -d "seeds/$t" ]; then
        dirs+=("seeds/$t")
    fi
    log="target/fuzz-logs/$t.log"
    echo "fuzzing $t for ${seconds}s (log: fuzz/$log)" >&2
    start=$(date +%s)
    set +e
    cargo fuzz run -O -s "$sanitizer" "$t" "${dirs[@]}" -- "${args[@]}" >"$log" 2>&1
    rc=$?
    set -e
    took=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")
    after=$(find "artifacts/$t" -type f | wc -l)
    new=$(( after - before ))
    if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
        crashed=1
        result="CRASH (exit $rc, $new new artifact(s), see fuzz/$log)"
    else
        result="ok"
    fi
    rows+=("$(printf '| %-12s | %7s | %12s | %9s | %6s | %7s | %6s | %s |' \
        "$t" "${took}s" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
done

echo
echo "cargo fuzz, sanitizer=$sanitizer, FUZZ_SECONDS=$seconds, $(rustc --version)"
echo
printf '| %-12s | %7s | %12s | %9s | %6s | %7s | %6s | %s |\n' \
    target time execs "execs/s" cov ft corpus result
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' \
    "--------------" "---------" "--------------" "-----------" "--------" "---------" "--------" "--------"
for r in "${rows[@]}"; do
    echo "$r"
done
exit "$crashed"
