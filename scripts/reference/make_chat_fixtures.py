"""Writes the chat-template fixtures: what transformers' apply_chat_template renders.

    scripts/reference/make_fixtures.sh make_chat_fixtures.py   (or `make chat-fixtures`)

1. llama/chat/testdata/expected.json: every template named in llama/chat/testdata/templates.json,
   from llama/chat/templates/ (the ones tiller writes into checkpoints) or
   llama/chat/testdata/templates/ (written by the tiller team to use every construct the public
   chat templates of the major families use),
   rendered for every conversation of llama/chat/testdata/conversations.json (or those a
   conversation's "only" list names), as it is, with the generation prompt, and with the final
   message left open (continue_final_message). Each case holds the
   text, or the error transformers raised. The special tokens each template sees come from
   llama/chat/testdata/templates.json; strftime_now reads a fixed clock (NOW below), which the Go
   test sets too.

2. llama/tokenizer/testdata/smollm2_chat.json, when the real model is present
   (build/models/smollm2/hf, written by `make real-model`): the same conversations rendered with
   SmolLM2-135M-Instruct's own template, loaded from its folder by AutoTokenizer as a user would.

Rendering goes through a real PreTrainedTokenizerFast (a one-word vocabulary, the special tokens
set as transformers sets them from tokenizer_config.json), so the variables the template sees are
exactly apply_chat_template's: messages, tools, documents, add_generation_prompt and
special_tokens_map.
"""

import datetime
import json
import os
import sys

import jinja2
import tokenizers
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import chat_template_utils

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHAT = os.path.join(ROOT, "llama", "chat", "testdata")
REAL = os.path.join(ROOT, "build", "models", "smollm2", "hf")
REAL_OUT = os.path.join(ROOT, "llama", "tokenizer", "testdata", "smollm2_chat.json")

# A single-digit day, month and hour, so that padded and unpadded codes differ.
NOW = datetime.datetime(2024, 3, 5, 9, 7, 2, 123456)


class FixedClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


def tokenizer_with(specials):
    """A fast tokenizer whose special tokens are specials, as tokenizer_config.json would set them."""
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk-core>": 0}, unk_token="<unk-core>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, **specials)


# The three ways a conversation is rendered: as it is, with the assistant's turn opened, and with
# the final message left open for the model to continue.
MODES = [(False, False), (True, False), (False, True)]


def render(tok, conv, gen, cont, template=None):
    case = {"conversation": conv["name"], "add_generation_prompt": gen, "continue_final_message": cont}
    try:
        case["text"] = tok.apply_chat_template(
            conv["messages"],
            tools=conv.get("tools"),
            documents=conv.get("documents"),
            chat_template=template,
            add_generation_prompt=gen,
            continue_final_message=cont,
            tokenize=False,
        )
    except Exception as e:  # the case is an error tiller must raise too
        case["error"] = f"{type(e).__name__}: {e}"
    return case


def write(path, doc):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)}: {len(doc['cases'])} cases", file=sys.stderr)


def main():
    chat_template_utils.datetime = FixedClock
    with open(os.path.join(CHAT, "conversations.json"), encoding="utf-8") as f:
        convs = json.load(f)
    with open(os.path.join(CHAT, "templates.json"), encoding="utf-8") as f:
        specials = json.load(f)
    versions = {"transformers": transformers.__version__, "jinja2": jinja2.__version__, "now": NOW.isoformat()}

    cases = []
    for name in sorted(specials):
        path = os.path.join(CHAT, "..", "templates", name + ".jinja")
        if not os.path.exists(path):
            path = os.path.join(CHAT, "templates", name + ".jinja")
        with open(path, encoding="utf-8", newline="") as f:
            template = f.read()
        tok = tokenizer_with(specials[name])
        for conv in convs:
            if "only" in conv and name not in conv["only"]:
                continue
            for gen, cont in MODES:
                cases.append({"template": name, **render(tok, conv, gen, cont, template)})
    write(os.path.join(CHAT, "expected.json"), {**versions, "cases": cases})

    if os.path.isdir(REAL):
        tok = AutoTokenizer.from_pretrained(REAL)
        real = [render(tok, c, gen, cont) for c in convs if "only" not in c for gen, cont in MODES]
        write(REAL_OUT, {**versions, "model": "build/models/smollm2/hf", "cases": real})
    else:
        print(f"{REAL} is missing (make real-model): {os.path.relpath(REAL_OUT, ROOT)} not written", file=sys.stderr)


if __name__ == "__main__":
    main()
