#!/usr/bin/env python3
"""wrk -t2 -c32 -d10s on /status (100 recipes) and /healthz, while a build
runs: ROUNDS runs each (default 3, alternating endpoints), reported as the
median run and the range. The farm: 100 recipes, 99 of them with three
published versions each (297 in the repository), one building (a script
that sleeps). Prints rows for docs/performance.md."""
import sys, os, json, statistics
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

def main():
    build_release()
    farm = Farm()
    try:
        up = make_upstream(os.path.join(farm.root, "up"), ["v1.0.0"])
        farm.recipe("slow", up, "#!/bin/sh\nsleep 120\n")
        for i in range(99):
            farm.recipe(f"r{i:03}", up, pattern=r"^nomatch-(.*)$")
        farm.publish_history({f"r{i:03}": ["1.0.0-1", "1.1.0-1", "1.2.0-1"] for i in range(99)}, up)
        farm.start()
        farm.wait_log("starting build", 30)
        seconds = int(os.environ.get("SECONDS_PER_RUN", "10"))
        rounds = int(os.environ.get("ROUNDS", "3"))
        runs = {"/status": [], "/healthz": []}
        for _ in range(rounds):
            for path in runs:
                runs[path].append(wrk(f"http://{farm.addr}{path}", seconds))
        in_flight = json.loads(farm.get("/status"))["in_flight"]
        assert in_flight and in_flight["phase"] == "building", "the build was running throughout"
        rss, threads = farm.rss_kib()

        def figure(rs):
            rps = [r for r, _ in rs]
            p99 = [p for _, p in rs]
            return (f"{statistics.median(rps):,.0f} req/s (runs {min(rps):,.0f} to {max(rps):,.0f}), "
                    f"p99 {statistics.median(p99):.2f} ms (runs {min(p99):.2f} to {max(p99):.2f})")
        row(f"/status, 100 recipes, 297 published versions, build running (wrk -t2 -c32 -d10s, median of {rounds})",
            figure(runs["/status"]) + f" ({load()})",
            "≥ 82,600 req/s (2× the reference), p99 < 3 ms", "python3 bench/http_load.py")
        row(f"/healthz, same farm, build running (wrk -t2 -c32 -d10s, median of {rounds})",
            figure(runs["/healthz"]) + f" ({load()})",
            "≥ 108,900 req/s (1.5× the reference), p99 < 3 ms", "python3 bench/http_load.py")
        print(f"(daemon RSS after load: {rss/1024:.1f} MiB, {threads} threads)")
    finally:
        farm.stop()

main()
