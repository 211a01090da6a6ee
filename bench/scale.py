#!/usr/bin/env python3
"""Scale on one host (DESIGN.md section 12): RECIPES recipes (default
10,000), each with its own local upstream (a bare repository with tags
v1.0.0, v1.1.0, v1.2.0) and all three versions already published (30,000
published versions, their pool files and indexes), 10 distinct tag
patterns shared among them, [poll] concurrency 4 (the default), interval
1h. One daemon run measures, in order:

  * ready: process start to READY=1 (a NOTIFY_SOCKET) and to /healthz
    answering;
  * the first poll round: start to the last `poll complete`, while a
    monitor GETs /healthz every 10 ms on one keep-alive connection (its
    p99 and max over the round);
  * idle memory after the round: VmRSS of the daemon (anonymous and
    file-backed parts), the git helpers apart;
  * a /metrics scrape right after a change (so it is rendered, not
    served from the cache): median and max of 20, and its size;
  * /status: wrk -t2 -c32 -d10s;
  * SIGHUP reload: signal to `recipes reloaded` and to READY=1, every
    /healthz of the monitor during it answered 200 (no HTTP bounce).

Prints Markdown rows (scenario | farmhand | target | command). The farm
lives under $TMPDIR (use TMPDIR=/dev/shm where the disk is short: about
50,000 small files)."""
import sys, os, signal, json, statistics, time
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

N = int(os.environ.get("RECIPES", "10000"))
TAGS = ["v1.0.0", "v1.1.0", "v1.2.0"]
PATTERNS = 10
CMD = "python3 bench/scale.py"


def main():
    build_release()
    farm = Farm()
    sampler = None
    try:
        t_setup = time.monotonic()
        tpl = make_upstream_template(os.path.join(farm.root, "template.git"), TAGS)
        ups = os.path.join(farm.root, "upstreams")
        os.makedirs(ups)
        for i in range(N):
            up = copy_upstream(tpl, os.path.join(ups, f"u{i:05}.git"))
            # Ten patterns, all matching v1.2.3 tags, each shared by N/10 recipes.
            farm.recipe(f"r{i:05}", up, pattern=rf"^v(\d+\.\d+\.\d+)(?:-p{i % PATTERNS})?$")
        published = farm.publish_history({f"r{i:05}": [t[1:] + "-1" for t in TAGS] for i in range(N)})
        print(f"(farm of {N:,} recipes and {published:,} published versions made in "
              f"{time.monotonic() - t_setup:.0f} s)", flush=True)
        notify = Notify(farm.root)

        t0 = time.monotonic()
        farm.start(env={"NOTIFY_SOCKET": notify.path})
        t_ready = notify.wait("READY=1", 60) - t0
        sampler = Sampler(farm.addr)
        while not sampler.samples or sampler.samples[-1][2] != 200:
            time.sleep(0.001)
        t_http = sampler.samples[0][0] + sampler.samples[0][1] / 1000 - t0
        load_start = load()

        t_last = farm.wait_polls(N, 600)
        round_s = t_last - t0
        failed = sum(1 for _, l in farm.lines if 'msg="ls-remote failed"' in l)
        during = [lat for t, lat, st in sampler.between(t0, t_last)]
        bad = [st for t, lat, st in sampler.between(t0, t_last) if st != 200]
        status = json.loads(farm.get("/status"))
        assert status["queue_depth"] == 0 and status["in_flight"] is None, "all published: nothing to build"
        assert len(status["polls"]) == N

        time.sleep(3)
        rss, threads = farm.rss_kib()
        with open(f"/proc/{farm.proc.pid}/smaps_rollup") as f:
            anon = int(re.search(r"Anonymous:\s+(\d+)", f.read()).group(1))
        helpers = farm.children_rss_kib()
        load_idle = load()

        # /metrics rendered after a change: an unknown repository's webhook
        # counts in farmhand_webhooks_total.
        scrapes, size = [], 0
        for i in range(20):
            farm.webhook("https://example.org/not-watched.git", f"scale-{i}")
            a = time.monotonic()
            body = farm.get("/metrics")
            scrapes.append((time.monotonic() - a) * 1000)
            size = len(body)
        series = sum(1 for l in body.decode().splitlines() if l and not l.startswith("#"))
        status_size = len(farm.get("/status"))

        sampler.running = False
        sampler.stop()
        rps, p99 = wrk(f"http://{farm.addr}/status", 10)
        load_wrk = load()

        sampler = Sampler(farm.addr)
        time.sleep(0.5)
        mark = len(farm.lines)
        t_hup = time.monotonic()
        os.kill(farm.proc.pid, signal.SIGHUP)
        t_reloaded = farm.wait_log_time("recipes reloaded", 30, after=mark) - t_hup
        t_ready2 = notify.wait("READY=1", 30, after=t_hup) - t_hup
        time.sleep(0.5)
        sampler.stop()
        window = sampler.between(t_hup, t_hup + max(t_reloaded, t_ready2) + 0.5)
        reload_bad = [st for _, _, st in window if st != 200]
        reload_max = max((lat for _, lat, _ in window), default=float("nan"))
        load_end = load()

        farm_desc = f"{N:,} recipes, {published:,} published versions"
        row(f"ready after start ({farm_desc})",
            f"READY=1 after {t_ready:.2f} s, /healthz answering after {t_http:.2f} s ({load_start})",
            "< 2 s", CMD)
        row(f"first poll round of {N:,} local upstreams, to the last `poll complete` (concurrency 4)",
            f"{round_s:.1f} s ({failed} failed); /healthz every 10 ms meanwhile: p99 "
            f"{percentile(during, 99):.2f} ms, max {max(during):.1f} ms, {len(during)} requests, "
            f"{len(bad)} not 200 ({load_start})",
            "< 60 s, /healthz p99 < 10 ms", CMD)
        row(f"idle daemon after the first round ({farm_desc}), VmRSS",
            f"{rss / 1024:.1f} MiB ({anon / 1024:.1f} MiB anonymous, {(rss - anon) / 1024:.1f} MiB "
            f"file-backed), {threads} threads; git helpers {helpers / 1024:.1f} MiB apart ({load_idle})",
            "< 40 MiB", CMD)
        row(f"/metrics scrape after a change ({N:,} recipes, {series:,} series, {size / 1e6:.1f} MB)",
            f"median {statistics.median(scrapes):.1f} ms, max {max(scrapes):.1f} ms (20 scrapes) ({load_wrk})",
            "< 50 ms", CMD)
        row(f"/status, {N:,} recipes ({status_size / 1e6:.2f} MB), wrk -t2 -c32 -d10s",
            f"{rps:,.0f} req/s, p99 {p99:.1f} ms ({load_wrk})", "≥ 2,000 req/s", CMD)
        row(f"SIGHUP reload, {N:,} recipes",
            f"`recipes reloaded` after {t_reloaded * 1000:.0f} ms, READY=1 after {t_ready2 * 1000:.0f} ms; "
            f"/healthz every 10 ms meanwhile: {len(window)} requests, {len(reload_bad)} not 200, "
            f"max {reload_max:.1f} ms, {sampler.reconnects} reconnections ({load_end})",
            "< 1 s, no HTTP bounce", CMD)
    finally:
        if sampler:
            sampler.running = False
        farm.stop()


main()
