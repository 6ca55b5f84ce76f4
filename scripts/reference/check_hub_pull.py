"""Checks that `tiller pull` and huggingface_hub share one Hugging Face cache, both ways.

Usage: python check_hub_pull.py TILLER_BINARY MODEL_DIR WORK_DIR

Serves MODEL_DIR's files as the repository HuggingFaceTB/SmolLM2-135M-Instruct from a local
stand-in of the Hub (the revision API, HEAD/GET on resolve with X-Repo-Commit and ETags, LFS files
redirected to a "CDN" on another host name with X-Linked-Etag/X-Linked-Size, Range requests;
pickled weights and an original/ folder besides, which neither side should take for tiller), then:

1. huggingface_hub's snapshot_download fills WORK_DIR/hf-cache from it (so the stand-in speaks the
   protocol huggingface_hub expects), and `tiller pull` fills WORK_DIR/tiller-cache, both with
   HF_ENDPOINT set to the stand-in;
2. the two caches hold the same blobs (names and bytes), the same snapshot links (relative, to
   ../../blobs/ETAG) and the same refs/main;
3. with HF_HUB_OFFLINE=1, transformers loads the model and tokenizer from tiller's cache by name and
   gives logits identical to loading MODEL_DIR itself, and huggingface_hub's scan_cache_dir reads
   tiller's cache without warnings;
4. `tiller inspect --model ORG/NAME` reads huggingface_hub's cache (HF_HUB_CACHE) offline;
5. a pull cut off mid-file resumes: the stand-in drops the connection part-way through
   model.safetensors, a second `tiller pull` asks for the rest with a Range request, and the blob
   is whole; the download speed of the first full pull is printed.

Exits non-zero and names every mismatch. Run with build/pyref/bin/python (`make real-model` makes
MODEL_DIR = build/models/smollm2/hf), for example:

    make tiller real-model
    build/pyref/bin/python scripts/reference/check_hub_pull.py bin/tiller build/models/smollm2/hf /tmp/hubcheck
"""

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
COMMIT = hashlib.sha1(b"tiller stand-in of " + REPO.encode()).hexdigest()
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)
        print("FAIL:", what)


def git_sha1(b):
    return hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()


class Repo:
    def __init__(self, model_dir):
        self.files = {}
        for name in sorted(os.listdir(model_dir)):
            if name != "SOURCE":
                with open(os.path.join(model_dir, name), "rb") as f:
                    self.files[name] = f.read()
        self.files["pytorch_model.bin"] = b"not for tiller"
        self.files["original/consolidated.00.pth"] = b"not for tiller"
        self.lfs = {n for n in self.files if n.endswith((".safetensors", ".bin", ".pth"))}
        self.sha256 = {n: hashlib.sha256(b).hexdigest() for n, b in self.files.items()}
        self.cut_next = {}  # name -> bytes to send before dropping the connection, once
        self.ranges = []
        self.lock = threading.Lock()


def handler(repo, cdn_base):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send_body(self, body, status=200, headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_file(self, name, headers):
            body = repo.files[name]
            rng = self.headers.get("Range")
            with repo.lock:
                cut = repo.cut_next.pop(name, None) if self.command == "GET" else None
                if rng:
                    repo.ranges.append(rng)
            if cut is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                headers = list(headers) + [("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")]
                return self.send_body(body[start:], 206, headers)
            self.send_body(body, 200, headers)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = self.path.split("?")[0]
            api = f"/api/models/{REPO}/revision/"
            if path.startswith(api):
                if path[len(api):] not in ("main", COMMIT):
                    return self.send_body(b"{}", 404, [("X-Error-Code", "RevisionNotFound")])
                info = {"id": REPO, "modelId": REPO, "sha": COMMIT, "private": False,
                        "siblings": [{"rfilename": n} for n in repo.files]}
                return self.send_body(json.dumps(info).encode(), 200, [("Content-Type", "application/json")])
            prefix = f"/{REPO}/resolve/"
            if path.startswith(prefix):
                rev, _, name = path[len(prefix):].partition("/")
                if rev not in ("main", COMMIT) or name not in repo.files:
                    return self.send_body(b"not found", 404, [("X-Error-Code", "EntryNotFound")])
                common = [("X-Repo-Commit", COMMIT), ("Accept-Ranges", "bytes")]
                if name in repo.lfs:
                    size = len(repo.files[name])
                    return self.send_body(b"", 302, common + [
                        ("X-Linked-Etag", f'"{repo.sha256[name]}"'), ("X-Linked-Size", str(size)),
                        ("ETag", f'"{git_sha1(repo.files[name])}"'),
                        ("Location", f"{cdn_base}/cdn/{name}")])
                return self.send_file(name, common + [("ETag", f'"{git_sha1(repo.files[name])}"')])
            if path.startswith("/cdn/") and path[5:] in repo.files:
                return self.send_file(path[5:], [("Accept-Ranges", "bytes")])
            self.send_body(b"not found", 404)

    return H


def tree(cache):
    """blobs (name -> sha256 of bytes), snapshot links (name -> target) and refs of the repo."""
    folder = os.path.join(cache, "models--" + REPO.replace("/", "--"))
    blobs = {}
    for b in os.listdir(os.path.join(folder, "blobs")):
        with open(os.path.join(folder, "blobs", b), "rb") as f:
            blobs[b] = hashlib.sha256(f.read()).hexdigest()
    snap = os.path.join(folder, "snapshots", COMMIT)
    links = {}
    for root, _, names in os.walk(snap):
        for n in names:
            p = os.path.join(root, n)
            links[os.path.relpath(p, snap)] = os.readlink(p) if os.path.islink(p) else "(not a link)"
    with open(os.path.join(folder, "refs", "main")) as f:
        ref = f.read()
    return blobs, links, ref, snap


def run_tiller(tiller, args, env):
    t0 = time.time()
    r = subprocess.run([tiller] + args, env=env, capture_output=True, text=True)
    return r, time.time() - t0


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    tiller, model_dir, work = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    repo = Repo(model_dir)
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)
    port = hub.server_address[1]
    # The CDN is the same server under another host name, so that both clients see a redirect to
    # another host, as from the Hub to its CDN.
    hub.RequestHandlerClass = handler(repo, f"http://localhost:{port}")
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"

    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN="",
               HF_HUB_DISABLE_XET="1")
    env.pop("HF_HUB_OFFLINE", None)
    hf_cache, tiller_cache = os.path.join(work, "hf-cache"), os.path.join(work, "tiller-cache")

    # 1. Both clients fill a cache from the stand-in.
    os.environ.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    import huggingface_hub
    from huggingface_hub import constants
    t0 = time.time()
    huggingface_hub.snapshot_download(REPO, cache_dir=hf_cache, endpoint=endpoint,
                                      ignore_patterns=["*.bin", "*.pth", "original/*"])
    hf_secs = time.time() - t0
    r, secs = run_tiller(tiller, ["pull", REPO], dict(env, HF_HUB_CACHE=tiller_cache))
    check(r.returncode == 0, f"tiller pull: exit {r.returncode}: {r.stderr}")
    total = sum(len(b) for n, b in repo.files.items() if "/" not in n and not n.endswith(".bin"))
    print(f"{total / 1e6:.1f} MB from the local stand-in: tiller pull {secs:.2f} s ({total / 1e6 / secs:.0f} MB/s, "
          f"process start included), huggingface_hub's snapshot_download {hf_secs:.2f} s ({total / 1e6 / hf_secs:.0f} MB/s); "
          f"tiller's last progress line: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")

    # 2. The same cache layout.
    hb, hl, href, _ = tree(hf_cache)
    tb, tl, tref, tsnap = tree(tiller_cache)
    check(hb == tb, f"blobs differ: huggingface_hub {sorted(hb)} vs tiller {sorted(tb)}")
    check(hl == tl, f"snapshot links differ: huggingface_hub {hl} vs tiller {tl}")
    check(href == tref == COMMIT, f"refs/main: huggingface_hub {href!r}, tiller {tref!r}, want {COMMIT}")
    check(r.stdout.strip() == tsnap, f"tiller pull printed {r.stdout.strip()!r}, want {tsnap}")

    # 3. transformers, offline, from tiller's cache.
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    ids = torch.tensor([[1, 19556, 28, 905, 17, 339, 5248, 1535, 30]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(REPO, cache_dir=tiller_cache, torch_dtype=torch.float32)(ids).logits
    check(torch.equal(want, got), f"logits from tiller's cache differ by {(want - got).abs().max()}")
    tok = AutoTokenizer.from_pretrained(REPO, cache_dir=tiller_cache)
    check(tok.chat_template is not None, "the tokenizer from tiller's cache has no chat template")
    check(tok("Hello, world! I'm here.").input_ids == ids[0, 1:].tolist(), "tokenizer ids from tiller's cache")
    info = huggingface_hub.scan_cache_dir(tiller_cache)
    check(not info.warnings, f"scan_cache_dir warns about tiller's cache: {info.warnings}")
    check([r.repo_id for r in info.repos] == [REPO], f"scan_cache_dir sees {[r.repo_id for r in info.repos]}")

    # 4. tiller, offline, from huggingface_hub's cache.
    offline = dict(env, HF_HUB_CACHE=hf_cache, HF_ENDPOINT="http://127.0.0.1:9")
    r, _ = run_tiller(tiller, ["inspect", "--model", REPO], offline)
    check(r.returncode == 0 and COMMIT in r.stdout, f"tiller inspect from huggingface_hub's cache: {r.returncode} {r.stderr}")

    # 5. Resume.
    resume_cache = os.path.join(work, "resume-cache")
    cut = len(repo.files["model.safetensors"]) // 3
    repo.cut_next["model.safetensors"] = cut
    repo.ranges.clear()
    r1, _ = run_tiller(tiller, ["pull", REPO], dict(env, HF_HUB_CACHE=resume_cache))
    check(r1.returncode == 1 and "resume" in r1.stderr, f"a cut-off pull: exit {r1.returncode}: {r1.stderr}")
    r2, _ = run_tiller(tiller, ["pull", REPO], dict(env, HF_HUB_CACHE=resume_cache))
    check(r2.returncode == 0, f"the resumed pull: exit {r2.returncode}: {r2.stderr}")
    check(repo.ranges == [f"bytes={cut}-"], f"Range requests {repo.ranges}, want bytes={cut}-")
    rb, _, _, _ = tree(resume_cache)
    check(rb == tb, "the resumed cache's blobs differ from a straight pull's")
    print(f"resume: cut at {cut} bytes; second pull asked {repo.ranges}; {r2.stderr.strip().splitlines()[-1]}")

    hub.shutdown()
    if problems:
        sys.exit(f"{len(problems)} problems")
    print(f"ok: tiller pull and huggingface_hub {huggingface_hub.__version__} share the cache; "
          f"transformers loads tiller's pull offline with identical logits; resume works")


if __name__ == "__main__":
    main()
