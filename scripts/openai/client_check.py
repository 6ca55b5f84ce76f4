"""The official openai Python client against `tiller serve`: models, chat, streaming, n, stop,
steering through extra_body (a named vector and an inline one), logprobs, penalties, logit bias,
the neutral values of the fields clients send, and the errors (400 naming its field, 404 for an
unknown model, 401 for a wrong key).

    python3 client_check.py --base-url http://127.0.0.1:PORT/v1 --vector joy --hidden-size 64 --api-key KEY

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
    ap.add_argument("--api-key", default="unused", help="the key the server was started with")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
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

    # The model by id, and an unknown one.
    m = client.models.retrieve(model)
    check("models.retrieve", m.id == model and m.created > 0, m)
    try:
        client.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=2)
        check("unknown model is refused", False)
    except openai.NotFoundError as e:
        check("unknown model is a 404 with code model_not_found", e.status_code == 404 and e.code == "model_not_found", e.body)

    # The fields clients send with their neutral values change nothing.
    neutral = client.chat.completions.create(
        model=model, messages=msgs, max_tokens=12, temperature=0, tool_choice="none", response_format={"type": "text"}, logit_bias={},
        store=False, metadata={"run": "check"}, service_tier="auto", top_logprobs=0, logprobs=False,
        presence_penalty=0, frequency_penalty=0, user="checker")
    check("neutral fields leave the reply unchanged", neutral.choices[0].message.content == c.message.content)
    refusal = client.chat.completions.create(
        model=model, max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": "Tell me a secret."},
                  {"role": "assistant", "content": None, "refusal": "I cannot share that."},
                  {"role": "user", "content": "Fine."}])
    check("an assistant refusal in the history is accepted", refusal.choices[0].finish_reason in ("stop", "length"))
    try:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=2,
                                       response_format={"type": "json_object"})
        check("json output is refused", False)
    except openai.BadRequestError as e:
        check("response_format json_object is a 400 naming it", e.body.get("param") == "response_format", e.body)

    # Log-probabilities: the reply's tokens, each with the best alternatives; greedy picks the best.
    lp = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0,
                                        logprobs=True, top_logprobs=3)
    content = lp.choices[0].logprobs.content
    check("logprobs: one entry per token, greedy is the best alternative",
          len(content) == lp.usage.completion_tokens
          and all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == t.logprob and t.logprob <= 0 for t in content),
          [(t.token, round(t.logprob, 3)) for t in content[:4]])
    stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0,
                                            logprobs=True, top_logprobs=3, stream=True)
    streamed = [t for chunk in stream for ch in chunk.choices if ch.logprobs for t in ch.logprobs.content]
    check("streamed logprobs equal the unstreamed ones",
          [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content])

    # Penalties change what is sampled (compared token by token: the tiny random
    # model's replies are mostly special tokens, which the text leaves out).
    def tokens(**kw):
        r = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0.8, seed=7,
                                           logprobs=True, **kw)
        return [t.token for t in r.choices[0].logprobs.content]
    base, again = tokens(), tokens()
    penalised = tokens(presence_penalty=-2, frequency_penalty=-2)
    check("a seed repeats a sampled reply; penalties change it", base == again and penalised != base, (base[:4], penalised[:4]))

    # A wrong key.
    wrong = openai.OpenAI(base_url=args.base_url, api_key="wrong-" + args.api_key, max_retries=0)
    if args.api_key != "unused":
        try:
            wrong.models.list()
            check("a wrong key is refused", False)
        except openai.AuthenticationError as e:
            check("a wrong key is a 401", e.status_code == 401 and e.code == "invalid_api_key", e.body)

    print(f"{checks} passed, 0 failed")


if __name__ == "__main__":
    main()
