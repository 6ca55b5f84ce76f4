#!/usr/bin/env python3
"""How far tiller's faster precisions move the logits, against its exact mode and HF transformers.

Scores one text with `tiller score --logits-out` once per tiller mode (exact F32, a bf16 KV cache,
bf16 compute, ...), runs HF transformers on the same token ids (read back from the logits file's
metadata) in float32 and bfloat16, and compares every pair of interest over all positions:

  max |Δ| / max |ref|   the largest logit difference, relative to the reference's largest logit
  rms |Δ| / rms ref     the typical difference
  argmax agreement      the share of positions where both pick the same next token
  mean KL(ref ‖ got)    in nats, of the next-token distributions

    python bench/peers/logits_check.py --model DIR [--text-file README.md] [--chars 2500] \\
        [--modes 'f32=;kv-bf16=--kv-cache bf16'] [--out results.jsonl]

The text is the first --chars characters of --text-file (README.md: about 550 tokens of English
and code), so positions run from short to long contexts.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def tiller_logits(a, flags, tmp, name):
    path = os.path.join(tmp, name + ".safetensors")
    cmd = [a.tiller, "score", "--model", a.model, "--threads", str(a.threads), "--logits-out", path] + flags + ["-"]
    p = subprocess.run(cmd, input=a.text.encode(), capture_output=True, cwd=REPO)
    if p.returncode != 0:
        sys.exit(f"logits_check: {' '.join(cmd)}: {p.stderr.decode()}")
    with safe_open(path, "pt") as f:
        ids = json.loads(f.metadata()["ids"])
        return ids, f.get_tensor("logits").double()


def hf_logits(a, ids, dtype):
    m = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype, attn_implementation="sdpa")
    with torch.inference_mode():
        return m(torch.tensor([ids])).logits[0].double()


def compare(got, ref):
    d = got - ref
    lp_ref, lp_got = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    kl = (lp_ref.exp() * (lp_ref - lp_got)).sum(-1)
    return {
        "max_rel": (d.abs().max() / ref.abs().max()).item(),
        "rms_rel": (d.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item(),
        "argmax_agree": (got.argmax(-1) == ref.argmax(-1)).double().mean().item(),
        "mean_kl": kl.mean().item(),
        "positions": got.shape[0],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("TILLER_BENCH_MODEL"), required="TILLER_BENCH_MODEL" not in os.environ)
    ap.add_argument("--tiller", default=os.path.join(REPO, "bin", "tiller"))
    ap.add_argument("--text-file", default=os.path.join(REPO, "README.md"))
    ap.add_argument("--chars", type=int, default=2500)
    ap.add_argument("--modes", default="f32=;kv-bf16=--kv-cache bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="append the rows as JSON lines here")
    a = ap.parse_args()
    a.text = open(a.text_file, encoding="utf-8").read()[: a.chars]
    torch.set_num_threads(a.threads)
    logits, ids = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.modes.split(";"):
            name, _, flags = m.partition("=")
            ids, logits["tiller " + name] = tiller_logits(a, flags.split(), tmp, name)
    logits["hf f32"] = hf_logits(a, ids, torch.float32)
    logits["hf bf16"] = hf_logits(a, ids, torch.bfloat16)
    exact = "tiller " + a.modes.split(";")[0].partition("=")[0]
    pairs = [(k, "hf f32") for k in logits if k != "hf f32"]
    pairs += [(k, "hf bf16") for k in logits if k.startswith("tiller")]
    pairs += [(k, exact) for k in logits if k.startswith("tiller") and k != exact]
    rows = []
    print(f"{len(ids)} tokens of {a.text_file}\n")
    print("| logits | against | max abs diff / max abs ref | rms diff / rms ref | argmax agreement | mean KL (nats) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for got, ref in pairs:
        r = {"got": got, "ref": ref, "model": a.model, **compare(logits[got], logits[ref])}
        rows.append(r)
        print(f"| {got} | {ref} | {r['max_rel']:.2e} | {r['rms_rel']:.2e} | {r['argmax_agree']:.3f} | {r['mean_kl']:.2e} |")
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
