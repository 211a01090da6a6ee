#!/usr/bin/env python3
"""Resident memory of an idle daemon (DESIGN.md section 12).

The farm: RECIPES recipes (default 1,000) sharing one local upstream whose
tags are v1.0.0, v1.1.0 and v1.2.0, and a repository that already holds
those three versions of every recipe (3,000 published versions): every
recipe is polled once at start, finds nothing new, and the daemon idles.
Measured twice: all recipes sharing one tag_pattern (the usual case), and
each recipe with its own pattern that matches none of the tags (the same
3,000 versions published). After every poll completed, /status is
scraped once and, 2 s later, VmRSS of the daemon (and of its git helper
processes, counted apart) is read."""
import sys, os, time, json
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

N = int(os.environ.get("RECIPES", "1000"))
TAGS = ["v1.0.0", "v1.1.0", "v1.2.0"]


def measure(distinct):
    farm = Farm()
    try:
        up = make_upstream(os.path.join(farm.root, "up"), TAGS)
        for i in range(N):
            prefix = f"r{i}-v" if distinct else "v"
            farm.recipe(f"r{i:05}", up, pattern=rf"^{prefix}(\d+\.\d+\.\d+)$")
        published = farm.publish_history({f"r{i:05}": [t[1:] + "-1" for t in TAGS] for i in range(N)}, up)
        farm.start()
        farm.wait_polls(N, 300)
        status = json.loads(farm.get("/status"))
        assert len(status["polls"]) == N and status["in_flight"] is None and status["queue_depth"] == 0, \
            "nothing to build"
        time.sleep(2)
        rss, threads = farm.rss_kib()
        helpers = farm.children_rss_kib()
        return rss, threads, helpers, published
    finally:
        farm.stop()


def main():
    build_release()
    shared, t1, h1, pub = measure(False)
    distinct, t2, h2, _ = measure(True)
    found, named = hot_text_coverage()
    if found < 0.9 * named:
        print(f"warning: the binary has only {found:,} of the {named:,} functions link/hot-text.txt "
              "names; run python3 bench/hot_text.py", file=sys.stderr)
    helpers = f"; git helpers {h1 / 1024:.1f} / {h2 / 1024:.1f} MiB apart" if h1 or h2 else ""
    row(f"idle daemon, {N:,} recipes, {pub:,} published versions, VmRSS",
        f"{shared / 1024:.1f} MiB, {t1} threads (one shared tag_pattern); "
        f"{distinct / 1024:.1f} MiB ({N:,} distinct patterns, none matching){helpers}; link order: {found:,} of {named:,} hot functions found ({load()})",
        "< 10 MiB; distinct < 12 MiB", "python3 bench/idle_memory.py")


main()
