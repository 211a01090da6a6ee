"""Shared helpers for the benchmark scripts: temporary farms, local
upstreams, the release binary, log scraping. Everything listens on
127.0.0.1 and every loop is bounded in count and time."""
import base64, hashlib, hmac, json, os, re, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FARMHAND_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "farmhand")
ARCH = os.uname().machine


def build_release():
    """Builds the release binary, unless FARMHAND_BIN names another one
    (to measure two builds side by side)."""
    if not os.environ.get("FARMHAND_BIN"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


def hot_text_coverage():
    """How many of the functions link/hot-text.txt names the release
    binary has, and how many it names: a toolchain or dependency update
    renames them, and the idle daemon's resident code grows until
    `bench/hot_text.py` is run again."""
    with open(os.path.join(ROOT, "link", "hot-text.txt")) as f:
        wanted = {l.strip() for l in f if l.strip() and not l.startswith("#")}
    out = subprocess.run(["nm", "--defined-only", BIN], capture_output=True, text=True).stdout
    have = {l.split()[-1] for l in out.splitlines() if l.strip()}
    return len(wanted & have), len(wanted)


def load():
    """The machine's load averages, as `uptime` prints them."""
    return "load %.2f, %.2f, %.2f" % os.getloadavg()


def git(cwd, *args, env=None):
    e = dict(os.environ, GIT_AUTHOR_NAME="u", GIT_AUTHOR_EMAIL="u@example.org",
             GIT_COMMITTER_NAME="u", GIT_COMMITTER_EMAIL="u@example.org",
             GIT_AUTHOR_DATE="1700000000 +0000", GIT_COMMITTER_DATE="1700000000 +0000")
    if env:
        e.update(env)
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=e).stdout.decode()


def make_upstream(path, tags=("v1.0.0",)):
    os.makedirs(path, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    with open(os.path.join(path, "README"), "w") as f:
        f.write("upstream\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    for t in tags:
        git(path, "tag", t)
    return path


def make_upstream_template(path, tags):
    """A bare upstream repository with one commit and `tags` as packed
    refs, to be copied by `copy_upstream` (thousands of upstreams in
    seconds)."""
    work = path + ".work"
    make_upstream(work, ())
    git(work, "gc", "-q")
    head = git(work, "rev-parse", "HEAD").strip()
    git(os.path.dirname(path), "clone", "-q", "--bare", work, path)
    with open(os.path.join(path, "packed-refs"), "a") as f:
        for t in tags:
            f.write(f"{head} refs/tags/{t}\n")
    git(path, "gc", "-q")
    return path


def copy_upstream(template, dest):
    """A copy of a template repository: the small files copied, the pack
    files hard-linked (git never rewrites a pack in place)."""
    for d, _, files in os.walk(template):
        rel = os.path.relpath(d, template)
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for f in files:
            src, dst = os.path.join(d, f), os.path.join(dest, rel, f)
            if "/objects/" in src + "/":
                os.link(src, dst)
            else:
                with open(src, "rb") as a, open(dst, "wb") as b:
                    b.write(a.read())
    return dest


def version_key(v):
    return [int(x) for x in v.split("-")[0].split(".")] + [int(v.split("-")[1])]


class Farm:
    def __init__(self, http=True, extra=""):
        self.tmp = tempfile.TemporaryDirectory(prefix="farmhand-bench-")
        self.root = self.tmp.name
        os.makedirs(os.path.join(self.root, "recipes"))
        with open(os.path.join(self.root, "webhook-secret"), "w") as f:
            f.write("bench-secret\n")
        httpsec = '[http]\naddr = "127.0.0.1:0"\nwebhook_secret_file = "webhook-secret"\n' if http else ""
        with open(os.path.join(self.root, "config.toml"), "w") as f:
            f.write('[manager]\nid = "bench"\nrecipes_dir = "recipes"\nstate_dir = "state"\n'
                    '[repo]\nname = "bench"\n[poll]\ndefault_interval = "1h"\nconcurrency = 4\n'
                    + httpsec + extra)
        self.proc = None
        self.lines = []
        self.addr = None

    def recipe(self, rid, upstream, script="#!/bin/sh\ntrue\n", pattern=r"^v(\d+\.\d+\.\d+)$", watch=""):
        d = os.path.join(self.root, "recipes", rid)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "recipe.toml"), "w") as f:
            f.write(f'[upstream]\ngit = "{upstream}"\ntag_pattern = \'{pattern}\'\n{watch}')
        p = os.path.join(d, "build.sh")
        with open(p, "w") as f:
            f.write(script)
        os.chmod(p, 0o755)

    def publish_history(self, versions, upstream="/nonexistent"):
        """Writes a published repository (repo.json, pool files, archive.json
        and the active.json farmhand derives from it) holding, for each
        recipe id in `versions`, one package named after it at each of its
        package versions (`1.2.0-1` style). Returns the entry count."""
        repo = os.path.join(self.root, "state", "repo")
        for d in ("index", "keys", "pool"):
            os.makedirs(os.path.join(repo, d), exist_ok=True)
        with open(os.path.join(repo, "repo.json"), "w") as f:
            json.dump({"schema_version": 1, "name": "bench", "description": "", "farm_id": "bench",
                       "created_at": "2023-11-14T22:13:20Z"}, f)
        archive, active = [], []
        for rid in sorted(versions):
            pool = os.path.join(repo, "pool", rid)
            os.makedirs(pool, exist_ok=True)
            entries = []
            for v in sorted(versions[rid], key=version_key):
                name = f"{rid}_{v}_{ARCH}.tar.zst"
                data = f"{rid} {v}\n".encode()
                with open(os.path.join(pool, name), "wb") as f:
                    f.write(data)
                entries.append({
                    "name": rid, "version": v, "architecture": ARCH,
                    "description": f"{rid}, built by the benchmark", "license": "MIT",
                    "homepage": f"https://example.org/{rid}", "size_compressed": len(data),
                    "size_installed": 4096,
                    "hash": {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()},
                    "url": f"pool/{rid}/{name}",
                    "build": {"timestamp": "2023-11-14T22:13:20Z", "farm_id": "bench", "recipe": rid,
                              "source_ref": f"git+{upstream}#refs/tags/v{v.split('-')[0]}"}})
            archive += entries
            if entries:
                active.append(entries[-1])
        for kind, packages in (("archive", archive), ("active", active)):
            doc = {"schema_version": 1, "repo": "bench", "kind": kind, "index_version": len(archive),
                   "generated_at": "2023-11-14T22:13:20Z", "packages": packages}
            with open(os.path.join(repo, "index", f"{kind}.json"), "w") as f:
                json.dump(doc, f, indent=2)
        return len(archive)

    def start(self, *args, env=None):
        self.proc = subprocess.Popen([BIN, "--config", os.path.join(self.root, "config.toml"),
                                      "--log-format", "logfmt", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})))
        def reader():
            for line in self.proc.stderr:
                self.lines.append((time.monotonic(), line))
        threading.Thread(target=reader, daemon=True).start()
        line = self.wait_log("webhook server listening", 30)
        self.addr = re.search(r"addr=(\S+)", line).group(1)

    def wait_log(self, needle, timeout, after=0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, l in self.lines[after:]:
                if needle in l:
                    return l
            time.sleep(0.002)
        raise SystemExit(f"timed out waiting for {needle!r}")

    def wait_log_time(self, needle, timeout, after=0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, l in self.lines[after:]:
                if needle in l:
                    return t
            time.sleep(0.001)
        raise SystemExit(f"timed out waiting for {needle!r}")

    def get(self, path):
        with urllib.request.urlopen(f"http://{self.addr}{path}", timeout=10) as r:
            return r.read()

    def webhook(self, upstream, delivery):
        body = json.dumps({"repository": {"clone_url": upstream}}).encode()
        sig = "sha256=" + hmac.new(b"bench-secret", body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"http://{self.addr}/webhooks/github", data=body, method="POST",
                                     headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
                                              "X-Hub-Signature-256": sig})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    def forge_webhook(self, forge, upstream, tag, delivery):
        """A signed tag event as `forge` sends it (github, gitlab, gitea,
        bitbucket); returns the HTTP status."""
        secret = b"bench-secret"
        if forge == "github":
            body = json.dumps({"ref": f"refs/tags/{tag}", "repository": {"clone_url": upstream}}).encode()
            headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
                       "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}
        elif forge == "gitlab":
            body = json.dumps({"object_kind": "tag_push", "ref": f"refs/tags/{tag}",
                               "project": {"git_http_url": upstream, "web_url": upstream}}).encode()
            ts = str(int(time.time()))
            mac = hmac.new(secret, f"{delivery}.{ts}.".encode() + body, hashlib.sha256).digest()
            headers = {"X-Gitlab-Event": "Tag Push Hook", "Idempotency-Key": delivery,
                       "webhook-id": delivery, "webhook-timestamp": ts,
                       "webhook-signature": "v1," + base64.b64encode(mac).decode()}
        elif forge == "gitea":
            body = json.dumps({"ref": tag, "ref_type": "tag", "repository": {"clone_url": upstream}}).encode()
            headers = {"X-Gitea-Event": "create", "X-Gitea-Delivery": delivery,
                       "X-Gitea-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest()}
        elif forge == "bitbucket":
            body = json.dumps({"push": {"changes": [{"new": {"type": "tag", "name": tag}}]},
                               "repository": {"links": {"html": {"href": upstream}}}}).encode()
            headers = {"X-Event-Key": "repo:push", "X-Request-UUID": delivery,
                       "X-Hub-Signature": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}
        else:
            raise ValueError(forge)
        headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"http://{self.addr}/webhooks/{forge}", data=body, method="POST",
                                     headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    def polls_done(self):
        return sum(1 for _, l in self.lines if 'msg="poll complete"' in l or 'msg="ls-remote failed"' in l)

    def wait_polls(self, n, timeout):
        """Waits until `n` polls ended (complete or failed); returns the
        monotonic time of the last one."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            done = [t for t, l in self.lines if 'msg="poll complete"' in l or 'msg="ls-remote failed"' in l]
            if len(done) >= n:
                return done[n - 1]
            time.sleep(0.05)
        raise SystemExit(f"only {self.polls_done()} of {n} polls ended in {timeout} s")

    def children_rss_kib(self):
        """Summed VmRSS of the daemon's child processes (git helpers)."""
        total = 0
        for k in os.listdir("/proc"):
            if not k.isdigit():
                continue
            try:
                with open(f"/proc/{k}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != self.proc.pid:
                    continue
                with open(f"/proc/{k}/status") as f:
                    m = re.search(r"VmRSS:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
            except (OSError, IndexError, ValueError):
                pass
        return total

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            s = f.read()
        return int(re.search(r"VmRSS:\s+(\d+)", s).group(1)), int(re.search(r"Threads:\s+(\d+)", s).group(1))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.tmp.cleanup()


class Notify:
    """A NOTIFY_SOCKET for the daemon: records (monotonic time, message)."""
    def __init__(self, root):
        import socket
        self.path = os.path.join(root, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def wait(self, needle, timeout, after=0.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, m in list(self.messages):
                if t >= after and needle in m.split("\n"):
                    return t
            time.sleep(0.001)
        raise SystemExit(f"no {needle!r} on the notify socket in {timeout} s")


class Sampler:
    """GET `path` on one keep-alive connection every `every` seconds (a
    monitor, not a load test), recording (start, latency, status) until
    stopped; bounded by `limit` seconds."""
    def __init__(self, addr, path="/healthz", every=0.01, limit=600):
        import http.client
        self.addr, self.path, self.every, self.limit = addr, path, every, limit
        self.samples = []
        self.reconnects = 0
        self.running = True
        self.conn = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=10)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import http.client
        end = time.monotonic() + self.limit
        while self.running and time.monotonic() < end:
            t0 = time.monotonic()
            try:
                self.conn.request("GET", self.path)
                r = self.conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                status = 0
                self.reconnects += 1
                self.conn.close()
                self.conn = http.client.HTTPConnection(*self.addr.rsplit(":", 1), timeout=10)
            t1 = time.monotonic()
            self.samples.append((t0, (t1 - t0) * 1000, status))
            time.sleep(max(0.0, self.every - (t1 - t0)))

    def stop(self):
        self.running = False
        self.thread.join(15)

    def between(self, a, b):
        return [s for s in self.samples if a <= s[0] <= b]


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def wrk(url, seconds=10, conns=32, threads=2):
    """wrk's throughput and p99 (ms). `WRK=path` runs another wrk build
    (docs/performance.md, "HTTP tails": its read buffer matters)."""
    out = subprocess.run([os.environ.get("WRK", "wrk"), f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def row(name, figure, target, command):
    print(f"| {name} | {figure} | {target} | `{command}` |")
