//go:build !cuda

package main

import (
	"strings"
	"testing"
)

// Without the cuda build tag, the GPU commands fail with a message that says why and what to do.
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
}
