#!/usr/bin/env python3
"""The console's overview, `GET /`: the server's time to render it with
1,000 recipes (RECIPES) that have all been polled, measured as the median
latency of sequential requests over one keep-alive connection, next to
`/healthz` on the same connection (the difference is the rendering); and
`wrk -t2 -c32 -d10s` on `/` with 100 recipes, ROUNDS runs (default 3).
Prints rows for docs/performance.md."""
import sys, os, json, statistics, time, http.client
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *


def latencies(addr, path, n, accept="text/html"):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    out = []
    size = 0
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Accept": accept})
        r = conn.getresponse()
        body = r.read()
        out.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, (path, r.status)
        size = len(body)
    conn.close()
    return out, size


def polled_farm(recipes):
    farm = Farm()
    up = make_upstream(os.path.join(farm.root, "up"), ["v1.0.0"])
    for i in range(recipes):
        farm.recipe(f"r{i:05}", up, pattern=r"^nomatch-(.*)$")
    farm.start()
    end = time.monotonic() + 300
    while time.monotonic() < end:
        polls = json.loads(farm.get("/status"))["polls"]
        if sum(1 for p in polls.values() if p.get("last_at")) >= recipes:
            return farm
        time.sleep(0.5)
    raise SystemExit("the first poll round did not finish")


def main():
    build_release()
    binary = "debug build" if "debug" in BIN else "release build"
    n = int(os.environ.get("REQUESTS", "200"))
    recipes = int(os.environ.get("RECIPES", "1000"))
    farm = polled_farm(recipes)
    try:
        latencies(farm.addr, "/", 20)  # warm up
        page, size = latencies(farm.addr, "/", n)
        health, _ = latencies(farm.addr, "/healthz", n)
        med, base = statistics.median(page), statistics.median(health)
        p90 = statistics.quantiles(page, n=10)[-1]
        row(f"render `/` with {recipes:,} polled recipes ({size/1024:.0f} KiB of HTML; {n} sequential requests, {binary})",
            f"median {med:.2f} ms (p90 {p90:.2f} ms); `/healthz` on the same connection {base:.2f} ms, "
            f"so rendering ≈ {med - base:.2f} ms",
            "< 10 ms median", "python3 bench/console.py")
    finally:
        farm.stop()

    farm = polled_farm(100)
    try:
        seconds = int(os.environ.get("SECONDS_PER_RUN", "10"))
        rounds = int(os.environ.get("ROUNDS", "3"))
        runs = [wrk(f"http://{farm.addr}/", seconds) for _ in range(rounds)]
        rps = [r for r, _ in runs]
        p99 = [p for _, p in runs]
        row(f"`wrk -t2 -c32 -d{seconds}s` on `/`, 100 recipes (median of {rounds}, {binary})",
            f"{statistics.median(rps):,.0f} req/s (runs {min(rps):,.0f} to {max(rps):,.0f}), "
            f"p99 {statistics.median(p99):.2f} ms",
            "≥ 10,000 req/s", "python3 bench/console.py")
    finally:
        farm.stop()


main()
