"""The outside reference for tiller's GPU backend at the real shape (issue 6, item 4): a random
Llama checkpoint at the Llama-3.1-8B shape with few layers, written by HF transformers, and HF's
logits for fixed token ids. `gpubench -hf DIR` then loads DIR on the GPU and compares.

Usage: python3 hf_logits.py --config llama-3.1-8b-config.json --out DIR [--layers 2] [--tokens 32]

DIR receives model.safetensors from save_pretrained (bf16 weights drawn with a fixed seed, the
norm weights off 1 so that a norm's weight matters), config.json (the given config with
num_hidden_layers replaced: the field names tiller reads, whatever this transformers version
would write), and reference.safetensors: ids (n) int32
and the logits (n, vocab) float32 of the model run in bfloat16 (logits_bf16) and in float32 with
the same weights upcast exactly (logits_fp32, the reference; TF32 off). Weights are made on the
GPU; a 2-layer checkpoint is ~3.1 GB. Prints one JSON line.
"""

import argparse
import json
import os
import time

import torch


def random_model(cfg, seed, device):
    """LlamaForCausalLM of config dict cfg in bf16 on device, every weight drawn here whatever this
    transformers version's own initialisation does: N(0, initializer_range) for matrices,
    1 + N(0, 0.1) for the norms (HF would leave them at 1, where a missing norm weight would go
    unnoticed). Also used by hf_attrib.py."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**cfg)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    std = cfg.get("initializer_range", 0.02)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32)
            p.copy_(1 + 0.1 * r if name.endswith("norm.weight") else std * r)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to try the script on a small config")
    args = ap.parse_args()
    t0 = time.time()

    import transformers
    from safetensors.torch import save_file

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(args.config) as f:
        cfg = json.load(f)
    cfg["num_hidden_layers"] = args.layers
    model = random_model(cfg, args.seed, args.device)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gc = os.path.join(args.out, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)  # not needed, and the one place a new transformers could write what tiller rejects
    t_saved = time.time()

    ids = torch.randint(0, model.config.vocab_size, (1, args.tokens), generator=torch.Generator().manual_seed(args.seed + 2))
    ids = ids.to(args.device)
    with torch.inference_mode():
        logits_bf16 = model(ids).logits[0].float()
        model.float()
        logits_fp32 = model(ids).logits[0].float()
    save_file({
        "ids": ids[0].to(torch.int32).cpu().contiguous(),
        "logits_fp32": logits_fp32.cpu().contiguous(),
        "logits_bf16": logits_bf16.cpu().contiguous(),
    }, os.path.join(args.out, "reference.safetensors"))
    rel = ((logits_bf16 - logits_fp32).abs().max() / logits_fp32.abs().max()).item()
    print(json.dumps({"what": "hf_reference", "layers": args.layers, "tokens": args.tokens, "out": args.out,
                      "transformers": transformers.__version__, "torch": torch.__version__,
                      "hf_bf16_vs_fp32_rel": rel, "save_s": t_saved - t0, "wall_s": time.time() - t0}), flush=True)


if __name__ == "__main__":
    main()
