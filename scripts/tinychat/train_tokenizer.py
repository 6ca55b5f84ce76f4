"""Trains the tiny chat model's tokenizer: a byte-level BPE in Hugging Face's tokenizer.json format.

    python scripts/tinychat/train_tokenizer.py CORPUS.jsonl OUT/tokenizer.json [--vocab-size 1024]

CORPUS.jsonl is what `go run scripts/tinychat/write.go -corpus` writes (llama/tinychat's generator);
only its training conversations (held_out false) are used. The tokenizer is laid out as Llama 3's:

- ids 0 … vocab_size-17: the BPE vocabulary, the 256 byte tokens first, then one token per merge;
- ids vocab_size-16 … vocab_size-1: the first 16 of Llama 3's special tokens in Llama 3's order
  (<|begin_of_text|>, <|end_of_text|>, two reserved, <|finetune_right_pad_id|>, a reserved one,
  <|start_header_id|>, <|end_header_id|>, <|eom_id|>, <|eot_id|>, <|python_tag|>, five reserved),
  so each sits at its Llama 3 id minus 128000 plus vocab_size-16;
- Llama 3's pre-tokenizer (its split regex, then bytes to characters) and byte-level decoder, and a
  post-processor that puts <|begin_of_text|> in front when special tokens are added.

The merges are learnt from exactly the text the model sees between special tokens when
llama/tokenizer's RenderChat writes a conversation in the Llama 3 format: the role names "user" and
"assistant", and each message as "\n\n" + content. The result depends only on the corpus: the same
corpus gives a byte-identical file.
"""

import argparse
import json
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# Llama 3's split regex: contractions, words with one leading non-letter, numbers in groups of up
# to three digits, punctuation runs, newline runs, and other whitespace.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPECIAL_COUNT = 16


def llama3_specials(n):
    """The first n of Llama 3's 256 special tokens, in id order (llama/tokenizer's Llama3SpecialTokens)."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    toks = named + [f"<|reserved_special_token_{k}|>" for k in range(3, 3 + 256 - len(named))]
    return toks[:n]


def segments(path):
    """Yields the text between special tokens of every training conversation, rendered as chat."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            conv = json.loads(line)
            if conv["held_out"]:
                continue
            for msg in conv["messages"]:
                yield msg["role"]
                yield "\n\n" + msg["content"].strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--vocab-size", type=int, default=1024, help="all ids, special tokens included")
    args = ap.parse_args()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size - SPECIAL_COUNT,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(segments(args.corpus), trainer=trainer)
    if tok.get_vocab_size() != args.vocab_size - SPECIAL_COUNT:
        sys.exit(f"train_tokenizer: the corpus gives only {tok.get_vocab_size()} BPE tokens, "
                 f"fewer than {args.vocab_size - SPECIAL_COUNT}; ask for a smaller --vocab-size")

    # Added after training, the special tokens take the ids right after the BPE vocabulary.
    specials = llama3_specials(SPECIAL_COUNT)
    tok.add_special_tokens(specials)
    bos = "<|begin_of_text|>"
    bos_id = tok.token_to_id(bos)
    assert bos_id == args.vocab_size - SPECIAL_COUNT, bos_id
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos}:1 $B:1",
        special_tokens=[(bos, bos_id)],
    )
    tok.save(args.out, pretty=True)
    print(f"train_tokenizer: {args.out}: {tok.get_vocab_size()} tokens "
          f"({tok.get_vocab_size() - SPECIAL_COUNT} BPE, {SPECIAL_COUNT} special from id {bos_id})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
