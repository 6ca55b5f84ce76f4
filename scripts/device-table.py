"""Prints the device check's short table from gpubench's and hf_baseline's JSON lines:
kernel or measure, time, GB/s or TFLOP/s, fraction of the copy peak; decode tok/s tiller vs HF.

Usage: python3 scripts/device-table.py tiller.jsonl hf.jsonl > table.md
"""
import json
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
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main():
    t, h = rows(sys.argv[1]), rows(sys.argv[2]) if len(sys.argv) > 2 else []
    dev = next((r for r in t if r.get("what") == "device"), {})
    tcopy = next((r for r in t if r.get("what") == "device_copy"), {})
    hcopy = next((r for r in h if r.get("what") == "device_copy"), {})
    print(f"device: {dev.get('name', '?')} ({dev.get('sms', '?')} SMs); copy peak tiller {fmt(tcopy.get('gbps'), '.0f')} GB/s, "
          f"torch {fmt(hcopy.get('gbps'), '.0f')} GB/s")
    print()
    print("| kernel / measure | shape | time (ms) | GB/s | TFLOP/s | × copy peak |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in t:
        if r.get("what") == "kernel":
            print(f"| {r['kernel']} | {r.get('shape', '')} | {fmt(r.get('ms'), '.4f')} | {fmt(r.get('gbps'), '.0f')} | "
                  f"{fmt(r.get('tflops'), '.1f')} | {fmt(r.get('frac_copy'), '.2f')} |")
    print()
    print("| end to end (Llama-3.1-8B shape, random bf16) | tiller | HF transformers (eager, sdpa) | tiller / HF |")
    print("| --- | --- | --- | --- |")
    hd = next((r for r in h if r.get("what") == "hf_decode_b1"), {})
    for r in t:
        if r.get("what") == "tiller_decode_b1":
            ratio = r["tok_s"] / hd["tok_s"] if hd.get("tok_s") else None
            print(f"| decode batch 1, {'CUDA graph' if r.get('graph') else 'plain launches'} | {fmt(r.get('tok_s'), '.1f')} tok/s "
                  f"({fmt(r.get('weight_gbps'), '.0f')} GB/s, {fmt(r.get('frac_copy'), '.2f')} × copy) | "
                  f"{fmt(hd.get('tok_s'), '.1f')} tok/s | {fmt(ratio, '.2f')} |")
    hp = next((r for r in h if r.get("what") == "hf_prefill" and r.get("tokens") == 2048), {})
    for r in t:
        if r.get("what") == "tiller_prefill":
            ratio = r["tok_s"] / hp["tok_s"] if hp.get("tok_s") else None
            print(f"| prefill {r['tokens']} tokens | {fmt(r.get('tok_s'), '.0f')} tok/s ({fmt(r.get('tflops'), '.0f')} TFLOP/s) | "
                  f"{fmt(hp.get('tok_s'), '.0f')} tok/s | {fmt(ratio, '.2f')} |")
    fails = [r for r in t + h if r.get("what") == "failed"]
    for r in fails:
        print(f"FAILED: {r.get('step', r.get('rows', ''))}: {r.get('error', '')}")


if __name__ == "__main__":
    main()
