#!/usr/bin/env python3
"""HF transformers on the CPU, timed as bench/cpubench times tiller.

Prefill of a prompt of P tokens (one forward pass, the logits of its last token only), then
greedy decode of G tokens (one forward pass of one token with the KV cache per step, counted from
the first token after the prompt), each timed on its own; one JSON line per (prompt length,
repetition) with the field names of bench/cpubench.

    python bench/peers/hf_cpu.py --model DIR --dtype f32|bf16 [--prompt 32,512] [--decode 64]

The prompt is the same fixed pseudo-random ids as tiller's: (i*7919 + 13) mod vocab. Attention is
sdpa (transformers' default); torch runs on --threads intra-op threads. bf16 runs the weights and
activations in bfloat16 (oneDNN's AVX512-BF16 and AMX kernels, where the CPU has them).
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def prompt_ids(n, vocab):
    return [(i * 7919 + 13) % vocab for i in range(n)]


def run_pass(model, ids, steps):
    """Prefill ids, then decode steps greedy tokens; returns (prefill s, decode s, first id)."""
    x = torch.tensor([ids])
    start = time.perf_counter()
    out = model(x, use_cache=True, num_logits_to_keep=1)
    prefill = time.perf_counter() - start
    nxt = out.logits[0, -1].argmax().item()
    first = nxt
    past = out.past_key_values
    start = time.perf_counter()
    for _ in range(steps):
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[0, -1].argmax().item()
    return prefill, time.perf_counter() - start, first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model folder in Hugging Face layout")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--prompt", default="32,512", help="comma-separated prompt lengths")
    ap.add_argument("--decode", type=int, default=64, help="greedy decode steps after each prompt")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype, attn_implementation="sdpa")
    model.eval()
    vocab = model.config.vocab_size
    with torch.inference_mode():
        run_pass(model, prompt_ids(8, vocab), 2)  # untimed: allocations, oneDNN's kernel choice
        for rep in range(1, a.reps + 1):
            for n in [int(s) for s in a.prompt.split(",")]:
                prefill, decode, first = run_pass(model, prompt_ids(n, vocab), a.decode)
                print(json.dumps({
                    "engine": "hf", "mode": a.dtype, "model": a.model, "threads": a.threads,
                    "prompt": n, "rep": rep,
                    "prefill_s": prefill, "prefill_tok_s": n / prefill,
                    "decode": a.decode, "decode_s": decode,
                    "decode_tok_s": a.decode / decode if a.decode else 0,
                    "first_token_id": first,
                    "versions": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}",
                }), flush=True)


if __name__ == "__main__":
    main()
