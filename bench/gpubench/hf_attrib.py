"""PyTorch autograd with HF transformers as the outside reference and the peer of tiller's attribution
on the GPU (issue 15).

  reference --checkpoint DIR   (DIR written by hf_logits.py) loads DIR in float32 on the GPU (the
      bf16 weights upcast exactly; TF32 off, sdpa attention) and writes DIR/attrib_reference.safetensors:
        grad.ids (T) I32 and grad.<hook name> F32 for every hook point but the pattern: the gradient
            of M = logits[T-1, A] - logits[T-1, B] (A, B the argmax and argmin of the last row; in
            the metadata with M) at the tensor each hook point is (scripts/reference/make_fixtures.py's
            Capture), shapes (T, ...) with heads split as tiller's;
        pair.i.clean, pair.i.corrupt (T) I32 and pair.i.ab (2) I32: random prompts, the corrupt one
            with positions T/2 and T-8 replaced, and the logit difference's two tokens;
        atp.resid_pre, atp.attn_out, atp.mlp_out (pairs, layers, T) and atp.head_pos (pairs, layers,
            heads, T) F32: AtP, sum over each node of (a(corrupt) - a(clean)) * dM/da at the clean run,
            as tiller's attrib scores them; `gpubench -grads DIR -attrib DIR` compares.
  bench --config C             times the same AtP with random weights at the config's full shape,
      in bf16 (as nnsight and TransformerLens users run it) and in float32 (tiller's precision), pairs
      batched by 1 and by 8: one forward of one prompt, ms per pair, pairs per second, and AtP per
      pair as a multiple of the forward. One JSON line per figure, printed and appended to --out.

Usage: python3 hf_attrib.py reference --checkpoint DIR [--pairs 8] [--tokens 64]
       python3 hf_attrib.py bench --config C [--pairs 40] [--tokens 64] [--dtypes bf16,fp32] [--out F]
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

from hf_logits import random_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts", "reference"))


def emit(out, **row):
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


class Nodes:
    """Forward hooks that keep, per layer, the tensors AtP scores: the layer's input (resid_pre),
    o_proj's input (z, heads concatenated) and output (attn_out), and the MLP's output (mlp_out)."""

    def __init__(self, model):
        self.acts = {}
        self.handles = []

        def keep(key):
            def hook(module, args, kwargs, out=None):
                x = out if out is not None else (args[0] if args else kwargs["hidden_states"])
                self.acts[key] = x[0] if isinstance(x, tuple) else x
            return hook

        for l, layer in enumerate(model.model.layers):
            self.handles.append(layer.register_forward_pre_hook(keep(("resid_pre", l)), with_kwargs=True))
            self.handles.append(layer.self_attn.o_proj.register_forward_pre_hook(keep(("z", l)), with_kwargs=True))
            self.handles.append(layer.self_attn.o_proj.register_forward_hook(keep(("attn_out", l)), with_kwargs=True))
            self.handles.append(layer.mlp.register_forward_hook(keep(("mlp_out", l)), with_kwargs=True))

    def remove(self):
        for h in self.handles:
            h.remove()


def grad_from_embeddings(model):
    """The weights need no gradient: autograd starts at the embedding's output (a hook makes it
    require one), as attribution tools run, instead of also forming every weight's gradient."""
    model.requires_grad_(False)
    return model.model.embed_tokens.register_forward_hook(lambda m, args, out: out.requires_grad_() if torch.is_grad_enabled() else out)


def atp(model, clean, corrupt, ab):
    """AtP of a batch of pairs: clean, corrupt (B, T) ids, ab (B, 2). Returns resid_pre, attn_out,
    mlp_out (B, L, T) and head_pos (B, L, heads, T), float32: a clean forward and backward of
    M = sum_b logits[b, T-1, A_b] - logits[b, T-1, B_b] (the pairs do not interact), a corrupt forward,
    and the products."""
    cfg = model.config
    L, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    B, T = clean.shape
    nodes, start = Nodes(model), grad_from_embeddings(model)
    with torch.enable_grad():
        logits = model(clean).logits
        clean_acts = dict(nodes.acts)
        for t in clean_acts.values():
            t.retain_grad()
        rows = torch.arange(B, device=clean.device)
        metric = (logits[rows, T - 1, ab[:, 0]] - logits[rows, T - 1, ab[:, 1]]).sum()
        metric.backward()
    with torch.no_grad():
        model(corrupt)
        corrupt_acts = dict(nodes.acts)
    nodes.remove()
    start.remove()
    out = {}
    with torch.no_grad():
        for kind in ("resid_pre", "attn_out", "mlp_out"):
            out[kind] = torch.stack([((corrupt_acts[(kind, l)] - clean_acts[(kind, l)]) * clean_acts[(kind, l)].grad).float().sum(-1)
                                     for l in range(L)], 1)
        out["head_pos"] = torch.stack([((corrupt_acts[("z", l)] - clean_acts[("z", l)]) * clean_acts[("z", l)].grad).float()
                                       .view(B, T, heads, -1).sum(-1).transpose(1, 2) for l in range(L)], 1)
    return out


def pairs(n, T, vocab, seed, device):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, T // 2] = torch.randint(0, vocab, (n,), generator=g)
    corrupt[:, T - 8] = torch.randint(0, vocab, (n,), generator=g)
    ab = torch.randint(0, vocab, (n, 2), generator=g)
    return clean.to(device), corrupt.to(device), ab.to(device)


def reference(args):
    import transformers
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM
    from make_fixtures import Capture, hook_names

    t0 = time.time()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = LlamaForCausalLM.from_pretrained(args.checkpoint, attn_implementation="sdpa").float().to(args.device).eval()
    cfg = model.config
    T, L = args.tokens, cfg.num_hidden_layers
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    out, meta = {}, {"transformers": transformers.__version__, "torch": torch.__version__}

    # Gradients at every hook point.
    ids = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(args.seed)).to(args.device)
    cap, start = Capture(model), grad_from_embeddings(model)
    with torch.enable_grad():
        logits = model(ids).logits[0]
        cap.remove()
        start.remove()
        acts = {n: t for n, t in cap.acts.items() if t is not None and n in hook_names(L)}
        for t in acts.values():
            t.retain_grad()
        last = logits[T - 1].detach()
        A, B = int(last.argmax()), int(last.argmin())
        metric = logits[T - 1, A] - logits[T - 1, B]
        metric.backward()
    out["grad.ids"] = ids[0].to(torch.int32).cpu()
    for n, t in acts.items():
        g = t.grad[0]
        if "attn.hook_q" in n or "attn.hook_z" in n:
            g = g.reshape(T, heads, hd)
        elif "attn.hook_k" in n or "attn.hook_v" in n:
            g = g.reshape(T, kv_heads, hd)
        out["grad." + n] = g.float().cpu().clone()  # embed and resid_pre are one tensor: a copy each
    meta.update(grad_a=str(A), grad_b=str(B), grad_metric=repr(metric.item()), grad_points=str(len(acts)))

    # AtP on pairs, one at a time (the scores do not depend on the batching).
    clean, corrupt, ab = pairs(args.pairs, T, cfg.vocab_size, args.seed + 1, args.device)
    scores = {k: [] for k in ("resid_pre", "attn_out", "mlp_out", "head_pos")}
    for i in range(args.pairs):
        s = atp(model, clean[i:i + 1], corrupt[i:i + 1], ab[i:i + 1])
        for k in scores:
            scores[k].append(s[k][0].cpu())
        out[f"pair.{i}.clean"] = clean[i].to(torch.int32).cpu()
        out[f"pair.{i}.corrupt"] = corrupt[i].to(torch.int32).cpu()
        out[f"pair.{i}.ab"] = ab[i].to(torch.int32).cpu()
    for k, v in scores.items():
        out["atp." + k] = torch.stack(v).contiguous()
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(args.checkpoint, "attrib_reference.safetensors"), metadata=meta)
    emit(args.out, what="torch_reference", layers=L, tokens=T, pairs=args.pairs, points=len(acts), metric=metric.item(),
         transformers=transformers.__version__, torch=torch.__version__, wall_s=time.time() - t0)


def cuda_ms(fn, warmup=1, repeat=5):
    """Median wall time of fn in milliseconds, the device synchronised before the clock stops."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench(args):
    with open(args.config) as f:
        cfg = json.load(f)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    T = args.tokens
    model = random_model(cfg, 0, args.device)
    for dtype in args.dtypes.split(","):
        t0 = time.time()
        if dtype == "fp32":
            model = model.float()
        clean, corrupt, ab = pairs(args.pairs, T, cfg["vocab_size"], 15, args.device)
        with torch.no_grad():
            fwd = cuda_ms(lambda: model(clean[:1]))
        emit(args.out, what="torch_atp_forward", dtype=dtype, layers=cfg["num_hidden_layers"], tokens=T, ms=fwd)
        for batch in (1, 8):
            def run():
                for lo in range(0, args.pairs, batch):
                    atp(model, clean[lo:lo + batch], corrupt[lo:lo + batch], ab[lo:lo + batch])
            atp(model, clean[:batch], corrupt[:batch], ab[:batch])  # warm-up
            ms = cuda_ms(run, warmup=0, repeat=1)
            per = ms / args.pairs
            emit(args.out, what="torch_atp_bench", dtype=dtype, layers=cfg["num_hidden_layers"], tokens=T, pairs=args.pairs, batch=batch,
                 ms_per_pair=per, pairs_per_s=1e3 / per, x_forward=per / fwd)
        emit(args.out, what="torch_atp_dtype_done", dtype=dtype, wall_s=time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--pairs", type=int, default=8)
    r.add_argument("--tokens", type=int, default=64)
    r.add_argument("--seed", type=int, default=3)
    r.add_argument("--device", default="cuda", help="cuda, or cpu to try the script on a small checkpoint")
    r.add_argument("--out", default="")
    b = sub.add_parser("bench")
    b.add_argument("--config", required=True)
    b.add_argument("--pairs", type=int, default=40)
    b.add_argument("--tokens", type=int, default=64)
    b.add_argument("--dtypes", default="bf16,fp32")
    b.add_argument("--device", default="cuda", help="cuda, or cpu to try the script on a small config")
    b.add_argument("--out", default="")
    args = ap.parse_args()
    reference(args) if args.mode == "reference" else bench(args)


if __name__ == "__main__":
    main()
