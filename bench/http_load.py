#!/usr/bin/env python3
"""wrk -t2 -c32 -d10s on /status (100 recipes) and /healthz, while a build
runs. Prints rows for docs/performance.md."""
import sys, os, json
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
        farm.start()
        farm.wait_log("starting build", 30)
        seconds = int(os.environ.get("SECONDS_PER_RUN", "10"))
        s_rps, s_p99 = wrk(f"http://{farm.addr}/status", seconds)
        h_rps, h_p99 = wrk(f"http://{farm.addr}/healthz", seconds)
        in_flight = json.loads(farm.get("/status"))["in_flight"]
        assert in_flight and in_flight["phase"] == "building", "the build was running throughout"
        rss, threads = farm.rss_kib()
        row("/status, 100 recipes, build running (wrk -t2 -c32 -d10s)", f"{s_rps:,.0f} req/s, p99 {s_p99:.2f} ms",
            "≥ 86,000 req/s, p99 < 3.5 ms", "python3 bench/http_load.py")
        row("/healthz, build running (wrk -t2 -c32 -d10s)", f"{h_rps:,.0f} req/s, p99 {h_p99:.2f} ms",
            "≥ 104,000 req/s", "python3 bench/http_load.py")
        print(f"(daemon RSS after load: {rss/1024:.1f} MiB, {threads} threads)")
    finally:
        farm.stop()

main()
