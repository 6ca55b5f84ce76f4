//go:build !cuda

package main

import (
	"strings"
	"testing"
)

// Without the cuda build tag, the GPU commands fail with a message that says why and what to do,
// and a --device other than cpu or cuda is a usage error.
func TestNoCUDA(t *testing.T) {
	dir := tinyModel(t)
	for _, args := range [][]string{
		{"profile", "--model", dir},
		{"generate", "--model", dir, "--device", "cuda", "--max-tokens", "2", "hi"},
	} {
		code, _, stderr := tiller(t, args...)
		if code != 1 || !strings.Contains(stderr, "built without CUDA") || !strings.Contains(stderr, "make tiller-cuda") {
			t.Errorf("%v: code %d, stderr %q; want 1 and a message about the CUDA build", args, code, stderr)
		}
	}
	if code, _, stderr := tiller(t, "generate", "--model", dir, "--device", "tpu", "hi"); code != 2 || !strings.Contains(stderr, `--device "tpu"`) {
		t.Errorf("--device tpu: code %d, stderr %q; want 2", code, stderr)
	}
	// The steering commands, the server and the analysis commands take --device too.
	model, vec, _ := derived(t)
	out := t.TempDir()
	for _, args := range [][]string{
		{"attribute", "--model", dir, "--pairs", "joy", "--limit", "1", "--device", "cuda", "--out", out},
		{"derive", "--model", model, "--pairs", "joy", "--layer", "1", "--device", "cuda", "--out", out + "/v.safetensors"},
		{"cache", "--model", dir, "--prompt", "hi", "--device", "cuda", "--out", out + "/a.safetensors"},
		{"grad", "--model", dir, "--prompt", "hi", "--metric", "logit-diff:#1,#2", "--device", "cuda", "--out", out + "/g.safetensors"},
		{"steer", "--model", model, "--vector", vec + ":2", "--device", "cuda", "--max-tokens", "2", "hi"},
		{"eval", "--model", model, "--vector", vec, "--sweep", "0,1", "--prompts", "prompts", "--limit", "2", "--device", "cuda", "--out", out},
		{"serve", "--model", model, "--device", "cuda", "--addr", "127.0.0.1:0"},
	} {
		code, _, stderr := tiller(t, args...)
		if code != 1 || !strings.Contains(stderr, "built without CUDA") {
			t.Errorf("%v: code %d, stderr %q; want 1 and a message about the CUDA build", args, code, stderr)
		}
		bad := append(args[:len(args):len(args)], "--device", "tpu")
		if code, _, stderr := tiller(t, bad...); code != 2 || !strings.Contains(stderr, `--device "tpu"`) {
			t.Errorf("%v: code %d, stderr %q; want 2", bad, code, stderr)
		}
	}
	if code, _, stderr := tiller(t, "grad", "--model", dir, "--prompt", "hi", "--metric", "logit-diff:#1,#2", "--device", "cuda", "--dtype", "f64", "--out", out+"/g.safetensors"); code != 2 || !strings.Contains(stderr, "--dtype f64 runs on the CPU only") {
		t.Errorf("grad --device cuda --dtype f64: code %d, stderr %q; want 2", code, stderr)
	}
}
