package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/safetensors"
)

func TestCacheAndGrad(t *testing.T) {
	dir := tinyModel(t)
	out := t.TempDir()
	acts := filepath.Join(out, "acts.safetensors")
	code, stdout, stderr := tiller(t, "cache", "--model", dir, "--prompt", "hello", "--hooks", "blocks.*.hook_resid_post,blocks.1.attn.hook_pattern", "--out", acts)
	if code != 0 {
		t.Fatalf("cache: %s", stderr)
	}
	if !strings.Contains(stdout, "wrote 3 activations of 6 tokens") {
		t.Errorf("cache output %q", stdout)
	}
	f, err := safetensors.Open(acts)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, shape := range map[string]string{"blocks.0.hook_resid_post": "[6 64]", "blocks.1.hook_resid_post": "[6 64]", "blocks.1.attn.hook_pattern": "[4 6 6]"} {
		info, ok := f.Info(name)
		if !ok || info.DType != "F32" || strings.Trim(strings.ReplaceAll(safetensors.ShapeString(info.Shape), ",", ""), "()") != strings.Trim(shape, "[]") {
			t.Errorf("%s: %+v, want F32%s", name, info, shape)
		}
	}
	if f.Header.Metadata["ids"] != "[256,104,101,108,108,111]" || f.Header.Metadata["prompt"] != "hello" {
		t.Errorf("metadata %v", f.Header.Metadata)
	}

	grads := filepath.Join(out, "grads.safetensors")
	code, stdout, stderr = tiller(t, "grad", "--model", dir, "--prompt", "hello", "--metric", "logit-diff:a,#98", "--hooks", "blocks.*.hook_resid_pre,blocks.0.attn.hook_z,blocks.1.attn.hook_pattern", "--out", grads, "--dtype", "f64")
	if code != 0 {
		t.Fatalf("grad: %s", stderr)
	}
	if !strings.Contains(stdout, "metric logit-diff:a,#98 = ") || !strings.Contains(stdout, "4 hook points") {
		t.Errorf("grad output %q", stdout)
	}
	g, err := safetensors.Open(grads)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if info, ok := g.Info("blocks.0.attn.hook_z"); !ok || info.DType != "F64" || len(info.Shape) != 3 || info.Shape[1] != 4 {
		t.Errorf("hook_z gradient %+v", info)
	}
	if g.Header.Metadata["value"] == "" || g.Header.Metadata["metric"] != "logit-diff:a,#98" {
		t.Errorf("grad metadata %v", g.Header.Metadata)
	}
	code, _, stderr = tiller(t, "grad", "--model", dir, "--prompt", "hello", "--metric", "logprob: world", "--hooks", "hook_embed", "--out", grads)
	if code != 0 {
		t.Errorf("logprob metric: %s", stderr)
	}
}

func TestAnalysisBadInput(t *testing.T) {
	dir := tinyModel(t)
	out := filepath.Join(t.TempDir(), "x.safetensors")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cache", "--model", dir, "--out", out}, 2, "--prompt is required"},
		{[]string{"cache", "--model", dir, "--prompt", "hi"}, 2, "--out is required"},
		{[]string{"cache", "--model", dir, "--prompt", "hi", "--out", out, "--hooks", "blocks.*.hook_nope"}, 1, `hook pattern "blocks.*.hook_nope" matches no hook point`},
		{[]string{"cache", "--model", dir, "--prompt", "hi", "--out", out, "--hooks", "blocks.7.hook_resid_post"}, 1, "matches no hook point of a 2-layer model"},
		{[]string{"cache", "--model", dir, "--prompt", "hi", "--out", out, "--dtype", "f16"}, 2, `--dtype "f16"`},
		{[]string{"grad", "--model", dir, "--prompt", "hi", "--out", out}, 2, "--metric is required"},
		{[]string{"grad", "--model", dir, "--prompt", "hi", "--out", out, "--metric", "kl:x"}, 2, `want logit-diff:A,B or logprob:TEXT`},
		{[]string{"grad", "--model", dir, "--prompt", "hi", "--out", out, "--metric", "logit-diff:a"}, 2, "two tokens separated by a comma"},
		{[]string{"grad", "--model", dir, "--prompt", "hi", "--out", out, "--metric", "logit-diff:ab,c"}, 1, `token "ab" is 2 tokens`},
		{[]string{"grad", "--model", dir, "--prompt", "hi", "--out", out, "--metric", "logit-diff:#512,c"}, 2, `token "#512": want #ID with 0 <= ID < 512`},
		{[]string{"grad", "--model", dir, "--prompt", "hi", "--out", out, "--metric", "logprob:"}, 2, "has no tokens"},
	}
	for _, c := range cases {
		code, _, stderr := tiller(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %d and %q", c.args[:1], code, stderr, c.code, c.want)
		}
	}
}
