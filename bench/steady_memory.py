#!/usr/bin/env python3
"""Idle memory at steady state (DESIGN.md section 12, "Scale on one
host"): RECIPES recipes (default 10,000) with all three versions of each
published (30,000 published versions, their pool files and indexes), 10
tag patterns shared among them, interval 1h, webhooks on. Every recipe
shares one local upstream (tags v1.0.0, v1.1.0, v1.2.0), so one signed
webhook polls them all: after the first round at start, ROUNDS - 1 more
webhooks (default 19) bring every recipe's poll history to the 20 records
the status store keeps, which is where a farm's memory settles after 20
intervals. VmRSS of the daemon (anonymous and file-backed) is read after
the first round and after the last; the git helpers are counted apart.
Prints the row for docs/performance.md."""
import sys, os, json, time
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

N = int(os.environ.get("RECIPES", "10000"))
ROUNDS = int(os.environ.get("ROUNDS", "20"))
TAGS = ["v1.0.0", "v1.1.0", "v1.2.0"]
PATTERNS = 10


def memory(farm):
    with open(f"/proc/{farm.proc.pid}/status") as f:
        st = f.read()
    field = lambda k: int(st.split(k + ":")[1].split()[0]) / 1024
    return field("VmRSS"), field("RssAnon"), field("RssFile")


def main():
    build_release()
    farm = Farm()
    try:
        up = make_upstream(os.path.join(farm.root, "up"), TAGS)
        for i in range(N):
            farm.recipe(f"r{i:05}", up, pattern=rf"^v(\d+\.\d+\.\d+)(?:-p{i % PATTERNS})?$",
                        watch="[watch]\nwebhook = true\n")
        published = farm.publish_history({f"r{i:05}": [t[1:] + "-1" for t in TAGS] for i in range(N)}, up)
        farm.start()
        farm.wait_polls(N, 300)
        time.sleep(2)
        first = memory(farm)
        for n in range(2, ROUNDS + 1):
            assert farm.webhook(up, f"steady-{n}") == 202
            farm.wait_polls(N * n, 300)
        time.sleep(2)
        status = json.loads(farm.get(f"/recipes/r{N - 1:05}"))
        assert len(status["polls"]) == min(ROUNDS, 20), len(status["polls"])
        last = memory(farm)
        helpers = farm.children_rss_kib() / 1024
        row(f"idle at steady state, {N:,} recipes, {published:,} published versions, every recipe's "
            f"poll history full ({ROUNDS} polls each; VmRSS)",
            f"{last[0]:.1f} MiB ({last[1]:.1f} MiB anonymous, {last[2]:.1f} MiB file-backed); after the "
            f"first round {first[0]:.1f} MiB ({first[1]:.1f} anonymous); git helpers {helpers:.0f} MiB apart "
            f"({load()})",
            "< 40 MiB", "python3 bench/steady_memory.py")
    finally:
        farm.stop()


main()
