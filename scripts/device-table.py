"""Prints the device check's short table from the JSON lines in its output folder: gpubench's
(tiller.jsonl), the HF logits, gradient and attribution comparisons (hf.jsonl), the AtP benchmark
of tiller and PyTorch (attrib.jsonl), `tiller profile`'s (profile.jsonl), the generate comparison
(generate.jsonl) and HF transformers' own speeds (hf-baseline.jsonl), with the goals of the one
fast path (batch-1 decode through the runner, steering overhead, prefill, 64 steered rows) first.

Usage: python3 scripts/device-table.py OUT_DIR > table.md
"""
import json
import os
import sys


def rows(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def goals(t, base, peak):
    """The goals of the one fast path (DESIGN.md's performance table), each against its peer or
    ceiling measured in the same call: tiller's rows from tiller.jsonl, HF's from hf-baseline.jsonl."""
    run = {r.get("variant"): r for r in t if r.get("what") == "tiller_runner_b1"}
    pre = {bool(r.get("kv_bf16")): r for r in t if r.get("what") == "tiller_prefill"}
    hp = next((x for x in base if x.get("what") == "hf_prefill" and x.get("tokens") == 2048), {})
    steered = next((r for r in t if r.get("what") == "tiller_generate_batch" and r.get("steered")), {})
    hf = {bool(x.get("compiled")): x for x in base if x.get("what") == "hf_generate" and x.get("rows") == 64}
    print("\n| goal (same card, same call) | tiller | peer or ceiling | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("generate, kv bf16", "generate, kv f32"):
        r = run.get(name, {})
        print(f"| batch-1 decode through the runner (tiller generate --device cuda), {name.split(', ')[1]} | "
              f"{fmt(r.get('tok_s'), '.1f')} tok/s ({fmt(r.get('weight_gbps'), '.0f')} GB/s) | copy {fmt(peak, '.0f')} GB/s | "
              f"{fmt(r.get('frac_copy'), '.3f')} × copy | ≥ 0.9 |")
    plain, st = run.get("batch of 1, kv bf16", {}), run.get("batch of 1, kv bf16, steered at one layer", {})
    over = ratio(st.get("ms_per_token"), plain.get("ms_per_token"))
    print(f"| steering at one layer, batch of 1 through the runner | {fmt(st.get('ms_per_token'), '.3f')} ms/token | "
          f"{fmt(plain.get('ms_per_token'), '.3f')} unsteered | {fmt(over and (over - 1) * 100, '+.2f')}% | ≤ +2% |")
    for kv in (True, False):
        r = pre.get(kv, {})
        print(f"| prefill 2048 tokens, kv {'bf16' if kv else 'f32'} | {fmt(r.get('tok_s'), '.0f')} tok/s | HF sdpa {fmt(hp.get('tok_s'), '.0f')} tok/s | "
              f"{fmt(ratio(r.get('tok_s'), hp.get('tok_s')), '.2f')} × | ≥ 1.0 |")
    for compiled, goal in ((False, "≥ 5"), (True, "≥ 1.5")):
        x = hf.get(compiled, {})
        print(f"| 64 rows, steered, per decode step, vs HF static cache {'compiled' if compiled else 'eager'} | {fmt(steered.get('tok_s'), '.0f')} tok/s | "
              f"{fmt(x.get('tok_s'), '.0f')} tok/s | {fmt(ratio(steered.get('tok_s'), x.get('tok_s')), '.2f')} × | {goal} |")


def main():
    d = sys.argv[1]
    t = rows(os.path.join(d, "tiller.jsonl"))
    h = rows(os.path.join(d, "hf.jsonl"))
    p = rows(os.path.join(d, "profile.jsonl"))
    base = rows(os.path.join(d, "hf-baseline.jsonl"))
    dev = next((r for r in t + h if r.get("what") == "device"), {})
    copy = next((r for r in t if r.get("what") == "device_copy"), {})
    peak = copy.get("gbps")
    model = next((r for r in t if r.get("what") == "model"), {})
    print(f"device: {dev.get('name', '?')} ({dev.get('sms', '?')} SMs, cc {dev.get('cc', '?')}); "
          f"copy peak {fmt(peak, '.0f')} GB/s; decode reads {fmt(model.get('decode_bytes', 0) / 1e9, '.2f')} GB per step")

    print("\n| decode, batch 1, Llama-3.1-8B shape, random bf16 | tok/s | ms/token | weights GB/s | × copy | first tokens |")
    print("| --- | --- | --- | --- | --- | --- |")
    dec = [r for r in t if r.get("what") == "tiller_decode_b1"]
    first = dec[0].get("first_tokens") if dec else None
    for r in dec:
        name = r.get("variant", "graph" if r.get("graph") else "plain launches")
        if "PDL" in name and not r.get("pdl"):
            name += " (PDL fell back to none)"
        same = "same" if r.get("first_tokens") == first else "differ"
        if r.get("steered"):
            same = "(steered)"
        print(f"| {name} | {fmt(r.get('tok_s'), '.1f')} | {fmt(r.get('ms_per_token'), '.3f')} | {fmt(r.get('weight_gbps'), '.0f')} | "
              f"{fmt(r.get('frac_copy'), '.3f')} | {same} |")
    plain = next((r for r in dec if r.get("variant") == "fused+PDL, graph"), None)
    steered = next((r for r in dec if r.get("steered")), None)
    if plain and steered and plain.get("ms_per_token") and steered.get("ms_per_token"):
        over = steered["ms_per_token"] / plain["ms_per_token"] - 1
        print(f"| steering at one layer vs none (goal <= 2% slower) | | {over * 100:+.2f}% | | | |")
    hd = next((r for r in base if r.get("what") == "hf_decode_b1"), None)
    if hd:
        print(f"| HF transformers eager (same call) | {fmt(hd.get('tok_s'), '.1f')} | {fmt(hd.get('ms_per_token'), '.3f')} | | | |")

    goals(t, base, peak)

    hc = next((r for r in h if r.get("what") == "hf_logits"), None)
    print("\n| HF logits, 8B shape, 2 layers, 32 ids: max abs diff / max abs HF fp32 | value |")
    print("| --- | --- |")
    if hc:
        for k in ("prefill_rel", "runner_decode_rel", "decoder_generic_rel", "decoder_fused_rel", "hf_bf16_rel", "prefill_argmax_agree"):
            if k in hc:
                over = f" OVER {hc[k + '_over_bound']:g}" if k + "_over_bound" in hc else ""
                print(f"| {k} | {fmt(hc[k], '.2e')}{over} |")
        print(f"| pass | {hc.get('pass')} (fused decoder PDL: {hc.get('decoder_fused_pdl', '-')}) |")
    else:
        print("| (no result) | see hf-check.log, hf-logits.log |")

    checks = [r for r in h if r.get("what") in ("grad_check", "attrib_check")]
    if checks:
        print("\n| gradients and AtP at analysis precision, vs PyTorch autograd (f32, TF32 off) and tiller's CPU | layers | max |Δ| / max |ref| | worst | vs CPU | exact patching vs CPU | pass (bounds) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in checks:
            what = "gradients at every hook point, 64 tokens" if r["what"] == "grad_check" else f"AtP, {r.get('pairs')} pairs of {r.get('tokens')} tokens"
            exact = f"{fmt(r.get('rel_exact_max'), '.1e')} ({r.get('exact_nodes', 0)} nodes)" if "rel_exact_max" in r else "-"
            print(f"| {what}, dim {r.get('dim')} | {r.get('layers')} | {fmt(r.get('rel_torch_max'), '.1e')} | {r.get('rel_torch_worst_point', '')} | "
                  f"{fmt(r.get('rel_cpu_max'), '.1e')} | {exact} | {r.get('pass')} ({r.get('bounds')}) |")

    a = rows(os.path.join(d, "attrib.jsonl"))
    fwd = next((r for r in a if r.get("what") == "atp_forward"), None)
    if fwd:
        print(f"\n| AtP per pair, Llama-3.1-8B shape, {fwd.get('tokens')}-token prompts, 40 pairs (goal ≤ 2.5 × one forward) | batch | ms/pair | pairs/s | × forward |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| tiller, one forward (analysis precision / bf16 inference) | 1 | {fmt(fwd.get('analysis_ms'), '.2f')} / {fmt(fwd.get('inference_ms'), '.2f')} | | |")
        for r in a:
            if r.get("what") == "atp_bench":
                print(f"| tiller AtP (× the bf16 forward: {fmt(r.get('x_inference_forward'), '.2f')}) | {r.get('batch')} | {fmt(r.get('ms_per_pair'), '.2f')} | "
                      f"{fmt(r.get('pairs_per_s'), '.1f')} | {fmt(r.get('x_forward'), '.2f')} |")
        for r in a:
            if r.get("what") == "torch_atp_forward":
                print(f"| PyTorch {r.get('dtype')}, one forward | 1 | {fmt(r.get('ms'), '.2f')} | | |")
            if r.get("what") == "torch_atp_bench":
                mine = next((x for x in a if x.get("what") == "atp_bench" and x.get("batch") == r.get("batch")), {})
                vs = f" (tiller {mine['pairs_per_s'] / r['pairs_per_s']:.2f}×)" if mine.get("pairs_per_s") and r.get("pairs_per_s") else ""
                print(f"| PyTorch autograd AtP, {r.get('dtype')}{vs} | {r.get('batch')} | {fmt(r.get('ms_per_pair'), '.2f')} | "
                      f"{fmt(r.get('pairs_per_s'), '.1f')} | {fmt(r.get('x_forward'), '.2f')} |")

    ks = [r for r in a if r.get("what") == "kernel"]
    if ks:
        print("\n| f32-precision products (exact products; the tensor cores do 3× the counted FLOPs) | shape | µs | TFLOP/s |")
        print("| --- | --- | --- | --- |")
        for r in ks:
            print(f"| {r['kernel']} | {r.get('shape', '')} | {fmt(r.get('ms', 0) * 1e3, '.1f')} | {fmt(r.get('tflops'), '.1f')} |")

    for variant in ("generic, graph", "fused+PDL, graph"):
        ks = [r for r in t if r.get("what") == "profile" and r.get("variant") == variant]
        if not ks:
            continue
        step = next((r for r in t if r.get("what") == "profile_step" and r.get("variant") == variant), {})
        print(f"\n| step profile: {variant.split(',')[0]} (events, no graph; {fmt(step.get('us'), '.0f')} µs/step) | calls | µs | share | GB/s | × copy |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in sorted(ks, key=lambda r: -r.get("us", 0)):
            print(f"| {r['kernel']} | {r.get('calls')} | {fmt(r.get('us'), '.0f')} | {fmt(r.get('share'), '.3f')} | "
                  f"{fmt(r.get('gbps'), '.0f')} | {fmt(r.get('frac_copy'), '.2f')} |")

    print("\n| kernel (decode ones timed in a CUDA graph) | shape | µs | GB/s | TFLOP/s | × copy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in t:
        if r.get("what") == "kernel":
            print(f"| {r['kernel']} | {r.get('shape', '')} | {fmt(r.get('ms', 0) * 1e3, '.1f')} | {fmt(r.get('gbps'), '.0f')} | "
                  f"{fmt(r.get('tflops'), '.1f')} | {fmt(r.get('frac_copy'), '.2f')} |")
    wg = [r for r in t if r.get("what") == "kernel" and r["kernel"].startswith("round+gemm_wgmma_bf16 ")]
    if wg:
        print("\n| prefill GEMM on Hopper: wgmma + TMA | shape | TFLOP/s | × round+gemm_pipe_bf16 | × dense bf16 peak (989) |")
        print("| --- | --- | --- | --- | --- |")
        for r in wg:
            if r.get("skipped"):
                print(f"| {r['kernel']} | {r.get('shape', '')} | skipped: {r['skipped']} | | |")
                continue
            print(f"| {r['kernel']} | {r.get('shape', '')} | {fmt(r.get('tflops'), '.1f')} | {fmt(r.get('x_pipe'), '.2f')} | "
                  f"{fmt(r.get('frac_dense_peak'), '.2f')} |")
    for r in t:
        if r.get("what") == "tiller_prefill":
            hp = next((x for x in base if x.get("what") == "hf_prefill" and x.get("tokens") == r.get("tokens")), {})
            print(f"\nprefill {r['tokens']} tokens: {fmt(r.get('tok_s'), '.0f')} tok/s ({fmt(r.get('tflops'), '.0f')} TFLOP/s)"
                  + (f"; HF {fmt(hp.get('tok_s'), '.0f')} tok/s" if hp else ""))

    for r in t:
        if r.get("what") == "tiller_generate_batch":
            hg = next((x for x in base if x.get("what") == "hf_generate" and x.get("rows") == r.get("rows") and not x.get("compiled")), {})
            print(f"generate, {r['rows']} rows via the runner{', each steered at one layer' if r.get('steered') else ''}: "
                  f"{fmt(r.get('tok_s'), '.0f')} tok/s, {fmt(r.get('ms_per_step'), '.1f')} ms/step"
                  + (f"; HF eager static cache {fmt(hg.get('tok_s'), '.0f')} tok/s" if hg else ""))

    bops = [r for r in t if r.get("what") == "batch_op"]
    if bops:
        print("\n| batched decode step, 64 rows steered, op profile (each op waited for) | ms per step | share |")
        print("| --- | --- | --- |")
        for r in bops:
            print(f"| {r['op']} | {fmt(r.get('ms'), '.1f')} | {fmt(r.get('share'), '.3f')} |")

    decs = [r for r in p if r.get("what") == "profile_decode"]
    if decs:
        print("\n| tiller profile --model | form | µs/step | tok/s | × copy |")
        print("| --- | --- | --- | --- | --- |")
        for r in decs:
            print(f"| {os.path.basename(str(r.get('model', '?')).rstrip('/'))} | {r.get('form')} | {fmt(r.get('us'), '.1f')} | "
                  f"{fmt(r.get('tok_s'), '.0f')} | {fmt(r.get('frac_copy'), '.2f')} |")

    g = next((r for r in rows(os.path.join(d, "generate.jsonl")) if r.get("what") == "generate"), None)
    if g:
        print(f"\ntiller generate --device cuda, greedy, tiny random model: text {'identical to' if g.get('same_as_cpu') else 'DIFFERENT from'} --device cpu")

    for r in t + h + base + a:
        if r.get("what") in ("failed", "skipped"):
            print(f"{r['what'].upper()}: {r.get('step', r.get('rows', ''))}: {r.get('error', r.get('reason', ''))}")


if __name__ == "__main__":
    main()
