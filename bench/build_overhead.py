#!/usr/bin/env python3
"""Daemon overhead per build: fetch + package + publish (+ signing) around a
build script that does next to nothing, for a small local upstream. Runs
`--once` over 20 tags and reads each build's start and end from the log
(millisecond timestamps); the script's own run time is measured separately
and reported next to it. Measured twice in one run: unsandboxed
(`[build].sandbox = "none"`) and under bubblewrap (`"bwrap"`), so the row
shows what the sandbox costs per build. The farm also holds 999 other
recipes sharing an upstream whose three tags are all published (2,997
published versions before the first build), so each publish rewrites
and signs an archive of about 3,000 entries."""
import sys, os, re, statistics
from datetime import datetime
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

SCRIPT = '#!/bin/sh\nmkdir -p "$DESTDIR/usr/share/doc/small"\ncp README "$DESTDIR/usr/share/doc/small/"\n'


def stamp(line):
    t = re.search(r"time=(\S+)", line).group(1)
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def measure(n, sandbox):
    """Per-build milliseconds (sorted) and the script's own time."""
    farm = Farm(http=False)
    try:
        with open(os.path.join(farm.root, "farm.key"), "wb") as f:
            f.write(os.urandom(32))
        with open(os.path.join(farm.root, "config.toml"), "a") as f:
            f.write(f'[signing]\nkey_file = "farm.key"\n\n[build]\nsandbox = "{sandbox}"\n')
        up = make_upstream(os.path.join(farm.root, "up"), tags=())
        for i in range(40):
            with open(os.path.join(up, f"file{i}.c"), "w") as f:
                f.write(f"int f{i}(void) {{ return {i}; }}\n" * 20)
        git(up, "add", "-A")
        git(up, "commit", "-q", "-m", "sources")
        for i in range(n):
            git(up, "tag", f"v1.0.{i}")
        farm.recipe("small", up, SCRIPT)
        other = make_upstream(os.path.join(farm.root, "other"), ["v1.0.0", "v1.1.0", "v1.2.0"])
        for i in range(999):
            farm.recipe(f"r{i:03}", other)
        farm.publish_history({f"r{i:03}": ["1.0.0-1", "1.1.0-1", "1.2.0-1"] for i in range(999)}, other)
        out = subprocess.run([BIN, "--config", os.path.join(farm.root, "config.toml"), "--once",
                              "--log-format", "logfmt"], capture_output=True, text=True, check=True).stderr
        starts = {re.search(r"build_id=(\d+)", l).group(1): stamp(l) for l in out.splitlines() if 'msg="starting build"' in l}
        ends = {re.search(r"build_id=(\d+)", l).group(1): stamp(l) for l in out.splitlines() if 'msg="build + publish complete"' in l}
        assert len(ends) == n, out
        per = sorted((ends[k] - starts[k]) * 1000 for k in ends)
        # The script alone, run the same way (clean env, /bin/sh).
        src = os.path.join(farm.root, "src")
        git(farm.root, "clone", "-q", up, src)
        dest = os.path.join(farm.root, "dd")
        t0 = time.monotonic()
        for _ in range(n):
            subprocess.run(["/bin/sh", os.path.join(farm.root, "recipes", "small", "build.sh")], cwd=src,
                           env={"DESTDIR": dest, "PATH": "/usr/bin:/bin"}, check=True)
        script_ms = (time.monotonic() - t0) * 1000 / n
        return per, script_ms
    finally:
        farm.stop()


def main():
    build_release()
    n = int(os.environ.get("BUILDS", "20"))
    plain, script_ms = measure(n, "none")
    boxed, _ = measure(n, "bwrap")
    row("per-build overhead: fetch + build + package + publish + sign, small upstream, "
        "1,000 recipes, about 3,000 published versions",
        f"median {statistics.median(plain):.0f} ms, max {plain[-1]:.0f} ms unsandboxed; "
        f"median {statistics.median(boxed):.0f} ms, max {boxed[-1]:.0f} ms under bubblewrap "
        f"({n} builds each; script alone ≈ {script_ms:.0f} ms) ({load()})",
        "< 50 ms", "python3 bench/build_overhead.py")


main()
