#!/usr/bin/env python3
"""tiller against its CPU peers, interleaved, with the machine's background load of every run.

Each repetition runs every engine once, in turn (A, B, C, D, A, B, ...), so that a drift of the
shared machine's speed hits all of them alike:

  tiller      bench/cpubench (built here): prefill and greedy decode, exact F32 by default;
              --tiller-modes adds runs with other flags (a BF16 KV cache, bf16 compute), and
              --baseline runs of a cpubench built at an earlier commit (before/after, interleaved)
  hf-f32      bench/peers/hf_cpu.py, HF transformers in float32 (sdpa)
  hf-bf16     the same in bfloat16 (oneDNN's AVX512-BF16 and AMX kernels where the CPU has them)
  llamacpp    llama-bench on a bf16 GGUF of the same weights: pp<P> for prefill, tg<G> at depth
              P for decode after a prompt of P tokens (bench/peers/llamacpp.sh builds both)
  read        the machine's read ceiling (BenchmarkMemoryRead of a bench test binary, --read-bench:
              one pass over 1 GiB, four streams per core), so that every decode rate can be
              stated as the weights it streams a second against what the memory gave in the same
              repetition: decode reads every weight once a step, so on a shared host whose
              bandwidth moves from minute to minute this fraction is what an engine controls

Every engine prefills P tokens (prompt lengths --prompt) and decodes G tokens after them (HF:
--hf-decode, fewer, since it is compared on prefill and its bf16 decode can be very slow); tok/s
counts prompt tokens / prefill time and decode steps / decode time on every side. Around each
run the script reads /proc/stat and the child's own CPU time (wait4): others_busy is the share of
all cores that other processes kept busy meanwhile. Peers that spin-wait (llama.cpp) or run many
threads (torch) collapse when the cores are shared, so a pair is only comparable when both runs
were quiet; the summary gives the medians of all runs and of the quiet ones (others_busy below
--quiet).

    python3 bench/peers/cpu_compare.py --model HF_DIR --gguf MODEL-bf16.gguf \\
        --llama-bench build/peers/llama.cpp-<commit>/bin/llama-bench --out bench/results/<dir>

Raw rows go to OUT/runs.jsonl (one per engine, mode, prompt and repetition), the summary to
OUT/summary.md and stdout.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def cpu_times():
    """(busy, total) seconds over all cores from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    hz = os.sysconf("SC_CLK_TCK")
    vals = [int(v) / hz for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(vals) - vals[3] - vals[4], sum(vals)


def measure(cmd):
    """Runs cmd; returns (stdout, wall s, its CPU s, others_busy)."""
    busy0, total0 = cpu_times()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, cwd=REPO)
    wall = time.monotonic() - start
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = cpu_times()
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"cpu_compare: {' '.join(cmd)} exited with {p.returncode}")
    # The children reaped in between are this one command (and its own children).
    own = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    others = max(0.0, (busy1 - busy0 - own) / max(total1 - total0, 1e-9))
    return p.stdout.decode(), wall, own, others


def rows_of(out):
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def tiller(a, mode, flags, binary=None):
    cmd = [binary or os.path.join(REPO, "build", "cpubench"), "--model", a.model, "--prompt", a.prompt,
           "--decode", str(a.decode), "--threads", str(a.threads)] + flags
    out, wall, own, others = measure(cmd)
    rows = rows_of(out)
    for r in rows:
        r["mode"] = mode
    return rows, wall, own, others


def hf(a, dtype):
    cmd = [a.python, os.path.join(HERE, "hf_cpu.py"), "--model", a.model, "--dtype", dtype,
           "--prompt", a.prompt, "--decode", str(a.hf_decode), "--threads", str(a.threads)]
    out, wall, own, others = measure(cmd)
    return rows_of(out), wall, own, others


def llamacpp(a):
    """pp<P> and tg<G> at depth P with llama-bench, one repetition each, as one run."""
    prompts = a.prompt
    cmd = ["sh", "-c",
           f"'{a.llama_bench}' -m '{a.gguf}' -t {a.threads} -r 1 -o jsonl -p {prompts} -n 0 && "
           f"'{a.llama_bench}' -m '{a.gguf}' -t {a.threads} -r 1 -o jsonl -p 0 -n {a.decode} -d {prompts}"]
    out, wall, own, others = measure(cmd)
    byp = {}
    for r in rows_of(out):
        if r["n_gen"] == 0:
            byp.setdefault(r["n_prompt"], {})["prefill_tok_s"] = r["avg_ts"]
        else:
            byp.setdefault(r["n_depth"], {})["decode_tok_s"] = r["avg_ts"]
        commit = r.get("build_commit")
    rows = []
    for p, v in sorted(byp.items()):
        rows.append({"engine": "llamacpp", "mode": "bf16 gguf", "model": a.gguf, "threads": a.threads,
                     "prompt": p, "decode": a.decode, "llama_cpp": commit, **v})
    return rows, wall, own, others


def read_ceiling(a):
    """GB/s of BenchmarkMemoryRead, the read ceiling, as one run."""
    cmd = [a.read_bench, "-test.run", "X", "-test.bench", "MemoryRead$", "-test.benchtime", "5x"]
    out, wall, own, others = measure(cmd)
    gbs = [float(f[f.index("GB/s") - 1]) for f in (l.split() for l in out.splitlines()) if "GB/s" in f]
    if not gbs:
        raise SystemExit(f"cpu_compare: no GB/s in the output of {' '.join(cmd)}")
    return [{"engine": "read", "mode": "4 streams/core", "prompt": 0, "read_gb_s": gbs[0]}], wall, own, others


def streamed_bytes(folder):
    """The bytes of weights a decode step reads: every tensor of the folder's safetensors files,
    less the embedding when the model has a separate lm_head (an untied embedding is read one row
    a token; a tied one is the LM head)."""
    if not os.path.isdir(folder):
        raise SystemExit(f"cpu_compare: the read engine counts the weights of a model folder; {folder} is not one")
    sizes = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            for k, v in json.loads(f.read(n)).items():
                if k != "__metadata__":
                    sizes[k] = v["data_offsets"][1] - v["data_offsets"][0]
    if not sizes:
        raise SystemExit(f"cpu_compare: no safetensors weights in {folder}")
    total = sum(sizes.values())
    if "lm_head.weight" in sizes:
        total -= sizes.get("model.embed_tokens.weight", 0)
    return total


def stream_table(runs, weight_bytes):
    """Per engine, mode and prompt: the weights streamed a second in decode (decode tok/s times
    the bytes of a step) and that as a fraction of the read ceiling measured in the same
    repetition, medians over repetitions."""
    reads = {r["rep_all"]: r["read_gb_s"] for r in runs if r["engine"] == "read"}
    lines = [f"Decode against the read ceiling ({weight_bytes / 1e6:.0f} MB of weights a step; the KV cache "
             "is not counted): weights GB/s, and GB/s over the ceiling of the same repetition. "
             f"Read ceiling: median {fmt(median(reads.values()))} GB/s, "
             f"{fmt(min(reads.values(), default=None))}–{fmt(max(reads.values(), default=None))}.", "",
             "| engine | mode | prompt | weights GB/s | × read ceiling (min–max) |", "| --- | --- | --- | --- | --- |"]
    keys = sorted({(r["engine"], r["mode"], r["prompt"]) for r in runs if r["engine"] != "read" and r.get("decode_tok_s")},
                  key=lambda k: (k[2], k[0] != "tiller", k[0], k[1]))
    for e, m, p in keys:
        rs = [r for r in runs if (r["engine"], r["mode"], r["prompt"]) == (e, m, p) and r.get("decode_tok_s")]
        gbs = [r["decode_tok_s"] * weight_bytes / 1e9 for r in rs]
        frac = [g / reads[r["rep_all"]] for g, r in zip(gbs, rs) if r["rep_all"] in reads]
        span = f" ({min(frac):.2f}–{max(frac):.2f})" if frac else ""
        lines.append(f"| {e} | {m} | {p} | {fmt(median(gbs))} | {fmt(median(frac), 2)}{span} |")
    return "\n".join(lines)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def summarize(runs, quiet):
    """A markdown table: per (engine, mode, prompt) the median prefill and decode rates over all
    runs and over the quiet ones, the median background load, and tiller's ratios to each peer,
    taken pair by pair within a repetition."""
    keys = sorted({(r["engine"], r["mode"], r["prompt"]) for r in runs if r["engine"] != "read"},
                  key=lambda k: (k[2], k[0] != "tiller", k[0], k[1]))
    lines = ["| engine | mode | prompt | prefill tok/s (quiet) | decode tok/s (quiet) | others_busy (median, max) | runs (quiet) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for e, m, p in keys:
        rs = [r for r in runs if (r["engine"], r["mode"], r["prompt"]) == (e, m, p)]
        q = [r for r in rs if r["others_busy"] < quiet]
        lines.append(f"| {e} | {m} | {p} | {fmt(median(r.get('prefill_tok_s') for r in rs))} "
                     f"({fmt(median(r.get('prefill_tok_s') for r in q))}) | "
                     f"{fmt(median(r.get('decode_tok_s') for r in rs))} ({fmt(median(r.get('decode_tok_s') for r in q))}) | "
                     f"{median(r['others_busy'] for r in rs):.2f}, {max(r['others_busy'] for r in rs):.2f} | {len(rs)} ({len(q)}) |")
    lines += ["", "tiller / peer, per repetition (median over repetitions; over quiet pairs, both runs below the threshold):", "",
              "| tiller mode | peer | prompt | prefill ratio (quiet) | decode ratio (quiet) | pairs (quiet) |",
              "| --- | --- | --- | --- | --- | --- |"]
    tmodes = sorted({r["mode"] for r in runs if r["engine"] == "tiller"})
    peers = sorted({(r["engine"], r["mode"]) for r in runs if r["engine"] not in ("tiller", "read")})
    for tm in tmodes:
        for pe, pm in peers:
            for p in sorted({r["prompt"] for r in runs if r["engine"] != "read"}):
                pr, dr, qpr, qdr = [], [], [], []
                for rep in sorted({r["rep_all"] for r in runs}):
                    t = [r for r in runs if r["engine"] == "tiller" and r["mode"] == tm and r["prompt"] == p and r["rep_all"] == rep]
                    o = [r for r in runs if r["engine"] == pe and r["mode"] == pm and r["prompt"] == p and r["rep_all"] == rep]
                    if not t or not o:
                        continue
                    t, o = t[0], o[0]
                    ok = t["others_busy"] < quiet and o["others_busy"] < quiet
                    for key, dst, qdst in (("prefill_tok_s", pr, qpr), ("decode_tok_s", dr, qdr)):
                        if t.get(key) and o.get(key):
                            dst.append(t[key] / o[key])
                            if ok:
                                qdst.append(t[key] / o[key])
                lines.append(f"| {tm} | {pe} {pm} | {p} | {fmt(median(pr), 2)} ({fmt(median(qpr), 2)}) | "
                             f"{fmt(median(dr), 2)} ({fmt(median(qdr), 2)}) | {len(dr) or len(pr)} ({len(qdr) or len(qpr)}) |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("TILLER_BENCH_MODEL"), help="HF model folder (tiller and HF)")
    ap.add_argument("--gguf", help="bf16 GGUF of the same weights (llama.cpp)")
    ap.add_argument("--llama-bench", help="llama-bench binary")
    ap.add_argument("--read-bench", help="bench test binary (go test -c -o FILE ./bench) for the read engine")
    ap.add_argument("--engines", default="tiller,hf-f32,hf-bf16,llamacpp")
    ap.add_argument("--tiller-modes", default="f32=",
                    help="semicolon-separated NAME=FLAGS tiller runs, e.g. 'f32=;kv-bf16=--kv-cache bf16'")
    ap.add_argument("--baseline", action="append", default=[], metavar="NAME=BINARY",
                    help="a bench/cpubench binary built at an earlier commit, run (exact mode) as tiller "
                         "mode NAME in every repetition before the current build's modes, so that "
                         "before and after are interleaved too; repeatable")
    ap.add_argument("--prompt", default="32,512")
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--hf-decode", type=int, default=16,
                    help="decode steps of HF transformers (its bf16 decode can run at 1 tok/s on a CPU without AMX)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", type=float, default=0.1, help="others_busy below which a run counts as quiet")
    ap.add_argument("--python", default=os.path.join(REPO, "build", "pyref", "bin", "python"))
    ap.add_argument("--out", required=True, help="folder for runs.jsonl and summary.md")
    a = ap.parse_args()
    if not a.model:
        raise SystemExit("cpu_compare: --model (or TILLER_BENCH_MODEL) is required")
    engines = a.engines.split(",")
    if "llamacpp" in engines and not (a.gguf and a.llama_bench):
        raise SystemExit("cpu_compare: llamacpp needs --gguf and --llama-bench (bench/peers/llamacpp.sh with MEASURE=0 prints both)")
    if "read" in engines and not (a.read_bench and os.access(a.read_bench, os.X_OK)):
        raise SystemExit("cpu_compare: read needs --read-bench, a bench test binary (go test -c -o FILE ./bench)")
    if "tiller" in engines:
        subprocess.run(["make", "-s", "cpubench"], cwd=REPO, check=True)
    modes = []
    for b in a.baseline:
        name, _, binary = b.partition("=")
        if not (name and os.access(binary, os.X_OK)):
            raise SystemExit(f"cpu_compare: --baseline {b!r}: want NAME=BINARY, an executable cpubench")
        modes.append((name, [], os.path.abspath(binary)))
    for m in a.tiller_modes.split(";"):
        name, _, flags = m.partition("=")
        modes.append((name, flags.split(), None))
    os.makedirs(a.out, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    runs = []
    with open(os.path.join(a.out, "runs.jsonl"), "a") as raw:
        for rep in range(1, a.reps + 1):
            for e in engines:
                jobs = []
                if e == "tiller":
                    jobs = [(lambda m=m: tiller(a, *m)) for m in modes]
                elif e == "hf-f32":
                    jobs = [lambda: hf(a, "f32")]
                elif e == "hf-bf16":
                    jobs = [lambda: hf(a, "bf16")]
                elif e == "llamacpp":
                    jobs = [lambda: llamacpp(a)]
                elif e == "read":
                    jobs = [lambda: read_ceiling(a)]
                else:
                    raise SystemExit(f"cpu_compare: unknown engine {e}")
                for job in jobs:
                    rows, wall, own, others = job()
                    for r in rows:
                        r.update(rep_all=rep, wall_s=wall, cpu_s=own, others_busy=others,
                                 tiller_commit=commit, cpu=cpu, cores=os.cpu_count(),
                                 date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                        raw.write(json.dumps(r) + "\n")
                        raw.flush()
                        runs.append(r)
                        if e == "read":
                            print(f"rep {rep} read ceiling {r['read_gb_s']:.1f} GB/s, others {others:.2f}", flush=True)
                            continue
                        print(f"rep {rep} {r['engine']:8} {r['mode']:10} prompt {r['prompt']:4}: prefill "
                              f"{fmt(r.get('prefill_tok_s'))} tok/s, decode {fmt(r.get('decode_tok_s'))} tok/s, "
                              f"others {others:.2f}", flush=True)
    table = summarize(runs, a.quiet)
    if "read" in engines:
        table += "\n\n" + stream_table(runs, streamed_bytes(a.model))
    head = (f"{time.strftime('%Y-%m-%d')} tiller {commit}, {cpu}, {os.cpu_count()} cores, {a.threads} threads, "
            f"prompt {a.prompt}, decode {a.decode}, {a.reps} repetitions, quiet: others_busy < {a.quiet}\n\n")
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(head + table + "\n")
    print("\n" + head + table)


if __name__ == "__main__":
    main()
