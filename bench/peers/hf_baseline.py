"""Peer baselines on one GPU: the ceilings and the HF transformers speeds tiller is judged against.

Measures, in one process and on one card:
  - device-to-device copy bandwidth (bytes read + bytes written), the roofline for decode;
  - a large bf16 matrix product (TFLOP/s), the roofline for prefill;
  - HF transformers LlamaForCausalLM with random bf16 weights at the shape of the given config
    (Llama-3.1-8B by default): prefill of 512 and 2048 tokens (sdpa), batch-1 greedy decode, and
    batched greedy generate (64 rows) with a static cache, eager and, time permitting, compiled.

Every figure is printed as one JSON line the moment it is known, and appended to --out, so a run
cut short still reports what it measured. Timing uses CUDA events after warm-up; the figure is the
median of several repeats.

Usage: python3 hf_baseline.py --config config.json [--out results.jsonl] [--deadline-s 400]
                              [--quick] [--batch64]

--quick measures only the copy bandwidth, prefill of 2048 tokens, and batch-1 eager decode
(dynamic cache, 64 steps), in under a minute; --batch64 adds to it the 64-row generate with a
static cache, eager then compiled (the compile takes minutes; the deadline cuts it short), which
the one-call device check sets beside tiller's 64 steered rows.
"""

import argparse
import json
import statistics
import sys
import time

import torch


def emit(out, **row):
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def cuda_time_ms(fn, warmup=2, repeat=5):
    """Median wall time of fn on the device, in milliseconds, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def copy_bandwidth(out):
    n = 2 << 30  # 2 GiB per buffer: far past L2, fills every memory channel
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), warmup=3, repeat=20)
    emit(out, what="device_copy", bytes_moved=2 * n, ms=ms, gbps=2 * n / ms / 1e6)
    del src, dst


def matmul_peak(out):
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    ms = cuda_time_ms(lambda: a @ b, warmup=3, repeat=10)
    emit(out, what="bf16_matmul", m=n, n=n, k=n, ms=ms, tflops=2 * n**3 / ms / 1e9)
    del a, b


def build_model(config_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    with open(config_path) as f:
        cfg = json.load(f)
    config = LlamaConfig(**cfg)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    return model, config, n_params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--deadline-s", type=float, default=400)
    ap.add_argument("--quick", action="store_true",
                    help="copy, 2048-token prefill and batch-1 eager decode only (about a minute)")
    ap.add_argument("--batch64", action="store_true",
                    help="with --quick: also the 64-row static-cache generate, eager and compiled")
    args = ap.parse_args()
    t0 = time.time()

    import transformers

    props = torch.cuda.get_device_properties(0)
    emit(args.out, what="device", name=props.name, sms=props.multi_processor_count,
         mem_gib=props.total_memory / 2**30, torch=torch.__version__,
         transformers=transformers.__version__)

    copy_bandwidth(args.out)
    if not args.quick:
        matmul_peak(args.out)

    model, config, n_params = build_model(args.config)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    emit(args.out, what="model", params=n_params, weight_bytes=weight_bytes,
         attn=config._attn_implementation, build_s=time.time() - t0)
    vocab = config.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(1)

    with torch.inference_mode():
        for n in ((2048,) if args.quick else (512, 2048)):
            ids = torch.randint(0, vocab, (1, n), device="cuda", generator=gen)
            ms = cuda_time_ms(lambda: model(ids, use_cache=False, logits_to_keep=1), warmup=2, repeat=5)
            emit(args.out, what="hf_prefill", tokens=n, ms=ms, tok_s=n / ms * 1e3,
                 tflops=2 * n_params * n / ms / 1e9)

        # Batch-1 greedy decode through generate: the time of (prompt + N new) minus (prompt + 1 new)
        # leaves the decode steps alone.
        prompt = torch.randint(0, vocab, (1, 128), device="cuda", generator=gen)

        def generate(rows, new, **kw):
            return model.generate(rows, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                  pad_token_id=0, **kw)

        steps = 64 if args.quick else 256
        repeat = 2 if args.quick else 3
        t_one = cuda_time_ms(lambda: generate(prompt, 1), warmup=1, repeat=repeat)
        t_all = cuda_time_ms(lambda: generate(prompt, steps + 1), warmup=1, repeat=repeat)
        ms_tok = (t_all - t_one) / steps
        emit(args.out, what="hf_decode_b1", cache="dynamic", ms_per_token=ms_tok,
             tok_s=1e3 / ms_tok, weight_gbps=weight_bytes / ms_tok / 1e6)

        batched = ((64, "static", False), (1, "static", True), (64, "static", True))
        if args.quick:
            batched = ((64, "static", False), (64, "static", True)) if args.batch64 else ()
        for rows, cache, compiled in batched:
            if time.time() - t0 > args.deadline_s:
                emit(args.out, what="skipped", reason="deadline", rows=rows, compiled=compiled)
                continue
            batch = torch.randint(0, vocab, (rows, 128), device="cuda", generator=gen)
            kw = dict(cache_implementation=cache)
            if not compiled:
                kw["disable_compile"] = True
            new = 128
            try:
                t_one = cuda_time_ms(lambda: generate(batch, 1, **kw), warmup=1, repeat=2)
                t_all = cuda_time_ms(lambda: generate(batch, new + 1, **kw), warmup=1, repeat=2)
            except Exception as e:  # a peer configuration that fails is reported, not fatal
                emit(args.out, what="failed", rows=rows, cache=cache, compiled=compiled, error=repr(e)[:300])
                continue
            ms_step = (t_all - t_one) / new
            emit(args.out, what="hf_generate", rows=rows, cache=cache, compiled=compiled,
                 ms_per_step=ms_step, tok_s=rows * 1e3 / ms_step,
                 total_tok_s_incl_prefill=rows * (new + 1) / t_all * 1e3)

    emit(args.out, what="done", wall_s=time.time() - t0)


if __name__ == "__main__":
    sys.exit(main())
