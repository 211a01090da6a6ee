#!/usr/bin/env python3
"""The console's overview, `GET /`, with 1,000 recipes (RECIPES) that have
all been polled and 10,000 finished builds in the history (HISTORY): the
server's time to render it, measured as the median latency of sequential
requests over one keep-alive connection for `/?filter=r` (every recipe
matches, and a filtered page is never served from the once-a-second
cache), next to `/` (cached between changes) and `/healthz` on the same
connection; then `wrk -t2 -c32 -d10s` on `/` with 100 recipes, ROUNDS runs
(default 3). Prints rows for docs/performance.md.

    python3 bench/console.py                                  # release binary (built)
    FARMHAND_BIN=target/debug/farmhand python3 bench/console.py
"""
import sys, os, re, json, statistics, time, http.client
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


def rfc3339_ms(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def write_history(state, n, recipes):
    """n finished builds of the farm's recipes, as the worker records them
    (a start and a finish record each)."""
    d = os.path.join(state, "history")
    os.makedirs(d, exist_ok=True)
    t0 = time.time() - n * 60
    with open(os.path.join(d, "%012d.jsonl" % 1), "w") as f:
        for i in range(1, n + 1):
            recipe = "r%05d" % (i % recipes)
            start = t0 + i * 60
            base = {"id": i, "recipe": recipe, "version": "1.%d.0-1" % i, "tag": "v1.%d.0" % i,
                    "trigger": "poll", "started_at": rfc3339_ms(start), "log": 1}
            f.write(json.dumps(dict(base, state="running", phase="fetching",
                                    phases=[{"phase": "fetching", "started_at": rfc3339_ms(start)}])) + "\n")
            failed = i % 17 == 0
            rec = dict(base, state="failed" if failed else "succeeded",
                       finished_at=rfc3339_ms(start + 42.5), duration=42.5,
                       phases=[{"phase": p, "started_at": rfc3339_ms(start + k * 10), "duration": 10.0}
                               for k, p in enumerate(["fetching", "building", "packaging", "publishing"])])
            if failed:
                rec.update(phase="building", error="build script exited with status 1")
            f.write(json.dumps(rec) + "\n")


def polled_farm(recipes, history=0):
    farm = Farm(extra=f"[history]\nkeep = {max(history, 1)}\n" if history else "")
    if history:
        write_history(os.path.join(farm.root, "state"), history, recipes)
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
    history = int(os.environ.get("HISTORY", "10000"))
    farm = polled_farm(recipes, history)
    try:
        # Idle memory: the first round is over; let the helpers' idle
        # minute pass only if asked (IDLE_WAIT seconds), then read VmRSS.
        time.sleep(float(os.environ.get("IDLE_WAIT", "2")))
        rss, threads = farm.rss_kib()
        anon = file_backed = 0
        with open(f"/proc/{farm.proc.pid}/status") as f:
            st = f.read()
        anon = int(re.search(r"RssAnon:\s+(\d+)", st).group(1))
        file_backed = int(re.search(r"RssFile:\s+(\d+)", st).group(1))
        row(f"console: idle daemon, {recipes:,} polled recipes, {history:,} builds in the history "
            f"(nothing published; VmRSS, {binary})",
            f"{rss / 1024:.1f} MiB ({anon / 1024:.1f} MiB anonymous, {file_backed / 1024:.1f} MiB "
            f"file-backed), {threads} threads; git helpers apart: {farm.children_rss_kib() / 1024:.0f} MiB ({load()})",
            "< 16 MiB", "python3 bench/console.py")
        latencies(farm.addr, "/?filter=r", 20)  # warm up
        page, size = latencies(farm.addr, "/?filter=r", n)
        cached, _ = latencies(farm.addr, "/", n)
        health, _ = latencies(farm.addr, "/healthz", n)
        med, base = statistics.median(page), statistics.median(health)
        p90 = statistics.quantiles(page, n=10)[-1]
        row(f"render `/` with {recipes:,} polled recipes and {history:,} builds in the history "
            f"({size/1024:.0f} KiB of HTML; {n} sequential requests, {binary})",
            f"median {med:.2f} ms (p90 {p90:.2f} ms) rendered; {statistics.median(cached):.2f} ms from the "
            f"once-a-second cache; `/healthz` on the same connection {base:.2f} ms",
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
