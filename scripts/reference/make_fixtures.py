"""Outside-reference fixtures for tiller's tests, made with HF transformers and HF tokenizers.

What it makes (paths relative to the repository root):

  llama/testdata/hf/<name>/         one tiny random LLaMA checkpoint per <name> (see CHECKPOINTS):
      config.json, generation_config.json,
      model.safetensors, or model.safetensors.index.json + model-0000i-of-0000n.safetensors,
      reference.safetensors         HF transformers' f32 logits for two fixed token sequences:
          prefill.ids     I32 (T,)          random ids in [0, vocab)
          prefill.logits  F32 (T, vocab)    one forward over prefill.ids, no cache, positions 0..T-1
          decode.ids      I32 (T2,)         another random sequence
          decode.logits   F32 (T2, vocab)   rows 0..P-1: one forward over decode.ids[:P] that fills
                                            a KV cache; row t >= P: a forward of the single token
                                            decode.ids[t] (position t) on that cache
          __metadata__    prompt_len (P), transformers, torch, weights_dtype (F32 | BF16 | F16)
      hooks.safetensors             activations at every hook point and gradients of a logit
                                    difference, for one forward over T = HOOK_LEN (12) random ids
                                    (positions 0..T-1, no cache), all F32:
          ids             I32 (T,)
          <hook name>     each hook point of DESIGN.md, batch dimension dropped (see Capture for
                          the exact tensor each one is), and logits F32 (T, vocab)
          grad.<hook name>  dM/d(hook) for every hook point, same shape as the activation, where
                          M = logits[T-1, A] - logits[T-1, B], A = argmax and B = argmin of
                          logits[T-1]
          __metadata__    metric_tokens ("A,B"), metric (repr of M), T, transformers, torch
      train_grad.safetensors        (gqa only) next-token cross-entropy of the same ids, mean
                                    over positions 0..T-2 predicting ids[1..T-1]:
          loss            F32 (1,)
          grad.<HF parameter name>  F32, the parameter's shape, for every parameter
          __metadata__    T, transformers, torch
  llama/tokenizer/testdata/llama3_ids.json
      HF tokenizers ids for a varied corpus and for rendered Llama 3 / 3.1 chats, on
      ../shared/tokenizers/llama3/tokenizer.json (the shared/ folder beside the repository).

How: run scripts/reference/make_fixtures.sh from the repository root (or `make fixtures`); it
builds the pinned virtualenv build/pyref and runs this file. Everything is seeded and computed on
one CPU thread, so a rerun on the same machine writes byte-identical files.

Weights are drawn in f32 with a fixed seed, rounded to the checkpoint's stored dtype and saved in
that dtype; the reference is then computed by loading the saved folder back with from_pretrained in
float32 (eager attention), so HF computes with exactly the values the Go side reads from disk.
"""

import hashlib
import json
import math
import os
import shutil
import sys

import safetensors
import safetensors.torch
import tokenizers
import torch
import transformers
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HF_DIR = os.path.join(REPO, "llama", "testdata", "hf")
TOKENIZER = "../shared/tokenizers/llama3/tokenizer.json"  # relative to the repository root
TOKENIZER_FIXTURE = os.path.join(REPO, "llama", "tokenizer", "testdata", "llama3_ids.json")

PROMPT_LEN = 7  # P: decode.logits rows 0..P-1 come from one forward over the prompt

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

# Each checkpoint: its config (LlamaConfig arguments), stored dtype, sequence lengths, seed, and
# whether it is saved sharded. head_dim is only given where the checkpoint sets it explicitly;
# elsewhere it is also dropped from config.json so the default (hidden / heads) is exercised.
CHECKPOINTS = [
    {
        "name": "gqa",
        "seed": 1001,
        "dtype": "F32",
        "prefill_len": 24,
        "decode_len": 20,
        "config": dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                       intermediate_size=176, num_hidden_layers=2, vocab_size=320,
                       rope_theta=10000.0, rope_scaling=None, max_position_embeddings=128,
                       rms_norm_eps=1e-5, tie_word_embeddings=False,
                       bos_token_id=256, eos_token_id=[257, 258]),
    },
    {
        "name": "llama3rope",
        "seed": 1002,
        "dtype": "BF16",
        "prefill_len": 96,  # three times original_max_position_embeddings
        "decode_len": 80,
        "sharded": True,
        "config": dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=96, num_hidden_layers=2, vocab_size=320,
                       rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE),
                       max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       bos_token_id=256, eos_token_id=[257, 258]),
    },
    {
        "name": "tied",
        "seed": 1003,
        "dtype": "F16",
        "prefill_len": 24,
        "decode_len": 20,
        "config": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                       intermediate_size=64, num_hidden_layers=3, vocab_size=300,
                       rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0},
                       max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
                       bos_token_id=256, eos_token_id=257),
    },
    {
        "name": "odd",
        "seed": 1004,
        "dtype": "F32",
        "prefill_len": 24,
        "decode_len": 20,
        "config": dict(hidden_size=45, num_attention_heads=3, num_key_value_heads=1, head_dim=20,
                       intermediate_size=67, num_hidden_layers=2, vocab_size=301,
                       attention_bias=True, mlp_bias=True,
                       rope_theta=10000.0, rope_scaling=None, max_position_embeddings=128,
                       rms_norm_eps=1e-6, tie_word_embeddings=False,
                       bos_token_id=256, eos_token_id=[257, 258]),
    },
    {
        "name": "llama32",
        "seed": 1005,
        "dtype": "BF16",
        "prefill_len": 40,  # past original_max_position_embeddings (16)
        "decode_len": 40,
        "config": dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                       intermediate_size=128, num_hidden_layers=2, vocab_size=320,
                       rope_theta=500000.0,
                       rope_scaling=dict(LLAMA3_ROPE, original_max_position_embeddings=16),
                       max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
                       bos_token_id=256, eos_token_id=[257, 258]),
    },
]

TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}

# Gain on N(0, 1/fan_in) per projection. q and k get 1.5 so attention scores have a spread of a
# few units (patterns are peaked, so a wrong RoPE or mask moves the logits clearly); lm_head gets 3
# so logits span several units rather than sitting near uniform.
GAINS = {"q_proj": 1.5, "k_proj": 1.5, "lm_head": 3.0}


def seeded_generator(seed):
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def init_weights(model, seed, dtype):
    """Draws every parameter with a fixed seed, rounded to the stored dtype (kept in f32).

    embeddings N(0,1); RMSNorm weights 1 + 0.2*N(0,1); linear weights N(0, 1/fan_in) * gain;
    biases N(0, 0.1^2). Parameters are visited in name order, so the draw does not depend on
    module registration order. A tied lm_head is the embedding and is not drawn separately.
    """
    g = seeded_generator(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("embed_tokens.weight"):
                v = z
            elif name.endswith("norm.weight"):
                v = 1.0 + 0.2 * z
            elif name.endswith(".bias"):
                v = 0.1 * z
            elif name.endswith(".weight") and p.dim() == 2:
                proj = name.split(".")[-2]
                v = z * (GAINS.get(proj, 1.0) / math.sqrt(p.shape[1]))
            else:
                raise SystemExit(f"make_fixtures: no init rule for parameter {name}")
            p.copy_(v.to(dtype).to(torch.float32))


def random_ids(g, n, vocab):
    return torch.randint(0, vocab, (n,), generator=g, dtype=torch.int64)


def save_checkpoint(spec, out):
    cfg = LlamaConfig(**spec["config"], hidden_act="silu", initializer_range=0.02)
    dtype = TORCH_DTYPES[spec["dtype"]]
    model = LlamaForCausalLM(cfg).to(torch.float32)
    init_weights(model, spec["seed"], dtype)
    model = model.to(dtype)
    shutil.rmtree(out, ignore_errors=True)
    # Small shards, so the sharded checkpoint really has several files.
    shard = "40KB" if spec.get("sharded") else "100MB"
    model.save_pretrained(out, safe_serialization=True, max_shard_size=shard)
    if "head_dim" not in spec["config"]:
        # transformers writes the derived head_dim; real Llama 3.1 configs omit it.
        path = os.path.join(out, "config.json")
        with open(path) as f:
            c = json.load(f)
        del c["head_dim"]
        with open(path, "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")
    check_checkpoint_files(spec, out)


def check_checkpoint_files(spec, out):
    files = sorted(os.listdir(out))
    index = os.path.join(out, "model.safetensors.index.json")
    if spec.get("sharded"):
        assert os.path.isfile(index), f"{out}: sharded checkpoint has no index file"
        with open(index) as f:
            shards = set(json.load(f)["weight_map"].values())
        assert len(shards) >= 2, f"{out}: only {len(shards)} shard(s)"
        assert "model.safetensors" not in files
    else:
        assert not os.path.exists(index) and "model.safetensors" in files, files
        shards = {"model.safetensors"}
    names = set()
    for s in shards:
        with safetensors.safe_open(os.path.join(out, s), "pt") as f:
            for k in f.keys():
                t = f.get_slice(k)
                assert t.get_dtype() == spec["dtype"], (s, k, t.get_dtype())
                names.add(k)
    tied = spec["config"]["tie_word_embeddings"]
    assert ("lm_head.weight" in names) != tied, f"{out}: lm_head.weight present={not tied} expected"


def load_f32(out):
    model = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32,
                                             attn_implementation="eager")
    model.eval()
    return model


def forward(model, ids, positions, cache=None):
    """Logits (len(ids), vocab) of one forward over ids at the given positions."""
    out = model(input_ids=ids[None, :], position_ids=positions[None, :],
                cache_position=positions, past_key_values=cache, use_cache=cache is not None)
    return out.logits[0].float()


def max_rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def save_reference(tensors, metadata, path):
    """safetensors.torch.save_file, but with __metadata__ in sorted key order.

    safetensors writes the metadata map in hash order, which changes from run to run; the header
    is rewritten with the same JSON layout and length, so offsets and data bytes are untouched.
    """
    b = safetensors.torch.save(tensors, metadata)
    n = int.from_bytes(b[:8], "little")
    header = json.loads(b[8:8 + n])
    header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    h = json.dumps(header, separators=(",", ":")).encode()
    assert len(h) <= n and not b[8 + len(h):8 + n].strip(), "safetensors header layout changed"
    with open(path, "wb") as f:
        f.write(b[:8] + h.ljust(n) + b[8 + n:])
    with safetensors.safe_open(path, "pt") as f:
        assert f.metadata() == metadata
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v), k


def reference(spec, out):
    vocab = spec["config"]["vocab_size"]
    model = load_f32(out)
    g = seeded_generator(spec["seed"] + 5000)
    prefill_ids = random_ids(g, spec["prefill_len"], vocab)
    decode_ids = random_ids(g, spec["decode_len"], vocab)
    T, T2, P = len(prefill_ids), len(decode_ids), PROMPT_LEN

    with torch.no_grad():
        prefill = forward(model, prefill_ids, torch.arange(T))

        cache = DynamicCache()
        rows = [forward(model, decode_ids[:P], torch.arange(P), cache)]
        for t in range(P, T2):
            rows.append(forward(model, decode_ids[t:t + 1], torch.tensor([t]), cache))
        decode = torch.cat(rows, 0)
        assert cache.get_seq_length() == T2

        # Self-consistency: causality (a prefix forward gives the first rows of the full one) and
        # cached decode against one uncached forward over the whole decode sequence.
        head = forward(model, prefill_ids[:P], torch.arange(P))
        e_causal = max_rel_err(head, prefill[:P])
        full = forward(model, decode_ids, torch.arange(T2))
        e_prompt = max_rel_err(decode[:P], full[:P])
        e_decode = max_rel_err(decode, full)
    assert e_causal < 1e-5 and e_prompt < 1e-5 and e_decode < 1e-5, (e_causal, e_prompt, e_decode)
    assert prefill.shape == (T, vocab) and decode.shape == (T2, vocab)
    assert torch.isfinite(prefill).all() and torch.isfinite(decode).all()

    tensors = {
        "prefill.ids": prefill_ids.to(torch.int32),
        "prefill.logits": prefill.contiguous(),
        "decode.ids": decode_ids.to(torch.int32),
        "decode.logits": decode.contiguous(),
    }
    metadata = {
        "prompt_len": str(P),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "weights_dtype": spec["dtype"],
    }
    save_reference(tensors, metadata, os.path.join(out, "reference.safetensors"))
    m = max(prefill.abs().max().item(), decode.abs().max().item())
    print(f"{spec['name']:>10}: max|logit| {m:7.3f}  prefill std {prefill.std().item():.3f}  "
          f"T={T} T2={T2}  self-check rel err causal {e_causal:.1e} prompt {e_prompt:.1e} "
          f"decode {e_decode:.1e}")


# ---- hook points and gradients ------------------------------------------------------------------

HOOK_LEN = 12  # T of hooks.safetensors and train_grad.safetensors
HOOK_SEED = 7000  # ids are drawn from a generator seeded with the checkpoint's seed + HOOK_SEED
TRAIN_GRAD = ("gqa",)  # checkpoints that also get train_grad.safetensors


def hook_names(n_layers):
    """Every hook point, in forward order."""
    names = ["hook_embed"]
    for L in range(n_layers):
        b = f"blocks.{L}."
        names += [b + "hook_resid_pre", b + "attn.hook_q", b + "attn.hook_k", b + "attn.hook_v",
                  b + "attn.hook_pattern", b + "attn.hook_z", b + "hook_attn_out",
                  b + "hook_resid_mid", b + "mlp.hook_post", b + "hook_mlp_out",
                  b + "hook_resid_post"]
    return names + ["ln_final.hook_normalized"]


class Capture:
    """Module hooks that record, for one forward pass, the tensor object at every hook point.

    Each recorded tensor is the very object the graph goes on from, so its .grad after backward is
    the total derivative (every consumer included):
      hook_embed                output of embed_tokens (the same object as blocks.0.hook_resid_pre)
      blocks.L.hook_resid_pre   input of decoder layer L (it feeds input_layernorm and the residual add)
      blocks.L.attn.hook_q/k/v  outputs of q_proj / k_proj / v_proj, bias included, before the
                                reshape to heads and before RoPE (HF's view(...).transpose does not
                                copy, so the q_proj output is what RoPE reads)
      blocks.L.attn.hook_pattern  the attention probabilities eager attention returns with
                                output_attentions: the object that multiplies the values
      blocks.L.attn.hook_z      input of o_proj (heads concatenated)
      blocks.L.hook_attn_out    output of o_proj, which the decoder layer adds to the residual
      blocks.L.hook_resid_mid   input of post_attention_layernorm: resid_pre + attn_out, which the
                                decoder layer also adds to the MLP output
      blocks.L.mlp.hook_post    input of down_proj: silu(gate_proj(x)) * up_proj(x)
      blocks.L.hook_mlp_out     output of the MLP (down_proj)
      blocks.L.hook_resid_post  output of decoder layer L (the input of layer L+1 or of model.norm)
      ln_final.hook_normalized  output of model.norm (weight applied): what lm_head reads
      logits                    output of lm_head
    """

    def __init__(self, model):
        self.acts = {}
        self.handles = []
        m = model.model

        def output(name, index=None):
            def hook(module, args, out):
                # Newer transformers return a decoder layer's output as a tensor, not a tuple.
                self.acts[name] = out[index] if index is not None and isinstance(out, tuple) else out
            return hook

        def first_input(name):
            def hook(module, args, kwargs):  # newer transformers pass a layer's input by keyword
                self.acts[name] = args[0] if args else kwargs["hidden_states"]
            return hook

        def on_output(module, name, index=None):
            self.handles.append(module.register_forward_hook(output(name, index)))

        def on_input(module, name):
            self.handles.append(module.register_forward_pre_hook(first_input(name), with_kwargs=True))

        on_output(m.embed_tokens, "hook_embed")
        for L, layer in enumerate(m.layers):
            b = f"blocks.{L}."
            on_input(layer, b + "hook_resid_pre")
            on_output(layer.self_attn.q_proj, b + "attn.hook_q")
            on_output(layer.self_attn.k_proj, b + "attn.hook_k")
            on_output(layer.self_attn.v_proj, b + "attn.hook_v")
            on_output(layer.self_attn, b + "attn.hook_pattern", 1)
            on_input(layer.self_attn.o_proj, b + "attn.hook_z")
            on_output(layer.self_attn.o_proj, b + "hook_attn_out")
            on_input(layer.post_attention_layernorm, b + "hook_resid_mid")
            on_input(layer.mlp.down_proj, b + "mlp.hook_post")
            on_output(layer.mlp, b + "hook_mlp_out")
            on_output(layer, b + "hook_resid_post", 0)
        on_output(m.norm, "ln_final.hook_normalized")
        on_output(model.lm_head, "logits")

    def remove(self):
        for h in self.handles:
            h.remove()


class Perturb:
    """One module hook that adds delta to the activation at a hook point so that every consumer
    of it sees the change (used for the finite-difference check of the total gradients).

    resid_mid is perturbed through attn_out (resid_mid = resid_pre + attn_out, and attn_out has no
    other consumer): a pre-hook on post_attention_layernorm would only reach the norm's path, not
    the residual add. hook_pattern is not perturbed (eager attention gives it no hook of its own).
    """

    def __init__(self, model, name, delta):
        m = model.model
        parts = name.split(".")
        if name == "hook_embed":
            mod, kind = m.embed_tokens, "out"
        elif name == "ln_final.hook_normalized":
            mod, kind = m.norm, "out"
        else:
            layer = m.layers[int(parts[1])]
            attn = layer.self_attn
            mod, kind = {
                "hook_resid_pre": (layer, "in"),
                "attn.hook_q": (attn.q_proj, "out"),
                "attn.hook_k": (attn.k_proj, "out"),
                "attn.hook_v": (attn.v_proj, "out"),
                "attn.hook_z": (attn.o_proj, "in"),
                "hook_attn_out": (attn.o_proj, "out"),
                "hook_resid_mid": (attn.o_proj, "out"),
                "mlp.hook_post": (layer.mlp.down_proj, "in"),
                "hook_mlp_out": (layer.mlp, "out"),
                "hook_resid_post": (layer, "out0"),
            }[".".join(parts[2:])]
        d = delta.reshape(1, delta.shape[0], -1)
        if kind == "in":
            self.handle = mod.register_forward_pre_hook(lambda mod, args: (args[0] + d,) + args[1:])
        elif kind == "out":
            self.handle = mod.register_forward_hook(lambda mod, args, out: out + d)
        else:
            self.handle = mod.register_forward_hook(lambda mod, args, out: (out[0] + d,) + out[1:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def rel(a, b):
    """max |a - b| / max |b| (0 when both are 0)."""
    d = (a - b).abs().max().item()
    s = b.abs().max().item()
    return d / s if s > 0 else d


def hooks_reference(spec, out):
    """hooks.safetensors: activations at every hook point and the gradients of a logit difference.

    Loading as in reference(): the saved folder in f32, eager attention. One forward over HOOK_LEN
    random ids at positions 0..T-1 with every hook point captured; the metric
    M = logits[T-1, A] - logits[T-1, B] with A = argmax and B = argmin of logits[T-1] (so M is
    large); M.backward() with retain_grad on every captured tensor.
    """
    cfg = spec["config"]
    vocab, n_layers = cfg["vocab_size"], cfg["num_hidden_layers"]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["hidden_size"]
    hd = cfg.get("head_dim", d // heads)
    group = heads // kv_heads
    T = HOOK_LEN

    model = load_f32(out)
    g = seeded_generator(spec["seed"] + HOOK_SEED)
    ids = random_ids(g, T, vocab)
    g = seeded_generator(spec["seed"] + 5000)  # the sequences of reference.safetensors
    for other in (random_ids(g, spec["prefill_len"], vocab), random_ids(g, spec["decode_len"], vocab)):
        assert not torch.equal(ids, other[:T]), "hook ids repeat a reference sequence"

    cap = Capture(model)
    pos = torch.arange(T)
    res = model(input_ids=ids[None, :], position_ids=pos[None, :], cache_position=pos,
                use_cache=False, output_attentions=True, output_hidden_states=True)
    cap.remove()
    names = hook_names(n_layers)
    assert sorted(cap.acts) == sorted(names + ["logits"]), sorted(set(cap.acts) ^ set(names))
    for t in cap.acts.values():
        t.retain_grad()
    logits = res.logits[0]
    last = logits[T - 1].detach()
    A, B = int(last.argmax()), int(last.argmin())
    metric = logits[T - 1, A] - logits[T - 1, B]
    metric_captured = cap.acts["logits"][0, T - 1, A] - cap.acts["logits"][0, T - 1, B]
    assert metric.item() == metric_captured.item() and metric.item() > 1.0, (metric, metric_captured)
    metric.backward()
    M = metric.item()

    # Per-sequence shapes (batch dimension dropped).
    shapes = {"hook_embed": (T, d), "ln_final.hook_normalized": (T, d), "logits": (T, vocab)}
    ffn = cfg["intermediate_size"]
    for L in range(n_layers):
        b = f"blocks.{L}."
        for n in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out",
                  "hook_resid_post"):
            shapes[b + n] = (T, d)
        shapes[b + "attn.hook_q"] = shapes[b + "attn.hook_z"] = (T, heads, hd)
        shapes[b + "attn.hook_k"] = shapes[b + "attn.hook_v"] = (T, kv_heads, hd)
        shapes[b + "attn.hook_pattern"] = (heads, T, T)
        shapes[b + "mlp.hook_post"] = (T, ffn)

    act, grad = {}, {}
    for n, t in cap.acts.items():
        assert t.dtype == torch.float32 and t.shape[0] == 1, (n, t.dtype, t.shape)
        act[n] = t.detach()[0].reshape(shapes[n]).clone()
        if n != "logits":
            assert t.grad is not None, n
            grad[n] = t.grad[0].reshape(shapes[n]).clone()
            assert torch.isfinite(grad[n]).all() and grad[n].abs().max() > 0, f"zero grad at {n}"
        assert torch.isfinite(act[n]).all(), n

    # ---- self-consistency of the activations ----
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv
    m = model.model
    E = 1e-6
    with torch.no_grad():
        assert torch.equal(act["hook_embed"], m.embed_tokens.weight[ids]), "hook_embed"
        assert torch.equal(act["logits"], logits.detach()), "captured logits"
        assert rel(act["logits"], act["ln_final.hook_normalized"] @ model.lm_head.weight.T) < E
        assert torch.equal(act["ln_final.hook_normalized"], res.hidden_states[-1][0])
        x_last = act[f"blocks.{n_layers - 1}.hook_resid_post"]
        assert rel(act["ln_final.hook_normalized"], m.norm(x_last)) < E
        cos, sin = m.rotary_emb(act["hook_embed"][None], pos[None])
        mask = torch.full((T, T), float("-inf")).triu(1)
        for L, layer in enumerate(m.layers):
            b = f"blocks.{L}."
            a = lambda n: act[b + n]
            at = layer.self_attn
            assert torch.equal(a("hook_resid_pre"), res.hidden_states[L][0]), b
            assert torch.equal(a("hook_resid_pre"),
                               act["hook_embed"] if L == 0 else act[f"blocks.{L-1}.hook_resid_post"])
            assert rel(a("hook_resid_mid"), a("hook_resid_pre") + a("hook_attn_out")) < E, b
            assert rel(a("hook_resid_post"), a("hook_resid_mid") + a("hook_mlp_out")) < E, b
            h = layer.input_layernorm(a("hook_resid_pre"))
            assert rel(a("attn.hook_q"), at.q_proj(h).view(T, heads, hd)) < E, b  # before RoPE
            assert rel(a("attn.hook_k"), at.k_proj(h).view(T, kv_heads, hd)) < E, b
            assert rel(a("attn.hook_v"), at.v_proj(h).view(T, kv_heads, hd)) < E, b
            # The pattern from q and k with RoPE applied here: so hook_q/k are the pre-RoPE values.
            q, k = apply_rotary_pos_emb(a("attn.hook_q").transpose(0, 1)[None],
                                        a("attn.hook_k").transpose(0, 1)[None], cos, sin)
            k = repeat_kv(k, group)[0]
            scores = q[0] @ k.transpose(1, 2) / math.sqrt(hd) + mask
            pattern = torch.softmax(scores, -1)
            assert rel(a("attn.hook_pattern"), pattern) < 1e-5, b
            assert torch.equal(a("attn.hook_pattern"), res.attentions[L][0]), b
            assert (a("attn.hook_pattern").triu(1) == 0).all(), b
            v = repeat_kv(a("attn.hook_v").transpose(0, 1)[None], group)[0]  # (heads, T, hd)
            z = (a("attn.hook_pattern") @ v).transpose(0, 1)
            assert rel(a("attn.hook_z"), z) < E, b
            assert rel(a("hook_attn_out"), at.o_proj(a("attn.hook_z").reshape(T, -1))) < E, b
            h2 = layer.post_attention_layernorm(a("hook_resid_mid"))
            mlp = layer.mlp
            assert rel(a("mlp.hook_post"),
                       torch.nn.functional.silu(mlp.gate_proj(h2)) * mlp.up_proj(h2)) < E, b
            assert rel(a("hook_mlp_out"), mlp.down_proj(a("mlp.hook_post"))) < E, b

        # ---- self-consistency of the gradients ----
        gl = torch.zeros(T, vocab)
        gl[T - 1, A], gl[T - 1, B] = 1.0, -1.0
        assert rel(grad["ln_final.hook_normalized"], gl @ model.lm_head.weight) < E
        assert (grad["ln_final.hook_normalized"][:T - 1] == 0).all()
        assert torch.equal(grad["hook_embed"], grad["blocks.0.hook_resid_pre"])
        for L, layer in enumerate(m.layers):
            b = f"blocks.{L}."
            gr = lambda n: grad[b + n]
            nxt = f"blocks.{L+1}.hook_resid_pre" if L + 1 < n_layers else None
            if nxt:
                assert torch.equal(gr("hook_resid_post"), grad[nxt]), b
            # attn_out / mlp_out feed only the residual adds: their gradient is the total one at
            # resid_mid / resid_post. A resid_mid that missed the add would differ here.
            assert torch.equal(gr("hook_attn_out"), gr("hook_resid_mid")), b
            assert torch.equal(gr("hook_mlp_out"), gr("hook_resid_post")), b
            assert rel(gr("attn.hook_z").reshape(T, -1),
                       gr("hook_attn_out") @ layer.self_attn.o_proj.weight) < E, b
            assert rel(gr("mlp.hook_post"), gr("hook_mlp_out") @ layer.mlp.down_proj.weight) < E, b
            # d M / d pattern[h, i, j] = grad_z[i, h] . v[j, kv(h)], for every (i, j): masked
            # entries (j > i) included, since the product with the values reads them too.
            v = repeat_kv(act[b + "attn.hook_v"].transpose(0, 1)[None], group)[0]
            gp = gr("attn.hook_z").transpose(0, 1) @ v.transpose(1, 2)
            assert rel(gr("attn.hook_pattern"), gp) < E, b
        assert (grad[f"blocks.{n_layers - 1}.attn.hook_pattern"][:, :T - 1] == 0).all()

    # ---- finite differences in f64: every gradient is the total derivative ----
    # HF's RMSNorm, softmax and RoPE tables compute in f32 even in an f64 model, so M carries f32
    # rounding (~1e-7 relative), which a small step amplifies. So the step is large (2e-3 of the
    # activation's norm) and Richardson extrapolation of two central differences, (4 D(h/2) -
    # D(h)) / 3, removes their O(h^2) truncation (a plain central difference at this step is off
    # by ~5e-4). A gradient that missed a consumer (e.g. resid_mid without the residual add) is
    # off by 40-70% here.
    model64 = load_f32(out).double()
    gd = seeded_generator(spec["seed"] + HOOK_SEED + 1)

    def metric64(name=None, delta=None):
        with torch.no_grad():
            if name is None:
                o = model64(input_ids=ids[None, :], position_ids=pos[None, :], cache_position=pos,
                            use_cache=False)
            else:
                with Perturb(model64, name, delta):
                    o = model64(input_ids=ids[None, :], position_ids=pos[None, :],
                                cache_position=pos, use_cache=False)
        return (o.logits[0, T - 1, A] - o.logits[0, T - 1, B]).item()

    M64 = metric64()
    assert abs(M64 - M) < 1e-4 * abs(M), (M64, M)
    worst = 0.0
    for n in names:
        if n.endswith("hook_pattern"):
            continue
        gn = grad[n].double()
        r = torch.randn(gn.shape, generator=gd, dtype=torch.float64)
        u = gn / gn.norm() + r / r.norm()  # along the gradient, plus a random part
        h = 2e-3 * act[n].double().norm().item() / u.norm().item()
        central = [(metric64(n, s * u) - metric64(n, -s * u)) / (2 * s) for s in (h, h / 2)]
        fd = (4 * central[1] - central[0]) / 3
        err = abs(fd - (gn * u).sum().item()) / gn.norm().item()
        worst = max(worst, err)
        assert err < 5e-4, f"{spec['name']}: finite difference at {n}: rel err {err:.2e}"

    tensors = {"ids": ids.to(torch.int32)}
    tensors.update({n: act[n].contiguous() for n in act})
    tensors.update({"grad." + n: grad[n].contiguous() for n in grad})
    metadata = {
        "metric_tokens": f"{A},{B}",
        "metric": repr(M),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "T": str(T),
    }
    save_reference(tensors, metadata, os.path.join(out, "hooks.safetensors"))
    print(f"{spec['name']:>10}: hooks T={T} metric tokens {A},{B} M={M:.4f} (f64 {M64:.4f}); "
          f"{len(grad)} grads, finite-difference err <= {worst:.1e}")
    return ids


def train_grad_reference(spec, out, ids):
    """train_grad.safetensors: next-token cross-entropy of ids and its gradient for every weight.

    loss = mean over t = 0..T-2 of -log softmax(logits[t])[ids[t+1]]; grad.<HF parameter name>
    has the parameter's shape. Loaded as in reference() (f32, eager attention).
    """
    model = load_f32(out)
    T = len(ids)
    pos = torch.arange(T)
    res = model(input_ids=ids[None, :], position_ids=pos[None, :], cache_position=pos,
                use_cache=False, labels=ids[None, :])
    logits = res.logits[0]
    loss = torch.nn.functional.cross_entropy(logits[:T - 1], ids[1:])
    assert abs(loss.item() - res.loss.item()) < 1e-6 * loss.item(), (loss, res.loss)
    loss.backward()
    params = dict(model.named_parameters())
    tensors = {"loss": loss.detach().reshape(1).clone()}
    for n, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, n
        tensors["grad." + n] = p.grad.clone().contiguous()
    with safetensors.safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == sorted(params), "parameters differ from the checkpoint's tensors"

    # Finite differences in f64 along one random direction over all weights at once.
    model64 = load_f32(out).double()
    g = seeded_generator(spec["seed"] + HOOK_SEED + 2)
    dirs = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in params.items()}
    norm = math.sqrt(sum((u * u).sum().item() for u in dirs.values()))
    eps = 1e-3 / norm * math.sqrt(sum((p.double() ** 2).sum().item() for p in params.values()))
    base = {n: p.detach().clone() for n, p in model64.named_parameters()}

    def loss64(s):
        with torch.no_grad():
            for n, p in model64.named_parameters():
                p.copy_(base[n] + s * eps * dirs[n])
            o = model64(input_ids=ids[None, :], position_ids=pos[None, :], cache_position=pos,
                        use_cache=False)
            return torch.nn.functional.cross_entropy(o.logits[0, :T - 1], ids[1:]).item()

    fd = (loss64(1) - loss64(-1)) / (2 * eps)
    dot = sum((p.grad.double() * dirs[n]).sum().item() for n, p in params.items())
    gnorm = math.sqrt(sum((p.grad.double() ** 2).sum().item() for p in params.values()))
    err = abs(fd - dot) / (gnorm * norm)
    assert err < 1e-4, f"train_grad finite difference: {fd} vs {dot} (err {err:.1e})"

    metadata = {"transformers": transformers.__version__, "torch": torch.__version__,
                "T": str(T)}
    save_reference(tensors, metadata, os.path.join(out, "train_grad.safetensors"))
    print(f"{spec['name']:>10}: train_grad loss {loss.item():.4f}, {len(params)} weight grads, "
          f"finite-difference err {err:.1e}")


# ---- tokenizer ----------------------------------------------------------------------------------

CASES = [
    ("empty", ""),
    ("space", " "),
    ("hello", "Hello world"),
    ("hello_lead_space", " Hello world"),
    ("trailing_spaces", "trailing spaces   "),
    ("space_runs", "a  b   c    d     e"),
    ("tabs", "\tindented\t\ttabs\t"),
    ("newlines", "line one\nline two\n\n\nline five\n"),
    ("only_newlines", "\n\n\n"),
    ("crlf", "windows\r\nline\r\n\r\nends"),
    ("mixed_whitespace", " \t \n  \n\t\tx  \n "),
    ("digits", "0 1 12 123 1234 12345 123456 1234567"),
    ("long_number", "31415926535897932384626433832795028841971"),
    ("numbers_in_text", "In 2024, 3.14159 and 1,000,000 or 1_000_000 (v1.22.1), 0x7fff, -42e-3."),
    ("emoji", "I love it 😀🎉👍🏽!"),
    ("emoji_zwj", "family 👨‍👩‍👧‍👦 and technologist 👩🏾‍💻 and rainbow flag 🏳️‍🌈"),
    ("flags", "🇫🇷🇯🇵🇺🇸 flags🇩🇪"),
    ("cjk", "你好，世界！这是一个测试。日本語のテキストも。한국어 문장입니다."),
    ("arabic", "مرحبا بالعالم، هذا اختبار."),
    ("hindi", "नमस्ते दुनिया, यह एक परीक्षण है।"),
    ("accents_composed", "café naïve résumé Ångström São Paulo"),
    ("accents_decomposed", "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m"),
    ("contractions", "I'm sure you don't know they'll say we've and she'd, it's"),
    ("contractions_upper", "I'M DON'T THEY'LL 'S 'Re 'VE"),
    ("quotes", "'quoted' \"double\" ‘curly’ “curly double” «guillemets»"),
    ("code_python", "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n"),
    ("code_go", "func main() {\n\tfmt.Println(\"hi\")\n\tfor i := 0; i < 10; i++ {}\n}\n"),
    ("url", "See https://example.com/path/to?q=1&lang=en#frag or mailto:user@example.org."),
    ("punctuation_runs", "Wait... what?!?! ---- ***bold*** ((((nested)))) ;;; ..."),
    ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis and "
     "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft"),
    ("very_long_word", "x" * 300),
    ("repeated_pattern", "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc"),
    ("special_bos", "<|begin_of_text|>Hello"),
    ("special_eot", "The answer.<|eot_id|>"),
    ("special_header", "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"),
    ("special_lookalike", "<|begin_of_text |> <|eot_id> <|fake_token|> <|"),
    ("valid_odd_utf8", "\ufeffBOM, replacement \ufffd, nonchar \uffff \ufdd0, max \U0010ffff, "
     "private \ue000, mojibake Ã©Ã¨, zwj\u200dalone, rtl\u202emark, \x7f\x1b[31mansi"),
    ("mixed_case", "HeLLo WoRLD iPhone McDonald's camelCaseWord SCREAMING_SNAKE"),
    ("math", "∑_{i=1}^{n} x_i² ≤ √(n·∑x²) ∀ε>0 ∃δ"),
    ("markdown", "# Title\n\n- item *one*\n- item **two**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"),
    ("json_text", "{\"name\": \"tiller\", \"version\": [1, 2, 3], \"ok\": true, \"x\": null}"),
    ("prose", "The quick brown fox jumps over the lazy dog. It was the best of times, it was "
     "the worst of times; steering vectors, attribution patching, and residual streams."),
    ("cyrillic_greek", "Привет, мир! Γειά σου Κόσμε! Ελληνικά."),
    ("thai_no_spaces", "สวัสดีชาวโลกนี่คือการทดสอบ"),
    ("spaces_before_newline", "end of line   \n   start of line"),
    ("single_chars", "a b c . , ; : ! ? ' \" ` ~ @ # $ % ^ & * ( ) [ ] { } < > / \\ | - _ + ="),
]


def llama3_chat(messages, add_generation_prompt, style):
    """Renders a chat in the Llama 3 ("llama3") or Llama 3.1 ("llama3.1") format.

    Each message: <|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>, after
    one <|begin_of_text|>. The 3.1 format always opens with a system message holding the knowledge
    and today dates, followed by the stripped content of the caller's own system message, if any.
    """
    def turn(role, content):
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"

    text = "<|begin_of_text|>"
    if style == "llama3.1":
        system = ""
        if messages and messages[0]["role"] == "system":
            system = messages[0]["content"].strip()
            messages = messages[1:]
        text += turn("system", "Cutting Knowledge Date: December 2023\n"
                               "Today Date: 26 Jul 2024\n\n" + system)
    elif style != "llama3":
        raise ValueError(style)
    for m in messages:
        text += turn(m["role"], m["content"].strip())
    if add_generation_prompt:
        text += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return text


SYS = {"role": "system", "content": "You are a cheerful assistant. Answer briefly."}
CHATS = [
    ("single_user", "llama3", [{"role": "user", "content": "Hello!"}], True),
    ("single_user", "llama3.1", [{"role": "user", "content": "Hello!"}], True),
    ("system_user", "llama3", [SYS, {"role": "user", "content": "What is 12345 * 6789?"}], True),
    ("system_user", "llama3.1", [SYS, {"role": "user", "content": "What is 12345 * 6789?"}], True),
    ("multi_turn", "llama3", [
        SYS,
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, please."},
    ], True),
    ("multi_turn_no_prompt", "llama3.1", [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
        {"role": "assistant", "content": "Green 🌿."},
    ], False),
    ("whitespace_content", "llama3", [
        {"role": "system", "content": "  \n Be terse.\n\n "},
        {"role": "user", "content": "\t  lots of space around me   \n\n"},
    ], True),
    ("whitespace_content", "llama3.1", [
        {"role": "system", "content": "  \n Be terse.\n\n "},
        {"role": "user", "content": "\t  lots of space around me   \n\n"},
    ], True),
    ("emoji_newlines", "llama3.1", [
        {"role": "user", "content": "How do you feel today? 😊\n\nTell me in two lines.\n"},
        {"role": "assistant", "content": "Joyful! 🎉\nAnd trusting 🤝"},
        {"role": "user", "content": "Why? 🤔"},
    ], True),
    ("no_prompt", "llama3", [{"role": "user", "content": "Just this."}], False),
    ("empty_system", "llama3.1", [
        {"role": "system", "content": ""},
        {"role": "user", "content": "Hi"},
    ], True),
    ("empty_messages_prompt", "llama3", [], True),
]


def tokenizer_fixture():
    tok = tokenizers.Tokenizer.from_file(os.path.join(REPO, TOKENIZER))
    assert tok.token_to_id("<|begin_of_text|>") == 128000
    cases = []
    names = set()
    for name, text in CASES:
        assert name not in names, name
        names.add(name)
        for special in (True, False):
            ids = tok.encode(text, add_special_tokens=special).ids
            cases.append({"name": name, "text": text, "add_special_tokens": special, "ids": ids})
            # A byte-level BPE round-trips any text that holds no special-token spelling.
            if "<|" not in text:
                assert tok.decode(ids, skip_special_tokens=True) == text, name
    chats = []
    for name, style, messages, gen in CHATS:
        name = f"{name}.{style}"
        assert name not in names, name
        names.add(name)
        text = llama3_chat(messages, gen, style)
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids[0] == 128000 and ids.count(128000) == 1, name
        chats.append({"name": name, "style": style, "messages": messages,
                      "add_generation_prompt": gen, "text": text, "ids": ids})
    assert len(CASES) >= 40 and len(chats) >= 8

    # One case or chat per line: diffs stay readable and the file stays small. Non-ASCII text is
    # written as UTF-8, not escaped, so a reader sees the scripts and emoji being tested.
    def dump(v):
        return json.dumps(v, ensure_ascii=False, separators=(", ", ": "))

    lines = ["{" + f'"tokenizer": {dump(TOKENIZER)}, '
             f'"tokenizers_version": {dump(tokenizers.__version__)},',
             ' "cases": [']
    lines += ["  " + dump(c) + ("," if i + 1 < len(cases) else "") for i, c in enumerate(cases)]
    lines += [" ],", ' "chats": [']
    lines += ["  " + dump(c) + ("," if i + 1 < len(chats) else "") for i, c in enumerate(chats)]
    lines += [" ]", "}"]
    body = "\n".join(lines) + "\n"
    want = {"tokenizer": TOKENIZER, "tokenizers_version": tokenizers.__version__,
            "cases": cases, "chats": chats}
    assert json.loads(body) == want
    os.makedirs(os.path.dirname(TOKENIZER_FIXTURE), exist_ok=True)
    with open(TOKENIZER_FIXTURE, "w", encoding="utf-8") as f:
        f.write(body)
    print(f"tokenizer: {len(cases)} cases, {len(chats)} chats, tokenizers {tokenizers.__version__}")


def main():
    # One thread and deterministic kernels: the same machine rewrites the same bytes.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if not os.path.isfile(os.path.join(REPO, TOKENIZER)):
        raise SystemExit(f"make_fixtures: {TOKENIZER} not found (shared/ must lie beside the repo)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"tokenizers {tokenizers.__version__}, safetensors {safetensors.__version__}")
    os.makedirs(HF_DIR, exist_ok=True)
    for spec in CHECKPOINTS:
        out = os.path.join(HF_DIR, spec["name"])
        save_checkpoint(spec, out)
        reference(spec, out)
        ids = hooks_reference(spec, out)
        if spec["name"] in TRAIN_GRAD:
            train_grad_reference(spec, out, ids)
    tokenizer_fixture()
    for root, _, files in sorted(os.walk(HF_DIR)):
        for name in sorted(files):
            p = os.path.join(root, name)
            digest = hashlib.sha256(open(p, "rb").read()).hexdigest()[:16]
            print(f"  {os.path.relpath(p, REPO):60} {os.path.getsize(p):8d}  {digest}")
    p = TOKENIZER_FIXTURE
    print(f"  {os.path.relpath(p, REPO):60} {os.path.getsize(p):8d}  "
          f"{hashlib.sha256(open(p, 'rb').read()).hexdigest()[:16]}")


if __name__ == "__main__":
    sys.exit(main())
