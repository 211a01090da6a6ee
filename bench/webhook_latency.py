#!/usr/bin/env python3
"""Signed webhook → `starting build`, for a local upstream, for every forge
(GitHub, GitLab with a signing token, Gitea, Bitbucket): push a tag, send
the forge's tag event, time until the daemon logs the build start. ROUNDS
rounds per forge (default 20), forges taking turns; one row per forge with
its median. The farm: the hooked recipe and 999 others sharing one upstream
whose three tags are all published (3,000 published versions in all; their
first poll round ends before the rounds start), so every publish rewrites
an archive of 3,000 entries."""
import sys, os, statistics
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

FORGES = ["github", "gitlab", "gitea", "bitbucket"]


def main():
    build_release()
    farm = Farm()
    try:
        up = make_upstream(os.path.join(farm.root, "up"), ["v1.0.0"])
        farm.recipe("hooked", up, "#!/bin/sh\ntrue\n", watch="[watch]\nwebhook = true\n")
        other = make_upstream(os.path.join(farm.root, "other"), ["v1.0.0", "v1.1.0", "v1.2.0"])
        for i in range(999):
            farm.recipe(f"r{i:03}", other)
        farm.publish_history({f"r{i:03}": ["1.0.0-1", "1.1.0-1", "1.2.0-1"] for i in range(999)}
                             | {"hooked": ["0.9.0-1", "0.9.1-1", "0.9.2-1"]}, other)
        farm.start()
        farm.wait_log("build + publish complete", 60)
        farm.wait_polls(1000, 120)
        rounds = int(os.environ.get("ROUNDS", "20"))
        lat = {f: [] for f in FORGES}
        n = 0
        for i in range(1, rounds + 1):
            for f in FORGES:
                n += 1
                git(up, "tag", f"v1.1.{n}")
                mark = len(farm.lines)
                t0 = time.monotonic()
                assert farm.forge_webhook(f, up, f"v1.1.{n}", f"{f}-delivery-{i}") == 202
                t1 = farm.wait_log_time(f"version=1.1.{n}-1", 10, after=mark)
                lat[f].append((t1 - t0) * 1000)
                farm.wait_log("build + publish complete", 10, after=mark)
        for f in FORGES:
            l = sorted(lat[f])
            row(f"signed webhook → `starting build` (local upstream), {f}",
                f"median {statistics.median(l):.1f} ms, max {l[-1]:.1f} ms ({rounds} rounds) ({load()})",
                "< 50 ms", "python3 bench/webhook_latency.py")
    finally:
        farm.stop()

main()
