#!/usr/bin/env python3
"""Regenerates link/hot-text.txt, the order in which the release link
places the executable's functions (see build.rs and docs/performance.md).

The release binary runs under valgrind's callgrind, which records every
instruction it executes, on a farm of 1,000 recipes sharing one upstream
whose three tags are all published, plus one webhook-watched recipe.
Phase one: start, the first poll round, and one scrape each of /status,
/metrics and /healthz (what an idle daemon runs). Phase two: a signed
webhook, the build and publish it starts, the console's pages and the
build's log (what a working daemon runs). Phase three: what the git
helpers (the same executable, also under callgrind) ran for those polls
and the fetch. The functions of phase one come first, then those only
phase two ran, then those only the helpers ran; each list is sorted by
name so a regenerated file diffs cleanly. Everything else follows in the linker's
own order.

Needs valgrind. The names are mangled symbols, which change with the
toolchain and with dependency versions: rerun this after either (and
`python3 bench/idle_memory.py` to see the effect)."""
import bisect, glob, os, re, subprocess, sys, tempfile
sys.path.insert(0, os.path.dirname(__file__))
import farmlib
from farmlib import *

OUT = os.path.join(ROOT, "link", "hot-text.txt")
TAGS = ["v1.0.0", "v1.1.0", "v1.2.0"]


def executed_addresses(path, binary):
    """The instruction addresses callgrind's dump at `path` records for
    `binary` (the dump's positions are addresses, `--dump-instr=yes`)."""
    names, current, last, addrs = {}, None, 0, set()
    with open(path) as f:
        for line in f:
            m = re.match(r"^(c?)ob=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3).strip()
                if not m.group(1):
                    current = names.get(m.group(2))
                continue
            tok = line.split(maxsplit=1)[0] if line.strip() else ""
            if tok.startswith("0x"):
                last = int(tok, 16)
            elif tok[:1] in ("+", "-") and tok[1:].isdigit():
                last += int(tok)
            elif tok != "*":
                continue
            if current == binary:
                addrs.add(last)
    return addrs


def children(pid):
    """The pids of `pid`'s child processes (the git helpers)."""
    found = []
    for k in os.listdir("/proc"):
        try:
            with open(f"/proc/{k}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(k))
        except (OSError, ValueError, IndexError):
            pass
    return found


def part(path):
    """The number callgrind gives a dump: 1 for the one asked for after
    phase one, 2 for the one written at exit."""
    with open(path) as f:
        for line in f:
            if line.startswith("part:"):
                return int(line.split()[1])
    return 0


def functions(binary):
    syms = []
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tT":
            syms.append((int(p[0], 16), int(p[1], 16), p[3]))
    syms.sort()
    return syms


def covering(addrs, syms):
    starts = [s[0] for s in syms]
    found = {}
    for a in addrs:
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and syms[i][0] <= a < syms[i][0] + syms[i][1]:
            found[syms[i][2]] = syms[i][1]
    return found


def main():
    build_release()
    binary = os.path.realpath(farmlib.BIN)
    work = tempfile.mkdtemp(prefix="farmhand-hot-")
    wrapper = os.path.join(work, "farmhand")
    helper = os.path.join(work, "helper")
    for path, out in ((wrapper, "cg.out"), (helper, "helper.%p")):
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec valgrind --tool=callgrind --dump-instr=yes "
                    f"--callgrind-out-file={work}/{out} {binary} \"$@\"\n")
        os.chmod(path, 0o755)
    os.environ["FARMHAND_GIT_HELPER_EXE"] = helper
    farmlib.BIN = wrapper
    farm = Farm()
    try:
        up = make_upstream(os.path.join(farm.root, "up"), TAGS)
        for i in range(1000):
            farm.recipe(f"r{i:03}", up)
        hooked = make_upstream(os.path.join(farm.root, "hooked-up"), ["v1.0.0"])
        farm.recipe("hooked", hooked, watch="[watch]\nwebhook = true\n")
        farm.publish_history({f"r{i:03}": [t[1:] + "-1" for t in TAGS] for i in range(1000)}
                             | {"hooked": ["1.0.0-1"]}, up)
        farm.start()
        farm.wait_polls(1001, 900)
        failed = [l for _, l in farm.lines if "ls-remote failed" in l]
        assert not failed, f"{len(failed)} polls failed, the first: {failed[0]}"
        for path in ("/status", "/metrics", "/healthz"):
            farm.get(path)
        subprocess.run(["callgrind_control", "-d", str(farm.proc.pid)], check=True, capture_output=True)
        git(hooked, "tag", "v1.1.0")
        mark = len(farm.lines)
        assert farm.forge_webhook("github", hooked, "v1.1.0", "hot-text-1") == 202
        farm.wait_log("build + publish complete", 120, after=mark)
        for path in ("/", "/recipes/hooked", "/builds", "/builds?format=json"):
            try:
                farm.get(path)
            except Exception:
                pass
        for pid in children(farm.proc.pid):
            subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True)
    finally:
        farm.stop()
    helpers = glob.glob(os.path.join(work, "helper.*"))
    assert helpers, "no callgrind dump of a git helper"
    dumps = sorted(glob.glob(os.path.join(work, "cg.out*")), key=part)
    assert len(dumps) == 2, f"expected two callgrind dumps, found {dumps}"
    syms = functions(binary)
    idle = covering(executed_addresses(dumps[0], binary), syms)
    busy = covering(executed_addresses(dumps[1], binary), syms)
    busy = {k: v for k, v in busy.items() if k not in idle}
    git_side = {}
    for d in helpers:
        git_side.update(covering(executed_addresses(d, binary), syms))
    git_side = {k: v for k, v in git_side.items() if k not in idle and k not in busy}
    with open(OUT, "w") as f:
        f.write("# Functions the release link places first, in this order: written by\n"
                "# bench/hot_text.py (phase one: start, first poll round, scrapes;\n"
                "# phase two: a webhook-started build and the console; phase three:\n"
                "# what the git helpers ran besides). See build.rs.\n")
        f.write("\n".join(sorted(idle)) + "\n")
        f.write("# phase two\n")
        f.write("\n".join(sorted(busy)) + "\n")
        f.write("# phase three\n")
        f.write("\n".join(sorted(git_side)) + "\n")
    print(f"{OUT}: {len(idle)} functions ({sum(idle.values()) / 1024:.0f} KiB) for an idle daemon, "
          f"{len(busy)} more ({sum(busy.values()) / 1024:.0f} KiB) for builds and pages, "
          f"{len(git_side)} more ({sum(git_side.values()) / 1024:.0f} KiB) for the git helpers; "
          f"the text is {sum(s[1] for s in syms) / 1024:.0f} KiB")


main()
