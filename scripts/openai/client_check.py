"""The official openai Python client against `tiller serve`: models, chat, streaming, n, stop,
steering through extra_body (a named vector and an inline one), and a 400 naming its field.

    python3 client_check.py --base-url http://127.0.0.1:PORT/v1 --vector joy --hidden-size 64

Exits non-zero on the first check that fails; prints one line per check.
"""
import argparse
import sys

import openai


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--vector", required=True, help="a vector the server loaded from --vectors")
    ap.add_argument("--hidden-size", type=int, required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0)
    checks = 0

    def check(name, ok, detail=""):
        nonlocal checks
        print(("ok   " if ok else "FAIL ") + name + (": " + str(detail) if detail else ""))
        if not ok:
            sys.exit(1)
        checks += 1

    models = client.models.list()
    model = models.data[0].id
    check("models.list", len(models.data) == 1, model)

    msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "How was your day?"}]
    plain = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0)
    c = plain.choices[0]
    check("chat", c.message.role == "assistant" and c.finish_reason in ("stop", "length")
          and plain.usage.completion_tokens > 0
          and plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens,
          plain.usage)

    stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    check("streaming equals the unstreamed reply", text == c.message.content and finish == c.finish_reason
          and usage is not None and usage.completion_tokens == plain.usage.completion_tokens)

    many = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=1, seed=3, n=3)
    check("n=3", [ch.index for ch in many.choices] == [0, 1, 2])

    named = client.chat.completions.create(
        model=model, messages=msgs, max_tokens=12, temperature=0,
        extra_body={"steering": [{"vector": args.vector, "strength": 60, "positions": "all"}]})
    check("steering by name changes the reply", named.choices[0].message.content != c.message.content
          or named.usage.completion_tokens != plain.usage.completion_tokens)
    zero = client.chat.completions.create(
        model=model, messages=msgs, max_tokens=12, temperature=0,
        extra_body={"steering": [{"vector": args.vector, "strength": 0}]})
    check("strength 0 leaves it unchanged", zero.choices[0].message.content == c.message.content)

    inline = [((i % 5) - 2) / 2 for i in range(args.hidden_size)]
    steered = client.chat.completions.create(
        model=model, messages=msgs, max_tokens=12, temperature=0,
        extra_body={"steering": [{"vector": inline, "strength": 60, "layers": "0-1", "positions": "generated"}]})
    check("inline steering", steered.choices[0].message.content is not None)

    try:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=4,
                                       extra_body={"steering": [{"vector": "no-such-vector", "strength": 1}]})
        check("unknown vector is refused", False)
    except openai.BadRequestError as e:
        check("unknown vector is a 400 naming the field", e.status_code == 400
              and e.body.get("param") == "steering[0].vector", e.body)

    print(f"{checks} passed, 0 failed")


if __name__ == "__main__":
    main()
