#!/usr/bin/env python3
"""Signed webhook → `starting build`, for a local upstream: push a tag, send
the webhook, time until the daemon logs the build start. 20 rounds."""
import sys, os, statistics
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

def main():
    build_release()
    farm = Farm()
    try:
        up = make_upstream(os.path.join(farm.root, "up"), ["v1.0.0"])
        farm.recipe("hooked", up, "#!/bin/sh\ntrue\n", watch="[watch]\ngithub_webhook = true\n")
        farm.start()
        farm.wait_log("build + publish complete", 30)
        rounds = int(os.environ.get("ROUNDS", "20"))
        lat = []
        for i in range(1, rounds + 1):
            git(up, "tag", f"v1.0.{i}")
            mark = len(farm.lines)
            t0 = time.monotonic()
            assert farm.webhook(up, f"delivery-{i}") == 202
            t1 = farm.wait_log_time(f"version=1.0.{i}-1", 10, after=mark)
            lat.append((t1 - t0) * 1000)
            farm.wait_log("build + publish complete", 10, after=mark)
        lat.sort()
        row("signed webhook → `starting build` (local upstream)",
            f"median {statistics.median(lat):.1f} ms, max {lat[-1]:.1f} ms ({rounds} rounds)",
            "< 100 ms", "python3 bench/webhook_latency.py")
    finally:
        farm.stop()

main()
