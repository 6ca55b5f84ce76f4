"""Checks that files written by `tiller cache` and `tiller grad` load in Python's safetensors with the
documented tensor names and shapes.

Usage: python3 scripts/check_hook_files.py MODEL_DIR FILE.safetensors [...]

For each tensor: its name must be a hook point of the model (hook_embed, blocks.L.<hook>,
ln_final.hook_normalized) and its shape the per-sequence shape of that point for the number of
token ids in the file's metadata: (pos, d_model), (pos, head, d_head) for attn.hook_q/z,
(pos, kv_head, d_head) for attn.hook_k/v, (head, pos, pos) for attn.hook_pattern, (pos, d_mlp) for
mlp.hook_post. Exits non-zero and names every mismatch.
"""

import json
import re
import sys

from safetensors import safe_open


def main():
    model, files = sys.argv[1], sys.argv[2:]
    with open(f"{model}/config.json") as f:
        c = json.load(f)
    d, heads = c["hidden_size"], c["num_attention_heads"]
    kv = c.get("num_key_value_heads") or heads
    hd = c.get("head_dim") or d // heads
    layers, ffn = c["num_hidden_layers"], c["intermediate_size"]
    bad = 0
    for path in files:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata()
            n = len(json.loads(meta["ids"]))
            names = list(f.keys())
            for name in names:
                shape = tuple(f.get_tensor(name).shape)
                m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
                if name in ("hook_embed", "ln_final.hook_normalized"):
                    want = (n, d)
                elif m and int(m.group(1)) < layers:
                    want = {
                        "attn.hook_q": (n, heads, hd), "attn.hook_z": (n, heads, hd),
                        "attn.hook_k": (n, kv, hd), "attn.hook_v": (n, kv, hd),
                        "attn.hook_pattern": (heads, n, n), "mlp.hook_post": (n, ffn),
                    }.get(m.group(2), (n, d) if m.group(2) in (
                        "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out") else None)
                else:
                    want = None
                if want is None or shape != want:
                    print(f"{path}: {name} has shape {shape}, want {want}")
                    bad += 1
            print(f"{path}: {len(names)} tensors, {n} tokens, metadata keys {sorted(meta)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
