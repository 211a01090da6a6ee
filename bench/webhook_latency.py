#!/usr/bin/env python3
"""Signed webhook → `starting build`, for a local upstream, for every forge
(GitHub, GitLab with a signing token, Gitea, Bitbucket): push a tag, send
the forge's tag event, time until the daemon logs the build start. ROUNDS
rounds per forge (default 20), forges taking turns; one row per forge with
its median."""
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
        farm.start()
        farm.wait_log("build + publish complete", 30)
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
                f"median {statistics.median(l):.1f} ms, max {l[-1]:.1f} ms ({rounds} rounds)",
                "< 50 ms", "python3 bench/webhook_latency.py")
    finally:
        farm.stop()

main()
