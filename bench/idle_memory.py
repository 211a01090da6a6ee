#!/usr/bin/env python3
"""Resident memory of an idle daemon with 1,000 recipes (DESIGN.md section
12): every recipe polled once (a local upstream with nothing new to build),
HTTP server up, /status scraped once; then VmRSS of the daemon process.
Measured twice: recipes sharing one tag_pattern (the usual case) and
1,000 distinct patterns."""
import sys, os, time, json
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

N = int(os.environ.get("RECIPES", "1000"))


def measure(distinct):
    farm = Farm()
    try:
        up = make_upstream(os.path.join(farm.root, "up"), ["snapshot-1"])
        for i in range(N):
            prefix = f"r{i}-v" if distinct else "v"
            farm.recipe(f"r{i:04}", up, pattern=rf"^{prefix}(\d+\.\d+\.\d+)$")
        farm.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if sum(1 for _, l in farm.lines if 'msg="poll complete"' in l) >= N:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("not every recipe was polled in 300 s")
        status = json.loads(farm.get("/status"))
        assert len(status["polls"]) == N and status["in_flight"] is None
        time.sleep(2)
        rss, threads = farm.rss_kib()
        return rss, threads
    finally:
        farm.stop()


def main():
    build_release()
    shared, t1 = measure(False)
    distinct, t2 = measure(True)
    row(f"idle daemon, {N:,} recipes, resident memory (VmRSS)",
        f"{shared / 1024:.1f} MiB, {t1} threads (one shared tag_pattern); {distinct / 1024:.1f} MiB ({N:,} distinct patterns)",
        "< 12 MiB (anchor: 35.7 MB, 45 threads)", "python3 bench/idle_memory.py")


main()
