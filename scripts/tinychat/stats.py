"""Prints the numbers llama/tinychat/README.md quotes about the corpus and its tokenization.

    python scripts/tinychat/stats.py build/tinychat/corpus.jsonl llama/tinychat/tokenizer.json

Token counts are of the whole conversation in the Llama 3 chat format, as llama/tokenizer's
RenderChat writes it: <|begin_of_text|>, and per message a header, the content and <|eot_id|>.
"""

import collections
import json
import re
import sys

from tokenizers import Tokenizer


def render(conv):
    text = "<|begin_of_text|>"
    for m in conv["messages"]:
        text += "<|start_header_id|>" + m["role"] + "<|end_header_id|>\n\n" + m["content"].strip() + "<|eot_id|>"
    return text


def pct(n, total):
    return f"{100 * n / total:.1f}%"


def main():
    corpus, tokenizer = sys.argv[1], sys.argv[2]
    convs = [json.loads(line) for line in open(corpus, encoding="utf-8") if line.strip()]
    n = len(convs)
    train = [c for c in convs if not c["held_out"]]
    print(f"conversations: {n} ({len(train)} training, {n - len(train)} held out, {pct(n - len(train), n)})")

    for role, idx in (("reply", 1), ("user", 0)):
        emo = collections.Counter(c["messages"][idx]["emotion"] for c in convs)
        per = collections.Counter(c["messages"][idx]["person"] for c in convs)
        print(f"{role} emotions: " + ", ".join(f"{e} {pct(k, n)}" for e, k in sorted(emo.items(), key=lambda x: -x[1])))
        print(f"{role} persons: " + ", ".join(f"{p} {pct(k, n)}" for p, k in sorted(per.items())))
    topics = collections.Counter(c["topic"] for c in convs)
    print(f"topics: {len(topics)}, subjects: {len({c['subject'] for c in convs})}")
    templates = collections.Counter(m["template"] for c in convs for m in c["messages"])
    held = {m["template"] for c in convs if c["held_out"] for m in c["messages"]}
    print(f"templates used: {len(templates)} ({len(held)} held out)")

    words = collections.Counter()
    nwords = []
    for c in convs:
        k = 0
        for m in c["messages"]:
            ws = re.findall(r"[a-z'-]+", m["content"].lower())
            words.update(ws)
            k += len(ws)
        nwords.append(k)
    print(f"distinct lower-case words: {len(words)}; words per conversation: mean {sum(nwords) / n:.1f}, max {max(nwords)}")

    tk = Tokenizer.from_file(tokenizer)
    lens = sorted(len(e.ids) for e in tk.encode_batch([render(c) for c in convs], add_special_tokens=False))
    print(f"tokenizer: {tk.get_vocab_size()} tokens")
    print(f"tokens per conversation: mean {sum(lens) / n:.1f}, median {lens[n // 2]}, p90 {lens[n * 9 // 10]}, "
          f"p99 {lens[n * 99 // 100]}, max {lens[-1]}; over 96: {sum(k > 96 for k in lens)}")
    tokens_train = sum(len(e.ids) for e in tk.encode_batch([render(c) for c in train], add_special_tokens=False))
    print(f"training tokens: {tokens_train}")


if __name__ == "__main__":
    main()
