#!/usr/bin/env python3
"""Steady-state poll spreading (DESIGN.md section 12): RECIPES recipes
(default 10,000) sharing one local upstream, `default_interval = "1m"`,
nothing to build. The daemon runs for SECONDS (default 120) and every
`polling upstream` line is counted by the second it was logged. Prints
the histogram (poll starts per second), then a summary row: the first
round at start, then each recipe on its own slot of the minute, about
RECIPES/60 polls a second with no burst."""
import sys, os, re, statistics, time
from datetime import datetime
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

N = int(os.environ.get("RECIPES", "10000"))
SECONDS = int(os.environ.get("SECONDS", "120"))


def stamp(line):
    t = re.search(r"time=(\S+)", line).group(1)
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def main():
    build_release()
    farm = Farm()
    with open(os.path.join(farm.root, "config.toml")) as f:
        config = f.read().replace('default_interval = "1h"', 'default_interval = "1m"')
    with open(os.path.join(farm.root, "config.toml"), "w") as f:
        f.write(config)
    try:
        up = make_upstream(os.path.join(farm.root, "up"), ["v1.0.0"])
        for i in range(N):
            farm.recipe(f"r{i:05}", up)
        farm.publish_history({f"r{i:05}": ["1.0.0-1"] for i in range(N)}, up)
        farm.start()
        time.sleep(SECONDS)
        lines = [l for _, l in farm.lines if 'msg="polling upstream"' in l]
        load_now = load()
    finally:
        farm.stop()
    starts = [stamp(l) for l in lines]
    t0 = int(min(starts))
    per_second = [0] * (SECONDS + 1)
    for t in starts:
        if int(t) - t0 <= SECONDS:
            per_second[int(t) - t0] += 1
    print(f"poll starts per second, {N:,} recipes, default_interval 1m ({load_now}); "
          f"one # per {N / 60 / 30:.1f} polls, + past 60:")
    scale = 30 / (N / 60)
    for s, n in enumerate(per_second):
        bar = "#" * max(1 if n else 0, round(n * scale))
        print(f"{s:4d} s {n:6d} {bar[:60] + ('+' if len(bar) > 60 else '')}")
    # After the first round (the first 60 s hold it and the start of the
    # slots), each second of the second minute.
    steady = per_second[61:SECONDS]
    first_round = sum(1 for t in starts if t - t0 < 10)
    row(f"poll starts per second, {N:,} recipes at `default_interval = \"1m\"`, second minute",
        f"mean {statistics.mean(steady):.0f}/s (expected {N / 60:.0f}), min {min(steady)}, max {max(steady)}, "
        f"stdev {statistics.pstdev(steady):.1f}; the first round: {first_round:,} polls in its first 10 s ({load_now})",
        "spread evenly, no burst", "python3 bench/poll_spread.py")


main()
