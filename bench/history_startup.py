#!/usr/bin/env python3
"""Start-up with a large build history (DESIGN.md section 14: reading the
history at start is linear and bounded): a farm whose state_dir/history
holds HISTORY (default 100,000) finished builds of 100 recipes, with
`[history].keep` as large. Measures, from exec to:

  * READY=1 on NOTIFY_SOCKET (roster loaded, history read, listener bound),
  * the HTTP server answering /healthz,

then the latency of /builds?limit=500, /builds?recipe=...&limit=50, one
/builds/{id} and /recipes/{id}, and the daemon's VmRSS; and the same
start-up with an empty history, for comparison. Everything listens on
127.0.0.1; each start is bounded to 120 s.

    python3 bench/history_startup.py                      # release binary (built)
    FARMHAND_BIN=target/debug/farmhand python3 bench/history_startup.py
"""
import json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import ROOT, BIN as RELEASE_BIN, build_release, make_upstream, row

N = int(os.environ.get("HISTORY", "100000"))
RECIPES = 100
PHASES = ["fetching", "building", "packaging", "publishing"]


def rfc3339_ms(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def write_history(state, n):
    """n finished builds (start and finish records), 10 segment files, as
    the worker writes them."""
    d = os.path.join(state, "history")
    os.makedirs(d, exist_ok=True)
    per = max(n // 10, 1)
    t0 = time.time() - n * 60
    f = None
    for i in range(1, n + 1):
        if (i - 1) % per == 0:
            if f:
                f.close()
            f = open(os.path.join(d, "%012d.jsonl" % ((i - 1) // per + 1)), "w")
        recipe = "r%02d" % (i % RECIPES)
        start = t0 + i * 60
        rec = {"id": i, "recipe": recipe, "version": "1.%d.0-1" % i, "tag": "v1.%d.0" % i,
               "trigger": "poll", "state": "running", "started_at": rfc3339_ms(start),
               "phase": "fetching",
               "phases": [{"phase": "fetching", "started_at": rfc3339_ms(start)}],
               "log": 1}
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        failed = i % 17 == 0
        rec = {"id": i, "recipe": recipe, "version": "1.%d.0-1" % i, "tag": "v1.%d.0" % i,
               "trigger": "poll", "state": "failed" if failed else "succeeded",
               "started_at": rfc3339_ms(start), "finished_at": rfc3339_ms(start + 42.5),
               "duration": 42.5}
        if failed:
            rec["phase"] = "building"
            rec["error"] = "build script exited with status 1"
        rec["phases"] = [{"phase": p, "started_at": rfc3339_ms(start + k * 10), "duration": 10.0}
                         for k, p in enumerate(PHASES[:2] if failed else PHASES)]
        rec["log"] = 1
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    if f:
        f.close()


def make_farm(root, n):
    os.makedirs(os.path.join(root, "recipes"))
    up = make_upstream(os.path.join(root, "up"), ["no-release-here"])
    for i in range(RECIPES):
        d = os.path.join(root, "recipes", "r%02d" % i)
        os.makedirs(d)
        with open(os.path.join(d, "recipe.toml"), "w") as f:
            f.write(f'[upstream]\ngit = "{up}"\ntag_pattern = \'^v(\\d+\\.\\d+\\.\\d+)$\'\n')
        with open(os.path.join(d, "build.sh"), "w") as f:
            f.write("#!/bin/sh\ntrue\n")
    with open(os.path.join(root, "config.toml"), "w") as f:
        f.write('[manager]\nid = "bench"\nrecipes_dir = "recipes"\nstate_dir = "state"\n'
                '[repo]\nname = "bench"\n[poll]\ndefault_interval = "1h"\n'
                '[http]\naddr = "127.0.0.1:0"\n'
                f'[history]\nkeep = {max(n, 1)}\n[build]\nsandbox = "none"\n')
    state = os.path.join(root, "state")
    os.makedirs(state)
    if n:
        write_history(state, n)
    d = os.path.join(state, "history")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) if n else 0


def cpu_seconds(pid):
    """User + system CPU time of a process so far (robust on a busy machine)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(root, binary):
    """Starts the daemon; returns (seconds to READY=1, seconds to /healthz,
    addr, proc, the history log line, CPU seconds at READY=1)."""
    sock_path = os.path.join(root, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(sock_path)
    ns.settimeout(0.05)
    lines = []
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "--config", os.path.join(root, "config.toml"),
                             "--log-format", "logfmt"],
                            env=dict(os.environ, NOTIFY_SOCKET=sock_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: [lines.append(l) for l in proc.stderr], daemon=True).start()
    ready = addr = healthy = cpu = None
    deadline = t0 + 120
    while time.monotonic() < deadline and healthy is None:
        if ready is None:
            try:
                if b"READY=1" in ns.recv(4096):
                    ready = time.monotonic() - t0
                    cpu = cpu_seconds(proc.pid)
            except socket.timeout:
                pass
        if addr is None:
            for l in list(lines):
                if "webhook server listening" in l:
                    addr = l.split("addr=")[1].split()[0]
        if addr is not None:
            try:
                with urllib.request.urlopen(f"http://{addr}/healthz", timeout=5) as r:
                    if r.status == 200:
                        healthy = time.monotonic() - t0
            except OSError:
                time.sleep(0.002)
        if proc.poll() is not None:
            raise SystemExit("daemon exited:\n" + "".join(lines))
    if healthy is None:
        proc.kill()
        raise SystemExit("daemon not answering within 120 s:\n" + "".join(lines[-20:]))
    while ready is None and time.monotonic() < deadline:
        try:
            if b"READY=1" in ns.recv(4096):
                ready = time.monotonic() - t0
                cpu = cpu_seconds(proc.pid)
        except socket.timeout:
            pass
    ns.close()
    loaded = next((l for l in lines if "build history loaded" in l), "").strip()
    return ready, healthy, addr, proc, loaded, cpu


def timed_get(addr, path):
    t = time.monotonic()
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=30) as r:
        body = r.read()
    return (time.monotonic() - t) * 1000, body


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])


def measure(binary, n):
    with tempfile.TemporaryDirectory(prefix="farmhand-bench-history-") as root:
        t = time.monotonic()
        size = make_farm(root, n)
        made = time.monotonic() - t
        ready, healthy, addr, proc, loaded, cpu = start(root, binary)
        try:
            out = {"ready": ready, "healthy": healthy, "made": made, "size": size,
                   "loaded": loaded, "cpu": cpu}
            ms, body = timed_get(addr, "/builds?limit=500")
            out["builds500"] = (ms, len(json.loads(body)))
            ms, body = timed_get(addr, "/builds?recipe=r42&state=failed&limit=50")
            out["filtered"] = (ms, len(json.loads(body)))
            if n:
                out["one"] = timed_get(addr, f"/builds/{n // 2}")[0]
                out["recipe"] = timed_get(addr, "/recipes/r42")[0]
            time.sleep(1)
            out["rss"] = rss_kib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return out


def main():
    binary = os.environ.get("FARMHAND_BIN")
    if binary is None:
        build_release()
        binary = RELEASE_BIN
    binary = os.path.join(ROOT, binary) if not os.path.isabs(binary) else binary
    empty = measure(binary, 0)
    full = measure(binary, N)
    print(f"binary: {binary}")
    print(f"history: {N:,} builds, {full['size'] / 2**20:.1f} MiB in state_dir/history "
          f"(written in {full['made']:.1f} s); {full['loaded']}")
    for name, m in [("empty history", empty), (f"{N:,} builds", full)]:
        print(f"{name}: READY=1 after {m['ready']:.3f} s ({m['cpu']:.2f} s of CPU), "
              f"/healthz answers after {m['healthy']:.3f} s, VmRSS {m['rss'] / 1024:.1f} MiB")
    print(f"with {N:,} builds: /builds?limit=500 {full['builds500'][0]:.1f} ms ({full['builds500'][1]} builds), "
          f"/builds?recipe=r42&state=failed&limit=50 {full['filtered'][0]:.1f} ms ({full['filtered'][1]}), "
          f"/builds/{N // 2} {full['one']:.1f} ms, /recipes/r42 {full['recipe']:.1f} ms")
    row(f"start-up with {N:,} builds in the history (to READY=1 / to /healthz)",
        f"{full['ready']:.2f} s / {full['healthy']:.2f} s, {full['cpu']:.2f} s of CPU "
        f"(empty history: {empty['ready']:.2f} s / {empty['healthy']:.2f} s); "
        f"VmRSS {full['rss'] / 1024:.0f} MiB",
        "linear and bounded", "python3 bench/history_startup.py")


main()
