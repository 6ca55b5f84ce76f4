package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// analysisFlags are the flags of cache and grad: one prompt, hook points, an output file.
type analysisFlags struct {
	modelFlags
	prompt, hooks, out string
	chat               bool
	dtype              string
	device             *string
	precision          precisionFlags
}

func (a *analysisFlags) register(fs *flag.FlagSet) {
	a.modelFlags.register(fs)
	fs.StringVar(&a.prompt, "prompt", "", "the text to run (required)")
	fs.BoolVar(&a.chat, "chat", false, "render the prompt as one user turn of the chat template, with the assistant's turn opened")
	fs.StringVar(&a.hooks, "hooks", "blocks.*.hook_resid_post", "hook points: names or patterns with * ? [..] inside a dot-separated part, comma-separated (e.g. blocks.*.attn.hook_z,hook_embed)")
	fs.StringVar(&a.out, "out", "", "safetensors file to write, one tensor per hook point named after it (required)")
	fs.StringVar(&a.dtype, "dtype", "f32", "precision of activations and gradients: f32, or f64 for exact analysis (CPU)")
	a.device = deviceFlag(fs)
	a.precision.register(fs, false, true)
}

func (a *analysisFlags) check(pos []string) (tensor.DType, error) {
	if err := a.modelFlags.check(); err != nil {
		return 0, err
	}
	switch {
	case a.prompt == "":
		return 0, usagef("--prompt is required")
	case a.out == "":
		return 0, usagef("--out is required")
	case len(pos) > 0:
		return 0, usagef("unexpected argument %q (the text goes in --prompt)", pos[0])
	}
	if err := checkDevice(*a.device); err != nil {
		return 0, err
	}
	switch a.dtype {
	case "f32":
		return tensor.F32, nil
	case "f64":
		return tensor.F64, nil
	}
	return 0, usagef("--dtype %q: want f32 or f64", a.dtype)
}

// metadata describes a run in the output file.
func (l *loaded) metadata(a *analysisFlags, ids []int32) map[string]string {
	idsJSON, _ := json.Marshal(ids)
	return map[string]string{"model": a.dir, "prompt": a.prompt, "chat": strconv.FormatBool(a.chat), "ids": string(idsJSON), "dtype": a.dtype, "device": *a.device}
}

func runCache(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cache", "--model DIR --prompt TEXT [--chat] --hooks PATTERN --out acts.safetensors [--device cuda]", stderr)
	var a analysisFlags
	a.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	dt, err := a.check(pos)
	if err != nil {
		return err
	}
	l, r, err := openAnalysis(a.modelFlags, *a.device, dt, a.precision.deterministic, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	ids, err := l.encode(a.prompt, a.chat, "", a.chat)
	if err != nil {
		return err
	}
	set := hooks.NewSet(l.model.Config.HookDims())
	if err := set.Read(a.hooks); err != nil {
		return err
	}
	if _, err := r.Forward(llama.Prompt(0, ids, 0, false), r.NewKVCache(len(ids), 16), set); err != nil {
		return err
	}
	if err := set.Cache.Save(a.out, 0, l.metadata(&a, ids)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d activations of %d tokens to %s\n", len(set.Cache.Names(0)), len(ids), a.out)
	return nil
}

func runGrad(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("grad", "--model DIR --prompt TEXT [--chat] --metric METRIC --hooks PATTERN --out grads.safetensors [--device cuda]", stderr)
	var a analysisFlags
	a.register(fs)
	metricSpec := fs.String("metric", "", `scalar metric to differentiate (required):
  logit-diff:A,B   logit of token A minus logit of token B at the last position
  logprob:TEXT     log-probability of TEXT as the continuation of the prompt (sum over its tokens)
A token is written as the text it decodes to (e.g. " happy") when that is one token, or as #ID`)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	dt, err := a.check(pos)
	if err != nil {
		return err
	}
	if *metricSpec == "" {
		return usagef("--metric is required")
	}
	l, r, err := openAnalysis(a.modelFlags, *a.device, dt, a.precision.deterministic, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	ids, err := l.encode(a.prompt, a.chat, "", a.chat)
	if err != nil {
		return err
	}
	points, err := hooks.Match(a.hooks, l.model.Config.Layers)
	if err != nil {
		return err
	}
	batch, metric, err := l.metric(*metricSpec, ids)
	if err != nil {
		return err
	}
	rows := 1
	if batch.Logits != nil {
		rows = len(batch.Tokens)
	}
	if err := fitsDevice(r, len(batch.Tokens), 1, rows); err != nil {
		return err
	}
	value, g, err := r.Gradients(batch, metric, llama.GradOptions{Points: points})
	if err != nil {
		return err
	}
	meta := l.metadata(&a, ids)
	meta["metric"], meta["value"] = *metricSpec, strconv.FormatFloat(value, 'g', -1, 64)
	if err := g.Points.Save(a.out, 0, meta); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "metric %s = %.6g; wrote gradients at %d hook points to %s\n", *metricSpec, value, len(points), a.out)
	return nil
}

// metric parses a --metric value into the batch to run and the metric of its logits.
func (l *loaded) metric(spec string, ids []int32) (llama.Batch, llama.Metric, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "logit-diff":
		a, b, ok := strings.Cut(arg, ",")
		if !ok {
			return llama.Batch{}, nil, usagef("--metric logit-diff:A,B needs two tokens separated by a comma, got %q", arg)
		}
		ta, err := l.token(a)
		if err != nil {
			return llama.Batch{}, nil, err
		}
		tb, err := l.token(b)
		if err != nil {
			return llama.Batch{}, nil, err
		}
		return llama.Prompt(0, ids, 0, false), llama.LogitDiff{Row: -1, A: ta, B: tb}, nil
	case "logprob":
		cont, err := l.tok.Encode(arg, false)
		if err != nil {
			return llama.Batch{}, nil, err
		}
		if len(cont) == 0 {
			return llama.Batch{}, nil, usagef("--metric logprob: the continuation %q has no tokens", arg)
		}
		all := append(append([]int32(nil), ids...), cont...)
		// Row i of the logits predicts token i+1, so the continuation is predicted by the rows
		// from the prompt's last token to the one before the continuation's last.
		rows := make([]int, len(cont))
		for k := range cont {
			rows[k] = len(ids) - 1 + k
		}
		return llama.Prompt(0, all, 0, true), llama.LogProb{Rows: rows, Tokens: cont}, nil
	}
	return llama.Batch{}, nil, usagef("--metric %q: want logit-diff:A,B or logprob:TEXT", spec)
}

// token reads a token written as the text it decodes to, or as #ID.
func (l *loaded) token(s string) (int32, error) {
	if id, ok := strings.CutPrefix(s, "#"); ok {
		n, err := strconv.Atoi(id)
		if err != nil || n < 0 || n >= l.model.Config.Vocab {
			return 0, usagef("token %q: want #ID with 0 <= ID < %d", s, l.model.Config.Vocab)
		}
		return int32(n), nil
	}
	ids, err := l.tok.Encode(s, false)
	if err != nil {
		return 0, err
	}
	if len(ids) != 1 {
		return 0, fmt.Errorf("token %q is %d tokens in this tokenizer (%v), not one; write it as #ID", s, len(ids), ids)
	}
	return ids[0], nil
}
