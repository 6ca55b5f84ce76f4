"""Writes the GGUF fixtures tiller's tests compare against.

Usage: python make_gguf_fixtures.py [SMOLLM2.gguf]

1. llama/gguf/testdata/dequant.gguf, written by gguf-py's GGUFWriter (llama.cpp's own Python
   package): for each tensor type tiller reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
   Q4_K, Q5_K, Q6_K) a tensor named after the type, shape (3, 512) in ggml's (innermost-first)
   order, of random blocks, and beside it "<TYPE>.want": gguf-py's dequantization of those
   bytes (gguf.quants.dequantize, which transformers' GGUF loader calls) as F32. The blocks are
   random bytes except the f16 scale fields, which are random finite f16 values (subnormals,
   zero and the largest included), so every bit of every quantized field is exercised. For F16 and
   BF16 every element is a random finite value of that type. A few metadata keys of each value
   type test the reader too.

2. With SMOLLM2.gguf (build/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, `make real-model`):
   llama/testdata/gguf/smollm2.safetensors, the logits transformers computes with its own GGUF
   loader (AutoModelForCausalLM.from_pretrained(..., gguf_file=...), F32, eager attention, tied
   embeddings as the GGUF has no output.weight) for two prompts, and
   llama/tokenizer/testdata/smollm2_gguf_ids.json, the ids of transformers' GGUF tokenizer
   (AutoTokenizer with gguf_file) for a varied corpus, without special tokens.

Run through scripts/reference/make_gguf_fixtures.sh, which sets up the pinned environment.
"""

import json
import os
import sys

import gguf
import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
T = gguf.GGMLQuantizationType
TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte ranges of the f16 scale fields in one block of each quantized type (ggml's block_* structs).
HALF_FIELDS = {
    T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
ROWS, COLS = 3, 512


def finite_halves(rng, n):
    """Random f16 bit patterns that are finite, the extremes included."""
    bits = rng.integers(0, 1 << 16, n, dtype=np.uint32).astype(np.uint16)
    bits[(bits & 0x7C00) == 0x7C00] &= 0x83FF  # exponent 31 (inf/nan) -> 0 (subnormal)
    bits[:4] = [0x0000, 0x7BFF, 0x0001, 0x8400]  # zero, 65504, the smallest subnormal, -6.1e-5
    return bits


def dequant_fixture():
    rng = np.random.default_rng(20251207)
    w = gguf.GGUFWriter(os.path.join(ROOT, "llama/gguf/testdata/dequant.gguf"), "llama")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.15625)
    w.add_uint64("test.u64", 1 << 63)
    w.add_int64("test.i64", -(1 << 62))
    w.add_float64("test.f64", -2.5e-300)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo\n")
    w.add_array("test.strings", ["a", "", "ünï"])
    w.add_array("test.ints", [1, -2, 3])
    for t in TYPES:
        block, size = gguf.GGML_QUANT_SIZES[t]
        if t == T.F32:
            raw = rng.standard_normal((ROWS, COLS)).astype(np.float32)
            data = raw
        elif t in (T.F16, T.BF16):
            bits = finite_halves(rng, ROWS * COLS)
            if t == T.BF16:
                bits = rng.integers(0, 1 << 16, ROWS * COLS, dtype=np.uint32).astype(np.uint16)
                bits[(bits & 0x7F80) == 0x7F80] &= 0x807F  # no inf/nan
            raw = bits.view(np.uint8).reshape(ROWS, COLS * 2)
            data = raw
        else:
            nblocks = ROWS * COLS // block
            blocks = rng.integers(0, 256, (nblocks, size), dtype=np.uint32).astype(np.uint8)
            for off in HALF_FIELDS[t]:
                blocks[:, off:off + 2] = finite_halves(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
            raw = blocks.reshape(ROWS, COLS // block * size)
            data = raw
        want = gguf.quants.dequantize(raw if t != T.F32 else raw.view(np.uint8), t).astype(np.float32)
        want = want.reshape(ROWS, COLS)
        if t == T.F32:
            w.add_tensor(t.name, data)
        else:
            w.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t)
        w.add_tensor(t.name + ".want", want)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote llama/gguf/testdata/dequant.gguf")


CORPUS = [
    "Hello, world! I'm here.",
    "The capital of France is Paris.",
    "In 2024, 1234567 apples cost $89.99 (x3) on 07/12: 1st 22nd 333rd.",
    "  leading spaces,\ttabs\tand\nnewlines\n\n  ",
    "naïve café — “quotes” and ‘apostrophes’; emoji 😀🚀 and CJK 日本語, العربية, русский.",
    "def f(x):\n    return x**2  # squares\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "don't won't it's we've they'll I'd you're",
    "",
    " ",
    "A" * 50 + " " + "ab" * 30,
]


def smollm2_fixtures(path):
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    ids = {text: tok(text, add_special_tokens=False).input_ids for text in CORPUS}
    out = os.path.join(ROOT, "llama/tokenizer/testdata/smollm2_gguf_ids.json")
    with open(out, "w") as f:
        json.dump({"tokenizer": f"transformers' GGUF tokenizer of {name}", "add_special_tokens": False,
                   "cases": [{"text": t, "ids": i} for t, i in ids.items()]}, f, ensure_ascii=False, indent=1)
    print("wrote", os.path.relpath(out, ROOT))

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32,
                                                 tie_word_embeddings=True, attn_implementation="eager")
    model.eval()
    prompts = {
        "plain": ids["The capital of France is Paris."],
        "chat": tok.apply_chat_template([{"role": "user", "content": "What is a tiller?"}], add_generation_prompt=True),
    }
    tensors = {}
    with torch.no_grad():
        for key, p in prompts.items():
            x = torch.tensor([p])
            logits = model(x).logits[0]
            # Every position of the short plain prompt would be 1.8 MB; the first, a middle one and
            # the last of each prompt keep the file small and still test the cache-free prefill.
            rows = sorted({0, len(p) // 2, len(p) - 1})
            tensors[f"{key}.ids"] = x[0].to(torch.int32).contiguous()
            tensors[f"{key}.rows"] = torch.tensor(rows, dtype=torch.int32)
            tensors[f"{key}.logits"] = logits[rows].contiguous()
    out = os.path.join(ROOT, "llama/testdata/gguf/smollm2.safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    import transformers
    save_file(tensors, out, metadata={"gguf": name, "transformers": transformers.__version__, "torch": torch.__version__})
    print("wrote", os.path.relpath(out, ROOT))


if __name__ == "__main__":
    dequant_fixture()
    if len(sys.argv) > 1:
        smollm2_fixtures(sys.argv[1])
