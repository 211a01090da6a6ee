#!/usr/bin/env python3
"""A second tag of an already-fetched upstream with a long history: only the
new objects are fetched. The upstream (3,000 commits over 300 files, made
with git fast-import) is served by `git daemon` on 127.0.0.1, so the fetch
is a real shallow network fetch. The object counts come from each build's
log line `fetched commit ... N objects received`."""
import sys, os, re, socket
sys.path.insert(0, os.path.dirname(__file__))
from farmlib import *

COMMITS = int(os.environ.get("COMMITS", "3000"))
FILES = 300


def fast_import(path):
    lines = []
    for c in range(1, COMMITS + 1):
        lines.append("commit refs/heads/main")
        lines.append(f"committer u <u@example.org> {1700000000 + c} +0000")
        msg = f"change {c}"
        lines.append(f"data {len(msg)}\n{msg}")
        for k in range(3):
            f = (c * 7 + k * 101) % FILES
            body = f"file {f} changed in commit {c}\n" * 30
            lines.append(f"M 100644 inline src/f{f:03}.txt")
            lines.append(f"data {len(body.encode())}\n{body}")
        if c == COMMITS - 10:
            lines.append(f"tag v1.0.0\nfrom refs/heads/main\ntagger u <u@example.org> {1700000000 + c} +0000\ndata 2\nv1")
    data = "\n".join(lines).encode()
    r = subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=data, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def received(farm, version):
    """Objects received by the build's fetch, from its log (stored
    zstd-compressed once the build finished)."""
    path = os.path.join(farm.root, "state", "logs", "big", f"{version}.1.log")
    if os.path.exists(path):
        log = open(path).read()
    else:
        log = subprocess.run(["zstd", "-dcq", path + ".zst"], capture_output=True, text=True,
                             check=True).stdout
    return int(re.search(r"(\d+) objects received", log).group(1))


def main():
    build_release()
    farm = Farm(http=False)
    daemon = None
    try:
        base = os.path.join(farm.root, "srv")
        up = os.path.join(base, "big.git")
        os.makedirs(up)
        git(up, "init", "-q", "--bare")
        fast_import(up)
        total = int(git(up, "count-objects", "-v").split("in-pack: ")[1].split()[0]) or \
            len(git(up, "rev-list", "--objects", "--all").splitlines())
        port = free_port()
        daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", f"--base-path={base}", "--export-all",
                                   "--listen=127.0.0.1", f"--port={port}", base],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"git://127.0.0.1:{port}/big.git"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        farm.recipe("big", url, '#!/bin/sh\nmkdir -p "$DESTDIR/x"\necho ok > "$DESTDIR/x/ok"\n')
        cmd = [BIN, "--config", os.path.join(farm.root, "config.toml"), "--once", "--log-format", "logfmt"]
        subprocess.run(cmd, check=True, capture_output=True)
        first = received(farm, "1.0.0-1")
        git(up, "tag", "v1.1.0", "main")
        subprocess.run(cmd, check=True, capture_output=True)
        second = received(farm, "1.1.0-1")
        row(f"second tag of an already-fetched upstream ({COMMITS:,} commits, {total:,} objects, git://)",
            f"1st tag: {first:,} objects fetched; 2nd tag (10 commits later): {second:,} objects "
            f"(no published history: the row counts fetched objects) ({load()})",
            "only the new objects", "python3 bench/incremental_fetch.py")
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(10)
        farm.stop()


main()
