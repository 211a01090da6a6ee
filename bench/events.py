#!/usr/bin/env python3
"""Event latency (DESIGN.md section 14): SUBSCRIBERS (default 200) clients
hold `GET /events` open while one recipe builds BUILDS (default 10) new
versions, one after another, each set off by a signed webhook. For every
build, each subscriber's latency is the time from the build finishing to
the moment that subscriber read the build's `finished` event. The build
finishing is its `build + publish complete` log line: a build counts as
finished once its finish record is durable in the history (section 14),
and the worker then hands the event to the subscribers and logs that
line, to the millisecond, within microseconds of each other. The farm: one
recipe with a local upstream, a near-empty build script, nothing else
published; `[http] max_event_clients` raised to the subscriber count.
Prints the row for docs/performance.md.

    python3 bench/events.py
"""
import sys, os, json, re, selectors, socket, statistics, time
from datetime import datetime
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

SUBSCRIBERS = int(os.environ.get("SUBSCRIBERS", "200"))
BUILDS = int(os.environ.get("BUILDS", "10"))


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def subscribe(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(f"GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("the daemon closed an event stream at once")
        head += chunk
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise SystemExit(f"GET /events answered {status.decode()}")
    s.setblocking(False)
    return s, head.split(b"\r\n\r\n", 1)[1]


def main():
    build_release()
    farm = Farm(extra=f"max_event_clients = {SUBSCRIBERS}\n")
    up = make_upstream(os.path.join(farm.root, "up"), ["v0.1.0"])
    farm.recipe("app", up, watch="[watch]\nwebhook = true\n")
    farm.start()
    sel = selectors.DefaultSelector()
    try:
        farm.wait_log('msg="build + publish complete"', 60)  # v0.1.0, before anyone listens
        buffers = {}
        for _ in range(SUBSCRIBERS):
            s, rest = subscribe(farm.addr)
            buffers[s] = rest
            sel.register(s, selectors.EVENT_READ)
        # build id -> [receive time per subscriber]
        seen = {}
        for n in range(1, BUILDS + 1):
            git(up, "tag", f"v0.2.{n}")
            farm.webhook(up, f"bench-events-{n}")
            deadline = time.monotonic() + 60
            done = 0
            while done < SUBSCRIBERS and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1):
                    s = key.fileobj
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    now = time.time()
                    if not data:
                        raise SystemExit("the daemon closed an event stream")
                    buffers[s] += data
                    while b"\n\n" in buffers[s]:
                        frame, buffers[s] = buffers[s].split(b"\n\n", 1)
                        text = frame.decode(errors="replace")
                        if "event: build" not in text:
                            continue
                        m = re.search(r"^data: (.*)$", text, re.M)
                        ev = json.loads(m.group(1))
                        if ev.get("kind") == "finished":
                            seen.setdefault(ev["build_id"], []).append(now)
                            done += 1
            if done < SUBSCRIBERS:
                raise SystemExit(f"build {n}: only {done} of {SUBSCRIBERS} subscribers heard it finish")
        finished = {}
        for _, l in farm.lines:
            if 'msg="build + publish complete"' in l:
                finished[int(re.search(r"build_id=(\d+)", l).group(1))] = \
                    parse_time(re.search(r"time=(\S+)", l).group(1))
        lat = []
        for bid, times in seen.items():
            if bid not in finished:
                raise SystemExit(f"build {bid} did not succeed")
            lat += [(t - finished[bid]) * 1000 for t in times]
        rss, _ = farm.rss_kib()
        lat.sort()
        row(f"event latency: a build finishing to its `finished` event at each of {SUBSCRIBERS} "
            f"`/events` subscribers ({len(seen)} builds, {len(lat):,} deliveries)",
            f"median {statistics.median(lat):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
            f"max {lat[-1]:.1f} ms (the log's times are to the millisecond); VmRSS {rss / 1024:.1f} MiB ({load()})",
            "< 50 ms", "python3 bench/events.py")
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        farm.stop()


main()
