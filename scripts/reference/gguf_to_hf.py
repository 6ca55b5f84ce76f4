"""Writes a Hugging Face model folder made by transformers from a llama-architecture GGUF file.

Usage: python gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype bfloat16|float32]

The weights come from transformers' own GGUF loader, AutoModelForCausalLM.from_pretrained(...,
gguf_file=...), which dequantizes every tensor to F32 and undoes llama.cpp's q/k row permutation;
they are saved as model.safetensors in --dtype (default bfloat16), with config.json and
generation_config.json. The tokenizer is transformers' GGUF tokenizer (AutoTokenizer with
gguf_file), saved with tokenizer.json and tokenizer_config.json, which carries the GGUF's
tokenizer.chat_template.

transformers 4.46.3 gets four things about a GGUF with a byte-level BPE vocabulary
(tokenizer.ggml.model "gpt2", as SmolLM2's) wrong, and the folder is meant to be the model the GGUF
holds, so this script sets them from the GGUF's own metadata and says so on stderr:

- no output.weight tensor means tied embeddings (llama.cpp reads it so), but the loader leaves
  tie_word_embeddings false and lm_head randomly initialised: tie_word_embeddings=True is passed;
- eos_token is tokenizer.ggml.eos_token_id's token (the loader names the BOS token instead);
- a BOS token is added only when tokenizer.ggml.add_bos_token is true (the loader always adds it);
- the decoder is plain byte-level (the loader stacks a SentencePiece byte-fallback decoder on it,
  which turns the byte-level "▁" character into a space when decoding).

The pre-tokenizer stays as the loader builds it (GPT-2's split, byte-level). For tokenizer.ggml.pre
"smollm" llama.cpp also splits digits one by one first; SmolLM2's vocabulary has no token with two
digits, so the ids are the same either way (the script checks this on a digit-heavy text).

Writes OUT_DIR atomically (a sibling temporary folder renamed into place), with a file
OUT_DIR/SOURCE that gives this script's and the GGUF's sha256 (scripts/real-model.sh compares them).
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile

import gguf
import torch
import transformers
from tokenizers import decoders, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast


def note(msg):
    print("gguf_to_hf:", msg, file=sys.stderr)


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fixed_tokenizer(folder, name, reader):
    """transformers' GGUF tokenizer with the metadata's eos, add_bos and decoder (see above)."""
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if field(reader, "tokenizer.ggml.model") != "gpt2":
        return tok
    tokens = field(reader, "tokenizer.ggml.tokens")
    add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", False))
    bos = tokens[field(reader, "tokenizer.ggml.bos_token_id")]
    eos = tokens[field(reader, "tokenizer.ggml.eos_token_id")]
    unk_id = field(reader, "tokenizer.ggml.unknown_token_id")
    pad_id = field(reader, "tokenizer.ggml.padding_token_id")

    backend = tok.backend_tokenizer
    backend.decoder = decoders.ByteLevel()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))])
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    note(f"eos_token {eos!r} (was {tok.eos_token!r}); add_bos_token {add_bos}; byte-level decoder")
    context = field(reader, f"{field(reader, 'general.architecture')}.context_length")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        unk_token=tokens[unk_id] if unk_id is not None else None,
        pad_token=tokens[pad_id] if pad_id is not None else None,
        chat_template=tok.chat_template,
        model_max_length=context,
        clean_up_tokenization_spaces=False,
    )


def check_digits(tok, reader):
    """For tokenizer.ggml.pre "smollm": splitting digits first must not change any id."""
    if field(reader, "tokenizer.ggml.pre") != "smollm":
        return
    text = "In 2024, 1234567 apples cost $89.99 (x3) on 07/12: 1st 22nd 333rd."
    want = tok(text, add_special_tokens=False).input_ids
    backend = tok.backend_tokenizer
    saved = backend.pre_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), saved])
    got = tok(text, add_special_tokens=False).input_ids
    backend.pre_tokenizer = saved
    if got != want:
        sys.exit(f"gguf_to_hf: splitting digits changes the ids of {text!r}: {want} vs {got}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf_path")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(args.gguf_path))
    reader = gguf.GGUFReader(args.gguf_path)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"gguf_to_hf: {args.gguf_path}: general.architecture {arch!r}, want 'llama'")
    tied = not any(t.name == "output.weight" for t in reader.tensors)

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, torch_dtype=torch.float32, tie_word_embeddings=tied)
    if tied:
        note("no output.weight in the GGUF: tie_word_embeddings=True")
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tok = fixed_tokenizer(folder, name, reader)
    check_digits(tok, reader)

    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(args.out) + ".tmp-", dir=parent)
    try:
        model.to(getattr(torch, args.dtype)).save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, "SOURCE"), "w") as f:
            f.write(f"converter {os.path.relpath(__file__)} sha256 {sha256(__file__)}\n"
                    f"gguf {name} sha256 {sha256(args.gguf_path)}\n"
                    f"transformers {transformers.__version__}, torch {torch.__version__}, {args.dtype}\n")
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the folder from other users
        for f in os.listdir(tmp):
            os.chmod(os.path.join(tmp, f), 0o644)
        old = args.out + ".old"
        if os.path.exists(args.out):
            shutil.rmtree(old, ignore_errors=True)
            os.rename(args.out, old)
        os.rename(tmp, args.out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    note(f"wrote {args.out}")


if __name__ == "__main__":
    main()
