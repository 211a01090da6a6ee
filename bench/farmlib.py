"""Shared helpers for the benchmark scripts: temporary farms, local
upstreams, the release binary, log scraping. Everything listens on
127.0.0.1 and every loop is bounded in count and time."""
import base64, hashlib, hmac, json, os, re, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# FARMHAND_BIN runs another build (e.g. target/debug/farmhand) instead of
# the release binary; its figures are then not comparable with the table.
BIN = os.environ.get("FARMHAND_BIN") or os.path.join(ROOT, "target", "release", "farmhand")


def build_release():
    if os.environ.get("FARMHAND_BIN"):
        return
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


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

    def start(self, *args):
        self.proc = subprocess.Popen([BIN, "--config", os.path.join(self.root, "config.toml"),
                                      "--log-format", "logfmt", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def wrk(url, seconds=10, conns=32, threads=2):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def row(name, figure, target, command):
    print(f"| {name} | {figure} | {target} | `{command}` |")
